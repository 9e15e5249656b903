//! Byte-exact test vectors. Each constant is the full wire encoding of one frame (length
//! prefix included), written out by hand from PROTOCOL.md; the tests decode it, encode the
//! expected frame, and compare both ways. The same bytes appear as worked examples in
//! PROTOCOL.md, and `protocol_md_examples_match` checks that they still do.

mod common;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use warren_protocol::handshake::{parse_client_preface, PREFACE_BYTES};
use warren_protocol::{
    client_preface, Ack, Confirm, Deliver, Envelope, ErrorCode, ErrorFrame, ExchangeBind,
    ExchangeDeclare, ExchangeKind, FieldTable, FieldValue, Frame, FrameCodec, Hello, Mechanism,
    Open, Properties, Publish, QueueBind, QueueDeclare, DEFAULT_MAX_FRAME_SIZE_BYTES,
    PROTOCOL_VERSION,
};

use common::{hex, to_hex};

const PREFACE: &str = "57 41 52 52 45 4e 01 00";

const HELLO: &str = "21 00 00 00 01 00 00 00 00 00 00 00 00
    01 00 00 00 80 00 88 13 00 00
    0c 00 77 61 72 72 65 6e 2f 30 2e 31 2e 30";

const HEARTBEAT: &str = "09 00 00 00 02 00 00 00 00 00 00 00 00";

const BLOCKED: &str = "0f 00 00 00 0a 00 00 00 00 00 00 00 00
    04 00 64 69 73 6b";

const UNBLOCKED: &str = "09 00 00 00 0b 00 00 00 00 00 00 00 00";

const ERROR: &str = "1c 00 00 00 05 07 00 00 00 00 00 00 00
    94 01
    0f 00 6e 6f 20 71 75 65 75 65 20 27 6a 6f 62 73 27";

const OPEN: &str = "1d 00 00 00 07 01 00 00 00 00 00 00 00
    00
    05 00 67 75 65 73 74
    05 00 00 00 67 75 65 73 74
    01 00 2f";

const EXCHANGE_DECLARE: &str = "2f 00 00 00 10 01 00 00 00 00 00 00 00
    04 00 6c 6f 67 73 02 01
    01 00 00 00 0b 00 64 65 73 63 72 69 70 74 69 6f 6e 53 08 00 00 00 61 70 70 20 6c 6f 67 73";

const QUEUE_DECLARE: &str = "14 00 00 00 20 02 00 00 00 00 00 00 00
    04 00 6a 6f 62 73 01 00 00 00 00";

const QUEUE_BIND: &str = "20 00 00 00 26 03 00 00 00 00 00 00 00
    04 00 6a 6f 62 73 04 00 6c 6f 67 73 05 00 61 70 70 2e 2a 00 00 00 00";

const EXCHANGE_BIND: &str = "21 00 00 00 12 09 00 00 00 00 00 00 00
    05 00 61 75 64 69 74 04 00 6c 6f 67 73 05 00 61 70 70 2e 23 00 00 00 00";

const EXCHANGE_UNBIND: &str = "21 00 00 00 13 0a 00 00 00 00 00 00 00
    05 00 61 75 64 69 74 04 00 6c 6f 67 73 05 00 61 70 70 2e 23 00 00 00 00";

const PUBLISH: &str = "39 00 00 00 30 04 00 00 00 00 00 00 00
    04 00 6c 6f 67 73 09 00 61 70 70 2e 73 74 61 72 74 00
    01 03 02 00 6d 31 01 00 00 00 07 00 72 65 74 72 69 65 73 49 03 00 00 00 00 00 00 00
    68 69";

const PUBLISH_NO_CONFIRM: &str = "16 00 00 00 30 07 00 00 00 00 00 00 00
    00 00 04 00 6a 6f 62 73 02 00 00 68 69";

const CONFIRM_ACK: &str = "0a 00 00 00 31 04 00 00 00 00 00 00 00 00";
const CONFIRM_DUPLICATE: &str = "0a 00 00 00 31 06 00 00 00 00 00 00 00 02";

const CONFIRM_NACK: &str = "18 00 00 00 31 05 00 00 00 00 00 00 00
    01 fa 01 0a 00 71 75 65 75 65 20 66 75 6c 6c";

