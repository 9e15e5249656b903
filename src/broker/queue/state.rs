//! [`QueueCore`]: a queue's state as a state machine with no I/O and no clock.
//!
//! Every change goes through a method that takes the current time (where time matters) and
//! writes what must happen as a result into an [`Effects`]: deliveries to hand out, store rows
//! to remove or update, messages to dead-letter, bodies to page in. The shell around it
//! ([`super::Queue`]) holds the lock, reads the clock, and carries the effects out against
//! sessions, the store and the dead-letter task. So the queue's rules (FIFO, round-robin,
//! expiry anywhere in the queue, delayed requeues, overflow, the settle policy in
//! `settle.rs`) run in unit tests on plain values, as quinn-proto's `Connection` does.
//!
//! The core never asks a consumer anything but "will you take one more?" (the `credit`
//! callback of [`QueueCore::dispatch`]) and [`ConsumerSlot::no_ack`], so tests drive it with
//! consumers that are plain numbers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use super::ready::Ready;
use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::queue_args::{Overflow, QueueArgs};
use crate::clock::LazyNow;
use crate::message::{Message, QueuedMessage};

/// How many paged-out bodies one refill reads.
pub const REFILL_BATCH: usize = 512;

/// How long after a failed body read a queue tries again on its own (sooner if anything
/// else makes it dispatch).
pub const REFILL_RETRY_MS: u64 = 1_000;

/// The `expires_at` of a message whose TTL is 0 (the queue's `x-message-ttl` or its own
/// `expiration`): 1 ms after the epoch, so anything that meets it later finds it expired;
/// [`QueueCore::enqueue`] gives it its one chance to reach a consumer first.
pub const EXPIRES_AT_ONCE: u64 = 1;

/// What the core needs to know of a consumer attached to it.
pub trait ConsumerSlot: Clone {
    /// Its deliveries count as settled when sent: no unacked entry, and a stored message's
    /// row is removed at once.
    fn no_ack(&self) -> bool;
}

/// A message handed to a consumer.
#[derive(Debug)]
pub struct Delivery<C> {
    /// Who gets it.
    pub consumer: C,
    /// The message (its body is resident).
    pub entry: QueuedMessage,
}

/// A stored entry whose counts and delay must be written (a requeue), so delivery limits,
/// `x-delivery-count`/`x-acquired-count` and backoff survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryUpdate {
    /// The message id.
    pub id: u64,
    /// Its failed deliveries.
    pub delivery_count: u32,
    /// Its acquisitions given back.
    pub acquired_count: u32,
    /// When it is ready again, ms since the epoch (0: now).
    pub ready_at: u64,
}

/// What a change of state asks the shell to do, in the order it must be done: store updates
/// first (a requeued message delivered no-ack at once is updated before it is removed), then
/// deliveries, removals, dead letters and a refill.
///
/// The shell keeps one `Effects` per queue and drains it after each change, so the vectors
/// keep their capacity and the hot path allocates nothing per delivery.
#[derive(Debug)]
pub struct Effects<C> {
    /// Rows of requeued stored entries to update.
    pub updates: Vec<EntryUpdate>,
    /// Messages to hand out, in order.
    pub deliveries: Vec<Delivery<C>>,
    /// Rows (message ids of this queue) to remove: stored messages delivered no-ack, and
    /// entries whose message row turned out to be missing.
    pub removals: Vec<u64>,
    /// Messages that left the queue for the dead-letter task, grouped by reason in the order
    /// they left.
    pub dead_letters: Vec<(DeadLetterReason, Vec<QueuedMessage>)>,
    /// Ids of paged-out bodies to read back; answer with [`QueueCore::finish_refill`] or
    /// [`QueueCore::refill_failed`].
    pub refill: Vec<u64>,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Effects {
            updates: Vec::new(),
            deliveries: Vec::new(),
            removals: Vec::new(),
            dead_letters: Vec::new(),
            refill: Vec::new(),
        }
    }
}

impl<C> Effects<C> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && self.deliveries.is_empty()
            && self.removals.is_empty()
            && self.dead_letters.is_empty()
            && self.refill.is_empty()
    }

    /// Adds a message to dead-letter, joining the last group if it has the same reason.
    pub(super) fn dead_letter(&mut self, reason: DeadLetterReason, entry: QueuedMessage) {
        match self.dead_letters.last_mut() {
            Some((r, entries)) if *r == reason => entries.push(entry),
            _ => self.dead_letters.push((reason, vec![entry])),
        }
    }

    /// Adds messages to dead-letter as one group.
    pub(super) fn dead_letter_all(
        &mut self,
        reason: DeadLetterReason,
        entries: Vec<QueuedMessage>,
    ) {
        if !entries.is_empty() {
            self.dead_letters.push((reason, entries));
        }
    }
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
    /// Its recovered messages are still being read from the store: `ready` and
    /// `ready_bytes` count only those read so far (and those published since).
    pub recovering: bool,
}

/// A queue's messages and consumers, and the rules that move messages between them.
#[derive(Debug)]
pub struct QueueCore<C> {
    /// The arguments the rules read (limits, overflow, delivery limit, backoff).
    pub(super) args: QueueArgs,
    /// Bytes of ready bodies kept in memory before new stored ones are paged out.
    window_bytes: u64,
    /// The ready messages: one FIFO, or one per priority level (`x-max-priority`).
    pub(super) ready: Ready,
    ready_bytes: u64,
    resident_bytes: u64,
    pub(super) unacked: u64,
    consumers: Vec<C>,
    next_consumer: usize,
    had_consumer: bool,
    refilling: bool,
    /// When a failed refill may be tried again (0: none pending): without it an idle queue
    /// whose read failed would wait for the next publish or ack to try again.
    refill_retry_at: u64,
    deleted: bool,
    /// Requeued with a delay: not ready until their time, `(ready at, id)` order.
    pub(super) delayed: BTreeMap<(u64, u64), QueuedMessage>,
    /// `(expires at, id)` of ready messages that can expire; stale entries (for messages
    /// already delivered) are skipped when they come up.
    expiry: BinaryHeap<Reverse<(u64, u64)>>,
    /// The id of a just-enqueued message with a TTL of 0 ([`EXPIRES_AT_ONCE`]): the next
    /// dispatch may offer it to a consumer, then dead-letters it if none took it.
    at_once: Option<u64>,
    /// `Some` while the queue's recovered messages are still being read from the store
    /// ([`QueueCore::begin_recovery`]): messages that arrive meanwhile wait here, in order,
    /// and join the ready list behind the last recovered one
    /// ([`QueueCore::finish_recovery`]), so a publish during recovery lands after every
    /// message that was in the queue before the restart.
    held: Option<Held>,
}

