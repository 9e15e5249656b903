//! One client connection: the handshake, then a reader (this task) that decodes frames and
//! calls the broker, and a writer task that encodes the broker's events as frames
//! (`encode.rs`) and batches them onto the socket. A TLS connection ([`run_tls`]) first
//! completes the TLS handshake; after that the code is the same, generic over the stream.
//!
//! Errors are handled by kind, in one place (`reader.rs`): a broker error answers its request
//! and the connection goes on; a frame that cannot be decoded gets an error frame and the
//! connection closes; an I/O error just closes. However the connection ends, the broker's
//! `close_session` runs: consumers stop, unacked deliveries are requeued, exclusive queues go.

pub(crate) mod authorize;
mod encode;
mod reader;
mod refusals;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};
use warren_protocol::{
    handshake, Envelope, ErrorCode, ErrorFrame, Frame, FrameCodec, Hello, PROTOCOL_VERSION,
};

use crate::broker::access::Principal;
use crate::broker::session::{ClientInfo, Door};
use crate::broker::Broker;
use crate::stop::Stop;

/// How long a client has to send its preface, and then its `Open`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings shared by every connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Largest frame the server accepts (advertised in `Hello`).
    pub max_frame_size: u32,
    /// Heartbeat interval; `None` turns heartbeats off.
    pub heartbeat: Option<Duration>,
    /// How long a frame that has started arriving may take to arrive whole; `None` = no
    /// limit. Without it a client can hold a buffer of up to the max frame size forever by
    /// sending all but the last byte.
    pub frame_timeout: Option<Duration>,
    /// Largest encoded properties (headers included) a publish may carry; decoded headers
    /// cost many times their wire size, so this is checked before they are built.
    pub max_header_bytes: u32,
    /// How long the writer may fail to get a single byte onto the socket before the peer is
    /// considered gone and the connection closed; `None` = never.
    pub write_timeout: Option<Duration>,
    /// Idle time after which the kernel probes a silent peer (TCP keepalive); `None` = off.
    /// With heartbeats off and nothing to write, this is what finds a peer that vanished
    /// without a FIN or RST (a pulled cable, a crashed host).
    pub tcp_keepalive: Option<Duration>,
    /// Connections served at once, over every listener (`--max-connections`); 0 = no cap
    /// of the server's own.
    pub max_connections: usize,
}

/// Default `--max-header-bytes`: RabbitMQ's content header must fit in one frame of its
/// default `frame_max`, 128 KiB, so that is its practical limit too.
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 128 * 1024;

/// Default `--frame-timeout-secs`: an 8 MiB frame at 140 KB/s still makes it.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `--tcp-keepalive-secs`: the idle time before the first keepalive probe.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Time between keepalive probes once the idle time has passed.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered keepalive probes after which the kernel drops the connection: a silent peer
/// is found about [`TCP_KEEPALIVE_INTERVAL`] × this after the idle time.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Turns TCP keepalive on for an accepted socket, probing after `idle` of silence every
/// [`TCP_KEEPALIVE_INTERVAL`], [`TCP_KEEPALIVE_PROBES`] times; `None` turns it off. A dead
/// peer then makes the next read fail, and the connection closes as for any lost client.
///
/// # Errors
/// The socket refused an option.
pub fn set_tcp_keepalive(
    socket: &tokio::net::TcpStream,
    idle: Option<Duration>,
) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    match idle {
        None => sock.set_keepalive(false),
        Some(idle) => {
            let params = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(TCP_KEEPALIVE_INTERVAL)
                .with_retries(TCP_KEEPALIVE_PROBES);
            sock.set_tcp_keepalive(&params)
        }
    }
}

/// The write timeout when none is given: two heartbeat intervals, or this with heartbeats off.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

