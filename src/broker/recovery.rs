//! Recovery: rebuilding the broker from what the store read at startup (`Store::open`):
//! the built-in exchanges, stored exchanges, queues with their messages, and bindings.
//! Exclusive queues left by the previous run are deleted; stored arguments this Warren no
//! longer implements load with a warning rather than stranding the data.
//!
//! A queue's messages are read from the snapshot the store took when it opened
//! ([`EntrySnapshot`]), in batches: the first batch of every queue before the broker
//! serves, the rest on a background thread (`warren-recovery`), one batch per queue in
//! turn, while clients already publish and consume. A queue whose messages are not all
//! read yet is *recovering*: its consumers get the recovered messages as they arrive, and
//! messages published to it meanwhile wait behind the last recovered one. A queue with a
//! length limit is read whole before serving, since its overflow rule needs its true
//! length, and so is a priority queue, whose order needs every message's priority. The
//! background reading only reads: a crash during it loses nothing.

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
use crate::store::{EntrySnapshot, Recovered, RecoveredEntry, StoreError, TopologyChange};

impl Broker {
    pub(super) async fn restore(&self, mut recovered: Recovered) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let started = std::time::Instant::now();
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
        let mut to_read = Vec::new();
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
            } else {
                to_read.push(q.clone());
            }
            vhost(&rq.record.vhost)
                .queues
                .write()
                .insert(rq.record.name, q);
        }
        inner.next_queue_id.store(max_id + 1, Ordering::Release);
        let message_total = match recovered.entries.take() {
            Some(snapshot) => self.restore_messages(snapshot, to_read).await?,
            None => 0,
        };
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
            ms = started.elapsed().as_millis(),
            "recovered durable state (messages: those read before serving)"
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

    /// Reads each queue's first batch of messages (a length-limited queue's whole
    /// content) from `snapshot` on a blocking thread, and starts the background reading of
    /// the rest ([`load_in_background`]). Returns how many messages were read here.
    ///
    /// # Errors
    /// A read failed: the daemon does not start, as when the store cannot be read at all.
    async fn restore_messages(
        &self,
        snapshot: EntrySnapshot,
        queues: Vec<Arc<Queue>>,
    ) -> Result<usize, BrokerError> {
        let batch = self.inner.config.recovery.batch.max(1);
        // Before serving only each head is needed: a small first read keeps the start quick
        // with many queues (10 queues of 100,000: 82k entries read before serving at 8,192).
        let first_batch = batch.min(FIRST_BATCH);
        let plans: Vec<(u64, usize, bool)> = queues
            .iter()
            .map(|q| {
                let whole = read_whole(q);
                let limit = if whole { usize::MAX } else { first_batch };
                (q.id, limit, q.args.max_priority.is_some())
            })
            .collect();
        let (snapshot, firsts) = tokio::task::spawn_blocking(move || {
            let firsts = plans
                .iter()
                .map(|&(id, limit, priorities)| snapshot.queue_entries(id, None, limit, priorities))
                .collect::<Result<Vec<_>, StoreError>>();
            (snapshot, firsts)
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?;
        let mut total = 0;
        let mut rest = Vec::new();
        for (q, first) in queues.into_iter().zip(firsts?) {
            total += first.len();
            let whole = read_whole(&q);
            let after = first.last().map(|e| e.id);
            let more = !whole && first.len() >= first_batch;
            if more {
                q.begin_recovery();
            }
            q.restore(first.iter().map(queued));
            if let (true, Some(after)) = (more, after) {
                rest.push(Loading { queue: q, after });
            }
        }
        if !rest.is_empty() {
            tracing::info!(
                queues = rest.len(),
                "recovering the rest of the queues' messages in the background"
            );
            let weak = Arc::downgrade(&self.inner);
            let hold = self.inner.config.recovery.hold.clone();
            let spawned = std::thread::Builder::new()
                .name("warren-recovery".into())
                .spawn(move || load_in_background(snapshot, rest, batch, hold, weak));
            if let Err(e) = spawned {
                return Err(BrokerError::Store(StoreError::Unavailable {
                    reason: format!("cannot start the recovery thread: {e}"),
                }));
            }
        }
        Ok(total)
    }
}

/// Whether `q` must be read whole before the broker serves: overflow decides on a
/// length-limited queue's true length, and a priority queue must not deliver a message
/// while one of higher priority is still unread.
fn read_whole(q: &Queue) -> bool {
    q.args.max_length.is_some()
        || q.args.max_length_bytes.is_some()
        || q.args.max_priority.is_some()
}

/// Most messages of a queue read before the broker serves (fewer with a smaller
/// `--recovery-batch`).
const FIRST_BATCH: usize = 1_024;

/// A recovered queue still being read: the last id read so far.
struct Loading {
    queue: Arc<Queue>,
    after: u64,
}

/// A recovered entry as the queue holds it (paged out), with its requeue delay's end.
fn queued(e: &RecoveredEntry) -> (QueuedMessage, u64) {
    (
        QueuedMessage {
            early: 0,
            id: e.id,
            message: None,
            size: e.size,
            delivery_count: e.delivery_count,
            acquired_count: e.acquired_count,
            stored: true,
            expires_at: e.expires_at,
            priority: e.priority,
        },
        e.ready_at,
    )
}

/// How long the background reading waits after a failed read before trying again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The `warren-recovery` thread: reads the rest of each recovering queue from `snapshot`,
/// `batch` entries at a time, one batch per queue in turn, and hands each batch to its
/// queue (which delivers it to consumers with room). A failed read is logged and tried
/// again; a deleted queue is dropped. Stops when every queue is read or the broker is gone.
fn load_in_background(
    snapshot: EntrySnapshot,
    mut queues: Vec<Loading>,
    batch: usize,
    hold: Option<std::path::PathBuf>,
    broker: std::sync::Weak<super::Inner>,
) {
    let started = std::time::Instant::now();
    let mut total = 0usize;
    while !queues.is_empty() {
        if broker.strong_count() == 0 {
            return;
        }
        if hold.as_ref().is_some_and(|h| h.exists()) {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        let mut failed = false;
        queues.retain_mut(|l| {
            if l.queue.is_deleted() {
                return false;
            }
            // Priority queues are read whole before serving (`read_whole`).
            match snapshot.queue_entries(l.queue.id, Some(l.after), batch, false) {
                Ok(entries) => {
                    let last = entries.len() < batch;
                    total += entries.len();
                    if let Some(e) = entries.last() {
                        l.after = e.id;
                    }
                    l.queue
                        .restore_batch(entries.iter().map(queued).collect(), last);
                    if last {
                        tracing::info!(queue = %l.queue.name, "queue recovered");
                    }
                    !last
                }
                Err(e) => {
                    tracing::error!(queue = %l.queue.name, error = %e,
                        "reading a recovering queue's messages failed; trying again");
                    failed = true;
                    true
                }
            }
        });
        if failed {
            std::thread::sleep(RETRY_AFTER);
        }
    }
    tracing::info!(
        messages = total,
        ms = started.elapsed().as_millis(),
        "every queue recovered"
    );
}
