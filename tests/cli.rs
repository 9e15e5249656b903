//! The `warren` command line against the real daemon: every test runs the real binary as a
//! child process (through `TestDaemon::cli`, or directly for binary stdin and background
//! consumers) and checks exit codes, stdout and stderr.
//!
//! Failures are promised as a non-zero exit with one `error: ...` line on stderr (README);
//! clap's usage errors are multi-line and exit with 2, so only their content is checked.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ok, TestDaemon, WAIT};
use serde_json::{json, Value};
use warren::client::{Client, QueueOptions};
use warren_protocol::{FieldTable, FieldValue};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts the command failed; returns its stderr.
fn fails(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stderr
}

/// Asserts the command failed with exactly one `error: ...` line on stderr (and exit code 1,
/// not clap's 2); returns that line.
fn fails_with_one_line(out: &Output) -> String {
    let stderr = fails(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    lines[0].to_owned()
}

/// Each stdout line parsed as a JSON object.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// The `body` of each JSON delivery.
fn bodies(deliveries: &[Value]) -> Vec<&str> {
    deliveries
        .iter()
        .map(|d| d["body"].as_str().expect("body is a string"))
        .collect()
}

/// Runs `warren args...` with no `WARREN_SERVER` (tests pass `--server`) and raw bytes as
/// stdin, with a bounded wait.
fn run_warren(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env_remove("WARREN_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the warren CLI");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin).expect("writing stdin");
    drop(pipe);
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("CLI output");
    assert!(
        Instant::now() <= deadline,
        "warren {args:?} did not finish within {WAIT:?}: {out:?}"
    );
    out
}

/// Publishes `bodies` to `queue` through the default exchange, one `--lines` run.
fn publish_lines(d: &TestDaemon, queue: &str, bodies: &[&str]) {
    let mut input = bodies.join("\n");
    input.push('\n');
    ok(&d.cli_with_stdin(&["publish", "", queue, "--lines"], Some(&input)));
}

/// Polls `check` until it returns true, for at most [`WAIT`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ready messages in `queue`, from a passive declare.
async fn ready_count(c: &Client, queue: &str) -> u64 {
    c.declare_queue(
        queue,
        QueueOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .expect("passive declare")
    .message_count
}

/// A `warren` command running in the background (`subscribe`, `consume` without `--count`),
/// its stdout read line by line on a thread. Killed on drop.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn spawn(d: &TestDaemon, args: &[&str]) -> Background {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .env("WARREN_SERVER", d.addr())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the warren CLI");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// The next stdout line, waiting at most [`WAIT`].
    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                panic!("no stdout line ({e:?}); stderr: {}", self.stderr());
            }
        }
    }

    /// Whatever the child wrote on stderr. Only call once it has exited (or been killed).
    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Panics if the child has already exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("exited early with {status}; stderr: {}", self.stderr());
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the child to exit by itself; returns its status, the stdout lines
    /// not yet taken, and its stderr.
    fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let rest: Vec<String> = self.lines.try_iter().collect();
                panic!(
                    "did not exit within {WAIT:?}; stdout: {rest:?}; stderr: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = Vec::new();
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            rest.push(line);
        }
        let stderr = self.stderr();
        (status, rest, stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `body` with `--mandatory` until it is routed (not returned), for at most [`WAIT`]:
/// proves a background subscriber has declared and bound its queue. Only the last attempt is
/// delivered; the returned ones are not.
fn publish_until_routed(d: &TestDaemon, sub: &mut Background, exchange: &str, key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = d.cli(&["publish", exchange, key, "probe", "--mandatory"]);
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("returned"), "probe failed: {stderr}");
        sub.assert_running();
        assert!(
            Instant::now() < deadline,
            "the subscriber never bound its queue"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The README tour
// ---------------------------------------------------------------------------------------------

#[test]
fn readme_tour_publishes_lines_through_a_topic_exchange_and_consume_acks_them() {
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "exchange",
        "declare",
        "logs",
        "--type",
        "topic",
        "--durable",
    ]));
    assert_eq!(
        ok(&d.cli(&["queue", "declare", "jobs", "--durable"])),
        "queue 'jobs' declared\n"
    );
    ok(&d.cli(&["bind", "jobs", "logs", "--key", "app.#"]));
    let out = d.cli_with_stdin(
        &["publish", "logs", "app.batch", "--lines", "--persistent"],
        Some("one\ntwo\nthree\n"),
    );
    assert_eq!(ok(&out), "");

    let deliveries = json_lines(&ok(&d.cli(&["consume", "jobs", "--count", "3", "--json"])));
    assert_eq!(bodies(&deliveries), ["one", "two", "three"]);
    for v in &deliveries {
        assert_eq!(v["exchange"], "logs", "{v}");
        assert_eq!(v["routing_key"], "app.batch", "{v}");
        assert_eq!(v["redelivered"], false, "{v}");
        assert_eq!(v["delivery_count"], 0, "{v}");
        assert_eq!(v["headers"], json!({}), "{v}");
        assert_eq!(v["message_id"], Value::Null, "{v}");
        assert_eq!(v["properties"]["persistent"], true, "{v}");
        assert!(v.get("body_encoding").is_none(), "{v}");
    }

    // consume acknowledges what it printed before exiting: nothing is left to purge.
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "jobs"])),
        "queue 'jobs' purged: 0 messages\n"
    );
}