const DELIVER: &str = "4d 00 00 00 45 00 00 00 00 00 00 00 00
    02 00 63 31 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    04 00 6c 6f 67 73 09 00 61 70 70 2e 73 74 61 72 74
    01 03 02 00 6d 31 01 00 00 00 07 00 72 65 74 72 69 65 73 49 03 00 00 00 00 00 00 00
    68 69";

const DELIVER_STREAM: &str = "30 00 00 00 45 00 00 00 00 00 00 00 00
    02 00 63 31 01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 00
    2a 00 00 00 00 00 00 00
    00 00 02 00 65 76 00 00 68 69";

const ACK: &str = "12 00 00 00 49 06 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00";

/// One tagged value per field type (PROTOCOL.md §8), as (hex, value). The markdown example
/// `field-values` lists the same bytes in the same order.
fn value_vectors() -> Vec<(&'static str, FieldValue)> {
    vec![
        ("53 02 00 00 00 68 69", FieldValue::String("hi".into())),
        ("49 fe ff ff ff ff ff ff ff", FieldValue::Int(-2)),
        ("46 00 00 00 00 00 00 f8 3f", FieldValue::Float(1.5)),
        ("54 01", FieldValue::Bool(true)),
        (
            "42 02 00 00 00 00 ff",
            FieldValue::Bytes(Bytes::from_static(b"\x00\xff")),
        ),
        (
            "4c 02 00 00 00 6f 01 56",
            FieldValue::List(vec![FieldValue::U8(1), FieldValue::Void]),
        ),
        (
            "4d 01 00 00 00 01 00 6b 54 00",
            FieldValue::Map(FieldTable::from([("k".into(), FieldValue::Bool(false))])),
        ),
        ("56", FieldValue::Void),
        ("62 fb", FieldValue::I8(-5)),
        ("6f c8", FieldValue::U8(200)),
        ("73 18 fc", FieldValue::I16(-1000)),
        ("75 e8 fd", FieldValue::U16(65000)),
        ("69 00 00 00 80", FieldValue::I32(i32::MIN)),
        ("77 ff ff ff ff", FieldValue::U32(u32::MAX)),
        ("55 ff ff ff ff ff ff ff ff", FieldValue::U64(u64::MAX)),
        ("66 00 00 c0 3f", FieldValue::F32(1.5)),
        (
            "44 02 d2 04 00 00",
            FieldValue::Decimal {
                scale: 2,
                value: 1234,
            },
        ),
        (
            "74 00 f1 53 65 00 00 00 00",
            FieldValue::Timestamp(1_700_000_000),
        ),
    ]
}

/// The properties of the Publish and Deliver examples.
fn example_properties() -> Properties {
    let mut headers = FieldTable::new();
    headers.insert("retries".into(), FieldValue::Int(3));
    Properties {
        message_id: Some("m1".into()),
        persistent: true,
        headers: headers.into(),
        ..Properties::default()
    }
}

