//! Declaring queues and exchanges with arguments, against the real daemon: `x-` arguments
//! Warren does not implement are refused by name (never accepted and ignored), queues an
//! older Warren stored with such arguments still load, and a redeclaration that differs names
//! the argument and both values.

mod common;

use std::process::Output;

use common::{ok, TestDaemon};
use warren::client::{ExchangeKind, ExchangeOptions, OutgoingMessage, QueueOptions};
use warren::store::codec::QueueRecord;
use warren::store::{Store, TopologyChange};
use warren_protocol::{ErrorCode, FieldTable, FieldValue};

/// Asserts the CLI failed with exactly one `error: ...` line on stderr; returns that line.
fn fails_with_one_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    lines[0].to_owned()
}

fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn unimplemented_queue_arguments_are_refused_by_name() {
    let d = TestDaemon::start();
    for (arg, value) in [
        ("x-queue-master-locator", "min-masters"),
        ("x-queue-mode", "lazy"),
    ] {
        let line = fails_with_one_line(&d.cli(&[
            "queue",
            "declare",
            "work",
            "--arg",
            &format!("{arg}={value}"),
        ]));
        assert_eq!(
            line,
            format!(
                "error: declaring queue 'work': PRECONDITION_FAILED (406): invalid arg '{arg}' for \
                 queue 'work': Warren does not implement this argument yet; declare without it"
            )
        );
    }
    let line =
        fails_with_one_line(&d.cli(&["queue", "declare", "work", "--arg", "x-queue-type=quorum"]));
    assert_eq!(
        line,
        "error: declaring queue 'work': PRECONDITION_FAILED (406): invalid arg 'x-queue-type' \
         for queue 'work': quorum queues are not supported yet; Warren has \"classic\" queues \
         and \"stream\"s"
    );
    // A stream is durable by nature: declared through --arg without --durable, it is refused.
    let line =
        fails_with_one_line(&d.cli(&["queue", "declare", "work", "--arg", "x-queue-type=stream"]));
    assert!(line.contains("a stream cannot be non-durable"), "{line}");
    // What Warren queues are, and arguments outside the `x-` namespace, are accepted (and
    // the refusals created nothing, or this would be an inequivalent redeclaration).
    ok(&d.cli(&[
        "queue",
        "declare",
        "work",
        "--arg",
        "x-queue-type=classic",
        "--arg",
        "x-message-ttl=5000",
        "--arg",
        "note=hello",
    ]));
}

#[tokio::test]
async fn unimplemented_exchange_arguments_are_refused_by_name() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let err = c
        .declare_exchange(
            "delayed",
            ExchangeKind::Direct,
            ExchangeOptions {
                arguments: table(&[("x-delayed-type", FieldValue::String("direct".into()))]),
                ..Default::default()
            },
        )
        .await
        .expect_err("x-delayed-type is not implemented");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "PRECONDITION_FAILED (406): invalid arg 'x-delayed-type' for exchange 'delayed': \
         Warren does not implement this argument yet; declare without it"
    );
    // Non-`x-` arguments keep being stored as given.
    c.declare_exchange(
        "plain",
        ExchangeKind::Direct,
        ExchangeOptions {
            arguments: table(&[("note", FieldValue::String("kept".into()))]),
            ..Default::default()
        },
    )
    .await
    .expect("a non-x argument is accepted");
}

