//! Exchange and queue methods through the AMQP listener, with lapin: they run on the same
//! broker as Warren's own protocol (what one door declares the other lists), under the same
//! permissions, and refusals close the channel or the connection as RabbitMQ decides.

mod common;

use common::{ok, TestDaemon};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};
use serde_json::{json, Value};

async fn channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("channel")
}

fn cli_json(d: &TestDaemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(&d.cli(&all))).expect("JSON")
}

/// The reply code a refused method got (the server's channel.close or connection.close).
fn code(err: &lapin::Error) -> u16 {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn topology_declared_over_amqp_is_warrens_topology() {
    let d = TestDaemon::start();
    let conn = d.amqp_as("guest", "guest").await;
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange declared");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    let q = ch
        .queue_declare(
            "work".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("queue declared");
    assert_eq!(q.name().as_str(), "work");
    assert_eq!(q.message_count(), 0);
    ch.queue_bind(
        "work".into(),
        "logs".into(),
        "app.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bound");

    // Warren's own door sees the same queue, arguments and binding.
    let queues = cli_json(&d, &["queue", "list"]);
    let work = queues
        .as_array()
        .and_then(|a| a.iter().find(|q| q["name"] == "work"))
        .expect("work is listed");
    assert_eq!(work["arguments"], json!({"x-max-length": 10}));
    assert_eq!(
        cli_json(&d, &["binding", "list", "--queue", "work"]),
        json!([{"source": "logs", "destination": "work", "destination_type": "queue",
                "routing_key": "app.#", "arguments": {}}])
    );

    ch.queue_unbind(
        "work".into(),
        "logs".into(),
        "app.#".into(),
        FieldTable::default(),
    )
    .await
    .expect("unbound");
    assert_eq!(
        ch.queue_purge("work".into(), QueuePurgeOptions::default())
            .await
            .expect("purged"),
        0
    );
    assert_eq!(
        ch.queue_delete("work".into(), QueueDeleteOptions::default())
            .await
            .expect("deleted"),
        0
    );
    ch.exchange_delete("logs".into(), ExchangeDeleteOptions::default())
        .await
        .expect("exchange deleted");
    assert_eq!(
        cli_json(&d, &["binding", "list", "--queue", "work"]),
        json!([])
    );
    conn.close(200, "bye".into()).await.expect("closed");
}

#[tokio::test]
async fn a_server_named_queue_gets_rabbitmqs_kind_of_name() {
    let d = TestDaemon::start();
    let conn = d.amqp_as("guest", "guest").await;
    let ch = channel(&conn).await;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declared");
    assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
}

#[tokio::test]
async fn a_channel_error_closes_that_channel_only() {
    let d = TestDaemon::start();
    let conn = d.amqp_as("guest", "guest").await;
    let doomed = channel(&conn).await;
    let other = channel(&conn).await;
    let err = doomed
        .queue_declare(
            "missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("a passive declare of a missing queue");
    assert_eq!(code(&err), 404, "{err}");
    assert!(!doomed.status().connected(), "that channel is closed");
    // The connection and its other channels go on.
    other
        .queue_declare(
            "still".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("the other channel works");
    let again = channel(&conn).await;
    again
        .queue_declare(
            "still".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("a new channel works");
    // Redeclaring with other arguments: 406, as RabbitMQ.
    let err = again
        .queue_declare(
            "still".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("inequivalent redeclare");
    assert_eq!(code(&err), 406, "{err}");
    assert!(conn.status().connected());
}

#[tokio::test]
async fn permissions_are_warrens_and_refusals_are_channel_errors() {
    let d = TestDaemon::start();
    ok(&d.cli_with_stdin(
        &["user", "add", "alice", "--password-stdin"],
        Some("pw-alice\n"),
    ));
    ok(&d.cli(&[
        "permission",
        "set",
        "alice",
        "--configure",
        "^alice-.*",
        "--write",
        ".*",
        "--read",
        ".*",
    ]));
    let conn = d.amqp_as("alice", "pw-alice").await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "alice-q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("within her configure pattern");
    let err = ch
        .queue_declare(
            "bob-q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("outside it");
    assert_eq!(code(&err), 403, "{err}");
    assert!(conn.status().connected(), "403 is a channel error");
}

#[tokio::test]
async fn an_unknown_exchange_type_is_a_connection_error() {
    let d = TestDaemon::start();
    let conn = d.amqp_as("guest", "guest").await;
    let ch = channel(&conn).await;
    let err = ch
        .exchange_declare(
            "odd".into(),
            ExchangeKind::Custom("x-no-such-type".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(code(&err), 503, "{err}");
}
