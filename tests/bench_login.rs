//! `warren bench --server` logs in like every client command: `--user`,
//! `--password-stdin`, `WARREN_USER`/`WARREN_PASSWORD` and `--vhost` (it used to log in as
//! guest on `/` whatever was given).

mod common;

use std::process::{Command, Output, Stdio};

use common::{ok, TestDaemon};

/// Runs `warren` with `env` set (and the harness's login variables cleared otherwise).
fn warren(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(args)
        .env_remove("WARREN_SERVER")
        .env_remove("WARREN_USER")
        .env_remove("WARREN_PASSWORD")
        .env_remove("WARREN_VHOST")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning warren");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    drop(pipe);
    // A bench of 50 messages ends by itself; wait_with_output drains both pipes.
    child.wait_with_output().expect("waiting for warren")
}

#[test]
fn bench_against_a_daemon_logs_in_as_the_given_user_and_vhost() {
    let d = TestDaemon::start();
    ok(&d.cli_with_stdin(
        &[
            "user",
            "add",
            "perf",
            "--tags",
            "administrator",
            "--password-stdin",
        ],
        Some("s3cret\n"),
    ));
    ok(&d.cli(&["vhost", "add", "load"]));
    for vhost in ["/", "load"] {
        d.grant_all("perf", vhost);
    }
    // No guest to fall back on.
    let perf = [("WARREN_USER", "perf"), ("WARREN_PASSWORD", "s3cret")];
    let out = warren(
        &["--server", d.addr(), "user", "delete", "guest"],
        &perf,
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bench = |extra: &[&str], env: &[(&str, &str)], stdin: Option<&str>| {
        let args = [
            &[
                "bench",
                "--server",
                d.addr(),
                "--messages",
                "50",
                "--in-flight",
                "10",
            ][..],
            extra,
        ]
        .concat();
        warren(&args, env, stdin)
    };
    let out = bench(
        &["--user", "perf", "--password-stdin", "--vhost", "load"],
        &[],
        Some("s3cret\n"),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("messages        50"), "{report}");

    let out = bench(
        &[],
        &[&perf[..], &[("WARREN_VHOST", "load")]].concat(),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = bench(
        &["--user", "perf", "--password-stdin"],
        &[],
        Some("wrong\n"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("as 'perf'"), "{err}");
    assert!(err.contains("ACCESS_REFUSED"), "{err}");
}
