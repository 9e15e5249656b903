//! Malformed input is refused with the error PROTOCOL.md promises: each rule of the spec's
//! "decoding rules" has a test here.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;
use warren_protocol::read::Reader;
use warren_protocol::write::{put_str16, str16_len};
use warren_protocol::{
    DecodeError, Envelope, FieldTable, FieldValue, Frame, FrameCodec, Opcode, MAX_FIELD_DEPTH,
};

use common::{body_of, samples};

/// The bytes after the length prefix of a frame: opcode, request id 1, `payload`.
fn frame_bytes(opcode: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(opcode);
    b.put_u64_le(1);
    b.put_slice(payload);
    b.freeze()
}

fn decode(opcode: Opcode, payload: &[u8]) -> Result<Envelope, DecodeError> {
    Envelope::decode(frame_bytes(opcode as u8, payload))
}

fn invalid_value(field: &str, value: u64, offset: usize) -> impl Fn(&DecodeError) -> bool + '_ {
    move |e| {
        matches!(e, DecodeError::InvalidValue { field: f, value: v, offset: o }
            if *f == field && *v == value && *o == offset)
    }
}

#[test]
fn unknown_opcodes_are_refused() {
    for byte in 0..=u8::MAX {
        let known = Opcode::ALL.iter().any(|op| *op as u8 == byte);
        let got = Envelope::decode(frame_bytes(byte, &[]));
        if !known {
            assert_eq!(got, Err(DecodeError::UnknownOpcode(byte)));
        }
    }
}

#[test]
fn trailing_bytes_are_refused_except_in_bodies() {
    for frame in samples() {
        let mut wire = BytesMut::from(&Envelope::new(3, frame.clone()).to_bytes()[4..]);
        wire.put_u8(0xee);
        let got = Envelope::decode(wire.freeze());
        match body_of(&frame) {
            Some(body) => {
                let env = got.expect("a longer body is still a frame");
                let new_body = body_of(&env.frame).expect("same variant");
                assert_eq!(new_body.len(), body.len() + 1);
                assert_eq!(new_body.last(), Some(&0xee));
            }
            None => assert_eq!(
                got,
                Err(DecodeError::TrailingBytes {
                    opcode: frame.opcode().name(),
                    extra: 1
                }),
                "{frame:?}"
            ),
        }
    }
}

#[test]
fn frame_length_limits() {
    // Shorter than opcode + request id.
    let mut buf = BytesMut::new();
    buf.put_u32_le(8);
    buf.put_slice(&[0x02; 8]);
    assert_eq!(
        FrameCodec::default().decode(&mut buf),
        Err(DecodeError::FrameTooShort { size: 8, min: 9 })
    );
    // Longer than the maximum: refused from the prefix alone.
    let mut buf = BytesMut::new();
    buf.put_u32_le(8 * 1024 * 1024 + 1);
    assert_eq!(
        FrameCodec::default().decode(&mut buf),
        Err(DecodeError::FrameTooLarge {
            size: 8 * 1024 * 1024 + 1,
            max: 8 * 1024 * 1024
        })
    );
    // Exactly 9: a frame with an empty payload.
    let mut buf = BytesMut::new();
    buf.put_u32_le(9);
    buf.put_u8(0x02);
    buf.put_u64_le(0);
    assert_eq!(
        FrameCodec::default().decode(&mut buf),
        Ok(Some(Envelope::new(0, Frame::Heartbeat)))
    );
}

#[test]
fn unknown_flag_bits_are_refused() {
    // (opcode, payload before the flags byte, allowed bits, field name)
    let name = [4u8, 0, b'j', b'o', b'b', b's'];
    let tag = [2u8, 0, b'c', b'1'];
    let cases: Vec<(Opcode, Vec<u8>, u8, &str)> = vec![
        (
            Opcode::ExchangeDeclare,
            [&name[..], &[2]].concat(),
            0b1111,
            "exchange flags",
        ),
        (
            Opcode::ExchangeDelete,
            name.to_vec(),
            0b1,
            "exchange delete flags",
        ),
        (Opcode::QueueDeclare, name.to_vec(), 0b1111, "queue flags"),
        (
            Opcode::QueueDelete,
            name.to_vec(),
            0b11,
            "queue delete flags",
        ),
        (
            Opcode::Publish,
            [&name[..], &name[..]].concat(),
            0b11,
            "publish flags",
        ),
        (
            Opcode::Consume,
            [&name[..], &tag[..]].concat(),
            0b11,
            "consume flags",
        ),
        (
            Opcode::Deliver,
            [&tag[..], &[7; 8]].concat(),
            0b11,
            "deliver flags",
        ),
        (Opcode::Get, name.to_vec(), 0b1, "get flags"),
        (Opcode::GetOk, vec![7; 8], 0b1, "get-ok flags"),
        (Opcode::Ack, vec![7; 8], 0b1, "ack flags"),
        (Opcode::Nack, vec![7; 8], 0b11, "nack flags"),
    ];
    for (opcode, before, allowed, field) in cases {
        for bit in 0..8 {
            let flag = 1u8 << bit;
            if allowed & flag != 0 {
                continue;
            }
            let payload = [&before[..], &[flag | allowed]].concat();
            let err = decode(opcode, &payload).expect_err(field);
            assert!(
                invalid_value(field, u64::from(flag | allowed), before.len())(&err),
                "{opcode:?} bit {bit}: {err:?}"
            );
        }
    }
}