/// Messages that arrived while the queue was recovering, and their bytes.
#[derive(Debug, Default)]
struct Held {
    entries: Vec<QueuedMessage>,
    bytes: u64,
}

/// Below this many ready messages, a queue with a consumer counts as delivering soon
/// ([`QueueCore::delivers_soon`]); a longer line means its consumers are behind, and a new
/// message would wait longer than the writer holds one.
const DELIVERS_SOON_READY: usize = 256;

impl<C: ConsumerSlot> QueueCore<C> {
    /// An empty queue acting on `args`, keeping at most `window_bytes` of stored ready bodies
    /// in memory.
    pub fn new(args: QueueArgs, window_bytes: u64) -> Self {
        QueueCore {
            ready: Ready::new(args.max_priority),
            args,
            window_bytes,
            ready_bytes: 0,
            resident_bytes: 0,
            unacked: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
            refilling: false,
            refill_retry_at: 0,
            deleted: false,
            delayed: BTreeMap::new(),
            expiry: BinaryHeap::new(),
            at_once: None,
            held: None,
        }
    }

    /// Its counters.
    pub fn counts(&self) -> QueueCounts {
        let (held, held_bytes) = self
            .held
            .as_ref()
            .map_or((0, 0), |h| (h.entries.len() as u64, h.bytes));
        QueueCounts {
            ready: self.ready.len() as u64 + held,
            ready_bytes: self.ready_bytes + held_bytes,
            unacked: self.unacked,
            consumers: u32::try_from(self.consumers.len()).unwrap_or(u32::MAX),
            delayed: self.delayed.len() as u64,
            recovering: self.held.is_some(),
        }
    }

    /// Whether a message may be enqueued here before its commit (docs/storage.md,
    /// *Enqueued before the commit*): not while the queue is deleted or recovering (it
    /// would have to wait behind the recovered messages), nor while its window of resident
    /// bodies is full (such a message cannot be paged out until it is stored).
    pub fn takes_early(&self) -> bool {
        !self.deleted && self.held.is_none() && self.resident_bytes < self.window_bytes
    }

    /// Whether a message enqueued now is likely delivered within moments: a consumer is
    /// attached and few messages are ahead of it. The writer then waits for its delivery
    /// and ack rather than writing it at once (`commit.rs`, `hold_until`).
    pub fn delivers_soon(&self) -> bool {
        !self.consumers.is_empty() && self.ready.len() < DELIVERS_SOON_READY
    }

    /// Whether [`QueueCore::delete`] emptied it for good.
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// The ready messages, head first.
    pub fn ready(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.ready.iter()
    }

    /// Bytes of ready bodies held in memory.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    /// Whether the queue has room for one more message of `size` bytes after `pending` ones
    /// already accepted (its `x-max-length` and `x-max-length-bytes`).
    pub fn admits(&self, pending: (u64, u64), size: u64) -> bool {
        let c = self.counts();
        let count = c.ready + pending.0;
        let bytes = c.ready_bytes + pending.1;
        self.args.max_length.is_none_or(|max| count < max)
            && self
                .args
                .max_length_bytes
                .is_none_or(|max| bytes + size <= max)
    }

    /// Appends a message (after its commit), paging its body out if it is stored and the
    /// window is full; a priority queue first fixes its level from its `priority` property.
    /// A queue over its length limit with `drop-head` overflow drops from the head (dead
    /// letters `maxlen`): in a priority queue that is the highest priority, as in RabbitMQ.
    /// Call [`QueueCore::dispatch`] after.
    pub fn enqueue(&mut self, mut entry: QueuedMessage, fx: &mut Effects<C>) {
        if self.deleted {
            return;
        }
        if let Some(max) = self.args.max_priority {
            // Read while the body is here: it may be paged out below.
            entry.priority = priority_level(&entry, max);
        }
        if let Some(held) = &mut self.held {
            if entry.expires_at == EXPIRES_AT_ONCE {
                // A TTL of 0 while recovering: recovered messages are ahead of it.
                fx.dead_letter(DeadLetterReason::Expired, entry);
                return;
            }
            if entry.stored && entry.early == 0 {
                // Paged out until it joins the ready list: recovery may take a while, and
                // its body is in the store. (One enqueued before its commit may not be
                // there yet: it stays.)
                entry.message = None;
            }
            held.bytes += u64::from(entry.size);
            held.entries.push(entry);
            return;
        }
        self.append(entry, fx);
    }

    /// [`QueueCore::enqueue`] once the priority level is fixed and the queue is not
    /// recovering.
    fn append(&mut self, mut entry: QueuedMessage, fx: &mut Effects<C>) {
        self.ready_bytes += u64::from(entry.size);
        if entry.message.is_some() {
            // One enqueued before its commit stays: its body may not be stored yet. The
            // early path stops when the window is full ([`QueueCore::takes_early`]).
            if entry.stored && entry.early == 0 && self.resident_bytes >= self.window_bytes {
                entry.message = None;
            } else {
                self.resident_bytes += u64::from(entry.size);
            }
        }
        if entry.expires_at == EXPIRES_AT_ONCE {
            // A TTL of 0, as RabbitMQ: delivered if a consumer can take it at once, otherwise
            // expired now. Behind other messages (of its priority or higher) or with no
            // consumer it cannot be.
            if !self.ready.would_lead(&entry) || self.consumers.is_empty() {
                self.take_accounting(&entry);
                fx.dead_letter(DeadLetterReason::Expired, entry);
                return;
            }
            self.at_once = Some(entry.id);
        }
        if entry.expires_at != 0 {
            self.expiry.push(Reverse((entry.expires_at, entry.id)));
            self.compact_expiry();
        }
        self.ready.push_back(entry);
        self.drop_head_over_limit(fx);
    }

