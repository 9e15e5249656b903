//! The frames every message crosses, read and written by hand: `basic.publish` and its
//! content header coming in, `basic.ack` coming in and going out (consumer acks, publisher
//! confirms), `basic.deliver` and its content header going out.
//!
//! `amq-protocol` reads and writes them through `nom` and `cookie-factory` combinators and an
//! `AMQPFrame` built per frame; on the S1 workload that was about 7,500 instructions per
//! message to write a delivery and 1,700 to read each method (callgrind, docs/BENCHMARKS.md).
//! These functions produce and accept exactly the bytes `amq-protocol` does (the tests compare
//! both on every field), and anything unusual — a header table in a content header, a string
//! that is not UTF-8, bytes left over — is left to `amq-protocol` (`None`), so errors stay
//! what they were.

// AMQP 0-9-1 is big-endian throughout (network byte order).
#![allow(clippy::big_endian_bytes)]

use amq_protocol::frame::{AMQPContentHeader, WriteContext};
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::ShortString;
use warren_protocol::Properties;

use super::content::{amqp_table, BASIC_CLASS};

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_END: u8 = 0xCE;

const DELIVER: u16 = 60;
const PUBLISH: u16 = 40;
const ACK: u16 = 80;
const NACK: u16 = 120;

/// Property flag bits, in the order the properties follow them (AMQP 0-9-1, class basic).
mod flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const TYPE: u16 = 1 << 5;
    pub const USER_ID: u16 = 1 << 4;
    pub const APP_ID: u16 = 1 << 3;
    pub const CLUSTER_ID: u16 = 1 << 2;
}

/// Starts a frame of `kind` on `channel`; returns where its size goes, for [`end_frame`].
fn begin_frame(out: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Writes the payload size of the frame begun at `at` and its end octet.
fn end_frame(out: &mut Vec<u8>, at: usize) {
    // A frame written here holds short strings and a few numbers, or a header table the
    // broker accepted within its frame size: far below 4 GiB.
    let size = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

/// A short string: cut to 255 bytes at a character boundary, as `short_string` does for
/// what goes through `amq-protocol`.
fn put_short(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // `end` ≤ 255.
    #[allow(clippy::cast_possible_truncation)]
    out.push(end as u8);
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// Appends `value` as a short string if there is one; returns its property flag then.
fn put_optional(out: &mut Vec<u8>, bit: u16, value: Option<&str>) -> u16 {
    match value {
        Some(v) => {
            put_short(out, v);
            bit
        }
        None => 0,
    }
}

/// Appends a `basic.deliver` method frame.
pub(super) fn put_deliver(
    out: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    out.reserve(32 + consumer_tag.len() + exchange.len() + routing_key.len());
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.extend_from_slice(&BASIC_CLASS.to_be_bytes());
    out.extend_from_slice(&DELIVER.to_be_bytes());
    put_short(out, consumer_tag);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(u8::from(redelivered));
    put_short(out, exchange);
    put_short(out, routing_key);
    end_frame(out, at);
}

/// Appends a `basic.ack` (or, with `nack`, a `basic.nack` without requeue) method frame: a
/// publisher confirm.
pub(super) fn put_confirm(out: &mut Vec<u8>, channel: u16, tag: u64, multiple: bool, nack: bool) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.extend_from_slice(&BASIC_CLASS.to_be_bytes());
    out.extend_from_slice(&(if nack { NACK } else { ACK }).to_be_bytes());
    out.extend_from_slice(&tag.to_be_bytes());
    // basic.nack's bits: multiple, then requeue (false).
    out.push(u8::from(multiple));
    end_frame(out, at);
}

/// Appends the content header frame of a message with `body_size` bytes and Warren's
/// `properties`, mapped to AMQP's as `content::to_amqp` maps them.
pub(super) fn put_content_header(out: &mut Vec<u8>, channel: u16, body_size: u64, p: &Properties) {
    let at = begin_frame(out, FRAME_HEADER, channel);
    out.extend_from_slice(&BASIC_CLASS.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&body_size.to_be_bytes());
    let flags_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut flags = 0u16;
    flags |= put_optional(out, flag::CONTENT_TYPE, p.content_type.as_deref());
    flags |= put_optional(out, flag::CONTENT_ENCODING, p.content_encoding.as_deref());
    if !p.headers.is_empty() {
        flags |= flag::HEADERS;
        let table = amqp_table(&p.headers.to_table());
        let written = gen_field_table(&table)(WriteContext::from(Vec::new()));
        match written {
            Ok(ctx) => out.extend_from_slice(&ctx.write),
            // Writing to a Vec does not fail; an empty table keeps the frame well formed.
            Err(e) => {
                tracing::error!(error = %e, "encoding an AMQP header table failed");
                out.extend_from_slice(&0u32.to_be_bytes());
            }
        }
    }
    if p.persistent {
        flags |= flag::DELIVERY_MODE;
        out.push(2);
    }
    if let Some(v) = p.priority {
        flags |= flag::PRIORITY;
        out.push(v);
    }
    flags |= put_optional(out, flag::CORRELATION_ID, p.correlation_id.as_deref());
    flags |= put_optional(out, flag::REPLY_TO, p.reply_to.as_deref());
    if let Some(v) = p.expiration {
        flags |= flag::EXPIRATION;
        put_short(out, &v.to_string());
    }
    flags |= put_optional(out, flag::MESSAGE_ID, p.message_id.as_deref());
    if let Some(v) = p.timestamp {
        flags |= flag::TIMESTAMP;
        // AMQP's timestamp is in seconds, Warren's in milliseconds.
        out.extend_from_slice(&(v / 1000).to_be_bytes());
    }
    flags |= put_optional(out, flag::TYPE, p.kind.as_deref());
    flags |= put_optional(out, flag::USER_ID, p.user_id.as_deref());
    flags |= put_optional(out, flag::APP_ID, p.app_id.as_deref());
    out[flags_at..flags_at + 2].copy_from_slice(&flags.to_be_bytes());
    end_frame(out, at);
}

/// Reads what a method or header payload holds, front to back.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn short(&mut self) -> Option<ShortString> {
        let len = self.u8()?;
        let text = std::str::from_utf8(self.take(usize::from(len))?).ok()?;
        Some(ShortString::from(text))
    }
}

