//! Publishing: [`OutgoingMessage`] and its borrowed form [`MessageRef`], the broker's
//! verdict [`PublishOutcome`], and
//! [`PendingConfirm`], the future that resolves to it; [`Refusal`], what the server said
//! about a publish sent without a confirm.
//!
//! A publish is pipelined: [`crate::client::Client::publish`] returns as soon as the frame is
//! queued to the connection's writer, and the [`PendingConfirm`] resolves when the server's
//! `Confirm` (preceded by a `Return` for an unroutable mandatory message) arrives.
//! [`crate::client::Client::publish_unconfirmed`] asks for no confirm at all: only a
//! refusal comes back, and the connection keeps it as a [`Refusal`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;
use warren_protocol::{FieldValue, Properties, PublishRef, RequestId};

use crate::client::error::{ClientError, NO_CLOSE_CODE};

/// A message to publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingMessage {
    /// Target exchange; `""` is the default exchange, which routes to the queue named by the
    /// routing key.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Ask the server to return the message if no queue takes it.
    pub mandatory: bool,
    /// Message properties.
    pub properties: Properties,
    /// Message body.
    pub body: Bytes,
}

impl OutgoingMessage {
    /// A transient, non-mandatory message with no properties.
    pub fn new(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        OutgoingMessage {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            properties: Properties::default(),
            body: body.into(),
        }
    }

    /// Marks the message persistent: a durable queue keeps it on disk.
    #[must_use]
    pub fn persistent(mut self) -> Self {
        self.properties.persistent = true;
        self
    }

    /// Marks the message mandatory: it comes back as [`PublishOutcome::Returned`] if no
    /// queue takes it.
    #[must_use]
    pub fn mandatory(mut self) -> Self {
        self.mandatory = true;
        self
    }

    /// Adds (or replaces) an application header. For many headers, set
    /// `properties.headers` from a [`warren_protocol::FieldTable`] instead: each call
    /// re-encodes the headers.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: FieldValue) -> Self {
        self.properties.headers.insert(key, value);
        self
    }

    /// Sets the application message id.
    #[must_use]
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.properties.message_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.properties.correlation_id = Some(id.into());
        self
    }

    /// Sets the body's MIME type.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.properties.content_type = Some(content_type.into());
        self
    }

    /// Sets the per-message time to live in milliseconds.
    #[must_use]
    pub fn expiration_ms(mut self, ms: u64) -> Self {
        self.properties.expiration = Some(ms);
        self
    }

    /// The message as borrowed parts, for [`Client::publish_ref`](crate::client::Client::publish_ref).
    pub fn borrowed(&self) -> MessageRef<'_> {
        MessageRef {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            mandatory: self.mandatory,
            properties: &self.properties,
            body: &self.body,
        }
    }
}

/// A message to publish, borrowed: what [`Client::publish_ref`](crate::client::Client::publish_ref)
/// and [`Client::publish_unconfirmed_ref`](crate::client::Client::publish_unconfirmed_ref)
/// take. The client encodes it straight into the connection's outgoing bytes, so a publisher
/// that keeps its exchange, routing keys, properties and a body buffer of its own allocates
/// nothing per message for them.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// Target exchange; `""` is the default exchange.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Ask the server to return the message if no queue takes it.
    pub mandatory: bool,
    /// Message properties.
    pub properties: &'a Properties,
    /// Message body.
    pub body: &'a [u8],
}

impl<'a> MessageRef<'a> {
    /// A non-mandatory message with these properties.
    pub fn new(
        exchange: &'a str,
        routing_key: &'a str,
        properties: &'a Properties,
        body: &'a [u8],
    ) -> Self {
        MessageRef {
            exchange,
            routing_key,
            mandatory: false,
            properties,
            body,
        }
    }

    /// The `Publish` frame of this message.
    pub(crate) fn frame(&self, no_confirm: bool) -> PublishRef<'a> {
        PublishRef {
            exchange: self.exchange,
            routing_key: self.routing_key,
            mandatory: self.mandatory,
            no_confirm,
            properties: self.properties,
            body: self.body,
        }
    }
}

/// What the broker did with a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored (durably, if persistent and routed to durable queues).
    Confirmed,
    /// Mandatory and unroutable: the server returned it (and then confirmed the publish).
    Returned {
        /// [`warren_protocol::ErrorCode`] as a number (312 `NO_ROUTE`).
        reply_code: u16,
        /// Why.
        reply_text: String,
    },
    /// The broker refused the message.
    Nacked {
        /// [`warren_protocol::ErrorCode`] as a number.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The exchange (or every queue it was routed to) deduplicates and had already accepted
    /// a message with the same deduplication key within its window: this one is stored
    /// nowhere. For a retry of a publish whose confirm was lost, this means the first attempt
    /// is stored (docs/deduplication.md).
    Duplicate,
}

