//! The queue's settle policy: what becomes of deliveries that were given back or refused.
//!
//! Counting follows RabbitMQ 4.3 (docs/dead-lettering.md, *Delivery counting*). A delivery
//! given back to the queue is either a **failure** ([`Return::Failed`]: a reject with
//! requeue, or its consumer's connection ending with it unacked) or a plain **return**
//! ([`Return::Released`]: a nack with requeue, a consumer timeout, a cancel that requeues).
//! Both raise the entry's acquired count (`x-acquired-count`); only a failure raises its
//! delivery count (`x-delivery-count`), and only a failure can take it past the queue's
//! `x-delivery-limit` (dead-lettered with `delivery_limit`) or wait out the queue's
//! `x-retry-backoff` step for that failure. Otherwise it goes back to the head of the queue,
//! at once or after the request's own delay, and a stored entry's new counts and delay are
//! written so they survive a restart.
//! A delivery refused without requeue is dead-lettered with `rejected` (the dead-letter task
//! drops it when the queue has no dead-letter exchange).
//!
//! A delivery left unacked for its consumer's `x-consumer-timeout` (a `Consume` argument),
//! else the queue's, else the server's default, costs its consumer: the broker cancels it and
//! its unacked deliveries are returned (not failed, as in RabbitMQ 4.3).
//!
//! [`verdict`] is the decision for one message, a pure function; [`QueueCore::fail`] and
//! [`QueueCore::reject`] apply it to the queue's state. [`consumer_timeout`] and
//! [`timed_out`] are the consumer-timeout rule, pure functions too; the session applies them
//! to its unacked deliveries (`Session::timed_out_consumers`) and the ticker cancels the
//! consumers they name (`broker/timers.rs`).

use std::time::Duration;

use super::state::{ConsumerSlot, EntryUpdate, QueueCore};
use super::Effects;
use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::queue_args::QueueArgs;
use crate::message::QueuedMessage;

/// Where a failed delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Back to the head of the queue now.
    Requeue,
    /// Back to the head at this time (ms since the epoch).
    Delay(u64),
    /// Past the delivery limit: dead-letter with `delivery_limit`.
    DeliveryLimit,
}

/// How a delivery came back to its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// It failed: a reject with requeue, or its consumer's connection ended with it unacked.
    /// Counts toward `x-delivery-limit`.
    Failed,
    /// Given back without a failure: a nack with requeue, a consumer timeout, a cancel that
    /// requeues. Counts as an acquisition only.
    Released,
}

/// The verdict for a delivery given back at `now` (`how`), whose failure count, already
/// raised if this was a failure, is `failures`; with the request's delay if it named one.
/// Only a failure meets the delivery limit or the queue's backoff.
pub fn verdict(
    args: &QueueArgs,
    how: Return,
    failures: u32,
    delay_ms: Option<u64>,
    now: u64,
) -> Verdict {
    let failed = how == Return::Failed;
    if failed && args.delivery_limit.is_some_and(|l| failures > l) {
        return Verdict::DeliveryLimit;
    }
    match delay_ms
        .or_else(|| failed.then(|| args.retry_delay_ms(failures)).flatten())
        .filter(|d| *d > 0)
    {
        Some(d) => Verdict::Delay(now.saturating_add(d)),
        None => Verdict::Requeue,
    }
}

/// How long a delivery from a queue with `args` to a consumer whose `Consume` asked for
/// `consumer_ms` may stay unacked: the consumer's own `x-consumer-timeout`, else the queue's,
/// else the server's `default`; `None`: for ever.
pub fn consumer_timeout(
    consumer_ms: Option<u64>,
    args: &QueueArgs,
    default: Option<Duration>,
) -> Option<Duration> {
    consumer_ms
        .or(args.consumer_timeout_ms)
        .map(Duration::from_millis)
        .or(default)
}

/// Whether a delivery made at `delivered_at_ms` has outlived `timeout` at `now_ms`: its age
/// if it is at least `timeout`, else `None`. A delivery stamped after `now_ms` (the clock
/// stepped back) has age zero.
pub fn timed_out(delivered_at_ms: u64, now_ms: u64, timeout: Duration) -> Option<Duration> {
    let age = Duration::from_millis(now_ms.saturating_sub(delivered_at_ms));
    (age >= timeout).then_some(age)
}

impl<C: ConsumerSlot> QueueCore<C> {
    /// Settles deliveries given back at `now` (`how`: failed or released; `delay_ms` if the
    /// request gave one): each has its counts raised and is requeued, delayed or
    /// dead-lettered by [`verdict`]. Call [`QueueCore::dispatch`] after.
    pub fn fail(
        &mut self,
        entries: Vec<QueuedMessage>,
        how: Return,
        delay_ms: Option<u64>,
        now: u64,
        fx: &mut Effects<C>,
    ) {
        let mut over_limit = Vec::new();
        let mut later = Vec::new();
        let mut at_head = Vec::with_capacity(entries.len());
        for mut entry in entries {
            entry.acquired_count = entry.acquired_count.saturating_add(1);
            if how == Return::Failed {
                entry.delivery_count = entry.delivery_count.saturating_add(1);
            }
            let ready_at = match verdict(&self.args, how, entry.delivery_count, delay_ms, now) {
                Verdict::DeliveryLimit => {
                    over_limit.push(entry);
                    continue;
                }
                Verdict::Delay(at) => at,
                Verdict::Requeue => 0,
            };
            if entry.stored {
                fx.updates.push(EntryUpdate {
                    id: entry.id,
                    delivery_count: entry.delivery_count,
                    acquired_count: entry.acquired_count,
                    ready_at,
                });
            }
            if ready_at > 0 {
                later.push((entry, ready_at));
            } else {
                at_head.push(entry);
            }
        }
        if !over_limit.is_empty() {
            self.settled(over_limit.len() as u64);
            fx.dead_letter_all(DeadLetterReason::DeliveryLimit, over_limit);
        }
        if !later.is_empty() {
            self.delay(later);
        }
        if !at_head.is_empty() {
            self.requeue(at_head);
        }
    }

