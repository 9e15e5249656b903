//! The completion step: the broker's side of every store commit ([`CommitHooks`]).
//!
//! The store writer knows rows and ids, nothing of queues or clients. Before each transaction
//! it asks [`Hooks::prepare`] which queues take a message (the `x-overflow` rules, counted with
//! what the batch has already admitted) and which rows that writes, with the expiry the queue
//! gives it. After the commit it reports each operation, in commit order, and this step does
//! what follows: enqueue the message (which may deliver it at once), dead-letter
//! `reject-publish-dlx` refusals, confirm the publisher, answer `Ok` or an error, put back a
//! replayed message no queue took. All of it runs on the writer thread, so nothing here may
//! wait on a client: replies go through [`ReplySink`](super::confirm::ReplySink)s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use warren_protocol::ErrorCode;

use super::confirm::{ReplySlot, SlowPublish};
use super::dead_letter::DeadLetterReason;
use super::dedup::Mark;
use super::event::{Confirm, Event};
use super::queue::Queue;
use super::queue_args::Overflow;
use super::BrokerStats;
use crate::clock::Clock;
use crate::message::{Message, QueuedMessage};
use crate::store::{
    CommitHooks, DedupRow, Move, PublishOp, Rows, ScheduledMessage, Store, StoreError,
};

/// The store as the broker runs it: with the broker's completion step.
pub type BrokerStore = Store<Hooks>;

/// The broker's [`CommitHooks`]: reads the time on the broker's clock once per batch.
#[derive(Debug)]
pub struct Hooks {
    clock: Arc<dyn Clock>,
    /// The streams that reserved offsets in the last batch: at the next batch's start each
    /// re-aligns its reservations with what was appended, so a failed commit (whose
    /// publishes were never appended) hands its offsets out again.
    reserved: Vec<Arc<Queue>>,
    /// Where producer duplicates are counted (decided here, not at routing).
    stats: Arc<BrokerStats>,
}

impl Hooks {
    /// Hooks stamping expiry with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Hooks {
            clock,
            reserved: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// These hooks, counting in the broker's `stats`.
    pub fn with_stats(mut self, stats: Arc<BrokerStats>) -> Self {
        self.stats = stats;
        self
    }
}

/// A publish's broker payload: where the message goes and where its confirm goes.
#[derive(Debug)]
pub struct Targets {
    /// The queues it was routed to; [`Hooks::prepare`] moves those that refuse it (full,
    /// `x-overflow` `reject-publish` or `reject-publish-dlx`) to `rejected`.
    queues: Vec<Arc<Queue>>,
    /// The queues that refused it for being full.
    rejected: Vec<Arc<Queue>>,
    /// Where its confirm goes.
    confirm: Option<ReplySlot>,
    /// The deduplication keys its publish was accepted under (`dedup.rs`): written with it
    /// when it is stored, forgotten when it is refused.
    marks: Vec<Mark>,
    /// A duplicate: stored nowhere, confirmed as such after the commit of what came before
    /// it (so never before the message it duplicates is durable).
    duplicate: bool,
    /// The publisher's name and this message's number in its sequence
    /// (`x-producer-name`, `x-producer-sequence`): each stream target checks it.
    producer: Option<(Arc<str>, u64)>,
    /// Some stream target dropped it as a producer duplicate ([`Hooks::prepare`]).
    stream_duplicate: bool,
    /// Set when the message was enqueued in its targets before the commit (the early
    /// path, `publish.rs`): the commit only writes the rows still needed and confirms.
    early: Option<Early>,
    /// Held while a client's publish takes the commit-first path: its session sends no
    /// publish down the early path meanwhile, which would overtake it.
    slow: Option<SlowPublish>,
}

/// When a publish enqueued before its commit was made: its targets' expiry counts from
/// `now_ms` (as their entries' did), and the writer waits for its acks until `at` plus
/// [`EARLY_ACK_WAIT`] at most.
#[derive(Debug, Clone, Copy)]
pub struct Early {
    /// The broker's clock at the publish, ms since the epoch.
    pub now_ms: u64,
    /// When it was published.
    pub at: Instant,
}