// ---------------------------------------------------------------------------------------------
// connection options
// ---------------------------------------------------------------------------------------------

// Issue 7, item 7: `warren --server H:P queue list` was refused (`--server` only existed
// after the subcommand).
#[test]
fn server_works_before_or_after_the_subcommand_and_from_the_environment() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs"]));
    let server = d.addr();
    for argv in [
        &["--server", server, "queue", "list", "--json"][..],
        &["queue", "list", "--json", "--server", server][..],
        &["queue", "--server", server, "list", "--json"][..],
    ] {
        let listed: Value = serde_json::from_str(&ok(&run_warren(argv, b""))).expect("JSON");
        assert_eq!(listed[0]["name"], "jobs", "{argv:?}");
    }
    // `TestDaemon::cli` passes the address in WARREN_SERVER only.
    let listed: Value =
        serde_json::from_str(&ok(&d.cli(&["queue", "list", "--json"]))).expect("JSON");
    assert_eq!(listed[0]["name"], "jobs");
}

#[test]
fn serve_refuses_server_instead_of_ignoring_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let out = run_warren(
        &[
            "--server",
            "127.0.0.1:1",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
        ],
        b"",
    );
    let line = fails_with_one_line(&out);
    assert!(line.contains("--listen"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// publish
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_takes_the_body_as_an_argument() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    assert_eq!(ok(&d.cli(&["publish", "", "q", "hello world"])), "");
    let v = json_lines(&ok(&d.cli(&["consume", "q", "--count", "1", "--json"])));
    assert_eq!(bodies(&v), ["hello world"]);
    assert_eq!(v[0]["exchange"], "");
    assert_eq!(v[0]["routing_key"], "q");
    assert_eq!(v[0]["properties"]["persistent"], false);
}

#[test]
fn publish_dash_reads_the_whole_of_stdin_as_one_body() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    ok(&d.cli_with_stdin(&["publish", "", "q", "-"], Some("first\nsecond\n")));
    let v = json_lines(&ok(&d.cli(&["consume", "q", "--count", "1", "--json"])));
    assert_eq!(bodies(&v), ["first\nsecond\n"]);
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 0 messages\n"
    );
}

#[test]
fn publish_lines_strip_line_endings_and_keep_an_unterminated_last_line() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    ok(&d.cli_with_stdin(&["publish", "", "q", "--lines"], Some("a\r\nb\nc")));
    let v = json_lines(&ok(&d.cli(&["consume", "q", "--count", "3", "--json"])));
    assert_eq!(bodies(&v), ["a", "b", "c"]);
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 0 messages\n"
    );
}

