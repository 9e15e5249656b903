//! Recovery: rebuilding the broker from what the store read at startup (`Store::open`):
//! the built-in exchanges, stored exchanges, queues with their messages, and bindings.
//! Exclusive queues left by the previous run are deleted; stored arguments this Warren no
//! longer implements load with a warning rather than stranding the data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::exchange::{self, Binding, Exchange, ExchangeBinding};
use super::queue::{Queue, QueueSettings};
use super::queue_args::{self, QueueArgs};
use super::vhost::VHost;
use super::Broker;
use crate::error::BrokerError;
use crate::message::QueuedMessage;
use crate::store::codec::{DestinationKind, VhostRecord};
use crate::store::{Recovered, RecoveredEntry, StoreError, TopologyChange};

impl Broker {
    pub(super) async fn restore(&self, mut recovered: Recovered) -> Result<(), BrokerError> {
        let inner = &self.inner;
        for v in &recovered.vhosts {
            inner
                .vhosts
                .write()
                .insert(v.name.clone(), VHost::new(&v.name));
        }
        // Every record names a virtual host that exists (deleting one deletes its records in
        // the same transaction); should one not, it is recreated rather than its contents
        // dropped unseen.
        let named = recovered
            .exchanges
            .iter()
            .map(|e| &e.vhost)
            .chain(recovered.queues.iter().map(|q| &q.record.vhost))
            .chain(recovered.bindings.iter().map(|b| &b.vhost));
        let missing: std::collections::BTreeSet<String> =
            named.filter(|v| self.vhost(v).is_none()).cloned().collect();
        for name in missing {
            tracing::warn!(vhost = %name, "stored records name a virtual host that is not stored; recreating it");
            inner
                .store
                .change_topology(TopologyChange::PutVhost(VhostRecord { name: name.clone() }))
                .await?;
            inner.vhosts.write().insert(name.clone(), VHost::new(&name));
        }
        let vhost = |name: &str| {
            self.vhost(name)
                .expect("every named virtual host was created above")
        };
        let dedup_keys = std::mem::take(&mut recovered.dedup);
        {
            for e in recovered.exchanges {
                let unsupported = exchange::unsupported_arguments(&e.arguments);
                if !unsupported.is_empty() {
                    // Declared by an older Warren that accepted them; refusing to start would
                    // strand the data, so the exchange loads and the operator is told.
                    tracing::warn!(exchange = %e.name, arguments = ?unsupported,
                        "stored exchange has arguments Warren does not implement; they have no effect");
                }
                if let Err(err) = exchange::alternate_exchange(&e.arguments) {
                    // Stored by a Warren that ignored the argument: it still has no effect.
                    tracing::warn!(exchange = %e.name, error = %err,
                        "stored exchange has an invalid alternate-exchange; it has no effect");
                }
                vhost(&e.vhost).exchanges.write().insert(
                    e.name.clone(),
                    Arc::new(
                        Exchange::new(
                            &e.vhost,
                            e.name.as_str().into(),
                            e.kind,
                            true,
                            e.arguments,
                            false,
                        )
                        .flagged(e.auto_delete, e.internal),
                    ),
                );
            }
        }
        let mut max_id = 0;
        let mut orphaned = Vec::new();
        let mut message_total = 0usize;
        for rq in recovered.queues {
            max_id = max_id.max(rq.record.id);
            if rq.record.exclusive {
                // Its owning connection died with the old process.
                orphaned.push((rq.record.vhost, rq.record.id, rq.record.name));
                continue;
            }
            let unsupported = queue_args::unsupported_arguments(&rq.record.arguments);
            if !unsupported.is_empty() {
                // Declared by an older Warren that accepted them; refusing to start would
                // strand the messages, so the queue loads and the operator is told.
                tracing::warn!(queue = %rq.record.name, arguments = ?unsupported,
                    "stored queue has arguments Warren does not implement; they have no effect");
            }
            let args = QueueArgs::parse_known(&rq.record.arguments).unwrap_or_else(|e| {
                tracing::warn!(queue = %rq.record.name, error = %e, "stored queue arguments no longer parse; ignoring them");
                QueueArgs::default()
            });
            let q = Queue::new(
                QueueSettings {
                    id: rq.record.id,
                    name: rq.record.name.as_str().into(),
                    durable: true,
                    exclusive_owner: None,
                    auto_delete: rq.record.auto_delete,
                    arguments: rq.record.arguments,
                    args,
                },
                inner.ctx.clone(),
            );
            if q.stream.is_some() {
                self.restore_stream(&q).await;
            }
            message_total += rq.messages.len();
            let priorities = match q.args.max_priority {
                Some(_) => self.stored_priorities(&rq.record.name, &rq.messages).await,
                None => Vec::new(),
            };
            q.restore(rq.messages.into_iter().enumerate().map(|(i, e)| {
                (
                    QueuedMessage {
                        id: e.id,
                        message: None,
                        size: e.size,
                        delivery_count: e.delivery_count,
                        acquired_count: e.acquired_count,
                        stored: true,
                        expires_at: e.expires_at,
                        priority: priorities.get(i).copied().unwrap_or(0),
                    },
                    e.ready_at,
                )
            }));
            vhost(&rq.record.vhost)
                .queues
                .write()
                .insert(rq.record.name, q);
        }
        inner.next_queue_id.store(max_id + 1, Ordering::Release);
        for b in recovered.bindings {
            let vh = vhost(&b.vhost);
            let exchange = vh.exchange(&b.exchange);
            if b.destination_kind == DestinationKind::Exchange {
                let destination = vh.exchange(&b.destination);
                match (exchange, destination) {
                    (Some(e), Some(d)) => {
                        e.bind_exchange(ExchangeBinding {
                            destination: d.name.clone(),
                            routing_key: b.routing_key,
                            arguments: b.arguments,
                        });
                    }
                    _ => {
                        tracing::warn!(source = %b.exchange, destination = %b.destination, "dropping a stored exchange binding whose source or destination is gone")
                    }
                }
                continue;
            }
            let queue = vh.queue(&b.destination);
            match (exchange, queue) {
                (Some(e), Some(q)) => {
                    if exchange::validate_binding_key(e.kind, &b.routing_key).is_err() {
                        // Bound before the limit existed: it loads and routes as before.
                        tracing::warn!(exchange = %b.exchange, queue = %b.destination, key = %b.routing_key,
                            "stored topic binding key has more than 2 '#' words; new bindings like it are refused");
                    }
                    e.bind(Binding {
                        queue: q,
                        routing_key: b.routing_key,
                        arguments: b.arguments,
                    });
                }
                _ => {
                    tracing::warn!(exchange = %b.exchange, queue = %b.destination, "dropping a stored binding whose exchange or queue is gone")
                }
            }
        }
        self.restore_dedup_windows(dedup_keys);
        self.remove_orphaned_stream_entries().await;
        self.remove_orphaned_stream_state().await;
        for (vhost, id, name) in orphaned {
            tracing::info!(queue = %name, "deleting exclusive queue left by the previous run");
            inner
                .store
                .change_topology(TopologyChange::DeleteQueue { vhost, id, name })
                .await?;
        }
        tracing::info!(
            vhosts = inner.vhosts.read().len(),
            queues = self.queues().len(),
            messages = message_total,
            "recovered durable state"
        );
        Ok(())
    }

