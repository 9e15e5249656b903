//! The group-commit writer: the only code that opens write transactions.
//!
//! It blocks for the first operation, drains whatever else has queued (up to
//! [`MAX_BATCH_OPS`]), applies the batch in one transaction, commits once, and only then
//! completes the operations: enqueues published messages, sends confirms and replies. So a
//! confirm never precedes the commit that made its message durable, and the in-memory queues
//! only ever hold what the store holds (plus transient messages).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, Semaphore};
use warren_protocol::{Confirm, ErrorCode, ErrorFrame, Frame};

use super::codec::{encode_message, BindingRecord};
use super::tables::*;
use super::{
    redb_err, Completion, PublishOp, Queued, ScheduledMessage, StoreError, StoreOp, StoreStats,
    TopologyChange,
};
use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::queue::Queue;
use crate::broker::queue_args::Overflow;
use crate::message::{now_ms, QueuedMessage};

/// The most operations one transaction takes. Large enough that the commit cost is spread thin,
/// small enough that one commit's latency stays bounded.
pub const MAX_BATCH_OPS: usize = 4096;

pub(super) fn spawn(
    db: Arc<Database>,
    rx: mpsc::UnboundedReceiver<Queued>,
    permits: Arc<Semaphore>,
    next_message_id: u64,
    stats: Arc<StoreStats>,
) -> std::thread::JoinHandle<()> {
    let writer = Writer {
        db,
        rx,
        permits,
        next_message_id,
        stats,
        scratch: BytesMut::new(),
    };
    std::thread::Builder::new()
        .name("warren-store-writer".into())
        .spawn(move || writer.run())
        .unwrap_or_else(|e| panic!("cannot start the store writer thread: {e}"))
}

struct Writer {
    db: Arc<Database>,
    rx: mpsc::UnboundedReceiver<Queued>,
    permits: Arc<Semaphore>,
    next_message_id: u64,
    stats: Arc<StoreStats>,
    scratch: BytesMut,
}

/// When a message entering `queue` at `now` expires (0 = never): the queue's TTL or the
/// message's own expiration, whichever ends first.
pub(crate) fn expires_at(queue: &Queue, message: &crate::message::Message, now: u64) -> u64 {
    let ttl = match (queue.args.message_ttl_ms, message.properties.expiration) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    ttl.map_or(0, |t| now.saturating_add(t).max(1))
}

