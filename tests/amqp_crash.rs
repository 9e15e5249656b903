//! `kill -9` the daemon while a RabbitMQ client (lapin) publishes with confirms through the
//! AMQP listener: after the restart every message the publisher saw confirmed is there, once
//! and in order, and what a consumer acked before the kill does not come back.
//!
//! When an AMQP ack is durable: `basic.ack` has no reply, so the test makes one. A
//! synchronous method on the same channel after the ack (`queue.declare` passive) is
//! answered only after the server handled the ack, which hands the removal to the store
//! writer before the connection reads its next frame. Then Warren's own client acks a
//! message with `ack_durable`, whose `Ok` the server sends once every settle already handed
//! to the writer, on any connection, is committed (docs/storage.md, "What a `kill -9`
//! keeps"). A clean AMQP `channel.close` would not do: `close-ok` is sent at once, before
//! the requeues and removals it causes are committed.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{within, TestDaemon, WAIT};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use warren::client::{OutgoingMessage, QueueOptions};

/// Declares `name` durable (or, with `passive`, asks for it) and returns its ready count.
async fn declare(ch: &Channel, name: &str, passive: bool) -> u32 {
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                passive,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue declared");
    q.message_count()
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Consumes every message of `queue` over AMQP (with acks) and returns the bodies in
/// delivery order; checks the queue is empty afterwards.
async fn consume_all(conn: &Connection, queue: &str) -> Vec<String> {
    let ch = conn.create_channel().await.expect("channel");
    let count = declare(&ch, queue, true).await;
    ch.basic_qos(500, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consuming");
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let d = within("a delivery", consumer.next())
            .await
            .expect("the consumer is open")
            .expect("a delivery");
        out.push(String::from_utf8(d.data.clone()).expect("utf8 body"));
        d.ack(BasicAckOptions::default()).await.expect("acked");
    }
    let leftover = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get");
    assert!(
        leftover.is_none(),
        "{queue}: more than the {count} messages the queue reported"
    );
    out
}

#[tokio::test]
async fn every_confirmed_amqp_publish_survives_kill_9_and_acked_ones_stay_gone() {
    let mut d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    declare(&ch, "settled", false).await;
    declare(&ch, "burst", false).await;

    // 1. 500 confirmed messages; a consumer on another connection acks the first 200.
    for i in 0..500 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "settled".into(),
                BasicPublishOptions::default(),
                format!("s-{i:04}").as_bytes(),
                persistent(),
            )
            .await
            .expect("published");
        assert_eq!(
            within("a confirm", confirm).await.expect("confirmed"),
            Confirmation::Ack(None)
        );
    }
    let consumer_conn = d.amqp().await;
    let sub = consumer_conn.create_channel().await.expect("channel");
    sub.basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = sub
        .basic_consume(
            "settled".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consuming");
    let mut last = 0;
    for i in 0..200 {
        let m = within("a delivery", consumer.next())
            .await
            .expect("the consumer is open")
            .expect("a delivery");
        assert_eq!(m.data, format!("s-{i:04}").as_bytes());
        last = m.delivery_tag;
    }
    sub.basic_ack(last, BasicAckOptions { multiple: true })
        .await
        .expect("acked");
    // The ack is durable (module docs): the server has handled it once a later method on
    // the channel is answered, and a native durable ack orders behind its removal.
    declare(&sub, "settled", true).await;
    let native = d.client().await;
    native
        .declare_queue("fence", QueueOptions::default())
        .await
        .expect("declared");
    native
        .publish_and_confirm(OutgoingMessage::new("", "fence", "x"))
        .await
        .expect("published");
    let fence = common::wait_get(&native, "fence").await;
    native
        .ack_durable(fence.delivery_tag, false)
        .await
        .expect("durable ack");

    // 2. A burst, counted by the publisher's own confirms; the kill comes after 3,000.
    let seen = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let ch = ch.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut confirmed = BTreeSet::new();
            let mut window = VecDeque::new();
            for i in 0..50_000u32 {
                let sent = ch
                    .basic_publish(
                        "".into(),
                        "burst".into(),
                        BasicPublishOptions::default(),
                        format!("{i:06}").as_bytes(),
                        persistent(),
                    )
                    .await;
                match sent {
                    Ok(p) => window.push_back((i, p)),
                    Err(_) => break,
                }
                if window.len() >= 200 {
                    let Some((id, p)) = window.pop_front() else {
                        break;
                    };
                    match p.await {
                        Ok(Confirmation::Ack(_)) => {
                            confirmed.insert(id);
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            }
            // After the kill, lapin fails what is still outstanding; what was acked before
            // it stays counted.
            while let Some((id, p)) = window.pop_front() {
                if matches!(p.await, Ok(Confirmation::Ack(_))) {
                    confirmed.insert(id);
                }
            }
            confirmed
        })
    };
    for _ in 0..4_000 {
        if seen.load(Ordering::Relaxed) >= 3_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    d.kill9();
    let confirmed = tokio::time::timeout(WAIT * 2, publisher)
        .await
        .expect("the publisher noticed the kill")
        .expect("the publisher task ended cleanly");
    assert!(
        confirmed.len() >= 3_000,
        "only {} confirmed before the kill",
        confirmed.len()
    );
    drop(consumer);
    drop(native);

    d.restart();
    let conn = d.amqp().await;

    let remaining = consume_all(&conn, "settled").await;
    let want: Vec<String> = (200..500).map(|i| format!("s-{i:04}")).collect();
    assert_eq!(
        remaining, want,
        "exactly the messages not acked before the kill, in order"
    );

    let bodies = consume_all(&conn, "burst").await;
    let ids: Vec<u32> = bodies
        .iter()
        .map(|b| b.parse().expect("a numbered body"))
        .collect();
    let unique: BTreeSet<u32> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a message was stored twice");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "FIFO order broken");
    let missing: Vec<&u32> = confirmed.difference(&unique).take(5).collect();
    assert!(
        missing.is_empty(),
        "confirmed messages lost: {missing:?}..."
    );
}
