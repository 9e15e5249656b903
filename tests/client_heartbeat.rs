//! The client library gives up on a server that goes silent: with heartbeats on, three
//! intervals without a frame end the connection with `HEARTBEAT_TIMEOUT` (PROTOCOL.md §11).
//! The server here is a fake on 127.0.0.1 that completes the handshake and then says nothing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use warren::client::{Client, ClientError};
use warren_protocol::{
    Envelope, ErrorCode, Frame, Hello, DEFAULT_MAX_FRAME_SIZE_BYTES, PROTOCOL_VERSION,
};

/// Accepts one client, answers its preface with a `Hello` offering `heartbeat_ms` and its
/// `Open` with `Ok`, then sends nothing more until the client goes (bounded).
fn silent_server(heartbeat_ms: u32) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr").to_string();
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut preface = [0u8; 8];
        socket
            .read_exact(&mut preface)
            .expect("the client's preface");
        let hello = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE_BYTES,
            heartbeat_ms,
            server: "silent".into(),
        });
        socket
            .write_all(&Envelope::new(0, hello).to_bytes())
            .expect("Hello");
        let mut len = [0u8; 4];
        socket.read_exact(&mut len).expect("Open's length");
        let mut open = vec![0u8; u32::from_le_bytes(len) as usize];
        socket.read_exact(&mut open).expect("Open");
        let request_id = u64::from_le_bytes(open[1..9].try_into().expect("8 bytes"));
        socket
            .write_all(&Envelope::new(request_id, Frame::Ok).to_bytes())
            .expect("Ok");
        // Silent from here on: read (and drop) what the client sends until it closes.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
    });
    (addr, handle)
}

#[tokio::test]
async fn a_silent_server_is_given_up_with_heartbeat_timeout() {
    let (addr, server) = silent_server(100);
    let client = tokio::time::timeout(Duration::from_secs(20), Client::connect(&addr))
        .await
        .expect("connecting finished")
        .expect("connected");
    // Bounded: three 100 ms intervals, noticed within a quarter of that late.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !client.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open after 20 s of silence"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match client.qos(1).await {
        Err(ClientError::Closed { code, reason }) => {
            assert_eq!(code, ErrorCode::HeartbeatTimeout.as_u16(), "{reason}");
        }
        other => panic!("expected the connection closed by the heartbeat timeout, got {other:?}"),
    }
    drop(client);
    server.join().expect("the fake server");
}
