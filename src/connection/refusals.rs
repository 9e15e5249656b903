//! [`RefusalLog`]: logs a connection's refused requests without letting one client flood the
//! log. A client looping on a bad request gets every refusal answered, but only the first few
//! in each window are logged; the rest are counted and reported in one line.

use std::time::{Duration, Instant};

/// How long one window of logged refusals lasts.
const WINDOW: Duration = Duration::from_secs(10);

/// Refusals logged per connection per window.
const LOGGED_PER_WINDOW: u32 = 10;

/// Per-connection refusal log state.
#[derive(Debug)]
pub(super) struct RefusalLog {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    pub(super) fn new(now: Instant) -> RefusalLog {
        RefusalLog {
            window_start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether the refusal seen at `now` should be logged. When a window ends, the count of
    /// refusals it did not log is returned first, so the caller can report it.
    pub(super) fn admit(&mut self, now: Instant) -> (bool, Option<u64>) {
        let mut ended = None;
        if now.duration_since(self.window_start) >= WINDOW {
            ended = self.take_suppressed();
            self.window_start = now;
            self.logged = 0;
        }
        if self.logged < LOGGED_PER_WINDOW {
            self.logged += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }

    /// Refusals not logged since the last report, if any (e.g. when the connection ends).
    pub(super) fn take_suppressed(&mut self) -> Option<u64> {
        let n = std::mem::take(&mut self.suppressed);
        (n > 0).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_few_per_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0);
        let logged = (0..100).filter(|_| log.admit(t0).0).count();
        assert_eq!(logged, LOGGED_PER_WINDOW as usize);
        let (logged, ended) = log.admit(t0 + WINDOW);
        assert!(logged);
        assert_eq!(ended, Some(100 - u64::from(LOGGED_PER_WINDOW)));
        assert_eq!(log.take_suppressed(), None);
    }
}
