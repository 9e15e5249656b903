//! Publishing through the AMQP listener, with lapin: content assembled from its frames,
//! properties mapped one to one onto Warren's (a message published over AMQP is read by
//! Warren's own client with the same properties and headers), publisher confirms after the
//! commit, mandatory returns, and RabbitMQ's refusals.

mod common;

use common::{wait_get, within, TestDaemon, WAIT};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use warren::client::FieldValue;

async fn connect(d: &TestDaemon) -> Connection {
    let addr = d.amqp_addr().expect("the AMQP listener is on");
    let url = format!("amqp://guest:guest@{addr}/%2f");
    tokio::time::timeout(
        WAIT,
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connected in time")
    .expect("connected")
}

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
    let conn = connect(&d).await;
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
    let conn = connect(&d).await;
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
    let conn = connect(&d).await;
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
    let conn = connect(&d).await;
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
    let conn = connect(&d).await;
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
