//! Internal and auto-delete exchanges over Warren's own protocol and CLI, against the real
//! daemon: publishes to an internal exchange are refused while bindings, alternates and
//! dead-lettering still route through it; an auto-delete exchange goes with its last binding
//! (however that binding goes) but not before it has had one; both flags are checked on
//! redeclare, survive a restart, and travel through the CLI and definitions.

mod common;

use common::{args, ok, ready, wait_get, TestDaemon};
use serde_json::Value;
use warren::client::{
    Client, ExchangeKind, ExchangeOptions, FieldValue, OutgoingMessage, QueueOptions,
};
use warren_protocol::{ErrorCode, FieldTable};

async fn exchange(c: &Client, name: &str, kind: ExchangeKind, options: ExchangeOptions) {
    c.declare_exchange(name, kind, options)
        .await
        .unwrap_or_else(|e| panic!("declaring exchange {name}: {e}"));
}

fn internal() -> ExchangeOptions {
    ExchangeOptions {
        internal: true,
        ..ExchangeOptions::default()
    }
}

fn auto_delete() -> ExchangeOptions {
    ExchangeOptions {
        auto_delete: true,
        ..ExchangeOptions::default()
    }
}

async fn queue(c: &Client, name: &str, arguments: FieldTable) {
    c.declare_queue(
        name,
        QueueOptions {
            durable: true,
            arguments,
            ..QueueOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring queue {name}: {e}"));
}

async fn exists(c: &Client, name: &str) -> bool {
    let passive = ExchangeOptions {
        passive: true,
        ..ExchangeOptions::default()
    };
    match c
        .declare_exchange(name, ExchangeKind::Direct, passive)
        .await
    {
        Ok(()) => true,
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => false,
        Err(e) => panic!("passive declare of {name}: {e}"),
    }
}

fn cli_json(d: &TestDaemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(&d.cli(&all))).expect("JSON")
}

/// The `exchange list --json` entry of `name`.
fn listed(d: &TestDaemon, name: &str) -> Value {
    cli_json(d, &["exchange", "list"])
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("exchange {name} is not listed"))
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_refused_as_rabbitmq_refuses_it() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "hidden", ExchangeKind::Fanout, internal()).await;
    queue(&c, "q", FieldTable::new()).await;
    c.bind("q", "hidden", "", FieldTable::new()).await.unwrap();
    let err = c
        .publish_and_confirm(OutgoingMessage::new("hidden", "k", "m"))
        .await
        .expect_err("a publish to an internal exchange");
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
    assert!(
        err.to_string()
            .contains("cannot publish to internal exchange 'hidden' in vhost '/'"),
        "{err}"
    );
    // A delayed publish is refused the same way, not stored for later.
    let delayed =
        OutgoingMessage::new("hidden", "k", "later").header("x-delay", FieldValue::Int(60_000));
    let err = c.publish_and_confirm(delayed).await.expect_err("delayed");
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
    assert_eq!(ready(&c, "q").await, 0, "nothing reached the queue");
}

#[tokio::test]
async fn an_internal_exchange_is_reached_by_bindings_alternates_and_dead_letters() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "hidden", ExchangeKind::Fanout, internal()).await;
    queue(&c, "behind", FieldTable::new()).await;
    c.bind("behind", "hidden", "", FieldTable::new())
        .await
        .unwrap();
    // Through an exchange-to-exchange binding.
    exchange(
        &c,
        "front",
        ExchangeKind::Fanout,
        ExchangeOptions::default(),
    )
    .await;
    c.bind_exchange("hidden", "front", "", FieldTable::new())
        .await
        .unwrap();
    c.publish_and_confirm(OutgoingMessage::new("front", "k", "via binding"))
        .await
        .unwrap();
    assert_eq!(wait_get(&c, "behind").await.body, "via binding");
    // As an alternate exchange.
    exchange(
        &c,
        "picky",
        ExchangeKind::Direct,
        ExchangeOptions {
            arguments: args(&[("alternate-exchange", FieldValue::String("hidden".into()))]),
            ..ExchangeOptions::default()
        },
    )
    .await;
    c.publish_and_confirm(OutgoingMessage::new("picky", "unbound", "via alternate"))
        .await
        .unwrap();
    assert_eq!(wait_get(&c, "behind").await.body, "via alternate");
    // As a dead-letter exchange (RabbitMQ dead-letters to internal exchanges too).
    queue(
        &c,
        "work",
        args(&[(
            "x-dead-letter-exchange",
            FieldValue::String("hidden".into()),
        )]),
    )
    .await;
    c.publish_and_confirm(OutgoingMessage::new("", "work", "via dead letter"))
        .await
        .unwrap();
    let m = wait_get(&c, "work").await;
    c.reject(m.delivery_tag, false).await.unwrap();
    let dead = wait_get(&c, "behind").await;
    assert_eq!(dead.body, "via dead letter");
    assert_eq!(dead.exchange, "hidden");
}

