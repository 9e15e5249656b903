//! The group-commit writer: the only code that opens write transactions.
//!
//! It blocks for the first operation, drains whatever else has queued (up to
//! [`MAX_BATCH_OPS`]), asks the hooks ([`CommitHooks::prepare`]) which rows each publish
//! writes, applies the batch in one transaction, commits once, and only then hands each
//! operation's outcome to the hooks, in commit order (the broker enqueues, confirms and
//! replies there). So a confirm never precedes the commit that made its message durable.
//! A publish the broker enqueued before its commit may be held back a moment
//! ([`CommitHooks::hold_until`]), with everything behind it, so that acks arriving meanwhile
//! spare writing it (docs/storage.md, *Enqueued before the commit*).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use tokio::sync::{mpsc, Semaphore};

use super::codec::{
    encode_message, encode_producer, entity_key, BindingRecord, DestinationKind, ExchangeRecord,
    QueueRecord,
};
use super::db_slot::DbSlot;
use super::hooks::{CommitHooks, DedupRow, Rows};
use super::tables::*;
use super::{
    redb_err, Completion, PublishOp, Queued, ScheduledMessage, StoreError, StoreOp, StoreStats,
    TopologyChange,
};

/// The most operations one transaction takes. Large enough that the commit cost is spread thin,
/// small enough that one commit's latency stays bounded.
pub const MAX_BATCH_OPS: usize = 4096;

/// After a write fails at the disk (or a reopen fails), how long the writer answers writes
/// with that failure before it reopens the file and tries again, so a disk that stays full
/// is not hammered with repairs.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

pub(super) fn spawn<H: CommitHooks>(
    db: Arc<DbSlot>,
    rx: mpsc::UnboundedReceiver<Queued<H>>,
    permits: Arc<Semaphore>,
    next_message_id: Arc<AtomicU64>,
    holding: Arc<AtomicU64>,
    stats: Arc<StoreStats>,
    hooks: H,
) -> std::thread::JoinHandle<()> {
    let writer = Writer {
        holding,
        db,
        rx,
        permits,
        next_message_id,
        stats,
        scratch: BytesMut::new(),
        rows: Rows::default(),
        hooks,
        broken: None,
    };
    std::thread::Builder::new()
        .name("warren-store-writer".into())
        .spawn(move || writer.run())
        .unwrap_or_else(|e| panic!("cannot start the store writer thread: {e}"))
}

struct Writer<H: CommitHooks> {
    db: Arc<DbSlot>,
    rx: mpsc::UnboundedReceiver<Queued<H>>,
    permits: Arc<Semaphore>,
    /// Shared with [`super::Store::allocate_message_id`], which numbers publishes enqueued
    /// before their commit.
    next_message_id: Arc<AtomicU64>,
    /// The id of the publish the writer is parked holding for its acks, 0 while it is not.
    holding: Arc<AtomicU64>,
    stats: Arc<StoreStats>,
    scratch: BytesMut,
    /// The current batch's `queue_messages` rows, kept between batches for its capacity.
    rows: Rows,
    hooks: H,
    /// Set when a write failed at the disk and the file has not been reopened since: the
    /// error to answer with, and when to try reopening again.
    broken: Option<(StoreError, Instant)>,
}

/// Whether redb failed at the disk, after which it must be reopened before it writes again.
fn is_io_failure(e: &StoreError) -> bool {
    matches!(e, StoreError::Redb { error, .. }
        if matches!(**error, redb::Error::Io(_) | redb::Error::PreviousIo))
}

