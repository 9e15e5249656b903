//! The operator commands (`warren status`, the `list` verbs, `queue inspect`, `dlq`,
//! `message delete`, `definitions`) against the real daemon: topology is declared and
//! messages are dead-lettered through the client library, and every check goes through the
//! real `warren` binary as a child process.
//!
//! Listings are compared through `--json`, which prints the server's JSON as-is; the human
//! tables are only checked for the names they must show.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{args, durable_queue, ok, ready, wait_ready, within, TestDaemon};
use serde_json::{json, Value};
use warren::client::{
    Client, ConsumeOptions, Delivery, ExchangeKind, ExchangeOptions, FieldTable, FieldValue,
    OutgoingMessage, QueueOptions,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts the command failed with exactly one `error: ...` line on stderr and exit code 1
/// (not clap's 2), and nothing on stdout; returns that line.
fn fails_with_one_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.is_empty(), "unexpected stdout: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    lines[0].to_owned()
}

/// Runs `warren args... --json` and parses its stdout.
fn cli_json(d: &TestDaemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = ok(&d.cli(&all));
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("warren {all:?} printed no JSON ({e}): {stdout}"))
}

/// The element of a JSON array whose `field` is `value`.
fn find<'a>(list: &'a Value, field: &str, value: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|v| v[field] == value)
        .unwrap_or_else(|| panic!("no {field}={value:?} in {list:#}"))
}

fn s(v: &str) -> FieldValue {
    FieldValue::String(v.to_owned())
}

