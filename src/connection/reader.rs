//! The connection's read loop and dispatch: one `match` from frame to broker call, with errors
//! handled by kind.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use warren_protocol::{
    DecodeError, Envelope, ErrorCode, Frame, FrameCodec, RequestId, PUBLISH_HEADROOM_BYTES,
};

use super::authorize::{authorize, PublishGrants};
use super::ConnectionConfig;
use crate::broker::confirm::ReplySlot;
use crate::broker::event::Event;
use crate::broker::session::{Session, MAX_PUBLISHES_IN_FLIGHT};
use crate::broker::Broker;
use crate::error::BrokerError;

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
async fn linger(frames: &mut FramedRead<OwnedReadHalf, FrameCodec>) {
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
async fn drain_confirms(session: &Session) {
    let all = u32::try_from(MAX_PUBLISHES_IN_FLIGHT).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        CONFIRM_DRAIN_TIMEOUT,
        session.publish_permits.acquire_many(all),
    )
    .await;
    if drained.is_err() {
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
    ServerShutdown,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ClientClosed => write!(f, "closed by client"),
            Ended::Eof => write!(f, "client disconnected"),
            Ended::Io(e) => write!(f, "i/o error: {e}"),
            Ended::BadFrame(e) => write!(f, "bad frame: {e}"),
            Ended::HeartbeatTimeout => write!(f, "heartbeat timeout"),
            Ended::ServerShutdown => write!(f, "server shutting down"),
        }
    }
}

pub(super) async fn run(
    mut frames: FramedRead<OwnedReadHalf, FrameCodec>,
    broker: &Broker,
    session: &Arc<Session>,
    config: &ConnectionConfig,
    shutdown: &CancellationToken,
) -> Ended {
    let silence_limit = config.heartbeat.map(|h| h * MISSED_HEARTBEATS);
    let mut publish_grants = PublishGrants::default();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => {
                // Reading stops here; what was already published is answered before the
                // Close, so a client learns the fate of every message the server took.
                drain_confirms(session).await;
                session.send(0, Event::Close {
                    code: ErrorCode::Normal,
                    reason: "server shutting down".into(),
                });
                linger(&mut frames).await;
                return Ended::ServerShutdown;
            }
            n = read(&mut frames, silence_limit) => n,
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
            Read::Error(DecodeError::Io(e)) => return Ended::Io(e),
            Read::Error(e) => {
                fatal(session, ErrorCode::FrameError, &e.to_string());
                return Ended::BadFrame(e.to_string());
            }
        };
        let id = envelope.request_id;
        let publish_limit = config.max_frame_size.saturating_sub(PUBLISH_HEADROOM_BYTES);
        let frame_len = frames.decoder().last_frame_len();
        let too_large = match &envelope.frame {
            Frame::Publish(p) if frame_len > publish_limit => Some(p.body.len()),
            _ => None,
        };
        let result = if let Some(body) = too_large {
            Err(BrokerError::ContentTooLarge {
                body,
                size: frame_len as usize,
                max: publish_limit as usize,
            })
        } else if let Err(refused) = authorize(&session.user, &envelope.frame, &mut publish_grants)
        {
            Err(refused)
        } else {
            dispatch(broker, session, envelope, config.max_frame_size).await
        };
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => return Ended::ClientClosed,
            Err(e) => {
                if matches!(e, BrokerError::Store(_)) {
                    tracing::error!(connection = session.id, error = %e, "request failed in the store");
                } else {
                    tracing::info!(connection = session.id, request = id, code = e.code().as_u16(), error = %e, "request refused");
                }
                session.send(
                    id,
                    Event::Error {
                        code: e.code(),
                        text: e.to_string(),
                    },
                );
                if id == 0 {
                    // A request that wanted no reply (a fire-and-forget ack) failed: the client
                    // cannot match an error to it, so, as RabbitMQ closes the channel, the
                    // connection closes; its unacked deliveries are requeued.
                    return Ended::BadFrame(e.to_string());
                }
            }
        }
    }
}

enum Read {
    Frame(Envelope),
    Eof,
    Silent,
    Error(DecodeError),
}

async fn read(frames: &mut FramedRead<OwnedReadHalf, FrameCodec>, limit: Option<Duration>) -> Read {
    let next = match limit {
        Some(limit) => match tokio::time::timeout(limit, frames.next()).await {
            Ok(n) => n,
            Err(_) => return Read::Silent,
        },
        None => frames.next().await,
    };
    match next {
        None => Read::Eof,
        Some(Ok(env)) => Read::Frame(env),
        Some(Err(e)) => Read::Error(e),
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
            // A permit per publish in flight: when confirms lag, reading stops here and TCP
            // pushes back on the publisher.
            let permit = session
                .publish_permits
                .acquire()
                .await
                .map_err(|_| BrokerError::ShuttingDown)?;
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
                .nack(
                    session,
                    r.delivery_tag,
                    false,
                    r.requeue,
                    0,
                    slot(session, id),
                )
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