#[tokio::test]
async fn publish_lines_beyond_the_confirm_window_all_arrive_in_order() {
    // More lines than publish keeps unconfirmed at once (1000).
    const N: usize = 2500;
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    let input: String = (0..N).map(|i| format!("m{i}\n")).collect();
    ok(&d.cli_with_stdin(&["publish", "", "q", "--lines"], Some(&input)));
    let c = d.client().await;
    assert_eq!(ready_count(&c, "q").await, N as u64);
    for i in 0..N {
        let m = c.get("q", true).await.expect("get").expect("a message");
        assert_eq!(m.body, format!("m{i}").as_bytes());
    }
}

// Issue 7, item 5: untyped header values were guessed, so `zip=01234` arrived as the integer
// 1234, `ver=1.10` as the float 1.1 and `id=1e3` as 1000.0.
#[tokio::test]
async fn publish_headers_are_strings_unless_typed() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    ok(&d.cli(&[
        "publish",
        "",
        "q",
        "x",
        "--header",
        "zip=01234",
        "--header",
        "ver=1.10",
        "--header",
        "id=1e3",
        "--header",
        "n:int=5",
        "--header",
        "ratio:float=0.5",
        "--header",
        "ok:bool=true",
        "--header",
        "raw:bytes=AAEC/w==",
        "--header",
        r#"tags:list=["a",1]"#,
        "--header",
        r#"meta:table={"k":1}"#,
        "--header",
        "x-delay=0",
        "--header",
        "sent:timestamp=1700000000",
        "--header",
        "due:timestamp=2026-11-30T13:00:00+01:00",
    ]));
    let c = d.client().await;
    let m = c.get("q", true).await.expect("get").expect("a message");
    let string = |s: &str| FieldValue::String(s.into());
    let want = FieldTable::from([
        ("zip".to_owned(), string("01234")),
        ("ver".to_owned(), string("1.10")),
        ("id".to_owned(), string("1e3")),
        ("n".to_owned(), FieldValue::Int(5)),
        ("ratio".to_owned(), FieldValue::Float(0.5)),
        ("ok".to_owned(), FieldValue::Bool(true)),
        (
            "raw".to_owned(),
            FieldValue::Bytes(vec![0, 1, 2, 255].into()),
        ),
        (
            "tags".to_owned(),
            FieldValue::List(vec![string("a"), FieldValue::Int(1)]),
        ),
        (
            "meta".to_owned(),
            FieldValue::Map(FieldTable::from([("k".to_owned(), FieldValue::Int(1))])),
        ),
        ("x-delay".to_owned(), FieldValue::Int(0)),
        ("sent".to_owned(), FieldValue::Timestamp(1_700_000_000)),
        // RFC 3339 with an offset: 12:00 UTC.
        ("due".to_owned(), FieldValue::Timestamp(1_796_040_000)),
    ]);
    assert_eq!(m.properties.headers.to_table(), want);
}

#[test]
fn a_bad_typed_header_is_refused_naming_the_flag_and_the_value() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    for (header, says) in [
        ("n:int=five", "n: 'five' is not an int"),
        ("n:number=5", "unknown type 'number' in 'n:number=5'"),
        ("r:bytes=@@", "r: '@@' is not valid base64"),
        ("l:list=[1,", "l: '[1,' is not valid JSON"),
        (
            "t:timestamp=2026-11-30T12:00:00",
            "t: '2026-11-30T12:00:00' is not a timestamp (whole seconds since the Unix \
             epoch, or an RFC 3339 date and time",
        ),
    ] {
        let out = d.cli(&["publish", "", "q", "x", "--header", header]);
        let stderr = fails(&out);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "error: invalid value '{header}' for '--header <KEY[:TYPE]=VALUE>': {says}"
            )),
            "{stderr}"
        );
    }
    let listed: Value =
        serde_json::from_str(&ok(&d.cli(&["queue", "list", "--json"]))).expect("JSON");
    assert_eq!(
        listed[0]["messages_ready"], 0,
        "nothing was published: {listed}"
    );
}

#[test]
fn publish_message_id_is_delivered() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    ok(&d.cli(&["publish", "", "q", "x", "--message-id", "order-17"]));
    let v = json_lines(&ok(&d.cli(&["consume", "q", "--count", "1", "--json"])));
    assert_eq!(v[0]["message_id"], "order-17");
}

