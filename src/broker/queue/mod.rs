//! [`Queue`]: ready messages in FIFO order, the consumers sharing them round-robin, and the
//! paging of bodies between memory and the store.
//!
//! Every field that changes lives in one `parking_lot::Mutex` held only for short, non-async
//! sections. Lock order: a queue's lock may be held while taking a session's lock, never the
//! reverse.
//!
//! # Memory policy
//! A queue keeps every message's metadata in memory (id, size, delivery count: a few dozen
//! bytes), but bodies only for the first [`QueueContext::window_bytes`] of ready messages.
//! A stored message enqueued past that window is kept without its body; when it comes within
//! reach of a consumer the queue reads a batch of bodies back from a store snapshot, off the
//! async threads. Transient messages are never paged: they exist only in memory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use warren_protocol::FieldTable;

use super::commit::BrokerStore;
use super::consumer::Consumer;
use super::dead_letter::{DeadLetterJob, DeadLetterReason, DeadLetterTask};
use super::queue_args::{Overflow, QueueArgs};
use super::session::{Outbound, Unacked};
use crate::clock::Clock;
use crate::message::{Message, QueuedMessage};

/// How many paged-out bodies one refill reads.
const REFILL_BATCH: usize = 512;

/// What every queue shares: the store to page from and the runtime to page on.
#[derive(Debug)]
pub struct QueueContext {
    /// The store.
    pub store: BrokerStore,
    /// Runtime for the blocking reads.
    pub runtime: tokio::runtime::Handle,
    /// Bytes of ready bodies a queue keeps in memory before paging new stored ones out.
    pub window_bytes: u64,
    /// Where messages leaving a queue for a dead-letter exchange (or for nowhere, when it has
    /// none) go: the broker's dead-letter task.
    pub dead_letters: mpsc::UnboundedSender<DeadLetterTask>,
    /// The broker's counters: deliveries are counted where they happen, here.
    pub stats: Arc<super::BrokerStats>,
    /// Where "now" comes from (expiry, delays, `x-expires`, delivery times).
    pub clock: Arc<dyn Clock>,
}

/// What a queue is declared as.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: Arc<str>,
    /// Durable.
    pub durable: bool,
    /// The owning connection, if exclusive.
    pub exclusive_owner: Option<u64>,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Arguments as declared.
    pub arguments: FieldTable,
    /// Arguments parsed.
    pub args: QueueArgs,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Numeric id (store key prefix).
    pub id: u64,
    /// Name.
    pub name: Arc<str>,
    /// Survives restarts, and so do its persistent messages.
    pub durable: bool,
    /// The connection that owns it, if exclusive.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declared arguments, as given.
    pub arguments: FieldTable,
    /// The arguments Warren acts on, parsed and validated.
    pub args: QueueArgs,
    deleted: AtomicBool,
    /// Last use (consume, get, declare), ms since the epoch, for `x-expires`.
    last_used: AtomicU64,
    /// Message counters, for listings and metrics.
    pub stats: QueueStats,
    state: Mutex<QueueState>,
    ctx: Arc<QueueContext>,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<QueuedMessage>,
    ready_bytes: u64,
    resident_bytes: u64,
    unacked: u64,
    consumers: Vec<Arc<Consumer>>,
    next_consumer: usize,
    had_consumer: bool,
    refilling: bool,
    /// Requeued with a delay: not ready until their time, `(ready at, id)` order.
    delayed: BTreeMap<(u64, u64), QueuedMessage>,
    /// `(expires at, id)` of ready messages that can expire; stale entries (for messages
    /// already delivered) are skipped when they come up.
    expiry: BinaryHeap<Reverse<(u64, u64)>>,
}

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready messages.
    pub ready: u64,
    /// Ready bytes.
    pub ready_bytes: u64,
    /// Delivered, not yet settled.
    pub unacked: u64,
    /// Attached consumers.
    pub consumers: u32,
    /// Waiting out a requeue delay.
    pub delayed: u64,
}

