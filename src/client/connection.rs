//! The connection under a [`crate::client::Client`]: the handshake, the shared state that
//! pairs replies with requests, and the three tasks that own the socket.
//!
//! ```text
//! Client calls ── encode into the outgoing bytes (bounded) ──▶ writer task ──▶ socket
//!      ▲                                                                        │
//!      └── oneshot per request ◀── Connection::handle ◀── reader task ◀── FramedRead
//!                                     └── unbounded mpsc per consumer ──▶ Consumer
//! heartbeat task: a Heartbeat frame every heartbeat_ms / 2
//! ```
//!
//! Callers encode their frames straight into one shared byte buffer ([`Connection::send_with`]),
//! under a short lock, so a publish costs no owned frame, box or channel slot; the writer task
//! swaps the buffer for its empty spare and writes what it took while callers fill the other.
//! A caller waits only while more than [`MAX_BUFFERED_BYTES`] are waiting to be written.
//!
//! Requests are registered in the pending map *before* their frame is queued, so a reply can
//! never overtake its registration. The reader handles frames one at a time, synchronously,
//! so a consumer is registered on its `ConsumeOk` before the deliveries that follow it are
//! routed. The reader never waits on the writer (it only `try_send`s), so a server that
//! stops reading cannot deadlock us against our own reads.
//!
//! When the connection ends for any reason, [`Connection::connection_lost`] resolves every
//! pending request with [`ClientError::Closed`] and ends every consumer; the first reason
//! recorded wins. No lock is held across an `.await`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warren_protocol::{
    client_preface, Cancel, Close, Confirm, DecodeError, Deliver, Envelope, ErrorCode, Frame,
    FrameCodec, Hello, Mechanism, Open, RequestId, PROTOCOL_VERSION,
};

use crate::client::consumer::{CancelReason, ConsumerEvent};
use crate::client::error::{is_tls, not_warren, tls_failure, ClientError, NO_CLOSE_CODE};
use crate::client::publish::{is_unconfirmed, PublishOutcome, Refusal, RefusalKind};
use crate::client::ConnectOptions;
use crate::tls::{ClientTls, TlsError};

/// Refusals of publishes without a confirm kept until the caller takes them; past this the
/// oldest are dropped, but still counted ([`Connection::refused_count`]), so a caller that
/// never looks cannot make the client grow without bound, and still learns that some were lost.
pub(crate) const MAX_KEPT_REFUSALS: usize = 65_536;

/// Encoded bytes the outgoing buffer may hold before callers wait for the writer to take
/// them (a frame is always accepted whole below this, so the buffer holds at most this plus
/// one frame). About what the queue of 1,024 frames it replaced held of S1's publishes.
pub(crate) const MAX_BUFFERED_BYTES: usize = 256 * 1024;

/// Frames the reader handles from a full buffer before it looks at the shutdown token again:
/// it polls the socket first, so a steady stream of frames would otherwise hide a shutdown.
const FRAMES_PER_SHUTDOWN_CHECK: u32 = 64;

/// How long a closing writer may spend sending what is still queued (acks, `Close`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the connection ended: the server's code and reason, or [`NO_CLOSE_CODE`] and ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseInfo {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

impl CloseInfo {
    pub(crate) fn new(code: u16, reason: impl Into<String>) -> Self {
        CloseInfo {
            code,
            reason: reason.into(),
        }
    }

    /// A close with no server-given code.
    pub(crate) fn local(reason: impl Into<String>) -> Self {
        CloseInfo::new(NO_CLOSE_CODE, reason)
    }

    fn to_error(&self) -> ClientError {
        ClientError::Closed {
            code: self.code,
            reason: self.reason.clone(),
        }
    }
}

/// A request waiting for its reply, by what the reply should turn into.
pub(crate) enum Pending {
    /// Any request answered by exactly one frame (`Ok`, `QueueDeclareOk`, `GetOk`, ...).
    Reply(oneshot::Sender<Result<Frame, ClientError>>),
    /// A publish: `Return` (optional) then `Confirm`.
    Publish {
        tx: oneshot::Sender<Result<PublishOutcome, ClientError>>,
        /// Set by a `Return` for this publish; turns the following confirm into `Returned`.
        returned: Option<(u16, String)>,
    },
    /// A consume: on `ConsumeOk` the reader registers `slot` under the tag before it reads
    /// the next frame, then hands the tag back.
    Consume {
        tx: oneshot::Sender<Result<String, ClientError>>,
        slot: ConsumerSlot,
    },
    /// A cancel: on `Ok` the reader removes the consumer. `tx` is `None` when a dropped
    /// [`crate::client::Consumer`] cancelled itself and nobody waits.
    Cancel {
        consumer_tag: String,
        tx: Option<oneshot::Sender<Result<Frame, ClientError>>>,
    },
}

impl Pending {
    fn fail(self, err: ClientError) {
        // A send fails only when the caller stopped waiting; nothing to do then.
        match self {
            Pending::Reply(tx) => drop(tx.send(Err(err))),
            Pending::Publish { tx, .. } => drop(tx.send(Err(err))),
            Pending::Consume { tx, .. } => drop(tx.send(Err(err))),
            Pending::Cancel { tx, .. } => {
                if let Some(tx) = tx {
                    drop(tx.send(Err(err)));
                }
            }
        }
    }
}

/// A registered consumer, as the reader sees it.
pub(crate) struct ConsumerSlot {
    pub(crate) events: mpsc::UnboundedSender<ConsumerEvent>,
}

