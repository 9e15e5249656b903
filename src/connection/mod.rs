//! One client connection: the handshake, then a reader (this task) that decodes frames and
//! calls the broker, and a writer task that encodes the broker's events as frames
//! (`encode.rs`) and batches them onto the socket. A TLS connection ([`run_tls`]) first
//! completes the TLS handshake; after that the code is the same, generic over the stream.
//!
//! Errors are handled by kind, in one place (`reader.rs`): a broker error answers its request
//! and the connection goes on; a frame that cannot be decoded gets an error frame and the
//! connection closes; an I/O error just closes. However the connection ends, the broker's
//! `close_session` runs: consumers stop, unacked deliveries are requeued, exclusive queues go.

mod encode;
mod reader;
mod refusals;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use warren_protocol::{
    handshake, Envelope, ErrorCode, ErrorFrame, Frame, FrameCodec, Hello, PROTOCOL_VERSION,
};

use crate::broker::Broker;

/// How long a client has to send its preface.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings shared by every connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Largest frame the server accepts (advertised in `Hello`).
    pub max_frame_size: u32,
    /// Heartbeat interval; `None` turns heartbeats off.
    pub heartbeat: Option<Duration>,
}

/// Serves one plain-TCP client until it closes, fails, or the server shuts down.
pub async fn run(
    socket: TcpStream,
    broker: Broker,
    config: Arc<ConnectionConfig>,
    shutdown: CancellationToken,
) {
    let peer = prepare(&socket);
    // The socket's own halves: no lock between the reader and the writer.
    serve(
        socket,
        peer,
        broker,
        config,
        shutdown,
        TcpStream::into_split,
    )
    .await;
}

/// Serves one client of the TLS listener: the TLS handshake (bounded like the preface), then
/// as [`run`].
pub async fn run_tls(
    socket: TcpStream,
    acceptor: TlsAcceptor,
    broker: Broker,
    config: Arc<ConnectionConfig>,
    shutdown: CancellationToken,
) {
    let peer = prepare(&socket);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // A plain client on the TLS port lands here: rustls answers its preface with an
            // alert and closes.
            tracing::info!(%peer, reason = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no TLS handshake within the handshake timeout");
            return;
        }
    };
    serve(stream, peer, broker, config, shutdown, tokio::io::split).await;
}

/// Turns Nagle's algorithm off (frames are batched already; replies must not wait) and
/// names the peer for the logs.
fn prepare(socket: &TcpStream) -> String {
    let _ = socket.set_nodelay(true);
    socket
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string())
}

/// The connection proper, over any byte stream. `split` gives the reader and writer halves;
/// being generic (not boxed), the plain-TCP path compiles to what it was before TLS.
async fn serve<S, R, W>(
    mut socket: S,
    peer: String,
    broker: Broker,
    config: Arc<ConnectionConfig>,
    shutdown: CancellationToken,
    split: impl FnOnce(S) -> (R, W),
) where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    match handshake(&mut socket, &config).await {
        Ok(()) => {}
        Err(reason) => {
            tracing::info!(%peer, %reason, "handshake refused");
            return;
        }
    }
    let (read_half, write_half) = split(socket);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let session = broker.new_session(peer.clone(), tx);
    tracing::info!(%peer, connection = session.id, "connection opened");
    let stop_writer = CancellationToken::new();
    // Publishes are held to the publish headroom, so every frame built from one fits.
    let out_codec = FrameCodec::new(config.max_frame_size);
    let writer = tokio::spawn(writer::run(
        FramedWrite::new(write_half, out_codec),
        rx,
        session.clone(),
        stop_writer.clone(),
        config.heartbeat,
    ));
    let frames = FramedRead::new(read_half, FrameCodec::new(config.max_frame_size));
    let reason = reader::run(frames, &broker, &session, &config, &shutdown).await;
    broker.close_session(&session).await;
    stop_writer.cancel();
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        tracing::warn!(%peer, "connection writer did not finish in time");
    }
    tracing::info!(%peer, connection = session.id, reason = %reason, "connection closed");
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    config: &ConnectionConfig,
) -> Result<(), String> {
    let mut preface = [0u8; handshake::PREFACE_BYTES];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.read_exact(&mut preface)).await {
        Err(_) => return Err("no preface within the handshake timeout".into()),
        Ok(Err(e)) => return Err(format!("reading the preface: {e}")),
        Ok(Ok(_)) => {}
    }
    let refusal = match handshake::parse_client_preface(preface) {
        Err(e) => Some(ErrorFrame::new(ErrorCode::FrameError, e.to_string())),
        Ok(v) if v != PROTOCOL_VERSION => Some(ErrorFrame::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {v} is not supported; this server speaks version {PROTOCOL_VERSION}"),
        )),
        Ok(_) => None,
    };
    let reply = match &refusal {
        Some(err) => Frame::Error(err.clone()),
        None => Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            max_frame_size: config.max_frame_size,
            heartbeat_ms: config
                .heartbeat
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            server: format!("warren {}", env!("CARGO_PKG_VERSION")),
        }),
    };
    let bytes = Envelope::new(0, reply).to_bytes();
    socket
        .write_all(&bytes)
        .await
        .map_err(|e| format!("writing the handshake reply: {e}"))?;
    match refusal {
        Some(err) => {
            let _ = socket.shutdown().await;
            Err(err.message)
        }
        None => Ok(()),
    }
}
