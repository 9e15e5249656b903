//! `warren consume`, `warren get` and `warren queue peek` against the real daemon: what they
//! take, what they leave, and what they settle, seen from the queue afterwards.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, TestDaemon};
use serde_json::Value;

/// The ready messages of `queue`, head first, as `queue peek --json` reports them.
fn peek(d: &TestDaemon, queue: &str) -> Vec<Value> {
    let out = ok(&d.cli(&["queue", "peek", queue, "--json", "--limit", "1000"]));
    match serde_json::from_str(&out).expect("peek JSON") {
        Value::Array(items) => items,
        other => panic!("peek returned {other}"),
    }
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["body"].as_str().expect("a text body").to_owned())
        .collect()
}

fn acquired_counts(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["acquired_count"].as_u64().expect("acquired_count"))
        .collect()
}

fn delivery_counts(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["delivery_count"].as_u64().expect("delivery_count"))
        .collect()
}

fn publish_lines(d: &TestDaemon, queue: &str, lines: &[&str]) {
    let input = lines.join("\n") + "\n";
    ok(&d.cli_with_stdin(&["publish", "", queue, "--lines"], Some(&input)));
}

/// A queue `work` with `x-delivery-limit` 2 that dead-letters into `dlq`.
fn limited_work_queue(d: &TestDaemon) {
    ok(&d.cli(&["exchange", "declare", "dlx", "--type", "fanout"]));
    ok(&d.cli(&["queue", "declare", "dlq"]));
    ok(&d.cli(&["bind", "dlq", "dlx"]));
    ok(&d.cli(&[
        "queue",
        "declare",
        "work",
        "--arg",
        "x-dead-letter-exchange=dlx",
        "--arg",
        "x-delivery-limit=2",
    ]));
}

/// Regression: `consume --count 1` took up to its prefetch (100) and returned the unprinted
/// ones, each return counting as a failed delivery: four runs on a six-message queue with
/// a delivery limit of 2 sent three messages nobody saw to the dead-letter queue.
#[test]
fn consume_count_takes_exactly_n_and_touches_nothing_else() {
    let d = TestDaemon::start();
    limited_work_queue(&d);
    publish_lines(&d, "work", &["m1", "m2", "m3", "m4", "m5", "m6"]);
    for (i, extra) in [&[][..], &["--prefetch", "1"], &["--no-ack"], &[]]
        .iter()
        .enumerate()
    {
        let mut args = vec!["consume", "work", "--count", "1"];
        args.extend_from_slice(extra);
        let out = ok(&d.cli(&args));
        assert_eq!(out, format!("[work] m{}\n", i + 1), "consume {extra:?}");
    }
    let left = peek(&d, "work");
    assert_eq!(bodies(&left), ["m5", "m6"]);
    assert_eq!(
        delivery_counts(&left),
        [0, 0],
        "no failed delivery counted for what was never printed"
    );
    assert!(peek(&d, "dlq").is_empty(), "nothing dead-lettered");

    // A count larger than the prefetch: the held-back settles still stop at N.
    publish_lines(&d, "work", &["m7", "m8", "m9", "m10"]);
    let out = ok(&d.cli(&["consume", "work", "--count", "5", "--prefetch", "2"]));
    assert_eq!(
        out,
        "[work] m5\n[work] m6\n[work] m7\n[work] m8\n[work] m9\n"
    );
    let left = peek(&d, "work");
    assert_eq!(bodies(&left), ["m10"]);
    assert_eq!(delivery_counts(&left), [0]);
}

/// `consume --count N --reject` moves exactly N to the dead-letter queue, and they are
/// there when the command returns (its last settle waits for the dead-letter copies).
#[test]
fn consume_reject_has_dead_lettered_by_the_time_it_exits() {
    let d = TestDaemon::start();
    limited_work_queue(&d);
    publish_lines(&d, "work", &["a", "b", "c"]);
    ok(&d.cli(&["consume", "work", "--count", "2", "--reject"]));
    assert_eq!(bodies(&peek(&d, "dlq")), ["a", "b"]);
    let left = peek(&d, "work");
    assert_eq!(bodies(&left), ["c"]);
    assert_eq!(delivery_counts(&left), [0]);
}