/// A queue's message counters (totals since the queue was created or recovered) and the
/// rates the broker's ticker derives from them each second.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages that entered the queue.
    pub published: AtomicU64,
    /// Deliveries (to consumers and by `get`).
    pub delivered: AtomicU64,
    /// Deliveries acknowledged.
    pub acked: AtomicU64,
    /// Messages dead-lettered or dropped out of this queue (expired, rejected, maxlen, limit).
    pub dead_lettered: AtomicU64,
    rates: Mutex<Rates>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rates {
    at_ms: u64,
    last: [u64; 3],
    per_sec: [f64; 3],
}

impl QueueStats {
    fn totals(&self) -> [u64; 3] {
        [
            self.published.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
        ]
    }

    /// Recomputes the rates from the totals (the ticker calls this about once a second).
    pub fn update_rates(&self, now_ms: u64) {
        let totals = self.totals();
        let mut r = self.rates.lock();
        if r.at_ms != 0 && now_ms > r.at_ms {
            let secs = (now_ms - r.at_ms) as f64 / 1000.0;
            let last = r.last;
            for ((rate, total), prev) in r.per_sec.iter_mut().zip(totals).zip(last) {
                *rate = total.saturating_sub(prev) as f64 / secs;
            }
        }
        r.at_ms = now_ms;
        r.last = totals;
    }

    /// Publish, deliver and ack rates per second, as of the last update.
    pub fn rates(&self) -> [f64; 3] {
        self.rates.lock().per_sec
    }
}

/// What a queue's periodic tick found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The queue has been unused for its `x-expires` and should be deleted.
    pub idle_expired: bool,
}

impl Queue {
    /// A new, empty queue.
    pub fn new(settings: QueueSettings, ctx: Arc<QueueContext>) -> Arc<Queue> {
        let QueueSettings {
            id,
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            args,
        } = settings;
        Arc::new(Queue {
            id,
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            args,
            deleted: AtomicBool::new(false),
            last_used: AtomicU64::new(ctx.clock.now_ms()),
            stats: QueueStats::default(),
            state: Mutex::new(QueueState::default()),
            ctx,
        })
    }

    /// Whether the queue has been deleted (routing may still hold a reference for a moment).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Its counters.
    pub fn counts(&self) -> QueueCounts {
        let st = self.state.lock();
        QueueCounts {
            ready: st.ready.len() as u64,
            ready_bytes: st.ready_bytes,
            unacked: st.unacked,
            consumers: u32::try_from(st.consumers.len()).unwrap_or(u32::MAX),
            delayed: st.delayed.len() as u64,
        }
    }

    /// Records a use (consume, get, redeclare) for `x-expires`.
    pub fn touch(&self) {
        self.last_used
            .store(self.ctx.clock.now_ms(), Ordering::Relaxed);
    }

    /// Whether the queue has room for one more message of `size` bytes after `pending` ones
    /// already accepted in this commit (its `x-max-length` and `x-max-length-bytes`).
    pub fn admits(&self, pending: (u64, u64), size: u64) -> bool {
        let st = self.state.lock();
        let count = st.ready.len() as u64 + pending.0;
        let bytes = st.ready_bytes + pending.1;
        self.args.max_length.is_none_or(|max| count < max)
            && self
                .args
                .max_length_bytes
                .is_none_or(|max| bytes + size <= max)
    }

    /// Hands messages that left the queue to the dead-letter task.
    pub fn dead_letter(self: &Arc<Self>, entries: Vec<QueuedMessage>, reason: DeadLetterReason) {
        if entries.is_empty() {
            return;
        }
        self.stats
            .dead_lettered
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let job = DeadLetterJob {
            queue: self.clone(),
            entries,
            reason,
        };
        if self
            .ctx
            .dead_letters
            .send(DeadLetterTask::Job(job))
            .is_err()
        {
            tracing::warn!(queue = %self.name, "dead-letter task stopped; messages stay in the store until restart");
        }
    }

