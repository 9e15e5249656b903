//! Routing through graphs of exchanges with loops, against a reference.
//!
//! Random graphs of exchanges of every kind are bound to each other (cycles and self-loops
//! allowed) and to queues, some with alternate exchanges (which may be themselves, part of
//! a cycle, or missing); random messages are routed by [`Broker::route`], the entry point
//! every publish goes through, on a real broker. The reference is a plain breadth-first
//! walk with a visited set, written from RabbitMQ's rules rather than from Warren's code:
//! an exchange routes to whatever its bindings match (queues and exchanges), sends the
//! message to its alternate only when none of them match, and each exchange is visited and
//! each queue chosen at most once.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use warren_protocol::{
    ExchangeBind, ExchangeDeclare, ExchangeKind, FieldTable, FieldValue, QueueBind, QueueDeclare,
};

use crate::broker::session::Session;
use crate::broker::{Broker, BrokerConfig};

const KINDS: [ExchangeKind; 4] = [
    ExchangeKind::Direct,
    ExchangeKind::Fanout,
    ExchangeKind::Topic,
    ExchangeKind::Headers,
];

/// Where a binding leads.
#[derive(Debug, Clone)]
enum Dest {
    Queue(usize),
    Exchange(usize),
}

/// An exchange's alternate: another exchange of the graph (possibly itself) or a name that
/// was never declared.
#[derive(Debug, Clone)]
enum Alternate {
    Exchange(usize),
    Missing,
}

#[derive(Debug, Clone)]
struct Bind {
    source: usize,
    dest: Dest,
    key: String,
    arguments: FieldTable,
}

#[derive(Debug, Clone)]
struct Message {
    exchange: usize,
    key: String,
    headers: FieldTable,
}

#[derive(Debug, Clone)]
struct Graph {
    exchanges: Vec<(ExchangeKind, Option<Alternate>)>,
    queues: usize,
    binds: Vec<Bind>,
    messages: Vec<Message>,
}

/// Binding keys: literal words, `*` and `#` (up to three `#`, so some are refused).
fn binding_key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 0..=3)
        .prop_map(|w| w.join("."))
}

fn routing_key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..=3)
        .prop_map(|w| w.join("."))
}

fn header_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        Just(FieldValue::String("a".into())),
        Just(FieldValue::String("b".into())),
    ]
}

/// Headers-binding arguments: any `x-match` mode (or none) and up to two wanted headers,
/// one of them an `x-` header that only the `-with-x` modes look at; a void value asks
/// for presence.
fn binding_arguments() -> impl Strategy<Value = FieldTable> {
    let mode = prop::option::of(prop::sample::select(vec![
        "all",
        "any",
        "all-with-x",
        "any-with-x",
    ]));
    let wanted = prop::collection::btree_map(
        prop::sample::select(vec!["h1", "h2", "x-h"]).prop_map(str::to_owned),
        prop_oneof![header_value(), Just(FieldValue::Void)],
        0..=2,
    );
    (mode, wanted).prop_map(|(mode, mut args)| {
        if let Some(m) = mode {
            args.insert("x-match".into(), FieldValue::String(m.into()));
        }
        args
    })
}

/// `CC` or `BCC`: one key as a string or several as a list (both are taken).
fn extra_keys() -> impl Strategy<Value = Option<FieldValue>> {
    prop::option::weighted(
        0.3,
        prop_oneof![
            routing_key().prop_map(FieldValue::String),
            prop::collection::vec(routing_key().prop_map(FieldValue::String), 0..=2)
                .prop_map(FieldValue::List),
        ],
    )
}

fn message_headers() -> impl Strategy<Value = FieldTable> {
    (
        prop::collection::btree_map(
            prop::sample::select(vec!["h1", "h2", "x-h"]).prop_map(str::to_owned),
            header_value(),
            0..=3,
        ),
        extra_keys(),
        extra_keys(),
    )
        .prop_map(|(mut headers, cc, bcc)| {
            if let Some(cc) = cc {
                headers.insert("CC".into(), cc);
            }
            if let Some(bcc) = bcc {
                headers.insert("BCC".into(), bcc);
            }
            headers
        })
}

