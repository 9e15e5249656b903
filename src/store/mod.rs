//! The durable store: redb behind a narrow async API.
//!
//! One writer thread (`writer.rs`) owns every write transaction and commits in groups: it takes
//! whatever operations arrived while the previous commit ran, applies them in one transaction,
//! commits once with `Durability::Immediate`, then reports each operation's outcome, in commit
//! order. Reads (recovery, paging bodies back in) use redb's MVCC snapshots and never wait for
//! the writer. docs/storage.md describes the layout and the guarantees.
//!
//! The store knows nothing of the broker: what a message's rows are, and what happens once
//! they are committed (enqueueing, confirms, replies), is asked of the layer above through
//! [`CommitHooks`], whose payloads the operations carry.

pub mod codec;
mod db_slot;
mod hooks;
pub mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, ReadableTable};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::message::Message;
use codec::{
    BindingRecord, ExchangeRecord, PermissionRecord, QueueRecord, UserRecord, VhostRecord,
};
use db_slot::DbSlot;
use tables::*;

pub use hooks::{CommitHooks, DedupRow, Rows, StreamRow};
pub use writer::MAX_BATCH_OPS;

/// The store file inside the data directory.
pub const STORE_FILE_NAME: &str = "warren.redb";

/// How many operations may wait for the writer before senders are made to wait: the
/// backpressure point between connections and the disk.
const OP_CHANNEL_CAPACITY: usize = 16 * 1024;

/// Why a store operation failed. Cloneable, because one failed commit fails every operation
/// of its batch.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb reported an error.
    ///
    /// redb's error is printed in the message and deliberately not exposed as the `source`,
    /// so a `{:#}` chain does not print it twice.
    #[error("{context}: {error}")]
    Redb {
        /// What the store was doing.
        context: &'static str,
        /// redb's error.
        error: Arc<redb::Error>,
    },
    /// The store file could not be opened (other than being in use).
    #[error("opening the store {path}: {reason}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// redb's explanation.
        reason: String,
    },
    /// Another process has the store open: two daemons may not share a data directory.
    #[error("data directory {path} is in use by another process")]
    InUse {
        /// The data directory.
        path: PathBuf,
    },
    /// A record could not be decoded.
    #[error("corrupt record in table {table} (key {key}): {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// The key, printed.
        key: String,
        /// The decode error.
        reason: String,
    },
    /// The data directory is unusable.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The store was written by a newer Warren.
    #[error("store schema version {found} is newer than this build understands ({supported})")]
    SchemaVersion {
        /// Version on disk.
        found: u64,
        /// Version this build writes.
        supported: u64,
    },
    /// A write failed at the disk (full, or an I/O error) and the store has not been able to
    /// reopen its file since; it tries again with the next write.
    #[error("the store is unavailable: {reason}")]
    Unavailable {
        /// The failure, or what the last reopen ran into.
        reason: String,
    },
    /// The built-in `guest` user could not be created (its password hash failed).
    #[error("creating the guest user: {0}")]
    Seed(String),
    /// The writer thread has stopped (shutdown or a fatal error).
    #[error("the store writer has stopped")]
    Closed,
}

pub(crate) fn redb_err<E: Into<redb::Error>>(
    context: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb {
        context,
        error: Arc::new(e.into()),
    }
}

/// Upper bounds of the commit batch size histogram (operations per commit): powers of two up
/// to [`MAX_BATCH_OPS`].
pub const COMMIT_OPERATIONS_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Upper bounds of the commit latency histogram, in seconds: 100 µs to about 3.3 s, doubling.
pub const COMMIT_SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Debug)]
pub struct StoreStats {
    /// Write transactions committed.
    pub commits: AtomicU64,
    /// Operations applied in those commits.
    pub ops_committed: AtomicU64,
    /// Messages written (one per stored publish).
    pub messages_written: AtomicU64,
    /// Total time spent committing, in microseconds.
    pub commit_micros: AtomicU64,
    /// Operations per commit, observed once per commit (the `/metrics` endpoint encodes it).
    pub commit_operations: Histogram,
    /// Commit latency in seconds (opening the write transaction to the end of the commit),
    /// observed once per commit.
    pub commit_seconds: Histogram,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats {
            commits: AtomicU64::new(0),
            ops_committed: AtomicU64::new(0),
            messages_written: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            commit_operations: Histogram::new(COMMIT_OPERATIONS_BUCKETS),
            commit_seconds: Histogram::new(COMMIT_SECONDS_BUCKETS),
        }
    }
}

/// A change to durable topology.
#[derive(Debug)]
pub enum TopologyChange {
    /// Insert or replace an exchange.
    PutExchange(ExchangeRecord),
    /// Delete an exchange and the bindings it is the source or destination of.
    DeleteExchange {
        /// Its virtual host.
        vhost: String,
        /// Its name.
        name: String,
    },
    /// Insert or replace a queue.
    PutQueue(QueueRecord),
    /// Delete a queue, its bindings and every message it holds.
    DeleteQueue {
        /// Its virtual host.
        vhost: String,
        /// Queue id.
        id: u64,
        /// Queue name.
        name: String,
    },
    /// Insert a binding.
    PutBinding(BindingRecord),
    /// Delete a binding.
    DeleteBinding(BindingRecord),
    /// Insert a virtual host.
    PutVhost(VhostRecord),
    /// Delete a virtual host with everything in it: exchanges, queues and their messages,
    /// bindings, permissions. One transaction, so a crash leaves all or nothing.
    DeleteVhost(String),
    /// Delete what a stream that no longer exists left in `stream_positions` and
    /// `stream_producers`: rows a commit racing with its deletion wrote after it (a publish
    /// or an ack already in the writer's queue). Recovery sends it, so a new stream can
    /// never inherit another's producers or consumer positions.
    DeleteStreamState {
        /// The deleted stream's queue id.
        id: u64,
    },
    /// Insert or replace a user.
    PutUser(UserRecord),
    /// Delete a user and its permissions.
    DeleteUser(String),
    /// Insert or replace a user's permissions in a virtual host.
    PutPermission(PermissionRecord),
    /// Delete a user's permissions in a virtual host.
    DeletePermission {
        /// The user.
        user: String,
        /// The virtual host.
        vhost: String,
    },
}