/// `basic.publish` and `basic.ack` from a method frame's payload (ids included), or `None`
/// for any other method, or arguments that are not exactly what these two take.
pub(super) fn parse_method(payload: &[u8]) -> Option<AMQPClass> {
    let mut r = Reader { rest: payload };
    if r.u16()? != BASIC_CLASS {
        return None;
    }
    let method = match r.u16()? {
        PUBLISH => {
            let _reserved = r.u16()?;
            let exchange = r.short()?;
            let routing_key = r.short()?;
            let bits = r.u8()?;
            basic::AMQPMethod::Publish(basic::Publish {
                exchange,
                routing_key,
                mandatory: bits & 1 != 0,
                immediate: bits & 2 != 0,
            })
        }
        ACK => {
            let delivery_tag = r.u64()?;
            let bits = r.u8()?;
            basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple: bits & 1 != 0,
            })
        }
        _ => return None,
    };
    r.rest.is_empty().then_some(AMQPClass::Basic(method))
}

/// A content header without a header table, or `None` (a table, or anything else this does
/// not take whole: `amq-protocol` reads it).
pub(super) fn parse_content_header(payload: &[u8]) -> Option<AMQPContentHeader> {
    let mut r = Reader { rest: payload };
    let class_id = r.u16()?;
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let flags = r.u16()?;
    if flags & flag::HEADERS != 0 {
        return None;
    }
    let mut p = basic::AMQPProperties::default();
    let short = |r: &mut Reader<'_>, bit: u16| -> Option<Option<ShortString>> {
        Some(if flags & bit != 0 {
            Some(r.short()?)
        } else {
            None
        })
    };
    if let Some(v) = short(&mut r, flag::CONTENT_TYPE)? {
        p = p.with_content_type(v);
    }
    if let Some(v) = short(&mut r, flag::CONTENT_ENCODING)? {
        p = p.with_content_encoding(v);
    }
    if flags & flag::DELIVERY_MODE != 0 {
        p = p.with_delivery_mode(r.u8()?);
    }
    if flags & flag::PRIORITY != 0 {
        p = p.with_priority(r.u8()?);
    }
    if let Some(v) = short(&mut r, flag::CORRELATION_ID)? {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = short(&mut r, flag::REPLY_TO)? {
        p = p.with_reply_to(v);
    }
    if let Some(v) = short(&mut r, flag::EXPIRATION)? {
        p = p.with_expiration(v);
    }
    if let Some(v) = short(&mut r, flag::MESSAGE_ID)? {
        p = p.with_message_id(v);
    }
    if flags & flag::TIMESTAMP != 0 {
        p = p.with_timestamp(r.u64()?);
    }
    if let Some(v) = short(&mut r, flag::TYPE)? {
        p = p.with_type(v);
    }
    if let Some(v) = short(&mut r, flag::USER_ID)? {
        p = p.with_user_id(v);
    }
    if let Some(v) = short(&mut r, flag::APP_ID)? {
        p = p.with_app_id(v);
    }
    if let Some(v) = short(&mut r, flag::CLUSTER_ID)? {
        p = p.with_cluster_id(v);
    }
    r.rest.is_empty().then_some(AMQPContentHeader {
        class_id,
        body_size,
        properties: p,
    })
}

#[cfg(test)]
mod tests {
    use amq_protocol::frame::AMQPFrame;
    use proptest::prelude::*;
    use warren_protocol::{FieldTable, FieldValue, Headers};

