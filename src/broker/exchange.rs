//! [`Exchange`]: routes a message to queues through its bindings, by kind: direct (key
//! equality), fanout (all), topic (a trie of dotted-word patterns) and headers (`x-match`).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use warren_protocol::{ExchangeKind, FieldTable, FieldValue, Headers};

use super::queue::Queue;
use super::topic_trie::TopicTrie;
use crate::error::BrokerError;

/// A queue reference that compares by queue id, for sets and the topic trie.
#[derive(Debug, Clone)]
struct QueueRef(Arc<Queue>);

impl PartialEq for QueueRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for QueueRef {}
impl Hash for QueueRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// One binding from an exchange to a queue.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Destination.
    pub queue: Arc<Queue>,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// One binding from an exchange to another exchange (AMQP's `exchange.bind`): what it
/// matches is routed on by the destination. The destination is held by name, so a loop of
/// bindings is no loop of references; routing looks it up.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeBinding {
    /// Destination exchange.
    pub destination: Arc<str>,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// How a headers binding matches: every header or any one, and whether the binding's `x-`
/// keys take part (`all-with-x`, `any-with-x`, as RabbitMQ 3.10+) or are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct XMatch {
    all: bool,
    with_x: bool,
}

/// An exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Name.
    pub name: Arc<str>,
    /// Routing kind.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// Predeclared by the broker (`amq.*`): cannot be deleted.
    pub builtin: bool,
    /// Deleted when its last binding as a source is removed (RabbitMQ's auto-delete: an
    /// exchange that never had a binding stays).
    pub auto_delete: bool,
    /// Clients cannot publish to it; only exchange-to-exchange bindings, alternates and
    /// dead-lettering route through it.
    pub internal: bool,
    /// Its `alternate-exchange` argument, when that is valid.
    pub alternate: Option<Arc<str>>,
    /// Its deduplication window, when `x-message-deduplication` is on: checked before
    /// routing, so a duplicate is routed nowhere.
    pub dedup: Option<Arc<super::dedup::Dedup>>,
    bindings: RwLock<Bindings>,
    /// Whether it has a binding to an exchange: read without the lock on every publish, so
    /// exchanges without one route exactly as before.
    has_exchange_bindings: AtomicBool,
}

#[derive(Debug, Default)]
struct Bindings {
    all: Vec<Binding>,
    direct: foldhash::HashMap<String, Vec<QueueRef>>,
    topic: TopicTrie<QueueRef>,
    /// Bindings to exchanges, in binding order.
    exchanges: Vec<ExchangeBinding>,
    /// For a topic exchange: the destination exchanges by binding key.
    exchanges_topic: TopicTrie<Arc<str>>,
}

/// The exchange argument naming an alternate exchange (RabbitMQ's AE): a message that none
/// of the exchange's bindings take is routed through it instead (docs/routing.md).
pub const ALTERNATE_EXCHANGE: &str = "alternate-exchange";

/// The `x-` arguments of an exchange declaration, in key order, that Warren does not
/// implement: every one but the deduplication arguments (`dedup.rs`).
pub fn unsupported_arguments(arguments: &FieldTable) -> Vec<&str> {
    arguments
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("x-") && !super::dedup::ARGUMENTS.contains(k))
        .collect()
}

/// Refuses an exchange declaration carrying an `x-` argument, naming it, or an
/// `alternate-exchange` that is not an exchange name; other arguments without the `x-`
/// prefix are stored and ignored, as for queues.
///
/// # Errors
/// [`BrokerError::PreconditionFailed`] naming the first `x-` argument in key order, or
/// `alternate-exchange`, and the exchange `name`.
pub fn validate_arguments(name: &str, arguments: &FieldTable) -> Result<(), BrokerError> {
    let of = format_args!("exchange '{name}'");
    if let Some(arg) = unsupported_arguments(arguments).first() {
        return Err(BrokerError::invalid_arg(
            arg,
            of,
            super::queue_args::NOT_IMPLEMENTED_REASON,
        ));
    }
    super::dedup::parse(arguments).map_err(|e| e.refusal(of))?;
    alternate_exchange_named(arguments, of).map(drop)
}

