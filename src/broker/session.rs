//! [`Session`]: what one connection owns in the broker — its consumers, its unacked deliveries
//! (keyed by delivery tag), its prefetch setting — and the channel its events leave by.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::access::Principal;
use super::confirm::ReplySink;
use super::consumer::{Consumer, SharedCredit};
use super::event::{Event, RequestId};
use super::outbox::Outbox;
use super::queue::{consumer_timeout, timed_out, Queue};
use super::timers::{TimerKey, TimerTarget, Timers};
use super::vhost::VHost;
use crate::message::QueuedMessage;
use crate::stop::Stop;

/// Publishes a connection may have between being read and being confirmed. Past this the
/// connection stops reading, so TCP pushes back on the publisher.
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 8192;

/// What the broker sends a connection, in order; the connection's front end encodes it.
#[derive(Debug)]
pub enum Outbound {
    /// An event, with the request it answers (0: none).
    Event {
        /// The request it answers, or 0.
        request_id: RequestId,
        /// What happened.
        event: Event,
    },
    /// A delivery, encoded by the writer from the shared message (no per-delivery copy).
    Deliver {
        /// The consumer it is for.
        consumer: Arc<Consumer>,
        /// Its tag on this connection.
        delivery_tag: u64,
        /// The message (its body is resident).
        entry: QueuedMessage,
        /// Its offset, for a delivery from a stream (sent in the frame).
        stream_offset: Option<u64>,
    },
}

/// A delivery awaiting ack, nack or reject.
#[derive(Debug)]
pub struct Unacked {
    /// The queue it came from.
    pub queue: Arc<Queue>,
    /// The consumer it went to (`None` for `Get`).
    pub consumer: Option<Arc<Consumer>>,
    /// The message.
    pub entry: QueuedMessage,
    /// When it was delivered, ms since the epoch on the broker's clock (for consumer
    /// timeouts).
    pub delivered_at_ms: u64,
}

/// One connection's broker-side state.
#[derive(Debug)]
pub struct Session {
    /// Connection id, unique in this process (exclusive queues record their owner by it).
    pub id: u64,
    /// Where events and deliveries for the client go (the connection's writer task reads it).
    pub outbound: Outbox,
    /// Confirms and replies completed by the store writer.
    pub replies: Arc<ReplySink>,
    /// Bounds publishes in flight; a permit is returned when its confirm is written.
    pub publish_permits: Semaphore,
    /// The client's address, for listings and logs.
    pub peer: String,
    /// Who logged in on this connection, and the virtual host it opened.
    pub user: Arc<Principal>,
    /// The virtual host it works in, looked up once at `Open`.
    pub vhost: Arc<VHost>,
    /// When the connection opened, ms since the epoch.
    pub connected_at_ms: u64,
    /// Publishes received on this connection.
    pub published: std::sync::atomic::AtomicU64,
    /// Cancelled when an operator's change ends the connection (its user or virtual host
    /// deleted); the read loop then closes it with `CONNECTION_FORCED` and `forced_reason`.
    pub forced: Stop,
    /// Why `forced` was cancelled: the first reason given.
    forced_reason: std::sync::OnceLock<String>,
    /// The listener it came through and what the client said it is, set by the door once
    /// the session exists.
    client: std::sync::OnceLock<ClientInfo>,
    state: Mutex<SessionState>,
    /// Itself, for the timer index (which must not keep a closed connection alive).
    me: Weak<Session>,
}

/// Which listener a connection came through: the protocol it speaks, with or without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// Warren's own protocol, `--listen`.
    Native,
    /// Warren's own protocol inside TLS, `--tls-listen`.
    NativeTls,
    /// AMQP 0-9-1, `--amqp-listen`.
    Amqp,
    /// AMQP 0-9-1 inside TLS, `--amqp-tls-listen`.
    Amqps,
}

impl Door {
    /// Its name in `connection list`: `native`, `native-tls`, `amqp`, `amqps`.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Native => "native",
            Door::NativeTls => "native-tls",
            Door::Amqp => "amqp",
            Door::Amqps => "amqps",
        }
    }
}

/// What an operator sees of a connection's client: the door, and the product and version
/// an AMQP client sends in its `client-properties` (Warren's protocol carries neither).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The listener it came through.
    pub door: Door,
    /// The client library's name (`lapin`, `pika`, `amqplib`), as the client sent it.
    pub product: Option<String>,
    /// Its version, as the client sent it.
    pub version: Option<String>,
}

#[derive(Debug, Default)]
struct SessionState {
    next_delivery_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    consumers: HashMap<Arc<str>, Arc<Consumer>>,
    prefetch: u32,
    /// The channel-wide limit for consumers started from now on (AMQP's global qos).
    shared_credit: Option<Arc<SharedCredit>>,
    next_consumer_number: u64,
    /// The consumer-timeout deadline last given to the timer index (`None`: none): a
    /// delivery gives one only when it is earlier, so not per delivery.
    timer_at: Option<u64>,
}