async fn exchange(c: &Client, name: &str, kind: ExchangeKind, arguments: FieldTable) {
    c.declare_exchange(
        name,
        kind,
        ExchangeOptions {
            durable: true,
            arguments,
            ..ExchangeOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring exchange {name}: {e}"));
}

/// Publishes a persistent message with a message id and waits for its confirm.
async fn publish(c: &Client, exchange: &str, key: &str, id: &str, body: &str) {
    let outcome = c
        .publish_and_confirm(
            OutgoingMessage::new(exchange, key, body.to_owned())
                .persistent()
                .message_id(id),
        )
        .await
        .unwrap_or_else(|e| panic!("publishing {id}: {e}"));
    assert!(outcome.is_confirmed(), "{id}: {outcome:?}");
}

/// Takes every ready message of `queue` (acknowledged), in order.
async fn drain(c: &Client, queue: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = c.get(queue, true).await.expect("get") {
        out.push(d);
    }
    out
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.body.to_vec()).expect("UTF-8 body")
}

fn message_id(d: &Delivery) -> &str {
    d.properties.message_id.as_deref().expect("a message id")
}

/// The `message_id`s of a `dlq peek --json` answer, in order.
fn peek_ids(peek: &Value) -> Vec<String> {
    peek.as_array()
        .expect("a JSON array")
        .iter()
        .map(|m| m["message_id"].as_str().expect("message_id").to_owned())
        .collect()
}

/// The dead-letter layout used below: fanout `dlx` feeding `dlq`; `work` dead-letters to
/// `dlx` (messages die there by rejection) and `slow` too, with a 50 ms TTL (messages die
/// there by expiry). All durable.
async fn dead_letter_setup(c: &Client) {
    exchange(c, "dlx", ExchangeKind::Fanout, FieldTable::new()).await;
    durable_queue(c, "dlq", FieldTable::new()).await;
    c.bind("dlq", "dlx", "", FieldTable::new()).await.unwrap();
    durable_queue(c, "work", args(&[("x-dead-letter-exchange", s("dlx"))])).await;
    durable_queue(
        c,
        "slow",
        args(&[
            ("x-dead-letter-exchange", s("dlx")),
            ("x-message-ttl", FieldValue::Int(50)),
        ]),
    )
    .await;
}

/// Publishes `id` to `work`, takes it and rejects it; waits until it is in `dlq`.
async fn reject_from_work(c: &Client, id: &str) {
    let before = ready(c, "dlq").await;
    publish(c, "", "work", id, &format!("body of {id}")).await;
    let d = within("a message in work", async {
        loop {
            if let Some(d) = c.get("work", false).await.unwrap() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(message_id(&d), id);
    c.reject_durable(d.delivery_tag, false).await.unwrap();
    wait_ready(c, "dlq", before + 1).await;
}

/// Publishes `id` to `slow` and waits until it has expired into `dlq`.
async fn expire_from_slow(c: &Client, id: &str) {
    let before = ready(c, "dlq").await;
    publish(c, "", "slow", id, &format!("body of {id}")).await;
    wait_ready(c, "dlq", before + 1).await;
}

/// `dlq` holding, in this order: r1 (rejected in work), e1 (expired in slow), r2, e2, r3.
async fn mixed_dead_letters(c: &Client) {
    dead_letter_setup(c).await;
    reject_from_work(c, "r1").await;
    expire_from_slow(c, "e1").await;
    reject_from_work(c, "r2").await;
    expire_from_slow(c, "e2").await;
    reject_from_work(c, "r3").await;
}

// ---------------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_agree_with_what_was_declared() {
    let d = TestDaemon::start();
    let publisher = d.client().await;
    exchange(&publisher, "logs", ExchangeKind::Topic, FieldTable::new()).await;
    exchange(
        &publisher,
        "by-header",
        ExchangeKind::Headers,
        args(&[("alternate-exchange", s("logs"))]),
    )
    .await;
    exchange(&publisher, "dlx", ExchangeKind::Fanout, FieldTable::new()).await;
    let work_args = args(&[
        ("x-dead-letter-exchange", s("dlx")),
        ("x-message-ttl", FieldValue::Int(60_000)),
        ("x-max-length", FieldValue::Int(100)),
        ("x-overflow", s("reject-publish")),
        ("x-delivery-limit", FieldValue::Int(5)),
    ]);
    durable_queue(&publisher, "work", work_args).await;
    durable_queue(&publisher, "errors", FieldTable::new()).await;
    durable_queue(&publisher, "matched", FieldTable::new()).await;
    publisher
        .bind("work", "logs", "app.#", FieldTable::new())
        .await
        .unwrap();
    publisher
        .bind("errors", "logs", "*.error", FieldTable::new())
        .await
        .unwrap();
    publisher
        .bind(
            "matched",
            "by-header",
            "",
            args(&[("x-match", s("all")), ("kind", s("audit"))]),
        )
        .await
        .unwrap();
    for i in 0..3 {
        publish(&publisher, "logs", "app.web", &format!("m{i}"), "x").await;
    }

    // A second connection: an exclusive queue, and a consumer with prefetch 7 on `errors`.
    let subscriber = d.client().await;
    let temp = subscriber
        .declare_queue(
            "",
            QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .name;
    subscriber.qos(7).await.unwrap();
    let consumer = subscriber
        .consume("errors", ConsumeOptions::default())
        .await
        .unwrap();

    // queue list / inspect
    let queues = cli_json(&d, &["queue", "list"]);
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    let mut expected = vec!["errors", "matched", "work", temp.as_str()];
    expected.sort_unstable();
    assert_eq!(names, expected, "sorted by name");
    let work = find(&queues, "name", "work");
    assert_eq!(work["durable"], true);
    assert_eq!(work["exclusive"], false);
    assert_eq!(work["auto_delete"], false);
    assert_eq!(
        work["arguments"],
        json!({
            "x-dead-letter-exchange": "dlx",
            "x-message-ttl": 60000,
            "x-max-length": 100,
            "x-overflow": "reject-publish",
            "x-delivery-limit": 5,
        })
    );
    assert_eq!(work["dead_letter_exchange"], "dlx");
    assert_eq!(work["dead_letter_routing_key"], Value::Null);
    assert_eq!(work["message_ttl_ms"], 60000);
    assert_eq!(work["max_length"], 100);
    assert_eq!(work["overflow"], "reject-publish");
    assert_eq!(work["delivery_limit"], 5);
    assert_eq!(work["messages_ready"], 3);
    assert_eq!(work["messages_unacked"], 0);
    assert_eq!(work["message_bytes"], 3);
    assert_eq!(work["consumers"], 0);
    assert_eq!(find(&queues, "name", "errors")["consumers"], 1);
    let temp_json = find(&queues, "name", &temp);
    assert_eq!(temp_json["exclusive"], true);
    assert_eq!(temp_json["durable"], false);

    let inspected = cli_json(&d, &["queue", "inspect", "work"]);
    for field in [
        "name",
        "arguments",
        "overflow",
        "messages_ready",
        "delivery_limit",
    ] {
        assert_eq!(inspected[field], work[field], "{field}");
    }

    // exchange list: the default exchange, the built-in ones and ours.
    let exchanges = cli_json(&d, &["exchange", "list"]);
    assert_eq!(
        *find(&exchanges, "name", ""),
        json!({"name": "", "type": "direct", "durable": true, "auto_delete": false,
               "internal": false, "builtin": true, "arguments": {}})
    );
    assert_eq!(
        *find(&exchanges, "name", "logs"),
        json!({"name": "logs", "type": "topic", "durable": true, "auto_delete": false,
               "internal": false, "builtin": false, "arguments": {}})
    );
    assert_eq!(
        find(&exchanges, "name", "by-header")["arguments"],
        json!({"alternate-exchange": "logs"})
    );
    assert_eq!(find(&exchanges, "name", "amq.topic")["builtin"], true);

    // binding list, by queue and by exchange
    assert_eq!(
        cli_json(&d, &["binding", "list", "--queue", "work"]),
        json!([{"source": "logs", "destination": "work", "destination_type": "queue",
                "routing_key": "app.#", "arguments": {}}])
    );
    assert_eq!(
        cli_json(&d, &["binding", "list", "--exchange", "logs"]),
        json!([
            {"source": "logs", "destination": "errors", "destination_type": "queue",
             "routing_key": "*.error", "arguments": {}},
            {"source": "logs", "destination": "work", "destination_type": "queue",
             "routing_key": "app.#", "arguments": {}},
        ])
    );
    assert_eq!(
        cli_json(&d, &["binding", "list", "--queue", "matched"])[0]["arguments"],
        json!({"x-match": "all", "kind": "audit"})
    );
    assert_eq!(
        cli_json(&d, &["binding", "list"]).as_array().unwrap().len(),
        3
    );

    // connection list: both clients (and the CLI's own connection).
    let connections = cli_json(&d, &["connection", "list"]);
    let connections = connections.as_array().unwrap();
    assert!(connections.len() >= 3, "{connections:#?}");
    let publishing: Vec<&Value> = connections.iter().filter(|c| c["published"] == 3).collect();
    assert_eq!(publishing.len(), 1, "{connections:#?}");
    assert_eq!(publishing[0]["consumers"], 0);
    let consuming: Vec<&Value> = connections.iter().filter(|c| c["consumers"] == 1).collect();
    assert_eq!(consuming.len(), 1, "{connections:#?}");
    assert_eq!(consuming[0]["published"], 0);
    for c in connections {
        assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
        assert!(c["connected_at_ms"].as_u64().unwrap() > 0, "{c}");
    }

    // consumer list: ours, with its prefetch, on its connection.
    let consumers = cli_json(&d, &["consumer", "list"]);
    assert_eq!(consumers.as_array().unwrap().len(), 1, "{consumers:#}");
    let listed = &consumers[0];
    assert_eq!(listed["tag"], consumer.tag());
    assert_eq!(listed["queue"], "errors");
    assert_eq!(listed["prefetch"], 7);
    assert_eq!(listed["no_ack"], false);
    assert_eq!(listed["exclusive"], false);
    assert_eq!(listed["connection"], consuming[0]["id"]);

    // status totals
    let status = cli_json(&d, &["status"]);
    assert_eq!(status["queues"], 4);
    assert_eq!(status["messages_ready"], 3);
    assert_eq!(status["messages_unacked"], 0);
    assert_eq!(status["consumers"], 1);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["data_dir"], d.data_dir().display().to_string());
    assert_eq!(
        status["listeners"],
        json!([
            format!("warren://{}", d.addr()),
            format!("amqp://{}", d.amqp_addr().expect("the AMQP listener is on")),
        ])
    );
    assert!(status["store_bytes"].as_u64().unwrap() > 0);
    assert_eq!(status["totals"]["published"], 3);

    // The human forms show the names.
    let table = ok(&d.cli(&["queue", "list"]));
    assert!(table.starts_with("NAME "), "{table}");
    for name in ["errors", "matched", "work", temp.as_str()] {
        assert!(table.contains(name), "{name} missing from\n{table}");
    }
    let work_row = table.lines().find(|l| l.starts_with("work ")).unwrap();
    assert!(
        work_row
            .contains("DLX=dlx TTL=60000ms max-len=100 overflow=reject-publish delivery-limit=5"),
        "{work_row}"
    );
    let temp_row = table
        .lines()
        .find(|l| l.starts_with(temp.as_str()))
        .unwrap();
    assert!(temp_row.contains(" excl "), "{temp_row}");
    let text = ok(&d.cli(&["queue", "inspect", "work"]));
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq(["argument", "x-delivery-limit:", "5"])),
        "{text}"
    );
    let text = ok(&d.cli(&["exchange", "list"]));
    for name in ["(default)", "amq.topic", "logs", "by-header", "dlx"] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let text = ok(&d.cli(&["binding", "list", "--exchange", "logs"]));
    assert!(text.contains("*.error") && text.contains("app.#"), "{text}");
    let text = ok(&d.cli(&["consumer", "list"]));
    assert!(text.contains(consumer.tag()), "{text}");
    let text = ok(&d.cli(&["connection", "list"]));
    assert!(text.starts_with("ID  PEER"), "{text}");
    assert!(text.lines().count() > 3, "{text}");
    let text = ok(&d.cli(&["status"]));
    assert!(text.contains(&d.data_dir().display().to_string()), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["messages", "ready:", "3"])),
        "{text}"
    );
    drop(consumer);
}

