//! The connection's writer task: events and deliveries from the broker and confirms from the
//! store writer go onto the socket in batches — everything ready is fed, then one flush. Each
//! event becomes its frame here (`encode.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use warren_protocol::{DeliverRef, Envelope, Frame, FrameCodec};

use super::encode;
use crate::broker::session::{Outbound, Session};

/// Frames fed before a flush is forced, so one busy connection still writes regularly.
const MAX_FRAMES_PER_FLUSH: usize = 1024;

/// How long a finished writer may take to end the stream (a TLS `close_notify`).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

type Sink<W> = FramedWrite<W, FrameCodec>;

/// Writes until stopped or the socket fails, then ends the stream: on TCP a FIN (as dropping
/// the write half would), on TLS a `close_notify` first, so the client sees a clean end
/// rather than a truncation.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut sink: Sink<W>,
    rx: UnboundedReceiver<Outbound>,
    session: Arc<Session>,
    stop: CancellationToken,
    heartbeat: Option<Duration>,
) {
    write_loop(&mut sink, rx, session, stop, heartbeat).await;
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, sink.get_mut().shutdown()).await;
}

async fn write_loop<W: AsyncWrite + Unpin>(
    sink: &mut Sink<W>,
    mut rx: UnboundedReceiver<Outbound>,
    session: Arc<Session>,
    stop: CancellationToken,
    heartbeat: Option<Duration>,
) {
    let mut replies = Vec::new();
    // Checking every half interval keeps the longest silence near one interval (the client
    // gives up after three).
    let half = heartbeat.map(|h| h / 2);
    let mut ticker = tokio::time::interval(half.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_write = Instant::now();
    loop {
        let mut stopping = false;
        let mut first = None;
        let mut wrote = false;
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => first = Some(m),
                None => stopping = true,
            },
            () = session.replies.notified() => {}
            () = stop.cancelled() => stopping = true,
            _ = ticker.tick(), if half.is_some() => {
                if half.is_some_and(|h| last_write.elapsed() >= h) {
                    if sink.feed(Envelope::new(0, Frame::Heartbeat)).await.is_err() {
                        return;
                    }
                    wrote = true;
                }
            }
        }
        let mut confirms = 0usize;
        let mut fed = 0usize;
        let mut next = first;
        loop {
            let m = match next.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            if write(sink, m, &mut confirms).await.is_err() {
                return;
            }
            fed += 1;
            if fed >= MAX_FRAMES_PER_FLUSH {
                break;
            }
        }
        session.replies.drain_into(&mut replies);
        wrote |= fed > 0 || !replies.is_empty();
        for (request_id, event) in replies.drain(..) {
            if encode::is_confirm(&event) {
                confirms += 1;
            }
            if sink
                .feed(encode::envelope(request_id, event))
                .await
                .is_err()
            {
                return;
            }
        }
        if SinkExt::<Envelope>::flush(sink).await.is_err() {
            return;
        }
        // Only a frame actually written counts as activity: a tick that wrote nothing must not
        // postpone the next heartbeat.
        if wrote {
            last_write = Instant::now();
        }
        if confirms > 0 {
            session.publish_permits.add_permits(confirms);
        }
        if stopping && rx.is_empty() {
            return;
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(
    sink: &mut Sink<W>,
    m: Outbound,
    confirms: &mut usize,
) -> Result<(), std::io::Error> {
    match m {
        Outbound::Event { request_id, event } => {
            if encode::is_confirm(&event) {
                *confirms += 1;
            }
            sink.feed(encode::envelope(request_id, event)).await
        }
        Outbound::Deliver {
            consumer,
            delivery_tag,
            entry,
        } => {
            let result = match &entry.message {
                Some(message) => {
                    // Encoded straight from the shared message: no per-delivery copy of
                    // its properties.
                    sink.feed(DeliverRef {
                        consumer_tag: &consumer.tag,
                        delivery_tag,
                        redelivered: entry.acquired_count > 0,
                        delivery_count: entry.delivery_count,
                        acquired_count: entry.acquired_count,
                        exchange: &message.exchange,
                        routing_key: &message.routing_key,
                        properties: &message.properties,
                        body: &message.body,
                    })
                    .await
                }
                None => {
                    tracing::error!(
                        id = entry.id,
                        "a delivery without its body reached the writer"
                    );
                    Ok(())
                }
            };
            consumer.on_written();
            result
        }
    }
}
