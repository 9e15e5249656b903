//! Caps on what clients may create (`--max-queues`, `--max-exchanges`,
//! `--max-consumers-per-connection`): past each, a clear refusal naming the limit and its
//! flag; the connection goes on; what exists is untouched. And the connection cap
//! (`--max-connections`): past it, new clients wait until one closes.

mod common;

use common::{within, TestDaemon};
use warren::client::{ClientError, ConsumeOptions, ExchangeOptions};
use warren_protocol::ExchangeKind;

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Server { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn queues_exchanges_and_consumers_are_capped() {
    let d = TestDaemon::start_with(&[
        "--max-queues",
        "3",
        "--max-exchanges",
        "2",
        "--max-consumers-per-connection",
        "2",
    ]);
    let c = d.client().await;
    for q in ["a", "b", "c"] {
        c.declare_queue(q, Default::default())
            .await
            .expect("under the cap");
    }
    let (code, message) = refusal(c.declare_queue("d", Default::default()).await);
    assert_eq!(code, 406, "{message}");
    assert!(
        message.contains("queue limit (3)") && message.contains("--max-queues"),
        "{message}"
    );
    c.declare_queue("a", Default::default())
        .await
        .expect("redeclaring an existing queue is not a new one");
    c.delete_queue("c", false, false).await.expect("delete");
    c.declare_queue("d", Default::default())
        .await
        .expect("room again after a delete");

    for e in ["x1", "x2"] {
        c.declare_exchange(e, ExchangeKind::Fanout, ExchangeOptions::default())
            .await
            .expect("under the cap");
    }
    let (code, message) = refusal(
        c.declare_exchange("x3", ExchangeKind::Fanout, ExchangeOptions::default())
            .await,
    );
    assert_eq!(code, 406, "{message}");
    assert!(message.contains("--max-exchanges"), "{message}");

    let _k1 = c
        .consume("a", ConsumeOptions::default())
        .await
        .expect("1st");
    let _k2 = c
        .consume("b", ConsumeOptions::default())
        .await
        .expect("2nd");
    let (code, message) = refusal(c.consume("d", ConsumeOptions::default()).await);
    assert_eq!(code, 530, "{message}");
    assert!(
        message.contains("--max-consumers-per-connection"),
        "{message}"
    );
    // The limit is per connection: another one has room.
    let other = d.client().await;
    let _k3 = other
        .consume("d", ConsumeOptions::default())
        .await
        .expect("another connection's first consumer");
    // And the refused connection still works.
    c.declare_queue("a", Default::default())
        .await
        .expect("the connection goes on");
}

#[tokio::test]
async fn past_the_connection_cap_a_client_waits_until_one_closes() {
    let d = TestDaemon::start_with(&["--max-connections", "1"]);
    let first = d.client().await;
    let addr = d.addr().to_owned();
    let mut second = tokio::spawn(async move { warren::client::Client::connect(&addr).await });
    // Not served while the first is open (it waits in the kernel's backlog); this can only
    // pass wrongly on a slow machine, never fail wrongly.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "a second connection was served past --max-connections 1"
    );
    let listed = first
        .admin("connection.list", Default::default())
        .await
        .expect("connection.list");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    first.close().await.expect("close");
    let second = within("the waiting client to be served", second)
        .await
        .expect("join")
        .expect("served once the first closed");
    second
        .declare_queue("served", Default::default())
        .await
        .expect("a working connection");
}