/// Ready messages and bytes the batch has already added to each queue, for overflow checks.
type Pending = HashMap<u64, (u64, u64)>;

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH_OPS);
        while let Some(first) = self.rx.blocking_recv() {
            let mut counted = usize::from(first.counted);
            batch.push(first.op);
            while batch.len() < MAX_BATCH_OPS {
                match self.rx.try_recv() {
                    Ok(q) => {
                        counted += usize::from(q.counted);
                        batch.push(q.op);
                    }
                    Err(_) => break,
                }
            }
            let shutdown = self.process(&mut batch);
            self.permits.add_permits(counted);
            if shutdown {
                return;
            }
        }
    }

    /// Gives a publish its id and decides which targets take it.
    fn prepare(&mut self, p: &mut PublishOp, pending: &mut Pending) {
        p.id = self.next_message_id;
        self.next_message_id += 1;
        let size = p.message.body.len() as u64;
        let rejected = &mut p.rejected;
        // In place: a publish to queues without a refusing overflow rule allocates nothing.
        p.targets.retain(|q| {
            let refuses = !matches!(q.args.overflow, Overflow::DropHead)
                && (q.args.max_length.is_some() || q.args.max_length_bytes.is_some());
            if !refuses {
                return true;
            }
            let added = pending.entry(q.id).or_insert((0, 0));
            if !q.admits(*added, size) {
                rejected.push(q.clone());
                return false;
            }
            added.0 += 1;
            added.1 += size;
            true
        });
        p.stored = p.message.properties.persistent
            && p.targets.iter().any(|q| q.durable && !q.is_deleted());
    }

    /// Applies and completes one batch; returns true when a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<StoreOp>) -> bool {
        let now = now_ms();
        let mut pending = Pending::new();
        let mut writes = false;
        for op in batch.iter_mut() {
            match op {
                StoreOp::Publish(p) => {
                    self.prepare(p, &mut pending);
                    writes |= p.stored;
                }
                StoreOp::DeadLetter(d) => {
                    for p in &mut d.publishes {
                        self.prepare(p, &mut pending);
                    }
                    for m in &mut d.moves {
                        self.prepare(&mut m.publish, &mut pending);
                    }
                    writes = true;
                }
                StoreOp::Release { publish, .. } => {
                    if let Some(p) = publish {
                        self.prepare(p, &mut pending);
                    }
                    writes = true;
                }
                StoreOp::Schedule(s) => {
                    s.id = self.next_message_id;
                    self.next_message_id += 1;
                    writes = true;
                }
                StoreOp::Shutdown(_) | StoreOp::Flush(_) => {}
                StoreOp::Topology { .. } | StoreOp::Remove { .. } | StoreOp::UpdateEntry { .. } => {
                    writes = true;
                }
            }
        }
        let result = if writes {
            self.commit(batch, now)
        } else {
            Ok(())
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = batch.len(), "store commit failed");
        }
        let mut shutdown = false;
        for op in batch.drain(..) {
            match op {
                StoreOp::Topology { done, .. } => {
                    let _ = done.send(result.clone());
                }
                StoreOp::Publish(p) => complete_publish(p, &result, now),
                StoreOp::DeadLetter(d) => {
                    if result.is_ok() {
                        for p in d.publishes {
                            complete_publish(p, &result, now);
                        }
                    }
                    for m in d.moves {
                        if result.is_ok() && !m.publish.targets.is_empty() {
                            complete_publish(m.publish, &result, now);
                        } else {
                            // Refused everywhere (or the commit failed): it stays put.
                            if let (Ok(()), Some(c)) = (&result, &d.refused) {
                                c.fetch_add(1, Ordering::Relaxed);
                            }
                            m.source.put_back(m.entry);
                        }
                    }
                    complete(d.done, &result);
                }
                StoreOp::Release { publish, .. } => {
                    if let (Ok(()), Some(p)) = (&result, publish) {
                        complete_publish(p, &result, now);
                    }
                }
                StoreOp::Schedule(s) => match &result {
                    Ok(()) => {
                        let _ = s.scheduled.send(ScheduledMessage {
                            due_ms: s.due_ms,
                            id: s.id,
                            message: s.message,
                        });
                        if let Some(slot) = s.confirm {
                            slot.reply(Frame::Confirm(Confirm::Ack));
                        }
                    }
                    Err(e) => {
                        if let Some(slot) = s.confirm {
                            slot.reply(Frame::Confirm(Confirm::Nack {
                                code: ErrorCode::InternalError.as_u16(),
                                reason: format!("storage failure: {e}"),
                            }));
                        }
                    }
                },
                StoreOp::Remove { done, .. } | StoreOp::Flush(done) => complete(done, &result),
                StoreOp::UpdateEntry { .. } => {}
                StoreOp::Shutdown(done) => {
                    let _ = done.send(());
                    shutdown = true;
                }
            }
        }
        shutdown
    }

    fn commit(&mut self, batch: &[StoreOp], now: u64) -> Result<(), StoreError> {
        let started = Instant::now();
        let txn = self
            .db
            .begin_write()
            .map_err(redb_err("starting a commit"))?;
        let mut ops = 0u64;
        let mut written = 0u64;
        {
            // The message tables are opened once per commit: opening a table is a B-tree
            // lookup of its own, and a batch touches them hundreds of times.
            let mut t = MessageTables::open(&txn)?;
            for op in batch {
                match op {
                    StoreOp::Publish(p) => {
                        if p.stored {
                            t.write_publish(p, now, &mut self.scratch)?;
                            written += 1;
                            ops += 1;
                        }
                    }
                    StoreOp::DeadLetter(d) => {
                        // One operation: the copies go in and the originals go out together.
                        for p in d.publishes.iter().filter(|p| p.stored) {
                            t.write_publish(p, now, &mut self.scratch)?;
                            written += 1;
                        }
                        t.remove_entries(&d.removals)?;
                        for m in d.moves.iter().filter(|m| !m.publish.targets.is_empty()) {
                            if m.publish.stored {
                                t.write_publish(&m.publish, now, &mut self.scratch)?;
                                written += 1;
                            }
                            if m.entry.stored {
                                t.remove_entries(&[(m.source.id, m.entry.id)])?;
                            }
                        }
                        ops += 1;
                    }
                    StoreOp::Schedule(s) => {
                        self.scratch.clear();
                        encode_message(&s.message, &mut self.scratch);
                        t.scheduled
                            .insert((s.due_ms, s.id), &self.scratch[..])
                            .map_err(redb_err("scheduling a message"))?;
                        ops += 1;
                    }
                    StoreOp::Release {
                        due_ms,
                        id,
                        publish,
                    } => {
                        t.scheduled
                            .remove((*due_ms, *id))
                            .map_err(redb_err("releasing a scheduled message"))?;
                        if let Some(p) = publish.as_ref().filter(|p| p.stored) {
                            t.write_publish(p, now, &mut self.scratch)?;
                            written += 1;
                        }
                        ops += 1;
                    }
                    StoreOp::Topology { change, .. } => {
                        apply_topology(&txn, &mut t, change)?;
                        ops += 1;
                    }
                    StoreOp::Remove { entries, .. } => {
                        t.remove_entries(entries)?;
                        ops += 1;
                    }
                    StoreOp::UpdateEntry {
                        queue_id,
                        message_id,
                        delivery_count,
                        ready_at,
                    } => {
                        t.update_entry(*queue_id, *message_id, *delivery_count, *ready_at)?;
                        ops += 1;
                    }
                    StoreOp::Shutdown(_) | StoreOp::Flush(_) => {}
                }
            }
        }
        txn.commit().map_err(redb_err("committing"))?;
        let elapsed = started.elapsed();
        let s = &self.stats;
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.ops_committed.fetch_add(ops, Ordering::Relaxed);
        s.messages_written.fetch_add(written, Ordering::Relaxed);
        s.commit_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        // One observation per commit, not per message: this is the writer's hot path.
        s.commit_operations.observe(ops as f64);
        s.commit_seconds.observe(elapsed.as_secs_f64());
        Ok(())
    }
}