/// A message on its way to the store and then, through the hooks, to its queues.
pub struct PublishOp<H: CommitHooks> {
    /// The message.
    pub message: Arc<Message>,
    /// The hooks' payload: where the message goes and who is told (for the broker, its
    /// target queues and its confirm slot).
    pub payload: H::Publish,
    /// Set by the writer: the message id.
    pub(crate) id: u64,
    /// Set by the writer: whether a message row was written.
    pub(crate) stored: bool,
    /// Set by the writer: where this publish's rows are in the batch's [`Rows`].
    pub(crate) rows: (u32, u32),
    /// Set by the writer: where this publish's deduplication rows are in the batch's [`Rows`].
    pub(crate) dedup_rows: (u32, u32),
    /// Set by the writer: where this publish's stream entries are in the batch's [`Rows`].
    pub(crate) stream_rows: (u32, u32),
}

impl<H: CommitHooks> PublishOp<H> {
    /// A publish of `message` with the hooks' `payload`.
    pub fn new(message: Arc<Message>, payload: H::Publish) -> Self {
        PublishOp {
            message,
            payload,
            id: 0,
            stored: false,
            rows: (0, 0),
            dedup_rows: (0, 0),
            stream_rows: (0, 0),
        }
    }

    /// A publish numbered already ([`Store::allocate_message_id`]): the writer keeps `id`.
    pub fn with_id(id: u64, message: Arc<Message>, payload: H::Publish) -> Self {
        PublishOp {
            id,
            ..PublishOp::new(message, payload)
        }
    }

    /// The message id the writer gave it (0 before the writer has seen it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the writer wrote a message row for it.
    pub fn stored(&self) -> bool {
        self.stored
    }
}

/// Messages leaving one queue for their dead-letter targets, in one transaction.
pub struct DeadLetterOp<H: CommitHooks> {
    /// `(queue id, message id)` rows to delete from the source queue.
    pub removals: Vec<(u64, u64)>,
    /// The dead-lettered copies, routed.
    pub publishes: Vec<PublishOp<H>>,
    /// Messages moving to other queues (a DLQ replay): each leaves its queue only if a
    /// target takes it; one no target takes stays.
    pub moves: Vec<Move<H>>,
    /// What to do after the commit.
    pub done: Completion<H::Reply>,
}

/// One message moving from a queue to the targets of its publish.
pub struct Move<H: CommitHooks> {
    /// Its row in the queue it leaves, `(queue id, message id)`, if it has one: deleted when
    /// a target takes the message.
    pub row: Option<(u64, u64)>,
    /// The hooks' way back for it, used when no target takes it.
    pub source: H::Source,
    /// The publish to its new queues.
    pub publish: PublishOp<H>,
    /// Set by the writer: whether a target takes it.
    pub(crate) taken: bool,
}

impl<H: CommitHooks> Move<H> {
    /// A move of the message in `row` (if stored) to the targets of `publish`, going back
    /// through `source` when none takes it.
    pub fn new(row: Option<(u64, u64)>, source: H::Source, publish: PublishOp<H>) -> Self {
        Move {
            row,
            source,
            publish,
            taken: false,
        }
    }
}

/// A message held until its not-before time.
pub struct ScheduleOp<H: CommitHooks> {
    /// When to release it, ms since the epoch.
    pub due_ms: u64,
    /// The message (its exchange and routing key are where it goes when due).
    pub message: Arc<Message>,
    /// The hooks' payload, completed once it is stored (for the broker: its confirm and the
    /// scheduler to hand it to).
    pub payload: H::Schedule,
    pub(crate) id: u64,
}

impl<H: CommitHooks> ScheduleOp<H> {
    /// `message`, to be released at `due_ms`, with the hooks' `payload`.
    pub fn new(due_ms: u64, message: Arc<Message>, payload: H::Schedule) -> Self {
        ScheduleOp {
            due_ms,
            message,
            payload,
            id: 0,
        }
    }
}

/// A stored scheduled message, as the scheduler keeps it.
#[derive(Debug, Clone)]
pub struct ScheduledMessage {
    /// When it is due, ms since the epoch.
    pub due_ms: u64,
    /// Its id (the second half of its `scheduled` key).
    pub id: u64,
    /// The message.
    pub message: Arc<Message>,
}

/// What to do once an operation has committed; `R` is where a reply goes
/// ([`CommitHooks::Reply`]).
#[derive(Debug)]
pub enum Completion<R> {
    /// Nothing.
    None,
    /// Wake an awaiting task.
    Oneshot(oneshot::Sender<Result<(), StoreError>>),
    /// Reply through the hooks ([`CommitHooks::replied`]).
    Reply(R),
}

/// An operation on its way to the writer; `counted` ones hold a permit the writer returns.
pub(crate) struct Queued<H: CommitHooks> {
    pub(crate) op: StoreOp<H>,
    pub(crate) counted: bool,
}

