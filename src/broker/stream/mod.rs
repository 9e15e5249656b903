//! [`Stream`]: a stream queue (`x-queue-type=stream`), an append-only log that consumers read
//! from any offset without removing anything (docs/streams.md).
//!
//! A stream is a different state machine from a classic queue, so it lives here rather than
//! in `queue/state.rs`; the [`Queue`] shell holds one in `Queue::stream` (a kind inside the
//! queue, so routing, bindings, listings and the topology keep their `Arc<Queue>`s), and
//! its methods hand stream work here.
//!
//! # The log and memory
//! Every entry is a `stream_entries` row `(queue id, offset) → (message id, timestamp,
//! size)`, its body the shared `messages` row, written in the group commit of its publish
//! (`commit.rs` asks [`Stream::reserve`] for the offset before the commit and calls
//! [`Stream::append`] after it, both on the writer thread, in commit order). In memory a
//! stream keeps only:
//! - its first and next offsets and total bytes;
//! - a sparse chunk index, one `Chunk` per up to [`CHUNK_ENTRIES`] entries or
//!   `x-stream-max-segment-size-bytes` of bodies: first offset, timestamps, bytes; used for
//!   timestamp seeks and for retention, which drops whole chunks;
//! - a tail of the newest entries (at most [`TAIL_BYTES`] and [`TAIL_ENTRIES`]) with their
//!   messages, from which consumers at the head are fed without a store read;
//! - per consumer a cursor.
//!
//! A consumer behind the tail reads batches of entries (bounded by its credit) from a store
//! snapshot on a blocking thread. So the memory of a stream of tens of millions of entries is
//! its chunk index (a few dozen bytes per chunk) plus the tail, not its length.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use warren_protocol::{FieldTable, FieldValue};

use super::consumer::Consumer;
use super::queue::{consumer_timeout, Queue, QueueContext};
use super::queue_args::QueueArgs;
use super::session::{Outbound, Unacked};
use crate::error::BrokerError;
use crate::message::{Message, QueuedMessage};
use crate::store::StreamRead;

/// The most entries in one chunk of the index (and so in one retention trim).
pub const CHUNK_ENTRIES: u64 = 4096;

/// The body bytes after which a chunk closes, without `x-stream-max-segment-size-bytes`.
pub const DEFAULT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Body bytes of the newest entries kept in memory to feed consumers at the head.
pub const TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// The most entries kept in the in-memory tail (bounds the per-entry overhead of tiny
/// messages).
pub const TAIL_ENTRIES: usize = 16 * 1024;

/// The most entries one store read takes for a consumer.
pub const READ_BATCH: usize = 512;

/// The most body bytes one store read takes for a consumer.
pub const READ_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// The prefetch a stream consumer gets when its connection set none (0): a stream consumer
/// always has a bound, since a stream may hold far more than a client can buffer.
pub const DEFAULT_STREAM_PREFETCH: u32 = 1000;

/// Entries of a deleted stream removed per commit.
pub const DELETE_BATCH: u64 = 4096;

/// The consume argument choosing where a stream consumer starts (RabbitMQ's name).
pub const X_STREAM_OFFSET: &str = "x-stream-offset";

/// The consume argument naming a consumer whose position the server keeps (docs/streams.md).
pub const X_STREAM_CONSUMER_NAME: &str = "x-stream-consumer-name";

/// The message header naming a stream publisher (docs/deduplication.md, "Producers").
pub const X_PRODUCER_NAME: &str = "x-producer-name";

/// The message header numbering a named publisher's messages.
pub const X_PRODUCER_SEQUENCE: &str = "x-producer-sequence";

/// The longest producer name, in bytes: one map entry and one store row per name and stream.
pub const MAX_PRODUCER_NAME_BYTES: usize = 255;

/// The producer a message names: `Ok(None)` unless it carries both [`X_PRODUCER_NAME`] (a
/// non-empty string of at most [`MAX_PRODUCER_NAME_BYTES`]) and [`X_PRODUCER_SEQUENCE`] (a
/// non-negative integer).
///
/// # Errors
/// `PreconditionFailed`, saying which header is malformed and why; a header of the wrong
/// kind is an error even without the other, since the publisher meant to be deduplicated.
pub fn producer_of(
    headers: &warren_protocol::Headers,
) -> Result<Option<(Arc<str>, u64)>, BrokerError> {
    if headers.is_empty() {
        return Ok(None);
    }
    let refuse = |why: String| Err(BrokerError::PreconditionFailed(why));
    let name = match headers.get(X_PRODUCER_NAME) {
        None => None,
        Some(FieldValue::String(n)) if n.is_empty() => {
            return refuse(format!("{X_PRODUCER_NAME} is empty"));
        }
        Some(FieldValue::String(n)) if n.len() > MAX_PRODUCER_NAME_BYTES => {
            return refuse(format!(
                "{X_PRODUCER_NAME} is {} bytes long, over the limit of {MAX_PRODUCER_NAME_BYTES}",
                n.len()
            ));
        }
        Some(FieldValue::String(n)) => Some(n),
        Some(_) => return refuse(format!("{X_PRODUCER_NAME} must be a string")),
    };
    let sequence = match headers.get(X_PRODUCER_SEQUENCE) {
        None => None,
        Some(v) => match v.as_i128().and_then(|i| u64::try_from(i).ok()) {
            Some(n) => Some(n),
            None => {
                return refuse(format!(
                    "{X_PRODUCER_SEQUENCE} must be a non-negative integer"
                ))
            }
        },
    };
    Ok(name.zip(sequence).map(|(n, s)| (Arc::<str>::from(n), s)))
}

