//! Consumers, prefetch, acks, nacks and redelivery, against the real daemon.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{within, TestDaemon};
use warren::client::{Client, ConsumeOptions, Consumer, Delivery, OutgoingMessage, QueueOptions};

async fn durable_queue(c: &Client, name: &str) {
    c.declare_queue(
        name,
        QueueOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
}

async fn publish_n(c: &Client, queue: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let m = OutgoingMessage::new("", queue, format!("m{i}")).persistent();
        pending.push(c.publish(m).await.expect("publish"));
    }
    for p in pending {
        assert!(p.await.expect("confirm").is_confirmed());
    }
}

async fn next(consumer: &mut Consumer) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("consumer ended unexpectedly")
}

/// Asserts that nothing arrives for a moment. (Absence can only be checked over some window;
/// the window bounds the test, it measures nothing.)
async fn assert_quiet(consumer: &mut Consumer) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        panic!("unexpected delivery {:?}", d.body);
    }
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.body.to_vec()).expect("utf8")
}

#[tokio::test]
async fn competing_consumers_share_the_queue_disjointly() {
    let d = TestDaemon::start();
    let c1 = d.client().await;
    let c2 = d.client().await;
    durable_queue(&c1, "work").await;
    c1.qos(10).await.unwrap();
    c2.qos(10).await.unwrap();
    let mut k1 = c1.consume("work", ConsumeOptions::default()).await.unwrap();
    let mut k2 = c2.consume("work", ConsumeOptions::default()).await.unwrap();
    publish_n(&c1, "work", 200).await;
    let (mut got1, mut got2) = (BTreeSet::new(), BTreeSet::new());
    while got1.len() + got2.len() < 200 {
        tokio::select! {
            m = next(&mut k1) => { c1.ack(m.delivery_tag, false).await.unwrap(); assert!(got1.insert(body(&m))); }
            m = next(&mut k2) => { c2.ack(m.delivery_tag, false).await.unwrap(); assert!(got2.insert(body(&m))); }
        }
    }
    assert!(got1.is_disjoint(&got2), "a message went to both consumers");
    let all: BTreeSet<String> = got1.union(&got2).cloned().collect();
    let want: BTreeSet<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(all, want);
    // Round-robin: both consumers had room the whole time, so both got a share.
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "{} / {}",
        got1.len(),
        got2.len()
    );
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "pf").await;
    publish_n(&c, "pf", 10).await;
    c.qos(3).await.unwrap();
    let mut k = c.consume("pf", ConsumeOptions::default()).await.unwrap();
    let first: Vec<Delivery> = vec![next(&mut k).await, next(&mut k).await, next(&mut k).await];
    assert_eq!(
        first.iter().map(body).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    assert_quiet(&mut k).await;
    c.ack(first[0].delivery_tag, false).await.unwrap();
    assert_eq!(body(&next(&mut k).await), "m3");
    assert_quiet(&mut k).await;
    // multiple=true settles everything up to the tag.
    c.ack(first[2].delivery_tag, true).await.unwrap();
    assert_eq!(body(&next(&mut k).await), "m4");
    assert_eq!(body(&next(&mut k).await), "m5");
    assert_quiet(&mut k).await;
}

#[tokio::test]
async fn nack_with_requeue_redelivers_at_the_head() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "nq").await;
    publish_n(&c, "nq", 3).await;
    c.qos(1).await.unwrap();
    let mut k = c.consume("nq", ConsumeOptions::default()).await.unwrap();
    let m = next(&mut k).await;
    assert_eq!(
        (body(&m), m.redelivered, m.delivery_count),
        ("m0".into(), false, 0)
    );
    c.nack(m.delivery_tag, false, true, 0).await.unwrap();
    let again = next(&mut k).await;
    assert_eq!(
        body(&again),
        "m0",
        "a requeued message goes back to the head"
    );
    assert!(again.redelivered);
    // A nack is a return, not a failure (RabbitMQ 4.3); a reject is a failure.
    assert_eq!((again.delivery_count, again.acquired_count), (0, 1));
    c.reject(again.delivery_tag, true).await.unwrap();
    let third = next(&mut k).await;
    assert_eq!(
        (body(&third), third.delivery_count, third.acquired_count),
        ("m0".into(), 1, 2)
    );
    c.ack(third.delivery_tag, false).await.unwrap();
    let m1 = next(&mut k).await;
    assert_eq!((body(&m1), m1.redelivered), ("m1".into(), false));
    // Reject without requeue drops it (no dead-letter exchange configured).
    c.reject(m1.delivery_tag, false).await.unwrap();
    assert_eq!(body(&next(&mut k).await), "m2");
}