    /// Drops ready messages from the head while the queue is over its length limits
    /// (`x-overflow` `drop-head`); returns them.
    fn drop_head_over_limit(&self, st: &mut QueueState) -> Vec<QueuedMessage> {
        let mut dropped = Vec::new();
        if self.args.overflow != Overflow::DropHead {
            return dropped;
        }
        loop {
            let over_count = self
                .args
                .max_length
                .is_some_and(|max| st.ready.len() as u64 > max);
            let over_bytes = self
                .args
                .max_length_bytes
                .is_some_and(|max| st.ready_bytes > max);
            if !(over_count || over_bytes) {
                return dropped;
            }
            let Some(e) = st.ready.pop_front() else {
                return dropped;
            };
            take_accounting(st, &e);
            dropped.push(e);
        }
    }

    /// Appends a message (after its commit) and hands it on if a consumer has room. A queue
    /// over its length limit drops (dead-letters) from the head.
    pub fn enqueue(self: &Arc<Self>, mut entry: QueuedMessage) {
        let mut st = self.state.lock();
        if self.is_deleted() {
            return;
        }
        st.ready_bytes += u64::from(entry.size);
        if entry.message.is_some() {
            if entry.stored && st.resident_bytes >= self.ctx.window_bytes {
                entry.message = None;
            } else {
                st.resident_bytes += u64::from(entry.size);
            }
        }
        if entry.expires_at != 0 {
            st.expiry.push(Reverse((entry.expires_at, entry.id)));
            compact_expiry(&mut st);
        }
        st.ready.push_back(entry);
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let dropped = self.drop_head_over_limit(&mut st);
        self.dispatch_locked(&mut st);
        drop(st);
        self.dead_letter(dropped, DeadLetterReason::MaxLen);
    }

    /// Loads recovered messages (ids ascending). Bodies come later, by paging; entries with a
    /// pending requeue delay wait in the delayed set.
    pub fn restore(self: &Arc<Self>, entries: impl IntoIterator<Item = (QueuedMessage, u64)>) {
        let mut st = self.state.lock();
        for (e, ready_at) in entries {
            if ready_at > 0 {
                st.delayed.insert((ready_at, e.id), e);
                continue;
            }
            st.ready_bytes += u64::from(e.size);
            if e.expires_at != 0 {
                st.expiry.push(Reverse((e.expires_at, e.id)));
            }
            st.ready.push_back(e);
        }
    }

    /// Puts settled-but-requeued deliveries back at the head, in their original order.
    pub fn requeue(self: &Arc<Self>, entries: Vec<QueuedMessage>) {
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(entries.len() as u64);
        self.push_front_locked(&mut st, entries);
        self.dispatch_locked(&mut st);
    }

    fn push_front_locked(&self, st: &mut QueueState, mut entries: Vec<QueuedMessage>) {
        if self.is_deleted() || entries.is_empty() {
            return;
        }
        entries.sort_unstable_by_key(|e| e.id);
        for e in entries.into_iter().rev() {
            st.ready_bytes += u64::from(e.size);
            if e.message.is_some() {
                st.resident_bytes += u64::from(e.size);
            }
            if e.expires_at != 0 {
                st.expiry.push(Reverse((e.expires_at, e.id)));
            }
            st.ready.push_front(e);
        }
    }

    /// Holds settled deliveries until `ready_at` (ms since the epoch), then puts them back at
    /// the head (see [`Queue::tick`]).
    pub fn delay(self: &Arc<Self>, entries: Vec<(QueuedMessage, u64)>) {
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(entries.len() as u64);
        if self.is_deleted() {
            return;
        }
        for (e, ready_at) in entries {
            st.delayed.insert((ready_at, e.id), e);
        }
        self.dispatch_locked(&mut st);
    }

    /// Periodic work, driven by the broker's ticker: expires due messages (dead-lettering
    /// them), releases delayed ones whose time has come, and says whether the queue has been
    /// idle for its `x-expires`.
    pub fn tick(self: &Arc<Self>, now: u64) -> Tick {
        let mut st = self.state.lock();
        let mut due = Vec::new();
        while let Some(entry) = st.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        self.push_front_locked(&mut st, due);
        let expired = self.expire_locked(&mut st, now);
        self.dispatch_locked(&mut st);
        let idle = self.args.expires_ms.is_some_and(|ttl| {
            st.consumers.is_empty()
                && now.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= ttl
        });
        drop(st);
        self.dead_letter(expired, DeadLetterReason::Expired);
        Tick { idle_expired: idle }
    }

