//! Publishing: route a message, return or confirm it at once when no queue takes it, and
//! otherwise hand it to the store writer, which commits. On the early path (plain queues)
//! the message is enqueued right after it is handed over and the completion step
//! (`commit.rs`) only confirms; on the commit-first path the completion step enqueues and
//! confirms, in that order (docs/storage.md, *Enqueued before the commit*).
//! A publish with `x-delay` or `x-deliver-at` in the future is stored for the scheduler
//! (`scheduler.rs`) instead.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_protocol::{ErrorCode, FieldValue, Headers, Publish};

use super::commit::{early_publish_op, new_entry, publish_op_with_marks, Early, Scheduled};
use super::confirm::{quiet, ReplySlot, SlowPublish};
use super::dead_letter::X_DEATH;
use super::event::{Confirm, Event, RequestId};
use super::exchange::Exchange;
use super::queue::Queue;
use super::queue_args::{ttl_too_long, MAX_TTL_MS};
use super::session::Session;
use super::stream::producer_of;
use super::vhost::VHost;
use super::{Broker, X_DELAY, X_DELIVER_AT};
use crate::clock::LazyNow;
use crate::error::BrokerError;
use crate::log_throttle::Throttle;
use crate::message::{Message, MAX_EARLY_TARGETS};
use crate::store::codec::entity_key;
use crate::store::ScheduleOp;

static MISSING_ALTERNATE: Throttle = Throttle::new(Duration::from_secs(60));
static MISSING_DESTINATION: Throttle = Throttle::new(Duration::from_secs(60));

impl Broker {
    /// Routes and hands a message to the store writer. Its confirm reaches the session's
    /// reply sink after the commit; an unroutable mandatory message is returned first.
    ///
    /// # Errors
    /// An `expiration` over ten years, a missing exchange, or the store writer has stopped.
    pub async fn publish(
        &self,
        session: &Session,
        request_id: RequestId,
        mut p: Publish,
    ) -> Result<(), BrokerError> {
        if let Some(ms) = p.properties.expiration.filter(|ms| *ms > MAX_TTL_MS) {
            // As RabbitMQ refuses an invalid expiration (the wire format rules out the rest).
            return Err(BrokerError::PreconditionFailed(format!(
                "invalid property expiration: {}",
                ttl_too_long(ms)
            )));
        }
        if let Some(id) = p.properties.user_id.as_deref() {
            // As RabbitMQ: a message may not claim to come from another user.
            if id != session.user.name {
                return Err(BrokerError::PreconditionFailed(format!(
                    "user_id property set to '{id}' but authenticated user was '{}'",
                    session.user.name
                )));
            }
        }
        if !p.properties.headers.is_empty() {
            p.properties.headers = p.properties.headers.without(is_death_history);
        }
        let no_confirm = p.no_confirm;
        let stats = &self.inner.stats;
        // Most publishes carry neither header: the clock is read only for those that do.
        let mut now = LazyNow::from_clock(self.clock());
        if let Some(due_ms) = not_before(&p.properties.headers, &mut now)? {
            if due_ms > now.get() {
                if let Some(e) = session.vhost.exchange(&p.exchange) {
                    refuse_internal(&session.vhost, &e)?;
                }
                return self.schedule(session, request_id, p, due_ms).await;
            }
        }
        let mut targets = self.route_from(
            &session.vhost,
            &p.exchange,
            &p.routing_key,
            &p.properties.headers,
            true,
        )?;
        // Only a message reaching a stream looks for a producer (docs/deduplication.md);
        // checked before any window accepts the message, so a refusal leaves no trace.
        let producer = if targets.iter().any(|q| q.stream.is_some()) {
            producer_of(&p.properties.headers)?
        } else {
            None
        };
        let mut marks = Vec::new();
        if self.deduplicate(&session.vhost, &p, &mut targets, &mut now, &mut marks)? {
            return self.confirm_duplicate(session, request_id, p).await;
        }
        if !p.properties.headers.is_empty() {
            // Sender-selected distribution: `BCC` routed the message; no one sees it.
            p.properties.headers = p.properties.headers.without(|k| k == BCC);
        }
        stats.published.fetch_add(1, Ordering::Relaxed);
        let confirm = ReplySlot::for_publish(session.replies.clone(), request_id, no_confirm);
        if targets.is_empty() {
            stats.unroutable.fetch_add(1, Ordering::Relaxed);
            if p.mandatory {
                stats.returned.fetch_add(1, Ordering::Relaxed);
                session.send(
                    request_id,
                    Event::Returned {
                        message: Arc::new(Message {
                            write: Default::default(),
                            exchange: p.exchange,
                            routing_key: p.routing_key,
                            properties: p.properties,
                            body: p.body,
                        }),
                        code: ErrorCode::NoRoute,
                        text: "NO_ROUTE".into(),
                    },
                );
            }
            // Unroutable messages are confirmed at once: there is nothing to store. The confirm
            // takes the same path as the Return so it cannot overtake it.
            drop(confirm);
            let ack = Event::Confirm(Confirm::Ack);
            session.send(request_id, if no_confirm { quiet(ack) } else { ack });
            return Ok(());
        }
        stats.routed.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(Message::new(
            p.exchange,
            p.routing_key,
            p.properties,
            p.body,
        ));
        // The early path: plain queues only (no deduplication, stream or refusing overflow
        // rule, which decide at the commit), and never while an earlier publish of this
        // connection is still on the commit-first path, which it would overtake.
        let early = marks.is_empty()
            && producer.is_none()
            && targets.len() <= MAX_EARLY_TARGETS
            && !session.replies.has_slow_publishes()
            && targets.iter().all(|q| q.takes_early());
        if early {
            return self
                .publish_early(message, targets, confirm, now.get())
                .await;
        }
        let mut op = publish_op_with_marks(message, targets, Some(confirm), marks);
        op.payload.set_producer(producer);
        op.payload
            .set_slow(SlowPublish::new(session.replies.clone()));
        self.inner.store.publish(op).await?;
        Ok(())
    }