/// The alternate exchange an exchange's arguments name, if any.
///
/// # Errors
/// [`BrokerError::PreconditionFailed`] when `alternate-exchange` is not a non-empty string
/// that could name an exchange (the default exchange cannot be an alternate).
pub fn alternate_exchange(arguments: &FieldTable) -> Result<Option<&str>, BrokerError> {
    alternate_exchange_named(arguments, "exchange")
}

fn alternate_exchange_named(
    arguments: &FieldTable,
    of: impl std::fmt::Display,
) -> Result<Option<&str>, BrokerError> {
    let invalid = |reason: String| Err(BrokerError::invalid_arg(ALTERNATE_EXCHANGE, &of, &reason));
    match arguments.get(ALTERNATE_EXCHANGE) {
        None => Ok(None),
        Some(FieldValue::String(name)) if name.is_empty() => {
            invalid("expected the name of an exchange, got the empty string".into())
        }
        Some(FieldValue::String(name)) => match super::validate_name("exchange", name) {
            Ok(()) => Ok(Some(name)),
            Err(BrokerError::InvalidArgument { reason, .. }) => invalid(reason),
            Err(e) => invalid(e.to_string()),
        },
        Some(other) => invalid(format!(
            "expected the name of an exchange (a string), got {other:?}"
        )),
    }
}

const X_MATCH_ALL: XMatch = XMatch {
    all: true,
    with_x: false,
};

/// The most `#` words a topic binding key may have. RabbitMQ 4.3.5 refuses more: each `#`
/// multiplies the ways a key can match, and the trie walk with it.
pub const MAX_TOPIC_HASH_WORDS: usize = 2;

/// How many `#` words a topic binding key has.
pub fn topic_hash_words(binding_key: &str) -> usize {
    binding_key.split('.').filter(|w| *w == "#").count()
}

/// Refuses a topic binding key with more than [`MAX_TOPIC_HASH_WORDS`] `#` words, as
/// RabbitMQ does; other kinds take any key. Only new bindings are checked: unbinding such a
/// key, or loading one stored by an earlier Warren, is allowed.
///
/// # Errors
/// [`BrokerError::PreconditionFailed`] naming the key.
pub fn validate_binding_key(kind: ExchangeKind, binding_key: &str) -> Result<(), BrokerError> {
    if kind != ExchangeKind::Topic {
        return Ok(());
    }
    let hashes = topic_hash_words(binding_key);
    if hashes > MAX_TOPIC_HASH_WORDS {
        return Err(BrokerError::PreconditionFailed(format!(
            "topic binding key '{binding_key}' has {hashes} '#' words; at most \
             {MAX_TOPIC_HASH_WORDS} are allowed"
        )));
    }
    Ok(())
}

/// Checks a new binding's key and arguments for a source exchange of `kind`: the key by
/// [`validate_binding_key`], and for a headers exchange its `x-match`.
///
/// # Errors
/// [`BrokerError::PreconditionFailed`] for a topic key with too many `#` words or a headers
/// binding with a bad `x-match`.
pub fn validate_binding(
    kind: ExchangeKind,
    routing_key: &str,
    arguments: &FieldTable,
) -> Result<(), BrokerError> {
    validate_binding_key(kind, routing_key)?;
    if kind == ExchangeKind::Headers {
        x_match(arguments)?;
    }
    Ok(())
}

fn x_match(arguments: &FieldTable) -> Result<XMatch, BrokerError> {
    let (all, with_x) = match arguments.get("x-match") {
        None => return Ok(X_MATCH_ALL),
        Some(FieldValue::String(s)) => match s.as_str() {
            "all" => (true, false),
            "any" => (false, false),
            "all-with-x" => (true, true),
            "any-with-x" => (false, true),
            _ => return Err(bad_x_match(arguments)),
        },
        Some(_) => return Err(bad_x_match(arguments)),
    };
    Ok(XMatch { all, with_x })
}

