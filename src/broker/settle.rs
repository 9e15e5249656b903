//! Settling deliveries: what happens on ack, nack and reject.
//!
//! - `ack` removes the deliveries from the session, returns the consumers' credit and
//!   removes the stored rows.
//! - `nack`/`reject` with requeue put them back at the head of their queues with the delivery
//!   count raised, after a delay (the request's, else the queue's `x-retry-backoff`), or —
//!   past the queue's `x-delivery-limit` — dead-letter them with `delivery_limit`.
//! - without requeue they are dead-lettered with `rejected` (or dropped, with no dead-letter
//!   exchange); the copy is made by the dead-letter task (`dead_letter.rs`).
//! - a settle with a request id is answered once it, and every settle before it, is durable.
//!
//! Deliveries of a consumer that ended, or of a closed connection, are requeued the same way.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::confirm::ReplySlot;
use super::consumer::Consumer;
use super::dead_letter::{DeadLetterReason, DeadLetterTask};
use super::queue::Queue;
use super::session::{Session, Unacked};
use super::Broker;
use crate::error::BrokerError;
use crate::message::QueuedMessage;
use crate::store::Completion;

impl Broker {
    /// Acknowledges deliveries. With `reply`, answers `Ok` once the removal is durable.
    ///
    /// # Errors
    /// An unknown delivery tag, or the store writer has stopped.
    pub async fn ack(
        &self,
        session: &Session,
        delivery_tag: u64,
        multiple: bool,
        reply: Option<ReplySlot>,
    ) -> Result<(), BrokerError> {
        let settled = take(session, delivery_tag, multiple)?;
        self.inner
            .stats
            .acked
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
        self.remove_settled(settled, reply).await
    }

    async fn remove_settled(
        &self,
        settled: Vec<Unacked>,
        reply: Option<ReplySlot>,
    ) -> Result<(), BrokerError> {
        let mut stored = Vec::new();
        // Usually one queue: each queue is locked (and dispatched) once, not once per ack.
        let mut per_queue: Vec<(&Arc<Queue>, u64)> = Vec::new();
        for u in &settled {
            if let Some(c) = &u.consumer {
                c.on_settled(1);
            }
            match per_queue.iter_mut().find(|(q, _)| q.id == u.queue.id) {
                Some((_, n)) => *n += 1,
                None => per_queue.push((&u.queue, 1)),
            }
            if u.entry.stored {
                stored.push((u.queue.id, u.entry.id));
            }
        }
        for (q, n) in per_queue {
            q.stats.acked.fetch_add(n, Ordering::Relaxed);
            q.settled(n);
        }
        if !stored.is_empty() {
            self.inner.store.remove(stored, Completion::None).await?;
        }
        if let Some(slot) = reply {
            self.reply_when_settled(slot);
        }
        Ok(())
    }

    /// Answers a settle's `Ok` once it and every settle before it on any connection are
    /// durable, dead-letter copies included (PROTOCOL.md §13): the flush passes through the
    /// dead-letter task, behind the jobs already raised, and then through the store writer,
    /// behind the removals and requeue updates already queued.
    fn reply_when_settled(&self, slot: ReplySlot) {
        let flush = DeadLetterTask::Flush(Completion::Reply(slot));
        if let Err(tokio::sync::mpsc::error::SendError(DeadLetterTask::Flush(done))) =
            self.inner.ctx.dead_letters.send(flush)
        {
            // The dead-letter task has ended (shutdown): the store still orders the reply.
            self.inner.store.flush(done);
        }
    }

    /// Refuses deliveries: requeue them (at the head of their queues, after `delay_ms` if
    /// given, or after the queue's `x-retry-backoff`), or dead-letter them with reason
    /// `rejected`.
    ///
    /// # Errors
    /// An unknown delivery tag, or the store writer has stopped.
    pub async fn nack(
        &self,
        session: &Session,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
        delay_ms: u64,
        reply: Option<ReplySlot>,
    ) -> Result<(), BrokerError> {
        let settled = take(session, delivery_tag, multiple)?;
        self.inner
            .stats
            .nacked
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
        for u in &settled {
            if let Some(c) = &u.consumer {
                c.on_settled(1);
            }
        }
        if requeue {
            self.inner
                .stats
                .requeued
                .fetch_add(settled.len() as u64, Ordering::Relaxed);
            self.requeue(settled, (delay_ms > 0).then_some(delay_ms));
        } else {
            self.reject_settled(settled);
        }
        if let Some(slot) = reply {
            self.reply_when_settled(slot);
        }
        Ok(())
    }

