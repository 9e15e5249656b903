//! Producer deduplication on streams (`x-producer-name`, `x-producer-sequence`;
//! docs/deduplication.md, "Producers") against the real binary: a named, numbered publisher's
//! messages are appended once, a resend is confirmed as a duplicate and not appended, also
//! after `kill -9`; producers and streams are independent; a message without both headers
//! is appended as before; malformed headers are refused; the duplicates counter moves; and
//! `warren publish --producer-name` resends a file safely.

mod common;

use common::{ok, within, TestDaemon};
use redb::{ReadableDatabase, ReadableTable};
use warren::admin_types::Status;
use warren::client::{
    Client, ClientError, ExchangeKind, ExchangeOptions, OutgoingMessage, PublishOutcome,
    QueueOptions,
};
use warren::store::codec::encode_producer;
use warren::store::tables::{STREAM_POSITIONS, STREAM_PRODUCERS};
use warren::store::STORE_FILE_NAME;
use warren_protocol::{ErrorCode, FieldTable, FieldValue};

async fn declare_stream(c: &Client, name: &str) {
    let mut arguments = FieldTable::new();
    arguments.insert("x-queue-type".into(), FieldValue::String("stream".into()));
    c.declare_queue(
        name,
        QueueOptions {
            durable: true,
            arguments,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring stream {name}: {e}"));
}

fn numbered(exchange: &str, key: &str, producer: &str, seq: i64) -> OutgoingMessage {
    OutgoingMessage::new(exchange, key, format!("{producer}-{seq}"))
        .header("x-producer-name", FieldValue::String(producer.into()))
        .header("x-producer-sequence", FieldValue::Int(seq))
}

async fn send(c: &Client, m: OutgoingMessage) -> Result<PublishOutcome, ClientError> {
    within("a confirm", c.publish_and_confirm(m)).await
}

/// Publishes `seqs` from `producer` to stream `queue` (all in flight at once) and returns
/// the outcomes in order.
async fn publish_seqs(
    c: &Client,
    queue: &str,
    producer: &str,
    seqs: &[i64],
) -> Vec<PublishOutcome> {
    let mut pending = Vec::new();
    for &seq in seqs {
        pending.push(
            c.publish(numbered("", queue, producer, seq))
                .await
                .expect("publish"),
        );
    }
    let mut out = Vec::new();
    for p in pending {
        out.push(within("a confirm", p).await.expect("confirm"));
    }
    out
}

fn kinds(outcomes: &[PublishOutcome]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            o if o.is_duplicate() => "dup",
            o if o.is_confirmed() => "ok",
            _ => "other",
        })
        .collect()
}

async fn status(c: &Client) -> Status {
    c.admin_typed::<Status>("status", FieldTable::new())
        .await
        .expect("status")
}

fn info(d: &TestDaemon, name: &str) -> serde_json::Value {
    let out = ok(&d.cli(&["stream", "info", name, "--json"]));
    serde_json::from_str(&out).expect("stream info json")
}

fn producers(d: &TestDaemon, name: &str) -> Vec<(String, u64)> {
    info(d, name)["producers"]
        .as_array()
        .expect("producers")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["sequence"].as_u64().expect("sequence"),
            )
        })
        .collect()
}

fn messages(d: &TestDaemon, name: &str) -> u64 {
    info(d, name)["messages"].as_u64().expect("messages")
}

#[tokio::test]
async fn numbered_messages_are_appended_once_and_a_resend_is_a_duplicate() {
    let d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "s").await;
    let got = publish_seqs(&c, "s", "p", &[1, 2, 3]).await;
    assert_eq!(kinds(&got), ["ok", "ok", "ok"]);
    // A resend, an older number, and the same number twice in flight (likely one batch):
    // the first new one is taken, the rest are duplicates.
    let got = publish_seqs(&c, "s", "p", &[2, 3, 1, 4, 4]).await;
    assert_eq!(kinds(&got), ["dup", "dup", "dup", "ok", "dup"]);
    // Gaps are allowed: only "at or below the last" is a duplicate.
    let got = publish_seqs(&c, "s", "p", &[10, 7]).await;
    assert_eq!(kinds(&got), ["ok", "dup"]);
    assert_eq!(messages(&d, "s"), 5);
    assert_eq!(producers(&d, "s"), [("p".to_owned(), 10)]);
    assert_eq!(status(&c).await.totals.duplicates, 5);
    let text = ok(&d.cli(&["stream", "info", "s"]));
    assert!(text.contains("producers:       p at 10"), "{text}");
}

