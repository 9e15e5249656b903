//! The broker: exchanges, queues, bindings and the operations clients perform on them.
//!
//! [`Broker`] is a cheap `Clone` handle around shared state. It never sees bytes or sockets:
//! the connection layer decodes frames and calls these methods with a [`Session`]. Topology
//! changes are serialised by one async mutex and made durable before they are answered;
//! publishes go through the store writer, which commits, enqueues and confirms in that order.

pub mod admin;
pub mod confirm;
pub mod consumer;
pub mod dead_letter;
pub mod exchange;
pub mod queue;
pub mod queue_args;
mod redeclare;
mod scheduler;
pub mod session;
mod timers;
pub mod topic_trie;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use warren_protocol::{
    Consume, ConsumerCancelled, ConsumerTag, Envelope, ErrorCode, ExchangeDeclare, ExchangeKind,
    FieldTable, Frame, Get, GetOk, Publish, QueueBind, QueueDeclare, QueueDeclareOk, RequestId,
    Return,
};

use crate::error::BrokerError;
use crate::message::{now_ms, Message, QueuedMessage};
use crate::store::codec::{BindingRecord, ExchangeRecord, QueueRecord};
use crate::store::{
    Completion, DeadLetterOp, PublishOp, Recovered, ScheduleOp, Store, TopologyChange,
};
use confirm::ReplySlot;
use consumer::Consumer;
use dead_letter::{dead_lettered_copy, is_cycle, DeadLetterReason};
use exchange::{Binding, Exchange};
use queue::{DeadLetterJob, DeadLetterTask, Queue, QueueContext, QueueSettings};
use queue_args::QueueArgs;
use session::{Session, Unacked};

/// The publish header holding a delay in milliseconds before the message is routed.
pub const X_DELAY: &str = "x-delay";

/// The publish header holding the time (ms since the epoch) before which the message is not
/// routed.
pub const X_DELIVER_AT: &str = "x-deliver-at";

/// The longest exchange or queue name, in bytes (AMQP's short string).
pub const MAX_NAME_BYTES: usize = 255;

/// Default bytes of ready message bodies a queue keeps in memory.
pub const DEFAULT_QUEUE_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// How the broker is set up.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Bytes of ready bodies each queue keeps in memory (see [`queue`]).
    pub queue_window_bytes: u64,
    /// How long a delivery may stay unacked before its consumer is cancelled, for queues
    /// without `x-consumer-timeout`; `None` = no limit.
    pub consumer_timeout: Option<Duration>,
}

/// Broker-wide message counters.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Publishes accepted.
    pub published: AtomicU64,
    /// Publishes routed to at least one queue.
    pub routed: AtomicU64,
    /// Publishes no queue took.
    pub unroutable: AtomicU64,
    /// Unroutable mandatory publishes returned.
    pub returned: AtomicU64,
    /// Deliveries acked.
    pub acked: AtomicU64,
    /// Deliveries made, to consumers and by `get` (counted by the queues, see
    /// [`BrokerStats::count_delivery`]).
    pub delivered: AtomicU64,
    /// Deliveries of messages delivered before (delivery count above 0).
    pub redelivered: AtomicU64,
    /// Deliveries nacked or rejected, with or without requeue.
    pub nacked: AtomicU64,
    /// Deliveries nacked or rejected with requeue.
    pub requeued: AtomicU64,
    /// Deliveries nacked or rejected without requeue, with nowhere to dead-letter them.
    pub rejected_dropped: AtomicU64,
    /// Messages dead-lettered, by reason (index: [`DeadLetterReason::ALL`] order).
    pub dead_lettered: [AtomicU64; 4],
    /// Messages that expired (dead-lettered or dropped).
    pub expired: AtomicU64,
    /// Dead letters dropped: their dead-letter exchange is missing, they route nowhere, or
    /// they would cycle.
    pub dead_letters_dropped: AtomicU64,
    /// Messages accepted for later release (`x-delay`, `x-deliver-at`).
    pub scheduled: AtomicU64,
    /// Consumers cancelled for holding a delivery past their consumer timeout.
    pub consumer_timeouts: AtomicU64,
}