fn bad_x_match(arguments: &FieldTable) -> BrokerError {
    let got = arguments
        .get("x-match")
        .map_or_else(String::new, super::redeclare::user_value);
    BrokerError::invalid_arg(
        "x-match",
        "binding",
        &format!("expected \"all\", \"any\", \"all-with-x\" or \"any-with-x\", got {got}"),
    )
}

/// Whether a header value satisfies a binding value, by value rather than by encoding:
/// integers of any width are equal when their values are, decimals when their values are
/// (`1.5` = `1.50`), floats only with floats of the same width, lists and tables item by
/// item; otherwise the types must match (`true` is not `"true"`, `"1"` is not `1`). A void
/// binding value is handled by the caller (it matches presence).
pub(crate) fn routing_eq(binding: &FieldValue, header: &FieldValue) -> bool {
    use FieldValue as V;
    if let (Some(a), Some(b)) = (binding.as_i128(), header.as_i128()) {
        return a == b;
    }
    match (binding, header) {
        (
            V::Decimal {
                scale: sa,
                value: va,
            },
            V::Decimal {
                scale: sb,
                value: vb,
            },
        ) => decimal_eq((*sa, *va), (*sb, *vb)),
        (V::List(a), V::List(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| routing_eq(x, y))
        }
        (V::Map(a), V::Map(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| routing_eq(x, y)))
        }
        // Same-type scalars (strings, bools, bytes, floats of one width, timestamps, void)
        // compare as themselves; different types never match.
        (a, b) => a == b,
    }
}

/// `va / 10^sa == vb / 10^sb`, exactly; scales too large to align compare as encoded.
fn decimal_eq((sa, va): (u8, i32), (sb, vb): (u8, i32)) -> bool {
    let scale = sa.max(sb);
    let widen = |s: u8, v: i32| {
        10i128
            .checked_pow(u32::from(scale - s))
            .and_then(|m| m.checked_mul(i128::from(v)))
    };
    match (widen(sa, va), widen(sb, vb)) {
        (Some(a), Some(b)) => a == b,
        _ => (sa, va) == (sb, vb),
    }
}

/// The message headers that some binding of a headers exchange names, decoded in one pass
/// over the encoded headers; the others (often the bulk of them) are stepped over.
fn wanted_headers<'a>(
    headers: &Headers,
    bindings: impl Iterator<Item = &'a FieldTable> + Clone,
) -> FieldTable {
    if headers.is_empty() {
        return FieldTable::new();
    }
    headers.select(|k| bindings.clone().any(|b| b.contains_key(k)))
}

fn headers_match(binding: &FieldTable, headers: &FieldTable) -> bool {
    let mode = x_match(binding).unwrap_or(X_MATCH_ALL);
    let mut wanted = binding
        .iter()
        .filter(|(k, _)| {
            if mode.with_x {
                k.as_str() != "x-match"
            } else {
                !k.starts_with("x-")
            }
        })
        .peekable();
    if wanted.peek().is_none() {
        return mode.all;
    }
    let mut hit = |(k, v): (&String, &FieldValue)| match (v, headers.get(k)) {
        (_, None) => false,
        // A void binding value asks only that the header be present.
        (FieldValue::Void, Some(_)) => true,
        (v, Some(h)) => routing_eq(v, h),
    };
    if mode.all {
        wanted.all(&mut hit)
    } else {
        wanted.any(&mut hit)
    }
}

impl Exchange {
    /// A new exchange with no bindings, in virtual host `vhost`.
    pub fn new(
        vhost: &str,
        name: Arc<str>,
        kind: ExchangeKind,
        durable: bool,
        arguments: FieldTable,
        builtin: bool,
    ) -> Exchange {
        let alternate = alternate_exchange(&arguments).ok().flatten().map(Arc::from);
        // Declarations are validated before they get here; a stored exchange whose arguments
        // no longer parse loads without deduplication (recovery warns).
        let dedup = super::dedup::parse(&arguments).ok().flatten().map(|c| {
            super::dedup::Dedup::new(c, super::dedup::exchange_scope(vhost, &name), durable)
        });
        Exchange {
            dedup,
            name,
            kind,
            durable,
            arguments,
            builtin,
            auto_delete: false,
            internal: false,
            alternate,
            bindings: RwLock::new(Bindings::default()),
            has_exchange_bindings: AtomicBool::new(false),
        }
    }

