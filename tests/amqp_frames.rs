//! The AMQP 0-9-1 listener against raw bytes: the protocol header, the server's
//! `connection.start`, and frames no client library would send (a wrong end octet, an
//! oversized frame, unknown and unimplemented methods, content outside a publish). Each is
//! answered with RabbitMQ's `connection.close`, and the daemon keeps serving others.

// AMQP 0-9-1 is big-endian (network byte order); the workspace lint guards Warren's own
// little-endian protocol.
#![allow(clippy::big_endian_bytes)]

mod common;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use common::{TestDaemon, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A raw AMQP client: a socket and what has been read but not parsed.
struct Raw {
    socket: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(d: &TestDaemon) -> Raw {
        let addr = d.amqp_addr().expect("the AMQP listener is on");
        let socket = TcpStream::connect(addr).await.expect("connect");
        Raw {
            socket,
            buf: Vec::new(),
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, frame: AMQPFrame) {
        let bytes = gen_frame(&frame)(WriteContext::from(Vec::new()))
            .expect("encode")
            .write;
        self.send_bytes(&bytes).await;
    }

    async fn method(&mut self, channel: u16, class: AMQPClass) {
        self.send(AMQPFrame::Method(channel, class)).await;
    }

    /// The next frame from the server; `None` at EOF. Bounded.
    async fn recv(&mut self) -> Option<AMQPFrame> {
        loop {
            if !self.buf.is_empty() {
                if let Ok((rest, frame)) = parse_frame(self.buf.as_slice()) {
                    let used = self.buf.len() - rest.len();
                    self.buf.drain(..used);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.socket.read(&mut chunk))
                .await
                .expect("the server answered in time")
                .unwrap_or(0);
            if n == 0 {
                assert!(self.buf.is_empty(), "EOF inside a frame: {:?}", self.buf);
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next method, skipping heartbeats.
    async fn recv_method(&mut self) -> (u16, AMQPClass) {
        loop {
            match self.recv().await {
                Some(AMQPFrame::Method(channel, class)) => return (channel, class),
                Some(AMQPFrame::Heartbeat) => {}
                other => panic!("expected a method, got {other:?}"),
            }
        }
    }

    /// Waits for the server's `connection.close`, answers it and expects EOF; returns
    /// its reply code and text.
    async fn expect_close(&mut self) -> (u16, String) {
        let (channel, method) = self.recv_method().await;
        let AMQPClass::Connection(connection::AMQPMethod::Close(close)) = method else {
            panic!("expected connection.close, got {method:?}");
        };
        assert_eq!(channel, 0);
        self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        )
        .await;
        assert_eq!(self.recv().await, None, "the server closes after close-ok");
        (close.reply_code, close.reply_text.to_string())
    }

    /// Header, start, start-ok (PLAIN guest), tune, tune-ok, open "/", and channel 1.
    async fn open(d: &TestDaemon) -> Raw {
        let mut raw = Raw::connect(d).await;
        raw.send_bytes(HEADER).await;
        let (_, start) = raw.recv_method().await;
        assert!(matches!(
            start,
            AMQPClass::Connection(connection::AMQPMethod::Start(_))
        ));
        raw.start_ok(FieldTable::default()).await;
        let (_, tune) = raw.recv_method().await;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = tune else {
            panic!("expected tune, got {tune:?}");
        };
        raw.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            })),
        )
        .await;
        raw.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        let (_, open_ok) = raw.recv_method().await;
        assert!(
            matches!(
                open_ok,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
            ),
            "{open_ok:?}"
        );
        raw.method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        let (ch, open_ok) = raw.recv_method().await;
        assert_eq!(ch, 1);
        assert!(matches!(
            open_ok,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
        ));
        raw
    }

    async fn start_ok(&mut self, client_properties: FieldTable) {
        self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: LongString::from(b"\0guest\0guest".to_vec()),
                locale: "en_US".into(),
            })),
        )
        .await;
    }
}

/// The daemon still serves a whole handshake after whatever a test did to it.
async fn still_serving(d: &TestDaemon) {
    let mut raw = Raw::open(d).await;
    raw.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    let (_, close_ok) = raw.recv_method().await;
    assert!(matches!(
        close_ok,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
    ));
}

