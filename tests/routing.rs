//! Routing through every exchange kind and the default exchange, over real TCP against the real
//! daemon. Confirms arrive after enqueue, so after a confirmed publish `get` sees the message.

mod common;

use std::collections::BTreeSet;

use common::TestDaemon;
use warren::client::{
    Client, ExchangeKind, ExchangeOptions, FieldValue, OutgoingMessage, PublishOutcome,
    QueueOptions,
};
use warren_protocol::{ErrorCode, FieldTable};

async fn queue(client: &Client, name: &str) {
    client
        .declare_queue(name, QueueOptions::default())
        .await
        .expect("declare queue");
}

async fn publish(client: &Client, exchange: &str, key: &str, body: &str) -> PublishOutcome {
    client
        .publish_and_confirm(OutgoingMessage::new(exchange, key, body.to_owned()))
        .await
        .expect("publish")
}

/// Every body in `queue`, taken with `get`.
async fn drain(client: &Client, queue: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for _ in 0..10_000 {
        match client.get(queue, true).await.expect("get") {
            Some(d) => {
                out.insert(String::from_utf8(d.body.to_vec()).expect("utf8"));
            }
            None => return out,
        }
    }
    panic!("queue {queue} did not drain");
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn direct_exchange_routes_by_exact_key() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("colors", ExchangeKind::Direct, ExchangeOptions::default())
        .await
        .unwrap();
    for (q, key) in [("q1", "red"), ("q2", "green"), ("q3", "red")] {
        queue(&c, q).await;
        c.bind(q, "colors", key, FieldTable::new()).await.unwrap();
    }
    for key in ["red", "green", "blue", "Red"] {
        publish(&c, "colors", key, key).await;
    }
    assert_eq!(drain(&c, "q1").await, set(&["red"]));
    assert_eq!(drain(&c, "q2").await, set(&["green"]));
    assert_eq!(drain(&c, "q3").await, set(&["red"]));
}

#[tokio::test]
async fn fanout_exchange_routes_to_every_bound_queue_once() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("all", ExchangeKind::Fanout, ExchangeOptions::default())
        .await
        .unwrap();
    queue(&c, "f1").await;
    queue(&c, "f2").await;
    c.bind("f1", "all", "", FieldTable::new()).await.unwrap();
    c.bind("f2", "all", "x", FieldTable::new()).await.unwrap();
    // A second binding of the same queue must not duplicate the message.
    c.bind("f2", "all", "y", FieldTable::new()).await.unwrap();
    publish(&c, "all", "whatever", "m1").await;
    publish(&c, "all", "", "m2").await;
    assert_eq!(drain(&c, "f1").await, set(&["m1", "m2"]));
    let mut bodies = Vec::new();
    while let Some(m) = c.get("f2", true).await.unwrap() {
        bodies.push(m.body);
    }
    assert_eq!(
        bodies.len(),
        2,
        "one copy per message even with two bindings"
    );
}

#[tokio::test]
async fn topic_exchange_follows_rabbitmq_word_rules() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("t", ExchangeKind::Topic, ExchangeOptions::default())
        .await
        .unwrap();
    let keys = ["a", "a.b", "a.b.c", "b.a", "a..c", "", ".", "x"];
    let cases: &[(&str, &[&str])] = &[
        // `#` matches zero words.
        ("a.#", &["a", "a.b", "a.b.c", "a..c"]),
        ("#.a", &["a", "b.a"]),
        // `*` matches exactly one word, never zero.
        ("a.*", &["a.b"]),
        // `*` matches an empty word.
        ("a.*.c", &["a.b.c", "a..c"]),
        // Empty words are words.
        ("a..c", &["a..c"]),
        ("#", &["a", "a.b", "a.b.c", "b.a", "a..c", "", ".", "x"]),
        // The empty key has no words (as in RabbitMQ), so `*` does not match it.
        ("*", &["a", "x"]),
        ("*.*", &["a.b", "b.a", "."]),
    ];
    for (i, (pattern, _)) in cases.iter().enumerate() {
        let q = format!("t{i}");
        queue(&c, &q).await;
        c.bind(&q, "t", pattern, FieldTable::new()).await.unwrap();
    }
    for key in keys {
        publish(&c, "t", key, &format!("<{key}>")).await;
    }
    for (i, (pattern, expected)) in cases.iter().enumerate() {
        let want: BTreeSet<String> = expected.iter().map(|k| format!("<{k}>")).collect();
        assert_eq!(
            drain(&c, &format!("t{i}")).await,
            want,
            "pattern {pattern:?}"
        );
    }
}

