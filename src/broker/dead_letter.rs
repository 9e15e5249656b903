//! The dead-letter pipeline, in one place: why a message is dead-lettered, the `x-death`
//! history its copy carries (written by [`dead_lettered_copy`]), RabbitMQ's rule for
//! dropping copies that would cycle forever ([`is_cycle`]), and the broker's dead-letter task.
//!
//! Messages are raised for dead-lettering by the queue's state machine (expiry, overflow of
//! `x-max-length`/`x-max-length-bytes`, and its settle policy in `queue/settle.rs`: a nack
//! without requeue, or a requeue past `x-delivery-limit`), handed over by
//! `Queue::dead_letter`, and by the completion step after a commit (`reject-publish-dlx`
//! overflow, `commit.rs`). Each becomes a [`DeadLetterJob`] for the dead-letter
//! task, which routes the copies and hands each job to
//! the store as one operation, so a message leaves its queue in the same transaction that
//! puts it into its dead-letter targets. The task also passes settle replies on to the store
//! behind the jobs raised before them ([`DeadLetterTask::Flush`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use warren_protocol::{FieldTable, FieldValue, Headers};

use super::commit::publish_op;
use super::confirm::ReplySlot;
use super::publish::{header_keys, CC};
use super::queue::Queue;
use super::{Broker, Inner};
use crate::message::{Message, QueuedMessage};
use crate::store::{Completion, DeadLetterOp};

/// What the broker's dead-letter task is handed, in order.
#[derive(Debug)]
pub enum DeadLetterTask {
    /// Messages to dead-letter.
    Job(DeadLetterJob),
    /// Complete once every job handed over before it is durable (settle replies wait on this,
    /// so an `Ok` follows the dead-letter copies of every earlier settle).
    Flush(Completion<ReplySlot>),
}

/// Messages that left `queue` for `reason`, to be dead-lettered (or dropped, without a
/// dead-letter exchange) by the broker's dead-letter task.
#[derive(Debug)]
pub struct DeadLetterJob {
    /// The queue they died in.
    pub queue: Arc<Queue>,
    /// The messages (bodies may be paged out).
    pub entries: Vec<QueuedMessage>,
    /// Why.
    pub reason: DeadLetterReason,
}

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// Nacked or rejected without requeue.
    Rejected,
    /// Its TTL (queue `x-message-ttl` or its `expiration`) ran out.
    Expired,
    /// Dropped from the head, or refused, because the queue was full.
    MaxLen,
    /// Its delivery failed more often than the queue's `x-delivery-limit` allows.
    DeliveryLimit,
}

impl DeadLetterReason {
    /// Every reason.
    pub const ALL: [DeadLetterReason; 4] = [
        DeadLetterReason::Rejected,
        DeadLetterReason::Expired,
        DeadLetterReason::MaxLen,
        DeadLetterReason::DeliveryLimit,
    ];

    /// The reason as `x-death` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::MaxLen => "maxlen",
            DeadLetterReason::DeliveryLimit => "delivery_limit",
        }
    }

    /// Parses a reason's name.
    pub fn parse(s: &str) -> Option<DeadLetterReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The header holding the death history.
pub const X_DEATH: &str = "x-death";

fn text(v: &str) -> FieldValue {
    FieldValue::String(v.to_owned())
}

fn entry_is(entry: &FieldValue, queue: &str, reason: &str) -> bool {
    let FieldValue::Map(m) = entry else {
        return false;
    };
    m.get("queue").and_then(FieldValue::as_str) == Some(queue)
        && m.get("reason").and_then(FieldValue::as_str) == Some(reason)
}

