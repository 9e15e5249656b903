//! The AMQP connection's event task: what the broker tells the connection (returns,
//! confirms, alarms), from the session's event channel and its reply sink, written as AMQP
//! methods on the channel each belongs to.
//!
//! A publish's request id carries its channel, the channel's generation and its publish
//! sequence number ([`request_id`]), so a confirm finds its channel without a lookup table,
//! and a confirm for a channel that was closed (and perhaps opened again since) is dropped
//! instead of reaching the wrong one. Each confirm (or quiet settlement) gives its publish
//! permit back, as the native writer does, so a client that reads no confirms is held to
//! [`MAX_PUBLISHES_IN_FLIGHT`](crate::broker::session::MAX_PUBLISHES_IN_FLIGHT).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, connection, AMQPClass};
use parking_lot::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::content::encode_with_content;
use super::writer::Out;
use super::{codec, short_string};
use crate::broker::event::{Confirm, Event, RequestId};
use crate::broker::session::{Outbound, Session};

/// What the reader and the event task share: the channels open now and the consumers on
/// them. The reader opens and closes channels and starts consumers; the event task drops
/// what belongs to a channel no longer open and numbers deliveries per channel.
pub(super) type Live = Arc<Mutex<Shared>>;

/// See [`Live`].
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The open channels.
    pub channels: HashMap<u16, ChanShared>,
    /// Each consumer's channel (consumer tags are unique on a connection).
    pub consumers: HashMap<Arc<str>, u16>,
}

/// One open channel's part of [`Shared`].
#[derive(Debug, Default)]
pub(super) struct ChanShared {
    /// Tells this channel from an earlier one of the same number.
    pub generation: u8,
    /// The last delivery tag given out on the channel (AMQP's tags are per channel).
    pub next_tag: u64,
    /// Each unsettled delivery's channel tag, to its tag in the session's single tag space.
    pub tags: BTreeMap<u64, u64>,
    /// A `tx.commit` waiting for its publishes' verdicts (`transaction`).
    pub committing: Option<super::transaction::Committing>,
}