impl BrokerStats {
    /// The dead-lettered counter for `reason`.
    pub fn dead_lettered(&self, reason: DeadLetterReason) -> u64 {
        let i = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dead_lettered
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one delivery; `redelivered` when the message was delivered before.
    pub(crate) fn count_delivery(&self, redelivered: bool) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if redelivered {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_dead_lettered(&self, reason: DeadLetterReason, n: u64) {
        let i = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(c) = self.dead_lettered.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Handle to the broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    exchanges: RwLock<HashMap<String, Arc<Exchange>>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    /// Serialises topology changes so check-then-change sequences are atomic.
    topology: tokio::sync::Mutex<()>,
    store: Store,
    ctx: Arc<QueueContext>,
    next_queue_id: AtomicU64,
    next_session_id: AtomicU64,
    /// Shared with the queues (through [`QueueContext`]), which count deliveries.
    stats: Arc<BrokerStats>,
    started: Instant,
    config: BrokerConfig,
    /// Live sessions, for consumer timeouts and listings.
    sessions: RwLock<HashMap<u64, Weak<Session>>>,
    /// Where the daemon listens, for `status` (set once bound).
    listeners: RwLock<Vec<String>>,
    /// When the ticker last recomputed rates, ms since the epoch.
    rates_at_ms: AtomicU64,
    /// Hands stored scheduled messages to the scheduler task.
    scheduled_tx: tokio::sync::mpsc::UnboundedSender<crate::store::ScheduledMessage>,
}

const BUILTIN_EXCHANGES: [(&str, ExchangeKind); 4] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
];

fn validate_name(kind: &'static str, name: &str) -> Result<(), BrokerError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(BrokerError::invalid(
            format!("{kind} name"),
            format!("{} bytes is longer than {MAX_NAME_BYTES}", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(BrokerError::invalid(
            format!("{kind} name"),
            format!("{name:?} contains control characters"),
        ));
    }
    Ok(())
}

fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

impl Broker {
    /// Opens the store in `config.data_dir` and rebuilds everything durable.
    ///
    /// # Errors
    /// The store cannot be opened or holds corrupt records.
    pub async fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let dir = config.data_dir.clone();
        let (store, recovered) = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|_| BrokerError::ShuttingDown)??;
        let (dead_letters, dead_letter_rx) = tokio::sync::mpsc::unbounded_channel();
        let (scheduled_tx, scheduled_rx) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(BrokerStats::default());
        let ctx = Arc::new(QueueContext {
            stats: stats.clone(),
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
            window_bytes: config.queue_window_bytes,
            dead_letters,
        });
        let broker = Broker {
            inner: Arc::new(Inner {
                exchanges: RwLock::new(HashMap::new()),
                queues: RwLock::new(HashMap::new()),
                topology: tokio::sync::Mutex::new(()),
                store,
                ctx,
                next_queue_id: AtomicU64::new(1),
                next_session_id: AtomicU64::new(1),
                stats,
                started: Instant::now(),
                config,
                sessions: RwLock::new(HashMap::new()),
                listeners: RwLock::new(Vec::new()),
                rates_at_ms: AtomicU64::new(0),
                scheduled_tx,
            }),
        };
        let mut recovered = recovered;
        let scheduled = std::mem::take(&mut recovered.scheduled);
        broker.restore(recovered).await?;
        let weak = Arc::downgrade(&broker.inner);
        tokio::spawn(dead_letter_loop(weak.clone(), dead_letter_rx));
        tokio::spawn(scheduler::run(weak.clone(), scheduled, scheduled_rx));
        tokio::spawn(timers::run(weak));
        Ok(broker)
    }