/// Where a consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first entry still in the stream.
    First,
    /// The first entry of the last chunk (RabbitMQ's `last`).
    Last,
    /// Only entries appended from now on.
    Next,
    /// This offset (clamped to what the stream holds).
    Offset(u64),
    /// The first entry appended at or after this time, ms since the epoch.
    Timestamp(u64),
}

/// Parses `x-stream-offset`: `"first"`, `"last"`, `"next"`, an integer offset, an AMQP
/// timestamp (seconds, as RabbitMQ clients send it), or an RFC 3339 time string with up to
/// millisecond precision (`"2026-11-30T10:00:00.250Z"`, Warren's spelling for ms).
///
/// # Errors
/// A message saying what was wrong with the value.
pub fn parse_start(args: &FieldTable) -> Result<Option<StartAt>, String> {
    let Some(v) = args.get(X_STREAM_OFFSET) else {
        return Ok(None);
    };
    let start =
        match v {
            FieldValue::String(s) => match s.as_str() {
                "first" => StartAt::First,
                "last" => StartAt::Last,
                "next" => StartAt::Next,
                other => match parse_rfc3339_ms(other) {
                    Some(ms) => StartAt::Timestamp(ms),
                    None => {
                        return Err(format!(
                            "expected \"first\", \"last\", \"next\", an offset, a timestamp or an \
                         RFC 3339 time like \"2026-11-30T10:00:00Z\", got \"{}\"",
                            other.chars().take(64).collect::<String>()
                        ))
                    }
                },
            },
            FieldValue::Timestamp(secs) => StartAt::Timestamp(secs.saturating_mul(1000)),
            other => match other.as_i128().and_then(|i| u64::try_from(i).ok()) {
                Some(n) => StartAt::Offset(n),
                None => return Err(
                    "expected \"first\", \"last\", \"next\", a non-negative offset or a timestamp"
                        .to_owned(),
                ),
            },
        };
    Ok(Some(start))
}

/// Parses an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.fff]Z` or with a `+HH:MM` offset) into
/// ms since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        let padded: String = f.chars().chain("000".chars()).take(3).collect();
        millis = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

/// One chunk of the index: consecutive entries, trimmed together.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: u64,
    count: u64,
    bytes: u64,
    first_ts: u64,
    last_ts: u64,
}

/// A consumer's cursor.
#[derive(Debug)]
struct Reader {
    consumer: Arc<Consumer>,
    /// Its name, when the server keeps its position.
    name: Option<Arc<str>>,
    /// The next offset to deliver.
    next: u64,
    /// Entries appended before this time are skipped (a timestamp start); 0 once passed.
    skip_before_ts: u64,
    /// A store read is in flight for it.
    reading: bool,
    /// Offsets delivered and not yet settled (bounded by its prefetch): a named consumer's
    /// position is the lowest of them, so a restart redelivers what was never acked.
    outstanding: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// The offset of the next append.
    next: u64,
    chunks: VecDeque<Chunk>,
    /// Body bytes of every entry still in the stream.
    bytes: u64,
    /// The newest entries with their messages: `(offset, timestamp, message)`.
    tail: VecDeque<(u64, u64, Arc<Message>)>,
    tail_bytes: u64,
    readers: Vec<Reader>,
    /// Named consumers' stored positions (next offset to read).
    positions: BTreeMap<Arc<str>, u64>,
    deleted: bool,
}

impl State {
    fn first(&self) -> u64 {
        self.chunks.front().map_or(self.next, |c| c.first)
    }

    fn tail_first(&self) -> u64 {
        self.tail.front().map_or(self.next, |t| t.0)
    }
}

