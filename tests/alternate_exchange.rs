//! Alternate exchanges (the `alternate-exchange` exchange argument, RabbitMQ's AE), against
//! the real daemon: a message no binding takes goes through the AE chain before it counts as
//! unroutable, each exchange at most once; for publishes, dead letters and `dlq replay`.

mod common;

use common::{durable_queue, ok, ready, within, TestDaemon};
use warren::client::{Client, ExchangeKind, ExchangeOptions, OutgoingMessage, PublishOutcome};
use warren_protocol::{ErrorCode, FieldTable, FieldValue};

fn args(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn ae(name: &str) -> FieldTable {
    args(&[("alternate-exchange", FieldValue::String(name.into()))])
}

async fn exchange(c: &Client, name: &str, kind: ExchangeKind, arguments: FieldTable) {
    c.declare_exchange(
        name,
        kind,
        ExchangeOptions {
            durable: true,
            arguments,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring exchange {name}: {e}"));
}

async fn bound_queue(c: &Client, queue: &str, exchange: &str, key: &str) {
    durable_queue(c, queue, FieldTable::new()).await;
    c.bind(queue, exchange, key, FieldTable::new())
        .await
        .unwrap();
}

async fn mandatory(c: &Client, exchange: &str, key: &str) -> PublishOutcome {
    c.publish_and_confirm(OutgoingMessage::new(exchange, key, "m").mandatory())
        .await
        .expect("publish")
}

fn returned(outcome: &PublishOutcome) -> bool {
    matches!(outcome, PublishOutcome::Returned { reply_code, .. }
        if *reply_code == ErrorCode::NoRoute.as_u16())
}

/// `main` (direct, key `k` bound to `direct-q`) with AE `ae` (fanout into `caught`).
async fn main_with_ae(c: &Client) {
    exchange(c, "ae", ExchangeKind::Fanout, FieldTable::new()).await;
    bound_queue(c, "caught", "ae", "").await;
    exchange(c, "main", ExchangeKind::Direct, ae("ae")).await;
    bound_queue(c, "direct-q", "main", "k").await;
}

#[tokio::test]
async fn unrouted_messages_go_to_the_alternate_exchange_and_are_not_returned() {
    let d = TestDaemon::start();
    let c = d.client().await;
    main_with_ae(&c).await;

    assert_eq!(mandatory(&c, "main", "k").await, PublishOutcome::Confirmed);
    assert_eq!(
        mandatory(&c, "main", "other").await,
        PublishOutcome::Confirmed
    );
    // A routed message does not also go to the AE; an unrouted one goes only there.
    assert_eq!(ready(&c, "direct-q").await, 1);
    assert_eq!(ready(&c, "caught").await, 1);
    let got = c.get("caught", true).await.unwrap().expect("a message");
    assert_eq!(
        got.exchange, "main",
        "keeps the exchange it was published to"
    );
    assert_eq!(got.routing_key, "other");

    // When the AE routes nowhere either, a mandatory message is returned.
    c.unbind("caught", "ae", "", FieldTable::new())
        .await
        .unwrap();
    assert!(returned(&mandatory(&c, "main", "other").await));
}

#[tokio::test]
async fn alternates_chain_and_a_cycle_or_a_missing_one_ends_the_chain() {
    let d = TestDaemon::start();
    let c = d.client().await;
    // a -> b -> c: only c routes `x`; b routes `y`.
    exchange(&c, "c", ExchangeKind::Direct, FieldTable::new()).await;
    bound_queue(&c, "from-c", "c", "x").await;
    exchange(&c, "b", ExchangeKind::Direct, ae("c")).await;
    bound_queue(&c, "from-b", "b", "y").await;
    exchange(&c, "a", ExchangeKind::Direct, ae("b")).await;
    assert_eq!(mandatory(&c, "a", "x").await, PublishOutcome::Confirmed);
    assert_eq!(mandatory(&c, "a", "y").await, PublishOutcome::Confirmed);
    assert_eq!(ready(&c, "from-c").await, 1);
    assert_eq!(ready(&c, "from-b").await, 1, "b routed y: c is not tried");

    // A cycle of alternates (p -> q -> p, neither routes) is unroutable, not a hang.
    exchange(&c, "p", ExchangeKind::Direct, ae("q")).await;
    exchange(&c, "q", ExchangeKind::Direct, ae("p")).await;
    assert!(returned(&mandatory(&c, "p", "x").await));
    // An exchange that is its own alternate, likewise.
    exchange(&c, "self", ExchangeKind::Direct, ae("self")).await;
    assert!(returned(&mandatory(&c, "self", "x").await));

    // An AE that does not exist behaves as no AE, and the daemon says so.
    exchange(&c, "dangling", ExchangeKind::Direct, ae("nowhere")).await;
    assert!(returned(&mandatory(&c, "dangling", "x").await));
    assert!(
        d.logs().contains("alternate exchange does not exist"),
        "{}",
        d.logs()
    );
    // Declaring it later makes it take effect.
    exchange(&c, "nowhere", ExchangeKind::Fanout, FieldTable::new()).await;
    bound_queue(&c, "late", "nowhere", "").await;
    assert_eq!(
        mandatory(&c, "dangling", "x").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(ready(&c, "late").await, 1);
}

#[tokio::test]
async fn the_argument_is_checked_compared_and_kept_across_a_restart() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    let err = c
        .declare_exchange(
            "bad",
            ExchangeKind::Direct,
            ExchangeOptions {
                arguments: args(&[("alternate-exchange", FieldValue::Int(1))]),
                ..Default::default()
            },
        )
        .await
        .expect_err("an integer is not an exchange name");
    assert_eq!(
        err.to_string(),
        "PRECONDITION_FAILED (406): invalid arg 'alternate-exchange' for exchange 'bad': \
         expected the name of an exchange (a string), got Int(1)"
    );
    let err = c
        .declare_exchange(
            "bad",
            ExchangeKind::Direct,
            ExchangeOptions {
                arguments: ae(""),
                ..Default::default()
            },
        )
        .await
        .expect_err("the default exchange cannot be an alternate");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::PreconditionFailed),
        "{err}"
    );

    main_with_ae(&c).await;
    let err = c
        .declare_exchange(
            "main",
            ExchangeKind::Direct,
            ExchangeOptions {
                durable: true,
                arguments: ae("other"),
                ..Default::default()
            },
        )
        .await
        .expect_err("another AE is another exchange");
    assert_eq!(
        err.to_string(),
        "PRECONDITION_FAILED (406): inequivalent arg 'alternate-exchange' for exchange 'main': \
         received other, current ae"
    );

    drop(c);
    d.restart();
    let c = d.client().await;
    assert_eq!(
        mandatory(&c, "main", "other").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(ready(&c, "caught").await, 1, "the AE survived the restart");
}

#[tokio::test]
async fn definitions_carry_the_alternate_exchange_and_import_checks_it() {
    let source = TestDaemon::start();
    let c = source.client().await;
    main_with_ae(&c).await;
    let exported = ok(&source.cli(&["definitions", "export"]));
    assert!(
        exported.contains("\"alternate-exchange\": \"ae\""),
        "{exported}"
    );

    let target = TestDaemon::start();
    let file = target.data_dir().join("defs.json");
    std::fs::write(&file, &exported).unwrap();
    ok(&target.cli(&["definitions", "import", file.to_str().unwrap()]));
    let c = target.client().await;
    assert_eq!(
        mandatory(&c, "main", "other").await,
        PublishOutcome::Confirmed
    );
    assert_eq!(ready(&c, "caught").await, 1);

    std::fs::write(
        &file,
        r#"{"queues": [], "bindings": [],
            "exchanges": [{"name": "bad", "type": "direct", "durable": true,
                           "arguments": {"alternate-exchange": 7}}]}"#,
    )
    .unwrap();
    let out = target.cli(&["definitions", "import", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "definitions: invalid arg 'alternate-exchange' for exchange 'bad': expected the name"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn dead_letters_and_replays_are_routed_through_the_alternate_exchange() {
    let d = TestDaemon::start();
    let c = d.client().await;
    // The DLX binds nothing for key `work`: its AE takes the dead letters.
    exchange(&c, "dlx-ae", ExchangeKind::Fanout, FieldTable::new()).await;
    bound_queue(&c, "dlq", "dlx-ae", "").await;
    exchange(&c, "dlx", ExchangeKind::Direct, ae("dlx-ae")).await;
    durable_queue(
        &c,
        "work",
        args(&[("x-dead-letter-exchange", FieldValue::String("dlx".into()))]),
    )
    .await;
    c.publish_and_confirm(OutgoingMessage::new("", "work", "m"))
        .await
        .unwrap();
    let delivery = c.get("work", false).await.unwrap().expect("a message");
    c.reject_durable(delivery.delivery_tag, false)
        .await
        .unwrap();
    within("the dead letter in dlq", async {
        while ready(&c, "dlq").await < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    // Replayed to an exchange that binds nothing for the key: its AE takes them.
    main_with_ae(&c).await;
    assert_eq!(
        ok(&d.cli(&[
            "dlq",
            "replay",
            "dlq",
            "--to-exchange",
            "main",
            "--key",
            "nope"
        ])),
        "dead letters in queue 'dlq' replayed: 1 message\n"
    );
    assert_eq!(ready(&c, "caught").await, 1);
    assert_eq!(ready(&c, "dlq").await, 0);
}
