//! The connection's read loop and dispatch: one `match` from frame to broker call, with errors
//! handled by kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};
use warren_protocol::{
    DecodeError, Envelope, ErrorCode, Frame, FrameCodec, RequestId, PUBLISH_HEADROOM_BYTES,
};

use super::authorize::{authorize, PublishGrants};
use super::refusals::RefusalLog;
use super::ConnectionConfig;
use crate::broker::confirm::ReplySlot;
use crate::broker::event::Event;
use crate::broker::session::{Session, MAX_PUBLISHES_IN_FLIGHT};
use crate::broker::Broker;
use crate::clip;
use crate::error::BrokerError;
use crate::stop::Stop;

/// How long a connection closing for shutdown waits for the confirms it owes.
const CONFIRM_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection closing for shutdown reads on for the client's `CloseOk`. A client
/// answers within a round trip; the bound keeps drain plus linger well inside the server's
/// 10 s shutdown drain even for one that never answers.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// After the server's `Close`, reads on (bounded), discarding, until the client answers
/// `CloseOk` or leaves. A socket closed with unread input is reset, and the reset would
/// destroy what is still on its way to the client: the last confirms and the `Close`.
/// Frames read here are not acted on (a publish among them is not confirmed, so the client
/// knows to send it again).
async fn linger<R: AsyncRead + Unpin>(frames: &mut FramedRead<R, FrameCodec>) {
    let until = tokio::time::Instant::now() + LINGER_TIMEOUT;
    loop {
        match tokio::time::timeout_at(until, frames.next()).await {
            Ok(Some(Ok(env))) if !matches!(env.frame, Frame::CloseOk) => {}
            _ => return,
        }
    }
}

/// Waits (bounded) until every publish read on this connection has had its confirm written:
/// each holds a permit until then.
async fn drain_confirms(session: &Session, writer_gone: &Stop) {
    let all = u32::try_from(MAX_PUBLISHES_IN_FLIGHT).unwrap_or(u32::MAX);
    let drained = tokio::select! {
        d = tokio::time::timeout(
            CONFIRM_DRAIN_TIMEOUT,
            session.publish_permits.acquire_many(all),
        ) => d.is_ok(),
        // Nothing more will be written: no confirm can come back.
        () = writer_gone.cancelled() => true,
    };
    if !drained {
        tracing::warn!(
            connection = session.id,
            "closing with confirms still owed: the store did not answer in time"
        );
    }
}

/// Heartbeat intervals of silence after which a client is considered gone.
const MISSED_HEARTBEATS: u32 = 3;

/// Why the read loop ended.
pub(super) enum Ended {
    ClientClosed,
    Eof,
    Io(String),
    BadFrame(String),
    HeartbeatTimeout,
    FrameTimeout(String),
    WriterGone,
    ServerShutdown,
    Forced(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ClientClosed => write!(f, "closed by client"),
            Ended::Eof => write!(f, "client disconnected"),
            Ended::Io(e) => write!(f, "i/o error: {e}"),
            Ended::BadFrame(e) => write!(f, "bad frame: {e}"),
            Ended::HeartbeatTimeout => write!(f, "heartbeat timeout"),
            Ended::FrameTimeout(e) => write!(f, "frame timeout: {e}"),
            Ended::WriterGone => write!(
                f,
                "the client took no data within the write timeout, or went away"
            ),
            Ended::ServerShutdown => write!(f, "server shutting down"),
            Ended::Forced(reason) => write!(f, "closed by the server: {reason}"),
        }
    }
}

/// Where the read loop waits for more than a frame, besides the socket: the server shutting
/// down, and the writer giving up (the peer stopped taking data or went away).
pub(super) struct Stops<'a> {
    pub shutdown: &'a Stop,
    pub writer_gone: &'a Stop,
}

pub(super) async fn run<R: AsyncRead + IdleRead + Unpin>(
    frames: FramedRead<R, FrameCodec>,
    broker: &Broker,
    session: &Arc<Session>,
    config: &ConnectionConfig,
    stops: Stops<'_>,
) -> Ended {
    let mut refusals = RefusalLog::new(Instant::now());
    let ended = read_loop(frames, broker, session, config, &stops, &mut refusals).await;
    if let Some(n) = refusals.take_suppressed() {
        tracing::info!(
            connection = session.id,
            refusals = n,
            "refused requests not logged"
        );
    }
    ended
}