    /// Enqueues a message in its targets before its commit (docs/storage.md, *Enqueued
    /// before the commit*): consumers may have it at once, the confirm still follows the
    /// commit, and a message acked before the writer takes it is never written. The
    /// operation goes to the writer first, so every removal or update its delivery raises
    /// reaches the writer after it.
    async fn publish_early(
        &self,
        message: Arc<Message>,
        targets: Vec<Arc<Queue>>,
        confirm: ReplySlot,
        now_ms: u64,
    ) -> Result<(), BrokerError> {
        let id = self.inner.store.allocate_message_id();
        let persistent = message.properties.persistent;
        let quiet = !persistent && confirm.is_quiet();
        let confirm = if quiet {
            // Transient and unconfirmed: nothing to store, nothing to say after a commit.
            Some(confirm)
        } else {
            let early = Early {
                now_ms,
                at: Instant::now(),
            };
            let op = early_publish_op(id, message.clone(), targets.clone(), Some(confirm), early);
            self.inner.store.publish(op).await?;
            None
        };
        for (i, q) in targets.iter().enumerate() {
            // At most MAX_EARLY_TARGETS (31) targets.
            let early = u8::try_from(i + 1).unwrap_or(u8::MAX);
            q.enqueue(new_entry(id, &message, q, persistent, now_ms, early));
        }
        if let Some(slot) = confirm {
            // Frees the publish's place in the connection's window.
            slot.reply(Event::Confirm(Confirm::Ack));
        }
        Ok(())
    }

    /// The queues a message for `exchange` with this key and headers goes to: routed by its
    /// routing key and by each key in its `CC` and `BCC` headers (sender-selected
    /// distribution), each queue at most once.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] when the exchange does not exist.
    pub(super) fn route(
        &self,
        vh: &VHost,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
    ) -> Result<Vec<Arc<Queue>>, BrokerError> {
        self.route_from(vh, exchange, routing_key, headers, false)
    }

