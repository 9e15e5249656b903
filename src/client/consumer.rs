//! Receiving messages: [`Consumer`] (a push consumer's stream of deliveries), [`Delivery`],
//! and [`CancelReason`], why a consumer ended.
//!
//! Each consumer has its own unbounded channel, filled by the connection's reader task. It
//! is bounded in practice by the server's prefetch limit ([`crate::client::Client::qos`]):
//! the server stops delivering once that many deliveries are unacked. A `no_ack` consumer has
//! no such limit, so a slow `no_ack` consumer buffers whatever the server sends.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::stream::{FusedStream, Stream};
use tokio::sync::mpsc;
use warren_protocol::{Deliver, GetOk, Properties};

use crate::client::error::describe_code;
use crate::client::Client;

/// A message delivered to this client, by a consumer or by [`Client::get`].
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The consumer it was delivered to; `None` for a [`Client::get`].
    pub consumer_tag: Option<String>,
    /// Identifies this delivery on this connection, for ack, nack and reject (0 when it was
    /// fetched or consumed with `no_ack`).
    pub delivery_tag: u64,
    /// Delivered before: `acquired_count > 0` (AMQP's redelivered flag).
    pub redelivered: bool,
    /// How many earlier deliveries of this message failed: rejects, and connections that
    /// ended with it unacked. RabbitMQ sends this as the header `x-delivery-count`; it is
    /// what `x-delivery-limit` counts.
    pub delivery_count: u32,
    /// How many times it was taken from its queue before and given back, failed or not (a
    /// nack with requeue counts here, not above). RabbitMQ sends this as the header
    /// `x-acquired-count`.
    pub acquired_count: u32,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
    /// Messages still ready in the queue, as reported by `GetOk`; `None` for consumers.
    pub message_count: Option<u64>,
    /// Its offset, when it was read from a stream (RabbitMQ sends this as the header
    /// `x-stream-offset`); `None` from a classic queue.
    pub stream_offset: Option<u64>,
}

impl From<Deliver> for Delivery {
    fn from(d: Deliver) -> Self {
        Delivery {
            consumer_tag: Some(d.consumer_tag),
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            delivery_count: d.delivery_count,
            acquired_count: d.acquired_count,
            exchange: d.exchange,
            routing_key: d.routing_key,
            properties: d.properties,
            body: d.body,
            message_count: None,
            stream_offset: d.stream_offset,
        }
    }
}

impl From<GetOk> for Delivery {
    fn from(g: GetOk) -> Self {
        Delivery {
            consumer_tag: None,
            delivery_tag: g.delivery_tag,
            redelivered: g.redelivered,
            delivery_count: g.delivery_count,
            acquired_count: g.acquired_count,
            exchange: g.exchange,
            routing_key: g.routing_key,
            properties: g.properties,
            body: g.body,
            message_count: Some(g.message_count),
            stream_offset: None,
        }
    }
}

/// Why a [`Consumer`] stopped yielding deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelReason {
    /// This client cancelled it ([`Client::cancel`]).
    Cancelled,
    /// The server ended it (`ConsumerCancelled`: its queue was deleted, ...).
    Server {
        /// [`warren_protocol::ErrorCode`] as a number.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The connection ended.
    ConnectionClosed {
        /// [`warren_protocol::ErrorCode`] as a number, or
        /// [`crate::client::error::NO_CLOSE_CODE`] when the server gave none.
        code: u16,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Cancelled => f.write_str("cancelled by the client"),
            CancelReason::Server { code, reason } => {
                write!(
                    f,
                    "cancelled by the server: {}",
                    describe_code(*code, reason)
                )
            }
            CancelReason::ConnectionClosed { code, reason } => {
                let closed = crate::client::ClientError::Closed {
                    code: *code,
                    reason: reason.clone(),
                };
                write!(f, "{closed}")
            }
        }
    }
}

/// What the reader task sends down a consumer's channel. `Cancelled` is always the last
/// event: the reader removes the consumer before sending it.
#[derive(Debug)]
pub(crate) enum ConsumerEvent {
    /// In the box the frame decoder made: the channel moves a pointer, and the consumer
    /// turns it into a [`Delivery`] when it is taken.
    Delivery(Box<Deliver>),
    Cancelled(CancelReason),
}

/// A push consumer: the deliveries the server sends for one consumer tag, in order.
///
/// Read them with [`Consumer::next`] or as a [`futures::Stream`]. Both end (`None`) when the
/// consumer is cancelled by either side or the connection ends; [`Consumer::cancel_reason`]
/// then says which. Deliveries already received before the end are still yielded first.
///
/// Dropping a consumer that is still running cancels it on the server (best effort, without
/// waiting). Cancelling a consumer, by dropping it or with [`Client::cancel`], makes the
/// server requeue *all* its unacknowledged deliveries, including those already yielded:
/// settle what you took before. A `Consumer` keeps its connection open.
pub struct Consumer {
    tag: String,
    events: mpsc::UnboundedReceiver<ConsumerEvent>,
    cancel_reason: Option<CancelReason>,
    client: Client,
}

impl Consumer {
    pub(crate) fn new(
        tag: String,
        events: mpsc::UnboundedReceiver<ConsumerEvent>,
        client: Client,
    ) -> Self {
        Consumer {
            tag,
            events,
            cancel_reason: None,
            client,
        }
    }

    /// The consumer tag (the server's choice when none was asked for).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The next delivery, or `None` once the consumer has ended.
    pub async fn next(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    /// Why the consumer ended; `None` while it is running.
    pub fn cancel_reason(&self) -> Option<&CancelReason> {
        self.cancel_reason.as_ref()
    }

    fn poll_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if self.cancel_reason.is_some() {
            return Poll::Ready(None);
        }
        match ready!(self.events.poll_recv(cx)) {
            Some(ConsumerEvent::Delivery(d)) => Poll::Ready(Some(Delivery::from(*d))),
            Some(ConsumerEvent::Cancelled(reason)) => {
                self.cancel_reason = Some(reason);
                Poll::Ready(None)
            }
            None => {
                // Only when the connection state itself is gone, without a farewell event.
                let (code, reason) = self.client.connection().close_info();
                self.cancel_reason = Some(CancelReason::ConnectionClosed { code, reason });
                Poll::Ready(None)
            }
        }
    }
}

impl Stream for Consumer {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().poll_delivery(cx)
    }
}

impl FusedStream for Consumer {
    fn is_terminated(&self) -> bool {
        self.cancel_reason.is_some()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.cancel_reason.is_none() {
            self.client.connection().cancel_dropped_consumer(&self.tag);
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("cancel_reason", &self.cancel_reason)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reasons_read_well() {
        assert_eq!(
            CancelReason::Server {
                code: 404,
                reason: "queue 'q' deleted".into()
            }
            .to_string(),
            "cancelled by the server: NOT_FOUND (404): queue 'q' deleted"
        );
        assert_eq!(
            CancelReason::ConnectionClosed {
                code: 0,
                reason: "the server closed the connection".into()
            }
            .to_string(),
            "connection closed: the server closed the connection"
        );
    }
}
