//! Property tests of the wire format: every frame survives encode → decode, both through
//! `Envelope` and through the `FrameCodec`; truncated input waits (codec) or fails (frame),
//! except that a body may be cut short; random and mutated input never panics.

mod common;

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::TestRunner;
use tokio_util::codec::{Decoder, Encoder};
use warren_protocol::{
    Ack, Admin, Cancel, Close, Confirm, Consume, ConsumerCancelled, ConsumerTag, Deliver, Envelope,
    ErrorFrame, ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeKind, FieldTable,
    FieldValue, Frame, FrameCodec, Get, GetOk, Hello, Mechanism, Nack, Opcode, Open, Properties,
    Publish, Qos, QueueBind, QueueDeclare, QueueDeclareOk, QueueDelete, Reject, Return,
    FRAME_HEADER_BYTES,
};

use common::{body_of, samples, with_body};

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Text of up to `max_chars` characters: either name-like ASCII or arbitrary Unicode scalar
/// values (control characters, astral planes, ...), so up to `4 * max_chars` bytes.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("[a-z0-9._*#-]{0,24}").expect("valid regex"),
        vec(any::<char>(), 0..=max_chars).prop_map(|cs| cs.into_iter().collect::<String>()),
    ]
}

/// Finite floats only (no NaN, no infinities), so `PartialEq` holds after a round trip.
fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// A header value; lists and maps nest up to 3 levels.
fn field_value() -> impl Strategy<Value = FieldValue> {
    let leaf = prop_oneof![
        text(48).prop_map(FieldValue::String),
        any::<i64>().prop_map(FieldValue::Int),
        finite_f64().prop_map(FieldValue::Float),
        any::<bool>().prop_map(FieldValue::Bool),
        bytes(48).prop_map(FieldValue::Bytes),
        Just(FieldValue::Void),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<u64>().prop_map(FieldValue::U64),
        finite_f64().prop_map(|f| FieldValue::F32(f as f32)),
        (any::<u8>(), any::<i32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
        any::<u64>().prop_map(FieldValue::Timestamp),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(FieldValue::List),
            btree_map(text(16), inner, 0..4).prop_map(FieldValue::Map),
        ]
    })
}

fn field_table() -> impl Strategy<Value = FieldTable> {
    btree_map(text(16), field_value(), 0..4)
}

fn properties() -> impl Strategy<Value = Properties> {
    (
        option::of(text(48)),
        option::of(text(48)),
        option::of(text(48)),
        option::of(text(48)),
        option::of(text(48)),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u8>()),
        any::<bool>(),
        field_table(),
    )
        .prop_map(
            |(
                message_id,
                correlation_id,
                reply_to,
                content_type,
                content_encoding,
                timestamp,
                expiration,
                priority,
                persistent,
                headers,
            )| {
                // The AMQP-only strings ride along with a content type and a correlation
                // id, so both present and absent are exercised.
                let kind = content_type.as_ref().map(|t| format!("type-{t}"));
                let app_id = correlation_id.as_ref().map(|c| format!("app-{c}"));
                Properties {
                    message_id,
                    correlation_id,
                    reply_to,
                    content_type,
                    content_encoding,
                    timestamp,
                    expiration,
                    priority,
                    persistent,
                    headers: headers.into(),
                    kind,
                    user_id: None,
                    app_id,
                }
            },
        )
}

fn body() -> impl Strategy<Value = Bytes> {
    bytes(512)
}

fn exchange_kind() -> impl Strategy<Value = ExchangeKind> {
    prop_oneof![
        Just(ExchangeKind::Direct),
        Just(ExchangeKind::Fanout),
        Just(ExchangeKind::Topic),
        Just(ExchangeKind::Headers),
    ]
}

fn exchange_bind() -> impl Strategy<Value = ExchangeBind> {
    (text(64), text(64), text(64), field_table()).prop_map(
        |(destination, source, routing_key, arguments)| ExchangeBind {
            destination,
            source,
            routing_key,
            arguments,
        },
    )
}

