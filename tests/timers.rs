//! The timer index against the real daemon: each timer kind still fires when only queues and
//! sessions with a deadline due are visited, including when a deadline moves earlier than
//! the one already indexed and when other queues' deadlines are far away. (When exactly is
//! stated on a fake clock in the broker's unit tests; here, that it happens end to end.)

mod common;

use std::time::Duration;

use common::{
    args, dead_letter_target, durable_queue as queue, ready, wait_get, within, TestDaemon,
};
use warren::client::{
    Client, ConsumeOptions, Delivery, FieldValue, OutgoingMessage, PublishOutcome,
};
use warren_protocol::FieldTable;

const HOUR_MS: i64 = 3_600_000;

fn body(d: &Delivery) -> String {
    String::from_utf8(d.body.to_vec()).unwrap()
}

fn with_dlx(mut a: FieldTable) -> FieldTable {
    a.insert(
        "x-dead-letter-exchange".to_owned(),
        FieldValue::String("dlx".to_owned()),
    );
    a
}

async fn publish(c: &Client, m: OutgoingMessage) {
    let out = c.publish_and_confirm(m.persistent()).await.unwrap();
    assert!(matches!(out, PublishOutcome::Confirmed), "{out:?}");
}

#[tokio::test]
async fn a_near_deadline_fires_while_many_queues_hold_far_ones() {
    let d = TestDaemon::start();
    let c = d.client().await;
    dead_letter_target(&c).await;
    for i in 0..50 {
        let name = format!("far-{i}");
        queue(
            &c,
            &name,
            with_dlx(args(&[("x-message-ttl", FieldValue::Int(HOUR_MS))])),
        )
        .await;
        publish(&c, OutgoingMessage::new("", &name, "far")).await;
    }
    queue(
        &c,
        "near",
        with_dlx(args(&[("x-message-ttl", FieldValue::Int(200))])),
    )
    .await;
    publish(&c, OutgoingMessage::new("", "near", "near")).await;
    let dead = wait_get(&c, "dlq").await;
    assert_eq!(body(&dead), "near");
    for i in [0, 25, 49] {
        assert_eq!(
            ready(&c, &format!("far-{i}")).await,
            1,
            "far-{i} kept its message"
        );
    }
}

#[tokio::test]
async fn a_shorter_per_message_ttl_after_a_longer_one_still_expires() {
    let d = TestDaemon::start();
    let c = d.client().await;
    dead_letter_target(&c).await;
    queue(&c, "mixed", with_dlx(FieldTable::new())).await;
    // The queue's deadline is an hour away when the short one arrives: it must move earlier.
    publish(
        &c,
        OutgoingMessage::new("", "mixed", "long").expiration_ms(HOUR_MS as u64),
    )
    .await;
    publish(
        &c,
        OutgoingMessage::new("", "mixed", "short").expiration_ms(200),
    )
    .await;
    let dead = wait_get(&c, "dlq").await;
    assert_eq!(body(&dead), "short");
    let head = c
        .get("mixed", false)
        .await
        .unwrap()
        .expect("the long one stays");
    assert_eq!(body(&head), "long");
}

#[tokio::test]
async fn a_per_message_expiration_shorter_than_the_queues_ttl_expires_first() {
    let d = TestDaemon::start();
    let c = d.client().await;
    dead_letter_target(&c).await;
    queue(
        &c,
        "ttl",
        with_dlx(args(&[("x-message-ttl", FieldValue::Int(HOUR_MS))])),
    )
    .await;
    publish(&c, OutgoingMessage::new("", "ttl", "queue-ttl")).await;
    publish(
        &c,
        OutgoingMessage::new("", "ttl", "own-ttl").expiration_ms(200),
    )
    .await;
    let dead = wait_get(&c, "dlq").await;
    assert_eq!(body(&dead), "own-ttl");
    assert_eq!(ready(&c, "ttl").await, 1);
}

