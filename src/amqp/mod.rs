//! The AMQP 0-9-1 front door (`serve --amqp-listen`, docs/amqp.md): RabbitMQ's protocol on
//! the same broker core, users, permissions and limits as Warren's own.
//!
//! One task per connection reads and dispatches frames; a writer task (`writer`) owns the
//! socket's sending half, batches what is queued for it, sends heartbeats when idle and
//! gives up on a peer that takes no data within the write timeout, as the native
//! connection's writer does. Frames are cut from the stream by `codec` and their methods
//! decoded and encoded by `amq-protocol` (docs/decisions.md, "AMQP 0-9-1 front door").
//!
//! The connection follows RabbitMQ step by step (`handshake`): protocol header (any other
//! header is answered with ours, then the socket closes), `start` / `start-ok` (SASL PLAIN or
//! AMQPLAIN, checked by [`Broker::login`], the native login's own path, argon2 on its
//! dedicated threads and the same failure delay), `tune` / `tune-ok`, `open` (the virtual
//! host and the user's permissions there, [`Broker::enter_vhost`]), then channels. A
//! connection error is a `connection.close` with RabbitMQ's reply code and text; the server
//! then stops reading methods and waits, bounded, for the client to go.
//!
//! Inside channels, exchange and queue methods run on the broker's topology path
//! (`topology`); a refusal with a code below 500 closes the channel only, as in RabbitMQ.
//! The `basic.*` methods are in `messaging`; `basic.publish` content is assembled per
//! channel (`content`) and published on the native door's path; what the broker answers
//! (confirms, returns, alarms) is written by the event task (`events`). Transactions
//! (`tx.*`) and `basic.recover` are in `transaction`. Every other method is refused by name
//! with 540 NOT_IMPLEMENTED, its arguments never decoded.

mod codec;
mod content;
mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod handshake;
mod messaging;
mod topology;
mod transaction;
mod wire;
mod writer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, confirm, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::broker::access::{Principal, AUTH_FAILED};
use crate::broker::event::Event;
use crate::broker::session::{ClientInfo, Door, Session};
use crate::broker::Broker;
use crate::connection::authorize::{authorize, PublishGrants};
use crate::connection::ConnectionConfig;
use crate::error::BrokerError;
use crate::stop::Stop;
pub use codec::PROTOCOL_HEADER;
use codec::{FrameError, RawFrame};
use warren_protocol::{ErrorCode, Frame, Publish};
use writer::Out;

/// Channels a connection may open, offered in `tune` (RabbitMQ's default).
pub const CHANNEL_MAX: u16 = 2047;

/// Largest frame, offered in `tune` (RabbitMQ's default, 128 KiB); a client may ask less.
pub const FRAME_MAX: u32 = 131_072;

/// How long a client has for the whole handshake, from the protocol header to `open`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the server's `connection.close`, how long it waits for the client to answer and
/// leave; reading on keeps the close from being destroyed by a reset on unread input.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Heartbeat intervals of silence after which a client is gone (RabbitMQ's rule: two).
const MISSED_HEARTBEATS: u32 = 2;