fn queue_bind() -> impl Strategy<Value = QueueBind> {
    (text(64), text(64), text(64), field_table()).prop_map(
        |(queue, exchange, routing_key, arguments)| QueueBind {
            queue,
            exchange,
            routing_key,
            arguments,
        },
    )
}

/// Any frame, every variant equally likely.
fn frame() -> impl Strategy<Value = Frame> {
    let arms: Vec<BoxedStrategy<Frame>> = vec![
        (any::<u16>(), any::<u32>(), any::<u32>(), text(64))
            .prop_map(|(version, max_frame_size, heartbeat_ms, server)| {
                Frame::Hello(Hello {
                    version,
                    max_frame_size,
                    heartbeat_ms,
                    server,
                })
            })
            .boxed(),
        Just(Frame::Heartbeat).boxed(),
        (any::<u16>(), text(100))
            .prop_map(|(code, reason)| Frame::Close(Close { code, reason }))
            .boxed(),
        Just(Frame::CloseOk).boxed(),
        (any::<u16>(), text(100))
            .prop_map(|(code, message)| Frame::Error(ErrorFrame { code, message }))
            .boxed(),
        Just(Frame::Ok).boxed(),
        text(100)
            .prop_map(|reason| Frame::Blocked { reason })
            .boxed(),
        Just(Frame::Unblocked).boxed(),
        (
            prop_oneof![Just(Mechanism::Password), Just(Mechanism::External)],
            text(64),
            proptest::collection::vec(any::<u8>(), 0..64),
            text(64),
        )
            .prop_map(|(mechanism, user, password, vhost)| {
                Frame::Open(Open {
                    mechanism,
                    user,
                    password: Bytes::from(password),
                    vhost,
                })
            })
            .boxed(),
        (
            text(64),
            exchange_kind(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            field_table(),
        )
            .prop_map(
                |(name, kind, durable, passive, auto_delete, internal, arguments)| {
                    Frame::ExchangeDeclare(ExchangeDeclare {
                        name,
                        kind,
                        durable,
                        passive,
                        auto_delete,
                        internal,
                        arguments,
                    })
                },
            )
            .boxed(),
        (text(64), any::<bool>())
            .prop_map(|(name, if_unused)| Frame::ExchangeDelete(ExchangeDelete { name, if_unused }))
            .boxed(),
        (
            text(64),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            field_table(),
        )
            .prop_map(
                |(name, durable, exclusive, auto_delete, passive, arguments)| {
                    Frame::QueueDeclare(QueueDeclare {
                        name,
                        durable,
                        exclusive,
                        auto_delete,
                        passive,
                        arguments,
                    })
                },
            )
            .boxed(),
        (text(64), any::<u64>(), any::<u32>())
            .prop_map(|(name, message_count, consumer_count)| {
                Frame::QueueDeclareOk(QueueDeclareOk {
                    name,
                    message_count,
                    consumer_count,
                })
            })
            .boxed(),
        (text(64), any::<bool>(), any::<bool>())
            .prop_map(|(name, if_unused, if_empty)| {
                Frame::QueueDelete(QueueDelete {
                    name,
                    if_unused,
                    if_empty,
                })
            })
            .boxed(),
        any::<u64>()
            .prop_map(|message_count| Frame::QueueDeleteOk { message_count })
            .boxed(),
        text(64).prop_map(|name| Frame::QueuePurge { name }).boxed(),
        any::<u64>()
            .prop_map(|message_count| Frame::QueuePurgeOk { message_count })
            .boxed(),
        queue_bind().prop_map(Frame::QueueBind).boxed(),
        queue_bind().prop_map(Frame::QueueUnbind).boxed(),
        exchange_bind().prop_map(Frame::ExchangeBind).boxed(),
        exchange_bind().prop_map(Frame::ExchangeUnbind).boxed(),
        (
            text(64),
            text(64),
            any::<bool>(),
            any::<bool>(),
            properties(),
            body(),
        )
            .prop_map(
                |(exchange, routing_key, mandatory, no_confirm, properties, body)| {
                    Frame::Publish(Box::new(Publish {
                        exchange,
                        routing_key,
                        mandatory,
                        no_confirm,
                        properties,
                        body,
                    }))
                },
            )
            .boxed(),
        prop_oneof![
            Just(Confirm::Ack),
            Just(Confirm::Duplicate),
            (any::<u16>(), text(100)).prop_map(|(code, reason)| Confirm::Nack { code, reason }),
        ]
        .prop_map(Frame::Confirm)
        .boxed(),
        (
            any::<u16>(),
            text(100),
            text(64),
            text(64),
            properties(),
            body(),
        )
            .prop_map(
                |(reply_code, reply_text, exchange, routing_key, properties, body)| {
                    Frame::Return(Box::new(Return {
                        reply_code,
                        reply_text,
                        exchange,
                        routing_key,
                        properties,
                        body,
                    }))
                },
            )
            .boxed(),
        any::<u32>()
            .prop_map(|prefetch_count| Frame::Qos(Qos { prefetch_count }))
            .boxed(),
        (
            text(64),
            text(64),
            any::<bool>(),
            any::<bool>(),
            field_table(),
        )
            .prop_map(|(queue, consumer_tag, no_ack, exclusive, arguments)| {
                Frame::Consume(Consume {
                    queue,
                    consumer_tag,
                    no_ack,
                    exclusive,
                    arguments,
                })
            })
            .boxed(),
        text(64)
            .prop_map(|consumer_tag| Frame::ConsumeOk(ConsumerTag { consumer_tag }))
            .boxed(),
        (text(64), any::<bool>())
            .prop_map(|(consumer_tag, keep_unacked)| {
                Frame::Cancel(Cancel {
                    consumer_tag,
                    keep_unacked,
                })
            })
            .boxed(),
        (text(64), any::<u16>(), text(100))
            .prop_map(|(consumer_tag, code, reason)| {
                Frame::ConsumerCancelled(ConsumerCancelled {
                    consumer_tag,
                    code,
                    reason,
                })
            })
            .boxed(),
        (
            text(64),
            any::<u64>(),
            any::<bool>(),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(any::<u64>()),
            ),
            text(64),
            text(64),
            properties(),
            body(),
        )
            .prop_map(
                |(
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    (delivery_count, acquired_count, stream_offset),
                    exchange,
                    routing_key,
                    properties,
                    body,
                )| {
                    Frame::Deliver(Box::new(Deliver {
                        consumer_tag,
                        delivery_tag,
                        redelivered,
                        delivery_count,
                        acquired_count,
                        stream_offset,
                        exchange,
                        routing_key,
                        properties,
                        body,
                    }))
                },
            )
            .boxed(),
        (text(64), any::<bool>())
            .prop_map(|(queue, no_ack)| Frame::Get(Get { queue, no_ack }))
            .boxed(),
        (
            any::<u64>(),
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            text(64),
            text(64),
            properties(),
            body(),
        )
            .prop_map(
                |(
                    delivery_tag,
                    redelivered,
                    delivery_count,
                    acquired_count,
                    message_count,
                    exchange,
                    routing_key,
                    properties,
                    body,
                )| {
                    Frame::GetOk(Box::new(GetOk {
                        delivery_tag,
                        redelivered,
                        delivery_count,
                        acquired_count,
                        message_count,
                        exchange,
                        routing_key,
                        properties,
                        body,
                    }))
                },
            )
            .boxed(),
        Just(Frame::GetEmpty).boxed(),
        (any::<u64>(), any::<bool>())
            .prop_map(|(delivery_tag, multiple)| {
                Frame::Ack(Ack {
                    delivery_tag,
                    multiple,
                })
            })
            .boxed(),
        (any::<u64>(), any::<bool>(), any::<bool>(), any::<u64>())
            .prop_map(|(delivery_tag, multiple, requeue, delay_ms)| {
                Frame::Nack(Nack {
                    delivery_tag,
                    multiple,
                    requeue,
                    delay_ms,
                })
            })
            .boxed(),
        (any::<u64>(), any::<bool>())
            .prop_map(|(delivery_tag, requeue)| {
                Frame::Reject(Reject {
                    delivery_tag,
                    requeue,
                })
            })
            .boxed(),
        (text(40), field_table())
            .prop_map(|(command, arguments)| Frame::Admin(Admin { command, arguments }))
            .boxed(),
        body().prop_map(|body| Frame::AdminOk { body }).boxed(),
    ];
    Union::new(arms)
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), frame()).prop_map(|(request_id, frame)| Envelope::new(request_id, frame))
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the deterministic samples and the generated frames
// ---------------------------------------------------------------------------------------------