    /// The same exchange with the auto-delete and internal flags set as given.
    #[must_use]
    pub fn flagged(mut self, auto_delete: bool, internal: bool) -> Exchange {
        self.auto_delete = auto_delete;
        self.internal = internal;
        self
    }

    /// Whether it has a binding to the queue `queue_id`.
    pub fn binds_queue(&self, queue_id: u64) -> bool {
        self.bindings
            .read()
            .all
            .iter()
            .any(|b| b.queue.id == queue_id)
    }

    /// Whether it has a binding to the exchange `destination`.
    pub fn binds_exchange(&self, destination: &str) -> bool {
        self.bindings
            .read()
            .exchanges
            .iter()
            .any(|x| &*x.destination == destination)
    }

    /// Checks a new binding's key and arguments for this exchange's kind.
    ///
    /// # Errors
    /// [`BrokerError::PreconditionFailed`] for a headers binding with a bad `x-match`;
    /// [`BrokerError::PreconditionFailed`] for a topic key with too many `#` words
    /// ([`validate_binding_key`]).
    pub fn validate_binding(
        &self,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), BrokerError> {
        validate_binding(self.kind, routing_key, arguments)
    }

    /// Adds a binding; false if an identical one exists.
    pub fn bind(&self, binding: Binding) -> bool {
        let mut b = self.bindings.write();
        if b.all.iter().any(|x| same(x, &binding)) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => {
                // The index holds a (queue, key) pair once, however many argument sets bind it.
                let refs = b.direct.entry(binding.routing_key.clone()).or_default();
                let qref = QueueRef(binding.queue.clone());
                if !refs.contains(&qref) {
                    refs.push(qref);
                }
            }
            ExchangeKind::Topic => {
                b.topic
                    .insert(&binding.routing_key, QueueRef(binding.queue.clone()));
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        b.all.push(binding);
        true
    }

    /// Removes a binding; false if there was none.
    pub fn unbind(&self, queue_id: u64, routing_key: &str, arguments: &FieldTable) -> bool {
        let mut b = self.bindings.write();
        let Some(pos) = b.all.iter().position(|x| {
            x.queue.id == queue_id && x.routing_key == routing_key && &x.arguments == arguments
        }) else {
            return false;
        };
        let removed = b.all.swap_remove(pos);
        // Another binding of the same queue and key (other arguments) still routes: the
        // index entry they share stays until the last of them goes.
        if b.all
            .iter()
            .any(|x| x.queue.id == queue_id && x.routing_key == routing_key)
        {
            return true;
        }
        let qref = QueueRef(removed.queue);
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = b.direct.get_mut(routing_key) {
                    v.retain(|q| q != &qref);
                    if v.is_empty() {
                        b.direct.remove(routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                b.topic.remove(routing_key, &qref);
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        true
    }

    /// Removes every binding to `queue_id` (queue deletion).
    pub fn unbind_queue(&self, queue_id: u64) {
        let doomed: Vec<Binding> = self
            .bindings
            .read()
            .all
            .iter()
            .filter(|b| b.queue.id == queue_id)
            .cloned()
            .collect();
        for b in doomed {
            self.unbind(queue_id, &b.routing_key, &b.arguments);
        }
    }

    /// A copy of its bindings.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().all.clone()
    }

    /// Whether it has any binding, to a queue or to an exchange.
    pub fn has_bindings(&self) -> bool {
        let b = self.bindings.read();
        !b.all.is_empty() || !b.exchanges.is_empty()
    }

    /// Whether it has a binding to an exchange (lock-free).
    pub fn has_exchange_bindings(&self) -> bool {
        self.has_exchange_bindings.load(Ordering::Acquire)
    }

    /// Adds a binding to an exchange; false if an identical one exists.
    pub fn bind_exchange(&self, binding: ExchangeBinding) -> bool {
        let mut b = self.bindings.write();
        if b.exchanges.contains(&binding) {
            return false;
        }
        if self.kind == ExchangeKind::Topic {
            b.exchanges_topic
                .insert(&binding.routing_key, binding.destination.clone());
        }
        b.exchanges.push(binding);
        self.has_exchange_bindings.store(true, Ordering::Release);
        true
    }

    /// Removes a binding to an exchange; false if there was none.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        let mut b = self.bindings.write();
        let Some(pos) = b.exchanges.iter().position(|x| {
            &*x.destination == destination
                && x.routing_key == routing_key
                && &x.arguments == arguments
        }) else {
            return false;
        };
        let removed = b.exchanges.remove(pos);
        let key_still_bound = b
            .exchanges
            .iter()
            .any(|x| x.destination == removed.destination && x.routing_key == routing_key);
        if self.kind == ExchangeKind::Topic && !key_still_bound {
            b.exchanges_topic.remove(routing_key, &removed.destination);
        }
        self.has_exchange_bindings
            .store(!b.exchanges.is_empty(), Ordering::Release);
        true
    }

    /// Removes every binding to the exchange `destination` (its deletion); returns them.
    pub fn unbind_destination(&self, destination: &str) -> Vec<ExchangeBinding> {
        let doomed: Vec<ExchangeBinding> = self
            .bindings
            .read()
            .exchanges
            .iter()
            .filter(|x| &*x.destination == destination)
            .cloned()
            .collect();
        for x in &doomed {
            self.unbind_exchange(destination, &x.routing_key, &x.arguments);
        }
        doomed
    }

    /// A copy of its bindings to exchanges.
    pub fn exchange_bindings(&self) -> Vec<ExchangeBinding> {
        self.bindings.read().exchanges.clone()
    }

    /// Appends the names of the exchanges a message with this key and these headers goes on
    /// to (possibly repeated: the caller keeps a visited set).
    pub fn route_exchanges(&self, routing_key: &str, headers: &Headers, out: &mut Vec<Arc<str>>) {
        let b = self.bindings.read();
        match self.kind {
            ExchangeKind::Direct => out.extend(
                b.exchanges
                    .iter()
                    .filter(|x| x.routing_key == routing_key)
                    .map(|x| x.destination.clone()),
            ),
            ExchangeKind::Fanout => out.extend(b.exchanges.iter().map(|x| x.destination.clone())),
            ExchangeKind::Topic => b.exchanges_topic.route(routing_key, out),
            ExchangeKind::Headers => {
                let headers = wanted_headers(headers, b.exchanges.iter().map(|x| &x.arguments));
                out.extend(
                    b.exchanges
                        .iter()
                        .filter(|x| headers_match(&x.arguments, &headers))
                        .map(|x| x.destination.clone()),
                );
            }
        }
    }

    /// Appends the queues a message with this key and these headers goes to, each once.
    pub fn route(&self, routing_key: &str, headers: &Headers, out: &mut Vec<Arc<Queue>>) {
        let b = self.bindings.read();
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(qs) = b.direct.get(routing_key) {
                    out.extend(qs.iter().map(|q| q.0.clone()));
                }
            }
            ExchangeKind::Fanout => out.extend(b.all.iter().map(|x| x.queue.clone())),
            ExchangeKind::Topic => {
                let mut refs = Vec::new();
                b.topic.route(routing_key, &mut refs);
                out.extend(refs.into_iter().map(|q| q.0));
            }
            ExchangeKind::Headers => {
                let headers = wanted_headers(headers, b.all.iter().map(|x| &x.arguments));
                out.extend(
                    b.all
                        .iter()
                        .filter(|x| headers_match(&x.arguments, &headers))
                        .map(|x| x.queue.clone()),
                );
            }
        }
        // A queue bound twice (two keys, two header sets) still gets one copy.
        if out.len() > 1 {
            out.sort_unstable_by_key(|q| q.id);
            out.dedup_by_key(|q| q.id);
        }
    }
}

