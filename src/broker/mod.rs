//! The broker: exchanges, queues, bindings and the operations clients perform on them.
//!
//! [`Broker`] is a cheap `Clone` handle around shared state. It never sees bytes, frames or
//! sockets: the connection layer decodes frames and calls these methods with a [`Session`],
//! and the broker answers with protocol-neutral [`event::Event`]s that the connection encodes. Topology
//! changes are serialised by one async mutex and made durable before they are answered;
//! publishes go through the store writer, which commits and then hands each message to the
//! completion step (`commit.rs`), which enqueues and confirms, in commit order.
//!
//! # Where things are
//! `impl Broker` is spread over one file per concept; this file holds the handle, its shared
//! state, opening and closing (of the broker and of a session) and the small helpers the
//! others share.
//!
//! | file | what it holds |
//! |---|---|
//! | `topology.rs` | declare and delete exchanges and queues, bind and unbind, purge |
//! | `publish.rs` | publish: route, return or confirm the unroutable, hand to the store; scheduling of `x-delay`/`x-deliver-at` |
//! | `consume.rs` | start and cancel consumers (by the client, or by the server on consumer timeout), `get` |
//! | `settle.rs` | ack, nack and reject: find the deliveries and hand them to their queues (whose policy decides), replies after settles are durable |
//! | `dead_letter.rs` | the dead-letter pipeline: reasons, where `x-death` is written, the cycle rule, the dead-letter task |
//! | `recovery.rs` | rebuilding exchanges, queues and bindings from the store at startup |
//! | `stats.rs` | broker-wide counters, rate bookkeeping, resident memory |
//! | `access.rs` | users, passwords and tags; logging in (`Open`) |
//! | `admin/` | operator commands (`Admin` frames): status and listings, dead-letter operations, definitions |
//! | `queue/`, `queue_args.rs` | one queue: its state machine (`state.rs`: ready messages, dispatch, expiry, delays, overflow), settle policy (`settle.rs`), paging (`paging.rs`) and the shell that carries out its effects (`mod.rs`); its `x-` arguments |
//! | `vhost.rs` | one virtual host's exchanges and queues; every session holds its own |
//! | `exchange.rs`, `topic_trie.rs` | routing |
//! | `dedup.rs` | publisher deduplication (`x-message-deduplication`): arguments, the windows of keys, the check at publish, recovery of the windows |
//! | `commit.rs` | the completion step, the broker's side of every store commit: overflow decisions and expiry before it; enqueue, `reject-publish-dlx`, confirms, replies and replay put-backs after it |
//! | `session.rs`, `consumer.rs`, `confirm.rs` | per-connection state, credit, unacked deliveries, reply slots |
//! | `event.rs` | what the broker tells a connection (replies, confirms, returns, cancelled consumers, errors), in no protocol's terms |
//! | `scheduler.rs`, `timers.rs` | the task releasing scheduled messages; the 100 ms ticker |
//!
//! The store writer (`crate::store::writer`) does the group commit every publish, settle and
//! dead letter ends in; it knows nothing of the broker and calls back into `commit.rs`
//! ([`crate::store::CommitHooks`]) around each commit.

pub mod access;
pub mod admin;
pub mod alarms;
pub mod commit;
pub mod confirm;
mod consume;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
pub mod disk_monitor;
pub mod event;
pub mod exchange;
pub mod memory_monitor;
pub mod outbox;
mod publish;
pub mod queue;
pub mod queue_args;
mod recovery;
mod redeclare;
mod scheduler;
pub mod session;
mod settle;
pub mod stats;
pub mod stream;
pub mod timers;
pub mod topic_trie;
mod topology;
pub mod vhost;

pub use stats::BrokerStats;

use std::collections::HashMap;

use foldhash::HashMap as FastMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::error::BrokerError;
use crate::store::Store;
use commit::{BrokerStore, Hooks};
use queue::{Queue, QueueContext};
use session::Session;
use vhost::VHost;

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
    /// Where the broker reads the time: [`crate::clock::SystemClock`] in the daemon.
    pub clock: Arc<dyn Clock>,
    /// Free bytes on the data directory's filesystem below which persistent publishers are
    /// blocked (the disk alarm); 0 turns the alarm off.
    pub disk_free_limit: u64,
    /// Caps on what clients may create.
    pub limits: Limits,
    /// redb's page cache cap (`--store-cache-size`; [`crate::store::DEFAULT_CACHE_BYTES`]).
    pub store_cache_bytes: usize,
    /// Every commit saves redb's allocator state, so a restart after a crash skips redb's
    /// repair walk over the whole file (`--store-quick-repair`).
    pub store_quick_repair: bool,
    /// How recovered queues are read back at startup.
    pub recovery: RecoveryConfig,
}

