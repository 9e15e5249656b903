//! Publishing through the AMQP listener, with lapin: content assembled from its frames,
//! properties mapped one to one onto Warren's (a message published over AMQP is read by
//! Warren's own client with the same properties and headers), publisher confirms after the
//! commit, mandatory returns, and RabbitMQ's refusals.

mod common;

use common::{wait_get, within, TestDaemon};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ErrorKind};
use warren::client::FieldValue;

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    ch
}

async fn durable_queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue declared");
}

/// Publishes and waits for the broker's confirm.
async fn publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    mandatory: bool,
    body: &[u8],
    props: BasicProperties,
) -> lapin::Result<Confirmation> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            props,
        )
        .await?;
    within("the confirm", confirm).await
}

/// The reply code a refused method got (the server's channel.close or connection.close).
fn code(err: &lapin::Error) -> u16 {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
}

/// Headers with one value of every AMQP field type RabbitMQ's clients send.
fn every_type() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("n".into(), AMQPValue::ShortInt(-2));
    let mut t = FieldTable::default();
    t.insert("bool".into(), AMQPValue::Boolean(true));
    t.insert("i8".into(), AMQPValue::ShortShortInt(-1));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    t.insert("i16".into(), AMQPValue::ShortInt(-300));
    t.insert("u16".into(), AMQPValue::ShortUInt(60_000));
    t.insert("i32".into(), AMQPValue::LongInt(-70_000));
    t.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    t.insert("i64".into(), AMQPValue::LongLongInt(-5_000_000_000));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(-2.25));
    t.insert(
        "dec".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    t.insert("text".into(), AMQPValue::LongString("héllo".into()));
    t.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongLongInt(7),
            AMQPValue::LongString("x".into()),
        ])),
    );
    t.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
    t.insert("table".into(), AMQPValue::FieldTable(nested));
    t.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255, 1])),
    );
    t.insert("void".into(), AMQPValue::Void);
    t
}

fn all_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("shop".into())
}

#[tokio::test]
async fn a_confirmed_amqp_publish_reaches_warrens_client_with_every_property() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "orders").await;
    let confirmation = publish(&ch, "", "orders", false, b"{\"id\":1}", all_properties())
        .await
        .expect("published");
    assert_eq!(confirmation, Confirmation::Ack(None));

    let client = d.client().await;
    let got = wait_get(&client, "orders").await;
    assert_eq!(&got.body[..], b"{\"id\":1}");
    assert_eq!(got.routing_key, "orders");
    let p = &got.properties;
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.content_encoding.as_deref(), Some("gzip"));
    assert!(p.persistent, "delivery mode 2 is persistent");
    assert_eq!(p.priority, Some(7));
    assert_eq!(p.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(p.reply_to.as_deref(), Some("replies"));
    assert_eq!(p.expiration, Some(60_000), "the expiration string in ms");
    assert_eq!(p.message_id.as_deref(), Some("m-1"));
    assert_eq!(
        p.timestamp,
        Some(1_700_000_123_000),
        "AMQP's seconds as Warren's milliseconds"
    );
    assert_eq!(p.kind.as_deref(), Some("order.created"));
    assert_eq!(p.user_id.as_deref(), Some("guest"));
    assert_eq!(p.app_id.as_deref(), Some("shop"));
    let h = &p.headers;
    assert_eq!(h.get("bool"), Some(FieldValue::Bool(true)));
    assert_eq!(h.get("i8"), Some(FieldValue::I8(-1)));
    assert_eq!(h.get("u8"), Some(FieldValue::U8(200)));
    assert_eq!(h.get("i16"), Some(FieldValue::I16(-300)));
    assert_eq!(h.get("u16"), Some(FieldValue::U16(60_000)));
    assert_eq!(h.get("i32"), Some(FieldValue::I32(-70_000)));
    assert_eq!(h.get("u32"), Some(FieldValue::U32(4_000_000_000)));
    assert_eq!(h.get("i64"), Some(FieldValue::Int(-5_000_000_000)));
    assert_eq!(h.get("f32"), Some(FieldValue::F32(1.5)));
    assert_eq!(h.get("f64"), Some(FieldValue::Float(-2.25)));
    assert_eq!(
        h.get("dec"),
        Some(FieldValue::Decimal {
            scale: 2,
            value: 12345
        })
    );
    assert_eq!(h.get("text"), Some(FieldValue::String("héllo".into())));
    assert_eq!(
        h.get("list"),
        Some(FieldValue::List(vec![
            FieldValue::Int(7),
            FieldValue::String("x".into())
        ]))
    );
    assert_eq!(h.get("time"), Some(FieldValue::Timestamp(1_700_000_000)));
    let Some(FieldValue::Map(table)) = h.get("table") else {
        panic!("a nested table: {:?}", h.get("table"));
    };
    assert_eq!(table.get("n"), Some(&FieldValue::I16(-2)));
    assert_eq!(
        h.get("bytes"),
        Some(FieldValue::Bytes(vec![0u8, 255, 1].into()))
    );
    assert_eq!(h.get("void"), Some(FieldValue::Void));
    assert_eq!(h.keys().count(), 17, "no header added or lost");
}