#[test]
fn admin_errors_are_one_line() {
    let d = TestDaemon::start();
    let line = fails_with_one_line(&d.cli(&["queue", "inspect", "nope"]));
    assert_eq!(
        line,
        "error: inspecting queue 'nope': NOT_FOUND (404): no queue 'nope'"
    );
    let line = fails_with_one_line(&d.cli(&["dlq", "peek", "nope"]));
    assert!(line.contains("NOT_FOUND (404): no queue 'nope'"), "{line}");
    ok(&d.cli(&["queue", "declare", "dlq"]));
    let line = fails_with_one_line(&d.cli(&["dlq", "replay", "dlq", "--to-exchange", "gone"]));
    assert_eq!(
        line,
        "error: replaying the dead letters in 'dlq': NOT_FOUND (404): no exchange 'gone'"
    );
}

#[test]
fn usage_errors_name_the_allowed_reasons_and_the_missing_target() {
    // Parsed before anything connects: no daemon needed.
    let usage_error = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .env_remove("WARREN_SERVER")
            .output()
            .expect("running warren");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = usage_error(&["dlq", "peek", "dlq", "--reason", "max-len"]);
    assert!(
        stderr.contains("[possible values: rejected, expired, maxlen, delivery_limit]"),
        "{stderr}"
    );
    let stderr = usage_error(&["dlq", "purge", "dlq", "--reason", "poison"]);
    assert!(stderr.contains("possible values"), "{stderr}");
    let stderr = usage_error(&["dlq", "replay", "dlq", "--key", "k"]);
    assert!(stderr.contains("--to-exchange <EXCHANGE>"), "{stderr}");
    let stderr = usage_error(&["binding", "list", "--queue", "q", "--exchange", "e"]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let stderr = usage_error(&["dlq", "peek", "dlq", "--limit", "0"]);
    assert!(stderr.contains("--limit <N>"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// dlq peek
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dlq_peek_shows_and_filters_without_touching_the_queue() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mixed_dead_letters(&c).await;

    let all = cli_json(&d, &["dlq", "peek", "dlq"]);
    assert_eq!(peek_ids(&all), ["r1", "e1", "r2", "e2", "r3"]);
    for (i, m) in all.as_array().unwrap().iter().enumerate() {
        let id = m["message_id"].as_str().unwrap();
        let (reason, from) = if id.starts_with('r') {
            ("rejected", "work")
        } else {
            ("expired", "slow")
        };
        assert_eq!(m["position"], i, "{m:#}");
        assert_eq!(m["reason"], reason, "{m:#}");
        assert_eq!(m["source_queue"], from, "{m:#}");
        assert_eq!(m["original_exchange"], "", "{m:#}");
        assert_eq!(m["original_routing_key"], from, "{m:#}");
        assert_eq!(m["death_count"], 1, "{m:#}");
        assert!(m["death_time_ms"].as_u64().unwrap() > 0, "{m:#}");
        assert_eq!(m["delivery_count"], 0, "{m:#}");
        assert_eq!(m["body"], format!("body of {id}"), "{m:#}");
        assert_eq!(m["body_preview"], format!("body of {id}"), "{m:#}");
        assert_eq!(m["size"], format!("body of {id}").len(), "{m:#}");
        assert_eq!(m["exchange"], "dlx", "{m:#}");
        assert_eq!(m["headers"]["x-first-death-reason"], reason, "{m:#}");
    }

    // Filters select exactly the matching ones, keeping queue positions.
    let rejected = cli_json(&d, &["dlq", "peek", "dlq", "--reason", "rejected"]);
    assert_eq!(peek_ids(&rejected), ["r1", "r2", "r3"]);
    assert_eq!(rejected[1]["position"], 2);
    let expired = cli_json(&d, &["dlq", "peek", "dlq", "--reason", "expired"]);
    assert_eq!(peek_ids(&expired), ["e1", "e2"]);
    let from_slow = cli_json(&d, &["dlq", "peek", "dlq", "--from-queue", "slow"]);
    assert_eq!(peek_ids(&from_slow), ["e1", "e2"]);
    let none = cli_json(
        &d,
        &[
            "dlq",
            "peek",
            "dlq",
            "--reason",
            "rejected",
            "--from-queue",
            "slow",
        ],
    );
    assert_eq!(none, json!([]));
    let maxlen = cli_json(&d, &["dlq", "peek", "dlq", "--reason", "maxlen"]);
    assert_eq!(maxlen, json!([]));
    let first_two = cli_json(&d, &["dlq", "peek", "dlq", "--limit", "2"]);
    assert_eq!(peek_ids(&first_two), ["r1", "e1"]);
    let limited = cli_json(
        &d,
        &["dlq", "peek", "dlq", "--reason", "rejected", "--limit", "2"],
    );
    assert_eq!(peek_ids(&limited), ["r1", "r2"]);

    // The table shows every message once, with reason and origin.
    let table = ok(&d.cli(&["dlq", "peek", "dlq"]));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(table.starts_with("POS  MESSAGE ID"), "{table}");
    for (row, id) in rows.iter().zip(["r1", "e1", "r2", "e2", "r3"]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], id, "{row}");
        assert!(row.contains(&format!("body of {id}")), "{row}");
        assert!(row.contains("(default)"), "{row}");
    }
    let table = ok(&d.cli(&["dlq", "peek", "dlq", "--from-queue", "slow"]));
    assert_eq!(table.lines().count(), 3, "{table}");

    // Nothing changed: same JSON, and the messages come out as never delivered.
    assert_eq!(cli_json(&d, &["dlq", "peek", "dlq"]), all);
    let status = cli_json(&d, &["queue", "inspect", "dlq"]);
    assert_eq!(status["messages_ready"], 5);
    assert_eq!(status["messages_unacked"], 0);
    let taken = drain(&c, "dlq").await;
    let ids: Vec<&str> = taken.iter().map(message_id).collect();
    assert_eq!(ids, ["r1", "e1", "r2", "e2", "r3"]);
    for (t, peeked) in taken.iter().zip(all.as_array().unwrap()) {
        assert_eq!(body(t), peeked["body"]);
        assert!(!t.redelivered, "{}", message_id(t));
        assert_eq!(t.delivery_count, 0, "{}", message_id(t));
    }
}

#[tokio::test]
// Regression: admin replies larger than a frame used to be sent anyway, and the client
// dropped the connection.
async fn a_peek_larger_than_the_max_frame_size_is_refused_cleanly() {
    // 100 dead letters of 1000 bytes make a peek reply (each body twice, plus headers) far
    // larger than a 64 KiB frame. The server may answer with fewer messages or refuse with
    // a request error; it must not send a frame the client has to drop.
    let d = TestDaemon::start_with(&["--max-frame-size", "65536"]);
    let c = d.client().await;
    dead_letter_setup(&c).await;
    let big = "x".repeat(1000);
    for i in 0..100 {
        publish(&c, "", "slow", &format!("e{i}"), &big).await;
    }
    wait_ready(&c, "dlq", 100).await;
    let out = d.cli(&["dlq", "peek", "dlq", "--json"]);
    if !out.status.success() {
        let line = fails_with_one_line(&out);
        assert!(!line.contains("FRAME_ERROR"), "{line}");
    }
    // Either way the server is fine and so is a smaller peek.
    assert_eq!(
        cli_json(&d, &["dlq", "peek", "dlq", "--limit", "5"])
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

// ---------------------------------------------------------------------------------------------
// dlq replay
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dlq_replay_moves_exactly_the_selected_messages_back_in_order() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mixed_dead_letters(&c).await;

    assert_eq!(
        ok(&d.cli(&["dlq", "replay", "dlq", "--reason", "rejected"])),
        "dead letters in queue 'dlq' replayed: 3 messages\n"
    );
    // work got exactly the rejected ones, in their dead-letter order; the DLQ kept the rest.
    let back = drain(&c, "work").await;
    assert_eq!(
        back.iter().map(message_id).collect::<Vec<_>>(),
        ["r1", "r2", "r3"]
    );
    for m in &back {
        assert_eq!(body(m), format!("body of {}", message_id(m)));
        assert_eq!(m.exchange, "", "published again to the original exchange");
        assert_eq!(m.routing_key, "work", "with the original routing key");
        assert!(m.properties.persistent);
        assert!(!m.redelivered, "a replayed message is a new delivery");
        assert_eq!(m.delivery_count, 0);
    }
    assert_eq!(
        peek_ids(&cli_json(&d, &["dlq", "peek", "dlq"])),
        ["e1", "e2"]
    );
    assert_eq!(ready(&c, "slow").await, 0);

    // --to-exchange/--key: somewhere else than where they came from.
    exchange(&c, "retry", ExchangeKind::Direct, FieldTable::new()).await;
    durable_queue(&c, "parking", FieldTable::new()).await;
    c.bind("parking", "retry", "again", FieldTable::new())
        .await
        .unwrap();
    assert_eq!(
        ok(&d.cli(&[
            "dlq",
            "replay",
            "dlq",
            "--from-queue",
            "slow",
            "--to-exchange",
            "retry",
            "--key",
            "again",
        ])),
        "dead letters in queue 'dlq' replayed: 2 messages\n"
    );
    let parked = drain(&c, "parking").await;
    assert_eq!(
        parked.iter().map(message_id).collect::<Vec<_>>(),
        ["e1", "e2"]
    );
    assert!(parked
        .iter()
        .all(|m| m.exchange == "retry" && m.routing_key == "again"));
    assert_eq!(ready(&c, "dlq").await, 0);
    assert_eq!(ready(&c, "slow").await, 0);
}

#[tokio::test]
async fn dlq_replay_with_a_limit_moves_the_first_matches_only() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mixed_dead_letters(&c).await;
    assert_eq!(
        ok(&d.cli(&["dlq", "replay", "dlq", "--reason", "rejected", "--limit", "2"])),
        "dead letters in queue 'dlq' replayed: 2 messages\n"
    );
    let back = drain(&c, "work").await;
    assert_eq!(
        back.iter().map(message_id).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert_eq!(
        peek_ids(&cli_json(&d, &["dlq", "peek", "dlq"])),
        ["e1", "e2", "r3"]
    );
}

#[tokio::test]
async fn an_unroutable_replay_leaves_the_message_in_the_dlq_and_says_so() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mixed_dead_letters(&c).await;
    c.delete_queue("work", false, false).await.unwrap();

    let out = ok(&d.cli(&["dlq", "replay", "dlq"]));
    assert_eq!(
        out,
        "dead letters in queue 'dlq' replayed: 2 messages; 3 could not be routed and stayed\n"
    );
    // The expired ones went back to slow (where they expire again after 50 ms and come
    // back, which is fine); the rejected ones never left, in their order.
    let left = cli_json(&d, &["dlq", "peek", "dlq", "--from-queue", "work"]);
    assert_eq!(peek_ids(&left), ["r1", "r2", "r3"]);
    assert!(left
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["delivery_count"] == 0 && m["death_count"] == 1));
}