/// The frames callers have encoded and the writer has not taken yet.
#[derive(Default)]
struct Outgoing {
    buf: BytesMut,
    /// The connection has ended: nothing more is accepted (what `buf` holds is still
    /// written, within the writer's drain bound).
    closed: bool,
}

/// Everything behind the state lock.
#[derive(Default)]
struct State {
    pending: foldhash::HashMap<RequestId, Pending>,
    consumers: foldhash::HashMap<String, ConsumerSlot>,
    /// Woken by `CloseOk` (whatever its request id) for [`crate::client::Client::close`].
    close_waiter: Option<oneshot::Sender<()>>,
    /// Our `Close` is on its way: deliveries are ignored from now on (PROTOCOL.md §12), as
    /// the server requeues them; replies are still matched to their requests.
    closing: bool,
    /// Set once, when the connection ends; later registrations fail with it.
    closed: Option<CloseInfo>,
    /// Refusals of publishes sent without a confirm, oldest first, not yet taken.
    refusals: std::collections::VecDeque<Refusal>,
    /// Every refusal of a publish without a confirm so far, kept or dropped.
    refused: u64,
}

/// What the reader does after a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// Sends `Open` (PROTOCOL.md §3) and waits for the server's answer: `Ok`, or the refusal as
/// [`ClientError::Server`] (`403 ACCESS_REFUSED`, `404 NOT_FOUND` for an unknown virtual
/// host).
async fn login<R, W>(
    reader: &mut FramedRead<R, FrameCodec>,
    write: &mut W,
    options: &ConnectOptions,
) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The id is free: no other request exists yet, and the answer comes before any other.
    const OPEN_REQUEST_ID: RequestId = 1;
    let open = Frame::Open(Open {
        mechanism: Mechanism::Password,
        user: options.user.clone(),
        password: bytes::Bytes::copy_from_slice(options.password.as_bytes()),
        vhost: options.vhost.clone(),
    });
    write
        .write_all(&Envelope::new(OPEN_REQUEST_ID, open).to_bytes())
        .await?;
    // TLS buffers what is written; TCP's flush is a no-op.
    write.flush().await?;
    loop {
        match reader.next().await {
            None => {
                return Err(ClientError::Handshake(
                    "the server closed the connection before answering Open".into(),
                ))
            }
            Some(Err(DecodeError::Io(e))) => {
                return Err(ClientError::Handshake(format!(
                    "reading the server's answer to Open: {e}"
                )))
            }
            Some(Err(e)) => return Err(ClientError::Protocol(e)),
            Some(Ok(env)) => match env.frame {
                Frame::Heartbeat => {}
                Frame::Ok => return Ok(()),
                Frame::Error(e) => {
                    return Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    })
                }
                other => {
                    return Err(ClientError::Handshake(format!(
                        "expected Ok or Error in answer to Open, got {}",
                        other.opcode().name()
                    )))
                }
            },
        }
    }
}

/// State shared by the client handles and the connection's tasks.
pub(crate) struct Connection {
    /// Frames on their way to the writer task, already encoded. Its own lock, never held
    /// with the state lock.
    outgoing: Mutex<Outgoing>,
    /// Wakes the writer when bytes were added (a permit is kept if it is not waiting).
    wake_writer: Notify,
    /// Wakes callers waiting for room when the writer took the buffer or the connection ended.
    room: Notify,
    state: Mutex<State>,
    next_request_id: AtomicU64,
    /// Cancelled when the connection ends; stops the reader and heartbeat, drains the writer.
    shutdown: CancellationToken,
    /// Why the server is not reading this connection (a resource alarm), while it is not.
    blocked: tokio::sync::watch::Sender<Option<String>>,
}

/// The result of a successful [`connect`]: the shared state, the server's greeting and the
/// writer task (which [`crate::client::Client::close`] waits for).
pub(crate) struct Opened {
    pub(crate) connection: Arc<Connection>,
    pub(crate) hello: Hello,
    pub(crate) writer_task: JoinHandle<()>,
}

/// Opens a TCP connection (inside TLS when `tls` is given), performs the handshake and
/// starts the tasks. The caller bounds it with a timeout.
pub(crate) async fn connect(
    addr: &str,
    tls: Option<&ClientTls>,
    options: &ConnectOptions,
) -> Result<Opened, ClientError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let Some(tls) = tls else {
        // The socket's own halves: no lock between the reader and the writer.
        return open(addr, stream.into_split(), None, options).await;
    };
    let name = tls.server_name_for(addr);
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|_| ClientError::Tls(TlsError::ServerName(name.clone())))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let stream = connector
        .connect(server_name, stream)
        .await
        .map_err(|e| tls_failure(addr, &name, e))?;
    open(addr, tokio::io::split(stream), Some(&name), options).await
}

/// The Warren handshake over the stream's halves, then the tasks. `tls_name` is the TLS
/// server name, when the stream is TLS, for the errors.
async fn open<R, W>(
    addr: &str,
    (mut read_half, mut write_half): (R, W),
    tls_name: Option<&str>,
    options: &ConnectOptions,
) -> Result<Opened, ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    write_half
        .write_all(&client_preface(PROTOCOL_VERSION))
        .await?;
    // TLS buffers what is written; TCP's flush is a no-op.
    write_half.flush().await?;
    if let Some(name) = tls_name {
        // A TLS server refuses a connection it does not like (no client certificate, in TLS
        // 1.3) with an alert that arrives as the first read fails. The codec would keep only
        // the error's text, so the first bytes are read here, where rustls's error is whole.
        let mut first = bytes::BytesMut::with_capacity(4096);
        match read_half.read_buf(&mut first).await {
            Err(e) if is_tls(&e) => return Err(tls_failure(addr, name, e)),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        // What was read goes first (a `FramedRead` would read before decoding a filled
        // buffer, and the server waits after its Hello).
        let read_half = std::io::Cursor::new(first.freeze()).chain(read_half);
        return hello(
            addr,
            FramedRead::new(read_half, FrameCodec::default()),
            write_half,
            options,
        )
        .await;
    }
    hello(
        addr,
        FramedRead::new(read_half, FrameCodec::default()),
        write_half,
        options,
    )
    .await
}