    async fn restore(&self, recovered: Recovered) -> Result<(), BrokerError> {
        let inner = &self.inner;
        {
            let mut exchanges = inner.exchanges.write();
            for (name, kind) in BUILTIN_EXCHANGES {
                exchanges.insert(
                    name.to_owned(),
                    Arc::new(Exchange::new(
                        name.into(),
                        kind,
                        true,
                        FieldTable::new(),
                        true,
                    )),
                );
            }
            for e in recovered.exchanges {
                let unsupported = exchange::unsupported_arguments(&e.arguments);
                if !unsupported.is_empty() {
                    // Declared by an older Warren that accepted them; refusing to start would
                    // strand the data, so the exchange loads and the operator is told.
                    tracing::warn!(exchange = %e.name, arguments = ?unsupported,
                        "stored exchange has arguments Warren does not implement; they have no effect");
                }
                exchanges.insert(
                    e.name.clone(),
                    Arc::new(Exchange::new(
                        e.name.as_str().into(),
                        e.kind,
                        true,
                        e.arguments,
                        false,
                    )),
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
                orphaned.push((rq.record.id, rq.record.name));
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
            message_total += rq.messages.len();
            q.restore(rq.messages.into_iter().map(|e| {
                (
                    QueuedMessage {
                        id: e.id,
                        message: None,
                        size: e.size,
                        delivery_count: e.delivery_count,
                        stored: true,
                        expires_at: e.expires_at,
                    },
                    e.ready_at,
                )
            }));
            inner.queues.write().insert(rq.record.name, q);
        }
        inner.next_queue_id.store(max_id + 1, Ordering::Release);
        for b in recovered.bindings {
            let exchange = inner.exchanges.read().get(&b.exchange).cloned();
            let queue = inner.queues.read().get(&b.queue).cloned();
            match (exchange, queue) {
                (Some(e), Some(q)) => {
                    e.bind(Binding {
                        queue: q,
                        routing_key: b.routing_key,
                        arguments: b.arguments,
                    });
                }
                _ => {
                    tracing::warn!(exchange = %b.exchange, queue = %b.queue, "dropping a stored binding whose exchange or queue is gone")
                }
            }
        }
        for (id, name) in orphaned {
            tracing::info!(queue = %name, "deleting exclusive queue left by the previous run");
            inner
                .store
                .change_topology(TopologyChange::DeleteQueue { id, name })
                .await?;
        }
        tracing::info!(
            queues = inner.queues.read().len(),
            messages = message_total,
            "recovered durable state"
        );
        Ok(())
    }

    /// The store (for stats and shutdown).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Message counters.
    pub fn stats(&self) -> &BrokerStats {
        &self.inner.stats
    }

    /// When the broker started.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Every queue, in no particular order (for metrics).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.inner.queues.read().values().cloned().collect()
    }

    /// Open client connections (for metrics).
    pub fn connection_count(&self) -> usize {
        self.inner.sessions.read().len()
    }

    /// A session for a new connection whose frames go to `outbound`.
    pub fn new_session(
        &self,
        peer: String,
        outbound: tokio::sync::mpsc::UnboundedSender<session::Outbound>,
    ) -> Arc<Session> {
        let session = Session::new(
            self.inner.next_session_id.fetch_add(1, Ordering::Relaxed),
            peer,
            outbound,
        );
        self.inner
            .sessions
            .write()
            .insert(session.id, Arc::downgrade(&session));
        session
    }

    fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.inner.exchanges.read().get(name).cloned()
    }

    fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.inner.queues.read().get(name).cloned()
    }

    /// A queue by name, if this session may use it.
    fn usable_queue(&self, session: &Session, name: &str) -> Result<Arc<Queue>, BrokerError> {
        let q = self
            .queue(name)
            .ok_or_else(|| BrokerError::not_found("queue", name))?;
        check_owner(&q, session)?;
        Ok(q)
    }

    /// Declares an exchange.
    ///
    /// # Errors
    /// Reserved or invalid names, a conflicting existing exchange, a passive declare of a
    /// missing one, or a store failure.
    pub async fn declare_exchange(&self, d: ExchangeDeclare) -> Result<(), BrokerError> {
        validate_name("exchange", &d.name)?;
        if d.name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be declared".into(),
            ));
        }
        let _guard = self.inner.topology.lock().await;
        let existing = self.exchange(&d.name);
        // An exchange that already has exactly these arguments (stored by an older Warren
        // that accepted them) may be redeclared as it is, so its clients keep starting.
        if !existing
            .as_ref()
            .is_some_and(|e| e.arguments == d.arguments)
        {
            exchange::validate_arguments(&d.arguments)?;
        }
        if let Some(existing) = existing {
            if d.passive {
                return Ok(());
            }
            if let Some(why) = redeclare::inequivalence(
                "exchange",
                &d.name,
                &[
                    (
                        "type",
                        d.kind.as_str().to_owned(),
                        existing.kind.as_str().to_owned(),
                    ),
                    (
                        "durable",
                        d.durable.to_string(),
                        existing.durable.to_string(),
                    ),
                ],
                &d.arguments,
                &existing.arguments,
            ) {
                return Err(BrokerError::PreconditionFailed(why));
            }
            return Ok(());
        }
        if d.passive {
            return Err(BrokerError::not_found("exchange", &d.name));
        }
        if d.name.starts_with("amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "exchange name '{}' is reserved: names starting with 'amq.' belong to the broker",
                d.name
            )));
        }
        if d.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutExchange(ExchangeRecord {
                    name: d.name.clone(),
                    kind: d.kind,
                    arguments: d.arguments.clone(),
                }))
                .await?;
        }
        let e = Exchange::new(
            d.name.as_str().into(),
            d.kind,
            d.durable,
            d.arguments,
            false,
        );
        self.inner.exchanges.write().insert(d.name, Arc::new(e));
        Ok(())
    }

    /// Deletes an exchange and its bindings. Deleting a missing exchange succeeds (as in
    /// RabbitMQ).
    ///
    /// # Errors
    /// The default or a built-in exchange, `if_unused` with bindings, or a store failure.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), BrokerError> {
        if name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be deleted".into(),
            ));
        }
        let _guard = self.inner.topology.lock().await;
        let Some(e) = self.exchange(name) else {
            return Ok(());
        };
        if e.builtin {
            return Err(BrokerError::AccessRefused(format!(
                "exchange '{name}' is built in and cannot be deleted"
            )));
        }
        if if_unused && e.has_bindings() {
            return Err(BrokerError::PreconditionFailed(format!(
                "exchange '{name}' has bindings"
            )));
        }
        if e.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteExchange(name.to_owned()))
                .await?;
        }
        self.inner.exchanges.write().remove(name);
        Ok(())
    }

    /// Declares a queue; an empty name gets a server-chosen one.
    ///
    /// # Errors
    /// Reserved or invalid names, a conflicting or exclusive existing queue, a passive
    /// declare of a missing one, or a store failure.
    pub async fn declare_queue(
        &self,
        session: &Session,
        d: QueueDeclare,
    ) -> Result<QueueDeclareOk, BrokerError> {
        validate_name("queue", &d.name)?;
        let _guard = self.inner.topology.lock().await;
        let existing = self.queue(&d.name);
        let args = match QueueArgs::parse(&d.arguments) {
            Ok(args) => args,
            // A queue that already has exactly these arguments (stored by an older Warren
            // that accepted them) may be redeclared as it is, so its clients keep starting;
            // the parsed arguments are only needed to create a queue.
            Err(_)
                if existing
                    .as_ref()
                    .is_some_and(|q| q.arguments == d.arguments) =>
            {
                QueueArgs::default()
            }
            Err(e) => {
                return Err(BrokerError::invalid(
                    format!("queue argument {}", e.arg),
                    e.reason,
                ))
            }
        };
        if let Some(existing) = existing {
            check_owner(&existing, session)?;
            existing.touch();
            let exclusive = existing.exclusive_owner.is_some();
            if !d.passive {
                if let Some(why) = redeclare::inequivalence(
                    "queue",
                    &d.name,
                    &[
                        (
                            "durable",
                            d.durable.to_string(),
                            existing.durable.to_string(),
                        ),
                        ("exclusive", d.exclusive.to_string(), exclusive.to_string()),
                        (
                            "auto_delete",
                            d.auto_delete.to_string(),
                            existing.auto_delete.to_string(),
                        ),
                    ],
                    &d.arguments,
                    &existing.arguments,
                ) {
                    return Err(BrokerError::PreconditionFailed(why));
                }
            }
            let c = existing.counts();
            return Ok(QueueDeclareOk {
                name: d.name,
                message_count: c.ready,
                consumer_count: c.consumers,
            });
        }
        if d.passive {
            return Err(BrokerError::not_found("queue", &d.name));
        }
        let name = if d.name.is_empty() {
            format!("amq.gen-{}", unique_suffix())
        } else if d.name.starts_with("amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "queue name '{}' is reserved: names starting with 'amq.' belong to the broker",
                d.name
            )));
        } else {
            d.name
        };
        let id = self.inner.next_queue_id.fetch_add(1, Ordering::AcqRel);
        if d.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutQueue(QueueRecord {
                    id,
                    name: name.clone(),
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments.clone(),
                }))
                .await?;
        }
        let q = Queue::new(
            QueueSettings {
                id,
                name: name.as_str().into(),
                durable: d.durable,
                exclusive_owner: d.exclusive.then_some(session.id),
                auto_delete: d.auto_delete,
                arguments: d.arguments,
                args,
            },
            self.inner.ctx.clone(),
        );
        self.inner.queues.write().insert(name.clone(), q);
        Ok(QueueDeclareOk {
            name,
            message_count: 0,
            consumer_count: 0,
        })
    }

    /// Deletes a queue with its bindings and messages; returns how many ready messages it
    /// held. Deleting a missing queue succeeds with 0 (as in RabbitMQ).
    ///
    /// # Errors
    /// Another connection's exclusive queue, `if_unused`/`if_empty` not met, a store failure.
    pub async fn delete_queue(
        &self,
        session: &Session,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let Some(q) = self.queue(name) else {
            return Ok(0);
        };
        check_owner(&q, session)?;
        let c = q.counts();
        if if_unused && c.consumers > 0 {
            return Err(BrokerError::PreconditionFailed(format!(
                "queue '{name}' has {} consumer(s)",
                c.consumers
            )));
        }
        if if_empty && c.ready > 0 {
            return Err(BrokerError::PreconditionFailed(format!(
                "queue '{name}' has {} message(s)",
                c.ready
            )));
        }
        self.remove_queue(&q).await
    }

    /// Removes a queue everywhere; the topology lock must be held.
    async fn remove_queue(&self, q: &Arc<Queue>) -> Result<u64, BrokerError> {
        self.inner.queues.write().remove(&*q.name);
        let (consumers, count) = q.mark_deleted();
        for c in consumers {
            c.session.remove_consumer(&c.tag);
            c.session.send(Envelope::new(
                0,
                Frame::ConsumerCancelled(ConsumerCancelled {
                    consumer_tag: c.tag.to_string(),
                    code: ErrorCode::NotFound.as_u16(),
                    reason: format!("queue '{}' was deleted", q.name),
                }),
            ));
        }
        let exchanges: Vec<Arc<Exchange>> = self.inner.exchanges.read().values().cloned().collect();
        for e in exchanges {
            e.unbind_queue(q.id);
        }
        if q.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteQueue {
                    id: q.id,
                    name: q.name.to_string(),
                })
                .await?;
        }
        Ok(count)
    }

    /// Removes every ready message from a queue; returns how many.
    ///
    /// # Errors
    /// Missing or foreign exclusive queue, or a store failure.
    pub async fn purge_queue(&self, session: &Session, name: &str) -> Result<u64, BrokerError> {
        let q = self.usable_queue(session, name)?;
        let removed = q.purge();
        self.forget_durably(&q, &removed).await?;
        Ok(removed.len() as u64)
    }

    /// Deletes the store rows of entries that left `q` (purged, deleted by an operator) and
    /// returns once that is committed.
    async fn forget_durably(
        &self,
        q: &Queue,
        entries: &[QueuedMessage],
    ) -> Result<(), BrokerError> {
        let stored: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| e.stored)
            .map(|e| (q.id, e.id))
            .collect();
        if stored.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .store
            .remove(stored, Completion::Oneshot(tx))
            .await?;
        rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        Ok(())
    }

    fn binding_parts(
        &self,
        session: &Session,
        b: &QueueBind,
    ) -> Result<(Arc<Exchange>, Arc<Queue>), BrokerError> {
        if b.exchange.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be bound to or unbound from".into(),
            ));
        }
        let e = self
            .exchange(&b.exchange)
            .ok_or_else(|| BrokerError::not_found("exchange", &b.exchange))?;
        let q = self.usable_queue(session, &b.queue)?;
        validate_name("routing key", &b.routing_key)?;
        Ok((e, q))
    }

    /// Binds a queue to an exchange (idempotent).
    ///
    /// # Errors
    /// Missing exchange or queue, the default exchange, bad headers arguments, a store failure.
    pub async fn bind(&self, session: &Session, b: QueueBind) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let (e, q) = self.binding_parts(session, &b)?;
        e.validate_binding(&b.arguments)?;
        if e.durable && q.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutBinding(record(&b)))
                .await?;
        }
        e.bind(Binding {
            queue: q,
            routing_key: b.routing_key,
            arguments: b.arguments,
        });
        Ok(())
    }

    /// Removes a binding (removing a missing binding succeeds).
    ///
    /// # Errors
    /// Missing exchange or queue, the default exchange, a store failure.
    pub async fn unbind(&self, session: &Session, b: QueueBind) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let (e, q) = self.binding_parts(session, &b)?;
        if e.unbind(q.id, &b.routing_key, &b.arguments) && e.durable && q.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteBinding(record(&b)))
                .await?;
        }
        Ok(())
    }

    /// Routes and hands a message to the store writer. Its confirm reaches the session's
    /// reply sink after the commit; an unroutable mandatory message is returned first.
    ///
    /// # Errors
    /// A missing exchange, or the store writer has stopped.
    pub async fn publish(
        &self,
        session: &Session,
        request_id: RequestId,
        p: Publish,
    ) -> Result<(), BrokerError> {
        let stats = &self.inner.stats;
        if let Some(due_ms) = not_before(&p.properties.headers)? {
            if due_ms > now_ms() {
                return self.schedule(session, request_id, p, due_ms).await;
            }
        }
        let targets = self.route(&p.exchange, &p.routing_key, &p.properties.headers)?;
        stats.published.fetch_add(1, Ordering::Relaxed);
        let confirm = ReplySlot::new(session.replies.clone(), request_id);
        if targets.is_empty() {
            stats.unroutable.fetch_add(1, Ordering::Relaxed);
            if p.mandatory {
                stats.returned.fetch_add(1, Ordering::Relaxed);
                session.send(Envelope::new(
                    request_id,
                    Frame::Return(Box::new(Return {
                        reply_code: ErrorCode::NoRoute.as_u16(),
                        reply_text: "NO_ROUTE".into(),
                        exchange: p.exchange,
                        routing_key: p.routing_key,
                        properties: p.properties,
                        body: p.body,
                    })),
                ));
            }
            // Unroutable messages are confirmed at once: there is nothing to store. The confirm
            // takes the same path as the Return so it cannot overtake it.
            drop(confirm);
            session.send(Envelope::new(
                request_id,
                Frame::Confirm(warren_protocol::Confirm::Ack),
            ));
            return Ok(());
        }
        stats.routed.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(Message {
            exchange: p.exchange,
            routing_key: p.routing_key,
            properties: p.properties,
            body: p.body,
        });
        self.inner
            .store
            .publish(PublishOp::new(message, targets, Some(confirm)))
            .await?;
        Ok(())
    }

    /// The queues a message for `exchange` with this key and headers goes to.
    ///
    /// # Errors
    /// [`BrokerError::NotFound`] when the exchange does not exist.
    fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &FieldTable,
    ) -> Result<Vec<Arc<Queue>>, BrokerError> {
        let mut targets = Vec::new();
        if exchange.is_empty() {
            if let Some(q) = self.queue(routing_key) {
                targets.push(q);
            }
        } else {
            let e = self
                .exchange(exchange)
                .ok_or_else(|| BrokerError::not_found("exchange", exchange))?;
            e.route(routing_key, headers, &mut targets);
        }
        Ok(targets)
    }

    /// Holds a message durably until `due_ms`, then routes it (see the scheduler).
    async fn schedule(
        &self,
        session: &Session,
        request_id: RequestId,
        p: Publish,
        due_ms: u64,
    ) -> Result<(), BrokerError> {
        if !p.exchange.is_empty() && self.exchange(&p.exchange).is_none() {
            return Err(BrokerError::not_found("exchange", &p.exchange));
        }
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.scheduled.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(Message {
            exchange: p.exchange,
            routing_key: p.routing_key,
            properties: p.properties,
            body: p.body,
        });
        self.inner
            .store
            .schedule(ScheduleOp {
                due_ms,
                message,
                confirm: Some(ReplySlot::new(session.replies.clone(), request_id)),
                scheduled: self.inner.scheduled_tx.clone(),
                id: 0,
            })
            .await?;
        Ok(())
    }

    /// Starts a consumer. Sends `ConsumeOk` itself, before the first delivery can go out.
    ///
    /// # Errors
    /// Missing or foreign exclusive queue, a tag in use, exclusivity conflicts.
    pub fn consume(
        &self,
        session: &Arc<Session>,
        request_id: RequestId,
        c: Consume,
    ) -> Result<(), BrokerError> {
        let q = self.usable_queue(session, &c.queue)?;
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
            session.prefetch(),
            c.exclusive,
        );
        if !session.add_consumer(consumer.clone()) {
            return Err(BrokerError::NotAllowed(format!(
                "consumer tag '{tag}' is already in use on this connection"
            )));
        }
        session.send(Envelope::new(
            request_id,
            Frame::ConsumeOk(ConsumerTag {
                consumer_tag: tag.clone(),
            }),
        ));
        if let Err(reason) = q.add_consumer(consumer) {
            session.remove_consumer(&tag);
            // ConsumeOk already went out: tell the client the consumer is gone.
            session.send(Envelope::new(
                0,
                Frame::ConsumerCancelled(ConsumerCancelled {
                    consumer_tag: tag,
                    code: ErrorCode::ResourceLocked.as_u16(),
                    reason: reason.clone(),
                }),
            ));
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
        self.detach(&consumer).await?;
        if keep_unacked {
            session.release_unacked_of(&consumer);
        } else {
            self.requeue_unacked_of(session, &consumer);
        }
        Ok(())
    }

    async fn detach(&self, consumer: &Arc<Consumer>) -> Result<(), BrokerError> {
        let Some(q) = consumer.queue.upgrade() else {
            return Ok(());
        };
        if q.remove_consumer(consumer) {
            let _guard = self.inner.topology.lock().await;
            // Re-check under the lock: a consumer may have arrived meanwhile.
            if q.counts().consumers == 0 && !q.is_deleted() {
                self.remove_queue(&q).await?;
            }
        }
        Ok(())
    }

    /// Takes one message from a queue (`None` if it has none ready).
    ///
    /// # Errors
    /// Missing or foreign exclusive queue, or a store failure reading its body.
    pub async fn get(&self, session: &Session, g: Get) -> Result<Option<GetOk>, BrokerError> {
        let q = self.usable_queue(session, &g.queue)?;
        let Some((mut entry, message_count)) = q.take_one(g.no_ack) else {
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
        let delivery_count = entry.delivery_count;
        let delivery_tag = if g.no_ack {
            if entry.stored {
                self.inner.store.remove_internal(vec![(q.id, entry.id)]);
            }
            // Nothing to acknowledge: no tag (PROTOCOL.md §13).
            0
        } else {
            session.record_delivery(Some(Unacked {
                queue: q.clone(),
                consumer: None,
                entry,
                delivered_at: Instant::now(),
            }))
        };
        Ok(Some(GetOk {
            delivery_tag,
            redelivered: delivery_count > 0,
            delivery_count,
            message_count,
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            properties: message.properties.clone(),
            body: message.body.clone(),
        }))
    }

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
        self.remove_settled(settled, reply).await
    }

    async fn remove_settled(
        &self,
        settled: Vec<Unacked>,
        reply: Option<ReplySlot>,
    ) -> Result<(), BrokerError> {
        let mut stored = Vec::new();
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
            if u.entry.stored {
                stored.push((u.queue.id, u.entry.id));
            }
        }
        for (q, n) in per_queue {
            q.stats.acked.fetch_add(n, Ordering::Relaxed);
            q.settled(n);
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

    /// Refuses deliveries: requeue them (at the head of their queues, after `delay_ms` if
    /// given, or after the queue's `x-retry-backoff`), or dead-letter them with reason
    /// `rejected`.
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
        self.inner
            .stats
            .nacked
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
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
            self.requeue(settled, (delay_ms > 0).then_some(delay_ms));
        } else {
            self.reject_settled(settled);
        }
        if let Some(slot) = reply {
            self.reply_when_settled(slot);
        }
        Ok(())
    }

    /// Dead-letters deliveries refused without requeue (or drops them, with no dead-letter
    /// exchange: the dead-letter task removes them either way).
    fn reject_settled(&self, settled: Vec<Unacked>) {
        let mut by_queue: HashMap<u64, (Arc<Queue>, Vec<QueuedMessage>)> = HashMap::new();
        for u in settled {
            by_queue
                .entry(u.queue.id)
                .or_insert_with(|| (u.queue.clone(), Vec::new()))
                .1
                .push(u.entry);
        }
        for (_, (q, entries)) in by_queue {
            q.settled(entries.len() as u64);
            if q.args.dead_letter_exchange.is_none() {
                self.inner
                    .stats
                    .rejected_dropped
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
            }
            q.dead_letter(entries, DeadLetterReason::Rejected);
        }
    }

    /// Puts failed deliveries back with their delivery count raised: at the head of their
    /// queues, or after a delay (`delay_ms`, else the queue's `x-retry-backoff`), or — past
    /// the queue's `x-delivery-limit` — to its dead-letter exchange.
    fn requeue(&self, settled: Vec<Unacked>, delay_ms: Option<u64>) {
        struct Plan {
            queue: Arc<Queue>,
            now: Vec<QueuedMessage>,
            later: Vec<(QueuedMessage, u64)>,
            over_limit: Vec<QueuedMessage>,
        }
        let now = now_ms();
        let mut by_queue: HashMap<u64, Plan> = HashMap::new();
        for u in settled {
            let q = u.queue;
            let plan = by_queue.entry(q.id).or_insert_with(|| Plan {
                queue: q.clone(),
                now: Vec::new(),
                later: Vec::new(),
                over_limit: Vec::new(),
            });
            let mut entry = u.entry;
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            if q.args
                .delivery_limit
                .is_some_and(|l| entry.delivery_count > l)
            {
                plan.over_limit.push(entry);
                continue;
            }
            let delay = delay_ms.or_else(|| q.args.retry_delay_ms(entry.delivery_count));
            let ready_at = delay
                .filter(|d| *d > 0)
                .map_or(0, |d| now.saturating_add(d));
            if entry.stored {
                self.inner
                    .store
                    .update_entry(q.id, entry.id, entry.delivery_count, ready_at);
            }
            if ready_at > 0 {
                plan.later.push((entry, ready_at));
            } else {
                plan.now.push(entry);
            }
        }
        for (_, plan) in by_queue {
            if !plan.over_limit.is_empty() {
                plan.queue.settled(plan.over_limit.len() as u64);
                plan.queue
                    .dead_letter(plan.over_limit, DeadLetterReason::DeliveryLimit);
            }
            if !plan.later.is_empty() {
                plan.queue.delay(plan.later);
            }
            if !plan.now.is_empty() {
                plan.queue.requeue(plan.now);
            }
        }
    }

    /// Requeues the unacked deliveries of a consumer that ended (cancel, consumer timeout);
    /// each counts as a failed delivery.
    fn requeue_unacked_of(&self, session: &Session, consumer: &Arc<Consumer>) {
        let mine = session.take_unacked_of(consumer);
        consumer.on_settled(u32::try_from(mine.len()).unwrap_or(u32::MAX));
        self.requeue(mine, None);
    }

    /// Ends a consumer from the server side (consumer timeout): its unacked deliveries are
    /// requeued (counting as failed), and the client is told why.
    pub async fn cancel_by_server(
        &self,
        session: &Arc<Session>,
        consumer: &Arc<Consumer>,
        reason: String,
    ) {
        if session.remove_consumer(&consumer.tag).is_none() {
            return;
        }
        if let Err(e) = self.detach(consumer).await {
            tracing::warn!(error = %e, "auto-deleting a queue after a consumer timeout failed");
        }
        self.requeue_unacked_of(session, consumer);
        tracing::info!(connection = session.id, consumer = %consumer.tag, %reason, "consumer cancelled by the server");
        session.send(Envelope::new(
            0,
            Frame::ConsumerCancelled(ConsumerCancelled {
                consumer_tag: consumer.tag.to_string(),
                code: ErrorCode::PreconditionFailed.as_u16(),
                reason,
            }),
        ));
    }

    /// Routes and stores dead letters: one store operation per job, so each message leaves
    /// its queue in the transaction that puts its copy into the dead-letter targets.
    async fn process_dead_letters(&self, job: DeadLetterJob) {
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
        if !dlx.is_empty() && self.exchange(&dlx).is_none() {
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
        let now = now_ms();
        let mut publishes = Vec::new();
        let mut dropped = 0u64;
        for e in entries {
            let Some(message) = e.message else {
                tracing::error!(queue = %queue.name, id = e.id, "a dead letter without a stored body; dropping it");
                dropped += 1;
                continue;
            };
            let key = queue
                .args
                .dead_letter_routing_key
                .clone()
                .unwrap_or_else(|| message.routing_key.clone());
            let copy = dead_lettered_copy(&message, &queue.name, reason, &dlx, &key, now);
            let mut targets = self
                .route(&dlx, &key, &copy.properties.headers)
                .unwrap_or_default();
            targets.retain(|t| !is_cycle(&copy.properties.headers, &t.name));
            if targets.is_empty() {
                dropped += 1;
                continue;
            }
            publishes.push(PublishOp::new(Arc::new(copy), targets, None));
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
            refused: None,
            done: Completion::None,
        });
    }

    /// Cleans up after a connection: stops its consumers, requeues its unacked deliveries,
    /// deletes its exclusive queues. Runs however the connection ended.
    pub async fn close_session(&self, session: &Arc<Session>) {
        self.inner.sessions.write().remove(&session.id);
        for c in session.take_consumers() {
            if let Err(e) = self.detach(&c).await {
                tracing::warn!(error = %e, "auto-deleting a queue on close failed");
            }
        }
        let unacked = session.take_all_unacked();
        for u in &unacked {
            if let Some(c) = &u.consumer {
                c.on_settled(1);
            }
        }
        self.requeue(unacked, None);
        let owned: Vec<Arc<Queue>> = self
            .inner
            .queues
            .read()
            .values()
            .filter(|q| q.exclusive_owner == Some(session.id))
            .cloned()
            .collect();
        if !owned.is_empty() {
            let _guard = self.inner.topology.lock().await;
            for q in owned {
                if let Err(e) = self.remove_queue(&q).await {
                    tracing::warn!(queue = %q.name, error = %e, "deleting an exclusive queue failed");
                }
            }
        }
    }

    /// Records the addresses the daemon serves on, for `status`.
    pub fn set_listeners(&self, listeners: Vec<String>) {
        *self.inner.listeners.write() = listeners;
    }

    /// Drains the store writer and stops it.
    pub async fn shutdown(&self) {
        self.inner.store.shutdown().await;
    }
}

