//! Consuming frames, each with its layout: `Qos` (0x40), `Consume` (0x41), `ConsumeOk` (0x42,
//! [`ConsumerTag`]), `Cancel` (0x43), `ConsumerCancelled` (0x44), `Deliver` (0x45, and
//! [`DeliverRef`], the server's borrowed encoder for it), `Get` (0x46) and `GetOk` (0x47).
//!
//! `GetEmpty` (0x48) has no payload and no struct; it is a plain [`Frame`](super::Frame)
//! variant. Settling deliveries (`Ack`, `Nack`, `Reject`) is in [`super::ack`].

use bytes::{BufMut, Bytes, BytesMut};

use super::{bits, finish_frame, flag, start_frame, Opcode, Payload};
use crate::error::DecodeError;
use crate::field_table::{put_table, read_arguments, FieldTable};
use crate::properties::Properties;
use crate::read::Reader;
use crate::write::put_str16;

// Flags shared by the frames of this file: `Consume` and `Get` have no_ack in bit 0, `Deliver`
// and `GetOk` have redelivered in bit 0.
const F_NO_ACK: u8 = 1;
const F_REDELIVERED: u8 = 1;
/// `Deliver`: a `stream_offset` (u64) follows `acquired_count`.
const F_STREAM_OFFSET: u8 = 1 << 1;

/// Sets the prefetch limit for consumers started afterwards on this connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Qos {
    /// Max unacked deliveries per consumer; 0 means no limit.
    pub prefetch_count: u32,
}

impl Payload for Qos {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(self.prefetch_count);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Qos {
            prefetch_count: r.u32()?,
        })
    }
}

/// Starts a push consumer on a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Consume {
    /// Queue to consume from.
    pub queue: String,
    /// Tag naming the consumer on this connection; empty asks the server to choose.
    pub consumer_tag: String,
    /// Deliveries count as acked when sent.
    pub no_ack: bool,
    /// Fail if the queue has other consumers, and keep others off it.
    pub exclusive: bool,
    /// Consumer arguments.
    pub arguments: FieldTable,
}

// `Consume` flags, besides `F_NO_ACK`.
const F_CONSUME_EXCLUSIVE: u8 = 1 << 1;

impl Payload for Consume {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.queue);
        put_str16(dst, &self.consumer_tag);
        dst.put_u8(bits(&[
            (self.no_ack, F_NO_ACK),
            (self.exclusive, F_CONSUME_EXCLUSIVE),
        ]));
        put_table(dst, &self.arguments);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let queue = r.str16("queue")?;
        let consumer_tag = r.str16("consumer tag")?;
        let f = r.flags("consume flags", F_NO_ACK | F_CONSUME_EXCLUSIVE)?;
        Ok(Consume {
            queue,
            consumer_tag,
            no_ack: flag(f, F_NO_ACK),
            exclusive: flag(f, F_CONSUME_EXCLUSIVE),
            arguments: read_arguments(r)?,
        })
    }
}

/// Names a consumer: the reply to [`Consume`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerTag {
    /// The consumer's tag.
    pub consumer_tag: String,
}

impl Payload for ConsumerTag {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.consumer_tag);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ConsumerTag {
            consumer_tag: r.str16("consumer tag")?,
        })
    }
}

/// Client → server: stop a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancel {
    /// The consumer's tag.
    pub consumer_tag: String,
    /// Leave the consumer's unacknowledged deliveries with the connection, to be settled
    /// later (AMQP's `basic.cancel`), instead of requeueing them.
    pub keep_unacked: bool,
}

// `Cancel` flags.
const F_KEEP_UNACKED: u8 = 1;

impl Payload for Cancel {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.consumer_tag);
        dst.put_u8(bits(&[(self.keep_unacked, F_KEEP_UNACKED)]));
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let consumer_tag = r.str16("consumer tag")?;
        let f = r.flags("cancel flags", F_KEEP_UNACKED)?;
        Ok(Cancel {
            consumer_tag,
            keep_unacked: flag(f, F_KEEP_UNACKED),
        })
    }
}

/// Server → client: the server ended a consumer (its queue was deleted, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerCancelled {
    /// The consumer's tag.
    pub consumer_tag: String,
    /// [`ErrorCode`](crate::ErrorCode) as a number.
    pub code: u16,
    /// Why.
    pub reason: String,
}

impl Payload for ConsumerCancelled {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.consumer_tag);
        dst.put_u16_le(self.code);
        put_str16(dst, &self.reason);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ConsumerCancelled {
            consumer_tag: r.str16("consumer tag")?,
            code: r.u16()?,
            reason: r.str16("reason")?,
        })
    }
}

/// Server → client: a message for a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Deliver {
    /// Which consumer.
    pub consumer_tag: String,
    /// Identifies this delivery on this connection, for ack/nack/reject.
    pub delivery_tag: u64,
    /// Delivered before: `acquired_count > 0` (AMQP's flag).
    pub redelivered: bool,
    /// How many earlier deliveries of this message failed (RabbitMQ's `x-delivery-count`):
    /// rejects, and connections that ended with it unacked.
    pub delivery_count: u32,
    /// How many times it was taken from its queue before and given back, failed or not
    /// (RabbitMQ's `x-acquired-count`).
    pub acquired_count: u32,
    /// Its offset, for a delivery from a stream (RabbitMQ's `x-stream-offset` header);
    /// `None` from a classic queue.
    pub stream_offset: Option<u64>,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

