//! Delivery counting as RabbitMQ 4.3 defines it, against the real daemon: a reject (with or
//! without requeue) and a connection that ends with a delivery unacked count a failure
//! (`delivery_count`, RabbitMQ's `x-delivery-count`); a nack with requeue, a consumer timeout
//! and a cancel that requeues only return the message (`acquired_count`, `x-acquired-count`,
//! counts both); `x-delivery-limit` and `x-retry-backoff` look at failures only; both counts
//! survive `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{args, durable_queue, ok, ready, wait_get, wait_ready, within, TestDaemon};
use serde_json::Value;
use warren::client::{
    Client, ConsumeOptions, Delivery, ExchangeKind, ExchangeOptions, FieldValue, OutgoingMessage,
};
use warren_protocol::FieldTable;

async fn publish(c: &Client, queue: &str, body: &str) {
    let m = OutgoingMessage::new("", queue, body.to_owned()).persistent();
    assert!(c.publish_and_confirm(m).await.unwrap().is_confirmed());
}

/// (body, delivery_count, acquired_count, redelivered)
fn counts(d: &Delivery) -> (String, u32, u32, bool) {
    (
        String::from_utf8(d.body.to_vec()).unwrap(),
        d.delivery_count,
        d.acquired_count,
        d.redelivered,
    )
}

fn seen(body: &str, failed: u32, acquired: u32) -> (String, u32, u32, bool) {
    (body.to_owned(), failed, acquired, acquired > 0)
}

#[tokio::test]
async fn a_first_delivery_counts_nothing_and_is_not_redelivered() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    publish(&c, "q", "a").await;
    publish(&c, "q", "b").await;
    let got = wait_get(&c, "q").await;
    assert_eq!(counts(&got), seen("a", 0, 0));
    let mut k = c.consume("q", ConsumeOptions::default()).await.unwrap();
    let delivered = within("a delivery", k.next()).await.expect("delivered");
    assert_eq!(counts(&delivered), seen("b", 0, 0));
    assert!(
        delivered.properties.headers.is_empty(),
        "the counts are fields, not headers"
    );
}

#[tokio::test]
async fn a_nack_with_requeue_returns_the_message_without_a_failure() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    publish(&c, "q", "m").await;
    let mut m = wait_get(&c, "q").await;
    for acquired in 1..=3 {
        c.nack_durable(m.delivery_tag, false, true, 0)
            .await
            .unwrap();
        m = wait_get(&c, "q").await;
        assert_eq!(counts(&m), seen("m", 0, acquired));
    }
}

#[tokio::test]
async fn a_nack_of_tag_0_with_multiple_returns_everything_unsettled() {
    // What `warren consume` and `warren get` send to give back what they did not print.
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    publish(&c, "q", "a").await;
    publish(&c, "q", "b").await;
    let _a = wait_get(&c, "q").await;
    let _b = wait_get(&c, "q").await;
    c.nack_durable(0, true, true, 0).await.unwrap();
    assert_eq!(counts(&wait_get(&c, "q").await), seen("a", 0, 1));
    assert_eq!(counts(&wait_get(&c, "q").await), seen("b", 0, 1));
}

#[tokio::test]
async fn a_reject_with_requeue_counts_a_failure() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    publish(&c, "q", "m").await;
    let first = wait_get(&c, "q").await;
    c.reject_durable(first.delivery_tag, true).await.unwrap();
    let second = wait_get(&c, "q").await;
    assert_eq!(counts(&second), seen("m", 1, 1));
    c.nack_durable(second.delivery_tag, false, true, 0)
        .await
        .unwrap();
    let third = wait_get(&c, "q").await;
    assert_eq!(counts(&third), seen("m", 1, 2), "the nack only acquired");
    c.reject_durable(third.delivery_tag, true).await.unwrap();
    let fourth = wait_get(&c, "q").await;
    assert_eq!(counts(&fourth), seen("m", 2, 3));
}

