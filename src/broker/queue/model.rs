//! A property test of [`QueueCore`]: random sequences of operations (enqueue, consumers
//! coming and going, dispatch, get, ack, nack and reject with and without requeue and delay,
//! time passing, refills completing) run against the state machine and against a small reference
//! model of where each message should be, checking after every step that
//!
//! - every message is in exactly one place: ready, delayed, unacked (by a consumer or a
//!   get), or gone — acked, delivered no-ack, dead-lettered with a reason (expired, maxlen,
//!   rejected, delivery_limit) or refused by `reject-publish` overflow;
//! - the ready list is the model's, in the model's order: FIFO, with redeliveries at the
//!   head in id order; first deliveries go out in id order. In a priority queue
//!   (`x-max-priority`) all of that holds within each priority, and higher priorities go
//!   first (a message's priority above the max counts as the max); `drop-head` drops the
//!   head, which is the highest priority, as RabbitMQ does;
//! - no consumer ever holds more unacked deliveries than its prefetch;
//! - with `x-single-active-consumer`, deliveries go only to the longest-attached consumer;
//! - dispatch stops only when no consumer has credit, the queue is empty, or its head is
//!   paged out (with a refill asked for);
//! - what is delivered is neither expired nor paged out, and stored no-ack deliveries (and
//!   only those) remove their rows; stored requeues (and only those) update theirs;
//! - nothing is dead-lettered for `delivery_limit` within the limit, and only a failure
//!   (reject, lost connection) reaches it;
//! - each message's failure count (`x-delivery-count`) and acquired count
//!   (`x-acquired-count`) are the model's: a failure raises both, a release (nack, consumer
//!   timeout, cancel) only the acquired count; stored entries write the counts they carry;
//! - the next deadline the core reports (for the broker's timer index) is never later than
//!   the first expiry or delayed release a tick would carry out.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;

use super::settle::Return;
use super::state::{ConsumerSlot, Effects, QueueCore};
use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::queue_args::{Overflow, QueueArgs};
use crate::clock::LazyNow;
use crate::message::{Message, QueuedMessage};

/// A test consumer: its index in the harness and whether it acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tc(usize, bool);

impl ConsumerSlot for Tc {
    fn no_ack(&self) -> bool {
        self.1
    }
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        ttl: Option<u64>,
        stored: bool,
        priority: Option<u8>,
    },
    AddConsumer {
        prefetch: u32,
        no_ack: bool,
    },
    /// A consumer goes: its connection lost (`failed`), or cancelled or timed out.
    RemoveConsumer {
        pick: usize,
        failed: bool,
    },
    Get {
        no_ack: bool,
    },
    Ack(usize),
    /// A nack, or with `reject` a reject (a failure).
    Nack {
        pick: usize,
        requeue: bool,
        reject: bool,
        delay: Option<u64>,
    },
    Advance(u64),
    /// Time passes with no tick (the shell reads the clock at every change).
    Clock(u64),
    FinishRefill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::option::of(1u64..400), any::<bool>(), prop::option::of(0u8..6))
            .prop_map(|(ttl, stored, priority)| Op::Enqueue { ttl, stored, priority }),
        1 => (0u32..4, prop::bool::weighted(0.2))
            .prop_map(|(prefetch, no_ack)| Op::AddConsumer { prefetch, no_ack }),
        1 => (any::<usize>(), any::<bool>())
            .prop_map(|(pick, failed)| Op::RemoveConsumer { pick, failed }),
        1 => any::<bool>().prop_map(|no_ack| Op::Get { no_ack }),
        3 => any::<usize>().prop_map(Op::Ack),
        3 => (any::<usize>(), any::<bool>(), any::<bool>(), prop::option::of(1u64..300))
            .prop_map(|(pick, requeue, reject, delay)| Op::Nack { pick, requeue, reject, delay }),
        2 => (0u64..250).prop_map(Op::Advance),
        1 => (0u64..100).prop_map(Op::Clock),
        2 => Just(Op::FinishRefill),
    ]
}

