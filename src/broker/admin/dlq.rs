//! Dead-letter operations: `dlq.peek`, `dlq.replay` (atomic moves back to the original
//! exchange, or another), `dlq.purge`; `queue.peek` and `message.delete` use the same
//! selection of ready messages. What a dead letter shows (reason, source queue, origin) is
//! read from its `x-death` header (written in `broker/dead_letter.rs`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use warren_protocol::{FieldTable, FieldValue};

use super::{opt_str, opt_u64};
use crate::admin_types::{DeadLetterInfo, DeleteResult, PurgeResult, ReplayResult};
use crate::broker::commit::{publish_op, replay_move};
use crate::broker::dead_letter::{DeadLetterReason, X_DEATH};
use crate::broker::queue::Queue;
use crate::broker::vhost::VHost;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::json::table_map;
use crate::message::{Message, QueuedMessage};
use crate::store::{Completion, DeadLetterOp};

/// How many messages `dlq.peek` shows when no limit is given.
pub const DEFAULT_PEEK_LIMIT: u64 = 100;

/// Messages moved per store operation by `dlq.replay`: each chunk moves atomically, so a crash
/// mid-replay leaves every message in exactly one place.
const REPLAY_CHUNK: usize = 500;

/// Ready messages whose bodies are read back per step while selecting dead letters.
const SELECT_CHUNK: usize = 1_000;

/// Bytes of a body shown as a preview.
const PREVIEW_BYTES: usize = 64;

/// Which dead letters a `dlq.*` command acts on.
#[derive(Debug, Default)]
pub(super) struct Filter {
    limit: Option<u64>,
    reason: Option<String>,
    from_queue: Option<String>,
}

impl Filter {
    pub(super) fn parse(args: &FieldTable) -> Result<Filter, BrokerError> {
        let reason = opt_str(args, "reason")?.map(str::to_owned);
        if let Some(r) = &reason {
            if DeadLetterReason::parse(r).is_none() {
                return Err(BrokerError::invalid(
                    "admin argument reason",
                    format!("expected rejected, expired, maxlen or delivery_limit, got {r:?}"),
                ));
            }
        }
        Ok(Filter {
            limit: opt_u64(args, "limit")?,
            reason,
            from_queue: opt_str(args, "from_queue")?.map(str::to_owned),
        })
    }

    fn matches(&self, m: &Message) -> bool {
        let last = latest_death(m);
        let field = |name: &str| {
            last.as_ref()
                .and_then(|d| d.get(name))
                .and_then(FieldValue::as_str)
        };
        self.reason
            .as_deref()
            .is_none_or(|r| field("reason") == Some(r))
            && self
                .from_queue
                .as_deref()
                .is_none_or(|q| field("queue") == Some(q))
    }
}