#[test]
fn publish_a_binary_body_from_stdin_consumes_as_base64() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "bin"]));
    let server = d.addr();
    let out = run_warren(
        &["publish", "", "bin", "-", "--server", server],
        &[0xff, 0x00, 0x80],
    );
    ok(&out);
    let v = json_lines(&ok(&d.cli(&["consume", "bin", "--count", "1", "--json"])));
    assert_eq!(v[0]["body"], "/wCA");
    assert_eq!(v[0]["body_encoding"], "base64");
}

#[test]
fn mandatory_publish_of_an_unroutable_message_fails_saying_it_was_returned() {
    let d = TestDaemon::start();
    ok(&d.cli(&["exchange", "declare", "ex", "--type", "direct"]));
    let line = fails_with_one_line(&d.cli(&["publish", "ex", "nowhere", "x", "--mandatory"]));
    assert!(line.contains("returned"), "{line}");
    assert!(line.contains("NO_ROUTE"), "{line}");
}

// Issue 7, item 16: the error repeated itself along the chain ("1 of 1 message not
// accepted (1 returned as unroutable); first returned: NO_ROUTE (312): NO_ROUTE").
#[test]
fn an_unroutable_mandatory_publish_fails_with_one_line_that_repeats_no_word() {
    let d = TestDaemon::start();
    let line =
        fails_with_one_line(&d.cli(&["publish", "amq.direct", "nowhere", "hi", "--mandatory"]));
    assert_eq!(
        line,
        "error: publishing to exchange 'amq.direct' with routing key 'nowhere': the message \
         was returned: NO_ROUTE (312)"
    );
    let mut seen = std::collections::HashSet::new();
    for word in line.split(|c: char| !c.is_alphanumeric() && c != '_') {
        if !word.is_empty() {
            assert!(
                seen.insert(word.to_lowercase()),
                "'{word}' repeats in {line:?}"
            );
        }
    }
}

#[test]
fn non_mandatory_publish_of_an_unroutable_message_succeeds() {
    let d = TestDaemon::start();
    ok(&d.cli(&["exchange", "declare", "ex", "--type", "direct"]));
    assert_eq!(ok(&d.cli(&["publish", "ex", "nowhere", "x"])), "");
}

