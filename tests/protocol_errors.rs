//! Bad input gets a clear error, not a crash: garbage, a wrong version, oversized and unknown
//! frames each get an error frame naming the problem, the offending connection closes, and
//! the daemon keeps serving everyone else.

mod common;

use bytes::BytesMut;
use common::{within, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use warren::client::{OutgoingMessage, QueueOptions};
use warren_protocol::{
    client_preface, Envelope, ErrorCode, Frame, FrameCodec, Mechanism, Open, Properties, Publish,
    PROTOCOL_VERSION,
};

/// Reads frames until the server closes the connection; returns them.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<Envelope> {
    let mut codec = FrameCodec::new(u32::MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while let Some(env) = codec.decode(&mut buf).expect("server frames decode") {
            out.push(env);
        }
        let mut chunk = [0u8; 4096];
        let n = within("the server to answer or close", stream.read(&mut chunk))
            .await
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects and completes the handshake, without `Open`; returns the stream after `Hello`.
async fn hello_only(d: &TestDaemon) -> TcpStream {
    let mut s = TcpStream::connect(d.addr()).await.unwrap();
    s.write_all(&client_preface(PROTOCOL_VERSION))
        .await
        .unwrap();
    let env = next_frame(&mut s).await;
    assert!(matches!(env.frame, Frame::Hello(_)), "{env:?}");
    s
}

/// Reads exactly one frame (the server sends nothing unasked during the handshake).
async fn next_frame(s: &mut TcpStream) -> Envelope {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    loop {
        if let Some(env) = codec.decode(&mut buf).unwrap() {
            assert!(buf.is_empty());
            return env;
        }
        let mut chunk = [0u8; 256];
        let n = within("a handshake frame", s.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects, completes the handshake and opens the connection as guest; returns the stream
/// after `Open`'s `Ok`.
async fn handshaken(d: &TestDaemon) -> TcpStream {
    let mut s = hello_only(d).await;
    let open = Frame::Open(Open {
        mechanism: Mechanism::Password,
        user: "guest".into(),
        password: bytes::Bytes::from_static(b"guest"),
        vhost: "/".into(),
    });
    s.write_all(&Envelope::new(1, open).to_bytes())
        .await
        .unwrap();
    let env = next_frame(&mut s).await;
    assert_eq!(env, Envelope::new(1, Frame::Ok));
    s
}

#[tokio::test]
async fn a_second_open_is_an_unexpected_frame_and_the_connection_goes_on() {
    let d = TestDaemon::start();
    let mut s = handshaken(&d).await;
    let open = Frame::Open(Open {
        mechanism: Mechanism::Password,
        user: "guest".into(),
        password: bytes::Bytes::from_static(b"guest"),
        vhost: "/".into(),
    });
    s.write_all(&Envelope::new(2, open).to_bytes())
        .await
        .unwrap();
    let env = next_frame(&mut s).await;
    let Frame::Error(err) = env.frame else {
        panic!("expected an error, got {env:?}");
    };
    assert_eq!(env.request_id, 2);
    assert_eq!(err.code, ErrorCode::UnexpectedFrame.as_u16());
    assert!(err.message.contains("already open"), "{}", err.message);
    // Still open: a heartbeat-free request is answered.
    let purge = Frame::QueuePurge {
        name: "none".into(),
    };
    s.write_all(&Envelope::new(3, purge).to_bytes())
        .await
        .unwrap();
    let env = next_frame(&mut s).await;
    assert_eq!(env.request_id, 3);
}

#[tokio::test]
async fn a_frame_before_open_is_refused_and_the_connection_closes() {
    let d = TestDaemon::start();
    let mut s = hello_only(&d).await;
    let declare = Frame::QueuePurge { name: "q".into() };
    s.write_all(&Envelope::new(3, declare).to_bytes())
        .await
        .unwrap();
    let frames = read_until_closed(&mut s).await;
    let (id, code, message) = error_of(&frames);
    assert_eq!(
        (id, code),
        (0, ErrorCode::AccessRefused.as_u16()),
        "{message}"
    );
    assert!(message.contains("send Open first"), "{message}");
    still_serving(&d).await;
}

fn error_of(frames: &[Envelope]) -> (u64, u16, String) {
    frames
        .iter()
        .find_map(|e| match &e.frame {
            Frame::Error(err) => Some((e.request_id, err.code, err.message.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error frame in {frames:?}"))
}

/// The daemon still does real work for a new client.
async fn still_serving(d: &TestDaemon) {
    let c = d.client().await;
    c.declare_queue("alive", QueueOptions::default())
        .await
        .unwrap();
    assert!(c
        .publish_and_confirm(OutgoingMessage::new("", "alive", "yes"))
        .await
        .unwrap()
        .is_confirmed());
    assert!(c.get("alive", true).await.unwrap().is_some());
}

#[tokio::test]
async fn garbage_instead_of_a_preface_is_refused() {
    let d = TestDaemon::start();
    let mut s = TcpStream::connect(d.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let frames = read_until_closed(&mut s).await;
    let (id, code, msg) = error_of(&frames);
    assert_eq!((id, code), (0, ErrorCode::FrameError.as_u16()));
    assert!(msg.contains("magic"), "{msg}");
    still_serving(&d).await;
}

#[tokio::test]
async fn an_unsupported_version_is_named() {
    let d = TestDaemon::start();
    let mut s = TcpStream::connect(d.addr()).await.unwrap();
    s.write_all(&client_preface(99)).await.unwrap();
    let frames = read_until_closed(&mut s).await;
    let (_, code, msg) = error_of(&frames);
    assert_eq!(code, ErrorCode::UnsupportedVersion.as_u16());
    assert!(msg.contains("99") && msg.contains("version 1"), "{msg}");
    still_serving(&d).await;
}

#[tokio::test]
async fn an_oversized_frame_length_closes_the_connection_with_an_error() {
    let d = TestDaemon::start();
    let mut s = handshaken(&d).await;
    s.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    let frames = read_until_closed(&mut s).await;
    let (id, code, msg) = error_of(&frames);
    assert_eq!((id, code), (0, ErrorCode::FrameError.as_u16()));
    assert!(msg.contains("exceeds max"), "{msg}");
    still_serving(&d).await;
}

#[tokio::test]
async fn an_unknown_opcode_closes_the_connection_with_an_error() {
    let d = TestDaemon::start();
    let mut s = handshaken(&d).await;
    let mut frame = Vec::new();
    frame.extend_from_slice(&9u32.to_le_bytes());
    frame.push(0xee);
    frame.extend_from_slice(&5u64.to_le_bytes());
    s.write_all(&frame).await.unwrap();
    let frames = read_until_closed(&mut s).await;
    let (_, code, msg) = error_of(&frames);
    assert_eq!(code, ErrorCode::FrameError.as_u16());
    assert!(msg.contains("unknown opcode 0xee"), "{msg}");
    still_serving(&d).await;
}

#[tokio::test]
async fn a_truncated_payload_closes_the_connection_with_an_error() {
    let d = TestDaemon::start();
    let mut s = handshaken(&d).await;
    // A QueuePurge (0x24) whose name length says 200 bytes but the frame has 3.
    let mut frame = Vec::new();
    frame.extend_from_slice(&(9u32 + 5).to_le_bytes());
    frame.push(0x24);
    frame.extend_from_slice(&1u64.to_le_bytes());
    frame.extend_from_slice(&200u16.to_le_bytes());
    frame.extend_from_slice(b"abc");
    s.write_all(&frame).await.unwrap();
    let frames = read_until_closed(&mut s).await;
    let (_, code, msg) = error_of(&frames);
    assert_eq!(code, ErrorCode::FrameError.as_u16());
    assert!(msg.contains("truncated"), "{msg}");
    still_serving(&d).await;
}

#[tokio::test]
async fn a_publish_over_the_headroom_gets_content_too_large_and_the_connection_goes_on() {
    let d = TestDaemon::start_with(&["--max-frame-size", "4096"]);
    let mut s = handshaken(&d).await;
    let publish = |id: u64, size: usize| {
        Envelope::new(
            id,
            Frame::Publish(Box::new(Publish {
                exchange: String::new(),
                routing_key: "nowhere".into(),
                mandatory: false,
                no_confirm: false,
                properties: Properties::default(),
                body: vec![b'x'; size].into(),
            })),
        )
        .to_bytes()
    };
    // 3,500 bytes: within the 4,096 frame limit, over 4,096 - 1,024.
    s.write_all(&publish(7, 3_500)).await.unwrap();
    s.write_all(&publish(8, 100)).await.unwrap();
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        if let Some(env) = codec.decode(&mut buf).unwrap() {
            replies.push(env);
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = within("replies", s.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "connection closed; replies so far: {replies:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(replies[0].request_id, 7);
    match &replies[0].frame {
        Frame::Error(e) => {
            assert_eq!(e.code, ErrorCode::ContentTooLarge.as_u16());
            assert_eq!(
                e.message,
                "message body of 3,500 bytes exceeds the server's limit of 3,072; start the \
                 server with --max-frame-size to raise it"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(replies[1].request_id, 8);
    assert!(
        matches!(replies[1].frame, Frame::Confirm(_)),
        "{:?}",
        replies[1]
    );
}

#[tokio::test]
async fn a_fire_and_forget_ack_of_an_unknown_tag_closes_the_connection() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.ack(12345, false).await.unwrap();
    // The next request fails because the server closed the connection, with the reason.
    let err = within("the close", async {
        loop {
            if let Err(e) = c.declare_queue("x", QueueOptions::default()).await {
                return e;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        err.to_string().contains("unknown delivery tag 12345"),
        "{err}"
    );
    still_serving(&d).await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_three_heartbeat_intervals() {
    let d = TestDaemon::start_with(&["--heartbeat-secs", "1"]);
    let mut s = handshaken(&d).await;
    let frames = read_until_closed(&mut s).await;
    assert!(
        frames.iter().any(|f| matches!(f.frame, Frame::Heartbeat)),
        "the server sends heartbeats while idle: {frames:?}"
    );
    let (id, code, _) = error_of(&frames);
    assert_eq!((id, code), (0, ErrorCode::HeartbeatTimeout.as_u16()));
    still_serving(&d).await;
}
