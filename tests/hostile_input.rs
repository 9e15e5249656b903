//! Hostile input that is well-formed: requests naming things far longer than any name can be.
//! Each is refused with a bounded error, the log stays small however often a client repeats
//! it, and the daemon keeps serving.

mod common;

use common::{within, TestDaemon};
use warren::client::{ClientError, ConsumeOptions, ExchangeOptions, QueueOptions};
use warren_protocol::{ExchangeKind, FieldTable, FieldValue, MAX_ARGUMENT_TABLE_BYTES};

/// The refusal a request got, as `(code, message)`.
fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Server { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn huge_names_are_refused_with_bounded_replies_and_bounded_logs() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    let long_name = "n".repeat(60_000);
    for _ in 0..200 {
        let (code, message) = refusal(c.purge_queue(&long_name).await);
        assert_eq!(code, 404, "{message}");
        assert!(message.len() < 200, "reply of {} bytes", message.len());
        assert!(message.ends_with("… (60,000 bytes)'"), "{message}");
    }
    // An admin argument of 4 MB: the same (string contents do not count against the
    // argument-table cap).
    let mut args = FieldTable::new();
    args.insert("queue".into(), FieldValue::String("q".repeat(4 << 20)));
    for _ in 0..5 {
        let (code, message) = refusal(c.admin("queue.peek", args.clone()).await);
        assert_eq!(code, 404, "{message}");
        assert!(message.len() < 200, "reply of {} bytes", message.len());
    }
    // The connection and the daemon still serve.
    within(
        "a declare after the refusals",
        c.declare_queue("after", Default::default()),
    )
    .await
    .expect("declare works after the refusals");
    c.close().await.expect("close");
    assert!(d.stop(), "daemon stops cleanly");

    let logs = d.logs();
    assert!(
        logs.len() < 64 * 1024,
        "the log grew to {} bytes for 205 refusals",
        logs.len()
    );
    let logged = logs.matches("request refused").count();
    assert!((1..=10).contains(&logged), "{logged} refusals logged");
    assert!(
        logs.contains("refused requests not logged") && logs.contains("refusals=195"),
        "the unlogged refusals are counted once: {logs}"
    );
}

/// An argument table of `n` booleans in one list: 2n bytes of structure, n decoded values.
fn many_values(n: usize) -> FieldTable {
    let mut args = FieldTable::new();
    args.insert(
        "x-junk".into(),
        FieldValue::List(vec![FieldValue::Bool(true); n]),
    );
    args
}

#[tokio::test]
async fn argument_tables_over_the_cap_are_refused_and_the_connection_goes_on() {
    // Argument tables were decoded whatever their size (up to the 8 MiB frame): a table of
    // many small values costs many times its wire size once built. Every request that
    // carries one now refuses a table with over 64 KiB of structure (string contents not
    // counted) without building it, by its request id.
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("q", Default::default())
        .await
        .expect("declare");
    let big = many_values(MAX_ARGUMENT_TABLE_BYTES / 2);
    let expect_refused = |what: &str, r: (u16, String)| {
        let (code, message) = r;
        assert_eq!(code, 311, "{what}: {message}");
        assert!(
            message.starts_with("argument table of 65,553 bytes (string and byte contents")
                && message.ends_with("exceeds the server's limit of 65,536"),
            "{what}: {message}"
        );
    };
    let queue = QueueOptions {
        arguments: big.clone(),
        ..Default::default()
    };
    expect_refused("queue declare", refusal(c.declare_queue("q2", queue).await));
    let exchange = ExchangeOptions {
        arguments: big.clone(),
        ..Default::default()
    };
    expect_refused(
        "exchange declare",
        refusal(
            c.declare_exchange("x", ExchangeKind::Headers, exchange)
                .await,
        ),
    );
    expect_refused(
        "bind",
        refusal(c.bind("q", "amq.headers", "", big.clone()).await),
    );
    expect_refused(
        "unbind",
        refusal(c.unbind("q", "amq.headers", "", big.clone()).await),
    );
    expect_refused(
        "exchange bind",
        refusal(
            c.bind_exchange("amq.direct", "amq.headers", "", big.clone())
                .await,
        ),
    );
    let consume = ConsumeOptions {
        arguments: big.clone(),
        ..Default::default()
    };
    expect_refused(
        "consume",
        refusal(c.consume("q", consume).await.map(|_| ())),
    );
    expect_refused("admin", refusal(c.admin("queue.list", big).await));
    // Nothing was declared, and the same connection goes on; a table just under the cap is
    // read as before (and its unknown argument refused for what it is).
    let (code, message) = refusal(
        c.declare_queue(
            "q3",
            QueueOptions {
                arguments: many_values(30_000),
                ..Default::default()
            },
        )
        .await,
    );
    assert_ne!(code, 311, "{message}");
    let declared = c.declare_queue("q4", Default::default()).await;
    assert!(declared.is_ok(), "{declared:?}");
    let (code, _) = refusal(
        c.declare_queue(
            "q2",
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(code, 404, "q2 was not declared");
}

#[tokio::test]
async fn admin_arguments_naming_new_things_are_bounded_to_255_bytes() {
    let d = TestDaemon::start();
    let c = d.client().await;
    let name = |n: usize| {
        let mut args = FieldTable::new();
        args.insert("name".into(), FieldValue::String("v".repeat(n)));
        args.insert("password".into(), FieldValue::String("secret".into()));
        args
    };
    for command in ["vhost.add", "user.add"] {
        let (code, message) = refusal(c.admin(command, name(256)).await);
        assert_eq!(code, 502, "{command}: {message}");
        assert!(message.contains("longer than 255"), "{command}: {message}");
        assert!(
            message.len() < 200,
            "{command}: reply of {} bytes",
            message.len()
        );
        c.admin(command, name(255))
            .await
            .unwrap_or_else(|e| panic!("{command} with a 255-byte name: {e}"));
    }
}

#[tokio::test]
async fn a_missing_alternate_exchange_is_logged_once_not_per_message() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    let mut arguments = FieldTable::new();
    arguments.insert(
        "alternate-exchange".into(),
        FieldValue::String("nowhere".into()),
    );
    c.declare_exchange(
        "main",
        warren_protocol::ExchangeKind::Direct,
        warren::client::ExchangeOptions {
            arguments,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
    for i in 0..100 {
        let m = warren::client::OutgoingMessage::new("main", "unbound", format!("m{i}"));
        within("a confirm", c.publish_and_confirm(m))
            .await
            .expect("an unroutable publish is confirmed");
    }
    c.close().await.expect("close");
    assert!(d.stop(), "daemon stops cleanly");
    let logs = d.logs();
    assert_eq!(
        logs.matches("alternate exchange does not exist").count(),
        1,
        "{logs}"
    );
}
