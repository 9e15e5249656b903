//! Consuming: starting a consumer, cancelling it (by the client, or by the server when it
//! held a delivery past its consumer timeout), detaching it from its queue (which may
//! auto-delete the queue), and `get`.
//!
//! Delivery itself is decided by the queue (`QueueCore::dispatch`, `queue/state.rs`); what
//! happens to a delivery afterwards is in `settle.rs` and the queue's `queue/settle.rs`.

use std::sync::Arc;

use warren_protocol::{Consume, ErrorCode, Get};

use super::consumer::Consumer;
use super::event::{Event, GotMessage, RequestId};
use super::queue::Queue;
use super::queue_args::consumer_timeout_arg;
use super::queue_args::InvalidQueueArgument;
use super::session::{Session, Unacked};
use super::stream::{self, StartAt};
use super::{validate_name, Broker};
use crate::error::BrokerError;
use crate::message::QueuedMessage;

impl Broker {
    /// Starts a consumer. Sends `ConsumeOk` itself, before the first delivery can go out.
    ///
    /// # Errors
    /// Missing or foreign exclusive queue, an invalid `x-consumer-timeout` argument, a tag in
    /// use, exclusivity conflicts.
    pub fn consume(
        &self,
        session: &Arc<Session>,
        request_id: RequestId,
        c: Consume,
    ) -> Result<(), BrokerError> {
        let q = self.usable_queue(session, &c.queue)?;
        let timeout_ms = consumer_timeout_arg(&c.arguments).map_err(|e| e.refusal("consumer"))?;
        let stream_args = match &q.stream {
            Some(_) => Some(stream_consumer_args(&c)?),
            None => None,
        };
        let tag = if c.consumer_tag.is_empty() {
            session.generate_consumer_tag()
        } else {
            validate_name("consumer tag", &c.consumer_tag)?;
            c.consumer_tag
        };
        let consumer = Consumer::new(
            tag.as_str().into(),
            &q,
            session.clone(),
            c.no_ack,
            match (&q.stream, session.prefetch()) {
                // A stream may hold far more than a client can buffer: always a bound.
                (Some(_), 0) => stream::DEFAULT_STREAM_PREFETCH,
                (_, prefetch) => prefetch,
            },
            c.exclusive,
            timeout_ms,
        );
        if let Some(shared) = session.shared_credit() {
            consumer.share_credit(shared);
        }
        let max = self.inner.config.limits.max_consumers_per_connection;
        if session.consumer_count() >= max {
            return Err(BrokerError::NotAllowed(format!(
                "this connection has {max} consumers, the server's limit \
                 (warren serve --max-consumers-per-connection): cancel one first"
            )));
        }
        if !session.add_consumer(consumer.clone()) {
            return Err(BrokerError::NotAllowed(format!(
                "consumer tag '{tag}' is already in use on this connection"
            )));
        }
        session.send(
            request_id,
            Event::ConsumeOk {
                consumer_tag: tag.clone(),
            },
        );
        let added = match (&q.stream, stream_args) {
            (Some(s), Some((start, name))) => s.add_consumer(&q, consumer, start, name),
            _ => q.add_consumer(consumer),
        };
        if let Err(reason) = added {
            session.remove_consumer(&tag);
            // ConsumeOk already went out: tell the client the consumer is gone.
            session.send(
                0,
                Event::ConsumerCancelled {
                    consumer_tag: tag,
                    code: ErrorCode::ResourceLocked,
                    reason: reason.clone(),
                },
            );
            return Err(BrokerError::ResourceLocked(reason));
        }
        Ok(())
    }

    /// Stops a consumer and requeues its unacked deliveries, or with `keep_unacked` leaves
    /// them with the session to be settled later (AMQP's `basic.cancel`). Cancelling an
    /// unknown tag succeeds (as in RabbitMQ).
    ///
    /// # Errors
    /// A store failure while auto-deleting its queue.
    pub async fn cancel(
        &self,
        session: &Arc<Session>,
        tag: &str,
        keep_unacked: bool,
    ) -> Result<(), BrokerError> {
        let Some(consumer) = session.remove_consumer(tag) else {
            return Ok(());
        };
        stop(&consumer);
        if keep_unacked {
            session.release_unacked_of(&consumer);
        } else {
            // Requeued while the consumer is still attached (but takes nothing): on a
            // single-active-consumer queue no one else is active yet, so its successor gets
            // these before anything published meanwhile.
            self.requeue_unacked_of(session, &consumer);
        }
        self.detach(&consumer).await?;
        hand_over(&consumer);
        Ok(())
    }

    pub(super) async fn detach(&self, consumer: &Arc<Consumer>) -> Result<(), BrokerError> {
        let Some(q) = consumer.queue.upgrade() else {
            return Ok(());
        };
        if q.remove_consumer(consumer) {
            let _guard = self.inner.topology.lock().await;
            // Re-check under the lock: a consumer may have arrived meanwhile.
            if q.counts().consumers == 0 && !q.is_deleted() {
                self.remove_queue(&consumer.session.vhost, &q).await?;
            }
        }
        Ok(())
    }