#[tokio::test]
async fn a_connection_that_closes_holding_a_delivery_fails_it() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    publish(&c, "q", "m").await;
    let holder = d.client().await;
    let held = wait_get(&holder, "q").await;
    assert_eq!(counts(&held), seen("m", 0, 0));
    holder.close().await.unwrap();
    wait_ready(&c, "q", 1).await;
    assert_eq!(counts(&wait_get(&c, "q").await), seen("m", 1, 1));
}

#[test]
fn a_connection_that_dies_holding_a_delivery_fails_it() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q", "--durable"]));
    ok(&d.cli(&["publish", "", "q", "m", "--persistent"]));
    // A consumer process killed with the message printed but not yet acknowledged: with
    // `--count 2 --prefetch 2` it settles nothing before the second message arrives, which
    // never does. No Close frame, no settle: the socket just goes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["consume", "q", "--count", "2", "--prefetch", "2"])
        .env("WARREN_SERVER", d.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning warren consume");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading the consumer's output");
    assert_eq!(line, "[q] m\n");
    child.kill().expect("killing the consumer");
    child.wait().expect("reaping the consumer");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = d.client().await;
        wait_ready(&c, "q", 1).await;
        assert_eq!(counts(&wait_get(&c, "q").await), seen("m", 1, 1));
    });
}

#[tokio::test]
async fn a_cancel_that_requeues_returns_without_a_failure() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    publish(&c, "q", "m").await;
    let mut k = c.consume("q", ConsumeOptions::default()).await.unwrap();
    let m = within("a delivery", k.next()).await.expect("delivered");
    assert_eq!(counts(&m), seen("m", 0, 0));
    c.cancel(k.tag()).await.unwrap();
    wait_ready(&c, "q", 1).await;
    assert_eq!(counts(&wait_get(&c, "q").await), seen("m", 0, 1));
}

#[tokio::test]
async fn a_consumer_timeout_returns_without_a_failure() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(
        &c,
        "q",
        args(&[("x-consumer-timeout", FieldValue::Int(200))]),
    )
    .await;
    publish(&c, "q", "m").await;
    let mut k = c.consume("q", ConsumeOptions::default()).await.unwrap();
    let m = within("a delivery", k.next()).await.expect("delivered");
    assert_eq!(counts(&m), seen("m", 0, 0));
    assert!(
        within("the cancel", k.next()).await.is_none(),
        "cancelled by the server"
    );
    assert_eq!(counts(&wait_get(&c, "q").await), seen("m", 0, 1));
}

#[tokio::test]
async fn the_delivery_limit_is_reached_by_rejects_never_by_nacks() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_exchange(
        "dlx",
        ExchangeKind::Fanout,
        ExchangeOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    durable_queue(&c, "dlq", FieldTable::new()).await;
    c.bind("dlq", "dlx", "", FieldTable::new()).await.unwrap();
    durable_queue(
        &c,
        "q",
        args(&[
            ("x-delivery-limit", FieldValue::Int(1)),
            ("x-dead-letter-exchange", FieldValue::String("dlx".into())),
        ]),
    )
    .await;
    publish(&c, "q", "m").await;
    // Many nacks: far past the limit in acquisitions, never a failure.
    let mut m = wait_get(&c, "q").await;
    for _ in 0..5 {
        c.nack_durable(m.delivery_tag, false, true, 0)
            .await
            .unwrap();
        m = wait_get(&c, "q").await;
    }
    assert_eq!(counts(&m), seen("m", 0, 5));
    assert_eq!(ready(&c, "dlq").await, 0, "nacks never reach the limit");
    // One reject: 1 failure, within the limit of 1.
    c.reject_durable(m.delivery_tag, true).await.unwrap();
    let m = wait_get(&c, "q").await;
    assert_eq!(counts(&m), seen("m", 1, 6));
    // A second: past it, dead-lettered.
    c.reject_durable(m.delivery_tag, true).await.unwrap();
    let dead = wait_get(&c, "dlq").await;
    assert_eq!(
        dead.properties.headers.get("x-first-death-reason"),
        Some(FieldValue::String("delivery_limit".into()))
    );
    assert_eq!(ready(&c, "q").await, 0);
}

