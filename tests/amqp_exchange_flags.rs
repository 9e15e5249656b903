//! Through the AMQP listener, with lapin: `exchange.declare`'s `internal` and `auto-delete`
//! flags map onto Warren's exchanges (no longer refused with 540), and `basic.qos` with
//! `global=true` is one prefetch shared by the channel's consumers, as in RabbitMQ.

mod common;

use common::{ok, within, TestDaemon};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ErrorKind, ExchangeKind};
use serde_json::Value;

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    ch
}

/// The reply code a refused method got (the server's channel.close or connection.close).
fn code(err: &lapin::Error) -> u16 {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
}

async fn declare(ch: &Channel, name: &str, options: ExchangeDeclareOptions) -> lapin::Result<()> {
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Fanout,
        options,
        FieldTable::default(),
    )
    .await
}

async fn queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue declared");
}

/// Ready messages of `name`, by a passive declare on `ch`: answered after everything the
/// connection sent before it was handled (a consume's first deliveries included).
async fn ready(ch: &Channel, name: &str) -> u32 {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive declare")
    .message_count()
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .expect("published");
    within("the confirm", confirm).await.expect("the confirm");
}

async fn consumer(ch: &Channel, queue: &str) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("consuming")
}

async fn next(
    c: &mut (impl futures::Stream<Item = lapin::Result<lapin::message::Delivery>> + Unpin),
) -> lapin::message::Delivery {
    within("a delivery", c.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery")
}

#[tokio::test]
async fn internal_and_auto_delete_are_declared_and_honoured() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    declare(
        &ch,
        "hidden",
        ExchangeDeclareOptions {
            internal: true,
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .expect("an internal auto-delete exchange is declared");
    let list: Value = serde_json::from_str(&ok(&d.cli(&["exchange", "list", "--json"]))).unwrap();
    let hidden = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hidden")
        .expect("listed");
    assert_eq!(
        (&hidden["internal"], &hidden["auto_delete"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    queue(&ch, "q").await;
    ch.queue_bind(
        "q".into(),
        "hidden".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bound");

    // A publish to it closes the channel with 403, in RabbitMQ's words.
    let publisher = confirm_channel(&conn).await;
    let confirm = publisher
        .basic_publish(
            "hidden".into(),
            "".into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .expect("sent");
    // The channel.close that refuses it fails the confirm the publish waits for.
    let err = within("the refusal", confirm)
        .await
        .expect_err("the channel was closed");
    assert_eq!(code(&err), 403, "{err}");
    assert!(
        err.to_string()
            .contains("cannot publish to internal exchange 'hidden' in vhost '/'"),
        "{err}"
    );
    assert!(conn.status().connected(), "a channel error only");

    // Redeclaring it as a public exchange: 406.
    let other = conn.create_channel().await.expect("channel");
    let err = declare(
        &other,
        "hidden",
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .expect_err("inequivalent internal flag");
    assert_eq!(code(&err), 406, "{err}");

    // Unbinding its only binding deletes it.
    ch.queue_unbind(
        "q".into(),
        "hidden".into(),
        "".into(),
        FieldTable::default(),
    )
    .await
    .expect("unbound");
    let err = declare(
        &ch,
        "hidden",
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .expect_err("it is gone");
    assert_eq!(code(&err), 404, "{err}");
}

#[tokio::test]
async fn a_global_prefetch_is_shared_by_the_channels_consumers() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    for q in ["left", "right"] {
        queue(&ch, q).await;
        publish(&ch, "", q, q.as_bytes()).await;
    }
    let sub = conn.create_channel().await.expect("channel");
    sub.basic_qos(1, BasicQosOptions { global: true })
        .await
        .expect("qos");
    let left = consumer(&sub, "left").await;
    let right = consumer(&sub, "right").await;
    let mut both = futures::stream::select(left, right);
    let first = next(&mut both).await;
    // One delivery in flight across both consumers: the other message is still ready
    // (each consumer alone would have taken its queue's message).
    let still_ready = ready(&sub, "left").await + ready(&sub, "right").await;
    assert_eq!(still_ready, 1, "one unacked delivery for the whole channel");
    // Acking it on one queue lets the other queue's consumer receive.
    first.ack(BasicAckOptions::default()).await.expect("acked");
    let second = next(&mut both).await;
    assert_ne!(second.data, first.data);
    assert_eq!(ready(&sub, "left").await + ready(&sub, "right").await, 0);
}

#[tokio::test]
async fn both_limits_apply_and_a_larger_global_one_takes_effect_at_once() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    queue(&ch, "work").await;
    for body in [&b"a"[..], b"b", b"c", b"d"] {
        publish(&ch, "", "work", body).await;
    }
    let sub = conn.create_channel().await.expect("channel");
    // Per consumer 2 (global=false), channel 1 (global=true).
    sub.basic_qos(2, BasicQosOptions { global: false })
        .await
        .expect("qos");
    sub.basic_qos(1, BasicQosOptions { global: true })
        .await
        .expect("qos");
    let mut c = consumer(&sub, "work").await;
    let _first = next(&mut c).await;
    assert_eq!(
        ready(&sub, "work").await,
        3,
        "the channel's limit of 1 binds"
    );
    // Raising the channel's limit lets the consumer receive up to its own limit of 2,
    // without an ack.
    sub.basic_qos(5, BasicQosOptions { global: true })
        .await
        .expect("qos");
    let _second = next(&mut c).await;
    assert_eq!(ready(&sub, "work").await, 2, "now its own limit of 2 binds");
}

#[tokio::test]
async fn a_global_prefetch_counts_the_consumers_started_before_it() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    queue(&ch, "early").await;
    queue(&ch, "late").await;
    for (q, body) in [("early", &b"e1"[..]), ("early", b"e2"), ("late", b"l1")] {
        publish(&ch, "", q, body).await;
    }
    let sub = conn.create_channel().await.expect("channel");
    sub.basic_qos(1, BasicQosOptions { global: false })
        .await
        .expect("qos");
    let mut early = consumer(&sub, "early").await;
    let first = next(&mut early).await;
    // The channel's limit comes after the first consumer, which holds one delivery: the
    // limit is reached, so the next consumer gets nothing.
    sub.basic_qos(1, BasicQosOptions { global: true })
        .await
        .expect("qos");
    let mut late = consumer(&sub, "late").await;
    assert_eq!(ready(&sub, "late").await, 1, "the earlier delivery counts");
    first.ack(BasicAckOptions::default()).await.expect("acked");
    // One credit came back; whichever consumer takes it, one more is in flight.
    let mut both = futures::stream::select(&mut early, &mut late);
    let _second = next(&mut both).await;
    assert_eq!(
        ready(&sub, "early").await + ready(&sub, "late").await,
        1,
        "still one in flight for the channel"
    );
}