/// Queue arguments; a priority queue (max 1 to 3, below the priorities messages carry)
/// when `priority`.
fn args(priority: bool) -> impl Strategy<Value = QueueArgs> {
    (
        if priority {
            (1u8..4).prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        },
        prop::option::of(0u32..3),
        prop::option::of(prop::collection::vec(1u64..300, 1..3)),
        prop::option::of(1u64..6),
        prop_oneof![
            Just(Overflow::DropHead),
            Just(Overflow::RejectPublish),
            Just(Overflow::RejectPublishDlx)
        ],
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(
                max_priority,
                delivery_limit,
                retry_backoff_ms,
                max_length,
                overflow,
                single_active_consumer,
            )| {
                QueueArgs {
                    max_priority,
                    delivery_limit,
                    retry_backoff_ms,
                    max_length,
                    overflow,
                    single_active_consumer,
                    ..QueueArgs::default()
                }
            },
        )
}

/// Where the model says a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Acked,
    NoAck,
    Dead(DeadLetterReason),
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct M {
    id: u64,
    expires_at: u64,
    /// Failures (`x-delivery-count`).
    count: u32,
    /// Acquisitions given back (`x-acquired-count`).
    acquired: u32,
    /// Its level: 0 in a plain queue, its priority capped at the max in a priority queue.
    priority: u8,
}

/// The reference model: where every message should be, kept the simplest way.
#[derive(Debug, Default)]
struct Model {
    /// Head first: by priority, highest first, then in queue order.
    ready: VecDeque<M>,
    delayed: BTreeMap<(u64, u64), M>,
}

impl Model {
    /// A new message: behind everything of its priority or higher.
    fn push_back(&mut self, m: M) {
        let at = self
            .ready
            .iter()
            .position(|x| x.priority < m.priority)
            .unwrap_or(self.ready.len());
        self.ready.insert(at, m);
    }

    /// A redelivery: ahead of everything of its priority or lower.
    fn push_front(&mut self, m: M) {
        let at = self
            .ready
            .iter()
            .position(|x| x.priority <= m.priority)
            .unwrap_or(self.ready.len());
        self.ready.insert(at, m);
    }
}

struct Consumer {
    tc: Tc,
    prefetch: u32,
    unacked: Vec<QueuedMessage>,
    active: bool,
}

struct Harness {
    args: QueueArgs,
    core: QueueCore<Tc>,
    fx: Effects<Tc>,
    model: Model,
    now: u64,
    next_id: u64,
    consumers: Vec<Consumer>,
    /// Unacked `get`s.
    got: Vec<QueuedMessage>,
    /// The store's message rows (bodies), by id.
    bodies: HashMap<u64, Arc<Message>>,
    pending_refill: Option<Vec<u64>>,
    gone: HashMap<u64, Gone>,
    /// The last first delivery's id, by priority.
    last_first_delivery: HashMap<u8, u64>,
}