/// The dead-lettered copy of `message`, which died in `queue` for `reason` at `now_ms` and goes
/// to exchange `dlx` with `routing_key`, which is the queue's `x-dead-letter-routing-key` when
/// `routing_key_replaced` (the copy then loses its `CC` header) and its own routing key
/// otherwise (routed by its `CC` keys too).
///
/// As RabbitMQ does: `x-death` gets one entry per (queue, reason), newest first; a repeat
/// raises that entry's `count` and moves it to the front. `time` is an AMQP timestamp
/// (seconds). `x-first-death-queue`, `-reason` and `-exchange` are set once;
/// `x-last-death-*` by every death. A per-message `expiration` is removed from the copy and kept
/// in the entry as `original-expiration`, so the copy does not expire again on its way.
pub fn dead_lettered_copy(
    message: &Message,
    queue: &str,
    reason: DeadLetterReason,
    dlx: &str,
    routing_key: &str,
    routing_key_replaced: bool,
    now_ms: u64,
) -> Message {
    let mut properties = message.properties.clone();
    // Decoded, rewritten and encoded again: a death is rare enough to pay for the table.
    let mut headers = properties.headers.to_table();
    let reason_s = reason.as_str();
    let mut history = match headers.remove(X_DEATH) {
        Some(FieldValue::List(entries)) => entries,
        _ => Vec::new(),
    };
    let existing = history.iter().position(|e| entry_is(e, queue, reason_s));
    let entry = match existing {
        Some(i) => {
            let mut e = history.remove(i);
            if let FieldValue::Map(m) = &mut e {
                let count = m.get("count").and_then(FieldValue::as_int).unwrap_or(0);
                m.insert("count".into(), FieldValue::Int(count.saturating_add(1)));
            }
            e
        }
        None => {
            let mut m = FieldTable::new();
            m.insert("queue".into(), text(queue));
            m.insert("reason".into(), text(reason_s));
            m.insert("count".into(), FieldValue::Int(1));
            // An AMQP timestamp (seconds), as RabbitMQ writes it.
            m.insert("time".into(), FieldValue::Timestamp(now_ms / 1000));
            m.insert("exchange".into(), text(&message.exchange));
            // The keys it was published with: its routing key and its `CC` (a `BCC` was
            // removed when it was routed).
            let mut keys = vec![message.routing_key.clone()];
            header_keys(&message.properties.headers, CC, &mut keys);
            m.insert(
                "routing-keys".into(),
                FieldValue::List(keys.into_iter().map(FieldValue::String).collect()),
            );
            if let Some(exp) = properties.expiration {
                // The property's string form, as RabbitMQ keeps it.
                m.insert("original-expiration".into(), text(&exp.to_string()));
            }
            FieldValue::Map(m)
        }
    };
    history.insert(0, entry);
    headers.insert(X_DEATH.into(), FieldValue::List(history));
    for (key, value) in [
        ("x-first-death-queue", queue),
        ("x-first-death-reason", reason_s),
        ("x-first-death-exchange", message.exchange.as_str()),
    ] {
        headers.entry(key.into()).or_insert_with(|| text(value));
    }
    for (key, value) in [
        ("x-last-death-queue", queue),
        ("x-last-death-reason", reason_s),
        ("x-last-death-exchange", message.exchange.as_str()),
    ] {
        headers.insert(key.into(), text(value));
    }
    properties.expiration = None;
    if routing_key_replaced {
        // As RabbitMQ: a dead-letter routing key replaces every key, `CC` included.
        headers.remove(CC);
    }
    properties.headers = headers.into();
    Message {
        write: Default::default(),
        exchange: dlx.to_owned(),
        routing_key: routing_key.to_owned(),
        properties,
        body: message.body.clone(),
    }
}

/// Whether sending a dead-lettered copy (with its updated `x-death`) to queue `target` closes
/// a cycle with no rejection in it — RabbitMQ's rule: walk the history from the newest death
/// back to the last death in `target`; if there is one and no death on that path (itself
/// included) was a rejection, the copy would loop forever, so it is dropped instead.
pub fn is_cycle(headers: &Headers, target: &str) -> bool {
    let Some(FieldValue::List(history)) = headers.get(X_DEATH) else {
        return false;
    };
    for entry in history {
        let FieldValue::Map(m) = entry else { continue };
        if m.get("reason").and_then(FieldValue::as_str) == Some("rejected") {
            return false;
        }
        if m.get("queue").and_then(FieldValue::as_str) == Some(target) {
            return true;
        }
    }
    false
}

