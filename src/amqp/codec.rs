//! AMQP 0-9-1 frames on the wire: cutting frames out of the byte stream (with the size and
//! frame-end checks a server owes its peers), and encoding with `amq-protocol`.
//!
//! Decoding is in two steps. [`decode`] finds one whole frame, checks its size against the
//! negotiated `frame_max` and its end octet, and returns it raw: for a method frame, the
//! class and method ids and the undecoded arguments. Only methods the server handles are
//! then parsed with `amq-protocol` ([`parse_method`]); every other method is refused by its
//! ids without its arguments ever being decoded.
//!
//! `amq-protocol` parses nested field tables and arrays recursively, with no depth limit: a
//! table nested a few thousand deep, which fits in one frame, overflows the stack and takes
//! the whole daemon down. So every field table is first walked by [`table_nesting_ok`]
//! (iteratively) and refused past [`MAX_TABLE_DEPTH`]; a method that carries a table must
//! not reach `parse_method` without that check.

// AMQP 0-9-1 is big-endian throughout (the spec's network byte order); the workspace lint
// against big-endian reads guards Warren's own little-endian protocol, not this one.
#![allow(clippy::big_endian_bytes)]

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::{Buf, Bytes, BytesMut};

/// The protocol header of AMQP 0-9-1; a server answers any other header with this one and
/// closes (the spec's version negotiation).
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// The octet every frame ends with.
const FRAME_END: u8 = 0xCE;

/// Type, channel and payload size.
const FRAME_HEADER_BYTES: usize = 7;

/// Header plus end octet: what a frame costs besides its payload.
pub const FRAME_OVERHEAD_BYTES: u32 = 8;

/// The spec's smallest `frame_max`, and the limit before `tune-ok` settles one (RabbitMQ's
/// too): `start-ok` must fit in it.
pub const FRAME_MIN_SIZE: u32 = 4096;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;

/// One frame, cut from the stream but not decoded further.
#[derive(Debug)]
pub enum RawFrame {
    /// A method frame: its ids, and its arguments still encoded.
    Method {
        /// The channel it is on (0: the connection).
        channel: u16,
        /// The method's class id.
        class_id: u16,
        /// The method id within its class.
        method_id: u16,
        /// The whole payload (ids included), for [`parse_method`].
        payload: Bytes,
    },
    /// A content header frame.
    Header {
        /// The channel it is on.
        channel: u16,
        /// The header (class, body size, properties), still encoded.
        payload: Bytes,
    },
    /// A content body frame.
    Body {
        /// The channel it is on.
        channel: u16,
        /// A piece of the message body.
        payload: Bytes,
    },
    /// A heartbeat.
    Heartbeat {
        /// The channel it came on (only 0 is valid).
        channel: u16,
    },
}

/// A frame that breaks the framing rules: the connection closes with 501 FRAME_ERROR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The type octet is none of method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Larger than the negotiated (or, before `tune-ok`, the minimum) frame size.
    #[error("frame of {size} bytes is larger than frame_max = {max}")]
    TooLarge {
        /// The frame's size with its header and end octet.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// The octet after the payload is not 0xCE.
    #[error("frame end octet was {0:#04x}, expected 0xce")]
    BadEnd(u8),
    /// A method frame too short to hold its class and method ids.
    #[error("method frame with a payload of {0} bytes has no class and method id")]
    ShortMethod(usize),
}

/// Cuts the next whole frame from `buf`, or returns `None` until one has arrived. The size
/// is checked as soon as the header is in, so no more than `max` bytes are ever buffered for
/// one frame.
///
/// # Errors
/// [`FrameError`] for a frame that breaks the framing rules; the stream cannot be resynced.
pub fn decode(buf: &mut BytesMut, max: u32) -> Result<Option<RawFrame>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let kind = header[0];
    let channel = u16::from_be_bytes([header[1], header[2]]);
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(FrameError::UnknownType(kind));
    }
    let total = u64::from(size) + u64::from(FRAME_OVERHEAD_BYTES);
    if total > u64::from(max) {
        return Err(FrameError::TooLarge { size: total, max });
    }
    // `total` ≤ `max`, a u32: it fits in usize.
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(FrameError::BadEnd(end));
    }
    buf.advance(FRAME_HEADER_BYTES);
    let payload = buf.split_to(total - FRAME_OVERHEAD_BYTES as usize).freeze();
    buf.advance(1);
    Ok(Some(match kind {
        FRAME_METHOD => {
            let Some(ids) = payload.get(..4) else {
                return Err(FrameError::ShortMethod(payload.len()));
            };
            RawFrame::Method {
                channel,
                class_id: u16::from_be_bytes([ids[0], ids[1]]),
                method_id: u16::from_be_bytes([ids[2], ids[3]]),
                payload,
            }
        }
        FRAME_HEADER => RawFrame::Header { channel, payload },
        FRAME_BODY => RawFrame::Body { channel, payload },
        _ => RawFrame::Heartbeat { channel },
    }))
}