impl ConnectionConfig {
    /// The settings a server uses unless told otherwise, for a frame size and a heartbeat.
    pub fn new(max_frame_size: u32, heartbeat: Option<Duration>) -> Self {
        ConnectionConfig {
            max_frame_size,
            heartbeat,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            write_timeout: Some(default_write_timeout(heartbeat)),
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            max_connections: crate::server::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Two heartbeat intervals (a peer that takes no byte for that long would also have missed
/// heartbeats), or [`DEFAULT_WRITE_TIMEOUT`] with heartbeats off.
pub fn default_write_timeout(heartbeat: Option<Duration>) -> Duration {
    heartbeat.map_or(DEFAULT_WRITE_TIMEOUT, |h| h * 2)
}

/// Serves one plain-TCP client until it closes, fails, or the server shuts down.
pub async fn run(socket: TcpStream, broker: Broker, config: Arc<ConnectionConfig>, shutdown: Stop) {
    let peer = prepare(&socket);
    let peer_ip = socket.peer_addr().ok().map(|a| a.ip());
    // The socket's own halves: no lock between the reader and the writer.
    serve(
        socket,
        (peer, peer_ip, Door::Native),
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
    shutdown: Stop,
) {
    let peer = prepare(&socket);
    let peer_ip = socket.peer_addr().ok().map(|a| a.ip());
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let Some(stream) =
        crate::tls::accept(&acceptor, socket, deadline, &shutdown, &peer, "TLS").await
    else {
        return;
    };
    serve(
        stream,
        (peer, peer_ip, Door::NativeTls),
        broker,
        config,
        shutdown,
        tokio::io::split,
    )
    .await;
}

/// Waits until `socket` has bytes and reads what is there into a fresh buffer of
/// `capacity` (empty at the end of the stream). Nothing is allocated while it waits: an idle
/// connection holds no read buffer. Readiness can be left over from an earlier read that
/// stopped short of draining the socket, so a read that finds nothing waits again.
pub(crate) async fn read_when_ready(
    socket: &tokio::net::tcp::OwnedReadHalf,
    capacity: usize,
) -> std::io::Result<bytes::BytesMut> {
    loop {
        socket.readable().await?;
        let mut buf = bytes::BytesMut::with_capacity(capacity);
        match socket.try_read_buf(&mut buf) {
            Ok(_) => return Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
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
    (peer, peer_ip, door): (String, Option<std::net::IpAddr>, Door),
    broker: Broker,
    config: Arc<ConnectionConfig>,
    shutdown: Stop,
    split: impl FnOnce(S) -> (R, W),
) where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + reader::IdleRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    match handshake(&mut socket, &config).await {
        Ok(()) => {}
        Err(reason) => {
            tracing::info!(%peer, %reason, "handshake refused");
            return;
        }
    }
    let (read_half, mut write_half) = split(socket);
    let codec =
        FrameCodec::new(config.max_frame_size).with_max_header_bytes(config.max_header_bytes);
    let mut frames = FramedRead::new(read_half, codec);
    let user = match open(&mut frames, &mut write_half, &broker, peer_ip).await {
        Ok(user) => user,
        Err(reason) => {
            tracing::info!(%peer, %reason, "connection refused");
            return;
        }
    };
    let (tx, rx) = crate::broker::outbox::outbox();
    let session = broker.new_session(peer.clone(), user.clone(), tx);
    session.set_client(ClientInfo {
        door,
        product: None,
        version: None,
    });
    tracing::info!(%peer, connection = session.id, user = %user.name, vhost = %user.vhost, "connection opened");
    let stop_writer = Stop::new();
    // Cancelled by the writer when it gives up (the peer takes no data, or is gone), so the
    // reader stops too, wherever it waits.
    let writer_gone = Stop::new();
    // Publishes are held to the publish headroom, so every frame built from one fits.
    let out_codec = FrameCodec::new(config.max_frame_size);
    let writer = tokio::spawn(writer::run(
        FramedWrite::new(write_half, out_codec),
        rx,
        session.clone(),
        stop_writer.clone(),
        writer_gone.clone(),
        config.clone(),
    ));
    let stops = reader::Stops {
        shutdown: &shutdown,
        writer_gone: &writer_gone,
    };
    let reason = reader::run(frames, &broker, &session, &config, stops).await;
    broker.close_session(&session).await;
    stop_writer.cancel();
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        // Dropping the handle would leave the task, and the socket, alive.
        abort.abort();
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

/// After `Hello`: waits for the client's `Open` and checks it (PROTOCOL.md §3). Answers `Ok`
/// and returns who logged in, or answers the refusal and returns why; the caller then
/// drops the socket. Frames pipelined behind the `Open` stay buffered in `frames` for the
/// read loop.
async fn open<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
    write: &mut W,
    broker: &Broker,
    peer: Option<std::net::IpAddr>,
) -> Result<Arc<Principal>, String> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let (id, open) = loop {
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Err(_) => return Err("no Open within the handshake timeout".into()),
            Ok(None) => return Err("the client left before Open".into()),
            Ok(Some(Err(e))) => {
                let err = ErrorFrame::new(ErrorCode::FrameError, e.to_string());
                refuse(frames, write, 0, err).await;
                return Err(format!("bad frame before Open: {e}"));
            }
            Ok(Some(Ok(env))) => match env.frame {
                Frame::Heartbeat => {}
                Frame::Open(open) if env.request_id != 0 => break (env.request_id, open),
                other => {
                    let err = ErrorFrame::new(
                        ErrorCode::AccessRefused,
                        "the connection is not open: send Open first",
                    );
                    refuse(frames, write, 0, err).await;
                    return Err(format!("{} before Open", other.opcode().name()));
                }
            },
        }
    };
    match broker.authenticate(&open, peer).await {
        Ok(user) => {
            let ok = Envelope::new(id, Frame::Ok).to_bytes();
            write
                .write_all(&ok)
                .await
                .map_err(|e| format!("writing the Open reply: {e}"))?;
            // TLS buffers what is written; TCP's flush is a no-op.
            write
                .flush()
                .await
                .map_err(|e| format!("writing the Open reply: {e}"))?;
            Ok(user)
        }
        Err(e) => {
            let reason = format!("user '{}' refused: {e}", open.user);
            refuse(frames, write, id, ErrorFrame::new(e.code(), e.to_string())).await;
            Err(reason)
        }
    }
}

/// Sends a refusal, ends the sending side and reads on (bounded) until the client leaves:
/// closing with unread input would reset the connection and could destroy the refusal on
/// its way to the client.
async fn refuse<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
    write: &mut W,
    request_id: u64,
    error: ErrorFrame,
) {
    let bytes = Envelope::new(request_id, Frame::Error(error)).to_bytes();
    if write.write_all(&bytes).await.is_err() {
        return;
    }
    let _ = write.shutdown().await;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, frames.next()).await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accepted loopback socket, as the server gets it.
    async fn accepted() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    #[tokio::test]
    async fn keepalive_is_set_on_an_accepted_socket_with_its_timings_or_turned_off() {
        let (server, _client) = accepted().await;
        let sock = socket2::SockRef::from(&server);
        assert!(!sock.keepalive().expect("read"), "off until asked for");
        set_tcp_keepalive(&server, Some(Duration::from_secs(45))).expect("set");
        assert!(sock.keepalive().expect("read"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("read"),
            Duration::from_secs(45)
        );
        assert_eq!(
            sock.tcp_keepalive_interval().expect("read"),
            TCP_KEEPALIVE_INTERVAL
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("read"),
            TCP_KEEPALIVE_PROBES
        );
        set_tcp_keepalive(&server, None).expect("unset");
        assert!(!sock.keepalive().expect("read"), "0 turns it off");
    }
}
