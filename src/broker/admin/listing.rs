//! `status` and the listings: queues, exchanges, bindings, connections, consumers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use warren_protocol::{ExchangeKind, FieldTable};

use crate::admin_types::{
    BindingInfo, ConnectionInfo, ConsumerInfo, ExchangeInfo, QueueInfo, Status, StatusTotals,
    StoreTotals,
};
use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::exchange::Exchange;
use crate::broker::queue::Queue;
use crate::broker::stats::{process_cpu_seconds, resident_memory_bytes};
use crate::broker::vhost::VHost;
use crate::broker::Broker;
use crate::json::table_map;
use crate::message::now_ms;

fn exchange_info(e: &Exchange) -> ExchangeInfo {
    ExchangeInfo {
        name: e.name.to_string(),
        kind: e.kind.as_str().to_owned(),
        durable: e.durable,
        auto_delete: e.auto_delete,
        internal: e.internal,
        builtin: e.builtin,
        arguments: table_map(&e.arguments),
    }
}

impl Broker {
    pub(super) fn status(&self) -> Status {
        let stats = &self.inner.stats;
        let store = self.inner.store.stats();
        let queues = self.queues();
        let exchanges: usize = self
            .vhost_list()
            .iter()
            .map(|v| v.exchanges.read().len())
            .sum();
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
        let dead_lettered = DeadLetterReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), stats.dead_lettered(*r)))
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            listeners: self.inner.listeners.read().clone(),
            data_dir: self.inner.config.data_dir.display().to_string(),
            store_bytes: self.inner.store.size_on_disk(),
            memory_bytes: resident_memory_bytes(),
            cpu_seconds: process_cpu_seconds(),
            memory_used_bytes: stats.memory_used_bytes.load(Ordering::Relaxed),
            memory_limit_bytes: stats.memory_limit_bytes.load(Ordering::Relaxed),
            disk_free_bytes: stats.disk_free_bytes.load(Ordering::Relaxed),
            alarms: self.inner.alarms.current().names(),
            connections: self.inner.sessions.read().len() as u64,
            consumers,
            queues: queues.len() as u64,
            exchanges: exchanges as u64,
            messages_ready: ready,
            messages_unacked: unacked,
            messages_delayed: delayed,
            publish_rate: rates[0],
            deliver_rate: rates[1],
            ack_rate: rates[2],
            totals: StatusTotals {
                published: stats.published.load(Ordering::Relaxed),
                routed: stats.routed.load(Ordering::Relaxed),
                unroutable: stats.unroutable.load(Ordering::Relaxed),
                duplicates: stats.duplicates.load(Ordering::Relaxed),
                returned: stats.returned.load(Ordering::Relaxed),
                acked: stats.acked.load(Ordering::Relaxed),
                requeued: stats.requeued.load(Ordering::Relaxed),
                expired: stats.expired.load(Ordering::Relaxed),
                dead_lettered,
                dead_letters_dropped: stats.dead_letters_dropped.load(Ordering::Relaxed),
                scheduled: stats.scheduled.load(Ordering::Relaxed),
                consumer_timeouts: stats.consumer_timeouts.load(Ordering::Relaxed),
            },
            store: StoreTotals {
                commits: store.commits.load(Ordering::Relaxed),
                messages_written: store.messages_written.load(Ordering::Relaxed),
                operations_committed: store.ops_committed.load(Ordering::Relaxed),
                commit_seconds_total: store.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            },
        }
    }

    pub(super) fn exchanges(&self, vh: &VHost) -> Vec<ExchangeInfo> {
        let mut list: Vec<ExchangeInfo> = vh
            .exchanges
            .read()
            .values()
            .map(|e| exchange_info(e))
            .collect();
        list.push(ExchangeInfo {
            name: String::new(),
            kind: ExchangeKind::Direct.as_str().to_owned(),
            durable: true,
            auto_delete: false,
            internal: false,
            builtin: true,
            arguments: table_map(&FieldTable::new()),
        });
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub(super) fn bindings(
        &self,
        vh: &VHost,
        queue: Option<&str>,
        exchange: Option<&str>,
    ) -> Vec<BindingInfo> {
        let mut out = Vec::new();
        for e in vh.exchanges.read().values() {
            if exchange.is_some_and(|x| x != &*e.name) {
                continue;
            }
            for b in e.bindings() {
                if queue.is_some_and(|q| q != &*b.queue.name) {
                    continue;
                }
                out.push(BindingInfo {
                    source: e.name.to_string(),
                    destination: b.queue.name.to_string(),
                    destination_type: "queue".to_owned(),
                    routing_key: b.routing_key.clone(),
                    arguments: table_map(&b.arguments),
                });
            }
            if queue.is_some() {
                continue;
            }
            for b in e.exchange_bindings() {
                out.push(BindingInfo {
                    source: e.name.to_string(),
                    destination: b.destination.to_string(),
                    destination_type: "exchange".to_owned(),
                    routing_key: b.routing_key.clone(),
                    arguments: table_map(&b.arguments),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.source, &a.destination, &a.routing_key).cmp(&(
                &b.source,
                &b.destination,
                &b.routing_key,
            ))
        });
        out
    }

    pub(super) fn connections(&self) -> Vec<ConnectionInfo> {
        self.live_sessions()
            .iter()
            .map(|s| ConnectionInfo {
                id: s.id,
                peer: s.peer.clone(),
                connected_at_ms: s.connected_at_ms,
                consumers: s.consumers().len() as u64,
                unacked: s.unacked_count() as u64,
                published: s.published.load(Ordering::Relaxed),
                user: s.user.name.clone(),
                vhost: s.vhost.name.to_string(),
                protocol: s.client().door.as_str().to_owned(),
                client_product: s.client().product.clone(),
                client_version: s.client().version.clone(),
            })
            .collect()
    }

    /// The consumers of the connections in virtual host `vh`.
    pub(super) fn consumers(&self, vh: &VHost) -> Vec<ConsumerInfo> {
        let mut out = Vec::new();
        for s in self.live_sessions() {
            if s.vhost.name != vh.name {
                continue;
            }
            for c in s.consumers() {
                let queue = c.queue.upgrade();
                // Waiting its turn on a single-active-consumer queue: not active.
                let active = queue.as_ref().is_none_or(|q| {
                    !q.args.single_active_consumer
                        || q.active_consumer().is_some_and(|a| Arc::ptr_eq(&a, &c))
                });
                out.push(ConsumerInfo {
                    tag: c.tag.to_string(),
                    connection: s.id,
                    queue: queue.map(|q| q.name.to_string()),
                    prefetch: c.prefetch,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    unacked: c.unacked(),
                    active,
                });
            }
        }
        out
    }
}

pub(super) fn queue_info(q: &Queue) -> QueueInfo {
    let c = q.counts();
    let rates = q.stats.rates();
    let a = &q.args;
    QueueInfo {
        name: q.name.to_string(),
        durable: q.durable,
        exclusive: q.exclusive_owner.is_some(),
        auto_delete: q.auto_delete,
        arguments: table_map(&q.arguments),
        dead_letter_exchange: a.dead_letter_exchange.clone(),
        dead_letter_routing_key: a.dead_letter_routing_key.clone(),
        message_ttl_ms: a.message_ttl_ms,
        max_length: a.max_length,
        max_length_bytes: a.max_length_bytes,
        overflow: a.overflow.as_str().to_owned(),
        delivery_limit: a.delivery_limit,
        messages_ready: c.ready,
        messages_unacked: c.unacked,
        messages_delayed: c.delayed,
        message_bytes: c.ready_bytes,
        consumers: c.consumers,
        publish_rate: rates[0],
        deliver_rate: rates[1],
        ack_rate: rates[2],
        published_total: q.stats.published.load(Ordering::Relaxed),
        delivered_total: q.stats.delivered.load(Ordering::Relaxed),
        acked_total: q.stats.acked.load(Ordering::Relaxed),
        dead_lettered_total: q.stats.dead_lettered.load(Ordering::Relaxed),
        as_of_ms: now_ms(),
        queue_type: a.queue_type.as_str().to_owned(),
        recovering: c.recovering,
    }
}