async fn read_loop<R: AsyncRead + IdleRead + Unpin>(
    mut frames: FramedRead<R, FrameCodec>,
    broker: &Broker,
    session: &Arc<Session>,
    config: &ConnectionConfig,
    stops: &Stops<'_>,
    refusals: &mut RefusalLog,
) -> Ended {
    let shutdown = stops.shutdown;
    let silence_limit = config.heartbeat.map(|h| h * MISSED_HEARTBEATS);
    let mut publish_grants = PublishGrants::default();
    loop {
        // Biased: a connection forced closed or shutting down reads no further request (a
        // frame already buffered must not run in a virtual host just deleted).
        // A frame already whole in the buffer (a pipelining client's usual case) is taken
        // without arming timers or polling the socket; the stops are checked just the same.
        let buffered = if stops.writer_gone.is_cancelled()
            || session.forced.is_cancelled()
            || shutdown.is_cancelled()
        {
            None
        } else {
            buffered_frame(&mut frames)
        };
        let next = if let Some(read) = buffered {
            read
        } else {
            tokio::select! {
            biased;
            () = stops.writer_gone.cancelled() => return Ended::WriterGone,
            () = session.forced.cancelled() => return forced(session, &mut frames).await,
            () = shutdown.cancelled() => {
                // Reading stops here; what was already published is answered before the
                // Close, so a client learns the fate of every message the server took.
                drain_confirms(session, stops.writer_gone).await;
                session.send(0, Event::Close {
                    code: ErrorCode::Normal,
                    reason: "server shutting down".into(),
                });
                linger(&mut frames).await;
                return Ended::ServerShutdown;
            }
            n = read(&mut frames, silence_limit, config.frame_timeout) => n,
            }
        };
        let envelope = match next {
            Read::Frame(env) => env,
            Read::Eof => return Ended::Eof,
            Read::Silent => {
                fatal(
                    session,
                    ErrorCode::HeartbeatTimeout,
                    "no frame within 3 heartbeat intervals",
                );
                return Ended::HeartbeatTimeout;
            }
            Read::FrameTimeout(text) => {
                fatal(session, ErrorCode::FrameError, &text);
                return Ended::FrameTimeout(text);
            }
            Read::Error(DecodeError::Io(e)) => return Ended::Io(e),
            Read::Error(e) => {
                fatal(session, ErrorCode::FrameError, &e.to_string());
                return Ended::BadFrame(e.to_string());
            }
        };
        if let Frame::Publish(p) = &envelope.frame {
            let persistent = p.properties.persistent;
            if let Some(reason) = broker.alarms().blocks(persistent) {
                wait_while_blocked(broker, session, persistent, reason, shutdown).await;
            }
        }
        let id = envelope.request_id;
        let publish_limit = config.max_frame_size.saturating_sub(PUBLISH_HEADROOM_BYTES);
        let frame_len = frames.decoder().last_frame_len();
        let too_large = match &envelope.frame {
            Frame::Publish(p) if frame_len > publish_limit => Some(p.body.len()),
            _ => None,
        };
        let oversized_header = frames.decoder().last_oversized_header();
        let oversized_arguments = frames.decoder().last_oversized_arguments();
        let result = if let Some(body) = too_large {
            Err(BrokerError::ContentTooLarge {
                body,
                size: frame_len as usize,
                max: publish_limit as usize,
            })
        } else if let Some(size) = oversized_header {
            Err(BrokerError::HeadersTooLarge {
                size,
                max: config.max_header_bytes as usize,
            })
        } else if let Some(size) = oversized_arguments {
            Err(BrokerError::ArgumentsTooLarge {
                size,
                max: warren_protocol::MAX_ARGUMENT_TABLE_BYTES,
            })
        } else if let Err(refused) = authorize(&session.user, &envelope.frame, &mut publish_grants)
        {
            Err(refused)
        } else {
            // A permit per publish in flight: when confirms lag, reading stops here and TCP
            // pushes back on the publisher. A client that stopped reading its confirms, then
            // closed or went silent, must not leave this wait parked for good, nor hold up
            // shutdown (nothing more can be answered to a client that takes no data).
            let permit = if !matches!(envelope.frame, Frame::Publish(_)) {
                None
            } else if let Ok(p) = session.publish_permits.try_acquire() {
                // The usual case, with confirms keeping up: no wait to set up.
                Some(p)
            } else {
                tokio::select! {
                    biased;
                    p = session.publish_permits.acquire() => match p {
                        Ok(p) => Some(p),
                        Err(_) => return Ended::WriterGone,
                    },
                    () = stops.writer_gone.cancelled() => return Ended::WriterGone,
                    () = session.forced.cancelled() => {
                        return forced(session, &mut frames).await;
                    }
                    () = shutdown.cancelled() => {
                        // Confirms are not draining (that is why this waits), so shutdown
                        // does not wait for them: the Close goes after what is queued.
                        session.send(0, Event::Close {
                            code: ErrorCode::Normal,
                            reason: "server shutting down".into(),
                        });
                        linger(&mut frames).await;
                        return Ended::ServerShutdown;
                    }
                }
            };
            dispatch(broker, session, envelope, config.max_frame_size, permit).await
        };
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => return Ended::ClientClosed,
            Err(e) => {
                // The text may echo what the client sent (a name, an argument): bounded.
                let full = e.to_string();
                let text = clip::text(&full);
                if matches!(e, BrokerError::Store(_)) {
                    tracing::error!(connection = session.id, error = %text, "request failed in the store");
                } else {
                    let (log, ended) = refusals.admit(Instant::now());
                    if let Some(n) = ended {
                        tracing::info!(
                            connection = session.id,
                            refusals = n,
                            "refused requests not logged"
                        );
                    }
                    if log {
                        tracing::info!(connection = session.id, request = id, code = e.code().as_u16(), error = %text, "request refused");
                    }
                }
                session.send(
                    id,
                    Event::Error {
                        code: e.code(),
                        text: text.clone().into_owned(),
                    },
                );
                if id == 0 {
                    // A request that wanted no reply (a fire-and-forget ack) failed: the client
                    // cannot match an error to it, so, as RabbitMQ closes the channel, the
                    // connection closes; its unacked deliveries are requeued.
                    return Ended::BadFrame(text.into_owned());
                }
            }
        }
    }
}