#[tokio::test]
async fn a_retry_after_kill_9_is_still_a_duplicate() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "s").await;
    let seqs: Vec<i64> = (1..=20).collect();
    let got = publish_seqs(&c, "s", "orders", &seqs).await;
    assert!(got.iter().all(PublishOutcome::is_confirmed));
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    // The publisher lost its confirms and resends everything from 15, then goes on.
    let got = publish_seqs(&c, "s", "orders", &[15, 16, 17, 18, 19, 20, 21]).await;
    assert_eq!(
        kinds(&got),
        ["dup", "dup", "dup", "dup", "dup", "dup", "ok"]
    );
    assert_eq!(messages(&d, "s"), 21);
    assert_eq!(producers(&d, "s"), [("orders".to_owned(), 21)]);
    // What was confirmed after the restart is durable too.
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    assert_eq!(
        kinds(&publish_seqs(&c, "s", "orders", &[21]).await),
        ["dup"]
    );
}

#[tokio::test]
async fn producers_and_streams_are_independent_and_each_stream_decides() {
    let d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "s1").await;
    declare_stream(&c, "s2").await;
    assert_eq!(kinds(&publish_seqs(&c, "s1", "a", &[1]).await), ["ok"]);
    assert_eq!(kinds(&publish_seqs(&c, "s1", "b", &[1]).await), ["ok"]);
    assert_eq!(kinds(&publish_seqs(&c, "s2", "a", &[1]).await), ["ok"]);

    // A publish routed to both streams: a duplicate only where the stream already has it,
    // and confirmed as a duplicate only when both have it.
    c.declare_exchange(
        "fan",
        ExchangeKind::Fanout,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare exchange");
    c.bind("s1", "fan", "", FieldTable::new())
        .await
        .expect("bind s1");
    c.bind("s2", "fan", "", FieldTable::new())
        .await
        .expect("bind s2");
    assert_eq!(kinds(&publish_seqs(&c, "s1", "a", &[2]).await), ["ok"]);
    let got = send(&c, numbered("fan", "", "a", 2))
        .await
        .expect("fan out");
    assert!(got.is_confirmed(), "s2 took it: {got:?}");
    let got = send(&c, numbered("fan", "", "a", 2))
        .await
        .expect("fan out");
    assert!(got.is_duplicate(), "both had it: {got:?}");
    assert_eq!((messages(&d, "s1"), messages(&d, "s2")), (3, 2));
    assert_eq!(
        producers(&d, "s1"),
        [("a".to_owned(), 2), ("b".to_owned(), 1)]
    );
    assert_eq!(producers(&d, "s2"), [("a".to_owned(), 2)]);
}

#[tokio::test]
async fn messages_without_both_headers_are_appended_as_before_and_bad_headers_refused() {
    let d = TestDaemon::start();
    let c = d.client().await;
    declare_stream(&c, "s").await;
    for _ in 0..2 {
        assert!(send(&c, OutgoingMessage::new("", "s", "plain"))
            .await
            .expect("plain")
            .is_confirmed());
        let named_only = OutgoingMessage::new("", "s", "named")
            .header("x-producer-name", FieldValue::String("p".into()));
        assert!(send(&c, named_only).await.expect("named").is_confirmed());
        let numbered_only = OutgoingMessage::new("", "s", "numbered")
            .header("x-producer-sequence", FieldValue::Int(1));
        assert!(send(&c, numbered_only)
            .await
            .expect("numbered")
            .is_confirmed());
    }
    assert_eq!(messages(&d, "s"), 6);
    assert!(producers(&d, "s").is_empty());

    for (m, what) in [
        (numbered("", "s", &"n".repeat(256), 1), "255"),
        (numbered("", "s", "p", -1), "non-negative"),
        (
            OutgoingMessage::new("", "s", "x")
                .header("x-producer-name", FieldValue::Int(5))
                .header("x-producer-sequence", FieldValue::Int(1)),
            "string",
        ),
    ] {
        let c = d.client().await;
        let e = send(&c, m).await.expect_err("refused");
        assert_eq!(
            e.code(),
            Some(ErrorCode::PreconditionFailed.as_u16()),
            "expected 406, got {e}"
        );
        assert!(e.to_string().contains(what), "{e}");
    }
    assert_eq!(messages(&d, "s"), 6);
    // The longest name is fine.
    let c = d.client().await;
    let got = send(&c, numbered("", "s", &"n".repeat(255), 1)).await;
    assert!(got.expect("255 bytes").is_confirmed());
}

