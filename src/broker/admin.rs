//! Administrative commands (`Admin` frames): status, listings, dead-letter inspection, replay
//! and purge, and definitions export and import. Each answers one JSON document; the field
//! names are part of the protocol (PROTOCOL.md §15) and of `warren ... --json`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use warren_protocol::{
    ExchangeDeclare, ExchangeKind, FieldTable, FieldValue, QueueBind, QueueDeclare,
};

use super::dead_letter::{DeadLetterReason, X_DEATH};
use super::exchange;
use super::queue::Queue;
use super::queue_args::QueueArgs;
use super::redeclare::inequivalence;
use super::session::Session;
use super::stats::resident_memory_bytes;
use super::Broker;
use crate::error::BrokerError;
use crate::json::{json_table, table_json};
use crate::message::{now_ms, Message, QueuedMessage};
use crate::store::{Completion, DeadLetterOp, Move, PublishOp};

/// How many messages `dlq.peek` shows when no limit is given.
pub const DEFAULT_PEEK_LIMIT: u64 = 100;

/// Messages moved per store operation by `dlq.replay`: each chunk moves atomically, so a crash
/// mid-replay leaves every message in exactly one place.
const REPLAY_CHUNK: usize = 500;

/// Ready messages whose bodies are read back per step while selecting dead letters.
const SELECT_CHUNK: usize = 1_000;

/// Bytes of a body shown as a preview.
const PREVIEW_BYTES: usize = 64;

fn opt_str<'a>(args: &'a FieldTable, name: &str) -> Result<Option<&'a str>, BrokerError> {
    match args.get(name) {
        None => Ok(None),
        Some(FieldValue::String(s)) => Ok(Some(s)),
        Some(other) => Err(BrokerError::invalid(
            format!("admin argument {name}"),
            format!("expected a string, got {other:?}"),
        )),
    }
}

fn req_str<'a>(args: &'a FieldTable, name: &str) -> Result<&'a str, BrokerError> {
    opt_str(args, name)?.ok_or_else(|| {
        BrokerError::invalid(format!("admin argument {name}"), "is required".to_owned())
    })
}

