//! The AMQP connection's event task: what the broker tells the connection (returns,
//! confirms, alarms), from the session's event channel and its reply sink, written as AMQP
//! methods on the channel each belongs to.
//!
//! A publish's request id carries its channel, the channel's generation and its publish
//! sequence number ([`request_id`]), so a confirm finds its channel without a lookup table,
//! and a confirm for a channel that was closed (and perhaps opened again since) is dropped
//! instead of reaching the wrong one. Each confirm (or quiet settlement) gives its publish
//! permit back, as the native writer does, so a client that reads no confirms is held to
//! [`MAX_PUBLISHES_IN_FLIGHT`](crate::broker::session::MAX_PUBLISHES_IN_FLIGHT).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, connection, AMQPClass};
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedSender;

use super::content::{encode_with_content, put_content};
use super::writer::Out;
use super::{codec, short_string, wire};
use crate::broker::event::{Confirm, Event, RequestId};
use crate::broker::outbox::OutboxReceiver;
use crate::broker::session::{Outbound, Session};
use crate::stop::Stop;

/// What the reader and the event task share: the channels open now and the consumers on
/// them. The reader opens and closes channels and starts consumers; the event task drops
/// what belongs to a channel no longer open and numbers deliveries per channel.
pub(super) type Live = Arc<Mutex<Shared>>;

/// See [`Live`].
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The open channels.
    pub channels: HashMap<u16, ChanShared>,
    /// Each consumer's channel (consumer tags are unique on a connection).
    pub consumers: HashMap<Arc<str>, u16>,
}

/// One open channel's part of [`Shared`].
#[derive(Debug, Default)]
pub(super) struct ChanShared {
    /// Tells this channel from an earlier one of the same number.
    pub generation: u8,
    /// The last delivery tag given out on the channel (AMQP's tags are per channel).
    pub next_tag: u64,
    /// Each unsettled delivery's channel tag, to its tag in the session's single tag space.
    pub tags: BTreeMap<u64, u64>,
    /// How many times `basic.recover` took the channel's unsettled deliveries back: a
    /// delivery numbered before the last one and not yet written is not written.
    pub recoveries: u32,
    /// A `tx.commit` waiting for its publishes' verdicts (`transaction`).
    pub committing: Option<super::transaction::Committing>,
}