#[tokio::test]
async fn an_unroutable_mandatory_publish_is_returned_with_312_then_acked() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    let confirmation = publish(&ch, "", "nowhere", true, b"lost", all_properties())
        .await
        .expect("published");
    let Confirmation::Ack(Some(returned)) = confirmation else {
        panic!("expected a return with the ack, got {confirmation:?}");
    };
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.routing_key.as_str(), "nowhere");
    assert_eq!(returned.delivery.data, b"lost");
    // The properties come back as they went out, headers type for type.
    assert_eq!(returned.delivery.properties, all_properties());

    // Not mandatory: dropped, and still acked.
    let confirmation = publish(&ch, "", "nowhere", false, b"x", BasicProperties::default())
        .await
        .expect("published");
    assert_eq!(confirmation, Confirmation::Ack(None));
}

#[tokio::test]
async fn a_body_larger_than_frame_max_is_split_and_put_back_together() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "big").await;
    // 131072-byte frames: this body takes four body frames.
    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let confirmation = publish(&ch, "", "big", false, &body, BasicProperties::default())
        .await
        .expect("published");
    assert_eq!(confirmation, Confirmation::Ack(None));
    // Without confirms too, on another channel, interleaved with the first's publish.
    let plain = conn.create_channel().await.expect("channel");
    plain
        .basic_publish(
            "".into(),
            "big".into(),
            BasicPublishOptions::default(),
            &body[..200_000],
            BasicProperties::default(),
        )
        .await
        .expect("published");
    let confirmation = publish(&ch, "", "big", false, b"last", BasicProperties::default())
        .await
        .expect("published");
    assert_eq!(confirmation, Confirmation::Ack(None));

    let client = d.client().await;
    let first = wait_get(&client, "big").await;
    assert_eq!(first.body.len(), body.len());
    assert!(first.body[..] == body[..], "the body arrived intact");
    let mut rest = [
        wait_get(&client, "big").await.body,
        wait_get(&client, "big").await.body,
    ];
    rest.sort_by_key(|b| b.len());
    assert_eq!(&rest[0][..], b"last");
    assert!(rest[1][..] == body[..200_000]);
}

#[tokio::test]
async fn a_body_over_the_servers_message_size_is_refused_with_406_on_the_channel() {
    let d = TestDaemon::start_with(&["--max-frame-size", "65536"]);
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "q").await;
    let err = publish(
        &ch,
        "",
        "q",
        false,
        &[7u8; 100_000],
        BasicProperties::default(),
    )
    .await
    .expect_err("too large");
    assert_eq!(code(&err), 406, "{err}");
    // The connection goes on.
    let ch = confirm_channel(&conn).await;
    let confirmation = publish(&ch, "", "q", false, b"small", BasicProperties::default())
        .await
        .expect("published");
    assert_eq!(confirmation, Confirmation::Ack(None));
}

#[tokio::test]
async fn refused_publishes_close_the_channel_with_rabbitmqs_codes() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    let err = publish(&ch, "missing", "k", false, b"x", BasicProperties::default())
        .await
        .expect_err("no such exchange");
    assert_eq!(code(&err), 404, "{err}");

    let ch = confirm_channel(&conn).await;
    let props = BasicProperties::default().with_user_id("mallory".into());
    let err = publish(&ch, "", "q", false, b"x", props)
        .await
        .expect_err("someone else's user id");
    assert_eq!(code(&err), 406, "{err}");

    let ch = confirm_channel(&conn).await;
    let props = BasicProperties::default().with_expiration("soon".into());
    let err = publish(&ch, "", "q", false, b"x", props)
        .await
        .expect_err("not a number of milliseconds");
    assert_eq!(code(&err), 406, "{err}");

    // Each refusal closed its channel only.
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "q").await;
    let confirmation = publish(&ch, "", "q", false, b"ok", BasicProperties::default())
        .await
        .expect("published");
    assert_eq!(confirmation, Confirmation::Ack(None));
}