#[tokio::test]
async fn unacked_messages_of_a_dropped_connection_go_to_another_consumer() {
    let d = TestDaemon::start();
    let setup = d.client().await;
    durable_queue(&setup, "jobs").await;
    publish_n(&setup, "jobs", 8).await;

    let doomed = d.client().await;
    doomed.qos(5).await.unwrap();
    let mut k = doomed
        .consume("jobs", ConsumeOptions::default())
        .await
        .unwrap();
    let mut taken = Vec::new();
    for _ in 0..5 {
        taken.push(body(&next(&mut k).await));
    }
    assert_eq!(taken, ["m0", "m1", "m2", "m3", "m4"]);
    assert_quiet(&mut k).await;
    // Drop the connection without acking anything.
    drop(k);
    drop(doomed);

    let rescuer = d.client().await;
    let mut k2 = rescuer
        .consume("jobs", ConsumeOptions::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..8 {
        let m = next(&mut k2).await;
        let was_taken = taken.contains(&body(&m));
        assert_eq!(m.redelivered, was_taken, "{}", body(&m));
        if was_taken {
            // Dropping the consumer cancelled it first (a return); the connection went
            // after. tests/delivery_counting.rs kills a connection that holds them.
            assert_eq!((m.delivery_count, m.acquired_count), (0, 1));
        }
        seen.push(body(&m));
        rescuer.ack(m.delivery_tag, false).await.unwrap();
    }
    seen.sort();
    let mut want: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn cancel_requeues_the_consumers_unacked_deliveries() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "cq").await;
    publish_n(&c, "cq", 2).await;
    let mut k = c.consume("cq", ConsumeOptions::default()).await.unwrap();
    let a = next(&mut k).await;
    let _b = next(&mut k).await;
    c.cancel(k.tag()).await.unwrap();
    let got = within("a get", c.get("cq", false))
        .await
        .unwrap()
        .expect("requeued message");
    assert_eq!(body(&got), body(&a));
    assert!(got.redelivered);
    // The old tag is settled: acking it is refused.
    let err = c.ack_durable(a.delivery_tag, false).await.unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(warren_protocol::ErrorCode::PreconditionFailed),
        "{err}"
    );
}

/// AMQP's basic.cancel: the deliveries stay with the connection to be settled later; no
/// further delivery arrives, and the ones left unsettled return when the connection ends.
#[tokio::test]
async fn cancel_keeping_unacked_leaves_the_deliveries_to_settle() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "kq").await;
    publish_n(&c, "kq", 4).await;
    c.qos(2).await.unwrap();
    let mut k = c.consume("kq", ConsumeOptions::default()).await.unwrap();
    let a = next(&mut k).await;
    let b = next(&mut k).await;
    c.cancel_keeping_unacked(k.tag()).await.unwrap();
    // Settling them is no unknown-tag error, and makes no room for a third delivery.
    c.ack_durable(a.delivery_tag, false).await.unwrap();
    assert_quiet(&mut k).await;
    let ready = c.get("kq", false).await.unwrap().expect("m2 still ready");
    assert_eq!(body(&ready), "m2");
    assert!(!ready.redelivered, "nothing was requeued by the cancel");
    c.nack_durable(ready.delivery_tag, false, true, 0)
        .await
        .unwrap();
    // `b` is still held: closing the connection returns it, as a redelivery.
    c.close().await.unwrap();
    let c = d.client().await;
    // The server requeues as it cleans up after the close, which may end after CloseOk.
    within("b requeued", async {
        while common::ready(&c, "kq").await < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut seen = Vec::new();
    while let Some(m) = within("a get", c.get("kq", true)).await.unwrap() {
        seen.push((body(&m), m.delivery_count, m.acquired_count));
    }
    // `b` failed (its connection ended with it unacked); `m2` was only nacked.
    assert_eq!(
        seen,
        [
            (body(&b), 1, 1),
            ("m2".to_owned(), 0, 1),
            ("m3".to_owned(), 0, 0)
        ]
    );
}

#[tokio::test]
async fn get_pulls_one_message_at_a_time() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "g").await;
    assert!(c.get("g", false).await.unwrap().is_none());
    publish_n(&c, "g", 2).await;
    let first = c.get("g", false).await.unwrap().expect("message");
    assert_eq!((body(&first), first.message_count), ("m0".into(), Some(1)));
    c.ack_durable(first.delivery_tag, false).await.unwrap();
    let second = c.get("g", true).await.unwrap().expect("message");
    assert_eq!(
        (body(&second), second.message_count),
        ("m1".into(), Some(0))
    );
    assert!(c.get("g", false).await.unwrap().is_none());
}