/// Closes a connection whose user or virtual host an operator deleted: `Close` with
/// `CONNECTION_FORCED` after what is already queued for the client. Unlike shutdown, it
/// does not wait for confirms: the virtual host's queues may be gone, and a publish not
/// confirmed is one the client knows to send again.
async fn forced<R: AsyncRead + Unpin>(
    session: &Session,
    frames: &mut FramedRead<R, FrameCodec>,
) -> Ended {
    let reason = session.forced_reason().to_owned();
    session.send(
        0,
        Event::Close {
            code: ErrorCode::ConnectionForced,
            reason: reason.clone(),
        },
    );
    linger(frames).await;
    Ended::Forced(reason)
}

/// Holds a publish that met a resource alarm until the alarm clears (or the server shuts
/// down). The connection's frames are not read meanwhile, so TCP pushes back on the
/// publisher; the client is told with `Blocked` and `Unblocked`.
async fn wait_while_blocked(
    broker: &Broker,
    session: &Session,
    persistent: bool,
    reason: &str,
    shutdown: &Stop,
) {
    tracing::info!(connection = session.id, reason, "connection blocked");
    session.send(
        0,
        Event::Blocked {
            reason: reason.to_owned(),
        },
    );
    let mut alarms = broker.alarms().subscribe();
    loop {
        if alarms.borrow_and_update().blocks(persistent).is_none() {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            // Closed by an operator: the read loop closes it next, blocked or not.
            () = session.forced.cancelled() => break,
            changed = alarms.changed() => if changed.is_err() { break },
        }
    }
    tracing::info!(connection = session.id, "connection unblocked");
    session.send(0, Event::Unblocked);
}