/// The tables message operations touch, open for one transaction.
struct MessageTables<'txn> {
    queue_messages: Table<'txn, (u64, u64), QueueEntryValue>,
    messages: Table<'txn, u64, &'static [u8]>,
    refs: Table<'txn, u64, u32>,
    scheduled: Table<'txn, (u64, u64), &'static [u8]>,
}

impl<'txn> MessageTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let ctx = "opening message tables";
        Ok(MessageTables {
            queue_messages: txn.open_table(QUEUE_MESSAGES).map_err(redb_err(ctx))?,
            messages: txn.open_table(MESSAGES).map_err(redb_err(ctx))?,
            refs: txn.open_table(MESSAGE_REFS).map_err(redb_err(ctx))?,
            scheduled: txn.open_table(SCHEDULED).map_err(redb_err(ctx))?,
        })
    }

    fn write_publish(
        &mut self,
        p: &PublishOp,
        now: u64,
        scratch: &mut BytesMut,
    ) -> Result<(), StoreError> {
        let ctx = "storing a message";
        let size = u32::try_from(p.message.body.len()).unwrap_or(u32::MAX);
        let mut refs = 0u32;
        for q in p.targets.iter().filter(|q| q.durable && !q.is_deleted()) {
            let expires = expires_at(q, &p.message, now);
            self.queue_messages
                .insert((q.id, p.id), (0u32, size, expires, 0u64))
                .map_err(redb_err(ctx))?;
            refs += 1;
        }
        scratch.clear();
        encode_message(&p.message, scratch);
        self.messages
            .insert(p.id, &scratch[..])
            .map_err(redb_err(ctx))?;
        // A message in one queue (the common case) has no refs row: absent means 1.
        if refs > 1 {
            self.refs.insert(p.id, refs).map_err(redb_err(ctx))?;
        }
        Ok(())
    }

    fn update_entry(
        &mut self,
        queue_id: u64,
        message_id: u64,
        delivery_count: u32,
        ready_at: u64,
    ) -> Result<(), StoreError> {
        let ctx = "updating a queue entry";
        let key = (queue_id, message_id);
        let current = self
            .queue_messages
            .get(key)
            .map_err(redb_err(ctx))?
            .map(|v| v.value());
        if let Some((_, size, expires, _)) = current {
            self.queue_messages
                .insert(key, (delivery_count, size, expires, ready_at))
                .map_err(redb_err(ctx))?;
        }
        Ok(())
    }

    /// Removes queue entries; a message row goes in the same transaction as its last
    /// reference. Entries already gone (a queue deleted while the message was unacked) are
    /// skipped.
    fn remove_entries(&mut self, entries: &[(u64, u64)]) -> Result<(), StoreError> {
        let ctx = "removing messages";
        for &(queue_id, message_id) in entries {
            if self
                .queue_messages
                .remove((queue_id, message_id))
                .map_err(redb_err(ctx))?
                .is_none()
            {
                continue;
            }
            let refs = self
                .refs
                .get(message_id)
                .map_err(redb_err(ctx))?
                .map_or(1, |v| v.value());
            if refs <= 1 {
                self.refs.remove(message_id).map_err(redb_err(ctx))?;
                self.messages.remove(message_id).map_err(redb_err(ctx))?;
            } else if refs == 2 {
                self.refs.remove(message_id).map_err(redb_err(ctx))?;
            } else {
                self.refs
                    .insert(message_id, refs - 1)
                    .map_err(redb_err(ctx))?;
            }
        }
        Ok(())
    }
}

