//! A drained backlog's memory goes back to the system (issue 11, S6: "back near idle after
//! the drain"). The daemon's allocator is jemalloc, which purges freed pages 100 ms after
//! they are freed (.cargo/config.toml); glibc's malloc kept them: after a 1 GB backlog was
//! drained it stayed at 154 MB resident with 5 MB allocated (docs/BENCHMARKS.md).

mod common;

use std::time::Duration;

use common::{within, TestDaemon};
use warren::client::{ConsumeOptions, OutgoingMessage, QueueOptions};

const MESSAGES: usize = 12_000;
const BODY: usize = 4_096;
const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_drained_backlog_gives_its_memory_back() {
    let d = TestDaemon::start();
    let c = d.client().await;
    // Transient messages stay in memory while queued (persistent ones beyond the queue's
    // window are paged out), so the backlog is held by the daemon until it is drained.
    c.declare_queue("backlog", QueueOptions::default())
        .await
        .expect("declare");
    // The login's password hashing frees its working area; let it go back first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = d.rss_bytes();
    let filler = "x".repeat(BODY - 8);
    for batch in 0..MESSAGES / 1_000 {
        let mut pending = Vec::new();
        for i in batch * 1_000..(batch + 1) * 1_000 {
            let m = OutgoingMessage::new("", "backlog", format!("{i:08}{filler}"));
            pending.push(c.publish(m).await.expect("publish"));
        }
        for p in pending {
            assert!(p.await.expect("confirm").is_confirmed());
        }
    }
    let bodies = (MESSAGES * BODY) as u64;
    let held = d.rss_bytes().saturating_sub(baseline);
    assert!(
        held >= bodies / 2,
        "the backlog ({} MiB of bodies) should be resident while queued; grew by {} MiB",
        bodies / MIB,
        held / MIB
    );

    c.qos(500).await.expect("qos");
    let mut consumer = c
        .consume("backlog", ConsumeOptions::default())
        .await
        .expect("consume");
    for i in 0..MESSAGES {
        let m = within("a delivery", consumer.next())
            .await
            .expect("a delivery");
        assert!(m.body.starts_with(format!("{i:08}").as_bytes()), "in order");
        c.ack(m.delivery_tag, false).await.expect("ack");
    }
    drop(consumer);

    // Bounded: jemalloc's background thread purges within about a second.
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = d.rss_bytes().saturating_sub(baseline);
        if left < bodies / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left < bodies / 4,
        "after draining {} MiB of bodies the daemon still held {} MiB more than before \
         (held {} MiB with the backlog queued)",
        bodies / MIB,
        left / MIB,
        held / MIB
    );
}
