//! [`Stop`]: a cancellation signal that can be looked at without taking a lock.
//!
//! tokio-util's `CancellationToken::is_cancelled` locks the token's mutex. The connection
//! loops look at their stops once per frame (the reader before every buffered frame, the
//! writer before every write), which put that lock at about 3% of the broker's CPU in S3
//! and S5 (docs/BENCHMARKS.md). A `Stop` keeps the token for waiting (`cancelled()`, in
//! `select!`) and an atomic flag beside it for looking; a child also looks at its parent's
//! flag, since a parent's `cancel` reaches its children's tokens but not their flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A cancellation signal: cancelled once, for good; cheap to clone, to look at, and to wait
/// for. Clones share the signal.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
    /// The parent's flag, for a child ([`Stop::child`]).
    parent: Option<Arc<AtomicBool>>,
}

impl Stop {
    /// A signal not cancelled yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// A signal cancelled with this one (and on its own): what each connection gets of the
    /// server's shutdown.
    pub fn child(&self) -> Stop {
        Stop {
            token: self.token.child_token(),
            flag: Arc::default(),
            parent: Some(self.flag.clone()),
        }
    }

    /// Cancels it, and its children; wakes everything waiting in [`Stop::cancelled`].
    pub fn cancel(&self) {
        // The flag first: whoever is woken by the token then sees it set.
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether it, or its parent, was cancelled: two loads, no lock.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
            || self
                .parent
                .as_ref()
                .is_some_and(|p| p.load(Ordering::Acquire))
    }

    /// Resolves once it, or its parent, is cancelled.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A guard that cancels it when dropped: a task that must signal its end however it
    /// ends (returns, fails, or is aborted) holds one.
    pub fn drop_guard(self) -> StopGuard {
        StopGuard(self)
    }
}

/// Cancels its [`Stop`] when dropped ([`Stop::drop_guard`]).
#[derive(Debug)]
pub struct StopGuard(Stop);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_cancelled_with_its_parent_and_not_the_other_way() {
        let parent = Stop::new();
        let child = parent.child();
        let clone = child.clone();
        assert!(!parent.is_cancelled() && !child.is_cancelled());
        child.cancel();
        assert!(clone.is_cancelled(), "clones share the signal");
        assert!(!parent.is_cancelled());
        let other = parent.child();
        parent.cancel();
        assert!(parent.is_cancelled() && other.is_cancelled());
        let guarded = Stop::new();
        drop(guarded.clone().drop_guard());
        assert!(guarded.is_cancelled(), "a dropped guard cancels");
    }

    #[tokio::test]
    async fn waiting_ends_when_the_parent_is_cancelled() {
        let parent = Stop::new();
        let child = parent.child();
        let waiting = tokio::spawn(async move { child.cancelled().await });
        parent.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .expect("the task");
    }
}