#[test]
fn definitions_import_refuses_unimplemented_arguments() {
    let d = TestDaemon::start();
    let file = d.data_dir().join("defs.json");
    std::fs::write(
        &file,
        r#"{"exchanges": [], "bindings": [],
            "queues": [{"name": "prio", "durable": true, "auto_delete": false,
                        "arguments": {"x-queue-mode": "lazy"}}]}"#,
    )
    .unwrap();
    let line = fails_with_one_line(&d.cli(&["definitions", "import", file.to_str().unwrap()]));
    assert!(
        line.ends_with(
            "definitions: invalid arg 'x-queue-mode' for queue 'prio': Warren does not \
             implement this argument yet; declare without it"
        ),
        "{line}"
    );
    std::fs::write(
        &file,
        r#"{"queues": [], "bindings": [],
            "exchanges": [{"name": "delayed", "type": "direct", "durable": true,
                           "arguments": {"x-delayed-type": "direct"}}]}"#,
    )
    .unwrap();
    let line = fails_with_one_line(&d.cli(&["definitions", "import", file.to_str().unwrap()]));
    assert!(
        line.ends_with(
            "definitions: invalid arg 'x-delayed-type' for exchange 'delayed': Warren does not \
             implement this argument yet; declare without it"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn a_queue_stored_with_unimplemented_arguments_still_loads() {
    let mut d = TestDaemon::start();
    assert!(d.stop(), "the daemon stops cleanly");
    // What an older Warren, which stored unknown `x-` arguments, left on disk.
    let stored = table(&[
        ("x-queue-mode", FieldValue::String("lazy".into())),
        ("x-message-ttl", FieldValue::Int(60_000)),
    ]);
    {
        let (store, _) = Store::open(d.data_dir()).expect("opening the stopped daemon's store");
        store
            .change_topology(TopologyChange::PutQueue(QueueRecord {
                vhost: "/".into(),
                id: 1,
                name: "legacy".into(),
                exclusive: false,
                auto_delete: false,
                arguments: stored.clone(),
            }))
            .await
            .expect("storing the queue");
        store.shutdown().await;
    }
    d.restart();
    let c = d.client().await;
    // It loaded, and clients that declare it as they always did keep working.
    c.declare_queue(
        "legacy",
        QueueOptions {
            durable: true,
            arguments: stored,
            ..Default::default()
        },
    )
    .await
    .expect("redeclaring the stored queue as it is");
    // A new queue with the same arguments is refused.
    let err = c
        .declare_queue(
            "another",
            QueueOptions {
                durable: true,
                arguments: table(&[("x-queue-mode", FieldValue::String("lazy".into()))]),
                ..Default::default()
            },
        )
        .await
        .expect_err("x-queue-mode is refused for a new queue");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );
    let logs = d.logs();
    assert!(
        logs.contains("stored queue has arguments Warren does not implement")
            && logs.contains("x-queue-mode"),
        "{logs}"
    );
}

#[test]
fn a_redeclaration_that_differs_names_the_argument_and_both_values() {
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "work",
        "--durable",
        "--arg",
        "x-message-ttl=5000",
    ]));
    let refused = |args: &[&str]| {
        let mut all = vec!["queue", "declare", "work"];
        all.extend_from_slice(args);
        fails_with_one_line(&d.cli(&all))
    };
    let prefix = "error: declaring queue 'work': PRECONDITION_FAILED (406): ";
    assert_eq!(
        refused(&["--durable", "--arg", "x-message-ttl=1000"]),
        format!("{prefix}inequivalent arg 'x-message-ttl' for queue 'work': received 1000, current 5000")
    );
    assert_eq!(
        refused(&["--durable"]),
        format!("{prefix}inequivalent arg 'x-message-ttl' for queue 'work': received none, current 5000")
    );
    assert_eq!(
        refused(&[
            "--durable",
            "--arg",
            "x-message-ttl=5000",
            "--arg",
            "x-dead-letter-exchange=dlx"
        ]),
        format!("{prefix}inequivalent arg 'x-dead-letter-exchange' for queue 'work': received dlx, current none")
    );
    assert_eq!(
        refused(&["--arg", "x-message-ttl=5000"]),
        format!(
            "{prefix}inequivalent arg 'durable' for queue 'work': received false, current true"
        )
    );
    // The same declaration is still a no-op.
    assert_eq!(
        ok(&d.cli(&[
            "queue",
            "declare",
            "work",
            "--durable",
            "--arg",
            "x-message-ttl=5000"
        ])),
        "queue 'work' declared\n"
    );
}