/// (a) The bytes after the length prefix decode to the original envelope, and the prefix
/// counts exactly those bytes.
fn check_roundtrip(env: &Envelope) -> Result<(), TestCaseError> {
    let wire = env.to_bytes();
    prop_assert!(wire.len() >= 4 + FRAME_HEADER_BYTES);
    let (prefix, rest) = wire.split_at(4);
    let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes"));
    prop_assert_eq!(len as usize, rest.len());
    prop_assert_eq!(rest.first().copied(), Some(env.frame.opcode() as u8));
    prop_assert_eq!(Envelope::decode(wire.slice(4..)), Ok(env.clone()));
    Ok(())
}

/// (c) Every strict prefix of the wire bytes makes the codec wait (and consume nothing);
/// every strict prefix of the frame bytes is an error for `Envelope::decode`, except that a
/// cut inside a trailing body yields the same frame with the shorter body.
fn check_truncations(env: &Envelope) -> Result<(), TestCaseError> {
    let wire = env.to_bytes();
    let mut codec = FrameCodec::default();
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(wire.get(..cut).expect("in range"));
        prop_assert_eq!(codec.decode(&mut buf), Ok(None), "codec, cut at {}", cut);
        prop_assert_eq!(buf.len(), cut, "codec consumed bytes of a partial frame");
    }

    let frame_bytes = wire.slice(4..);
    let body_start = body_of(&env.frame).map(|b| frame_bytes.len() - b.len());
    for cut in 0..frame_bytes.len() {
        let got = Envelope::decode(frame_bytes.slice(..cut));
        match body_start {
            Some(start) if cut >= start => {
                let shorter = with_body(&env.frame, frame_bytes.slice(start..cut));
                prop_assert_eq!(
                    got,
                    Ok(Envelope::new(env.request_id, shorter)),
                    "cut at {}",
                    cut
                );
            }
            _ => prop_assert!(got.is_err(), "cut at {} decoded: {:?}", cut, got),
        }
    }
    Ok(())
}