impl Payload for Deliver {
    /// Encodes through [`DeliverRef`], so both paths write the same bytes.
    fn encode(&self, dst: &mut BytesMut) {
        DeliverRef {
            consumer_tag: &self.consumer_tag,
            delivery_tag: self.delivery_tag,
            redelivered: self.redelivered,
            delivery_count: self.delivery_count,
            acquired_count: self.acquired_count,
            stream_offset: self.stream_offset,
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            properties: &self.properties,
            body: &self.body,
        }
        .put_payload(dst);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let consumer_tag = r.str16("consumer tag")?;
        let delivery_tag = r.u64()?;
        let f = r.flags("deliver flags", F_REDELIVERED | F_STREAM_OFFSET)?;
        let delivery_count = r.u32()?;
        let acquired_count = r.u32()?;
        let stream_offset = if flag(f, F_STREAM_OFFSET) {
            Some(r.u64()?)
        } else {
            None
        };
        Ok(Deliver {
            consumer_tag,
            delivery_tag,
            redelivered: flag(f, F_REDELIVERED),
            delivery_count,
            acquired_count,
            stream_offset,
            exchange: r.str16("exchange")?,
            routing_key: r.str16("routing key")?,
            properties: Properties::decode(r)?,
            body: r.rest(),
        })
    }
}

/// A `Deliver` frame over borrowed parts. The server encodes deliveries from the message it
/// shares between queues, without first copying its properties into a [`Deliver`]; the
/// bytes are exactly those of the equivalent `Frame::Deliver` (request id 0).
#[derive(Debug, Clone, Copy)]
pub struct DeliverRef<'a> {
    /// Which consumer.
    pub consumer_tag: &'a str,
    /// Identifies the delivery on its connection.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Earlier failed deliveries.
    pub delivery_count: u32,
    /// Earlier acquisitions given back.
    pub acquired_count: u32,
    /// Its offset, from a stream.
    pub stream_offset: Option<u64>,
    /// Exchange it was published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// Its properties.
    pub properties: &'a Properties,
    /// Its body.
    pub body: &'a [u8],
}

impl DeliverRef<'_> {
    /// The `Deliver` payload layout: the one place it is written.
    fn put_payload(&self, dst: &mut BytesMut) {
        put_str16(dst, self.consumer_tag);
        dst.put_u64_le(self.delivery_tag);
        dst.put_u8(bits(&[
            (self.redelivered, F_REDELIVERED),
            (self.stream_offset.is_some(), F_STREAM_OFFSET),
        ]));
        dst.put_u32_le(self.delivery_count);
        dst.put_u32_le(self.acquired_count);
        if let Some(offset) = self.stream_offset {
            dst.put_u64_le(offset);
        }
        put_str16(dst, self.exchange);
        put_str16(dst, self.routing_key);
        self.properties.encode(dst);
        dst.put_slice(self.body);
    }

    /// Appends the whole frame, length prefix included, with request id 0.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = start_frame(dst, Opcode::Deliver, 0);
        self.put_payload(dst);
        finish_frame(dst, start);
    }
}

/// Pulls one message from a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Get {
    /// Queue to take from.
    pub queue: String,
    /// The message counts as acked when sent.
    pub no_ack: bool,
}

impl Payload for Get {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.queue);
        dst.put_u8(bits(&[(self.no_ack, F_NO_ACK)]));
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let queue = r.str16("queue")?;
        let f = r.flags("get flags", F_NO_ACK)?;
        Ok(Get {
            queue,
            no_ack: flag(f, F_NO_ACK),
        })
    }
}

/// Reply to [`Get`] with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct GetOk {
    /// Identifies this delivery, for ack/nack/reject (0 with `no_ack`).
    pub delivery_tag: u64,
    /// Delivered before: `acquired_count > 0`.
    pub redelivered: bool,
    /// How many earlier deliveries of this message failed (`x-delivery-count`).
    pub delivery_count: u32,
    /// How many times it was taken from its queue before and given back
    /// (`x-acquired-count`).
    pub acquired_count: u32,
    /// Messages still ready in the queue.
    pub message_count: u64,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

impl Payload for GetOk {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64_le(self.delivery_tag);
        dst.put_u8(bits(&[(self.redelivered, F_REDELIVERED)]));
        dst.put_u32_le(self.delivery_count);
        dst.put_u32_le(self.acquired_count);
        dst.put_u64_le(self.message_count);
        put_str16(dst, &self.exchange);
        put_str16(dst, &self.routing_key);
        self.properties.encode(dst);
        dst.put_slice(&self.body);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let delivery_tag = r.u64()?;
        let f = r.flags("get-ok flags", F_REDELIVERED)?;
        Ok(GetOk {
            delivery_tag,
            redelivered: flag(f, F_REDELIVERED),
            delivery_count: r.u32()?,
            acquired_count: r.u32()?,
            message_count: r.u64()?,
            exchange: r.str16("exchange")?,
            routing_key: r.str16("routing key")?,
            properties: Properties::decode(r)?,
            body: r.rest(),
        })
    }
}