#[tokio::test]
async fn headers_exchange_matches_all_and_any() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("h", ExchangeKind::Headers, ExchangeOptions::default())
        .await
        .unwrap();
    let s = |v: &str| FieldValue::String(v.into());
    let table = |pairs: Vec<(&str, FieldValue)>| -> FieldTable {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    queue(&c, "h_all").await;
    queue(&c, "h_any").await;
    c.bind(
        "h_all",
        "h",
        "",
        table(vec![
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await
    .unwrap();
    c.bind(
        "h_any",
        "h",
        "",
        table(vec![
            ("x-match", s("any")),
            ("format", s("zip")),
            ("type", s("report")),
        ]),
    )
    .await
    .unwrap();
    let send = |body: &'static str, headers: Vec<(&'static str, FieldValue)>| {
        let mut m = OutgoingMessage::new("h", "ignored", body);
        for (k, v) in headers {
            m = m.header(k, v);
        }
        c.publish_and_confirm(m)
    };
    send("both", vec![("format", s("pdf")), ("type", s("report"))])
        .await
        .unwrap();
    send("any-only", vec![("format", s("zip"))]).await.unwrap();
    send("none", vec![("type", s("log"))]).await.unwrap();
    send(
        "both-extra",
        vec![
            ("format", s("pdf")),
            ("type", s("report")),
            ("n", FieldValue::Int(1)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(drain(&c, "h_all").await, set(&["both", "both-extra"]));
    assert_eq!(
        drain(&c, "h_any").await,
        set(&["both", "any-only", "both-extra"])
    );

    let bad = c
        .bind("h_all", "h", "", table(vec![("x-match", s("some"))]))
        .await
        .unwrap_err();
    assert_eq!(
        bad.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{bad}"
    );
    assert!(
        bad.to_string()
            .contains("invalid arg 'x-match' for binding: expected"),
        "{bad}"
    );
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name_and_cannot_be_bound_or_deleted() {
    let d = TestDaemon::start();
    let c = d.client().await;
    queue(&c, "direct-to-me").await;
    publish(&c, "", "direct-to-me", "hello").await;
    publish(&c, "", "nobody", "lost").await;
    assert_eq!(drain(&c, "direct-to-me").await, set(&["hello"]));

    let err = c
        .bind("direct-to-me", "", "k", FieldTable::new())
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
    let err = c.delete_exchange("", false).await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
    // The connection survives request errors.
    publish(&c, "", "direct-to-me", "again").await;
    assert_eq!(drain(&c, "direct-to-me").await, set(&["again"]));
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_and_plain_unroutable_is_confirmed() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("lonely", ExchangeKind::Direct, ExchangeOptions::default())
        .await
        .unwrap();
    let returned = c
        .publish_and_confirm(OutgoingMessage::new("lonely", "k", "m").mandatory())
        .await
        .unwrap();
    match returned {
        PublishOutcome::Returned { reply_code, .. } => {
            assert_eq!(reply_code, ErrorCode::NoRoute.as_u16());
        }
        other => panic!("expected a return, got {other:?}"),
    }
    let dropped = publish(&c, "lonely", "k", "m").await;
    assert_eq!(dropped, PublishOutcome::Confirmed);

    let err = c
        .publish_and_confirm(OutgoingMessage::new("no-such-exchange", "k", "m"))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound), "{err}");
}

#[tokio::test]
async fn redeclaring_with_other_attributes_is_a_precondition_failure() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("e", ExchangeKind::Topic, ExchangeOptions::default())
        .await
        .unwrap();
    // Same attributes: a no-op.
    c.declare_exchange("e", ExchangeKind::Topic, ExchangeOptions::default())
        .await
        .unwrap();
    let err = c
        .declare_exchange("e", ExchangeKind::Direct, ExchangeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "PRECONDITION_FAILED (406): inequivalent arg 'type' for exchange 'e': received direct, \
         current topic"
    );

    c.declare_queue("q", QueueOptions::default()).await.unwrap();
    c.declare_queue("q", QueueOptions::default()).await.unwrap();
    let err = c
        .declare_queue(
            "q",
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );

    let named = c.declare_queue("", QueueOptions::default()).await.unwrap();
    assert!(named.name.starts_with("amq.gen-"), "{}", named.name);
    let err = c
        .declare_queue("amq.mine", QueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
}

#[tokio::test]
async fn topic_routing_with_many_bindings() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("big", ExchangeKind::Topic, ExchangeOptions::default())
        .await
        .unwrap();
    queue(&c, "hit").await;
    queue(&c, "miss").await;
    // 5,000 bindings that never match, pipelined, plus one that does.
    let mut pending = Vec::new();
    for i in 0..5_000 {
        let c = c.clone();
        pending.push(tokio::spawn(async move {
            c.bind("miss", "big", &format!("svc{i}.*.error"), FieldTable::new())
                .await
        }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    c.bind("hit", "big", "svc-x.#", FieldTable::new())
        .await
        .unwrap();
    publish(&c, "big", "svc-x.eu.error", "m").await;
    assert_eq!(drain(&c, "hit").await, set(&["m"]));
    assert!(drain(&c, "miss").await.is_empty());
}

/// Regression: a queue bound twice with the same key but different arguments stopped
/// receiving altogether when one of the two bindings was removed, although the other was
/// still listed. RabbitMQ keeps routing through the one that remains.
#[tokio::test]
async fn unbinding_one_of_two_bindings_with_the_same_key_keeps_the_other() {
    let d = TestDaemon::start();
    let c = d.client().await;
    for (exchange, kind, key) in [
        ("direct-x", ExchangeKind::Direct, "jobs"),
        ("topic-x", ExchangeKind::Topic, "jobs.*"),
    ] {
        c.declare_exchange(exchange, kind, ExchangeOptions::default())
            .await
            .unwrap();
        let q = format!("{exchange}-q");
        queue(&c, &q).await;
        let args = |v: &str| {
            let mut t = FieldTable::new();
            t.insert("foo".into(), FieldValue::String(v.into()));
            t
        };
        c.bind(&q, exchange, key, args("bar")).await.unwrap();
        c.bind(&q, exchange, key, args("baz")).await.unwrap();
        c.unbind(&q, exchange, key, args("bar")).await.unwrap();
        publish(&c, exchange, "jobs.1", "after-one-unbind").await;
        publish(&c, exchange, "jobs", "after-one-unbind").await;
        assert_eq!(
            drain(&c, &q).await,
            set(&["after-one-unbind"]),
            "{exchange}: the remaining binding routes"
        );
        c.unbind(&q, exchange, key, args("baz")).await.unwrap();
        publish(&c, exchange, "jobs.1", "after-both").await;
        publish(&c, exchange, "jobs", "after-both").await;
        assert!(
            drain(&c, &q).await.is_empty(),
            "{exchange}: no binding left"
        );
    }
}

#[tokio::test]
async fn headers_exchange_compares_typed_values_and_x_match_modes() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("ht", ExchangeKind::Headers, ExchangeOptions::default())
        .await
        .unwrap();
    let s = |v: &str| FieldValue::String(v.into());
    let table = |pairs: Vec<(&str, FieldValue)>| -> FieldTable {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    for (q, args) in [
        ("t_int", table(vec![("n", FieldValue::Int(200))])),
        ("t_bool", table(vec![("flag", FieldValue::Bool(true))])),
        ("t_void", table(vec![("k", FieldValue::Void)])),
        (
            "t_with_x",
            table(vec![("x-match", s("all-with-x")), ("x-tenant", s("a"))]),
        ),
        (
            "t_any_with_x",
            table(vec![
                ("x-match", s("any-with-x")),
                ("x-tenant", s("b")),
                ("n", FieldValue::I32(7)),
            ]),
        ),
    ] {
        queue(&c, q).await;
        c.bind(q, "ht", "", args).await.unwrap();
    }
    let send = |body: &'static str, headers: Vec<(&'static str, FieldValue)>| {
        let mut m = OutgoingMessage::new("ht", "", body);
        for (k, v) in headers {
            m = m.header(k, v);
        }
        c.publish_and_confirm(m)
    };
    send("u8-200", vec![("n", FieldValue::U8(200))])
        .await
        .unwrap();
    send("u64-7", vec![("n", FieldValue::U64(7))])
        .await
        .unwrap();
    send("str-200", vec![("n", s("200"))]).await.unwrap();
    send("bool-true", vec![("flag", FieldValue::Bool(true))])
        .await
        .unwrap();
    send("str-true", vec![("flag", s("true"))]).await.unwrap();
    send("k-bytes", vec![("k", FieldValue::Bytes(vec![1u8].into()))])
        .await
        .unwrap();
    send("k-void", vec![("k", FieldValue::Void)]).await.unwrap();
    send("tenant-a", vec![("x-tenant", s("a"))]).await.unwrap();
    send("tenant-b", vec![("x-tenant", s("b"))]).await.unwrap();
    assert_eq!(drain(&c, "t_int").await, set(&["u8-200"]));
    assert_eq!(drain(&c, "t_bool").await, set(&["bool-true"]));
    assert_eq!(drain(&c, "t_void").await, set(&["k-bytes", "k-void"]));
    assert_eq!(drain(&c, "t_with_x").await, set(&["tenant-a"]));
    assert_eq!(drain(&c, "t_any_with_x").await, set(&["u64-7", "tenant-b"]));

    for bad in [s("All"), s("all-with-X"), FieldValue::Bool(true)] {
        let err = c
            .bind("t_int", "ht", "", table(vec![("x-match", bad.clone())]))
            .await
            .unwrap_err();
        assert_eq!(
            err.error_code(),
            Some(ErrorCode::PreconditionFailed),
            "{bad:?}: {err}"
        );
    }
}

#[tokio::test]
async fn every_field_type_is_read_back_with_its_type_and_value() {
    let d = TestDaemon::start();
    let sender = d.client().await;
    let reader = d.client().await;
    queue(&sender, "typed").await;
    let nested: FieldTable = [("inner".to_owned(), FieldValue::I16(-3))].into();
    let headers: Vec<(&str, FieldValue)> = vec![
        ("string", FieldValue::String("s".into())),
        ("i64", FieldValue::Int(i64::MIN)),
        ("f64", FieldValue::Float(-0.5)),
        ("bool", FieldValue::Bool(false)),
        ("bytes", FieldValue::Bytes(vec![0u8, 255].into())),
        (
            "list",
            FieldValue::List(vec![FieldValue::U8(1), FieldValue::Void]),
        ),
        ("table", FieldValue::Map(nested)),
        ("void", FieldValue::Void),
        ("i8", FieldValue::I8(-128)),
        ("u8", FieldValue::U8(255)),
        ("i16", FieldValue::I16(-32768)),
        ("u16", FieldValue::U16(65535)),
        ("i32", FieldValue::I32(i32::MIN)),
        ("u32", FieldValue::U32(u32::MAX)),
        ("u64", FieldValue::U64(u64::MAX)),
        ("f32", FieldValue::F32(0.1)),
        (
            "decimal",
            FieldValue::Decimal {
                scale: 2,
                value: -1234,
            },
        ),
        ("timestamp", FieldValue::Timestamp(1_700_000_000)),
    ];
    let mut m = OutgoingMessage::new("", "typed", "x");
    for (k, v) in &headers {
        m = m.header(*k, v.clone());
    }
    sender.publish_and_confirm(m).await.unwrap();
    let got = reader.get("typed", true).await.unwrap().expect("a message");
    let want: FieldTable = headers
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    // Structural equality: same variant (type and width) and same value.
    assert_eq!(got.properties.headers.to_table(), want);
}