    /// Removes every ready message whose time has come, wherever it is in the queue.
    fn expire_locked(&self, st: &mut QueueState, now: u64) -> Vec<QueuedMessage> {
        let mut due = HashSet::new();
        while let Some(Reverse((at, id))) = st.expiry.peek().copied() {
            if at > now {
                break;
            }
            st.expiry.pop();
            due.insert(id);
        }
        if due.is_empty() {
            return Vec::new();
        }
        let mut expired = Vec::new();
        // Usually the expired messages are the oldest: take them from the head first.
        while let Some(head) = st.ready.front() {
            if !(due.contains(&head.id) && head.expires_at != 0 && head.expires_at <= now) {
                break;
            }
            if let Some(e) = st.ready.pop_front() {
                take_accounting(st, &e);
                expired.push(e);
            }
        }
        let behind_head = st
            .ready
            .iter()
            .any(|e| e.expires_at != 0 && e.expires_at <= now && due.contains(&e.id));
        if behind_head {
            let mut kept = VecDeque::with_capacity(st.ready.len());
            for e in std::mem::take(&mut st.ready) {
                if e.expires_at != 0 && e.expires_at <= now && due.contains(&e.id) {
                    take_accounting(st, &e);
                    expired.push(e);
                } else {
                    kept.push_back(e);
                }
            }
            st.ready = kept;
        }
        expired
    }

    /// Records that `n` deliveries from this queue were settled without requeue.
    pub fn settled(self: &Arc<Self>, n: u64) {
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(n);
        self.dispatch_locked(&mut st);
    }