fn same(a: &Binding, b: &Binding) -> bool {
    a.queue.id == b.queue.id && a.routing_key == b.routing_key && a.arguments == b.arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn headers_all_and_any() {
        let s = |v: &str| FieldValue::String(v.into());
        let headers = table(&[("format", s("pdf")), ("type", s("report"))]);
        let all = table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        let all_miss = table(&[("format", s("pdf")), ("type", s("log"))]);
        let any = table(&[
            ("x-match", s("any")),
            ("format", s("zip")),
            ("type", s("report")),
        ]);
        let any_miss = table(&[("x-match", s("any")), ("format", s("zip"))]);
        assert!(headers_match(&all, &headers));
        assert!(!headers_match(&all_miss, &headers));
        assert!(headers_match(&any, &headers));
        assert!(!headers_match(&any_miss, &headers));
        assert!(headers_match(&FieldTable::new(), &headers));
        assert!(!headers_match(&table(&[("x-match", s("any"))]), &headers));
        // Typed equality: the integer 1 is not the string "1".
        let int_binding = table(&[("n", FieldValue::Int(1))]);
        assert!(!headers_match(&int_binding, &table(&[("n", s("1"))])));
        assert!(headers_match(
            &int_binding,
            &table(&[("n", FieldValue::Int(1))])
        ));
    }

    #[test]
    fn bad_x_match_is_refused() {
        let args = table(&[("x-match", FieldValue::String("some".into()))]);
        assert!(x_match(&args).is_err());
        let args = table(&[("x-match", FieldValue::Bool(true))]);
        assert!(x_match(&args).is_err());
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            let args = table(&[("x-match", FieldValue::String(ok.into()))]);
            assert!(x_match(&args).is_ok(), "{ok}");
        }
    }

    #[test]
    fn routing_compares_by_value() {
        use FieldValue as V;
        assert!(routing_eq(&V::Int(200), &V::U8(200)));
        assert!(routing_eq(&V::I16(-1), &V::I32(-1)));
        assert!(routing_eq(&V::U64(u64::MAX), &V::U64(u64::MAX)));
        assert!(!routing_eq(&V::Int(-1), &V::U64(u64::MAX)));
        assert!(!routing_eq(&V::Int(1), &V::String("1".into())));
        assert!(!routing_eq(&V::Bool(true), &V::String("true".into())));
        assert!(!routing_eq(&V::Int(1), &V::Float(1.0)));
        assert!(!routing_eq(&V::F32(1.5), &V::Float(1.5)));
        assert!(routing_eq(&V::F32(1.5), &V::F32(1.5)));
        assert!(!routing_eq(&V::Timestamp(5), &V::Int(5)));
        let dec = |scale, value| V::Decimal { scale, value };
        assert!(routing_eq(&dec(1, 15), &dec(2, 150)));
        assert!(!routing_eq(&dec(1, 15), &dec(2, 15)));
        assert!(!routing_eq(&dec(0, 1), &dec(200, 1)));
        assert!(routing_eq(
            &V::List(vec![V::Int(1)]),
            &V::List(vec![V::U8(1)])
        ));
    }

    #[test]
    fn void_matches_presence_and_with_x_modes_see_x_headers() {
        let s = |v: &str| FieldValue::String(v.into());
        let void = table(&[("k", FieldValue::Void)]);
        assert!(headers_match(&void, &table(&[("k", FieldValue::Int(7))])));
        assert!(!headers_match(&void, &table(&[("j", FieldValue::Int(7))])));
        let all_x = table(&[("x-match", s("all-with-x")), ("x-tenant", s("a"))]);
        assert!(headers_match(&all_x, &table(&[("x-tenant", s("a"))])));
        assert!(!headers_match(&all_x, &table(&[("x-tenant", s("b"))])));
        // Plain "all" ignores the x- key, so it matches anything.
        let all = table(&[("x-match", s("all")), ("x-tenant", s("a"))]);
        assert!(headers_match(&all, &table(&[("x-tenant", s("b"))])));
        let any_x = table(&[
            ("x-match", s("any-with-x")),
            ("x-tenant", s("a")),
            ("k", s("v")),
        ]);
        assert!(headers_match(&any_x, &table(&[("x-tenant", s("a"))])));
        assert!(!headers_match(&any_x, &table(&[("x-tenant", s("b"))])));
    }
}
