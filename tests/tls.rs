//! TLS end to end: the real daemon with `--tls-listen`, certificates made by the test (a CA,
//! a server certificate for `localhost` and 127.0.0.1, a client certificate), clients through
//! the library and through the CLI. Plain and TLS side by side, plain off, client
//! certificates required, and what each mistake looks like to the user.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ok, wait_get, within, TestDaemon};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use warren::client::{Client, ClientError, OutgoingMessage, QueueOptions};
use warren::tls::{ClientTls, TlsOptions};

/// A CA and what it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and 127.0.0.1, and a client certificate;
    /// plus a second CA (`other-ca.pem`) and a client certificate it signed (`stranger`).
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki { dir };
        let (ca_params, ca_cert, ca_key) = ca("Warren test CA");
        pki.write("ca.pem", &ca_cert.pem());
        let issuer = Issuer::new(ca_params, ca_key);
        pki.leaf("server", &["localhost", "127.0.0.1"], &issuer);
        pki.leaf("client", &["warren-test-client"], &issuer);
        let (other_params, other, other_key) = ca("Some other CA");
        pki.write("other-ca.pem", &other.pem());
        pki.leaf(
            "stranger",
            &["warren-stranger"],
            &Issuer::new(other_params, other_key),
        );
        pki
    }

    fn leaf(&self, name: &str, sans: &[&str], issuer: &Issuer<'_, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, issuer).expect("signing");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}-key.pem"), &key.serialize_pem());
    }

    fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.path(name), pem).expect("writing a PEM file");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `serve` arguments for a TLS listener on a free port, with the server certificate.
    fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.arg("server.pem"),
            "--tls-key".into(),
            self.arg("server-key.pem"),
        ]
    }

    /// A client configuration trusting `ca` (a file name here), with the client certificate
    /// when `client_cert`.
    fn client(&self, ca: &str, client_cert: bool) -> ClientTls {
        ClientTls::new(&TlsOptions {
            ca: Some(self.path(ca)),
            client_cert: client_cert.then(|| self.path("client.pem")),
            client_key: client_cert.then(|| self.path("client-key.pem")),
            ..TlsOptions::default()
        })
        .expect("client TLS configuration")
    }
}

/// A self-signed CA: its parameters (an [`Issuer`] is made from them), its certificate and
/// its key.
fn ca(name: &str) -> (CertificateParams, rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signing");
    (params, cert, key)
}

/// Starts a daemon with `extra` `serve` arguments after the TLS ones.
fn start(pki: &Pki, extra: &[&str]) -> TestDaemon {
    let mut args = pki.serve_args();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestDaemon::start_with(&args)
}

fn tls_addr(d: &TestDaemon) -> String {
    d.tls_addr()
        .expect("the daemon records tls_listen in runtime.json")
}

