//! Stream queues (`x-queue-type=stream`, docs/streams.md) against the real binary: declare
//! and its refusals, replay from first, last, next, an offset and a timestamp, independent
//! consumers, named consumers resuming after a client crash and after `kill -9`, retention
//! by size and by age, a stream fed by a topic exchange next to classic queues, the CLI, and
//! bounded memory for a large stream.

mod common;

use std::time::Duration;

use common::{within, TestDaemon};
use warren::client::{
    Client, ConsumeOptions, Consumer, Delivery, ExchangeKind, ExchangeOptions, OutgoingMessage,
    QueueOptions, StreamOffset,
};
use warren_protocol::{FieldTable, FieldValue};

fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(v: &str) -> FieldValue {
    FieldValue::String(v.to_owned())
}

async fn declare_stream(c: &Client, name: &str, extra: &[(&str, FieldValue)]) {
    let mut a = args(extra);
    a.insert("x-queue-type".into(), s("stream"));
    c.declare_queue(
        name,
        QueueOptions {
            durable: true,
            arguments: a,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring stream {name}: {e}"));
}

/// Publishes `bodies` to the default exchange with routing key `queue` and waits for every
/// confirm. Transient on purpose: a stream stores every message routed to it.
async fn append(c: &Client, queue: &str, bodies: impl IntoIterator<Item = String>) {
    let mut pending = Vec::new();
    for b in bodies {
        pending.push(
            c.publish(OutgoingMessage::new("", queue, b))
                .await
                .expect("publish"),
        );
    }
    for p in pending {
        assert!(p.await.expect("confirm").is_confirmed());
    }
}

async fn consume(c: &Client, queue: &str, options: ConsumeOptions) -> Consumer {
    c.consume(queue, options).await.expect("consume")
}

async fn next(consumer: &mut Consumer) -> Delivery {
    within("a stream delivery", consumer.next())
        .await
        .expect("the consumer ended")
}

/// Takes `n` deliveries, returning `(offset, body)` pairs.
async fn take(consumer: &mut Consumer, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = next(consumer).await;
        out.push((
            d.stream_offset
                .expect("a stream delivery carries its offset"),
            String::from_utf8(d.body.to_vec()).expect("utf8"),
        ));
    }
    out
}

/// Asserts nothing more arrives for a short while (bounded).
async fn nothing_more(consumer: &mut Consumer) {
    let got = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(got.is_err(), "unexpected delivery: {got:?}");
}

fn bodies(range: std::ops::Range<u64>) -> impl Iterator<Item = String> {
    range.map(|i| format!("m{i}"))
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|i| (i, format!("m{i}"))).collect()
}