    use super::super::codec;
    use super::super::content::to_amqp;
    use super::super::short_string;
    use super::*;

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[a-zA-Z0-9 .é€-]{0,300}")
    }

    prop_compose! {
        fn properties()(
            content_type in text(), content_encoding in text(), correlation_id in text(),
            reply_to in text(), message_id in text(), kind in text(), user_id in text(),
            app_id in text(), expiration in prop::option::of(any::<u64>()),
            timestamp in prop::option::of(any::<u64>()), priority in prop::option::of(any::<u8>()),
            persistent in any::<bool>(), header in prop::option::of(("[a-z]{1,8}", any::<i64>())),
        ) -> Properties {
            let mut headers = FieldTable::new();
            if let Some((k, v)) = header {
                headers.insert(k, FieldValue::Int(v));
                headers.insert("s".to_owned(), FieldValue::String("v".to_owned()));
            }
            Properties {
                content_type, content_encoding, correlation_id, reply_to, message_id, kind,
                user_id, app_id, expiration, timestamp, priority, persistent,
                headers: Headers::from(headers),
            }
        }
    }

    proptest! {
        #[test]
        fn a_content_header_is_what_amq_protocol_writes(p in properties(), size in any::<u64>(), channel in any::<u16>()) {
            let mut ours = Vec::new();
            put_content_header(&mut ours, channel, size, &p);
            let theirs = codec::encode(&AMQPFrame::Header(channel, AMQPContentHeader {
                class_id: BASIC_CLASS, body_size: size, properties: to_amqp(&p),
            }));
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn a_delivery_is_what_amq_protocol_writes(
            tag in "[a-z0-9.-]{0,300}", exchange in "[a-zé]{0,300}", key in "[a-z.#*]{0,300}",
            delivery_tag in any::<u64>(), redelivered in any::<bool>(), channel in any::<u16>(),
        ) {
            let mut ours = Vec::new();
            put_deliver(&mut ours, channel, &tag, delivery_tag, redelivered, &exchange, &key);
            let theirs = codec::encode(&AMQPFrame::Method(channel, AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: short_string(&tag), delivery_tag, redelivered,
                exchange: short_string(&exchange), routing_key: short_string(&key),
            }))));
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn a_confirm_is_what_amq_protocol_writes(tag in any::<u64>(), multiple in any::<bool>(), channel in any::<u16>()) {
            let mut ack = Vec::new();
            put_confirm(&mut ack, channel, tag, multiple, false);
            prop_assert_eq!(ack, codec::encode(&AMQPFrame::Method(channel, AMQPClass::Basic(
                basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple })))));
            let mut nack = Vec::new();
            put_confirm(&mut nack, channel, tag, multiple, true);
            prop_assert_eq!(nack, codec::encode(&AMQPFrame::Method(channel, AMQPClass::Basic(
                basic::AMQPMethod::Nack(basic::Nack { delivery_tag: tag, multiple, requeue: false })))));
        }

        /// What the hand-written readers accept, they read as `amq-protocol` does; written
        /// frames and arbitrary bytes alike.
        #[test]
        fn a_read_method_is_what_amq_protocol_reads(
            exchange in "[a-z]{0,20}", key in "[a-z.]{0,20}", bits in any::<u8>(),
            tag in any::<u64>(), junk in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut publish = vec![0, 60, 0, 40, 0, 0];
            publish.push(u8::try_from(exchange.len()).unwrap_or(0));
            publish.extend_from_slice(exchange.as_bytes());
            publish.push(u8::try_from(key.len()).unwrap_or(0));
            publish.extend_from_slice(key.as_bytes());
            publish.push(bits);
            let mut ack = vec![0, 60, 0, 80];
            ack.extend_from_slice(&tag.to_be_bytes());
            ack.push(bits);
            let mut with_junk = publish.clone();
            with_junk.extend_from_slice(&junk);
            let mut raw_ack = vec![0, 60, 0, 80];
            raw_ack.extend_from_slice(&junk);
            for payload in [&publish, &ack, &with_junk, &junk, &raw_ack] {
                if let Some(ours) = parse_method(payload) {
                    prop_assert_eq!(Some(ours), codec::parse_method(payload));
                }
            }
            prop_assert!(parse_method(&publish).is_some());
            prop_assert!(parse_method(&ack).is_some());
        }

        #[test]
        fn a_read_content_header_is_what_amq_protocol_reads(
            p in properties(), size in any::<u64>(), junk in prop::collection::vec(any::<u8>(), 0..60),
        ) {
            let mut frame = Vec::new();
            put_content_header(&mut frame, 1, size, &p);
            let payload = &frame[7..frame.len() - 1];
            let parsed = parse_content_header(payload);
            prop_assert_eq!(parsed.is_some(), p.headers.is_empty());
            let mut with_junk = payload.to_vec();
            with_junk.extend_from_slice(&junk);
            for input in [payload, &with_junk[..], &junk[..]] {
                if let Some(ours) = parse_content_header(input) {
                    let theirs = amq_protocol::frame::parsing::parse_content_header(input);
                    prop_assert!(matches!(theirs, Ok(([], ref h)) if *h == ours));
                }
            }
        }
    }
}
