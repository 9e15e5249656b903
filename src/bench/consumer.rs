//! Consumers: each consumer connection subscribes to its queues; each subscription
//! records what arrives (a [`Tally`] and a latency histogram) and acks, until its queue has
//! had every message routing sends it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::now_us;
use super::verify::{Stamp, Tally};
use crate::client::{Client, Consumer};

/// Latency bounds of the histograms: 1 µs to 10 min, 3 significant digits.
pub const LATENCY_MAX_US: u64 = 600_000_000;

/// A latency histogram with the bench's bounds.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What the subscriptions share: per queue, how many distinct messages arrived, how many
/// are expected (unknown, `u64::MAX`, until the producers are done), and a token cancelled
/// once the first reaches the second.
pub struct Progress {
    arrived: Vec<AtomicU64>,
    target: Vec<AtomicU64>,
    done: Vec<CancellationToken>,
    /// All deliveries so far, for the stall watchdog.
    pub deliveries: AtomicU64,
}

impl Progress {
    /// Progress of `queues` queues, targets unknown.
    pub fn new(queues: usize) -> Progress {
        Progress {
            arrived: (0..queues).map(|_| AtomicU64::new(0)).collect(),
            target: (0..queues).map(|_| AtomicU64::new(u64::MAX)).collect(),
            done: (0..queues).map(|_| CancellationToken::new()).collect(),
            deliveries: AtomicU64::new(0),
        }
    }

    /// Sets what queue `q` should get in all, and ends it if it already has.
    pub fn set_target(&self, q: usize, target: u64) {
        if let Some(t) = self.target.get(q) {
            t.store(target, Ordering::SeqCst);
        }
        self.check(q);
    }

    /// Ends every subscription (stalled run or failure): they stop where they are.
    pub fn stop_all(&self) {
        for d in &self.done {
            d.cancel();
        }
    }

    fn arrived(&self, q: usize) {
        if let Some(a) = self.arrived.get(q) {
            a.fetch_add(1, Ordering::SeqCst);
        }
        self.check(q);
    }

    // SeqCst on both sides: whichever of `set_target` and the last arrival comes second
    // sees the other's write, so a finished queue is always noticed.
    fn check(&self, q: usize) {
        let (Some(a), Some(t), Some(d)) =
            (self.arrived.get(q), self.target.get(q), self.done.get(q))
        else {
            return;
        };
        if a.load(Ordering::SeqCst) >= t.load(Ordering::SeqCst) {
            d.cancel();
        }
    }

    fn done(&self, q: usize) -> CancellationToken {
        self.done.get(q).cloned().unwrap_or_default()
    }
}

/// One consumer on one queue.
pub struct Subscription {
    /// The queue's index.
    pub queue: usize,
    /// The consumer.
    pub consumer: Consumer,
    /// Its connection, to ack on.
    pub client: Client,
    /// Consumed with auto-ack: nothing to ack.
    pub auto_ack: bool,
    /// Shared progress.
    pub progress: Arc<Progress>,
}

/// What one subscription saw.
#[derive(Debug)]
pub struct Received {
    /// Which messages arrived.
    pub tally: Tally,
    /// Send → delivery latency, µs.
    pub latency_us: Histogram<u64>,
    /// Deliveries, duplicates included.
    pub deliveries: u64,
    /// Acks sent.
    pub acks: u64,
    /// When the last delivery arrived.
    pub last_delivery: Option<Instant>,
}

impl Subscription {
    /// Receives, records and acks until the queue has had all it should get, or the run is
    /// stopped.
    ///
    /// # Errors
    /// The consumer ended (its connection or the queue went away), or an ack failed.
    pub async fn run(mut self) -> anyhow::Result<Received> {
        let done = self.progress.done(self.queue);
        let mut r = Received {
            tally: Tally::default(),
            latency_us: histogram()?,
            deliveries: 0,
            acks: 0,
            last_delivery: None,
        };
        // Made once: a `cancelled()` future registers with the token when first polled, and
        // one per delivery would do that (under the token's lock) for every message.
        let cancelled = done.cancelled();
        tokio::pin!(cancelled);
        loop {
            let d = tokio::select! {
                biased;
                d = self.consumer.next() => d,
                () = &mut cancelled => break,
            };
            let Some(d) = d else {
                // Another subscription on this queue may have finished it meanwhile.
                if done.is_cancelled() {
                    break;
                }
                bail!(
                    "the consumer on queue {} ended after {} deliveries: {:?}",
                    self.queue,
                    r.deliveries,
                    self.consumer.cancel_reason()
                );
            };
            r.deliveries += 1;
            r.last_delivery = Some(Instant::now());
            self.progress.deliveries.fetch_add(1, Ordering::Relaxed);
            if !self.auto_ack {
                self.client.ack(d.delivery_tag, false).await?;
                r.acks += 1;
            }
            match Stamp::read(&d.body) {
                None => r.tally.malformed += 1,
                Some(stamp) => {
                    let latency = now_us()
                        .saturating_sub(stamp.sent_us)
                        .clamp(1, LATENCY_MAX_US);
                    r.latency_us
                        .record(latency)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if r.tally.record(self.queue, stamp, d.redelivered) {
                        self.progress.arrived(self.queue);
                    }
                }
            }
        }
        Ok(r)
    }
}
