//! The broker's timers: an index of who has something due when ([`Timers`]), and the ticker
//! that wakes them. Queues expire messages (wherever they are in their queues), release
//! delayed requeues and are deleted when idle past their `x-expires`; sessions cancel
//! consumers that held a delivery past their consumer timeout (the rule is the queue's:
//! [`consumer_timeout`](super::queue::consumer_timeout) and
//! [`timed_out`](super::queue::timed_out) in `queue/settle.rs`).
//!
//! Each queue and session reports its next deadline to the index after every change that can
//! bring it earlier ([`QueueCore::next_deadline`](super::queue::QueueCore::next_deadline),
//! the oldest timed delivery of a session). The ticker sleeps until the earliest deadline,
//! at most [`IDLE_WAKE`] and at least [`TICK`] after its last round, and visits only what
//! is due: 100,000 idle queues cost nothing between their deadlines. A deadline that moves
//! later (the expiring message was consumed, the queue was used again) is left in the index:
//! the visit finds nothing to do and the queue reports its new deadline then.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::queue::Queue;
use super::session::Session;
use super::{Broker, Inner};

/// The ticker's granularity: timers fire within this of their deadline (plus a commit), and
/// the ticker never runs its rounds closer together than this.
pub const TICK: Duration = Duration::from_millis(100);

/// The longest the ticker sleeps with nothing due: rates are recomputed about this often,
/// and a wall clock that jumps cannot strand a deadline for longer.
pub const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Whose deadline an index entry is: at most one entry per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// A queue, by id (unique in the process, across virtual hosts).
    Queue(u64),
    /// A session, by connection id.
    Session(u64),
}

/// What a due entry wakes. Weak: a queue deleted or a connection closed meanwhile is
/// simply skipped.
#[derive(Debug, Clone)]
pub enum TimerTarget {
    /// [`Queue::tick`] (and deletion when idle past `x-expires`).
    Queue(Weak<Queue>),
    /// Consumer timeouts of one connection.
    Session(Weak<Session>),
}

/// The broker-wide timer index: `(deadline, key)` in time order, and each key's deadline.
#[derive(Debug, Default)]
pub struct Timers {
    state: Mutex<Index>,
    /// Wakes the ticker when a deadline earlier than all others is set.
    earlier: Notify,
}

#[derive(Debug, Default)]
struct Index {
    by_time: BTreeMap<(u64, TimerKey), TimerTarget>,
    at: HashMap<TimerKey, u64>,
    /// Queues whose counters moved since their rates were last zero: the ones the ticker
    /// recomputes rates for (see `QueueStats`).
    rates: Vec<Weak<Queue>>,
}

impl Timers {
    /// Asks for `target` to be woken at `at_ms` (ms since the epoch), unless it is already to
    /// be woken no later. Callers keep what they last scheduled and call this only when their
    /// deadline moved earlier than that, so a busy queue does not take this lock per message.
    pub fn schedule(&self, key: TimerKey, at_ms: u64, target: TimerTarget) {
        let mut st = self.state.lock();
        if let Some(&current) = st.at.get(&key) {
            if current <= at_ms {
                return;
            }
            st.by_time.remove(&(current, key));
        }
        let earliest = st
            .by_time
            .first_key_value()
            .is_none_or(|((first, _), _)| at_ms < *first);
        st.by_time.insert((at_ms, key), target);
        st.at.insert(key, at_ms);
        drop(st);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// The earliest deadline in the index.
    pub fn next_deadline(&self) -> Option<u64> {
        self.state
            .lock()
            .by_time
            .first_key_value()
            .map(|((at, _), _)| *at)
    }

    /// Removes and returns every entry due at `now_ms`, earliest first.
    pub fn take_due(&self, now_ms: u64) -> Vec<TimerTarget> {
        let mut st = self.state.lock();
        let mut due = Vec::new();
        while let Some(entry) = st.by_time.first_entry() {
            let (at, key) = *entry.key();
            if at > now_ms {
                break;
            }
            due.push(entry.remove());
            st.at.remove(&key);
        }
        due
    }

    /// Adds a queue whose counters started moving to the rate list (the queue adds itself
    /// once, until the ticker takes it out).
    pub fn watch_rates(&self, queue: Weak<Queue>) {
        self.state.lock().rates.push(queue);
    }

    /// Takes the rate list for a round of rates (give what stays back with
    /// [`Timers::return_rate_list`]).
    pub fn take_rate_list(&self) -> Vec<Weak<Queue>> {
        std::mem::take(&mut self.state.lock().rates)
    }

    /// Puts back the queues whose rates still move, beside any that joined meanwhile.
    pub fn return_rate_list(&self, mut keep: Vec<Weak<Queue>>) {
        let mut st = self.state.lock();
        keep.append(&mut st.rates);
        st.rates = keep;
    }

    /// How many keys have a deadline (for tests and the idle cost in docs/operations.md).
    pub fn len(&self) -> usize {
        self.state.lock().at.len()
    }

    /// Whether nothing has a deadline.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(super) async fn run(inner: Weak<Inner>) {
    let Some((timers, clock)) = inner
        .upgrade()
        .map(|i| (i.ctx.timers.clone(), i.ctx.clock.clone()))
    else {
        return;
    };
    let mut last_round = tokio::time::Instant::now();
    loop {
        // Sleep until the earliest deadline, but no sooner than a TICK after the last round
        // (the documented granularity, and no busy loop on a stream of near deadlines) and no
        // longer than IDLE_WAKE. A new earliest deadline wakes this early to recompute; the
        // wake time only moves earlier then, so a stream of new deadlines cannot starve it.
        let now = clock.now_ms();
        let until_due = timers.next_deadline().map_or(IDLE_WAKE, |at| {
            Duration::from_millis(at.saturating_sub(now)).min(IDLE_WAKE)
        });
        let wake = (last_round + TICK).max(tokio::time::Instant::now() + until_due);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = timers.earlier.notified() => continue,
        }
        last_round = tokio::time::Instant::now();
        let Some(inner) = inner.upgrade() else { return };
        Broker { inner }.tick().await;
    }
}

