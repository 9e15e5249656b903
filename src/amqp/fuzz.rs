//! The check behind the `amqp_frames` fuzz target (`warren::fuzzing::amqp_frames`): a
//! client's bytes through what the AMQP listener runs on them, without a socket or a
//! broker. Frames are cut by `codec::decode` under either of the listener's size limits,
//! each method goes through the nesting check and then `amq-protocol`'s parser as
//! `Conn::expect` and `Conn::dispatch` take it, each content header through the nesting
//! check, the parser and the conversion to Warren's properties and back. Panics when an
//! invariant breaks; a refusal is what bad input should get.

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use bytes::BytesMut;

use super::codec::{self, RawFrame};
use super::content;

/// Runs the listener's decoding on `data`. Its first byte picks the frame size limit: even,
/// the 4096 bytes in force before `tune-ok`; odd, the [`super::FRAME_MAX`] offered in
/// `tune`. An AMQP 0-9-1 protocol header at the start is skipped (the listener compares it
/// and nothing more), so that a whole client session is an input.
pub(crate) fn frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let max = if mode & 1 == 0 {
        codec::FRAME_MIN_SIZE
    } else {
        super::FRAME_MAX
    };
    let rest = rest
        .strip_prefix(&codec::PROTOCOL_HEADER[..])
        .unwrap_or(rest);
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.len();
        match codec::decode(&mut buf, max) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                assert!(
                    used >= codec::FRAME_OVERHEAD_BYTES as usize && used <= max as usize,
                    "a frame of {used} bytes under a limit of {max}"
                );
                frame_checks(frame);
            }
            // Waiting for the rest of a frame takes nothing from the buffer.
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame was consumed");
                return;
            }
            // The listener closes the connection: the stream cannot be resynced.
            Err(_) => return,
        }
    }
}

fn frame_checks(frame: RawFrame) {
    match frame {
        RawFrame::Method {
            channel,
            class_id,
            method_id,
            payload,
        } => {
            // Never panics, whatever the ids: the refusal of an unknown method names them.
            let _ = codec::method_name(class_id, method_id);
            // As the listener: a table's nesting is checked before the parser recurses.
            if let Some(at) = codec::table_offset(class_id, method_id, &payload) {
                if !codec::table_nesting_ok(&payload[at..], codec::MAX_TABLE_DEPTH) {
                    return;
                }
            }
            let Some(method) = codec::parse_method(&payload) else {
                return;
            };
            // What decodes re-encodes, and what that encodes decodes to the same bytes
            // again: the server writes these types in its replies.
            let once = codec::encode(&AMQPFrame::Method(channel, method));
            let again = reparse_method(&once);
            assert_eq!(
                codec::encode(&AMQPFrame::Method(channel, again)),
                once,
                "method ({class_id}, {method_id}) does not re-encode stably"
            );
        }
        RawFrame::Header { channel, payload } => {
            if let Some(at) = codec::header_table_offset(&payload) {
                if !codec::table_nesting_ok(&payload[at..], codec::MAX_TABLE_DEPTH) {
                    return;
                }
            }
            let Ok((&[], header)) = parse_content_header(&payload[..]) else {
                return;
            };
            // A publish's properties as Warren's (or the 406 for a bad expiration), then
            // back to AMQP's as a delivery carries them: that is stable, Warren's to AMQP's
            // to Warren's again changes nothing.
            let Ok(native) = content::to_native(&header.properties) else {
                return;
            };
            let amqp = content::to_amqp(&native);
            let frame = codec::encode(&AMQPFrame::Header(
                channel,
                AMQPContentHeader {
                    class_id: header.class_id,
                    body_size: header.body_size,
                    properties: amqp.clone(),
                },
            ));
            assert!(frame.len() >= codec::FRAME_OVERHEAD_BYTES as usize);
            let back = content::to_native(&amqp).expect("Warren's expiration is a number");
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            native.encode(&mut a);
            back.encode(&mut b);
            assert_eq!(a, b, "properties change on a round trip through AMQP's");
        }
        RawFrame::Body { .. } | RawFrame::Heartbeat { .. } => {}
    }
}