impl<H: CommitHooks> Writer<H> {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH_OPS);
        // What has arrived and not gone into a batch yet: everything from the first held
        // publish on ([`CommitHooks::hold_until`]) waits here, in order.
        let mut pending: VecDeque<Queued<H>> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match self.rx.blocking_recv() {
                    Some(q) => pending.push_back(q),
                    None => return,
                }
            }
            while pending.len() < MAX_BATCH_OPS {
                match self.rx.try_recv() {
                    Ok(q) => pending.push_back(q),
                    Err(_) => break,
                }
            }
            let mut counted = 0;
            let mut held_until = None;
            let now = Instant::now();
            while batch.len() < MAX_BATCH_OPS {
                let Some(next) = pending.front() else { break };
                if let StoreOp::Publish(p) = &next.op {
                    if let Some(until) = self.hooks.hold_until(&p.payload, &p.message) {
                        if until > now {
                            held_until = Some((until, p.id));
                            break;
                        }
                    }
                }
                let Some(q) = pending.pop_front() else { break };
                counted += usize::from(q.counted);
                batch.push(q.op);
            }
            if batch.is_empty() {
                // The head waits for acks. An ack that spares its write does not come
                // through the channel: it unparks this thread ([`super::Store::nudge_writer`])
                // if `holding` names its message. Set, then looked at again, so an ack
                // between the two looks is not missed (both sides order their store and load
                // with SeqCst).
                if let Some((until, id)) = held_until {
                    self.holding.store(id, Ordering::SeqCst);
                    let still = pending.front().is_some_and(|q| match &q.op {
                        StoreOp::Publish(p) => {
                            self.hooks.hold_until(&p.payload, &p.message).is_some()
                        }
                        _ => false,
                    });
                    if still {
                        std::thread::park_timeout(until - now);
                    }
                    self.holding.store(0, Ordering::SeqCst);
                }
                continue;
            }
            let shutdown = self.process(&mut batch);
            self.permits.add_permits(counted);
            if shutdown {
                return;
            }
        }
    }

    /// Gives a publish its id and asks the hooks for its rows; returns whether any queue
    /// takes it.
    fn prepare(&mut self, p: &mut PublishOp<H>, batch: &mut H::Batch) -> bool {
        if p.id == 0 {
            p.id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        }
        let start = self.rows.len();
        let dedup_start = self.rows.dedup_len();
        let stream_start = self.rows.stream_len();
        let taken = self
            .hooks
            .prepare(batch, &mut p.payload, &p.message, &mut self.rows);
        let end = self.rows.len();
        // A batch holds at most MAX_BATCH_OPS operations of bounded size: far below u32::MAX.
        p.rows = (
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(end).unwrap_or(u32::MAX),
        );
        let stream_end = self.rows.stream_len();
        p.stream_rows = (
            u32::try_from(stream_start).unwrap_or(u32::MAX),
            u32::try_from(stream_end).unwrap_or(u32::MAX),
        );
        p.stored = end > start || stream_end > stream_start;
        p.dedup_rows = (
            u32::try_from(dedup_start).unwrap_or(u32::MAX),
            u32::try_from(self.rows.dedup_len()).unwrap_or(u32::MAX),
        );
        taken
    }

    /// Applies and completes one batch; returns true when a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<StoreOp<H>>) -> bool {
        let mut state = self.hooks.begin();
        self.rows.clear();
        let mut writes = false;
        for op in batch.iter_mut() {
            match op {
                StoreOp::Publish(p) => {
                    self.prepare(p, &mut state);
                    writes |= p.stored || p.dedup_rows.0 != p.dedup_rows.1;
                }
                StoreOp::DeadLetter(d) => {
                    for p in &mut d.publishes {
                        self.prepare(p, &mut state);
                    }
                    for m in &mut d.moves {
                        m.taken = self.prepare(&mut m.publish, &mut state);
                    }
                    writes = true;
                }
                StoreOp::Release { publish, .. } => {
                    if let Some(p) = publish {
                        self.prepare(p, &mut state);
                    }
                    writes = true;
                }
                StoreOp::Schedule(s) => {
                    s.id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
                    writes = true;
                }
                StoreOp::Shutdown(_) | StoreOp::Flush(_) => {}
                StoreOp::Topology { .. }
                | StoreOp::Remove { .. }
                | StoreOp::UpdateEntry { .. }
                | StoreOp::TrimStream { .. }
                | StoreOp::StreamPosition { .. } => {
                    writes = true;
                }
            }
        }
        let result = if writes {
            self.commit_or_recover(batch)
        } else {
            Ok(())
        };
        let mut shutdown = false;
        for op in batch.drain(..) {
            match op {
                StoreOp::Topology { done, .. } => {
                    let _ = done.send(result.clone());
                }
                StoreOp::Publish(p) => self.hooks.published(&mut state, p, &result),
                StoreOp::DeadLetter(d) => {
                    // A failed commit left the originals stored: they come back at the next
                    // start, so their copies are not completed.
                    if result.is_ok() {
                        for p in d.publishes {
                            self.hooks.published(&mut state, p, &result);
                        }
                    }
                    for m in d.moves {
                        self.hooks
                            .moved(&mut state, m.source, m.publish, m.taken, &result);
                    }
                    self.complete(d.done, &result);
                }
                StoreOp::Release { publish, .. } => {
                    if let (Ok(()), Some(p)) = (&result, publish) {
                        self.hooks.published(&mut state, p, &result);
                    }
                }
                StoreOp::Schedule(s) => {
                    let message = ScheduledMessage {
                        due_ms: s.due_ms,
                        id: s.id,
                        message: s.message,
                    };
                    self.hooks.scheduled(s.payload, message, &result);
                }
                StoreOp::Remove { done, .. }
                | StoreOp::Flush(done)
                | StoreOp::TrimStream { done, .. } => {
                    self.complete(done, &result);
                }
                StoreOp::UpdateEntry { .. } | StoreOp::StreamPosition { .. } => {}
                StoreOp::Shutdown(done) => {
                    let _ = done.send(());
                    shutdown = true;
                }
            }
        }
        shutdown
    }

    fn complete(&mut self, done: Completion<H::Reply>, result: &Result<(), StoreError>) {
        match done {
            Completion::None => {}
            Completion::Oneshot(tx) => {
                let _ = tx.send(result.clone());
            }
            Completion::Reply(reply) => self.hooks.replied(reply, result),
        }
    }

    /// Commits the batch; after a failure at the disk, reopens the file so that the next
    /// batch can succeed once the disk can take it again (space freed), with no restart.
    fn commit_or_recover(&mut self, batch: &[StoreOp<H>]) -> Result<(), StoreError> {
        if let Some((e, retry_at)) = &self.broken {
            if Instant::now() < *retry_at {
                return Err(e.clone());
            }
            if let Err(reopen) = self.db.reopen() {
                tracing::warn!(error = %reopen, "reopening the store failed; retrying in 1 s");
                let failure = e.clone();
                self.broken = Some((failure.clone(), Instant::now() + REOPEN_BACKOFF));
                return Err(failure);
            }
            tracing::info!("store reopened after a write failure");
            self.broken = None;
        }
        let result = self.commit(batch);
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = batch.len(), "store commit failed");
            if is_io_failure(e) {
                // redb refuses everything until reopened. Not at once: a disk that stays
                // full would have the file repaired for every batch.
                self.broken = Some((e.clone(), Instant::now() + REOPEN_BACKOFF));
            }
        }
        result
    }

    fn commit(&mut self, batch: &[StoreOp<H>]) -> Result<(), StoreError> {
        let started = Instant::now();
        let db = self.db.get()?;
        let mut txn = db.begin_write().map_err(redb_err("starting a commit"))?;
        txn.set_quick_repair(self.db.quick_repair());
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
                            t.write_publish(p, &self.rows, &mut self.scratch)?;
                            written += 1;
                            ops += 1;
                        }
                        // A transient message may still evict durable keys of a count window.
                        t.write_dedup(self.rows.dedup(p.dedup_rows), p.id)?;
                    }
                    StoreOp::DeadLetter(d) => {
                        // One operation: the copies go in and the originals go out together.
                        for p in d.publishes.iter().filter(|p| p.stored) {
                            t.write_publish(p, &self.rows, &mut self.scratch)?;
                            written += 1;
                        }
                        t.remove_entries(&d.removals)?;
                        for m in d.moves.iter().filter(|m| m.taken) {
                            if m.publish.stored {
                                t.write_publish(&m.publish, &self.rows, &mut self.scratch)?;
                                written += 1;
                            }
                            if let Some(row) = m.row {
                                t.remove_entries(&[row])?;
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
                            t.write_publish(p, &self.rows, &mut self.scratch)?;
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
                    StoreOp::TrimStream {
                        queue_id, from, to, ..
                    } => {
                        t.trim_stream(*queue_id, *from, *to)?;
                        ops += 1;
                    }
                    StoreOp::StreamPosition {
                        queue_id,
                        name,
                        next,
                    } => {
                        t.stream_positions
                            .insert((*queue_id, &**name), *next)
                            .map_err(redb_err("storing a stream consumer's position"))?;
                        ops += 1;
                    }
                    StoreOp::UpdateEntry {
                        queue_id,
                        message_id,
                        delivery_count,
                        acquired_count,
                        ready_at,
                    } => {
                        t.update_entry(
                            (*queue_id, *message_id),
                            *delivery_count,
                            *acquired_count,
                            *ready_at,
                        )?;
                        ops += 1;
                    }
                    StoreOp::Shutdown(_) | StoreOp::Flush(_) => {}
                }
            }
            if self.rows.sweep_before() > 0 {
                t.sweep_dedup(self.rows.sweep_before())?;
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
    acquired: Table<'txn, (u64, u64), u32>,
    messages: Table<'txn, u64, &'static [u8]>,
    refs: Table<'txn, u64, u32>,
    scheduled: Table<'txn, (u64, u64), &'static [u8]>,
    dedup_keys: Table<'txn, (&'static str, &'static str), (u64, u64)>,
    dedup_expiry: Table<'txn, (u64, &'static str, &'static str), ()>,
    stream_entries: Table<'txn, (u64, u64), StreamEntryValue>,
    stream_positions: Table<'txn, (u64, &'static str), u64>,
    stream_producers: Table<'txn, (u64, &'static str), &'static [u8]>,
}

