//! [`Message`]: a published message as the broker keeps it, and [`QueuedMessage`], its entry in
//! one queue.

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