#[tokio::test]
async fn an_auto_delete_exchange_goes_with_its_last_binding_and_not_before() {
    let d = TestDaemon::start();
    let c = d.client().await;
    queue(&c, "a", FieldTable::new()).await;
    queue(&c, "b", FieldTable::new()).await;
    exchange(&c, "ad", ExchangeKind::Direct, auto_delete()).await;
    // Never bound: it stays, as in RabbitMQ.
    exchange(&c, "unused", ExchangeKind::Direct, auto_delete()).await;
    c.bind("a", "ad", "x", FieldTable::new()).await.unwrap();
    c.bind("b", "ad", "x", FieldTable::new()).await.unwrap();
    c.unbind("a", "ad", "x", FieldTable::new()).await.unwrap();
    assert!(exists(&c, "ad").await, "one binding is left");
    // Unbinding something that was never bound is no last binding going.
    c.unbind("a", "ad", "other", FieldTable::new())
        .await
        .unwrap();
    assert!(exists(&c, "ad").await);
    c.unbind("b", "ad", "x", FieldTable::new()).await.unwrap();
    assert!(!exists(&c, "ad").await, "deleted with its last binding");
    assert!(exists(&c, "unused").await, "an exchange never bound stays");

    // The last binding going with its queue counts too.
    exchange(&c, "ad2", ExchangeKind::Fanout, auto_delete()).await;
    c.bind("a", "ad2", "", FieldTable::new()).await.unwrap();
    c.delete_queue("a", false, false).await.unwrap();
    assert!(
        !exists(&c, "ad2").await,
        "deleted with the queue it was bound to"
    );

    // An exchange-to-exchange binding is a binding: unbinding it, or deleting its
    // destination, deletes an auto-delete source.
    exchange(&c, "src", ExchangeKind::Fanout, auto_delete()).await;
    exchange(&c, "dst", ExchangeKind::Fanout, ExchangeOptions::default()).await;
    c.bind_exchange("dst", "src", "", FieldTable::new())
        .await
        .unwrap();
    c.delete_exchange("dst", false).await.unwrap();
    assert!(!exists(&c, "src").await, "deleted with its destination");
    // And the deletion cascades: an auto-delete exchange bound only to one that goes.
    exchange(&c, "top", ExchangeKind::Fanout, auto_delete()).await;
    exchange(&c, "mid", ExchangeKind::Fanout, auto_delete()).await;
    c.bind_exchange("mid", "top", "", FieldTable::new())
        .await
        .unwrap();
    c.bind("b", "mid", "", FieldTable::new()).await.unwrap();
    c.unbind("b", "mid", "", FieldTable::new()).await.unwrap();
    assert!(!exists(&c, "mid").await);
    assert!(!exists(&c, "top").await, "its only binding went with 'mid'");
}