#[tokio::test]
async fn a_stream_replays_from_first_an_offset_last_and_next_and_reading_removes_nothing() {
    let d = TestDaemon::start();
    let c = d.client().await;
    // Chunks of 100 body bytes: a chunk every 25 to 50 entries ("last" is the start of the
    // last chunk, as in RabbitMQ).
    declare_stream(
        &c,
        "events",
        &[("x-stream-max-segment-size-bytes", FieldValue::Int(100))],
    )
    .await;
    append(&c, "events", bodies(0..250)).await;

    let mut first = consume(
        &c,
        "events",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    assert_eq!(take(&mut first, 250).await, expected(0..250));

    let mut from_offset = consume(
        &c,
        "events",
        ConsumeOptions::default().stream_offset(StreamOffset::Offset(240)),
    )
    .await;
    assert_eq!(take(&mut from_offset, 10).await, expected(240..250));

    let mut last = consume(
        &c,
        "events",
        ConsumeOptions::default().stream_offset(StreamOffset::Last),
    )
    .await;
    let got = take(&mut last, 1).await;
    let start = got[0].0;
    assert!(
        start > 200 && start <= 249,
        "last starts in the last chunk: {start}"
    );
    let info = common::ok(&d.cli(&["stream", "info", "events", "--json"]));
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["first_offset"], 0);
    assert_eq!(info["last_offset"], 249);
    assert!(info["chunks"].as_u64().expect("chunks") > 4, "{info}");

    let mut next_only = consume(
        &c,
        "events",
        ConsumeOptions::default().stream_offset(StreamOffset::Next),
    )
    .await;
    nothing_more(&mut next_only).await;
    append(&c, "events", bodies(250..253)).await;
    assert_eq!(take(&mut next_only, 3).await, expected(250..253));
    // Every reader gets the new ones too, independently: nothing was consumed away.
    assert_eq!(take(&mut first, 3).await, expected(250..253));
    assert_eq!(take(&mut from_offset, 3).await, expected(250..253));

    // A second connection reads everything again from the start.
    let c2 = d.client().await;
    let mut again = consume(
        &c2,
        "events",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    assert_eq!(take(&mut again, 253).await, expected(0..253));

    // The listing shows the type and the count.
    let out = common::ok(&d.cli(&["queue", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    let events = list
        .as_array()
        .and_then(|a| a.iter().find(|q| q["name"] == "events"))
        .expect("events listed");
    assert_eq!(events["type"], "stream");
    assert_eq!(events["messages_ready"], 253);
}

#[tokio::test]
async fn a_timestamp_start_skips_what_was_appended_before_it() {
    let d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "ticks", &[]).await;
    append(&c, "ticks", bodies(0..5)).await;
    // Appends are stamped with their commit time in ms: wait until the clock has moved.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&c, "ticks", bodies(5..8)).await;
    let mut from_time = consume(
        &c,
        "ticks",
        ConsumeOptions::default().stream_offset(StreamOffset::Timestamp(cut)),
    )
    .await;
    assert_eq!(take(&mut from_time, 3).await, expected(5..8));
    nothing_more(&mut from_time).await;
}

#[tokio::test]
async fn a_named_consumer_resumes_after_its_last_ack_after_a_client_crash_and_kill_9() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "log", &[]).await;
    append(&c, "log", bodies(0..100)).await;
    let named = || {
        ConsumeOptions::default()
            .stream_offset(StreamOffset::First)
            .stream_consumer_name("billing")
    };
    c.qos(50).await.expect("qos");
    let mut reader = consume(&c, "log", named()).await;
    let got = take(&mut reader, 30).await;
    assert_eq!(got, expected(0..30));
    // The client dies with 0..30 unacked.
    drop(reader);
    drop(c);
    let c = d.client().await;
    // Nothing was acked yet on that connection: the name starts where it was declared from,
    // which is its first offset.
    c.qos(50).await.expect("qos");
    let mut reader = consume(
        &c,
        "log",
        ConsumeOptions::default().stream_consumer_name("billing"),
    )
    .await;
    let mut last_tag = 0;
    for i in 0..20u64 {
        let d = next(&mut reader).await;
        assert_eq!(d.stream_offset, Some(i));
        last_tag = d.delivery_tag;
    }
    c.ack_durable(last_tag, true).await.expect("ack");
    // Five more arrive (and more are on the way) but are never acked.
    let _ = take(&mut reader, 5).await;
    drop(reader);
    c.close().await.expect("close");

    let c = d.client().await;
    let mut reader = consume(
        &c,
        "log",
        ConsumeOptions::default().stream_consumer_name("billing"),
    )
    .await;
    assert_eq!(
        take(&mut reader, 3).await,
        expected(20..23),
        "resumes after the last ack"
    );
    let out = common::ok(&d.cli(&["stream", "consumers", "log", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list[0]["name"], "billing");
    assert_eq!(list[0]["offset"], 20);
    assert_eq!(list[0]["lag"], 80);
    assert_eq!(list[0]["attached"], true);
    drop(reader);

    // Ack up to 59 durably, then kill -9 the daemon: the position survives.
    let mut reader = {
        c.close().await.expect("close");
        let c = d.client().await;
        c.qos(100).await.expect("qos");
        let mut r = consume(
            &c,
            "log",
            ConsumeOptions::default().stream_consumer_name("billing"),
        )
        .await;
        let mut tag = 0;
        for i in 20..60u64 {
            let d = next(&mut r).await;
            assert_eq!(d.stream_offset, Some(i));
            tag = d.delivery_tag;
        }
        c.ack_durable(tag, true).await.expect("ack");
        r
    };
    let _ = take(&mut reader, 1).await;
    d.kill9();
    drop(reader);
    d.restart();
    let c = d.client().await;
    let mut reader = consume(
        &c,
        "log",
        ConsumeOptions::default().stream_consumer_name("billing"),
    )
    .await;
    assert_eq!(take(&mut reader, 40).await, expected(60..100));
    nothing_more(&mut reader).await;
    // An unnamed reader after the restart still sees every entry, and new offsets follow on.
    append(&c, "log", bodies(100..102)).await;
    let mut all = consume(
        &c,
        "log",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    assert_eq!(take(&mut all, 102).await, expected(0..102));
}

#[tokio::test]
async fn a_stream_fed_by_a_topic_exchange_alongside_classic_queues() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange(
        "orders",
        ExchangeKind::Topic,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .expect("exchange");
    declare_stream(&c, "orders.log", &[]).await;
    common::durable_queue(&c, "orders.eu", FieldTable::new()).await;
    c.bind("orders.log", "orders", "order.#", FieldTable::new())
        .await
        .expect("bind");
    c.bind("orders.eu", "orders", "order.eu.*", FieldTable::new())
        .await
        .expect("bind");
    let mut pending = Vec::new();
    for (i, key) in ["order.eu.new", "order.us.new", "order.eu.paid", "audit.x"]
        .iter()
        .enumerate()
    {
        let m = OutgoingMessage::new("orders", *key, format!("o{i}")).persistent();
        pending.push(c.publish(m).await.expect("publish"));
    }
    for p in pending {
        assert!(p.await.expect("confirm").is_confirmed());
    }
    let mut log = consume(
        &c,
        "orders.log",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    let got = take(&mut log, 3).await;
    assert_eq!(
        got,
        vec![
            (0, "o0".to_owned()),
            (1, "o1".to_owned()),
            (2, "o2".to_owned())
        ]
    );
    nothing_more(&mut log).await;
    common::wait_ready(&c, "orders.eu", 2).await;
    // Taking the classic queue's copies leaves the stream's alone.
    for _ in 0..2 {
        let m = c
            .get("orders.eu", true)
            .await
            .expect("get")
            .expect("a message");
        assert!(m.body.starts_with(b"o"));
    }
    let c2 = d.client().await;
    let mut again = consume(
        &c2,
        "orders.log",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    assert_eq!(take(&mut again, 3).await.len(), 3);
}

#[tokio::test]
async fn inapplicable_arguments_and_flags_are_refused_at_declare() {
    let d = TestDaemon::start();
    let c = d.client().await;
    for (arg, value) in [
        ("x-message-ttl", FieldValue::Int(1000)),
        ("x-expires", FieldValue::Int(1000)),
        ("x-dead-letter-exchange", s("dlx")),
        ("x-delivery-limit", FieldValue::Int(3)),
        ("x-overflow", s("reject-publish")),
        ("x-max-length", FieldValue::Int(10)),
        ("x-single-active-consumer", FieldValue::Bool(true)),
        ("x-max-priority", FieldValue::Int(5)),
        ("x-message-deduplication", FieldValue::Bool(true)),
    ] {
        let mut a = args(&[(arg, value)]);
        a.insert("x-queue-type".into(), s("stream"));
        let err = c
            .declare_queue(
                "bad",
                QueueOptions {
                    durable: true,
                    arguments: a,
                    ..Default::default()
                },
            )
            .await
            .expect_err(arg);
        let text = err.to_string();
        assert!(
            text.contains(arg) && text.contains("not allowed on a stream"),
            "{arg}: {text}"
        );
    }
    for (what, options) in [
        ("non-durable", QueueOptions::default()),
        (
            "exclusive",
            QueueOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
        ),
        (
            "auto-delete",
            QueueOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
        ),
    ] {
        let mut options = options;
        options.arguments.insert("x-queue-type".into(), s("stream"));
        let err = c.declare_queue("bad", options).await.expect_err(what);
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    let err = c
        .declare_queue(
            "bad",
            QueueOptions {
                durable: true,
                arguments: args(&[("x-queue-type", s("quorum2"))]),
                ..Default::default()
            },
        )
        .await
        .expect_err("unknown type");
    assert!(
        err.to_string().contains("406") || err.to_string().contains("x-queue-type"),
        "{err}"
    );
    let err = c
        .declare_queue(
            "bad",
            QueueOptions {
                durable: true,
                arguments: args(&[("x-max-age", s("7D"))]),
                ..Default::default()
            },
        )
        .await
        .expect_err("x-max-age on a classic queue");
    assert!(err.to_string().contains("only streams"), "{err}");
    let err = c
        .declare_queue(
            "bad",
            QueueOptions {
                durable: true,
                arguments: args(&[("x-queue-type", s("stream")), ("x-max-age", s("7 days"))]),
                ..Default::default()
            },
        )
        .await
        .expect_err("bad x-max-age");
    assert!(err.to_string().contains("x-max-age"), "{err}");

    // Get and purge are refused on a stream, with a pointer to what to do instead.
    declare_stream(&c, "good", &[("x-max-age", s("12h"))]).await;
    let err = c.get("good", false).await.expect_err("get");
    assert!(err.to_string().contains("x-stream-offset"), "{err}");
    let c = d.client().await;
    let err = c.purge_queue("good").await.expect_err("purge");
    assert!(err.to_string().contains("retention"), "{err}");
}