#[tokio::test]
async fn publish_with_delay_is_not_ready_before_the_delay() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    // Ten minutes: far longer than this test can take.
    ok(&d.cli(&["publish", "", "q", "later", "--delay", "600000"]));
    let c = d.client().await;
    let got = c.get("q", true).await.expect("get");
    assert!(
        got.is_none(),
        "a message published with --delay 600000 was ready at once: {got:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// subscribe
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_prints_only_matching_messages_and_exits_after_count() {
    let d = TestDaemon::start();
    ok(&d.cli(&["exchange", "declare", "events", "--type", "topic"]));
    let mut sub = Background::spawn(
        &d,
        &["subscribe", "events", "order.*", "--count", "3", "--json"],
    );
    publish_until_routed(&d, &mut sub, "events", "order.probe");
    ok(&d.cli(&["publish", "events", "user.created", "not for us"]));
    ok(&d.cli(&["publish", "events", "order.created", "first"]));
    ok(&d.cli(&[
        "publish",
        "events",
        "order.created.late",
        "not for us either",
    ]));
    ok(&d.cli(&["publish", "events", "order.paid", "second"]));

    let (status, lines, stderr) = sub.wait();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(stderr, "");
    let v = json_lines(&lines.join("\n"));
    assert_eq!(bodies(&v), ["probe", "first", "second"]);
    let keys: Vec<&Value> = v.iter().map(|d| &d["routing_key"]).collect();
    assert_eq!(keys, ["order.probe", "order.created", "order.paid"]);
    assert!(v.iter().all(|d| d["exchange"] == "events"));
}

#[test]
fn subscribe_removes_its_queue_when_it_exits() {
    let d = TestDaemon::start();
    ok(&d.cli(&["exchange", "declare", "events", "--type", "topic"]));
    let mut sub = Background::spawn(&d, &["subscribe", "events", "order.*", "--count", "1"]);
    publish_until_routed(&d, &mut sub, "events", "order.probe");
    let (status, lines, stderr) = sub.wait();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(lines, ["[order.probe] probe"]);
    // The temporary queue goes with the subscriber's connection: nothing routes any more.
    eventually("the subscriber's queue to be deleted", || {
        !d.cli(&["publish", "events", "order.x", "y", "--mandatory"])
            .status
            .success()
    });
}

#[test]
fn subscribe_to_a_missing_exchange_fails_with_not_found() {
    let d = TestDaemon::start();
    let line = fails_with_one_line(&d.cli(&["subscribe", "nosuch", "#", "--count", "1"]));
    assert!(line.contains("NOT_FOUND"), "{line}");
    assert!(line.contains("'nosuch'"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn connecting_to_a_port_nobody_listens_on_fails_with_one_line() {
    let out = run_warren(&["queue", "declare", "q", "--server", "127.0.0.1:1"], b"");
    let line = fails_with_one_line(&out);
    assert!(line.contains("connecting to 127.0.0.1:1"), "{line}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn publishing_to_a_missing_exchange_fails_with_not_found() {
    let d = TestDaemon::start();
    let line = fails_with_one_line(&d.cli(&["publish", "nosuch", "rk", "x"]));
    assert!(line.contains("NOT_FOUND"), "{line}");
    assert!(line.contains("'nosuch'"), "{line}");
}

#[test]
fn redeclaring_a_queue_with_other_durability_fails_with_precondition_failed() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "jobs", "--durable"]));
    let out = d.cli(&["queue", "declare", "jobs"]);
    let line = fails_with_one_line(&out);
    assert!(line.contains("PRECONDITION_FAILED"), "{line}");
    assert!(line.contains("'jobs'"), "{line}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    // Redeclaring it the same way still works.
    assert_eq!(
        ok(&d.cli(&["queue", "declare", "jobs", "--durable"])),
        "queue 'jobs' declared\n"
    );
}

#[test]
fn arg_without_equals_is_a_usage_error() {
    let d = TestDaemon::start();
    let out = d.cli(&["queue", "declare", "q", "--arg", "oops"]);
    let stderr = fails(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--arg <KEY[:TYPE]=VALUE>"), "{stderr}");
    assert!(stderr.contains("no '=' in 'oops'"), "{stderr}");
}

#[test]
fn queue_arguments_warren_knows_keep_their_type_and_others_are_strings_unless_typed() {
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "queue",
        "declare",
        "work",
        "--arg",
        "x-max-length=10",
        "--arg",
        "x-retry-backoff=1s,5s",
        "--arg",
        "x-dead-letter-exchange=dlx",
        "--arg",
        "note=007",
        "--arg",
        "weight:int=5",
    ]));
    let q: Value =
        serde_json::from_str(&ok(&d.cli(&["queue", "inspect", "work", "--json"]))).expect("JSON");
    assert_eq!(
        q["arguments"],
        json!({"x-max-length": 10, "x-retry-backoff": "1s,5s", "x-dead-letter-exchange": "dlx",
               "note": "007", "weight": 5}),
        "{q}"
    );
    assert_eq!(q["max_length"], 10, "{q}");
    // A known integer argument given a non-integer is refused before anything is sent.
    let out = d.cli(&["queue", "declare", "other", "--arg", "x-message-ttl=1.5s"]);
    let stderr = fails(&out);
    assert!(
        stderr.contains("'x-message-ttl=1.5s' for '--arg <KEY[:TYPE]=VALUE>'"),
        "{stderr}"
    );
}

#[test]
fn exchange_declare_takes_typed_arguments() {
    let d = TestDaemon::start();
    ok(&d.cli(&[
        "exchange",
        "declare",
        "logs",
        "--type",
        "topic",
        "--arg",
        "alternate-exchange=ae",
        "--arg",
        "n:int=3",
    ]));
    let listed: Value =
        serde_json::from_str(&ok(&d.cli(&["exchange", "list", "--json"]))).expect("JSON");
    let logs = listed
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == "logs"))
        .unwrap_or_else(|| panic!("no logs in {listed}"));
    assert_eq!(
        logs["arguments"],
        json!({"alternate-exchange": "ae", "n": 3})
    );
}

