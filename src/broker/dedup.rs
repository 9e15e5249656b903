//! Publisher deduplication (`x-message-deduplication`): an exchange or a queue remembers the
//! deduplication keys it accepted within a window, and a message whose key it already has is
//! confirmed to its publisher as a duplicate and stored nowhere (docs/deduplication.md).
//!
//! The window lives in memory ([`Dedup`]) and is checked and updated when the message is
//! routed, so two publishes of one key in the same commit batch see each other. The keys of
//! persistent messages accepted by a durable exchange or queue are also written in the
//! publish's own commit (`store/tables.rs`, `DEDUP_KEYS`), so a confirm implies its key is
//! durable and recovery rebuilds the window: a retry after `kill -9` is still recognised.
//!
//! Arguments (exchanges and queues alike), spelled as the issue and RabbitMQ's
//! `rabbitmq-message-deduplication` plugin spell them:
//!
//! | argument | value |
//! |---|---|
//! | `x-message-deduplication` | boolean; `true` turns deduplication on |
//! | `x-deduplication-window` | a duration string (`"10m"`, `"30s"`, `"500ms"`) or an integer count of keys |
//! | `x-cache-ttl` | integer ms: the plugin's name for a time window |
//! | `x-cache-size` | integer: the plugin's name for a count window (with a time window: its cap) |
//! | `x-deduplication-header` | string: the header holding the key (default: the `message_id` property) |

use super::vhost::VHost;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use warren_protocol::{FieldTable, FieldValue, Properties, Publish};

use super::commit::duplicate_op;
use super::confirm::ReplySlot;
use super::event::RequestId;
use super::queue::Queue;
use super::queue_args::{parse_duration_ms, InvalidQueueArgument, MAX_TTL_MS};
use super::session::Session;
use super::Broker;
use crate::clock::LazyNow;
use crate::error::BrokerError;
use crate::message::Message;

/// Turns deduplication on (boolean).
pub const X_MESSAGE_DEDUPLICATION: &str = "x-message-deduplication";
/// The window: a duration string or an integer count.
pub const X_DEDUPLICATION_WINDOW: &str = "x-deduplication-window";
/// The header that holds the key, instead of the `message_id` property.
pub const X_DEDUPLICATION_HEADER: &str = "x-deduplication-header";
/// The plugin's count window (alias).
pub const X_CACHE_SIZE: &str = "x-cache-size";
/// The plugin's time window in ms (alias).
pub const X_CACHE_TTL: &str = "x-cache-ttl";

/// Every deduplication argument, for the exchange and queue argument checks.
pub const ARGUMENTS: [&str; 5] = [
    X_MESSAGE_DEDUPLICATION,
    X_DEDUPLICATION_WINDOW,
    X_DEDUPLICATION_HEADER,
    X_CACHE_SIZE,
    X_CACHE_TTL,
];

/// The most keys a window may hold: bounds its memory (about 100 bytes plus the key's length
/// per key, docs/deduplication.md) and the store table.
pub const MAX_WINDOW_KEYS: u64 = 10_000_000;

/// The cap on a time window given no count (`x-cache-size`): past it the oldest keys are
/// forgotten early, so a burst cannot grow memory without bound.
pub const DEFAULT_TIME_WINDOW_KEYS: u64 = 1_000_000;

/// The longest deduplication key kept: a longer one refuses the publish, so one message cannot
/// make a window hold megabytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A window's configuration, parsed from an exchange's or a queue's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long a key is remembered after it was accepted; `None`: until evicted by count.
    pub ttl_ms: Option<u64>,
    /// The most keys remembered; the oldest go first.
    pub max_keys: u64,
    /// The header holding the key; `None`: the `message_id` property.
    pub header: Option<String>,
}

fn invalid(arg: &str, reason: impl Into<String>) -> InvalidQueueArgument {
    InvalidQueueArgument {
        arg: arg.to_owned(),
        reason: reason.into(),
    }
}

