//! One producer: its own connection, a window of confirms in flight (or none with
//! `--no-confirm`), optional pacing ([`Pacer`]), and a stamp at the start of every body.
//!
//! The producer keeps one body buffer and writes each message's stamp over the start of it,
//! and publishes from borrowed parts ([`Client::publish_ref`]): the client copies the body
//! straight into the connection's outgoing bytes, so the bench allocates nothing per message
//! on the publishing side (but the headers of `--headers`, built per message as a client
//! would).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use warren_protocol::{FieldTable, FieldValue, Properties};

use super::now_us;
use super::options::Volume;
use super::verify::{Stamp, STAMP_LEN};
use crate::client::{Client, MessageRef};

/// Paces a rate-limited producer from a thread of its own: message `n` may go at
/// `started + n / rate`. The thread sleeps until the next message is due (a thread sleep
/// wakes within tens of microseconds; tokio's timers have millisecond resolution, so paced
/// from the runtime a producer above 1,000 msgs/s sent bursts once a millisecond) and then
/// releases one permit per message due by then; a late wake-up is made up at once, so the
/// average rate is exact. The producer takes one permit per message.
pub struct Pacer {
    permits: Arc<Semaphore>,
}

impl Pacer {
    /// Starts releasing permits at `rate` per second, counted from `started`.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(rate: u64, started: Instant) -> anyhow::Result<Pacer> {
        let permits = Arc::new(Semaphore::new(0));
        let released_to = Arc::clone(&permits);
        let rate = rate.max(1);
        std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || pace(&released_to, rate, started))?;
        Ok(Pacer { permits })
    }

    /// Waits until the next message may go.
    ///
    /// # Errors
    /// Never while the pacer lives (its semaphore is closed only on drop).
    pub async fn next(&self) -> anyhow::Result<()> {
        self.permits.acquire().await?.forget();
        Ok(())
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        // The thread sees it at its next wake-up and ends.
        self.permits.close();
    }
}

/// The pacing thread: releases the permits of every message due, sleeps until the next one.
fn pace(permits: &Semaphore, rate: u64, started: Instant) {
    let mut released = 0u64;
    while !permits.is_closed() {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        if due > released {
            let n = usize::try_from(due - released).unwrap_or(usize::MAX);
            // Bounded by what tokio's semaphore can hold; the rest follow next time.
            let n = n.min(Semaphore::MAX_PERMITS - permits.available_permits());
            permits.add_permits(n);
            released += n as u64;
        }
        let next_at = started + Duration::from_secs_f64(released as f64 / rate as f64);
        std::thread::sleep(next_at.saturating_duration_since(Instant::now()));
    }
}

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

/// A body of `len` bytes: room for the stamp, then a filler that is not all one byte, so
/// nothing on the way can shortcut it.
fn body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + (i.saturating_sub(STAMP_LEN) % 26) as u8)
        .collect()
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
        let mut body = body(self.size.max(STAMP_LEN));
        let mut properties = Properties {
            persistent: self.persistent,
            ..Properties::default()
        };
        let mut window = VecDeque::with_capacity(self.confirm_window.min(1 << 16));
        let pacer = self
            .rate
            .map(|rate| Pacer::start(rate, started))
            .transpose()?;
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
            if let Some(pacer) = &pacer {
                pacer.next().await?;
            }
            Stamp {
                producer: self.id,
                seq,
                sent_us: now_us(),
            }
            .put(&mut body);
            let key = usize::try_from((seq + u64::from(self.id)) % k).unwrap_or(0);
            if !self.headers.is_empty() {
                // Built and encoded per message, as a client would (docs/BENCHMARKS.md,
                // "headers kept encoded").
                properties.headers = self.headers.clone().into();
            }
            let m = MessageRef::new(
                self.exchange.as_str(),
                self.keys.get(key).map_or("", String::as_str),
                &properties,
                &body,
            );
            seq += 1;
            if self.no_confirm {
                self.client.publish_unconfirmed_ref(m).await?;
                continue;
            }
            window.push_back(self.client.publish_ref(m).await?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_room_for_the_stamp_then_the_filler() {
        let mut b = body(STAMP_LEN + 30);
        assert_eq!(b.len(), STAMP_LEN + 30);
        assert_eq!(&b[STAMP_LEN..STAMP_LEN + 3], b"abc");
        assert_eq!(b[STAMP_LEN + 26], b'a');
        let stamp = Stamp {
            producer: 3,
            seq: 9,
            sent_us: 11,
        };
        stamp.put(&mut b);
        assert_eq!(Stamp::read(&b), Some(stamp));
        assert_eq!(&b[STAMP_LEN..STAMP_LEN + 3], b"abc");
    }

    // Counts only: how evenly the permits come is measured (docs/BENCHMARKS.md), never
    // asserted.
    #[tokio::test]
    async fn the_pacer_releases_one_permit_per_message_and_stops_when_dropped() {
        let pacer = Pacer::start(20_000, Instant::now()).unwrap();
        for _ in 0..200 {
            tokio::time::timeout(Duration::from_secs(10), pacer.next())
                .await
                .expect("a permit within 10 s")
                .unwrap();
        }
        let permits = Arc::clone(&pacer.permits);
        drop(pacer);
        assert!(permits.is_closed());
    }
}