/// How long the writer may hold back a message enqueued before its commit that every target
/// has delivered, waiting for the acks that would spare writing it (as RabbitMQ's message
/// store skips messages acked before they are written). It delays only the confirm, by
/// at most this, and only while the consumers keep up.
pub const EARLY_ACK_WAIT: Duration = Duration::from_millis(10);

impl Targets {
    /// Names the publish's producer and sequence, for the streams it reaches to deduplicate
    /// (docs/deduplication.md, "Producers").
    pub fn set_producer(&mut self, producer: Option<(Arc<str>, u64)>) {
        self.producer = producer;
    }

    /// Holds `slow` until the publish completes (see [`SlowPublish`]).
    pub fn set_slow(&mut self, slow: SlowPublish) {
        self.slow = Some(slow);
    }
}

/// A publish of `message` to `queues`, confirmed through `confirm`.
pub fn publish_op(
    message: Arc<Message>,
    queues: Vec<Arc<Queue>>,
    confirm: Option<ReplySlot>,
) -> PublishOp<Hooks> {
    publish_op_with_marks(message, queues, confirm, Vec::new())
}

/// A client's publish, accepted under the deduplication keys `marks`.
pub fn publish_op_with_marks(
    message: Arc<Message>,
    queues: Vec<Arc<Queue>>,
    confirm: Option<ReplySlot>,
    marks: Vec<Mark>,
) -> PublishOp<Hooks> {
    PublishOp::new(
        message,
        Targets {
            queues,
            // Empty: allocates only when a queue refuses.
            rejected: Vec::new(),
            confirm,
            marks,
            duplicate: false,
            producer: None,
            stream_duplicate: false,
            early: None,
            slow: None,
        },
    )
}

/// A client's publish enqueued in `queues` before its commit, numbered `id`: the commit
/// writes the rows of the durable targets not yet settled, then confirms.
pub fn early_publish_op(
    id: u64,
    message: Arc<Message>,
    queues: Vec<Arc<Queue>>,
    confirm: Option<ReplySlot>,
    early: Early,
) -> PublishOp<Hooks> {
    PublishOp::with_id(
        id,
        message,
        Targets {
            queues,
            rejected: Vec::new(),
            confirm,
            marks: Vec::new(),
            duplicate: false,
            producer: None,
            stream_duplicate: false,
            early: Some(early),
            slow: None,
        },
    )
}

/// A duplicate publish: goes through the writer only to be confirmed in order, after the
/// commit that holds (or follows) the message it repeats.
pub fn duplicate_op(message: Arc<Message>, confirm: ReplySlot) -> PublishOp<Hooks> {
    PublishOp::new(
        message,
        Targets {
            queues: Vec::new(),
            rejected: Vec::new(),
            confirm: Some(confirm),
            marks: Vec::new(),
            duplicate: true,
            producer: None,
            stream_duplicate: false,
            early: None,
            slow: None,
        },
    )
}

/// A replayed message's way back to its queue, if no target takes it.
#[derive(Debug)]
pub struct Replayed {
    /// The queue it leaves (it has already been taken out of its ready list).
    queue: Arc<Queue>,
    /// Its entry there.
    entry: QueuedMessage,
    /// Counts the replayed messages every target refused.
    refused: Arc<AtomicU64>,
}

/// A move of `entry` from `queue` to the targets of `publish` (a DLQ replay); a move no
/// target takes puts `entry` back and counts itself in `refused`.
pub fn replay_move(
    queue: Arc<Queue>,
    entry: QueuedMessage,
    publish: PublishOp<Hooks>,
    refused: Arc<AtomicU64>,
) -> Move<Hooks> {
    let row = entry.stored.then_some((queue.id, entry.id));
    Move::new(
        row,
        Replayed {
            queue,
            entry,
            refused,
        },
        publish,
    )
}

/// A scheduled message's broker payload.
#[derive(Debug)]
pub struct Scheduled {
    /// Where its confirm goes (sent once it is stored).
    pub confirm: Option<ReplySlot>,
    /// The scheduler, told the stored message.
    pub scheduler: UnboundedSender<ScheduledMessage>,
}

