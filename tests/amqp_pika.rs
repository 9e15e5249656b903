//! pika, RabbitMQ's Python client, against Warren's AMQP listener: tutorial one, publisher
//! confirms, a mandatory return, consume with acks, nack and redelivery, a 404 on a channel
//! (tests/amqp/pika_basic.py).
//!
//! The Python comes from `WARREN_PIKA_PYTHON` (`.ci/run` makes a venv with pika and sets it),
//! else `python3` if it can `import pika`. Without either, the test says it is skipped and
//! passes: `cargo test --workspace` must not need Python.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{run_client_script, TestDaemon};

/// A Python that can `import pika`, or why there is none.
fn pika_python() -> Result<String, String> {
    let (python, from_env) = match std::env::var("WARREN_PIKA_PYTHON") {
        Ok(p) if !p.is_empty() => (p, true),
        _ => ("python3".to_owned(), false),
    };
    let imports = Command::new(&python)
        .args(["-c", "import pika"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (imports, from_env) {
        (true, _) => Ok(python),
        // Set on purpose: a Python without pika there is a broken setup, not a skip.
        (false, true) => panic!("WARREN_PIKA_PYTHON={python} cannot import pika"),
        (false, false) => Err("set WARREN_PIKA_PYTHON to a python with pika, or `pip install pika==1.3.2` (.ci/run does it in target/pyenv)".to_owned()),
    }
}

#[test]
fn pika_runs_hello_world_confirms_and_acks() {
    let python = match pika_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED pika_runs_hello_world_confirms_and_acks: no pika: {why}");
            return;
        }
    };
    let d = TestDaemon::start();
    let addr = d.amqp_addr().expect("the AMQP listener is on");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/amqp/pika_basic.py");
    let out_path = d.data_dir().join("pika.out");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).args([host, port]);
    run_client_script(cmd, &out_path, "pika");
}
