//! Lazy recovery: after a restart the daemon serves while a queue's stored messages are still
//! being read back (docs/storage.md, *Recovery*). The daemon runs with a small
//! `--recovery-batch` and a `--recovery-hold` file: while the file exists the background
//! reading stops before its next batch, so these tests act on a queue that is certainly still
//! recovering, without relying on timing.

mod common;

use std::path::PathBuf;

use common::{ok, within, TestDaemon};
use warren::client::{Client, ConsumeOptions, Consumer, OutgoingMessage, QueueOptions};

const BATCH: usize = 100;
const BACKLOG: usize = 1_000;

/// A daemon reading recovered queues `BATCH` messages at a time, held while `hold` exists.
fn daemon(hold: &std::path::Path) -> TestDaemon {
    TestDaemon::start_with(&[
        "--recovery-batch",
        &BATCH.to_string(),
        "--recovery-hold",
        hold.to_str().expect("utf-8 path"),
    ])
}

fn hold_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hold");
    (dir, path)
}

async fn publish_all(c: &Client, queue: &str, bodies: impl IntoIterator<Item = String>) {
    let mut pending = Vec::new();
    for b in bodies {
        pending.push(
            c.publish(OutgoingMessage::new("", queue, b).persistent())
                .await
                .expect("publish"),
        );
    }
    for p in pending {
        assert!(p.await.expect("confirm").is_confirmed());
    }
}

fn old(i: usize) -> String {
    format!("old-{i:04}")
}

fn new(i: usize) -> String {
    format!("new-{i:02}")
}

/// Declares `backlog` and stores `BACKLOG` persistent messages in it, then kills the daemon.
async fn backlog_then_kill(d: &mut TestDaemon) {
    let c = d.client().await;
    c.declare_queue(
        "backlog",
        QueueOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
    publish_all(&c, "backlog", (0..BACKLOG).map(old)).await;
    drop(c);
    d.kill9();
}

/// The queue as `warren queue list --json` shows it.
fn listed(d: &TestDaemon, queue: &str) -> serde_json::Value {
    let out = ok(&d.cli(&["queue", "list", "--json"]));
    let all: serde_json::Value = serde_json::from_str(&out).expect("json");
    let list = all
        .as_array()
        .cloned()
        .or_else(|| all["items"].as_array().cloned())
        .unwrap_or_else(|| panic!("a list of queues: {out}"));
    list.into_iter()
        .find(|q| q["name"] == queue)
        .unwrap_or_else(|| panic!("{queue} listed: {out}"))
}

/// Takes `n` messages with `get` and acks them durably; returns their bodies.
async fn get_n(c: &Client, queue: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = c.get(queue, false).await.expect("get").expect("a message");
        out.push(String::from_utf8(m.body.to_vec()).expect("utf-8"));
        c.ack_durable(m.delivery_tag, false).await.expect("ack");
    }
    out
}

/// Consumes until `n` messages arrived (acking each durably); returns their bodies.
async fn consume_n(c: &Client, queue: &str, n: usize) -> Vec<String> {
    c.qos(50).await.expect("qos");
    let mut k = c
        .consume(queue, ConsumeOptions::default())
        .await
        .expect("consume");
    take(c, &mut k, n).await
}

/// Takes `n` deliveries from `k` (acking each durably); returns their bodies.
async fn take(c: &Client, k: &mut Consumer, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = within("a delivery", k.next()).await.expect("a delivery");
        out.push(String::from_utf8(m.body.to_vec()).expect("utf-8"));
        c.ack_durable(m.delivery_tag, false).await.expect("ack");
    }
    out
}

#[tokio::test]
async fn a_recovering_queue_serves_in_order_and_publishes_land_after_its_backlog() {
    let (_h, hold) = hold_file();
    let mut d = daemon(&hold);
    backlog_then_kill(&mut d).await;
    std::fs::write(&hold, b"").expect("hold file");
    d.restart();

    // Serving, with only the first batch read: the listing says so.
    let q = listed(&d, "backlog");
    assert_eq!(q["recovering"], true, "{q}");
    assert_eq!(q["messages_ready"], BATCH as u64, "{q}");
    let table = ok(&d.cli(&["queue", "list"]));
    assert!(table.contains("recovering"), "{table}");

    let c = d.client().await;
    // Published while recovering: must come after every recovered message.
    publish_all(&c, "backlog", (0..20).map(new)).await;
    c.publish_and_confirm(OutgoingMessage::new("", "backlog", "transient"))
        .await
        .expect("transient publish");
    assert_eq!(listed(&d, "backlog")["messages_ready"], (BATCH + 21) as u64);
    // The head is there already.
    let first = get_n(&c, "backlog", 10).await;
    assert_eq!(first, (0..10).map(old).collect::<Vec<_>>());

    // A consumer attached while recovering gets what has been read, in order.
    c.qos(50).await.expect("qos");
    let mut k = c
        .consume("backlog", ConsumeOptions::default())
        .await
        .expect("consume");
    assert_eq!(
        take(&c, &mut k, BATCH - 10).await,
        (10..BATCH).map(old).collect::<Vec<_>>()
    );
    assert_eq!(listed(&d, "backlog")["recovering"], true);

    // A declare answers with the whole count: it waits for the rest to be read.
    let declare = {
        let c = d.client().await;
        tokio::spawn(async move {
            c.declare_queue(
                "backlog",
                QueueOptions {
                    passive: true,
                    ..Default::default()
                },
            )
            .await
        })
    };
    std::fs::remove_file(&hold).expect("release the hold");
    let declared = within("the declare", declare)
        .await
        .expect("task")
        .expect("declare");
    // Whatever the consumer holds unacked is not ready: at most its prefetch.
    let count = declared.message_count;
    let whole = (BACKLOG - BATCH + 21) as u64;
    assert!(count <= whole && count + 50 >= whole, "{count} of {whole}");

    // The same consumer gets the rest in order, then the new ones.
    let rest = take(&c, &mut k, BACKLOG - BATCH + 21).await;
    let mut expected: Vec<String> = (BATCH..BACKLOG).map(old).collect();
    expected.extend((0..20).map(new));
    expected.push("transient".to_owned());
    assert_eq!(rest, expected);

    let q = listed(&d, "backlog");
    assert_eq!(q["recovering"], false, "{q}");
    assert_eq!(q["messages_ready"], 0, "{q}");
    assert_eq!(q["messages_unacked"], 0, "{q}");
}

