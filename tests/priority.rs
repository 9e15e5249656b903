//! Priority queues (`x-max-priority`) against the real daemon: higher priorities are
//! delivered first and FIFO within a priority, a requeue goes back to the head of its
//! priority, a priority above the max counts as the max, the order survives `kill -9`, bad
//! maxima are refused, a different max is an inequivalent redeclaration, and plain queues
//! ignore priorities.

mod common;

use common::{durable_queue, ok, within, TestDaemon};
use warren::client::{Client, OutgoingMessage, QueueOptions};
use warren_protocol::{ErrorCode, FieldTable, FieldValue};

fn max_priority(max: FieldValue) -> FieldTable {
    [("x-max-priority".to_owned(), max)].into_iter().collect()
}

fn with_priority(queue: &str, body: &str, priority: Option<u8>) -> OutgoingMessage {
    let mut m = OutgoingMessage::new("", queue, body.to_owned());
    m.properties.priority = priority;
    m
}

/// Publishes `(body, priority)` pairs in order, persistent if asked, and waits for every
/// confirm.
async fn publish_all(c: &Client, queue: &str, messages: &[(&str, Option<u8>)], persistent: bool) {
    let mut pending = Vec::new();
    for (body, priority) in messages {
        let mut m = with_priority(queue, body, *priority);
        m.properties.persistent = persistent;
        pending.push(c.publish(m).await.expect("publish"));
    }
    for p in pending {
        let outcome = within("a confirm", p).await.expect("confirm");
        assert!(outcome.is_confirmed(), "{outcome:?}");
    }
}

/// Takes every ready message (no-ack), in delivery order.
async fn drain(c: &Client, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match c.get(queue, true).await.expect("get") {
            Some(d) => out.push(String::from_utf8(d.body.to_vec()).expect("utf8")),
            None => return out,
        }
    }
    panic!("queue {queue} did not drain");
}

/// A mix where arrival order and priority order differ, and its priority order (`None` is 0).
const MIXED: [(&str, Option<u8>); 9] = [
    ("a0", None),
    ("b5", Some(5)),
    ("c1", Some(1)),
    ("d5", Some(5)),
    ("e9", Some(9)),
    ("f0", Some(0)),
    ("g1", Some(1)),
    ("h9", Some(9)),
    ("i3", Some(3)),
];
const MIXED_ORDER: [&str; 9] = ["e9", "h9", "b5", "d5", "i3", "c1", "g1", "a0", "f0"];

#[tokio::test]
async fn higher_priorities_come_first_fifo_within_each_and_a_requeue_returns_to_the_head_of_its_own(
) {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue(
        "jobs",
        QueueOptions {
            arguments: max_priority(FieldValue::Int(10)),
            ..Default::default()
        },
    )
    .await
    .expect("declaring a priority queue");
    publish_all(&c, "jobs", &MIXED, false).await;
    // Take the first two (both priority 9) and the third (5), then requeue them.
    let mut held = Vec::new();
    for _ in 0..3 {
        let m = c.get("jobs", false).await.expect("get").expect("a message");
        held.push(m);
    }
    let bodies: Vec<&[u8]> = held.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"e9"[..], b"h9", b"b5"]);
    // Requeued in reverse: each goes back to the head of its priority, in arrival order.
    for m in held.iter().rev() {
        c.nack(m.delivery_tag, false, true, 0).await.expect("nack");
    }
    assert_eq!(drain(&c, "jobs").await, MIXED_ORDER);
}