impl Session {
    /// A session for connection `id` with every right (the broker's own, for tests) whose
    /// events and deliveries go to `outbound`.
    pub fn new(id: u64, peer: String, outbound: Outbox) -> Arc<Session> {
        Session::for_user(
            id,
            peer,
            Principal::internal(),
            VHost::new(super::vhost::DEFAULT_VHOST),
            outbound,
        )
    }

    /// A session for connection `id` of `user` in `vhost` whose events and deliveries go to `outbound`.
    pub fn for_user(
        id: u64,
        peer: String,
        user: Arc<Principal>,
        vhost: Arc<VHost>,
        outbound: Outbox,
    ) -> Arc<Session> {
        Arc::new_cyclic(|me| Session {
            me: me.clone(),
            vhost,
            id,
            outbound,
            replies: ReplySink::new(),
            publish_permits: Semaphore::new(MAX_PUBLISHES_IN_FLIGHT),
            peer,
            user,
            connected_at_ms: crate::message::now_ms(),
            published: std::sync::atomic::AtomicU64::new(0),
            forced: Stop::new(),
            forced_reason: std::sync::OnceLock::new(),
            client: std::sync::OnceLock::new(),
            state: Mutex::new(SessionState::default()),
        })
    }

    /// Ends the connection as RabbitMQ does when an operator removes what it stands on:
    /// `Close` with `CONNECTION_FORCED` (320) and `reason`, after whatever is already on
    /// its way to the client (the reply to the request that caused it included).
    pub fn force_close(&self, reason: String) {
        let _ = self.forced_reason.set(reason);
        self.forced.cancel();
    }

    /// The reason given to [`Session::force_close`].
    pub fn forced_reason(&self) -> &str {
        self.forced_reason
            .get()
            .map_or("closed by an operator", String::as_str)
    }

    /// Records the listener the connection came through and what the client said it is
    /// (the first call wins: the door sets it once, right after making the session).
    pub fn set_client(&self, client: ClientInfo) {
        let _ = self.client.set(client);
    }

    /// What [`Session::set_client`] recorded; a session no door described (the broker's
    /// own, in tests) is a native one with no client name.
    pub fn client(&self) -> &ClientInfo {
        const UNDESCRIBED: ClientInfo = ClientInfo {
            door: Door::Native,
            product: None,
            version: None,
        };
        self.client.get().unwrap_or(&UNDESCRIBED)
    }