/// The SASL mechanisms offered in `connection.start`.
const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// The receiving half of a client's byte stream: a TCP socket's, or a TLS stream's
/// (`--amqp-tls-listen`). One type rather than generic code so that the connection code is
/// compiled once. The TCP half is kept as itself so that an idle connection can wait for
/// the socket to be readable without holding a read buffer; a TLS stream cannot (rustls
/// holds records the socket no longer shows).
enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Tls(Box<dyn AsyncRead + Send + Sync + Unpin>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => std::pin::Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => std::pin::Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The sending half, owned by the writer task.
type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// RabbitMQ's reply codes (the spec's constants), with their names for the reply text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
enum Reply {
    ConnectionForced = 320,
    AccessRefused = 403,
    FrameError = 501,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl Reply {
    fn name(self) -> &'static str {
        match self {
            Reply::ConnectionForced => "CONNECTION_FORCED",
            Reply::AccessRefused => "ACCESS_REFUSED",
            Reply::FrameError => "FRAME_ERROR",
            Reply::CommandInvalid => "COMMAND_INVALID",
            Reply::ChannelError => "CHANNEL_ERROR",
            Reply::UnexpectedFrame => "UNEXPECTED_FRAME",
            Reply::NotAllowed => "NOT_ALLOWED",
            Reply::NotImplemented => "NOT_IMPLEMENTED",
            Reply::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// A connection error: the `connection.close` the server sends, naming the method that
/// caused it (ids 0 when none did).
#[derive(Debug)]
struct ConnError {
    code: u16,
    /// The code's name, RabbitMQ's prefix of the reply text.
    name: &'static str,
    /// The explanation after RabbitMQ's `NAME - ` prefix.
    text: String,
    class_id: u16,
    method_id: u16,
}

impl ConnError {
    fn new(reply: Reply, text: impl Into<String>) -> Self {
        ConnError {
            code: reply as u16,
            name: reply.name(),
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// A connection error with one of the broker's codes (they are AMQP's).
    fn from_code(code: ErrorCode, text: impl Into<String>) -> Self {
        ConnError {
            code: code.as_u16(),
            name: code.name(),
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    fn on(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    fn not_implemented(class_id: u16, method_id: u16) -> Self {
        let text = match codec::method_name(class_id, method_id) {
            Some(name) => format!("{name} is not implemented by Warren's AMQP listener yet"),
            None => format!("unknown method (class {class_id}, method {method_id})"),
        };
        ConnError::new(Reply::NotImplemented, text).on(class_id, method_id)
    }

    fn reply_text(&self) -> String {
        format!("{} - {}", self.name, self.text)
    }
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum Ended {
    ClientClosed,
    Eof,
    Io(String),
    HeartbeatTimeout,
    HandshakeTimeout,
    WriterGone,
    ClosedByServer(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ClientClosed => write!(f, "closed by client"),
            Ended::Eof => write!(f, "client disconnected"),
            Ended::Io(e) => write!(f, "i/o error: {e}"),
            Ended::HeartbeatTimeout => write!(f, "missed heartbeats from client"),
            Ended::HandshakeTimeout => write!(f, "handshake not completed in time"),
            Ended::WriterGone => write!(
                f,
                "the client took no data within the write timeout, or went away"
            ),
            Ended::ClosedByServer(text) => write!(f, "closed by the server: {text}"),
        }
    }
}

/// Why reading the next frame failed.
#[derive(Debug)]
enum ReadEnd {
    Eof,
    Io(String),
    Frame(FrameError),
    /// No byte within the heartbeat limit.
    Silent,
    /// A frame started and did not finish within the frame timeout.
    FrameTimeout,
    /// The caller's deadline (the handshake's) passed.
    Deadline,
}

/// The reading side: a buffer over the socket, the size limit in force, and the two
/// clocks that bound a peer's silence (heartbeats) and a frame's arrival (frame timeout).
/// Bytes of read buffer a connection takes when bytes arrive after it went idle.
const READ_BUFFER_BYTES: usize = 8 * 1024;

struct FrameReader {
    read: ReadHalf,
    buf: BytesMut,
    max_frame: u32,
    /// Silence after which the client is gone; `None` until heartbeats are negotiated.
    silence: Option<Duration>,
    frame_timeout: Option<Duration>,
    last_read: Instant,
    /// When the frame now buffered in part started arriving.
    partial_since: Option<Instant>,
}

impl FrameReader {
    /// The next whole frame. Cancel-safe: what was read stays in the buffer.
    async fn next(&mut self, deadline: Option<Instant>) -> Result<RawFrame, ReadEnd> {
        loop {
            match codec::decode(&mut self.buf, self.max_frame) {
                Ok(Some(frame)) => {
                    self.partial_since = (!self.buf.is_empty()).then_some(self.last_read);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadEnd::Frame(e)),
            }
            if self.buf.is_empty() {
                self.partial_since = None;
            } else if self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
            }
            // The earliest of the three limits, and what passing it means.
            let limits = [
                deadline.map(|d| (d, ReadEnd::Deadline)),
                self.silence.map(|s| (self.last_read + s, ReadEnd::Silent)),
                self.partial_since
                    .zip(self.frame_timeout)
                    .map(|(since, t)| (since + t, ReadEnd::FrameTimeout)),
            ];
            let limit = limits.into_iter().flatten().min_by_key(|(at, _)| *at);
            if let (true, ReadHalf::Tcp(socket)) = (self.buf.is_empty(), &self.read) {
                // Idle: wait for bytes holding no buffer (frames already decoded keep their
                // bytes alive on their own); an idle connection costs no read buffer, and one
                // grown by a large frame shrinks back.
                self.buf = BytesMut::new();
                let ready = crate::connection::read_when_ready(socket, READ_BUFFER_BYTES);
                let got = match limit {
                    Some((at, end)) => match tokio::time::timeout_at(at, ready).await {
                        Ok(got) => got,
                        Err(_) => return Err(end),
                    },
                    None => ready.await,
                };
                match got {
                    Ok(bytes) if bytes.is_empty() => return Err(ReadEnd::Eof),
                    Ok(bytes) => {
                        self.buf = bytes;
                        self.last_read = Instant::now();
                        continue;
                    }
                    Err(e) => return Err(ReadEnd::Io(e.to_string())),
                }
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_BUFFER_BYTES);
            }
            let read = self.read.read_buf(&mut self.buf);
            let n = match limit {
                Some((at, end)) => match tokio::time::timeout_at(at, read).await {
                    Ok(n) => n,
                    Err(_) => return Err(end),
                },
                None => read.await,
            };
            match n {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(_) => self.last_read = Instant::now(),
                Err(e) => return Err(ReadEnd::Io(e.to_string())),
            }
        }
    }

    /// A frame already whole in the buffer, decoded without waiting; `None` when the next
    /// one needs a read ([`FrameReader::next`]).
    fn buffered(&mut self) -> Option<Result<RawFrame, ReadEnd>> {
        if self.buf.is_empty() {
            return None;
        }
        match codec::decode(&mut self.buf, self.max_frame) {
            Ok(Some(frame)) => {
                // What is left arrived with the last read: a frame started in it is timed
                // from then.
                self.partial_since = (!self.buf.is_empty()).then_some(self.last_read);
                Some(Ok(frame))
            }
            Ok(None) => None,
            Err(e) => Some(Err(ReadEnd::Frame(e))),
        }
    }

    /// After the server's `connection.close`: reads on, acting on nothing, until the
    /// client's `close-ok`, its leaving, or [`CLOSE_TIMEOUT`]. A socket closed with unread
    /// input is reset, and the reset could destroy the close on its way to the client.
    async fn await_close_ok(&mut self) {
        let until = Instant::now() + CLOSE_TIMEOUT;
        loop {
            match self.next(Some(until)).await {
                Ok(RawFrame::Method {
                    channel: 0,
                    class_id: 10,
                    method_id: 51,
                    ..
                }) => return,
                Ok(_) => {}
                // The stream cannot be cut into frames any more: just read it away.
                Err(ReadEnd::Frame(_)) => return self.drain().await,
                Err(_) => return,
            }
        }
    }

    /// Reads and discards until the client leaves or [`CLOSE_TIMEOUT`] passes (after a
    /// refused protocol header, or a framing error).
    async fn drain(&mut self) {
        let until = Instant::now() + CLOSE_TIMEOUT;
        let mut sink = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, self.read.read(&mut sink)).await {
            if n == 0 {
                return;
            }
        }
    }
}

/// A channel's state: what RabbitMQ keeps per channel (later slices add delivery tags,
/// prefetch and consumers).
#[derive(Debug, Default)]
struct Channel {
    /// The server sent `channel.close` and waits for `close-ok`; other methods on the
    /// channel are ignored meanwhile, as the spec says.
    closing: bool,
    /// Tells this channel from an earlier one of the same number, for late confirms.
    generation: u8,
    /// `confirm.select` was sent: publishes are numbered from 1 and confirmed.
    confirm: bool,
    /// The last publish sequence number given out (confirm mode).
    next_seq: u64,
    /// A publish whose content is still arriving.
    content: Option<content::Pending>,
    /// `basic.qos`'s prefetch count, for the channel's consumers started after it.
    prefetch: u32,
    /// `tx.select` was sent: what the open transaction holds.
    tx: Option<transaction::Tx>,
    /// `basic.qos` with `global=true`: one limit for all the channel's consumers.
    shared_credit: Option<Arc<crate::broker::consumer::SharedCredit>>,
}

/// What is left to do for a channel that closed: see [`Conn::clean_up`].
#[derive(Debug)]
struct Cleanup {
    consumers: Vec<Arc<str>>,
    /// The session's tags of its unsettled deliveries.
    delivery_tags: Vec<u64>,
}

/// Serves one client of the AMQP listener until it closes, fails, or the server shuts down.
pub async fn run(socket: TcpStream, broker: Broker, config: Arc<ConnectionConfig>, shutdown: Stop) {
    let _ = socket.set_nodelay(true);
    let peer_addr = socket.peer_addr().ok();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let (read, write) = socket.into_split();
    let stream = Stream {
        read: ReadHalf::Tcp(read),
        write: Box::new(write),
        peer_addr,
        tls: false,
    };
    serve(stream, deadline, broker, config, shutdown).await;
}

/// Serves one client of the AMQP over TLS listener (`amqps`): the TLS handshake, then as
/// [`run`]. The TLS handshake counts against the AMQP handshake's timeout, as the native
/// TLS listener's does against its own.
pub async fn run_tls(
    socket: TcpStream,
    acceptor: TlsAcceptor,
    broker: Broker,
    config: Arc<ConnectionConfig>,
    shutdown: Stop,
) {
    let _ = socket.set_nodelay(true);
    let peer_addr = socket.peer_addr().ok();
    let peer = peer_addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let Some(tls) =
        crate::tls::accept(&acceptor, socket, deadline, &shutdown, &peer, "AMQP TLS").await
    else {
        return;
    };
    let (read, write) = tokio::io::split(tls);
    let stream = Stream {
        read: ReadHalf::Tls(Box::new(read)),
        write: Box::new(write),
        peer_addr,
        tls: true,
    };
    serve(stream, deadline, broker, config, shutdown).await;
}

/// A client's byte stream, split, and where it came from.
struct Stream {
    read: ReadHalf,
    write: WriteHalf,
    peer_addr: Option<std::net::SocketAddr>,
    /// It came through the TLS listener.
    tls: bool,
}

/// The connection from the protocol header on, over either listener's stream.
async fn serve(
    stream: Stream,
    deadline: Instant,
    broker: Broker,
    config: Arc<ConnectionConfig>,
    shutdown: Stop,
) {
    let Stream {
        read,
        mut write,
        peer_addr,
        tls,
    } = stream;
    let peer = peer_addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let mut frames = FrameReader {
        read,
        buf: BytesMut::with_capacity(READ_BUFFER_BYTES),
        max_frame: codec::FRAME_MIN_SIZE,
        silence: None,
        frame_timeout: config.frame_timeout,
        last_read: Instant::now(),
        partial_since: None,
    };
    if let Err(reason) = protocol_header(&mut frames, &mut write, deadline).await {
        tracing::info!(%peer, %reason, "AMQP connection refused");
        return;
    }
    let (out, rx) = tokio::sync::mpsc::unbounded_channel();
    let writer_gone = Stop::new();
    let writer = tokio::spawn(writer::run(
        write,
        rx,
        config.write_timeout,
        writer_gone.clone(),
    ));
    let mut conn = Conn {
        max_body: config
            .max_frame_size
            .saturating_sub(warren_protocol::PUBLISH_HEADROOM_BYTES) as usize,
        next_generation: 0,
        live: events::Live::default(),
        blocked_capable: false,
        cancel_notify: false,
        cleanups: Vec::new(),
        next_ctag: 0,
        tx_bytes: 0,
        shutdown: shutdown.clone(),
        writer_gone: writer_gone.clone(),
        broker: &broker,
        peer: peer.clone(),
        peer_ip: peer_addr.map(|a| a.ip()),
        client: ClientInfo {
            door: if tls { Door::Amqps } else { Door::Amqp },
            product: None,
            version: None,
        },
        frames,
        out,
        channel_max: CHANNEL_MAX,
        channels: HashMap::new(),
        session: None,
        grants: PublishGrants::default(),
        heartbeat_secs: config
            .heartbeat
            .map_or(0, |h| u16::try_from(h.as_secs()).unwrap_or(u16::MAX)),
    };
    let ended = conn.serve(deadline, &shutdown, &writer_gone).await;
    let session = conn.session.take();
    drop(conn);
    if let Some(session) = &session {
        broker.close_session(session).await;
    }
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        abort.abort();
        tracing::warn!(%peer, "AMQP connection writer did not finish in time");
    }
    match &session {
        Some(s) => {
            tracing::info!(%peer, connection = s.id, reason = %ended, "AMQP connection closed");
        }
        None => tracing::info!(%peer, reason = %ended, "AMQP connection closed before open"),
    }
}

/// Reads the client's protocol header. Anything but AMQP 0-9-1's is answered with ours
/// (the spec's way of saying which version the server speaks) and the socket closed.
async fn protocol_header(
    frames: &mut FrameReader,
    write: &mut WriteHalf,
    deadline: Instant,
) -> Result<(), String> {
    let mut header = [0u8; 8];
    match tokio::time::timeout_at(deadline, frames.read.read_exact(&mut header)).await {
        Err(_) => return Err("no protocol header within the handshake timeout".into()),
        Ok(Err(e)) => return Err(format!("reading the protocol header: {e}")),
        Ok(Ok(_)) => {}
    }
    if header == PROTOCOL_HEADER {
        return Ok(());
    }
    let _ = write.write_all(&PROTOCOL_HEADER).await;
    let _ = write.shutdown().await;
    frames.drain().await;
    Err(format!(
        "protocol header {} is not AMQP 0-9-1",
        String::from_utf8_lossy(&header).escape_debug()
    ))
}

/// One connection's state past the protocol header.
struct Conn<'a> {
    broker: &'a Broker,
    peer: String,
    peer_ip: Option<IpAddr>,
    /// The door it came through, and the product and version from its `client-properties`.
    client: ClientInfo,
    frames: FrameReader,
    out: UnboundedSender<Out>,
    /// Negotiated in `tune-ok`.
    channel_max: u16,
    channels: HashMap<u16, Channel>,
    /// The broker's session, from `connection.open` on.
    session: Option<Arc<Session>>,
    /// The connection's remembered publish permissions (the native door's cache).
    grants: PublishGrants,
    /// Offered in `tune` (`--heartbeat-secs`).
    heartbeat_secs: u16,
    /// The largest body a publish may carry (Warren's message size limit, as the native
    /// door's: the frame size less the publish headroom).
    max_body: usize,
    /// The generation the next opened channel gets.
    next_generation: u8,
    /// The channels open now, shared with the event task.
    live: events::Live,
    /// The client advertised `connection.blocked` in its capabilities.
    blocked_capable: bool,
    /// The client advertised `consumer_cancel_notify`.
    cancel_notify: bool,
    /// Closed channels whose consumers and deliveries are still to be dealt with.
    cleanups: Vec<Cleanup>,
    /// The last server-generated consumer tag's number.
    next_ctag: u64,
    /// What the open transactions of all channels hold, against [`Conn::tx_limit`].
    tx_bytes: usize,
    shutdown: Stop,
    writer_gone: Stop,
}

impl Conn<'_> {
    fn send(&self, channel: u16, method: AMQPClass) {
        let bytes = codec::encode(&AMQPFrame::Method(channel, method));
        // A writer that is gone has cancelled `writer_gone`; the loop ends on it.
        let _ = self.out.send(Out::Frame(bytes));
    }

    async fn serve(&mut self, deadline: Instant, shutdown: &Stop, writer_gone: &Stop) -> Ended {
        let result = tokio::select! {
            biased;
            () = writer_gone.cancelled() => return Ended::WriterGone,
            () = shutdown.cancelled() => Err(Step::Close(shutting_down())),
            r = self.handshake(deadline) => r,
        };
        let principal = match result {
            Ok(Some(p)) => p,
            Ok(None) => return Ended::ClientClosed,
            Err(Step::End(ended)) => return ended,
            Err(Step::Close(err)) => return self.close(err).await,
        };
        let (events, events_rx) = crate::broker::outbox::outbox();
        let session = self
            .broker
            .new_session(self.peer.clone(), principal.clone(), events);
        let stop_events = Stop::new();
        let _stop_events = stop_events.clone().drop_guard();
        tokio::spawn(
            events::EventTask {
                session: session.clone(),
                rx: events_rx,
                out: self.out.clone(),
                live: self.live.clone(),
                frame_max: self.frames.max_frame,
                blocked_capable: self.blocked_capable,
                cancel_notify: self.cancel_notify,
            }
            .run(stop_events),
        );
        tracing::info!(
            peer = %self.peer,
            connection = session.id,
            user = %principal.name,
            vhost = %principal.vhost,
            door = self.client.door.as_str(),
            client = %format_args!(
                "{} {}",
                self.client.product.as_deref().unwrap_or("-"),
                self.client.version.as_deref().unwrap_or("-")
            ),
            "AMQP connection opened"
        );
        session.set_client(self.client.clone());
        self.session = Some(session.clone());
        loop {
            // A frame already buffered (a pipelining client's usual case) is taken without
            // setting up the wait; the stops are checked first all the same.
            let stopping = writer_gone.is_cancelled()
                || session.forced.is_cancelled()
                || shutdown.is_cancelled();
            let buffered = if stopping {
                None
            } else {
                self.frames.buffered()
            };
            let next = match buffered {
                Some(f) => f,
                None => tokio::select! {
                    biased;
                    () = writer_gone.cancelled() => return Ended::WriterGone,
                    () = session.forced.cancelled() => {
                        let reason = session.forced_reason().to_owned();
                        return self.close(ConnError::new(Reply::ConnectionForced, reason)).await;
                    }
                    () = shutdown.cancelled() => return self.close(shutting_down()).await,
                    f = self.frames.next(None) => f,
                },
            };
            let step = match next {
                Ok(frame) => {
                    let step = self.dispatch(frame, &session).await;
                    self.clean_up(&session).await;
                    step
                }
                Err(e) => Err(read_failed(e)),
            };
            match step {
                Ok(()) => {}
                Err(Step::End(ended)) => return ended,
                Err(Step::Close(err)) => return self.close(err).await,
            }
        }
    }

    /// Sends `connection.close`, stops writing, and waits (bounded) for the client to go.
    async fn close(&mut self, err: ConnError) -> Ended {
        let text = err.reply_text();
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: err.code,
                reply_text: short_string(&text),
                class_id: err.class_id,
                method_id: err.method_id,
            })),
        );
        let _ = self.out.send(Out::Finish);
        self.frames.await_close_ok().await;
        Ended::ClosedByServer(text)
    }

    /// The next method on channel 0 during the handshake, decoded; heartbeats are skipped
    /// and a client's `connection.close` is answered (`None`).
    async fn expect(
        &mut self,
        deadline: Instant,
        expected: &str,
    ) -> Result<Option<AMQPClass>, Step> {
        loop {
            let frame = match self.frames.next(Some(deadline)).await {
                Ok(frame) => frame,
                Err(ReadEnd::Deadline) => return Err(Step::End(Ended::HandshakeTimeout)),
                Err(e) => return Err(read_failed(e)),
            };
            match frame {
                RawFrame::Heartbeat { channel: 0 } => {}
                RawFrame::Method {
                    channel: 0,
                    class_id,
                    method_id,
                    payload,
                } => {
                    // Every method here is decoded in full, so any that carries a table is
                    // checked (start-ok's client properties, but also an exchange.declare or
                    // a connection.start sent in its place).
                    if let Some(at) = codec::table_offset(class_id, method_id, &payload) {
                        if !codec::table_nesting_ok(&payload[at..], codec::MAX_TABLE_DEPTH) {
                            return Err(too_deep(class_id, method_id));
                        }
                    }
                    let Some(method) = codec::parse_method(&payload) else {
                        return Err(cannot_decode(class_id, method_id));
                    };
                    if let AMQPClass::Connection(connection::AMQPMethod::Close(_)) = method {
                        self.client_closed();
                        return Ok(None);
                    }
                    return Ok(Some(method));
                }
                _ => {
                    return Err(Step::Close(ConnError::new(
                        Reply::CommandInvalid,
                        format!("expected '{expected}'"),
                    )))
                }
            }
        }
    }

    /// Answers the client's `connection.close`.
    fn client_closed(&self) {
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        );
        let _ = self.out.send(Out::Finish);
    }

    /// Acts on one frame of an open connection.
    async fn dispatch(&mut self, frame: RawFrame, session: &Arc<Session>) -> Result<(), Step> {
        let (channel, class_id, method_id, payload) = match frame {
            RawFrame::Heartbeat { channel: 0 } => return Ok(()),
            RawFrame::Heartbeat { channel } => {
                return Err(Step::Close(ConnError::new(
                    Reply::FrameError,
                    format!("heartbeat frame on channel {channel}"),
                )))
            }
            RawFrame::Header { channel, payload } => {
                return self.content(channel, true, payload, session).await
            }
            RawFrame::Body { channel, payload } => {
                return self.content(channel, false, payload, session).await
            }
            RawFrame::Method {
                channel,
                class_id,
                method_id,
                payload,
            } => (channel, class_id, method_id, payload),
        };
        if channel == 0 {
            return match (class_id, method_id) {
                (10, 50) => {
                    codec::parse_method(&payload).ok_or_else(|| cannot_decode(10, 50))?;
                    self.client_closed();
                    Err(Step::End(Ended::ClientClosed))
                }
                _ => Err(Step::Close(ConnError::not_implemented(class_id, method_id))),
            };
        }
        if channel > self.channel_max {
            return Err(Step::Close(
                ConnError::new(
                    Reply::ChannelError,
                    format!(
                        "channel {channel} is above the negotiated channel_max {}",
                        self.channel_max
                    ),
                )
                .on(class_id, method_id),
            ));
        }
        let Some(state) = self.channels.get(&channel) else {
            return match (class_id, method_id) {
                (20, 10) => {
                    codec::parse_method(&payload).ok_or_else(|| cannot_decode(20, 10))?;
                    let generation = self.next_generation;
                    self.next_generation = generation.wrapping_add(1);
                    self.live.lock().channels.insert(
                        channel,
                        events::ChanShared {
                            generation,
                            ..events::ChanShared::default()
                        },
                    );
                    self.channels.insert(
                        channel,
                        Channel {
                            generation,
                            ..Channel::default()
                        },
                    );
                    self.send(
                        channel,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    );
                    Ok(())
                }
                _ => Err(Step::Close(
                    ConnError::new(Reply::ChannelError, "expected 'channel.open'")
                        .on(class_id, method_id),
                )),
            };
        };
        if state.content.is_some() && !state.closing {
            let name = codec::method_name(class_id, method_id).unwrap_or("method");
            return Err(Step::Close(
                ConnError::new(
                    Reply::UnexpectedFrame,
                    format!("expected content header for class 60, got '{name}' instead"),
                )
                .on(class_id, method_id),
            ));
        }
        if state.closing {
            // Only the close handshake counts on a closing channel.
            if matches!((class_id, method_id), (20, 40) | (20, 41)) {
                if method_id == 40 {
                    self.send_channel_close_ok(channel);
                }
                self.drop_channel(channel);
                self.channels.remove(&channel);
            }
            return Ok(());
        }
        match (class_id, method_id) {
            (20, 10) => Err(Step::Close(
                ConnError::new(Reply::ChannelError, "second 'channel.open' seen").on(20, 10),
            )),
            (20, 40) => {
                codec::parse_method(&payload).ok_or_else(|| cannot_decode(20, 40))?;
                self.drop_channel(channel);
                self.channels.remove(&channel);
                self.send_channel_close_ok(channel);
                Ok(())
            }
            (60, 40) => match codec::parse_method(&payload) {
                Some(AMQPClass::Basic(basic::AMQPMethod::Publish(method))) => {
                    if method.immediate {
                        // As RabbitMQ 3.0 and later.
                        return Err(Step::Close(
                            ConnError::new(Reply::NotImplemented, "immediate=true").on(60, 40),
                        ));
                    }
                    if let Some(state) = self.channels.get_mut(&channel) {
                        state.content = Some(content::Pending {
                            method,
                            header: None,
                            header_bytes: 0,
                            body: BytesMut::new(),
                        });
                    }
                    Ok(())
                }
                _ => Err(cannot_decode(60, 40)),
            },
            (60, 10) => match codec::parse_method(&payload) {
                Some(AMQPClass::Basic(basic::AMQPMethod::Qos(qos))) => {
                    self.qos(channel, &qos, session)
                }
                _ => Err(cannot_decode(60, 10)),
            },
            (60, 20) => {
                if let Some(at) = codec::table_offset(60, 20, &payload) {
                    if !codec::table_nesting_ok(&payload[at..], codec::MAX_TABLE_DEPTH) {
                        return Err(too_deep(60, 20));
                    }
                }
                match codec::parse_method(&payload) {
                    Some(AMQPClass::Basic(basic::AMQPMethod::Consume(c))) => {
                        self.consume(channel, c, session)
                    }
                    _ => Err(cannot_decode(60, 20)),
                }
            }
            (60, 30) => match codec::parse_method(&payload) {
                Some(AMQPClass::Basic(basic::AMQPMethod::Cancel(c))) => {
                    let tag = c.consumer_tag.as_str();
                    let ours = self.live.lock().consumers.get(tag) == Some(&channel);
                    if ours {
                        self.live.lock().consumers.remove(tag);
                        // As RabbitMQ: its unacked deliveries stay with the channel, to be
                        // acked or rejected later.
                        if let Err(e) = self.broker.cancel(session, tag, true).await {
                            tracing::warn!(connection = session.id, consumer = %tag, error = %e, "AMQP cancel failed");
                        }
                    }
                    if !c.nowait {
                        self.send(
                            channel,
                            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                                consumer_tag: c.consumer_tag.clone(),
                            })),
                        );
                    }
                    Ok(())
                }
                _ => Err(cannot_decode(60, 30)),
            },
            (60, 70) => match codec::parse_method(&payload) {
                Some(AMQPClass::Basic(basic::AMQPMethod::Get(g))) => {
                    self.get(channel, &g, session).await
                }
                _ => Err(cannot_decode(60, 70)),
            },
            (60, 80 | 90 | 120) => match codec::parse_method(&payload) {
                Some(AMQPClass::Basic(method)) => self.settle(channel, method, session).await,
                _ => Err(cannot_decode(class_id, method_id)),
            },
            (85, 10) => match codec::parse_method(&payload) {
                Some(AMQPClass::Confirm(confirm::AMQPMethod::Select(select))) => {
                    if let Some(refused) = self.refuse_confirm_on_tx(channel) {
                        return refused;
                    }
                    if let Some(state) = self.channels.get_mut(&channel) {
                        state.confirm = true;
                    }
                    if !select.nowait {
                        self.send(
                            channel,
                            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                        );
                    }
                    Ok(())
                }
                _ => Err(cannot_decode(85, 10)),
            },
            (60, 100 | 110) | (90, 10 | 20 | 30) => {
                self.transaction_method(channel, class_id, method_id, &payload, session)
                    .await
            }
            // A close-ok the server did not ask for: nothing to do.
            (20, 41) => Ok(()),
            (40, 10 | 20 | 30 | 40) | (50, 10 | 20 | 30 | 40 | 50) => {
                self.topology(channel, class_id, method_id, &payload, session)
                    .await
            }
            (20, 20) => match codec::parse_method(&payload) {
                Some(AMQPClass::Channel(channel::AMQPMethod::Flow(flow))) if flow.active => {
                    self.send(
                        channel,
                        AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                            active: true,
                        })),
                    );
                    Ok(())
                }
                // As RabbitMQ: a client may not pause the server's deliveries this way.
                Some(_) => Err(Step::Close(
                    ConnError::new(Reply::NotImplemented, "active=false").on(20, 20),
                )),
                None => Err(cannot_decode(20, 20)),
            },
            _ => Err(Step::Close(ConnError::not_implemented(class_id, method_id))),
        }
    }

    /// An exchange or queue method, on the broker's topology path.
    async fn topology(
        &mut self,
        channel: u16,
        class_id: u16,
        method_id: u16,
        payload: &[u8],
        session: &Session,
    ) -> Result<(), Step> {
        if let Some(at) = codec::table_offset(class_id, method_id, payload) {
            if !codec::table_nesting_ok(&payload[at..], codec::MAX_TABLE_DEPTH) {
                return Err(too_deep(class_id, method_id));
            }
        }
        let method =
            codec::parse_method(payload).ok_or_else(|| cannot_decode(class_id, method_id))?;
        match topology::run(self.broker, session, &mut self.grants, method).await {
            Ok(Some(ok)) => {
                self.send(channel, ok);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(topology::Refusal::Broker(e)) => {
                let text = e.to_string();
                tracing::info!(peer = %self.peer, connection = session.id, channel, code = e.code().as_u16(), error = %crate::clip::text(&text), "AMQP request refused");
                self.refuse(channel, e.code(), &text, class_id, method_id)
            }
            Err(topology::Refusal::Connection(code, text)) => Err(Step::Close(
                ConnError::from_code(code, text).on(class_id, method_id),
            )),
        }
    }

    /// Forgets a channel the client or the server closed; its consumers are cancelled and
    /// its unsettled deliveries requeued by [`Conn::clean_up`], after the current frame.
    /// Those its open transaction had settled are unsettled still: requeued too.
    fn drop_channel(&mut self, channel: u16) {
        let held = self.discard_tx(channel);
        let mut shared = self.live.lock();
        let Some(ch) = shared.channels.remove(&channel) else {
            return;
        };
        let consumers: Vec<Arc<str>> = shared
            .consumers
            .iter()
            .filter(|(_, c)| **c == channel)
            .map(|(t, _)| t.clone())
            .collect();
        for t in &consumers {
            shared.consumers.remove(t);
        }
        self.cleanups.push(Cleanup {
            consumers,
            delivery_tags: ch.tags.into_values().chain(held).collect(),
        });
    }

    /// Cancels the consumers of closed channels (requeueing their unacked deliveries, as
    /// RabbitMQ does when a channel closes) and requeues what else was left unsettled on
    /// them (deliveries of consumers cancelled earlier).
    async fn clean_up(&mut self, session: &Arc<Session>) {
        for cleanup in std::mem::take(&mut self.cleanups) {
            for tag in cleanup.consumers {
                if let Err(e) = self.broker.cancel(session, &tag, false).await {
                    tracing::warn!(connection = session.id, consumer = %tag, error = %e, "cancelling a closed channel's consumer failed");
                }
            }
            for tag in cleanup.delivery_tags {
                // Already requeued with its consumer: nothing left to do.
                let _ = self.broker.nack(session, tag, false, true, 0, None).await;
            }
        }
    }

    /// Holds a publish that met a resource alarm until the alarm clears, as the native door
    /// does; the client hears `connection.blocked` / `unblocked` if it asked to.
    async fn wait_while_blocked(&self, session: &Session, persistent: bool, reason: &str) {
        tracing::info!(connection = session.id, reason, "AMQP connection blocked");
        session.send(
            0,
            Event::Blocked {
                reason: reason.to_owned(),
            },
        );
        let mut alarms = self.broker.alarms().subscribe();
        loop {
            if alarms.borrow_and_update().blocks(persistent).is_none() {
                break;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.writer_gone.cancelled() => break,
                () = session.forced.cancelled() => break,
                changed = alarms.changed() => if changed.is_err() { break },
            }
        }
        tracing::info!(connection = session.id, "AMQP connection unblocked");
        session.send(0, Event::Unblocked);
    }

    /// A broker refusal of a `basic.publish`, by RabbitMQ's split of channel and connection
    /// errors.
    fn refuse_broker(
        &mut self,
        channel: u16,
        e: &BrokerError,
        session: &Session,
    ) -> Result<(), Step> {
        let text = e.to_string();
        if matches!(e, BrokerError::Store(_)) {
            tracing::error!(peer = %self.peer, connection = session.id, channel, error = %crate::clip::text(&text), "AMQP publish failed in the store");
        } else {
            tracing::info!(peer = %self.peer, connection = session.id, channel, code = e.code().as_u16(), error = %crate::clip::text(&text), "AMQP publish refused");
        }
        self.refuse(channel, e.code(), &text, 60, 40)
    }

    /// A refusal by RabbitMQ's rule: codes below 500 are channel errors (the channel
    /// closes, the connection goes on), the others connection errors.
    fn refuse(
        &mut self,
        channel: u16,
        code: ErrorCode,
        text: &str,
        class_id: u16,
        method_id: u16,
    ) -> Result<(), Step> {
        if code.as_u16() >= 500 {
            return Err(Step::Close(
                ConnError::from_code(code, text).on(class_id, method_id),
            ));
        }
        if let Some(state) = self.channels.get_mut(&channel) {
            state.closing = true;
            state.content = None;
        }
        // Nothing more is said on it: late confirms and returns are dropped.
        self.drop_channel(channel);
        let reply_text = format!("{} - {}", code.name(), crate::clip::text(text));
        self.send(
            channel,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: code.as_u16(),
                reply_text: short_string(&reply_text),
                class_id,
                method_id,
            })),
        );
        Ok(())
    }

    fn send_channel_close_ok(&self, channel: u16) {
        self.send(
            channel,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        );
    }
}