const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The request id of a publish on `channel` (of `generation`) with confirm sequence number
/// `seq` (0: the channel is not in confirm mode).
pub(super) fn request_id(channel: u16, generation: u8, seq: u64) -> RequestId {
    (u64::from(channel) << 48) | (u64::from(generation) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// Whether a publish's request id has a confirm sequence number (its channel is in
/// confirm mode).
pub(super) fn wants_confirm(id: RequestId) -> bool {
    id & SEQ_MASK != 0
}

/// The channel, generation and sequence number a request id carries.
pub(super) fn split(id: RequestId) -> (u16, u8, u64) {
    // The shifts leave exactly 16 and 8 bits: the casts keep every bit.
    #[allow(clippy::cast_possible_truncation)]
    ((id >> 48) as u16, (id >> SEQ_BITS) as u8, id & SEQ_MASK)
}

/// What the event task needs.
pub(super) struct EventTask {
    /// The connection's broker session (its reply sink and publish permits).
    pub session: Arc<Session>,
    /// The session's event channel.
    pub rx: OutboxReceiver,
    /// The connection's writer.
    pub out: UnboundedSender<Out>,
    /// Shared with the reader.
    pub live: Live,
    /// Negotiated in `tune-ok`: content is split into frames of at most this.
    pub frame_max: u32,
    /// The client advertised the `connection.blocked` capability.
    pub blocked_capable: bool,
    /// The client advertised `consumer_cancel_notify`.
    pub cancel_notify: bool,
}

/// What a batch of events becomes: frames for the writer, written into one buffer and
/// handed over once, and the confirms of the batch, coalesced before they are written.
#[derive(Default)]
struct Batch {
    /// The frames so far.
    bytes: Vec<u8>,
    /// Where each run of frames of one channel starts in `bytes`, so the frames of a
    /// channel closed (or deliveries of one recovered) while the batch was built can be
    /// left out.
    runs: Vec<Run>,
    /// The confirms of the batch: channel, generation, sequence number, nack.
    confirms: Vec<(u16, u8, u64, bool)>,
}

/// See [`Batch::runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    channel: u16,
    generation: u8,
    /// For deliveries to be acked: the channel's `basic.recover` count when they were
    /// numbered. A recover since took their tags back and requeued them.
    recoveries: Option<u32>,
    start: usize,
}

impl Batch {
    /// Continues or starts a run of frames for `channel` (of `generation`; channel 0 is
    /// the connection); `recoveries` for deliveries to be acked, see [`Run`].
    fn run(&mut self, channel: u16, generation: u8, recoveries: Option<u32>) -> &mut Vec<u8> {
        let same =
            |r: &Run| (r.channel, r.generation, r.recoveries) == (channel, generation, recoveries);
        if !self.runs.last().is_some_and(same) {
            self.runs.push(Run {
                channel,
                generation,
                recoveries,
                start: self.bytes.len(),
            });
        }
        &mut self.bytes
    }
}

/// Whether a run's frames may still be written: its channel is the one open now, and for
/// deliveries, no `basic.recover` has taken their tags back since they were numbered.
fn still_wanted(shared: &Shared, run: &Run) -> bool {
    run.channel == 0
        || shared.channels.get(&run.channel).is_some_and(|c| {
            c.generation == run.generation && run.recoveries.is_none_or(|n| n == c.recoveries)
        })
}

/// A channel's publisher confirms so far, for coalescing: a `basic.ack` with
/// `multiple=true` may only cover sequence numbers that are all confirmed.
#[derive(Debug, Default)]
struct Confirmed {
    /// The channel's generation these belong to.
    generation: u8,
    /// Every sequence number up to this one has been confirmed (acked or nacked).
    through: u64,
    /// Sequence numbers above `through` already confirmed one by one.
    above: std::collections::BTreeSet<u64>,
}

/// Above this many confirms out of order on one channel, stop remembering them: the channel
/// gets its confirms one by one from then on, correct if not coalesced.
const MAX_CONFIRMS_OUT_OF_ORDER: usize = 1 << 16;

impl EventTask {
    /// Runs until `stop` is cancelled (the connection ended) or the session's channel closes.
    pub(super) async fn run(mut self, stop: Stop) {
        let mut replies = Vec::new();
        let mut batch = Batch::default();
        let mut confirmed: HashMap<u16, Confirmed> = HashMap::new();
        loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                m = self.rx.recv() => Some(m),
                () = self.session.replies.notified() => None,
            };
            let mut settled = 0usize;
            // Events first: a return goes before its publish's confirm (the broker sends
            // the confirm of an unroutable message the same way, after it).
            let mut next = first;
            loop {
                let m = match next.take() {
                    Some(m) => m,
                    None => match self.rx.try_recv() {
                        Some(m) => m,
                        None => break,
                    },
                };
                match m {
                    Outbound::Event { request_id, event } => {
                        self.event(&mut batch, request_id, event, &mut settled);
                    }
                    Outbound::Deliver {
                        consumer,
                        delivery_tag,
                        entry,
                        stream_offset,
                    } => {
                        self.deliver(&mut batch, &consumer, delivery_tag, &entry, stream_offset);
                        consumer.on_written();
                    }
                }
            }
            self.session.replies.drain_into(&mut replies);
            for (request_id, event) in replies.drain(..) {
                self.event(&mut batch, request_id, event, &mut settled);
            }
            write_confirms(&mut batch, &mut confirmed);
            self.flush(&mut batch);
            if settled > 0 {
                self.session.publish_permits.add_permits(settled);
            }
        }
    }

    /// Hands the batch's frames to the writer, leaving out those of channels closed while
    /// it was built. The check and the hand-over happen under the lock the reader closes
    /// channels with, so no frame of a closed channel follows its `close-ok`.
    fn flush(&self, batch: &mut Batch) {
        if batch.bytes.is_empty() {
            batch.runs.clear();
            return;
        }
        let shared = self.live.lock();
        let bytes = if batch.runs.iter().all(|r| still_wanted(&shared, r)) {
            std::mem::take(&mut batch.bytes)
        } else {
            let mut kept = Vec::with_capacity(batch.bytes.len());
            for (i, run) in batch.runs.iter().enumerate() {
                let end = batch.runs.get(i + 1).map_or(batch.bytes.len(), |r| r.start);
                if still_wanted(&shared, run) {
                    kept.extend_from_slice(&batch.bytes[run.start..end]);
                }
            }
            batch.bytes.clear();
            kept
        };
        if !bytes.is_empty() {
            let _ = self.out.send(Out::Frame(bytes));
        }
        drop(shared);
        batch.runs.clear();
    }

    fn generation(&self, channel: u16) -> Option<u8> {
        self.live
            .lock()
            .channels
            .get(&channel)
            .map(|c| c.generation)
    }

    /// A delivery, numbered on its consumer's channel. One for a channel closed meanwhile
    /// is dropped: closing it cancelled the consumer, which requeued it.
    fn deliver(
        &self,
        batch: &mut Batch,
        consumer: &crate::broker::consumer::Consumer,
        session_tag: u64,
        entry: &crate::message::QueuedMessage,
        stream_offset: Option<u64>,
    ) {
        let Some(message) = &entry.message else {
            tracing::error!(
                id = entry.id,
                "a delivery without its body reached the AMQP writer"
            );
            return;
        };
        let (channel, generation, tag, recoveries) = {
            let mut shared = self.live.lock();
            let Some(&channel) = shared.consumers.get(&consumer.tag) else {
                return;
            };
            let Some(ch) = shared.channels.get_mut(&channel) else {
                return;
            };
            ch.next_tag += 1;
            let tag = ch.next_tag;
            let recoveries = if consumer.no_ack {
                None
            } else {
                ch.tags.insert(tag, session_tag);
                Some(ch.recoveries)
            };
            (channel, ch.generation, tag, recoveries)
        };
        let out = batch.run(channel, generation, recoveries);
        wire::put_deliver(
            out,
            channel,
            &consumer.tag,
            tag,
            entry.acquired_count > 0,
            &message.exchange,
            &message.routing_key,
        );
        match stream_offset {
            None => put_content(out, channel, message, self.frame_max),
            // RabbitMQ tells an AMQP stream consumer each message's offset in the
            // `x-stream-offset` header (Warren's own protocol has a field for it).
            Some(offset) => {
                let mut with_offset = crate::message::Message::clone(message);
                with_offset.properties.headers.insert(
                    "x-stream-offset",
                    warren_protocol::FieldValue::Int(i64::try_from(offset).unwrap_or(i64::MAX)),
                );
                put_content(out, channel, &with_offset, self.frame_max);
            }
        }
    }

    /// A method without content; `generation` `None`: on channel 0, or on whatever
    /// generation of the channel is open now.
    fn send(&self, batch: &mut Batch, channel: u16, generation: Option<u8>, method: AMQPClass) {
        let generation = match generation {
            Some(g) => g,
            None if channel == 0 => 0,
            None => match self.generation(channel) {
                Some(g) => g,
                None => return,
            },
        };
        let bytes = codec::encode(&AMQPFrame::Method(channel, method));
        batch
            .run(channel, generation, None)
            .extend_from_slice(&bytes);
    }

    fn event(&self, batch: &mut Batch, request_id: RequestId, event: Event, settled: &mut usize) {
        if super::transaction::is_tx(split(request_id).2) {
            // What the batch holds for the committing channel (a return of one of its
            // publishes) goes out before the verdict can let the reader send `commit-ok`.
            self.flush(batch);
        }
        if let Some(publish) = super::transaction::on_event(&self.live, request_id, &event) {
            *settled += usize::from(publish);
            return;
        }
        let (channel, generation, seq) = split(request_id);
        match event {
            Event::Settled => *settled += 1,
            Event::Confirm(confirm) => {
                *settled += 1;
                if seq == 0 {
                    return;
                }
                let nack = match confirm {
                    Confirm::Ack | Confirm::Duplicate => false,
                    Confirm::Nack { code, reason } => {
                        tracing::info!(connection = self.session.id, channel, seq, code = code.as_u16(), %reason, "AMQP publish nacked");
                        true
                    }
                };
                batch.confirms.push((channel, generation, seq, nack));
            }
            Event::Returned {
                message,
                code,
                text,
            } => {
                let method = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: code.as_u16(),
                    reply_text: short_string(&text),
                    exchange: short_string(&message.exchange),
                    routing_key: short_string(&message.routing_key),
                }));
                let bytes = encode_with_content(channel, method, &message, self.frame_max);
                batch
                    .run(channel, generation, None)
                    .extend_from_slice(&bytes);
            }
            Event::Blocked { reason } => {
                if self.blocked_capable {
                    self.send(
                        batch,
                        0,
                        None,
                        AMQPClass::Connection(connection::AMQPMethod::Blocked(
                            connection::Blocked {
                                reason: short_string(&reason),
                            },
                        )),
                    );
                }
            }
            Event::Unblocked => {
                if self.blocked_capable {
                    self.send(
                        batch,
                        0,
                        None,
                        AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                            connection::Unblocked {},
                        )),
                    );
                }
            }
            Event::ConsumeOk { consumer_tag } => {
                // A consume with `nowait` asked for no reply (sequence number 0).
                if seq != 0 {
                    self.send(
                        batch,
                        channel,
                        Some(generation),
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                            consumer_tag: short_string(&consumer_tag),
                        })),
                    );
                }
            }
            Event::ConsumerCancelled {
                consumer_tag,
                reason,
                ..
            } => {
                let channel = self.live.lock().consumers.remove(consumer_tag.as_str());
                tracing::info!(connection = self.session.id, consumer = %consumer_tag, %reason, "AMQP consumer cancelled by the server");
                if let (Some(channel), true) = (channel, self.cancel_notify) {
                    self.send(
                        batch,
                        channel,
                        None,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: short_string(&consumer_tag),
                            nowait: true,
                        })),
                    );
                }
            }
            other => {
                tracing::debug!(connection = self.session.id, event = ?other, "AMQP event not sent");
            }
        }
    }
}

