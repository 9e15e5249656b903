//! Header tables kept compact (issue 10): a message's headers live in memory as their
//! encoded bytes and are decoded only where a value is needed. Routing by headers,
//! dead-lettering and restarts still see every value.

mod common;

use std::time::Duration;

use common::{durable_queue, wait_get, wait_ready, TestDaemon};
use warren::client::{ExchangeOptions, OutgoingMessage, QueueOptions};
use warren_protocol::{ExchangeKind, FieldTable, FieldValue};

const MIB: u64 = 1024 * 1024;

/// A header value of `n` booleans: 2 bytes each on the wire.
fn flags(n: usize) -> FieldValue {
    FieldValue::List(vec![FieldValue::Bool(true); n])
}

/// The daemon's RSS once it has been steady for a moment (the last of a few samples), so
/// what is measured is what the queued messages keep, not a transient peak.
async fn settled_rss(d: &TestDaemon) -> u64 {
    let mut last = d.rss_bytes();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = d.rss_bytes();
    }
    last
}

#[tokio::test]
async fn queued_messages_with_big_headers_cost_about_their_wire_size() {
    // Headers used to be kept decoded: a boolean is 2 bytes on the wire and a 40-byte
    // `FieldValue` in memory, so these 20 messages (2 MB of headers on the wire) held about
    // 40 MB for as long as they were queued. Kept encoded, they hold their 2 MB (plus the
    // store's page cache and buffers); 16 MB is 8 times the wire size, well under 20 times.
    const MESSAGES: usize = 20;
    const BOOLS: usize = 50_000; // ~100 KB of headers: under the 128 KiB cap
    let d = TestDaemon::start();
    let c = d.client().await;
    let durable = QueueOptions {
        durable: true,
        ..Default::default()
    };
    c.declare_queue("big", durable).await.expect("declare");
    // Warm up the connection's buffers and the store with one message like the others.
    let warm = OutgoingMessage::new("", "big", "warm")
        .persistent()
        .header("flags", flags(BOOLS));
    let outcome = c.publish_and_confirm(warm).await.expect("publish");
    assert!(outcome.is_confirmed(), "{outcome:?}");
    let before = settled_rss(&d).await;
    for i in 0..MESSAGES {
        let m = OutgoingMessage::new("", "big", format!("m{i}"))
            .persistent()
            .header("flags", flags(BOOLS));
        let outcome = c.publish_and_confirm(m).await.expect("publish");
        assert!(outcome.is_confirmed(), "{outcome:?}");
    }
    wait_ready(&c, "big", MESSAGES as u64 + 1).await;
    let growth = settled_rss(&d).await.saturating_sub(before);
    let wire = (MESSAGES * BOOLS * 2) as u64;
    eprintln!(
        "{MESSAGES} messages with {} KB of headers each: daemon RSS grew by {:.1} MiB ({:.1}x the headers' wire size)",
        BOOLS * 2 / 1000,
        growth as f64 / MIB as f64,
        growth as f64 / wire as f64
    );
    assert!(
        growth < 16 * MIB,
        "RSS grew by {} KiB for {} KiB of headers on the wire",
        growth / 1024,
        wire / 1024
    );
}

fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn text(s: &str) -> FieldValue {
    FieldValue::String(s.into())
}

/// A message whose headers are `extra` plus ~100 KB of booleans under keys sorting before,
/// between and after the ones routing reads, so a lookup steps over them.
fn with_big_headers(
    queue_or_key: &str,
    body: &str,
    extra: &[(&str, FieldValue)],
) -> OutgoingMessage {
    let mut headers = table(extra);
    for key in ["0-first", "m-middle", "zz-last"] {
        headers.insert(key.into(), flags(16_000));
    }
    let mut m = OutgoingMessage::new("", queue_or_key, body.to_owned()).persistent();
    m.properties.headers = headers.into();
    m
}