/// Decodes a method frame's payload with `amq-protocol`. `None`: the arguments do not
/// decode (short, or bytes left over), which RabbitMQ answers with 501 FRAME_ERROR.
pub fn parse_method(payload: &[u8]) -> Option<AMQPClass> {
    // The two methods every message brings (publish, ack) are read by hand; the rest, and
    // anything those readers do not take whole, by amq-protocol.
    if let Some(method) = super::wire::parse_method(payload) {
        return Some(method);
    }
    match parse_class(payload) {
        Ok((&[], class)) => Some(class),
        _ => None,
    }
}

/// How deep field tables and arrays may nest in anything a client sends, the outer table
/// counted: the native protocol's limit ([`warren_protocol::MAX_FIELD_DEPTH`] levels inside
/// a table), so a table one door takes the other would too.
pub const MAX_TABLE_DEPTH: usize = warren_protocol::MAX_FIELD_DEPTH + 1;

/// Whether the field table at the start of `input` (its length prefix first) nests tables
/// and arrays no deeper than `max_depth`, walked without recursion. A table that does not
/// even frame correctly also fails: the parser would refuse it anyway.
pub fn table_nesting_ok(input: &[u8], max_depth: usize) -> bool {
    fn len_at(input: &[u8], pos: usize) -> Option<usize> {
        let b = input.get(pos..pos.checked_add(4)?)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
    }
    // Each open table or array: whether it is a table (entries have keys) and where it ends.
    let mut open: Vec<(bool, usize)> = Vec::new();
    let Some(len) = len_at(input, 0) else {
        return false;
    };
    let mut pos = 4;
    open.push((true, pos + len));
    while let Some(&(is_table, end)) = open.last() {
        if pos == end {
            open.pop();
            continue;
        }
        if pos > end || end > input.len() {
            return false;
        }
        if is_table {
            let Some(key_len) = input.get(pos) else {
                return false;
            };
            pos += 1 + usize::from(*key_len);
        }
        let Some(tag) = input.get(pos) else {
            return false;
        };
        pos += 1;
        let fixed = match tag {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'S' | b'x' => match len_at(input, pos) {
                Some(n) => 4 + n,
                None => return false,
            },
            b'F' | b'A' => {
                let Some(n) = len_at(input, pos) else {
                    return false;
                };
                if open.len() >= max_depth {
                    return false;
                }
                pos += 4;
                open.push((*tag == b'F', pos + n));
                continue;
            }
            _ => return false,
        };
        pos += fixed;
    }
    true
}

/// Where the argument table of a method that carries one starts in its payload (ids
/// included), for [`table_nesting_ok`]; `None` for a method without a table, or a payload
/// too short to hold the fields before it (which then fails to decode anyway).
pub fn table_offset(class_id: u16, method_id: u16, payload: &[u8]) -> Option<usize> {
    /// A field before the table: a short (the reserved ticket), a short string, or the
    /// octet of bits.
    #[derive(Clone, Copy)]
    enum F {
        Short,
        Str,
        Bits,
    }
    use F::{Bits, Short, Str};
    let before: &[F] = match (class_id, method_id) {
        (10, 10) => &[Short],                 // connection.start (version major, minor)
        (10, 11) => &[],                      // connection.start-ok (client properties)
        (40, 10) => &[Short, Str, Str, Bits], // exchange.declare
        (40, 30) | (40, 40) => &[Short, Str, Str, Str, Bits], // exchange.bind / unbind
        (50, 10) => &[Short, Str, Bits],      // queue.declare
        (50, 20) => &[Short, Str, Str, Str, Bits], // queue.bind
        (50, 50) => &[Short, Str, Str, Str],  // queue.unbind
        (60, 20) => &[Short, Str, Str, Bits], // basic.consume
        _ => return None,
    };
    let mut pos = 4;
    for field in before {
        pos += match field {
            Short => 2,
            Bits => 1,
            Str => 1 + usize::from(*payload.get(pos)?),
        };
    }
    (pos <= payload.len()).then_some(pos)
}

