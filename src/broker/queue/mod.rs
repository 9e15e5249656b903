//! [`Queue`]: one queue — its ready messages in FIFO order (per priority, highest first, with
//! `x-max-priority`), the consumers sharing them
//! round-robin, expiry, delayed requeues, overflow, the settle policy and the paging of
//! bodies between memory and the store.
//!
//! The queue is a state machine with a thin shell around it:
//!
//! | file | what it holds |
//! |---|---|
//! | `state.rs` | [`QueueCore`]: the state and every rule that changes it, with no I/O and no clock: each method takes `now` and writes what must happen into an [`Effects`] |
//! | `ready.rs` | the ready list: one FIFO, or one per priority level for a priority queue |
//! | `settle.rs` | the settle policy: requeue at the head, delay (backoff), delivery limit, dead-letter on reject, consumer timeout |
//! | `paging.rs` | [`BodySource`]: where paged-out bodies are read back from (the store; a map in tests) |
//! | `mod.rs` | [`Queue`], the shell: the lock, the clock, and carrying out effects against sessions, the store and the dead-letter task |
//!
//! Every field that changes lives in one `parking_lot::Mutex` held only for short, non-async
//! sections; effects are carried out before it is released, so deliveries leave in queue
//! order. Lock order: a queue's lock may be held while taking a session's lock, never the
//! reverse.
//!
//! # Memory policy
//! A queue keeps every message's metadata in memory (id, size, delivery count: a few dozen
//! bytes), but bodies only for the first [`QueueContext::window_bytes`] of ready messages.
//! A stored message enqueued past that window is kept without its body; when it comes within
//! reach of a consumer the queue reads a batch of bodies back from a store snapshot, off the
//! async threads. Transient messages are never paged: they exist only in memory.

#[cfg(test)]
mod model;
mod paging;
mod ready;
mod settle;
mod state;

pub use paging::{BodySource, MemoryBodies};
pub use settle::{consumer_timeout, timed_out, verdict, Return, Verdict};
pub use state::{
    ConsumerSlot, Delivery, Effects, EntryUpdate, QueueCore, QueueCounts, EXPIRES_AT_ONCE,
    REFILL_BATCH, REFILL_RETRY_MS,
};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use warren_protocol::FieldTable;

use super::commit::BrokerStore;
use super::consumer::Consumer;
use super::dead_letter::{DeadLetterJob, DeadLetterReason, DeadLetterTask};
use super::queue_args::{Overflow, QueueArgs};
use super::session::{Outbound, Unacked};
use super::timers::{TimerKey, TimerTarget, Timers};
use crate::clock::{Clock, LazyNow};
use crate::message::{Message, QueuedMessage};

/// What every queue shares: the store, where to page bodies from and the runtime to page on.
#[derive(Debug)]
pub struct QueueContext {
    /// The store (removals and entry updates the queue raises).
    pub store: BrokerStore,
    /// Where paged-out bodies are read back from: the store, in the broker.
    pub bodies: Arc<dyn BodySource>,
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
    /// The broker's timer index: each queue reports its next deadline there, and each
    /// delivery its consumer-timeout deadline (through its session).
    pub timers: Arc<Timers>,
    /// The server's consumer timeout, for queues and consumers that set none.
    pub consumer_timeout: Option<Duration>,
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
    /// Its deduplication window, when `x-message-deduplication` is on.
    pub dedup: Option<Arc<super::dedup::Dedup>>,
    /// The log, when this is a stream (`x-queue-type=stream`): then the classic core stays
    /// empty and the queue's consumer and counting methods hand their work to it.
    pub stream: Option<super::stream::Stream>,
    /// Mirrors the core's own flag so routing can ask without the lock.
    deleted: AtomicBool,
    /// Mirrors [`QueueCore::takes_early`] after every change, with what never changes
    /// (not a stream, no refusing overflow rule): a publish asks it without the lock.
    takes_early: AtomicBool,
    /// Mirrors [`QueueCore::delivers_soon`] after every change, for the store writer.
    delivers_soon: AtomicBool,
    /// Last use (consume, get, declare), ms since the epoch, for `x-expires`.
    last_used: AtomicU64,
    /// Message counters, for listings and metrics.
    pub stats: QueueStats,
    state: Mutex<Locked>,
    /// Whether its recovered messages are still being read from the store, and how many
    /// batches have arrived: what a `get` on a recovering queue with nothing ready yet, and
    /// a purge or delete that must see every message, wait on.
    recovery: tokio::sync::watch::Sender<Recovery>,
    ctx: Arc<QueueContext>,
    /// Itself, for the timer index (which must not keep a deleted queue alive).
    me: Weak<Queue>,
}

/// What the lock guards: the state machine, and the effects buffer it writes into (kept
/// between calls so its vectors keep their capacity).
#[derive(Debug)]
struct Locked {
    core: QueueCore<Arc<Consumer>>,
    fx: Effects<Arc<Consumer>>,
    /// The deadline last given to the timer index ([`NO_TIMER`]: none): only an earlier one
    /// is given again, so the index's lock is not taken per message.
    timer_at: u64,
}

/// Where a queue's recovery stands ([`Queue::begin_recovery`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Recovered messages are still being read.
    pub recovering: bool,
    /// Batches restored so far (each one changes this, so a waiter wakes per batch).
    pub batches: u64,
}

/// [`Locked::timer_at`] when the queue has no deadline in the timer index.
const NO_TIMER: u64 = u64::MAX;

