//! Hostile input that is well-formed: requests naming things far longer than any name can be.
//! Each is refused with a bounded error, the log stays small however often a client repeats
//! it, and the daemon keeps serving.

mod common;

use common::{within, TestDaemon};
use warren::client::ClientError;
use warren_protocol::{FieldTable, FieldValue};

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
    // An admin argument of 4 MB: the same.
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