/// What `stream info` shows.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// First offset still held (equal to `next` when empty).
    pub first_offset: u64,
    /// The offset the next append gets.
    pub next_offset: u64,
    /// Timestamp of the first entry (0 when empty).
    pub first_timestamp: u64,
    /// Timestamp of the last entry (0 when empty).
    pub last_timestamp: u64,
    /// Body bytes held.
    pub bytes: u64,
    /// Chunks in the index.
    pub chunks: u64,
    /// Attached consumers.
    pub consumers: u32,
    /// Named consumers' positions: `(name, next offset, attached now)`.
    pub named: Vec<(String, u64, bool)>,
    /// Named producers: `(name, last stored sequence)`, by name.
    pub producers: Vec<(String, u64)>,
}

/// The last sequence of each named producer (docs/deduplication.md, "Producers").
#[derive(Debug, Default)]
struct Producers {
    /// The last sequence stored, by name: what survives a restart.
    stored: HashMap<Arc<str>, u64>,
    /// Sequences taken by publishes of the batch being committed: a second publish of one
    /// sequence in the same batch is a duplicate. Cleared by [`Stream::realign`] before the
    /// next batch, so a failed commit leaves only what was stored.
    pending: HashMap<Arc<str>, u64>,
}

/// A stream queue's log state; see the module docs.
#[derive(Debug)]
pub struct Stream {
    queue_id: u64,
    name: Arc<str>,
    max_bytes: Option<u64>,
    max_age_ms: Option<u64>,
    chunk_bytes: u64,
    ctx: Arc<QueueContext>,
    /// The next offset [`Stream::reserve`] hands out: ahead of `State::next` by the entries of
    /// the batch being committed. Touched only on the writer thread.
    reserved: AtomicU64,
    state: Mutex<State>,
    /// Producer sequences; used on the writer thread, and by `stream info`.
    producers: Mutex<Producers>,
}