/// Bytes of read buffer a connection takes when bytes arrive after it went idle: what
/// `FramedRead` starts with. Larger frames grow it (the codec reserves as they arrive).
pub(super) const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A read half that can wait for bytes holding no buffer, so an idle connection costs no
/// read buffer: with thousands of mostly idle connections, the 8 KB each held while nothing
/// arrived (or the size of the last large frame) was a good part of what a connection cost.
pub(super) trait IdleRead {
    /// Whether [`IdleRead::read_when_ready`] works here; where it does not (TLS), the reader
    /// keeps its buffer while it waits.
    const CAN_WAIT: bool;

    /// Waits until bytes arrive and reads what is there into a fresh buffer; an empty one
    /// at the end of the stream.
    async fn read_when_ready(&self) -> std::io::Result<BytesMut>;
}

impl IdleRead for tokio::net::tcp::OwnedReadHalf {
    const CAN_WAIT: bool = true;

    async fn read_when_ready(&self) -> std::io::Result<BytesMut> {
        super::read_when_ready(self, READ_BUFFER_BYTES).await
    }
}

/// TLS: bytes on the socket are not yet bytes of the stream (rustls holds records), so the
/// stream cannot be read around its own buffers.
impl<T> IdleRead for tokio::io::ReadHalf<T> {
    const CAN_WAIT: bool = false;

    async fn read_when_ready(&self) -> std::io::Result<BytesMut> {
        Ok(BytesMut::new())
    }
}

enum Read {
    Frame(Envelope),
    Eof,
    Silent,
    FrameTimeout(String),
    Error(DecodeError),
}

/// Reads the next frame, giving up after `silence` with no whole frame (heartbeats) or after
/// `frame_timeout` once part of a frame has arrived. Bytes arriving are only visible between
/// reads, so with nothing buffered the read is interrupted every quarter `frame_timeout` to
/// look (reading is cancel-safe: buffered bytes stay buffered); a frame's clock therefore
/// starts at most that much after its first byte.
///
/// With nothing buffered, the read buffer is let go while the connection waits for bytes,
/// and a fresh [`READ_BUFFER_BYTES`] one taken when they come: an idle connection holds no
/// buffer, and one grown by a large frame shrinks back once that frame is read.
/// Decodes a frame already whole in the read buffer, if there is one: `None` when more
/// bytes are needed (the caller then reads, with its timeouts).
fn buffered_frame<R: AsyncRead + Unpin>(frames: &mut FramedRead<R, FrameCodec>) -> Option<Read> {
    if frames.read_buffer().is_empty() {
        return None;
    }
    // The decoder and the buffer cannot be borrowed together: the buffer steps out (a
    // `BytesMut` moves without copying its bytes) and back.
    let mut buf = std::mem::take(frames.read_buffer_mut());
    let decoded = frames.decoder_mut().decode(&mut buf);
    *frames.read_buffer_mut() = buf;
    match decoded {
        Ok(Some(env)) => Some(Read::Frame(env)),
        Ok(None) => None,
        Err(e) => Some(Read::Error(e)),
    }
}