    /// Hands ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        let n = st.consumers.len();
        if n == 0 || self.is_deleted() {
            return;
        }
        let mut no_ack_removed = Vec::new();
        let mut expired = Vec::new();
        let mut now = 0;
        let mut idle = 0;
        while idle < n {
            let Some(head) = st.ready.front() else { break };
            if head.expires_at != 0 {
                // An expired message is never delivered.
                if now == 0 {
                    now = self.ctx.clock.now_ms();
                }
                if head.expires_at <= now {
                    if let Some(e) = st.ready.pop_front() {
                        take_accounting(st, &e);
                        expired.push(e);
                    }
                    continue;
                }
            }
            if head.message.is_none() {
                self.start_refill(st);
                break;
            }
            let idx = st.next_consumer % n;
            st.next_consumer = st.next_consumer.wrapping_add(1);
            let Some(consumer) = st.consumers.get(idx).cloned() else {
                break;
            };
            if !consumer.has_credit() {
                idle += 1;
                continue;
            }
            idle = 0;
            let Some(entry) = st.ready.pop_front() else {
                break;
            };
            take_accounting(st, &entry);
            let tracked = if consumer.no_ack {
                if entry.stored {
                    no_ack_removed.push((self.id, entry.id));
                }
                None
            } else {
                st.unacked += 1;
                Some(Unacked {
                    queue: self.clone(),
                    consumer: Some(consumer.clone()),
                    entry: entry.clone(),
                    delivered_at_ms: self.ctx.clock.now_ms(),
                })
            };
            let delivery_tag = consumer.session.record_delivery(tracked);
            consumer.on_sent();
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            self.ctx.stats.count_delivery(entry.delivery_count > 0);
            let _ = consumer.session.outbound.send(Outbound::Deliver {
                consumer: consumer.clone(),
                delivery_tag,
                entry,
            });
        }
        if !no_ack_removed.is_empty() {
            self.ctx.store.remove_internal(no_ack_removed);
        }
        if !expired.is_empty() {
            self.stats
                .dead_lettered
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            // Called with the lock held: hand them over without taking it again.
            let job = DeadLetterJob {
                queue: self.clone(),
                entries: expired,
                reason: DeadLetterReason::Expired,
            };
            let _ = self.ctx.dead_letters.send(DeadLetterTask::Job(job));
        }
    }

    fn start_refill(self: &Arc<Self>, st: &mut QueueState) {
        if st.refilling {
            return;
        }
        let ids: Vec<u64> = st
            .ready
            .iter()
            .filter(|e| e.message.is_none())
            .take(REFILL_BATCH)
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        st.refilling = true;
        let queue = self.clone();
        let store = self.ctx.store.clone();
        self.ctx.runtime.spawn_blocking(move || {
            let loaded = store.read_messages(&ids);
            queue.finish_refill(&ids, loaded);
        });
    }

    fn finish_refill(
        self: &Arc<Self>,
        ids: &[u64],
        loaded: Result<Vec<Option<Arc<Message>>>, crate::store::StoreError>,
    ) {
        let mut st = self.state.lock();
        st.refilling = false;
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(queue = %self.name, error = %e, "paging message bodies in failed");
                return;
            }
        };
        let mut by_id: HashMap<u64, Option<Arc<Message>>> =
            ids.iter().copied().zip(loaded).collect();
        let scan_limit = ids.len().saturating_mul(4).max(REFILL_BATCH);
        let mut resident_added = 0u64;
        let mut missing = Vec::new();
        for (i, e) in st.ready.iter_mut().enumerate() {
            if by_id.is_empty() || i >= scan_limit {
                break;
            }
            if e.message.is_some() {
                continue;
            }
            match by_id.remove(&e.id) {
                Some(Some(m)) => {
                    e.message = Some(m);
                    resident_added += u64::from(e.size);
                }
                Some(None) => missing.push(e.id),
                None => {}
            }
        }
        st.resident_bytes += resident_added;
        if !missing.is_empty() {
            // A queue entry whose message row is gone: the store is inconsistent. Say so
            // loudly and drop the entries, which cannot be delivered.
            tracing::error!(queue = %self.name, ids = ?missing, "queue entries without a stored message; dropping them");
            st.ready.retain(|e| !missing.contains(&e.id));
            let gone: Vec<(u64, u64)> = missing.iter().map(|m| (self.id, *m)).collect();
            self.ctx.store.remove_internal(gone);
        }
        self.dispatch_locked(&mut st);
    }

    /// Takes the head message for `Get`. Its body may still need loading
    /// ([`Queue::load_body`]). Returns the message and how many stay ready.
    pub fn take_one(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u64)> {
        self.touch();
        let mut st = self.state.lock();
        let now = self.ctx.clock.now_ms();
        let mut expired = Vec::new();
        let entry = loop {
            let e = st.ready.pop_front()?;
            take_accounting(&mut st, &e);
            if e.expires_at != 0 && e.expires_at <= now {
                expired.push(e);
                continue;
            }
            break e;
        };
        if !expired.is_empty() {
            self.stats
                .dead_lettered
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            let job = DeadLetterJob {
                queue: self.clone(),
                entries: expired,
                reason: DeadLetterReason::Expired,
            };
            let _ = self.ctx.dead_letters.send(DeadLetterTask::Job(job));
        }
        if !no_ack {
            st.unacked += 1;
        }
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        self.ctx.stats.count_delivery(entry.delivery_count > 0);
        Some((entry, st.ready.len() as u64))
    }

    /// Reads a paged-out body back from the store.
    pub async fn load_body(
        &self,
        entry: &mut QueuedMessage,
    ) -> Result<(), crate::store::StoreError> {
        if entry.message.is_some() {
            return Ok(());
        }
        let store = self.ctx.store.clone();
        let id = entry.id;
        let loaded = tokio::task::spawn_blocking(move || store.read_messages(&[id]))
            .await
            .map_err(|_| crate::store::StoreError::Closed)??;
        entry.message = loaded.into_iter().next().flatten();
        Ok(())
    }

    /// Attaches a consumer and starts deliveries to it.
    ///
    /// # Errors
    /// A message for the client when an exclusive consumer holds the queue, or when this one
    /// wants exclusivity and others are attached.
    pub fn add_consumer(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<(), String> {
        self.touch();
        let mut st = self.state.lock();
        if st.consumers.iter().any(|c| c.exclusive) {
            return Err(format!("queue '{}' has an exclusive consumer", self.name));
        }
        if consumer.exclusive && !st.consumers.is_empty() {
            return Err(format!(
                "cannot consume queue '{}' exclusively: it has {} consumer(s)",
                self.name,
                st.consumers.len()
            ));
        }
        st.consumers.push(consumer);
        st.had_consumer = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Detaches a consumer. Returns true when the queue should now be auto-deleted.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        consumer.deactivate();
        self.touch();
        let mut st = self.state.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.auto_delete && st.had_consumer && st.consumers.is_empty() && !self.is_deleted()
    }

    /// Copies of the ready messages, head first (at most `limit`): a look that changes
    /// nothing.
    pub fn ready_snapshot(&self, limit: usize) -> Vec<QueuedMessage> {
        self.state
            .lock()
            .ready
            .iter()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Removes the ready messages with these ids (those still there), in queue order.
    pub fn take_ids(&self, ids: &HashSet<u64>) -> Vec<QueuedMessage> {
        let mut st = self.state.lock();
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(st.ready.len());
        for e in std::mem::take(&mut st.ready) {
            if ids.contains(&e.id) {
                taken.push(e);
            } else {
                kept.push_back(e);
            }
        }
        st.ready = kept;
        for e in &taken {
            take_accounting(&mut st, e);
        }
        taken
    }

    /// Puts a taken ready message back where its id places it (a replay its targets refused).
    pub fn put_back(self: &Arc<Self>, entry: QueuedMessage) {
        let mut st = self.state.lock();
        if self.is_deleted() {
            return;
        }
        st.ready_bytes += u64::from(entry.size);
        if entry.message.is_some() {
            st.resident_bytes += u64::from(entry.size);
        }
        if entry.expires_at != 0 {
            st.expiry.push(Reverse((entry.expires_at, entry.id)));
        }
        let at = st
            .ready
            .iter()
            .position(|e| e.id > entry.id)
            .unwrap_or(st.ready.len());
        st.ready.insert(at, entry);
        self.dispatch_locked(&mut st);
    }

    /// Reads the bodies of paged-out entries back from the store, in one snapshot.
    ///
    /// # Errors
    /// The store read failed.
    pub async fn load_bodies(
        &self,
        entries: &mut [QueuedMessage],
    ) -> Result<(), crate::store::StoreError> {
        let ids: Vec<u64> = entries
            .iter()
            .filter(|e| e.message.is_none())
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let store = self.ctx.store.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let l = store.read_messages(&ids);
            l.map(|l| ids.into_iter().zip(l).collect::<HashMap<_, _>>())
        })
        .await
        .map_err(|_| crate::store::StoreError::Closed)??;
        for e in entries.iter_mut().filter(|e| e.message.is_none()) {
            e.message = loaded.get(&e.id).cloned().flatten();
        }
        Ok(())
    }

    /// Its consumers, for listings.
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.state.lock().consumers.clone()
    }

    /// Removes every ready message; returns the removed ones (their store rows are the
    /// caller's to delete).
    pub fn purge(&self) -> Vec<QueuedMessage> {
        let mut st = self.state.lock();
        st.ready_bytes = 0;
        st.resident_bytes = 0;
        st.expiry.clear();
        st.ready.drain(..).collect()
    }

    /// Marks the queue deleted and empties it. Returns its consumers (to notify) and the
    /// number of ready messages it held. Store rows go with the queue's store deletion.
    pub fn mark_deleted(&self) -> (Vec<Arc<Consumer>>, u64) {
        let mut st = self.state.lock();
        self.deleted.store(true, Ordering::Release);
        let count = st.ready.len() as u64 + st.delayed.len() as u64;
        st.ready.clear();
        st.delayed.clear();
        st.expiry.clear();
        st.ready_bytes = 0;
        st.resident_bytes = 0;
        let consumers: Vec<Arc<Consumer>> = st.consumers.drain(..).collect();
        for c in &consumers {
            c.deactivate();
        }
        (consumers, count)
    }
}

