//! Publishing frames: `Publish` (0x30, and [`PublishRef`], the client's borrowed encoder for
//! it), `Confirm` (0x31) and `Return` (0x32), each with its layout.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    bits, finish_frame, flag, start_frame, Opcode, Payload, RequestId, FRAME_HEADER_BYTES,
};
use crate::error::DecodeError;
use crate::properties::Properties;
use crate::read::Reader;
use crate::write::{put_str16, str16_len};

/// Publishes a message. The server replies with [`Confirm`] once it is safely stored, after a
/// [`Return`] if it was mandatory and unroutable; with `no_confirm`, only a refusal
/// (a Nack or an `Error`) and a [`Return`] come back.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Target exchange (`""` is the default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Return the message if no queue takes it.
    pub mandatory: bool,
    /// Send no `Confirm` when the message is taken (Ack) or is a duplicate: the publisher
    /// saves a reply frame per message. Refusals (Nack, `Error`) and `Return` still come,
    /// so nothing is lost without a word (PROTOCOL.md, 0x30 Publish).
    pub no_confirm: bool,
    /// Message properties.
    pub properties: Properties,
    /// Message body: the rest of the frame.
    pub body: Bytes,
}

// `Publish` flags.
const F_MANDATORY: u8 = 1;
const F_NO_CONFIRM: u8 = 2;

impl Payload for Publish {
    /// Encodes through [`PublishRef`], so both paths write the same bytes.
    fn encode(&self, dst: &mut BytesMut) {
        self.borrowed().put_payload(dst);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Publish::decode_capped(r, usize::MAX).map(|(p, _)| p)
    }
}

impl Publish {
    /// The same publish over borrowed parts, for sizing it ([`PublishRef::frame_len`]) or
    /// encoding it without moving it into a [`Frame`](super::Frame).
    pub fn borrowed(&self) -> PublishRef<'_> {
        PublishRef {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            mandatory: self.mandatory,
            no_confirm: self.no_confirm,
            properties: &self.properties,
            body: &self.body,
        }
    }

    /// Decodes a publish whose encoded properties may be at most `max_property_bytes` long;
    /// past that its headers are not built (they come back empty) and the properties' size is
    /// returned, for the server to refuse the message. See [`Properties::decode_capped`].
    ///
    /// # Errors
    /// As the uncapped decode.
    pub fn decode_capped(
        r: &mut Reader,
        max_property_bytes: usize,
    ) -> Result<(Publish, Option<usize>), DecodeError> {
        let exchange = r.str16("exchange")?;
        let routing_key = r.str16("routing key")?;
        let f = r.flags("publish flags", F_MANDATORY | F_NO_CONFIRM)?;
        let (properties, oversized) = Properties::decode_capped(r, max_property_bytes)?;
        let publish = Publish {
            exchange,
            routing_key,
            mandatory: flag(f, F_MANDATORY),
            no_confirm: flag(f, F_NO_CONFIRM),
            properties,
            body: r.rest(),
        };
        Ok((publish, oversized))
    }
}

/// A `Publish` frame over borrowed parts. A client encodes each publish from the caller's
/// exchange, routing key, properties and body straight into its outgoing buffer, without
/// first building an owned [`Publish`] (two strings, the properties and the body's handle)
/// and a boxed [`Frame`](super::Frame) per message; the bytes are exactly those of the
/// equivalent `Frame::Publish`.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// Target exchange (`""` is the default exchange).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Return the message if no queue takes it.
    pub mandatory: bool,
    /// Send no `Confirm` when the message is taken (see [`Publish::no_confirm`]).
    pub no_confirm: bool,
    /// Message properties.
    pub properties: &'a Properties,
    /// Message body.
    pub body: &'a [u8],
}

impl PublishRef<'_> {
    /// The `Publish` payload layout: the one place it is written.
    fn put_payload(&self, dst: &mut BytesMut) {
        put_str16(dst, self.exchange);
        put_str16(dst, self.routing_key);
        dst.put_u8(bits(&[
            (self.mandatory, F_MANDATORY),
            (self.no_confirm, F_NO_CONFIRM),
        ]));
        self.properties.encode(dst);
        dst.put_slice(self.body);
    }

    /// The value of the frame's length prefix (opcode, request id and payload), computed
    /// without encoding anything: what the server's maximum frame size limits.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES
            + str16_len(self.exchange)
            + str16_len(self.routing_key)
            + 1
            + self.properties.encoded_len()
            + self.body.len()
    }

    /// How many bytes [`PublishRef::encode`] appends: the length prefix and
    /// [`PublishRef::frame_len`].
    pub fn encoded_len(&self) -> usize {
        4 + self.frame_len()
    }

    /// Appends the whole frame, length prefix included, with `request_id`. Reserves its
    /// [`PublishRef::encoded_len`] first, so `dst` grows at most once.
    pub fn encode(&self, request_id: RequestId, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        let start = start_frame(dst, Opcode::Publish, request_id);
        self.put_payload(dst);
        finish_frame(dst, start);
    }
}

/// The broker's verdict on one publish, sent with the publish's request id.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    /// The message is stored (durably, if persistent and routed to durable queues).
    Ack,
    /// The broker refused the message.
    Nack {
        /// [`ErrorCode`](crate::ErrorCode) as a number.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The broker already accepted a message with the same deduplication key within the
    /// window of the exchange or queue it was published to: this one is stored nowhere
    /// (see docs/deduplication.md). The earlier one is what the publisher's retry was for.
    Duplicate,
}

impl Payload for Confirm {
    fn encode(&self, dst: &mut BytesMut) {
        match self {
            Confirm::Ack => dst.put_u8(0),
            Confirm::Nack { code, reason } => {
                dst.put_u8(1);
                dst.put_u16_le(*code);
                put_str16(dst, reason);
            }
            Confirm::Duplicate => dst.put_u8(2),
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Confirm::Ack),
            1 => Ok(Confirm::Nack {
                code: r.u16()?,
                reason: r.str16("reason")?,
            }),
            2 => Ok(Confirm::Duplicate),
            v => Err(DecodeError::InvalidValue {
                field: "confirm status",
                value: u64::from(v),
                offset,
            }),
        }
    }
}

/// A mandatory message no queue took, sent back with the publish's request id before its
/// [`Confirm`].
#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    /// [`ErrorCode`](crate::ErrorCode) as a number (312 `NO_ROUTE`).
    pub reply_code: u16,
    /// Why.
    pub reply_text: String,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Bytes,
}

impl Payload for Return {
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16_le(self.reply_code);
        put_str16(dst, &self.reply_text);
        put_str16(dst, &self.exchange);
        put_str16(dst, &self.routing_key);
        self.properties.encode(dst);
        dst.put_slice(&self.body);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Return {
            reply_code: r.u16()?,
            reply_text: r.str16("reply text")?,
            exchange: r.str16("exchange")?,
            routing_key: r.str16("routing key")?,
            properties: Properties::decode(r)?,
            body: r.rest(),
        })
    }
}