impl PublishOutcome {
    /// Whether the message was stored and routed: neither returned, nacked nor a duplicate.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, PublishOutcome::Confirmed)
    }

    /// Whether the broker dropped it as a duplicate of a message it already has.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, PublishOutcome::Duplicate)
    }
}

/// What the server said about a publish sent with
/// [`Client::publish_unconfirmed`](crate::client::Client::publish_unconfirmed): such a
/// publish gets no reply when it is taken, only when it is refused or returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The request id `publish_unconfirmed` returned for the publish.
    pub request_id: RequestId,
    /// What happened to it.
    pub kind: RefusalKind,
}

/// Why a publish sent without a confirm was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalKind {
    /// The broker refused the message (a full `reject-publish` queue, a storage failure):
    /// stored nowhere.
    Nacked {
        /// [`warren_protocol::ErrorCode`] as a number.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The message was mandatory and no queue took it: stored nowhere.
    Returned {
        /// [`warren_protocol::ErrorCode`] as a number (312 `NO_ROUTE`).
        reply_code: u16,
        /// Why.
        reply_text: String,
    },
    /// The request failed (an unknown exchange, access refused, a message too large).
    Error {
        /// [`warren_protocol::ErrorCode`] as a number.
        code: u16,
        /// What the server said.
        message: String,
    },
}

/// A publish whose confirm has not arrived yet. Await it for the [`PublishOutcome`].
///
/// Dropping it does not cancel the publish; the confirm is then discarded when it arrives.
#[derive(Debug)]
#[must_use = "a publish is only known to be stored once its confirm resolves"]
pub struct PendingConfirm {
    pub(crate) request_id: RequestId,
    pub(crate) rx: oneshot::Receiver<Result<PublishOutcome, ClientError>>,
}

impl PendingConfirm {
    /// The publish's request id (the confirm, and any return, carry it).
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }
}

impl Future for PendingConfirm {
    type Output = Result<PublishOutcome, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            // The reader resolves every pending confirm, even on connection loss; the sender
            // is only dropped unresolved when the whole connection state is torn down.
            r.unwrap_or_else(|_| {
                Err(ClientError::Closed {
                    code: NO_CLOSE_CODE,
                    reason: "the connection ended before the confirm arrived".into(),
                })
            })
        })
    }
}

/// Set in the request id of every publish sent without a confirm: the reader knows a reply to
/// one (a refusal) by it, with no table of ids that would grow by one entry per message,
/// since the taken ones are never answered. Ordinary ids count up from 1 and never reach it.
const UNCONFIRMED_ID_BIT: RequestId = 1 << 63;

/// The request id of a publish without a confirm, from the connection's next id.
pub(crate) fn unconfirmed_id(next: RequestId) -> RequestId {
    next | UNCONFIRMED_ID_BIT
}

/// Whether `id` names a publish sent without a confirm.
pub(crate) fn is_unconfirmed(id: RequestId) -> bool {
    id & UNCONFIRMED_ID_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::{Envelope, Frame, Publish};

    #[test]
    fn builders_set_the_properties() {
        let m = OutgoingMessage::new("logs", "a.b", "hi")
            .persistent()
            .mandatory()
            .header("x-k", FieldValue::Int(1))
            .message_id("m1")
            .correlation_id("c1")
            .content_type("text/plain")
            .expiration_ms(500);
        assert!(m.mandatory);
        assert!(m.properties.persistent);
        assert_eq!(m.properties.headers.get("x-k"), Some(FieldValue::Int(1)));
        assert_eq!(m.properties.message_id.as_deref(), Some("m1"));
        assert_eq!(m.properties.correlation_id.as_deref(), Some("c1"));
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.properties.expiration, Some(500));
        assert_eq!(m.body, Bytes::from_static(b"hi"));
    }

    #[test]
    fn unconfirmed_ids_are_told_apart_from_the_rest() {
        assert!(is_unconfirmed(unconfirmed_id(1)));
        assert!(is_unconfirmed(unconfirmed_id(u64::MAX >> 1)));
        assert!(!is_unconfirmed(1));
        assert!(!is_unconfirmed(0));
    }

    #[test]
    fn a_borrowed_message_encodes_as_the_owned_one_did() {
        let m = OutgoingMessage::new("ex", "key", vec![7u8; 1000])
            .persistent()
            .mandatory()
            .header("h", FieldValue::List(vec![FieldValue::Bool(true)]))
            .message_id("id");
        for no_confirm in [false, true] {
            let owned = Publish {
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
                mandatory: m.mandatory,
                no_confirm,
                properties: m.properties.clone(),
                body: m.body.clone(),
            };
            let expected = Envelope::new(5, Frame::Publish(Box::new(owned))).to_bytes();
            let frame = m.borrowed().frame(no_confirm);
            let mut buf = bytes::BytesMut::new();
            frame.encode(5, &mut buf);
            assert_eq!(&buf[..], &expected[..]);
            assert_eq!(frame.frame_len(), expected.len() - 4);
        }
    }
}
