//! Transactions (`tx.select`, `tx.commit`, `tx.rollback`) and `basic.recover` through the
//! AMQP listener, with lapin, as RabbitMQ implements them: publishes and acks held until
//! commit, `commit-ok` after the publishes are durable, rollback dropping publishes and
//! handing acked deliveries back unacked, RabbitMQ's 406s for the wrong mode, and
//! recover redelivering the channel's unacked deliveries with `redelivered` set.

mod common;

use common::{ready, wait_ready, within, TestDaemon};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRecoverAsyncOptions, BasicRecoverOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ErrorKind};

async fn queue(ch: &Channel, name: &str, arguments: FieldTable) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        arguments,
    )
    .await
    .expect("queue declared");
}

async fn tx_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    within("select-ok", ch.tx_select()).await.expect("tx mode");
    ch
}

/// Sends a persistent publish (a transaction's publish has no confirm to wait for).
async fn send(ch: &Channel, key: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .expect("sent");
}

/// The reply code a publish's refusal closed the channel with, as the next method on the
/// channel reports it: `None` when lapin had already taken the server's `channel.close`
/// before that method was sent (it then reports a closing channel, without the code). The
/// refusal came at once either way; the code itself is asserted where it can be.
fn refusal_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::InvalidChannelState(..) => None,
        _ => Some(code(err)),
    }
}

/// The reply code a refused method got (the server's channel.close or connection.close).
fn code(err: &lapin::Error) -> u16 {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
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

async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    within("a delivery", c.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery")
}

#[tokio::test]
async fn committed_publishes_are_stored_before_commit_ok_and_not_before_the_commit() {
    let mut d = TestDaemon::start();
    let client = d.client().await;
    {
        let conn = d.amqp().await;
        let ch = tx_channel(&conn).await;
        queue(&ch, "q", FieldTable::default()).await;
        for body in [b"a", b"b", b"c"] {
            send(&ch, "q", body).await;
        }
        // A synchronous method after them: the server has read the publishes.
        ch.basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        assert_eq!(ready(&client, "q").await, 0, "held until the commit");
        within("commit-ok", ch.tx_commit())
            .await
            .expect("committed");
        assert_eq!(ready(&client, "q").await, 3, "in the queue at commit-ok");
        // The channel stays transactional: this one is never committed.
        send(&ch, "q", b"d").await;
        within("commit-ok", ch.tx_rollback())
            .await
            .expect("rolled back");
    }
    drop(client);
    // commit-ok came after the commit was durable: a kill -9 right after keeps all three.
    d.kill9();
    d.restart();
    let client = d.client().await;
    assert_eq!(ready(&client, "q").await, 3);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = common::wait_get(&client, "q").await;
        bodies.push(m.body.to_vec());
    }
    assert_eq!(bodies, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}

#[tokio::test]
async fn acks_are_applied_at_commit_and_given_back_unacked_by_rollback() {
    let d = TestDaemon::start();
    let client = d.client().await;
    let conn = d.amqp().await;
    let ch = tx_channel(&conn).await;
    queue(&ch, "q", FieldTable::default()).await;
    for body in [b"one", b"two"] {
        send(&ch, "q", body).await;
    }
    ch.tx_commit().await.expect("committed");
    let mut c = consumer(&ch, "q").await;
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    assert_eq!(
        (&first.data[..], &second.data[..]),
        (&b"one"[..], &b"two"[..])
    );

    // Acked in the transaction, then rolled back: unacked again, not redelivered.
    ch.basic_ack(first.delivery_tag, BasicAckOptions::default())
        .await
        .expect("ack sent");
    send(&ch, "q", b"dropped").await;
    within("rollback-ok", ch.tx_rollback())
        .await
        .expect("rolled back");
    assert_eq!(
        ready(&client, "q").await,
        0,
        "nothing published, nothing requeued"
    );

    // Acked again (the tag is valid once more) and committed: gone for good.
    ch.basic_ack(first.delivery_tag, BasicAckOptions::default())
        .await
        .expect("ack sent");
    within("commit-ok", ch.tx_commit())
        .await
        .expect("committed");
    // An ack held in an open transaction when the channel closes is not applied: its
    // delivery goes back to the queue with the channel's other unacked ones.
    ch.basic_ack(second.delivery_tag, BasicAckOptions::default())
        .await
        .expect("ack sent");
    ch.close(200, "bye".into()).await.expect("closed");
    wait_ready(&client, "q", 1).await;
    let left = common::wait_get(&client, "q").await;
    assert_eq!(&left.body[..], b"two");
    assert!(left.redelivered);
}

#[tokio::test]
async fn a_publish_refused_at_commit_fails_it_with_partial_tx_completion() {
    let d = TestDaemon::start();
    let client = d.client().await;
    let conn = d.amqp().await;
    let ch = tx_channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    queue(&ch, "one", args).await;
    send(&ch, "one", b"fits").await;
    send(&ch, "one", b"refused").await;
    let err = within("the commit's answer", ch.tx_commit())
        .await
        .expect_err("the queue refused one");
    assert_eq!(code(&err), 406, "{err}");
    assert!(err.to_string().contains("partial tx completion"), "{err}");
    assert!(conn.status().connected(), "a channel error only");
    assert_eq!(ready(&client, "one").await, 1);
}

#[tokio::test]
async fn commit_or_rollback_outside_tx_mode_and_switching_modes_are_406() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;

    let ch = conn.create_channel().await.expect("channel");
    let err = ch.tx_commit().await.expect_err("not transactional");
    assert_eq!(code(&err), 406, "{err}");
    assert!(err.to_string().contains("not transactional"), "{err}");

    let ch = conn.create_channel().await.expect("channel");
    let err = ch.tx_rollback().await.expect_err("not transactional");
    assert_eq!(code(&err), 406, "{err}");

    let ch = tx_channel(&conn).await;
    let err = ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect_err("tx mode");
    assert_eq!(code(&err), 406, "{err}");
    assert!(err.to_string().contains("from tx to confirm"), "{err}");

    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let err = ch.tx_select().await.expect_err("confirm mode");
    assert_eq!(code(&err), 406, "{err}");
    assert!(err.to_string().contains("from confirm to tx"), "{err}");
    assert!(conn.status().connected(), "channel errors only");
}