    /// Drops ready messages from the head while the queue is over its length limits
    /// (`x-overflow` `drop-head`).
    fn drop_head_over_limit(&mut self, fx: &mut Effects<C>) {
        if self.args.overflow != Overflow::DropHead {
            return;
        }
        loop {
            let over_count = self
                .args
                .max_length
                .is_some_and(|max| self.ready.len() as u64 > max);
            let over_bytes = self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes > max);
            if !(over_count || over_bytes) {
                return;
            }
            let Some(e) = self.pop_front() else { return };
            fx.dead_letter(DeadLetterReason::MaxLen, e);
        }
    }

    /// Loads recovered messages (ids ascending), bodies paged out, each with the priority
    /// recovery read from its stored properties; entries with a pending requeue delay
    /// (`ready_at` > 0) wait in the delayed set.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = (QueuedMessage, u64)>) {
        if self.deleted {
            return;
        }
        for (mut e, ready_at) in entries {
            e.priority = e.priority.min(self.args.max_priority.unwrap_or(0));
            if ready_at > 0 {
                self.delayed.insert((ready_at, e.id), e);
                continue;
            }
            self.ready_bytes += u64::from(e.size);
            if e.expires_at != 0 {
                self.expiry.push(Reverse((e.expires_at, e.id)));
            }
            self.ready.push_back(e);
        }
    }

    /// Marks the queue as recovering: until [`QueueCore::finish_recovery`], further
    /// [`QueueCore::restore`] batches append recovered messages and enqueued ones wait
    /// behind them.
    pub fn begin_recovery(&mut self) {
        self.held = Some(Held::default());
    }

    /// Whether recovered messages are still being read ([`QueueCore::begin_recovery`]).
    pub fn recovering(&self) -> bool {
        self.held.is_some()
    }

    /// Ends recovery: the messages enqueued meanwhile join the ready list, in arrival
    /// order, behind every recovered one. Call [`QueueCore::dispatch`] after.
    pub fn finish_recovery(&mut self, fx: &mut Effects<C>) {
        let Some(held) = self.held.take() else {
            return;
        };
        for e in held.entries {
            if self.deleted {
                return;
            }
            self.append(e, fx);
        }
    }

    /// Records that `n` deliveries were settled and left the queue (ack, dead letter).
    pub fn settled(&mut self, n: u64) {
        self.unacked = self.unacked.saturating_sub(n);
    }

    /// Puts settled-but-requeued deliveries back at the head (of their priority, in a priority
    /// queue), in id order.
    pub fn requeue(&mut self, entries: Vec<QueuedMessage>) {
        self.settled(entries.len() as u64);
        self.push_front(entries);
    }

    /// Holds settled deliveries until their `ready_at` (ms since the epoch), when
    /// [`QueueCore::tick`] puts them back at the head.
    pub fn delay(&mut self, entries: Vec<(QueuedMessage, u64)>) {
        self.settled(entries.len() as u64);
        if self.deleted {
            return;
        }
        for (e, ready_at) in entries {
            self.delayed.insert((ready_at, e.id), e);
        }
    }

    fn push_front(&mut self, mut entries: Vec<QueuedMessage>) {
        if self.deleted || entries.is_empty() {
            return;
        }
        entries.sort_unstable_by_key(|e| e.id);
        for e in entries.into_iter().rev() {
            self.ready_bytes += u64::from(e.size);
            if e.message.is_some() {
                self.resident_bytes += u64::from(e.size);
            }
            if e.expires_at != 0 {
                self.expiry.push(Reverse((e.expires_at, e.id)));
            }
            self.ready.push_front(e);
        }
    }

    /// Timed work at `now`: releases delayed messages whose time has come (to the head) and
    /// expires due ready messages wherever they are (dead letters `expired`). Call
    /// [`QueueCore::dispatch`] after.
    pub fn tick(&mut self, now: u64, fx: &mut Effects<C>) {
        if self.refill_retry_at != 0 && self.refill_retry_at <= now {
            // The dispatch that follows asks for the bodies again.
            self.refill_retry_at = 0;
        }
        let mut due = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        self.push_front(due);
        self.expire(now, fx);
    }

    /// The earliest time at which [`QueueCore::tick`] may have something to do (ms since
    /// the epoch), or `None` when nothing is timed: the earliest expiry of a ready message,
    /// release of a delayed one, or retry of a failed refill. It may be earlier than needed
    /// (the expiry index keeps entries of messages delivered since, dropped when they come
    /// up), never later. The shell reports it to the broker's timer index after every change
    /// so the ticker visits only queues with something due.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.deleted {
            return None;
        }
        let expiry = self.expiry.peek().map(|Reverse((at, _))| *at);
        let delayed = self.delayed.keys().next().map(|(at, _)| *at);
        let retry = (self.refill_retry_at != 0).then_some(self.refill_retry_at);
        [expiry, delayed, retry].into_iter().flatten().min()
    }

    /// Removes every ready message whose time has come, wherever it is in the queue.
    fn expire(&mut self, now: u64, fx: &mut Effects<C>) {
        let mut due = HashSet::new();
        while let Some(Reverse((at, id))) = self.expiry.peek().copied() {
            if at > now {
                break;
            }
            self.expiry.pop();
            due.insert(id);
        }
        if due.is_empty() {
            return;
        }
        let is_due =
            |e: &QueuedMessage| e.expires_at != 0 && e.expires_at <= now && due.contains(&e.id);
        let mut expired = Vec::new();
        // Usually the expired messages are the oldest: take them from the head first.
        while self.ready.front().is_some_and(is_due) {
            if let Some(e) = self.pop_front() {
                expired.push(e);
            }
        }
        if self.ready.iter().any(is_due) {
            for e in self.ready.take_where(is_due) {
                self.take_accounting(&e);
                expired.push(e);
            }
        }
        fx.dead_letter_all(DeadLetterReason::Expired, expired);
    }

    /// Whether [`QueueCore::dispatch`] could hand anything out: there are ready messages and
    /// consumers. (The shell skips reading the clock when it could not.)
    pub fn can_dispatch(&self) -> bool {
        !self.deleted && !self.consumers.is_empty() && !self.ready.is_empty()
    }

    /// Hands ready messages to consumers, round-robin (only to the
    /// [`QueueCore::active_consumer`] with `x-single-active-consumer`), at `now` (read only if
    /// a head carries an expiry). `credit(c)` is asked before
    /// each message: it answers whether `c` takes one more, and counts it against `c`'s
    /// credit when it does. An expired head is dead-lettered, never delivered; a paged-out
    /// head stops dispatch and asks for a refill.
    pub fn dispatch(
        &mut self,
        now: &mut LazyNow<'_>,
        credit: &mut impl FnMut(&C) -> bool,
        fx: &mut Effects<C>,
    ) {
        // A single-active-consumer queue dispatches to its first consumer only (the longest
        // attached): the round-robin below, over a ring of one.
        let n = if self.args.single_active_consumer {
            self.consumers.len().min(1)
        } else {
            self.consumers.len()
        };
        if n == 0 || self.deleted {
            return;
        }
        let mut idle = 0;
        while idle < n {
            let Some(head) = self.ready.front() else {
                break;
            };
            if head.expires_at != 0 && self.at_once != Some(head.id) && head.expires_at <= now.get()
            {
                if let Some(e) = self.pop_front() {
                    fx.dead_letter(DeadLetterReason::Expired, e);
                }
                continue;
            }
            if head.message.is_none() {
                self.start_refill(fx);
                break;
            }
            let idx = self.next_consumer % n;
            self.next_consumer = self.next_consumer.wrapping_add(1);
            let Some(consumer) = self.consumers.get(idx) else {
                break;
            };
            if !credit(consumer) {
                idle += 1;
                continue;
            }
            idle = 0;
            let consumer = consumer.clone();
            let Some(entry) = self.pop_front() else { break };
            if consumer.no_ack() {
                // Taken before its row was written: no row will be.
                if entry.stored && !entry.settle_unwritten() {
                    fx.removals.push(entry.id);
                }
            } else {
                self.unacked += 1;
            }
            fx.deliveries.push(Delivery { consumer, entry });
        }
        self.expire_at_once(fx);
    }

    /// Dead-letters the TTL-0 message [`QueueCore::enqueue`] let through if no consumer took
    /// it in the dispatch that followed.
    fn expire_at_once(&mut self, fx: &mut Effects<C>) {
        let Some(id) = self.at_once.take() else {
            return;
        };
        if self.ready.front().is_some_and(|e| e.id == id) {
            if let Some(e) = self.pop_front() {
                fx.dead_letter(DeadLetterReason::Expired, e);
            }
        }
    }

    fn start_refill(&mut self, fx: &mut Effects<C>) {
        if self.refilling {
            return;
        }
        fx.refill.extend(
            self.ready
                .iter()
                .filter(|e| e.message.is_none())
                .take(REFILL_BATCH)
                .map(|e| e.id),
        );
        self.refilling = !fx.refill.is_empty();
    }

    /// A refill's read failed at `now`: the next dispatch may ask again, and
    /// [`QueueCore::next_deadline`] reports a retry [`REFILL_RETRY_MS`] later in case no
    /// change comes to dispatch before then.
    pub fn refill_failed(&mut self, now: u64) {
        self.refilling = false;
        self.refill_retry_at = now.saturating_add(REFILL_RETRY_MS).max(1);
    }

    /// Puts the bodies a refill read (`loaded[i]` for `ids[i]`) into their entries. Entries
    /// whose message row was missing are dropped (the store is inconsistent: they cannot be
    /// delivered) and their rows removed; their ids are returned so the shell can say so.
    /// Call [`QueueCore::dispatch`] after.
    pub fn finish_refill(
        &mut self,
        ids: &[u64],
        loaded: Vec<Option<Arc<Message>>>,
        fx: &mut Effects<C>,
    ) -> Vec<u64> {
        self.refilling = false;
        let mut by_id: HashMap<u64, Option<Arc<Message>>> =
            ids.iter().copied().zip(loaded).collect();
        let scan_limit = ids.len().saturating_mul(4).max(REFILL_BATCH);
        let mut resident_added = 0u64;
        let mut missing = Vec::new();
        for (i, e) in self.ready.iter_mut().enumerate() {
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
        self.resident_bytes += resident_added;
        if !missing.is_empty() {
            let mut gone = 0u64;
            self.ready.retain(|e| {
                let keep = !missing.contains(&e.id);
                if !keep {
                    gone += u64::from(e.size);
                }
                keep
            });
            self.ready_bytes = self.ready_bytes.saturating_sub(gone);
            fx.removals.extend_from_slice(&missing);
        }
        missing
    }

    /// Takes the head message for `Get` at `now` (expired heads are dead-lettered on the
    /// way). Its body may still need loading. Returns it and how many stay ready.
    pub fn take_one(
        &mut self,
        now: u64,
        no_ack: bool,
        fx: &mut Effects<C>,
    ) -> Option<(QueuedMessage, u64)> {
        let entry = loop {
            let e = self.pop_front()?;
            if e.expires_at != 0 && e.expires_at <= now {
                fx.dead_letter(DeadLetterReason::Expired, e);
                continue;
            }
            break e;
        };
        if !no_ack {
            self.unacked += 1;
        }
        Some((entry, self.ready.len() as u64))
    }

    /// Its consumers, in round-robin order.
    pub fn consumers(&self) -> &[C] {
        &self.consumers
    }

    /// The consumer that receives on a single-active-consumer queue: the longest attached.
    /// `None` when the queue has no consumer or is not single-active-consumer.
    pub fn active_consumer(&self) -> Option<&C> {
        self.consumers
            .first()
            .filter(|_| self.args.single_active_consumer)
    }

    /// Attaches a consumer. Call [`QueueCore::dispatch`] after.
    pub fn add_consumer(&mut self, consumer: C) {
        self.consumers.push(consumer);
        self.had_consumer = true;
    }

    /// Detaches the consumers `is_it` picks. Returns true when a consumer was ever attached
    /// and none is left (what `auto-delete` waits for). On a single-active-consumer queue the
    /// next attached consumer becomes the active one: call [`QueueCore::dispatch`] after
    /// requeueing what the removed one held, so it gets those first.
    pub fn remove_consumer(&mut self, mut is_it: impl FnMut(&C) -> bool) -> bool {
        self.consumers.retain(|c| !is_it(c));
        self.had_consumer && self.consumers.is_empty()
    }

    /// Removes the ready messages with these ids (those still there), in queue order.
    pub fn take_ids(&mut self, ids: &HashSet<u64>) -> Vec<QueuedMessage> {
        let taken = self.ready.take_where(|e| ids.contains(&e.id));
        for e in &taken {
            self.take_accounting(e);
        }
        taken
    }

    /// Puts a taken ready message back where its id places it (within its priority). Call
    /// [`QueueCore::dispatch`] after.
    pub fn put_back(&mut self, entry: QueuedMessage) {
        if self.deleted {
            return;
        }
        self.ready_bytes += u64::from(entry.size);
        if entry.message.is_some() {
            self.resident_bytes += u64::from(entry.size);
        }
        if entry.expires_at != 0 {
            self.expiry.push(Reverse((entry.expires_at, entry.id)));
        }
        self.ready.insert_by_id(entry);
    }

    /// Removes every ready message (and those held while recovering) and returns them.
    pub fn purge(&mut self) -> Vec<QueuedMessage> {
        self.ready_bytes = 0;
        self.resident_bytes = 0;
        self.expiry.clear();
        let mut all = self.ready.take_all();
        if let Some(held) = &mut self.held {
            held.bytes = 0;
            all.append(&mut held.entries);
        }
        all
    }

    /// Empties the queue for good. Returns its consumers and how many messages (ready and
    /// delayed) it held.
    pub fn delete(&mut self) -> (Vec<C>, u64) {
        self.deleted = true;
        let held = self.held.take().map_or(0, |h| h.entries.len() as u64);
        let count = self.ready.len() as u64 + self.delayed.len() as u64 + held;
        self.ready.take_all();
        self.delayed.clear();
        self.expiry.clear();
        self.ready_bytes = 0;
        self.resident_bytes = 0;
        (self.consumers.drain(..).collect(), count)
    }

    // Always inlined: it is on every delivery's path, and since the ready list has two
    // shapes the compiler stopped inlining it on its own (+40 instructions per delivery).
    #[inline(always)]
    fn pop_front(&mut self) -> Option<QueuedMessage> {
        let e = self.ready.pop_front()?;
        self.take_accounting(&e);
        Some(e)
    }

    /// Keeps the byte counters right when a message leaves the ready list.
    fn take_accounting(&mut self, e: &QueuedMessage) {
        self.ready_bytes = self.ready_bytes.saturating_sub(u64::from(e.size));
        if e.message.is_some() {
            self.resident_bytes = self.resident_bytes.saturating_sub(u64::from(e.size));
        }
    }

    /// Rebuilds the expiry heap from the ready messages when stale entries (messages already
    /// delivered) dominate it. Without this a busy queue with a long TTL would keep one heap
    /// entry per message it ever held until each TTL ran out. Amortised O(1) per enqueue.
    fn compact_expiry(&mut self) {
        if self.expiry.len() <= 1024 || self.expiry.len() <= 2 * self.ready.len() {
            return;
        }
        self.expiry = self
            .ready
            .iter()
            .filter(|e| e.expires_at != 0)
            .map(|e| Reverse((e.expires_at, e.id)))
            .collect();
    }
}

