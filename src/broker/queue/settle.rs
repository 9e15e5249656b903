//! The queue's settle policy: what becomes of deliveries that were refused or failed.
//!
//! A failed delivery (nack or reject with requeue, or a consumer or connection that ended
//! with it unacked) has its delivery count raised. Past the queue's `x-delivery-limit` it is
//! dead-lettered with `delivery_limit`; otherwise it goes back to the head of the queue, at
//! once or after a delay (the request's, else the queue's `x-retry-backoff` for that
//! failure), and a stored entry's new count and delay are written so both survive a restart.
//! A delivery refused without requeue is dead-lettered with `rejected` (the dead-letter task
//! drops it when the queue has no dead-letter exchange).
//!
//! A delivery left unacked for its consumer's `x-consumer-timeout` (a `Consume` argument),
//! else the queue's, else the server's default, costs its consumer: the broker cancels it and its unacked deliveries fail as above.
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

/// The verdict for a delivery that failed for the `failures`-th time (its raised delivery
/// count) at `now`, with the request's delay if it named one.
pub fn verdict(args: &QueueArgs, failures: u32, delay_ms: Option<u64>, now: u64) -> Verdict {
    if args.delivery_limit.is_some_and(|l| failures > l) {
        return Verdict::DeliveryLimit;
    }
    match delay_ms
        .or_else(|| args.retry_delay_ms(failures))
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
    /// Settles deliveries that failed at `now` (nack/reject with requeue, `delay_ms` if the
    /// request gave one; a lost consumer or connection): each is requeued, delayed or
    /// dead-lettered by [`verdict`]. Call [`QueueCore::dispatch`] after.
    pub fn fail(
        &mut self,
        entries: Vec<QueuedMessage>,
        delay_ms: Option<u64>,
        now: u64,
        fx: &mut Effects<C>,
    ) {
        let mut over_limit = Vec::new();
        let mut later = Vec::new();
        let mut at_head = Vec::with_capacity(entries.len());
        for mut entry in entries {
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            let ready_at = match verdict(&self.args, entry.delivery_count, delay_ms, now) {
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

    fn args(limit: Option<u32>, backoff: Option<Vec<u64>>) -> QueueArgs {
        QueueArgs {
            delivery_limit: limit,
            retry_backoff_ms: backoff,
            ..QueueArgs::default()
        }
    }

    #[test]
    fn without_limit_or_backoff_a_failure_goes_back_to_the_head() {
        assert_eq!(verdict(&args(None, None), 1, None, 10), Verdict::Requeue);
        assert_eq!(verdict(&args(None, None), 900, None, 10), Verdict::Requeue);
    }

    #[test]
    fn the_delivery_limit_counts_failures_beyond_it() {
        let a = args(Some(2), None);
        assert_eq!(verdict(&a, 2, None, 10), Verdict::Requeue);
        assert_eq!(verdict(&a, 3, None, 10), Verdict::DeliveryLimit);
        let zero = args(Some(0), Some(vec![100]));
        assert_eq!(
            verdict(&zero, 1, Some(5), 10),
            Verdict::DeliveryLimit,
            "the limit wins over any delay"
        );
    }

    #[test]
    fn the_requests_delay_wins_over_the_queues_backoff() {
        let a = args(None, Some(vec![100, 1_000]));
        assert_eq!(verdict(&a, 1, None, 10), Verdict::Delay(110));
        assert_eq!(verdict(&a, 2, None, 10), Verdict::Delay(1_010));
        assert_eq!(
            verdict(&a, 7, None, 10),
            Verdict::Delay(1_010),
            "the last step repeats"
        );
        assert_eq!(verdict(&a, 1, Some(5), 10), Verdict::Delay(15));
        assert_eq!(
            verdict(&a, 1, Some(0), 10),
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