fn positive(arg: &str, value: &FieldValue, unit: &str) -> Result<u64, InvalidQueueArgument> {
    let n = match value {
        FieldValue::Int(n) => u64::try_from(*n).ok(),
        FieldValue::Float(f) if f.is_finite() && f.fract() == 0.0 && *f >= 0.0 && *f < 1e19 => {
            Some(*f as u64)
        }
        other => {
            return Err(invalid(
                arg,
                format!(
                    "expected an integer number of {unit}, got {}",
                    super::redeclare::user_value(other)
                ),
            ))
        }
    };
    match n {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(invalid(
            arg,
            format!(
                "must be at least 1 {unit}, got {}",
                super::redeclare::user_value(value)
            ),
        )),
    }
}

fn check_keys(arg: &str, n: u64) -> Result<u64, InvalidQueueArgument> {
    if n > MAX_WINDOW_KEYS {
        return Err(invalid(
            arg,
            format!("must be at most {MAX_WINDOW_KEYS} keys, got {n}"),
        ));
    }
    Ok(n)
}

fn check_ttl(arg: &str, ms: u64) -> Result<u64, InvalidQueueArgument> {
    if ms > MAX_TTL_MS {
        return Err(invalid(
            arg,
            format!("must be at most {MAX_TTL_MS} ms (ten years), got {ms} ms"),
        ));
    }
    Ok(ms)
}

/// Parses the deduplication arguments of an exchange or queue: `None` when deduplication is
/// off (`x-message-deduplication` absent or `false`).
///
/// # Errors
/// A value of the wrong type or out of range; a window given twice (`x-deduplication-window`
/// and the alias of the same kind); window arguments without `x-message-deduplication=true`;
/// deduplication on without any window.
pub fn parse(args: &FieldTable) -> Result<Option<DedupConfig>, InvalidQueueArgument> {
    let on = match args.get(X_MESSAGE_DEDUPLICATION) {
        None => false,
        Some(FieldValue::Bool(b)) => *b,
        Some(other) => {
            return Err(invalid(
                X_MESSAGE_DEDUPLICATION,
                format!(
                    "expected a boolean, got {}",
                    super::redeclare::user_value(other)
                ),
            ))
        }
    };
    let mut ttl_ms = None;
    let mut count = None;
    if let Some(v) = args.get(X_DEDUPLICATION_WINDOW) {
        match v {
            FieldValue::String(text) => {
                if !text.trim().is_empty() && text.trim().chars().all(|c| c.is_ascii_digit()) {
                    return Err(invalid(
                        X_DEDUPLICATION_WINDOW,
                        format!(
                            "the string {text:?} has no unit: give a duration with a unit \
                             (ms, s, m, h), such as \"10m\", or an integer count of messages"
                        ),
                    ));
                }
                let ms = parse_duration_ms(text)
                    .map_err(|reason| invalid(X_DEDUPLICATION_WINDOW, reason))?;
                if ms == 0 {
                    return Err(invalid(
                        X_DEDUPLICATION_WINDOW,
                        "must be at least 1 ms, got 0",
                    ));
                }
                ttl_ms = Some(check_ttl(X_DEDUPLICATION_WINDOW, ms)?);
            }
            other => {
                let n = positive(X_DEDUPLICATION_WINDOW, other, "messages")?;
                count = Some(check_keys(X_DEDUPLICATION_WINDOW, n)?);
            }
        }
    }
    if let Some(v) = args.get(X_CACHE_TTL) {
        if ttl_ms.is_some() {
            return Err(invalid(
                X_CACHE_TTL,
                format!("given together with a time {X_DEDUPLICATION_WINDOW}; give one of them"),
            ));
        }
        ttl_ms = Some(check_ttl(
            X_CACHE_TTL,
            positive(X_CACHE_TTL, v, "milliseconds")?,
        )?);
    }
    if let Some(v) = args.get(X_CACHE_SIZE) {
        if count.is_some() {
            return Err(invalid(
                X_CACHE_SIZE,
                format!("given together with a count {X_DEDUPLICATION_WINDOW}; give one of them"),
            ));
        }
        count = Some(check_keys(
            X_CACHE_SIZE,
            positive(X_CACHE_SIZE, v, "messages")?,
        )?);
    }
    let header = match args.get(X_DEDUPLICATION_HEADER) {
        None => None,
        Some(FieldValue::String(h)) if !h.is_empty() => Some(h.clone()),
        Some(other) => {
            return Err(invalid(
                X_DEDUPLICATION_HEADER,
                format!(
                    "expected a header name (a non-empty string), got {}",
                    super::redeclare::user_value(other)
                ),
            ))
        }
    };
    if !on {
        if let Some(arg) = ARGUMENTS[1..].iter().find(|a| args.contains_key(**a)) {
            return Err(invalid(
                arg,
                format!("has no effect without {X_MESSAGE_DEDUPLICATION}=true"),
            ));
        }
        return Ok(None);
    }
    if ttl_ms.is_none() && count.is_none() {
        return Err(invalid(
            X_MESSAGE_DEDUPLICATION,
            format!(
                "needs a window: {X_DEDUPLICATION_WINDOW} (a duration such as \"10m\", or a \
                 count of messages), or {X_CACHE_TTL} / {X_CACHE_SIZE}"
            ),
        ));
    }
    Ok(Some(DedupConfig {
        ttl_ms,
        max_keys: count.unwrap_or(DEFAULT_TIME_WINDOW_KEYS),
        header,
    }))
}

