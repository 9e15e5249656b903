//! Publisher deduplication (`x-message-deduplication`), against the real daemon: per exchange
//! (checked before routing) and per queue (checked as the message would enter it), by
//! message id or by a header, with time and count windows; the `Duplicate` confirm; a retry
//! after `kill -9` still recognised; the duplicate counter; refusals of bad arguments.

mod common;

use std::time::Duration;

use common::{durable_queue, ok, ready, within, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren::admin_types::Status;
use warren::client::{
    Client, ClientError, ExchangeKind, ExchangeOptions, OutgoingMessage, PublishOutcome,
};
use warren_protocol::{ErrorCode, FieldTable, FieldValue};

fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(text: &str) -> FieldValue {
    FieldValue::String(text.into())
}

/// Deduplication on, with `window` (a duration string or an integer count).
fn dedup(window: FieldValue) -> FieldTable {
    table(&[
        ("x-message-deduplication", FieldValue::Bool(true)),
        ("x-deduplication-window", window),
    ])
}

async fn exchange(c: &Client, name: &str, kind: ExchangeKind, arguments: FieldTable) {
    c.declare_exchange(
        name,
        kind,
        ExchangeOptions {
            durable: true,
            arguments,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring exchange {name}: {e}"));
}

async fn bound_queue(c: &Client, queue: &str, exchange: &str, arguments: FieldTable) {
    durable_queue(c, queue, arguments).await;
    c.bind(queue, exchange, "k", FieldTable::new())
        .await
        .expect("bind");
}

/// Publishes a persistent message with message id `id` and returns the verdict.
async fn publish_id(c: &Client, exchange: &str, key: &str, id: &str) -> PublishOutcome {
    let m = OutgoingMessage::new(exchange, key, format!("body of {id}"))
        .persistent()
        .message_id(id);
    within("a confirm", c.publish_and_confirm(m))
        .await
        .expect("publish")
}

async fn status(c: &Client) -> Status {
    c.admin_typed::<Status>("status", FieldTable::new())
        .await
        .expect("status")
}

#[tokio::test]
async fn an_exchange_routes_a_duplicate_message_id_nowhere() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "orders", ExchangeKind::Fanout, dedup(s("10m"))).await;
    bound_queue(&c, "billing", "orders", FieldTable::new()).await;
    bound_queue(&c, "shipping", "orders", FieldTable::new()).await;

    assert_eq!(
        publish_id(&c, "orders", "k", "o-1").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(
        publish_id(&c, "orders", "k", "o-1").await,
        PublishOutcome::Duplicate
    );
    assert_eq!(
        publish_id(&c, "orders", "k", "o-2").await,
        PublishOutcome::Confirmed
    );
    // A message without a message id is not deduplicated.
    for _ in 0..2 {
        let m = OutgoingMessage::new("orders", "k", "anonymous").persistent();
        assert_eq!(
            c.publish_and_confirm(m).await.expect("publish"),
            PublishOutcome::Confirmed
        );
    }
    assert_eq!(ready(&c, "billing").await, 4);
    assert_eq!(ready(&c, "shipping").await, 4);
    let got = c.get("billing", true).await.unwrap().expect("a message");
    assert_eq!(got.properties.message_id.as_deref(), Some("o-1"));
}

#[tokio::test]
async fn a_queue_refuses_a_duplicate_that_other_queues_still_take() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "fan", ExchangeKind::Fanout, FieldTable::new()).await;
    bound_queue(&c, "dedup-q", "fan", dedup(FieldValue::Int(100))).await;
    bound_queue(&c, "plain-q", "fan", FieldTable::new()).await;

    assert_eq!(
        publish_id(&c, "fan", "k", "x").await,
        PublishOutcome::Confirmed
    );
    // Stored in plain-q, not again in dedup-q: not a duplicate for the publisher.
    assert_eq!(
        publish_id(&c, "fan", "k", "x").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(ready(&c, "dedup-q").await, 1);
    assert_eq!(ready(&c, "plain-q").await, 2);
    // Straight to the deduplicating queue: it is the only target, so a duplicate.
    assert_eq!(
        publish_id(&c, "", "dedup-q", "x").await,
        PublishOutcome::Duplicate
    );
    assert_eq!(ready(&c, "dedup-q").await, 1);
}

#[tokio::test]
async fn a_header_can_be_the_key() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let mut args = dedup(s("1h"));
    args.insert("x-deduplication-header".into(), s("order-id"));
    durable_queue(&c, "q", args).await;

    let with = |id: i64, mid: &str| {
        OutgoingMessage::new("", "q", "b")
            .persistent()
            .message_id(mid)
            .header("order-id", FieldValue::Int(id))
    };
    let verdict = |m| async { c.publish_and_confirm(m).await.expect("publish") };
    assert_eq!(verdict(with(7, "a")).await, PublishOutcome::Confirmed);
    // Same header, another message id: a duplicate; the message id plays no part.
    assert_eq!(verdict(with(7, "b")).await, PublishOutcome::Duplicate);
    assert_eq!(verdict(with(8, "a")).await, PublishOutcome::Confirmed);
    // Without the header: not deduplicated.
    let bare = || {
        OutgoingMessage::new("", "q", "b")
            .persistent()
            .message_id("a")
    };
    assert_eq!(verdict(bare()).await, PublishOutcome::Confirmed);
    assert_eq!(verdict(bare()).await, PublishOutcome::Confirmed);
    assert_eq!(ready(&c, "q").await, 4);

    // With no header configured, the plugin's message header `x-deduplication-header` is
    // the key (ahead of the message id), so publishers written for RabbitMQ's plugin work.
    durable_queue(&c, "plugin-style", dedup(s("1h"))).await;
    let plugin = |key: &str, mid: &str| {
        OutgoingMessage::new("", "plugin-style", "b")
            .persistent()
            .message_id(mid)
            .header("x-deduplication-header", s(key))
    };
    assert_eq!(verdict(plugin("k1", "a")).await, PublishOutcome::Confirmed);
    assert_eq!(verdict(plugin("k1", "b")).await, PublishOutcome::Duplicate);
    assert_eq!(verdict(plugin("k2", "a")).await, PublishOutcome::Confirmed);
}