impl Broker {
    /// Routes and stores dead letters: one store operation per job, so each message leaves
    /// its queue in the transaction that puts its copy into the dead-letter targets.
    pub(super) async fn process_dead_letters(&self, job: DeadLetterJob) {
        let DeadLetterJob {
            queue,
            mut entries,
            reason,
        } = job;
        let stats = &self.inner.stats;
        let n = entries.len() as u64;
        if reason == DeadLetterReason::Expired {
            stats.expired.fetch_add(n, Ordering::Relaxed);
        }
        let removals: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| e.stored)
            .map(|e| (queue.id, e.id))
            .collect();
        let Some(dlx) = queue.args.dead_letter_exchange.clone() else {
            if !removals.is_empty() {
                self.inner.store.remove_internal(removals);
            }
            return;
        };
        // The dead-letter exchange is looked up in the queue's own virtual host.
        let Some(vh) = self.vhost_of(&queue) else {
            if !removals.is_empty() {
                self.inner.store.remove_internal(removals);
            }
            return;
        };
        if !dlx.is_empty() && vh.exchange(&dlx).is_none() {
            stats.dead_letters_dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(queue = %queue.name, exchange = %dlx, count = n, reason = reason.as_str(), "dead-letter exchange does not exist; dropping the messages");
            if !removals.is_empty() {
                self.inner.store.remove_internal(removals);
            }
            return;
        }
        // Paged-out bodies are read back first: the copy carries the whole message.
        for e in &mut entries {
            if e.message.is_none() {
                if let Err(err) = queue.load_body(e).await {
                    tracing::error!(queue = %queue.name, error = %err, "reading a dead letter's body failed");
                }
            }
        }
        let now = self.now_ms();
        let mut publishes = Vec::new();
        let mut dropped = 0u64;
        for e in entries {
            let Some(message) = e.message else {
                tracing::error!(queue = %queue.name, id = e.id, "a dead letter without a stored body; dropping it");
                dropped += 1;
                continue;
            };
            let replaced = queue.args.dead_letter_routing_key.is_some();
            let key = queue
                .args
                .dead_letter_routing_key
                .clone()
                .unwrap_or_else(|| message.routing_key.clone());
            let copy = dead_lettered_copy(&message, &queue.name, reason, &dlx, &key, replaced, now);
            let mut targets = self
                .route(&vh, &dlx, &key, &copy.properties.headers)
                .unwrap_or_default();
            targets.retain(|t| !is_cycle(&copy.properties.headers, &t.name));
            if targets.is_empty() {
                dropped += 1;
                continue;
            }
            publishes.push(publish_op(Arc::new(copy), targets, None));
        }
        stats.count_dead_lettered(reason, publishes.len() as u64);
        if dropped > 0 {
            stats
                .dead_letters_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(queue = %queue.name, exchange = %dlx, count = dropped, reason = reason.as_str(), "dead letters dropped: unroutable or cycling");
        }
        self.inner.store.dead_letter(DeadLetterOp {
            removals,
            publishes,
            moves: Vec::new(),
            done: Completion::None,
        });
    }
}