#[tokio::test]
async fn the_headers_exchange_routes_messages_with_big_headers() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange("h", ExchangeKind::Headers, ExchangeOptions::default())
        .await
        .expect("declare exchange");
    for q in ["all", "any", "present"] {
        c.declare_queue(q, QueueOptions::default())
            .await
            .expect("declare queue");
    }
    let all = table(&[
        ("x-match", text("all")),
        ("format", text("pdf")),
        ("type", FieldValue::Int(7)),
    ]);
    let any = table(&[
        ("x-match", text("any")),
        ("format", text("zip")),
        ("type", FieldValue::Int(7)),
    ]);
    let present = table(&[("zz-last", FieldValue::Void)]);
    c.bind("all", "h", "", all).await.expect("bind");
    c.bind("any", "h", "", any).await.expect("bind");
    c.bind("present", "h", "", present).await.expect("bind");
    let send = |body: &str, extra: &[(&str, FieldValue)]| {
        let mut m = with_big_headers("", body, extra);
        m.exchange = "h".into();
        m
    };
    // Integers of another width match by value, as before.
    for m in [
        send(
            "both",
            &[("format", text("pdf")), ("type", FieldValue::U8(7))],
        ),
        send("type-only", &[("type", FieldValue::Int(7))]),
        send("neither", &[("format", text("doc"))]),
    ] {
        let outcome = c.publish_and_confirm(m).await.expect("publish");
        assert!(outcome.is_confirmed(), "{outcome:?}");
    }
    let bodies = |q: &'static str, n: u64| {
        let c = &c;
        async move {
            wait_ready(c, q, n).await;
            let mut got = Vec::new();
            for _ in 0..n {
                let m = wait_get(c, q).await;
                c.ack(m.delivery_tag, false).await.expect("ack");
                got.push(String::from_utf8_lossy(&m.body).into_owned());
            }
            got
        }
    };
    assert_eq!(bodies("all", 1).await, ["both"]);
    assert_eq!(bodies("any", 2).await, ["both", "type-only"]);
    assert_eq!(bodies("present", 3).await, ["both", "type-only", "neither"]);
}

#[tokio::test]
async fn dead_lettering_writes_x_death_into_big_headers() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "dlq", FieldTable::new()).await;
    durable_queue(
        &c,
        "work",
        table(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("dlq")),
        ]),
    )
    .await;
    let m = with_big_headers("work", "doomed", &[("app", text("kept"))]);
    let sent = m.properties.headers.clone();
    assert!(c
        .publish_and_confirm(m)
        .await
        .expect("publish")
        .is_confirmed());
    let got = wait_get(&c, "work").await;
    assert_eq!(got.properties.headers, sent, "delivered as published");
    c.reject(got.delivery_tag, false).await.expect("reject");
    let dead = wait_get(&c, "dlq").await;
    let h = dead.properties.headers.to_table();
    let Some(FieldValue::List(deaths)) = h.get("x-death") else {
        panic!("x-death: {h:?}");
    };
    let [FieldValue::Map(death)] = deaths.as_slice() else {
        panic!("one death: {deaths:?}");
    };
    assert_eq!(death.get("queue"), Some(&text("work")));
    assert_eq!(death.get("reason"), Some(&text("rejected")));
    assert_eq!(death.get("count"), Some(&FieldValue::Int(1)));
    assert_eq!(h.get("x-first-death-queue"), Some(&text("work")));
    assert_eq!(h.get("x-last-death-reason"), Some(&text("rejected")));
    // Every header the publisher sent is still there, unchanged.
    for (k, v) in sent.to_table() {
        assert_eq!(h.get(&k), Some(&v), "header {k}");
    }
    assert_eq!(dead.properties.headers.get("app"), Some(text("kept")));
}

#[tokio::test]
async fn big_headers_survive_a_restart() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "kept", FieldTable::new()).await;
    let m = with_big_headers("kept", "one", &[("app", FieldValue::U64(u64::MAX))]);
    let sent = m.properties.headers.clone();
    assert!(c
        .publish_and_confirm(m)
        .await
        .expect("publish")
        .is_confirmed());
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    let got = wait_get(&c, "kept").await;
    assert_eq!(got.properties.headers, sent);
    assert_eq!(
        got.properties.headers.get("app"),
        Some(FieldValue::U64(u64::MAX))
    );
    assert_eq!(&got.body[..], b"one");
}