fn graph() -> impl Strategy<Value = Graph> {
    (1usize..=6, 0usize..=5).prop_flat_map(|(n_ex, n_q)| {
        let alternate = prop::option::weighted(
            0.35,
            prop_oneof![
                4 => (0..n_ex).prop_map(Alternate::Exchange),
                1 => Just(Alternate::Missing),
            ],
        );
        let exchanges =
            prop::collection::vec((prop::sample::select(KINDS.to_vec()), alternate), n_ex);
        let dest = if n_q == 0 {
            (0..n_ex).prop_map(Dest::Exchange).boxed()
        } else {
            prop_oneof![
                (0..n_q).prop_map(Dest::Queue),
                (0..n_ex).prop_map(Dest::Exchange),
            ]
            .boxed()
        };
        let bind = (0..n_ex, dest, binding_key(), binding_arguments()).prop_map(
            |(source, dest, key, arguments)| Bind {
                source,
                dest,
                key,
                arguments,
            },
        );
        let message =
            (0..n_ex, routing_key(), message_headers()).prop_map(|(exchange, key, headers)| {
                Message {
                    exchange,
                    key,
                    headers,
                }
            });
        (
            exchanges,
            prop::collection::vec(bind, 0..=14),
            prop::collection::vec(message, 1..=6),
        )
            .prop_map(move |(exchanges, binds, messages)| Graph {
                exchanges,
                queues: n_q,
                binds,
                messages,
            })
    })
}

/// Whether the broker takes this binding: topic keys with more than two `#` are refused.
fn accepted(g: &Graph, b: &Bind) -> bool {
    g.exchanges[b.source].0 != ExchangeKind::Topic
        || b.key.split('.').filter(|w| *w == "#").count() <= 2
}

/// RabbitMQ's split: the empty key is no words; otherwise words between dots.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

fn topic_matches(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| topic_matches(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && topic_matches(rest, &key[1..]),
        Some((word, rest)) => key.first() == Some(word) && topic_matches(rest, &key[1..]),
    }
}

fn headers_match(arguments: &FieldTable, headers: &FieldTable) -> bool {
    let mode = match arguments.get("x-match") {
        Some(FieldValue::String(m)) => m.as_str(),
        _ => "all",
    };
    let with_x = mode.ends_with("-with-x");
    let all = mode.starts_with("all");
    let wanted: Vec<(&String, &FieldValue)> = arguments
        .iter()
        .filter(|(k, _)| {
            if with_x {
                *k != "x-match"
            } else {
                !k.starts_with("x-")
            }
        })
        .collect();
    if wanted.is_empty() {
        return all;
    }
    let hit = |(k, v): &(&String, &FieldValue)| match headers.get(*k) {
        None => false,
        Some(h) => *v == &FieldValue::Void || *v == h,
    };
    if all {
        wanted.iter().all(hit)
    } else {
        wanted.iter().any(hit)
    }
}

fn binding_matches(kind: ExchangeKind, b: &Bind, keys: &[String], headers: &FieldTable) -> bool {
    match kind {
        ExchangeKind::Fanout => true,
        ExchangeKind::Direct => keys.contains(&b.key),
        ExchangeKind::Topic => keys
            .iter()
            .any(|k| topic_matches(&words(&b.key), &words(k))),
        ExchangeKind::Headers => headers_match(&b.arguments, headers),
    }
}

/// The routing key plus the keys of `CC` and `BCC`.
fn all_keys(m: &Message) -> Vec<String> {
    let mut keys = vec![m.key.clone()];
    for name in ["CC", "BCC"] {
        match m.headers.get(name) {
            Some(FieldValue::String(k)) => keys.push(k.clone()),
            Some(FieldValue::List(ks)) => {
                keys.extend(ks.iter().filter_map(|k| k.as_str()).map(str::to_owned))
            }
            _ => {}
        }
    }
    keys
}

/// The queues (by index) a message reaches: breadth first from its exchange.
fn reference(g: &Graph, m: &Message) -> BTreeSet<usize> {
    let keys = all_keys(m);
    let mut visited = BTreeSet::from([m.exchange]);
    let mut pending = VecDeque::from([m.exchange]);
    let mut queues = BTreeSet::new();
    while let Some(e) = pending.pop_front() {
        let kind = g.exchanges[e].0;
        let mut next = Vec::new();
        let mut matched = false;
        for b in g.binds.iter().filter(|b| b.source == e && accepted(g, b)) {
            if binding_matches(kind, b, &keys, &m.headers) {
                matched = true;
                match b.dest {
                    Dest::Queue(q) => {
                        queues.insert(q);
                    }
                    Dest::Exchange(x) => next.push(x),
                }
            }
        }
        if !matched {
            if let Some(Alternate::Exchange(x)) = g.exchanges[e].1 {
                next.push(x);
            }
        }
        for x in next {
            if visited.insert(x) {
                pending.push_back(x);
            }
        }
    }
    queues
}