/// Decodes a method frame the codec wrote.
fn reparse_method(frame: &[u8]) -> amq_protocol::protocol::AMQPClass {
    let mut buf = BytesMut::from(frame);
    let Ok(Some(RawFrame::Method { payload, .. })) = codec::decode(&mut buf, u32::MAX) else {
        panic!("an encoded method frame does not frame: {frame:?}");
    };
    codec::parse_method(&payload).expect("an encoded method decodes")
}

/// Seed inputs for the `amqp_frames` corpus: a client's whole session as lapin or pika
/// would send it (handshake, then every method the listener takes, with argument tables and
/// a publish whose header carries every property and field type), one frame of each kind
/// alone, and the refusals the listener must make without crashing (deep nesting in a
/// handshake method, a bad expiration, a wrong end octet). Written by `write_fuzz_seeds`.
#[cfg(test)]
#[allow(clippy::big_endian_bytes)] // AMQP's byte order
pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
    use amq_protocol::types::{
        AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
    };

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(ShortString::from(k), v);
        }
        t
    }
    let method = |channel: u16, m: AMQPClass| codec::encode(&AMQPFrame::Method(channel, m));
    let capabilities = table(vec![
        ("publisher_confirms", AMQPValue::Boolean(true)),
        ("consumer_cancel_notify", AMQPValue::Boolean(true)),
        ("connection.blocked", AMQPValue::Boolean(true)),
    ]);
    let start_ok = method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: table(vec![
                ("product", AMQPValue::LongString("lapin".into())),
                ("version", AMQPValue::LongString("4.12.3".into())),
                ("capabilities", AMQPValue::FieldTable(capabilities)),
            ]),
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: "en_US".into(),
        })),
    );
    let handshake = [
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            })),
        ),
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ),
        method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
    ]
    .concat();
    let queue_args = table(vec![
        ("x-message-ttl", AMQPValue::LongInt(60_000)),
        ("x-max-length", AMQPValue::LongLongInt(1000)),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("dlx".into()),
        ),
        ("x-max-priority", AMQPValue::ShortShortUInt(10)),
        ("x-single-active-consumer", AMQPValue::Boolean(true)),
    ]);
    let topology = [
        method(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "logs".into(),
                kind: "topic".into(),
                durable: true,
                arguments: table(vec![(
                    "alternate-exchange",
                    AMQPValue::LongString("ae".into()),
                )]),
                ..exchange::Declare::default()
            })),
        ),
        method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "jobs".into(),
                durable: true,
                arguments: queue_args,
                ..queue::Declare::default()
            })),
        ),
        method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: "jobs".into(),
                exchange: "logs".into(),
                routing_key: "app.#".into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
        method(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                destination: "logs".into(),
                source: "amq.topic".into(),
                routing_key: "#".into(),
                nowait: false,
                arguments: table(vec![("x-match", AMQPValue::LongString("any".into()))]),
            })),
        ),
    ]
    .concat();
    let headers = table(vec![
        ("text", AMQPValue::LongString("hello".into())),
        ("flag", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-5)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-70_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-5_000_000_000)),
        ("f32", AMQPValue::Float(0.5)),
        ("f64", AMQPValue::Double(2.25)),
        (
            "price",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1234,
            }),
        ),
        ("at", AMQPValue::Timestamp(1_700_000_000)),
        (
            "raw",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255])),
        ),
        (
            "list",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString("a".into()),
                AMQPValue::Void,
            ])),
        ),
        (
            "meta",
            AMQPValue::FieldTable(table(vec![("k", AMQPValue::ShortString("v".into()))])),
        ),
    ]);
    let properties = basic::AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("c-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("billing".into());
    let header = |properties: basic::AMQPProperties, body_size: u64| {
        codec::encode(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size,
                properties,
            },
        ))
    };
    let body = |bytes: &[u8]| codec::encode(&AMQPFrame::Body(1, bytes.to_vec()));
    let publish = [
        method(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "logs".into(),
                routing_key: "app.start".into(),
                mandatory: true,
                immediate: false,
            })),
        ),
        header(properties, 11),
        body(b"hello"),
        body(b" world"),
    ]
    .concat();
    let consume = [
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 10,
                global: false,
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "jobs".into(),
                consumer_tag: "ctag".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: table(vec![("x-stream-offset", AMQPValue::LongLongInt(1))]),
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 2,
                multiple: true,
                requeue: true,
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag: 3,
                requeue: false,
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: "jobs".into(),
                no_ack: true,
            })),
        ),
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: "ctag".into(),
                nowait: false,
            })),
        ),
        codec::HEARTBEAT.to_vec(),
        method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        ),
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        ),
    ]
    .concat();
    let session = [
        codec::PROTOCOL_HEADER.to_vec(),
        handshake.clone(),
        topology.clone(),
        publish.clone(),
        consume.clone(),
    ]
    .concat();
    // A connection.start sent in start-ok's place, its server properties nested 560 deep:
    // it took the daemon down before the handshake checked every method's tables.
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..560 {
        let inner = nested;
        nested = vec![1, b'k', b'F'];
        nested.extend_from_slice(&u32::try_from(inner.len()).unwrap_or(0).to_be_bytes());
        nested.extend_from_slice(&inner);
    }
    let mut start: Vec<u8> = vec![0, 10, 0, 10, 0, 9];
    start.extend_from_slice(&u32::try_from(nested.len()).unwrap_or(0).to_be_bytes());
    start.extend_from_slice(&nested);
    start.extend_from_slice(&[0, 0, 0, 5]);
    start.extend_from_slice(b"PLAIN");
    start.extend_from_slice(&[0, 0, 0, 5]);
    start.extend_from_slice(b"en_US");
    let mut nested_start = vec![1, 0, 0];
    nested_start.extend_from_slice(&u32::try_from(start.len()).unwrap_or(0).to_be_bytes());
    nested_start.extend_from_slice(&start);
    nested_start.push(0xCE);
    let bad_expiration = header(
        basic::AMQPProperties::default().with_expiration("soon".into()),
        0,
    );
    let mut bad_end = method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    if let Some(last) = bad_end.last_mut() {
        *last = 0x00;
    }
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
    vec![
        (
            "session-handshake",
            with_mode(0, &[&codec::PROTOCOL_HEADER[..], &start_ok].concat()),
        ),
        ("session-whole", with_mode(1, &session)),
        ("topology", with_mode(1, &topology)),
        ("publish", with_mode(1, &publish)),
        ("consume", with_mode(1, &consume)),
        ("nested-connection-start", with_mode(0, &nested_start)),
        ("bad-expiration", with_mode(1, &bad_expiration)),
        ("bad-frame-end", with_mode(1, &bad_end)),
    ]
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::basic::AMQPProperties;

    use super::content;

    #[test]
    fn a_timestamp_past_what_milliseconds_hold_survives_a_round_trip() {
        // The amqp_frames fuzzer's first find (corpus/amqp_frames/crash-timestamp-overflow):
        // u64::MAX seconds saturated to u64::MAX ms, which went back to AMQP as
        // 18446744073709551 s and came in again as 18446744073709551000 ms.
        let huge = AMQPProperties::default().with_timestamp(u64::MAX);
        let native = content::to_native(&huge).expect("converts");
        let again = content::to_native(&content::to_amqp(&native)).expect("converts");
        assert_eq!(native.timestamp, again.timestamp);
        assert_eq!(native.timestamp, Some(u64::MAX / 1000 * 1000));
        // An ordinary one is exact both ways.
        let now = AMQPProperties::default().with_timestamp(1_700_000_000);
        let native = content::to_native(&now).expect("converts");
        assert_eq!(native.timestamp, Some(1_700_000_000_000));
        assert_eq!(*content::to_amqp(&native).timestamp(), Some(1_700_000_000));
    }
}
