//! [`Consumer`]: a push consumer on one queue, with the credit rules that bound what the
//! broker sends it.
//!
//! A consumer may receive while it has credit: fewer unacked deliveries than its prefetch
//! (ack mode), and fewer than [`MAX_UNWRITTEN_DELIVERIES`] handed to its connection but not yet
//! written to the socket (both modes). The second rule is what stops a slow `no-ack` reader
//! from piling messages up in memory: they stay in the queue instead.
//!
//! An ack-mode consumer may also hold a [`SharedCredit`]: one limit shared with the other
//! consumers of its AMQP channel (`basic.qos` with `global=true`), checked on top of its
//! own. A consumer without one pays a single load of an empty `OnceLock` for it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

use super::queue::Queue;
use super::session::Session;

/// Deliveries a consumer may have queued on its connection but not yet written.
pub const MAX_UNWRITTEN_DELIVERIES: u32 = 1024;

/// A consumer attached to a queue.
#[derive(Debug)]
pub struct Consumer {
    /// Tag, unique on its connection.
    pub tag: Arc<str>,
    /// The queue it consumes from (weak: the queue owns its consumers, not the reverse).
    pub queue: Weak<Queue>,
    /// The connection it belongs to.
    pub session: Arc<Session>,
    /// Deliveries count as acked when sent.
    pub no_ack: bool,
    /// Max unacked deliveries; 0 = no limit.
    pub prefetch: u32,
    /// Whether it holds the queue exclusively.
    pub exclusive: bool,
    /// Its own consumer timeout, ms (`x-consumer-timeout` of its `Consume`): overrides the
    /// queue's and the server's.
    pub timeout_ms: Option<u64>,
    unacked: AtomicU32,
    unwritten: AtomicU32,
    active: AtomicBool,
    /// The channel-wide limit it counts against, if its channel set one.
    shared: OnceLock<Arc<SharedCredit>>,
}

/// A prefetch shared by the ack-mode consumers of one AMQP channel (RabbitMQ's `basic.qos`
/// with `global=true`): at most `limit` unacked deliveries across all of them, whatever
/// their queues. Each consumer's own prefetch still applies.
#[derive(Debug, Default)]
pub struct SharedCredit {
    /// The limit; 0 = none. May change while consumers hold it (a later `basic.qos`).
    limit: AtomicU32,
    /// Unacked deliveries of the consumers holding it.
    unacked: AtomicU32,
    /// The consumers holding it: an ack on one queue can give credit to a consumer of
    /// another queue, whose queue must then be told to dispatch.
    holders: Mutex<Vec<Weak<Consumer>>>,
}

impl SharedCredit {
    /// A shared limit of `limit` unacked deliveries (0: none).
    pub fn new(limit: u32) -> Arc<SharedCredit> {
        Arc::new(SharedCredit {
            limit: AtomicU32::new(limit),
            ..SharedCredit::default()
        })
    }

    /// The limit (0: none).
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// Changes the limit; a larger one (or none) lets the holders' queues dispatch again.
    pub fn set_limit(&self, limit: u32) {
        let before = self.limit.swap(limit, Ordering::AcqRel);
        if limit == 0 || (before != 0 && limit > before) {
            self.wake();
        }
    }

    /// Unacked deliveries counted against it right now.
    pub fn unacked(&self) -> u32 {
        self.unacked.load(Ordering::Acquire)
    }

    fn has_credit(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        limit == 0 || self.unacked.load(Ordering::Acquire) < limit
    }

    /// Takes one credit if there is one: check and count in one step, so two queues
    /// dispatching at once to consumers of the same channel cannot both take the last one.
    fn try_take(&self) -> bool {
        self.unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let limit = self.limit.load(Ordering::Acquire);
                (limit == 0 || v < limit).then_some(v.saturating_add(1))
            })
            .is_ok()
    }

    /// Returns `n` credits; when that ends a full state, the holders' queues dispatch.
    fn release(&self, n: u32) {
        if n == 0 {
            return;
        }
        let before = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or_else(|v| v);
        let limit = self.limit.load(Ordering::Acquire);
        if limit != 0 && before >= limit && before.saturating_sub(n) < limit {
            self.wake();
        }
    }

    fn wake(&self) {
        let holders: Vec<Arc<Consumer>> = {
            let mut holders = self.holders.lock();
            holders.retain(|c| c.strong_count() > 0);
            holders.iter().filter_map(Weak::upgrade).collect()
        };
        for c in holders {
            c.wake_queue();
        }
    }
}