/// (name in PROTOCOL.md, hex, expected envelope), for every frame vector.
fn vectors() -> Vec<(&'static str, &'static str, Envelope)> {
    let mut description = FieldTable::new();
    description.insert("description".into(), FieldValue::String("app logs".into()));
    vec![
        (
            "hello",
            HELLO,
            Envelope::new(
                0,
                Frame::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    max_frame_size: DEFAULT_MAX_FRAME_SIZE_BYTES,
                    heartbeat_ms: 5000,
                    server: "warren/0.1.0".into(),
                }),
            ),
        ),
        ("heartbeat", HEARTBEAT, Envelope::new(0, Frame::Heartbeat)),
        (
            "blocked",
            BLOCKED,
            Envelope::new(
                0,
                Frame::Blocked {
                    reason: "disk".into(),
                },
            ),
        ),
        ("unblocked", UNBLOCKED, Envelope::new(0, Frame::Unblocked)),
        (
            "open",
            OPEN,
            Envelope::new(
                1,
                Frame::Open(Open {
                    mechanism: Mechanism::Password,
                    user: "guest".into(),
                    password: Bytes::from_static(b"guest"),
                    vhost: "/".into(),
                }),
            ),
        ),
        (
            "error",
            ERROR,
            Envelope::new(
                7,
                Frame::Error(ErrorFrame::new(ErrorCode::NotFound, "no queue 'jobs'")),
            ),
        ),
        (
            "exchange-declare",
            EXCHANGE_DECLARE,
            Envelope::new(
                1,
                Frame::ExchangeDeclare(ExchangeDeclare {
                    name: "logs".into(),
                    kind: ExchangeKind::Topic,
                    durable: true,
                    passive: false,
                    auto_delete: false,
                    internal: false,
                    arguments: description,
                }),
            ),
        ),
        (
            "queue-declare",
            QUEUE_DECLARE,
            Envelope::new(
                2,
                Frame::QueueDeclare(QueueDeclare {
                    name: "jobs".into(),
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    passive: false,
                    arguments: FieldTable::new(),
                }),
            ),
        ),
        (
            "queue-bind",
            QUEUE_BIND,
            Envelope::new(
                3,
                Frame::QueueBind(QueueBind {
                    queue: "jobs".into(),
                    exchange: "logs".into(),
                    routing_key: "app.*".into(),
                    arguments: FieldTable::new(),
                }),
            ),
        ),
        (
            "exchange-bind",
            EXCHANGE_BIND,
            Envelope::new(
                9,
                Frame::ExchangeBind(ExchangeBind {
                    destination: "audit".into(),
                    source: "logs".into(),
                    routing_key: "app.#".into(),
                    arguments: FieldTable::new(),
                }),
            ),
        ),
        (
            "exchange-unbind",
            EXCHANGE_UNBIND,
            Envelope::new(
                10,
                Frame::ExchangeUnbind(ExchangeBind {
                    destination: "audit".into(),
                    source: "logs".into(),
                    routing_key: "app.#".into(),
                    arguments: FieldTable::new(),
                }),
            ),
        ),
        (
            "publish",
            PUBLISH,
            Envelope::new(
                4,
                Frame::Publish(Box::new(Publish {
                    exchange: "logs".into(),
                    routing_key: "app.start".into(),
                    mandatory: false,
                    no_confirm: false,
                    properties: example_properties(),
                    body: Bytes::from_static(b"hi"),
                })),
            ),
        ),
        (
            "publish-no-confirm",
            PUBLISH_NO_CONFIRM,
            Envelope::new(
                7,
                Frame::Publish(Box::new(Publish {
                    exchange: String::new(),
                    routing_key: "jobs".into(),
                    mandatory: false,
                    no_confirm: true,
                    properties: Properties::default(),
                    body: Bytes::from_static(b"hi"),
                })),
            ),
        ),
        (
            "confirm-ack",
            CONFIRM_ACK,
            Envelope::new(4, Frame::Confirm(Confirm::Ack)),
        ),
        (
            "confirm-nack",
            CONFIRM_NACK,
            Envelope::new(
                5,
                Frame::Confirm(Confirm::Nack {
                    code: ErrorCode::ResourceError.as_u16(),
                    reason: "queue full".into(),
                }),
            ),
        ),
        (
            "confirm-duplicate",
            CONFIRM_DUPLICATE,
            Envelope::new(6, Frame::Confirm(Confirm::Duplicate)),
        ),
        (
            "deliver",
            DELIVER,
            Envelope::new(
                0,
                Frame::Deliver(Box::new(Deliver {
                    consumer_tag: "c1".into(),
                    delivery_tag: 1,
                    redelivered: false,
                    delivery_count: 0,
                    acquired_count: 0,
                    stream_offset: None,
                    exchange: "logs".into(),
                    routing_key: "app.start".into(),
                    properties: example_properties(),
                    body: Bytes::from_static(b"hi"),
                })),
            ),
        ),
        (
            "deliver-stream",
            DELIVER_STREAM,
            Envelope::new(
                0,
                Frame::Deliver(Box::new(Deliver {
                    consumer_tag: "c1".into(),
                    delivery_tag: 1,
                    redelivered: false,
                    delivery_count: 0,
                    acquired_count: 0,
                    stream_offset: Some(42),
                    exchange: String::new(),
                    routing_key: "ev".into(),
                    properties: Properties::default(),
                    body: Bytes::from_static(b"hi"),
                })),
            ),
        ),
        (
            "ack",
            ACK,
            Envelope::new(
                6,
                Frame::Ack(Ack {
                    delivery_tag: 1,
                    multiple: false,
                }),
            ),
        ),
    ]
}