#[tokio::test]
async fn an_exchange_redeclaration_that_differs_names_what_differs() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let durable = ExchangeOptions {
        durable: true,
        arguments: table(&[("note", FieldValue::String("a".into()))]),
        ..Default::default()
    };
    c.declare_exchange("logs", ExchangeKind::Topic, durable.clone())
        .await
        .unwrap();
    let message = |err: warren::client::ClientError| {
        assert_eq!(
            err.error_code(),
            Some(ErrorCode::PreconditionFailed),
            "{err}"
        );
        err.to_string()
    };
    let err = c
        .declare_exchange("logs", ExchangeKind::Fanout, durable.clone())
        .await
        .unwrap_err();
    assert_eq!(
        message(err),
        "PRECONDITION_FAILED (406): inequivalent arg 'type' for exchange 'logs': received \
         fanout, current topic"
    );
    let err = c
        .declare_exchange(
            "logs",
            ExchangeKind::Topic,
            ExchangeOptions {
                durable: false,
                ..durable.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        message(err),
        "PRECONDITION_FAILED (406): inequivalent arg 'durable' for exchange 'logs': received \
         false, current true"
    );
    let err = c
        .declare_exchange(
            "logs",
            ExchangeKind::Topic,
            ExchangeOptions {
                arguments: table(&[("note", FieldValue::String("b".into()))]),
                ..durable.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        message(err),
        "PRECONDITION_FAILED (406): inequivalent arg 'note' for exchange 'logs': received b, \
         current a"
    );
    // And a queue's exclusive and auto-delete flags.
    c.declare_queue(
        "mine",
        QueueOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = c
        .declare_queue("mine", QueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        message(err),
        "PRECONDITION_FAILED (406): inequivalent arg 'exclusive' for queue 'mine': received \
         false, current true"
    );
    c.declare_queue(
        "auto",
        QueueOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = c
        .declare_queue("auto", QueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        message(err),
        "PRECONDITION_FAILED (406): inequivalent arg 'auto_delete' for queue 'auto': received \
         false, current true"
    );
}

#[tokio::test]
async fn a_delivery_limit_of_minus_one_is_no_limit() {
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "unlimited",
        "--arg",
        "x-delivery-limit=-1",
        "--arg",
        "x-dead-letter-exchange=amq.fanout",
    ]));
    let c = d.client().await;
    c.publish_and_confirm(OutgoingMessage::new("", "unlimited", "m"))
        .await
        .unwrap();
    // Far more failures than any limit of 0..3 would allow: it stays in its queue.
    for failures in 1..=5u32 {
        let m = c
            .get("unlimited", false)
            .await
            .unwrap()
            .expect("still there");
        assert_eq!(m.delivery_count, failures - 1);
        c.reject_durable(m.delivery_tag, true).await.unwrap();
    }
    assert!(c.get("unlimited", true).await.unwrap().is_some());
    // -2 means nothing: refused as any other negative number.
    let line =
        fails_with_one_line(&d.cli(&["queue", "declare", "bad", "--arg", "x-delivery-limit=-2"]));
    assert!(
        line.ends_with(
            "invalid arg 'x-delivery-limit' for queue 'bad': must not be negative, got -2"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn ttls_are_at_most_ten_years() {
    const TEN_YEARS_MS: u64 = 315_360_000_000;
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "long",
        "--arg",
        "x-message-ttl=315360000000",
    ]));
    let line = fails_with_one_line(&d.cli(&[
        "queue",
        "declare",
        "longer",
        "--arg",
        "x-message-ttl=315360000001",
    ]));
    assert!(
        line.ends_with(
            "PRECONDITION_FAILED (406): invalid arg 'x-message-ttl' for queue 'longer': must be \
             at most 315360000000 ms (ten years), got 315360000001"
        ),
        "{line}"
    );

    // A message's own expiration: ten years is accepted, more refuses the publish.
    let c = d.client().await;
    c.publish_and_confirm(OutgoingMessage::new("", "long", "m").expiration_ms(TEN_YEARS_MS))
        .await
        .expect("ten years");
    let err = c
        .publish_and_confirm(OutgoingMessage::new("", "long", "m").expiration_ms(TEN_YEARS_MS + 1))
        .await
        .expect_err("over ten years");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "PRECONDITION_FAILED (406): invalid property expiration: must be at most 315360000000 \
         ms (ten years), got 315360000001"
    );
    // The connection goes on, and only the valid message was enqueued.
    assert_eq!(common::ready(&c, "long").await, 1);
}

#[test]
fn single_active_consumer_is_a_boolean_and_part_of_the_declaration() {
    let d = TestDaemon::start();
    let line = fails_with_one_line(&d.cli(&[
        "queue",
        "declare",
        "sac",
        "--arg",
        "x-single-active-consumer:int=1",
    ]));
    assert_eq!(
        line,
        "error: declaring queue 'sac': PRECONDITION_FAILED (406): invalid arg \
         'x-single-active-consumer' for queue 'sac': expected a boolean, got an integer 1"
    );
    ok(&d.cli(&[
        "queue",
        "declare",
        "sac",
        "--arg",
        "x-single-active-consumer=true",
    ]));
    ok(&d.cli(&[
        "queue",
        "declare",
        "sac",
        "--arg",
        "x-single-active-consumer=true",
    ]));
    let line = fails_with_one_line(&d.cli(&[
        "queue",
        "declare",
        "sac",
        "--arg",
        "x-single-active-consumer=false",
    ]));
    assert!(
        line.contains(
            "inequivalent arg 'x-single-active-consumer' for queue 'sac': received false, \
             current true"
        ),
        "{line}"
    );
}