/// Regression: `warren consume q | head -1` kept running after head exited, until a
/// message arrived to fail writing. It now notices at once, settles what it wrote, and
/// leaves the rest in the queue.
#[test]
fn consume_exits_when_its_reader_goes_away() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    publish_lines(&d, "jobs", &["first"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["consume", "jobs"])
        .env("WARREN_SERVER", d.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning consume");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("reading a line");
    assert_eq!(line, "[jobs] first\n");
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("consume kept running after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // What it printed was acknowledged; a later message is still there for someone else.
    publish_lines(&d, "jobs", &["second"]);
    let left = peek(&d, "jobs");
    assert_eq!(bodies(&left), ["second"]);
    assert_eq!(delivery_counts(&left), [0]);
}

#[test]
fn consume_idle_timeout_exits_successfully_after_silence() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    publish_lines(&d, "jobs", &["only"]);
    let out = ok(&d.cli(&["consume", "jobs", "--idle-timeout", "0.3"]));
    assert_eq!(out, "[jobs] only\n");
    assert!(peek(&d, "jobs").is_empty());
}

/// Regression: plain `consume` output wrote bodies raw; a newline made one message two lines.
#[test]
fn consume_prints_one_line_per_message() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    ok(&d.cli(&["publish", "", "jobs", "two\nlines\u{1b}[2J"]));
    let out = ok(&d.cli(&["consume", "jobs", "--count", "1"]));
    assert_eq!(out, "[jobs] two\\nlines\\u{1b}[2J\n");
}

#[test]
fn get_takes_at_once_and_says_when_the_queue_is_empty() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    let empty = d.cli(&["get", "jobs"]);
    assert_eq!(
        empty.status.code(),
        Some(3),
        "exit status 3 for an empty queue"
    );
    assert!(empty.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&empty.stderr),
        "queue 'jobs' has no ready message\n"
    );
    let quiet = d.cli(&["get", "jobs", "--quiet"]);
    assert_eq!(quiet.status.code(), Some(3));
    assert!(quiet.stderr.is_empty());

    publish_lines(&d, "jobs", &["a", "b", "c"]);
    // --requeue puts them back at the head, in order, as redeliveries: a nack, so acquired
    // but not failed.
    let out = ok(&d.cli(&["get", "jobs", "--count", "2", "--requeue"]));
    assert_eq!(out, "[jobs] a\n[jobs] b\n");
    let left = peek(&d, "jobs");
    assert_eq!(bodies(&left), ["a", "b", "c"]);
    assert_eq!(delivery_counts(&left), [0, 0, 0]);
    assert_eq!(acquired_counts(&left), [1, 1, 0]);
    // Without it they are taken; asking for more than there is takes what there is.
    let out = ok(&d.cli(&["get", "jobs", "--count", "10"]));
    assert_eq!(
        out,
        "[jobs] a (redelivered, x-delivery-count=0, x-acquired-count=1)\n\
         [jobs] b (redelivered, x-delivery-count=0, x-acquired-count=1)\n[jobs] c\n"
    );
    assert!(peek(&d, "jobs").is_empty());
}

#[test]
fn get_json_prints_one_object_per_message() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    publish_lines(&d, "jobs", &["x"]);
    let out = ok(&d.cli(&["get", "jobs", "--json"]));
    let m: Value = serde_json::from_str(out.trim_end()).expect("JSON line");
    assert_eq!(m["body"], "x");
    assert_eq!(m["routing_key"], "jobs");
}

#[test]
fn queue_peek_changes_nothing() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    publish_lines(&d, "jobs", &["one", "two", "three"]);
    let table = ok(&d.cli(&["queue", "peek", "jobs", "--limit", "2"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "a header and two rows:\n{table}");
    assert!(rows[0].starts_with("POS"), "{table}");
    assert!(
        rows[1].ends_with("one") && rows[2].ends_with("two"),
        "{table}"
    );
    for _ in 0..2 {
        let left = peek(&d, "jobs");
        assert_eq!(bodies(&left), ["one", "two", "three"]);
        assert_eq!(delivery_counts(&left), [0, 0, 0]);
    }
    let out = ok(&d.cli(&["consume", "jobs", "--count", "1"]));
    assert_eq!(out, "[jobs] one\n", "not marked redelivered by the peeks");
}
