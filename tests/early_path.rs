//! A publish to plain queues is enqueued before its commit (docs/storage.md, *Enqueued
//! before the commit*): a message its consumers settle before the writer takes it is never
//! written, the connection's order holds across the early and the commit-first paths, and
//! `kill -9` still loses no confirmed message and brings back no acked one.

mod common;

use common::{args, within, TestDaemon};
use warren::admin_types::Status;
use warren::client::{Client, ConsumeOptions, OutgoingMessage, QueueOptions};
use warren_protocol::{FieldTable, FieldValue};

fn durable(arguments: FieldTable) -> QueueOptions {
    QueueOptions {
        durable: true,
        arguments,
        ..Default::default()
    }
}

async fn written(c: &Client) -> u64 {
    c.admin_typed::<Status>("status", FieldTable::new())
        .await
        .expect("status")
        .store
        .messages_written
}

async fn all_bodies(c: &Client, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match c.get(queue, true).await.expect("get") {
            Some(d) => out.push(String::from_utf8(d.body.to_vec()).expect("utf8")),
            None => return out,
        }
    }
    panic!("queue {queue} did not drain");
}

#[tokio::test]
async fn messages_a_no_ack_consumer_takes_before_their_commit_are_not_written() {
    const N: usize = 2000;
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("fast", durable(FieldTable::new()))
        .await
        .expect("declare");
    let consumer = d.client().await;
    let mut k = consumer
        .consume(
            "fast",
            ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .expect("consume");
    let before = written(&c).await;
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        let m = OutgoingMessage::new("", "fast", format!("m-{i}")).persistent();
        confirms.push(c.publish(m).await.expect("publish"));
    }
    for p in confirms {
        assert!(p.await.expect("confirm").is_confirmed());
    }
    for i in 0..N {
        let m = within("a delivery", k.next()).await.expect("delivery");
        assert_eq!(m.body, format!("m-{i}").as_bytes(), "in order");
    }
    let written = written(&c).await - before;
    // Each was delivered (and so settled) as it was enqueued, before the writer took it;
    // one the writer took first is written, so only "most" can be said.
    assert!(
        written < (N / 2) as u64,
        "{written} of {N} messages settled before their commit were written"
    );
}

#[tokio::test]
async fn a_connections_order_holds_across_the_early_and_the_commit_first_paths() {
    const N: usize = 600;
    let d = TestDaemon::start();
    let c = d.client().await;
    // Deduplication decides at the commit: a message with a key (a message id) takes the
    // commit-first path, one without goes early. The early one must wait for the other.
    let dedup = args(&[
        ("x-message-deduplication", FieldValue::Bool(true)),
        ("x-deduplication-window", FieldValue::String("10m".into())),
    ]);
    c.declare_queue("mixed", durable(dedup))
        .await
        .expect("declare");
    let consumer = d.client().await;
    consumer.qos(N as u32).await.expect("qos");
    let mut k = consumer
        .consume("mixed", ConsumeOptions::default())
        .await
        .expect("consume");
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        let mut m = OutgoingMessage::new("", "mixed", format!("m-{i:04}")).persistent();
        if i % 3 == 0 {
            m = m.message_id(format!("key-{i}"));
        }
        confirms.push(c.publish(m).await.expect("publish"));
    }
    for p in confirms {
        assert!(p.await.expect("confirm").is_confirmed());
    }
    for i in 0..N {
        let m = within("a delivery", k.next()).await.expect("delivery");
        assert_eq!(
            String::from_utf8_lossy(&m.body),
            format!("m-{i:04}"),
            "delivery {i} out of order"
        );
        consumer.ack(m.delivery_tag, false).await.expect("ack");
    }
}

#[tokio::test]
async fn kill_9_keeps_every_confirmed_message_and_brings_back_no_acked_one() {
    const N: usize = 1000;
    const ACKED: usize = 400;
    let mut d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("jobs", durable(FieldTable::new()))
        .await
        .expect("declare");
    let consumer = d.client().await;
    consumer.qos(N as u32).await.expect("qos");
    let mut k = consumer
        .consume("jobs", ConsumeOptions::default())
        .await
        .expect("consume");
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        let m = OutgoingMessage::new("", "jobs", format!("job-{i:04}")).persistent();
        confirms.push(c.publish(m).await.expect("publish"));
    }
    // Acks race the writer: some settle messages it has not taken (never written), some
    // remove rows it wrote. Either way they are durable once acknowledged.
    for i in 0..N {
        let m = within("a delivery", k.next()).await.expect("delivery");
        assert_eq!(m.body, format!("job-{i:04}").as_bytes());
        if i < ACKED {
            consumer
                .ack_durable(m.delivery_tag, false)
                .await
                .expect("ack");
        }
    }
    for p in confirms {
        assert!(p.await.expect("confirm").is_confirmed());
    }

    d.kill9();
    d.restart();

    let c = d.client().await;
    let want: Vec<String> = (ACKED..N).map(|i| format!("job-{i:04}")).collect();
    assert_eq!(
        all_bodies(&c, "jobs").await,
        want,
        "exactly the confirmed, unacked messages, in order"
    );
}

#[tokio::test]
async fn messages_a_prompt_consumer_acks_are_mostly_not_written() {
    const N: usize = 300;
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("acked", durable(FieldTable::new()))
        .await
        .expect("declare");
    let consumer = d.client().await;
    consumer.qos(N as u32).await.expect("qos");
    let mut k = consumer
        .consume("acked", ConsumeOptions::default())
        .await
        .expect("consume");
    let before = written(&c).await;
    let acking = tokio::spawn(async move {
        for i in 0..N {
            let m = within("a delivery", k.next()).await.expect("delivery");
            assert_eq!(m.body, format!("m-{i}").as_bytes(), "in order");
            consumer.ack(m.delivery_tag, false).await.expect("ack");
        }
        consumer
    });
    // One at a time: each publish finds the writer idle, so without the hold it would be
    // written before its consumer could ack it.
    for i in 0..N {
        let m = OutgoingMessage::new("", "acked", format!("m-{i}")).persistent();
        let outcome = within("a confirm", c.publish_and_confirm(m))
            .await
            .expect("publish");
        assert!(outcome.is_confirmed());
    }
    let _consumer = acking.await.expect("the consumer");
    let written = written(&c).await - before;
    // The writer holds each message while the queue's consumer is about to take it, up to
    // 10 ms, and an ack in that time spares the write; a slow moment writes a few.
    // (Without the hold about half were written: those whose ack came after the writer.)
    assert!(
        written < (N / 5) as u64,
        "{written} of {N} messages acked at once were written"
    );
}