#[test]
fn client_preface_is_byte_exact() {
    let bytes = hex(PREFACE);
    assert_eq!(&client_preface(PROTOCOL_VERSION)[..], &bytes[..]);
    let array: [u8; PREFACE_BYTES] = bytes.try_into().expect("8 bytes");
    assert_eq!(parse_client_preface(array), Ok(1));
}

#[test]
fn vectors_decode_to_the_expected_frames() {
    for (name, text, expected) in vectors() {
        let wire = Bytes::from(hex(text));
        // Without the length prefix, through Envelope::decode.
        let decoded = Envelope::decode(wire.slice(4..));
        assert_eq!(decoded.as_ref(), Ok(&expected), "{name}");
        // With it, through the codec, consuming every byte.
        let mut buf = BytesMut::from(&wire[..]);
        let decoded = FrameCodec::default().decode(&mut buf);
        assert_eq!(decoded, Ok(Some(expected)), "{name} via codec");
        assert!(buf.is_empty(), "{name}: {} bytes left", buf.len());
    }
}

#[test]
fn frames_encode_to_the_vectors() {
    for (name, text, expected) in vectors() {
        let want = hex(text);
        let got = expected.to_bytes();
        assert_eq!(to_hex(&got), to_hex(&want), "{name}");
        let mut buf = BytesMut::new();
        FrameCodec::default()
            .encode(&expected, &mut buf)
            .expect("encode");
        assert_eq!(&buf[..], &want[..], "{name} via codec");
        // The length prefix counts the bytes after it.
        let len = u32::from_le_bytes(want[..4].try_into().expect("4 bytes"));
        assert_eq!(len as usize, want.len() - 4, "{name} length prefix");
    }
}

/// The client's borrowed publish encoder writes exactly the bytes of the owned frame, and
/// says how many beforehand.
#[test]
fn publish_ref_encodes_to_the_publish_vectors() {
    let mut publishes = 0;
    for (name, text, expected) in vectors() {
        let Frame::Publish(publish) = &expected.frame else {
            continue;
        };
        publishes += 1;
        let want = hex(text);
        let borrowed = publish.borrowed();
        assert_eq!(borrowed.encoded_len(), want.len(), "{name}");
        assert_eq!(borrowed.frame_len(), want.len() - 4, "{name}");
        // Appended after what is already in the buffer, as into a client's outgoing bytes.
        let mut buf = BytesMut::from(&b"xyz"[..]);
        borrowed.encode(expected.request_id, &mut buf);
        assert_eq!(to_hex(&buf[3..]), to_hex(&want), "{name}");
        assert_eq!(&buf[..3], b"xyz", "{name}");
    }
    assert!(publishes >= 2, "the vectors hold {publishes} publishes");
}

/// The hex bytes of the worked example after `<!-- golden:NAME -->` in PROTOCOL.md: the
/// leading two-digit hex tokens of every line of the code block that follows; the rest of
/// a line is commentary.
fn markdown_example(markdown: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- golden:{name} -->");
    let start = markdown
        .find(&marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker}"));
    let mut lines = markdown[start + marker.len()..].lines();
    let fence = lines
        .find(|l| !l.trim().is_empty())
        .expect("code block after marker");
    assert!(
        fence.starts_with("```"),
        "{name}: expected a code block, got {fence:?}"
    );
    let mut text = String::new();
    for line in lines {
        if line.starts_with("```") {
            return hex(&text);
        }
        for token in line.split_whitespace() {
            let is_byte = token.len() == 2 && token.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_byte {
                break;
            }
            text.push_str(token);
        }
    }
    panic!("{name}: unterminated code block");
}

#[test]
fn protocol_md_examples_match() {
    let markdown = include_str!("../PROTOCOL.md");
    assert_eq!(
        to_hex(&markdown_example(markdown, "preface")),
        to_hex(&hex(PREFACE)),
        "preface"
    );
    for (name, text, _) in vectors() {
        assert_eq!(
            to_hex(&markdown_example(markdown, name)),
            to_hex(&hex(text)),
            "PROTOCOL.md example {name}"
        );
    }
}

