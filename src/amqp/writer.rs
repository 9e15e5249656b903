//! The AMQP connection's writer task: the only owner of the socket's sending half. It
//! writes what the connection queues in batches, sends heartbeats while nothing else goes
//! out, and gives up on a peer that takes no data within the write timeout (cancelling
//! `gone`, which stops the reader too), as the native connection's writer does.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::codec::HEARTBEAT;
use super::WriteHalf;
use crate::stop::Stop;

/// What the connection hands its writer.
#[derive(Debug)]
pub(super) enum Out {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// Heartbeats were negotiated at this interval: send one whenever the connection has
    /// been quiet for half of it, so the peer's two-interval limit is never near.
    Heartbeat(Duration),
    /// Write what is queued, end the sending side (FIN), and stop.
    Finish,
}

/// Frames written per batch before the socket is written to.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What a batch's buffer starts with after the writer let it go while idle.
const BATCH_START_BYTES: usize = 8 * 1024;

pub(super) async fn run(
    mut socket: WriteHalf,
    mut rx: UnboundedReceiver<Out>,
    write_timeout: Option<Duration>,
    gone: Stop,
) {
    let mut beat: Option<Interval> = None;
    let mut wrote_since_beat = false;
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = tick(&mut beat) => {
                if !wrote_since_beat {
                    batch.extend_from_slice(&HEARTBEAT);
                    if !write(&mut socket, &mut batch, write_timeout).await {
                        gone.cancel();
                        return;
                    }
                }
                wrote_since_beat = false;
                continue;
            }
        };
        let mut finish = false;
        let mut next = first;
        loop {
            match next {
                // The connection is gone: nothing more will be queued.
                None => {
                    finish = true;
                    break;
                }
                Some(Out::Frame(bytes)) => {
                    if batch.capacity() == 0 {
                        // One allocation for a typical batch, not a growth step per frame.
                        batch.reserve(BATCH_START_BYTES.max(bytes.len()));
                    }
                    batch.extend_from_slice(&bytes);
                }
                Some(Out::Heartbeat(interval)) => {
                    let half = (interval / 2).max(Duration::from_millis(500));
                    let mut i = tokio::time::interval_at(Instant::now() + half, half);
                    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    beat = Some(i);
                }
                Some(Out::Finish) => {
                    finish = true;
                    break;
                }
            }
            if batch.len() >= MAX_BATCH_BYTES {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            };
        }
        if !batch.is_empty() {
            wrote_since_beat = true;
            if !write(&mut socket, &mut batch, write_timeout).await {
                gone.cancel();
                return;
            }
        }
        if rx.is_empty() || batch.capacity() > MAX_BATCH_BYTES * 2 {
            // About to wait (or grown by a large frame): hold no buffer meanwhile. With
            // thousands of mostly idle connections, what each kept between batches (up to
            // the largest batch it ever wrote) was a good part of its cost.
            batch = Vec::new();
        }
        if finish {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

/// Waits for the next heartbeat tick, or forever before heartbeats are negotiated.
async fn tick(beat: &mut Option<Interval>) {
    match beat {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Writes and empties `batch`; `false` when the peer is gone or took nothing in time.
async fn write(
    socket: &mut WriteHalf,
    batch: &mut Vec<u8>,
    write_timeout: Option<Duration>,
) -> bool {
    let written = match write_timeout {
        Some(t) => tokio::time::timeout(t, socket.write_all(batch))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
        None => socket.write_all(batch).await,
    };
    batch.clear();
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "AMQP connection writer stopped");
            false
        }
    }
}