impl Consumer {
    /// A new, active consumer.
    pub fn new(
        tag: Arc<str>,
        queue: &Arc<Queue>,
        session: Arc<Session>,
        no_ack: bool,
        prefetch: u32,
        exclusive: bool,
        timeout_ms: Option<u64>,
    ) -> Arc<Consumer> {
        Arc::new(Consumer {
            tag,
            queue: Arc::downgrade(queue),
            session,
            no_ack,
            prefetch,
            exclusive,
            timeout_ms,
            unacked: AtomicU32::new(0),
            unwritten: AtomicU32::new(0),
            active: AtomicBool::new(true),
            shared: OnceLock::new(),
        })
    }

    /// Makes it count against its channel's shared limit too, with what it holds unacked
    /// now (a consumer started before its channel's first global `qos`). A `no-ack`
    /// consumer has nothing unacked, so it takes no part (as in RabbitMQ). Only the first
    /// limit given counts.
    pub fn share_credit(self: &Arc<Self>, shared: Arc<SharedCredit>) {
        if self.no_ack || self.shared.get().is_some() {
            return;
        }
        // Read before the limit is attached: a delivery in between is then counted short
        // (released at zero) rather than twice (a credit the channel would never get back).
        let held = self.unacked();
        shared.holders.lock().push(Arc::downgrade(self));
        if self.shared.set(shared.clone()).is_ok() && held > 0 {
            shared.unacked.fetch_add(held, Ordering::AcqRel);
        }
    }

    /// The channel-wide limit it counts against, if any.
    pub fn shared_credit(&self) -> Option<&Arc<SharedCredit>> {
        self.shared.get()
    }

    /// Whether the broker may send it another message now.
    pub fn has_credit(&self) -> bool {
        self.has_own_credit() && self.shared.get().is_none_or(|s| s.has_credit())
    }

    fn has_own_credit(&self) -> bool {
        self.active.load(Ordering::Acquire)
            && self.unwritten.load(Ordering::Acquire) < MAX_UNWRITTEN_DELIVERIES
            && (self.no_ack
                || self.prefetch == 0
                || self.unacked.load(Ordering::Acquire) < self.prefetch)
    }

    /// Takes the credit for one delivery if it has it (its own and its channel's), counting
    /// the delivery as sent.
    pub(crate) fn take_credit(&self) -> bool {
        if !self.has_own_credit() {
            return false;
        }
        if let Some(shared) = self.shared.get() {
            if !shared.try_take() {
                return false;
            }
        }
        self.count_sent();
        true
    }

    /// Unacked deliveries right now.
    pub fn unacked(&self) -> u32 {
        self.unacked.load(Ordering::Acquire)
    }

    /// Stops deliveries to it (cancel, connection close).
    pub fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
    }

    /// Whether it is still active.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Counts a delivery as sent whose credit was checked with [`has_credit`](Self::has_credit)
    /// (streams, which dispatch under their own lock).
    pub(crate) fn on_sent(&self) {
        if let Some(shared) = self.shared.get() {
            shared.unacked.fetch_add(1, Ordering::AcqRel);
        }
        self.count_sent();
    }

    fn count_sent(&self) {
        if !self.no_ack {
            self.unacked.fetch_add(1, Ordering::AcqRel);
        }
        self.unwritten.fetch_add(1, Ordering::AcqRel);
    }

    /// Called by the connection writer once a delivery is written to the socket.
    pub fn on_written(&self) {
        let before = self.unwritten.fetch_sub(1, Ordering::AcqRel);
        if before >= MAX_UNWRITTEN_DELIVERIES {
            self.wake_queue();
        }
    }

    /// Called when `n` of its deliveries were acked, nacked or rejected.
    pub fn on_settled(&self, n: u32) {
        // Saturating: settling after a requeue on close must not wrap.
        let before = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or_else(|v| v);
        if let Some(shared) = self.shared.get() {
            // What this consumer really held: the channel's count moves by the same.
            shared.release(n.min(before));
        }
    }

    fn wake_queue(&self) {
        if let Some(q) = self.queue.upgrade() {
            q.dispatch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_credit_counts_to_its_limit_and_a_new_limit_applies_at_once() {
        let shared = SharedCredit::new(2);
        assert!(shared.try_take() && shared.try_take());
        assert!(!shared.try_take(), "at the limit");
        assert!(!shared.has_credit());
        shared.release(1);
        assert!(shared.try_take(), "an ack gives one back");
        shared.set_limit(3);
        assert!(shared.try_take());
        assert_eq!(shared.unacked(), 3);
        shared.set_limit(0);
        assert!(shared.try_take(), "0 is no limit");
        // Releasing more than was taken stops at zero.
        shared.release(10);
        assert_eq!(shared.unacked(), 0);
    }
}
