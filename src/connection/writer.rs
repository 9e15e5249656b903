//! The connection's writer task: events and deliveries from the broker and confirms from the
//! store writer go onto the socket in batches — everything ready is fed, then one flush. Each
//! event becomes its frame here (`encode.rs`).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{Sink, SinkExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedWrite;
use warren_protocol::{DeliverRef, Envelope, Frame, FrameCodec};

use super::encode;
use crate::broker::outbox::OutboxReceiver;
use crate::broker::session::{Outbound, Session};
use crate::stop::Stop;

/// Frames fed before a flush is forced, so one busy connection still writes regularly.
const MAX_FRAMES_PER_FLUSH: usize = 1024;

/// The write buffer a batch starts with (what `FramedWrite` starts with); larger frames grow
/// it.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// A write buffer grown past this (by a large delivery) is let go after its flush even while
/// the connection stays busy, so one large message does not pin its size for good.
const WRITE_BUFFER_KEEP_BYTES: usize = 256 * 1024;

/// After a flush: lets the (empty) write buffer go when the writer is about to wait
/// (`idle`), or when a large frame grew it past [`WRITE_BUFFER_KEEP_BYTES`]. With thousands
/// of mostly idle connections, the 8 KB each held between batches was a good part of what a
/// connection cost; a busy writer keeps its buffer from batch to batch.
fn release_write_buffer(buf: &mut BytesMut, idle: bool) {
    if buf.is_empty() && (idle || buf.capacity() > WRITE_BUFFER_KEEP_BYTES) {
        *buf = BytesMut::new();
    }
}

/// How long a finished writer may take to end the stream (a TLS `close_notify`).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Once the connection is closing, how long the writer waits for a peer that takes no byte
/// before it gives up on what is left: a closing connection must not wait the full write
/// timeout (and shutdown must not wait for it).
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

type Out<W> = FramedWrite<W, FrameCodec>;

/// The writer's limits: no byte written for `timeout` (or for [`CLOSING_WRITE_TIMEOUT`] once
/// `stop` is cancelled) and the peer is taken to be gone.
struct Stall<'a> {
    timeout: Option<Duration>,
    stop: &'a Stop,
}

/// The socket, with every wait for it bounded by a [`Stall`].
struct Writer<'a, W> {
    sink: Out<W>,
    stall: Stall<'a>,
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    /// Feeds one frame. `feed` flushes first when the buffer is past its boundary, and that
    /// wait is where a peer that takes no data blocks us; it is done here, bounded, so the
    /// `feed` itself never waits (and no frame is dropped half-fed).
    async fn feed<I>(&mut self, item: I) -> std::io::Result<()>
    where
        Out<W>: Sink<I, Error = std::io::Error>,
    {
        self.progress(|sink, cx| Sink::<Envelope>::poll_ready(std::pin::Pin::new(sink), cx))
            .await?;
        let buf = self.sink.write_buffer_mut();
        if buf.capacity() == 0 {
            // Released while idle (`release_write_buffer`): one allocation per batch, not
            // one growth step per frame.
            buf.reserve(WRITE_BUFFER_BYTES);
        }
        self.sink.feed(item).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.progress(|sink, cx| Sink::<Envelope>::poll_flush(std::pin::Pin::new(sink), cx))
            .await
    }

    /// Drives `op` until it completes, failing with `TimedOut` when no byte of the write
    /// buffer has gone out for the stall limit. Slow peers that keep taking data are fine.
    async fn progress(
        &mut self,
        mut op: impl FnMut(&mut Out<W>, &mut Context<'_>) -> Poll<std::io::Result<()>>,
    ) -> std::io::Result<()> {
        // Most calls complete at once (room in the buffer, the socket taking the flush):
        // those need no clock reading, no timer and no select. A `Pending` here has
        // registered this task's waker, which the loop below polls with again.
        let sink = &mut self.sink;
        let at_once = std::future::poll_fn(|cx| Poll::Ready(op(sink, cx))).await;
        if let Poll::Ready(r) = at_once {
            return r;
        }
        let mut pending = self.sink.write_buffer().len();
        let mut since = tokio::time::Instant::now();
        loop {
            let limit = if self.stall.stop.is_cancelled() {
                Some(CLOSING_WRITE_TIMEOUT)
            } else {
                self.stall.timeout
            };
            let sink = &mut self.sink;
            let done = std::future::poll_fn(|cx| op(sink, cx));
            let stop = self.stall.stop;
            let outcome = match limit {
                Some(limit) => tokio::select! {
                    r = done => Some(r),
                    () = tokio::time::sleep_until(since + limit) => None,
                    () = stop.cancelled(), if !stop.is_cancelled() => None,
                },
                None => tokio::select! {
                    r = done => Some(r),
                    () = stop.cancelled(), if !stop.is_cancelled() => None,
                },
            };
            if let Some(r) = outcome {
                return r;
            }
            let now = tokio::time::Instant::now();
            let left = self.sink.write_buffer().len();
            if left < pending {
                pending = left;
                since = now;
            } else if limit.is_some_and(|l| now >= since + l) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client took no data for {} s (write timeout)",
                        limit.unwrap_or_default().as_secs_f32()
                    ),
                ));
            }
        }
    }
}

