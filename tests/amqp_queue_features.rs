//! Queue features a RabbitMQ user sets through queue arguments and message properties, used
//! through the AMQP listener with lapin: priorities (`x-max-priority`), single active
//! consumer, per-message TTL (`expiration`) with dead-lettering, and a length limit with
//! `reject-publish`. They are the core's; these tests show the AMQP door reaches them.

mod common;

use common::{within, TestDaemon};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    ch
}

async fn declare(ch: &Channel, name: &str, args: &[(&str, AMQPValue)]) {
    let mut table = FieldTable::default();
    for (k, v) in args {
        table.insert(ShortString::from(*k), v.clone());
    }
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table,
    )
    .await
    .expect("queue declared");
}

async fn publish(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) -> Confirmation {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("published");
    within("the confirm", confirm).await.expect("confirmed")
}

async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .map(|m| m.delivery.data)
}

#[tokio::test]
async fn a_priority_queue_hands_out_higher_priorities_first() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    declare(
        &ch,
        "prio",
        &[("x-max-priority", AMQPValue::ShortShortUInt(9))],
    )
    .await;
    for (body, priority) in [(&b"low"[..], 1u8), (b"high", 8), (b"none", 0), (b"mid", 5)] {
        let props = BasicProperties::default().with_priority(priority);
        assert!(publish(&ch, "prio", body, props).await.is_ack());
    }
    let mut order = Vec::new();
    while let Some(body) = get_body(&ch, "prio").await {
        order.push(String::from_utf8(body).expect("utf-8"));
        assert!(order.len() <= 4, "more messages than published: {order:?}");
    }
    assert_eq!(order, ["high", "mid", "low", "none"]);
}

#[tokio::test]
async fn a_single_active_consumer_queue_feeds_one_consumer_until_it_cancels() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    declare(
        &ch,
        "sac",
        &[("x-single-active-consumer", AMQPValue::Boolean(true))],
    )
    .await;
    let consume = |tag: &'static str| {
        let ch = ch.clone();
        async move {
            ch.basic_consume(
                "sac".into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consuming")
        }
    };
    let mut first = consume("first").await;
    let mut second = consume("second").await;
    for body in [&b"1"[..], b"2"] {
        assert!(publish(&ch, "sac", body, BasicProperties::default())
            .await
            .is_ack());
    }
    for expected in [&b"1"[..], b"2"] {
        let delivery = within("a delivery to the active consumer", first.next())
            .await
            .expect("a delivery")
            .expect("no error");
        assert_eq!(delivery.data, expected);
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("acked");
    }
    ch.basic_cancel("first".into(), BasicCancelOptions::default())
        .await
        .expect("cancelled");
    assert!(publish(&ch, "sac", b"3", BasicProperties::default())
        .await
        .is_ack());
    let delivery = within("a delivery to the next consumer", second.next())
        .await
        .expect("a delivery")
        .expect("no error");
    assert_eq!(delivery.data, b"3", "the waiting consumer became active");
    assert_eq!(delivery.routing_key.as_str(), "sac");
    delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("acked");
}

#[tokio::test]
async fn an_expired_message_is_dead_lettered_with_reason_expired() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "dead", &[]).await;
    declare(
        &ch,
        "short-lived",
        &[
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("dead".into()),
            ),
        ],
    )
    .await;
    let props = BasicProperties::default().with_expiration("50".into());
    assert!(publish(&ch, "short-lived", b"gone", props).await.is_ack());
    let message = within("the dead letter", async {
        loop {
            if let Some(m) = ch
                .basic_get("dead".into(), BasicGetOptions { no_ack: true })
                .await
                .expect("get")
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(message.delivery.data, b"gone");
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .expect("x-death headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("x-death holds no table: {deaths:?}");
    };
    assert_eq!(
        death.inner().get("reason"),
        Some(&AMQPValue::LongString("expired".into()))
    );
    assert_eq!(
        death.inner().get("queue"),
        Some(&AMQPValue::LongString("short-lived".into()))
    );
    assert_eq!(
        get_body(&ch, "short-lived").await,
        None,
        "it left its queue"
    );
}

#[tokio::test]
async fn a_full_queue_with_reject_publish_nacks_the_publish() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    declare(
        &ch,
        "small",
        &[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ],
    )
    .await;
    for body in [&b"1"[..], b"2"] {
        assert!(publish(&ch, "small", body, BasicProperties::default())
            .await
            .is_ack());
    }
    let refused = publish(&ch, "small", b"3", BasicProperties::default()).await;
    assert!(refused.is_nack(), "{refused:?}");
    assert_eq!(get_body(&ch, "small").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(get_body(&ch, "small").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(get_body(&ch, "small").await, None, "the third was not kept");
}
