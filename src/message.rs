//! [`Message`]: a published message as the broker keeps it, and [`QueuedMessage`], its entry in
//! one queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use warren_protocol::Properties;

/// A published message. Shared (`Arc`) by every queue it was routed to, so a fan-out holds
/// one copy of the body however many queues it lands in.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
    /// Where its write stands when it was enqueued before its commit (the early path).
    pub write: WriteState,
}

impl Message {
    /// A message with these fields, not yet written.
    pub fn new(exchange: String, routing_key: String, properties: Properties, body: Bytes) -> Self {
        Message {
            exchange,
            routing_key,
            properties,
            body,
            write: WriteState::default(),
        }
    }
}

/// A message's place in one queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The broker-wide message id: the store key, and the queue's FIFO order.
    pub id: u64,
    /// The message, or `None` while its body is paged out to the store (see docs/storage.md).
    pub message: Option<Arc<Message>>,
    /// Body size in bytes, known even while paged out.
    pub size: u32,
    /// How many earlier deliveries of this message from this queue failed (RabbitMQ's
    /// `x-delivery-count`): a reject, or its consumer's connection ending with it unacked.
    /// `x-delivery-limit` compares this count.
    pub delivery_count: u32,
    /// How many times a consumer or a `Get` took this message from this queue and gave it back
    /// (RabbitMQ's `x-acquired-count`): every failure above, and every return that is not one
    /// (nack with requeue, a consumer timeout, a cancel that requeues). Never less than
    /// `delivery_count`; more than 0 means a delivery is a redelivery.
    pub acquired_count: u32,
    /// Whether the store holds this message for this queue (persistent, durable queue).
    pub stored: bool,
    /// When it expires in this queue, in milliseconds since the Unix epoch (0 = never): the
    /// queue's `x-message-ttl` or the message's `expiration`, whichever ends first, counted
    /// from when it entered the queue.
    pub expires_at: u64,
    /// Its priority level in a priority queue (`x-max-priority`): the message's `priority`
    /// property capped at the queue's max, set by the queue when the message enters it (and
    /// by recovery, from the stored properties), so it is known while the body is paged out.
    /// 0 in a plain queue, which ignores it. (It fits in padding: the entry is no larger.)
    pub priority: u8,
    /// 0, or `i + 1` when the message was enqueued here before its commit as target `i`
    /// of its publish (see [`WriteState`]). (In padding too.)
    pub early: u8,
}

impl QueuedMessage {
    /// Settles an entry enqueued before its commit whose row the writer has not taken yet:
    /// true when no row will be written, so there is none to remove.
    pub fn settle_unwritten(&self) -> bool {
        match (self.early, &self.message) {
            (0, _) | (_, None) => false,
            (i, Some(m)) => m.write.settle(usize::from(i - 1)),
        }
    }

    /// Marks an entry enqueued before its commit as delivered to a consumer that acks.
    pub fn mark_delivered(&self) {
        if let (i @ 1.., Some(m)) = (self.early, &self.message) {
            m.write.delivered(usize::from(i - 1));
        }
    }
}

/// Whether a message enqueued before its commit (the early path, docs/storage.md) still has
/// to be written, shared by the writer and its queues. Bits 0..31: the message was settled
/// (acked, or taken by a no-ack consumer) in target queue `i` before the writer took it, so
/// that queue needs no row; bits 32..63: delivered in target `i` (the writer may wait a
/// moment for its ack, [`WriteState::awaits_acks`]); bit 63: the writer has taken the
/// message, after which a settle removes a written row like any other.
#[derive(Debug, Default)]
pub struct WriteState(AtomicU64);

/// The most target queues a message enqueued before its commit may have: one settled bit
/// and one delivered bit each in [`WriteState`].
pub const MAX_EARLY_TARGETS: usize = 31;

const TAKEN: u64 = 1 << 63;
const SETTLED_MASK: u64 = (1 << MAX_EARLY_TARGETS) - 1;