/// Runs the CLI with `args` (bounded), with no WARREN_SERVER from the harness.
fn cli(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env_remove("WARREN_SERVER")
        .env_remove("WARREN_CA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the warren CLI");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warren {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("CLI output")
}

/// Asserts a CLI command failed; returns its stderr.
fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

async fn publish_one(c: &Client, queue: &str, body: &str) {
    c.declare_queue(queue, QueueOptions::default())
        .await
        .expect("declare");
    let outcome = c
        .publish_and_confirm(OutgoingMessage::new("", queue, body.to_owned()))
        .await
        .expect("publish");
    assert!(outcome.is_confirmed());
}

#[tokio::test]
async fn plain_and_tls_side_by_side_through_the_library() {
    let pki = Pki::new();
    let d = start(&pki, &[]);
    let tls = pki.client("ca.pem", false);
    let over_tls = within("a TLS connection", Client::connect_tls(&tls_addr(&d), &tls))
        .await
        .expect("connecting with TLS");
    publish_one(&over_tls, "tls-q", "over TLS").await;
    // The plain listener serves the same broker.
    let plain = d.client().await;
    let got = wait_get(&plain, "tls-q").await;
    assert_eq!(&got.body[..], b"over TLS");
    plain.ack(got.delivery_tag, false).await.expect("ack");
    publish_one(&plain, "tls-q", "over TCP").await;
    let got = wait_get(&over_tls, "tls-q").await;
    assert_eq!(&got.body[..], b"over TCP");
    over_tls.ack(got.delivery_tag, false).await.expect("ack");
    over_tls.close().await.expect("a clean close over TLS");
    plain.close().await.expect("close");
}

#[test]
fn the_cli_publishes_and_gets_over_tls() {
    let pki = Pki::new();
    let d = start(&pki, &[]);
    let addr = tls_addr(&d);
    let ca = pki.arg("ca.pem");
    let base = ["--server", addr.as_str(), "--ca", ca.as_str()];
    ok(&cli(&[&base[..], &["queue", "declare", "cli-tls"]].concat()));
    ok(&cli(&[
        &base[..],
        &["publish", "", "cli-tls", "hello over TLS"],
    ]
    .concat()));
    let out = ok(&cli(&[&base[..], &["get", "cli-tls"]].concat()));
    assert!(out.contains("hello over TLS"), "{out}");
    // --tls with the server name spelled out works as well.
    let out = ok(&cli(&[
        "--tls",
        "--server",
        &addr,
        "--ca",
        &ca,
        "--server-name",
        "localhost",
        "queue",
        "list",
    ]));
    assert!(out.contains("cli-tls"), "{out}");
}

#[tokio::test]
async fn the_plain_listener_can_be_turned_off() {
    let pki = Pki::new();
    let d = start(&pki, &["--listen", "none"]);
    assert_eq!(d.addr(), "", "no plain address in runtime.json");
    let c = within(
        "a TLS connection",
        Client::connect_tls(&tls_addr(&d), &pki.client("ca.pem", false)),
    )
    .await
    .expect("connecting with TLS");
    publish_one(&c, "only-tls", "x").await;
    c.close().await.expect("close");
    let status = ok(&cli(&[
        "--server",
        &tls_addr(&d),
        "--ca",
        &pki.arg("ca.pem"),
        "status",
    ]));
    assert!(
        status.contains(&format!("warrens://{}", tls_addr(&d))),
        "{status}"
    );
    assert!(!status.contains("warren://"), "{status}");
}

#[test]
fn no_listener_at_all_is_refused() {
    let data = tempfile::tempdir().expect("temp dir");
    let out = serve(&[
        "--listen",
        "none",
        "--data-dir",
        &data.path().display().to_string(),
    ]);
    let stderr = failed(&out);
    assert!(stderr.contains("no listener"), "{stderr}");
    assert!(stderr.contains("--tls-listen"), "{stderr}");
}

/// Runs `warren serve` expecting it to exit by itself (bounded; killed if it serves).
fn serve(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("serve")
        // Not the default 5672: tests run in parallel.
        .env("WARREN_AMQP_LISTEN", "127.0.0.1:0")
        .args(args)
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
            panic!("warren serve did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn bad_certificate_files_stop_the_daemon_naming_the_file() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let data = data.path().display().to_string();
    let missing = pki.arg("missing.pem");
    let out = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &missing,
        "--tls-key",
        &pki.arg("server-key.pem"),
    ]);
    let stderr = failed(&out);
    assert!(
        stderr.contains(&format!("reading the certificate file {missing}")),
        "{stderr}"
    );
    // A key file that holds a certificate, not a key.
    let out = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &pki.arg("server.pem"),
        "--tls-key",
        &pki.arg("server.pem"),
    ]);
    let stderr = failed(&out);
    assert!(
        stderr.contains(&format!(
            "the private key file {} holds no PEM private key",
            pki.arg("server.pem")
        )),
        "{stderr}"
    );
    // The key of another certificate.
    let out = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &pki.arg("server.pem"),
        "--tls-key",
        &pki.arg("client-key.pem"),
    ]);
    let stderr = failed(&out);
    assert!(stderr.contains(&pki.arg("client-key.pem")), "{stderr}");
    // --tls-listen without its files.
    let out = serve(&["--data-dir", &data, "--tls-listen", "127.0.0.1:0"]);
    let stderr = failed(&out);
    assert!(
        stderr.contains("--tls-listen needs --tls-cert FILE and --tls-key FILE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_plain_client_on_the_tls_port_is_told_to_try_tls() {
    let pki = Pki::new();
    let d = start(&pki, &[]);
    let addr = tls_addr(&d);
    let err = within("a refused plain connection", Client::connect(&addr))
        .await
        .expect_err("a plain client cannot talk to the TLS port");
    assert!(matches!(err, ClientError::NotWarren { .. }), "{err:?}");
    assert!(err.to_string().contains("try --tls"), "{err}");
    let stderr = failed(&cli(&["--server", &addr, "queue", "list"]));
    assert!(stderr.contains("is it a TLS port? try --tls"), "{stderr}");
}

#[tokio::test]
async fn a_tls_client_on_the_plain_port_is_told_it_is_not_tls() {
    let pki = Pki::new();
    let d = start(&pki, &[]);
    let err = within(
        "a refused TLS connection",
        Client::connect_tls(d.addr(), &pki.client("ca.pem", false)),
    )
    .await
    .expect_err("the plain port does not speak TLS");
    assert!(err.to_string().contains("try without --tls"), "{err}");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_the_server_name() {
    let pki = Pki::new();
    let d = start(&pki, &[]);
    let addr = tls_addr(&d);
    let err = within(
        "a refused TLS connection",
        Client::connect_tls(&addr, &pki.client("other-ca.pem", false)),
    )
    .await
    .expect_err("a server certificate from an untrusted CA is refused");
    let text = err.to_string();
    assert!(matches!(err, ClientError::TlsHandshake { .. }), "{err:?}");
    assert!(text.contains("server name '127.0.0.1'"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    let stderr = failed(&cli(&[
        "--server",
        &addr,
        "--ca",
        &pki.arg("other-ca.pem"),
        "--server-name",
        "localhost",
        "queue",
        "list",
    ]));
    assert!(stderr.contains("server name 'localhost'"), "{stderr}");
    assert!(
        stderr.contains("is --ca the CA that signed it?"),
        "{stderr}"
    );
    // The right CA but a name the certificate does not carry.
    let stderr = failed(&cli(&[
        "--server",
        &addr,
        "--ca",
        &pki.arg("ca.pem"),
        "--server-name",
        "broker.example",
        "queue",
        "list",
    ]));
    assert!(stderr.contains("not for 'broker.example'"), "{stderr}");
}

#[tokio::test]
async fn a_required_client_certificate_is_checked() {
    let pki = Pki::new();
    let ca = pki.arg("ca.pem");
    let d = start(&pki, &["--tls-client-ca", &ca]);
    let addr = tls_addr(&d);
    // Presented: served.
    let c = within(
        "a TLS connection with a client certificate",
        Client::connect_tls(&addr, &pki.client("ca.pem", true)),
    )
    .await
    .expect("a client with a certificate from the client CA is let in");
    publish_one(&c, "mtls", "x").await;
    c.close().await.expect("close");
    let cert = pki.arg("client.pem");
    let key = pki.arg("client-key.pem");
    let out = ok(&cli(&[
        "--server",
        &addr,
        "--ca",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
        "queue",
        "list",
    ]));
    assert!(out.contains("mtls"), "{out}");
    // Missing: refused, saying so.
    let err = within(
        "a TLS connection without a client certificate",
        Client::connect_tls(&addr, &pki.client("ca.pem", false)),
    )
    .await
    .expect_err("a client without a certificate is refused");
    assert!(
        err.to_string().contains("requires a client certificate"),
        "{err}"
    );
    let stderr = failed(&cli(&["--server", &addr, "--ca", &ca, "queue", "list"]));
    assert!(
        stderr.contains("pass --client-cert and --client-key"),
        "{stderr}"
    );
    // Presented, but from a CA the server does not trust: refused, saying so.
    let stderr = failed(&cli(&[
        "--server",
        &addr,
        "--ca",
        &ca,
        "--client-cert",
        &pki.arg("stranger.pem"),
        "--client-key",
        &pki.arg("stranger-key.pem"),
        "queue",
        "list",
    ]));
    assert!(
        stderr.contains("the server refused the client certificate"),
        "{stderr}"
    );
    // The plain listener asks for no certificate: it is the operator's to turn off.
    let plain = d.client().await;
    plain.close().await.expect("close");
}