#[tokio::test]
async fn exclusive_and_auto_delete_queues() {
    let d = TestDaemon::start();
    let owner = d.client().await;
    let other = d.client().await;
    owner
        .declare_queue(
            "mine",
            QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let err = other
        .consume("mine", ConsumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(warren_protocol::ErrorCode::ResourceLocked),
        "{err}"
    );
    owner.close().await.unwrap();
    // The exclusive queue went with its connection.
    let err = other
        .declare_queue(
            "mine",
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(warren_protocol::ErrorCode::NotFound),
        "{err}"
    );

    other
        .declare_queue(
            "temp",
            QueueOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let k = other
        .consume("temp", ConsumeOptions::default())
        .await
        .unwrap();
    other.cancel(k.tag()).await.unwrap();
    let err = other
        .declare_queue(
            "temp",
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(warren_protocol::ErrorCode::NotFound),
        "{err}"
    );
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "gone").await;
    let mut k = c.consume("gone", ConsumeOptions::default()).await.unwrap();
    publish_n(&c, "gone", 3).await;
    let admin = d.client().await;
    // One message is unacked (delivered), so at least two were ready or in flight.
    let _ = next(&mut k).await;
    admin.delete_queue("gone", false, false).await.unwrap();
    let mut ended = false;
    for _ in 0..10 {
        if within("consumer end", k.next()).await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the consumer should end when its queue is deleted");
    assert!(k.cancel_reason().is_some());
}

async fn sac_queue(c: &Client, name: &str) {
    let mut arguments = warren_protocol::FieldTable::new();
    arguments.insert(
        "x-single-active-consumer".into(),
        warren_protocol::FieldValue::Bool(true),
    );
    c.declare_queue(
        name,
        QueueOptions {
            durable: true,
            arguments,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
}

/// `consumer list`'s active flag by consumer tag. (By tag, not by connection id: the
/// server numbers connections as their handshakes finish, not as clients connect.)
fn active_flags(d: &TestDaemon) -> std::collections::BTreeMap<String, bool> {
    let out = d.cli(&["consumer", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    listed
        .iter()
        .map(|c| {
            (
                c["tag"].as_str().expect("tag").to_owned(),
                c["active"].as_bool().expect("active"),
            )
        })
        .collect()
}

fn flags(pairs: &[(&str, bool)]) -> std::collections::BTreeMap<String, bool> {
    pairs.iter().map(|(t, a)| ((*t).to_owned(), *a)).collect()
}

/// Two consumers on a single-active-consumer queue: the first gets everything while the
/// second waits; when the first goes (`leave`), the second gets the first's unacked
/// deliveries, in order, then the rest. `first` connects to `first_addr` (the daemon, or a
/// proxy in front of it that a test can cut).
async fn single_active_consumer_hands_over(
    d: &TestDaemon,
    first_addr: &str,
    first_options: ConsumeOptions,
    leave: impl AsyncFnOnce(&Client, &mut Consumer),
) {
    // With a consumer timeout the handover may come at any time from here: skip the
    // checks of the waiting state (the other variants make them).
    let timing_out = first_options.arguments.contains_key("x-consumer-timeout");
    let first = Client::connect(first_addr).await.expect("connect");
    let second = d.client().await;
    sac_queue(&first, "sac").await;
    first.qos(3).await.unwrap();
    second.qos(10).await.unwrap();
    let mut k1 = first.consume("sac", first_options).await.unwrap();
    let mut k2 = second
        .consume("sac", ConsumeOptions::default())
        .await
        .unwrap();
    publish_n(&second, "sac", 6).await;
    let mut held = Vec::new();
    for want in ["m0", "m1", "m2"] {
        let m = next(&mut k1).await;
        assert_eq!(body(&m), want);
        held.push(m);
    }
    // The first acks m0 and takes m3; it holds m1..m3 now, at its prefetch of 3. (With a
    // consumer timeout it acks nothing: the timeout may strike at any moment.)
    let mut want: Vec<(String, bool, u32)> = (0..6)
        .map(|i| (format!("m{i}"), i < 3, u32::from(i < 3)))
        .collect();
    if !timing_out {
        first.ack(held[0].delivery_tag, false).await.unwrap();
        assert_eq!(body(&next(&mut k1).await), "m3");
        assert_quiet(&mut k2).await;
        assert_eq!(
            active_flags(d),
            flags(&[(k1.tag(), true), (k2.tag(), false)]),
            "consumer list shows which one is active"
        );
        want.remove(0);
        want[2] = ("m3".to_owned(), true, 1);
    }
    leave(&first, &mut k1).await;
    let mut got = Vec::new();
    while got.len() < want.len() {
        let m = next(&mut k2).await;
        got.push((body(&m), m.redelivered, m.acquired_count));
        second.ack(m.delivery_tag, false).await.unwrap();
    }
    assert_eq!(
        got, want,
        "the first's unacked first (acquired once before), in order, then the rest"
    );
    assert_quiet(&mut k2).await;
    assert_eq!(active_flags(d), flags(&[(k2.tag(), true)]));
}

#[tokio::test]
async fn single_active_consumer_hands_over_on_cancel() {
    let d = TestDaemon::start();
    let opts = ConsumeOptions::default();
    single_active_consumer_hands_over(&d, d.addr(), opts, async |c, k| {
        c.cancel(k.tag()).await.expect("cancel");
    })
    .await;
}

#[tokio::test]
async fn single_active_consumer_hands_over_on_connection_close() {
    let d = TestDaemon::start();
    let opts = ConsumeOptions::default();
    single_active_consumer_hands_over(&d, d.addr(), opts, async |c, _| {
        c.close().await.expect("close");
    })
    .await;
}

/// The first consumer's TCP connection drops (no `Close` frame): the server notices the
/// end of the stream and hands over as on a clean close.
#[tokio::test]
async fn single_active_consumer_hands_over_when_the_connection_drops() {
    let d = TestDaemon::start();
    let proxy = Proxy::start(d.addr()).await;
    let opts = ConsumeOptions::default();
    single_active_consumer_hands_over(&d, proxy.addr(), opts, async |_, k| {
        proxy.cut();
        assert!(
            within("the first consumer's end", k.next()).await.is_none(),
            "the dropped connection's consumer should end"
        );
    })
    .await;
}

/// The first consumer holds its deliveries past its own consumer timeout: the server
/// cancels it, and the second gets what it held first.
#[tokio::test]
async fn single_active_consumer_hands_over_on_consumer_timeout() {
    let d = TestDaemon::start();
    let opts = ConsumeOptions::default().consumer_timeout(Duration::from_millis(300));
    single_active_consumer_hands_over(&d, d.addr(), opts, async |_, k| {
        assert!(
            within("the consumer timeout", k.next()).await.is_none(),
            "the first consumer should be cancelled"
        );
        let why = format!("{:?}", k.cancel_reason());
        assert!(why.contains("consumer timeout"), "{why}");
    })
    .await;
}

/// A consumer timeout on the queue (`x-consumer-timeout`) while a publisher keeps
/// publishing: the requeued deliveries still reach the second consumer before anything
/// published during the handover, and the rest follows in publish order.
#[tokio::test]
async fn single_active_consumer_handover_on_queue_timeout_keeps_order_under_publishing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use warren_protocol::{FieldTable, FieldValue};

    let d = TestDaemon::start();
    let first = d.client().await;
    let second = d.client().await;
    let mut arguments = FieldTable::new();
    arguments.insert("x-single-active-consumer".into(), FieldValue::Bool(true));
    arguments.insert("x-consumer-timeout".into(), FieldValue::Int(400));
    first
        .declare_queue(
            "sac",
            QueueOptions {
                durable: true,
                arguments,
                ..Default::default()
            },
        )
        .await
        .expect("declare");
    first.qos(3).await.unwrap();
    second.qos(0).await.unwrap();
    let mut k1 = first
        .consume("sac", ConsumeOptions::default())
        .await
        .unwrap();
    let mut k2 = second
        .consume("sac", ConsumeOptions::default())
        .await
        .unwrap();
    publish_n(&second, "sac", 5).await;
    for want in ["m0", "m1", "m2"] {
        assert_eq!(body(&next(&mut k1).await), want);
    }
    // Publish p0, p1, ... one confirm at a time until the second consumer's first delivery,
    // so publishes land before, during and after the handover.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let c = d.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) && n < 100_000 {
                let m = OutgoingMessage::new("", "sac", format!("p{n}")).persistent();
                let confirm = c.publish(m).await.expect("publish");
                assert!(confirm.await.expect("confirm").is_confirmed());
                n += 1;
            }
            n
        })
    };
    let mut got = Vec::new();
    let m = next(&mut k2).await;
    stop.store(true, Ordering::Release);
    got.push((body(&m), m.acquired_count));
    second.ack(m.delivery_tag, false).await.unwrap();
    let published = within("the publisher", publisher).await.expect("publisher");
    assert!(
        within("the first consumer's cancel", k1.next())
            .await
            .is_none(),
        "the first consumer should have been cancelled"
    );
    let why = format!("{:?}", k1.cancel_reason());
    assert!(why.contains("consumer timeout"), "{why}");
    while got.len() < 5 + published {
        let m = next(&mut k2).await;
        got.push((body(&m), m.acquired_count));
        second.ack(m.delivery_tag, false).await.unwrap();
    }
    let mut want: Vec<(String, u32)> = vec![
        ("m0".into(), 1),
        ("m1".into(), 1),
        ("m2".into(), 1),
        ("m3".into(), 0),
        ("m4".into(), 0),
    ];
    want.extend((0..published).map(|i| (format!("p{i}"), 0)));
    assert_eq!(got, want, "{published} published during the handover");
    assert_quiet(&mut k2).await;
}

/// A TCP proxy on 127.0.0.1 for one connection, which a test can cut: both sockets close
/// without a `Close` frame, as when a client's machine or network goes away.
struct Proxy {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            let Ok((mut down, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        });
        Proxy { addr, task }
    }

    fn addr(&self) -> &str {
        &self.addr
    }

    /// Drops both sockets.
    fn cut(&self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_consumers_own_timeout_overrides_the_queues_and_the_servers() {
    // Both the server's default and the queue's timeout are ten minutes; the consumer's own
    // 300 ms is what cancels it.
    let d = TestDaemon::start_with(&["--consumer-timeout-ms", "600000"]);
    let c = d.client().await;
    let mut arguments = warren_protocol::FieldTable::new();
    arguments.insert(
        "x-consumer-timeout".into(),
        warren_protocol::FieldValue::Int(600_000),
    );
    c.declare_queue(
        "slow",
        QueueOptions {
            arguments,
            ..Default::default()
        },
    )
    .await
    .expect("declare");
    publish_n(&c, "slow", 1).await;
    let holder = d.client().await;
    let mut k = holder
        .consume(
            "slow",
            ConsumeOptions::default().consumer_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let m = next(&mut k).await;
    assert_eq!(body(&m), "m0");
    assert!(
        within("the cancel", k.next()).await.is_none(),
        "the consumer should be cancelled"
    );
    let why = format!("{:?}", k.cancel_reason());
    assert!(why.contains("consumer timeout"), "{why}");
    // The message was requeued: a return, not a failure (RabbitMQ 4.3).
    let mut again = c.consume("slow", ConsumeOptions::default()).await.unwrap();
    let m = next(&mut again).await;
    assert_eq!(
        (body(&m), m.delivery_count, m.acquired_count),
        ("m0".to_owned(), 0, 1)
    );
}

#[tokio::test]
async fn an_invalid_consumer_timeout_refuses_the_consume() {
    use warren_protocol::{ErrorCode, FieldValue};
    let d = TestDaemon::start();
    let c = d.client().await;
    durable_queue(&c, "work").await;
    for (value, says) in [
        (FieldValue::Int(0), "must be at least 1 ms, got 0"),
        (FieldValue::Int(-5), "-5"),
        (FieldValue::String("300".into()), "the string \"300\""),
    ] {
        let mut options = ConsumeOptions::default();
        options
            .arguments
            .insert("x-consumer-timeout".into(), value.clone());
        let err = match c.consume("work", options).await {
            Ok(_) => panic!("{value:?} accepted"),
            Err(e) => e,
        };
        assert_eq!(
            err.error_code(),
            Some(ErrorCode::PreconditionFailed),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "PRECONDITION_FAILED (406): invalid arg 'x-consumer-timeout' for consumer: "
            ) && text.contains(says),
            "{text}"
        );
    }
    // The connection is still usable, and no consumer was left behind.
    let mut k = c
        .consume(
            "work",
            ConsumeOptions::default().consumer_timeout(Duration::from_secs(60)),
        )
        .await
        .expect("a valid timeout");
    publish_n(&c, "work", 1).await;
    assert_eq!(body(&next(&mut k).await), "m0");
}
