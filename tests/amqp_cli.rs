//! Across the doors through the command line: a message an AMQP client (lapin) publishes
//! with headers of every AMQP field type is read by `warren consume --json` with the same
//! headers and properties, and one `warren publish` sends with typed `--header`s reaches
//! lapin with each header of the type the flag named. (tests/amqp_messaging.rs proves the
//! same through Warren's client library; this is about what an operator's scripts see.)

mod common;

use common::{ok, within, TestDaemon};
use lapin::options::QueueDeclareOptions;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Value};

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(k), v);
    }
    t
}

/// One header of each AMQP 0-9-1 field type (RabbitMQ's table), and what `--json` shows
/// for it (json.rs: integers and timestamps as numbers, a decimal as its digits, bytes as
/// base64, void as null).
fn every_type() -> (FieldTable, Value) {
    let nested = table(vec![
        ("k", AMQPValue::LongString("v".into())),
        ("n", AMQPValue::LongLongInt(1)),
    ]);
    let headers = table(vec![
        ("text", AMQPValue::LongString("hello, wörld".into())),
        ("flag", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-5)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-70_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-5_000_000_000)),
        ("f32", AMQPValue::Float(0.5)),
        ("f64", AMQPValue::Double(2.25)),
        (
            "price",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1234,
            }),
        ),
        ("at", AMQPValue::Timestamp(1_700_000_000)),
        (
            "raw",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2])),
        ),
        (
            "list",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString("a".into()),
                AMQPValue::LongLongInt(1),
                AMQPValue::Boolean(false),
            ])),
        ),
        ("meta", AMQPValue::FieldTable(nested)),
        ("nothing", AMQPValue::Void),
    ]);
    let shown = json!({
        "text": "hello, wörld",
        "flag": true,
        "i8": -5,
        "u8": 200,
        "i16": -300,
        "u16": 60_000,
        "i32": -70_000,
        "u32": 4_000_000_000_u64,
        "i64": -5_000_000_000_i64,
        "f32": 0.5,
        "f64": 2.25,
        "price": "12.34",
        "at": 1_700_000_000,
        "raw": "AAEC",
        "list": ["a", 1, false],
        "meta": {"k": "v", "n": 1},
        "nothing": null,
    });
    (headers, shown)
}

#[tokio::test]
async fn an_amqp_publish_is_read_by_warren_consume_with_every_header() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    ch.queue_declare(
        "from-amqp".into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declared");
    let (headers, shown) = every_type();
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_content_type("application/json".into())
        .with_content_encoding("identity".into())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_app_id("billing".into())
        .with_user_id("guest".into());
    let confirm = ch
        .basic_publish(
            "".into(),
            "from-amqp".into(),
            BasicPublishOptions::default(),
            br#"{"order":1}"#,
            props,
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack(), "{confirm:?}");

    let out = ok(&d.cli(&["consume", "from-amqp", "--count", "1", "--json"]));
    let got: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(got["headers"], shown, "{out}");
    assert_eq!(got["body"], r#"{"order":1}"#);
    assert_eq!(got["routing_key"], "from-amqp");
    assert_eq!(got["message_id"], "m-1");
    assert_eq!(got["correlation_id"], "corr-1");
    assert_eq!(
        got["properties"],
        json!({
            "persistent": true,
            "content_type": "application/json",
            "content_encoding": "identity",
            "reply_to": "replies",
            // AMQP's seconds, in Warren's milliseconds (docs/amqp.md).
            "timestamp": 1_700_000_000_000_u64,
            "priority": 3,
            "type": "order.created",
            "user_id": "guest",
            "app_id": "billing",
        }),
        "{out}"
    );
    conn.close(200, "bye".into()).await.expect("closed");
}

#[tokio::test]
async fn a_warren_publish_reaches_lapin_with_each_header_of_its_type() {
    let d = TestDaemon::start();
    let conn = d.amqp().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "from-cli".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
    ok(&d.cli(&[
        "publish",
        "",
        "from-cli",
        "from the command line",
        "--persistent",
        "--message-id",
        "cli-1",
        "--content-type",
        "text/plain",
        "--priority",
        "4",
        "--header",
        "text=hello, wörld",
        "--header",
        "zip=01234",
        "--header",
        "n:int=-5000000000",
        "--header",
        "i8:i8=-5",
        "--header",
        "u8:u8=200",
        "--header",
        "i16:i16=-300",
        "--header",
        "u16:u16=60000",
        "--header",
        "i32:i32=-70000",
        "--header",
        "u32:u32=4000000000",
        "--header",
        "f32:f32=0.5",
        "--header",
        "f64:float=2.25",
        "--header",
        "price:decimal=12.34",
        "--header",
        "at:timestamp=1700000000",
        "--header",
        "flag:bool=true",
        "--header",
        "raw:bytes=AAEC",
        "--header",
        r#"list:list=["a",1,false]"#,
        "--header",
        r#"meta:table={"k":"v","n":1}"#,
        "--header",
        "nothing:void=",
    ]));
    // Bounded retries: the CLI has its confirm, but a get on another connection is not
    // ordered after it.
    let got = within("the message by basic.get", async {
        loop {
            let got = ch
                .basic_get("from-cli".into(), BasicGetOptions { no_ack: true })
                .await
                .expect("get");
            if let Some(got) = got {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"from the command line");
    let p = &got.delivery.properties;
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(p.priority(), &Some(4));
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("cli-1"));
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    let headers = p.headers().clone().expect("headers");
    let expected = table(vec![
        ("text", AMQPValue::LongString("hello, wörld".into())),
        ("zip", AMQPValue::LongString("01234".into())),
        ("n", AMQPValue::LongLongInt(-5_000_000_000)),
        ("i8", AMQPValue::ShortShortInt(-5)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-70_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("f32", AMQPValue::Float(0.5)),
        ("f64", AMQPValue::Double(2.25)),
        (
            "price",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1234,
            }),
        ),
        ("at", AMQPValue::Timestamp(1_700_000_000)),
        ("flag", AMQPValue::Boolean(true)),
        (
            "raw",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2])),
        ),
        (
            "list",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString("a".into()),
                AMQPValue::LongLongInt(1),
                AMQPValue::Boolean(false),
            ])),
        ),
        (
            "meta",
            AMQPValue::FieldTable(table(vec![
                ("k", AMQPValue::LongString("v".into())),
                ("n", AMQPValue::LongLongInt(1)),
            ])),
        ),
        ("nothing", AMQPValue::Void),
    ]);
    assert_eq!(headers.inner(), expected.inner());
    conn.close(200, "bye".into()).await.expect("closed");
}
