//! `warren bench` against the daemon: small runs over each exchange type check that every
//! message reached each queue routing sends it to exactly once (the run's own verification,
//! read from `--json`), that what the run declared is gone afterwards, and that the server's
//! CPU time and memory are read. Never a speed. That a lost, misrouted or duplicated message
//! fails a run is shown by the verifier's unit tests (src/bench/verify.rs): nothing may make
//! the broker lose one here.

mod common;

use common::{ok, TestDaemon};
use serde_json::Value;

/// Runs `warren bench --server <daemon> --json` with `extra`, asserts it succeeded, and
/// returns the report.
fn bench(d: &TestDaemon, extra: &[&str]) -> Value {
    let args = [&["bench", "--server", d.addr(), "--json"][..], extra].concat();
    let out = ok(&d.cli(&args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

/// The run verified `deliveries` deliveries of `published` messages, all of them.
fn assert_verified(r: &Value, published: u64, deliveries: u64) {
    assert_eq!(u(r, "/published"), published, "{r:#}");
    assert_eq!(u(r, "/delivered"), deliveries, "{r:#}");
    assert_eq!(u(r, "/verification/expected"), deliveries, "{r:#}");
    assert_eq!(u(r, "/verification/arrived"), deliveries, "{r:#}");
    for field in ["missing", "misrouted", "unexpected_duplicates", "malformed"] {
        assert_eq!(u(r, &format!("/verification/{field}")), 0, "{field}: {r:#}");
    }
}

/// Names of the queues and exchanges on the daemon that a bench run made.
fn leftovers(d: &TestDaemon) -> Vec<String> {
    let mut names = Vec::new();
    for what in ["queue", "exchange"] {
        let out = ok(&d.cli(&[what, "list", "--json"]));
        let list: Value = serde_json::from_str(&out).expect("list is JSON");
        for item in list.as_array().into_iter().flatten() {
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                if name.starts_with("bench-") {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn direct_round_robin_over_two_queues_with_two_producers_and_two_consumers() {
    let d = TestDaemon::start();
    let r = bench(
        &d,
        &[
            "--count",
            "2000",
            "--exchange-type",
            "direct",
            "--queues",
            "2",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    // Each message reaches one queue.
    assert_verified(&r, 2000, 2000);
    assert_eq!(u(&r, "/confirmed"), 2000);
    assert_eq!(u(&r, "/acked"), 2000);
    assert_eq!(u(&r, "/options/queues"), 2);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn fanout_delivers_every_message_to_every_queue() {
    let d = TestDaemon::start();
    let r = bench(
        &d,
        &[
            "--count",
            "1000",
            "--exchange-type",
            "fanout",
            "--queues",
            "3",
            "--consumers",
            "2",
        ],
    );
    assert_verified(&r, 1000, 3000);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn topic_scenario_s5_fans_out_through_patterns() {
    let d = TestDaemon::start();
    // S5's workload (topic exchange, 4 durable queues, one consumer each), fewer messages.
    let r = bench(&d, &["--scenario", "s5", "--count", "1000"]);
    assert_eq!(r["options"]["scenario"], "s5", "{r:#}");
    assert_eq!(r["options"]["exchange_type"], "topic", "{r:#}");
    assert_eq!(r["options"]["persistent"], true, "{r:#}");
    assert_verified(&r, 1000, 4000);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn no_confirm_auto_ack_run_is_verified_without_confirms_or_acks() {
    let d = TestDaemon::start();
    let r = bench(
        &d,
        &[
            "--count",
            "2000",
            "--transient",
            "--no-confirm",
            "--auto-ack",
            "--producers",
            "2",
        ],
    );
    assert_verified(&r, 2000, 2000);
    assert_eq!(u(&r, "/confirmed"), 0);
    assert_eq!(u(&r, "/acked"), 0);
    assert!(r["confirm"].is_null(), "{r:#}");
}

#[test]
fn a_paced_run_sends_and_verifies_every_message() {
    // The rate is paced from a thread per producer (bench/publisher.rs, `Pacer`); counts
    // only, never how evenly.
    let d = TestDaemon::start();
    let r = bench(
        &d,
        &["--count", "600", "--rate", "2000", "--producers", "2"],
    );
    assert_verified(&r, 600, 600);
    assert_eq!(u(&r, "/confirmed"), 600);
    assert_eq!(u(&r, "/options/rate"), 2000);
}

#[test]
fn a_backlog_is_published_first_then_drained() {
    let d = TestDaemon::start();
    let r = bench(&d, &["--count", "1000", "--backlog", "--size", "1024"]);
    assert_verified(&r, 1000, 1000);
    assert_eq!(r["options"]["backlog"], true);
}

#[test]
fn the_report_has_rates_latency_and_the_servers_cpu_and_memory() {
    let d = TestDaemon::start();
    let r = bench(&d, &["--count", "500"]);
    assert_verified(&r, 500, 500);
    for rate in ["publish", "confirm", "delivery", "ack"] {
        for field in ["msgs_per_sec", "mb_per_sec"] {
            assert!(
                r[rate][field].as_f64().is_some_and(|x| x > 0.0),
                "{rate}.{field}: {r:#}"
            );
        }
    }
    let p50 = u(&r, "/latency/p50_us");
    let max = u(&r, "/latency/max_us");
    assert!(p50 >= 1 && p50 <= max, "{r:#}");
    let s = &r["server"];
    assert_eq!(s["in_process"], false);
    let before = s["cpu_seconds_before"].as_f64().expect("cpu before");
    let after = s["cpu_seconds_after"].as_f64().expect("cpu after");
    assert!(before > 0.0 && after >= before, "{s:#}");
    assert!(u(&r, "/server/resident_bytes_before") > 0, "{s:#}");
    assert!(u(&r, "/server/resident_bytes_after") > 0, "{s:#}");
}

#[test]
fn text_report_says_the_run_was_verified() {
    let d = TestDaemon::start();
    let out = ok(&d.cli(&[
        "bench",
        "--server",
        d.addr(),
        "--messages",
        "300",
        "--in-flight",
        "10",
    ]));
    assert!(out.contains("messages        300"), "{out}");
    assert!(
        out.contains("all 300 expected deliveries arrived exactly once"),
        "{out}"
    );
}

#[test]
fn a_user_who_may_not_read_status_still_gets_a_verified_run_without_server_figures() {
    let d = TestDaemon::start();
    ok(&d.cli_with_stdin(&["user", "add", "loader", "--password-stdin"], Some("pw\n")));
    d.grant_all("loader", "/");
    let out = d.cli_with_stdin(
        &[
            "bench",
            "--server",
            d.addr(),
            "--json",
            "--count",
            "300",
            "--exchange-type",
            "direct",
            "--queues",
            "2",
            "--user",
            "loader",
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_verified(&r, 300, 300);
    assert!(r["server"]["cpu_seconds_before"].is_null(), "{r:#}");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}
