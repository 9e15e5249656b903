//! Broker-wide counters ([`BrokerStats`]), the once-a-second rate bookkeeping the ticker
//! drives, and the process's resident memory. Per-queue counters and rates live with the
//! queue (`QueueStats` in `queue/mod.rs`); `status`, `warren status` and `/metrics` read both.

use std::sync::atomic::{AtomicU64, Ordering};

use super::dead_letter::DeadLetterReason;
use super::Broker;

/// Broker-wide message counters.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Bytes the process had allocated at the memory monitor's last check (0: no monitor).
    pub memory_used_bytes: AtomicU64,
    /// The memory budget (`--memory-limit`) in bytes; 0 when there is none.
    pub memory_limit_bytes: AtomicU64,
    /// Free bytes on the data directory's filesystem at the disk monitor's last check.
    pub disk_free_bytes: AtomicU64,
    /// Publishes accepted.
    pub published: AtomicU64,
    /// Publishes routed to at least one queue.
    pub routed: AtomicU64,
    /// Publishes no queue took.
    pub unroutable: AtomicU64,
    /// Publishes confirmed as duplicates (`x-message-deduplication`, or a stream producer's
    /// sequence): stored nowhere.
    pub duplicates: AtomicU64,
    /// Unroutable mandatory publishes returned.
    pub returned: AtomicU64,
    /// Deliveries acked.
    pub acked: AtomicU64,
    /// Deliveries made, to consumers and by `get` (counted by the queues, see
    /// `BrokerStats::count_delivery`).
    pub delivered: AtomicU64,
    /// Deliveries of messages delivered before (delivery count above 0).
    pub redelivered: AtomicU64,
    /// Deliveries nacked or rejected, with or without requeue.
    pub nacked: AtomicU64,
    /// Deliveries nacked or rejected with requeue.
    pub requeued: AtomicU64,
    /// Deliveries nacked or rejected without requeue, with nowhere to dead-letter them.
    pub rejected_dropped: AtomicU64,
    /// Messages dead-lettered, by reason (index: [`DeadLetterReason::ALL`] order).
    pub dead_lettered: [AtomicU64; 4],
    /// Messages that expired (dead-lettered or dropped).
    pub expired: AtomicU64,
    /// Dead letters dropped: their dead-letter exchange is missing, they route nowhere, or
    /// they would cycle.
    pub dead_letters_dropped: AtomicU64,
    /// Messages accepted for later release (`x-delay`, `x-deliver-at`).
    pub scheduled: AtomicU64,
    /// Consumers cancelled for holding a delivery past their consumer timeout.
    pub consumer_timeouts: AtomicU64,
}

impl BrokerStats {
    /// The dead-lettered counter for `reason`.
    pub fn dead_lettered(&self, reason: DeadLetterReason) -> u64 {
        let i = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dead_lettered
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one delivery; `redelivered` when the message was delivered before.
    pub(crate) fn count_delivery(&self, redelivered: bool) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if redelivered {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn count_dead_lettered(&self, reason: DeadLetterReason, n: u64) {
        let i = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(c) = self.dead_lettered.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Broker {
    /// Recomputes the rates of the queues whose counters moved (the ticker calls this about
    /// once a second); the others' rates are zero and stay so without a visit.
    pub(super) fn update_rates(&self, now: u64, timers: &super::timers::Timers) {
        let last = self.inner.rates_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000 {
            return;
        }
        self.inner.rates_at_ms.store(now, Ordering::Relaxed);
        let watched = timers.take_rate_list();
        let mut keep = Vec::with_capacity(watched.len());
        for w in watched {
            let Some(q) = w.upgrade() else { continue };
            if q.stats.update_rates(now, last) || q.stats.unwatch() {
                keep.push(w);
            }
        }
        timers.return_rate_list(keep);
    }
}

/// Resident memory of this process, from `/proc/self/statm` (0 where unavailable).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU seconds (user + system) this process has used: `status.cpu_seconds`, and what
/// `warren bench` reads of an in-process broker.
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    }
    #[cfg(not(unix))]
    {
        0.0
    }
}