#[tokio::test]
async fn a_key_is_accepted_again_once_its_time_window_has_passed() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", dedup(s("1s"))).await;
    assert_eq!(
        publish_id(&c, "", "q", "k").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(
        publish_id(&c, "", "q", "k").await,
        PublishOutcome::Duplicate
    );
    // Retried until the window has passed (how soon is not asserted, only that it happens).
    within("the window to pass", async {
        loop {
            match publish_id(&c, "", "q", "k").await {
                PublishOutcome::Confirmed => return,
                PublishOutcome::Duplicate => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(ready(&c, "q").await, 2);
}

#[tokio::test]
async fn a_count_window_forgets_the_oldest_key() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", dedup(FieldValue::Int(2))).await;
    for id in ["a", "b", "c"] {
        assert_eq!(publish_id(&c, "", "q", id).await, PublishOutcome::Confirmed);
    }
    // "a" was pushed out by "c"; "b" and "c" are still remembered.
    assert_eq!(
        publish_id(&c, "", "q", "c").await,
        PublishOutcome::Duplicate
    );
    assert_eq!(
        publish_id(&c, "", "q", "a").await,
        PublishOutcome::Confirmed
    );
    // Now "a" pushed out "b".
    assert_eq!(
        publish_id(&c, "", "q", "b").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(ready(&c, "q").await, 5);
}

#[tokio::test]
async fn a_retry_after_kill_9_is_still_a_duplicate() {
    let mut d = TestDaemon::start();
    {
        let c = d.client().await;
        exchange(&c, "orders", ExchangeKind::Direct, dedup(s("10m"))).await;
        bound_queue(&c, "work", "orders", FieldTable::new()).await;
        durable_queue(&c, "counted", dedup(FieldValue::Int(2))).await;
        assert_eq!(
            publish_id(&c, "orders", "k", "retry-1").await,
            PublishOutcome::Confirmed
        );
        for id in ["a", "b", "c"] {
            assert_eq!(
                publish_id(&c, "", "counted", id).await,
                PublishOutcome::Confirmed
            );
        }
    }
    // The confirm came after the commit: the key is on disk, whatever the kill interrupts.
    d.kill9();
    d.restart();
    let c = d.client().await;
    assert_eq!(
        publish_id(&c, "orders", "k", "retry-1").await,
        PublishOutcome::Duplicate
    );
    assert_eq!(ready(&c, "work").await, 1);
    // The count window came back with its newest keys: "a" was evicted before the kill.
    assert_eq!(
        publish_id(&c, "", "counted", "c").await,
        PublishOutcome::Duplicate
    );
    assert_eq!(
        publish_id(&c, "", "counted", "a").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(ready(&c, "counted").await, 4);
}

#[tokio::test]
async fn a_deleted_exchange_forgets_its_keys() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "e", ExchangeKind::Fanout, dedup(s("10m"))).await;
    bound_queue(&c, "q", "e", FieldTable::new()).await;
    assert_eq!(
        publish_id(&c, "e", "k", "m").await,
        PublishOutcome::Confirmed
    );
    c.delete_exchange("e", false).await.expect("delete");
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    exchange(&c, "e", ExchangeKind::Fanout, dedup(s("10m"))).await;
    c.bind("q", "e", "k", FieldTable::new())
        .await
        .expect("bind");
    assert_eq!(
        publish_id(&c, "e", "k", "m").await,
        PublishOutcome::Confirmed
    );
}

#[tokio::test]
async fn duplicates_are_counted_in_status_and_metrics() {
    let d = TestDaemon::start_with_metrics();
    let c = d.client().await;
    durable_queue(&c, "q", dedup(s("10m"))).await;
    for _ in 0..3 {
        publish_id(&c, "", "q", "same").await;
    }
    let st = status(&c).await;
    assert_eq!(st.totals.duplicates, 2);
    assert_eq!(st.totals.published, 3);
    let addr = d.metrics_addr().expect("metrics address");
    let body = within("GET /metrics", async {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.expect("read");
        raw
    })
    .await;
    assert!(
        body.lines()
            .any(|l| l == "warren_messages_duplicate_total 2"),
        "{body}"
    );
}

#[tokio::test]
async fn the_cli_reports_duplicates_not_stored() {
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "q",
        "--durable",
        "--arg",
        "x-message-deduplication=true",
        "--arg",
        "x-deduplication-window=100",
    ]));
    ok(&d.cli(&["publish", "", "q", "hi", "--message-id", "m1"]));
    let out = d.cli(&["publish", "", "q", "hi", "--message-id", "m1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 duplicate not stored"), "{stderr}");
    // Exchanges take the arguments typed from text too (a boolean, a duration string).
    ok(&d.cli(&[
        "exchange",
        "declare",
        "orders",
        "--type",
        "direct",
        "--durable",
        "--arg",
        "x-message-deduplication=true",
        "--arg",
        "x-deduplication-window=10m",
    ]));
}