/// Reads the server's `Hello`, then starts the tasks.
async fn hello<R, W>(
    addr: &str,
    mut reader: FramedRead<R, FrameCodec>,
    write_half: W,
    options: &ConnectOptions,
) -> Result<Opened, ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let hello = match reader.next().await {
        None => {
            return Err(ClientError::Handshake(
                "the server closed the connection before sending Hello".into(),
            ))
        }
        // The stream ended in the middle of something that is not a frame.
        Some(Err(DecodeError::Io(_))) if !reader.read_buffer().is_empty() => {
            return Err(not_warren(addr, reader.read_buffer()))
        }
        Some(Err(DecodeError::Io(e))) => {
            return Err(ClientError::Handshake(format!(
                "reading the server's Hello: {e}"
            )))
        }
        // A Warren server's first frame always decodes, so the peer speaks something else;
        // the codec leaves a refused length prefix in the buffer to be recognised.
        Some(Err(_)) => return Err(not_warren(addr, reader.read_buffer())),
        Some(Ok(env)) => match env.frame {
            Frame::Hello(hello) => hello,
            Frame::Error(e) => {
                return Err(ClientError::Server {
                    code: e.code,
                    message: e.message,
                })
            }
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected Hello, got {}",
                    other.opcode().name()
                )))
            }
        },
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(ClientError::Handshake(format!(
            "the server speaks protocol version {}, this client {PROTOCOL_VERSION}",
            hello.version
        )));
    }
    reader
        .decoder_mut()
        .set_max_frame_size(hello.max_frame_size);
    let mut write_half = write_half;
    login(&mut reader, &mut write_half, options).await?;

    let connection = Arc::new(Connection::new());
    let writer_task = tokio::spawn(write_loop(Arc::clone(&connection), write_half));
    // PROTOCOL.md §11: the server sends something at least every interval, so three silent
    // intervals mean it is gone.
    let silence_limit =
        (hello.heartbeat_ms > 0).then(|| Duration::from_millis(u64::from(hello.heartbeat_ms) * 3));
    tokio::spawn(read_loop(Arc::clone(&connection), reader, silence_limit));
    if hello.heartbeat_ms > 0 {
        let period = Duration::from_millis(u64::from(hello.heartbeat_ms / 2).max(1));
        tokio::spawn(heartbeat_loop(Arc::clone(&connection), period));
    }
    Ok(Opened {
        connection,
        hello,
        writer_task,
    })
}

impl Connection {
    pub(crate) fn new() -> Self {
        Connection {
            outgoing: Mutex::new(Outgoing::default()),
            wake_writer: Notify::new(),
            room: Notify::new(),
            state: Mutex::new(State::default()),
            next_request_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            blocked: tokio::sync::watch::Sender::new(None),
        }
    }

    /// Follows the server's `Blocked` / `Unblocked` notices.
    pub(crate) fn blocked(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.blocked.subscribe()
    }