#[tokio::test]
async fn the_cli_resends_a_file_storing_only_what_is_missing() {
    let mut d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "log",
        "--durable",
        "--arg",
        "x-queue-type=stream",
    ]));
    let publish = ["publish", "", "log", "--lines", "--producer-name", "loader"];
    // The first run got through three lines before it died.
    ok(&d.cli_with_stdin(&publish, Some("a\nb\nc\n")));
    d.kill9();
    d.restart();
    let out = d.cli_with_stdin(&publish, Some("a\nb\nc\nd\ne\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 duplicates not stored"), "{stderr}");
    assert_eq!(messages(&d, "log"), 5);
    assert_eq!(producers(&d, "log"), [("loader".to_owned(), 5)]);
    let read = ok(&d.cli(&["stream", "read", "log", "--from", "first", "--count", "5"]));
    let bodies: Vec<&str> = read.lines().collect();
    assert_eq!(bodies.len(), 5, "{read}");
    for (line, body) in bodies.iter().zip(["a", "b", "c", "d", "e"]) {
        assert!(line.ends_with(body), "{read}");
    }
    // A single message, numbered from --producer-start.
    let out = d.cli(&[
        "publish",
        "",
        "log",
        "f",
        "--producer-name",
        "loader",
        "--producer-start",
        "6",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).is_empty());
    let out = d.cli(&["publish", "", "log", "f", "--producer-name", "loader"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 duplicate not stored"), "{stderr}");
    assert_eq!(messages(&d, "log"), 6);
}

/// The queue ids that have rows in `stream_producers` and `stream_positions`.
fn stream_state_ids(d: &TestDaemon) -> Vec<u64> {
    let db = redb::Database::open(d.data_dir().join(STORE_FILE_NAME)).expect("open the store");
    let txn = db.begin_read().expect("read");
    let mut ids: Vec<u64> = Vec::new();
    for row in txn
        .open_table(STREAM_PRODUCERS)
        .expect("producers")
        .iter()
        .expect("iter")
    {
        ids.push(row.expect("row").0.value().0);
    }
    for row in txn
        .open_table(STREAM_POSITIONS)
        .expect("positions")
        .iter()
        .expect("iter")
    {
        ids.push(row.expect("row").0.value().0);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

// Regression: a publish or an ack already queued for the store writer when its stream (or
// its virtual host) is deleted commits after the deletion, writing the stream's producer
// sequence or consumer position again. Those rows outlived the stream, and a later stream
// given the same id took them over at the next start: its producers' first messages were
// duplicates, and a stranger's consumer position appeared on it.
#[tokio::test]
async fn a_new_stream_never_inherits_what_a_deleted_one_left_behind() {
    let mut d = TestDaemon::start();
    assert!(d.stop(), "a clean stop");
    // What that race leaves: rows for queue id 1, which no queue has, and which is the id
    // the next queue declared would be given.
    {
        let db = redb::Database::open(d.data_dir().join(STORE_FILE_NAME)).expect("open");
        let txn = db.begin_write().expect("write");
        txn.open_table(STREAM_PRODUCERS)
            .expect("producers")
            .insert((1, "old"), &encode_producer(5)[..])
            .expect("insert producer");
        txn.open_table(STREAM_POSITIONS)
            .expect("positions")
            .insert((1, "stranger"), 3)
            .expect("insert position");
        txn.commit().expect("commit");
    }
    d.restart();
    let c = d.client().await;
    declare_stream(&c, "s").await;
    assert_eq!(kinds(&publish_seqs(&c, "s", "new", &[1]).await), ["ok"]);
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    assert_eq!(producers(&d, "s"), [("new".to_owned(), 1)]);
    let named = info(&d, "s")["named_consumers"].clone();
    assert_eq!(
        named,
        serde_json::json!([]),
        "no inherited consumer position"
    );
    assert_eq!(kinds(&publish_seqs(&c, "s", "old", &[1]).await), ["ok"]);
    drop(c);
    assert!(d.stop(), "a clean stop");
    assert!(
        !stream_state_ids(&d).contains(&1),
        "the orphaned rows are gone: {:?}",
        stream_state_ids(&d)
    );
}
