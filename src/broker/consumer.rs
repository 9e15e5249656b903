//! [`Consumer`]: a push consumer on one queue, with the credit rules that bound what the
//! broker sends it.
//!
//! A consumer may receive while it has credit: fewer unacked deliveries than its prefetch
//! (ack mode), and fewer than [`MAX_UNWRITTEN_DELIVERIES`] handed to its connection but not yet
//! written to the socket (both modes). The second rule is what stops a slow `no-ack` reader
//! from piling messages up in memory: they stay in the queue instead.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};

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
        })
    }

    /// Whether the broker may send it another message now.
    pub fn has_credit(&self) -> bool {
        self.active.load(Ordering::Acquire)
            && self.unwritten.load(Ordering::Acquire) < MAX_UNWRITTEN_DELIVERIES
            && (self.no_ack
                || self.prefetch == 0
                || self.unacked.load(Ordering::Acquire) < self.prefetch)
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

    pub(crate) fn on_sent(&self) {
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
        let _ = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }

    fn wake_queue(&self) {
        if let Some(q) = self.queue.upgrade() {
            q.dispatch();
        }
    }
}