#[test]
fn a_headers_binding_matches_only_values_of_the_same_type() {
    let d = TestDaemon::start();
    ok(&d.cli(&["exchange", "declare", "h", "--type", "headers"]));
    ok(&d.cli(&["queue", "declare", "ints"]));
    ok(&d.cli(&["queue", "declare", "strings"]));
    ok(&d.cli(&["bind", "ints", "h", "--arg", "n:int=1"]));
    ok(&d.cli(&["bind", "strings", "h", "--arg", "n=1"]));
    ok(&d.cli(&["publish", "h", "", "int", "--header", "n:int=1"]));
    ok(&d.cli(&["publish", "h", "", "string", "--header", "n=1"]));
    let got = |queue: &str| {
        let v = json_lines(&ok(&d.cli(&["consume", queue, "--count", "1", "--json"])));
        bodies(&v)
            .iter()
            .map(|b| (*b).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(got("ints"), ["int"]);
    assert_eq!(got("strings"), ["string"]);
}

#[test]
fn deleting_the_default_exchange_is_refused() {
    let d = TestDaemon::start();
    let line = fails_with_one_line(&d.cli(&["exchange", "delete", ""]));
    assert!(line.contains("ACCESS_REFUSED"), "{line}");
    assert!(line.contains("default exchange"), "{line}");
}

#[test]
fn consuming_a_missing_queue_fails_with_not_found() {
    let d = TestDaemon::start();
    let line = fails_with_one_line(&d.cli(&["consume", "nosuch", "--count", "1"]));
    assert!(line.contains("NOT_FOUND"), "{line}");
    assert!(line.contains("'nosuch'"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// queue, bind, unbind
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn queue_declare_with_an_empty_name_prints_a_server_generated_name() {
    let d = TestDaemon::start();
    let stdout = ok(&d.cli(&["queue", "declare", ""]));
    let name = stdout
        .strip_prefix("queue '")
        .and_then(|rest| rest.strip_suffix("' declared\n"))
        .unwrap_or_else(|| panic!("{stdout:?}"));
    assert!(name.starts_with("amq.gen-"), "{stdout:?}");
    // Under --quiet the name alone is printed: it is the result a script needs.
    let quiet = ok(&d.cli(&["queue", "declare", "", "--quiet"]));
    let quiet_name = quiet.strip_suffix('\n').expect("one line");
    assert!(quiet_name.starts_with("amq.gen-"), "{quiet:?}");
    assert!(!quiet_name.contains(['\n', ' ']), "{quiet:?}");
    // The queues outlive the CLI's connection: neither exclusive nor auto-delete.
    let c = d.client().await;
    assert_eq!(ready_count(&c, name).await, 0);
    assert_eq!(ready_count(&c, quiet_name).await, 0);
}

// Issue 7, item 9: `queue purge` and `queue delete` printed a bare number, `exchange
// declare` and `bind` nothing.
#[test]
fn every_change_prints_one_line_saying_what_happened() {
    let d = TestDaemon::start();
    for (argv, line) in [
        (
            &[
                "exchange",
                "declare",
                "logs",
                "--type",
                "topic",
                "--durable",
            ][..],
            "exchange 'logs' declared (topic, durable)",
        ),
        (
            &["exchange", "declare", "tmp", "--type", "fanout"][..],
            "exchange 'tmp' declared (fanout)",
        ),
        (&["queue", "declare", "jobs"][..], "queue 'jobs' declared"),
        (
            &["bind", "jobs", "logs", "--key", "app.#"][..],
            "bound queue 'jobs' to exchange 'logs' with key 'app.#'",
        ),
        (&["publish", "logs", "app.x", "one"][..], ""),
        (
            &["queue", "purge", "jobs"][..],
            "queue 'jobs' purged: 1 message",
        ),
        (
            &["unbind", "jobs", "logs", "--key", "app.#"][..],
            "unbound queue 'jobs' from exchange 'logs' with key 'app.#'",
        ),
        (
            &["queue", "delete", "jobs"][..],
            "queue 'jobs' deleted: 0 messages",
        ),
        (&["exchange", "delete", "tmp"][..], "exchange 'tmp' deleted"),
    ] {
        let want = if line.is_empty() {
            String::new()
        } else {
            format!("{line}\n")
        };
        assert_eq!(ok(&d.cli(argv)), want, "{argv:?}");
    }
}

#[test]
fn quiet_suppresses_success_lines_but_not_errors_or_listings() {
    let d = TestDaemon::start();
    for argv in [
        &["-q", "exchange", "declare", "logs", "--type", "topic"][..],
        &["queue", "declare", "jobs", "--quiet"][..],
        &["--quiet", "bind", "jobs", "logs", "--key", "k"][..],
        &["publish", "logs", "k", "x", "-q"][..],
        &["queue", "purge", "jobs", "-q"][..],
        &["unbind", "jobs", "logs", "--key", "k", "-q"][..],
        &["queue", "delete", "jobs", "-q"][..],
        &["exchange", "delete", "logs", "-q"][..],
    ] {
        assert_eq!(ok(&d.cli(argv)), "", "{argv:?}");
    }
    let listed: Value =
        serde_json::from_str(&ok(&d.cli(&["-q", "queue", "list", "--json"]))).expect("JSON");
    assert_eq!(listed, json!([]));
    let line = fails_with_one_line(&d.cli(&["-q", "queue", "purge", "nosuch"]));
    assert!(line.contains("NOT_FOUND"), "{line}");
}

#[test]
fn queue_delete_prints_how_many_messages_it_held() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["a", "b"]);
    assert_eq!(
        ok(&d.cli(&["queue", "delete", "q"])),
        "queue 'q' deleted: 2 messages\n"
    );
    let line = fails_with_one_line(&d.cli(&["publish", "", "q", "x", "--mandatory"]));
    assert!(line.contains("returned"), "{line}");
}

#[test]
fn unbind_stops_routing_to_the_queue() {
    let d = TestDaemon::start();
    ok(&d.cli(&["exchange", "declare", "ex", "--type", "direct"]));
    ok(&d.cli(&["queue", "declare", "q"]));
    ok(&d.cli(&["bind", "q", "ex", "--key", "k"]));
    ok(&d.cli(&["publish", "ex", "k", "routed", "--mandatory"]));
    ok(&d.cli(&["unbind", "q", "ex", "--key", "k"]));
    let line = fails_with_one_line(&d.cli(&["publish", "ex", "k", "unrouted", "--mandatory"]));
    assert!(line.contains("returned"), "{line}");
    let v = json_lines(&ok(&d.cli(&["consume", "q", "--count", "1", "--json"])));
    assert_eq!(bodies(&v), ["routed"]);
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 0 messages\n"
    );
}

// ---------------------------------------------------------------------------------------------
// consume
// ---------------------------------------------------------------------------------------------

#[test]
fn consume_prints_one_readable_line_per_message_by_default() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["hello", "world"]);
    assert_eq!(
        ok(&d.cli(&["consume", "q", "--count", "2"])),
        "[q] hello\n[q] world\n"
    );
}