    /// A fresh, non-zero request id.
    pub(crate) fn next_request_id(&self) -> RequestId {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps what the server said about a publish sent without a confirm.
    fn refused(&self, request_id: RequestId, kind: RefusalKind) {
        debug!(request_id, ?kind, "a publish without a confirm was refused");
        let mut state = self.state.lock();
        state.refused += 1;
        if state.refusals.len() >= MAX_KEPT_REFUSALS {
            state.refusals.pop_front();
        }
        state.refusals.push_back(Refusal { request_id, kind });
    }

    /// Takes the refusals kept so far, oldest first.
    pub(crate) fn take_refusals(&self) -> Vec<Refusal> {
        self.state.lock().refusals.drain(..).collect()
    }

    /// How many publishes without a confirm were refused on this connection so far.
    pub(crate) fn refused_count(&self) -> u64 {
        self.state.lock().refused
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// The close reason as `(code, reason)`; a generic one while still open.
    pub(crate) fn close_info(&self) -> (u16, String) {
        let state = self.state.lock();
        match &state.closed {
            Some(info) => (info.code, info.reason.clone()),
            None => (NO_CLOSE_CODE, "the connection state was dropped".into()),
        }
    }

    /// [`ClientError::Closed`] with the recorded reason.
    pub(crate) fn closed_error(&self) -> ClientError {
        let (code, reason) = self.close_info();
        ClientError::Closed { code, reason }
    }

    /// Registers a request before its frame is sent.
    pub(crate) fn register(&self, id: RequestId, pending: Pending) -> Result<(), ClientError> {
        let mut state = self.state.lock();
        if let Some(info) = &state.closed {
            return Err(info.to_error());
        }
        state.pending.insert(id, pending);
        Ok(())
    }

    /// Forgets a request whose frame was never sent.
    pub(crate) fn unregister(&self, id: RequestId) {
        self.state.lock().pending.remove(&id);
    }

    /// Queues a frame for the writer, waiting for room.
    pub(crate) async fn send(&self, envelope: Envelope) -> Result<(), ClientError> {
        self.send_with(|buf| envelope.encode(buf)).await
    }

    /// Queues a frame for the writer by letting `encode` append it, whole, to the outgoing
    /// bytes; waits first while more than [`MAX_BUFFERED_BYTES`] are waiting to be written.
    /// `encode` runs at most once, under the outgoing lock: it must only append.
    ///
    /// Cancel-safe: dropped while it waits, nothing was queued.
    pub(crate) async fn send_with(
        &self,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ClientError> {
        let mut encode = Some(encode);
        loop {
            {
                let mut out = self.outgoing.lock();
                if out.closed {
                    drop(out);
                    return Err(self.closed_error());
                }
                if out.buf.len() < MAX_BUFFERED_BYTES {
                    if let Some(encode) = encode.take() {
                        encode(&mut out.buf);
                    }
                    drop(out);
                    self.wake_writer.notify_one();
                    return Ok(());
                }
            }
            // Full: register for the writer's wake-up before looking again, so a take in
            // between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let out = self.outgoing.lock();
                if out.closed || out.buf.len() < MAX_BUFFERED_BYTES {
                    continue;
                }
            }
            room.await;
        }
    }

    /// Queues a frame without waiting, past [`MAX_BUFFERED_BYTES`] if need be; used where
    /// waiting could deadlock (the reader) or is impossible (`Drop`). `false` when the
    /// connection has ended and the frame was dropped.
    fn send_now(&self, envelope: &Envelope) -> bool {
        {
            let mut out = self.outgoing.lock();
            if out.closed {
                let opcode = envelope.frame.opcode().name();
                debug!(opcode, "the connection has ended; frame dropped");
                return false;
            }
            envelope.encode(&mut out.buf);
        }
        self.wake_writer.notify_one();
        true
    }

    /// Stops accepting frames (the writer still writes what it holds) and wakes every caller
    /// waiting for room, to fail.
    fn close_outgoing(&self) {
        self.outgoing.lock().closed = true;
        self.room.notify_waiters();
        self.wake_writer.notify_one();
    }

    /// Queues a normal `Close` without waiting (for `Drop`).
    pub(crate) fn close_now(&self) {
        self.send_now(&Envelope::new(self.next_request_id(), normal_close()));
    }

    /// Sets the waiter [`crate::client::Client::close`] uses; `false` if the connection is
    /// closed or already closing.
    pub(crate) fn set_close_waiter(&self, tx: oneshot::Sender<()>) -> bool {
        let mut state = self.state.lock();
        if state.closed.is_some() || state.closing {
            return false;
        }
        state.close_waiter = Some(tx);
        state.closing = true;
        true
    }

    /// Cancel for a [`crate::client::Consumer`] dropped while still running, without waiting
    /// for room in the writer queue (or the reply).
    pub(crate) fn cancel_dropped_consumer(&self, consumer_tag: &str) {
        let id = self.next_request_id();
        {
            let mut state = self.state.lock();
            if state.closed.is_some() || !state.consumers.contains_key(consumer_tag) {
                return;
            }
            state.pending.insert(
                id,
                Pending::Cancel {
                    consumer_tag: consumer_tag.to_owned(),
                    tx: None,
                },
            );
        }
        let cancel = Envelope::new(
            id,
            Frame::Cancel(Cancel {
                consumer_tag: consumer_tag.to_owned(),
                keep_unacked: false,
            }),
        );
        // `Drop` cannot wait for room; one small frame past the bound is harmless.
        if !self.send_now(&cancel) {
            self.unregister(id);
        }
    }

    /// Ends the connection: records `info` (unless a reason is already recorded), fails
    /// every pending request, ends every consumer and stops the tasks. Idempotent.
    pub(crate) fn connection_lost(&self, info: CloseInfo) {
        let (info, pending, consumers, waiter) = {
            let mut state = self.state.lock();
            let info = state.closed.get_or_insert(info).clone();
            (
                info,
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.consumers),
                state.close_waiter.take(),
            )
        };
        if !pending.is_empty() || !consumers.is_empty() {
            debug!(
                code = info.code,
                reason = %info.reason,
                pending = pending.len(),
                consumers = consumers.len(),
                "connection ended"
            );
        }
        for p in pending.into_values() {
            p.fail(info.to_error());
        }
        for slot in consumers.into_values() {
            let _ = slot
                .events
                .send(ConsumerEvent::Cancelled(CancelReason::ConnectionClosed {
                    code: info.code,
                    reason: info.reason.clone(),
                }));
        }
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
        self.close_outgoing();
        self.shutdown.cancel();
    }

    /// Handles one frame from the server. Synchronous on purpose: the reader finishes each
    /// frame (registering consumers, resolving requests) before it reads the next.
    pub(crate) fn handle(&self, envelope: Envelope) -> Flow {
        let id = envelope.request_id;
        match envelope.frame {
            Frame::Heartbeat => {}
            Frame::Blocked { reason } => {
                debug!(%reason, "the server blocked this connection");
                self.blocked.send_replace(Some(reason));
            }
            Frame::Unblocked => {
                debug!("the server unblocked this connection");
                self.blocked.send_replace(None);
            }
            Frame::Close(close) => {
                debug!(code = close.code, reason = %close.reason, "server closed the connection");
                self.send_now(&Envelope::new(id, Frame::CloseOk));
                self.connection_lost(CloseInfo::new(close.code, close.reason));
                return Flow::Stop;
            }
            Frame::CloseOk => {
                self.connection_lost(CloseInfo::new(
                    ErrorCode::Normal.as_u16(),
                    "closed by the client",
                ));
                return Flow::Stop;
            }
            Frame::Error(e) if id == 0 => {
                warn!(code = e.code, message = %e.message, "connection error from the server");
                self.connection_lost(CloseInfo::new(e.code, e.message));
                return Flow::Stop;
            }
            Frame::Error(e) if is_unconfirmed(id) => self.refused(
                id,
                RefusalKind::Error {
                    code: e.code,
                    message: e.message,
                },
            ),
            Frame::Return(r) if is_unconfirmed(id) => self.refused(
                id,
                RefusalKind::Returned {
                    reply_code: r.reply_code,
                    reply_text: r.reply_text,
                },
            ),
            Frame::Confirm(Confirm::Nack { code, reason }) if is_unconfirmed(id) => {
                self.refused(id, RefusalKind::Nacked { code, reason });
            }
            // Taken after all (the server sends none: PROTOCOL.md, 0x30 Publish).
            Frame::Confirm(_) if is_unconfirmed(id) => {}
            Frame::Error(e) => self.fail_request(
                id,
                ClientError::Server {
                    code: e.code,
                    message: e.message,
                },
            ),
            Frame::Return(r) => {
                let mut state = self.state.lock();
                match state.pending.get_mut(&id) {
                    Some(Pending::Publish { returned, .. }) => {
                        *returned = Some((r.reply_code, r.reply_text));
                    }
                    _ => debug!(request_id = id, "Return for no pending publish"),
                }
            }
            Frame::Confirm(confirm) => self.confirm(id, confirm),
            Frame::ConsumeOk(tag) => self.consume_ok(id, tag.consumer_tag),
            Frame::Deliver(d) => self.deliver(d),
            Frame::ConsumerCancelled(c) => {
                let slot = self.state.lock().consumers.remove(&c.consumer_tag);
                match slot {
                    Some(slot) => {
                        let _ = slot
                            .events
                            .send(ConsumerEvent::Cancelled(CancelReason::Server {
                                code: c.code,
                                reason: c.reason,
                            }));
                    }
                    None => debug!(consumer_tag = %c.consumer_tag, "cancel for unknown consumer"),
                }
            }
            frame @ (Frame::Ok
            | Frame::QueueDeclareOk(_)
            | Frame::QueueDeleteOk { .. }
            | Frame::QueuePurgeOk { .. }
            | Frame::GetOk(_)
            | Frame::GetEmpty
            | Frame::AdminOk { .. }) => self.reply(id, frame),
            other => {
                // A client-to-server opcode (or a second Hello): PROTOCOL.md §9 says to close.
                let opcode = other.opcode().name();
                warn!(
                    opcode,
                    request_id = id,
                    "the server sent a frame it must not send; closing"
                );
                let reason = format!("the server sent a {opcode} frame");
                self.send_now(&Envelope::new(
                    self.next_request_id(),
                    Frame::Close(Close {
                        code: ErrorCode::UnexpectedFrame.as_u16(),
                        reason: reason.clone(),
                    }),
                ));
                self.connection_lost(CloseInfo::new(ErrorCode::UnexpectedFrame.as_u16(), reason));
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn take_pending(&self, id: RequestId) -> Option<Pending> {
        let pending = self.state.lock().pending.remove(&id);
        if pending.is_none() {
            debug!(request_id = id, "reply for no pending request");
        }
        pending
    }

    fn fail_request(&self, id: RequestId, err: ClientError) {
        if let Some(pending) = self.take_pending(id) {
            pending.fail(err);
        }
    }

    fn reply(&self, id: RequestId, frame: Frame) {
        let Some(pending) = self.take_pending(id) else {
            return;
        };
        match pending {
            Pending::Reply(tx) => {
                let _ = tx.send(Ok(frame));
            }
            Pending::Cancel { consumer_tag, tx } => {
                if frame == Frame::Ok {
                    let slot = self.state.lock().consumers.remove(&consumer_tag);
                    if let Some(slot) = slot {
                        let _ = slot
                            .events
                            .send(ConsumerEvent::Cancelled(CancelReason::Cancelled));
                    }
                }
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(frame));
                }
            }
            Pending::Publish { tx, .. } => {
                let _ = tx.send(Err(unexpected("Confirm", &frame)));
            }
            Pending::Consume { tx, .. } => {
                let _ = tx.send(Err(unexpected("ConsumeOk", &frame)));
            }
        }
    }

    fn confirm(&self, id: RequestId, confirm: Confirm) {
        let Some(pending) = self.take_pending(id) else {
            return;
        };
        match pending {
            Pending::Publish { tx, returned } => {
                let outcome = match (confirm, returned) {
                    (Confirm::Nack { code, reason }, _) => PublishOutcome::Nacked { code, reason },
                    (Confirm::Ack, Some((reply_code, reply_text))) => PublishOutcome::Returned {
                        reply_code,
                        reply_text,
                    },
                    (Confirm::Ack, None) => PublishOutcome::Confirmed,
                    (Confirm::Duplicate, _) => PublishOutcome::Duplicate,
                };
                let _ = tx.send(Ok(outcome));
            }
            other => other.fail(ClientError::UnexpectedReply {
                expected: "a reply other than Confirm",
                got: "Confirm",
            }),
        }
    }

    fn consume_ok(&self, id: RequestId, consumer_tag: String) {
        let Some(pending) = self.take_pending(id) else {
            return;
        };
        let (tx, slot) = match pending {
            Pending::Consume { tx, slot } => (tx, slot),
            other => {
                other.fail(ClientError::UnexpectedReply {
                    expected: "a reply other than ConsumeOk",
                    got: "ConsumeOk",
                });
                return;
            }
        };
        {
            let mut state = self.state.lock();
            if let Some(info) = &state.closed {
                let _ = tx.send(Err(info.to_error()));
                return;
            }
            if state.consumers.contains_key(&consumer_tag) {
                warn!(%consumer_tag, "server reused a consumer tag still in use; replacing it");
            }
            state.consumers.insert(consumer_tag.clone(), slot);
        }
        if tx.send(Ok(consumer_tag.clone())).is_err() {
            // The caller gave up waiting; the server-side consumer has nobody to feed.
            self.cancel_dropped_consumer(&consumer_tag);
        }
    }

    /// Hands a delivery to its consumer in the box the decoder made: the consumer's channel
    /// moves a pointer, not the whole message.
    fn deliver(&self, d: Box<Deliver>) {
        let state = self.state.lock();
        if state.closing {
            // §12: after our Close, deliveries are ignored; the server requeues them.
            return;
        }
        match state.consumers.get(&d.consumer_tag) {
            Some(slot) => {
                let tag = d.delivery_tag;
                if slot.events.send(ConsumerEvent::Delivery(d)).is_err() {
                    // The Consumer was dropped and its Cancel is on the way; the server
                    // requeues the consumer's unacked deliveries when it cancels it, so
                    // nothing is sent for this one (a nack would race the cancel and an
                    // unknown tag closes the connection).
                    debug!(delivery_tag = tag, "delivery for a dropped consumer");
                }
            }
            None => warn!(
                consumer_tag = %d.consumer_tag,
                delivery_tag = d.delivery_tag,
                "delivery for an unknown consumer"
            ),
        }
    }
}

/// The `Close` a client sends when it is done: 200, "bye".
pub(crate) fn normal_close() -> Frame {
    Frame::Close(Close {
        code: ErrorCode::Normal.as_u16(),
        reason: "bye".into(),
    })
}

/// [`ClientError::UnexpectedReply`] for a reply frame.
pub(crate) fn unexpected(expected: &'static str, got: &Frame) -> ClientError {
    ClientError::UnexpectedReply {
        expected,
        got: got.opcode().name(),
    }
}

/// What woke the reader.
enum ReadEvent {
    Frame(Option<Result<Envelope, DecodeError>>),
    Shutdown,
    Watchdog,
}

async fn read_loop<R: AsyncRead + Unpin>(
    connection: Arc<Connection>,
    mut reader: FramedRead<R, FrameCodec>,
    silence_limit: Option<Duration>,
) {
    // One timer for the connection, moved forward only when it fires: cheaper than a new
    // timer per frame. Frames are counted, not timed (a clock read per frame was two per
    // message between a publisher's and a consumer's connection); the timer fires every
    // quarter of the limit and notes when the count last moved, so silence is noticed at
    // most a quarter of the limit late.
    let check_every = silence_limit.unwrap_or_default() / 4;
    let mut frames = 0u64;
    let mut frames_at_check = 0u64;
    let mut last_frame = Instant::now();
    let watchdog = tokio::time::sleep(check_every);
    tokio::pin!(watchdog);
    // Made once: a `cancelled()` future registers with the token (under its lock) when
    // first polled, and a new one per frame did that for every frame.
    let cancelled = connection.shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut frames_unchecked = 0u32;
    loop {
        let event = std::future::poll_fn(|cx| {
            // The socket first: a frame already buffered, or readable now, is handled
            // without polling the shutdown token or the timer; those are looked at when
            // the reader would wait, and every FRAMES_PER_SHUTDOWN_CHECK frames.
            let reader_polled = frames_unchecked < FRAMES_PER_SHUTDOWN_CHECK;
            if reader_polled {
                if let Poll::Ready(next) = reader.poll_next_unpin(cx) {
                    frames_unchecked += 1;
                    return Poll::Ready(ReadEvent::Frame(next));
                }
            }
            frames_unchecked = 0;
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(ReadEvent::Shutdown);
            }
            if silence_limit.is_some() && watchdog.as_mut().poll(cx).is_ready() {
                return Poll::Ready(ReadEvent::Watchdog);
            }
            if reader_polled {
                return Poll::Pending;
            }
            reader.poll_next_unpin(cx).map(ReadEvent::Frame)
        })
        .await;
        let next = match event {
            ReadEvent::Frame(next) => next,
            ReadEvent::Shutdown => return,
            ReadEvent::Watchdog => {
                let limit = silence_limit.unwrap_or_default();
                let now = Instant::now();
                if frames != frames_at_check {
                    frames_at_check = frames;
                    last_frame = now;
                }
                if now < last_frame + limit {
                    watchdog.as_mut().reset(now + check_every);
                    continue;
                }
                connection.connection_lost(CloseInfo::new(
                    ErrorCode::HeartbeatTimeout.as_u16(),
                    format!(
                        "nothing received from the server for {} ms",
                        limit.as_millis()
                    ),
                ));
                return;
            }
        };
        frames = frames.wrapping_add(1);
        match next {
            Some(Ok(envelope)) => {
                if connection.handle(envelope) == Flow::Stop {
                    return;
                }
            }
            Some(Err(DecodeError::Io(e))) => {
                connection.connection_lost(CloseInfo::local(format!("connection lost: {e}")));
                return;
            }
            Some(Err(e)) => {
                warn!(error = %e, "undecodable frame from the server; closing");
                connection.send_now(&Envelope::new(
                    connection.next_request_id(),
                    Frame::Close(Close {
                        code: ErrorCode::FrameError.as_u16(),
                        reason: e.to_string(),
                    }),
                ));
                connection.connection_lost(CloseInfo::new(
                    ErrorCode::FrameError.as_u16(),
                    format!("undecodable frame from the server: {e}"),
                ));
                return;
            }
            None => {
                connection.connection_lost(CloseInfo::local("the server closed the connection"));
                return;
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(connection: Arc<Connection>, mut sink: W) {
    // What the writer took from the outgoing buffer and has not written yet; swapped with
    // the callers' buffer, so the two allocations are reused.
    let mut chunk = BytesMut::new();
    let result = tokio::select! {
        result = pump(&connection, &mut chunk, &mut sink) => result,
        () = connection.shutdown.cancelled() => Ok(()),
    };
    if let Err(e) = result {
        connection.connection_lost(CloseInfo::local(format!("writing to the server: {e}")));
        return;
    }
    // Closing: send what is already queued (fire-and-forget acks, Close, CloseOk), bounded,
    // then shut the socket's write side. A write cut short above resumes here: `chunk`
    // holds exactly what was not written.
    connection.close_outgoing();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        loop {
            write_chunk(&mut chunk, &mut sink).await?;
            if !connection.take_outgoing(&mut chunk) {
                break;
            }
        }
        sink.flush().await?;
        sink.shutdown().await
    })
    .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "could not send the last frames"),
        Err(_) => debug!("gave up sending the last frames after {DRAIN_TIMEOUT:?}"),
    }
}

impl Connection {
    /// Swaps the outgoing bytes into the writer's empty `chunk`; `false` if there were none.
    /// Wakes the callers waiting for room.
    fn take_outgoing(&self, chunk: &mut BytesMut) -> bool {
        {
            let mut out = self.outgoing.lock();
            if out.buf.is_empty() {
                return false;
            }
            std::mem::swap(&mut out.buf, chunk);
        }
        self.room.notify_waiters();
        true
    }
}

/// Writes all of `chunk`, advancing it as bytes go out, so that a write cancelled part way
/// leaves in it what is still to be written.
async fn write_chunk<W: AsyncWrite + Unpin>(
    chunk: &mut BytesMut,
    sink: &mut W,
) -> std::io::Result<()> {
    while !chunk.is_empty() {
        if sink.write_buf(chunk).await? == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
    }
    // Everything is written: empty from the start again, so the allocation is reused.
    chunk.clear();
    Ok(())
}

/// Writes frames as they come: whatever callers have encoded by the time the last write is
/// done goes out in the next one, then a flush (TLS buffers; TCP's flush is a no-op).
async fn pump<W: AsyncWrite + Unpin>(
    connection: &Connection,
    chunk: &mut BytesMut,
    sink: &mut W,
) -> std::io::Result<()> {
    loop {
        if !connection.take_outgoing(chunk) {
            // A caller that appends after the look above leaves a permit: no lost wake-up.
            connection.wake_writer.notified().await;
            if connection.outgoing.lock().closed {
                return Ok(());
            }
            continue;
        }
        write_chunk(chunk, sink).await?;
        sink.flush().await?;
    }
}

async fn heartbeat_loop(connection: Arc<Connection>, period: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = Envelope::new(0, Frame::Heartbeat);
    loop {
        tokio::select! {
            biased;
            () = connection.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        {
            let mut out = connection.outgoing.lock();
            if out.closed {
                return;
            }
            // A full buffer means frames are flowing anyway.
            if out.buf.len() >= MAX_BUFFERED_BYTES {
                continue;
            }
            heartbeat.encode(&mut out.buf);
        }
        connection.wake_writer.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use warren_protocol::{ConsumerTag, Deliver, ErrorFrame, Properties, Return};

    fn connection() -> Connection {
        Connection::new()
    }

    /// The frames queued for the writer so far, decoded, and taken.
    fn sent(conn: &Connection) -> Vec<Envelope> {
        use tokio_util::codec::Decoder;
        let mut buf = std::mem::take(&mut conn.outgoing.lock().buf);
        let mut codec = FrameCodec::default();
        let mut frames = Vec::new();
        while let Some(env) = codec.decode(&mut buf).unwrap() {
            frames.push(env);
        }
        assert!(buf.is_empty(), "a partial frame was queued");
        frames
    }

    fn deliver(tag: &str, delivery_tag: u64) -> Frame {
        Frame::Deliver(Box::new(Deliver {
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered: false,
            delivery_count: 0,
            acquired_count: 0,
            stream_offset: None,
            exchange: "ex".into(),
            routing_key: "rk".into(),
            properties: Properties::default(),
            body: Bytes::from_static(b"m"),
        }))
    }

    #[test]
    fn a_return_then_an_ack_is_returned() {
        let conn = connection();
        let (tx, mut rx) = oneshot::channel();
        conn.register(7, Pending::Publish { tx, returned: None })
            .unwrap();
        conn.handle(Envelope::new(
            7,
            Frame::Return(Box::new(Return {
                reply_code: 312,
                reply_text: "no route".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
                properties: Properties::default(),
                body: Bytes::new(),
            })),
        ));
        assert!(rx.try_recv().is_err(), "a Return alone resolves nothing");
        conn.handle(Envelope::new(7, Frame::Confirm(Confirm::Ack)));
        assert_eq!(
            rx.try_recv().unwrap().unwrap(),
            PublishOutcome::Returned {
                reply_code: 312,
                reply_text: "no route".into()
            }
        );
    }

    #[test]
    fn an_error_for_a_publish_is_a_server_error() {
        let conn = connection();
        let (tx, mut rx) = oneshot::channel();
        conn.register(3, Pending::Publish { tx, returned: None })
            .unwrap();
        conn.handle(Envelope::new(
            3,
            Frame::Error(ErrorFrame::new(ErrorCode::NotFound, "no exchange 'x'")),
        ));
        let err = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "NOT_FOUND (404): no exchange 'x'");
    }

    #[test]
    fn deliveries_right_after_consume_ok_reach_the_new_consumer() {
        let conn = connection();
        let (tx, mut tag_rx) = oneshot::channel();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        conn.register(
            1,
            Pending::Consume {
                tx,
                slot: ConsumerSlot { events: events_tx },
            },
        )
        .unwrap();
        conn.handle(Envelope::new(
            1,
            Frame::ConsumeOk(ConsumerTag {
                consumer_tag: "amq.ctag-1".into(),
            }),
        ));
        conn.handle(Envelope::new(0, deliver("amq.ctag-1", 1)));
        assert_eq!(tag_rx.try_recv().unwrap().unwrap(), "amq.ctag-1");
        match events.try_recv().unwrap() {
            ConsumerEvent::Delivery(d) => assert_eq!(d.delivery_tag, 1),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn deliveries_to_a_dropped_consumer_are_left_to_its_cancel() {
        // A nack here would race the cancel, after which the server has already requeued
        // the delivery and a fire-and-forget nack of its unknown tag closes the connection.
        let conn = connection();
        let (events_tx, events) = mpsc::unbounded_channel();
        conn.state
            .lock()
            .consumers
            .insert("c".into(), ConsumerSlot { events: events_tx });
        drop(events);
        assert_eq!(
            conn.handle(Envelope::new(0, deliver("c", 9))),
            Flow::Continue
        );
        assert!(sent(&conn).is_empty());
    }

    #[test]
    fn deliveries_after_our_close_are_ignored_but_replies_are_not() {
        let conn = connection();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        conn.state
            .lock()
            .consumers
            .insert("c".into(), ConsumerSlot { events: events_tx });
        let (tx, mut confirm) = oneshot::channel();
        conn.register(8, Pending::Publish { tx, returned: None })
            .unwrap();
        let (waiter, _closed) = oneshot::channel();
        assert!(conn.set_close_waiter(waiter));
        conn.handle(Envelope::new(0, deliver("c", 1)));
        conn.handle(Envelope::new(8, Frame::Confirm(Confirm::Ack)));
        assert!(events.try_recv().is_err());
        assert_eq!(
            confirm.try_recv().unwrap().unwrap(),
            PublishOutcome::Confirmed
        );
    }

    #[test]
    fn a_client_to_server_frame_from_the_server_closes_the_connection() {
        let conn = connection();
        let flow = conn.handle(Envelope::new(
            0,
            Frame::Qos(warren_protocol::Qos { prefetch_count: 1 }),
        ));
        assert_eq!(flow, Flow::Stop);
        match sent(&conn).remove(0).frame {
            Frame::Close(c) => assert_eq!(c.code, 505),
            other => panic!("expected Close, got {other:?}"),
        }
        assert_eq!(conn.close_info().0, 505);
    }

    #[test]
    fn connection_errors_fail_everything_with_the_server_reason() {
        let conn = connection();
        let (tx, mut reply) = oneshot::channel();
        conn.register(4, Pending::Reply(tx)).unwrap();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        conn.state
            .lock()
            .consumers
            .insert("c".into(), ConsumerSlot { events: events_tx });
        let flow = conn.handle(Envelope::new(
            0,
            Frame::Error(ErrorFrame::new(ErrorCode::InternalError, "disk full")),
        ));
        assert_eq!(flow, Flow::Stop);
        let err = reply.try_recv().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection closed: INTERNAL_ERROR (541): disk full"
        );
        match events.try_recv().unwrap() {
            ConsumerEvent::Cancelled(CancelReason::ConnectionClosed { code, .. }) => {
                assert_eq!(code, 541);
            }
            other => panic!("expected the consumer to end, got {other:?}"),
        }
        // Later requests fail at once, and the first reason is kept.
        conn.connection_lost(CloseInfo::local("eof"));
        let (tx, _rx2) = oneshot::channel();
        let err = conn.register(5, Pending::Reply(tx)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection closed: INTERNAL_ERROR (541): disk full"
        );
        assert!(conn.shutdown.is_cancelled());
    }

    #[test]
    fn a_server_close_is_answered_with_close_ok() {
        let conn = connection();
        let flow = conn.handle(Envelope::new(
            0,
            Frame::Close(Close {
                code: 320,
                reason: "shutting down".into(),
            }),
        ));
        assert_eq!(flow, Flow::Stop);
        assert_eq!(sent(&conn)[0].frame, Frame::CloseOk);
        assert_eq!(conn.close_info(), (320, "shutting down".into()));
    }

    #[test]
    fn cancel_ok_ends_the_consumer_as_cancelled() {
        let conn = connection();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        conn.state
            .lock()
            .consumers
            .insert("c".into(), ConsumerSlot { events: events_tx });
        let (tx, mut reply) = oneshot::channel();
        conn.register(
            2,
            Pending::Cancel {
                consumer_tag: "c".into(),
                tx: Some(tx),
            },
        )
        .unwrap();
        conn.handle(Envelope::new(2, Frame::Ok));
        assert_eq!(reply.try_recv().unwrap().unwrap(), Frame::Ok);
        assert!(matches!(
            events.try_recv().unwrap(),
            ConsumerEvent::Cancelled(CancelReason::Cancelled)
        ));
        assert!(conn.state.lock().consumers.is_empty());
    }
}