impl Broker {
    /// One round of the ticker: rates (about once a second), then whatever is due.
    async fn tick(&self) {
        let now = self.now_ms();
        self.update_rates(now, &self.inner.ctx.timers);
        let mut idle: Vec<Arc<Queue>> = Vec::new();
        let mut sessions: Vec<Arc<Session>> = Vec::new();
        for target in self.inner.ctx.timers.take_due(now) {
            match target {
                TimerTarget::Queue(q) => {
                    let Some(q) = q.upgrade() else { continue };
                    if !q.is_deleted() && q.tick(now).idle_expired {
                        idle.push(q);
                    }
                }
                TimerTarget::Session(s) => sessions.extend(s.upgrade()),
            }
        }
        if !idle.is_empty() {
            let _guard = self.inner.topology.lock().await;
            for q in idle {
                // Re-checked under the lock: a consumer or a declare may have come meanwhile.
                if q.is_deleted() || !q.tick(self.now_ms()).idle_expired {
                    continue;
                }
                let Some(vh) = self.vhost_of(&q) else {
                    continue;
                };
                tracing::info!(queue = %q.name, "deleting a queue unused for its x-expires");
                if let Err(e) = self.remove_queue(&vh, &q).await {
                    tracing::warn!(queue = %q.name, error = %e, "deleting an expired queue failed");
                }
            }
        }
        let default = self.inner.config.consumer_timeout;
        for s in sessions {
            for (consumer, tag, age) in s.timed_out_consumers(default, now) {
                self.inner
                    .stats
                    .consumer_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "consumer timeout: delivery {tag} was not acknowledged within {} ms; its unacked messages were requeued",
                    age.as_millis()
                );
                self.cancel_by_server(&s, &consumer, reason).await;
            }
            // After the cancels took their deliveries: the oldest timed one left sets the
            // session's next deadline.
            s.reschedule_timeout(default, &self.inner.ctx.timers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u64) -> (TimerKey, TimerTarget) {
        (TimerKey::Queue(id), TimerTarget::Queue(Weak::new()))
    }

    #[test]
    fn one_entry_per_key_kept_at_its_earliest_deadline() {
        let t = Timers::default();
        let (k1, t1) = q(1);
        let (k2, t2) = q(2);
        t.schedule(k1, 500, t1.clone());
        t.schedule(k1, 700, t1.clone());
        assert_eq!(t.next_deadline(), Some(500), "a later deadline is ignored");
        t.schedule(k1, 300, t1.clone());
        t.schedule(k2, 400, t2);
        assert_eq!(t.len(), 2, "an earlier deadline replaces the entry");
        assert!(t.take_due(299).is_empty());
        assert_eq!(t.take_due(400).len(), 2, "both due, each once");
        assert!(t.is_empty());
        assert_eq!(
            t.take_due(10_000).len(),
            0,
            "the replaced 500 left nothing behind"
        );
        t.schedule(k1, 900, t1);
        assert_eq!(
            t.next_deadline(),
            Some(900),
            "fired keys can be scheduled again"
        );
    }
}