#[tokio::test]
async fn a_publish_to_a_missing_exchange_is_refused_at_once_in_tx_mode_too() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = tx_channel(&conn).await;
    ch.basic_publish(
        "nowhere".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .expect("sent");
    let err = ch.tx_commit().await.expect_err("the channel was closed");
    if let Some(code) = refusal_code(&err) {
        assert_eq!(code, 404, "{err}");
    }
}

#[tokio::test]
async fn a_transaction_may_not_hold_more_than_its_bound() {
    // Messages of at most 63 KiB here: the connection's transactions hold at most eight.
    let d = TestDaemon::start_with(&["--max-frame-size", "65536"]);
    let client = d.client().await;
    let conn = d.amqp().await;
    let ch = tx_channel(&conn).await;
    queue(&ch, "q", FieldTable::default()).await;
    let body = vec![b'x'; 60 * 1024];
    for _ in 0..9 {
        send(&ch, "q", &body).await;
    }
    let err = ch.tx_commit().await.expect_err("over the bound");
    if let Some(code) = refusal_code(&err) {
        assert_eq!(code, 406, "{err}");
        assert!(err.to_string().contains("commit more often"), "{err}");
    }
    assert!(conn.status().connected(), "a channel error only");
    assert_eq!(
        ready(&client, "q").await,
        0,
        "the transaction was discarded"
    );

    // The bound is the connection's, given back with the discarded transaction.
    let ch = tx_channel(&conn).await;
    for _ in 0..8 {
        send(&ch, "q", &body).await;
    }
    within("commit-ok", ch.tx_commit())
        .await
        .expect("within the bound");
    assert_eq!(ready(&client, "q").await, 8);
}

#[tokio::test]
async fn recover_redelivers_the_channels_unacked_deliveries_in_order() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = tx_channel(&conn).await;
    queue(&ch, "q", FieldTable::default()).await;
    for body in [b"1", b"2", b"3"] {
        send(&ch, "q", body).await;
    }
    ch.tx_commit().await.expect("committed");
    let plain = conn.create_channel().await.expect("channel");
    let mut c = consumer(&plain, "q").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next(&mut c).await;
        assert!(!m.redelivered);
        got.push(m);
    }
    // The first is acked: only the other two come back.
    got[0].ack(BasicAckOptions::default()).await.expect("acked");
    within(
        "recover-ok",
        plain.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("recovered");
    let again = [next(&mut c).await, next(&mut c).await];
    assert_eq!(
        [&again[0].data[..], &again[1].data[..]],
        [&b"2"[..], &b"3"[..]]
    );
    assert!(again.iter().all(|m| m.redelivered), "redelivered is set");

    // recover-async: the same, without a reply.
    plain
        .basic_recover_async(BasicRecoverAsyncOptions { requeue: true })
        .await
        .expect("sent");
    let third = next(&mut c).await;
    assert_eq!(&third.data[..], b"2");
    assert!(third.redelivered);
}

#[tokio::test]
async fn recover_without_requeue_is_refused_as_rabbitmq_refuses_it() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    let err = ch
        .basic_recover(BasicRecoverOptions { requeue: false })
        .await
        .expect_err("requeue=false");
    assert_eq!(code(&err), 540, "{err}");
    assert!(err.to_string().contains("requeue=false"), "{err}");
    // A connection error, as in RabbitMQ.
    within("the connection to close", async {
        while conn.status().connected() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