fn opt_u64(args: &FieldTable, name: &str) -> Result<Option<u64>, BrokerError> {
    match args.get(name) {
        None => Ok(None),
        Some(FieldValue::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(other) => Err(BrokerError::invalid(
            format!("admin argument {name}"),
            format!("expected a non-negative integer, got {other:?}"),
        )),
    }
}

/// Which dead letters a `dlq.*` command acts on.
#[derive(Debug, Default)]
struct Filter {
    limit: Option<u64>,
    reason: Option<String>,
    from_queue: Option<String>,
}

impl Filter {
    fn parse(args: &FieldTable) -> Result<Filter, BrokerError> {
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
        let field = |name: &str| last.and_then(|d| d.get(name)).and_then(FieldValue::as_str);
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
fn latest_death(m: &Message) -> Option<&FieldTable> {
    match m.properties.headers.get(X_DEATH) {
        Some(FieldValue::List(l)) => l.iter().find_map(|e| match e {
            FieldValue::Map(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// Where a dead letter was first published: the exchange and routing key of its first death.
fn origin(m: &Message) -> Option<(String, String)> {
    let h = &m.properties.headers;
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

fn body_json(body: &[u8]) -> (Value, Value) {
    match std::str::from_utf8(body) {
        Ok(text) => (Value::String(text.to_owned()), Value::Null),
        Err(_) => {
            use base64::Engine;
            (
                Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
                Value::String("base64".into()),
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

fn dead_letter_json(position: usize, e: &QueuedMessage, m: &Message) -> Value {
    let death = latest_death(m);
    let field = |name: &str| death.and_then(|d| d.get(name)).cloned();
    let (body, encoding) = body_json(&m.body);
    let (orig_exchange, orig_key) = origin(m).unzip();
    json!({
        "position": position,
        "message_id": m.properties.message_id,
        "reason": field("reason").as_ref().and_then(FieldValue::as_str),
        "source_queue": field("queue").as_ref().and_then(FieldValue::as_str),
        "original_exchange": orig_exchange,
        "original_routing_key": orig_key,
        "death_count": field("count").as_ref().and_then(FieldValue::as_int),
        "death_time_ms": field("time").as_ref().and_then(FieldValue::as_int),
        "delivery_count": e.delivery_count,
        "size": m.body.len(),
        "exchange": m.exchange,
        "routing_key": m.routing_key,
        "headers": table_json(&m.properties.headers),
        "body_preview": preview(&m.body),
        "body": body,
        "body_encoding": encoding,
    })
}

fn exchange_json(
    name: &str,
    kind: ExchangeKind,
    durable: bool,
    builtin: bool,
    args: &FieldTable,
) -> Value {
    json!({
        "name": name,
        "type": kind.as_str(),
        "durable": durable,
        "builtin": builtin,
        "arguments": table_json(args),
    })
}

impl Broker {
    /// Runs an admin command and returns its JSON result.
    ///
    /// # Errors
    /// An unknown command, a bad or missing argument, a missing queue, a conflicting import,
    /// or a store failure.
    pub async fn admin(
        &self,
        session: &Session,
        command: &str,
        args: &FieldTable,
    ) -> Result<Bytes, BrokerError> {
        let value = match command {
            "status" => self.status_json(),
            "queue.list" => {
                Value::Array(self.sorted_queues().iter().map(|q| queue_json(q)).collect())
            }
            "queue.inspect" => {
                let name = req_str(args, "queue")?;
                let q = self
                    .queue(name)
                    .ok_or_else(|| BrokerError::not_found("queue", name))?;
                queue_json(&q)
            }
            "exchange.list" => self.exchanges_json(),
            "binding.list" => {
                self.bindings_json(opt_str(args, "queue")?, opt_str(args, "exchange")?)
            }
            "connection.list" => self.connections_json(),
            "consumer.list" => self.consumers_json(),
            // One engine: a queue peek is a dead-letter peek without the dead-letter filters.
            "dlq.peek" | "queue.peek" => {
                self.dlq_peek(req_str(args, "queue")?, Filter::parse(args)?)
                    .await?
            }
            "dlq.replay" => {
                let target = match (opt_str(args, "to_exchange")?, opt_str(args, "routing_key")?) {
                    (Some(e), k) => Some((e.to_owned(), k.unwrap_or("").to_owned())),
                    (None, Some(_)) => {
                        return Err(BrokerError::invalid(
                            "admin argument routing_key",
                            "needs to_exchange".to_owned(),
                        ))
                    }
                    (None, None) => None,
                };
                self.dlq_replay(req_str(args, "queue")?, Filter::parse(args)?, target)
                    .await?
            }
            "dlq.purge" => {
                self.dlq_purge(req_str(args, "queue")?, Filter::parse(args)?)
                    .await?
            }
            "message.delete" => {
                self.message_delete(req_str(args, "queue")?, req_str(args, "id")?)
                    .await?
            }
            "definitions.export" => self.definitions_export(),
            "definitions.import" => {
                let text = req_str(args, "definitions")?;
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    BrokerError::invalid("definitions", format!("not valid JSON: {e}"))
                })?;
                self.definitions_import(session, &doc).await?
            }
            other => {
                return Err(BrokerError::CommandInvalid(format!(
                    "unknown admin command '{other}'"
                )))
            }
        };
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| BrokerError::CommandInvalid(format!("encoding the result: {e}")))
    }

    fn sorted_queues(&self) -> Vec<Arc<Queue>> {
        let mut qs: Vec<Arc<Queue>> = self.inner.queues.read().values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        qs
    }

    fn status_json(&self) -> Value {
        let stats = &self.inner.stats;
        let store = self.inner.store.stats();
        let queues = self.sorted_queues();
        let (mut ready, mut unacked, mut delayed, mut consumers) = (0u64, 0u64, 0u64, 0u64);
        let mut rates = [0f64; 3];
        for q in &queues {
            let c = q.counts();
            ready += c.ready;
            unacked += c.unacked;
            delayed += c.delayed;
            consumers += u64::from(c.consumers);
            for (sum, r) in rates.iter_mut().zip(q.stats.rates()) {
                *sum += r;
            }
        }
        let commits = store.commits.load(Ordering::Relaxed);
        let dead_lettered: serde_json::Map<String, Value> = DeadLetterReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(stats.dead_lettered(*r))))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.inner.started.elapsed().as_secs(),
            "listeners": *self.inner.listeners.read(),
            "data_dir": self.inner.config.data_dir.display().to_string(),
            "store_bytes": self.inner.store.size_on_disk(),
            "memory_bytes": resident_memory_bytes(),
            "connections": self.inner.sessions.read().len(),
            "consumers": consumers,
            "queues": queues.len(),
            "exchanges": self.inner.exchanges.read().len(),
            "messages_ready": ready,
            "messages_unacked": unacked,
            "messages_delayed": delayed,
            "publish_rate": rates[0],
            "deliver_rate": rates[1],
            "ack_rate": rates[2],
            "totals": {
                "published": stats.published.load(Ordering::Relaxed),
                "routed": stats.routed.load(Ordering::Relaxed),
                "unroutable": stats.unroutable.load(Ordering::Relaxed),
                "returned": stats.returned.load(Ordering::Relaxed),
                "acked": stats.acked.load(Ordering::Relaxed),
                "requeued": stats.requeued.load(Ordering::Relaxed),
                "expired": stats.expired.load(Ordering::Relaxed),
                "dead_lettered": dead_lettered,
                "dead_letters_dropped": stats.dead_letters_dropped.load(Ordering::Relaxed),
                "scheduled": stats.scheduled.load(Ordering::Relaxed),
                "consumer_timeouts": stats.consumer_timeouts.load(Ordering::Relaxed),
            },
            "store": {
                "commits": commits,
                "messages_written": store.messages_written.load(Ordering::Relaxed),
                "operations_committed": store.ops_committed.load(Ordering::Relaxed),
                "commit_seconds_total": store.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            },
        })
    }

    fn exchanges_json(&self) -> Value {
        let mut list: Vec<Value> = self
            .inner
            .exchanges
            .read()
            .values()
            .map(|e| exchange_json(&e.name, e.kind, e.durable, e.builtin, &e.arguments))
            .collect();
        list.insert(
            0,
            exchange_json("", ExchangeKind::Direct, true, true, &FieldTable::new()),
        );
        list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Value::Array(list)
    }

    fn bindings_json(&self, queue: Option<&str>, exchange: Option<&str>) -> Value {
        let mut out = Vec::new();
        for e in self.inner.exchanges.read().values() {
            if exchange.is_some_and(|x| x != &*e.name) {
                continue;
            }
            for b in e.bindings() {
                if queue.is_some_and(|q| q != &*b.queue.name) {
                    continue;
                }
                out.push(json!({
                    "source": &*e.name,
                    "destination": &*b.queue.name,
                    "destination_type": "queue",
                    "routing_key": b.routing_key,
                    "arguments": table_json(&b.arguments),
                }));
            }
        }
        out.sort_by(|a, b| {
            (
                a["source"].as_str(),
                a["destination"].as_str(),
                a["routing_key"].as_str(),
            )
                .cmp(&(
                    b["source"].as_str(),
                    b["destination"].as_str(),
                    b["routing_key"].as_str(),
                ))
        });
        Value::Array(out)
    }

    fn connections_json(&self) -> Value {
        Value::Array(
            self.live_sessions()
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "peer": s.peer,
                        "connected_at_ms": s.connected_at_ms,
                        "consumers": s.consumers().len(),
                        "unacked": s.unacked_count(),
                        "published": s.published.load(Ordering::Relaxed),
                    })
                })
                .collect(),
        )
    }

    fn consumers_json(&self) -> Value {
        let mut out = Vec::new();
        for s in self.live_sessions() {
            for c in s.consumers() {
                out.push(json!({
                    "tag": &*c.tag,
                    "connection": s.id,
                    "queue": c.queue.upgrade().map(|q| q.name.to_string()),
                    "prefetch": c.prefetch,
                    "no_ack": c.no_ack,
                    "exclusive": c.exclusive,
                    "unacked": c.unacked(),
                }));
            }
        }
        Value::Array(out)
    }

    /// The ready messages of `queue` matching `filter`, with their bodies, in queue order.
    async fn select(
        &self,
        queue: &str,
        filter: &Filter,
    ) -> Result<(Arc<Queue>, Vec<(usize, QueuedMessage, Arc<Message>)>), BrokerError> {
        let q = self
            .queue(queue)
            .ok_or_else(|| BrokerError::not_found("queue", queue))?;
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

    async fn dlq_peek(&self, queue: &str, mut filter: Filter) -> Result<Value, BrokerError> {
        filter.limit = Some(filter.limit.unwrap_or(DEFAULT_PEEK_LIMIT));
        let (_, selected) = self.select(queue, &filter).await?;
        Ok(Value::Array(
            selected
                .iter()
                .map(|(i, e, m)| dead_letter_json(*i, e, m))
                .collect(),
        ))
    }

    async fn dlq_replay(
        &self,
        queue: &str,
        filter: Filter,
        target: Option<(String, String)>,
    ) -> Result<Value, BrokerError> {
        if let Some((e, _)) = &target {
            if !e.is_empty() && self.exchange(e).is_none() {
                return Err(BrokerError::not_found("exchange", e));
            }
        }
        let (q, selected) = self.select(queue, &filter).await?;
        let mut unroutable = 0u64;
        let mut moved = 0u64;
        let mut plans = Vec::new();
        for (_, e, m) in selected {
            let Some((exchange, key)) = target.clone().or_else(|| origin(&m)) else {
                unroutable += 1;
                continue;
            };
            let targets = self
                .route(&exchange, &key, &m.properties.headers)
                .unwrap_or_default();
            if targets.is_empty() {
                unroutable += 1;
                continue;
            }
            let copy = Message {
                exchange,
                routing_key: key,
                properties: m.properties.clone(),
                body: m.body.clone(),
            };
            plans.push((e.id, PublishOp::new(Arc::new(copy), targets, None)));
        }
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for chunk in chunked(plans, REPLAY_CHUNK) {
            let ids: HashSet<u64> = chunk.iter().map(|(id, _)| *id).collect();
            // Only what is still ready moves: a consumer may have taken some meanwhile.
            let mut taken: std::collections::HashMap<u64, QueuedMessage> =
                q.take_ids(&ids).into_iter().map(|e| (e.id, e)).collect();
            let moves: Vec<Move> = chunk
                .into_iter()
                .filter_map(|(id, publish)| {
                    taken.remove(&id).map(|entry| Move {
                        source: q.clone(),
                        entry,
                        publish,
                    })
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
                    refused: Some(refused.clone()),
                    done: Completion::Oneshot(tx),
                })
                .await?;
            rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        }
        let refused = refused.load(Ordering::Relaxed);
        moved = moved.saturating_sub(refused);
        unroutable += refused;
        tracing::info!(queue = %q.name, moved, unroutable, "dead letters replayed");
        Ok(json!({ "moved": moved, "unroutable": unroutable }))
    }

    /// Removes the selected ready messages of `q` durably; returns how many.
    async fn remove_selected(&self, q: &Arc<Queue>, ids: HashSet<u64>) -> Result<u64, BrokerError> {
        let taken = q.take_ids(&ids);
        self.forget_durably(q, &taken).await?;
        Ok(taken.len() as u64)
    }

    async fn dlq_purge(&self, queue: &str, filter: Filter) -> Result<Value, BrokerError> {
        let (q, selected) = self.select(queue, &filter).await?;
        let ids = selected.iter().map(|(_, e, _)| e.id).collect();
        let purged = self.remove_selected(&q, ids).await?;
        tracing::info!(queue = %q.name, purged, "dead letters purged");
        Ok(json!({ "purged": purged }))
    }

    async fn message_delete(&self, queue: &str, message_id: &str) -> Result<Value, BrokerError> {
        let (q, selected) = self.select(queue, &Filter::default()).await?;
        let ids: HashSet<u64> = selected
            .iter()
            .filter(|(_, _, m)| m.properties.message_id.as_deref() == Some(message_id))
            .map(|(_, e, _)| e.id)
            .collect();
        if ids.is_empty() {
            return Err(BrokerError::NotFound {
                kind: "ready message with id",
                name: message_id.to_owned(),
            });
        }
        let deleted = self.remove_selected(&q, ids).await?;
        tracing::info!(queue = %q.name, message_id, deleted, "messages deleted by an operator");
        Ok(json!({ "deleted": deleted }))
    }

    fn definitions_export(&self) -> Value {
        let mut exchanges: Vec<Value> = self
            .inner
            .exchanges
            .read()
            .values()
            .filter(|e| !e.builtin)
            .map(|e| {
                json!({
                    "name": &*e.name,
                    "type": e.kind.as_str(),
                    "durable": e.durable,
                    "arguments": table_json(&e.arguments),
                })
            })
            .collect();
        exchanges.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let queues: Vec<Value> = self
            .sorted_queues()
            .iter()
            .filter(|q| q.exclusive_owner.is_none())
            .map(|q| {
                json!({
                    "name": &*q.name,
                    "durable": q.durable,
                    "auto_delete": q.auto_delete,
                    "arguments": table_json(&q.arguments),
                })
            })
            .collect();
        let exported: HashSet<String> = queues
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_owned))
            .collect();
        let bindings: Vec<Value> = match self.bindings_json(None, None) {
            Value::Array(all) => all
                .into_iter()
                .filter(|b| {
                    b["destination"]
                        .as_str()
                        .is_some_and(|d| exported.contains(d))
                })
                .collect(),
            _ => Vec::new(),
        };
        json!({
            "warren_version": env!("CARGO_PKG_VERSION"),
            "exchanges": exchanges,
            "queues": queues,
            "bindings": bindings,
        })
    }

    /// Imports definitions: checks everything first, then declares what is missing. Running
    /// it twice changes nothing the second time.
    async fn definitions_import(
        &self,
        session: &Session,
        doc: &Value,
    ) -> Result<Value, BrokerError> {
        let defs = Definitions::parse(doc)?;
        // Check every definition against what exists before changing anything.
        for e in &defs.exchanges {
            let existing = self.exchange(&e.name);
            // As declare_exchange: `x-` arguments are refused unless the exchange already
            // has exactly these arguments.
            if !existing
                .as_ref()
                .is_some_and(|x| x.arguments == e.arguments)
            {
                exchange::validate_arguments(&e.arguments).map_err(|err| match err {
                    BrokerError::InvalidArgument { what, reason } => BrokerError::InvalidArgument {
                        what: format!("definitions: exchange '{}' {what}", e.name),
                        reason,
                    },
                    other => other,
                })?;
            }
            if let Some(existing) = existing {
                if let Some(why) = inequivalence(
                    "exchange",
                    &e.name,
                    &[
                        (
                            "type",
                            e.kind.as_str().to_owned(),
                            existing.kind.as_str().to_owned(),
                        ),
                        (
                            "durable",
                            e.durable.to_string(),
                            existing.durable.to_string(),
                        ),
                    ],
                    &e.arguments,
                    &existing.arguments,
                ) {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "definitions conflict: {why}"
                    )));
                }
            } else if e.name.is_empty() || e.name.starts_with("amq.") {
                return Err(BrokerError::AccessRefused(format!(
                    "definitions: exchange name '{}' is reserved",
                    e.name
                )));
            }
        }
        for q in &defs.queues {
            let existing = self.queue(&q.name);
            // As declare_queue: a queue that already has exactly these arguments passes.
            if !existing
                .as_ref()
                .is_some_and(|x| x.arguments == q.arguments)
            {
                QueueArgs::parse(&q.arguments).map_err(|err| {
                    BrokerError::invalid(
                        format!("definitions: queue '{}' argument {}", q.name, err.arg),
                        err.reason,
                    )
                })?;
            }
            if let Some(existing) = existing {
                if let Some(why) = inequivalence(
                    "queue",
                    &q.name,
                    &[
                        (
                            "durable",
                            q.durable.to_string(),
                            existing.durable.to_string(),
                        ),
                        (
                            "exclusive",
                            q.exclusive.to_string(),
                            existing.exclusive_owner.is_some().to_string(),
                        ),
                        (
                            "auto_delete",
                            q.auto_delete.to_string(),
                            existing.auto_delete.to_string(),
                        ),
                    ],
                    &q.arguments,
                    &existing.arguments,
                ) {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "definitions conflict: {why}"
                    )));
                }
            }
        }
        let declared_exchanges: HashSet<&str> =
            defs.exchanges.iter().map(|e| e.name.as_str()).collect();
        let declared_queues: HashSet<&str> = defs.queues.iter().map(|q| q.name.as_str()).collect();
        for b in &defs.bindings {
            if !declared_exchanges.contains(b.exchange.as_str())
                && self.exchange(&b.exchange).is_none()
            {
                return Err(BrokerError::not_found(
                    "exchange (binding source)",
                    &b.exchange,
                ));
            }
            if !declared_queues.contains(b.queue.as_str()) && self.queue(&b.queue).is_none() {
                return Err(BrokerError::not_found(
                    "queue (binding destination)",
                    &b.queue,
                ));
            }
        }
        let (mut created_exchanges, mut created_queues) = (0u64, 0u64);
        for e in defs.exchanges {
            if self.exchange(&e.name).is_none() {
                created_exchanges += 1;
            }
            self.declare_exchange(e).await?;
        }
        for q in defs.queues {
            if self.queue(&q.name).is_none() {
                created_queues += 1;
            }
            self.declare_queue(session, q).await?;
        }
        let bindings = defs.bindings.len();
        for b in defs.bindings {
            self.bind(session, b).await?;
        }
        Ok(json!({
            "exchanges_created": created_exchanges,
            "queues_created": created_queues,
            "bindings": bindings,
        }))
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