fn refused(e: ClientError) -> String {
    assert_eq!(
        e.code(),
        Some(ErrorCode::PreconditionFailed.as_u16()),
        "expected 406, got {e}"
    );
    e.to_string()
}

#[tokio::test]
async fn bad_arguments_are_refused_and_redeclares_must_match() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let on = ("x-message-deduplication", FieldValue::Bool(true));
    for (args, names) in [
        (table(std::slice::from_ref(&on)), "x-message-deduplication"),
        (
            table(&[on.clone(), ("x-deduplication-window", s("ten minutes"))]),
            "x-deduplication-window",
        ),
        (
            table(&[on.clone(), ("x-deduplication-window", s("100"))]),
            "x-deduplication-window",
        ),
        (
            table(&[on.clone(), ("x-deduplication-window", FieldValue::Int(0))]),
            "x-deduplication-window",
        ),
        (
            table(&[on.clone(), ("x-cache-size", FieldValue::Int(-1))]),
            "x-cache-size",
        ),
        (
            table(&[
                on.clone(),
                ("x-cache-ttl", FieldValue::Int(10)),
                ("x-deduplication-header", FieldValue::Int(1)),
            ]),
            "x-deduplication-header",
        ),
        (
            table(&[("x-deduplication-window", s("1m"))]),
            "x-deduplication-window",
        ),
        (
            table(&[
                ("x-message-deduplication", s("true")),
                ("x-cache-size", FieldValue::Int(5)),
            ]),
            "x-message-deduplication",
        ),
    ] {
        let e = c
            .declare_queue(
                "bad",
                warren::client::QueueOptions {
                    arguments: args.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect_err("queue refused");
        let text = refused(e);
        assert!(text.contains(names), "{text}");
        let e = c
            .declare_exchange(
                "bad",
                ExchangeKind::Direct,
                ExchangeOptions {
                    arguments: args,
                    ..Default::default()
                },
            )
            .await
            .expect_err("exchange refused");
        let text = refused(e);
        assert!(text.contains(names), "{text}");
    }
    // The plugin's spelling is taken too.
    let plugin = table(&[
        on.clone(),
        ("x-cache-size", FieldValue::Int(10)),
        ("x-cache-ttl", FieldValue::Int(60_000)),
    ]);
    durable_queue(&c, "plugin", plugin.clone()).await;
    durable_queue(&c, "plugin", plugin).await;
    exchange(&c, "ex", ExchangeKind::Topic, dedup(s("10m"))).await;
    exchange(&c, "ex", ExchangeKind::Topic, dedup(s("10m"))).await;
    let e = c
        .declare_exchange(
            "ex",
            ExchangeKind::Topic,
            ExchangeOptions {
                durable: true,
                arguments: dedup(s("5m")),
                ..Default::default()
            },
        )
        .await
        .expect_err("a different window is not equivalent");
    let text = refused(e);
    assert!(text.contains("x-deduplication-window"), "{text}");
}

#[tokio::test]
async fn pipelined_publishes_of_one_key_store_it_once() {
    // Publishes sent without waiting for confirms land in the same commit batches: the
    // window is checked in memory when each is routed, so only the first is taken.
    let d = TestDaemon::start();
    let a = d.client().await;
    let b = d.client().await;
    durable_queue(&a, "q", dedup(s("10m"))).await;
    let mut pending = Vec::new();
    for i in 0..50 {
        let c = if i % 2 == 0 { &a } else { &b };
        let m = OutgoingMessage::new("", "q", "same")
            .persistent()
            .message_id("one");
        pending.push(c.publish(m).await.expect("publish"));
    }
    let mut confirmed = 0;
    let mut duplicates = 0;
    for p in pending {
        match within("a confirm", p).await.expect("confirm") {
            PublishOutcome::Confirmed => confirmed += 1,
            PublishOutcome::Duplicate => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((confirmed, duplicates), (1, 49));
    assert_eq!(ready(&a, "q").await, 1);
}