#[tokio::test]
async fn kill_9_while_recovering_loses_nothing_and_acked_messages_stay_gone() {
    let (_h, hold) = hold_file();
    let mut d = daemon(&hold);
    backlog_then_kill(&mut d).await;
    std::fs::write(&hold, b"").expect("hold file");
    d.restart();
    let c = d.client().await;
    assert_eq!(
        get_n(&c, "backlog", 30).await,
        (0..30).map(old).collect::<Vec<_>>()
    );
    publish_all(&c, "backlog", (0..10).map(new)).await;
    assert_eq!(listed(&d, "backlog")["recovering"], true);
    drop(c);
    // Killed mid-recovery, then a normal start.
    d.kill9();
    std::fs::remove_file(&hold).expect("release the hold");
    d.restart();
    let c = d.client().await;
    let all = consume_n(&c, "backlog", BACKLOG - 30 + 10).await;
    let mut expected: Vec<String> = (30..BACKLOG).map(old).collect();
    expected.extend((0..10).map(new));
    assert_eq!(all, expected);
    assert!(c.get("backlog", true).await.expect("get").is_none());
}

#[tokio::test]
async fn purge_and_delete_while_recovering_count_and_remove_every_message() {
    let (_h, hold) = hold_file();
    let mut d = daemon(&hold);
    let c = d.client().await;
    for q in ["purged", "deleted"] {
        c.declare_queue(
            q,
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .expect("declare");
        publish_all(&c, q, (0..BACKLOG).map(old)).await;
    }
    drop(c);
    d.kill9();
    std::fs::write(&hold, b"").expect("hold file");
    d.restart();
    let c = d.client().await;
    publish_all(&c, "purged", (0..5).map(new)).await;
    assert_eq!(listed(&d, "purged")["recovering"], true);
    // Each waits for the rest of its queue to be read, so it answers with the whole count.
    let purge = {
        let c = d.client().await;
        tokio::spawn(async move { c.purge_queue("purged").await })
    };
    let delete = {
        let c = d.client().await;
        tokio::spawn(async move { c.delete_queue("deleted", false, false).await })
    };
    std::fs::remove_file(&hold).expect("release the hold");
    let purged = within("the purge", purge)
        .await
        .expect("task")
        .expect("purge");
    assert_eq!(purged, (BACKLOG + 5) as u64);
    let deleted = within("the delete", delete)
        .await
        .expect("task")
        .expect("delete");
    assert_eq!(deleted, BACKLOG as u64);
    drop(c);
    // Durable: nothing comes back at the next start.
    d.kill9();
    d.restart();
    let c = d.client().await;
    assert!(c.get("purged", true).await.expect("get").is_none());
    assert!(
        c.declare_queue(
            "deleted",
            QueueOptions {
                passive: true,
                ..Default::default()
            }
        )
        .await
        .is_err(),
        "the deleted queue stays deleted"
    );
}

/// What the daemon logged in its latest run.
fn last_run_log(d: &TestDaemon) -> String {
    let logs = d.logs();
    let at = logs.rfind("--- daemon run ").expect("a run's log");
    logs[at..].to_owned()
}

#[tokio::test]
async fn with_quick_repair_a_restart_after_kill_9_skips_the_repair_and_keeps_everything() {
    const REPAIR: &str = "redb is repairing";
    for quick in [false, true] {
        // Quick repair is the default; `--store-quick-repair` is still taken.
        let mut d = if quick {
            TestDaemon::start_with(&["--store-quick-repair"])
        } else {
            TestDaemon::start_with(&["--no-store-quick-repair"])
        };
        let c = d.client().await;
        c.declare_queue(
            "kept",
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .expect("declare");
        publish_all(&c, "kept", (0..100).map(old)).await;
        drop(c);
        d.kill9();
        d.restart();
        let log = last_run_log(&d);
        // Without quick repair the same kill -9 makes redb walk the file: the check can fail.
        assert_eq!(log.contains(REPAIR), !quick, "quick repair {quick}:\n{log}");
        let c = d.client().await;
        assert_eq!(
            consume_n(&c, "kept", 100).await,
            (0..100).map(old).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn by_default_a_restart_after_kill_9_skips_the_repair() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue(
        "kept",
        QueueOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
    publish_all(&c, "kept", (0..10).map(old)).await;
    drop(c);
    d.kill9();
    d.restart();
    let log = last_run_log(&d);
    assert!(!log.contains("redb is repairing"), "{log}");
    let c = d.client().await;
    assert_eq!(
        consume_n(&c, "kept", 10).await,
        (0..10).map(old).collect::<Vec<_>>()
    );
}