impl Harness {
    fn new(args: QueueArgs) -> Harness {
        Harness {
            core: QueueCore::new(args.clone(), 3),
            args,
            fx: Effects::default(),
            model: Model::default(),
            now: 1_000,
            next_id: 1,
            consumers: Vec::new(),
            got: Vec::new(),
            bodies: HashMap::new(),
            pending_refill: None,
            gone: HashMap::new(),
            last_first_delivery: HashMap::new(),
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Enqueue {
                ttl,
                stored,
                priority,
            } => self.enqueue(ttl, stored, priority)?,
            Op::AddConsumer { prefetch, no_ack } => {
                let tc = Tc(self.consumers.len(), no_ack);
                self.consumers.push(Consumer {
                    tc,
                    prefetch,
                    unacked: Vec::new(),
                    active: true,
                });
                self.core.add_consumer(tc);
            }
            Op::RemoveConsumer { pick, failed } => {
                let active: Vec<usize> = (0..self.consumers.len())
                    .filter(|i| self.consumers[*i].active)
                    .collect();
                if let Some(&i) = active.get(pick % active.len().max(1)) {
                    let tc = self.consumers[i].tc;
                    self.consumers[i].active = false;
                    self.core.remove_consumer(|c| *c == tc);
                    let held = std::mem::take(&mut self.consumers[i].unacked);
                    let how = if failed {
                        Return::Failed
                    } else {
                        Return::Released
                    };
                    self.fail(held, how, None);
                }
            }
            Op::Get { no_ack } => {
                let taken = self.core.take_one(self.now, no_ack, &mut self.fx);
                self.expire_heads();
                if let Some((e, left)) = taken {
                    self.delivered_from_model(&e)?;
                    prop_assert_eq!(left, self.model.ready.len() as u64);
                    if no_ack {
                        self.gone.insert(e.id, Gone::NoAck);
                    } else {
                        self.got.push(e);
                    }
                } else {
                    prop_assert!(self.model.ready.is_empty());
                }
            }
            Op::Ack(pick) => {
                if let Some(e) = self.take_unacked(pick) {
                    self.core.settled(1);
                    self.gone.insert(e.id, Gone::Acked);
                }
            }
            Op::Nack {
                pick,
                requeue,
                reject,
                delay,
            } => {
                if let Some(e) = self.take_unacked(pick) {
                    if requeue {
                        let how = if reject {
                            Return::Failed
                        } else {
                            Return::Released
                        };
                        self.fail(vec![e], how, delay);
                    } else {
                        self.core.reject(vec![e.clone()], &mut self.fx);
                        self.expect_dead(DeadLetterReason::Rejected, &[e.id])?;
                    }
                }
            }
            Op::Advance(ms) => {
                self.now += ms;
                self.core.tick(self.now, &mut self.fx);
                let due: Vec<(u64, u64)> = self
                    .model
                    .delayed
                    .range(..(self.now + 1, 0))
                    .map(|(k, _)| *k)
                    .collect();
                let mut back: Vec<M> = due
                    .iter()
                    .filter_map(|k| self.model.delayed.remove(k))
                    .collect();
                back.sort_by_key(|m| m.id);
                for m in back.into_iter().rev() {
                    self.model.push_front(m);
                }
                let now = self.now;
                let expired: Vec<u64> = self
                    .model
                    .ready
                    .iter()
                    .filter(|m| m.expires_at != 0 && m.expires_at <= now)
                    .map(|m| m.id)
                    .collect();
                self.model
                    .ready
                    .retain(|m| m.expires_at == 0 || m.expires_at > now);
                if !expired.is_empty() {
                    self.expect_dead(DeadLetterReason::Expired, &expired)?;
                }
            }
            Op::Clock(ms) => self.now += ms,
            Op::FinishRefill => {
                if let Some(ids) = self.pending_refill.take() {
                    let loaded = ids.iter().map(|id| self.bodies.get(id).cloned()).collect();
                    let missing = self.core.finish_refill(&ids, loaded, &mut self.fx);
                    prop_assert!(missing.is_empty());
                }
            }
        }
        self.dispatch()?;
        self.check()
    }

    fn enqueue(
        &mut self,
        ttl: Option<u64>,
        stored: bool,
        priority: Option<u8>,
    ) -> Result<(), TestCaseError> {
        let id = self.next_id;
        self.next_id += 1;
        let message = Arc::new(Message {
            write: Default::default(),
            exchange: String::new(),
            routing_key: "q".into(),
            properties: warren_protocol::Properties {
                priority,
                ..Default::default()
            },
            body: bytes::Bytes::from_static(b"x"),
        });
        let level = self
            .args
            .max_priority
            .map_or(0, |max| priority.unwrap_or(0).min(max));
        if stored {
            self.bodies.insert(id, message.clone());
        }
        let expires_at = ttl.map_or(0, |t| self.now + t);
        let full = self
            .args
            .max_length
            .is_some_and(|max| self.model.ready.len() as u64 >= max);
        if self.args.overflow != Overflow::DropHead {
            // The completion step asks before enqueueing, and refuses.
            prop_assert_eq!(self.core.admits((0, 0), 1), !full);
            if full {
                self.gone.insert(id, Gone::Refused);
                return Ok(());
            }
        }
        self.core.enqueue(
            QueuedMessage {
                early: 0,
                id,
                message: Some(message),
                size: 1,
                delivery_count: 0,
                acquired_count: 0,
                stored,
                expires_at,
                priority: 0,
            },
            &mut self.fx,
        );
        self.model.push_back(M {
            id,
            expires_at,
            count: 0,
            acquired: 0,
            priority: level,
        });
        if full {
            // Requeues may have taken the queue past its limit: it drops back to it.
            let max = self.args.max_length.unwrap_or(u64::MAX);
            let mut dropped = Vec::new();
            while self.model.ready.len() as u64 > max {
                dropped.extend(self.model.ready.pop_front().map(|m| m.id));
            }
            self.expect_dead(DeadLetterReason::MaxLen, &dropped)?;
        }
        Ok(())
    }