/// A parsed definitions document.
struct Definitions {
    exchanges: Vec<ExchangeDeclare>,
    queues: Vec<QueueDeclare>,
    bindings: Vec<QueueBind>,
}

impl Definitions {
    fn parse(doc: &Value) -> Result<Definitions, BrokerError> {
        let bad = |what: String, reason: &str| BrokerError::invalid(what, reason.to_owned());
        let list = |key: &str| -> Result<Vec<Value>, BrokerError> {
            match doc.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(bad(format!("definitions {key}"), "must be an array")),
            }
        };
        let text = |v: &Value, key: &str, what: &str| -> Result<String, BrokerError> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    bad(
                        format!("definitions: {what} field {key}"),
                        "must be a string",
                    )
                })
        };
        let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
        let table = |v: &Value, what: &str| -> Result<FieldTable, BrokerError> {
            match v.get("arguments") {
                None => Ok(FieldTable::new()),
                Some(a) => json_table(a)
                    .map_err(|e| BrokerError::invalid(format!("definitions: {what} arguments"), e)),
            }
        };
        let mut out = Definitions {
            exchanges: Vec::new(),
            queues: Vec::new(),
            bindings: Vec::new(),
        };
        for e in list("exchanges")? {
            let name = text(&e, "name", "exchange")?;
            let kind_name = text(&e, "type", "exchange")?;
            let kind = ExchangeKind::parse(&kind_name).ok_or_else(|| {
                bad(
                    format!("definitions: exchange '{name}' type"),
                    "must be direct, fanout, topic or headers",
                )
            })?;
            out.exchanges.push(ExchangeDeclare {
                arguments: table(&e, &format!("exchange '{name}'"))?,
                durable: flag(&e, "durable"),
                passive: false,
                kind,
                name,
            });
        }
        for q in list("queues")? {
            let name = text(&q, "name", "queue")?;
            out.queues.push(QueueDeclare {
                arguments: table(&q, &format!("queue '{name}'"))?,
                durable: flag(&q, "durable"),
                exclusive: false,
                auto_delete: flag(&q, "auto_delete"),
                passive: false,
                name,
            });
        }
        for b in list("bindings")? {
            out.bindings.push(QueueBind {
                exchange: text(&b, "source", "binding")?,
                queue: text(&b, "destination", "binding")?,
                routing_key: b
                    .get("routing_key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arguments: table(&b, "binding")?,
            });
        }
        Ok(out)
    }
}