pub use crate::store::{
    dedup_scope_of_exchange as exchange_scope, dedup_scope_of_queue as queue_scope,
};

/// A message's deduplication key under `config`: the configured header's value; with no
/// header configured, the message's own `x-deduplication-header` header (how publishers of
/// RabbitMQ's plugin send the key) or else its `message_id`. A header value counts as a
/// string as it is, an integer in decimal, anything else as printed. `None`: it has no key
/// and is not deduplicated.
pub fn key_of<'a>(config: &DedupConfig, properties: &'a Properties) -> Option<KeyRef<'a>> {
    let header = |name: &str| -> Option<KeyRef<'a>> {
        if properties.headers.is_empty() {
            return None;
        }
        Some(match properties.headers.get(name)? {
            // Decoded from the encoded headers, so owned.
            FieldValue::String(s) => KeyRef::Owned(s),
            FieldValue::Int(n) => KeyRef::Owned(n.to_string()),
            other => KeyRef::Owned(super::redeclare::user_value(&other)),
        })
    };
    match &config.header {
        Some(h) => header(h),
        None => header(X_DEDUPLICATION_HEADER)
            .or_else(|| properties.message_id.as_deref().map(KeyRef::Borrowed)),
    }
}

/// A key, borrowed from the message where it can be (a `message_id`; header values are
/// decoded, so owned).
#[derive(Debug)]
pub enum KeyRef<'a> {
    /// Taken as it is from the message.
    Borrowed(&'a str),
    /// Rendered from a non-string header.
    Owned(String),
}

impl KeyRef<'_> {
    /// The key.
    pub fn as_str(&self) -> &str {
        match self {
            KeyRef::Borrowed(s) => s,
            KeyRef::Owned(s) => s,
        }
    }
}

/// One accepted key, as a publish carries it to its commit: written to the store when the
/// message is, forgotten again if the publish is refused.
#[derive(Debug)]
pub struct Mark {
    /// The window.
    pub window: Arc<Dedup>,
    /// The key.
    pub key: Arc<str>,
    /// Its entry in the window (so forgetting it cannot forget a later acceptance).
    pub seq: u64,
    /// When it leaves the window (ms since the epoch; 0: by count only).
    pub expires_at: u64,
    /// Keys the window evicted (oldest first) to make room: their store rows go too.
    pub evicted: Vec<Arc<str>>,
}

/// How many exchange windows exist in this process: while there are none (the usual case),
/// a publish skips looking its exchange up a second time for its window.
static EXCHANGE_WINDOWS: AtomicUsize = AtomicUsize::new(0);

/// One exchange's or queue's window of accepted keys.
#[derive(Debug)]
pub struct Dedup {
    /// Its configuration.
    pub config: DedupConfig,
    /// Its store scope ([`exchange_scope`], [`queue_scope`]).
    pub scope: Arc<str>,
    /// Whether its keys are written to the store (its exchange or queue is durable).
    pub durable: bool,
    state: Mutex<Window>,
    /// Counted in [`EXCHANGE_WINDOWS`].
    exchange: bool,
}