    /// [`route`](Self::route), refusing an internal exchange when `client` (a client's
    /// publish: dead-lettering, the scheduler and DLQ replays route through one freely).
    fn route_from(
        &self,
        vh: &VHost,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
        client: bool,
    ) -> Result<Vec<Arc<Queue>>, BrokerError> {
        let mut targets = Vec::new();
        // Most messages carry neither header: one check of the (usually empty) headers.
        let extra = if headers.is_empty() {
            Vec::new()
        } else {
            extra_routing_keys(headers)
        };
        if exchange.is_empty() {
            if let Some(q) = vh.queue(routing_key) {
                targets.push(q);
            }
            for key in &extra {
                if let Some(q) = vh.queue(key) {
                    targets.push(q);
                }
            }
        } else {
            let e = vh
                .exchange(exchange)
                .ok_or_else(|| BrokerError::not_found("exchange", exchange))?;
            if client {
                refuse_internal(vh, &e)?;
            }
            if e.has_exchange_bindings() {
                let mut keys = vec![routing_key];
                keys.extend(extra.iter().map(String::as_str));
                self.route_graph(vh, e, &keys, headers, &mut targets);
                return Ok(targets);
            }
            e.route(routing_key, headers, &mut targets);
            for key in &extra {
                e.route(key, headers, &mut targets);
            }
            if targets.is_empty() && e.alternate.is_some() {
                let mut keys = vec![routing_key];
                keys.extend(extra.iter().map(String::as_str));
                self.route_graph(vh, e, &keys, headers, &mut targets);
                return Ok(targets);
            }
        }
        if !extra.is_empty() {
            dedup_queues(&mut targets);
        }
        Ok(targets)
    }

    /// Routes through the graph of exchanges that starts at `first`, by each of `keys`: every
    /// exchange reached routes by its own kind and bindings, to queues and on to the
    /// exchanges it is bound to; an exchange none of whose bindings (to queues or exchanges)
    /// match sends the message on to its alternate exchange, as RabbitMQ's routing does.
    /// Each exchange is visited at most once, so loops of bindings and of alternates end,
    /// and each queue is in `out` at most once. A destination or alternate that does not
    /// exist is skipped (logged). Only exchanges with exchange bindings and unroutable
    /// messages with an alternate come here: other publishes pay nothing for it.
    #[cold]
    fn route_graph(
        &self,
        vh: &VHost,
        first: Arc<Exchange>,
        keys: &[&str],
        headers: &Headers,
        out: &mut Vec<Arc<Queue>>,
    ) {
        let mut visited: Vec<Arc<str>> = vec![first.name.clone()];
        let mut pending = std::collections::VecDeque::from([first]);
        let mut queues = Vec::new();
        let mut next = Vec::new();
        while let Some(e) = pending.pop_front() {
            queues.clear();
            next.clear();
            for key in keys {
                e.route(key, headers, &mut queues);
                e.route_exchanges(key, headers, &mut next);
            }
            let via_alternate = queues.is_empty() && next.is_empty();
            if via_alternate {
                if let Some(alternate) = &e.alternate {
                    next.push(alternate.clone());
                }
            }
            out.append(&mut queues);
            for name in next.drain(..) {
                if visited.contains(&name) {
                    continue;
                }
                let Some(d) = vh.exchange(&name) else {
                    // Once per publish would be a log line per message: throttled.
                    if via_alternate && MISSING_ALTERNATE.allow() {
                        tracing::warn!(exchange = %e.name, alternate = %name, "alternate exchange does not exist; messages are unroutable (logged at most once a minute)");
                    } else if !via_alternate && MISSING_DESTINATION.allow() {
                        tracing::warn!(exchange = %e.name, destination = %name, "bound exchange does not exist; skipping it (logged at most once a minute)");
                    }
                    visited.push(name);
                    continue;
                };
                visited.push(name);
                pending.push_back(d);
            }
        }
        dedup_queues(out);
    }