#[tokio::test]
async fn the_flags_are_checked_on_redeclare() {
    let d = TestDaemon::start();
    let c = d.client().await;
    exchange(&c, "x", ExchangeKind::Fanout, internal()).await;
    exchange(&c, "x", ExchangeKind::Fanout, internal()).await;
    let err = c
        .declare_exchange("x", ExchangeKind::Fanout, ExchangeOptions::default())
        .await
        .expect_err("internal differs");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("inequivalent arg 'internal' for exchange 'x': received false, current true"),
        "{err}"
    );
    let both = ExchangeOptions {
        auto_delete: true,
        ..internal()
    };
    let err = c
        .declare_exchange("x", ExchangeKind::Fanout, both)
        .await
        .expect_err("auto_delete differs");
    assert!(err.to_string().contains("'auto_delete'"), "{err}");
}

#[tokio::test]
async fn the_flags_survive_a_restart_and_are_listed_and_declared_by_the_cli() {
    let mut d = TestDaemon::start();
    ok(&d.cli(&[
        "exchange",
        "declare",
        "kept",
        "--type",
        "topic",
        "--durable",
        "--internal",
        "--auto-delete",
    ]));
    ok(&d.cli(&[
        "exchange",
        "declare",
        "plain",
        "--type",
        "fanout",
        "--durable",
    ]));
    let kept = listed(&d, "kept");
    assert_eq!(
        (&kept["internal"], &kept["auto_delete"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    let table = ok(&d.cli(&["exchange", "list"]));
    assert!(table
        .lines()
        .next()
        .unwrap()
        .contains("AUTO_DELETE  INTERNAL"));

    d.restart();
    let kept = listed(&d, "kept");
    assert_eq!(
        (&kept["internal"], &kept["auto_delete"], &kept["durable"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true)),
        "{kept}"
    );
    let plain = listed(&d, "plain");
    assert_eq!(
        (&plain["internal"], &plain["auto_delete"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    let c = d.client().await;
    let err = c
        .publish_and_confirm(OutgoingMessage::new("kept", "k", "m"))
        .await
        .expect_err("still internal");
    assert_eq!(err.error_code(), Some(ErrorCode::AccessRefused), "{err}");
    // Still auto-delete: it goes with its last binding, and stays gone after a restart.
    queue(&c, "q", FieldTable::new()).await;
    c.bind("q", "kept", "#", FieldTable::new()).await.unwrap();
    c.unbind("q", "kept", "#", FieldTable::new()).await.unwrap();
    assert!(!exists(&c, "kept").await);
    drop(c);
    d.restart();
    let c = d.client().await;
    assert!(!exists(&c, "kept").await, "its deletion was durable");
    assert!(exists(&c, "plain").await);
}

#[tokio::test]
async fn definitions_carry_the_flags() {
    let source = TestDaemon::start();
    let c = source.client().await;
    exchange(
        &c,
        "hidden",
        ExchangeKind::Topic,
        ExchangeOptions {
            durable: true,
            internal: true,
            auto_delete: true,
            ..ExchangeOptions::default()
        },
    )
    .await;
    let doc: Value = serde_json::from_str(&ok(&source.cli(&["definitions", "export"]))).unwrap();
    let hidden = &doc["exchanges"][0];
    assert_eq!(hidden["name"], "hidden");
    assert_eq!(
        (&hidden["internal"], &hidden["auto_delete"]),
        (&Value::Bool(true), &Value::Bool(true))
    );

    // A RabbitMQ export's flags are imported, not warned about.
    let target = TestDaemon::start();
    let file = target.data_dir().join("rabbit.json");
    std::fs::write(
        &file,
        r#"{"exchanges": [{"name": "hidden", "vhost": "/", "type": "topic", "durable": true,
            "auto_delete": true, "internal": true, "arguments": {}}]}"#,
    )
    .unwrap();
    let out = ok(&target.cli(&["definitions", "import", file.to_str().unwrap()]));
    assert!(!out.contains("Warren has no"), "{out}");
    let hidden = listed(&target, "hidden");
    assert_eq!(
        (&hidden["internal"], &hidden["auto_delete"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    // Importing it again over an exchange with other flags is a conflict.
    std::fs::write(
        &file,
        r#"{"exchanges": [{"name": "hidden", "type": "topic", "durable": true}]}"#,
    )
    .unwrap();
    let out = target.cli(&["definitions", "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'auto_delete'"), "{stderr}");
}