/// A message's level in a priority queue with levels `0..=max`: its `priority` property
/// (absent: 0), capped at `max`; an entry without its body keeps the level it has. Out of
/// line: only priority queues call it, and the plain queue's `enqueue` stays small.
#[inline(never)]
fn priority_level(entry: &QueuedMessage, max: u8) -> u8 {
    let asked = entry
        .message
        .as_ref()
        .map_or(entry.priority, |m| m.properties.priority.unwrap_or(0));
    asked.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::settle::Return;
    use crate::broker::queue_args::Overflow;

    const T0: u64 = 1_700_000_000_000;

    /// A consumer for tests: a number, and whether it acks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Tc(u32, bool);

    impl ConsumerSlot for Tc {
        fn no_ack(&self) -> bool {
            self.1
        }
    }

    const ACKS: Tc = Tc(1, false);

    fn entry(id: u64, expires_at: u64) -> QueuedMessage {
        QueuedMessage {
            early: 0,
            id,
            message: None,
            size: 1,
            delivery_count: 0,
            acquired_count: 0,
            stored: false,
            expires_at,
            priority: 0,
        }
    }

    fn message(id: u64, expires_at: u64) -> QueuedMessage {
        QueuedMessage {
            early: 0,
            message: Some(Arc::new(Message {
                write: Default::default(),
                exchange: String::new(),
                routing_key: "q".into(),
                properties: Default::default(),
                body: bytes::Bytes::from_static(b"x"),
            })),
            ..entry(id, expires_at)
        }
    }

    fn stored(id: u64) -> QueuedMessage {
        QueuedMessage {
            early: 0,
            stored: true,
            ..message(id, 0)
        }
    }

    fn core(args: QueueArgs) -> QueueCore<Tc> {
        QueueCore::new(args, 1 << 20)
    }

    fn ready_ids(q: &QueueCore<Tc>) -> Vec<u64> {
        q.ready().map(|e| e.id).collect()
    }

    fn delivered(fx: &mut Effects<Tc>) -> Vec<(u32, u64)> {
        fx.deliveries
            .drain(..)
            .map(|d| (d.consumer.0, d.entry.id))
            .collect()
    }

    fn dead(fx: &mut Effects<Tc>) -> Vec<(DeadLetterReason, Vec<u64>)> {
        fx.dead_letters
            .drain(..)
            .map(|(r, es)| (r, es.iter().map(|e| e.id).collect()))
            .collect()
    }

    /// Credit for consumers with a prefetch: `held[i]` is what consumer `i` holds unacked.
    fn prefetch(held: &mut [u32], limit: u32) -> impl FnMut(&Tc) -> bool + '_ {
        move |c| {
            let h = &mut held[c.0 as usize];
            if *h < limit {
                *h += 1;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn the_expiry_heap_does_not_keep_entries_of_delivered_messages() {
        let mut st = core(QueueArgs::default());
        // 5,000 messages with a TTL went through; 10 are still ready, 3 of them with a TTL.
        for id in 0..5_000 {
            st.expiry.push(Reverse((1_000_000 + id, id)));
        }
        for id in 5_000..5_010 {
            st.ready
                .push_back(entry(id, if id % 3 == 0 { 2_000_000 } else { 0 }));
        }
        st.compact_expiry();
        let left: Vec<u64> = st.expiry.iter().map(|Reverse((_, id))| *id).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.iter().all(|id| *id >= 5_000));
    }

    fn recovered(ids: std::ops::RangeInclusive<u64>) -> Vec<(QueuedMessage, u64)> {
        ids.map(|id| {
            let mut e = stored(id);
            e.message = None;
            (e, 0)
        })
        .collect()
    }

    #[test]
    fn while_recovering_new_messages_wait_behind_every_recovered_one() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        q.begin_recovery();
        q.restore(recovered(1..=3));
        q.add_consumer(Tc(0, false));
        // Published during the recovery: held, counted, not dispatched before the rest.
        q.enqueue(stored(100), &mut fx);
        q.enqueue(message(101, 0), &mut fx);
        let c = q.counts();
        assert_eq!((c.ready, c.ready_bytes, c.recovering), (5, 5, true));
        // A consumer drains what was recovered so far (bodies come from the store).
        let mut held = [0];
        for e in q.ready.iter_mut() {
            e.message = message(e.id, 0).message;
        }
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 100), &mut fx);
        assert_eq!(delivered(&mut fx), [(0, 1), (0, 2), (0, 3)]);
        assert_eq!(q.counts().ready, 2, "the held ones are still counted");
        // The next batch goes ahead of them, then the recovery ends and they follow.
        q.restore(recovered(4..=5));
        q.finish_recovery(&mut fx);
        assert!(!q.counts().recovering);
        assert_eq!(ready_ids(&q), [4, 5, 100, 101]);
        // The held stored message was paged out; the transient one kept its body.
        let bodies: Vec<bool> = q.ready().map(|e| e.message.is_some()).collect();
        assert_eq!(bodies, [false, false, false, true]);
        assert_eq!(q.counts().ready_bytes, 4);
    }

    #[test]
    fn a_ttl_of_zero_expires_at_once_while_recovering_and_purge_takes_the_held_ones() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        q.begin_recovery();
        q.restore(recovered(1..=2));
        q.add_consumer(Tc(0, false));
        q.enqueue(message(10, EXPIRES_AT_ONCE), &mut fx);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Expired, vec![10])]);
        q.enqueue(message(11, 0), &mut fx);
        let purged: Vec<u64> = q.purge().iter().map(|e| e.id).collect();
        assert_eq!(purged, [1, 2, 11]);
        assert_eq!(q.counts().ready, 0);
        assert_eq!(q.counts().ready_bytes, 0);
        q.finish_recovery(&mut fx);
        assert!(ready_ids(&q).is_empty());
    }

    #[test]
    fn a_deleted_queue_takes_no_more_recovered_messages() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        q.begin_recovery();
        q.restore(recovered(1..=2));
        q.enqueue(message(10, 0), &mut fx);
        let (_, count) = q.delete();
        assert_eq!(count, 3);
        q.restore(recovered(3..=4));
        q.finish_recovery(&mut fx);
        assert!(ready_ids(&q).is_empty());
        assert!(fx.is_empty());
    }

    #[test]
    fn a_small_heap_is_left_alone() {
        let mut st = core(QueueArgs::default());
        for id in 0..100 {
            st.expiry.push(Reverse((1, id)));
        }
        st.compact_expiry();
        assert_eq!(st.expiry.len(), 100);
    }

    #[test]
    fn dispatch_goes_round_robin_within_prefetch_and_ack_makes_room() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        for id in 1..=5 {
            q.enqueue(message(id, 0), &mut fx);
        }
        q.add_consumer(Tc(0, false));
        q.add_consumer(Tc(1, false));
        let mut held = [0, 0];
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 2), &mut fx);
        assert_eq!(delivered(&mut fx), [(0, 1), (1, 2), (0, 3), (1, 4)]);
        assert_eq!(ready_ids(&q), [5], "both consumers are at their prefetch");
        assert_eq!(q.counts().unacked, 4);
        // Consumer 1 acks one.
        held[1] -= 1;
        q.settled(1);
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 2), &mut fx);
        assert_eq!(delivered(&mut fx), [(1, 5)]);
        assert_eq!(q.counts().unacked, 4);
        assert!(fx.is_empty());
    }

    #[test]
    fn a_ttl_of_zero_is_delivered_at_once_or_expires_at_once() {
        use DeadLetterReason::Expired;
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        // No consumer: expired at the enqueue, not at the next tick.
        q.enqueue(message(1, EXPIRES_AT_ONCE), &mut fx);
        assert_eq!(dead(&mut fx), [(Expired, vec![1])]);
        assert_eq!(q.counts().ready, 0);
        assert_eq!(q.counts().ready_bytes, 0);
        // A consumer with credit takes it, whatever the clock says.
        q.add_consumer(Tc(0, false));
        let mut held = [0];
        q.enqueue(message(2, EXPIRES_AT_ONCE), &mut fx);
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 1), &mut fx);
        assert_eq!(delivered(&mut fx), [(0, 2)]);
        assert!(fx.dead_letters.is_empty());
        // A consumer without credit cannot: expired by that dispatch.
        q.enqueue(message(3, EXPIRES_AT_ONCE), &mut fx);
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 1), &mut fx);
        assert!(fx.deliveries.is_empty());
        assert_eq!(dead(&mut fx), [(Expired, vec![3])]);
        assert!(ready_ids(&q).is_empty());
        // Behind another message it cannot be taken at once either.
        q.enqueue(message(4, 0), &mut fx);
        q.enqueue(message(5, EXPIRES_AT_ONCE), &mut fx);
        assert_eq!(dead(&mut fx), [(Expired, vec![5])]);
        assert_eq!(ready_ids(&q), [4]);
    }

    #[test]
    fn a_priority_queue_orders_by_priority_restores_by_it_and_lets_a_leading_ttl_zero_through() {
        use DeadLetterReason::{Expired, MaxLen};
        let with_priority = |id: u64, p: Option<u8>, expires_at: u64| {
            let mut m = message(id, expires_at);
            if let Some(msg) = m.message.as_mut() {
                Arc::make_mut(msg).properties.priority = p;
            }
            m
        };
        let args = QueueArgs {
            max_priority: Some(5),
            max_length: Some(4),
            ..QueueArgs::default()
        };
        let mut q = core(args.clone());
        let mut fx = Effects::default();
        for (id, p) in [(1, None), (2, Some(5)), (3, Some(9)), (4, Some(2))] {
            q.enqueue(with_priority(id, p, 0), &mut fx);
        }
        assert_eq!(ready_ids(&q), [2, 3, 4, 1], "9 counts as 5, FIFO within 5");
        // Full: drop-head drops the head, the highest priority, as RabbitMQ does.
        q.enqueue(with_priority(5, Some(1), 0), &mut fx);
        assert_eq!(dead(&mut fx), [(MaxLen, vec![2])]);
        assert_eq!(ready_ids(&q), [3, 4, 5, 1]);
        // A TTL-0 message above everything ready would be the head: it gets its chance.
        let mut q = core(QueueArgs {
            max_priority: Some(5),
            ..QueueArgs::default()
        });
        q.add_consumer(ACKS);
        let mut none = |_: &Tc| false;
        q.enqueue(with_priority(1, Some(3), 0), &mut fx);
        q.dispatch(&mut LazyNow::at(T0), &mut none, &mut fx);
        q.enqueue(with_priority(2, Some(4), EXPIRES_AT_ONCE), &mut fx);
        assert!(fx.dead_letters.is_empty());
        // Behind one of its own priority it would not be.
        q.enqueue(with_priority(3, Some(3), EXPIRES_AT_ONCE), &mut fx);
        assert_eq!(dead(&mut fx), [(Expired, vec![3])]);
        let mut held = [0, 0];
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 1), &mut fx);
        assert_eq!(delivered(&mut fx), [(1, 2)]);
        assert_eq!(ready_ids(&q), [1]);
        // Recovery hands levels in, ids ascending; the order is rebuilt from them.
        let mut r = core(args);
        r.restore([(2, 0), (1, 7), (3, 3)].map(|(id, p)| {
            let mut e = entry(id, 0);
            e.priority = p;
            (e, 0)
        }));
        assert_eq!(ready_ids(&r), [1, 3, 2], "7 is capped at 5");
        assert_eq!(r.ready().map(|e| e.priority).collect::<Vec<_>>(), [5, 3, 0]);
    }

    #[test]
    fn a_single_active_consumer_queue_delivers_to_the_first_consumer_until_it_goes() {
        let mut q = core(QueueArgs {
            single_active_consumer: true,
            ..QueueArgs::default()
        });
        let mut fx = Effects::default();
        for id in 1..=5 {
            q.enqueue(message(id, 0), &mut fx);
        }
        q.add_consumer(Tc(0, false));
        q.add_consumer(Tc(1, false));
        q.add_consumer(Tc(2, false));
        assert_eq!(q.active_consumer(), Some(&Tc(0, false)));
        let mut held = [0, 0, 0];
        q.dispatch(&mut LazyNow::at(T0), &mut prefetch(&mut held, 2), &mut fx);
        let first: Vec<QueuedMessage> = fx.deliveries.iter().map(|d| d.entry.clone()).collect();
        assert_eq!(
            delivered(&mut fx),
            [(0, 1), (0, 2)],
            "only the active one, even at its prefetch with others idle"
        );
        assert_eq!(ready_ids(&q), [3, 4, 5]);
        // The active consumer goes: the next attached takes over, its unacked first.
        q.remove_consumer(|c| c.0 == 0);
        assert_eq!(q.active_consumer(), Some(&Tc(1, false)));
        q.fail(first, Return::Released, None, T0, &mut fx);
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        assert_eq!(delivered(&mut fx), [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]);
        // Without the argument, round-robin as usual and no active consumer.
        let mut rr = core(QueueArgs::default());
        rr.add_consumer(Tc(0, false));
        assert_eq!(rr.active_consumer(), None);
    }

    #[test]
    fn a_no_ack_delivery_of_a_stored_message_removes_its_row() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        q.enqueue(stored(1), &mut fx);
        q.enqueue(message(2, 0), &mut fx);
        q.add_consumer(Tc(0, true));
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        assert_eq!(delivered(&mut fx), [(0, 1), (0, 2)]);
        assert_eq!(fx.removals, [1], "only the stored one has a row");
        assert_eq!(
            q.counts().unacked,
            0,
            "no-ack deliveries are settled when sent"
        );
    }

    #[test]
    fn nack_requeues_at_the_head_in_id_order_with_the_acquired_count_raised() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        for id in 1..=4 {
            q.enqueue(stored(id), &mut fx);
        }
        q.add_consumer(ACKS);
        let mut taken = 0;
        q.dispatch(
            &mut LazyNow::at(T0),
            &mut |_| {
                taken += 1;
                taken <= 2
            },
            &mut fx,
        );
        let mut out: Vec<QueuedMessage> = fx.deliveries.drain(..).map(|d| d.entry).collect();
        out.reverse(); // settled in any order, back in id order
        q.fail(out, Return::Released, None, T0, &mut fx);
        assert_eq!(ready_ids(&q), [1, 2, 3, 4]);
        assert_eq!(
            q.ready()
                .map(|e| (e.delivery_count, e.acquired_count))
                .collect::<Vec<_>>(),
            [(0, 1), (0, 1), (0, 0), (0, 0)],
            "a nack is a return, not a failure"
        );
        assert_eq!(q.counts().unacked, 0);
        let mut updates = fx.updates.clone();
        updates.sort_by_key(|u| u.id);
        assert_eq!(
            updates,
            [
                EntryUpdate {
                    id: 1,
                    delivery_count: 0,
                    acquired_count: 1,
                    ready_at: 0
                },
                EntryUpdate {
                    id: 2,
                    delivery_count: 0,
                    acquired_count: 1,
                    ready_at: 0
                },
            ],
            "stored entries record their count"
        );
    }

    #[test]
    fn reject_dead_letters_and_the_delivery_limit_applies_past_it() {
        let mut q = core(QueueArgs {
            delivery_limit: Some(1),
            ..QueueArgs::default()
        });
        let mut fx = Effects::default();
        q.enqueue(message(1, 0), &mut fx);
        q.enqueue(message(2, 0), &mut fx);
        q.add_consumer(ACKS);
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        let mut out: Vec<QueuedMessage> = fx.deliveries.drain(..).map(|d| d.entry).collect();
        let second = out.pop().expect("two delivered");
        q.reject(vec![second], &mut fx);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Rejected, vec![2])]);
        // Message 1 fails once (count 1: within the limit), then again (count 2: past it).
        q.fail(out, Return::Failed, None, T0, &mut fx);
        assert_eq!(ready_ids(&q), [1]);
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        let again: Vec<QueuedMessage> = fx.deliveries.drain(..).map(|d| d.entry).collect();
        q.fail(again, Return::Failed, None, T0, &mut fx);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::DeliveryLimit, vec![1])]);
        assert_eq!(
            q.counts(),
            QueueCounts {
                ready: 0,
                ready_bytes: 0,
                unacked: 0,
                consumers: 1,
                delayed: 0,
                recovering: false,
            }
        );
    }

    #[test]
    fn backoff_holds_a_failed_delivery_until_its_time() {
        let mut q = core(QueueArgs {
            retry_backoff_ms: Some(vec![100, 1_000]),
            ..QueueArgs::default()
        });
        let mut fx = Effects::default();
        q.enqueue(message(1, 0), &mut fx);
        q.enqueue(message(2, 0), &mut fx);
        let first = q.take_one(T0, false, &mut fx).expect("ready").0;
        q.fail(vec![first], Return::Failed, None, T0, &mut fx);
        assert_eq!(ready_ids(&q), [2]);
        assert_eq!(q.counts().delayed, 1);
        q.tick(T0 + 99, &mut fx);
        assert_eq!(ready_ids(&q), [2], "not before its time");
        q.tick(T0 + 100, &mut fx);
        assert_eq!(ready_ids(&q), [1, 2], "back at the head");
        // The second failure waits for the second step; a request's own delay wins.
        let again = q.take_one(T0 + 100, false, &mut fx).expect("ready").0;
        q.fail(vec![again], Return::Failed, None, T0 + 100, &mut fx);
        assert_eq!(q.delayed.keys().next(), Some(&(T0 + 1_100, 1)));
        q.tick(T0 + 1_100, &mut fx);
        let third = q.take_one(T0 + 1_100, false, &mut fx).expect("ready").0;
        q.fail(vec![third], Return::Failed, Some(5), T0 + 1_100, &mut fx);
        assert_eq!(q.delayed.keys().next(), Some(&(T0 + 1_105, 1)));
        assert!(fx.is_empty());
    }

    #[test]
    fn ttl_expires_anywhere_and_an_expired_head_is_never_delivered() {
        let mut q = core(QueueArgs::default());
        let mut fx = Effects::default();
        q.enqueue(message(1, 0), &mut fx);
        q.enqueue(message(2, T0 + 100), &mut fx);
        q.enqueue(message(3, 0), &mut fx);
        q.tick(T0 + 100, &mut fx);
        assert_eq!(ready_ids(&q), [1, 3]);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Expired, vec![2])]);
        // An expired head is dropped at dispatch, before the next tick sees it.
        let mut q = core(QueueArgs::default());
        q.enqueue(message(1, T0 + 10), &mut fx);
        q.enqueue(message(2, 0), &mut fx);
        q.add_consumer(ACKS);
        q.dispatch(&mut LazyNow::at(T0 + 10), &mut |_| true, &mut fx);
        assert_eq!(delivered(&mut fx), [(1, 2)]);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Expired, vec![1])]);
        // And by get.
        q.enqueue(message(3, T0 + 10), &mut fx);
        assert!(q.take_one(T0 + 10, false, &mut fx).is_none());
        assert_eq!(dead(&mut fx), [(DeadLetterReason::Expired, vec![3])]);
    }

    #[test]
    fn the_three_overflow_modes() {
        let mut fx = Effects::default();
        // drop-head: the queue takes the message and drops its oldest.
        let mut q = core(QueueArgs {
            max_length: Some(2),
            ..QueueArgs::default()
        });
        for id in 1..=3 {
            q.enqueue(message(id, 0), &mut fx);
        }
        assert_eq!(ready_ids(&q), [2, 3]);
        assert_eq!(dead(&mut fx), [(DeadLetterReason::MaxLen, vec![1])]);
        // reject-publish(-dlx): the queue refuses, counting what a commit already admitted;
        // the completion step nacks (and dead-letters) what it refused.
        for overflow in [Overflow::RejectPublish, Overflow::RejectPublishDlx] {
            let mut q = core(QueueArgs {
                max_length: Some(2),
                max_length_bytes: Some(10),
                overflow,
                ..QueueArgs::default()
            });
            q.enqueue(message(1, 0), &mut fx);
            assert!(q.admits((0, 0), 1));
            assert!(!q.admits((1, 1), 1), "one admitted in this commit fills it");
            assert!(!q.admits((0, 0), 10), "too many bytes");
        }
        assert!(fx.is_empty());
    }

    #[test]
    fn paging_keeps_bodies_within_the_window_and_refills_before_delivering() {
        let mut q: QueueCore<Tc> = QueueCore::new(QueueArgs::default(), 2);
        let mut fx = Effects::default();
        for id in 1..=4 {
            q.enqueue(stored(id), &mut fx);
        }
        let resident: Vec<bool> = q.ready().map(|e| e.message.is_some()).collect();
        assert_eq!(resident, [true, true, false, false]);
        assert_eq!(q.resident_bytes(), 2);
        q.add_consumer(ACKS);
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        assert_eq!(delivered(&mut fx), [(1, 1), (1, 2)]);
        assert_eq!(fx.refill, [3, 4], "a paged-out head asks for its bodies");
        let ids = std::mem::take(&mut fx.refill);
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        assert!(fx.is_empty(), "one refill at a time");
        // The store has message 3's body; message 4's row is missing.
        let body = message(3, 0).message;
        let missing = q.finish_refill(&ids, vec![body, None], &mut fx);
        assert_eq!(missing, [4]);
        assert_eq!(fx.removals, [4]);
        fx.removals.clear();
        q.dispatch(&mut LazyNow::at(T0), &mut |_| true, &mut fx);
        assert_eq!(delivered(&mut fx), [(1, 3)]);
        assert_eq!(q.counts().ready_bytes, 0);
    }
}