async fn consumer(ch: &Channel, queue: &str, no_ack: bool) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
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
async fn published_and_consumed_over_amqp_with_every_property_then_acked() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "rt").await;
    publish(&ch, "", "rt", false, b"one", all_properties())
        .await
        .expect("published");
    let sub = conn.create_channel().await.expect("channel");
    let mut c = consumer(&sub, "rt", false).await;
    assert!(
        c.tag().as_str().starts_with("amq.ctag-"),
        "a server-named consumer tag: {}",
        c.tag()
    );
    let got = next(&mut c).await;
    assert_eq!(got.data, b"one");
    assert_eq!(got.delivery_tag, 1, "tags start at 1 on each channel");
    assert!(!got.redelivered);
    assert_eq!(got.routing_key.as_str(), "rt");
    assert_eq!(
        got.properties,
        all_properties(),
        "properties round-trip exactly"
    );
    got.ack(BasicAckOptions::default()).await.expect("acked");

    // The ack is done: nothing is left in the queue, ready or unacked.
    let client = d.client().await;
    drop(c);
    sub.close(200, "bye".into()).await.expect("closed");
    assert_eq!(common::ready(&client, "rt").await, 0);
}

#[tokio::test]
async fn a_message_from_warrens_client_reaches_an_amqp_consumer_identical() {
    let d = TestDaemon::start();
    let client = d.client().await;
    common::durable_queue(&client, "from-native", warren::client::FieldTable::new()).await;
    let mut msg =
        warren::client::OutgoingMessage::new("", "from-native", &b"native"[..]).persistent();
    msg.properties.content_type = Some("text/plain".into());
    msg.properties.correlation_id = Some("c-9".into());
    msg.properties.reply_to = Some("back".into());
    msg.properties.timestamp = Some(1_700_000_000_000);
    msg.properties.priority = Some(3);
    msg.properties.kind = Some("t".into());
    msg.properties.app_id = Some("native-app".into());
    let msg = msg
        .header("n", FieldValue::I32(-4))
        .header("s", FieldValue::String("text".into()))
        .header("b", FieldValue::Bytes(vec![1u8, 2].into()));
    client.publish_and_confirm(msg).await.expect("published");

    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    let mut c = consumer(&ch, "from-native", true).await;
    let got = next(&mut c).await;
    assert_eq!(got.data, b"native");
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongInt(-4));
    headers.insert("s".into(), AMQPValue::LongString("text".into()));
    headers.insert(
        "b".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![1u8, 2])),
    );
    let expected = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("c-9".into())
        .with_reply_to("back".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_app_id("native-app".into());
    assert_eq!(got.properties, expected);
}

#[tokio::test]
async fn with_qos_1_the_second_message_waits_for_the_first_ack() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "work").await;
    for body in [&b"a"[..], b"b"] {
        publish(&ch, "", "work", false, body, BasicProperties::default())
            .await
            .expect("published");
    }
    let sub = conn.create_channel().await.expect("channel");
    sub.basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut c = consumer(&sub, "work", false).await;
    let first = next(&mut c).await;
    assert_eq!(first.data, b"a");
    // The second stays in the queue while the first is unacked.
    let client = d.client().await;
    assert_eq!(common::ready(&client, "work").await, 1);
    first.ack(BasicAckOptions::default()).await.expect("acked");
    let second = next(&mut c).await;
    assert_eq!(second.data, b"b");
    assert_eq!(second.delivery_tag, 2);
}

