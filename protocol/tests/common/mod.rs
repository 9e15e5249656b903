//! Helpers shared by the protocol's integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use warren_protocol::{
    Ack, Admin, Cancel, Close, Confirm, Consume, ConsumerCancelled, ConsumerTag, Deliver,
    ErrorFrame, ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeKind, FieldTable,
    FieldValue, Frame, Get, GetOk, Hello, Mechanism, Nack, Open, Properties, Publish, Qos,
    QueueBind, QueueDeclare, QueueDeclareOk, QueueDelete, Reject, Return,
};

/// A table using every value tag, nested three levels deep.
pub fn rich_table() -> FieldTable {
    let mut inner = FieldTable::new();
    inner.insert("depth".into(), FieldValue::Int(3));
    inner.insert(
        "list".into(),
        FieldValue::List(vec![
            FieldValue::Bool(false),
            FieldValue::Bytes(Bytes::from_static(b"\x00\xff")),
        ]),
    );
    let mut t = FieldTable::new();
    t.insert("s".into(), FieldValue::String("värde ✓".into()));
    t.insert("i".into(), FieldValue::Int(-42));
    t.insert("f".into(), FieldValue::Float(-0.125));
    t.insert("t".into(), FieldValue::Bool(true));
    t.insert(
        "b".into(),
        FieldValue::Bytes(Bytes::from_static(&[1, 2, 3])),
    );
    t.insert(
        "l".into(),
        FieldValue::List(vec![FieldValue::Int(1), FieldValue::Map(inner.clone())]),
    );
    t.insert("m".into(), FieldValue::Map(inner));
    t.insert("v".into(), FieldValue::Void);
    t.insert("i8".into(), FieldValue::I8(-8));
    t.insert("u8".into(), FieldValue::U8(8));
    t.insert("i16".into(), FieldValue::I16(-16));
    t.insert("u16".into(), FieldValue::U16(16));
    t.insert("i32".into(), FieldValue::I32(-32));
    t.insert("u32".into(), FieldValue::U32(32));
    t.insert("u64".into(), FieldValue::U64(u64::MAX));
    t.insert("f32".into(), FieldValue::F32(0.25));
    t.insert(
        "dec".into(),
        FieldValue::Decimal {
            scale: 2,
            value: -1234,
        },
    );
    t.insert("ts".into(), FieldValue::Timestamp(1_700_000_000));
    t
}

/// Properties with every optional field set.
pub fn full_properties() -> Properties {
    Properties {
        message_id: Some("msg-1".into()),
        correlation_id: Some("corr-ü".into()),
        reply_to: Some("replies".into()),
        content_type: Some("application/json".into()),
        content_encoding: Some("gzip".into()),
        timestamp: Some(1_700_000_000_000),
        expiration: Some(60_000),
        priority: Some(9),
        persistent: true,
        headers: rich_table().into(),
        kind: Some("order.created".into()),
        user_id: Some("guest".into()),
        app_id: Some("shop".into()),
    }
}