    fn fail(&mut self, entries: Vec<QueuedMessage>, how: Return, delay: Option<u64>) {
        let now = self.now;
        let failed = how == Return::Failed;
        let mut at_head = Vec::new();
        let mut want_updates = HashMap::new();
        for e in &entries {
            let count = e.delivery_count + u32::from(failed);
            let m = M {
                id: e.id,
                expires_at: e.expires_at,
                count,
                acquired: e.acquired_count + 1,
                priority: e.priority,
            };
            if failed && self.args.delivery_limit.is_some_and(|l| count > l) {
                self.gone
                    .insert(e.id, Gone::Dead(DeadLetterReason::DeliveryLimit));
                continue;
            }
            if e.stored {
                want_updates.insert(e.id, (m.count, m.acquired));
            }
            if let Some(d) = delay.or_else(|| {
                let steps = self.args.retry_backoff_ms.as_ref().filter(|_| failed)?;
                steps.get(count as usize - 1).or(steps.last()).copied()
            }) {
                self.model.delayed.insert((now + d, e.id), m);
            } else {
                at_head.push(m);
            }
        }
        at_head.sort_by_key(|m| m.id);
        for m in at_head.into_iter().rev() {
            self.model.push_front(m);
        }
        self.core.fail(entries, how, delay, now, &mut self.fx);
        for u in self.fx.updates.drain(..) {
            assert_eq!(
                want_updates.remove(&u.id),
                Some((u.delivery_count, u.acquired_count)),
                "a stored entry writes the model's counts"
            );
        }
        assert!(want_updates.is_empty(), "stored entries left unwritten");
        for (reason, es) in self.fx.dead_letters.drain(..) {
            assert_eq!(reason, DeadLetterReason::DeliveryLimit);
            assert!(failed, "only a failure reaches the delivery limit");
            for e in es {
                assert!(self
                    .args
                    .delivery_limit
                    .is_some_and(|l| e.delivery_count > l));
            }
        }
    }

    fn take_unacked(&mut self, pick: usize) -> Option<QueuedMessage> {
        let total = self.got.len()
            + self
                .consumers
                .iter()
                .map(|c| c.unacked.len())
                .sum::<usize>();
        if total == 0 {
            return None;
        }
        let mut i = pick % total;
        if i < self.got.len() {
            return Some(self.got.remove(i));
        }
        i -= self.got.len();
        for c in &mut self.consumers {
            if i < c.unacked.len() {
                return Some(c.unacked.remove(i));
            }
            i -= c.unacked.len();
        }
        None
    }

    /// Checks that the core dead-lettered exactly `ids` for `reason` (as one step's effects).
    fn expect_dead(&mut self, reason: DeadLetterReason, ids: &[u64]) -> Result<(), TestCaseError> {
        let mut raised: Vec<u64> = Vec::new();
        for (r, es) in self.fx.dead_letters.drain(..) {
            prop_assert_eq!(r, reason);
            raised.extend(es.iter().map(|e| e.id));
        }
        let mut want = ids.to_vec();
        raised.sort_unstable();
        want.sort_unstable();
        prop_assert_eq!(&raised, &want);
        for id in raised {
            self.gone.insert(id, Gone::Dead(reason));
        }
        Ok(())
    }

    /// The model's side of a dispatch or get: expired heads the core dead-lettered.
    fn expire_heads(&mut self) {
        let now = self.now;
        let expired: HashSet<u64> = self
            .fx
            .dead_letters
            .iter()
            .filter(|(r, _)| *r == DeadLetterReason::Expired)
            .flat_map(|(_, es)| es.iter().map(|e| e.id))
            .collect();
        while let Some(head) = self.model.ready.front() {
            if !expired.contains(&head.id) {
                break;
            }
            assert!(head.expires_at != 0 && head.expires_at <= now);
            self.gone
                .insert(head.id, Gone::Dead(DeadLetterReason::Expired));
            self.model.ready.pop_front();
        }
        self.fx.dead_letters.clear();
    }