/// Feeds `input` to a fresh codec until it waits or fails; a bounded number of decodes, since
/// every decoded frame consumes at least 13 bytes. Returns the decoded envelopes.
fn drain(input: &[u8]) -> Result<Vec<Envelope>, TestCaseError> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    for _ in 0..=input.len() / (4 + FRAME_HEADER_BYTES) + 1 {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(env)) => {
                prop_assert!(buf.len() < before, "a decoded frame consumed nothing");
                out.push(env);
            }
            Ok(None) | Err(_) => return Ok(out),
        }
    }
    Err(TestCaseError::fail("decoder did not stop"))
}

/// A decoded frame re-encodes canonically: encoding, decoding and encoding again gives the
/// same bytes. (Bytes, not values: mutated input may hold NaN floats.)
fn check_canonical(env: &Envelope) -> Result<(), TestCaseError> {
    let once = env.to_bytes();
    let again = Envelope::decode(once.slice(4..));
    prop_assert!(again.is_ok(), "re-encoding does not decode: {:?}", again);
    let twice = again.expect("checked").to_bytes();
    prop_assert_eq!(once, twice);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deterministic tests
// ---------------------------------------------------------------------------------------------

#[test]
fn samples_cover_every_opcode_once() {
    let samples = samples();
    let ops: Vec<Opcode> = samples.iter().map(Frame::opcode).collect();
    let distinct: HashSet<Opcode> = ops.iter().copied().collect();
    let all: HashSet<Opcode> = Opcode::ALL.iter().copied().collect();
    assert_eq!(
        distinct, all,
        "samples() must have a frame for every opcode"
    );
    // Confirm is the one opcode with three variants (Ack, Nack, Duplicate); every other
    // opcode once.
    assert_eq!(ops.len(), Opcode::ALL.len() + 2);
    for op in Opcode::ALL {
        assert_eq!(
            Opcode::try_from(*op as u8),
            Ok(*op),
            "opcode byte round trip"
        );
    }
}

#[test]
fn strategy_generates_every_opcode() {
    let mut runner = TestRunner::deterministic();
    let strategy = frame();
    let mut seen = HashSet::new();
    for _ in 0..2_000 {
        let f = strategy.new_tree(&mut runner).expect("generate").current();
        seen.insert(f.opcode());
    }
    let all: HashSet<Opcode> = Opcode::ALL.iter().copied().collect();
    assert_eq!(seen, all);
}

#[test]
fn samples_roundtrip_and_truncate_cleanly() {
    for (i, frame) in samples().into_iter().enumerate() {
        let env = Envelope::new(i as u64 * 0x0101_0101_0101, frame);
        check_roundtrip(&env).unwrap();
        check_truncations(&env).unwrap();
        check_canonical(&env).unwrap();
    }
}

#[test]
fn samples_stream_through_the_codec() {
    let envs: Vec<Envelope> = samples()
        .into_iter()
        .enumerate()
        .map(|(i, f)| Envelope::new(i as u64, f))
        .collect();
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for env in &envs {
        codec.encode(env, &mut buf).unwrap();
    }
    let mut out = Vec::new();
    while let Some(env) = codec.decode(&mut buf).unwrap() {
        out.push(env);
    }
    assert_eq!(out, envs);
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) `Envelope::decode` inverts `Envelope::encode`.
    #[test]
    fn envelope_roundtrip(env in envelope()) {
        check_roundtrip(&env)?;
    }

    /// (a') Properties and field tables survive a round trip inside a Publish, whatever
    /// combination of optional fields is present.
    #[test]
    fn properties_roundtrip(properties in properties()) {
        let env = Envelope::new(1, Frame::Publish(Box::new(Publish {
            exchange: String::new(),
            routing_key: "q".into(),
            mandatory: false,
            no_confirm: false,
            properties,
            body: Bytes::new(),
        })));
        check_roundtrip(&env)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a'') A publish encoded from borrowed parts (`PublishRef`, the client's path) is
    /// byte for byte the owned frame, of the length `encoded_len` announced.
    #[test]
    fn publish_ref_matches_the_owned_frame(
        request_id in any::<u64>(),
        exchange in text(40),
        routing_key in text(40),
        mandatory in any::<bool>(),
        no_confirm in any::<bool>(),
        properties in properties(),
        body in body(),
    ) {
        let publish = Publish {
            exchange,
            routing_key,
            mandatory,
            no_confirm,
            properties,
            body,
        };
        prop_assert_eq!(
            publish.properties.encoded_len(),
            {
                let mut b = BytesMut::new();
                publish.properties.encode(&mut b);
                b.len()
            }
        );
        let owned = Envelope::new(request_id, Frame::Publish(Box::new(publish.clone()))).to_bytes();
        let borrowed = publish.borrowed();
        let mut buf = BytesMut::new();
        borrowed.encode(request_id, &mut buf);
        prop_assert_eq!(&buf[..], &owned[..]);
        prop_assert_eq!(borrowed.encoded_len(), owned.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (b) Several envelopes encoded into one buffer come back in order, the buffer fully
    /// consumed; also when the bytes arrive in small chunks.
    #[test]
    fn codec_stream_roundtrip(envs in vec(envelope(), 1..8), chunk in 1usize..97) {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        for (i, env) in envs.iter().enumerate() {
            // Both Encoder impls: by value and by reference.
            if i % 2 == 0 {
                codec.encode(env.clone(), &mut wire)?;
            } else {
                codec.encode(env, &mut wire)?;
            }
        }

        let mut buf = wire.clone();
        let mut out = Vec::new();
        while let Some(env) = codec.decode(&mut buf)? {
            out.push(env);
        }
        prop_assert_eq!(&out, &envs);
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());

        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.put_slice(piece);
            while let Some(env) = codec.decode(&mut buf)? {
                out.push(env);
            }
        }
        prop_assert_eq!(&out, &envs);
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    }

    /// (c) Truncated frames: the codec waits, the frame decoder fails, bodies may be cut.
    #[test]
    fn truncation(env in envelope()) {
        check_truncations(&env)?;
    }

    /// A frame longer than the codec's maximum is refused; one exactly at it is accepted.
    #[test]
    fn max_frame_size_is_enforced(env in envelope()) {
        let wire = env.to_bytes();
        let len = u32::try_from(wire.len() - 4).expect("small frame");
        let mut exact = FrameCodec::new(len);
        prop_assert_eq!(exact.decode(&mut BytesMut::from(&wire[..])), Ok(Some(env.clone())));
        let mut smaller = FrameCodec::new(len - 1);
        let got = smaller.decode(&mut BytesMut::from(&wire[..]));
        prop_assert!(
            matches!(got, Err(warren_protocol::DecodeError::FrameTooLarge { size, max })
                if size == u64::from(len) && max == u64::from(len - 1)),
            "{:?}", got
        );
    }

    /// (d) Arbitrary bytes never panic the codec.
    #[test]
    fn random_bytes_never_panic(input in vec(any::<u8>(), 0..2048)) {
        for env in drain(&input)? {
            check_canonical(&env)?;
        }
    }

    /// (d') Random payloads behind a valid length prefix and a (usually) valid opcode reach
    /// the payload decoders.
    #[test]
    fn random_payloads_never_panic(
        opcode in prop_oneof![
            proptest::sample::select(Opcode::ALL).prop_map(|op| op as u8),
            any::<u8>(),
        ],
        request_id in any::<u64>(),
        payload in vec(any::<u8>(), 0..512),
    ) {
        let mut wire = BytesMut::new();
        wire.put_u32_le(u32::try_from(FRAME_HEADER_BYTES + payload.len()).expect("small"));
        wire.put_u8(opcode);
        wire.put_u64_le(request_id);
        wire.put_slice(&payload);
        for env in drain(&wire)? {
            check_canonical(&env)?;
        }
    }

    /// (d'') Valid frames with a few bytes overwritten never panic, and whatever still decodes
    /// re-encodes canonically.
    #[test]
    fn mutated_frames_never_panic(
        envs in vec(envelope(), 1..4),
        edits in vec((any::<Index>(), any::<u8>()), 1..6),
        keep_prefix in any::<bool>(),
    ) {
        let mut wire = BytesMut::new();
        for env in &envs {
            env.encode(&mut wire);
        }
        let skip = if keep_prefix { 4 } else { 0 };
        for (at, byte) in edits {
            let i = skip + at.index(wire.len() - skip);
            if let Some(b) = wire.get_mut(i) {
                *b = byte;
            }
        }
        for env in drain(&wire)? {
            check_canonical(&env)?;
        }
    }
}