#[tokio::test]
async fn a_wrong_protocol_header_is_answered_with_amqp_0_9_1s_and_closed() {
    let d = TestDaemon::start();
    for header in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"AMQP\x01\x01\x00\x0a"] {
        let mut raw = Raw::connect(&d).await;
        raw.send_bytes(header).await;
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, raw.socket.read_to_end(&mut answer))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(answer, HEADER, "for {header:?}");
    }
    still_serving(&d).await;
}

#[tokio::test]
async fn connection_start_carries_rabbitmqs_properties_and_capabilities() {
    let d = TestDaemon::start();
    let mut raw = Raw::connect(&d).await;
    raw.send_bytes(HEADER).await;
    let (_, start) = raw.recv_method().await;
    let AMQPClass::Connection(connection::AMQPMethod::Start(start)) = start else {
        panic!("expected start, got {start:?}");
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
    assert!(mechanisms.split(' ').any(|m| m == "PLAIN"), "{mechanisms}");
    assert!(
        mechanisms.split(' ').any(|m| m == "AMQPLAIN"),
        "{mechanisms}"
    );
    let props = start.server_properties.inner();
    assert_eq!(
        props.get("product"),
        Some(&AMQPValue::LongString("Warren".into()))
    );
    let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
        panic!("no capabilities: {props:?}");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "{cap}"
        );
    }
}

#[tokio::test]
async fn a_wrong_frame_end_octet_is_a_frame_error_and_others_are_still_served() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    // channel.open on channel 2, its end octet 0x00 instead of 0xCE.
    raw.send_bytes(&[1, 0, 2, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0x00])
        .await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 501, "{text}");
    assert!(text.starts_with("FRAME_ERROR - "), "{text}");
    still_serving(&d).await;
}

#[tokio::test]
async fn a_frame_larger_than_frame_max_is_refused_from_its_header() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    // A body frame announcing 1 MiB: refused before any of it is sent.
    raw.send_bytes(&[3, 0, 1, 0, 0x10, 0, 0]).await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 501, "{text}");
    assert!(text.contains("frame_max"), "{text}");
    still_serving(&d).await;
}

#[tokio::test]
async fn before_tune_ok_frames_are_held_to_the_minimum_frame_size() {
    let d = TestDaemon::start();
    let mut raw = Raw::connect(&d).await;
    raw.send_bytes(HEADER).await;
    let _start = raw.recv_method().await;
    let mut big = FieldTable::default();
    big.insert(
        "padding".into(),
        AMQPValue::LongString(vec![b'x'; 8192].into()),
    );
    raw.start_ok(big).await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 501, "{text}");
    still_serving(&d).await;
}

#[tokio::test]
async fn unknown_and_unimplemented_methods_are_refused_by_name() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    // Class 99, method 7: no such method in 0-9-1.
    raw.send_bytes(&[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 7, 0xCE])
        .await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 540, "{text}");
    assert!(text.contains("class 99, method 7"), "{text}");

    let mut raw = Raw::open(&d).await;
    raw.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: "token".into(),
                reason: "refresh".into(),
            },
        )),
    )
    .await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 540, "{text}");
    assert!(text.contains("connection.update-secret"), "{text}");
    still_serving(&d).await;
}

fn publish_method() -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: "q".into(),
        mandatory: false,
        immediate: false,
    }))
}

#[tokio::test]
async fn a_method_on_the_channel_before_its_content_is_complete_is_505() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    raw.method(1, publish_method()).await;
    raw.send(AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: 10,
            properties: basic::AMQPProperties::default(),
        },
    ))
    .await;
    raw.send(AMQPFrame::Body(1, b"hello".to_vec())).await;
    raw.method(1, publish_method()).await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 505, "{text}");
    still_serving(&d).await;
}

#[tokio::test]
async fn deeply_nested_headers_in_a_content_header_are_refused_before_parsing() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    raw.method(1, publish_method()).await;
    // class 60, weight 0, body size 0, flags: headers only, then the table.
    let depth = 15_000;
    let mut table: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let inner = table;
        table = vec![1, b'k', b'F'];
        table.extend_from_slice(&u32::try_from(inner.len()).expect("small").to_be_bytes());
        table.extend_from_slice(&inner);
    }
    let mut payload: Vec<u8> = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
    payload.extend_from_slice(&u32::try_from(table.len()).expect("small").to_be_bytes());
    payload.extend_from_slice(&table);
    let mut frame = vec![2, 0, 1];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    raw.send_bytes(&frame).await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 501, "{text}");
    assert!(text.contains("nest deeper"), "{text}");
    still_serving(&d).await;
}