#[tokio::test]
async fn the_retry_backoff_delays_failures_not_returns() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(
        &c,
        "q",
        args(&[("x-retry-backoff", FieldValue::String("1h".into()))]),
    )
    .await;
    publish(&c, "q", "m").await;
    let m = wait_get(&c, "q").await;
    c.nack_durable(m.delivery_tag, false, true, 0)
        .await
        .unwrap();
    assert_eq!(ready(&c, "q").await, 1, "a nack returns it at once");
    let m = wait_get(&c, "q").await;
    c.reject_durable(m.delivery_tag, true).await.unwrap();
    let q = c
        .admin(
            "queue.inspect",
            args(&[("queue", FieldValue::String("q".into()))]),
        )
        .await
        .unwrap();
    assert_eq!(
        (&q["messages_ready"], &q["messages_delayed"]),
        (&serde_json::json!(0), &serde_json::json!(1)),
        "a reject waits out the backoff: {q}"
    );
}

#[test]
fn both_counts_survive_kill_9() {
    let mut d = TestDaemon::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = d.client().await;
        durable_queue(&c, "q", FieldTable::new()).await;
        publish(&c, "q", "m").await;
        let m = wait_get(&c, "q").await;
        c.nack_durable(m.delivery_tag, false, true, 0)
            .await
            .unwrap();
        let m = wait_get(&c, "q").await;
        c.reject_durable(m.delivery_tag, true).await.unwrap();
        // A connection that ends holding it: a failure, recorded as the server cleans up.
        let holder = d.client().await;
        let m = wait_get(&holder, "q").await;
        assert_eq!(counts(&m), seen("m", 1, 2));
        holder.close().await.unwrap();
        wait_ready(&c, "q", 1).await;
        // Every settle before it on this connection is durable once this one is: the peek
        // below only looks.
        let peeked = c
            .admin(
                "queue.peek",
                args(&[("queue", FieldValue::String("q".into()))]),
            )
            .await
            .unwrap();
        assert_eq!(peeked[0]["delivery_count"], 2, "{peeked}");
        assert_eq!(peeked[0]["acquired_count"], 3, "{peeked}");
    });
    // The close's requeue is written by the store writer's next commit; a durable settle
    // after it on another connection orders behind it.
    rt.block_on(async {
        let c = d.client().await;
        durable_queue(&c, "flush", FieldTable::new()).await;
        publish(&c, "flush", "x").await;
        let x = wait_get(&c, "flush").await;
        c.ack_durable(x.delivery_tag, false).await.unwrap();
    });
    d.kill9();
    d.restart();
    rt.block_on(async {
        let c = d.client().await;
        let m = wait_get(&c, "q").await;
        assert_eq!(counts(&m), seen("m", 2, 3));
    });
}

#[test]
fn the_cli_shows_both_counts() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q", "--durable"]));
    ok(&d.cli(&["publish", "", "q", "m", "--persistent"]));
    // `get --requeue` gives it back with a nack: acquired, not failed.
    assert_eq!(ok(&d.cli(&["get", "q", "--requeue"])), "[q] m\n");
    let peek: Value =
        serde_json::from_str(&ok(&d.cli(&["queue", "peek", "q", "--json"]))).expect("JSON");
    assert_eq!(
        (&peek[0]["delivery_count"], &peek[0]["acquired_count"]),
        (&serde_json::json!(0), &serde_json::json!(1)),
        "{peek}"
    );
    let table = ok(&d.cli(&["queue", "peek", "q"]));
    assert!(
        table.lines().next().unwrap().contains("FAILED  ACQUIRED"),
        "{table}"
    );
    // A failing consumer: reject with requeue, once.
    assert_eq!(
        ok(&d.cli(&["consume", "q", "--count", "1", "--reject-requeue"])),
        "[q] m (redelivered, x-delivery-count=0, x-acquired-count=1)\n"
    );
    let got = ok(&d.cli(&["get", "q", "--json"]));
    let m: Value = serde_json::from_str(got.trim_end()).expect("JSON line");
    assert_eq!(
        (
            &m["redelivered"],
            &m["delivery_count"],
            &m["acquired_count"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(2)
        ),
        "{m}"
    );
}
