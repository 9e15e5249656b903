//! Settling deliveries: finding them in the session and handing them to their queues.
//!
//! - `ack` removes the deliveries from the session, returns the consumers' credit and
//!   removes the stored rows.
//! - `nack`/`reject` hand them to their queues, whose settle policy (`queue/settle.rs`)
//!   decides: with requeue, back at the head (maybe after a delay) with the acquired count
//!   raised, and for a reject (a failure, RabbitMQ 4.3) the delivery count too, so that only
//!   rejects reach `x-delivery-limit`; without requeue, dead-lettered with `rejected`. The
//!   copy is made by the dead-letter task (`dead_letter.rs`).
//! - a settle with a request id is answered once it, and every settle before it, is durable.
//!
//! Deliveries of a closed connection fail like a reject with requeue; those of a consumer
//! that was cancelled (by its client with requeue, or by the server for a consumer timeout)
//! are returned like a nack with requeue (docs/dead-lettering.md, *Delivery counting*).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::confirm::ReplySlot;
use super::consumer::Consumer;
use super::dead_letter::DeadLetterTask;
use super::queue::{Queue, Return};
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
        let settled = settle_streams(settled, true, true);
        self.remove_settled(settled, reply).await
    }

    async fn remove_settled(
        &self,
        settled: Vec<Unacked>,
        reply: Option<ReplySlot>,
    ) -> Result<(), BrokerError> {
        let mut stored = Vec::new();
        let mut spared = false;
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
            // Acked before the writer took it (enqueued before its commit): no row will be
            // written, so none is removed.
            if u.entry.stored {
                if u.entry.settle_unwritten() {
                    spared = true;
                } else {
                    stored.push((u.queue.id, u.entry.id));
                }
            }
        }
        for (q, n) in per_queue {
            q.count_acked(n);
            q.settled(n);
        }
        if spared {
            // The writer may be holding one of these messages for this very ack.
            std::sync::atomic::fence(Ordering::SeqCst);
            let held = self.inner.store.held_message();
            if held != 0 && settled.iter().any(|u| u.entry.id == held) {
                self.inner.store.nudge_writer(held);
            }
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

    /// Refuses deliveries without counting a failure: requeue them (at the head of their
    /// queues, after `delay_ms` if given), or dead-letter them with reason `rejected`.
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
        self.refuse(settled, Return::Released, requeue, delay_ms, reply);
        Ok(())
    }

    /// Requeues these deliveries together, as a nack with requeue of each would, but handed
    /// to each queue in one batch, so they go back in their original order before any is
    /// delivered again (AMQP's `basic.recover`). Tags the session no longer holds (taken
    /// back by a consumer timeout meanwhile) are skipped.
    pub fn requeue_all(&self, session: &Session, delivery_tags: &[u64]) {
        let settled: Vec<Unacked> = delivery_tags
            .iter()
            .filter_map(|&tag| session.take_unacked(tag, false))
            .flatten()
            .collect();
        self.refuse(settled, Return::Released, true, 0, None);
    }

    /// Refuses one delivery as failed (RabbitMQ 4.3's `basic.reject`): requeue it with its
    /// delivery count raised (after the queue's `x-retry-backoff`, or dead-lettered past
    /// `x-delivery-limit`), or dead-letter it with reason `rejected`.
    ///
    /// # Errors
    /// An unknown delivery tag, or the store writer has stopped.
    pub async fn reject(
        &self,
        session: &Session,
        delivery_tag: u64,
        requeue: bool,
        reply: Option<ReplySlot>,
    ) -> Result<(), BrokerError> {
        let settled = take(session, delivery_tag, false)?;
        self.refuse(settled, Return::Failed, requeue, 0, reply);
        Ok(())
    }

    fn refuse(
        &self,
        settled: Vec<Unacked>,
        how: Return,
        requeue: bool,
        delay_ms: u64,
        reply: Option<ReplySlot>,
    ) {
        self.inner
            .stats
            .nacked
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
        // Nothing leaves a stream or goes back into it: a nack or reject settles a stream
        // delivery as an ack does (docs/streams.md).
        let settled = settle_streams(settled, true, true);
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
            self.requeue(settled, how, (delay_ms > 0).then_some(delay_ms));
        } else {
            self.reject_settled(settled);
        }
        if let Some(slot) = reply {
            self.reply_when_settled(slot);
        }
    }

    /// Dead-letters deliveries refused without requeue (or drops them, with no dead-letter
    /// exchange: the dead-letter task removes them either way).
    fn reject_settled(&self, settled: Vec<Unacked>) {
        for (q, entries) in by_queue(settled) {
            if q.args.dead_letter_exchange.is_none() {
                self.inner
                    .stats
                    .rejected_dropped
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
            }
            q.reject(entries);
        }
    }

    /// Hands deliveries back to their queues (`how`: failed or released), whose settle
    /// policy decides: requeue at the head, after a delay (`delay_ms`, else for a failure the
    /// queue's `x-retry-backoff`), or — a failure past the queue's `x-delivery-limit` — to
    /// its dead-letter exchange (`queue/settle.rs`).
    pub(super) fn requeue(&self, settled: Vec<Unacked>, how: Return, delay_ms: Option<u64>) {
        // A stream delivery given back (its consumer or connection ended) is simply
        // forgotten: a named consumer's position stays before it, so it is read again.
        let settled = settle_streams(settled, false, false);
        for (q, entries) in by_queue(settled) {
            q.fail(entries, how, delay_ms);
        }
    }

    /// Requeues the unacked deliveries of a consumer that ended while its connection lives
    /// (a cancel with requeue, a consumer timeout): each is returned, not failed — the
    /// client is alive and chose (or was made) to give it back, as a nack with requeue
    /// would (decisions.md).
    pub(super) fn requeue_unacked_of(&self, session: &Session, consumer: &Arc<Consumer>) {
        let mine = session.take_unacked_of(consumer);
        consumer.on_settled(u32::try_from(mine.len()).unwrap_or(u32::MAX));
        self.requeue(mine, Return::Released, None);
    }
}