const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The request id of a publish on `channel` (of `generation`) with confirm sequence number
/// `seq` (0: the channel is not in confirm mode).
pub(super) fn request_id(channel: u16, generation: u8, seq: u64) -> RequestId {
    (u64::from(channel) << 48) | (u64::from(generation) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// Whether a publish's request id has a confirm sequence number (its channel is in
/// confirm mode).
pub(super) fn wants_confirm(id: RequestId) -> bool {
    id & SEQ_MASK != 0
}

/// The channel, generation and sequence number a request id carries.
pub(super) fn split(id: RequestId) -> (u16, u8, u64) {
    // The shifts leave exactly 16 and 8 bits: the casts keep every bit.
    #[allow(clippy::cast_possible_truncation)]
    ((id >> 48) as u16, (id >> SEQ_BITS) as u8, id & SEQ_MASK)
}

/// What the event task needs.
pub(super) struct EventTask {
    /// The connection's broker session (its reply sink and publish permits).
    pub session: Arc<Session>,
    /// The session's event channel.
    pub rx: UnboundedReceiver<Outbound>,
    /// The connection's writer.
    pub out: UnboundedSender<Out>,
    /// Shared with the reader.
    pub live: Live,
    /// Negotiated in `tune-ok`: content is split into frames of at most this.
    pub frame_max: u32,
    /// The client advertised the `connection.blocked` capability.
    pub blocked_capable: bool,
    /// The client advertised `consumer_cancel_notify`.
    pub cancel_notify: bool,
}

impl EventTask {
    /// Runs until `stop` is cancelled (the connection ended) or the session's channel closes.
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let mut replies = Vec::new();
        loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                m = self.rx.recv() => match m {
                    Some(m) => Some(m),
                    None => return,
                },
                () = self.session.replies.notified() => None,
            };
            let mut settled = 0usize;
            // Events first: a return goes before its publish's confirm (the broker sends
            // the confirm of an unroutable message the same way, after it).
            let mut next = first;
            loop {
                let m = match next.take() {
                    Some(m) => m,
                    None => match self.rx.try_recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                };
                match m {
                    Outbound::Event { request_id, event } => {
                        self.event(request_id, event, &mut settled);
                    }
                    Outbound::Deliver {
                        consumer,
                        delivery_tag,
                        entry,
                        stream_offset,
                    } => {
                        self.deliver(&consumer, delivery_tag, &entry, stream_offset);
                        consumer.on_written();
                    }
                }
            }
            self.session.replies.drain_into(&mut replies);
            for (request_id, event) in replies.drain(..) {
                self.event(request_id, event, &mut settled);
            }
            if settled > 0 {
                self.session.publish_permits.add_permits(settled);
            }
        }
    }

    fn live(&self, channel: u16, generation: u8) -> bool {
        self.live
            .lock()
            .channels
            .get(&channel)
            .is_some_and(|c| c.generation == generation)
    }

    /// A delivery, numbered on its consumer's channel. One for a channel closed meanwhile
    /// is dropped: closing it cancelled the consumer, which requeued it.
    fn deliver(
        &self,
        consumer: &crate::broker::consumer::Consumer,
        session_tag: u64,
        entry: &crate::message::QueuedMessage,
        stream_offset: Option<u64>,
    ) {
        let Some(message) = &entry.message else {
            tracing::error!(
                id = entry.id,
                "a delivery without its body reached the AMQP writer"
            );
            return;
        };
        let (channel, tag) = {
            let mut shared = self.live.lock();
            let Some(&channel) = shared.consumers.get(&consumer.tag) else {
                return;
            };
            let Some(ch) = shared.channels.get_mut(&channel) else {
                return;
            };
            ch.next_tag += 1;
            let tag = ch.next_tag;
            if !consumer.no_ack {
                ch.tags.insert(tag, session_tag);
            }
            (channel, tag)
        };
        let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: short_string(&consumer.tag),
            delivery_tag: tag,
            redelivered: entry.acquired_count > 0,
            exchange: short_string(&message.exchange),
            routing_key: short_string(&message.routing_key),
        }));
        let bytes = match stream_offset {
            None => encode_with_content(channel, method, message, self.frame_max),
            // RabbitMQ tells an AMQP stream consumer each message's offset in the
            // `x-stream-offset` header (Warren's own protocol has a field for it).
            Some(offset) => {
                let mut with_offset = crate::message::Message::clone(message);
                with_offset.properties.headers.insert(
                    "x-stream-offset",
                    warren_protocol::FieldValue::Int(i64::try_from(offset).unwrap_or(i64::MAX)),
                );
                encode_with_content(channel, method, &with_offset, self.frame_max)
            }
        };
        let _ = self.out.send(Out::Frame(bytes));
    }

    fn send(&self, channel: u16, method: AMQPClass) {
        let _ = self.out.send(Out::Frame(codec::encode(&AMQPFrame::Method(
            channel, method,
        ))));
    }

    fn event(&self, request_id: RequestId, event: Event, settled: &mut usize) {
        if let Some(publish) = super::transaction::on_event(&self.live, request_id, &event) {
            *settled += usize::from(publish);
            return;
        }
        let (channel, generation, seq) = split(request_id);
        match event {
            Event::Settled => *settled += 1,
            Event::Confirm(confirm) => {
                *settled += 1;
                if seq == 0 || !self.live(channel, generation) {
                    return;
                }
                let method = match confirm {
                    Confirm::Ack | Confirm::Duplicate => basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    }),
                    Confirm::Nack { code, reason } => {
                        tracing::info!(connection = self.session.id, channel, seq, code = code.as_u16(), %reason, "AMQP publish nacked");
                        basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: seq,
                            multiple: false,
                            requeue: false,
                        })
                    }
                };
                self.send(channel, AMQPClass::Basic(method));
            }
            Event::Returned {
                message,
                code,
                text,
            } => {
                if !self.live(channel, generation) {
                    return;
                }
                let method = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: code.as_u16(),
                    reply_text: short_string(&text),
                    exchange: short_string(&message.exchange),
                    routing_key: short_string(&message.routing_key),
                }));
                let bytes = encode_with_content(channel, method, &message, self.frame_max);
                let _ = self.out.send(Out::Frame(bytes));
            }
            Event::Blocked { reason } => {
                if self.blocked_capable {
                    self.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Blocked(
                            connection::Blocked {
                                reason: short_string(&reason),
                            },
                        )),
                    );
                }
            }
            Event::Unblocked => {
                if self.blocked_capable {
                    self.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                            connection::Unblocked {},
                        )),
                    );
                }
            }
            Event::ConsumeOk { consumer_tag } => {
                // A consume with `nowait` asked for no reply (sequence number 0).
                if seq != 0 && self.live(channel, generation) {
                    self.send(
                        channel,
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                            consumer_tag: short_string(&consumer_tag),
                        })),
                    );
                }
            }
            Event::ConsumerCancelled {
                consumer_tag,
                reason,
                ..
            } => {
                let channel = self.live.lock().consumers.remove(consumer_tag.as_str());
                tracing::info!(connection = self.session.id, consumer = %consumer_tag, %reason, "AMQP consumer cancelled by the server");
                if let (Some(channel), true) = (channel, self.cancel_notify) {
                    self.send(
                        channel,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: short_string(&consumer_tag),
                            nowait: true,
                        })),
                    );
                }
            }
            other => {
                tracing::debug!(connection = self.session.id, event = ?other, "AMQP event not sent");
            }
        }
    }
}