#[test]
fn field_values_are_byte_exact() {
    use warren_protocol::field_table::{put_table, read_table};
    use warren_protocol::read::Reader;
    for (text, value) in value_vectors() {
        // A one-entry table {"k": value}: count, key, then the tagged value.
        let wire = [hex("01 00 00 00 01 00 6b"), hex(text)].concat();
        let table = FieldTable::from([("k".to_owned(), value.clone())]);
        let mut buf = BytesMut::new();
        put_table(&mut buf, &table);
        assert_eq!(to_hex(&buf), to_hex(&wire), "{value:?}");
        let mut r = Reader::new(Bytes::from(wire));
        assert_eq!(read_table(&mut r), Ok(table), "{text}");
        assert_eq!(r.remaining(), 0, "{text}");
    }
    let markdown = include_str!("../PROTOCOL.md");
    let all: Vec<u8> = value_vectors().iter().flat_map(|(t, _)| hex(t)).collect();
    assert_eq!(
        to_hex(&markdown_example(markdown, "field-values")),
        to_hex(&all),
        "PROTOCOL.md example field-values"
    );
}

#[test]
fn every_error_code_is_documented() {
    let markdown = include_str!("../PROTOCOL.md");
    for code in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.as_u16(), code.name());
        assert!(markdown.contains(&row), "PROTOCOL.md lacks the row {row:?}");
        assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
    }
}

#[test]
fn every_opcode_is_documented() {
    let markdown = include_str!("../PROTOCOL.md");
    for op in warren_protocol::Opcode::ALL {
        let heading = format!("### 0x{:02x} {}", *op as u8, op.name());
        assert!(markdown.contains(&heading), "PROTOCOL.md lacks {heading:?}");
    }
}

/// Writes the seed corpora of the protocol's fuzz targets (`fuzz/corpus/frame_decode`,
/// `field_table`, `handshake`) from these vectors and the sample frames, replacing the seeds
/// (files named `seed-*`) and leaving crash inputs alone. Run by hand after a wire change:
/// `cargo test -p warren-protocol --test golden -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seeds"]
fn write_fuzz_seeds() {
    use bytes::BufMut;
    use std::path::Path;
    use warren_protocol::field_table::put_table;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
    };
    for target in ["frame_decode", "field_table", "handshake"] {
        if let Ok(entries) = std::fs::read_dir(root.join(target)) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("seed-") {
                    std::fs::remove_file(entry.path()).expect("old seed");
                }
            }
        }
    }

    let preface = hex(PREFACE);
    let mut stream = Vec::new();
    for (name, text, _) in vectors() {
        let wire = hex(text);
        write("frame_decode", &format!("golden-{name}"), &wire);
        stream.extend_from_slice(&wire);
    }
    write("frame_decode", "golden-all", &stream);
    let mut samples = Vec::new();
    for frame in common::samples() {
        let name = frame.opcode().name().to_owned();
        let wire = Envelope::new(7, frame).to_bytes();
        write("frame_decode", &format!("sample-{name}"), &wire);
        samples.extend_from_slice(&wire);
    }

    // What a client sends first: the preface, then its first requests.
    write("handshake", "preface-only", &preface);
    write(
        "handshake",
        "declare-bind-publish",
        &[
            preface.clone(),
            hex(QUEUE_DECLARE),
            hex(EXCHANGE_DECLARE),
            hex(QUEUE_BIND),
            hex(PUBLISH),
        ]
        .concat(),
    );
    write(
        "handshake",
        "all-samples",
        &[preface.clone(), samples].concat(),
    );
    write(
        "handshake",
        "version-2",
        &[&client_preface(2)[..], &hex(HEARTBEAT)].concat(),
    );
    write("handshake", "http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");

    for (i, (text, _)) in value_vectors().into_iter().enumerate() {
        let wire = [hex("01 00 00 00 01 00 6b"), hex(text)].concat();
        write("field_table", &format!("value-{i:02}"), &wire);
    }
    let mut rich = BytesMut::new();
    put_table(&mut rich, &common::rich_table());
    write("field_table", "rich-table", &rich);
    let mut props = BytesMut::new();
    common::full_properties().encode(&mut props);
    write("field_table", "full-properties", &props);
    let mut props = BytesMut::new();
    example_properties().encode(&mut props);
    write("field_table", "example-properties", &props);
    let mut empty = BytesMut::new();
    empty.put_u32_le(0);
    write("field_table", "empty-table", &empty);
}