/// Rebuilds the expiry heap from the ready messages when stale entries (messages already
/// delivered) dominate it. Without this a busy queue with a long TTL would keep one heap
/// entry per message it ever held until each TTL ran out. Amortised O(1) per enqueue.
fn compact_expiry(st: &mut QueueState) {
    if st.expiry.len() <= 1024 || st.expiry.len() <= 2 * st.ready.len() {
        return;
    }
    st.expiry = st
        .ready
        .iter()
        .filter(|e| e.expires_at != 0)
        .map(|e| Reverse((e.expires_at, e.id)))
        .collect();
}

/// Keeps the byte counters right when a message leaves the ready list.
fn take_accounting(st: &mut QueueState, e: &QueuedMessage) {
    st.ready_bytes = st.ready_bytes.saturating_sub(u64::from(e.size));
    if e.message.is_some() {
        st.resident_bytes = st.resident_bytes.saturating_sub(u64::from(e.size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;
    use warren_protocol::FieldValue;

    fn entry(id: u64, expires_at: u64) -> QueuedMessage {
        QueuedMessage {
            id,
            message: None,
            size: 1,
            delivery_count: 0,
            stored: false,
            expires_at,
        }
    }

    #[test]
    fn the_expiry_heap_does_not_keep_entries_of_delivered_messages() {
        let mut st = QueueState::default();
        // 5,000 messages with a TTL went through; 10 are still ready, 3 of them with a TTL.
        for id in 0..5_000 {
            st.expiry.push(Reverse((1_000_000 + id, id)));
        }
        for id in 5_000..5_010 {
            st.ready
                .push_back(entry(id, if id % 3 == 0 { 2_000_000 } else { 0 }));
        }
        compact_expiry(&mut st);
        let left: Vec<u64> = st.expiry.iter().map(|Reverse((_, id))| *id).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.iter().all(|id| *id >= 5_000));
    }

    /// A queue on a [`ManualClock`], with a real store in a temporary directory (for
    /// paging, unused here) and the dead-letter channel's receiving end in the test's hands.
    struct Fixture {
        _dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        dead_letters: mpsc::UnboundedReceiver<DeadLetterTask>,
        ctx: Arc<QueueContext>,
    }

    const T0: u64 = 1_700_000_000_000;

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(T0));
        let hooks = crate::broker::commit::Hooks::new(clock.clone());
        let (store, _) = crate::store::Store::open_with(dir.path(), hooks).expect("store");
        let (tx, dead_letters) = mpsc::unbounded_channel();
        let ctx = Arc::new(QueueContext {
            store,
            runtime: tokio::runtime::Handle::current(),
            window_bytes: 1 << 20,
            dead_letters: tx,
            stats: Arc::new(crate::broker::BrokerStats::default()),
            clock: clock.clone(),
        });
        Fixture {
            _dir: dir,
            clock,
            dead_letters,
            ctx,
        }
    }

    fn queue(fx: &Fixture, args: &[(&str, FieldValue)]) -> Arc<Queue> {
        let arguments: FieldTable = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let parsed = QueueArgs::parse(&arguments).expect("valid arguments");
        Queue::new(
            QueueSettings {
                id: 1,
                name: "q".into(),
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments,
                args: parsed,
            },
            fx.ctx.clone(),
        )
    }

    fn message(id: u64, expires_at: u64) -> QueuedMessage {
        QueuedMessage {
            id,
            message: Some(Arc::new(Message {
                exchange: String::new(),
                routing_key: "q".into(),
                properties: Default::default(),
                body: bytes::Bytes::from_static(b"x"),
            })),
            size: 1,
            delivery_count: 0,
            stored: false,
            expires_at,
        }
    }

    fn ready_ids(q: &Queue) -> Vec<u64> {
        q.ready_snapshot(usize::MAX).iter().map(|e| e.id).collect()
    }

    /// The dead letters raised so far: (reason, ids).
    fn dead(fx: &mut Fixture) -> Vec<(DeadLetterReason, Vec<u64>)> {
        let mut out = Vec::new();
        while let Ok(task) = fx.dead_letters.try_recv() {
            if let DeadLetterTask::Job(job) = task {
                out.push((job.reason, job.entries.iter().map(|e| e.id).collect()));
            }
        }
        out
    }

    #[tokio::test]
    async fn a_message_expires_wherever_it_is_in_the_queue() {
        let mut fx = fixture();
        let q = queue(&fx, &[]);
        q.enqueue(message(1, 0));
        q.enqueue(message(2, T0 + 100));
        q.enqueue(message(3, 0));
        q.enqueue(message(4, T0 + 300));
        fx.clock.advance(Duration::from_millis(99));
        q.tick(fx.clock.now_ms());
        assert_eq!(ready_ids(&q), [1, 2, 3, 4], "nothing is due yet");
        assert!(dead(&mut fx).is_empty());
        fx.clock.advance(Duration::from_millis(1));
        q.tick(fx.clock.now_ms());
        assert_eq!(
            ready_ids(&q),
            [1, 3, 4],
            "the second one went, from the middle"
        );
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Expired, vec![2])]);
        fx.clock.advance(Duration::from_secs(1));
        q.tick(fx.clock.now_ms());
        assert_eq!(ready_ids(&q), [1, 3]);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Expired, vec![4])]);
    }

    #[tokio::test]
    async fn a_delayed_requeue_returns_to_the_head_when_due() {
        let fx = fixture();
        let q = queue(&fx, &[]);
        q.enqueue(message(5, 0));
        q.enqueue(message(6, 0));
        let mut retried = message(2, 0);
        retried.delivery_count = 1;
        q.delay(vec![(retried, T0 + 1_000)]);
        assert_eq!(ready_ids(&q), [5, 6]);
        assert_eq!(q.counts().delayed, 1);
        fx.clock.advance(Duration::from_millis(999));
        q.tick(fx.clock.now_ms());
        assert_eq!(ready_ids(&q), [5, 6], "not before its time");
        fx.clock.advance(Duration::from_millis(1));
        q.tick(fx.clock.now_ms());
        assert_eq!(
            ready_ids(&q),
            [2, 5, 6],
            "a redelivery goes back to the head"
        );
        assert_eq!(q.counts().delayed, 0);
    }

    #[tokio::test]
    async fn an_unused_queue_is_due_for_deletion_after_its_x_expires() {
        let fx = fixture();
        let q = queue(&fx, &[("x-expires", FieldValue::Int(60_000))]);
        fx.clock.advance(Duration::from_secs(59));
        assert!(!q.tick(fx.clock.now_ms()).idle_expired);
        q.touch();
        fx.clock.advance(Duration::from_secs(59));
        assert!(
            !q.tick(fx.clock.now_ms()).idle_expired,
            "a use restarts the count"
        );
        fx.clock.advance(Duration::from_secs(1));
        assert!(q.tick(fx.clock.now_ms()).idle_expired);
    }

    #[tokio::test]
    async fn drop_head_overflow_dead_letters_the_oldest() {
        let mut fx = fixture();
        let q = queue(&fx, &[("x-max-length", FieldValue::Int(2))]);
        for id in 1..=4 {
            q.enqueue(message(id, 0));
        }
        assert_eq!(ready_ids(&q), [3, 4]);
        assert_eq!(
            dead(&mut fx),
            [
                (DeadLetterReason::MaxLen, vec![1]),
                (DeadLetterReason::MaxLen, vec![2])
            ]
        );
    }

    #[test]
    fn a_small_heap_is_left_alone() {
        let mut st = QueueState::default();
        for id in 0..100 {
            st.expiry.push(Reverse((1, id)));
        }
        compact_expiry(&mut st);
        assert_eq!(st.expiry.len(), 100);
    }
}