/// Where the `headers` table of a content header payload starts (class, weight, body size,
/// property flags, then content-type and content-encoding if present), for
/// [`table_nesting_ok`]; `None` when the header has no headers or is too short to hold
/// the fields before them (it then fails to decode anyway).
pub fn header_table_offset(payload: &[u8]) -> Option<usize> {
    const CONTENT_TYPE: u16 = 1 << 15;
    const CONTENT_ENCODING: u16 = 1 << 14;
    const HEADERS: u16 = 1 << 13;
    let flags = payload.get(12..14)?;
    let flags = u16::from_be_bytes([flags[0], flags[1]]);
    if flags & HEADERS == 0 {
        return None;
    }
    let mut pos = 14;
    // Bit 0 says another flag word follows; basic has fewer than 15 properties, so any
    // further word only moves the fields along.
    let mut word = flags;
    while word & 1 != 0 {
        let next = payload.get(pos..pos + 2)?;
        word = u16::from_be_bytes([next[0], next[1]]);
        pos += 2;
    }
    for bit in [CONTENT_TYPE, CONTENT_ENCODING] {
        if flags & bit != 0 {
            pos += 1 + usize::from(*payload.get(pos)?);
        }
    }
    (pos <= payload.len()).then_some(pos)
}

/// Encodes one frame.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    match gen_frame(frame)(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.write,
        // Writing to a Vec cannot fail; the generators' only other error is a buffer too
        // small, which a Vec never is. Nothing sensible to send in that case but nothing.
        Err(e) => {
            tracing::error!(error = %e, "encoding an AMQP frame failed");
            Vec::new()
        }
    }
}

/// Appends a content body frame carrying `payload` to `out`, written directly: the body is
/// copied once, into the output, where going through [`encode`] would copy it into an
/// `AMQPFrame` and again into a frame buffer for every delivery.
pub fn encode_body(out: &mut Vec<u8>, channel: u16, payload: &[u8]) {
    // A body frame's payload is at most frame_max, so its length always fits.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(payload.len() + 8);
    out.push(FRAME_BODY);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// The heartbeat frame, pre-encoded.
pub const HEARTBEAT: [u8; 8] = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];