    /// Holds a message durably until `due_ms`, then routes it (see the scheduler).
    async fn schedule(
        &self,
        session: &Session,
        request_id: RequestId,
        p: Publish,
        due_ms: u64,
    ) -> Result<(), BrokerError> {
        if !p.exchange.is_empty() && session.vhost.exchange(&p.exchange).is_none() {
            return Err(BrokerError::not_found("exchange", &p.exchange));
        }
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.scheduled.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(Message {
            write: Default::default(),
            // The scheduler routes it in its virtual host (see `scheduler.rs`).
            exchange: entity_key(&session.vhost.name, &p.exchange),
            routing_key: p.routing_key,
            properties: p.properties,
            body: p.body,
        });
        self.inner
            .store
            .schedule(ScheduleOp::new(
                due_ms,
                message,
                Scheduled {
                    confirm: Some(ReplySlot::for_publish(
                        session.replies.clone(),
                        request_id,
                        p.no_confirm,
                    )),
                    scheduler: self.inner.scheduled_tx.clone(),
                },
            ))
            .await?;
        Ok(())
    }
}

/// The not-before time a publish asks for: `x-deliver-at` (ms since the epoch) or `now` plus
/// `x-delay` (ms). `now` is read only for `x-delay`.
///
/// # Errors
/// Either header with a value that is not a non-negative integer.
fn not_before(headers: &Headers, now: &mut LazyNow<'_>) -> Result<Option<u64>, BrokerError> {
    if headers.is_empty() {
        return Ok(None);
    }
    let int = |name: &str| -> Result<Option<u64>, BrokerError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => match v.as_int().and_then(|i| u64::try_from(i).ok()) {
                Some(ms) => Ok(Some(ms)),
                None => Err(BrokerError::invalid(
                    format!("header {name}"),
                    format!("expected a non-negative integer of milliseconds, got {v:?}"),
                )),
            },
        }
    };
    if let Some(at) = int(X_DELIVER_AT)? {
        return Ok(Some(at));
    }
    Ok(int(X_DELAY)?.map(|d| now.get().saturating_add(d)))
}

/// Whether a header is dead-letter history (`x-death`, `x-first-death-*`, `x-last-death-*`),
/// which a publish drops from what a publisher sent along, as RabbitMQ 4.x does: only Warren writes that history, so a message a
/// client publishes again (say, from a dead-letter queue) starts a fresh one when it dies.
/// Warren's own dead-letter copies and `dlq replay` do not come through here, so a message
/// that cycles through Warren's dead-lettering keeps its history and its cycle check.
fn is_death_history(key: &str) -> bool {
    key == X_DEATH || key.starts_with("x-first-death-") || key.starts_with("x-last-death-")
}

/// The header whose routing keys are kept on the message (sender-selected distribution).
pub const CC: &str = "CC";
/// The header whose routing keys are removed from the message once it is routed.
pub const BCC: &str = "BCC";

/// The routing keys a header holds: a string, or a list of strings (as RabbitMQ takes a
/// long string or an array); other values, and other elements, are ignored.
pub(super) fn header_keys(headers: &Headers, name: &str, out: &mut Vec<String>) {
    match headers.get(name) {
        Some(FieldValue::String(key)) => out.push(key),
        Some(FieldValue::List(keys)) => out.extend(keys.into_iter().filter_map(|k| match k {
            FieldValue::String(s) => Some(s),
            _ => None,
        })),
        _ => {}
    }
}

/// The extra routing keys of sender-selected distribution: `CC`, then `BCC`.
fn extra_routing_keys(headers: &Headers) -> Vec<String> {
    let mut keys = Vec::new();
    header_keys(headers, CC, &mut keys);
    header_keys(headers, BCC, &mut keys);
    keys
}

/// Keeps the first of each queue: a message routed by several keys goes to a queue once.
fn dedup_queues(targets: &mut Vec<Arc<Queue>>) {
    let mut seen = std::collections::HashSet::with_capacity(targets.len());
    targets.retain(|q| seen.insert(q.id));
}

#[cfg(test)]
mod route_tests;

/// Refuses a client's publish to an internal exchange, in RabbitMQ's words and code
/// (`403 ACCESS_REFUSED`).
fn refuse_internal(vh: &VHost, e: &Exchange) -> Result<(), BrokerError> {
    if e.internal {
        return Err(BrokerError::AccessRefused(format!(
            "cannot publish to internal exchange '{}' in vhost '{}'",
            e.name, vh.name
        )));
    }
    Ok(())
}