pub(crate) enum StoreOp<H: CommitHooks> {
    Topology {
        change: TopologyChange,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Publish(PublishOp<H>),
    DeadLetter(DeadLetterOp<H>),
    Schedule(ScheduleOp<H>),
    Release {
        due_ms: u64,
        id: u64,
        publish: Option<PublishOp<H>>,
    },
    Remove {
        entries: Vec<(u64, u64)>,
        done: Completion<H::Reply>,
    },
    UpdateEntry {
        queue_id: u64,
        message_id: u64,
        delivery_count: u32,
        acquired_count: u32,
        ready_at: u64,
    },
    /// Removes the stream entries `from..to` of a stream (retention, or a deleted stream).
    TrimStream {
        queue_id: u64,
        from: u64,
        to: u64,
        done: Completion<H::Reply>,
    },
    /// Records where a named stream consumer resumes.
    StreamPosition {
        queue_id: u64,
        name: Arc<str>,
        next: u64,
    },
    /// Writes nothing: completes once everything queued before it has committed.
    Flush(Completion<H::Reply>),
    Shutdown(oneshot::Sender<()>),
}

/// One message of a durable queue as found at startup.
#[derive(Debug, Clone, Copy)]
pub struct RecoveredEntry {
    /// Message id.
    pub id: u64,
    /// Failed deliveries so far (`x-delivery-count`).
    pub delivery_count: u32,
    /// Acquisitions given back so far (`x-acquired-count`).
    pub acquired_count: u32,
    /// Body size.
    pub size: u32,
    /// Expiry time (0 = never).
    pub expires_at: u64,
    /// Requeue delay end (0 = ready).
    pub ready_at: u64,
    /// The message's `priority` property, when asked for ([`EntrySnapshot::queue_entries`]);
    /// otherwise 0.
    pub priority: u8,
}

/// One stream entry read back with its message ([`Store::read_stream`]).
#[derive(Debug, Clone)]
pub struct StreamRead {
    /// Its offset in the stream.
    pub offset: u64,
    /// When it was appended, ms since the epoch.
    pub timestamp: u64,
    /// The message.
    pub message: Arc<Message>,
}

/// A durable queue as found at startup. Its messages are read from the
/// [`Recovered::entries`] snapshot, in batches ([`EntrySnapshot::queue_entries`]).
#[derive(Debug)]
pub struct RecoveredQueue {
    /// The queue.
    pub record: QueueRecord,
}

/// The store as it was when it was opened, before the writer committed anything: where a
/// queue's recovered messages are read from, in FIFO batches, after the daemon is already
/// serving (docs/storage.md, *Recovery*). Reading from this snapshot rather than from the
/// live file is what keeps the lazy load exact: a row committed into the queue after the
/// start (whatever its id) is not in it, so it is never loaded twice (the queue gets it
/// through the commit path), and an ack of a loaded message cannot make the load skip or
/// repeat anything. While it is held redb cannot reuse pages freed since the start,
/// so the file may grow by what was deleted during the load.
pub struct EntrySnapshot {
    queue_messages: redb::ReadOnlyTable<(u64, u64), (u32, u32, u64, u64)>,
    acquired: redb::ReadOnlyTable<(u64, u64), u32>,
    messages: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl std::fmt::Debug for EntrySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntrySnapshot").finish_non_exhaustive()
    }
}

impl EntrySnapshot {
    fn open(txn: &redb::ReadTransaction) -> Result<EntrySnapshot, StoreError> {
        let ctx = "recovering";
        Ok(EntrySnapshot {
            queue_messages: txn.open_table(QUEUE_MESSAGES).map_err(redb_err(ctx))?,
            acquired: txn.open_table(QUEUE_ACQUIRED).map_err(redb_err(ctx))?,
            messages: txn.open_table(MESSAGES).map_err(redb_err(ctx))?,
        })
    }

    /// Up to `limit` entries of queue `queue_id` with ids above `after` (all from the start
    /// when `None`), in FIFO (id) order. With `priorities`, each entry's `priority` is read
    /// from its message row (a priority queue rebuilds its order from it); a row that cannot
    /// be read or decoded gives 0, with a warning, and is reported again when its body is
    /// paged in.
    ///
    /// # Errors
    /// The read failed.
    pub fn queue_entries(
        &self,
        queue_id: u64,
        after: Option<u64>,
        limit: usize,
        priorities: bool,
    ) -> Result<Vec<RecoveredEntry>, StoreError> {
        let ctx = "recovering a queue's messages";
        let from = match after {
            Some(id) if id == u64::MAX => return Ok(Vec::new()),
            Some(id) => id + 1,
            None => 0,
        };
        let mut out = Vec::with_capacity(limit.min(65_536));
        for m in self
            .queue_messages
            .range((queue_id, from)..=(queue_id, u64::MAX))
            .map_err(redb_err(ctx))?
            .take(limit)
        {
            let (key, value) = m.map_err(redb_err(ctx))?;
            let (_, id) = key.value();
            let (delivery_count, size, expires_at, ready_at) = value.value();
            out.push(RecoveredEntry {
                id,
                delivery_count,
                acquired_count: delivery_count,
                size,
                expires_at,
                ready_at,
                priority: 0,
            });
        }
        let (Some(first), Some(last)) = (out.first().map(|e| e.id), out.last().map(|e| e.id))
        else {
            return Ok(out);
        };
        // One range scan over the batch's acquired counts (few rows: only entries given back
        // at least once have one), merged by id, instead of a lookup per entry.
        let mut at = 0;
        for row in self
            .acquired
            .range((queue_id, first)..=(queue_id, last))
            .map_err(redb_err(ctx))?
        {
            let (key, value) = row.map_err(redb_err(ctx))?;
            let (_, id) = key.value();
            while at < out.len() && out[at].id < id {
                at += 1;
            }
            if let Some(e) = out.get_mut(at).filter(|e| e.id == id) {
                // A store written before acquisitions were counted has only the count of
                // every requeue: each was an acquisition.
                e.acquired_count = value.value().max(e.delivery_count);
            }
        }
        if priorities {
            for e in &mut out {
                e.priority = match self.messages.get(e.id) {
                    Ok(Some(raw)) => codec::decode_message(raw.value())
                        .ok()
                        .and_then(|m| m.properties.priority)
                        .unwrap_or(0),
                    Ok(None) => 0,
                    Err(err) => {
                        tracing::warn!(queue = queue_id, id = e.id, error = %err,
                            "reading a stored message for its priority failed; it loads as priority 0");
                        0
                    }
                };
            }
        }
        Ok(out)
    }
}

