//! `TestDaemon`: the real `warren` binary on 127.0.0.1 with a temporary data directory, for
//! integration tests. It binds port 0 and the harness reads the bound address from
//! `<data-dir>/runtime.json`, so there is no port race. Logs go to a file, printed if the test
//! panics (set `WARREN_TEST_VERBOSE=1` to stream them instead).
#![allow(dead_code)]

pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use warren::client::{Client, Delivery, ExchangeKind, ExchangeOptions, QueueOptions};
use warren_protocol::{FieldTable, FieldValue};

/// How long a daemon may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Bounded wait for a receive or an effect in tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestDaemon {
    dir: tempfile::TempDir,
    /// The data directory: `dir` itself unless the test chose another.
    data_dir: PathBuf,
    child: Option<Child>,
    addr: String,
    starts: u32,
    extra_args: Vec<String>,
}

impl TestDaemon {
    /// Starts a daemon on a new, empty data directory.
    pub fn start() -> TestDaemon {
        Self::start_with(&[])
    }

    /// Starts a daemon with extra `serve` arguments.
    pub fn start_with(extra_args: &[&str]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_owned();
        Self::start_on(dir, data_dir, extra_args)
    }

    /// Starts a daemon whose data directory is `data_dir` (e.g. on a small filesystem the
    /// test made); logs still go to a temporary directory of their own.
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_on(dir, data_dir.to_owned(), extra_args)
    }

    fn start_on(dir: tempfile::TempDir, data_dir: PathBuf, extra_args: &[&str]) -> TestDaemon {
        let mut d = TestDaemon {
            dir,
            data_dir,
            child: None,
            addr: String::new(),
            starts: 0,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        d.spawn();
        d
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("daemon-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let runtime = self.data_dir.join("runtime.json");
        let _ = std::fs::remove_file(&runtime);
        let verbose = std::env::var_os("WARREN_TEST_VERBOSE").is_some();
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.arg("serve");
        // A test that sets --listen itself (`--listen none`) gets its own.
        if !self.extra_args.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        // Never the default 5672: tests run in parallel, each daemon on a port of its own.
        if !self.extra_args.iter().any(|a| a == "--amqp-listen") {
            cmd.arg("--amqp-listen").arg("127.0.0.1:0");
        }
        // Nor 5671, where a certificate turns AMQP over TLS on by default.
        if self.extra_args.iter().any(|a| a == "--tls-cert")
            && !self.extra_args.iter().any(|a| a == "--amqp-tls-listen")
        {
            cmd.arg("--amqp-tls-listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info,warren=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if verbose {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(log);
        }
        let mut child = cmd.spawn().expect("spawning warren serve");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(raw) = std::fs::read_to_string(&runtime) {
                let v: serde_json::Value = serde_json::from_str(&raw).expect("runtime.json");
                // Empty when the plain listener is off (`--listen none`).
                self.addr = v["listen"].as_str().unwrap_or_default().to_owned();
                break;
            }
            // A daemon that cannot write runtime.json (a full disk) still logs its address.
            if let Some(addr) = self.logged_address() {
                self.addr = addr;
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "warren serve exited with {status} before listening:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "warren serve did not start in time:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The address in this run's "warren is serving" log line, if it was written.
    fn logged_address(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.log_path()).ok()?;
        let line = log.lines().find(|l| l.contains("warren is serving"))?;
        let rest = &line[line.find("listen=")? + "listen=".len()..];
        Some(rest.split_whitespace().next()?.to_owned())
    }

    /// Starts a daemon that also serves metrics (`--metrics-listen 127.0.0.1:0`); see
    /// [`TestDaemon::metrics_addr`].
    pub fn start_with_metrics() -> TestDaemon {
        Self::start_with(&["--metrics-listen", "127.0.0.1:0"])
    }

    /// The metrics address the running daemon recorded in `runtime.json` (`metrics_listen`),
    /// if it serves metrics.
    pub fn metrics_addr(&self) -> Option<String> {
        let raw = std::fs::read_to_string(self.data_dir.join("runtime.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&raw).expect("runtime.json");
        v["metrics_listen"].as_str().map(str::to_owned)
    }

    /// The TLS address the running daemon recorded in `runtime.json` (`tls_listen`), if it
    /// has a TLS listener.
    pub fn tls_addr(&self) -> Option<String> {
        let raw = std::fs::read_to_string(self.data_dir.join("runtime.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&raw).expect("runtime.json");
        v["tls_listen"].as_str().map(str::to_owned)
    }

    /// The AMQP 0-9-1 address the running daemon recorded in `runtime.json`
    /// (`amqp_listen`), if its AMQP listener is on.
    pub fn amqp_addr(&self) -> Option<String> {
        let raw = std::fs::read_to_string(self.data_dir.join("runtime.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&raw).expect("runtime.json");
        v["amqp_listen"].as_str().map(str::to_owned)
    }

    /// The AMQP over TLS address the running daemon recorded in `runtime.json`
    /// (`amqp_tls_listen`), if that listener is on.
    pub fn amqp_tls_addr(&self) -> Option<String> {
        let raw = std::fs::read_to_string(self.data_dir.join("runtime.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&raw).expect("runtime.json");
        v["amqp_tls_listen"].as_str().map(str::to_owned)
    }

    /// An AMQP 0-9-1 connection (lapin, a client nobody here wrote) to the AMQP listener, as
    /// `user`, in the default virtual host.
    pub async fn amqp_as(&self, user: &str, password: &str) -> lapin::Connection {
        let addr = self.amqp_addr().expect("the AMQP listener is on");
        let url = format!("amqp://{user}:{password}@{addr}/%2f");
        within(
            "the AMQP connection",
            lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
        )
        .await
        .expect("connected")
    }

    /// [`TestDaemon::amqp_as`] guest.
    pub async fn amqp(&self) -> lapin::Connection {
        self.amqp_as("guest", "guest").await
    }

    /// Connects a client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr)
            .await
            .expect("connecting to the test daemon")
    }

    /// The daemon's process id (for reading its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// The daemon's resident set size in bytes, from `/proc/PID/status` (`VmRSS`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the daemon's /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kb * 1024
    }

    /// The daemon's open file descriptors (entries in `/proc/PID/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns whether it exited with 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same data directory.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    /// Every log line the daemon wrote in this test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("daemon-{i}.log"));
            if let Ok(s) = std::fs::read_to_string(p) {
                out.push_str(&format!("--- daemon run {i} ---\n{s}"));
            }
        }
        out
    }

    /// Gives `user` every permission (configure, write and read `.*`) in `vhost`, through
    /// the CLI as guest.
    pub fn grant_all(&self, user: &str, vhost: &str) {
        ok(&self.cli(&[
            "permission",
            "set",
            user,
            "--vhost",
            vhost,
            "--configure",
            ".*",
            "--write",
            ".*",
            "--read",
            ".*",
        ]));
    }

    /// Runs the `warren` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Runs the `warren` CLI with `stdin` as its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::{Read, Write};
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.args(args)
            .env("WARREN_SERVER", &self.addr)
            // The commands log in as guest unless a test says otherwise.
            .env_remove("WARREN_USER")
            .env_remove("WARREN_PASSWORD")
            .env_remove("WARREN_VHOST")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the warren CLI");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("writing stdin");
        }
        // The pipes are drained while the command runs: one that writes more than a pipe
        // holds would otherwise block until the deadline.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "warren {args:?} did not finish in 30 s; stdout: {} stderr: {}",
                    String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                    String::from_utf8_lossy(&stderr.join().unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Awaits `fut` for at most [`WAIT`], panicking with `what` on timeout.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Waits (bounded) for a message in `queue`, taking it with `get` (acknowledge it, or let
/// the connection's end requeue it).
pub async fn wait_get(c: &Client, queue: &str) -> Delivery {
    within(&format!("a message in {queue}"), async {
        loop {
            if let Some(d) = c.get(queue, false).await.expect("get") {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Asserts a CLI command succeeded with nothing on stderr; returns its stdout.
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "unexpected stderr: {stderr}");
    stdout
}

/// Declares a durable queue with `arguments`, panicking with the server's error.
pub async fn durable_queue(c: &Client, name: &str, arguments: FieldTable) {
    c.declare_queue(
        name,
        QueueOptions {
            durable: true,
            arguments,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("declaring queue {name}: {e}"));
}

/// Ready messages in `queue`, from a passive declare (which counts as a use for x-expires).
pub async fn ready(c: &Client, queue: &str) -> u64 {
    c.declare_queue(
        queue,
        QueueOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"))
    .message_count
}

/// Waits (bounded by [`WAIT`]) until `queue` holds exactly `n` ready messages: a requeue by a
/// closing connection happens as the server cleans up, which may end after the client
/// returned.
pub async fn wait_ready(c: &Client, queue: &str, n: u64) {
    within(&format!("{n} ready messages in {queue}"), async {
        while ready(c, queue).await != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A field table (queue, consumer or binding arguments) from `(key, value)` pairs.
pub fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A durable fanout exchange `dlx` feeding the durable queue `dlq`: where the dead-letter
/// tests send what their queues dead-letter.
pub async fn dead_letter_target(c: &Client) {
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
    durable_queue(c, "dlq", FieldTable::new()).await;
    c.bind("dlq", "dlx", "", FieldTable::new()).await.unwrap();
}

/// Runs a client script nobody here wrote (pika, amqplib) to its end, its output in
/// `out_path`, bounded to two minutes (the scripts bound each of their own waits), and
/// checks that it succeeded and said `all ok`; prints its output.
pub fn run_client_script(mut cmd: Command, out_path: &Path, what: &str) {
    let out = std::fs::File::create(out_path).expect("output file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(out_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{what} script failed ({status:?}):\n{output}"
    );
    assert!(output.contains("all ok"), "{output}");
    eprintln!("{output}");
}