#[test]
fn consume_no_ack_prints_and_removes_the_messages() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["a", "b", "c"]);
    let v = json_lines(&ok(
        &d.cli(&["consume", "q", "--count", "3", "--no-ack", "--json"])
    ));
    assert_eq!(bodies(&v), ["a", "b", "c"]);
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 0 messages\n"
    );
}

// Regression: `--no-ack --count 2` used to let the server push the whole queue and drop
// everything it did not print.
#[test]
fn consume_no_ack_with_a_count_takes_only_that_many() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["a", "b", "c", "d", "e"]);
    let v = json_lines(&ok(
        &d.cli(&["consume", "q", "--count", "2", "--no-ack", "--json"])
    ));
    assert_eq!(bodies(&v), ["a", "b"]);
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 3 messages\n"
    );
}

#[test]
fn consume_with_prefetch_one_acks_every_message() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["a", "b", "c"]);
    let out = d.cli(&["consume", "q", "--count", "3", "--prefetch", "1", "--json"]);
    assert_eq!(bodies(&json_lines(&ok(&out))), ["a", "b", "c"]);
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 0 messages\n"
    );
}

#[tokio::test]
async fn consume_count_below_available_leaves_the_rest_in_order() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["m1", "m2", "m3", "m4", "m5"]);
    let v = json_lines(&ok(&d.cli(&["consume", "q", "--count", "2", "--json"])));
    assert_eq!(bodies(&v), ["m1", "m2"]);

    // Messages prefetched but not printed went back when the CLI's connection closed.
    let c = d.client().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = ready_count(&c, "q").await;
        if ready == 3 {
            break;
        }
        assert!(ready < 3, "{ready} messages ready, expected 3");
        assert!(
            Instant::now() < deadline,
            "{ready} messages ready, expected 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for body in ["m3", "m4", "m5"] {
        let m = c.get("q", true).await.expect("get").expect("a message");
        assert_eq!(m.body, body.as_bytes());
    }
    assert!(c.get("q", true).await.expect("get").is_none());
}