    /// Takes the head of `q` for `get`. A queue still recovering with nothing ready yet is
    /// not empty: the next batch of its recovered messages is waited for, so a `get` right
    /// after a restart does not answer "empty" for a queue with a backlog.
    async fn take_recovered(q: &Arc<Queue>, no_ack: bool) -> Option<(QueuedMessage, u64)> {
        let mut recovery = q.recovery();
        loop {
            // Marked seen before the look, so a batch restored after it wakes the wait.
            let recovering = recovery.borrow_and_update().recovering;
            if let Some(taken) = q.take_one(no_ack) {
                return Some(taken);
            }
            if !recovering || recovery.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Takes one message from a queue (`None` if it has none ready).
    ///
    /// # Errors
    /// Missing or foreign exclusive queue, or a store failure reading its body.
    pub async fn get(&self, session: &Session, g: Get) -> Result<Option<GotMessage>, BrokerError> {
        let q = self.usable_queue(session, &g.queue)?;
        if q.stream.is_some() {
            // As RabbitMQ: a stream is read by consumers, from an offset they choose.
            return Err(BrokerError::NotImplemented(format!(
                "get is not supported on stream '{}': consume it with x-stream-offset \
                 (warren stream read)",
                q.name
            )));
        }
        let Some((mut entry, message_count)) = Self::take_recovered(&q, g.no_ack).await else {
            return Ok(None);
        };
        if let Err(e) = q.load_body(&mut entry).await {
            q.requeue(vec![entry]);
            return Err(e.into());
        }
        let Some(message) = entry.message.clone() else {
            tracing::error!(queue = %q.name, id = entry.id, "queue entry without a stored message; dropping it");
            q.settled(1);
            self.inner.store.remove_internal(vec![(q.id, entry.id)]);
            return Ok(None);
        };
        let (delivery_count, acquired_count) = (entry.delivery_count, entry.acquired_count);
        let delivery_tag = if g.no_ack {
            if entry.stored && !entry.settle_unwritten() {
                self.inner.store.remove_internal(vec![(q.id, entry.id)]);
            }
            // Nothing to acknowledge: no tag (PROTOCOL.md §13).
            0
        } else {
            // No consumer, no consumer timeout (as RabbitMQ: it applies to consumers).
            session.record_delivery(
                Some(Unacked {
                    queue: q.clone(),
                    consumer: None,
                    entry,
                    delivered_at_ms: self.now_ms(),
                }),
                None,
                &self.inner.ctx.timers,
            )
        };
        Ok(Some(GotMessage {
            delivery_tag,
            delivery_count,
            acquired_count,
            message_count,
            message,
        }))
    }

    /// Ends a consumer from the server side (consumer timeout): its unacked deliveries are
    /// requeued (returned, not failed: RabbitMQ 4.3), and the client is told why.
    pub async fn cancel_by_server(
        &self,
        session: &Arc<Session>,
        consumer: &Arc<Consumer>,
        reason: String,
    ) {
        if session.remove_consumer(&consumer.tag).is_none() {
            return;
        }
        // Requeue before detaching, as in `cancel`: the successor gets these first.
        stop(consumer);
        self.requeue_unacked_of(session, consumer);
        if let Err(e) = self.detach(consumer).await {
            tracing::warn!(error = %e, "auto-deleting a queue after a consumer timeout failed");
        }
        hand_over(consumer);
        tracing::info!(connection = session.id, consumer = %consumer.tag, %reason, "consumer cancelled by the server");
        session.send(
            0,
            Event::ConsumerCancelled {
                consumer_tag: consumer.tag.to_string(),
                code: ErrorCode::PreconditionFailed,
                reason,
            },
        );
    }
}

/// A stream consumer's arguments: where it starts (`x-stream-offset`) and its name
/// (`x-stream-consumer-name`), if it has one. An exclusive consumer is refused: every stream
/// consumer reads on its own, so there is nothing to keep others off.
fn stream_consumer_args(c: &Consume) -> Result<(Option<StartAt>, Option<Arc<str>>), BrokerError> {
    let refuse = |arg: &str, reason: String| {
        InvalidQueueArgument {
            arg: arg.to_owned(),
            reason,
        }
        .refusal("consumer")
    };
    if c.exclusive {
        return Err(BrokerError::PreconditionFailed(format!(
            "exclusive consumers are not supported on stream '{}': every stream consumer \
             reads independently",
            c.queue
        )));
    }
    let start =
        stream::parse_start(&c.arguments).map_err(|r| refuse(stream::X_STREAM_OFFSET, r))?;
    let name = match c.arguments.get(stream::X_STREAM_CONSUMER_NAME) {
        None => None,
        Some(v) => match v.as_str() {
            Some(n) if !n.is_empty() && n.len() <= 255 && !n.chars().any(char::is_control) => {
                Some(Arc::from(n))
            }
            _ => {
                return Err(refuse(
                    stream::X_STREAM_CONSUMER_NAME,
                    "expected a non-empty string of at most 255 bytes without control \
                     characters"
                        .to_owned(),
                ))
            }
        },
    };
    Ok((start, name))
}

/// Stops deliveries to a leaving consumer so that its session then holds all it will ever
/// get ([`Queue::stop_consumer`](super::queue::Queue::stop_consumer)); its unacked
/// deliveries are taken from the session only after this.
pub(super) fn stop(consumer: &Consumer) {
    match consumer.queue.upgrade() {
        Some(q) => q.stop_consumer(consumer),
        None => consumer.deactivate(),
    }
}

/// After `consumer` left a single-active-consumer queue and what it held was requeued at the
/// head: starts deliveries to the consumer that takes over. (Detaching does not dispatch, so
/// the new active consumer gets the requeued messages before the rest.)
pub(super) fn hand_over(consumer: &Consumer) {
    if let Some(q) = consumer.queue.upgrade() {
        if q.args.single_active_consumer && !q.is_deleted() {
            q.dispatch();
        }
    }
}