impl ConsumerSlot for Arc<Consumer> {
    fn no_ack(&self) -> bool {
        self.no_ack
    }
}

/// The core's credit callback for real consumers: takes one credit if `c` has any. Counting
/// it here (`on_sent`), as the core decides, is what stops one dispatch from overfilling a
/// consumer.
fn take_credit(c: &Arc<Consumer>) -> bool {
    c.take_credit()
}

/// A queue's message counters (totals since the queue was created or recovered) and the
/// rates the broker's ticker derives from them each second, while they move: a queue joins
/// the ticker's rate list ([`Timers::watch_rates`]) when a counter moves and leaves it once
/// its rates are back to zero, so idle queues cost the ticker nothing here either.
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
    /// In the ticker's rate list.
    watched: AtomicBool,
    rates: Mutex<Rates>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rates {
    /// When `last` was sampled; 0 when the queue is out of the rate list (its counters
    /// have not moved since `last`, and the rates are zero).
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

    /// Recomputes the rates from the totals (the ticker calls this about once a second for
    /// the queues in its rate list). `prev_round_ms` is the ticker's previous round: a queue
    /// that joined the list since moved its counters after it, so that is where its window
    /// starts. Returns whether the queue stays in the list: false once its rates are zero
    /// (the caller then takes it out with [`QueueStats::unwatch`]).
    pub fn update_rates(&self, now_ms: u64, prev_round_ms: u64) -> bool {
        let totals = self.totals();
        let mut r = self.rates.lock();
        let since = if r.at_ms == 0 { prev_round_ms } else { r.at_ms };
        if since != 0 && now_ms > since {
            let secs = (now_ms - since) as f64 / 1000.0;
            let last = r.last;
            for ((rate, total), prev) in r.per_sec.iter_mut().zip(totals).zip(last) {
                *rate = total.saturating_sub(prev) as f64 / secs;
            }
        }
        r.last = totals;
        let moving = r.per_sec.iter().any(|x| *x != 0.0);
        r.at_ms = if moving { now_ms } else { 0 };
        moving
    }

    /// Marks a counter change; true when the queue must join the rate list (it was not in
    /// it). One relaxed load on the hot path while it is in.
    fn watch(&self) -> bool {
        !self.watched.load(Ordering::Relaxed) && !self.watched.swap(true, Ordering::AcqRel)
    }

    /// Takes the queue out of the rate list after [`QueueStats::update_rates`] found it
    /// still. Returns true when a counter moved meanwhile and it must stay in after all (a
    /// change that saw it still in did not re-add it).
    pub fn unwatch(&self) -> bool {
        self.watched.store(false, Ordering::Release);
        let last = self.rates.lock().last;
        self.totals() != last && self.watch()
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
        let core = QueueCore::new(args.clone(), ctx.window_bytes);
        let dedup = args
            .dedup
            .clone()
            .map(|c| super::dedup::Dedup::new(c, super::dedup::queue_scope(id), durable));
        let stream = (args.queue_type == super::queue_args::QueueType::Stream)
            .then(|| super::stream::Stream::new(id, name.clone(), &args, ctx.clone()));
        let q = Arc::new_cyclic(|me| Queue {
            me: me.clone(),
            stream,
            dedup,
            id,
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            args,
            deleted: AtomicBool::new(false),
            takes_early: AtomicBool::new(false),
            delivers_soon: AtomicBool::new(false),
            last_used: AtomicU64::new(ctx.clock.now_ms()),
            stats: QueueStats::default(),
            state: Mutex::new(Locked {
                core,
                fx: Effects::default(),
                timer_at: NO_TIMER,
            }),
            recovery: tokio::sync::watch::Sender::new(Recovery::default()),
            ctx,
        });
        // An `x-expires` queue is timed from its creation.
        let mut st = q.state.lock();
        q.reschedule(&mut st);
        q.mirror_takes_early(&st.core);
        drop(st);
        q
    }

    /// Whether a publish may enqueue a message here before its commit (the early path,
    /// `publish.rs`): read without the lock, so a moment stale, which the core allows for.
    pub fn takes_early(&self) -> bool {
        self.takes_early.load(Ordering::Relaxed)
    }

    fn mirror_takes_early(&self, core: &QueueCore<Arc<Consumer>>) {
        // A stream keeps its own log; a queue that may refuse a publish decides at the
        // commit, with the batch's other publishes counted.
        let refuses = !matches!(self.args.overflow, Overflow::DropHead)
            && (self.args.max_length.is_some() || self.args.max_length_bytes.is_some());
        let early = self.stream.is_none() && !refuses && core.takes_early();
        if self.takes_early.load(Ordering::Relaxed) != early {
            self.takes_early.store(early, Ordering::Relaxed);
        }
        let soon = early && core.delivers_soon();
        if self.delivers_soon.load(Ordering::Relaxed) != soon {
            self.delivers_soon.store(soon, Ordering::Relaxed);
        }
    }

    /// Whether a message enqueued here now is likely delivered within moments (see
    /// [`QueueCore::delivers_soon`]); read without the lock, so a moment stale.
    pub fn delivers_soon(&self) -> bool {
        self.delivers_soon.load(Ordering::Relaxed)
    }

    /// After a counter moved: joins the ticker's rate list if it was not in it.
    pub(crate) fn counted(&self) {
        if self.stats.watch() {
            self.ctx.timers.watch_rates(self.me.clone());
        }
    }

    /// Counts `n` deliveries acknowledged.
    pub fn count_acked(&self, n: u64) {
        self.stats.acked.fetch_add(n, Ordering::Relaxed);
        self.counted();
    }

    /// Gives the timer index this queue's next deadline if it moved earlier than the one
    /// given last: the core's (expiry, delayed release, refill retry) or, with no consumer,
    /// the end of its `x-expires`. Called under the lock after every change that can bring
    /// a deadline earlier; one that moves later is left to fire early and find nothing.
    fn reschedule(&self, st: &mut Locked) {
        let idle_end = self.args.expires_ms.and_then(|ttl| {
            st.core
                .consumers()
                .is_empty()
                .then(|| self.last_used.load(Ordering::Relaxed).saturating_add(ttl))
        });
        let next = [st.core.next_deadline(), idle_end]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = next {
            if at < st.timer_at && !st.core.deleted() {
                st.timer_at = at;
                self.ctx.timers.schedule(
                    TimerKey::Queue(self.id),
                    at,
                    TimerTarget::Queue(self.me.clone()),
                );
            }
        }
    }

    /// Gives the timer index a stream's next `x-max-age` deadline (the index keeps the
    /// earlier of this and one it holds; a stream has no other timed work).
    pub(crate) fn schedule_stream_retention(&self, at: u64) {
        self.ctx.timers.schedule(
            TimerKey::Queue(self.id),
            at,
            TimerTarget::Queue(self.me.clone()),
        );
    }

    /// The deadline this queue last gave the timer index, if any.
    #[cfg(test)]
    fn scheduled_at(&self) -> Option<u64> {
        Some(self.state.lock().timer_at).filter(|t| *t != NO_TIMER)
    }

    /// Whether the queue has been deleted (routing may still hold a reference for a moment).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Its counters.
    pub fn counts(&self) -> QueueCounts {
        if let Some(s) = &self.stream {
            let (ready, ready_bytes, consumers) = s.counts();
            return QueueCounts {
                ready,
                ready_bytes,
                unacked: 0,
                consumers,
                delayed: 0,
                recovering: false,
            };
        }
        self.state.lock().core.counts()
    }

    /// Records a use (consume, get, redeclare) for `x-expires`.
    pub fn touch(&self) {
        self.last_used
            .store(self.ctx.clock.now_ms(), Ordering::Relaxed);
    }

    /// Whether the queue has room for one more message of `size` bytes after `pending` ones
    /// already accepted in this commit (its `x-max-length` and `x-max-length-bytes`).
    pub fn admits(&self, pending: (u64, u64), size: u64) -> bool {
        self.state.lock().core.admits(pending, size)
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

    /// Runs `change` on the core under the lock, then dispatches and carries out everything
    /// both asked for, still under the lock (so deliveries leave in queue order).
    fn change<R>(
        self: &Arc<Self>,
        change: impl FnOnce(&mut QueueCore<Arc<Consumer>>, &mut Effects<Arc<Consumer>>) -> R,
    ) -> R {
        let mut st = self.state.lock();
        let Locked { core, fx, .. } = &mut *st;
        let r = change(core, fx);
        // The clock is read only when something needs it (an expiring head, a delivery to
        // stamp): on the hot path a clock read per publish and per ack shows in the
        // instruction count.
        let mut now = LazyNow::from_clock(&*self.ctx.clock);
        if core.can_dispatch() {
            core.dispatch(&mut now, &mut take_credit, fx);
        }
        self.apply(fx, &mut now);
        self.reschedule(&mut st);
        self.mirror_takes_early(&st.core);
        r
    }

    /// Carries out effects: store updates, deliveries (recorded in their sessions and sent to
    /// their connections, delivered at `now`), store removals, dead letters, a refill. Leaves
    /// `fx` empty.
    fn apply(self: &Arc<Self>, fx: &mut Effects<Arc<Consumer>>, now: &mut LazyNow<'_>) {
        for u in fx.updates.drain(..) {
            self.ctx.store.update_entry(
                self.id,
                u.id,
                u.delivery_count,
                u.acquired_count,
                u.ready_at,
            );
        }
        if !fx.deliveries.is_empty() {
            self.stats
                .delivered
                .fetch_add(fx.deliveries.len() as u64, Ordering::Relaxed);
            self.counted();
        }
        for Delivery { consumer, entry } in fx.deliveries.drain(..) {
            let (tracked, timeout_at) = if consumer.no_ack {
                (None, None)
            } else {
                let at = now.get();
                let timeout_at =
                    consumer_timeout(consumer.timeout_ms, &self.args, self.ctx.consumer_timeout)
                        .map(|t| {
                            at.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
                        });
                // The writer may wait a moment for its ack (`commit.rs`, EARLY_ACK_WAIT).
                entry.mark_delivered();
                let tracked = Unacked {
                    queue: self.clone(),
                    consumer: Some(consumer.clone()),
                    entry: entry.clone(),
                    delivered_at_ms: at,
                };
                (Some(tracked), timeout_at)
            };
            let delivery_tag =
                consumer
                    .session
                    .record_delivery(tracked, timeout_at, &self.ctx.timers);
            self.ctx.stats.count_delivery(entry.acquired_count > 0);
            let session = consumer.session.clone();
            let _ = session.outbound.send(Outbound::Deliver {
                consumer,
                delivery_tag,
                entry,
                stream_offset: None,
            });
        }
        if !fx.removals.is_empty() {
            let rows = fx.removals.drain(..).map(|id| (self.id, id)).collect();
            self.ctx.store.remove_internal(rows);
        }
        for (reason, entries) in fx.dead_letters.drain(..) {
            self.dead_letter(entries, reason);
        }
        if !fx.refill.is_empty() {
            self.start_refill(std::mem::take(&mut fx.refill));
        }
    }

    /// Appends a message (after its commit) and hands it on if a consumer has room. A queue
    /// over its length limit drops (dead-letters) from the head.
    pub fn enqueue(self: &Arc<Self>, entry: QueuedMessage) {
        self.change(|core, fx| {
            if !core.deleted() {
                core.enqueue(entry, fx);
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                self.counted();
            }
        });
    }

    /// Loads recovered messages (ids ascending). Bodies come later, by paging; entries with a
    /// pending requeue delay wait in the delayed set.
    pub fn restore(self: &Arc<Self>, entries: impl IntoIterator<Item = (QueuedMessage, u64)>) {
        let mut st = self.state.lock();
        st.core.restore(entries);
        self.reschedule(&mut st);
    }

    /// Marks the queue as recovering: its recovered messages arrive in batches
    /// ([`Queue::restore_batch`]) while it already serves, and messages enqueued meanwhile
    /// wait behind the last recovered one.
    pub fn begin_recovery(&self) {
        let mut st = self.state.lock();
        st.core.begin_recovery();
        self.mirror_takes_early(&st.core);
        drop(st);
        self.recovery.send_modify(|r| r.recovering = true);
    }

    /// Appends a batch of recovered messages (ids ascending, after those restored before)
    /// and hands them to consumers with room; `last` ends the recovery (the messages held
    /// meanwhile join behind them).
    pub fn restore_batch(self: &Arc<Self>, entries: Vec<(QueuedMessage, u64)>, last: bool) {
        self.change(|core, fx| {
            core.restore(entries);
            if last {
                core.finish_recovery(fx);
            }
        });
        self.recovery.send_modify(|r| {
            r.batches += 1;
            r.recovering &= !last;
        });
    }

    /// Where its recovery stands, to wait on (`changed`) for the next batch.
    pub fn recovery(&self) -> tokio::sync::watch::Receiver<Recovery> {
        self.recovery.subscribe()
    }

    /// Whether its recovered messages are still being read from the store.
    pub fn is_recovering(&self) -> bool {
        self.recovery.borrow().recovering
    }

    /// Returns once every recovered message has been read into the queue (at once if it
    /// is not recovering), or the queue was deleted.
    pub async fn recovered(&self) {
        let mut rx = self.recovery.subscribe();
        // The sender lives as long as the queue, which the caller holds.
        let _ = rx.wait_for(|r| !r.recovering).await;
    }

    /// Puts settled-but-requeued deliveries back at the head, in their original order.
    pub fn requeue(self: &Arc<Self>, entries: Vec<QueuedMessage>) {
        self.change(|core, _| core.requeue(entries));
    }

    /// Holds settled deliveries until `ready_at` (ms since the epoch), then puts them back at
    /// the head (see [`Queue::tick`]).
    pub fn delay(self: &Arc<Self>, entries: Vec<(QueuedMessage, u64)>) {
        self.change(|core, _| core.delay(entries));
    }

    /// Settles deliveries given back (`how`: failed — a reject with requeue, a lost
    /// connection — or released — a nack with requeue, a consumer timeout, a cancel; after
    /// `delay_ms` if the request gave one) by the queue's settle policy: requeue at the head,
    /// delay, or dead-letter past `x-delivery-limit` (`settle.rs`).
    pub fn fail(self: &Arc<Self>, entries: Vec<QueuedMessage>, how: Return, delay_ms: Option<u64>) {
        self.change(|core, fx| core.fail(entries, how, delay_ms, self.ctx.clock.now_ms(), fx));
    }

    /// Settles deliveries refused without requeue: dead letters with reason `rejected`.
    pub fn reject(self: &Arc<Self>, entries: Vec<QueuedMessage>) {
        self.change(|core, fx| core.reject(entries, fx));
    }

    /// Timed work, driven by the broker's ticker when this queue's deadline is due: expires
    /// due messages (dead-lettering them), releases delayed ones whose time has come, retries
    /// a failed refill, reports its next deadline, and says whether the queue has been idle
    /// for its `x-expires`.
    pub fn tick(self: &Arc<Self>, now: u64) -> Tick {
        if let Some(s) = &self.stream {
            if let Some(at) = s.tick(now) {
                self.schedule_stream_retention(at);
            }
            return Tick::default();
        }
        let mut st = self.state.lock();
        // The index gave up this queue's entry when it fired: the next deadline goes in anew.
        st.timer_at = NO_TIMER;
        let Locked { core, fx, .. } = &mut *st;
        core.tick(now, fx);
        let mut at = LazyNow::at(now);
        core.dispatch(&mut at, &mut take_credit, fx);
        self.apply(fx, &mut at);
        let idle = self.args.expires_ms.is_some_and(|ttl| {
            core.consumers().is_empty()
                && now.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= ttl
        });
        self.reschedule(&mut st);
        self.mirror_takes_early(&st.core);
        Tick { idle_expired: idle }
    }

    /// Records that `n` deliveries from this queue were settled without requeue.
    pub fn settled(self: &Arc<Self>, n: u64) {
        self.change(|core, _| core.settled(n));
    }

    /// Hands ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        if let Some(s) = &self.stream {
            return s.dispatch(self);
        }
        self.change(|_, _| ());
    }

    /// Reads a batch of paged-out bodies on a blocking thread, then hands them to the core.
    fn start_refill(self: &Arc<Self>, ids: Vec<u64>) {
        let queue = self.clone();
        let bodies = self.ctx.bodies.clone();
        self.ctx.runtime.spawn_blocking(move || {
            let loaded = bodies.read_bodies(&ids);
            queue.finish_refill(&ids, loaded);
        });
    }

    fn finish_refill(
        self: &Arc<Self>,
        ids: &[u64],
        loaded: Result<Vec<Option<Arc<Message>>>, crate::store::StoreError>,
    ) {
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                let mut st = self.state.lock();
                st.core.refill_failed(self.ctx.clock.now_ms());
                self.reschedule(&mut st);
                drop(st);
                tracing::error!(queue = %self.name, error = %e, "paging message bodies in failed");
                return;
            }
        };
        self.change(|core, fx| {
            let missing = core.finish_refill(ids, loaded, fx);
            if !missing.is_empty() {
                // A queue entry whose message row is gone: the store is inconsistent. Say so
                // loudly; the core dropped the entries, which cannot be delivered.
                tracing::error!(queue = %self.name, ids = ?missing, "queue entries without a stored message; dropping them");
            }
        });
    }

    /// Takes the head message for `Get`. Its body may still need loading
    /// ([`Queue::load_body`]). Returns the message and how many stay ready.
    pub fn take_one(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u64)> {
        self.touch();
        let now = self.ctx.clock.now_ms();
        let mut st = self.state.lock();
        let Locked { core, fx, .. } = &mut *st;
        let taken = core.take_one(now, no_ack, fx);
        self.apply(fx, &mut LazyNow::at(now));
        self.mirror_takes_early(&st.core);
        drop(st);
        let (entry, left) = taken?;
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        self.counted();
        self.ctx.stats.count_delivery(entry.acquired_count > 0);
        Some((entry, left))
    }

    /// Reads a paged-out body back from the store.
    pub async fn load_body(
        &self,
        entry: &mut QueuedMessage,
    ) -> Result<(), crate::store::StoreError> {
        self.load_bodies(std::slice::from_mut(entry)).await
    }

    /// Attaches a consumer and starts deliveries to it.
    ///
    /// # Errors
    /// A message for the client when an exclusive consumer holds the queue, or when this one
    /// wants exclusivity and others are attached.
    pub fn add_consumer(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<(), String> {
        self.touch();
        self.change(|core, _| {
            let consumers = core.consumers();
            if consumers.iter().any(|c| c.exclusive) {
                return Err(format!("queue '{}' has an exclusive consumer", self.name));
            }
            if consumer.exclusive && !consumers.is_empty() {
                return Err(format!(
                    "cannot consume queue '{}' exclusively: it has {} consumer(s)",
                    self.name,
                    consumers.len()
                ));
            }
            core.add_consumer(consumer);
            Ok(())
        })
    }

    /// Stops deliveries to a consumer that is leaving (cancel, consumer timeout, connection
    /// close), and returns only once no dispatch can still hand it a message: a dispatch
    /// chooses its consumers and records the deliveries in their sessions under the queue's
    /// lock, so once the flag is set under that lock the consumer's session holds every
    /// delivery it will ever get, and taking them from there misses none.
    pub fn stop_consumer(&self, consumer: &Consumer) {
        if let Some(s) = &self.stream {
            return s.stop_consumer(consumer);
        }
        let _st = self.state.lock();
        consumer.deactivate();
    }

    /// Detaches a consumer. Returns true when the queue should now be auto-deleted.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        if let Some(s) = &self.stream {
            s.remove_consumer(consumer);
            return false;
        }
        consumer.deactivate();
        self.touch();
        let mut st = self.state.lock();
        let none_left = st.core.remove_consumer(|c| Arc::ptr_eq(c, consumer));
        // The last consumer gone starts the `x-expires` count.
        self.reschedule(&mut st);
        self.auto_delete && none_left && !self.is_deleted()
    }

    /// The consumer receiving on a single-active-consumer queue (`None` on other queues).
    pub fn active_consumer(&self) -> Option<Arc<Consumer>> {
        self.state.lock().core.active_consumer().cloned()
    }

    /// Copies of the ready messages, head first (at most `limit`): a look that changes
    /// nothing.
    pub fn ready_snapshot(&self, limit: usize) -> Vec<QueuedMessage> {
        self.state
            .lock()
            .core
            .ready()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Removes the ready messages with these ids (those still there), in queue order.
    pub fn take_ids(&self, ids: &HashSet<u64>) -> Vec<QueuedMessage> {
        self.state.lock().core.take_ids(ids)
    }

    /// Puts a taken ready message back where its id places it (a replay its targets refused).
    pub fn put_back(self: &Arc<Self>, entry: QueuedMessage) {
        self.change(|core, _| core.put_back(entry));
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
        let bodies = self.ctx.bodies.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let l = bodies.read_bodies(&ids);
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
        if let Some(s) = &self.stream {
            return s.consumers();
        }
        self.state.lock().core.consumers().to_vec()
    }

    /// Removes every ready message; returns the removed ones (their store rows are the
    /// caller's to delete).
    pub fn purge(&self) -> Vec<QueuedMessage> {
        self.state.lock().core.purge()
    }

    /// Marks the queue deleted and empties it. Returns its consumers (to notify) and the
    /// number of ready messages it held. Store rows go with the queue's store deletion.
    pub fn mark_deleted(&self) -> (Vec<Arc<Consumer>>, u64) {
        if let Some(s) = &self.stream {
            self.deleted.store(true, Ordering::Release);
            let (consumers, first, next) = s.delete();
            return (consumers, next - first);
        }
        let mut st = self.state.lock();
        self.deleted.store(true, Ordering::Release);
        let (consumers, count) = st.core.delete();
        self.mirror_takes_early(&st.core);
        // Nothing more will be recovered into it: release whoever waits for that.
        self.recovery.send_modify(|r| r.recovering = false);
        for c in &consumers {
            c.deactivate();
        }
        (consumers, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;
    use warren_protocol::FieldValue;

    /// A queue on a [`ManualClock`], with a real store in a temporary directory (for the
    /// removals and updates it raises), bodies paged from a map, and the dead-letter channel's receiving end in the test's hands.
    struct Fixture {
        _dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        dead_letters: mpsc::UnboundedReceiver<DeadLetterTask>,
        bodies: Arc<MemoryBodies>,
        ctx: Arc<QueueContext>,
    }

    const T0: u64 = 1_700_000_000_000;

    fn fixture() -> Fixture {
        fixture_with_window(1 << 20)
    }

    fn fixture_with_window(window_bytes: u64) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(T0));
        let hooks = crate::broker::commit::Hooks::new(clock.clone());
        let (store, _) = crate::store::Store::open_with(dir.path(), hooks).expect("store");
        let (tx, dead_letters) = mpsc::unbounded_channel();
        let bodies = Arc::new(MemoryBodies::default());
        let ctx = Arc::new(QueueContext {
            store,
            bodies: bodies.clone(),
            runtime: tokio::runtime::Handle::current(),
            window_bytes,
            dead_letters: tx,
            stats: Arc::new(crate::broker::BrokerStats::default()),
            clock: clock.clone(),
            timers: Arc::new(Timers::default()),
            consumer_timeout: None,
        });
        Fixture {
            _dir: dir,
            clock,
            dead_letters,
            bodies,
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
            early: 0,
            id,
            message: Some(Arc::new(Message {
                write: Default::default(),
                exchange: String::new(),
                routing_key: "q".into(),
                properties: Default::default(),
                body: bytes::Bytes::from_static(b"x"),
            })),
            size: 1,
            delivery_count: 0,
            acquired_count: 0,
            stored: false,
            expires_at,
            priority: 0,
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
        retried.acquired_count = 1;
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

    /// The deadline the timer index holds for the fixture's queue (id 1).
    fn indexed(fx: &Fixture) -> Option<u64> {
        fx.ctx.timers.next_deadline()
    }

    #[tokio::test]
    async fn a_queue_reports_its_earliest_deadline_to_the_timer_index() {
        let fx = fixture();
        let q = queue(&fx, &[]);
        assert_eq!(indexed(&fx), None, "an idle queue costs the ticker nothing");
        q.enqueue(message(1, T0 + 5_000));
        assert_eq!(indexed(&fx), Some(T0 + 5_000));
        // A later deadline leaves the entry; an earlier one (a shorter per-message TTL
        // arriving after a longer one) replaces it.
        q.enqueue(message(2, T0 + 9_000));
        assert_eq!(indexed(&fx), Some(T0 + 5_000));
        q.enqueue(message(3, T0 + 1_000));
        assert_eq!(indexed(&fx), Some(T0 + 1_000));
        assert_eq!(fx.ctx.timers.len(), 1, "one entry per queue");
        // Fired: the index lets the entry go, the tick reports the next one.
        fx.clock.advance(Duration::from_millis(1_000));
        assert_eq!(fx.ctx.timers.take_due(fx.clock.now_ms()).len(), 1);
        q.tick(fx.clock.now_ms());
        assert_eq!(ready_ids(&q), [1, 2]);
        assert_eq!(indexed(&fx), Some(T0 + 5_000));
        assert_eq!(q.scheduled_at(), Some(T0 + 5_000));
        // A delayed requeue due before it comes first.
        let mut retried = message(7, 0);
        retried.acquired_count = 1;
        q.delay(vec![(retried, T0 + 2_000)]);
        assert_eq!(indexed(&fx), Some(T0 + 2_000));
    }

    #[tokio::test]
    async fn an_x_expires_queue_is_timed_from_creation_and_from_its_last_consumer_leaving() {
        let fx = fixture();
        let q = queue(&fx, &[("x-expires", FieldValue::Int(60_000))]);
        assert_eq!(indexed(&fx), Some(T0 + 60_000));
        let (tx, _rx) = crate::broker::outbox::outbox();
        let session = crate::broker::session::Session::new(1, "test".into(), tx);
        let c = Consumer::new("c".into(), &q, session, false, 0, false, None);
        q.add_consumer(c.clone()).expect("consumer");
        fx.clock.advance(Duration::from_secs(30));
        // The entry fires with the consumer attached: nothing is due, nothing rescheduled.
        assert_eq!(fx.ctx.timers.take_due(T0 + 60_000).len(), 1);
        assert!(!q.tick(T0 + 60_000).idle_expired);
        assert_eq!(indexed(&fx), None);
        fx.clock.advance(Duration::from_secs(40));
        q.remove_consumer(&c);
        assert_eq!(
            indexed(&fx),
            Some(T0 + 130_000),
            "idle from the consumer leaving"
        );
    }

    #[tokio::test]
    async fn a_delivery_sets_its_sessions_consumer_timeout_in_the_index() {
        let fx = fixture();
        let q = queue(&fx, &[("x-consumer-timeout", FieldValue::Int(1_000))]);
        let (tx, _rx) = crate::broker::outbox::outbox();
        let session = crate::broker::session::Session::new(1, "test".into(), tx);
        let c = Consumer::new("c".into(), &q, session.clone(), false, 0, false, None);
        q.add_consumer(c).expect("consumer");
        q.enqueue(message(1, 0));
        fx.clock.advance(Duration::from_millis(300));
        q.enqueue(message(2, 0));
        assert_eq!(
            indexed(&fx),
            Some(T0 + 1_000),
            "the oldest delivery's deadline, not the newest"
        );
        assert_eq!(fx.ctx.timers.take_due(T0 + 1_000).len(), 1);
        // The ticker cancels the consumer (taking its deliveries) before rescheduling; here
        // the first delivery is acked instead, so the second one sets the next deadline.
        drop(session.take_unacked(1, false));
        session.reschedule_timeout(None, &fx.ctx.timers);
        assert_eq!(indexed(&fx), Some(T0 + 1_300));
    }

    #[test]
    fn rates_are_recomputed_only_while_the_counters_move() {
        let stats = QueueStats::default();
        assert!(stats.watch(), "the first change joins the rate list");
        stats.published.fetch_add(10, Ordering::Relaxed);
        assert!(!stats.watch(), "once");
        // Joined after the round at T0: its window starts there.
        assert!(stats.update_rates(T0 + 2_000, T0));
        assert_eq!(stats.rates(), [5.0, 0.0, 0.0]);
        // Still for a round: rates back to zero, out of the list.
        assert!(!stats.update_rates(T0 + 3_000, T0 + 2_000));
        assert_eq!(stats.rates(), [0.0, 0.0, 0.0]);
        assert!(!stats.unwatch(), "nothing moved meanwhile");
        // Idle for a long time, then busy: the window is the last round's, not the idle time.
        stats.acked.fetch_add(4, Ordering::Relaxed);
        assert!(stats.watch());
        assert!(stats.update_rates(T0 + 60_000, T0 + 59_000));
        assert_eq!(stats.rates(), [0.0, 0.0, 4.0]);
        // A change between the still round and the unwatch keeps it in.
        assert!(!stats.update_rates(T0 + 61_000, T0 + 60_000));
        stats.acked.fetch_add(1, Ordering::Relaxed);
        assert!(
            !stats.watch(),
            "seen as still in the list: not re-added by the change"
        );
        assert!(stats.unwatch(), "so the unwatch keeps it");
    }

    /// A body source whose first read fails.
    #[derive(Debug, Default)]
    struct FailsOnce {
        bodies: MemoryBodies,
        failed: AtomicBool,
    }

    impl BodySource for FailsOnce {
        fn read_bodies(
            &self,
            ids: &[u64],
        ) -> Result<Vec<Option<Arc<Message>>>, crate::store::StoreError> {
            if !self.failed.swap(true, Ordering::SeqCst) {
                return Err(crate::store::StoreError::Closed);
            }
            self.bodies.read_bodies(ids)
        }
    }

    /// Regression: a failed body read was retried by the next dispatch, which on an idle
    /// queue only the periodic tick of every queue provided. With ticks only for queues
    /// with a deadline, the failure must set one, or the queue's consumer waits forever.
    #[tokio::test]
    async fn a_failed_refill_is_retried_by_the_ticker_on_an_idle_queue() {
        let mut fx = fixture_with_window(0);
        let source = Arc::new(FailsOnce::default());
        fx.ctx = Arc::new(QueueContext {
            store: fx.ctx.store.clone(),
            bodies: source.clone(),
            runtime: fx.ctx.runtime.clone(),
            window_bytes: 0,
            dead_letters: fx.ctx.dead_letters.clone(),
            stats: fx.ctx.stats.clone(),
            clock: fx.clock.clone(),
            timers: fx.ctx.timers.clone(),
            consumer_timeout: None,
        });
        let q = queue(&fx, &[]);
        let mut m = message(1, 0);
        m.stored = true;
        source.bodies.insert(1, m.message.clone().expect("body"));
        q.enqueue(m);
        let (tx, mut rx) = crate::broker::outbox::outbox();
        let session = crate::broker::session::Session::new(1, "test".into(), tx);
        let consumer = Consumer::new("c".into(), &q, session, false, 0, false, None);
        q.add_consumer(consumer).expect("consumer");
        // The read fails on a blocking thread; then the queue has a retry deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while indexed(&fx).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no retry deadline after a failed refill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let retry = indexed(&fx).expect("deadline");
        fx.clock.set(retry);
        assert_eq!(fx.ctx.timers.take_due(retry).len(), 1);
        q.tick(retry);
        let out = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a delivery after the retry");
        assert!(matches!(out, Outbound::Deliver { ref entry, .. } if entry.id == 1));
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

    #[tokio::test]
    async fn paged_out_bodies_are_read_back_before_delivery() {
        let fx = fixture_with_window(2);
        let q = queue(&fx, &[]);
        for id in 1..=4 {
            let mut m = message(id, 0);
            m.stored = true;
            fx.bodies.insert(id, m.message.clone().expect("body"));
            q.enqueue(m);
        }
        let resident: Vec<bool> = q
            .ready_snapshot(usize::MAX)
            .iter()
            .map(|e| e.message.is_some())
            .collect();
        assert_eq!(
            resident,
            [true, true, false, false],
            "past the window: paged out"
        );
        let (tx, mut rx) = crate::broker::outbox::outbox();
        let session = crate::broker::session::Session::new(1, "test".into(), tx);
        let consumer = Consumer::new("c".into(), &q, session, false, 0, false, None);
        q.add_consumer(consumer).expect("consumer");
        let mut ids = Vec::new();
        while ids.len() < 4 {
            let out = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a delivery in time");
            if let Outbound::Deliver { entry, .. } = out {
                assert!(entry.message.is_some(), "delivered with its body");
                ids.push(entry.id);
            }
        }
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(q.counts().unacked, 4);
    }
    #[tokio::test]
    async fn a_consumers_own_timeout_overrides_the_queues_and_the_servers() {
        let fx = fixture();
        let q = queue(&fx, &[("x-consumer-timeout", FieldValue::Int(1_000))]);
        let (tx, _rx) = crate::broker::outbox::outbox();
        let session = crate::broker::session::Session::new(1, "test".into(), tx);
        let c = Consumer::new(
            "own".into(),
            &q,
            session.clone(),
            false,
            0,
            false,
            Some(300),
        );
        q.add_consumer(c).expect("consumer");
        q.enqueue(message(1, 0));
        let server = Some(Duration::from_millis(100));
        let timed_out = |now: u64| -> Vec<(String, u128)> {
            session
                .timed_out_consumers(server, now)
                .into_iter()
                .map(|(c, _, age)| (c.tag.to_string(), age.as_millis()))
                .collect()
        };
        assert_eq!(
            timed_out(T0 + 299),
            [],
            "neither the server's 100 ms nor the queue's 1 s: the consumer's 300 ms"
        );
        assert_eq!(timed_out(T0 + 300), [("own".to_owned(), 300)]);
    }

    #[tokio::test]
    async fn a_consumer_times_out_by_its_oldest_delivery_on_the_queues_clock() {
        let fx = fixture();
        let with_arg = queue(&fx, &[("x-consumer-timeout", FieldValue::Int(1_000))]);
        let without = queue(&fx, &[]);
        let (tx, _rx) = crate::broker::outbox::outbox();
        let session = crate::broker::session::Session::new(1, "test".into(), tx);
        for (tag, q) in [("a", &with_arg), ("b", &without)] {
            let c = Consumer::new(tag.into(), q, session.clone(), false, 0, false, None);
            q.add_consumer(c).expect("consumer");
        }
        with_arg.enqueue(message(1, 0)); // tag 1, to a, at T0
        without.enqueue(message(2, 0)); // tag 2, to b, at T0
        fx.clock.advance(Duration::from_millis(400));
        with_arg.enqueue(message(3, 0)); // tag 3, to a, at T0 + 400
        assert_eq!(session.unacked_count(), 3);

        let server = Some(Duration::from_millis(2_000));
        let timed_out = |now: u64, default: Option<Duration>| -> Vec<(String, u64, u128)> {
            session
                .timed_out_consumers(default, now)
                .into_iter()
                .map(|(c, tag, age)| (c.tag.to_string(), tag, age.as_millis()))
                .collect()
        };
        assert_eq!(timed_out(T0 + 999, server), []);
        assert_eq!(
            timed_out(T0 + 1_000, server),
            [("a".to_owned(), 1, 1_000)],
            "the queue's timeout, reached exactly, by a's oldest delivery"
        );
        assert_eq!(
            timed_out(T0 + 2_000, server),
            [("a".to_owned(), 1, 2_000), ("b".to_owned(), 2, 2_000)],
            "b's queue has no x-consumer-timeout: the server's applies"
        );
        assert_eq!(
            timed_out(T0 + 2_000, None),
            [("a".to_owned(), 1, 2_000)],
            "without a server default, only the queue's"
        );
        assert_eq!(
            timed_out(T0 - 1, server),
            [],
            "a clock stepped back times nothing out"
        );
    }

    /// Regression: a consumer was stopped by setting its flag without the queue's lock, so
    /// a dispatch running on another thread that had already counted it active recorded one
    /// more delivery in its session after the leaving code had taken its unacked ones. That
    /// delivery stayed with a consumer that was gone (on a single-active-consumer queue, out
    /// of order for the successor). Enqueues run on a thread of their own while consumers
    /// come and go; nothing may reach a consumer's session after it was stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_delivery_reaches_a_consumer_after_it_was_stopped() {
        let fx = fixture();
        let q = queue(&fx, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut id = 0;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    q.enqueue(message(id, 0));
                    if id % 64 == 0 {
                        // Keep the backlog short so each new consumer starts at once.
                        drop(q.purge());
                    }
                }
            })
        };
        let (tx, _rx) = crate::broker::outbox::outbox();
        let mut late = 0;
        for i in 0..1_500u32 {
            let session =
                crate::broker::session::Session::new(u64::from(i), "t".into(), tx.clone());
            let c = Consumer::new(
                format!("c{i}").into(),
                &q,
                session.clone(),
                false,
                0,
                false,
                None,
            );
            q.add_consumer(c.clone()).expect("consumer");
            while session.unacked_count() == 0 {
                std::thread::yield_now();
            }
            q.stop_consumer(&c);
            let _held = session.take_unacked_of(&c);
            // Any dispatch that was under way has finished once the lock is free again.
            let _ = q.counts();
            late += session.take_unacked_of(&c).len();
            q.remove_consumer(&c);
        }
        stop.store(true, Ordering::Relaxed);
        publisher.join().expect("publisher thread");
        assert_eq!(
            late, 0,
            "deliveries recorded after their consumer was stopped"
        );
    }
}
