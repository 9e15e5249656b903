//! [`Clock`]: where the broker reads the time. The daemon uses the wall clock; tests use a
//! [`ManualClock`] that moves only when told, so expiry, delayed requeues, retry backoff and
//! consumer timeouts can be driven step by step instead of waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of "now", in milliseconds since the Unix epoch (the unit of every time the broker
/// stores: expiry, `x-death` times, delays).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, ms since the epoch.
    fn now_ms(&self) -> u64;
}

/// "Now" for one step of the broker, read from its clock on first use and then kept: a step
/// that finds nothing due (no expiring head, no delivery to stamp) never reads the clock,
/// which on the hot path is a system call's worth of work per publish and per ack.
#[derive(Debug, Clone, Copy)]
pub enum LazyNow<'a> {
    /// Already known (read, or given by the caller).
    Known(u64),
    /// Not read yet.
    Unread(&'a dyn Clock),
}

impl<'a> LazyNow<'a> {
    /// A "now" read from `clock` when first asked for.
    pub fn from_clock(clock: &'a dyn Clock) -> LazyNow<'a> {
        LazyNow::Unread(clock)
    }

    /// A "now" fixed at `now_ms`.
    pub fn at(now_ms: u64) -> LazyNow<'static> {
        LazyNow::Known(now_ms)
    }

    /// The time, reading the clock the first time.
    pub fn get(&mut self) -> u64 {
        match *self {
            LazyNow::Known(t) => t,
            LazyNow::Unread(clock) => {
                let t = clock.now_ms();
                *self = LazyNow::Known(t);
                t
            }
        }
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::message::now_ms()
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`] moves it.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(ms))
            });
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_250);
        c.set(5);
        assert_eq!(c.now_ms(), 5);
        c.set(u64::MAX - 1);
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now_ms(), u64::MAX, "saturates");
    }

    #[test]
    fn lazy_now_reads_the_clock_once_and_only_when_asked() {
        let c = ManualClock::new(10);
        let mut now = LazyNow::from_clock(&c);
        c.set(20);
        assert_eq!(now.get(), 20, "read on first use, not when made");
        c.set(30);
        assert_eq!(now.get(), 20, "then kept");
        assert_eq!(LazyNow::at(7).get(), 7);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