#[tokio::test]
// Regression: a replay refused by a full target used to leave the DLQ and vanish.
async fn a_replay_refused_by_a_full_queue_keeps_the_message_in_the_dlq() {
    // A replayed message that its target refuses (full, x-overflow reject-publish) must stay
    // dead-lettered, like one that routes nowhere.
    let d = TestDaemon::start();
    let c = d.client().await;
    dead_letter_setup(&c).await;
    reject_from_work(&c, "r1").await;
    reject_from_work(&c, "r2").await;
    durable_queue(
        &c,
        "tiny",
        args(&[
            ("x-max-length", FieldValue::Int(1)),
            ("x-overflow", s("reject-publish")),
        ]),
    )
    .await;
    let out = ok(&d.cli(&["dlq", "replay", "dlq", "--to-exchange", "", "--key", "tiny"]));
    let tiny = drain(&c, "tiny").await;
    assert_eq!(tiny.iter().map(message_id).collect::<Vec<_>>(), ["r1"]);
    assert_eq!(
        peek_ids(&cli_json(&d, &["dlq", "peek", "dlq"])),
        ["r2"],
        "replay said: {out}"
    );
}

// ---------------------------------------------------------------------------------------------
// dlq purge, message delete
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dlq_purge_by_reason_removes_only_those() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mixed_dead_letters(&c).await;
    assert_eq!(
        ok(&d.cli(&["dlq", "purge", "dlq", "--reason", "expired"])),
        "dead letters in queue 'dlq' purged: 2 messages\n"
    );
    assert_eq!(
        peek_ids(&cli_json(&d, &["dlq", "peek", "dlq"])),
        ["r1", "r2", "r3"]
    );
    assert_eq!(
        ok(&d.cli(&["dlq", "purge", "dlq", "--reason", "expired"])),
        "dead letters in queue 'dlq' purged: 0 messages\n"
    );
    // Durably: a restart brings back exactly what was left.
    drop(c);
    let mut d = d;
    d.restart();
    assert_eq!(
        peek_ids(&cli_json(&d, &["dlq", "peek", "dlq"])),
        ["r1", "r2", "r3"]
    );
    assert_eq!(
        ok(&d.cli(&["dlq", "purge", "dlq"])),
        "dead letters in queue 'dlq' purged: 3 messages\n"
    );
    assert_eq!(cli_json(&d, &["dlq", "peek", "dlq"]), json!([]));
}