    /// A delivered (or got) message must be the model's head; it leaves the model's ready list.
    fn delivered_from_model(&mut self, e: &QueuedMessage) -> Result<(), TestCaseError> {
        let head = self.model.ready.pop_front();
        prop_assert_eq!(
            head.map(|m| (m.id, m.count, m.acquired, m.priority)),
            Some((e.id, e.delivery_count, e.acquired_count, e.priority))
        );
        prop_assert!(e.acquired_count >= e.delivery_count);
        prop_assert!(
            e.expires_at == 0 || e.expires_at > self.now,
            "delivered expired"
        );
        if e.acquired_count == 0 {
            let last = self.last_first_delivery.entry(e.priority).or_insert(0);
            prop_assert!(
                e.id > *last,
                "first deliveries in FIFO order within a priority"
            );
            *last = e.id;
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<(), TestCaseError> {
        let mut held: Vec<u32> = self
            .consumers
            .iter()
            .map(|c| c.unacked.len() as u32)
            .collect();
        let limits: Vec<(u32, bool)> = self
            .consumers
            .iter()
            .map(|c| (c.prefetch, c.tc.1))
            .collect();
        let has_credit =
            |held: &[u32], i: usize| limits[i].1 || limits[i].0 == 0 || held[i] < limits[i].0;
        self.core.dispatch(
            &mut LazyNow::at(self.now),
            &mut |c: &Tc| {
                let ok = has_credit(&held, c.0);
                if ok {
                    held[c.0] += 1;
                }
                ok
            },
            &mut self.fx,
        );
        // Deliveries and expired heads leave the head in order; replay that on the model.
        let deliveries: Vec<_> = self.fx.deliveries.drain(..).collect();
        let mut removals: HashSet<u64> = self.fx.removals.drain(..).collect();
        for d in deliveries {
            self.expire_heads_before(d.entry.id);
            self.delivered_from_model(&d.entry)?;
            prop_assert!(d.entry.message.is_some(), "delivered while paged out");
            if self.args.single_active_consumer {
                prop_assert_eq!(
                    Some(d.consumer.0),
                    self.first_active(),
                    "delivered to a consumer that is not the single active one"
                );
            }
            let c = &mut self.consumers[d.consumer.0];
            prop_assert!(c.active, "delivered to a removed consumer");
            if c.tc.1 {
                prop_assert_eq!(removals.remove(&d.entry.id), d.entry.stored);
                self.gone.insert(d.entry.id, Gone::NoAck);
            } else {
                c.unacked.push(d.entry);
            }
        }
        prop_assert!(removals.is_empty(), "removed rows nobody delivered");
        self.expire_heads();
        if !self.fx.refill.is_empty() {
            prop_assert!(self.pending_refill.is_none(), "one refill at a time");
            self.pending_refill = Some(std::mem::take(&mut self.fx.refill));
        }
        prop_assert!(self.fx.is_empty(), "unexpected effects: {:?}", self.fx);
        // Work-conserving: it stopped for a reason.
        if let Some(head) = self.core.ready().next() {
            // With a single active consumer, only its credit counts.
            let sac = self.args.single_active_consumer;
            let first = self.first_active();
            let credit = (0..self.consumers.len()).any(|i| {
                self.consumers[i].active && (!sac || Some(i) == first) && has_credit(&held, i)
            });
            prop_assert!(
                !credit || head.message.is_none(),
                "a consumer with credit and a deliverable head"
            );
            if head.message.is_none() && credit {
                prop_assert!(
                    self.pending_refill.is_some(),
                    "a paged-out head without a refill"
                );
            }
        }
        Ok(())
    }

    /// The longest-attached consumer still attached: the single active one, if the queue has
    /// `x-single-active-consumer`.
    fn first_active(&self) -> Option<usize> {
        self.consumers.iter().position(|c| c.active)
    }

    /// Expired heads the core dropped before delivering `id`.
    fn expire_heads_before(&mut self, id: u64) {
        let now = self.now;
        let expired: HashSet<u64> = self
            .fx
            .dead_letters
            .iter()
            .flat_map(|(_, es)| es.iter().map(|e| e.id))
            .collect();
        while let Some(head) = self.model.ready.front() {
            if head.id == id || !expired.contains(&head.id) {
                break;
            }
            assert!(head.expires_at != 0 && head.expires_at <= now);
            self.gone
                .insert(head.id, Gone::Dead(DeadLetterReason::Expired));
            self.model.ready.pop_front();
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let ready: Vec<u64> = self.core.ready().map(|e| e.id).collect();
        let model_ready: Vec<u64> = self.model.ready.iter().map(|m| m.id).collect();
        prop_assert_eq!(&ready, &model_ready, "ready list");
        let counts: Vec<(u32, u32)> = self
            .core
            .ready()
            .map(|e| (e.delivery_count, e.acquired_count))
            .collect();
        let model_counts: Vec<(u32, u32)> = self
            .model
            .ready
            .iter()
            .map(|m| (m.count, m.acquired))
            .collect();
        prop_assert_eq!(counts, model_counts, "delivery and acquired counts");
        let delayed: Vec<(u64, u64)> = self.core.delayed.keys().copied().collect();
        let model_delayed: Vec<(u64, u64)> = self.model.delayed.keys().copied().collect();
        prop_assert_eq!(delayed, model_delayed, "delayed set");
        // FIFO except redeliveries: never-delivered ready messages are in id order, within
        // a priority; higher priorities first.
        let fresh: Vec<(u8, u64)> = self
            .core
            .ready()
            .filter(|e| e.acquired_count == 0)
            .map(|e| (e.priority, e.id))
            .collect();
        prop_assert!(
            fresh
                .windows(2)
                .all(|w| w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1)),
            "FIFO within a priority: {:?}",
            fresh
        );
        let levels: Vec<u8> = self.core.ready().map(|e| e.priority).collect();
        prop_assert!(
            levels.windows(2).all(|w| w[0] >= w[1]),
            "higher priorities first: {:?}",
            levels
        );
        let max = self.args.max_priority.unwrap_or(0);
        prop_assert!(
            levels.iter().all(|p| *p <= max),
            "above the max: {:?}",
            levels
        );
        // Prefetch never exceeded.
        for c in &self.consumers {
            prop_assert!(c.tc.1 || c.prefetch == 0 || c.unacked.len() as u32 <= c.prefetch);
        }
        // Exactly one place.
        let unacked: Vec<u64> = self
            .got
            .iter()
            .chain(self.consumers.iter().flat_map(|c| c.unacked.iter()))
            .map(|e| e.id)
            .collect();
        prop_assert_eq!(self.core.counts().unacked, unacked.len() as u64);
        let mut seen = HashSet::new();
        let places = ready
            .iter()
            .chain(self.core.delayed.values().map(|e| &e.id))
            .chain(unacked.iter())
            .chain(self.gone.keys());
        for id in places {
            prop_assert!(seen.insert(*id), "message {} is in two places", id);
        }
        prop_assert_eq!(
            seen.len() as u64,
            self.next_id - 1,
            "a message went missing"
        );
        // The deadline the core reports to the timer index is never later than the first
        // thing a tick would change: an expiry of a ready message or a delayed release.
        // (Earlier is allowed: stale expiry entries.) With it, the ticker can skip a queue
        // until then and miss nothing.
        let first_due = self
            .model
            .ready
            .iter()
            .filter(|m| m.expires_at != 0)
            .map(|m| m.expires_at)
            .chain(self.model.delayed.keys().map(|(at, _)| *at))
            .min();
        if let Some(due) = first_due {
            let next = self.core.next_deadline();
            prop_assert!(
                next.is_some_and(|d| d <= due),
                "next deadline {:?} is later than the first due change at {}",
                next,
                due
            );
        }
        // Counters agree with the lists.
        let c = self.core.counts();
        prop_assert_eq!(c.ready, ready.len() as u64);
        prop_assert_eq!(c.ready_bytes, ready.len() as u64);
        prop_assert!(self.core.resident_bytes() <= c.ready_bytes);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_queue_state_machine_keeps_every_message_in_one_place(
        args in args(false),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness::new(args);
        for op in ops {
            h.step(op)?;
        }
    }

    /// The same, on priority queues: the model orders by priority then arrival, with
    /// requeues at the head of their priority, expiry anywhere and drop-head overflow.
    #[test]
    fn a_priority_queue_delivers_higher_priorities_first_fifo_within_each(
        args in args(true),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness::new(args);
        for op in ops {
            h.step(op)?;
        }
    }
}