/// Writes the batch's publisher confirms, coalesced as RabbitMQ does: per channel, the
/// nacks one by one, then the acks that, with everything confirmed before, complete a
/// prefix of the sequence numbers as one `basic.ack` with `multiple=true` up to the highest
/// of them, and the rest one by one.
fn write_confirms(batch: &mut Batch, confirmed: &mut HashMap<u16, Confirmed>) {
    if batch.confirms.is_empty() {
        return;
    }
    let mut confirms = std::mem::take(&mut batch.confirms);
    // By channel and generation, in the order they came within each (a stable sort).
    confirms.sort_by_key(|&(channel, generation, _, _)| (channel, generation));
    for group in confirms.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (channel, generation) = (group[0].0, group[0].1);
        let track = confirmed.entry(channel).or_default();
        if track.generation != generation {
            *track = Confirmed {
                generation,
                ..Confirmed::default()
            };
        }
        let out = batch.run(channel, generation, None);
        for &(_, _, seq, nack) in group {
            if nack {
                wire::put_confirm(out, channel, seq, false, true);
                track.above.insert(seq);
            }
        }
        let mut acks: Vec<u64> = group.iter().filter(|c| !c.3).map(|c| c.2).collect();
        acks.sort_unstable();
        track.above.extend(acks.iter().copied());
        while track.above.first() == Some(&(track.through + 1)) {
            track.above.pop_first();
            track.through += 1;
        }
        let covered = acks.partition_point(|&seq| seq <= track.through);
        if let Some(&last) = acks[..covered].last() {
            wire::put_confirm(out, channel, last, covered > 1, false);
        }
        for &seq in &acks[covered..] {
            wire::put_confirm(out, channel, seq, false, false);
        }
        if track.above.len() > MAX_CONFIRMS_OUT_OF_ORDER {
            // Never coalesce on this channel again: `through` cannot pass a gap that
            // stays open, and remembering more would grow without bound.
            track.above.clear();
            track.through = u64::MAX;
        }
    }
    batch.confirms = confirms;
    batch.confirms.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with(channel: u16, generation: u8, recoveries: u32) -> Shared {
        let mut shared = Shared::default();
        shared.channels.insert(
            channel,
            ChanShared {
                generation,
                recoveries,
                ..ChanShared::default()
            },
        );
        shared
    }

    #[test]
    fn runs_of_one_channel_and_kind_are_merged_and_others_start_anew() {
        let mut batch = Batch::default();
        batch.run(1, 0, Some(0)).push(1);
        batch.run(1, 0, Some(0)).push(2);
        batch.run(1, 0, None).push(3);
        batch.run(2, 0, None).push(4);
        let starts: Vec<usize> = batch.runs.iter().map(|r| r.start).collect();
        assert_eq!(starts, [0, 2, 3]);
    }

    #[test]
    fn frames_of_a_closed_channel_or_deliveries_taken_back_by_recover_are_not_written() {
        let run = |channel, generation, recoveries| Run {
            channel,
            generation,
            recoveries,
            start: 0,
        };
        let shared = shared_with(1, 3, 2);
        assert!(still_wanted(&shared, &run(1, 3, None)), "a confirm");
        assert!(
            still_wanted(&shared, &run(1, 3, Some(2))),
            "a delivery since the recover"
        );
        assert!(
            !still_wanted(&shared, &run(1, 3, Some(1))),
            "numbered before the recover"
        );
        assert!(
            !still_wanted(&shared, &run(1, 2, None)),
            "an earlier channel 1"
        );
        assert!(!still_wanted(&shared, &run(5, 0, None)), "a closed channel");
        assert!(still_wanted(&shared, &run(0, 0, None)), "the connection");
    }

    #[test]
    fn confirms_coalesce_only_over_a_confirmed_prefix() {
        let mut batch = Batch::default();
        let mut confirmed = HashMap::new();
        // 1, 2, 4 acked, 3 nacked... in one batch; then 6 alone; then 5.
        batch.confirms = vec![
            (1, 0, 2, false),
            (1, 0, 1, false),
            (1, 0, 4, false),
            (1, 0, 3, true),
        ];
        write_confirms(&mut batch, &mut confirmed);
        batch.confirms = vec![(1, 0, 6, false)];
        write_confirms(&mut batch, &mut confirmed);
        batch.confirms = vec![(1, 0, 5, false)];
        write_confirms(&mut batch, &mut confirmed);
        let mut expected = Vec::new();
        wire::put_confirm(&mut expected, 1, 3, false, true);
        wire::put_confirm(&mut expected, 1, 4, true, false);
        wire::put_confirm(&mut expected, 1, 6, false, false);
        wire::put_confirm(&mut expected, 1, 5, false, false);
        assert_eq!(batch.bytes, expected);
        assert_eq!(confirmed[&1].through, 6);
    }
}