/// One frame of every variant, with every optional part filled in.
pub fn samples() -> Vec<Frame> {
    let body = Bytes::from_static(b"{\"hello\":\"world\"}");
    vec![
        Frame::Hello(Hello {
            version: 1,
            max_frame_size: 8 * 1024 * 1024,
            heartbeat_ms: 30_000,
            server: "warren/0.1.0".into(),
        }),
        Frame::Heartbeat,
        Frame::Close(Close {
            code: 200,
            reason: "bye".into(),
        }),
        Frame::CloseOk,
        Frame::Error(ErrorFrame {
            code: 404,
            message: "no queue 'jobs'".into(),
        }),
        Frame::Ok,
        Frame::Blocked {
            reason: "disk alarm".into(),
        },
        Frame::Unblocked,
        Frame::Open(Open {
            mechanism: Mechanism::Password,
            user: "guest".into(),
            password: Bytes::from_static(b"gu\xc3\xa9st"),
            vhost: "/prod".into(),
        }),
        Frame::ExchangeDeclare(ExchangeDeclare {
            name: "logs".into(),
            kind: ExchangeKind::Headers,
            durable: true,
            passive: true,
            auto_delete: true,
            internal: true,
            arguments: rich_table(),
        }),
        Frame::ExchangeDelete(ExchangeDelete {
            name: "logs".into(),
            if_unused: true,
        }),
        Frame::QueueDeclare(QueueDeclare {
            name: "jobs".into(),
            durable: true,
            exclusive: true,
            auto_delete: true,
            passive: true,
            arguments: rich_table(),
        }),
        Frame::QueueDeclareOk(QueueDeclareOk {
            name: "amq.gen-1".into(),
            message_count: 12,
            consumer_count: 2,
        }),
        Frame::QueueDelete(QueueDelete {
            name: "jobs".into(),
            if_unused: true,
            if_empty: true,
        }),
        Frame::QueueDeleteOk { message_count: 5 },
        Frame::QueuePurge {
            name: "jobs".into(),
        },
        Frame::QueuePurgeOk { message_count: 7 },
        Frame::ExchangeBind(ExchangeBind {
            destination: "audit".into(),
            source: "logs".into(),
            routing_key: "app.#".into(),
            arguments: rich_table(),
        }),
        Frame::ExchangeUnbind(ExchangeBind {
            destination: "audit".into(),
            source: "logs".into(),
            routing_key: "app.#".into(),
            arguments: rich_table(),
        }),
        Frame::QueueBind(QueueBind {
            queue: "jobs".into(),
            exchange: "logs".into(),
            routing_key: "app.#".into(),
            arguments: rich_table(),
        }),
        Frame::QueueUnbind(QueueBind {
            queue: "jobs".into(),
            exchange: "logs".into(),
            routing_key: "app.#".into(),
            arguments: rich_table(),
        }),
        Frame::Publish(Box::new(Publish {
            exchange: "logs".into(),
            routing_key: "app.start".into(),
            mandatory: true,
            no_confirm: false,
            properties: full_properties(),
            body: body.clone(),
        })),
        Frame::Confirm(Confirm::Ack),
        Frame::Confirm(Confirm::Duplicate),
        Frame::Confirm(Confirm::Nack {
            code: 506,
            reason: "queue full".into(),
        }),
        Frame::Return(Box::new(Return {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "logs".into(),
            routing_key: "nowhere".into(),
            properties: full_properties(),
            body: body.clone(),
        })),
        Frame::Qos(Qos { prefetch_count: 10 }),
        Frame::Consume(Consume {
            queue: "jobs".into(),
            consumer_tag: "c1".into(),
            no_ack: true,
            exclusive: true,
            arguments: rich_table(),
        }),
        Frame::ConsumeOk(ConsumerTag {
            consumer_tag: "c1".into(),
        }),
        Frame::Cancel(Cancel {
            consumer_tag: "c1".into(),
            keep_unacked: true,
        }),
        Frame::ConsumerCancelled(ConsumerCancelled {
            consumer_tag: "c1".into(),
            code: 404,
            reason: "queue deleted".into(),
        }),
        Frame::Deliver(Box::new(Deliver {
            consumer_tag: "c1".into(),
            delivery_tag: 42,
            redelivered: true,
            delivery_count: 2,
            acquired_count: 3,
            stream_offset: Some(1_000_000),
            exchange: "logs".into(),
            routing_key: "app.start".into(),
            properties: full_properties(),
            body: body.clone(),
        })),
        Frame::Get(Get {
            queue: "jobs".into(),
            no_ack: true,
        }),
        Frame::GetOk(Box::new(GetOk {
            delivery_tag: 43,
            redelivered: true,
            delivery_count: 1,
            acquired_count: 4,
            message_count: 99,
            exchange: "".into(),
            routing_key: "jobs".into(),
            properties: full_properties(),
            body,
        })),
        Frame::GetEmpty,
        Frame::Ack(Ack {
            delivery_tag: 42,
            multiple: true,
        }),
        Frame::Nack(Nack {
            delivery_tag: 42,
            multiple: true,
            requeue: true,
            delay_ms: 1500,
        }),
        Frame::Reject(Reject {
            delivery_tag: 42,
            requeue: true,
        }),
        Frame::Admin(Admin {
            command: "queue.list".into(),
            arguments: rich_table(),
        }),
        Frame::AdminOk {
            body: Bytes::from_static(br#"[{"name":"jobs"}]"#),
        },
    ]
}

/// The body of a frame whose last field is a message body (everything left in the frame).
pub fn body_of(frame: &Frame) -> Option<&Bytes> {
    match frame {
        Frame::Publish(p) => Some(&p.body),
        Frame::Return(r) => Some(&r.body),
        Frame::Deliver(d) => Some(&d.body),
        Frame::GetOk(g) => Some(&g.body),
        Frame::AdminOk { body } => Some(body),
        _ => None,
    }
}

/// `frame` with its body replaced; `frame` must be one of the body-carrying variants.
pub fn with_body(frame: &Frame, body: Bytes) -> Frame {
    let mut frame = frame.clone();
    match &mut frame {
        Frame::Publish(p) => p.body = body,
        Frame::Return(r) => r.body = body,
        Frame::Deliver(d) => d.body = body,
        Frame::GetOk(g) => g.body = body,
        Frame::AdminOk { body: b } => *b = body,
        other => panic!("{other:?} carries no body"),
    }
    frame
}

/// Parses hex text, ignoring whitespace.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {text:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("bad hex {s:?}"))
        })
        .collect()
}

/// Formats bytes as lower-case hex, space-separated.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