impl WriteState {
    /// The writer takes the message: from now on every settle removes a row. Returns the
    /// targets already settled (bit `i`: target `i`), which need no row.
    pub fn take(&self) -> u64 {
        self.0.fetch_or(TAKEN, Ordering::AcqRel) & SETTLED_MASK
    }

    /// Settles the message in target `index`: true when the writer had not taken it yet,
    /// so no row will be written there and none needs removing; false when a row may have
    /// been written and must be removed as usual.
    pub fn settle(&self, index: usize) -> bool {
        let bit = 1u64 << index;
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if current & TAKEN != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                current | bit,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Records that target `index` delivered the message to a consumer that acks.
    pub fn delivered(&self, index: usize) {
        self.0.fetch_or(1 << (32 + index), Ordering::AcqRel);
    }

    /// The targets (bit `i`: target `i`) that have delivered or settled the message, or
    /// `None` once the writer has taken it.
    pub fn reached(&self) -> Option<u64> {
        let v = self.0.load(Ordering::Acquire);
        (v & TAKEN == 0).then_some((v | (v >> 32)) & SETTLED_MASK)
    }

    /// Whether every one of the first `targets` targets has delivered or settled the
    /// message, some not settled yet, and the writer has not taken it: then an ack may be
    /// moments away and spare the write.
    pub fn awaits_acks(&self, targets: usize) -> bool {
        let v = self.0.load(Ordering::Acquire);
        let all = (1u64 << targets) - 1;
        let settled = v & SETTLED_MASK;
        let delivered = (v >> 32) & SETTLED_MASK;
        v & TAKEN == 0 && (settled | delivered) & all == all && settled & all != all
    }
}

impl Clone for WriteState {
    /// A copy is a new message as far as the store goes: it starts unwritten.
    fn clone(&self) -> Self {
        WriteState::default()
    }
}

impl PartialEq for WriteState {
    /// Write progress is not part of a message's content.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Milliseconds since the Unix epoch: the broker's clock for expiry and delays.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        // Seconds and millis apart: `as_millis` goes through u128 arithmetic, and this runs
        // once per delivery.
        .map_or(0, |d| {
            d.as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(d.subsec_millis()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_settled_before_the_writer_takes_the_message_needs_no_row() {
        let w = WriteState::default();
        assert!(w.settle(0), "not taken yet: the settle spares the row");
        assert_eq!(w.take(), 0b1, "the writer sees target 0 settled");
        assert!(
            !w.settle(1),
            "taken: target 1's row must be removed as usual"
        );
        assert_eq!(
            w.take(),
            0b1,
            "a later settle changes nothing the writer saw"
        );
    }

    #[test]
    fn the_writer_waits_only_while_every_target_has_it_and_some_ack_is_missing() {
        let w = WriteState::default();
        assert!(!w.awaits_acks(2), "nothing delivered yet");
        w.delivered(0);
        assert!(!w.awaits_acks(2), "target 1 has not delivered it");
        w.delivered(1);
        assert!(w.awaits_acks(2), "both delivered, neither acked");
        assert!(w.settle(0));
        assert!(w.awaits_acks(2), "target 1's ack is still to come");
        assert!(w.settle(1));
        assert!(!w.awaits_acks(2), "all settled: nothing to wait for");
        let taken = WriteState::default();
        taken.delivered(0);
        taken.take();
        assert!(!taken.awaits_acks(1), "taken: too late to wait");
    }

    #[test]
    fn settles_cover_every_target_up_to_the_most_allowed() {
        let w = WriteState::default();
        for i in 0..MAX_EARLY_TARGETS {
            w.delivered(i);
            assert!(w.settle(i));
        }
        assert!(!w.awaits_acks(MAX_EARLY_TARGETS));
        assert_eq!(w.take(), (1u64 << MAX_EARLY_TARGETS) - 1);
    }
}
