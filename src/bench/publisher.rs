//! One producer: its own connection, a window of confirms in flight (or none with
//! `--no-confirm`), optional pacing, and a stamp at the start of every body.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{BufMut, BytesMut};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use warren_protocol::{FieldTable, FieldValue};

use super::now_us;
use super::options::Volume;
use super::verify::{Stamp, STAMP_LEN};
use crate::client::{Client, OutgoingMessage};

/// How often a rate-limited producer wakes up to send what its rate allows by then. Tokio's
/// timers have millisecond resolution, so a producer above 1,000 msgs/s sends small bursts.
const PACING_TICK: Duration = Duration::from_millis(1);

/// What one producer does.
pub struct Producer {
    /// Its index, in every stamp.
    pub id: u32,
    /// Its own connection.
    pub client: Client,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing keys to cycle through: key `(seq + id) % len` for message `seq`.
    pub keys: Vec<String>,
    /// Body size.
    pub size: usize,
    /// Persistent messages.
    pub persistent: bool,
    /// Headers on every message.
    pub headers: FieldTable,
    /// Confirms awaited at most.
    pub confirm_window: usize,
    /// Publish without confirms.
    pub no_confirm: bool,
    /// Messages per second (this producer), if limited.
    pub rate: Option<u64>,
    /// This producer's share of a count, or the run's duration.
    pub volume: Volume,
    /// Cancelled when the run fails elsewhere: stop publishing.
    pub stop: CancellationToken,
}

/// What one producer did.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Messages sent (sequence numbers `0..sent`).
    pub sent: u64,
    /// Of those, confirmed (0 with `--no-confirm`).
    pub confirmed: u64,
    /// When the last message was sent.
    pub last_send: Instant,
    /// When the last confirm arrived.
    pub last_confirm: Option<Instant>,
}

/// A filler that is not all one byte, so nothing on the way can shortcut it.
fn filler(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Headers `h0`..`hN` with short string values.
pub fn bench_headers(n: usize) -> FieldTable {
    (0..n)
        .map(|i| (format!("h{i}"), FieldValue::String(format!("value-{i}"))))
        .collect()
}

impl Producer {
    /// Publishes until its count is sent or its time is up, then waits for the confirms.
    ///
    /// # Errors
    /// A publish failed, or one was not confirmed (nacked, returned, refused).
    pub async fn run(self, started: Instant) -> anyhow::Result<Published> {
        let filler = filler(self.size.saturating_sub(STAMP_LEN));
        let mut window = VecDeque::with_capacity(self.confirm_window.min(1 << 16));
        let mut pacer = self.rate.map(|_| {
            let mut i = tokio::time::interval(PACING_TICK);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        let k = self.keys.len().max(1) as u64;
        let (limit, deadline) = match self.volume {
            Volume::Count(n) => (n, None),
            Volume::Duration(d) => (u64::MAX, Some(started + d)),
        };
        let mut confirmed = 0u64;
        let mut last_confirm = None;
        let mut seq = 0u64;
        while seq < limit && !self.stop.is_cancelled() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let (Some(rate), Some(pacer)) = (self.rate, pacer.as_mut()) {
                // Credit by elapsed time: a late tick is made up at the next one.
                loop {
                    let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                    if seq < allowed {
                        break;
                    }
                    pacer.tick().await;
                }
            }
            let mut body = BytesMut::with_capacity(self.size.max(STAMP_LEN));
            Stamp {
                producer: self.id,
                seq,
                sent_us: now_us(),
            }
            .write(&mut body);
            body.put_slice(&filler);
            let key = usize::try_from((seq + u64::from(self.id)) % k).unwrap_or(0);
            let mut m = OutgoingMessage::new(
                self.exchange.as_str(),
                self.keys.get(key).map_or("", String::as_str),
                body.freeze(),
            );
            if self.persistent {
                m = m.persistent();
            }
            if !self.headers.is_empty() {
                m.properties.headers = self.headers.clone().into();
            }
            seq += 1;
            if self.no_confirm {
                self.client.publish_unconfirmed(m).await?;
                continue;
            }
            window.push_back(self.client.publish(m).await?);
            if window.len() >= self.confirm_window.max(1) {
                if let Some(p) = window.pop_front() {
                    let outcome = p.await?;
                    if !outcome.is_confirmed() {
                        bail!(
                            "producer {}: a publish was not confirmed: {outcome:?}",
                            self.id
                        );
                    }
                    confirmed += 1;
                    last_confirm = Some(Instant::now());
                }
            }
        }
        let last_send = Instant::now();
        while let Some(p) = window.pop_front() {
            let outcome = p.await?;
            if !outcome.is_confirmed() {
                bail!(
                    "producer {}: a publish was not confirmed: {outcome:?}",
                    self.id
                );
            }
            confirmed += 1;
            last_confirm = Some(Instant::now());
        }
        Ok(Published {
            sent: seq,
            confirmed,
            last_send,
            last_confirm,
        })
    }
}
