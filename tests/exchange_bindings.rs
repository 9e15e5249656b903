//! Exchange-to-exchange bindings over real TCP against the real daemon: chains of any kinds,
//! loops (each queue gets one copy), alternates, durability, unbinding and deletion.

mod common;

use common::{ok, ready, TestDaemon};
use warren::client::{
    Client, ExchangeKind, ExchangeOptions, FieldValue, OutgoingMessage, QueueOptions,
};
use warren_protocol::{ErrorCode, FieldTable};

async fn exchange(c: &Client, name: &str, kind: ExchangeKind, durable: bool) {
    c.declare_exchange(
        name,
        kind,
        ExchangeOptions {
            durable,
            ..ExchangeOptions::default()
        },
    )
    .await
    .expect("declare exchange");
}

async fn queue(c: &Client, name: &str, durable: bool) {
    c.declare_queue(
        name,
        QueueOptions {
            durable,
            ..QueueOptions::default()
        },
    )
    .await
    .expect("declare queue");
}

async fn publish(c: &Client, exchange: &str, key: &str) {
    c.publish_and_confirm(OutgoingMessage::new(exchange, key, "m"))
        .await
        .expect("publish");
}

#[tokio::test]
async fn fanout_to_topic_to_queue() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "in", ExchangeKind::Fanout, false).await;
    exchange(&c, "logs", ExchangeKind::Topic, false).await;
    queue(&c, "errors", false).await;
    c.bind_exchange("logs", "in", "", FieldTable::new())
        .await
        .unwrap();
    c.bind("errors", "logs", "*.error", FieldTable::new())
        .await
        .unwrap();
    publish(&c, "in", "app.error").await;
    publish(&c, "in", "app.info").await;
    assert_eq!(ready(&c, "errors").await, 1);
}

#[tokio::test]
async fn a_loop_delivers_one_copy_per_queue() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "a", ExchangeKind::Fanout, false).await;
    exchange(&c, "b", ExchangeKind::Fanout, false).await;
    queue(&c, "q", false).await;
    c.bind_exchange("b", "a", "", FieldTable::new())
        .await
        .unwrap();
    c.bind_exchange("a", "b", "", FieldTable::new())
        .await
        .unwrap();
    c.bind("q", "a", "", FieldTable::new()).await.unwrap();
    c.bind("q", "b", "", FieldTable::new()).await.unwrap();
    publish(&c, "a", "k").await;
    publish(&c, "b", "k").await;
    assert_eq!(ready(&c, "q").await, 2, "one copy per publish");
    // An exchange bound to itself routes once too.
    c.bind_exchange("a", "a", "", FieldTable::new())
        .await
        .unwrap();
    publish(&c, "a", "k").await;
    assert_eq!(ready(&c, "q").await, 3);
}

#[tokio::test]
async fn headers_and_direct_exchanges_as_destinations() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "src", ExchangeKind::Topic, false).await;
    exchange(&c, "dir", ExchangeKind::Direct, false).await;
    exchange(&c, "hdr", ExchangeKind::Headers, false).await;
    queue(&c, "by-key", false).await;
    queue(&c, "by-header", false).await;
    c.bind_exchange("dir", "src", "#", FieldTable::new())
        .await
        .unwrap();
    c.bind_exchange("hdr", "src", "#", FieldTable::new())
        .await
        .unwrap();
    c.bind("by-key", "dir", "a.b", FieldTable::new())
        .await
        .unwrap();
    let args = FieldTable::from([("tenant".to_owned(), FieldValue::String("x".into()))]);
    c.bind("by-header", "hdr", "", args).await.unwrap();
    publish(&c, "src", "a.b").await;
    publish(&c, "src", "a.c").await;
    let mut m = OutgoingMessage::new("src", "z", "m");
    m.properties
        .headers
        .insert("tenant", FieldValue::String("x".into()));
    c.publish_and_confirm(m).await.unwrap();
    assert_eq!(ready(&c, "by-key").await, 1);
    assert_eq!(ready(&c, "by-header").await, 1);
}

#[tokio::test]
async fn alternate_applies_per_exchange_that_matched_nothing() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "ae", ExchangeKind::Fanout, false).await;
    c.declare_exchange(
        "dst",
        ExchangeKind::Direct,
        ExchangeOptions {
            arguments: FieldTable::from([(
                "alternate-exchange".to_owned(),
                FieldValue::String("ae".into()),
            )]),
            ..ExchangeOptions::default()
        },
    )
    .await
    .unwrap();
    exchange(&c, "src", ExchangeKind::Fanout, false).await;
    queue(&c, "unrouted", false).await;
    c.bind("unrouted", "ae", "", FieldTable::new())
        .await
        .unwrap();
    c.bind_exchange("dst", "src", "", FieldTable::new())
        .await
        .unwrap();
    // `src` matched `dst`, which matched nothing: `dst`'s alternate takes it.
    publish(&c, "src", "k").await;
    assert_eq!(ready(&c, "unrouted").await, 1);
}

