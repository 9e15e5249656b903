//! The group-commit writer: the only code that opens write transactions.
//!
//! It blocks for the first operation, drains whatever else has queued (up to
//! [`MAX_BATCH_OPS`]), applies the batch in one transaction, commits once, and only then
//! completes the operations: enqueues published messages, sends confirms and replies. So a
//! confirm never precedes the commit that made its message durable, and the in-memory queues
//! only ever hold what the store holds (plus transient messages).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, Semaphore};
use warren_protocol::{Confirm, ErrorCode, Frame};

use super::codec::{encode_message, BindingRecord};
use super::tables::*;
use super::{
    redb_err, Completion, PublishOp, Queued, StoreError, StoreOp, StoreStats, TopologyChange,
};
use crate::message::QueuedMessage;

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

/// A publish with the id the writer gave it and whether it reached the store.
struct Assigned {
    id: u64,
    stored: bool,
}

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

    /// Applies and completes one batch; returns true when a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<StoreOp>) -> bool {
        let assigned: Vec<Assigned> = batch
            .iter()
            .filter_map(|op| match op {
                StoreOp::Publish(p) => {
                    let id = self.next_message_id;
                    self.next_message_id += 1;
                    Some(Assigned {
                        id,
                        stored: p.message.properties.persistent
                            && p.targets.iter().any(|q| q.durable && !q.is_deleted()),
                    })
                }
                _ => None,
            })
            .collect();
        let writes = batch
            .iter()
            .any(|op| !matches!(op, StoreOp::Publish(_) | StoreOp::Shutdown(_)))
            || assigned.iter().any(|a| a.stored);
        let result = if writes {
            self.commit(batch, &assigned)
        } else {
            Ok(())
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = batch.len(), "store commit failed");
        }
        let mut assigned = assigned.into_iter();
        let mut shutdown = false;
        for op in batch.drain(..) {
            match op {
                StoreOp::Topology { done, .. } => {
                    let _ = done.send(result.clone());
                }
                StoreOp::Publish(p) => {
                    let Some(a) = assigned.next() else { continue };
                    complete_publish(p, a, &result);
                }
                StoreOp::Remove { done, .. } => complete(done, &result),
                StoreOp::SetDeliveryCount { .. } => {}
                StoreOp::Shutdown(done) => {
                    let _ = done.send(());
                    shutdown = true;
                }
            }
        }
        shutdown
    }

    fn commit(&mut self, batch: &[StoreOp], assigned: &[Assigned]) -> Result<(), StoreError> {
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
            let mut assigned = assigned.iter();
            for op in batch {
                match op {
                    StoreOp::Publish(p) => {
                        let Some(a) = assigned.next() else { continue };
                        if a.stored {
                            t.write_publish(p, a.id, &mut self.scratch)?;
                            written += 1;
                            ops += 1;
                        }
                    }
                    StoreOp::Topology { change, .. } => {
                        apply_topology(&txn, &mut t, change)?;
                        ops += 1;
                    }
                    StoreOp::Remove { entries, .. } => {
                        t.remove_entries(entries)?;
                        ops += 1;
                    }
                    StoreOp::SetDeliveryCount {
                        queue_id,
                        message_id,
                        count,
                    } => {
                        t.set_delivery_count(*queue_id, *message_id, *count)?;
                        ops += 1;
                    }
                    StoreOp::Shutdown(_) => {}
                }
            }
        }
        txn.commit().map_err(redb_err("committing"))?;
        let s = &self.stats;
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.ops_committed.fetch_add(ops, Ordering::Relaxed);
        s.messages_written.fetch_add(written, Ordering::Relaxed);
        s.commit_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

/// The tables every message operation touches, open for one transaction.
struct MessageTables<'txn> {
    queue_messages: Table<'txn, (u64, u64), (u32, u32)>,
    messages: Table<'txn, u64, &'static [u8]>,
    refs: Table<'txn, u64, u32>,
}

impl<'txn> MessageTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let ctx = "opening message tables";
        Ok(MessageTables {
            queue_messages: txn.open_table(QUEUE_MESSAGES).map_err(redb_err(ctx))?,
            messages: txn.open_table(MESSAGES).map_err(redb_err(ctx))?,
            refs: txn.open_table(MESSAGE_REFS).map_err(redb_err(ctx))?,
        })
    }

    fn write_publish(
        &mut self,
        p: &PublishOp,
        id: u64,
        scratch: &mut BytesMut,
    ) -> Result<(), StoreError> {
        let ctx = "storing a message";
        let size = u32::try_from(p.message.body.len()).unwrap_or(u32::MAX);
        let mut refs = 0u32;
        for q in p.targets.iter().filter(|q| q.durable && !q.is_deleted()) {
            self.queue_messages
                .insert((q.id, id), (0u32, size))
                .map_err(redb_err(ctx))?;
            refs += 1;
        }
        scratch.clear();
        encode_message(&p.message, scratch);
        self.messages
            .insert(id, &scratch[..])
            .map_err(redb_err(ctx))?;
        // A message in one queue (the common case) has no refs row: absent means 1.
        if refs > 1 {
            self.refs.insert(id, refs).map_err(redb_err(ctx))?;
        }
        Ok(())
    }

    fn set_delivery_count(
        &mut self,
        queue_id: u64,
        message_id: u64,
        count: u32,
    ) -> Result<(), StoreError> {
        let ctx = "updating a delivery count";
        let key = (queue_id, message_id);
        let size = self
            .queue_messages
            .get(key)
            .map_err(redb_err(ctx))?
            .map(|v| v.value().1);
        if let Some(size) = size {
            self.queue_messages
                .insert(key, (count, size))
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
            Err(e) => slot.reply(Frame::Error(warren_protocol::ErrorFrame::new(
                ErrorCode::InternalError,
                format!("storage failure: {e}"),
            ))),
        },
    }
}

fn complete_publish(p: PublishOp, a: Assigned, result: &Result<(), StoreError>) {
    if let Err(e) = result {
        if a.stored {
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
            id: a.id,
            message: Some(p.message.clone()),
            size,
            delivery_count: 0,
            stored: a.stored && q.durable,
        });
    }
    if let Some(slot) = p.confirm {
        slot.reply(Frame::Confirm(Confirm::Ack));
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