    /// Its consumers, for listings.
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.state.lock().consumers.values().cloned().collect()
    }

    /// How many deliveries await settlement.
    pub fn unacked_count(&self) -> usize {
        self.state.lock().unacked.len()
    }

    /// Sends an event to the client, answering `request_id` (0: none). A closed connection
    /// drops it: there is nobody to tell.
    pub fn send(&self, request_id: RequestId, event: Event) {
        let _ = self.outbound.send(Outbound::Event { request_id, event });
    }

    /// The prefetch for consumers started from now on.
    pub fn prefetch(&self) -> u32 {
        self.state.lock().prefetch
    }

    /// Sets the prefetch for consumers started from now on.
    pub fn set_prefetch(&self, prefetch: u32) {
        self.state.lock().prefetch = prefetch;
    }

    /// The channel-wide limit consumers started from now on count against, if any.
    pub fn shared_credit(&self) -> Option<Arc<SharedCredit>> {
        self.state.lock().shared_credit.clone()
    }

    /// Sets the channel-wide limit for consumers started from now on (`None`: only their
    /// own prefetch). The AMQP door sets its channel's before each consume, as it does the
    /// prefetch: one session serves all the channels of a connection.
    pub fn set_shared_credit(&self, shared: Option<Arc<SharedCredit>>) {
        self.state.lock().shared_credit = shared;
    }

    /// A consumer tag unique on this connection.
    pub fn generate_consumer_tag(&self) -> String {
        let mut st = self.state.lock();
        st.next_consumer_number += 1;
        format!("ctag-{}.{}", self.id, st.next_consumer_number)
    }

    /// How many consumers the connection has.
    pub fn consumer_count(&self) -> usize {
        self.state.lock().consumers.len()
    }

    /// Registers a consumer; false if the tag is taken.
    pub fn add_consumer(&self, consumer: Arc<Consumer>) -> bool {
        let mut st = self.state.lock();
        if st.consumers.contains_key(&consumer.tag) {
            return false;
        }
        st.consumers.insert(consumer.tag.clone(), consumer);
        true
    }

    /// Removes a consumer by tag.
    pub fn remove_consumer(&self, tag: &str) -> Option<Arc<Consumer>> {
        self.state.lock().consumers.remove(tag)
    }

    /// Removes and returns every consumer (connection close).
    pub fn take_consumers(&self) -> Vec<Arc<Consumer>> {
        self.state
            .lock()
            .consumers
            .drain()
            .map(|(_, c)| c)
            .collect()
    }

    /// Records a delivery and returns its tag. With `track` `None` (no-ack), only a tag is
    /// allocated. `timeout_at` is when the delivery's consumer times out if it is still
    /// unacked (ms since the epoch); the session's timer in `timers` is brought forward to it
    /// if it is the earliest.
    pub fn record_delivery(
        &self,
        track: Option<Unacked>,
        timeout_at: Option<u64>,
        timers: &Timers,
    ) -> u64 {
        let mut st = self.state.lock();
        st.next_delivery_tag += 1;
        let tag = st.next_delivery_tag;
        if let Some(u) = track {
            st.unacked.insert(tag, u);
        }
        if let Some(at) = timeout_at {
            if st.timer_at.is_none_or(|t| at < t) {
                st.timer_at = Some(at);
                timers.schedule(
                    TimerKey::Session(self.id),
                    at,
                    TimerTarget::Session(self.me.clone()),
                );
            }
        }
        tag
    }

    /// After the ticker woke this session (its timer left the index): gives `timers` the
    /// deadline of its oldest timed delivery still unacked, if any.
    pub fn reschedule_timeout(&self, default_timeout: Option<Duration>, timers: &Timers) {
        let mut st = self.state.lock();
        let next = st
            .unacked
            .values()
            .filter_map(|u| {
                let c = u.consumer.as_ref()?;
                let t = consumer_timeout(c.timeout_ms, &u.queue.args, default_timeout)?;
                Some(
                    u.delivered_at_ms
                        .saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                )
            })
            .min();
        st.timer_at = next;
        if let Some(at) = next {
            timers.schedule(
                TimerKey::Session(self.id),
                at,
                TimerTarget::Session(self.me.clone()),
            );
        }
    }

    /// Removes the deliveries an ack/nack/reject names: `tag` alone, or with `multiple` every
    /// unacked tag up to it (tag 0 with `multiple` means all). `None` if `tag` is unknown.
    pub fn take_unacked(&self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let mut st = self.state.lock();
        let taken = if multiple {
            if tag == 0 {
                return Some(std::mem::take(&mut st.unacked).into_values().collect());
            }
            if !st.unacked.contains_key(&tag) {
                return None;
            }
            let rest = st.unacked.split_off(&(tag + 1));
            let taken = std::mem::replace(&mut st.unacked, rest);
            Some(taken.into_values().collect())
        } else {
            st.unacked.remove(&tag).map(|u| vec![u])
        };
        if st.unacked.is_empty() {
            // An emptied BTreeMap keeps its leaf (about 900 bytes of Unacked slots): a
            // consumer that acks everything would hold one per connection for good
            // (issue 11's S7: 10,000 connections). A new one allocates on first insert.
            st.unacked = BTreeMap::new();
        }
        taken
    }

    /// Removes and returns the unacked deliveries made to `consumer` (cancel).
    pub fn take_unacked_of(&self, consumer: &Arc<Consumer>) -> Vec<Unacked> {
        let mut st = self.state.lock();
        let tags: Vec<u64> = st
            .unacked
            .iter()
            .filter(|(_, u)| {
                u.consumer
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, consumer))
            })
            .map(|(t, _)| *t)
            .collect();
        tags.iter().filter_map(|t| st.unacked.remove(t)).collect()
    }

    /// Detaches a cancelled consumer's unacked deliveries from it, leaving them with the
    /// session like `Get` deliveries: settled later, or requeued when the connection ends.
    /// Deliveries from a stream keep their (now inactive) consumer: their settles still move
    /// a named consumer's position (`broker/stream`).
    pub fn release_unacked_of(&self, consumer: &Arc<Consumer>) {
        let mut st = self.state.lock();
        for u in st.unacked.values_mut() {
            if u.queue.stream.is_none()
                && u.consumer
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, consumer))
            {
                u.consumer = None;
            }
        }
    }

    /// Consumers holding a delivery unacked at `now_ms` for longer than its consumer timeout
    /// (the consumer's own `x-consumer-timeout`, else the queue's, else `default_timeout`; the rule is
    /// [`consumer_timeout`] and [`timed_out`] in `queue/settle.rs`): each with its oldest such
    /// tag and that delivery's age.
    pub fn timed_out_consumers(
        &self,
        default_timeout: Option<Duration>,
        now_ms: u64,
    ) -> Vec<(Arc<Consumer>, u64, Duration)> {
        let st = self.state.lock();
        let mut out: Vec<(Arc<Consumer>, u64, Duration)> = Vec::new();
        // Tags rise with delivery order, so the first one found for a consumer is its oldest.
        for (tag, u) in &st.unacked {
            // A cancelled consumer (a stream's, still holding its deliveries) is over.
            let Some(c) = u.consumer.as_ref().filter(|c| c.is_active()) else {
                continue;
            };
            let Some(timeout) = consumer_timeout(c.timeout_ms, &u.queue.args, default_timeout)
            else {
                continue;
            };
            let Some(age) = timed_out(u.delivered_at_ms, now_ms, timeout) else {
                continue;
            };
            if !out.iter().any(|(o, _, _)| Arc::ptr_eq(o, c)) {
                out.push((c.clone(), *tag, age));
            }
        }
        out
    }

    /// Removes and returns every unacked delivery (connection close).
    pub fn take_all_unacked(&self) -> Vec<Unacked> {
        std::mem::take(&mut self.state.lock().unacked)
            .into_values()
            .collect()
    }
}