    /// Rebuilds a stream's chunk index and named positions from the store, on a blocking
    /// thread: one pass over its entry rows, none of them kept. A failed read leaves the
    /// stream empty in memory (its rows stay), with an error in the log.
    async fn restore_stream(&self, q: &Arc<Queue>) {
        let store = self.inner.store.clone();
        let queue = q.clone();
        let restored = tokio::task::spawn_blocking(move || {
            let positions = store.stream_positions(queue.id)?;
            let producers = store.stream_producers(queue.id)?;
            match &queue.stream {
                Some(s) => s.restore(positions, producers),
                None => Ok(None),
            }
        })
        .await
        .unwrap_or(Err(StoreError::Closed));
        match restored {
            Ok(Some(at)) => q.schedule_stream_retention(at),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(stream = %q.name, error = %e, "recovering a stream failed; it starts empty");
            }
        }
    }

    /// The ids of the streams recovered.
    fn live_stream_ids(&self) -> std::collections::HashSet<u64> {
        self.queues()
            .iter()
            .filter(|q| q.stream.is_some())
            .map(|q| q.id)
            .collect()
    }

    /// Runs a read of the store on a blocking thread; a failure is logged as `what` failed
    /// and gives `None` (the cleanups that use it are tried again at the next start).
    async fn read_store<T: Send + 'static>(
        &self,
        what: &'static str,
        read: impl FnOnce(&super::BrokerStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let store = self.inner.store.clone();
        let result = tokio::task::spawn_blocking(move || read(&store))
            .await
            .unwrap_or(Err(StoreError::Closed));
        result
            .inspect_err(|e| tracing::warn!(error = %e, "{what} failed"))
            .ok()
    }

    /// Removes the entries of streams that no longer exist: deleted (with their virtual host
    /// or alone) while their entries were still being removed when the process died.
    async fn remove_orphaned_stream_entries(&self) {
        let Some(extents) = self
            .read_store("listing stored streams", |store| store.stream_extents())
            .await
        else {
            return;
        };
        let live = self.live_stream_ids();
        for (id, first, next) in extents {
            // Never give a new queue the id of entries still waiting to be removed.
            self.inner
                .next_queue_id
                .fetch_max(id.saturating_add(1), Ordering::AcqRel);
            if !live.contains(&id) {
                tracing::info!(
                    stream = id,
                    entries = next - first,
                    "removing the entries of a deleted stream"
                );
                self.delete_stream_entries(id, first, next);
            }
        }
    }

    /// Removes the named consumers' positions and named producers' sequences of streams
    /// that no longer exist: an ack or a publish already queued for the store writer when
    /// its stream (or the stream's virtual host) was deleted commits after the deletion and
    /// writes them again. A new stream given that id would inherit them and drop its first
    /// messages as producer duplicates, so the id is never handed out again, even when the
    /// removal fails (then it is tried again at the next start).
    async fn remove_orphaned_stream_state(&self) {
        let Some(ids) = self
            .read_store("listing stored stream positions and producers", |store| {
                store.stream_state_ids()
            })
            .await
        else {
            return;
        };
        let live = self.live_stream_ids();
        for id in ids.into_iter().filter(|id| !live.contains(id)) {
            self.inner
                .next_queue_id
                .fetch_max(id.saturating_add(1), Ordering::AcqRel);
            tracing::info!(
                stream = id,
                "removing the consumer positions and producer sequences of a deleted stream"
            );
            let removed = self
                .inner
                .store
                .change_topology(TopologyChange::DeleteStreamState { id })
                .await;
            if let Err(e) = removed {
                tracing::warn!(stream = id, error = %e, "removing a deleted stream's state failed; retried at the next start");
            }
        }
    }

    /// The `priority` property of each recovered entry's stored message (0 where it has none),
    /// in entry order, for a priority queue to rebuild its order by priority then arrival:
    /// the queue's rows keep only arrival order. Reads the message rows in batches from a
    /// snapshot on a blocking thread; the bodies are dropped again (paged out, as for every
    /// recovered queue). A batch that cannot be read loads as priority 0, with a warning: the
    /// messages still load, and a corrupt row is reported again when its body is paged in.
    async fn stored_priorities(&self, queue: &str, entries: &[RecoveredEntry]) -> Vec<u8> {
        const BATCH: usize = 1024;
        let mut priorities = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(BATCH) {
            let ids: Vec<u64> = chunk.iter().map(|e| e.id).collect();
            let store = self.inner.store.clone();
            let read = tokio::task::spawn_blocking(move || store.read_messages(&ids))
                .await
                .unwrap_or(Err(StoreError::Closed));
            match read {
                Ok(messages) => priorities.extend(
                    messages
                        .iter()
                        .map(|m| m.as_ref().and_then(|m| m.properties.priority).unwrap_or(0)),
                ),
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e,
                        "reading stored messages for their priority failed; they load as priority 0");
                    priorities.extend(std::iter::repeat_n(0, chunk.len()));
                }
            }
        }
        priorities
    }
}