/// Declares the graph under fresh names (`g<case>-e<i>`, `g<case>-q<j>`), all transient so
/// no case touches the disk, then routes each message and compares with the reference.
async fn check(broker: &Broker, session: &Session, case: u64, g: &Graph) -> Result<(), String> {
    let ex = |i: usize| format!("g{case}-e{i}");
    let q = |j: usize| format!("g{case}-q{j}");
    for (i, (kind, alternate)) in g.exchanges.iter().enumerate() {
        let mut arguments = FieldTable::new();
        match alternate {
            Some(Alternate::Exchange(x)) => {
                arguments.insert("alternate-exchange".into(), FieldValue::String(ex(*x)));
            }
            Some(Alternate::Missing) => {
                let missing = format!("g{case}-missing");
                arguments.insert("alternate-exchange".into(), FieldValue::String(missing));
            }
            None => {}
        }
        broker
            .declare_exchange(
                session,
                ExchangeDeclare {
                    name: ex(i),
                    kind: *kind,
                    durable: false,
                    passive: false,
                    auto_delete: false,
                    internal: false,
                    arguments,
                },
            )
            .await
            .map_err(|e| format!("declaring {}: {e}", ex(i)))?;
    }
    for j in 0..g.queues {
        broker
            .declare_queue(
                session,
                QueueDeclare {
                    name: q(j),
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    passive: false,
                    arguments: FieldTable::new(),
                },
            )
            .await
            .map_err(|e| format!("declaring {}: {e}", q(j)))?;
    }
    for b in &g.binds {
        let result = match b.dest {
            Dest::Queue(j) => {
                broker
                    .bind(
                        session,
                        QueueBind {
                            queue: q(j),
                            exchange: ex(b.source),
                            routing_key: b.key.clone(),
                            arguments: b.arguments.clone(),
                        },
                    )
                    .await
            }
            Dest::Exchange(x) => {
                broker
                    .bind_exchange(
                        session,
                        ExchangeBind {
                            destination: ex(x),
                            source: ex(b.source),
                            routing_key: b.key.clone(),
                            arguments: b.arguments.clone(),
                        },
                    )
                    .await
            }
        };
        if result.is_ok() != accepted(g, b) {
            return Err(format!("binding {b:?}: {result:?}"));
        }
    }
    for m in &g.messages {
        let routed = broker
            .route(
                &session.vhost,
                &ex(m.exchange),
                &m.key,
                &(&m.headers).into(),
            )
            .map_err(|e| format!("routing {m:?}: {e}"))?;
        let names: Vec<&str> = routed.iter().map(|q| &*q.name).collect();
        let got: BTreeSet<&str> = names.iter().copied().collect();
        if got.len() != names.len() {
            return Err(format!("{m:?} reached a queue twice: {names:?}"));
        }
        let want_names: Vec<String> = reference(g, m).into_iter().map(q).collect();
        let want: BTreeSet<&str> = want_names.iter().map(String::as_str).collect();
        if got != want {
            return Err(format!(
                "{m:?}: the broker routed to {got:?}, the reference to {want:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn routing_through_exchange_graphs_with_loops_matches_a_breadth_first_reference() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = rt
        .block_on(Broker::open(BrokerConfig {
            data_dir: dir.path().to_owned(),
            queue_window_bytes: super::super::DEFAULT_QUEUE_WINDOW_BYTES,
            consumer_timeout: None,
            clock: Arc::new(crate::clock::SystemClock),
            disk_free_limit: 0,
            limits: Default::default(),
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store_quick_repair: false,
            recovery: Default::default(),
        }))
        .expect("broker");
    let (outbound, _events) = crate::broker::outbox::outbox();
    let session = broker.new_session(
        "route-tests".into(),
        crate::broker::access::Principal::internal(),
        outbound,
    );
    let cases = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config::with_cases(500));
    let result = runner.run(&graph(), |g| {
        // Each case gets its own names, so shrinking reruns never meet an earlier case.
        let case = cases.fetch_add(1, Ordering::Relaxed);
        rt.block_on(check(&broker, &session, case, &g))
            .map_err(TestCaseError::fail)
    });
    rt.block_on(broker.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}