#[tokio::test]
async fn reject_without_requeue_dead_letters() {
    let d = TestDaemon::start();
    let client = d.client().await;
    common::dead_letter_target(&client).await;
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    ch.queue_declare(
        "jobs".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declared");
    publish(&ch, "", "jobs", false, b"bad", BasicProperties::default())
        .await
        .expect("published");
    let mut c = consumer(&ch, "jobs", false).await;
    let got = next(&mut c).await;
    got.reject(BasicRejectOptions { requeue: false })
        .await
        .expect("rejected");
    let dead = common::wait_get(&client, "dlq").await;
    assert_eq!(&dead.body[..], b"bad");
    assert!(
        dead.properties.headers.contains_key("x-death"),
        "{:?}",
        dead.properties.headers
    );
}

#[tokio::test]
async fn unacked_deliveries_of_a_dropped_connection_are_redelivered_to_another_consumer() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "q").await;
    publish(&ch, "", "q", false, b"m", BasicProperties::default())
        .await
        .expect("published");
    let mut first = consumer(&ch, "q", false).await;
    let got = next(&mut first).await;
    assert!(!got.redelivered);
    drop(first);
    // Gone without acking.
    conn.close(200, "bye".into()).await.expect("closed");

    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    let mut second = consumer(&ch, "q", false).await;
    let again = next(&mut second).await;
    assert_eq!(again.data, b"m");
    assert!(again.redelivered, "redelivered is set");
    again.ack(BasicAckOptions::default()).await.expect("acked");

    // A channel closed with an unacked delivery gives it back too.
    publish(
        &confirm_channel(&conn).await,
        "",
        "q",
        false,
        b"n",
        BasicProperties::default(),
    )
    .await
    .expect("published");
    let got = next(&mut second).await;
    assert_eq!(got.data, b"n");
    ch.close(200, "bye".into()).await.expect("closed");
    let ch = conn.create_channel().await.expect("channel");
    let mut third = consumer(&ch, "q", false).await;
    let again = next(&mut third).await;
    assert_eq!(again.data, b"n");
    assert!(again.redelivered);
}

#[tokio::test]
async fn an_unknown_delivery_tag_is_406_on_the_channel() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_ack(42, BasicAckOptions::default())
        .await
        .expect("sent");
    // The channel.close that answers it fails the next request on the channel: with the
    // server's reply code, or, when lapin has already taken the close, as a request on a
    // closed channel (the code itself is checked on the wire in tests/amqp_frames.rs).
    let err = ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect_err("the channel was closed");
    match err.kind() {
        ErrorKind::InvalidChannelState(..) => {}
        _ => assert_eq!(code(&err), 406, "{err}"),
    }
    assert!(conn.status().connected(), "the connection goes on");
}

#[tokio::test]
async fn a_consumer_whose_queue_is_deleted_is_cancelled_by_the_server() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    durable_queue(&ch, "doomed").await;
    let mut c = consumer(&ch, "doomed", false).await;
    let client = d.client().await;
    client
        .delete_queue("doomed", false, false)
        .await
        .expect("deleted");
    // lapin ends the consumer's stream on the server's basic.cancel.
    assert!(within("the cancel", c.next()).await.is_none());
}

#[tokio::test]
async fn basic_get_takes_one_message_or_answers_empty() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    durable_queue(&ch, "polled").await;
    for body in [&b"a"[..], b"b"] {
        publish(&ch, "", "polled", false, body, all_properties())
            .await
            .expect("published");
    }
    let first = ch
        .basic_get("polled".into(), BasicGetOptions::default())
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(first.delivery.data, b"a");
    assert_eq!(first.message_count, 1, "one more is ready");
    assert_eq!(first.delivery.properties, all_properties());
    assert!(!first.delivery.redelivered);
    first
        .delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .expect("rejected");
    let again = ch
        .basic_get("polled".into(), BasicGetOptions::default())
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(again.delivery.data, b"a", "requeued at the head");
    assert!(again.delivery.redelivered);
    again
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("acked");
    let second = ch
        .basic_get("polled".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(second.delivery.data, b"b");
    let empty = ch
        .basic_get("polled".into(), BasicGetOptions::default())
        .await
        .expect("get");
    assert!(empty.is_none(), "get-empty");
}