#[tokio::test]
async fn a_priority_above_the_max_counts_as_the_max() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue(
        "jobs",
        QueueOptions {
            arguments: max_priority(FieldValue::Int(3)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    publish_all(
        &c,
        "jobs",
        &[
            ("low", Some(2)),
            ("max-1", Some(3)),
            ("over", Some(200)),
            ("max-2", Some(3)),
            ("top", Some(255)),
        ],
        false,
    )
    .await;
    // 200 and 255 are 3: FIFO with the other 3s, not ahead of them.
    assert_eq!(
        drain(&c, "jobs").await,
        ["max-1", "over", "max-2", "top", "low"]
    );
}

#[tokio::test]
async fn the_priority_order_survives_kill_9() {
    // A window of a few bodies, so after the restart the queue pages them back in by
    // priority, not by arrival.
    let mut d = TestDaemon::start_with(&["--queue-window-bytes", "4"]);
    let c = d.client().await;
    durable_queue(&c, "jobs", max_priority(FieldValue::Int(10))).await;
    publish_all(&c, "jobs", &MIXED, true).await;
    // A transient one does not survive; it must not disturb the order either.
    publish_all(&c, "jobs", &[("transient", Some(10))], false).await;
    drop(c);
    d.kill9();
    d.restart();
    let c = d.client().await;
    assert_eq!(drain(&c, "jobs").await, MIXED_ORDER);
    // New publishes after the restart take their place among the recovered ones.
    publish_all(&c, "jobs", &[("x0", None), ("y7", Some(7))], true).await;
    assert_eq!(drain(&c, "jobs").await, ["y7", "x0"]);
}

#[test]
fn invalid_maxima_are_refused_by_name() {
    let d = TestDaemon::start();
    for (value, got) in [
        ("x-max-priority=0", "got 0"),
        ("x-max-priority=256", "got 256"),
        ("x-max-priority=-1", "got -1"),
    ] {
        let out = d.cli(&["queue", "declare", "jobs", "--arg", value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value} accepted");
        assert_eq!(
            stderr.trim(),
            format!(
                "error: declaring queue 'jobs': PRECONDITION_FAILED (406): invalid arg \
                 'x-max-priority' for queue 'jobs': must be between 1 and 255, {got}"
            )
        );
    }
    let out = d.cli(&[
        "queue",
        "declare",
        "jobs",
        "--arg",
        "x-max-priority:string=10",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: declaring queue 'jobs': PRECONDITION_FAILED (406): invalid arg \
         'x-max-priority' for queue 'jobs': expected an integer number of priority levels, \
         got the string \"10\""
    );
    // None of that created the queue: a plain declare now succeeds.
    ok(&d.cli(&["queue", "declare", "jobs"]));
}

#[tokio::test]
async fn invalid_maxima_are_refused_over_the_client_too() {
    let d = TestDaemon::start();
    let c = d.client().await;
    for value in [
        FieldValue::Int(0),
        FieldValue::Int(256),
        FieldValue::Int(-1),
        FieldValue::String("10".into()),
        FieldValue::Float(2.5),
    ] {
        let err = c
            .declare_queue(
                "jobs",
                QueueOptions {
                    arguments: max_priority(value.clone()),
                    ..Default::default()
                },
            )
            .await
            .expect_err("refused");
        assert_eq!(
            err.error_code(),
            Some(ErrorCode::PreconditionFailed),
            "{value:?}: {err}"
        );
        assert!(
            err.to_string()
                .contains("invalid arg 'x-max-priority' for queue 'jobs'"),
            "{err}"
        );
    }
}

#[test]
fn a_redeclaration_with_another_max_is_inequivalent() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs", "--arg", "x-max-priority=10"]));
    // The same again is fine.
    ok(&d.cli(&["queue", "declare", "jobs", "--arg", "x-max-priority=10"]));
    for (args, received) in [(vec!["--arg", "x-max-priority=5"], "5"), (vec![], "none")] {
        let mut cmd = vec!["queue", "declare", "jobs"];
        cmd.extend(args);
        let out = d.cli(&cmd);
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!(
                "error: declaring queue 'jobs': PRECONDITION_FAILED (406): inequivalent arg \
                 'x-max-priority' for queue 'jobs': received {received}, current 10"
            )
        );
    }
}

#[tokio::test]
async fn a_plain_queue_ignores_priorities() {
    let d = TestDaemon::start();
    let c = d.client().await;
    c.declare_queue("plain", QueueOptions::default())
        .await
        .unwrap();
    publish_all(&c, "plain", &MIXED, false).await;
    let fifo: Vec<&str> = MIXED.iter().map(|(b, _)| *b).collect();
    assert_eq!(drain(&c, "plain").await, fifo);
}

#[test]
fn the_cli_publishes_with_a_priority_and_get_takes_the_highest() {
    // The worked example in docs/queues.md.
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "jobs",
        "--durable",
        "--arg",
        "x-max-priority:int=10",
    ]));
    ok(&d.cli(&["publish", "", "jobs", "routine report", "--persistent"]));
    ok(&d.cli(&[
        "publish",
        "",
        "jobs",
        "page the on-call",
        "--persistent",
        "--priority",
        "9",
    ]));
    ok(&d.cli(&[
        "publish",
        "",
        "jobs",
        "resize images",
        "--persistent",
        "--priority",
        "5",
    ]));
    let list = ok(&d.cli(&["queue", "list"]));
    assert!(list.contains("max-priority=10"), "{list}");
    let out = ok(&d.cli(&["get", "jobs", "--count", "3"]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "[jobs] page the on-call",
            "[jobs] resize images",
            "[jobs] routine report"
        ]
    );
    // The priority is one byte.
    let out = d.cli(&["publish", "", "jobs", "x", "--priority", "256"]);
    assert!(!out.status.success());
}