impl Drop for Dedup {
    fn drop(&mut self) {
        if self.exchange {
            EXCHANGE_WINDOWS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    /// Live keys, each with its entry's sequence number.
    keys: HashMap<Arc<str>, u64>,
    /// Entries in acceptance order: `(seq, expires at, key)`. May hold entries whose key was
    /// forgotten or re-accepted since; those are skipped when they reach the front.
    order: VecDeque<(u64, u64, Arc<str>)>,
    next_seq: u64,
}

impl Window {
    fn expire(&mut self, now: u64) {
        while let Some((seq, at, _)) = self.order.front() {
            if *at == 0 || *at > now {
                break;
            }
            let seq = *seq;
            if let Some((_, _, key)) = self.order.pop_front() {
                if self.keys.get(&key) == Some(&seq) {
                    self.keys.remove(&key);
                }
            }
        }
    }

    fn insert(
        &mut self,
        key: Arc<str>,
        expires_at: u64,
        max: u64,
        evicted: &mut Vec<Arc<str>>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.keys.insert(key.clone(), seq);
        self.order.push_back((seq, expires_at, key));
        while self.keys.len() as u64 > max {
            let Some((s, _, k)) = self.order.pop_front() else {
                break;
            };
            if self.keys.get(&k) == Some(&s) {
                self.keys.remove(&k);
                evicted.push(k);
            }
        }
        seq
    }
}

impl Dedup {
    /// An empty window.
    pub fn new(config: DedupConfig, scope: Arc<str>, durable: bool) -> Arc<Dedup> {
        let exchange = scope.starts_with("e/");
        if exchange {
            EXCHANGE_WINDOWS.fetch_add(1, Ordering::Relaxed);
        }
        Arc::new(Dedup {
            config,
            scope,
            durable,
            state: Mutex::new(Window::default()),
            exchange,
        })
    }

    /// Accepts `key` at `now` unless the window already holds it: `None` means a duplicate.
    pub fn admit(self: &Arc<Self>, key: &str, now: u64) -> Option<Mark> {
        let mut w = self.state.lock();
        w.expire(now);
        if w.keys.contains_key(key) {
            return None;
        }
        let expires_at = self
            .config
            .ttl_ms
            .map_or(0, |ttl| now.saturating_add(ttl).max(1));
        let key: Arc<str> = key.into();
        let mut evicted = Vec::new();
        let seq = w.insert(key.clone(), expires_at, self.config.max_keys, &mut evicted);
        Some(Mark {
            window: self.clone(),
            key,
            seq,
            expires_at,
            evicted,
        })
    }

    /// Forgets an accepted key whose publish was refused, so the publisher's retry is taken.
    pub fn forget(&self, key: &str, seq: u64) {
        let mut w = self.state.lock();
        if w.keys.get(key) == Some(&seq) {
            w.keys.remove(key);
        }
    }

    /// Loads keys found in the store: `(key, message id, expires at)`, in any order; those
    /// expired by `now` are skipped, and past the count the oldest (by message id) are.
    pub fn restore(&self, mut keys: Vec<(String, u64, u64)>, now: u64) {
        keys.sort_by_key(|(_, id, _)| *id);
        let mut w = self.state.lock();
        let mut evicted = Vec::new();
        for (key, _, expires_at) in keys {
            if expires_at != 0 && expires_at <= now {
                continue;
            }
            w.insert(key.into(), expires_at, self.config.max_keys, &mut evicted);
        }
    }

    /// How many keys the window holds now.
    pub fn len(&self) -> usize {
        self.state.lock().keys.len()
    }

    /// Whether the window holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Broker {
    /// Checks a routed publish against the windows of its exchange and of its target queues.
    /// The exchange is checked first: a duplicate there is routed nowhere. A queue that
    /// already holds the key is dropped from `targets` (the message may still enter the
    /// others). Each window that accepts the key leaves a [`Mark`] in `marks`. Returns true
    /// when the publish is a duplicate: of its exchange, or of every queue it was routed to.
    ///
    /// # Errors
    /// A deduplication key longer than [`MAX_KEY_BYTES`].
    pub(super) fn deduplicate(
        &self,
        vh: &VHost,
        p: &Publish,
        targets: &mut Vec<Arc<Queue>>,
        now: &mut LazyNow<'_>,
        marks: &mut Vec<Mark>,
    ) -> Result<bool, BrokerError> {
        let exchange = if p.exchange.is_empty() || EXCHANGE_WINDOWS.load(Ordering::Relaxed) == 0 {
            None
        } else {
            vh.exchange(&p.exchange).and_then(|e| e.dedup.clone())
        };
        if exchange.is_none() && !targets.iter().any(|q| q.dedup.is_some()) {
            return Ok(false);
        }
        if let Some(w) = exchange {
            if let Some(key) = key_of(&w.config, &p.properties) {
                let key = checked(key.as_str())?;
                match w.admit(key, now.get()) {
                    Some(mark) => marks.push(mark),
                    None => return Ok(true),
                }
            }
        }
        let before = targets.len();
        let mut error = None;
        targets.retain(|q| {
            let Some(w) = &q.dedup else {
                return true;
            };
            let Some(key) = key_of(&w.config, &p.properties) else {
                return true;
            };
            let key = match checked(key.as_str()) {
                Ok(k) => k,
                Err(e) => {
                    error = Some(e);
                    return true;
                }
            };
            match w.admit(key, now.get()) {
                Some(mark) => {
                    marks.push(mark);
                    true
                }
                None => false,
            }
        });
        if let Some(e) = error {
            for m in marks.iter() {
                m.window.forget(&m.key, m.seq);
            }
            return Err(e);
        }
        Ok(before > 0 && targets.is_empty())
    }

    /// Refills the windows of the recovered durable exchanges and queues with the keys the
    /// store kept (by scope); keys of windows that no longer exist are left for the next
    /// delete of their scope, or ignored.
    pub(super) fn restore_dedup_windows(&self, mut keys: HashMap<String, Vec<(String, u64, u64)>>) {
        if keys.is_empty() {
            return;
        }
        let now = self.clock().now_ms();
        let mut windows: Vec<Arc<Dedup>> = Vec::new();
        let vhosts: Vec<_> = self.inner.vhosts.read().values().cloned().collect();
        for vh in vhosts {
            windows.extend(vh.exchanges.read().values().filter_map(|e| e.dedup.clone()));
            windows.extend(vh.queues.read().values().filter_map(|q| q.dedup.clone()));
        }
        let mut restored = 0usize;
        for w in windows.iter().filter(|w| w.durable) {
            if let Some(k) = keys.remove(&*w.scope) {
                w.restore(k, now);
                restored += w.len();
            }
        }
        tracing::info!(keys = restored, "recovered deduplication windows");
    }

    /// Confirms a duplicate publish, through the store writer so the confirm follows the
    /// commit of every publish handed over before it (the message it repeats among them).
    pub(super) async fn confirm_duplicate(
        &self,
        session: &Session,
        request_id: RequestId,
        p: Publish,
    ) -> Result<(), BrokerError> {
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        let confirm = ReplySlot::for_publish(session.replies.clone(), request_id, p.no_confirm);
        let message = Arc::new(Message {
            write: Default::default(),
            exchange: p.exchange,
            routing_key: p.routing_key,
            properties: p.properties,
            body: p.body,
        });
        self.inner
            .store
            .publish(duplicate_op(message, confirm))
            .await?;
        Ok(())
    }
}

/// A key within [`MAX_KEY_BYTES`].
fn checked(key: &str) -> Result<&str, BrokerError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(BrokerError::PreconditionFailed(format!(
            "deduplication key of {} bytes is longer than the {MAX_KEY_BYTES} bytes allowed",
            key.len()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn s(t: &str) -> FieldValue {
        FieldValue::String(t.into())
    }

    #[test]
    fn arguments_parse_and_refuse() {
        let on = (X_MESSAGE_DEDUPLICATION, FieldValue::Bool(true));
        assert_eq!(parse(&FieldTable::new()), Ok(None));
        let c = parse(&table(&[on.clone(), (X_DEDUPLICATION_WINDOW, s("10m"))]))
            .unwrap()
            .unwrap();
        assert_eq!(c.ttl_ms, Some(600_000));
        assert_eq!(c.max_keys, DEFAULT_TIME_WINDOW_KEYS);
        let c = parse(&table(&[
            on.clone(),
            (X_DEDUPLICATION_WINDOW, FieldValue::Int(5)),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((c.ttl_ms, c.max_keys), (None, 5));
        let c = parse(&table(&[
            on.clone(),
            (X_CACHE_TTL, FieldValue::Int(1000)),
            (X_CACHE_SIZE, FieldValue::Int(7)),
            (X_DEDUPLICATION_HEADER, s("order")),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            c,
            DedupConfig {
                ttl_ms: Some(1000),
                max_keys: 7,
                header: Some("order".into())
            }
        );
        for bad in [
            table(std::slice::from_ref(&on)),
            table(&[on.clone(), (X_DEDUPLICATION_WINDOW, s("100"))]),
            table(&[on.clone(), (X_DEDUPLICATION_WINDOW, s("soon"))]),
            table(&[on.clone(), (X_DEDUPLICATION_WINDOW, FieldValue::Int(0))]),
            table(&[on.clone(), (X_DEDUPLICATION_WINDOW, FieldValue::Int(-3))]),
            table(&[
                on.clone(),
                (X_DEDUPLICATION_WINDOW, s("1s")),
                (X_CACHE_TTL, FieldValue::Int(5)),
            ]),
            table(&[on.clone(), (X_CACHE_SIZE, FieldValue::Int(20_000_000))]),
            table(&[
                on.clone(),
                (X_CACHE_SIZE, FieldValue::Int(2)),
                (X_DEDUPLICATION_HEADER, s("")),
            ]),
            table(&[(X_MESSAGE_DEDUPLICATION, s("yes"))]),
            table(&[(X_DEDUPLICATION_WINDOW, s("1m"))]),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} should be refused");
        }
    }

    fn window(ttl_ms: Option<u64>, max_keys: u64) -> Arc<Dedup> {
        Dedup::new(
            DedupConfig {
                ttl_ms,
                max_keys,
                header: None,
            },
            "e/x".into(),
            true,
        )
    }

    #[test]
    fn a_time_window_forgets_keys_once_they_expire() {
        let w = window(Some(100), 10);
        assert!(w.admit("a", 1000).is_some());
        assert!(w.admit("a", 1099).is_none(), "within the window");
        assert!(w.admit("a", 1100).is_some(), "expired at accept + window");
    }

    #[test]
    fn a_count_window_evicts_the_oldest() {
        let w = window(None, 2);
        assert!(w.admit("a", 0).is_some());
        assert!(w.admit("b", 0).is_some());
        let m = w.admit("c", 0).expect("new key");
        assert_eq!(m.evicted, vec![Arc::<str>::from("a")]);
        assert!(w.admit("b", 0).is_none());
        assert!(w.admit("a", 0).is_some(), "evicted, so new again");
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_forgotten_key_is_accepted_again_but_only_that_acceptance_is_forgotten() {
        let w = window(None, 10);
        let first = w.admit("a", 0).expect("new");
        w.forget("a", first.seq);
        let second = w.admit("a", 0).expect("forgotten, so new");
        w.forget("a", first.seq);
        assert!(w.admit("a", 0).is_none(), "the second acceptance stands");
        assert_ne!(first.seq, second.seq);
    }

    #[test]
    fn restore_keeps_the_newest_within_the_window() {
        let w = window(Some(1000), 2);
        w.restore(
            vec![
                ("old".into(), 1, 500),
                ("b".into(), 3, 5000),
                ("a".into(), 2, 5000),
                ("c".into(), 4, 0),
            ],
            1000,
        );
        assert!(w.admit("old", 1000).is_some(), "expired");
        // "a" was the oldest live key, then "old" pushed "b" out too.
        assert!(w.admit("c", 1000).is_none());
    }
}