#[tokio::test]
async fn a_publish_under_the_memory_alarm_blocks_the_connection_and_says_so() {
    // Under any baseline: the alarm is on as soon as the monitor looks.
    let d = TestDaemon::start_with(&["--memory-limit", "1"]);
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    durable_queue(&ch, "q").await;
    let mut sent = 0;
    while !conn.status().blocked() {
        assert!(sent < 100, "never told connection.blocked");
        // Not awaited for a confirm: the publish is held, not refused.
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .expect("sent");
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(d.logs().contains("AMQP connection blocked"));
}

/// Waits (bounded by the caller) for the first connection event `want` accepts.
async fn until_event(
    events: &mut (impl futures::Stream<Item = lapin::Event> + Unpin),
    want: fn(&lapin::Event) -> bool,
) {
    while let Some(e) = events.next().await {
        if want(&e) {
            return;
        }
    }
    panic!("the connection's events ended");
}

#[tokio::test]
async fn a_connection_blocked_by_the_memory_alarm_is_unblocked_when_consumers_drain() {
    let d = TestDaemon::start_with(&["--memory-limit", "128MiB"]);
    let conn = d.amqp().await;
    let mut events = Box::pin(conn.events_listener());
    let ch = confirm_channel(&conn).await;
    // Transient messages in a transient queue: held in memory until taken.
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue declared");

    // 1 MiB messages, each confirmed, until the server blocks the connection.
    let body = vec![b'.'; 1 << 20];
    let mut confirmed = 0usize;
    let held = loop {
        assert!(confirmed < 200, "never blocked after {confirmed} MiB");
        let mut pending = ch
            .basic_publish(
                "".into(),
                "q".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .expect("sent");
        tokio::select! {
            c = &mut pending => {
                assert_eq!(c.expect("confirm"), Confirmation::Ack(None));
                confirmed += 1;
            }
            () = until_event(&mut events, |e| matches!(e, lapin::Event::ConnectionBlocked(_))) => {
                break pending;
            }
        }
    };
    assert!(conn.status().blocked(), "lapin saw connection.blocked");

    // A consumer on another connection drains the queue until the alarm clears.
    let consumer = d.client().await;
    let drain = async {
        loop {
            if within("a get", consumer.get("q", true))
                .await
                .expect("get")
                .is_none()
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    within("connection.unblocked", async {
        tokio::select! {
            () = until_event(&mut events, |e| matches!(e, lapin::Event::ConnectionUnblocked)) => {}
            never = drain => never,
        }
    })
    .await;
    assert!(!conn.status().blocked(), "lapin saw connection.unblocked");
    // The publish held while blocked goes through.
    let outcome = within("the held confirm", held).await.expect("confirm");
    assert_eq!(outcome, Confirmation::Ack(None));
    assert!(d.logs().contains("AMQP connection unblocked"));
}

#[tokio::test]
async fn a_stream_is_read_from_an_offset_with_x_stream_offset() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = confirm_channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        "events".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("stream declared");
    for body in [&b"e0"[..], b"e1", b"e2"] {
        publish(&ch, "", "events", false, body, BasicProperties::default())
            .await
            .expect("published");
    }
    let sub = conn.create_channel().await.expect("channel");
    sub.basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut from = FieldTable::default();
    from.insert("x-stream-offset".into(), AMQPValue::LongLongInt(1));
    let mut c = sub
        .basic_consume(
            "events".into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            from,
        )
        .await
        .expect("consuming");
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    assert_eq!(
        (&first.data[..], &second.data[..]),
        (&b"e1"[..], &b"e2"[..])
    );
    let offset = |d: &lapin::message::Delivery| {
        d.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned())
    };
    assert_eq!(offset(&first), Some(AMQPValue::LongLongInt(1)));
    assert_eq!(offset(&second), Some(AMQPValue::LongLongInt(2)));
    first.ack(BasicAckOptions::default()).await.expect("acked");
    second.ack(BasicAckOptions::default()).await.expect("acked");
}

#[tokio::test]
async fn warrens_client_may_not_claim_another_users_user_id_either() {
    let d = TestDaemon::start();
    let client = d.client().await;
    common::durable_queue(&client, "q", warren::client::FieldTable::new()).await;
    let mut msg = warren::client::OutgoingMessage::new("", "q", &b"x"[..]);
    msg.properties.user_id = Some("mallory".into());
    let err = client
        .publish_and_confirm(msg)
        .await
        .expect_err("another user's id");
    assert!(err.to_string().contains("user_id"), "{err}");
    let mut msg = warren::client::OutgoingMessage::new("", "q", &b"y"[..]);
    msg.properties.user_id = Some("guest".into());
    client.publish_and_confirm(msg).await.expect("its own id");
    let got = wait_get(&client, "q").await;
    assert_eq!(got.properties.user_id.as_deref(), Some("guest"));
}