#[tokio::test]
async fn a_method_on_a_channel_never_opened_is_a_channel_error() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    raw.method(
        5,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 504, "{text}");
    assert!(text.contains("expected 'channel.open'"), "{text}");
}

#[tokio::test]
async fn content_outside_a_publish_is_an_unexpected_frame() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    raw.send(AMQPFrame::Body(1, b"hello".to_vec())).await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 505, "{text}");
    still_serving(&d).await;
}

#[tokio::test]
async fn channels_close_one_at_a_time_and_can_be_reopened() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    let close = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    }));
    raw.method(1, close.clone()).await;
    assert_eq!(
        raw.recv_method().await,
        (
            1,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))
        )
    );
    raw.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    assert_eq!(
        raw.recv_method().await,
        (
            1,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {}))
        )
    );
    // Opening it again while open is a connection error, as in RabbitMQ.
    raw.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 504, "{text}");
    assert!(text.contains("second 'channel.open'"), "{text}");
}

#[tokio::test]
async fn a_client_that_stops_sending_heartbeats_is_dropped() {
    let d = TestDaemon::start_with(&["--heartbeat-secs", "1"]);
    let mut raw = Raw::connect(&d).await;
    raw.send_bytes(HEADER).await;
    let _start = raw.recv_method().await;
    raw.start_ok(FieldTable::default()).await;
    let _tune = raw.recv_method().await;
    raw.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 1,
        })),
    )
    .await;
    raw.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    let _open_ok = raw.recv_method().await;
    // The server sends its own heartbeats, and then, hearing nothing, closes: the reads
    // below see heartbeats and then EOF (each read is bounded by WAIT).
    let mut heartbeats = 0;
    loop {
        match raw.recv().await {
            Some(AMQPFrame::Heartbeat) => heartbeats += 1,
            None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
        assert!(heartbeats < 100, "never closed");
    }
    assert!(heartbeats >= 1, "the server sent heartbeats");
}

#[tokio::test]
async fn deeply_nested_client_properties_do_not_bring_the_server_down() {
    let d = TestDaemon::start();
    let mut raw = Raw::connect(&d).await;
    raw.send_bytes(HEADER).await;
    let _start = raw.recv_method().await;
    // start-ok whose client properties nest tables as deep as the 4 KiB pre-tune limit
    // allows: key "k", type 'F', length, then the next level.
    let depth = 560;
    let mut table: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let inner = table;
        table = vec![1, b'k', b'F'];
        table.extend_from_slice(&u32::try_from(inner.len()).expect("small").to_be_bytes());
        table.extend_from_slice(&inner);
    }
    let mut args: Vec<u8> = vec![0, 10, 0, 11];
    args.extend_from_slice(&u32::try_from(table.len()).expect("small").to_be_bytes());
    args.extend_from_slice(&table);
    args.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N']);
    let response = b"\0guest\0guest";
    args.extend_from_slice(&u32::try_from(response.len()).expect("small").to_be_bytes());
    args.extend_from_slice(response);
    args.extend_from_slice(&[5, b'e', b'n', b'_', b'U', b'S']);
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&u32::try_from(args.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&args);
    frame.push(0xCE);
    assert!(frame.len() <= 4096, "{}", frame.len());
    raw.send_bytes(&frame).await;
    // Refused before the parser recurses into it (which overflowed the stack and took the
    // daemon down), and the daemon serves on.
    let (code, text) = raw.expect_close().await;
    assert_eq!(code, 501, "{text}");
    assert!(text.contains("nest deeper"), "{text}");
    still_serving(&d).await;
}