/// Everything durable, as found at startup.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeRecord>,
    /// Durable queues (their messages are in `entries`).
    pub queues: Vec<RecoveredQueue>,
    /// The snapshot the queues' messages are read from; `None` only in a default value.
    pub entries: Option<EntrySnapshot>,
    /// Durable bindings.
    pub bindings: Vec<BindingRecord>,
    /// Scheduled messages, in release order.
    pub scheduled: Vec<ScheduledMessage>,
    /// Virtual hosts.
    pub vhosts: Vec<VhostRecord>,
    /// Users.
    pub users: Vec<UserRecord>,
    /// Permissions, by user and virtual host.
    pub permissions: Vec<PermissionRecord>,
    /// Deduplication keys by window scope: `(key, message id, expires at)`, expired ones
    /// included (the broker skips them).
    pub dedup: std::collections::HashMap<String, Vec<(String, u64, u64)>>,
}

/// The deduplication scope ([`DEDUP_KEYS`]) of an exchange's window: `e/<name>` in the
/// default virtual host `/`, `e/<vhost>` NUL `<name>` in another (names hold no control
/// characters, so the two parts cannot run together).
pub fn dedup_scope_of_exchange(vhost: &str, name: &str) -> Arc<str> {
    if vhost == "/" {
        format!("e/{name}").into()
    } else {
        format!("e/{vhost}\u{0}{name}").into()
    }
}

/// The deduplication scope of a queue's window: by id, so a queue deleted and declared again
/// under its name starts with an empty window.
pub fn dedup_scope_of_queue(id: u64) -> Arc<str> {
    format!("q/{id}").into()
}

/// Handle to the store, with the hooks `H` of the layer above it; cheap to clone.
pub struct Store<H: CommitHooks> {
    inner: Arc<StoreInner<H>>,
}

impl<H: CommitHooks> Clone for Store<H> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
        }
    }
}

impl<H: CommitHooks> std::fmt::Debug for Store<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct StoreInner<H: CommitHooks> {
    db: Arc<DbSlot>,
    path: PathBuf,
    tx: mpsc::UnboundedSender<Queued<H>>,
    /// Bounds operations from connections waiting for the writer: the backpressure point
    /// between clients and the disk. Operations the broker raises itself (while holding a
    /// queue lock, or on the writer thread) skip it, so they can never deadlock on it.
    permits: Arc<Semaphore>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<StoreStats>,
    /// The next message id, shared with the writer (which numbers the other publishes).
    next_message_id: Arc<AtomicU64>,
    /// The id of the publish the writer is parked holding for its acks, 0 while it is not
    /// ([`Store::nudge_writer`]).
    holding: Arc<AtomicU64>,
    writer_thread: std::thread::Thread,
}

impl Store<()> {
    /// Opens (or creates) the store in `data_dir` with no broker above it, for tools and tests
    /// that change topology, remove rows or read: see [`Store::open_with`].
    ///
    /// # Errors
    /// As [`Store::open_with`].
    pub fn open(data_dir: &Path) -> Result<(Store<()>, Recovered), StoreError> {
        Store::open_with(data_dir, ())
    }
}

/// The default cap on redb's page cache: 32 MiB. redb's own default is 1 GiB, and the cache
/// keeps what it read, so a recovery that scans a large store (a long stream's index, a big
/// backlog) or a consumer reading an old backlog would otherwise leave up to 1 GiB resident,
/// counted against the memory budget and never given back. The kernel's page cache still
/// holds the file: a 1 GB backlog drained as fast with 32 MiB as with 64 (docs/BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// Opens (or creates) the redb file with its page cache capped at `cache_bytes`: the one
/// place the store opens its database (at start and when it reopens after a write error).
pub(crate) fn open_database(
    path: &Path,
    cache_bytes: usize,
) -> Result<Database, redb::DatabaseError> {
    let told = std::sync::atomic::AtomicBool::new(false);
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        // redb calls this as its repair progresses; once is enough for the log. Without
        // `--store-quick-repair` the repair walks the whole file: say why the start is slow.
        .set_repair_callback(move |_| {
            if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!("the store was not closed cleanly: redb is repairing it (its time grows with the file's size; --store-quick-repair avoids it)");
            }
        })
        .create(path)
}

impl<H: CommitHooks> Store<H> {
    /// Opens (or creates) the store in `data_dir`, reads everything durable, and starts the
    /// writer thread, which calls `hooks` around each commit.
    ///
    /// # Errors
    /// The directory cannot be created, the file is locked by another process or corrupt, or it
    /// was written by a newer schema.
    pub fn open_with(data_dir: &Path, hooks: H) -> Result<(Store<H>, Recovered), StoreError> {
        Store::open_configured(data_dir, hooks, DEFAULT_CACHE_BYTES, false)
    }

