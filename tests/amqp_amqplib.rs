//! amqplib, RabbitMQ's Node.js client, against Warren's AMQP listeners: tutorial one, a
//! confirm channel, consume with prefetch and acks, nack with requeue, a 404 on a channel,
//! and amqps with the test's CA (tests/amqp/amqplib_basic.js).
//!
//! amqplib comes from `WARREN_AMQPLIB_DIR` (an npm prefix: `.ci/run` runs `npm install
//! --prefix target/node amqplib@2.3.1` and sets it), else `target/node` if it is there, else
//! whatever `node` can `require`. Without node or amqplib, the test says it is skipped and
//! passes: `cargo test --workspace` must not need Node.js.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::pki::Pki;
use common::run_client_script;

/// Whether `node` can `require('amqplib')` with `NODE_PATH` set to `node_path`.
fn node_finds_amqplib(node_path: Option<&Path>) -> bool {
    let mut cmd = Command::new("node");
    cmd.args(["-e", "require('amqplib')"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = node_path {
        cmd.env("NODE_PATH", p);
    }
    cmd.status().is_ok_and(|s| s.success())
}

/// The `NODE_PATH` under which node finds amqplib (`None`: node's own search finds it), or
/// why there is none.
fn amqplib() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os("WARREN_AMQPLIB_DIR").filter(|d| !d.is_empty()) {
        let modules = PathBuf::from(&dir).join("node_modules");
        // Set on purpose: a directory without amqplib there is a broken setup, not a skip.
        assert!(
            node_finds_amqplib(Some(&modules)),
            "WARREN_AMQPLIB_DIR={} has no amqplib that node can load",
            modules.display()
        );
        return Ok(Some(modules));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node/node_modules");
    if node_finds_amqplib(Some(&local)) {
        return Ok(Some(local));
    }
    if node_finds_amqplib(None) {
        return Ok(None);
    }
    Err(
        "no node, or no amqplib for it: `npm install --prefix target/node amqplib@2.3.1` \
         (.ci/run does it) or set WARREN_AMQPLIB_DIR"
            .to_owned(),
    )
}

#[test]
fn amqplib_runs_hello_world_confirms_prefetch_nack_and_amqps() {
    let node_path = match amqplib() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED amqplib_runs_hello_world_confirms_prefetch_nack_and_amqps: {why}");
            return;
        }
    };
    let pki = Pki::new();
    let d = pki.start(&[]);
    let addr = d.amqp_addr().expect("the AMQP listener is on");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let tls = d.amqp_tls_addr().expect("the AMQP over TLS listener is on");
    let (_, tls_port) = tls.rsplit_once(':').expect("host:port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/amqp/amqplib_basic.js");
    let out_path = d.data_dir().join("amqplib.out");
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .args([host, port, tls_port, &pki.arg("ca.pem")]);
    if let Some(p) = &node_path {
        cmd.env("NODE_PATH", p);
    }
    run_client_script(cmd, &out_path, "amqplib");
}