/// One batch as the completion step sees it.
#[derive(Debug)]
pub struct Batch {
    /// When the batch commits, on the broker's clock: the time every expiry counts from.
    now: u64,
    /// Ready messages and bytes the batch has already added to each queue (by id), for the
    /// overflow checks: the queues themselves learn of them only after the commit.
    pending: HashMap<u64, (u64, u64)>,
}

/// Asks for a publish's deduplication keys to be written with it: for durable windows, when
/// the message is persistent and no queue refused it (a refused publish is retried); keys a
/// count window evicted are removed whatever the message. Each commit that writes a key with
/// a time window also sweeps the expired ones.
fn dedup_rows(now: u64, publish: &Targets, message: &Message, rows: &mut Rows) {
    let keep = message.properties.persistent && publish.rejected.is_empty();
    for m in publish.marks.iter().filter(|m| m.window.durable) {
        for key in &m.evicted {
            rows.push_dedup(DedupRow {
                scope: m.window.scope.clone(),
                key: key.clone(),
                add: None,
            });
        }
        if keep {
            rows.push_dedup(DedupRow {
                scope: m.window.scope.clone(),
                key: m.key.clone(),
                add: Some(m.expires_at),
            });
            if m.expires_at != 0 {
                rows.sweep_dedup_before(now);
            }
        }
    }
}

/// When a message entering `queue` at `now` expires (0 = never): the queue's TTL or the
/// message's own expiration, whichever ends first.
pub(super) fn expires_at(queue: &Queue, message: &Message, now: u64) -> u64 {
    let ttl = match (queue.args.message_ttl_ms, message.properties.expiration) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match ttl {
        None => 0,
        Some(0) => super::queue::EXPIRES_AT_ONCE,
        Some(t) => now.saturating_add(t).max(2),
    }
}

/// A published message's entry in queue `q`, entering at `now`: stored there when `stored`
/// (persistent) and the queue is durable; `early` as [`QueuedMessage::early`].
pub(super) fn new_entry(
    id: u64,
    message: &Arc<Message>,
    q: &Queue,
    stored: bool,
    now: u64,
    early: u8,
) -> QueuedMessage {
    QueuedMessage {
        id,
        message: Some(message.clone()),
        size: u32::try_from(message.body.len()).unwrap_or(u32::MAX),
        delivery_count: 0,
        acquired_count: 0,
        stored: stored && q.durable,
        expires_at: expires_at(q, message, now),
        priority: 0,
        early,
    }
}

fn storage_failure(e: &StoreError) -> String {
    format!("storage failure: {e}")
}

impl CommitHooks for Hooks {
    type Publish = Targets;
    type Source = Replayed;
    type Schedule = Scheduled;
    type Reply = ReplySlot;
    type Batch = Batch;

    fn begin(&mut self) -> Batch {
        for q in self.reserved.drain(..) {
            if let Some(s) = &q.stream {
                s.realign();
            }
        }
        Batch {
            now: self.clock.now_ms(),
            pending: HashMap::new(),
        }
    }

    /// Holds a message enqueued before its commit while some ack is still to come and each
    /// target has delivered it or is about to (a consumer attached, few messages ahead), up
    /// to [`EARLY_ACK_WAIT`] after its publish: the acks that arrive meanwhile spare its
    /// rows (a consumer that keeps up means it is never written).
    fn hold_until(&self, publish: &Targets, message: &Message) -> Option<Instant> {
        let early = publish.early.as_ref()?;
        if !message.properties.persistent || !publish.queues.iter().any(|q| q.durable) {
            return None;
        }
        let n = publish.queues.len();
        let reached = message.write.reached()?;
        let held = if reached == (1 << n) - 1 {
            message.write.awaits_acks(n)
        } else {
            publish
                .queues
                .iter()
                .enumerate()
                .all(|(i, q)| reached & (1 << i) != 0 || q.delivers_soon())
        };
        held.then(|| early.at + EARLY_ACK_WAIT)
    }