/// Default [`RecoveryConfig::batch`]: at 8,192 entries a batch reads in a few milliseconds,
/// so the first message of every queue is ready at once and the background reading yields
/// to the queue's lock often.
pub const DEFAULT_RECOVERY_BATCH: u32 = 8_192;

/// How the broker reads recovered queues' messages back (docs/storage.md, *Recovery*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// Entries read per batch in the background, one batch per queue in turn; before the
    /// broker serves, each queue's first `batch` or 1,024 entries, whichever is fewer.
    pub batch: usize,
    /// For tests: while this file exists, the background reading waits before each batch,
    /// so a test can act on queues that are certainly still recovering (`--recovery-hold`).
    pub hold: Option<PathBuf>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            batch: DEFAULT_RECOVERY_BATCH as usize,
            hold: None,
        }
    }
}

/// Caps on what clients may create, each refused with an error naming it and its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Queues in all virtual hosts together (`--max-queues`).
    pub max_queues: usize,
    /// Exchanges declared by clients in all virtual hosts together, the built-in ones not
    /// counted (`--max-exchanges`).
    pub max_exchanges: usize,
    /// Consumers on one connection (`--max-consumers-per-connection`).
    pub max_consumers_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queues: 100_000,
            max_exchanges: 100_000,
            max_consumers_per_connection: 10_000,
        }
    }
}

/// Handle to the broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Users and permissions.
    access: access::Access,
    /// Virtual hosts by name, each with its exchanges and queues.
    vhosts: RwLock<FastMap<String, Arc<VHost>>>,
    /// Serialises topology changes so check-then-change sequences are atomic.
    topology: tokio::sync::Mutex<()>,
    store: BrokerStore,
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
    /// Resource alarms that block publishers.
    alarms: alarms::Alarms,
    /// Hands stored scheduled messages to the scheduler task.
    scheduled_tx: tokio::sync::mpsc::UnboundedSender<crate::store::ScheduledMessage>,
}

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

impl Broker {
    /// Opens the store in `config.data_dir` and rebuilds everything durable.
    ///
    /// # Errors
    /// The store cannot be opened or holds corrupt records.
    pub async fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let dir = config.data_dir.clone();
        let stats = Arc::new(BrokerStats::default());
        let hooks = Hooks::new(config.clock.clone()).with_stats(stats.clone());
        let cache = config.store_cache_bytes;
        let quick_repair = config.store_quick_repair;
        let (store, recovered) = tokio::task::spawn_blocking(move || {
            Store::open_configured(&dir, hooks, cache, quick_repair)
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)??;
        let (dead_letters, dead_letter_rx) = tokio::sync::mpsc::unbounded_channel();
        let (scheduled_tx, scheduled_rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Arc::new(QueueContext {
            stats: stats.clone(),
            store: store.clone(),
            bodies: Arc::new(store.clone()),
            runtime: tokio::runtime::Handle::current(),
            window_bytes: config.queue_window_bytes,
            dead_letters,
            clock: config.clock.clone(),
            timers: Arc::new(timers::Timers::default()),
            consumer_timeout: config.consumer_timeout,
        });
        let mut recovered = recovered;
        let access = access::Access::new(
            std::mem::take(&mut recovered.users),
            std::mem::take(&mut recovered.permissions),
        );
        let broker = Broker {
            inner: Arc::new(Inner {
                access,
                vhosts: RwLock::new(FastMap::default()),
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
                alarms: alarms::Alarms::default(),
            }),
        };
        let scheduled = std::mem::take(&mut recovered.scheduled);
        broker.restore(recovered).await?;
        let weak = Arc::downgrade(&broker.inner);
        tokio::spawn(dead_letter::dead_letter_loop(weak.clone(), dead_letter_rx));
        tokio::spawn(scheduler::run(weak.clone(), scheduled, scheduled_rx));
        if broker.inner.config.disk_free_limit > 0 {
            tokio::spawn(disk_monitor::run(
                weak.clone(),
                broker.inner.config.data_dir.clone(),
                broker.inner.config.disk_free_limit,
            ));
        }
        tokio::spawn(timers::run(weak));
        Ok(broker)
    }

    /// Starts the memory budget: every 100 ms `gauge` is read and the memory alarm is on
    /// while it exceeds `limit` bytes. The daemon calls this with its counting allocator;
    /// without it there is no memory alarm.
    pub fn start_memory_monitor(&self, gauge: memory_monitor::MemoryGauge, limit: u64) {
        self.inner
            .stats
            .memory_limit_bytes
            .store(limit, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(memory_monitor::run(
            Arc::downgrade(&self.inner),
            gauge,
            limit,
        ));
    }

    /// The resource alarms, which block publishers while on.
    pub fn alarms(&self) -> &alarms::Alarms {
        &self.inner.alarms
    }

    /// Now, on the broker's clock (ms since the epoch).
    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.ctx.clock.now_ms()
    }

    /// The broker's clock, for reads that may not be needed ([`crate::clock::LazyNow`]).
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.inner.ctx.clock
    }