fn queue_json(q: &Queue) -> Value {
    let c = q.counts();
    let rates = q.stats.rates();
    let a = &q.args;
    json!({
        "name": &*q.name,
        "durable": q.durable,
        "exclusive": q.exclusive_owner.is_some(),
        "auto_delete": q.auto_delete,
        "arguments": table_json(&q.arguments),
        "dead_letter_exchange": a.dead_letter_exchange,
        "dead_letter_routing_key": a.dead_letter_routing_key,
        "message_ttl_ms": a.message_ttl_ms,
        "max_length": a.max_length,
        "max_length_bytes": a.max_length_bytes,
        "overflow": a.overflow.as_str(),
        "delivery_limit": a.delivery_limit,
        "messages_ready": c.ready,
        "messages_unacked": c.unacked,
        "messages_delayed": c.delayed,
        "message_bytes": c.ready_bytes,
        "consumers": c.consumers,
        "publish_rate": rates[0],
        "deliver_rate": rates[1],
        "ack_rate": rates[2],
        "published_total": q.stats.published.load(Ordering::Relaxed),
        "delivered_total": q.stats.delivered.load(Ordering::Relaxed),
        "acked_total": q.stats.acked.load(Ordering::Relaxed),
        "dead_lettered_total": q.stats.dead_lettered.load(Ordering::Relaxed),
        "as_of_ms": now_ms(),
    })
}
