//! Queues longer than their in-memory window: bodies past the window are paged out to the
//! store and read back in order when consumers reach them.

mod common;

use common::{within, TestDaemon};
use warren::client::{Client, ConsumeOptions, OutgoingMessage, QueueOptions};

const MESSAGES: usize = 2_000;

async fn fill(c: &Client, queue: &str) {
    c.declare_queue(
        queue,
        QueueOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..MESSAGES {
        // 100-byte bodies: the 2 KiB window holds about 20 of them.
        let body = format!("{i:06}{}", "x".repeat(94));
        pending.push(
            c.publish(OutgoingMessage::new("", queue, body).persistent())
                .await
                .unwrap(),
        );
    }
    for p in pending {
        assert!(p.await.unwrap().is_confirmed());
    }
}

async fn consume_in_order(c: &Client, queue: &str, count: usize, from: usize) {
    c.qos(50).await.unwrap();
    let mut k = c.consume(queue, ConsumeOptions::default()).await.unwrap();
    for i in from..from + count {
        let m = within("a paged delivery", k.next())
            .await
            .expect("delivery");
        assert_eq!(
            &m.body[..6],
            format!("{i:06}").as_bytes(),
            "out of order at {i}"
        );
        assert_eq!(m.body.len(), 100);
        if i + 1 == from + count {
            // A durable ack also makes every earlier ack on the connection durable.
            c.ack_durable(m.delivery_tag, false).await.unwrap();
        } else {
            c.ack(m.delivery_tag, false).await.unwrap();
        }
    }
    c.cancel(k.tag()).await.unwrap();
}

#[tokio::test]
async fn a_queue_longer_than_its_window_delivers_everything_in_order() {
    let d = TestDaemon::start_with(&["--queue-window-bytes", "2048"]);
    let c = d.client().await;
    fill(&c, "long").await;
    // Get reads a paged-out head directly.
    let first = c.get("long", false).await.unwrap().expect("message");
    assert_eq!(&first.body[..6], b"000000");
    c.ack_durable(first.delivery_tag, false).await.unwrap();
    consume_in_order(&c, "long", MESSAGES - 1, 1).await;
    assert!(c.get("long", true).await.unwrap().is_none());
}

#[tokio::test]
async fn after_a_restart_every_body_is_read_back_from_the_store() {
    let mut d = TestDaemon::start_with(&["--queue-window-bytes", "2048"]);
    let c = d.client().await;
    fill(&c, "long").await;
    consume_in_order(&c, "long", 500, 0).await;
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    let n = c
        .declare_queue(
            "long",
            QueueOptions {
                durable: true,
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .message_count;
    assert_eq!(n, 1_500, "messages after restart");
    consume_in_order(&c, "long", 1_500, 500).await;
}