#[tokio::test]
async fn a_shorter_consumer_timeout_on_the_same_connection_fires_first() {
    let d = TestDaemon::start();
    let c = d.client().await;
    queue(&c, "patient", FieldTable::new()).await;
    queue(&c, "hasty", FieldTable::new()).await;
    publish(&c, OutgoingMessage::new("", "patient", "p")).await;
    publish(&c, OutgoingMessage::new("", "hasty", "h")).await;
    let holder = d.client().await;
    // The connection's first delivery sets its deadline an hour away; the second, on the
    // same connection, must bring it forward.
    let mut patient = holder
        .consume(
            "patient",
            ConsumeOptions::default().consumer_timeout(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let _ = within("the patient delivery", patient.next())
        .await
        .unwrap();
    let mut hasty = holder
        .consume(
            "hasty",
            ConsumeOptions::default().consumer_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let _ = within("the hasty delivery", hasty.next()).await.unwrap();
    assert!(
        within("the cancel", hasty.next()).await.is_none(),
        "the hasty consumer is cancelled"
    );
    let why = format!("{:?}", hasty.cancel_reason());
    assert!(why.contains("consumer timeout"), "{why}");
    assert_eq!(body(&wait_get(&c, "hasty").await), "h", "requeued");
    assert_eq!(
        ready(&c, "patient").await,
        0,
        "the patient one still holds its"
    );
}

#[tokio::test]
async fn x_expires_counts_from_the_last_consumer_leaving() {
    let d = TestDaemon::start();
    let c = d.client().await;
    queue(&c, "leased", args(&[("x-expires", FieldValue::Int(300))])).await;
    let k = c
        .consume("leased", ConsumeOptions::default())
        .await
        .unwrap();
    // Past its x-expires with a consumer: it stays (its first deadline fired and found a
    // consumer, so the index holds nothing for it until the consumer goes).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let probe = OutgoingMessage::new("", "leased", "probe").mandatory();
    assert!(matches!(
        c.publish_and_confirm(probe).await.unwrap(),
        PublishOutcome::Confirmed
    ));
    c.cancel(k.tag()).await.unwrap();
    // Watched through `status`, which touches no queue: a publish would itself set the
    // queue's deadline and hide a consumer leaving without setting one.
    within("the queue to expire after its consumer left", async {
        loop {
            let status = c.admin("status", FieldTable::new()).await.unwrap();
            if status["queues"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn deadlines_of_recovered_messages_fire_after_a_restart() {
    let mut d = TestDaemon::start();
    {
        let c = d.client().await;
        dead_letter_target(&c).await;
        queue(&c, "kept", with_dlx(FieldTable::new())).await;
        publish(
            &c,
            OutgoingMessage::new("", "kept", "expires-after-restart").expiration_ms(1_000),
        )
        .await;
    }
    d.restart();
    let c = d.client().await;
    let dead = wait_get(&c, "dlq").await;
    assert_eq!(body(&dead), "expires-after-restart");
}

/// The publish rate of `queue`, from `queue.inspect`.
async fn publish_rate(c: &Client, queue: &str) -> f64 {
    let info = c
        .admin(
            "queue.inspect",
            args(&[("queue", FieldValue::String(queue.to_owned()))]),
        )
        .await
        .unwrap();
    info["publish_rate"].as_f64().expect("publish_rate")
}

#[tokio::test]
async fn rates_show_while_a_queue_is_busy_and_fall_to_zero_when_it_goes_quiet() {
    let d = TestDaemon::start();
    let c = d.client().await;
    queue(&c, "idle", FieldTable::new()).await;
    queue(&c, "busy", FieldTable::new()).await;
    // Publishing keeps on until a rate shows (rates are sampled about once a second, and
    // only for queues whose counters moved).
    within("a publish rate on the busy queue", async {
        loop {
            publish(&c, OutgoingMessage::new("", "busy", "m")).await;
            if publish_rate(&c, "busy").await > 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(publish_rate(&c, "idle").await, 0.0);
    within("the busy queue's rate to fall back to zero", async {
        while publish_rate(&c, "busy").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