    /// Settles deliveries refused without requeue: they leave the queue as dead letters
    /// (`rejected`). Call [`QueueCore::dispatch`] after.
    pub fn reject(&mut self, entries: Vec<QueuedMessage>, fx: &mut Effects<C>) {
        self.settled(entries.len() as u64);
        fx.dead_letter_all(DeadLetterReason::Rejected, entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Return = Return::Failed;
    const R: Return = Return::Released;

    fn args(limit: Option<u32>, backoff: Option<Vec<u64>>) -> QueueArgs {
        QueueArgs {
            delivery_limit: limit,
            retry_backoff_ms: backoff,
            ..QueueArgs::default()
        }
    }

    #[test]
    fn without_limit_or_backoff_a_failure_goes_back_to_the_head() {
        assert_eq!(verdict(&args(None, None), F, 1, None, 10), Verdict::Requeue);
        assert_eq!(
            verdict(&args(None, None), F, 900, None, 10),
            Verdict::Requeue
        );
    }

    #[test]
    fn the_delivery_limit_counts_failures_beyond_it() {
        let a = args(Some(2), None);
        assert_eq!(verdict(&a, F, 2, None, 10), Verdict::Requeue);
        assert_eq!(verdict(&a, F, 3, None, 10), Verdict::DeliveryLimit);
        let zero = args(Some(0), Some(vec![100]));
        assert_eq!(
            verdict(&zero, F, 1, Some(5), 10),
            Verdict::DeliveryLimit,
            "the limit wins over any delay"
        );
    }

    #[test]
    fn a_release_never_meets_the_limit_or_the_backoff() {
        // A nack with requeue is a return, not a failure (RabbitMQ 4.3): however many came
        // before, the limit is not reached and the backoff does not apply.
        let a = args(Some(0), Some(vec![100]));
        assert_eq!(verdict(&a, R, 0, None, 10), Verdict::Requeue);
        assert_eq!(verdict(&a, R, 5, None, 10), Verdict::Requeue);
        assert_eq!(
            verdict(&a, R, 0, Some(7), 10),
            Verdict::Delay(17),
            "the request's own delay still applies"
        );
    }

    #[test]
    fn the_requests_delay_wins_over_the_queues_backoff() {
        let a = args(None, Some(vec![100, 1_000]));
        assert_eq!(verdict(&a, F, 1, None, 10), Verdict::Delay(110));
        assert_eq!(verdict(&a, F, 2, None, 10), Verdict::Delay(1_010));
        assert_eq!(
            verdict(&a, F, 7, None, 10),
            Verdict::Delay(1_010),
            "the last step repeats"
        );
        assert_eq!(verdict(&a, F, 1, Some(5), 10), Verdict::Delay(15));
        assert_eq!(
            verdict(&a, F, 1, Some(0), 10),
            Verdict::Requeue,
            "a zero delay is none"
        );
    }

    fn timeout_arg(ms: Option<u64>) -> QueueArgs {
        QueueArgs {
            consumer_timeout_ms: ms,
            ..QueueArgs::default()
        }
    }

    #[test]
    fn without_a_timeout_anywhere_a_delivery_never_times_out() {
        assert_eq!(consumer_timeout(None, &timeout_arg(None), None), None);
    }

    #[test]
    fn the_queues_consumer_timeout_wins_over_the_servers() {
        let server = Some(Duration::from_secs(30));
        assert_eq!(
            consumer_timeout(None, &timeout_arg(Some(500)), server),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            consumer_timeout(None, &timeout_arg(Some(500)), None),
            Some(Duration::from_millis(500))
        );
        assert_eq!(consumer_timeout(None, &timeout_arg(None), server), server);
    }

    #[test]
    fn the_consumers_own_timeout_wins_over_the_queues_and_the_servers() {
        let server = Some(Duration::from_secs(30));
        let ms = Duration::from_millis;
        // Longer or shorter than the others: the consumer's is the one.
        for own in [100, 60_000] {
            assert_eq!(
                consumer_timeout(Some(own), &timeout_arg(Some(500)), server),
                Some(ms(own))
            );
            assert_eq!(
                consumer_timeout(Some(own), &timeout_arg(None), server),
                Some(ms(own))
            );
            assert_eq!(
                consumer_timeout(Some(own), &timeout_arg(None), None),
                Some(ms(own))
            );
        }
    }

    #[test]
    fn a_delivery_times_out_once_its_age_reaches_the_timeout() {
        let t = Duration::from_millis(300);
        assert_eq!(timed_out(1_000, 1_299, t), None);
        assert_eq!(
            timed_out(1_000, 1_300, t),
            Some(t),
            "exactly at the timeout counts"
        );
        assert_eq!(
            timed_out(1_000, 5_000, t),
            Some(Duration::from_millis(4_000))
        );
    }

    #[test]
    fn a_delivery_stamped_in_the_future_has_not_timed_out() {
        // The clock stepped back after the delivery was stamped: its age is zero, not huge.
        assert_eq!(timed_out(2_000, 1_000, Duration::from_millis(1)), None);
    }
}