    /// Decides which targets take the message: a full queue whose overflow rule refuses
    /// (anything but `drop-head`) refuses it, counting what this batch already added. Rows go
    /// to the durable queues among the rest when the message is persistent.
    fn prepare(
        &mut self,
        batch: &mut Batch,
        publish: &mut Targets,
        message: &Message,
        rows: &mut Rows,
    ) -> bool {
        if let Some(early) = &publish.early {
            // Enqueued already: rows only where it is still unsettled. Its targets refuse
            // nothing (the early path takes none that could) and none is a stream.
            let settled = message.write.take();
            if message.properties.persistent {
                for (i, q) in publish.queues.iter().enumerate() {
                    if q.durable && !q.is_deleted() && settled & (1 << i) == 0 {
                        rows.push(q.id, expires_at(q, message, early.now_ms));
                    }
                }
            }
            return true;
        }
        let size = message.body.len() as u64;
        let pending = &mut batch.pending;
        let rejected = &mut publish.rejected;
        // In place: a publish to queues without a refusing overflow rule allocates nothing.
        publish.queues.retain(|q| {
            // A stream never refuses: its x-max-length-bytes is retention, not overflow.
            if q.stream.is_some() {
                return true;
            }
            let refuses = !matches!(q.args.overflow, Overflow::DropHead)
                && (q.args.max_length.is_some() || q.args.max_length_bytes.is_some());
            if !refuses {
                return true;
            }
            let added = pending.entry(q.id).or_insert((0, 0));
            if !q.admits(*added, size) {
                rejected.push(q.clone());
                return false;
            }
            added.0 += 1;
            added.1 += size;
            true
        });
        if message.properties.persistent {
            for q in publish
                .queues
                .iter()
                .filter(|q| q.durable && q.stream.is_none() && !q.is_deleted())
            {
                rows.push(q.id, expires_at(q, message, batch.now));
            }
        }
        // Every message routed to a stream is stored, persistent or not (RabbitMQ streams are
        // always persistent); its offset is reserved here, in batch order, and taken by the
        // append after the commit, in the same order. A named producer's message is first
        // checked against its last sequence there: each stream decides for itself, and one
        // that already has it drops out of the targets.
        let producer = &publish.producer;
        let reserved = &mut self.reserved;
        let mut stream_duplicate = false;
        publish.queues.retain(|q| {
            let Some(s) = q.stream.as_ref().filter(|_| !q.is_deleted()) else {
                return true;
            };
            if !reserved.iter().any(|r| r.id == q.id) {
                // Also when the message is a duplicate: realign clears the taken sequences.
                reserved.push(q.clone());
            }
            match producer {
                Some((name, seq)) if !s.admit_producer(name, *seq) => {
                    stream_duplicate = true;
                    return false;
                }
                Some((name, seq)) => {
                    rows.push_stream_from(q.id, s.reserve(), batch.now, (name.clone(), *seq));
                }
                None => rows.push_stream(q.id, s.reserve(), batch.now),
            }
            true
        });
        publish.stream_duplicate = stream_duplicate;
        if !publish.marks.is_empty() {
            dedup_rows(batch.now, publish, message, rows);
        }
        !publish.queues.is_empty()
    }