/// The name of a 0-9-1 method by its ids, as RabbitMQ writes them (`basic.publish`);
/// `None` for ids the spec does not define.
pub fn method_name(class_id: u16, method_id: u16) -> Option<&'static str> {
    Some(match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 70) => "connection.update-secret",
        (10, 71) => "connection.update-secret-ok",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (30, 10) => "access.request",
        (30, 11) => "access.request-ok",
        (40, 10) => "exchange.declare",
        (40, 11) => "exchange.declare-ok",
        (40, 20) => "exchange.delete",
        (40, 21) => "exchange.delete-ok",
        (40, 30) => "exchange.bind",
        (40, 31) => "exchange.bind-ok",
        (40, 40) => "exchange.unbind",
        (40, 51) => "exchange.unbind-ok",
        (50, 10) => "queue.declare",
        (50, 11) => "queue.declare-ok",
        (50, 20) => "queue.bind",
        (50, 21) => "queue.bind-ok",
        (50, 30) => "queue.purge",
        (50, 31) => "queue.purge-ok",
        (50, 40) => "queue.delete",
        (50, 41) => "queue.delete-ok",
        (50, 50) => "queue.unbind",
        (50, 51) => "queue.unbind-ok",
        (60, 10) => "basic.qos",
        (60, 11) => "basic.qos-ok",
        (60, 20) => "basic.consume",
        (60, 21) => "basic.consume-ok",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 70) => "basic.get",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 111) => "basic.recover-ok",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (85, 11) => "confirm.select-ok",
        (90, 10) => "tx.select",
        (90, 11) => "tx.select-ok",
        (90, 20) => "tx.commit",
        (90, 21) => "tx.commit-ok",
        (90, 30) => "tx.rollback",
        (90, 31) => "tx.rollback-ok",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::channel;
    use amq_protocol::types::AMQPValue as AMQPValueAlias;

    fn method(channel_id: u16, class: AMQPClass) -> Vec<u8> {
        encode(&AMQPFrame::Method(channel_id, class))
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_cut_out_whole_and_decodes_back() {
        let bytes = method(
            7,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            assert!(
                decode(&mut buf, FRAME_MIN_SIZE).expect("valid").is_none(),
                "at {i}"
            );
            buf.extend_from_slice(&[*b]);
        }
        let Some(RawFrame::Method {
            channel,
            class_id,
            method_id,
            payload,
        }) = decode(&mut buf, FRAME_MIN_SIZE).expect("valid")
        else {
            panic!("a method frame")
        };
        assert_eq!((channel, class_id, method_id), (7, 20, 10));
        assert_eq!(method_name(class_id, method_id), Some("channel.open"));
        assert_eq!(
            parse_method(&payload),
            Some(AMQPClass::Channel(channel::AMQPMethod::Open(
                channel::Open {}
            )))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused_from_their_header_alone() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0x10, 0, 0][..]);
        assert_eq!(
            decode(&mut buf, FRAME_MIN_SIZE).map(|_| ()),
            Err(FrameError::TooLarge {
                size: 4096 + 8,
                max: FRAME_MIN_SIZE
            })
        );
    }

    #[test]
    fn a_wrong_end_octet_or_frame_type_is_a_frame_error() {
        let mut bytes = method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        let last = bytes.len() - 1;
        bytes[last] = 0;
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            decode(&mut buf, FRAME_MIN_SIZE).map(|_| ()),
            Err(FrameError::BadEnd(0))
        );
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(
            decode(&mut buf, FRAME_MIN_SIZE).map(|_| ()),
            Err(FrameError::UnknownType(9))
        );
    }

    /// A table nesting `depth` tables, each under key "k".
    fn nested(depth: usize) -> Vec<u8> {
        let mut table: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let inner = table;
            table = vec![1, b'k', b'F'];
            table.extend_from_slice(&u32::try_from(inner.len()).expect("small").to_be_bytes());
            table.extend_from_slice(&inner);
        }
        let mut out = u32::try_from(table.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&table);
        out
    }

    #[test]
    fn table_nesting_is_bounded_without_recursion() {
        assert!(table_nesting_ok(&nested(0), MAX_TABLE_DEPTH));
        // The outer table counts as one level.
        assert!(table_nesting_ok(
            &nested(MAX_TABLE_DEPTH - 1),
            MAX_TABLE_DEPTH
        ));
        assert!(!table_nesting_ok(&nested(MAX_TABLE_DEPTH), MAX_TABLE_DEPTH));
        assert!(!table_nesting_ok(&nested(100_000), MAX_TABLE_DEPTH));
        // Scalars, strings and arrays are stepped over by their sizes.
        let mut t = amq_protocol::types::FieldTable::default();
        use amq_protocol::types::AMQPValue as V;
        t.insert("b".into(), V::Boolean(true));
        t.insert("s".into(), V::LongString(b"text".to_vec().into()));
        t.insert("d".into(), V::Double(1.5));
        t.insert(
            "a".into(),
            V::FieldArray(vec![V::LongLongInt(7), V::FieldTable(Default::default())].into()),
        );
        let encoded =
            amq_protocol::types::generation::gen_field_table(&t)(WriteContext::from(Vec::new()))
                .expect("encoded")
                .write;
        assert!(table_nesting_ok(&encoded, 3));
        assert!(!table_nesting_ok(&encoded, 2));
        assert!(
            !table_nesting_ok(&encoded[..encoded.len() - 1], 3),
            "cut short"
        );
    }

    #[test]
    fn the_argument_table_is_found_after_the_fields_before_it() {
        use amq_protocol::protocol::queue;
        let mut arguments = amq_protocol::types::FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValueAlias::LongLongInt(5));
        let payload = method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: "q".into(),
                exchange: "ex".into(),
                routing_key: "key".into(),
                nowait: false,
                arguments,
            })),
        );
        // The payload, without the frame's header and end octet.
        let payload = &payload[7..payload.len() - 1];
        let at = table_offset(50, 20, payload).expect("a table");
        assert!(table_nesting_ok(&payload[at..], MAX_TABLE_DEPTH));
        assert_eq!(at, 4 + 2 + 2 + 3 + 4 + 1);
        assert_eq!(table_offset(20, 10, payload), None, "channel.open has none");
        assert_eq!(table_offset(50, 20, &payload[..6]), None, "cut short");
    }

    #[test]
    fn arguments_that_do_not_decode_are_refused_not_guessed() {
        // channel.close with its reply text cut short.
        assert_eq!(parse_method(&[0, 20, 0, 40, 0, 200, 9, b'x']), None);
        // channel.open with a byte too many after its reserved short string.
        assert_eq!(parse_method(&[0, 20, 0, 10, 0, 0xFF]), None);
    }

    #[test]
    fn a_body_frame_written_directly_is_what_amq_protocol_writes() {
        let payload = b"hello, body".to_vec();
        let mut direct = Vec::new();
        encode_body(&mut direct, 7, &payload);
        assert_eq!(direct, encode(&AMQPFrame::Body(7, payload)));
    }
}