    /// Dead-letters deliveries refused without requeue (or drops them, with no dead-letter
    /// exchange: the dead-letter task removes them either way).
    fn reject_settled(&self, settled: Vec<Unacked>) {
        let mut by_queue: HashMap<u64, (Arc<Queue>, Vec<QueuedMessage>)> = HashMap::new();
        for u in settled {
            by_queue
                .entry(u.queue.id)
                .or_insert_with(|| (u.queue.clone(), Vec::new()))
                .1
                .push(u.entry);
        }
        for (_, (q, entries)) in by_queue {
            q.settled(entries.len() as u64);
            if q.args.dead_letter_exchange.is_none() {
                self.inner
                    .stats
                    .rejected_dropped
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
            }
            q.dead_letter(entries, DeadLetterReason::Rejected);
        }
    }

    /// Puts failed deliveries back with their delivery count raised: at the head of their
    /// queues, or after a delay (`delay_ms`, else the queue's `x-retry-backoff`), or — past
    /// the queue's `x-delivery-limit` — to its dead-letter exchange.
    pub(super) fn requeue(&self, settled: Vec<Unacked>, delay_ms: Option<u64>) {
        struct Plan {
            queue: Arc<Queue>,
            now: Vec<QueuedMessage>,
            later: Vec<(QueuedMessage, u64)>,
            over_limit: Vec<QueuedMessage>,
        }
        let now = self.now_ms();
        let mut by_queue: HashMap<u64, Plan> = HashMap::new();
        for u in settled {
            let q = u.queue;
            let plan = by_queue.entry(q.id).or_insert_with(|| Plan {
                queue: q.clone(),
                now: Vec::new(),
                later: Vec::new(),
                over_limit: Vec::new(),
            });
            let mut entry = u.entry;
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            if q.args
                .delivery_limit
                .is_some_and(|l| entry.delivery_count > l)
            {
                plan.over_limit.push(entry);
                continue;
            }
            let delay = delay_ms.or_else(|| q.args.retry_delay_ms(entry.delivery_count));
            let ready_at = delay
                .filter(|d| *d > 0)
                .map_or(0, |d| now.saturating_add(d));
            if entry.stored {
                self.inner
                    .store
                    .update_entry(q.id, entry.id, entry.delivery_count, ready_at);
            }
            if ready_at > 0 {
                plan.later.push((entry, ready_at));
            } else {
                plan.now.push(entry);
            }
        }
        for (_, plan) in by_queue {
            if !plan.over_limit.is_empty() {
                plan.queue.settled(plan.over_limit.len() as u64);
                plan.queue
                    .dead_letter(plan.over_limit, DeadLetterReason::DeliveryLimit);
            }
            if !plan.later.is_empty() {
                plan.queue.delay(plan.later);
            }
            if !plan.now.is_empty() {
                plan.queue.requeue(plan.now);
            }
        }
    }

    /// Requeues the unacked deliveries of a consumer that ended (cancel, consumer timeout);
    /// each counts as a failed delivery.
    pub(super) fn requeue_unacked_of(&self, session: &Session, consumer: &Arc<Consumer>) {
        let mine = session.take_unacked_of(consumer);
        consumer.on_settled(u32::try_from(mine.len()).unwrap_or(u32::MAX));
        self.requeue(mine, None);
    }
}

fn take(session: &Session, delivery_tag: u64, multiple: bool) -> Result<Vec<Unacked>, BrokerError> {
    session.take_unacked(delivery_tag, multiple).ok_or_else(|| {
        BrokerError::PreconditionFailed(format!("unknown delivery tag {delivery_tag}"))
    })
}