fn complete(done: Completion, result: &Result<(), StoreError>) {
    match done {
        Completion::None => {}
        Completion::Oneshot(tx) => {
            let _ = tx.send(result.clone());
        }
        Completion::Reply(slot) => match result {
            Ok(()) => slot.reply(Frame::Ok),
            Err(e) => slot.reply(Frame::Error(ErrorFrame::new(
                ErrorCode::InternalError,
                format!("storage failure: {e}"),
            ))),
        },
    }
}

fn complete_publish(p: PublishOp, result: &Result<(), StoreError>, now: u64) {
    if let Err(e) = result {
        if p.stored {
            // The message is not durable: refuse it rather than hold it in memory only.
            if let Some(slot) = p.confirm {
                slot.reply(Frame::Confirm(Confirm::Nack {
                    code: ErrorCode::InternalError.as_u16(),
                    reason: format!("storage failure: {e}"),
                }));
            }
            return;
        }
    }
    let size = u32::try_from(p.message.body.len()).unwrap_or(u32::MAX);
    for q in &p.targets {
        q.enqueue(QueuedMessage {
            id: p.id,
            message: Some(p.message.clone()),
            size,
            delivery_count: 0,
            stored: p.stored && q.durable,
            expires_at: expires_at(q, &p.message, now),
        });
    }
    for q in &p.rejected {
        if q.args.overflow == Overflow::RejectPublishDlx {
            q.dead_letter(
                vec![QueuedMessage {
                    id: p.id,
                    message: Some(p.message.clone()),
                    size,
                    delivery_count: 0,
                    stored: false,
                    expires_at: 0,
                }],
                DeadLetterReason::MaxLen,
            );
        }
    }
    if let Some(slot) = p.confirm {
        let frame = match p.rejected.first() {
            None => Frame::Confirm(Confirm::Ack),
            Some(q) => Frame::Confirm(Confirm::Nack {
                code: ErrorCode::ResourceError.as_u16(),
                reason: format!(
                    "queue '{}' is full (x-overflow {})",
                    q.name,
                    q.args.overflow.as_str()
                ),
            }),
        };
        slot.reply(frame);
    }
}

fn apply_topology(
    txn: &WriteTransaction,
    tables: &mut MessageTables<'_>,
    change: &TopologyChange,
) -> Result<(), StoreError> {
    let ctx = "changing topology";
    match change {
        TopologyChange::PutExchange(rec) => {
            txn.open_table(EXCHANGES)
                .map_err(redb_err(ctx))?
                .insert(rec.name.as_str(), &rec.encode()[..])
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteExchange(name) => {
            txn.open_table(EXCHANGES)
                .map_err(redb_err(ctx))?
                .remove(name.as_str())
                .map_err(redb_err(ctx))?;
            remove_bindings_where(txn, |b| &b.exchange == name)?;
        }
        TopologyChange::PutQueue(rec) => {
            txn.open_table(QUEUES)
                .map_err(redb_err(ctx))?
                .insert(rec.name.as_str(), &rec.encode()[..])
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteQueue { id, name } => {
            txn.open_table(QUEUES)
                .map_err(redb_err(ctx))?
                .remove(name.as_str())
                .map_err(redb_err(ctx))?;
            remove_bindings_where(txn, |b| &b.queue == name)?;
            let mut keys = Vec::new();
            for row in tables
                .queue_messages
                .range((*id, 0)..=(*id, u64::MAX))
                .map_err(redb_err(ctx))?
            {
                keys.push(row.map_err(redb_err(ctx))?.0.value());
            }
            tables.remove_entries(&keys)?;
        }
        TopologyChange::PutBinding(rec) => {
            txn.open_table(BINDINGS)
                .map_err(redb_err(ctx))?
                .insert(&rec.encode()[..], ())
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteBinding(rec) => {
            txn.open_table(BINDINGS)
                .map_err(redb_err(ctx))?
                .remove(&rec.encode()[..])
                .map_err(redb_err(ctx))?;
        }
    }
    Ok(())
}

fn remove_bindings_where(
    txn: &WriteTransaction,
    pred: impl Fn(&BindingRecord) -> bool,
) -> Result<(), StoreError> {
    let ctx = "removing bindings";
    let mut table = txn.open_table(BINDINGS).map_err(redb_err(ctx))?;
    // Undecodable rows are kept: deleting what we cannot read would hide corruption.
    table
        .retain(|k, _| BindingRecord::decode(k).map_or(true, |b| !pred(&b)))
        .map_err(redb_err(ctx))
}