    /// The store (for stats and shutdown).
    pub fn store(&self) -> &BrokerStore {
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

    /// Every queue of every virtual host, in no particular order (for metrics).
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.vhost_list()
            .iter()
            .flat_map(|v| v.queue_list())
            .collect()
    }

    /// Every virtual host, by name.
    pub fn vhost_list(&self) -> Vec<Arc<VHost>> {
        let mut v: Vec<Arc<VHost>> = self.inner.vhosts.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A virtual host by name.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.inner.vhosts.read().get(name).cloned()
    }

    /// The virtual host `q` lives in (it may have been deleted since). Dead-lettering asks,
    /// off the hot path: a scan of the few virtual hosts.
    fn vhost_of(&self, q: &Arc<Queue>) -> Option<Arc<VHost>> {
        self.vhost_list().into_iter().find(|v| {
            v.queues
                .read()
                .get(&*q.name)
                .is_some_and(|x| Arc::ptr_eq(x, q))
        })
    }

    /// Open client connections (for metrics).
    pub fn connection_count(&self) -> usize {
        self.inner.sessions.read().len()
    }

    /// Sessions still open, by id (for consumer timeouts and listings).
    fn live_sessions(&self) -> Vec<Arc<Session>> {
        let mut s: Vec<Arc<Session>> = self
            .inner
            .sessions
            .read()
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        s.sort_by_key(|s| s.id);
        s
    }

    /// Closes every live connection that `which` picks, with `CONNECTION_FORCED` and
    /// `reason` (see [`Session::force_close`]).
    pub(crate) fn force_close_where(&self, which: impl Fn(&Session) -> bool, reason: &str) {
        for s in self.live_sessions() {
            if which(&s) {
                tracing::info!(connection = s.id, reason, "closing connection");
                s.force_close(reason.to_owned());
            }
        }
    }

    /// A session for a new connection of `user` whose events and deliveries go to `outbound`.
    pub fn new_session(
        &self,
        peer: String,
        user: Arc<access::Principal>,
        outbound: outbox::Outbox,
    ) -> Arc<Session> {
        // The principal's virtual host was checked at Open; one deleted since is a fresh,
        // empty one the session cannot create anything in.
        let vhost = self.vhost(&user.vhost).unwrap_or_else(|| {
            let gone = VHost::new(&user.vhost);
            gone.mark_deleted();
            gone
        });
        let session = Session::for_user(
            self.inner.next_session_id.fetch_add(1, Ordering::Relaxed),
            peer,
            user,
            vhost,
            outbound,
        );
        self.inner
            .sessions
            .write()
            .insert(session.id, Arc::downgrade(&session));
        session
    }

    /// A queue of the session's virtual host by name, if this session may use it.
    fn usable_queue(&self, session: &Session, name: &str) -> Result<Arc<Queue>, BrokerError> {
        let q = session
            .vhost
            .queue(name)
            .ok_or_else(|| BrokerError::not_found("queue", name))?;
        check_owner(&q, session)?;
        Ok(q)
    }

    /// Cleans up after a connection: stops its consumers, requeues its unacked deliveries,
    /// deletes its exclusive queues. Runs however the connection ended.
    pub async fn close_session(&self, session: &Arc<Session>) {
        self.inner.sessions.write().remove(&session.id);
        let consumers = session.take_consumers();
        // Requeued while the consumers are still attached (taking nothing), then detached:
        // on a single-active-consumer queue the successor gets these before anything
        // published meanwhile.
        for c in &consumers {
            consume::stop(c);
        }
        let unacked = session.take_all_unacked();
        for u in &unacked {
            if let Some(c) = &u.consumer {
                c.on_settled(1);
            }
        }
        // A connection that ends with deliveries unacked failed them (RabbitMQ 4.3 counts a
        // lost connection or a closed channel as a failed delivery).
        self.requeue(unacked, queue::Return::Failed, None);
        for c in &consumers {
            if let Err(e) = self.detach(c).await {
                tracing::warn!(error = %e, "auto-deleting a queue on close failed");
            }
        }
        for c in &consumers {
            consume::hand_over(c);
        }
        let owned: Vec<Arc<Queue>> = session
            .vhost
            .queues
            .read()
            .values()
            .filter(|q| q.exclusive_owner == Some(session.id))
            .cloned()
            .collect();
        if !owned.is_empty() {
            let _guard = self.inner.topology.lock().await;
            for q in owned {
                if let Err(e) = self.remove_queue(&session.vhost, &q).await {
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