    /// Enqueues the message in every queue that took it, dead-letters it from the
    /// `reject-publish-dlx` queues that refused it, and confirms: `Ack`, or `Nack` naming the
    /// first full queue. A stored message whose commit failed is not durable: it is nacked and
    /// not enqueued. A transient one never needed the commit and goes through.
    fn published(
        &mut self,
        batch: &mut Batch,
        publish: PublishOp<Hooks>,
        result: &Result<(), StoreError>,
    ) {
        let (id, stored) = (publish.id(), publish.stored());
        let PublishOp {
            message,
            payload:
                Targets {
                    queues,
                    rejected,
                    confirm,
                    marks,
                    duplicate,
                    producer,
                    stream_duplicate,
                    early,
                    slow: _slow,
                },
            ..
        } = publish;
        if early.is_some() {
            // Enqueued before the commit: what is left is the confirm. A failed commit
            // nacks it, though consumers may have it already (at least once: the publisher
            // sends it again; docs/storage.md).
            if let Some(slot) = confirm {
                slot.reply(Event::Confirm(match result {
                    Err(e) if stored => Confirm::Nack {
                        code: ErrorCode::InternalError,
                        reason: storage_failure(e),
                    },
                    _ => Confirm::Ack,
                }));
            }
            return;
        }
        if duplicate {
            if let Some(slot) = confirm {
                slot.reply(Event::Confirm(Confirm::Duplicate));
            }
            return;
        }
        if (result.is_err() && stored) || !rejected.is_empty() {
            // Refused: the publisher will retry, and the retry must not be a duplicate.
            for m in &marks {
                m.window.forget(&m.key, m.seq);
            }
        }
        if let Err(e) = result {
            // A producer duplicate may repeat a message of this very batch, which is lost:
            // it is refused too, and its retry is checked again.
            if stored || stream_duplicate {
                if let Some(slot) = confirm {
                    slot.reply(Event::Confirm(Confirm::Nack {
                        code: ErrorCode::InternalError,
                        reason: storage_failure(e),
                    }));
                }
                return;
            }
        }
        if stream_duplicate && queues.is_empty() && rejected.is_empty() {
            // Every target already had it: the streams as producer duplicates, any other
            // target by its own deduplication (`dedup.rs`), as for `Duplicate` there.
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = confirm {
                slot.reply(Event::Confirm(Confirm::Duplicate));
            }
            return;
        }
        for q in &queues {
            if let Some(s) = &q.stream {
                s.append(q, batch.now, message.clone());
                if let Some((name, seq)) = &producer {
                    s.producer_stored(name, *seq);
                }
                continue;
            }
            q.enqueue(new_entry(id, &message, q, stored, batch.now, 0));
        }
        let size = u32::try_from(message.body.len()).unwrap_or(u32::MAX);
        for q in &rejected {
            if q.args.overflow == Overflow::RejectPublishDlx {
                q.dead_letter(
                    vec![QueuedMessage {
                        early: 0,
                        id,
                        message: Some(message.clone()),
                        size,
                        delivery_count: 0,
                        acquired_count: 0,
                        stored: false,
                        expires_at: 0,
                        priority: 0,
                    }],
                    DeadLetterReason::MaxLen,
                );
            }
        }
        if let Some(slot) = confirm {
            let confirm = match rejected.first() {
                None => Confirm::Ack,
                Some(q) => Confirm::Nack {
                    code: ErrorCode::ResourceError,
                    reason: format!(
                        "queue '{}' is full (x-overflow {})",
                        q.name,
                        q.args.overflow.as_str()
                    ),
                },
            };
            slot.reply(Event::Confirm(confirm));
        }
    }

    /// A replayed message some target took is enqueued there (it left its queue in the
    /// commit); one refused everywhere, or whose commit failed, goes back where it was.
    fn moved(
        &mut self,
        batch: &mut Batch,
        source: Replayed,
        publish: PublishOp<Hooks>,
        taken: bool,
        result: &Result<(), StoreError>,
    ) {
        if result.is_ok() && taken {
            self.published(batch, publish, result);
            return;
        }
        if result.is_ok() {
            source.refused.fetch_add(1, Ordering::Relaxed);
        }
        source.queue.put_back(source.entry);
    }

    /// Hands a stored scheduled message to the scheduler, then confirms it.
    fn scheduled(
        &mut self,
        schedule: Scheduled,
        message: ScheduledMessage,
        result: &Result<(), StoreError>,
    ) {
        match result {
            Ok(()) => {
                let _ = schedule.scheduler.send(message);
                if let Some(slot) = schedule.confirm {
                    slot.reply(Event::Confirm(Confirm::Ack));
                }
            }
            Err(e) => {
                if let Some(slot) = schedule.confirm {
                    slot.reply(Event::Confirm(Confirm::Nack {
                        code: ErrorCode::InternalError,
                        reason: storage_failure(e),
                    }));
                }
            }
        }
    }

    /// Answers `Ok`, or an `INTERNAL_ERROR` naming the storage failure.
    fn replied(&mut self, reply: ReplySlot, result: &Result<(), StoreError>) {
        reply.reply(match result {
            Ok(()) => Event::Ok,
            Err(e) => Event::Error {
                code: ErrorCode::InternalError,
                text: storage_failure(e),
            },
        });
    }
}
