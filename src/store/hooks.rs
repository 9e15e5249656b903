//! [`CommitHooks`]: what the writer asks of the layer above it.
//!
//! The store knows messages, rows and ids; it does not know queues, overflow rules, confirms
//! or connections. Those belong to the broker, which implements this trait (its completion
//! step, `broker/commit.rs`) and hands the store its own payloads inside each operation: a
//! publish's targets and confirm slot, a replayed message's way back, a reply's destination.
//! The writer calls the hooks on its own thread: [`CommitHooks::prepare`] for each publish of
//! a batch, in batch order, before the transaction; the completion hooks after the commit,
//! in commit order. The store is generic over the hooks rather than holding a trait object,
//! so the calls are static and the payloads travel unboxed: no allocation per message.

use std::convert::Infallible;
use std::time::Instant;

use super::{PublishOp, ScheduledMessage, StoreError};
use crate::message::Message;

/// The layer above the store: decides where a message goes before the commit and completes
/// operations after it. Implemented by the broker; `()` is the hooks of a store no broker runs
/// on (tools and tests that change topology or read), whose operations carry no payloads.
pub trait CommitHooks: Sized + Send + 'static {
    /// A publish's payload: where the message goes and who is told about it.
    type Publish: Send;
    /// A moved message's way back: where it returns when no target takes it.
    type Source: Send;
    /// A scheduled message's payload: who is told once it is stored.
    type Schedule: Send;
    /// Where the reply of a [`Completion::Reply`](super::Completion::Reply) goes.
    type Reply: Send;
    /// Scratch state for one batch (the time it commits at, what it has admitted so far).
    type Batch;

    /// Starts a batch, before the first [`CommitHooks::prepare`] of it.
    fn begin(&mut self) -> Self::Batch;

    /// Decides, before the transaction and in batch order, which queues take `message`: pushes
    /// one row per queue that stores it into `rows` (none for a transient message) and returns
    /// whether any queue, stored or not, takes it. The message row is written when `rows`
    /// gained at least one row. Targets refused here hear of it in
    /// [`CommitHooks::published`].
    fn prepare(
        &mut self,
        batch: &mut Self::Batch,
        publish: &mut Self::Publish,
        message: &Message,
        rows: &mut Rows,
    ) -> bool;

    /// Until when the writer should leave this publish (and everything queued behind it,
    /// which keeps the operations in order) out of the next batch: `None` to take it now.
    /// The broker holds a message that consumers already have for a moment, so that their
    /// acks may spare writing it at all; the hooks bound the wait.
    fn hold_until(&self, _publish: &Self::Publish, _message: &Message) -> Option<Instant> {
        None
    }

    /// A publish's commit ended with `result`. Called for every publish of a client, and for
    /// the publishes inside a dead letter or a release only when their commit succeeded (when
    /// it failed, their originals are still stored and come back at the next start).
    fn published(
        &mut self,
        batch: &mut Self::Batch,
        publish: PublishOp<Self>,
        result: &Result<(), StoreError>,
    );

    /// A move's commit ended with `result`. `taken` says whether [`CommitHooks::prepare`] found
    /// a queue for it; only then did it leave its source.
    fn moved(
        &mut self,
        batch: &mut Self::Batch,
        source: Self::Source,
        publish: PublishOp<Self>,
        taken: bool,
        result: &Result<(), StoreError>,
    );

    /// A scheduled message's commit ended with `result`.
    fn scheduled(
        &mut self,
        schedule: Self::Schedule,
        message: ScheduledMessage,
        result: &Result<(), StoreError>,
    );

    /// The commit an operation waited for ended with `result`: reply.
    fn replied(&mut self, reply: Self::Reply, result: &Result<(), StoreError>);
}

/// The `queue_messages` rows of the publishes in one batch, `(queue id, expires at)`, filled in
/// by [`CommitHooks::prepare`]. One buffer for the whole batch, kept between batches, so
/// preparing a publish allocates nothing.
#[derive(Debug, Default)]
pub struct Rows {
    rows: Vec<(u64, u64)>,
    /// Deduplication keys to write or remove, for the whole batch.
    dedup: Vec<DedupRow>,
    /// Expired deduplication keys (expiring before this, ms since the epoch) are swept in
    /// this batch's commit; 0: no sweep.
    sweep_before: u64,
    /// Stream entries, for the whole batch.
    streams: Vec<StreamRow>,
}

