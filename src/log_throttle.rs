//! [`Throttle`]: lets a log line through at most once per interval, for conditions a client
//! can trigger on every message (publishing through an alternate exchange that does not
//! exist), so a steady stream of publishes cannot turn into a steady stream of log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Once-per-interval gate for one log line. Lives in a `static`.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    /// When the line last went through, ms since the epoch (0: never).
    last_ms: AtomicU64,
}

impl Throttle {
    /// A gate that opens at most once per `interval`.
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether to log now; at most one caller per interval gets `true`.
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.allow_at(now)
    }

    fn allow_at(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < self.interval_ms {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_once_per_interval() {
        let t = Throttle::new(Duration::from_secs(10));
        assert!(t.allow_at(1_000));
        assert!(!t.allow_at(1_001));
        assert!(!t.allow_at(10_999));
        assert!(t.allow_at(11_000));
    }
}