/// Settles the stream deliveries among `settled` and returns the others. `advance`: they
/// were acked, nacked or rejected (a named consumer's position moves past them); `credit`:
/// their consumers' credit is returned here (the close and cancel paths returned it
/// already).
fn settle_streams(settled: Vec<Unacked>, advance: bool, credit: bool) -> Vec<Unacked> {
    if !settled.iter().any(|u| u.queue.stream.is_some()) {
        return settled;
    }
    let (streams, classic): (Vec<Unacked>, Vec<Unacked>) =
        settled.into_iter().partition(|u| u.queue.stream.is_some());
    type Group = (Arc<Queue>, Option<Arc<Consumer>>, Vec<u64>);
    let mut groups: Vec<Group> = Vec::new();
    for u in streams {
        if credit {
            if let Some(c) = &u.consumer {
                c.on_settled(1);
            }
        }
        if advance {
            u.queue.stats.acked.fetch_add(1, Ordering::Relaxed);
        }
        let same = |g: &&mut Group| {
            g.0.id == u.queue.id
                && match (&g.1, &u.consumer) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        match groups.iter_mut().find(same) {
            Some(g) => g.2.push(u.entry.id),
            None => groups.push((u.queue, u.consumer, vec![u.entry.id])),
        }
    }
    for (q, consumer, offsets) in groups {
        if let Some(s) = &q.stream {
            s.settled(&q, consumer.as_ref(), &offsets, advance);
        }
    }
    classic
}

/// The settled entries grouped by queue, in the order each queue first appears: each queue
/// is then locked (and dispatched) once, not once per delivery.
fn by_queue(settled: Vec<Unacked>) -> Vec<(Arc<Queue>, Vec<QueuedMessage>)> {
    let mut groups: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
    for u in settled {
        match groups.iter_mut().find(|(q, _)| q.id == u.queue.id) {
            Some((_, entries)) => entries.push(u.entry),
            None => groups.push((u.queue, vec![u.entry])),
        }
    }
    groups
}

fn take(session: &Session, delivery_tag: u64, multiple: bool) -> Result<Vec<Unacked>, BrokerError> {
    session.take_unacked(delivery_tag, multiple).ok_or_else(|| {
        BrokerError::PreconditionFailed(format!("unknown delivery tag {delivery_tag}"))
    })
}
