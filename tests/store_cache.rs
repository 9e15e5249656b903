//! The store's page cache is capped (`--store-cache-size`): a daemon that wrote a large
//! backlog, or was restarted on it and drained it, holds about the cap plus its queues'
//! windows, not the store file. (redb's own default cache, 1 GiB, keeps the pages it wrote:
//! 100,000 persistent 2 KB messages left the daemon at 483 MiB resident, against 139 MiB
//! with the 64 MiB default cap; docs/BENCHMARKS.md.)

mod common;

use common::{durable_queue, ready, within, TestDaemon};
use warren::client::{ConsumeOptions, OutgoingMessage};
use warren_protocol::FieldTable;

const MESSAGES: u64 = 30_000;
const BODY: usize = 2_048;
const MIB: u64 = 1 << 20;

#[tokio::test]
async fn writing_restarting_and_draining_a_large_store_hold_the_cache_cap_not_the_file() {
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
    let bodies = MESSAGES * BODY as u64;
    // The cap (8 MiB), the queue's in-memory window (8 MiB by default), its index and the
    // pages the allocator keeps from the publishes are what may stay (30 MiB measured in a
    // debug build); the bodies' size is above that, and well below what an uncapped cache
    // keeps of the pages it wrote (checked: with --store-cache-size 1GiB this grew by 144 MiB,
    // in debug and release builds alike).
    let bound = bodies;
    let grown = d.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < bound,
        "after storing {} MiB of bodies, resident memory grew by {} MiB (bound {} MiB)",
        bodies / MIB,
        grown / MIB,
        bound / MIB
    );
    c.close().await.expect("close");
    assert!(d.stop(), "clean stop");
    let file = std::fs::metadata(d.data_dir().join("warren.redb"))
        .expect("store file")
        .len();
    assert!(file > bodies, "the store holds the bodies ({file} bytes)");

    d.restart();
    let c = d.client().await;
    assert_eq!(ready(&c, "big").await, MESSAGES);
    // Recovery reads the queue's index and its window, not every page. (A debug build's redb
    // also checks the whole file on open, which an uncapped cache then keeps.)
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
