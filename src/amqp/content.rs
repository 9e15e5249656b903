//! Message content on the AMQP door: a publish assembled from its method, content header and
//! body frames, its properties mapped one to one onto Warren's, and the reverse for what the
//! server sends with content (`basic.return`, later `basic.deliver`), split by `frame_max`.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldTable as AmqpTable};
use bytes::{Bytes, BytesMut};
use warren_protocol::{FieldTable, FieldValue, Properties};

use super::codec::{self, FRAME_OVERHEAD_BYTES};
use super::short_string;
use super::wire;
use crate::message::Message;

/// The basic class, whose content is the only kind AMQP 0-9-1 has.
pub(super) const BASIC_CLASS: u16 = 60;

/// A publish whose content is still arriving on its channel.
#[derive(Debug)]
pub(super) struct Pending {
    /// The `basic.publish` method.
    pub method: basic::Publish,
    /// From the content header: the properties and the announced body size.
    pub header: Option<(Properties, u64)>,
    /// The content header's size on the wire (what a transaction holding the publish
    /// counts for its properties).
    pub header_bytes: usize,
    /// The body so far.
    pub body: BytesMut,
}

/// AMQP properties as Warren's, or the 406 PRECONDITION_FAILED text RabbitMQ gives for an
/// expiration that is not a number of milliseconds. (`user-id` is checked by the broker's
/// publish, for both doors.)
pub(super) fn to_native(p: &basic::AMQPProperties) -> Result<Properties, String> {
    let expiration = match p.expiration() {
        None => None,
        Some(e) => match e.as_str().parse::<u64>() {
            Ok(ms) => Some(ms),
            Err(_) => return Err(format!("invalid expiration '{}'", e.as_str())),
        },
    };
    let text = |s: &Option<amq_protocol::types::ShortString>| s.as_ref().map(|s| s.to_string());
    Ok(Properties {
        message_id: text(p.message_id()),
        correlation_id: text(p.correlation_id()),
        reply_to: text(p.reply_to()),
        content_type: text(p.content_type()),
        content_encoding: text(p.content_encoding()),
        // AMQP's timestamp is in seconds, Warren's in milliseconds. One past what
        // milliseconds hold (year 584 million) becomes the last whole second that fits, so
        // that it goes back to AMQP as the same second every time (a saturated u64::MAX
        // came back one second and 615 ms earlier each round; found by amqp_frames).
        timestamp: p
            .timestamp()
            .map(|s| s.checked_mul(1000).unwrap_or(u64::MAX / 1000 * 1000)),
        expiration,
        priority: *p.priority(),
        persistent: *p.delivery_mode() == Some(2),
        headers: p
            .headers()
            .as_ref()
            .map(|h| super::topology::table(h).into())
            .unwrap_or_default(),
        kind: text(p.kind()),
        user_id: text(p.user_id()),
        app_id: text(p.app_id()),
    })
}

/// Warren's properties as AMQP's: the reverse of [`to_native`]. Content goes out through
/// the hand-written `wire::put_content_header`; this is what its tests check it against.
#[cfg(test)]
pub(super) fn to_amqp(p: &Properties) -> basic::AMQPProperties {
    let mut out = basic::AMQPProperties::default();
    if let Some(v) = &p.content_type {
        out = out.with_content_type(short_string(v));
    }
    if let Some(v) = &p.content_encoding {
        out = out.with_content_encoding(short_string(v));
    }
    if !p.headers.is_empty() {
        out = out.with_headers(amqp_table(&p.headers.to_table()));
    }
    if p.persistent {
        out = out.with_delivery_mode(2);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        out = out.with_correlation_id(short_string(v));
    }
    if let Some(v) = &p.reply_to {
        out = out.with_reply_to(short_string(v));
    }
    if let Some(v) = p.expiration {
        out = out.with_expiration(short_string(&v.to_string()));
    }
    if let Some(v) = &p.message_id {
        out = out.with_message_id(short_string(v));
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v / 1000);
    }
    if let Some(v) = &p.kind {
        out = out.with_type(short_string(v));
    }
    if let Some(v) = &p.user_id {
        out = out.with_user_id(short_string(v));
    }
    if let Some(v) = &p.app_id {
        out = out.with_app_id(short_string(v));
    }
    out
}

/// A Warren table as an AMQP one, type for type (the reverse of `topology::table`).
pub(super) fn amqp_table(t: &FieldTable) -> AmqpTable {
    let mut out = AmqpTable::default();
    for (k, v) in t {
        out.insert(short_string(k), amqp_value(v));
    }
    out
}

fn amqp_value(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::String(s) => AMQPValue::LongString(s.as_bytes().to_vec().into()),
        FieldValue::Int(i) => AMQPValue::LongLongInt(*i),
        FieldValue::Float(f) => AMQPValue::Double(*f),
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        FieldValue::List(l) => {
            AMQPValue::FieldArray(l.iter().map(amqp_value).collect::<Vec<_>>().into())
        }
        FieldValue::Map(m) => AMQPValue::FieldTable(amqp_table(m)),
        FieldValue::Void => AMQPValue::Void,
        FieldValue::I8(i) => AMQPValue::ShortShortInt(*i),
        FieldValue::U8(i) => AMQPValue::ShortShortUInt(*i),
        FieldValue::I16(i) => AMQPValue::ShortInt(*i),
        FieldValue::U16(i) => AMQPValue::ShortUInt(*i),
        FieldValue::I32(i) => AMQPValue::LongInt(*i),
        FieldValue::U32(i) => AMQPValue::LongUInt(*i),
        // AMQP (RabbitMQ's table types) has no unsigned 64-bit integer: the signed one while
        // it fits, else the decimal digits as text (docs/amqp.md).
        FieldValue::U64(i) => match i64::try_from(*i) {
            Ok(i) => AMQPValue::LongLongInt(i),
            Err(_) => AMQPValue::LongString(i.to_string().into_bytes().into()),
        },
        FieldValue::F32(f) => AMQPValue::Float(*f),
        FieldValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: u32::from_le_bytes(value.to_le_bytes()),
        }),
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
    }
}

/// A method with content (`basic.return`, `basic.get-ok`) and its content, encoded as one
/// run of frames so nothing else on the channel can come between them; the body is split
/// into frames of at most `frame_max`.
pub(super) fn encode_with_content(
    channel: u16,
    method: AMQPClass,
    message: &Message,
    frame_max: u32,
) -> Vec<u8> {
    let mut out = codec::encode(&AMQPFrame::Method(channel, method));
    put_content(&mut out, channel, message, frame_max);
    out
}

/// Appends a message's content header and body frames (after the method that carries them).
pub(super) fn put_content(out: &mut Vec<u8>, channel: u16, message: &Message, frame_max: u32) {
    let body: &Bytes = &message.body;
    wire::put_content_header(out, channel, body.len() as u64, &message.properties);
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD_BYTES).max(1) as usize;
    for piece in body.chunks(chunk) {
        codec::encode_body(out, channel, piece);
    }
}