#[test]
fn consume_stops_cleanly_on_sigterm_with_everything_printed_acked() {
    let d = TestDaemon::start();
    ok(&d.cli(&["queue", "declare", "q"]));
    publish_lines(&d, "q", &["a", "b", "c"]);
    let mut consumer = Background::spawn(&d, &["consume", "q"]);
    let printed: Vec<String> = (0..3).map(|_| consumer.next_line()).collect();
    assert_eq!(printed, ["[q] a", "[q] b", "[q] c"]);
    consumer.sigterm();
    let (status, rest, stderr) = consumer.wait();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(stderr, "");
    assert_eq!(
        ok(&d.cli(&["queue", "purge", "q"])),
        "queue 'q' purged: 0 messages\n"
    );
}

#[tokio::test]
// Regression: the writer used to reset its idle clock on every heartbeat tick, so heartbeats
// went out only by timer jitter and idle consumers died after three intervals.
async fn idle_consumers_outlive_three_heartbeat_intervals() {
    // With 1 s heartbeats a client gives up after 3 s without a frame from the server. Whether
    // the server's heartbeats go out depends on timer jitter, so several consumers are watched
    // at once: with the bug, some of them die.
    const CONSUMERS: usize = 10;
    let d = TestDaemon::start_with(&["--heartbeat-secs", "1"]);
    ok(&d.cli(&["queue", "declare", "q"]));
    let mut consumers: Vec<Background> = (0..CONSUMERS)
        .map(|_| Background::spawn(&d, &["consume", "q"]))
        .collect();
    let consumer_count = |c: Client| async move {
        let options = QueueOptions {
            passive: true,
            ..Default::default()
        };
        let n = c
            .declare_queue("q", options)
            .await
            .expect("passive declare");
        c.close().await.expect("close");
        n.consumer_count as usize
    };
    let deadline = Instant::now() + WAIT;
    while consumer_count(d.client().await).await < CONSUMERS {
        assert!(Instant::now() < deadline, "the consumers did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not synchronisation: the idle period is what is under test.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for c in &mut consumers {
        c.assert_running();
    }
    assert_eq!(consumer_count(d.client().await).await, CONSUMERS);
    for c in consumers {
        c.sigterm();
        let (status, lines, stderr) = c.wait();
        assert!(status.success(), "{status}; stderr: {stderr}");
        assert!(lines.is_empty(), "{lines:?}");
    }
}

#[test]
fn publishing_a_body_over_the_servers_limit_names_both_sizes() {
    // 65,536 - 1,024 bytes of headroom: the limit for a publish is 64,512.
    let d = TestDaemon::start_with(&["--max-frame-size", "65536"]);
    ok(&d.cli(&["queue", "declare", "big"]));
    let body = "x".repeat(100_000);
    let out = d.cli(&["publish", "", "big", &body]);
    let line = fails_with_one_line(&out);
    assert_eq!(
        line,
        "error: publishing to exchange '' with routing key 'big': message body of 100,000 bytes \
         exceeds the server's limit of 64,512; start the server with --max-frame-size to \
         raise it"
    );
}