async fn read<R: AsyncRead + IdleRead + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
    silence: Option<Duration>,
    frame_timeout: Option<Duration>,
) -> Read {
    let start = tokio::time::Instant::now();
    let silent_at = silence.map(|s| start + s);
    if R::CAN_WAIT && frames.read_buffer().is_empty() {
        // Frames already decoded from the old buffer keep their bytes alive on their own.
        *frames.read_buffer_mut() = BytesMut::new();
        let ready = frames.get_ref().read_when_ready();
        let got = match silent_at {
            Some(at) => match tokio::time::timeout_at(at, ready).await {
                Ok(got) => got,
                Err(_) => return Read::Silent,
            },
            None => ready.await,
        };
        match got {
            // Empty at the end of the stream: the read below finds the end again.
            Ok(bytes) => *frames.read_buffer_mut() = bytes,
            Err(e) => return Read::Error(DecodeError::from(e)),
        }
    }
    let look_every = frame_timeout.map(|t| (t / 4).max(Duration::from_millis(10)));
    // From now: a frame whose first bytes just ended an idle wait has its full time.
    let mut frame_due = frame_timeout
        .filter(|_| !frames.read_buffer().is_empty())
        .map(|t| tokio::time::Instant::now() + t);
    loop {
        let now = tokio::time::Instant::now();
        let look = match frame_due {
            Some(due) => Some(due),
            None => look_every.map(|l| now + l),
        };
        let wake = match (silent_at, look) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next = match wake {
            Some(at) => match tokio::time::timeout_at(at, frames.next()).await {
                Ok(n) => n,
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if silent_at.is_some_and(|s| now >= s) {
                        return Read::Silent;
                    }
                    if frame_due.is_some_and(|d| now >= d) {
                        return Read::FrameTimeout(incomplete(frames, frame_timeout));
                    }
                    if frame_due.is_none() && !frames.read_buffer().is_empty() {
                        frame_due = frame_timeout.map(|t| now + t);
                    }
                    continue;
                }
            },
            None => frames.next().await,
        };
        return match next {
            None => Read::Eof,
            Some(Ok(env)) => Read::Frame(env),
            Some(Err(e)) => Read::Error(e),
        };
    }
}

/// Why a partial frame was cut off, with how much of it had arrived.
fn incomplete<R>(frames: &FramedRead<R, FrameCodec>, limit: Option<Duration>) -> String {
    let buffered = frames.read_buffer();
    let secs = limit.map_or(0, |l| l.as_secs());
    match buffered.get(..4) {
        Some(prefix) => {
            let mut len = [0u8; 4];
            len.copy_from_slice(prefix);
            let total = u64::from(u32::from_le_bytes(len)) + 4;
            format!(
                "frame incomplete after {secs} s: {} of its {} bytes arrived; a frame must \
                 arrive whole within the server's frame timeout (--frame-timeout-secs)",
                crate::error::thousands(buffered.len()),
                crate::error::thousands(usize::try_from(total).unwrap_or(usize::MAX))
            )
        }
        None => format!(
            "frame incomplete after {secs} s: {} bytes of its length prefix arrived; a frame \
             must arrive whole within the server's frame timeout (--frame-timeout-secs)",
            buffered.len()
        ),
    }
}

/// Sends a connection-level error (request id 0); the connection then closes.
fn fatal(session: &Session, code: ErrorCode, message: &str) {
    session.send(
        0,
        Event::Error {
            code,
            text: message.to_owned(),
        },
    );
}

enum Flow {
    Continue,
    Close,
}

fn slot(session: &Session, id: RequestId) -> Option<ReplySlot> {
    (id != 0).then(|| ReplySlot::new(session.replies.clone(), id))
}