/// A stream entry to write with a publish (`STREAM_ENTRIES`), and the producer sequence it
/// carries (`STREAM_PRODUCERS`), written in the same commit.
#[derive(Debug, Clone)]
pub struct StreamRow {
    /// The stream's queue id.
    pub queue_id: u64,
    /// The entry's offset.
    pub offset: u64,
    /// When it is appended, ms since the epoch.
    pub timestamp: u64,
    /// `(producer name, sequence)` when the publish named its producer: stored as that
    /// producer's last sequence, so a confirm implies a retry is recognised.
    pub producer: Option<(std::sync::Arc<str>, u64)>,
}

/// A change to a durable deduplication window, made in the commit of the publish that
/// carries it (`DEDUP_KEYS`, docs/deduplication.md).
#[derive(Debug, Clone)]
pub struct DedupRow {
    /// The window's scope (`e/<exchange>` or `q/<queue id>`).
    pub scope: std::sync::Arc<str>,
    /// The key.
    pub key: std::sync::Arc<str>,
    /// `Some(expires at)` (0: by count only) to write the key; `None` to remove it (evicted).
    pub add: Option<u64>,
}

impl Rows {
    /// Asks for a deduplication key to be written (or removed) with the publish.
    pub fn push_dedup(&mut self, row: DedupRow) {
        self.dedup.push(row);
    }

    /// Asks the commit to remove deduplication keys that expired before `now`.
    pub fn sweep_dedup_before(&mut self, now: u64) {
        self.sweep_before = self.sweep_before.max(now);
    }

    pub(super) fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    pub(super) fn dedup(&self, range: (u32, u32)) -> &[DedupRow] {
        &self.dedup[range.0 as usize..range.1 as usize]
    }

    pub(super) fn sweep_before(&self) -> u64 {
        self.sweep_before
    }

    /// Asks for a row of the message in queue `queue_id`, expiring at `expires_at` (ms since
    /// the epoch, 0 = never).
    pub fn push(&mut self, queue_id: u64, expires_at: u64) {
        self.rows.push((queue_id, expires_at));
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Asks for an entry of the message in stream `queue_id` at `offset`, appended at
    /// `timestamp` (ms since the epoch). A stream stores every message routed to it,
    /// persistent or not.
    pub fn push_stream(&mut self, queue_id: u64, offset: u64, timestamp: u64) {
        self.streams.push(StreamRow {
            queue_id,
            offset,
            timestamp,
            producer: None,
        });
    }

    /// Like [`Rows::push_stream`], for a publish that named its producer: the producer's
    /// last sequence becomes `sequence` in the same commit.
    pub fn push_stream_from(
        &mut self,
        queue_id: u64,
        offset: u64,
        timestamp: u64,
        producer: (std::sync::Arc<str>, u64),
    ) {
        self.streams.push(StreamRow {
            queue_id,
            offset,
            timestamp,
            producer: Some(producer),
        });
    }

    pub(super) fn stream_len(&self) -> usize {
        self.streams.len()
    }

    pub(super) fn stream(&self, range: (u32, u32)) -> &[StreamRow] {
        &self.streams[range.0 as usize..range.1 as usize]
    }

    pub(super) fn get(&self, range: (u32, u32)) -> &[(u64, u64)] {
        &self.rows[range.0 as usize..range.1 as usize]
    }

    pub(super) fn clear(&mut self) {
        self.rows.clear();
        self.dedup.clear();
        self.streams.clear();
        self.sweep_before = 0;
    }
}

/// A store with no broker above it: its operations have no payloads, so it cannot carry a
/// publish, a move or a schedule, and a reply is never asked for.
impl CommitHooks for () {
    type Publish = Infallible;
    type Source = Infallible;
    type Schedule = Infallible;
    type Reply = Infallible;
    type Batch = ();

    fn begin(&mut self) {}

    fn prepare(&mut self, _: &mut (), publish: &mut Infallible, _: &Message, _: &mut Rows) -> bool {
        match *publish {}
    }

    fn published(&mut self, _: &mut (), publish: PublishOp<()>, _: &Result<(), StoreError>) {
        match publish.payload {}
    }

    fn moved(
        &mut self,
        _: &mut (),
        source: Infallible,
        _: PublishOp<()>,
        _: bool,
        _: &Result<(), StoreError>,
    ) {
        match source {}
    }

    fn scheduled(&mut self, schedule: Infallible, _: ScheduledMessage, _: &Result<(), StoreError>) {
        match schedule {}
    }

    fn replied(&mut self, reply: Infallible, _: &Result<(), StoreError>) {
        match reply {}
    }
}
