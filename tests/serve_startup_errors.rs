//! `warren serve` refusing to start: each reason is one line on stderr that names the data
//! directory and says what is wrong, once (not repeated along the error chain).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestDaemon;

/// Runs `warren serve` on `data_dir` (port 0 on 127.0.0.1), expecting it to exit by itself;
/// bounded, and killed if it starts serving instead.
fn serve_expecting_failure(data_dir: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("serve")
        // Not the default 5672: tests run in parallel.
        .env("WARREN_AMQP_LISTEN", "127.0.0.1:0")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning warren serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("warren serve did not exit: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Asserts the daemon exited with 1 and exactly one stderr line; returns it.
fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr:?}");
    lines[0].to_owned()
}

#[test]
fn a_data_dir_in_use_names_the_daemon_holding_it() {
    let d = TestDaemon::start();
    let runtime: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.data_dir().join("runtime.json")).expect("runtime.json"),
    )
    .expect("runtime.json is JSON");
    let line = one_error_line(&serve_expecting_failure(d.data_dir()));
    assert_eq!(
        line,
        format!(
            "error: data directory {} is in use by warren pid {} listening on {}",
            d.data_dir().display(),
            runtime["pid"],
            d.addr()
        )
    );
    // The failed start left the running daemon's runtime.json alone.
    assert!(d.data_dir().join("runtime.json").exists());
}

#[test]
fn a_data_dir_that_is_a_file_says_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, "not a directory").unwrap();
    let line = one_error_line(&serve_expecting_failure(&file));
    assert_eq!(
        line,
        format!("error: data directory {}: not a directory", file.display())
    );

    let under = file.join("sub");
    let line = one_error_line(&serve_expecting_failure(&under));
    assert_eq!(
        line,
        format!(
            "error: data directory {}: cannot create it: Not a directory (os error 20)",
            under.display()
        )
    );
}

#[test]
fn a_store_file_that_cannot_be_opened_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the store file should be: opening it fails whoever runs the test.
    let store = dir.path().join(warren::store::STORE_FILE_NAME);
    std::fs::create_dir(&store).unwrap();
    let line = one_error_line(&serve_expecting_failure(dir.path()));
    assert!(
        line.starts_with(&format!("error: opening the store {}: ", store.display())),
        "{line}"
    );
    assert_eq!(
        line.matches(&*store.display().to_string()).count(),
        1,
        "{line}"
    );
    assert_eq!(line.matches("Is a directory").count(), 1, "{line}");
}