async fn dispatch(
    broker: &Broker,
    session: &Arc<Session>,
    env: Envelope,
    max_frame_size: u32,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<Flow, BrokerError> {
    let id = env.request_id;
    let reply = |event: Event| session.send(id, event);
    match env.frame {
        Frame::Heartbeat => {}
        Frame::Close(_) => {
            reply(Event::CloseOk);
            return Ok(Flow::Close);
        }
        Frame::CloseOk => return Ok(Flow::Close),
        Frame::ExchangeDeclare(d) => {
            broker.declare_exchange(session, d).await?;
            reply(Event::Ok);
        }
        Frame::ExchangeDelete(d) => {
            broker
                .delete_exchange(session, &d.name, d.if_unused)
                .await?;
            reply(Event::Ok);
        }
        Frame::ExchangeBind(b) => {
            broker.bind_exchange(session, b).await?;
            reply(Event::Ok);
        }
        Frame::ExchangeUnbind(b) => {
            broker.unbind_exchange(session, b).await?;
            reply(Event::Ok);
        }
        Frame::QueueDeclare(d) => reply(Event::QueueDeclareOk(
            broker.declare_queue(session, d).await?,
        )),
        Frame::QueueDelete(d) => {
            let message_count = broker
                .delete_queue(session, &d.name, d.if_unused, d.if_empty)
                .await?;
            reply(Event::QueueDeleteOk { message_count });
        }
        Frame::QueuePurge { name } => {
            let message_count = broker.purge_queue(session, &name).await?;
            reply(Event::QueuePurgeOk { message_count });
        }
        Frame::QueueBind(b) => {
            broker.bind(session, b).await?;
            reply(Event::Ok);
        }
        Frame::QueueUnbind(b) => {
            broker.unbind(session, b).await?;
            reply(Event::Ok);
        }
        Frame::Publish(p) => {
            // Taken by the read loop (which can stop waiting for it); held until the confirm
            // is written.
            let permit = permit.ok_or(BrokerError::ShuttingDown)?;
            session
                .published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            broker.publish(session, id, *p).await?;
            permit.forget();
        }
        Frame::Qos(q) => {
            session.set_prefetch(q.prefetch_count);
            reply(Event::Ok);
        }
        Frame::Consume(c) => broker.consume(session, id, c)?,
        Frame::Cancel(t) => {
            broker
                .cancel(session, &t.consumer_tag, t.keep_unacked)
                .await?;
            reply(Event::Ok);
        }
        Frame::Get(g) => match broker.get(session, g).await? {
            Some(got) => reply(Event::GetOk(got)),
            None => reply(Event::GetEmpty),
        },
        Frame::Ack(a) => {
            broker
                .ack(session, a.delivery_tag, a.multiple, slot(session, id))
                .await?
        }
        Frame::Nack(n) => {
            broker
                .nack(
                    session,
                    n.delivery_tag,
                    n.multiple,
                    n.requeue,
                    n.delay_ms,
                    slot(session, id),
                )
                .await?;
        }
        Frame::Reject(r) => {
            broker
                .reject(session, r.delivery_tag, r.requeue, slot(session, id))
                .await?;
        }
        Frame::Admin(a) => {
            let body = broker.admin(session, &a.command, &a.arguments).await?;
            // The reply must fit in a frame the client accepts.
            let max = max_frame_size.saturating_sub(PUBLISH_HEADROOM_BYTES) as usize;
            if body.len() > max {
                return Err(BrokerError::ResultTooLarge(format!(
                    "the {} result is {} bytes, more than fits in a frame ({max}); ask for fewer (--limit)",
                    a.command,
                    body.len()
                )));
            }
            reply(Event::AdminOk { json: body });
        }
        Frame::Open(_) => {
            return Err(BrokerError::UnexpectedFrame(
                "the connection is already open: Open is sent once, right after Hello".into(),
            ))
        }
        other => {
            return Err(BrokerError::UnexpectedFrame(format!(
                "{} is a server-to-client frame; a client may not send it",
                other.opcode().name()
            )))
        }
    }
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use warren_protocol::{Admin, FieldTable};

    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer_even_after_a_large_frame() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (read_half, _write_half) = server.into_split();
        let mut frames = FramedRead::new(read_half, FrameCodec::new(1 << 22));
        let large = Frame::Admin(Admin {
            command: "x".repeat(1 << 20),
            arguments: FieldTable::new(),
        });
        client
            .write_all(&Envelope::new(1, large).to_bytes())
            .await
            .expect("write");
        let Read::Frame(env) = read(&mut frames, None, None).await else {
            panic!("expected the large frame");
        };
        assert_eq!(env.request_id, 1);
        // Waiting for the next frame: no buffer held, whatever the last frame's size.
        {
            let next = read(&mut frames, None, None);
            tokio::pin!(next);
            assert!(futures::poll!(next.as_mut()).is_pending());
        }
        assert_eq!(frames.read_buffer().capacity(), 0);
        // Bytes arrive: a small buffer again, and the frame is read.
        client
            .write_all(&Envelope::new(2, Frame::Heartbeat).to_bytes())
            .await
            .expect("write");
        let Read::Frame(env) = read(&mut frames, None, None).await else {
            panic!("expected the heartbeat");
        };
        assert_eq!(env.request_id, 2);
        assert!(frames.read_buffer().capacity() <= READ_BUFFER_BYTES);
    }
}