#[tokio::test]
async fn message_delete_removes_exactly_that_message() {
    let d = TestDaemon::start();
    let c = d.client().await;
    mixed_dead_letters(&c).await;
    assert_eq!(
        ok(&d.cli(&["message", "delete", "dlq", "--id", "r2"])),
        "message 'r2' deleted from queue 'dlq'\n"
    );
    assert_eq!(
        peek_ids(&cli_json(&d, &["dlq", "peek", "dlq"])),
        ["r1", "e1", "e2", "r3"]
    );
    let line = fails_with_one_line(&d.cli(&["message", "delete", "dlq", "--id", "r2"]));
    assert_eq!(
        line,
        "error: deleting message 'r2' from queue 'dlq': NOT_FOUND (404): no ready message with id 'r2'"
    );
    let line = fails_with_one_line(&d.cli(&["message", "delete", "nope", "--id", "r1"]));
    assert!(line.contains("NOT_FOUND (404): no queue 'nope'"), "{line}");
    let left = drain(&c, "dlq").await;
    assert_eq!(
        left.iter().map(message_id).collect::<Vec<_>>(),
        ["r1", "e1", "e2", "r3"]
    );
}

// ---------------------------------------------------------------------------------------------
// definitions
// ---------------------------------------------------------------------------------------------

