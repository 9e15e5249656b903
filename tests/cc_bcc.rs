//! Sender-selected distribution (`CC` and `BCC` headers), against the real daemon: extra
//! routing keys, each queue once, `BCC` never seen by consumers, and what dead-lettering does
//! with them.

mod common;

use std::time::Duration;

use common::{wait_get, TestDaemon};
use warren::client::{
    Client, Delivery, ExchangeKind, ExchangeOptions, FieldValue, OutgoingMessage, PublishOutcome,
    QueueOptions,
};
use warren_protocol::FieldTable;

fn s(v: &str) -> FieldValue {
    FieldValue::String(v.to_owned())
}

fn list(items: &[&str]) -> FieldValue {
    FieldValue::List(items.iter().map(|i| s(i)).collect())
}

async fn queue(c: &Client, name: &str, arguments: FieldTable) {
    c.declare_queue(
        name,
        QueueOptions {
            arguments,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// Every message in `queue`, taken with `get` (acked).
async fn drain(c: &Client, queue: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = c.get(queue, true).await.unwrap() {
        out.push(d);
    }
    out
}

/// A direct exchange `mail` with queues `a`, `b`, `c`, `d`, each bound by its own name.
async fn mail(c: &Client) {
    c.declare_exchange("mail", ExchangeKind::Direct, ExchangeOptions::default())
        .await
        .unwrap();
    for q in ["a", "b", "c", "d"] {
        queue(c, q, FieldTable::new()).await;
        c.bind(q, "mail", q, FieldTable::new()).await.unwrap();
    }
}

#[tokio::test]
async fn cc_and_bcc_add_routing_keys_and_bcc_is_never_delivered() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mail(&c).await;
    c.publish_and_confirm(
        OutgoingMessage::new("mail", "a", "hello")
            .header("CC", list(&["b", "a", "nowhere"]))
            .header("BCC", s("c")),
    )
    .await
    .unwrap();
    for q in ["a", "b", "c"] {
        let got = drain(&c, q).await;
        assert_eq!(got.len(), 1, "queue {q} gets the message once");
        let h = &got[0].properties.headers.to_table();
        assert_eq!(h.get("CC"), Some(&list(&["b", "a", "nowhere"])), "CC stays");
        assert_eq!(h.get("BCC"), None, "BCC is removed before delivery");
        assert_eq!(got[0].routing_key, "a");
    }
    assert!(drain(&c, "d").await.is_empty());
}

#[tokio::test]
async fn cc_works_on_the_default_and_topic_exchanges_each_queue_once() {
    let d = TestDaemon::start();
    let c = d.client().await;
    for q in ["x", "y", "t"] {
        queue(&c, q, FieldTable::new()).await;
    }
    c.publish_and_confirm(OutgoingMessage::new("", "x", "m").header("BCC", list(&["y", "x", "y"])))
        .await
        .unwrap();
    assert_eq!(drain(&c, "x").await.len(), 1);
    let y = drain(&c, "y").await;
    assert_eq!(y.len(), 1);
    assert_eq!(y[0].properties.headers.get("BCC"), None);

    c.declare_exchange("logs", ExchangeKind::Topic, ExchangeOptions::default())
        .await
        .unwrap();
    c.bind("t", "logs", "app.*", FieldTable::new())
        .await
        .unwrap();
    c.publish_and_confirm(
        OutgoingMessage::new("logs", "app.info", "m").header("CC", list(&["app.error"])),
    )
    .await
    .unwrap();
    assert_eq!(drain(&c, "t").await.len(), 1, "two matching keys, one copy");
}

#[tokio::test]
async fn a_message_routed_only_by_bcc_is_not_returned() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mail(&c).await;
    let outcome = c
        .publish_and_confirm(
            OutgoingMessage::new("mail", "nobody", "m")
                .mandatory()
                .header("BCC", list(&["d"])),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, PublishOutcome::Confirmed),
        "routed by BCC: {outcome:?}"
    );
    let got = drain(&c, "d").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.headers.get("BCC"), None);
}

#[tokio::test]
async fn a_scheduled_publish_is_routed_by_bcc_when_due_and_loses_it() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mail(&c).await;
    c.publish_and_confirm(
        OutgoingMessage::new("mail", "a", "later")
            .header("x-delay", FieldValue::Int(100))
            .header("BCC", list(&["b"])),
    )
    .await
    .unwrap();
    let b = wait_get(&c, "b").await;
    assert_eq!(b.properties.headers.get("BCC"), None);
    let a = wait_get(&c, "a").await;
    assert_eq!(a.properties.headers.get("BCC"), None);
}

#[tokio::test]
async fn dead_letters_are_routed_by_their_key_and_cc_and_record_them() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mail(&c).await;
    queue(
        &c,
        "work",
        [("x-dead-letter-exchange".to_owned(), s("mail"))].into(),
    )
    .await;
    c.publish_and_confirm(
        OutgoingMessage::new("", "work", "m")
            .header("CC", list(&["a"]))
            .header("BCC", list(&["b"])),
    )
    .await
    .unwrap();
    // Through the default exchange, CC `a` and BCC `b` name queues too.
    let first_a = drain(&c, "a").await;
    assert_eq!(first_a.len(), 1);
    let first_b = drain(&c, "b").await;
    assert_eq!(first_b.len(), 1, "BCC routed through the default exchange");
    let m = wait_get(&c, "work").await;
    assert_eq!(m.properties.headers.get("BCC"), None);
    c.reject(m.delivery_tag, false).await.unwrap();
    // Dead-lettered through `mail` by its key `work` (no queue) and its CC `a`; not `b`.
    let dead = wait_get(&c, "a").await;
    let Some(FieldValue::List(deaths)) = dead.properties.headers.get("x-death") else {
        panic!("x-death: {:?}", dead.properties.headers);
    };
    let FieldValue::Map(e) = &deaths[0] else {
        panic!("{deaths:?}")
    };
    assert_eq!(
        e["routing-keys"],
        list(&["work", "a"]),
        "key plus CC, never BCC"
    );
    assert_eq!(dead.properties.headers.get("CC"), Some(list(&["a"])));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        drain(&c, "b").await.is_empty(),
        "BCC does not route the dead letter"
    );
}

#[tokio::test]
async fn a_dead_letter_routing_key_replaces_the_key_and_cc() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mail(&c).await;
    queue(
        &c,
        "work",
        [
            ("x-dead-letter-exchange".to_owned(), s("mail")),
            ("x-dead-letter-routing-key".to_owned(), s("c")),
        ]
        .into(),
    )
    .await;
    c.publish_and_confirm(OutgoingMessage::new("", "work", "m").header("CC", list(&["zz"])))
        .await
        .unwrap();
    let m = wait_get(&c, "work").await;
    c.reject(m.delivery_tag, false).await.unwrap();
    let dead = wait_get(&c, "c").await;
    assert_eq!(dead.routing_key, "c");
    assert_eq!(dead.properties.headers.get("CC"), None, "CC is removed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for q in ["a", "b", "d"] {
        assert!(drain(&c, q).await.is_empty(), "queue {q}");
    }
}