/// The most expired deduplication keys one commit removes: bounds the commit's extra work;
/// the rest go with the next commits that sweep (every commit that accepts a key does).
const MAX_SWEEP_KEYS: usize = 4096;

impl<'txn> MessageTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let ctx = "opening message tables";
        Ok(MessageTables {
            queue_messages: txn.open_table(QUEUE_MESSAGES).map_err(redb_err(ctx))?,
            acquired: txn.open_table(QUEUE_ACQUIRED).map_err(redb_err(ctx))?,
            messages: txn.open_table(MESSAGES).map_err(redb_err(ctx))?,
            refs: txn.open_table(MESSAGE_REFS).map_err(redb_err(ctx))?,
            scheduled: txn.open_table(SCHEDULED).map_err(redb_err(ctx))?,
            dedup_keys: txn.open_table(DEDUP_KEYS).map_err(redb_err(ctx))?,
            dedup_expiry: txn.open_table(DEDUP_EXPIRY).map_err(redb_err(ctx))?,
            stream_entries: txn.open_table(STREAM_ENTRIES).map_err(redb_err(ctx))?,
            stream_positions: txn.open_table(STREAM_POSITIONS).map_err(redb_err(ctx))?,
            stream_producers: txn.open_table(STREAM_PRODUCERS).map_err(redb_err(ctx))?,
        })
    }

    /// Writes a publish's deduplication keys (with `message_id`, their order of acceptance)
    /// and removes the keys its window evicted.
    fn write_dedup(&mut self, rows: &[DedupRow], message_id: u64) -> Result<(), StoreError> {
        let ctx = "storing deduplication keys";
        for row in rows {
            let key = (&*row.scope, &*row.key);
            let old = match row.add {
                Some(expires_at) => {
                    if expires_at != 0 {
                        self.dedup_expiry
                            .insert((expires_at, &*row.scope, &*row.key), ())
                            .map_err(redb_err(ctx))?;
                    }
                    self.dedup_keys
                        .insert(key, (message_id, expires_at))
                        .map_err(redb_err(ctx))?
                        .map(|v| v.value())
                        .filter(|(_, old)| Some(*old) != row.add)
                }
                None => self
                    .dedup_keys
                    .remove(key)
                    .map_err(redb_err(ctx))?
                    .map(|v| v.value()),
            };
            // The key's earlier row (expired in memory, not yet swept) leaves the time index
            // with it, so a sweep cannot remove the key just written.
            if let Some((_, expires_at)) = old.filter(|(_, at)| *at != 0) {
                self.dedup_expiry
                    .remove((expires_at, &*row.scope, &*row.key))
                    .map_err(redb_err(ctx))?;
            }
        }
        Ok(())
    }

    /// Removes deduplication keys that expired before `now`, oldest first, at most
    /// [`MAX_SWEEP_KEYS`].
    fn sweep_dedup(&mut self, now: u64) -> Result<(), StoreError> {
        let ctx = "removing expired deduplication keys";
        let mut expired: Vec<(u64, String, String)> = Vec::new();
        for row in self
            .dedup_expiry
            .range((0u64, "", "")..(now, "", ""))
            .map_err(redb_err(ctx))?
            .take(MAX_SWEEP_KEYS)
        {
            let (k, _) = row.map_err(redb_err(ctx))?;
            let (at, scope, key) = k.value();
            expired.push((at, scope.to_owned(), key.to_owned()));
        }
        for (at, scope, key) in &expired {
            self.dedup_expiry
                .remove((*at, scope.as_str(), key.as_str()))
                .map_err(redb_err(ctx))?;
            let current = self
                .dedup_keys
                .get((scope.as_str(), key.as_str()))
                .map_err(redb_err(ctx))?
                .map(|v| v.value());
            if current.is_some_and(|(_, expires_at)| expires_at == *at) {
                self.dedup_keys
                    .remove((scope.as_str(), key.as_str()))
                    .map_err(redb_err(ctx))?;
            }
        }
        Ok(())
    }

    /// Removes every deduplication key of a window (its exchange or queue was deleted).
    fn remove_dedup_scope(&mut self, scope: &str) -> Result<(), StoreError> {
        let ctx = "removing deduplication keys";
        let mut keys: Vec<(String, u64)> = Vec::new();
        for row in self
            .dedup_keys
            .range((scope, "")..)
            .map_err(redb_err(ctx))?
        {
            let (k, v) = row.map_err(redb_err(ctx))?;
            let (s, key) = k.value();
            if s != scope {
                break;
            }
            keys.push((key.to_owned(), v.value().1));
        }
        for (key, expires_at) in &keys {
            self.dedup_keys
                .remove((scope, key.as_str()))
                .map_err(redb_err(ctx))?;
            if *expires_at != 0 {
                self.dedup_expiry
                    .remove((*expires_at, scope, key.as_str()))
                    .map_err(redb_err(ctx))?;
            }
        }
        Ok(())
    }

    /// Writes a publish's queue rows (as prepared into `rows`) and its message row.
    fn write_publish<H: CommitHooks>(
        &mut self,
        p: &PublishOp<H>,
        rows: &Rows,
        scratch: &mut BytesMut,
    ) -> Result<(), StoreError> {
        let ctx = "storing a message";
        let size = u32::try_from(p.message.body.len()).unwrap_or(u32::MAX);
        let mut refs = 0u32;
        for &(queue_id, expires) in rows.get(p.rows) {
            self.queue_messages
                .insert((queue_id, p.id), (0u32, size, expires, 0u64))
                .map_err(redb_err(ctx))?;
            refs += 1;
        }
        for row in rows.stream(p.stream_rows) {
            self.stream_entries
                .insert((row.queue_id, row.offset), (p.id, row.timestamp, size))
                .map_err(redb_err(ctx))?;
            if let Some((name, sequence)) = &row.producer {
                self.stream_producers
                    .insert((row.queue_id, &**name), &encode_producer(*sequence)[..])
                    .map_err(redb_err(ctx))?;
            }
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
        key: (u64, u64),
        delivery_count: u32,
        acquired_count: u32,
        ready_at: u64,
    ) -> Result<(), StoreError> {
        let ctx = "updating a queue entry";
        let current = self
            .queue_messages
            .get(key)
            .map_err(redb_err(ctx))?
            .map(|v| v.value());
        if let Some((_, size, expires, _)) = current {
            self.queue_messages
                .insert(key, (delivery_count, size, expires, ready_at))
                .map_err(redb_err(ctx))?;
            if acquired_count > 0 {
                self.acquired
                    .insert(key, acquired_count)
                    .map_err(redb_err(ctx))?;
            }
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
            // Acquired counts are stored only for messages that came back to their queue;
            // with none stored (the common case) there is nothing to look up.
            if !self.acquired.is_empty().map_err(redb_err(ctx))? {
                self.acquired
                    .remove((queue_id, message_id))
                    .map_err(redb_err(ctx))?;
            }
            self.release_message(message_id)?;
        }
        Ok(())
    }

    /// Drops one reference to a message; the message row goes with its last one.
    fn release_message(&mut self, message_id: u64) -> Result<(), StoreError> {
        let ctx = "removing messages";
        let refs = self
            .refs
            .get(message_id)
            .map_err(redb_err(ctx))?
            .map(|v| v.value());
        // A message in one queue (the common case) has no refs row: nothing to remove there.
        let Some(refs) = refs else {
            self.messages.remove(message_id).map_err(redb_err(ctx))?;
            return Ok(());
        };
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
        Ok(())
    }

    /// Removes the entries of stream `queue_id` with offsets in `from..to`, releasing their
    /// messages. The caller bounds the range (one retention chunk, or one batch of a deleted
    /// stream), so one commit's extra work stays bounded.
    fn trim_stream(&mut self, queue_id: u64, from: u64, to: u64) -> Result<(), StoreError> {
        let ctx = "trimming a stream";
        let mut ids = Vec::new();
        for row in self
            .stream_entries
            .extract_from_if((queue_id, from)..(queue_id, to), |_, _| true)
            .map_err(redb_err(ctx))?
        {
            let (_, v) = row.map_err(redb_err(ctx))?;
            ids.push(v.value().0);
        }
        for id in ids {
            self.release_message(id)?;
        }
        Ok(())
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
                .insert(
                    entity_key(&rec.vhost, &rec.name).as_str(),
                    &rec.encode()[..],
                )
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteExchange { vhost, name } => {
            txn.open_table(EXCHANGES)
                .map_err(redb_err(ctx))?
                .remove(entity_key(vhost, name).as_str())
                .map_err(redb_err(ctx))?;
            remove_bindings_where(txn, |b| {
                &b.vhost == vhost
                    && (&b.exchange == name
                        || (b.destination_kind == DestinationKind::Exchange
                            && &b.destination == name))
            })?;
            tables.remove_dedup_scope(&super::dedup_scope_of_exchange(vhost, name))?;
        }
        TopologyChange::PutQueue(rec) => {
            txn.open_table(QUEUES)
                .map_err(redb_err(ctx))?
                .insert(
                    entity_key(&rec.vhost, &rec.name).as_str(),
                    &rec.encode()[..],
                )
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteQueue { vhost, id, name } => {
            txn.open_table(QUEUES)
                .map_err(redb_err(ctx))?
                .remove(entity_key(vhost, name).as_str())
                .map_err(redb_err(ctx))?;
            remove_bindings_where(txn, |b| {
                &b.vhost == vhost
                    && b.destination_kind == DestinationKind::Queue
                    && &b.destination == name
            })?;
            remove_queue_messages(tables, *id)?;
        }
        TopologyChange::DeleteStreamState { id } => remove_stream_state(tables, *id)?,
        TopologyChange::PutVhost(rec) => {
            txn.open_table(VHOSTS)
                .map_err(redb_err(ctx))?
                .insert(rec.name.as_str(), &rec.encode()[..])
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteVhost(vhost) => {
            txn.open_table(VHOSTS)
                .map_err(redb_err(ctx))?
                .remove(vhost.as_str())
                .map_err(redb_err(ctx))?;
            // Undecodable rows are kept, as in remove_bindings_where.
            let mut queue_ids = Vec::new();
            txn.open_table(QUEUES)
                .map_err(redb_err(ctx))?
                .retain(|_, v| match QueueRecord::decode(v) {
                    Ok(q) if &q.vhost == vhost => {
                        queue_ids.push(q.id);
                        false
                    }
                    _ => true,
                })
                .map_err(redb_err(ctx))?;
            for id in queue_ids {
                remove_queue_messages(tables, id)?;
            }
            let mut exchange_names = Vec::new();
            txn.open_table(EXCHANGES)
                .map_err(redb_err(ctx))?
                .retain(|_, v| match ExchangeRecord::decode(v) {
                    Ok(e) if &e.vhost == vhost => {
                        exchange_names.push(e.name);
                        false
                    }
                    _ => true,
                })
                .map_err(redb_err(ctx))?;
            for name in exchange_names {
                tables.remove_dedup_scope(&super::dedup_scope_of_exchange(vhost, &name))?;
            }
            remove_bindings_where(txn, |b| &b.vhost == vhost)?;
            txn.open_table(PERMISSIONS)
                .map_err(redb_err(ctx))?
                .retain(|(_, v), _| v != vhost)
                .map_err(redb_err(ctx))?;
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
        TopologyChange::PutUser(rec) => {
            txn.open_table(USERS)
                .map_err(redb_err(ctx))?
                .insert(rec.name.as_str(), &rec.encode()[..])
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeleteUser(name) => {
            txn.open_table(USERS)
                .map_err(redb_err(ctx))?
                .remove(name.as_str())
                .map_err(redb_err(ctx))?;
            txn.open_table(PERMISSIONS)
                .map_err(redb_err(ctx))?
                .retain(|(user, _), _| user != name)
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::PutPermission(rec) => {
            txn.open_table(PERMISSIONS)
                .map_err(redb_err(ctx))?
                .insert((rec.user.as_str(), rec.vhost.as_str()), &rec.encode()[..])
                .map_err(redb_err(ctx))?;
        }
        TopologyChange::DeletePermission { user, vhost } => {
            txn.open_table(PERMISSIONS)
                .map_err(redb_err(ctx))?
                .remove((user.as_str(), vhost.as_str()))
                .map_err(redb_err(ctx))?;
        }
    }
    Ok(())
}

/// Deletes every message row of queue `id`, and the positions of its named stream consumers
/// and the sequences of its named producers (a stream's entries go afterwards, in bounded
/// batches: [`super::Store::trim_stream`]).
fn remove_queue_messages(tables: &mut MessageTables<'_>, id: u64) -> Result<(), StoreError> {
    let ctx = "deleting a queue's messages";
    remove_stream_state(tables, id)?;
    let mut keys = Vec::new();
    for row in tables
        .queue_messages
        .range((id, 0)..=(id, u64::MAX))
        .map_err(redb_err(ctx))?
    {
        keys.push(row.map_err(redb_err(ctx))?.0.value());
    }
    tables.remove_entries(&keys)?;
    tables.remove_dedup_scope(&super::dedup_scope_of_queue(id))
}

/// Deletes the positions of stream `id`'s named consumers and the sequences of its named
/// producers.
fn remove_stream_state(tables: &mut MessageTables<'_>, id: u64) -> Result<(), StoreError> {
    let ctx = "deleting a stream's consumer positions and producer sequences";
    let range = (id, "")..(id.saturating_add(1), "");
    tables
        .stream_positions
        .retain_in(range.clone(), |_, _| false)
        .map_err(redb_err(ctx))?;
    tables
        .stream_producers
        .retain_in(range, |_, _| false)
        .map_err(redb_err(ctx))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::store::{DeadLetterOp, Move, ScheduleOp};
    use bytes::Bytes;
    use redb::{Database, ReadableDatabase};

    /// Hooks that write down every call. A publish's payload is its name: "stored …" asks
    /// for a row in queue 7, "refused …" is taken by no queue. Completions note whether the
    /// message row is already readable, i.e. whether the commit came first.
    struct Recorder {
        db: Arc<Database>,
        log: Vec<String>,
    }

    impl Recorder {
        fn committed(&self, id: u64) -> bool {
            let txn = self.db.begin_read().expect("read");
            let table = txn.open_table(MESSAGES).expect("messages");
            table.get(id).expect("get").is_some()
        }
    }

    impl CommitHooks for Recorder {
        type Publish = &'static str;
        type Source = &'static str;
        type Schedule = &'static str;
        type Reply = &'static str;
        type Batch = ();

        fn begin(&mut self) {
            self.log.push("begin".into());
        }

        fn prepare(
            &mut self,
            _: &mut (),
            name: &mut &'static str,
            _: &Message,
            rows: &mut Rows,
        ) -> bool {
            self.log.push(format!("prepare {name}"));
            if name.starts_with("stored") {
                rows.push(7, 0);
            }
            !name.starts_with("refused")
        }

        fn published(&mut self, _: &mut (), p: PublishOp<Self>, result: &Result<(), StoreError>) {
            let line = format!(
                "published {} #{} stored={} committed={} ok={}",
                p.payload,
                p.id(),
                p.stored(),
                self.committed(p.id()),
                result.is_ok()
            );
            self.log.push(line);
        }

        fn moved(
            &mut self,
            _: &mut (),
            source: &'static str,
            p: PublishOp<Self>,
            taken: bool,
            _: &Result<(), StoreError>,
        ) {
            let line = format!(
                "moved {} from {source} taken={taken} committed={}",
                p.payload,
                self.committed(p.id())
            );
            self.log.push(line);
        }

        fn scheduled(
            &mut self,
            name: &'static str,
            m: ScheduledMessage,
            _: &Result<(), StoreError>,
        ) {
            self.log.push(format!("scheduled {name} #{}", m.id));
        }

        fn replied(&mut self, reply: &'static str, result: &Result<(), StoreError>) {
            self.log
                .push(format!("replied {reply} ok={}", result.is_ok()));
        }
    }

    fn publish(name: &'static str) -> PublishOp<Recorder> {
        let message = Message {
            write: Default::default(),
            exchange: String::new(),
            routing_key: "q".into(),
            properties: Default::default(),
            body: Bytes::from_static(b"body"),
        };
        PublishOp::new(Arc::new(message), name)
    }

    fn row_exists(db: &Database, queue_id: u64, message_id: u64) -> bool {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(QUEUE_MESSAGES).expect("queue_messages");
        table.get((queue_id, message_id)).expect("get").is_some()
    }

    #[test]
    fn hooks_prepare_before_the_commit_and_complete_after_it_in_commit_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.redb");
        let db = Database::create(&path).expect("db");
        super::super::init_schema(&db, false).expect("schema");
        let slot = Arc::new(DbSlot::new(
            path,
            db,
            super::super::DEFAULT_CACHE_BYTES,
            false,
        ));
        let db = slot.get().expect("open");
        // A stored message 99 in queue 3, about to be replayed somewhere that refuses it.
        {
            let txn = db.begin_write().expect("write");
            let mut t = MessageTables::open(&txn).expect("tables");
            t.queue_messages.insert((3, 99), (0, 4, 0, 0)).expect("row");
            t.messages.insert(99, &b"x"[..]).expect("message");
            drop(t);
            txn.commit().expect("commit");
        }
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut writer = Writer {
            db: slot,
            rx,
            permits: Arc::new(Semaphore::new(1)),
            next_message_id: Arc::new(AtomicU64::new(1)),
            holding: Arc::default(),
            stats: Arc::new(StoreStats::default()),
            scratch: BytesMut::new(),
            rows: Rows::default(),
            hooks: Recorder {
                db: db.clone(),
                log: Vec::new(),
            },
            broken: None,
        };
        let mut batch = vec![
            StoreOp::Publish(publish("stored a")),
            StoreOp::Publish(publish("transient b")),
            StoreOp::Flush(Completion::Reply("flush")),
            StoreOp::DeadLetter(DeadLetterOp {
                removals: Vec::new(),
                publishes: Vec::new(),
                moves: vec![
                    Move::new(Some((3, 99)), "queue 3", publish("refused c")),
                    Move::new(None, "queue 4", publish("stored d")),
                ],
                done: Completion::Reply("replay"),
            }),
            StoreOp::Schedule(ScheduleOp::new(1, publish("").message, "later")),
        ];
        assert!(!writer.process(&mut batch), "no shutdown asked for");
        assert_eq!(
            writer.hooks.log,
            [
                "begin",
                "prepare stored a",
                "prepare transient b",
                "prepare refused c",
                "prepare stored d",
                "published stored a #1 stored=true committed=true ok=true",
                "published transient b #2 stored=false committed=false ok=true",
                "replied flush ok=true",
                "moved refused c from queue 3 taken=false committed=false",
                "moved stored d from queue 4 taken=true committed=true",
                "replied replay ok=true",
                "scheduled later #5",
            ]
        );
        assert!(
            row_exists(&db, 7, 1) && row_exists(&db, 7, 4),
            "prepared rows written"
        );
        assert!(!row_exists(&db, 7, 2), "a transient message has no row");
        assert!(
            row_exists(&db, 3, 99),
            "a move no queue takes stays in its source"
        );
    }

    #[test]
    fn acquired_counts_are_stored_apart_and_old_rows_still_recover() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("w.redb")).expect("db");
        super::super::init_schema(&db, false).expect("schema");
        {
            let txn = db.begin_write().expect("write");
            let queue = crate::store::QueueRecord {
                vhost: "/".into(),
                id: 1,
                name: "q".into(),
                exclusive: false,
                auto_delete: false,
                arguments: Default::default(),
            };
            txn.open_table(QUEUES)
                .expect("queues")
                .insert("q", &queue.encode()[..])
                .expect("queue");
            let mut t = MessageTables::open(&txn).expect("tables");
            // 10: written before acquisitions were counted apart, requeued twice then.
            t.queue_messages.insert((1, 10), (2, 1, 0, 0)).expect("row");
            // 11: new; 12: never given back.
            t.queue_messages.insert((1, 11), (0, 1, 0, 0)).expect("row");
            t.queue_messages.insert((1, 12), (0, 1, 0, 0)).expect("row");
            for id in [10, 11, 12] {
                t.messages.insert(id, &b"x"[..]).expect("message");
            }
            t.update_entry((1, 11), 1, 3, 0).expect("update");
            drop(t);
            txn.commit().expect("commit");
        }
        let (recovered, _) = super::super::recover(&db).expect("recover");
        let snapshot = recovered.entries.expect("a snapshot");
        let read = |after, limit| -> Vec<(u64, u32, u32)> {
            snapshot
                .queue_entries(1, after, limit, false)
                .expect("entries")
                .iter()
                .map(|e| (e.id, e.delivery_count, e.acquired_count))
                .collect()
        };
        assert_eq!(read(None, usize::MAX), [(10, 2, 2), (11, 1, 3), (12, 0, 0)]);
        // Read in batches, as a recovering queue is, the counts come out the same.
        assert_eq!(read(None, 1), [(10, 2, 2)]);
        assert_eq!(read(Some(10), 1), [(11, 1, 3)]);
        assert_eq!(read(Some(11), 5), [(12, 0, 0)]);
        assert_eq!(read(Some(12), 5), []);
        // Removing an entry removes its acquired count with it.
        {
            let txn = db.begin_write().expect("write");
            let mut t = MessageTables::open(&txn).expect("tables");
            t.remove_entries(&[(1, 11)]).expect("remove");
            assert!(t.acquired.get((1, 11)).expect("get").is_none());
            drop(t);
            txn.commit().expect("commit");
        }
    }

    #[test]
    fn dedup_keys_expire_in_bulk_and_a_key_written_again_survives_its_old_expiry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("w.redb")).expect("db");
        super::super::init_schema(&db, false).expect("schema");
        let row = |scope: &str, key: &str, add: Option<u64>| DedupRow {
            scope: scope.into(),
            key: key.into(),
            add,
        };
        let keys = |db: &Database| -> Vec<(String, String, u64)> {
            let txn = db.begin_read().expect("read");
            let t = txn.open_table(DEDUP_KEYS).expect("dedup keys");
            let mut out = Vec::new();
            for r in t.iter().expect("iter") {
                let (k, v) = r.expect("row");
                let (scope, key) = k.value();
                out.push((scope.to_owned(), key.to_owned(), v.value().1));
            }
            out
        };
        {
            let txn = db.begin_write().expect("write");
            let mut t = MessageTables::open(&txn).expect("tables");
            t.write_dedup(&[row("e/x", "early", Some(100))], 1)
                .expect("write");
            t.write_dedup(&[row("e/x", "late", Some(300))], 2)
                .expect("write");
            t.write_dedup(&[row("q/7", "counted", Some(0))], 3)
                .expect("write");
            // "early" is accepted again (it expired in memory) before any sweep.
            t.write_dedup(&[row("e/x", "early", Some(400))], 4)
                .expect("write");
            t.sweep_dedup(350).expect("sweep");
            drop(t);
            txn.commit().expect("commit");
        }
        assert_eq!(
            keys(&db),
            [
                ("e/x".to_owned(), "early".to_owned(), 400),
                ("q/7".to_owned(), "counted".to_owned(), 0),
            ],
            "late expired; early was written again; a count-only key never expires"
        );
        let (recovered, next_id) = super::super::recover(&db).expect("recover");
        assert_eq!(recovered.dedup["e/x"], [("early".to_owned(), 4, 400)]);
        assert!(next_id > 4, "ids of keys are never reused");
        {
            let txn = db.begin_write().expect("write");
            let mut t = MessageTables::open(&txn).expect("tables");
            t.write_dedup(&[row("q/7", "counted", None)], 5)
                .expect("evict");
            t.remove_dedup_scope("e/x").expect("delete scope");
            t.sweep_dedup(u64::MAX).expect("sweep");
            drop(t);
            txn.commit().expect("commit");
        }
        assert!(keys(&db).is_empty());
        let txn = db.begin_read().expect("read");
        let expiry = txn.open_table(DEDUP_EXPIRY).expect("expiry");
        assert_eq!(
            expiry.iter().expect("iter").count(),
            0,
            "no stale index rows"
        );
    }
}