/// Publisher confirms are coalesced as RabbitMQ coalesces them: a burst of publishes is
/// confirmed by fewer `basic.ack`s than publishes, some with `multiple=true`, and a
/// `multiple` ack never covers a sequence number before it is confirmed: at the end every
/// number is confirmed exactly once.
#[tokio::test]
async fn a_burst_of_confirmed_publishes_is_acked_with_multiple_acks_covering_each_once() {
    use amq_protocol::protocol::{confirm, queue};
    const BURST: u64 = 500;
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    raw.method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            durable: true,
            ..queue::Declare::default()
        })),
    )
    .await;
    let (_, ok) = raw.recv_method().await;
    assert!(
        matches!(ok, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
        "{ok:?}"
    );
    raw.method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await;
    let (_, ok) = raw.recv_method().await;
    assert!(
        matches!(ok, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
        "{ok:?}"
    );
    // The whole burst in one write, as a pipelining client sends it.
    let mut burst = Vec::new();
    for i in 0..BURST {
        for frame in [
            AMQPFrame::Method(1, publish_method()),
            AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: 8,
                    properties: basic::AMQPProperties::default().with_delivery_mode(2),
                },
            ),
            AMQPFrame::Body(1, i.to_be_bytes().to_vec()),
        ] {
            burst.extend(
                gen_frame(&frame)(WriteContext::from(Vec::new()))
                    .expect("encode")
                    .write,
            );
        }
    }
    raw.send_bytes(&burst).await;
    let mut confirmed = std::collections::BTreeSet::new();
    let (mut frames, mut multiples) = (0, 0);
    while (confirmed.len() as u64) < BURST {
        assert!(frames < BURST, "more acks than publishes");
        let (channel, method) = raw.recv_method().await;
        let AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) = method else {
            panic!("expected basic.ack, got {method:?}");
        };
        assert_eq!(channel, 1);
        assert!((1..=BURST).contains(&ack.delivery_tag), "{ack:?}");
        assert!(
            !confirmed.contains(&ack.delivery_tag),
            "{} confirmed twice",
            ack.delivery_tag
        );
        frames += 1;
        if ack.multiple {
            multiples += 1;
            confirmed.extend(1..=ack.delivery_tag);
        } else {
            confirmed.insert(ack.delivery_tag);
        }
    }
    assert_eq!(confirmed, (1..=BURST).collect());
    assert!(
        multiples > 0 && frames < BURST,
        "{frames} acks for {BURST} publishes, {multiples} with multiple"
    );
}

#[tokio::test]
async fn an_ack_of_an_unknown_delivery_tag_closes_the_channel_with_406() {
    let d = TestDaemon::start();
    let mut raw = Raw::open(&d).await;
    raw.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 42,
            multiple: false,
        })),
    )
    .await;
    let (channel, method) = raw.recv_method().await;
    let AMQPClass::Channel(channel::AMQPMethod::Close(close)) = method else {
        panic!("expected channel.close, got {method:?}");
    };
    assert_eq!((channel, close.reply_code), (1, 406), "{close:?}");
    assert!(close.reply_text.as_str().contains("42"), "{close:?}");
    still_serving(&d).await;
}

#[tokio::test]
async fn deeply_nested_arguments_in_a_handshake_method_do_not_bring_the_server_down() {
    // The handshake parsed every method on channel 0 in full and checked the nesting only
    // of start-ok's client properties: an exchange.declare (or a connection.start) sent in
    // start-ok's place, its table nested deep, overflowed the parser's stack and took the
    // daemon down, before any login. Found by the amqp_frames fuzz target's design.
    let d = TestDaemon::start();
    let depth = 560;
    let mut table: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let inner = table;
        table = vec![1, b'k', b'F'];
        table.extend_from_slice(&u32::try_from(inner.len()).expect("small").to_be_bytes());
        table.extend_from_slice(&inner);
    }
    let table_with_len = {
        let mut t = u32::try_from(table.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        t.extend_from_slice(&table);
        t
    };
    // exchange.declare: ticket, exchange "x", type "direct", bits, then the arguments.
    let mut declare: Vec<u8> = vec![0, 40, 0, 10, 0, 0, 1, b'x', 6];
    declare.extend_from_slice(b"direct");
    declare.push(0);
    declare.extend_from_slice(&table_with_len);
    // connection.start: version 0-9, then the server properties, mechanisms and locales.
    let mut start: Vec<u8> = vec![0, 10, 0, 10, 0, 9];
    start.extend_from_slice(&table_with_len);
    start.extend_from_slice(&[0, 0, 0, 5]);
    start.extend_from_slice(b"PLAIN");
    start.extend_from_slice(&[0, 0, 0, 5]);
    start.extend_from_slice(b"en_US");
    for args in [declare, start] {
        let mut raw = Raw::connect(&d).await;
        raw.send_bytes(HEADER).await;
        let _start = raw.recv_method().await;
        let mut frame = vec![1, 0, 0];
        frame.extend_from_slice(&u32::try_from(args.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(&args);
        frame.push(0xCE);
        assert!(frame.len() <= 4096, "{}", frame.len());
        raw.send_bytes(&frame).await;
        let (code, text) = raw.expect_close().await;
        assert_eq!(code, 501, "{text}");
        assert!(text.contains("nest deeper"), "{text}");
        still_serving(&d).await;
    }
}
