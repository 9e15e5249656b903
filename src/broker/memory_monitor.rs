//! The memory budget: watches how much memory the daemon holds and raises the memory alarm
//! above `--memory-limit` (RabbitMQ's `vm_memory_high_watermark`), blocking every publisher
//! until consumers have drained enough.
//!
//! What is measured is every byte the process has allocated and not freed — message bodies
//! and headers as stored, partly received frames, connection buffers, queue metadata — as
//! the binary's counting allocator reports it ([`MemoryGauge`]). Resident memory would not
//! do: the allocator keeps freed pages, so the alarm would never clear after a drain.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::Inner;

/// How often memory is read: one atomic load.
const POLL: Duration = Duration::from_millis(100);

/// Reads the bytes the process has allocated and not freed.
pub type MemoryGauge = fn() -> u64;

pub(super) async fn run(inner: Weak<Inner>, gauge: MemoryGauge, limit: u64) {
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let used = gauge();
        inner.stats.memory_used_bytes.store(used, Ordering::Relaxed);
        let high = used > limit;
        if inner.alarms.set_memory(high) {
            if high {
                tracing::warn!(
                    used,
                    limit,
                    "memory alarm: above --memory-limit; blocking publishers"
                );
            } else {
                tracing::info!(used, limit, "memory alarm cleared; publishers unblocked");
            }
        }
    }
}

/// Physical memory of this machine, or of the cgroup (container) the process runs in when
/// that is less; `None` where it cannot be read.
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib.saturating_mul(1024);
    // cgroup v2 ("max" when unlimited), then v1.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}