#[test]
fn enumerations_and_booleans_are_checked() {
    // Exchange kind 4 does not exist.
    let err = decode(Opcode::ExchangeDeclare, &[0, 0, 4, 0, 0, 0, 0, 0]).unwrap_err();
    assert!(invalid_value("exchange kind", 4, 2)(&err), "{err:?}");
    // Confirm status 3 does not exist (2 is Duplicate).
    let err = decode(Opcode::Confirm, &[3]).unwrap_err();
    assert!(invalid_value("confirm status", 3, 0)(&err), "{err:?}");
    // Reject's requeue is a boolean: 0 or 1.
    let mut p = vec![9, 0, 0, 0, 0, 0, 0, 0];
    p.push(2);
    let err = decode(Opcode::Reject, &p).unwrap_err();
    assert!(invalid_value("requeue", 2, 8)(&err), "{err:?}");
}

#[test]
fn property_mask_bits_13_to_15_are_refused() {
    for bit in 13..16 {
        // Publish to "" with routing key "", no flags, then the mask.
        let mut p = vec![0, 0, 0, 0, 0];
        p.extend_from_slice(&(1u16 << bit).to_le_bytes());
        let err = decode(Opcode::Publish, &p).unwrap_err();
        assert!(invalid_value("property mask", 1 << bit, 5)(&err), "{err:?}");
    }
}

#[test]
fn invalid_utf8_is_refused() {
    let err = decode(Opcode::QueuePurge, &[2, 0, 0xc3, 0x28]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            field: "queue",
            offset: 2
        }
    );
}

/// Reads a table from `bytes`, requiring every byte to be used.
fn read(bytes: BytesMut) -> Result<FieldTable, DecodeError> {
    let mut r = Reader::new(bytes.freeze());
    let t = warren_protocol::field_table::read_table(&mut r)?;
    assert_eq!(r.remaining(), 0);
    Ok(t)
}

#[test]
fn field_values_are_checked() {
    // Unknown tag 'X'.
    let mut b = BytesMut::new();
    b.put_u32_le(1);
    put_str16(&mut b, "k");
    b.put_u8(b'X');
    let err = read(b).unwrap_err();
    assert!(
        invalid_value("header value tag", u64::from(b'X'), 7)(&err),
        "{err:?}"
    );
    // Boolean 2.
    let mut b = BytesMut::new();
    b.put_u32_le(1);
    put_str16(&mut b, "k");
    b.put_u8(b'T');
    b.put_u8(2);
    let err = read(b).unwrap_err();
    assert!(invalid_value("header bool", 2, 8)(&err), "{err:?}");
}

#[test]
fn truncated_typed_values_fail_cleanly() {
    // (tag, data bytes the type needs): each tag with one byte short must fail with EOF.
    for (tag, need) in [
        (b'b', 1),
        (b'o', 1),
        (b's', 2),
        (b'u', 2),
        (b'i', 4),
        (b'w', 4),
        (b'U', 8),
        (b'f', 4),
        (b'D', 5),
        (b't', 8),
    ] {
        let mut b = BytesMut::new();
        b.put_u32_le(1);
        put_str16(&mut b, "k");
        b.put_u8(tag);
        b.put_bytes(0, need - 1);
        let err = read(b.clone()).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnexpectedEof { .. }),
            "tag {}: {err:?}",
            tag as char
        );
        b.put_u8(0);
        assert!(read(b).is_ok(), "tag {} with all its bytes", tag as char);
    }
}

#[test]
fn repeated_keys_keep_the_last_value() {
    let mut b = BytesMut::new();
    b.put_u32_le(2);
    for v in [1i64, 2] {
        put_str16(&mut b, "k");
        b.put_u8(b'I');
        b.put_i64_le(v);
    }
    let t = read(b).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t.get("k"), Some(&FieldValue::Int(2)));
}

/// A table `{"k": v}` where `v` is `levels` lists or maps nested inside each other around
/// an Int.
fn nested(levels: usize, map: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32_le(1);
    put_str16(&mut b, "k");
    for _ in 0..levels {
        if map {
            b.put_u8(b'M');
            b.put_u32_le(1);
            put_str16(&mut b, "k");
        } else {
            b.put_u8(b'L');
            b.put_u32_le(1);
        }
    }
    b.put_u8(b'I');
    b.put_i64_le(1);
    b
}

#[test]
fn nesting_depth_limit_is_exactly_max_field_depth() {
    assert_eq!(MAX_FIELD_DEPTH, 16);
    for map in [false, true] {
        assert!(read(nested(MAX_FIELD_DEPTH, map)).is_ok(), "map={map}");
        assert_eq!(
            read(nested(MAX_FIELD_DEPTH + 1, map)),
            Err(DecodeError::TooDeep {
                max: MAX_FIELD_DEPTH
            }),
            "map={map}"
        );
    }
}

#[test]
fn str16_len_matches_what_put_str16_writes() {
    for s in [
        String::new(),
        "queue".to_owned(),
        "x".repeat(70_000),
        // 2-byte characters: the 65 535-byte cut falls inside one, so a whole character goes.
        "é".repeat(40_000),
        // 3-byte characters.
        "✓".repeat(30_000),
    ] {
        let mut b = BytesMut::new();
        put_str16(&mut b, &s);
        assert_eq!(str16_len(&s), b.len(), "len {}", s.len());
        let mut r = Reader::new(b.freeze());
        let back = r.str16("s").unwrap();
        assert!(s.starts_with(&back));
    }
}
