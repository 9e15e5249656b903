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
//! [`verdict`] is the decision for one message, a pure function; [`QueueCore::fail`] and
//! [`QueueCore::reject`] apply it to the queue's state.

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
}