fn check_owner(q: &Queue, session: &Session) -> Result<(), BrokerError> {
    match q.exclusive_owner {
        Some(owner) if owner != session.id => Err(BrokerError::ResourceLocked(format!(
            "queue '{}' is exclusive to another connection",
            q.name
        ))),
        _ => Ok(()),
    }
}

fn take(session: &Session, delivery_tag: u64, multiple: bool) -> Result<Vec<Unacked>, BrokerError> {
    session.take_unacked(delivery_tag, multiple).ok_or_else(|| {
        BrokerError::PreconditionFailed(format!("unknown delivery tag {delivery_tag}"))
    })
}

fn record(b: &QueueBind) -> BindingRecord {
    BindingRecord {
        exchange: b.exchange.clone(),
        queue: b.queue.clone(),
        routing_key: b.routing_key.clone(),
        arguments: b.arguments.clone(),
    }
}

/// The not-before time a publish asks for: `x-deliver-at` (ms since the epoch) or now plus
/// `x-delay` (ms).
///
/// # Errors
/// Either header with a value that is not a non-negative integer.
fn not_before(headers: &FieldTable) -> Result<Option<u64>, BrokerError> {
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
    Ok(int(X_DELAY)?.map(|d| now_ms().saturating_add(d)))
}

/// The broker's dead-letter task: turns [`DeadLetterJob`]s into store operations, in the
/// order they were raised, and passes flushes on to the store behind them.
async fn dead_letter_loop(
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
