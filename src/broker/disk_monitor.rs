//! Watches free space on the data directory's filesystem and raises the disk alarm below
//! `--disk-free-limit` (RabbitMQ's `disk_free_limit`), so persistent publishers are blocked
//! before the disk fills rather than refused after.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::Inner;

/// How often free space is read: one `statvfs` call.
const POLL: Duration = Duration::from_secs(1);

/// Free bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

pub(super) async fn run(inner: Weak<Inner>, dir: PathBuf, limit: u64) {
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreadable_logged = false;
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let free = match free_bytes(&dir) {
            Ok(free) => free,
            Err(e) => {
                if !std::mem::replace(&mut unreadable_logged, true) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read free disk space; the disk alarm is not checked");
                }
                continue;
            }
        };
        inner.stats.disk_free_bytes.store(free, Ordering::Relaxed);
        let low = free < limit;
        if inner.alarms.set_disk(low) {
            if low {
                tracing::warn!(free, limit, "disk alarm: free space below --disk-free-limit; blocking persistent publishers");
            } else {
                tracing::info!(free, limit, "disk alarm cleared; publishers unblocked");
            }
        }
    }
}
