//! Connecting the client library or the CLI to something that is not a Warren server (an
//! HTTP or AMQP server, or anything else) says so, instead of reporting a frame length read
//! from the other protocol's text.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use warren::client::{Client, ClientError};

/// A one-connection server on 127.0.0.1 that reads the client's 8-byte preface, answers
/// `reply` and closes; returns its address and the thread.
fn impostor(reply: &'static [u8]) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr").to_string();
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        // Read the preface before answering, so closing does not reset the connection with
        // unread data and the client sees the reply.
        let mut preface = [0u8; 8];
        socket
            .read_exact(&mut preface)
            .expect("the client's preface");
        socket.write_all(reply).expect("answering");
        let _ = socket.shutdown(std::net::Shutdown::Write);
        // Wait for the client to close, bounded by the read timeout.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
    });
    (addr, handle)
}

const HTTP_REPLY: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const AMQP_REPLY: &[u8] = b"AMQP\x00\x00\x09\x01";

async fn connect_error(addr: &str) -> ClientError {
    match tokio::time::timeout(Duration::from_secs(20), Client::connect(addr)).await {
        Ok(Ok(_)) => panic!("connected to a server that is not Warren"),
        Ok(Err(e)) => e,
        Err(_) => panic!("connecting did not finish"),
    }
}

#[tokio::test]
async fn the_client_recognises_http_amqp_and_anything_else() {
    for (reply, expected) in [
        (HTTP_REPLY, "answered with HTTP, not the Warren protocol"),
        (AMQP_REPLY, "answered with AMQP, not the Warren protocol"),
        (
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            "did not answer with the Warren protocol handshake",
        ),
        // Too short to be a frame, then the end of the stream.
        (
            &b"\x01\x00"[..],
            "did not answer with the Warren protocol handshake",
        ),
    ] {
        let (addr, server) = impostor(reply);
        let err = connect_error(&addr).await;
        assert!(matches!(err, ClientError::NotWarren { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{addr} {expected}"));
        server.join().expect("impostor thread");
    }
}

/// Runs the CLI against `addr` with a bounded wait.
fn cli(addr: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["queue", "declare", "q", "--server", addr])
        .env_remove("WARREN_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the warren CLI");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CLI did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("CLI output")
}

#[test]
fn the_cli_says_what_answered_in_one_line() {
    for (reply, what) in [(HTTP_REPLY, "HTTP"), (AMQP_REPLY, "AMQP")] {
        let (addr, server) = impostor(reply);
        let out = cli(&addr);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("error: {addr} answered with {what}, not the Warren protocol\n")
        );
        server.join().expect("impostor thread");
    }
}