/// The newest `x-death` entry: the death that put the message where it is.
fn latest_death(m: &Message) -> Option<FieldTable> {
    match m.properties.headers.get(X_DEATH) {
        Some(FieldValue::List(l)) => l.into_iter().find_map(|e| match e {
            FieldValue::Map(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// An `x-death` entry's `time` in ms since the epoch: an AMQP timestamp (seconds), as Warren
/// writes it now and RabbitMQ does, or an integer of ms, as older Warren versions stored it.
fn death_time_ms(time: &FieldValue) -> Option<i64> {
    match time {
        FieldValue::Timestamp(secs) => i64::try_from(*secs).ok()?.checked_mul(1000),
        other => other.as_int(),
    }
}

/// Where a dead letter was first published: the exchange and routing key of its first death.
fn origin(m: &Message) -> Option<(String, String)> {
    // Only the death history is decoded, not the message's other headers.
    let h = m
        .properties
        .headers
        .select(|k| k == X_DEATH || k == "x-first-death-queue" || k == "x-first-death-reason");
    let Some(FieldValue::List(entries)) = h.get(X_DEATH) else {
        return None;
    };
    let first_queue = h.get("x-first-death-queue").and_then(FieldValue::as_str);
    let first_reason = h.get("x-first-death-reason").and_then(FieldValue::as_str);
    let tables: Vec<&FieldTable> = entries
        .iter()
        .filter_map(|e| match e {
            FieldValue::Map(t) => Some(t),
            _ => None,
        })
        .collect();
    let first = tables
        .iter()
        .find(|t| {
            t.get("queue").and_then(FieldValue::as_str) == first_queue
                && t.get("reason").and_then(FieldValue::as_str) == first_reason
        })
        .or(tables.last())?;
    let exchange = first.get("exchange")?.as_str()?.to_owned();
    let key = match first.get("routing-keys") {
        Some(FieldValue::List(keys)) => keys.first()?.as_str()?.to_owned(),
        _ => return None,
    };
    Some((exchange, key))
}

/// A body as text: itself when it is UTF-8, else base64 with the encoding named.
fn body_text(body: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => {
            use base64::Engine;
            (
                base64::engine::general_purpose::STANDARD.encode(body),
                Some("base64".to_owned()),
            )
        }
    }
}

fn preview(body: &[u8]) -> String {
    let cut = body.get(..body.len().min(PREVIEW_BYTES)).unwrap_or(body);
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > PREVIEW_BYTES {
        text.push('…');
    }
    text
}

fn dead_letter_info(position: usize, e: &QueuedMessage, m: &Message) -> DeadLetterInfo {
    let death = latest_death(m);
    let field = |name: &str| death.as_ref().and_then(|d| d.get(name));
    let text = |name: &str| field(name).and_then(FieldValue::as_str).map(str::to_owned);
    let (body, body_encoding) = body_text(&m.body);
    let (original_exchange, original_routing_key) = origin(m).unzip();
    DeadLetterInfo {
        position: position as u64,
        message_id: m.properties.message_id.clone(),
        reason: text("reason"),
        source_queue: text("queue"),
        original_exchange,
        original_routing_key,
        death_count: field("count").and_then(FieldValue::as_int),
        death_time_ms: field("time").and_then(death_time_ms),
        delivery_count: e.delivery_count,
        acquired_count: e.acquired_count,
        size: m.body.len() as u64,
        exchange: m.exchange.clone(),
        routing_key: m.routing_key.clone(),
        headers: table_map(&m.properties.headers.to_table()),
        body_preview: preview(&m.body),
        body,
        body_encoding,
    }
}

impl Broker {
    /// The ready messages of `queue` matching `filter`, with their bodies, in queue order.
    async fn select(
        &self,
        vh: &VHost,
        queue: &str,
        filter: &Filter,
    ) -> Result<(Arc<Queue>, Vec<(usize, QueuedMessage, Arc<Message>)>), BrokerError> {
        let q = vh
            .queue(queue)
            .ok_or_else(|| BrokerError::not_found("queue", queue))?;
        // A filter may match anywhere in the queue: wait until all of it has been read back.
        q.recovered().await;
        let entries = q.ready_snapshot(usize::MAX);
        let limit = filter.limit.map_or(usize::MAX, |l| l as usize);
        let mut selected = Vec::new();
        // Bodies are read back a chunk at a time and only until the limit is reached, so
        // peeking at the head of a long, paged-out queue reads a few pages, not all of it.
        for (chunk_index, chunk) in entries.chunks(SELECT_CHUNK).enumerate() {
            if selected.len() >= limit {
                break;
            }
            let mut chunk = chunk.to_vec();
            q.load_bodies(&mut chunk).await?;
            for (offset, e) in chunk.into_iter().enumerate() {
                if selected.len() >= limit {
                    break;
                }
                let Some(m) = e.message.clone() else { continue };
                if filter.matches(&m) {
                    selected.push((chunk_index * SELECT_CHUNK + offset, e, m));
                }
            }
        }
        Ok((q, selected))
    }

    pub(super) async fn dlq_peek(
        &self,
        vh: &VHost,
        queue: &str,
        mut filter: Filter,
    ) -> Result<Vec<DeadLetterInfo>, BrokerError> {
        filter.limit = Some(filter.limit.unwrap_or(DEFAULT_PEEK_LIMIT));
        let (_, selected) = self.select(vh, queue, &filter).await?;
        Ok(selected
            .iter()
            .map(|(i, e, m)| dead_letter_info(*i, e, m))
            .collect())
    }

    pub(super) async fn dlq_replay(
        &self,
        vh: &VHost,
        queue: &str,
        filter: Filter,
        target: Option<(String, String)>,
    ) -> Result<ReplayResult, BrokerError> {
        if let Some((e, _)) = &target {
            if !e.is_empty() && vh.exchange(e).is_none() {
                return Err(BrokerError::not_found("exchange", e));
            }
        }
        let (q, selected) = self.select(vh, queue, &filter).await?;
        let mut unroutable = 0u64;
        let mut moved = 0u64;
        let mut plans = Vec::new();
        for (_, e, m) in selected {
            let Some((exchange, key)) = target.clone().or_else(|| origin(&m)) else {
                unroutable += 1;
                continue;
            };
            let targets = self
                .route(vh, &exchange, &key, &m.properties.headers)
                .unwrap_or_default();
            if targets.is_empty() {
                unroutable += 1;
                continue;
            }
            let copy = Message {
                write: Default::default(),
                exchange,
                routing_key: key,
                properties: m.properties.clone(),
                body: m.body.clone(),
            };
            plans.push((e.id, publish_op(Arc::new(copy), targets, None)));
        }
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for chunk in chunked(plans, REPLAY_CHUNK) {
            let ids: HashSet<u64> = chunk.iter().map(|(id, _)| *id).collect();
            // Only what is still ready moves: a consumer may have taken some meanwhile.
            let mut taken: std::collections::HashMap<u64, QueuedMessage> =
                q.take_ids(&ids).into_iter().map(|e| (e.id, e)).collect();
            let moves: Vec<_> = chunk
                .into_iter()
                .filter_map(|(id, publish)| {
                    taken
                        .remove(&id)
                        .map(|entry| replay_move(q.clone(), entry, publish, refused.clone()))
                })
                .collect();
            moved += moves.len() as u64;
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.inner
                .store
                .move_messages(DeadLetterOp {
                    removals: Vec::new(),
                    publishes: Vec::new(),
                    moves,
                    done: Completion::Oneshot(tx),
                })
                .await?;
            rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        }
        let refused = refused.load(Ordering::Relaxed);
        moved = moved.saturating_sub(refused);
        unroutable += refused;
        tracing::info!(queue = %q.name, moved, unroutable, "dead letters replayed");
        Ok(ReplayResult { moved, unroutable })
    }

    /// Removes the selected ready messages of `q` durably; returns how many.
    async fn remove_selected(&self, q: &Arc<Queue>, ids: HashSet<u64>) -> Result<u64, BrokerError> {
        let taken = q.take_ids(&ids);
        self.forget_durably(q, &taken).await?;
        Ok(taken.len() as u64)
    }

    pub(super) async fn dlq_purge(
        &self,
        vh: &VHost,
        queue: &str,
        filter: Filter,
    ) -> Result<PurgeResult, BrokerError> {
        let (q, selected) = self.select(vh, queue, &filter).await?;
        let ids = selected.iter().map(|(_, e, _)| e.id).collect();
        let purged = self.remove_selected(&q, ids).await?;
        tracing::info!(queue = %q.name, purged, "dead letters purged");
        Ok(PurgeResult { purged })
    }

    pub(super) async fn message_delete(
        &self,
        vh: &VHost,
        queue: &str,
        message_id: &str,
    ) -> Result<DeleteResult, BrokerError> {
        let (q, selected) = self.select(vh, queue, &Filter::default()).await?;
        let ids: HashSet<u64> = selected
            .iter()
            .filter(|(_, _, m)| m.properties.message_id.as_deref() == Some(message_id))
            .map(|(_, e, _)| e.id)
            .collect();
        if ids.is_empty() {
            return Err(BrokerError::NotFound {
                kind: "ready message with id",
                name: crate::clip::name(message_id).into_owned(),
            });
        }
        let deleted = self.remove_selected(&q, ids).await?;
        tracing::info!(queue = %q.name, message_id, deleted, "messages deleted by an operator");
        Ok(DeleteResult { deleted })
    }
}

fn chunked<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn death_times_are_read_in_both_stored_forms() {
        assert_eq!(
            death_time_ms(&FieldValue::Timestamp(1_714_564_800)),
            Some(1_714_564_800_000)
        );
        // Messages dead-lettered by older versions: an integer of ms.
        assert_eq!(
            death_time_ms(&FieldValue::Int(1_714_564_800_123)),
            Some(1_714_564_800_123)
        );
        assert_eq!(death_time_ms(&FieldValue::Timestamp(u64::MAX)), None);
        assert_eq!(death_time_ms(&FieldValue::String("x".into())), None);
    }
}
