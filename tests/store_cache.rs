//! The store's page cache is capped (`--store-cache-size`): a daemon restarted on a large
//! store, and then drained, holds about the cap plus its queues' windows, not the store file.
//! (redb's own default cache, 1 GiB, kept what recovery and the drain read: a 200 MB store
//! left the daemon at 257 MiB resident after a restart, docs/BENCHMARKS.md.)

mod common;

use common::{durable_queue, ready, within, TestDaemon};
use warren::client::{ConsumeOptions, OutgoingMessage};
use warren_protocol::FieldTable;

const MESSAGES: u64 = 30_000;
const BODY: usize = 2_048;
const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_restart_on_a_large_store_holds_the_cache_cap_not_the_file() {
    let mut d = TestDaemon::start_with(&["--store-cache-size", "8MiB"]);
    let c = d.client().await;
    // After a login: its password hashing keeps a working area per thread (19 MiB), which
    // the restarted daemon's login allocates again.
    let baseline = d.rss_bytes();
    durable_queue(&c, "big", FieldTable::new()).await;
    let body = "x".repeat(BODY - 8);
    for batch in 0..MESSAGES / 1_000 {
        let mut pending = Vec::new();
        for i in batch * 1_000..(batch + 1) * 1_000 {
            let mut m = OutgoingMessage::new("", "big", format!("{i:08}{body}"));
            m.properties.persistent = true;
            pending.push(c.publish(m).await.expect("publish"));
        }
        for p in pending {
            assert!(p.await.expect("confirm").is_confirmed());
        }
    }
    c.close().await.expect("close");
    assert!(d.stop(), "clean stop");
    let file = std::fs::metadata(d.data_dir().join("warren.redb"))
        .expect("store file")
        .len();
    let bodies = MESSAGES * BODY as u64;
    assert!(file > bodies, "the store holds the bodies ({file} bytes)");

    d.restart();
    let c = d.client().await;
    assert_eq!(ready(&c, "big").await, MESSAGES);
    // The cap (8 MiB), the queue's in-memory window (8 MiB by default) and its index are what
    // may stay; half the bodies is above that, and far below the file, which an uncapped
    // cache holds after recovery (checked: this fails with --store-cache-size 1GiB).
    let bound = bodies / 2;
    let grown = d.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < bound,
        "after a restart on a {} MiB store, resident memory grew by {} MiB (bound {} MiB)",
        file / MIB,
        grown / MIB,
        bound / MIB
    );

    // Draining reads every body back through the store: still bounded.
    c.qos(500).await.expect("qos");
    let mut consumer = c
        .consume("big", ConsumeOptions::default())
        .await
        .expect("consume");
    for i in 0..MESSAGES {
        let m = within("a delivery", consumer.next())
            .await
            .expect("the consumer ended");
        assert_eq!(&m.body[..8], format!("{i:08}").as_bytes(), "FIFO order");
        c.ack(m.delivery_tag, false).await.expect("ack");
    }
    let grown = d.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < bound,
        "after draining {} MiB of bodies, resident memory grew by {} MiB (bound {} MiB)",
        bodies / MIB,
        grown / MIB,
        bound / MIB
    );
}