/// The broker's dead-letter task: turns [`DeadLetterJob`]s into store operations, in the
/// order they were raised, and passes flushes on to the store behind them.
pub(super) async fn dead_letter_loop(
    inner: Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<DeadLetterTask>,
) {
    while let Some(task) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match task {
            DeadLetterTask::Job(job) => Broker { inner }.process_dead_letters(job).await,
            // Every earlier job is with the store writer now: its flush covers them.
            DeadLetterTask::Flush(done) => inner.store.flush(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use warren_protocol::Properties;

    fn msg() -> Message {
        Message {
            write: Default::default(),
            exchange: "orders".into(),
            routing_key: "order.new".into(),
            properties: Properties {
                expiration: Some(5000),
                ..Properties::default()
            },
            body: Bytes::from_static(b"x"),
        }
    }

    fn entries(m: &Message) -> Vec<FieldTable> {
        match m.properties.headers.get(X_DEATH) {
            Some(FieldValue::List(l)) => l
                .iter()
                .map(|e| match e {
                    FieldValue::Map(m) => m.clone(),
                    other => panic!("entry {other:?}"),
                })
                .collect(),
            other => panic!("x-death {other:?}"),
        }
    }

    #[test]
    fn first_death_records_everything() {
        let c = dead_lettered_copy(
            &msg(),
            "work",
            DeadLetterReason::Expired,
            "dlx",
            "dead",
            false,
            42,
        );
        assert_eq!(
            (c.exchange.as_str(), c.routing_key.as_str()),
            ("dlx", "dead")
        );
        assert_eq!(c.properties.expiration, None);
        let e = entries(&c);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["queue"], text("work"));
        assert_eq!(e[0]["reason"], text("expired"));
        assert_eq!(e[0]["count"], FieldValue::Int(1));
        assert_eq!(e[0]["time"], FieldValue::Timestamp(0), "seconds");
        assert_eq!(e[0]["exchange"], text("orders"));
        assert_eq!(
            e[0]["routing-keys"],
            FieldValue::List(vec![text("order.new")])
        );
        assert_eq!(e[0]["original-expiration"], text("5000"));
        let h = &c.properties.headers.to_table();
        assert_eq!(h["x-first-death-queue"], text("work"));
        assert_eq!(h["x-first-death-reason"], text("expired"));
        assert_eq!(h["x-first-death-exchange"], text("orders"));
        assert_eq!(h["x-last-death-queue"], text("work"));
        assert_eq!(h["x-last-death-reason"], text("expired"));
        assert_eq!(h["x-last-death-exchange"], text("orders"));
    }

    #[test]
    fn repeats_raise_the_count_and_move_to_the_front() {
        let once = dead_lettered_copy(
            &msg(),
            "work",
            DeadLetterReason::Rejected,
            "dlx",
            "k",
            false,
            1,
        );
        let twice = dead_lettered_copy(
            &once,
            "dlq",
            DeadLetterReason::Expired,
            "",
            "work",
            false,
            2,
        );
        let thrice = dead_lettered_copy(
            &twice,
            "work",
            DeadLetterReason::Rejected,
            "dlx",
            "k",
            false,
            3,
        );
        let e = entries(&thrice);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0]["queue"].clone(), e[0]["count"].clone()),
            (text("work"), FieldValue::Int(2))
        );
        assert_eq!(
            (e[1]["queue"].clone(), e[1]["count"].clone()),
            (text("dlq"), FieldValue::Int(1))
        );
        // The first-death headers keep the first death.
        assert_eq!(
            thrice.properties.headers.to_table()["x-first-death-reason"],
            text("rejected")
        );
        assert_eq!(
            thrice.properties.headers.to_table()["x-first-death-exchange"],
            text("orders")
        );
        // The last-death headers follow every death.
        assert_eq!(
            twice.properties.headers.to_table()["x-last-death-queue"],
            text("dlq")
        );
        assert_eq!(
            twice.properties.headers.to_table()["x-last-death-exchange"],
            text("dlx")
        );
        assert_eq!(
            thrice.properties.headers.to_table()["x-last-death-queue"],
            text("work")
        );
    }

    #[test]
    fn cycles_without_a_rejection_are_detected() {
        let expired =
            dead_lettered_copy(&msg(), "a", DeadLetterReason::Expired, "x", "k", false, 1);
        assert!(is_cycle(&expired.properties.headers, "a"));
        assert!(!is_cycle(&expired.properties.headers, "b"));
        let via_b =
            dead_lettered_copy(&expired, "b", DeadLetterReason::Expired, "x", "k", false, 2);
        assert!(is_cycle(&via_b.properties.headers, "a"));
        let rejected =
            dead_lettered_copy(&msg(), "a", DeadLetterReason::Rejected, "x", "k", false, 1);
        let then_expired = dead_lettered_copy(
            &rejected,
            "b",
            DeadLetterReason::Expired,
            "x",
            "k",
            false,
            2,
        );
        assert!(!is_cycle(&then_expired.properties.headers, "a"));
    }

    #[test]
    fn reasons_roundtrip() {
        for r in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::parse(r.as_str()), Some(r));
        }
    }
}