#[tokio::test]
async fn unbind_and_delete_remove_exchange_bindings() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "s", ExchangeKind::Direct, false).await;
    exchange(&c, "t", ExchangeKind::Fanout, false).await;
    queue(&c, "q", false).await;
    c.bind("q", "t", "", FieldTable::new()).await.unwrap();
    c.bind_exchange("t", "s", "k", FieldTable::new())
        .await
        .unwrap();
    publish(&c, "s", "k").await;
    assert_eq!(ready(&c, "q").await, 1);
    c.unbind_exchange("t", "s", "k", FieldTable::new())
        .await
        .unwrap();
    publish(&c, "s", "k").await;
    assert_eq!(ready(&c, "q").await, 1);
    c.bind_exchange("t", "s", "k", FieldTable::new())
        .await
        .unwrap();
    c.delete_exchange("t", false).await.unwrap();
    exchange(&c, "t", ExchangeKind::Fanout, false).await;
    c.bind("q", "t", "", FieldTable::new()).await.unwrap();
    publish(&c, "s", "k").await;
    assert_eq!(
        ready(&c, "q").await,
        1,
        "the deleted destination's binding went with it"
    );
}

#[tokio::test]
async fn missing_and_default_exchanges_are_refused() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "x", ExchangeKind::Fanout, false).await;
    let err = c
        .bind_exchange("x", "nope", "", FieldTable::new())
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound), "{err}");
    let err = c
        .bind_exchange("nope", "x", "", FieldTable::new())
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::NotFound), "{err}");
    let err = c
        .bind_exchange("x", "", "", FieldTable::new())
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
    let err = c
        .bind_exchange("", "x", "", FieldTable::new())
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
}

#[tokio::test]
async fn a_durable_exchange_binding_survives_a_restart() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "s", ExchangeKind::Topic, true).await;
    exchange(&c, "t", ExchangeKind::Fanout, true).await;
    exchange(&c, "gone", ExchangeKind::Fanout, true).await;
    queue(&c, "q", true).await;
    // Named like an exchange it is not bound to: deleting it must not drop that binding.
    queue(&c, "gone", true).await;
    c.bind("q", "t", "", FieldTable::new()).await.unwrap();
    c.bind_exchange("t", "s", "a.*", FieldTable::new())
        .await
        .unwrap();
    c.bind_exchange("gone", "s", "b", FieldTable::new())
        .await
        .unwrap();
    c.delete_queue("gone", false, false).await.unwrap();
    drop(c);
    d.restart();
    let c = d.client().await;
    publish(&c, "s", "a.b").await;
    assert_eq!(ready(&c, "q").await, 1);
    c.delete_exchange("gone", false).await.unwrap();
    drop(c);
    d.restart();
    assert!(
        !d.logs().contains("dropping a stored exchange binding"),
        "{}",
        d.logs()
    );
}

#[tokio::test]
async fn cli_binds_lists_and_definitions_carry_exchange_bindings() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "src", ExchangeKind::Topic, true).await;
    exchange(&c, "dest", ExchangeKind::Fanout, true).await;
    queue(&c, "q", true).await;
    c.bind("q", "dest", "", FieldTable::new()).await.unwrap();
    assert_eq!(
        ok(&d.cli(&[
            "bind",
            "--destination-exchange",
            "dest",
            "src",
            "--key",
            "a.#"
        ])),
        "bound exchange 'dest' to exchange 'src' with key 'a.#'\n"
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(&d.cli(&[
        "binding",
        "list",
        "--exchange",
        "src",
        "--json",
    ])))
    .unwrap();
    assert_eq!(listed[0]["destination"], "dest");
    assert_eq!(listed[0]["destination_type"], "exchange");
    assert_eq!(listed[0]["routing_key"], "a.#");

    let file = d.data_dir().join("definitions.json");
    let file_arg = file.to_str().unwrap();
    ok(&d.cli(&["definitions", "export", file_arg]));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        doc["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["destination_type"] == "exchange" && b["source"] == "src"),
        "{doc}"
    );
    let target = TestDaemon::start();
    ok(&target.cli(&["definitions", "import", file_arg]));
    let t = target.client().await;
    publish(&t, "src", "a.b").await;
    assert_eq!(
        ready(&t, "q").await,
        1,
        "the imported exchange binding routes"
    );

    assert_eq!(
        ok(&d.cli(&[
            "unbind",
            "--destination-exchange",
            "dest",
            "src",
            "--key",
            "a.#"
        ])),
        "unbound exchange 'dest' from exchange 'src' with key 'a.#'\n"
    );
    publish(&c, "src", "a.b").await;
    assert_eq!(ready(&c, "q").await, 0);
}
