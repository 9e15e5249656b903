//! `status` and the listings: queues, exchanges, bindings, connections, consumers.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use warren_protocol::{ExchangeKind, FieldTable};

use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::queue::Queue;
use crate::broker::stats::resident_memory_bytes;
use crate::broker::Broker;
use crate::json::table_json;
use crate::message::now_ms;

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
    pub(super) fn status_json(&self) -> Value {
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

    pub(super) fn exchanges_json(&self) -> Value {
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

    pub(super) fn bindings_json(&self, queue: Option<&str>, exchange: Option<&str>) -> Value {
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

    pub(super) fn connections_json(&self) -> Value {
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

    pub(super) fn consumers_json(&self) -> Value {
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
}

pub(super) fn queue_json(q: &Queue) -> Value {
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