/// A topology with every kind of thing an export carries: exchanges with and without
/// arguments, durable and transient queues with arguments, an auto-delete queue, topic and
/// headers bindings, and a binding from a built-in exchange.
async fn declare_topology(c: &Client) {
    exchange(c, "logs", ExchangeKind::Topic, FieldTable::new()).await;
    exchange(
        c,
        "by-header",
        ExchangeKind::Headers,
        args(&[("alternate-exchange", s("logs"))]),
    )
    .await;
    exchange(c, "dlx", ExchangeKind::Fanout, FieldTable::new()).await;
    durable_queue(
        c,
        "jobs",
        args(&[
            ("x-dead-letter-exchange", s("dlx")),
            ("x-message-ttl", FieldValue::Int(30_000)),
            ("x-delivery-limit", FieldValue::Int(3)),
        ]),
    )
    .await;
    durable_queue(c, "dlq", FieldTable::new()).await;
    c.declare_queue(
        "scratch",
        QueueOptions {
            auto_delete: true,
            arguments: args(&[("x-max-length", FieldValue::Int(10))]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.bind("jobs", "logs", "app.#", FieldTable::new())
        .await
        .unwrap();
    c.bind("dlq", "dlx", "", FieldTable::new()).await.unwrap();
    c.bind(
        "scratch",
        "by-header",
        "",
        args(&[("x-match", s("any")), ("kind", s("audit"))]),
    )
    .await
    .unwrap();
    c.bind("scratch", "amq.topic", "#", FieldTable::new())
        .await
        .unwrap();
}

/// What an import must reproduce of a queue listing: everything but counts and rates.
fn queue_shapes(queues: &Value) -> Vec<Value> {
    queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            json!({
                "name": q["name"], "durable": q["durable"], "exclusive": q["exclusive"],
                "auto_delete": q["auto_delete"], "arguments": q["arguments"],
                "dead_letter_exchange": q["dead_letter_exchange"],
                "message_ttl_ms": q["message_ttl_ms"], "max_length": q["max_length"],
                "overflow": q["overflow"], "delivery_limit": q["delivery_limit"],
            })
        })
        .collect()
}

/// Exchanges, queue shapes and bindings, as the CLI lists them.
fn topology(d: &TestDaemon) -> (Value, Vec<Value>, Value) {
    (
        cli_json(d, &["exchange", "list"]),
        queue_shapes(&cli_json(d, &["queue", "list"])),
        cli_json(d, &["binding", "list"]),
    )
}

#[tokio::test]
async fn definitions_export_then_import_reproduces_the_topology_idempotently() {
    let source = TestDaemon::start();
    let c = source.client().await;
    declare_topology(&c).await;
    publish(&c, "logs", "app.x", "m1", "not exported").await;

    let file = source.data_dir().join("definitions.json");
    let file_arg = file.to_str().unwrap();
    assert_eq!(
        ok(&source.cli(&["definitions", "export", file_arg])),
        format!("definitions exported to '{file_arg}': 3 exchanges, 3 queues and 4 bindings\n")
    );
    let written = std::fs::read_to_string(&file).unwrap();
    let stdout = ok(&source.cli(&["definitions", "export"]));
    assert_eq!(stdout, written, "stdout and file carry the same document");
    let doc: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(doc["warren_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        written.contains("\n  \"exchanges\": ["),
        "pretty-printed: {written}"
    );

    let target = TestDaemon::start();
    assert_eq!(
        ok(&target.cli(&["definitions", "import", file_arg])),
        format!("definitions imported from '{file_arg}': created 3 exchanges and 3 queues; 4 bindings in place\n")
    );
    let expected = topology(&source);
    assert_eq!(topology(&target), expected);
    // Topology only: the message stayed behind.
    assert_eq!(
        cli_json(&target, &["queue", "inspect", "jobs"])["messages_ready"],
        0
    );

    // Importing again changes nothing.
    assert_eq!(
        ok(&target.cli(&["definitions", "import", file_arg])),
        format!("definitions imported from '{file_arg}': created 0 exchanges and 0 queues; 4 bindings in place\n")
    );
    assert_eq!(topology(&target), expected);
    // And the target exports what the source did.
    assert_eq!(ok(&target.cli(&["definitions", "export"])), written);
}

/// A document whose every item is valid except one that a declare or bind would refuse:
/// the import fails naming that item, and nothing of the document is applied, not even the
/// items before it. The same document without the bad item imports.
#[test]
fn an_import_with_one_invalid_item_applies_nothing() {
    let d = TestDaemon::start();
    let good = json!({
        "exchanges": [
            {"name": "logs", "type": "topic", "durable": true},
            {"name": "by-header", "type": "headers", "durable": true},
            {"name": "audit", "type": "fanout", "durable": true},
        ],
        "queues": [
            {"name": "jobs", "durable": true, "arguments": {"x-message-ttl": 60000}},
            {"name": "seen", "durable": true},
        ],
        "bindings": [
            {"source": "logs", "destination": "jobs", "destination_type": "queue",
             "routing_key": "app.#"},
            {"source": "by-header", "destination": "seen", "destination_type": "queue",
             "routing_key": "", "arguments": {"x-match": "any-with-x", "x-kind": "audit"}},
            {"source": "logs", "destination": "audit", "destination_type": "exchange",
             "routing_key": "#.audit"},
        ],
    });
    let with = |section: &str, item: Value| {
        let mut doc = good.clone();
        doc[section].as_array_mut().unwrap().push(item);
        doc
    };
    let cases = [
        (
            with(
                "bindings",
                json!({"source": "by-header", "destination": "jobs",
                 "routing_key": "", "arguments": {"x-match": "some", "k": "v"}}),
            ),
            "PRECONDITION_FAILED (406): definitions: binding of queue 'jobs' to exchange \
             'by-header' with key '': invalid arg 'x-match' for binding: expected \"all\", \
             \"any\", \"all-with-x\" or \"any-with-x\", got some",
        ),
        (
            with(
                "bindings",
                json!({"source": "by-header", "destination": "audit",
                 "destination_type": "exchange", "routing_key": "",
                 "arguments": {"x-match": 1}}),
            ),
            "PRECONDITION_FAILED (406): definitions: binding of exchange 'audit' to exchange \
             'by-header' with key '': invalid arg 'x-match' for binding:",
        ),
        (
            with(
                "bindings",
                json!({"source": "logs", "destination": "jobs",
                 "routing_key": "a.#.#.#"}),
            ),
            "PRECONDITION_FAILED (406): definitions: binding of queue 'jobs' to exchange \
             'logs' with key 'a.#.#.#': topic binding key 'a.#.#.#' has 3 '#' words; at most \
             2 are allowed",
        ),
        (
            with(
                "bindings",
                json!({"source": "logs", "destination": "audit",
                 "destination_type": "exchange", "routing_key": "#.#.#"}),
            ),
            "PRECONDITION_FAILED (406): definitions: binding of exchange 'audit' to exchange \
             'logs' with key '#.#.#': topic binding key",
        ),
        (
            with(
                "queues",
                json!({"name": "late", "durable": true,
                 "arguments": {"x-max-length": -1}}),
            ),
            "PRECONDITION_FAILED (406): definitions: invalid arg 'x-max-length' for queue 'late'",
        ),
        (
            with(
                "exchanges",
                json!({"name": "odd", "type": "x-consistent-hash"}),
            ),
            "definitions: exchange 'odd' type: must be direct, fanout, topic or headers",
        ),
        (
            with(
                "exchanges",
                json!({"name": "logs", "type": "direct", "durable": true}),
            ),
            "PRECONDITION_FAILED (406): definitions: exchange 'logs' is defined twice, differently",
        ),
        (
            with("queues", json!({"name": "amq.mine", "durable": true})),
            "ACCESS_REFUSED (403): definitions: queue name 'amq.mine' is reserved",
        ),
        (
            with(
                "bindings",
                json!({"source": "", "destination": "jobs", "routing_key": "jobs"}),
            ),
            "ACCESS_REFUSED (403): definitions: binding source: the default exchange cannot be \
             bound to or unbound from",
        ),
        (
            with(
                "bindings",
                json!({"source": "logs", "destination": "nowhere",
                 "routing_key": "x"}),
            ),
            "NOT_FOUND (404): no queue (binding destination) 'nowhere'",
        ),
    ];
    let file = d.data_dir().join("defs.json");
    let file_arg = file.to_str().unwrap();
    let before = topology(&d);
    for (doc, says) in cases {
        std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        let line = fails_with_one_line(&d.cli(&["definitions", "import", file_arg]));
        assert!(
            line.starts_with(&format!("error: importing definitions from '{file_arg}': "))
                && line.contains(says),
            "{line}\nwanted: {says}"
        );
        assert_eq!(topology(&d), before, "nothing applied after: {line}");
    }
    std::fs::write(&file, serde_json::to_string(&good).unwrap()).unwrap();
    assert_eq!(
        ok(&d.cli(&["definitions", "import", file_arg])),
        format!(
            "definitions imported from '{file_arg}': created 3 exchanges and 2 queues; 3 \
             bindings in place\n"
        )
    );
}

#[tokio::test]
async fn importing_conflicting_definitions_fails_and_changes_nothing() {
    let source = TestDaemon::start();
    declare_topology(&source.client().await).await;
    let file = source.data_dir().join("definitions.json");
    let file_arg = file.to_str().unwrap();
    ok(&source.cli(&["definitions", "export", file_arg]));

    // The target already has `jobs`, transient: the file says durable.
    let target = TestDaemon::start();
    ok(&target.cli(&["queue", "declare", "jobs"]));
    let before = topology(&target);
    let line = fails_with_one_line(&target.cli(&["definitions", "import", file_arg]));
    assert!(
        line.starts_with(&format!(
            "error: importing definitions from '{file_arg}': PRECONDITION_FAILED (406): "
        )),
        "{line}"
    );
    assert!(
        line.ends_with(
            "definitions conflict: inequivalent arg 'durable' for queue 'jobs': received true, \
             current false"
        ),
        "{line}"
    );
    // Nothing from the file was created, not even what came before the conflict.
    assert_eq!(topology(&target), before);
    assert!(cli_json(&target, &["exchange", "list"])
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "logs" && e["name"] != "dlx"));

    // A file that is not JSON, and a file that is not there.
    let bad = target.data_dir().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let line = fails_with_one_line(&target.cli(&["definitions", "import", bad.to_str().unwrap()]));
    assert!(line.contains("not valid JSON"), "{line}");
    let missing = target.data_dir().join("missing.json");
    let line =
        fails_with_one_line(&target.cli(&["definitions", "import", missing.to_str().unwrap()]));
    assert!(
        line.starts_with(&format!(
            "error: reading definitions from '{}': ",
            missing.display()
        )),
        "{line}"
    );
    assert_eq!(topology(&target), before);
}