/// What ends a step of the connection: a `connection.close` to send, or an end without one.
enum Step {
    Close(ConnError),
    End(Ended),
}

fn shutting_down() -> ConnError {
    ConnError::new(
        Reply::ConnectionForced,
        "broker forced connection closure with reason 'shutdown'",
    )
}

fn read_failed(e: ReadEnd) -> Step {
    match e {
        ReadEnd::Eof | ReadEnd::Deadline => Step::End(Ended::Eof),
        ReadEnd::Io(e) => Step::End(Ended::Io(e)),
        // As RabbitMQ: a client that missed its heartbeats is not told, just dropped.
        ReadEnd::Silent => Step::End(Ended::HeartbeatTimeout),
        ReadEnd::Frame(e) => Step::Close(ConnError::new(Reply::FrameError, e.to_string())),
        ReadEnd::FrameTimeout => Step::Close(ConnError::new(
            Reply::FrameError,
            "a frame was not completed within the frame timeout",
        )),
    }
}

fn cannot_decode(class_id: u16, method_id: u16) -> Step {
    let name = codec::method_name(class_id, method_id).unwrap_or("method");
    Step::Close(
        ConnError::new(Reply::FrameError, format!("cannot decode {name}")).on(class_id, method_id),
    )
}

fn too_deep(class_id: u16, method_id: u16) -> Step {
    let name = codec::method_name(class_id, method_id).unwrap_or("method");
    Step::Close(
        ConnError::new(
            Reply::FrameError,
            format!(
                "cannot decode {name}: field tables nest deeper than {}",
                codec::MAX_TABLE_DEPTH
            ),
        )
        .on(class_id, method_id),
    )
}

fn unexpected(expected: &str, got: &AMQPClass) -> Step {
    let (class_id, method_id) = (got.get_amqp_class_id(), got.get_amqp_method_id());
    let name = codec::method_name(class_id, method_id).unwrap_or("method");
    Step::Close(
        ConnError::new(
            Reply::CommandInvalid,
            format!("expected '{expected}', got '{name}'"),
        )
        .on(class_id, method_id),
    )
}

/// A short string from text that may be longer than 255 bytes (a reply text naming a long
/// resource): cut at a character boundary rather than refused.
fn short_string(text: &str) -> ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // At most 255 bytes now, so never refused; the empty string is the fallback anyway.
    ShortString::try_new(&text[..end]).unwrap_or_else(|_| ShortString::from(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reply_texts_are_cut_at_a_character_boundary() {
        let text = "é".repeat(200);
        let cut = short_string(&text);
        assert_eq!(cut.as_str().len(), 254);
        assert_eq!(short_string("ok").as_str(), "ok");
    }
}
