//! [`Event`]: what the broker tells a connection, in no protocol's terms.
//!
//! The broker answers requests and raises notices (a confirm, a returned message, a consumer
//! it cancelled) as events on the session's [`Outbound`](super::session::Outbound) channel or
//! its [`ReplySink`](super::confirm::ReplySink). The connection's front end encodes each one
//! in its own protocol: the Warren connection maps them to frames in
//! `crate::connection::encode`, the one place that mapping lives, and an AMQP front end would
//! map the same events to AMQP methods. Deliveries take their own, zero-copy path
//! (`Outbound::Deliver`).
//!
//! Codes are [`ErrorCode`]: a table of numbers (AMQP's where the meanings match), not wire
//! bytes, shared with `BrokerError::code` (see docs/decisions.md, "Broker and connections").

use std::sync::Arc;

use bytes::Bytes;
use warren_protocol::ErrorCode;

use crate::message::Message;

/// Identifies the request an event answers, as the client chose it; 0 when the event answers
/// none (a notice such as a cancelled consumer, or a connection error).
pub type RequestId = u64;

/// Something the broker tells a connection. Paired with the [`RequestId`] it answers (0 for
/// none) wherever it travels.
#[derive(Debug)]
pub enum Event {
    /// A request that returns nothing succeeded.
    Ok,
    /// A resource alarm blocks this connection's publishes; its frames are not read until
    /// [`Event::Unblocked`].
    Blocked {
        /// Which alarm.
        reason: String,
    },
    /// The alarm cleared: the connection is read again.
    Unblocked,
    /// A queue was declared (or exists as declared).
    QueueDeclareOk(DeclaredQueue),
    /// A queue was deleted with this many ready messages.
    QueueDeleteOk {
        /// Messages deleted with the queue.
        message_count: u64,
    },
    /// A queue was purged of this many ready messages.
    QueuePurgeOk {
        /// Messages removed.
        message_count: u64,
    },
    /// A consumer started; sent before its first delivery.
    ConsumeOk {
        /// Its tag (chosen by the server when the client gave none).
        consumer_tag: String,
    },
    /// The broker stopped a consumer (its queue was deleted, it held a delivery past its
    /// consumer timeout, or it could not attach after `ConsumeOk`).
    ConsumerCancelled {
        /// The consumer's tag.
        consumer_tag: String,
        /// Why, as a code.
        code: ErrorCode,
        /// Why, in words.
        reason: String,
    },
    /// `get` took a message.
    GetOk(GotMessage),
    /// `get` found nothing ready.
    GetEmpty,
    /// The verdict on one publish.
    Confirm(Confirm),
    /// A no-confirm publish was taken (or was a duplicate): nothing is said, but the
    /// connection counts it as finished, exactly as it counts a [`Event::Confirm`] it writes
    /// (its publish permit comes back).
    Settled,
    /// A mandatory publish no queue took, handed back before its confirm.
    Returned {
        /// The message as published.
        message: Arc<Message>,
        /// Why, as a code (`NoRoute`).
        code: ErrorCode,
        /// Why, in words.
        text: String,
    },
    /// An admin command's result, a JSON document (`crate::admin_types`).
    AdminOk {
        /// The UTF-8 JSON.
        json: Bytes,
    },
    /// A request failed; with request id 0, the connection fails and closes.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// What was wrong, with the value at fault.
        text: String,
    },
    /// The server closes the connection (shutdown).
    Close {
        /// Why, as a code (`Normal` for a shutdown).
        code: ErrorCode,
        /// Why, in words.
        reason: String,
    },
    /// The answer to the client's close.
    CloseOk,
}

/// The broker's verdict on one publish.
#[derive(Debug)]
pub enum Confirm {
    /// Taken: stored (durably, if persistent and routed to durable queues), or unroutable.
    Ack,
    /// Refused (a full queue, a storage failure).
    Nack {
        /// What kind of refusal.
        code: ErrorCode,
        /// Why, naming the queue or the failure.
        reason: String,
    },
    /// Not stored: its deduplication key was already accepted within the window
    /// (docs/deduplication.md).
    Duplicate,
}

/// A declared queue, as `declare_queue` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredQueue {
    /// Its name (the chosen one for a server-named queue).
    pub name: String,
    /// Messages ready in it.
    pub message_count: u64,
    /// Consumers attached to it.
    pub consumer_count: u32,
}

/// A message `get` took from a queue.
#[derive(Debug, Clone)]
pub struct GotMessage {
    /// Its tag on this connection, for ack/nack/reject (0 with no-ack: nothing to settle).
    pub delivery_tag: u64,
    /// How many earlier deliveries of it failed (`x-delivery-count`).
    pub delivery_count: u32,
    /// How many times it was taken from the queue and given back before
    /// (`x-acquired-count`; more than 0: redelivered).
    pub acquired_count: u32,
    /// Messages still ready in the queue.
    pub message_count: u64,
    /// The message.
    pub message: Arc<Message>,
}