    /// As [`Store::open_with`], with redb's page cache capped at `cache_bytes` (see
    /// [`DEFAULT_CACHE_BYTES`]), and with `quick_repair`, every commit saving redb's
    /// allocator state: commits cost more (two-phase, and the state written), and opening the
    /// file after a crash takes milliseconds instead of a walk over the whole file
    /// (docs/storage.md, *Recovery*).
    ///
    /// # Errors
    /// As [`Store::open_with`].
    pub fn open_configured(
        data_dir: &Path,
        hooks: H,
        cache_bytes: usize,
        quick_repair: bool,
    ) -> Result<(Store<H>, Recovered), StoreError> {
        // create_dir_all on an existing file says only "File exists"; say what is wrong.
        if std::fs::metadata(data_dir).is_ok_and(|m| !m.is_dir()) {
            return Err(StoreError::DataDir {
                path: data_dir.to_owned(),
                reason: "not a directory".into(),
            });
        }
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.to_owned(),
            reason: format!("cannot create it: {e}"),
        })?;
        let path = data_dir.join(STORE_FILE_NAME);
        let opening = std::time::Instant::now();
        let db = match open_database(&path, cache_bytes) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse {
                    path: data_dir.to_owned(),
                })
            }
            Err(e) => {
                return Err(StoreError::Open {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let opened_ms = opening.elapsed().as_millis();
        init_schema(&db, quick_repair)?;
        let (recovered, next_message_id) = recover(&db)?;
        tracing::info!(
            open_ms = opened_ms,
            read_ms = opening.elapsed().as_millis() - opened_ms,
            "store opened (open_ms includes redb's repair after a crash)"
        );
        let db = Arc::new(DbSlot::new(path.clone(), db, cache_bytes, quick_repair));
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(OP_CHANNEL_CAPACITY));
        let next_message_id = Arc::new(AtomicU64::new(next_message_id));
        let holding = Arc::new(AtomicU64::new(0));
        let writer = writer::spawn(
            db.clone(),
            rx,
            permits.clone(),
            next_message_id.clone(),
            holding.clone(),
            stats.clone(),
            hooks,
        );
        let store = Store {
            inner: Arc::new(StoreInner {
                db,
                path,
                tx,
                permits,
                writer_thread: writer.thread().clone(),
                writer: Mutex::new(Some(writer)),
                stats,
                next_message_id,
                holding,
            }),
        };
        Ok((store, recovered))
    }

    /// Numbers a publish before it reaches the writer (one enqueued before its commit,
    /// docs/storage.md): ids stay unique and ascending in the order they are taken.
    pub fn allocate_message_id(&self) -> u64 {
        self.inner.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The id of the publish the writer is parked holding for its acks
    /// ([`CommitHooks::hold_until`]), 0 while it is not. Read after settling (with a SeqCst
    /// fence between), so that either this sees the writer's hold or the writer's second
    /// look sees the settle.
    pub fn held_message(&self) -> u64 {
        self.inner.holding.load(Ordering::SeqCst)
    }

    /// Wakes the writer parked holding message `id` ([`Store::held_message`]): call after a
    /// settle of `id` that may have ended the hold. Settles of other messages cannot end it,
    /// so they do not wake it (with several target queues, most would not).
    pub fn nudge_writer(&self, id: u64) {
        if id != 0 && self.inner.holding.load(Ordering::SeqCst) == id {
            self.inner.writer_thread.unpark();
        }
    }

    /// Writer counters.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Size of the store file in bytes.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.inner.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    async fn send(&self, op: StoreOp<H>) -> Result<(), StoreError> {
        let permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        permit.forget();
        self.inner
            .tx
            .send(Queued { op, counted: true })
            .map_err(|_| StoreError::Closed)
    }

    fn send_internal(&self, op: StoreOp<H>) {
        if self.inner.tx.send(Queued { op, counted: false }).is_err() {
            tracing::warn!("store writer stopped; an internal store update was dropped");
        }
    }

    /// Like [`Store::remove`], for removals the broker raises itself while holding locks
    /// (no-ack deliveries): never waits.
    pub fn remove_internal(&self, entries: Vec<(u64, u64)>) {
        self.send_internal(StoreOp::Remove {
            entries,
            done: Completion::None,
        });
    }

    /// Applies a topology change durably; returns once committed.
    ///
    /// # Errors
    /// The commit failed or the writer has stopped.
    pub async fn change_topology(&self, change: TopologyChange) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(StoreOp::Topology { change, done }).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Hands a message to the writer. Its rows (as [`CommitHooks::prepare`] decides) are
    /// stored, then [`CommitHooks::published`] completes it after the commit.
    ///
    /// # Errors
    /// The writer has stopped.
    pub async fn publish(&self, op: PublishOp<H>) -> Result<(), StoreError> {
        self.send(StoreOp::Publish(op)).await
    }

    /// Removes `(queue id, message id)` entries (acks, purges), deleting message rows no queue
    /// references any more.
    ///
    /// # Errors
    /// The writer has stopped.
    pub async fn remove(
        &self,
        entries: Vec<(u64, u64)>,
        done: Completion<H::Reply>,
    ) -> Result<(), StoreError> {
        self.send(StoreOp::Remove { entries, done }).await
    }

    /// Records a requeued entry's raised counts and its delay, so delivery limits, the
    /// counts a consumer sees and retry delays survive restarts.
    pub fn update_entry(
        &self,
        queue_id: u64,
        message_id: u64,
        delivery_count: u32,
        acquired_count: u32,
        ready_at: u64,
    ) {
        self.send_internal(StoreOp::UpdateEntry {
            queue_id,
            message_id,
            delivery_count,
            acquired_count,
            ready_at,
        });
    }

    /// Completes `done` once every operation handed to the writer before this call has
    /// committed (a write barrier: it writes nothing itself). Never waits.
    pub fn flush(&self, done: Completion<H::Reply>) {
        self.send_internal(StoreOp::Flush(done));
    }

    /// Moves messages from a queue to their dead-letter targets in one transaction. Raised by
    /// the broker itself: never waits.
    pub fn dead_letter(&self, op: DeadLetterOp<H>) {
        self.send_internal(StoreOp::DeadLetter(op));
    }

    /// Moves messages between queues in one transaction (a DLQ replay), with backpressure.
    ///
    /// # Errors
    /// The writer has stopped.
    pub async fn move_messages(&self, op: DeadLetterOp<H>) -> Result<(), StoreError> {
        self.send(StoreOp::DeadLetter(op)).await
    }

    /// Stores a message to be released at its due time; its confirm follows the commit.
    ///
    /// # Errors
    /// The writer has stopped.
    pub async fn schedule(&self, op: ScheduleOp<H>) -> Result<(), StoreError> {
        self.send(StoreOp::Schedule(op)).await
    }

    /// Deletes a due scheduled message and, if it was routed somewhere, publishes it, in one
    /// transaction. Raised by the broker's scheduler: never waits.
    pub fn release(&self, due_ms: u64, id: u64, publish: Option<PublishOp<H>>) {
        self.send_internal(StoreOp::Release {
            due_ms,
            id,
            publish,
        });
    }

    /// Reads messages by id from a snapshot. Blocking: call from `spawn_blocking`.
    ///
    /// # Errors
    /// redb failed or a record is corrupt. A missing id yields `None` in its place.
    pub fn read_messages(&self, ids: &[u64]) -> Result<Vec<Option<Arc<Message>>>, StoreError> {
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err("reading messages"))?;
        let table = txn
            .open_table(MESSAGES)
            .map_err(redb_err("opening messages"))?;
        ids.iter()
            .map(|id| {
                let Some(raw) = table.get(id).map_err(redb_err("reading a message"))? else {
                    return Ok(None);
                };
                codec::decode_message(raw.value())
                    .map(|m| Some(Arc::new(m)))
                    .map_err(|e| StoreError::Corrupt {
                        table: "messages",
                        key: id.to_string(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// Removes the entries `from..to` of stream `queue_id` (whole retention chunks). Raised
    /// by the broker itself, possibly on the writer thread: never waits.
    pub fn trim_stream_internal(&self, queue_id: u64, from: u64, to: u64) {
        self.send_internal(StoreOp::TrimStream {
            queue_id,
            from,
            to,
            done: Completion::None,
        });
    }

    /// Removes the entries `from..to` of stream `queue_id` and returns once that is
    /// committed: a deleted stream's entries go batch by batch, each its own commit, so no
    /// commit grows with the stream.
    ///
    /// # Errors
    /// The commit failed or the writer has stopped.
    pub async fn trim_stream(&self, queue_id: u64, from: u64, to: u64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(StoreOp::TrimStream {
            queue_id,
            from,
            to,
            done: Completion::Oneshot(tx),
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Records that the named consumer `name` of stream `queue_id` resumes at `next`, in the
    /// next group commit (with the acks queued before it). Never waits.
    pub fn stream_position(&self, queue_id: u64, name: Arc<str>, next: u64) {
        self.send_internal(StoreOp::StreamPosition {
            queue_id,
            name,
            next,
        });
    }

    /// Reads up to `max_count` entries of stream `queue_id` from offset `from` on (and at
    /// most about `max_bytes` of bodies: the first entry is always read), with their
    /// messages, from one snapshot. Blocking: call from `spawn_blocking`.
    ///
    /// # Errors
    /// redb failed, or an entry's message row is missing or corrupt.
    pub fn read_stream(
        &self,
        queue_id: u64,
        from: u64,
        max_count: usize,
        max_bytes: u64,
    ) -> Result<Vec<StreamRead>, StoreError> {
        let ctx = "reading a stream";
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err(ctx))?;
        let entries = txn.open_table(STREAM_ENTRIES).map_err(redb_err(ctx))?;
        let messages = txn.open_table(MESSAGES).map_err(redb_err(ctx))?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for row in entries
            .range((queue_id, from)..=(queue_id, u64::MAX))
            .map_err(redb_err(ctx))?
        {
            if out.len() >= max_count || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let (k, v) = row.map_err(redb_err(ctx))?;
            let (_, offset) = k.value();
            let (id, timestamp, size) = v.value();
            let raw = messages.get(id).map_err(redb_err(ctx))?.ok_or_else(|| {
                corrupt(
                    "stream_entries",
                    format!("({queue_id}, {offset})"),
                    format!("message {id} is missing"),
                )
            })?;
            let message =
                codec::decode_message(raw.value()).map_err(|e| corrupt("messages", id, e))?;
            bytes += u64::from(size);
            out.push(StreamRead {
                offset,
                timestamp,
                message: Arc::new(message),
            });
        }
        Ok(out)
    }

    /// Calls `f(offset, timestamp, size)` for every entry of stream `queue_id`, in offset
    /// order, from one snapshot, holding none of them: how recovery rebuilds a stream's
    /// chunk index in bounded memory. Blocking: call from `spawn_blocking`.
    ///
    /// # Errors
    /// redb failed.
    pub fn scan_stream(
        &self,
        queue_id: u64,
        mut f: impl FnMut(u64, u64, u32),
    ) -> Result<(), StoreError> {
        let ctx = "scanning a stream";
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err(ctx))?;
        let entries = txn.open_table(STREAM_ENTRIES).map_err(redb_err(ctx))?;
        for row in entries
            .range((queue_id, 0)..=(queue_id, u64::MAX))
            .map_err(redb_err(ctx))?
        {
            let (k, v) = row.map_err(redb_err(ctx))?;
            let (_, timestamp, size) = v.value();
            f(k.value().1, timestamp, size);
        }
        Ok(())
    }

    /// The stored positions of stream `queue_id`'s named consumers, by name.
    ///
    /// # Errors
    /// redb failed.
    pub fn stream_positions(&self, queue_id: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let ctx = "reading stream positions";
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err(ctx))?;
        let table = txn.open_table(STREAM_POSITIONS).map_err(redb_err(ctx))?;
        let mut out = Vec::new();
        for row in table
            .range((queue_id, "")..(queue_id.saturating_add(1), ""))
            .map_err(redb_err(ctx))?
        {
            let (k, v) = row.map_err(redb_err(ctx))?;
            out.push((k.value().1.to_owned(), v.value()));
        }
        Ok(out)
    }

    /// The last stored sequence of each named producer of stream `queue_id`, by name.
    ///
    /// # Errors
    /// redb failed, or a record is corrupt.
    pub fn stream_producers(&self, queue_id: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let ctx = "reading stream producers";
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err(ctx))?;
        let table = match txn.open_table(STREAM_PRODUCERS) {
            Ok(t) => t,
            // A store opened read-only before the table existed: no producers.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(redb_err(ctx)(e)),
        };
        let mut out = Vec::new();
        for row in table
            .range((queue_id, "")..(queue_id.saturating_add(1), ""))
            .map_err(redb_err(ctx))?
        {
            let (k, v) = row.map_err(redb_err(ctx))?;
            let (_, name) = k.value();
            let sequence = codec::decode_producer(v.value())
                .map_err(|e| corrupt("stream_producers", format!("({queue_id}, {name})"), e))?;
            out.push((name.to_owned(), sequence));
        }
        Ok(out)
    }

    /// Every queue id with a named consumer's position or a named producer's sequence
    /// stored: one seek per id, not a scan. Recovery removes those of streams that no
    /// longer exist ([`TopologyChange::DeleteStreamState`]).
    ///
    /// # Errors
    /// redb failed.
    pub fn stream_state_ids(&self) -> Result<Vec<u64>, StoreError> {
        let ctx = "listing stream state";
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err(ctx))?;
        let mut ids = std::collections::BTreeSet::new();
        queue_ids_in(&txn, STREAM_POSITIONS, &mut ids)?;
        queue_ids_in(&txn, STREAM_PRODUCERS, &mut ids)?;
        Ok(ids.into_iter().collect())
    }

    /// Every stream id that has entries, with its lowest and one past its highest offset:
    /// one seek per stream, not a scan. Recovery uses it to find the entries of streams
    /// deleted while their entries were still being removed.
    ///
    /// # Errors
    /// redb failed.
    pub fn stream_extents(&self) -> Result<Vec<(u64, u64, u64)>, StoreError> {
        let ctx = "listing streams";
        let db = self.inner.db.get()?;
        let txn = db.begin_read().map_err(redb_err(ctx))?;
        let table = txn.open_table(STREAM_ENTRIES).map_err(redb_err(ctx))?;
        let mut out = Vec::new();
        let mut at = 0u64;
        loop {
            let first = table
                .range((at, 0)..)
                .map_err(redb_err(ctx))?
                .next()
                .transpose()
                .map_err(redb_err(ctx))?
                .map(|(k, _)| k.value());
            let Some((id, lo)) = first else { break };
            let hi = table
                .range((id, 0)..=(id, u64::MAX))
                .map_err(redb_err(ctx))?
                .next_back()
                .transpose()
                .map_err(redb_err(ctx))?
                .map_or(lo, |(k, _)| k.value().1);
            out.push((id, lo, hi.saturating_add(1)));
            match id.checked_add(1) {
                Some(next) => at = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// Drains the writer (every queued operation commits and completes) and stops it.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(StoreOp::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.inner.writer.lock().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Adds to `ids` every queue id among the keys of `def`, a table keyed by `(queue id, name)`:
/// one seek per id. A table not created yet (a store opened read-only) has none.
fn queue_ids_in<V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: redb::TableDefinition<(u64, &str), V>,
    ids: &mut std::collections::BTreeSet<u64>,
) -> Result<(), StoreError> {
    let ctx = "listing stream state";
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(redb_err(ctx)(e)),
    };
    let mut at = 0u64;
    loop {
        let first = table
            .range((at, "")..)
            .map_err(redb_err(ctx))?
            .next()
            .transpose()
            .map_err(redb_err(ctx))?
            .map(|(k, _)| k.value().0);
        let Some(id) = first else { return Ok(()) };
        ids.insert(id);
        match id.checked_add(1) {
            Some(next) => at = next,
            None => return Ok(()),
        }
    }
}

fn init_schema(db: &Database, quick_repair: bool) -> Result<(), StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(redb_err("initialising the store"))?;
    // Every commit, or the saved allocator state is stale and a crash needs the full repair.
    txn.set_quick_repair(quick_repair);
    {
        let mut meta = txn.open_table(META).map_err(redb_err("opening meta"))?;
        let found = meta
            .get("schema_version")
            .map_err(redb_err("reading the schema version"))?
            .map(|v| v.value());
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaVersion {
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(redb_err("writing the schema version"))?;
            }
        }
        // Create every table so read transactions can open them unconditionally.
        txn.open_table(EXCHANGES)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(QUEUES)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(BINDINGS)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(MESSAGES)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(MESSAGE_REFS)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(QUEUE_MESSAGES)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(QUEUE_ACQUIRED)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(SCHEDULED)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(USERS).map_err(redb_err("creating tables"))?;
        txn.open_table(VHOSTS)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(PERMISSIONS)
            .map_err(redb_err("creating tables"))?;
        seed_guest(&txn, &mut meta)?;
        txn.open_table(DEDUP_KEYS)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(DEDUP_EXPIRY)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(STREAM_ENTRIES)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(STREAM_POSITIONS)
            .map_err(redb_err("creating tables"))?;
        txn.open_table(STREAM_PRODUCERS)
            .map_err(redb_err("creating tables"))?;
    }
    txn.commit().map_err(redb_err("initialising the store"))
}

/// The meta key set once `guest` and `/` have been created: a data directory gets them once,
/// when it is new (or older than users), and an operator who deletes them is not overruled
/// later.
const GUEST_SEEDED: &str = "guest_seeded";

/// Creates `guest` (password `guest`, tag `administrator`, every permission on `/`) in a data
/// directory that has never had it, as RabbitMQ does on a fresh node.
fn seed_guest(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<'_, &str, u64>,
) -> Result<(), StoreError> {
    let ctx = "creating the guest user";
    if meta.get(GUEST_SEEDED).map_err(redb_err(ctx))?.is_some() {
        return Ok(());
    }
    // `/` comes with guest: a new data directory, or one from before virtual hosts, whose
    // records all belong to `/`.
    let root = VhostRecord {
        name: codec::DEFAULT_VHOST.to_owned(),
    };
    txn.open_table(VHOSTS)
        .map_err(redb_err(ctx))?
        .insert(root.name.as_str(), &root.encode()[..])
        .map_err(redb_err(ctx))?;
    let hash = crate::auth::hash_password(crate::auth::GUEST.as_bytes())
        .map_err(|e| StoreError::Seed(e.to_string()))?;
    let user = UserRecord {
        name: crate::auth::GUEST.to_owned(),
        password_hash: Some(hash),
        tags: vec![crate::auth::ADMINISTRATOR.to_owned()],
    };
    let permission = PermissionRecord {
        user: crate::auth::GUEST.to_owned(),
        vhost: "/".to_owned(),
        configure: ".*".to_owned(),
        write: ".*".to_owned(),
        read: ".*".to_owned(),
    };
    txn.open_table(USERS)
        .map_err(redb_err(ctx))?
        .insert(user.name.as_str(), &user.encode()[..])
        .map_err(redb_err(ctx))?;
    txn.open_table(PERMISSIONS)
        .map_err(redb_err(ctx))?
        .insert(
            (permission.user.as_str(), permission.vhost.as_str()),
            &permission.encode()[..],
        )
        .map_err(redb_err(ctx))?;
    meta.insert(GUEST_SEEDED, 1).map_err(redb_err(ctx))?;
    Ok(())
}

fn corrupt(table: &'static str, key: impl ToString, e: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    }
}

fn recover(db: &Database) -> Result<(Recovered, u64), StoreError> {
    let ctx = "recovering";
    let txn = db.begin_read().map_err(redb_err(ctx))?;
    let mut out = Recovered::default();
    for row in txn
        .open_table(EXCHANGES)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        out.exchanges.push(
            ExchangeRecord::decode(v.value()).map_err(|e| corrupt("exchanges", k.value(), e))?,
        );
    }
    for row in txn
        .open_table(QUEUES)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        let record = QueueRecord::decode(v.value()).map_err(|e| corrupt("queues", k.value(), e))?;
        out.queues.push(RecoveredQueue { record });
    }
    out.entries = Some(EntrySnapshot::open(&txn)?);
    for row in txn
        .open_table(BINDINGS)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, _) = row.map_err(redb_err(ctx))?;
        out.bindings
            .push(BindingRecord::decode(k.value()).map_err(|e| corrupt("bindings", "binding", e))?);
    }
    let mut next_message_id = txn
        .open_table(MESSAGES)
        .map_err(redb_err(ctx))?
        .last()
        .map_err(redb_err(ctx))?
        .map_or(1, |(k, _)| k.value() + 1);
    for row in txn
        .open_table(SCHEDULED)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        let (due_ms, id) = k.value();
        let message = codec::decode_message(v.value())
            .map_err(|e| corrupt("scheduled", format!("({due_ms}, {id})"), e))?;
        next_message_id = next_message_id.max(id + 1);
        out.scheduled.push(ScheduledMessage {
            due_ms,
            id,
            message: Arc::new(message),
        });
    }
    for row in txn
        .open_table(VHOSTS)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        out.vhosts
            .push(VhostRecord::decode(v.value()).map_err(|e| corrupt("vhosts", k.value(), e))?);
    }
    for row in txn
        .open_table(USERS)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        out.users
            .push(UserRecord::decode(v.value()).map_err(|e| corrupt("users", k.value(), e))?);
    }
    for row in txn
        .open_table(PERMISSIONS)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        let (user, vhost) = k.value();
        out.permissions.push(
            PermissionRecord::decode(v.value())
                .map_err(|e| corrupt("permissions", format!("({user}, {vhost})"), e))?,
        );
    }
    for row in txn
        .open_table(DEDUP_KEYS)
        .map_err(redb_err(ctx))?
        .iter()
        .map_err(redb_err(ctx))?
    {
        let (k, v) = row.map_err(redb_err(ctx))?;
        let (scope, key) = k.value();
        let (id, expires_at) = v.value();
        // Ids of transient messages are not in `messages`: keep the order of acceptance.
        next_message_id = next_message_id.max(id.saturating_add(1));
        out.dedup
            .entry(scope.to_owned())
            .or_default()
            .push((key.to_owned(), id, expires_at));
    }
    Ok((out, next_message_id))
}
