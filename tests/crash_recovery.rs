//! `kill -9` the daemon mid-work and restart it on the same data directory: every confirmed
//! persistent message is still there, in order, and no acked one came back.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{within, TestDaemon};
use warren::client::{
    Client, ConsumeOptions, ExchangeKind, ExchangeOptions, OutgoingMessage, QueueOptions,
};
use warren_protocol::FieldTable;

fn durable() -> QueueOptions {
    QueueOptions {
        durable: true,
        ..Default::default()
    }
}

async fn all_bodies(c: &Client, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match c.get(queue, true).await.expect("get") {
            Some(d) => out.push(String::from_utf8(d.body.to_vec()).expect("utf8")),
            None => return out,
        }
    }
    panic!("queue {queue} did not drain");
}

#[tokio::test]
async fn confirmed_messages_survive_kill_9_and_acked_ones_stay_gone() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("jobs", durable()).await.unwrap();
    c.declare_queue("scratch", QueueOptions::default())
        .await
        .unwrap();
    c.declare_exchange(
        "events",
        ExchangeKind::Topic,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.bind("jobs", "events", "job.#", FieldTable::new())
        .await
        .unwrap();

    let mut pending = Vec::new();
    for i in 0..500 {
        let m = OutgoingMessage::new("", "jobs", format!("job-{i:04}")).persistent();
        pending.push(c.publish(m).await.unwrap());
    }
    for p in pending {
        assert!(p.await.unwrap().is_confirmed());
    }
    // A transient message in the durable queue does not survive; nor does the transient queue.
    c.publish_and_confirm(OutgoingMessage::new("", "jobs", "transient"))
        .await
        .unwrap();

    c.qos(1000).await.unwrap();
    let mut k = c.consume("jobs", ConsumeOptions::default()).await.unwrap();
    let mut last = 0;
    for i in 0..200 {
        let m = within("delivery", k.next()).await.expect("delivery");
        assert_eq!(m.body, format!("job-{i:04}").as_bytes());
        last = m.delivery_tag;
    }
    // One durable ack covers all 200 and returns once it is on disk.
    c.ack_durable(last, true).await.unwrap();

    d.kill9();
    d.restart();

    let c = d.client().await;
    let remaining = all_bodies(&c, "jobs").await;
    let want: Vec<String> = (200..500).map(|i| format!("job-{i:04}")).collect();
    assert_eq!(
        remaining, want,
        "exactly the unacked persistent messages, in order"
    );
    let err = c
        .declare_queue(
            "scratch",
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(warren_protocol::ErrorCode::NotFound));
    // The durable exchange and binding came back too.
    c.publish_and_confirm(OutgoingMessage::new("events", "job.new", "routed").persistent())
        .await
        .unwrap();
    assert_eq!(all_bodies(&c, "jobs").await, ["routed"]);
}

#[tokio::test]
async fn kill_9_during_a_publish_burst_loses_no_confirmed_message() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("burst", durable()).await.unwrap();
    c.declare_queue("burst-copy", durable()).await.unwrap();
    c.declare_exchange(
        "both",
        ExchangeKind::Fanout,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.bind("burst", "both", "", FieldTable::new())
        .await
        .unwrap();
    c.bind("burst-copy", "both", "", FieldTable::new())
        .await
        .unwrap();

    // How many confirms the publisher has seen: the kill waits for these, not for the queue's
    // count (committed messages whose confirms were still on the way when the daemon died
    // made this test fail on a loaded machine: 2,886 confirmed of 3,000 stored).
    let seen = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let c = c.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut confirmed = BTreeSet::new();
            let mut window = std::collections::VecDeque::new();
            for i in 0..50_000u32 {
                let m = OutgoingMessage::new("both", "", format!("{i:06}")).persistent();
                match c.publish(m).await {
                    Ok(p) => window.push_back((i, p)),
                    Err(_) => break,
                }
                if window.len() >= 200 {
                    let Some((id, p)) = window.pop_front() else {
                        break;
                    };
                    match p.await {
                        Ok(o) if o.is_confirmed() => {
                            confirmed.insert(id);
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            }
            while let Some((id, p)) = window.pop_front() {
                if matches!(p.await, Ok(o) if o.is_confirmed()) {
                    confirmed.insert(id);
                }
            }
            confirmed
        })
    };
    // Let a few thousand messages be confirmed, then pull the plug.
    for _ in 0..4_000 {
        if seen.load(Ordering::Relaxed) >= 3_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    d.kill9();
    let confirmed = within("the publisher to notice", publisher).await.unwrap();
    assert!(
        confirmed.len() >= 3_000,
        "only {} confirmed before the kill",
        confirmed.len()
    );

    d.restart();
    let c = d.client().await;
    for queue in ["burst", "burst-copy"] {
        let bodies = all_bodies(&c, queue).await;
        let ids: Vec<u32> = bodies.iter().map(|b| b.parse().unwrap()).collect();
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{queue}: a message was stored twice"
        );
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "{queue}: FIFO order broken");
        let missing: Vec<&u32> = confirmed.difference(&unique).take(5).collect();
        assert!(
            missing.is_empty(),
            "{queue}: confirmed messages lost: {missing:?}..."
        );
    }
}

#[tokio::test]
async fn a_clean_stop_and_restart_keeps_everything() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("keep", durable()).await.unwrap();
    for i in 0..10 {
        c.publish_and_confirm(OutgoingMessage::new("", "keep", format!("{i}")).persistent())
            .await
            .unwrap();
    }
    drop(c);
    assert!(d.stop(), "SIGTERM should end the daemon with exit code 0");
    d.restart();
    let c = d.client().await;
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(all_bodies(&c, "keep").await, want);
}

#[tokio::test]
async fn a_fanned_out_message_stays_stored_until_every_queue_has_acked_it() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange(
        "fan",
        ExchangeKind::Fanout,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for q in ["left", "right", "middle"] {
        c.declare_queue(q, durable()).await.unwrap();
        c.bind(q, "fan", "", FieldTable::new()).await.unwrap();
    }
    for i in 0..20 {
        c.publish_and_confirm(OutgoingMessage::new("fan", "", format!("{i:02}")).persistent())
            .await
            .unwrap();
    }
    // Ack every message in "left" and half of them in "middle"; "right" keeps all.
    let mut tags = Vec::new();
    for _ in 0..20 {
        tags.push(
            c.get("left", false)
                .await
                .unwrap()
                .expect("message")
                .delivery_tag,
        );
    }
    for _ in 0..10 {
        tags.push(
            c.get("middle", false)
                .await
                .unwrap()
                .expect("message")
                .delivery_tag,
        );
    }
    for t in tags {
        c.ack_durable(t, false).await.unwrap();
    }
    d.kill9();
    d.restart();
    let c = d.client().await;
    let all: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
    assert!(all_bodies(&c, "left").await.is_empty());
    assert_eq!(all_bodies(&c, "right").await, all);
    assert_eq!(all_bodies(&c, "middle").await, all[10..].to_vec());
}