pub(super) async fn run<W: AsyncWrite + Unpin>(
    sink: Out<W>,
    rx: OutboxReceiver,
    session: Arc<Session>,
    stop: Stop,
    writer_gone: Stop,
    config: Arc<super::ConnectionConfig>,
) {
    // However the writer ends, the reader learns it and stops waiting on the client.
    let _gone = writer_gone.drop_guard();
    let mut out = Writer {
        sink,
        stall: Stall {
            timeout: config.write_timeout,
            stop: &stop,
        },
    };
    if let Err(e) = write_loop(&mut out, rx, &session, &stop, config.heartbeat).await {
        tracing::info!(connection = session.id, error = %e, "connection writer stopped");
    }
    // End the stream: on TCP a FIN (as dropping the write half would), on TLS a
    // `close_notify` first, so the client sees a clean end rather than a truncation.
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, out.sink.get_mut().shutdown()).await;
}

async fn write_loop<W: AsyncWrite + Unpin>(
    sink: &mut Writer<'_, W>,
    mut rx: OutboxReceiver,
    session: &Session,
    stop: &Stop,
    heartbeat: Option<Duration>,
) -> std::io::Result<()> {
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
            m = rx.recv() => first = Some(m),
            () = session.replies.notified() => {}
            () = stop.cancelled() => stopping = true,
            _ = ticker.tick(), if half.is_some() => {
                if half.is_some_and(|h| last_write.elapsed() >= h) {
                    sink.feed(Envelope::new(0, Frame::Heartbeat)).await?;
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
                    Some(m) => m,
                    None => break,
                },
            };
            wrote |= write(sink, m, &mut confirms).await?;
            fed += 1;
            if fed >= MAX_FRAMES_PER_FLUSH {
                break;
            }
        }
        session.replies.drain_into(&mut replies);
        for (request_id, event) in replies.drain(..) {
            if encode::is_confirm(&event) {
                confirms += 1;
            }
            // A settled no-confirm publish is counted (its permit comes back below) but
            // written nowhere.
            if let Some(envelope) = encode::envelope(request_id, event) {
                sink.feed(envelope).await?;
                wrote = true;
            }
        }
        sink.flush().await?;
        let idle = rx.is_empty();
        release_write_buffer(sink.sink.write_buffer_mut(), idle);
        if idle {
            rx.release_if_idle();
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
            return Ok(());
        }
    }
}

/// Feeds one outbound item; whether a frame was fed (a settled no-confirm publish is only
/// counted in `confirms`).
async fn write<W: AsyncWrite + Unpin>(
    sink: &mut Writer<'_, W>,
    m: Outbound,
    confirms: &mut usize,
) -> Result<bool, std::io::Error> {
    match m {
        Outbound::Event { request_id, event } => {
            if encode::is_confirm(&event) {
                *confirms += 1;
            }
            match encode::envelope(request_id, event) {
                Some(envelope) => sink.feed(envelope).await.map(|()| true),
                None => Ok(false),
            }
        }
        Outbound::Deliver {
            consumer,
            delivery_tag,
            entry,
            stream_offset,
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
                        stream_offset,
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
            result.map(|()| true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_buffer_is_let_go_when_idle_or_grown_by_a_large_frame() {
        let mut buf = BytesMut::with_capacity(WRITE_BUFFER_BYTES);
        release_write_buffer(&mut buf, false);
        assert_eq!(
            buf.capacity(),
            WRITE_BUFFER_BYTES,
            "busy: kept for the next batch"
        );
        release_write_buffer(&mut buf, true);
        assert_eq!(buf.capacity(), 0, "idle: nothing held");

        // A large delivery grew it; flushed, it is let go even while busy.
        let mut buf = BytesMut::with_capacity(WRITE_BUFFER_BYTES);
        buf.extend_from_slice(&vec![7u8; 1 << 20]);
        release_write_buffer(&mut buf, false);
        assert!(
            buf.capacity() >= 1 << 20,
            "not flushed yet: nothing is dropped"
        );
        buf.clear();
        release_write_buffer(&mut buf, false);
        assert_eq!(buf.capacity(), 0);
    }
}