impl Stream {
    /// An empty stream for queue `queue_id`.
    pub fn new(queue_id: u64, name: Arc<str>, args: &QueueArgs, ctx: Arc<QueueContext>) -> Self {
        Stream {
            queue_id,
            name,
            max_bytes: args.max_length_bytes,
            max_age_ms: args.max_age_ms,
            chunk_bytes: args.stream_chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES),
            ctx,
            reserved: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            producers: Mutex::new(Producers::default()),
        }
    }

    /// Its retention limits: `(x-max-length-bytes, x-max-age in ms, chunk bytes)`.
    pub fn retention(&self) -> (Option<u64>, Option<u64>, u64) {
        (self.max_bytes, self.max_age_ms, self.chunk_bytes)
    }

    /// Rebuilds the chunk index from the stored entries (recovery), in bounded memory: the
    /// store calls back once per entry, in offset order.
    ///
    /// # Errors
    /// The store read failed.
    pub fn restore(
        &self,
        positions: Vec<(String, u64)>,
        producers: Vec<(String, u64)>,
    ) -> Result<Option<u64>, crate::store::StoreError> {
        self.producers.lock().stored = producers
            .into_iter()
            .map(|(n, s)| (Arc::<str>::from(n), s))
            .collect();
        let mut st = self.state.lock();
        let mut first = true;
        self.ctx
            .store
            .scan_stream(self.queue_id, |offset, ts, size| {
                if first {
                    st.next = offset;
                    first = false;
                }
                self.index(&mut st, offset, ts, u64::from(size));
            })?;
        st.positions = positions
            .into_iter()
            .map(|(n, p)| (Arc::<str>::from(n), p))
            .collect();
        self.reserved.store(st.next, Ordering::Release);
        // A trim decided before a crash but not yet committed is decided again now.
        if let Some(max) = self.max_bytes {
            while st.bytes > max && st.chunks.len() > 1 {
                self.trim_front(&mut st);
            }
        }
        Ok(self.age_deadline(&st))
    }

    /// When the oldest chunk becomes old enough for `x-max-age` to trim it: the first
    /// millisecond its newest entry is older than the limit. `None` without an age limit, or
    /// with one chunk (the last chunk is never trimmed; a new one reports its deadline).
    fn age_deadline(&self, st: &State) -> Option<u64> {
        let age = self.max_age_ms?;
        if st.chunks.len() < 2 {
            return None;
        }
        st.chunks
            .front()
            .map(|c| c.last_ts.saturating_add(age).saturating_add(1))
    }

    /// Adds an entry to the chunk index and the totals. Returns whether it started a chunk.
    fn index(&self, st: &mut State, offset: u64, ts: u64, size: u64) -> bool {
        let started = match st.chunks.back_mut() {
            Some(c) if c.count < CHUNK_ENTRIES && c.bytes < self.chunk_bytes => {
                c.count += 1;
                c.bytes += size;
                c.last_ts = ts;
                false
            }
            _ => {
                st.chunks.push_back(Chunk {
                    first: offset,
                    count: 1,
                    bytes: size,
                    first_ts: ts,
                    last_ts: ts,
                });
                true
            }
        };
        st.bytes += size;
        st.next = offset + 1;
        started
    }

    /// The offset for the next publish of the batch being prepared (writer thread, before
    /// the commit, in batch order; [`Stream::append`] follows in the same order, and
    /// [`Stream::realign`] before the next batch).
    pub fn reserve(&self) -> u64 {
        self.reserved.fetch_add(1, Ordering::AcqRel)
    }

    /// Before the next batch: reservations start again at the next append, so the offsets a
    /// failed commit reserved (its publishes were never appended) are handed out again. After
    /// a commit that succeeded this changes nothing.
    pub fn realign(&self) {
        let next = self.state.lock().next;
        self.reserved.store(next, Ordering::Release);
        self.producers.lock().pending.clear();
    }

    /// Whether a publish from `name` numbered `sequence` is new (writer thread, before the
    /// commit, in batch order): it is unless the producer's last sequence, stored or taken
    /// earlier in this batch, is at or above it. A new one takes the sequence for the batch.
    pub fn admit_producer(&self, name: &Arc<str>, sequence: u64) -> bool {
        let mut p = self.producers.lock();
        let last = p.pending.get(name).or_else(|| p.stored.get(name)).copied();
        if last.is_some_and(|last| sequence <= last) {
            return false;
        }
        p.pending.insert(name.clone(), sequence);
        true
    }

    /// A publish from `name` numbered `sequence` was committed and appended.
    pub fn producer_stored(&self, name: &Arc<str>, sequence: u64) {
        let mut p = self.producers.lock();
        let last = p.stored.entry(name.clone()).or_insert(sequence);
        *last = (*last).max(sequence);
    }

    /// Appends a committed entry at the next offset (the one [`Stream::reserve`] gave its
    /// publish: both run in commit order), feeds consumers at the head, and
    /// trims whole chunks past `x-max-length-bytes`.
    pub fn append(&self, queue: &Arc<Queue>, ts: u64, message: Arc<Message>) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        let offset = st.next;
        let size = message.body.len() as u64;
        if self.index(&mut st, offset, ts, size) {
            // A new chunk may give the oldest one a retention deadline (the index keeps the
            // earliest, so this costs a lookup once per chunk, not per message).
            if let Some(at) = self.age_deadline(&st) {
                queue.schedule_stream_retention(at);
            }
        }
        st.tail.push_back((offset, ts, message));
        st.tail_bytes += size;
        while st.tail.len() > 1 && (st.tail_bytes > TAIL_BYTES || st.tail.len() > TAIL_ENTRIES) {
            if let Some((_, _, m)) = st.tail.pop_front() {
                st.tail_bytes -= m.body.len() as u64;
            }
        }
        if let Some(max) = self.max_bytes {
            while st.bytes > max && st.chunks.len() > 1 {
                self.trim_front(&mut st);
            }
        }
        queue.stats.published.fetch_add(1, Ordering::Relaxed);
        queue.counted();
        self.dispatch_locked(queue, &mut st);
    }

    /// Drops the oldest chunk: from memory now, from the store in the next commit.
    fn trim_front(&self, st: &mut State) {
        let Some(c) = st.chunks.pop_front() else {
            return;
        };
        st.bytes -= c.bytes;
        let first = st.first();
        while st.tail.front().is_some_and(|t| t.0 < first) {
            if let Some((_, _, m)) = st.tail.pop_front() {
                st.tail_bytes -= m.body.len() as u64;
            }
        }
        self.ctx
            .store
            .trim_stream_internal(self.queue_id, c.first, c.first + c.count);
    }

    /// Age retention, from the broker's ticker when the stream's deadline is due: drops
    /// whole chunks whose newest entry is older than `x-max-age`. The last chunk always stays
    /// (it holds the next offset). Returns the next deadline.
    pub fn tick(&self, now: u64) -> Option<u64> {
        let age = self.max_age_ms?;
        let mut st = self.state.lock();
        let cutoff = now.saturating_sub(age);
        while st.chunks.len() > 1 && st.chunks.front().is_some_and(|c| c.last_ts < cutoff) {
            self.trim_front(&mut st);
        }
        self.age_deadline(&st)
    }

    /// Attaches a consumer starting at `start` (`None`: a named consumer's stored position,
    /// else `next`).
    ///
    /// # Errors
    /// None yet; the signature matches `Queue::add_consumer`, whose refusals the consume path
    /// reports the same way.
    pub fn add_consumer(
        &self,
        queue: &Arc<Queue>,
        consumer: Arc<Consumer>,
        start: Option<StartAt>,
        name: Option<Arc<str>>,
    ) -> Result<(), String> {
        let mut st = self.state.lock();
        // A second consumer under an attached name is allowed: after a network failure the
        // new connection often arrives before the server has noticed the old one died. Both
        // then move the one position (the last settle wins).
        let stored = name.as_ref().and_then(|n| st.positions.get(n).copied());
        let start = match (start, stored) {
            (Some(s), _) => s,
            (None, Some(p)) => StartAt::Offset(p),
            (None, None) => StartAt::Next,
        };
        let first = st.first();
        let (next, skip_before_ts) = match start {
            StartAt::First => (first, 0),
            StartAt::Next => (st.next, 0),
            StartAt::Last => (st.chunks.back().map_or(st.next, |c| c.first), 0),
            StartAt::Offset(o) => (o.clamp(first, st.next), 0),
            StartAt::Timestamp(t) => (
                st.chunks
                    .iter()
                    .find(|c| c.last_ts >= t)
                    .map_or(st.next, |c| c.first),
                t,
            ),
        };
        if let Some(n) = &name {
            // A named consumer that starts elsewhere than its stored position moves it
            // there once it settles something; until then the stored one stands.
            st.positions.entry(n.clone()).or_insert(next);
        }
        st.readers.push(Reader {
            consumer,
            name,
            next,
            skip_before_ts,
            reading: false,
            outstanding: BTreeSet::new(),
        });
        self.dispatch_locked(queue, &mut st);
        Ok(())
    }

    /// Stops deliveries to a leaving consumer; once this returns no dispatch can hand it
    /// another (as `Queue::stop_consumer`).
    pub fn stop_consumer(&self, consumer: &Consumer) {
        let _st = self.state.lock();
        consumer.deactivate();
    }

    /// Detaches a consumer. A named one still holding unsettled deliveries (cancelled with
    /// `keep_unacked`) stays as an inactive reader until they are settled, so the acks that
    /// follow still move its position.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) {
        consumer.deactivate();
        self.state.lock().readers.retain(|r| {
            !Arc::ptr_eq(&r.consumer, consumer) || (r.name.is_some() && !r.outstanding.is_empty())
        });
    }

    /// Deliveries of `consumer` at `offsets` were settled. With `advance` (an ack, nack or
    /// reject) a named consumer's position moves to its lowest unsettled offset and is
    /// stored in the next group commit, with the acks; without (its connection or consumer
    /// ended) the position stays, so they are read again on resume.
    pub fn settled(
        &self,
        queue: &Arc<Queue>,
        consumer: Option<&Arc<Consumer>>,
        offsets: &[u64],
        advance: bool,
    ) {
        let Some(consumer) = consumer else { return };
        let mut st = self.state.lock();
        let State {
            readers, positions, ..
        } = &mut *st;
        if let Some(i) = readers
            .iter()
            .position(|r| Arc::ptr_eq(&r.consumer, consumer))
        {
            let r = &mut readers[i];
            for o in offsets {
                r.outstanding.remove(o);
            }
            if advance {
                if let Some(name) = &r.name {
                    let pos = r.outstanding.first().copied().unwrap_or(r.next);
                    let stored = positions.entry(name.clone()).or_insert(0);
                    if pos != *stored {
                        *stored = pos;
                        self.ctx
                            .store
                            .stream_position(self.queue_id, name.clone(), pos);
                    }
                }
            }
            // A detached reader kept for its last settles goes with the last of them.
            if !r.consumer.is_active() && r.outstanding.is_empty() {
                readers.remove(i);
            }
        }
        self.dispatch_locked(queue, &mut st);
    }

    /// Hands entries to consumers with credit.
    pub fn dispatch(&self, queue: &Arc<Queue>) {
        let mut st = self.state.lock();
        self.dispatch_locked(queue, &mut st);
    }

    fn dispatch_locked(&self, queue: &Arc<Queue>, st: &mut State) {
        if st.deleted || st.readers.is_empty() {
            return;
        }
        let first = st.first();
        let tail_first = st.tail_first();
        let end = st.next;
        let now = self.ctx.clock.now_ms();
        let State { readers, tail, .. } = st;
        for r in readers.iter_mut() {
            if r.reading || !r.consumer.is_active() {
                continue;
            }
            if r.next < first {
                r.next = first;
            }
            let before = r.next;
            while r.next < end && r.consumer.has_credit() {
                if r.next < tail_first {
                    self.start_read(queue, r);
                    break;
                }
                let Some((offset, ts, message)) = usize::try_from(r.next - tail_first)
                    .ok()
                    .and_then(|i| tail.get(i))
                else {
                    break;
                };
                r.next += 1;
                if *ts < r.skip_before_ts {
                    continue;
                }
                r.skip_before_ts = 0;
                self.deliver(queue, r, *offset, message.clone(), now);
            }
            self.note_no_ack_position(r, before);
        }
    }

    /// A no-ack named consumer has settled what it was sent: its position follows its
    /// cursor (stored with the next commit).
    fn note_no_ack_position(&self, r: &Reader, before: u64) {
        if r.consumer.no_ack && r.next != before {
            if let Some(name) = &r.name {
                self.ctx
                    .store
                    .stream_position(self.queue_id, name.clone(), r.next);
            }
        }
    }

    fn deliver(
        &self,
        queue: &Arc<Queue>,
        r: &mut Reader,
        offset: u64,
        message: Arc<Message>,
        now: u64,
    ) {
        r.consumer.on_sent();
        let entry = QueuedMessage {
            early: 0,
            id: offset,
            size: u32::try_from(message.body.len()).unwrap_or(u32::MAX),
            message: Some(message),
            delivery_count: 0,
            acquired_count: 0,
            stored: false,
            expires_at: 0,
            priority: 0,
        };
        let tracked = (!r.consumer.no_ack).then(|| Unacked {
            queue: queue.clone(),
            consumer: Some(r.consumer.clone()),
            entry: entry.clone(),
            delivered_at_ms: now,
        });
        if tracked.is_some() {
            r.outstanding.insert(offset);
        }
        // The consumer timeout holds for stream deliveries as for a classic queue's.
        let timeout_at = tracked.as_ref().and_then(|_| {
            consumer_timeout(
                r.consumer.timeout_ms,
                &queue.args,
                self.ctx.consumer_timeout,
            )
            .map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
        });
        let delivery_tag =
            r.consumer
                .session
                .record_delivery(tracked, timeout_at, &self.ctx.timers);
        queue.stats.delivered.fetch_add(1, Ordering::Relaxed);
        queue.counted();
        self.ctx.stats.count_delivery(false);
        let _ = r.consumer.session.outbound.send(Outbound::Deliver {
            consumer: r.consumer.clone(),
            delivery_tag,
            entry,
            stream_offset: Some(offset),
        });
    }

    /// Reads the next entries for a consumer behind the tail, on a blocking thread.
    fn start_read(&self, queue: &Arc<Queue>, r: &mut Reader) {
        r.reading = true;
        let c = &r.consumer;
        let credit = if c.no_ack || c.prefetch == 0 {
            READ_BATCH
        } else {
            usize::try_from(c.prefetch.saturating_sub(c.unacked())).unwrap_or(READ_BATCH)
        }
        .clamp(1, READ_BATCH);
        let from = r.next;
        let queue = queue.clone();
        let consumer = c.clone();
        let store = self.ctx.store.clone();
        let id = self.queue_id;
        self.ctx.runtime.spawn_blocking(move || {
            let read = store.read_stream(id, from, credit, READ_BATCH_BYTES);
            if let Some(s) = &queue.stream {
                s.finish_read(&queue, &consumer, from, read);
            }
        });
    }

    fn finish_read(
        &self,
        queue: &Arc<Queue>,
        consumer: &Arc<Consumer>,
        from: u64,
        read: Result<Vec<StreamRead>, crate::store::StoreError>,
    ) {
        let mut st = self.state.lock();
        let now = self.ctx.clock.now_ms();
        let tail_first = st.tail_first();
        let Some(i) = st
            .readers
            .iter()
            .position(|r| Arc::ptr_eq(&r.consumer, consumer))
        else {
            return;
        };
        let r = &mut st.readers[i];
        r.reading = false;
        if r.next != from {
            return;
        }
        let entries = match read {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(stream = %self.name, error = %e, "reading stream entries failed");
                return;
            }
        };
        if entries.is_empty() {
            // Trimmed meanwhile (the cursor then moves to the first entry) or never stored:
            // either way what remains is at the tail.
            r.next = r.next.max(tail_first);
        }
        let before = r.next;
        for e in entries {
            if e.offset < r.next {
                continue;
            }
            if !r.consumer.is_active() || !r.consumer.has_credit() {
                break;
            }
            r.next = e.offset + 1;
            if e.timestamp < r.skip_before_ts {
                continue;
            }
            r.skip_before_ts = 0;
            self.deliver(queue, r, e.offset, e.message, now);
        }
        let r = &st.readers[i];
        self.note_no_ack_position(r, before);
        self.dispatch_locked(queue, &mut st);
    }

    /// Entries held and attached consumers, for declare-ok and listings.
    pub fn counts(&self) -> (u64, u64, u32) {
        let st = self.state.lock();
        let attached = st.readers.iter().filter(|r| r.consumer.is_active()).count();
        (
            st.next - st.first(),
            st.bytes,
            u32::try_from(attached).unwrap_or(u32::MAX),
        )
    }

    /// Its consumers, for listings.
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.state
            .lock()
            .readers
            .iter()
            .filter(|r| r.consumer.is_active())
            .map(|r| r.consumer.clone())
            .collect()
    }

    /// What `stream info` and `stream consumers` show.
    pub fn summary(&self) -> StreamSummary {
        let st = self.state.lock();
        let named = st
            .positions
            .iter()
            .map(|(n, p)| {
                let attached = st
                    .readers
                    .iter()
                    .any(|r| r.name.as_ref() == Some(n) && r.consumer.is_active());
                (n.to_string(), *p, attached)
            })
            .collect();
        StreamSummary {
            first_offset: st.first(),
            next_offset: st.next,
            first_timestamp: st.chunks.front().map_or(0, |c| c.first_ts),
            last_timestamp: st.chunks.back().map_or(0, |c| c.last_ts),
            bytes: st.bytes,
            chunks: st.chunks.len() as u64,
            consumers: u32::try_from(st.readers.iter().filter(|r| r.consumer.is_active()).count())
                .unwrap_or(u32::MAX),
            named,
            producers: self.producers_sorted(),
        }
    }

    fn producers_sorted(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .producers
            .lock()
            .stored
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect();
        out.sort();
        out
    }

    /// Marks the stream deleted; returns its consumers and the offsets `first..next` whose
    /// stored entries are to be removed.
    pub fn delete(&self) -> (Vec<Arc<Consumer>>, u64, u64) {
        let mut st = self.state.lock();
        st.deleted = true;
        let range = (st.first(), st.next);
        st.tail.clear();
        st.chunks.clear();
        let consumers: Vec<Arc<Consumer>> = st.readers.drain(..).map(|r| r.consumer).collect();
        for c in &consumers {
            c.deactivate();
        }
        (consumers, range.0, range.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::{MemoryBodies, QueueSettings};
    use crate::clock::ManualClock;

    const T0: u64 = 1_700_000_000_000;

    /// A stream queue on a [`ManualClock`] with a real store in a temporary directory.
    fn stream(args: &[(&str, FieldValue)]) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Queue>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(T0));
        let hooks = crate::broker::commit::Hooks::new(clock.clone());
        let (store, _) = crate::store::Store::open_with(dir.path(), hooks).expect("store");
        let (dead_letters, _) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Arc::new(QueueContext {
            store,
            bodies: Arc::new(MemoryBodies::default()),
            runtime: tokio::runtime::Handle::current(),
            window_bytes: 1 << 20,
            dead_letters,
            stats: Arc::new(crate::broker::BrokerStats::default()),
            clock: clock.clone(),
            timers: Arc::new(crate::broker::timers::Timers::default()),
            consumer_timeout: None,
        });
        let mut arguments: FieldTable = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        arguments.insert("x-queue-type".into(), FieldValue::String("stream".into()));
        let parsed = QueueArgs::parse(&arguments).expect("valid arguments");
        let q = Queue::new(
            QueueSettings {
                id: 1,
                name: "s".into(),
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments,
                args: parsed,
            },
            ctx,
        );
        (dir, clock, q)
    }

    fn append(q: &Arc<Queue>, at: u64, body: &'static [u8]) -> u64 {
        let s = q.stream.as_ref().expect("a stream");
        let offset = s.reserve();
        s.append(
            q,
            at,
            Arc::new(Message {
                write: Default::default(),
                exchange: String::new(),
                routing_key: "s".into(),
                properties: Default::default(),
                body: bytes::Bytes::from_static(body),
            }),
        );
        offset
    }

    #[tokio::test]
    async fn chunks_close_by_bytes_and_size_retention_drops_whole_old_chunks() {
        let (_dir, _clock, q) = stream(&[
            ("x-stream-max-segment-size-bytes", FieldValue::I32(10)),
            ("x-max-length-bytes", FieldValue::I32(25)),
        ]);
        let s = q.stream.as_ref().expect("a stream");
        // 5-byte bodies: two per 10-byte chunk.
        for i in 0..4 {
            assert_eq!(append(&q, T0, b"12345"), i);
        }
        let sum = s.summary();
        assert_eq!(
            (sum.first_offset, sum.next_offset, sum.chunks, sum.bytes),
            (0, 4, 2, 20)
        );
        // 30 bytes > 25: the oldest chunk (offsets 0 and 1) goes, leaving 20.
        append(&q, T0, b"12345");
        append(&q, T0, b"12345");
        let sum = s.summary();
        assert_eq!((sum.first_offset, sum.next_offset, sum.bytes), (2, 6, 20));
        assert_eq!(q.counts().ready, 4);
    }

    #[tokio::test]
    async fn age_retention_drops_chunks_whose_newest_entry_is_too_old_but_never_the_last() {
        let (_dir, _clock, q) = stream(&[
            ("x-stream-max-segment-size-bytes", FieldValue::I32(2)),
            ("x-max-age", FieldValue::String("10s".into())),
        ]);
        let s = q.stream.as_ref().expect("a stream");
        append(&q, T0, b"ab"); // chunk 0: offset 0
        append(&q, T0 + 5_000, b"ab"); // chunk 1: offset 1
        append(&q, T0 + 20_000, b"ab"); // chunk 2: offset 2
        s.tick(T0 + 10_000);
        assert_eq!(s.summary().first_offset, 0, "exactly max-age old is kept");
        s.tick(T0 + 15_001);
        assert_eq!(s.summary().first_offset, 2);
        s.tick(T0 + 1_000_000);
        assert_eq!(s.summary().first_offset, 2, "the last chunk stays");
    }

    #[tokio::test]
    async fn realign_hands_unappended_reservations_out_again() {
        let (_dir, _clock, q) = stream(&[]);
        let s = q.stream.as_ref().expect("a stream");
        assert_eq!(append(&q, T0, b"a"), 0);
        // A batch reserved two offsets and failed: nothing was appended.
        assert_eq!((s.reserve(), s.reserve()), (1, 2));
        s.realign();
        assert_eq!(append(&q, T0, b"b"), 1);
        assert_eq!(s.summary().next_offset, 2);
    }

    #[tokio::test]
    async fn a_producer_advances_only_with_what_was_stored() {
        let (_dir, _clock, q) = stream(&[]);
        let s = q.stream.as_ref().expect("a stream");
        let p: Arc<str> = "p".into();
        assert!(s.admit_producer(&p, 1));
        assert!(
            !s.admit_producer(&p, 1),
            "the same number later in the batch"
        );
        s.producer_stored(&p, 1);
        s.realign();
        assert!(!s.admit_producer(&p, 1), "stored");
        assert!(s.admit_producer(&p, 2));
        // That batch's commit failed: 2 was never stored, so its retry is new.
        s.realign();
        assert!(s.admit_producer(&p, 2));
        assert!(
            s.admit_producer(&"other".into(), 1),
            "producers are independent"
        );
        assert_eq!(s.summary().producers, [("p".to_owned(), 1)]);
    }

    #[test]
    fn producer_headers_need_both_and_are_checked() {
        use warren_protocol::Headers;
        let h = |pairs: &[(&str, FieldValue)]| -> Headers {
            let t: FieldTable = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            Headers::from(&t)
        };
        let name = |n: &str| (X_PRODUCER_NAME, FieldValue::String(n.into()));
        assert_eq!(producer_of(&Headers::new()).ok(), Some(None));
        assert_eq!(producer_of(&h(&[name("p")])).ok(), Some(None));
        assert_eq!(
            producer_of(&h(&[name("p"), (X_PRODUCER_SEQUENCE, FieldValue::U8(3))])).ok(),
            Some(Some(("p".into(), 3)))
        );
        assert!(producer_of(&h(&[name(""), (X_PRODUCER_SEQUENCE, FieldValue::I32(1))])).is_err());
        assert!(producer_of(&h(&[(X_PRODUCER_SEQUENCE, FieldValue::I32(-1))])).is_err());
        assert!(producer_of(&h(&[(X_PRODUCER_SEQUENCE, FieldValue::String("1".into()))])).is_err());
    }

    #[test]
    fn rfc3339_times_parse_to_epoch_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T10:00:00.250Z"),
            Some(1_796_032_800_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T11:00:00+01:00"),
            Some(1_796_032_800_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-30"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn stream_offsets_parse_as_rabbitmq_spells_them() {
        let t = |v: FieldValue| -> FieldTable {
            [(X_STREAM_OFFSET.to_owned(), v)].into_iter().collect()
        };
        assert_eq!(
            parse_start(&t(FieldValue::String("first".into()))),
            Ok(Some(StartAt::First))
        );
        assert_eq!(
            parse_start(&t(FieldValue::I32(42))),
            Ok(Some(StartAt::Offset(42)))
        );
        assert_eq!(
            parse_start(&t(FieldValue::Timestamp(10))),
            Ok(Some(StartAt::Timestamp(10_000)))
        );
        assert!(parse_start(&t(FieldValue::I32(-1))).is_err());
        assert!(parse_start(&t(FieldValue::String("later".into()))).is_err());
        assert_eq!(parse_start(&FieldTable::new()), Ok(None));
    }
}
