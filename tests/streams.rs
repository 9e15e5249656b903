//! Stream queues (`x-queue-type=stream`, docs/streams.md) against the real binary: declare
//! and its refusals, replay from first, last, next, an offset and a timestamp, independent
//! consumers, named consumers resuming after a client crash and after `kill -9`, retention
//! by size and by age, a stream fed by a topic exchange next to classic queues, the CLI, and
//! bounded memory for a large stream.

mod common;

use std::time::Duration;

use common::{args, within, TestDaemon};
use warren::client::{
    Client, ConsumeOptions, Consumer, Delivery, ExchangeKind, ExchangeOptions, OutgoingMessage,
    QueueOptions, StreamOffset,
};
use warren_protocol::{FieldTable, FieldValue};

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
    let table = common::ok(&d.cli(&["queue", "list"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("events "))
        .expect("events in the table");
    assert!(row.contains(" stream "), "{row}");
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

async fn info(d: &TestDaemon, name: &str) -> serde_json::Value {
    let out = common::ok(&d.cli(&["stream", "info", name, "--json"]));
    serde_json::from_str(&out).expect("stream info json")
}

#[tokio::test]
async fn retention_by_size_trims_whole_old_chunks_and_never_more_than_the_limit_needs() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    // 20-byte chunks of 2-to-3-byte bodies; keep at most 100 bytes.
    declare_stream(
        &c,
        "capped",
        &[
            ("x-max-length-bytes", FieldValue::Int(100)),
            ("x-stream-max-segment-size-bytes", FieldValue::Int(20)),
        ],
    )
    .await;
    append(&c, "capped", bodies(0..100)).await;
    let i = info(&d, "capped").await;
    let bytes = i["bytes"].as_u64().expect("bytes");
    let first = i["first_offset"].as_u64().expect("first offset");
    assert!(bytes <= 100, "over the limit: {i}");
    // Whole chunks only, and only while over the limit: putting back the last chunk trimmed
    // (at most 20 bytes plus one body) would take it over 100 again.
    assert!(bytes + 23 > 100, "trimmed more than the limit needs: {i}");
    assert!(first > 0);
    assert_eq!(i["last_offset"], 99);
    let mut all = consume(
        &c,
        "capped",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    assert_eq!(
        take(&mut all, (100 - first) as usize).await,
        expected(first..100)
    );
    // The trim is durable: a restart starts at the same first offset.
    drop(all);
    c.close().await.expect("close");
    assert!(d.stop(), "clean stop");
    d.restart();
    let i = info(&d, "capped").await;
    assert_eq!(i["first_offset"].as_u64(), Some(first), "{i}");
    assert_eq!(i["bytes"].as_u64(), Some(bytes));
    // An offset below the first starts at the first.
    let c = d.client().await;
    let mut low = consume(
        &c,
        "capped",
        ConsumeOptions::default().stream_offset(StreamOffset::Offset(0)),
    )
    .await;
    assert_eq!(take(&mut low, 1).await, expected(first..first + 1));
}

#[tokio::test]
async fn retention_by_age_trims_chunks_whose_newest_entry_is_older_than_max_age() {
    let d = TestDaemon::start();
    let c = d.client().await;
    // Bodies "m0".."m4" are 2 bytes: one 10-byte chunk holds exactly those five.
    declare_stream(
        &c,
        "recent",
        &[
            ("x-max-age", s("1s")),
            ("x-stream-max-segment-size-bytes", FieldValue::Int(10)),
        ],
    )
    .await;
    append(&c, "recent", bodies(0..5)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    append(&c, "recent", bodies(5..8)).await;
    // The ticker trims within about 100 ms; wait for it, bounded.
    within("the old chunk to be trimmed", async {
        while info(&d, "recent").await["first_offset"] != 5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let i = info(&d, "recent").await;
    assert_eq!(i["last_offset"], 7, "younger entries stay: {i}");
    assert_eq!(i["max_age_ms"], 1000);
    let mut all = consume(
        &c,
        "recent",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    assert_eq!(take(&mut all, 3).await, expected(5..8));
}

#[tokio::test]
async fn deleting_a_stream_removes_its_entries_and_a_new_one_starts_empty() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "gone", &[]).await;
    append(&c, "gone", bodies(0..1000)).await;
    assert_eq!(
        c.delete_queue("gone", false, false).await.expect("delete"),
        1000
    );
    declare_stream(&c, "gone", &[]).await;
    let i = info(&d, "gone").await;
    assert_eq!(i["messages"], 0);
    assert_eq!(i["next_offset"], 0);
    c.close().await.expect("close");
    // A kill -9 may cut the background removal short: the next start removes what is left
    // (the store's entries of a queue id no queue has), and the start after that finds
    // nothing to remove.
    d.kill9();
    d.restart();
    let last_run = |d: &TestDaemon| {
        let logs = d.logs();
        logs.rsplit("--- daemon run")
            .next()
            .unwrap_or("")
            .to_owned()
    };
    within("the deleted stream's entries to go", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(d.stop(), "clean stop");
            d.restart();
            if !last_run(&d).contains("removing the entries of a deleted stream") {
                break;
            }
        }
    })
    .await;
    assert_eq!(info(&d, "gone").await["messages"], 0);
}

#[tokio::test]
async fn warren_stream_read_prints_offsets_and_a_named_reader_continues() {
    let d = TestDaemon::start();
    let out = common::ok(&d.cli(&["queue", "declare", "audit", "--type", "stream"]));
    assert!(out.contains("queue 'audit' declared"), "{out}");
    let c = d.client().await;
    append(&c, "audit", bodies(0..10)).await;
    let out = common::ok(&d.cli(&["stream", "read", "audit"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10, "{out}");
    assert_eq!(lines[0], "0 [audit] m0");
    assert_eq!(lines[9], "9 [audit] m9");
    let out = common::ok(&d.cli(&["stream", "read", "audit", "--from", "7", "--json"]));
    let offsets: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["stream_offset"]
                .as_u64()
                .expect("offset")
        })
        .collect();
    assert_eq!(offsets, [7, 8, 9]);
    let out = common::ok(&d.cli(&[
        "stream",
        "read",
        "audit",
        "--name-as",
        "ops",
        "--from",
        "first",
        "--count",
        "4",
    ]));
    assert_eq!(out.lines().count(), 4);
    let out = common::ok(&d.cli(&[
        "stream",
        "read",
        "audit",
        "--name-as",
        "ops",
        "--count",
        "2",
    ]));
    assert_eq!(out, "4 [audit] m4\n5 [audit] m5\n");
    let out = common::ok(&d.cli(&["stream", "consumers", "audit"]));
    assert!(out.contains("ops") && out.contains('6'), "{out}");
    let out = common::ok(&d.cli(&["stream", "info", "audit"]));
    assert!(out.contains("last offset:     9"), "{out}");
}

/// A stream of `ENTRIES` 1 KiB messages must not cost its bodies in memory: after a restart
/// the daemon's resident memory may grow by what redb caches of its file, the chunk index and
/// a few reads, not by the 50 MB of bodies as well. The bound is computed from the data.
#[tokio::test]
async fn a_large_stream_costs_bounded_memory_and_old_offsets_are_read_from_the_store() {
    const ENTRIES: u64 = 50_000;
    const BODY: usize = 1024;
    let mut d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "big", &[]).await;
    let baseline = d.rss_bytes();
    let body = "x".repeat(BODY - 8);
    for batch in 0..ENTRIES / 1000 {
        append(
            &c,
            "big",
            (batch * 1000..(batch + 1) * 1000).map(|i| format!("{i:08}{body}")),
        )
        .await;
    }
    c.close().await.expect("close");
    assert!(d.stop(), "clean stop");
    let file = std::fs::metadata(d.data_dir().join("warren.redb"))
        .expect("store file")
        .len();
    d.restart();
    let c = d.client().await;
    c.qos(100).await.expect("qos");
    // Reading from an old offset streams from the store, in order.
    let mut old = consume(
        &c,
        "big",
        ConsumeOptions::default().stream_offset(StreamOffset::Offset(12_345)),
    )
    .await;
    for i in 12_345..12_845u64 {
        let m = next(&mut old).await;
        assert_eq!(m.stream_offset, Some(i));
        assert_eq!(&m.body[..8], format!("{i:08}").as_bytes());
        c.ack(m.delivery_tag, false).await.expect("ack");
    }
    let grown = d.rss_bytes().saturating_sub(baseline);
    let bodies = ENTRIES * BODY as u64;
    // redb's page cache (1 GiB by default) may hold pages of the file it read when opening
    // it: up to the whole file here. Past that, half the bodies: holding every entry's body
    // (or the stream in memory) would cross it.
    let bound = file + bodies / 2;
    assert!(
        grown < bound,
        "resident memory grew by {grown} bytes (bound {bound}: the {file}-byte store file plus \
         half of {bodies} bytes of bodies)"
    );
    assert_eq!(info(&d, "big").await["messages"], ENTRIES);
}

/// A commit that fails (a full disk) appends nothing and costs no offset: once space is back
/// the next append takes the offset after the last confirmed one, and reading from the first
/// entry gives exactly the confirmed messages, in order, with no gap. The data directory is a
/// small tmpfs; where mounting is not allowed the test says so and passes without running.
#[tokio::test]
async fn a_failed_commit_leaves_no_gap_in_the_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(dir.path())
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(dir.path());
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20]).expect("filler");
    let d = TestDaemon::start_in(&dir.path().join("data"), &["--disk-free-limit", "0"]);
    let c = d.client().await;
    declare_stream(&c, "s", &[]).await;
    let message = |i: u64| {
        let mut body = format!("{i:08}").into_bytes();
        body.resize(64 * 1024, b'.');
        OutgoingMessage::new("", "s", body)
    };
    let publish = |i: u64| {
        let c = c.clone();
        async move {
            within("a confirm", c.publish_and_confirm(message(i)))
                .await
                .expect("answered")
                .is_confirmed()
        }
    };
    let mut confirmed = Vec::new();
    let mut i = 0u64;
    while publish(i).await {
        confirmed.push(i);
        i += 1;
        assert!(i < 2_000, "the disk never filled");
    }
    // Refused again while full: each refusal is a failed commit.
    for _ in 0..3 {
        i += 1;
        assert!(!publish(i).await, "still full");
    }
    std::fs::remove_file(&filler).expect("freeing space");
    within("the store to take appends again", async {
        loop {
            i += 1;
            if publish(i).await {
                confirmed.push(i);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for _ in 0..3 {
        i += 1;
        assert!(publish(i).await);
        confirmed.push(i);
    }
    c.qos(10).await.expect("qos");
    let mut all = consume(
        &c,
        "s",
        ConsumeOptions::default().stream_offset(StreamOffset::First),
    )
    .await;
    for (offset, n) in confirmed.iter().enumerate() {
        let m = next(&mut all).await;
        assert_eq!(m.stream_offset, Some(offset as u64), "no gap");
        assert_eq!(&m.body[..8], format!("{n:08}").as_bytes());
        c.ack(m.delivery_tag, false).await.expect("ack");
    }
    nothing_more(&mut all).await;
}

/// Regression: a named consumer cancelled keeping its unacked deliveries (how a client takes
/// exactly N) left the stream's readers at once, so the acks that followed did not move its
/// position and the next reader under the name got those messages again.
#[tokio::test]
async fn acks_after_a_cancel_that_keeps_the_deliveries_still_move_a_named_position() {
    let d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "s", &[]).await;
    append(&c, "s", bodies(0..20)).await;
    c.qos(5).await.expect("qos");
    let named = ConsumeOptions::default()
        .stream_offset(StreamOffset::First)
        .stream_consumer_name("exact");
    let mut k = consume(&c, "s", named).await;
    let mut tags = Vec::new();
    for _ in 0..5 {
        tags.push(next(&mut k).await.delivery_tag);
    }
    c.cancel_keeping_unacked(k.tag()).await.expect("cancel");
    c.ack_durable(tags[4], true).await.expect("ack");
    let mut again = consume(
        &c,
        "s",
        ConsumeOptions::default().stream_consumer_name("exact"),
    )
    .await;
    assert_eq!(take(&mut again, 2).await, expected(5..7));
}

/// Deleting a virtual host removes its streams' entries too (in the background, as for a
/// deleted stream): a restart finds none left over.
#[tokio::test]
async fn deleting_a_virtual_host_removes_its_streams_entries() {
    let mut d = TestDaemon::start();
    common::ok(&d.cli(&["vhost", "add", "tmp"]));
    d.grant_all("guest", "tmp");
    let c = Client::connect_with(
        d.addr(),
        &warren::client::ConnectOptions::default().vhost("tmp"),
    )
    .await
    .expect("connect to tmp");
    declare_stream(&c, "s", &[]).await;
    append(&c, "s", bodies(0..500)).await;
    c.close().await.expect("close");
    common::ok(&d.cli(&["vhost", "delete", "tmp"]));
    // The removal is one commit of 500 entries, started when the delete returned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    within("the entries to go", async {
        loop {
            assert!(d.stop(), "clean stop");
            d.restart();
            let logs = d.logs();
            let last = logs.rsplit("--- daemon run").next().unwrap_or("");
            if !last.contains("removing the entries of a deleted stream") {
                break;
            }
        }
    })
    .await;
    assert_eq!(
        d.logs()
            .matches("removing the entries of a deleted stream")
            .count(),
        0,
        "removed before the first restart"
    );
}
