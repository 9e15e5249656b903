//! A full disk: persistent publishes are refused with a clear error, nothing confirmed is
//! lost, the store recovers by itself once space is back (no restart), and a daemon started
//! on a full disk still serves reads and acks.
//!
//! The data directory is a small tmpfs the test mounts; where mounting is not allowed (not
//! root, no tmpfs) the test says so and passes without running.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{durable_queue, within, TestDaemon};
use warren::admin_types::Status;
use warren::client::{Client, OutgoingMessage, PublishOutcome};
use warren_protocol::FieldTable;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if mounted {
            Some(SmallFs { dir })
        } else {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
            );
            None
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

const BODY: usize = 64 * 1024;

/// No low watermark: these tests fill the disk on purpose.
const DISK_ARGS: &[&str] = &["--disk-free-limit", "0"];

fn message(i: usize) -> OutgoingMessage {
    let mut body = format!("{i:08}").into_bytes();
    body.resize(BODY, b'.');
    OutgoingMessage::new("", "q", body).persistent()
}

/// Publishes message `i`; `Ok` when confirmed, the refusal's text when nacked.
async fn publish(c: &Client, i: usize) -> Result<(), String> {
    match within("a confirm", c.publish_and_confirm(message(i)))
        .await
        .expect("the publish is answered")
    {
        PublishOutcome::Confirmed => Ok(()),
        PublishOutcome::Nacked { code, reason } => Err(format!("{code}: {reason}")),
        other => panic!("unexpected {other:?}"),
    }
}

/// Publishes until the store refuses one; returns how many were confirmed and the refusal.
async fn fill(c: &Client, from: usize) -> (usize, String) {
    for i in from..from + 2_000 {
        if let Err(refusal) = publish(c, i).await {
            return (i - from, refusal);
        }
    }
    panic!("the disk never filled");
}

/// Takes every ready message of `q` (acking each); returns their numbers in order.
async fn drain(c: &Client) -> Vec<usize> {
    let mut seen = Vec::new();
    while let Some(d) = within("a get", c.get("q", false)).await.expect("get") {
        let n: usize = std::str::from_utf8(&d.body[..8])
            .expect("utf-8")
            .parse()
            .expect("number");
        seen.push(n);
        within("an ack", c.ack_durable(d.delivery_tag, false))
            .await
            .expect("ack");
    }
    seen
}

#[tokio::test]
async fn a_full_disk_refuses_persistent_publishes_and_recovers_without_a_restart() {
    let Some(fs) = SmallFs::mount("32m") else {
        return;
    };
    // Room to free later: the operator deletes this file.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20]).expect("filler");
    let data = fs.path().join("data");
    let mut d = TestDaemon::start_in(&data, DISK_ARGS);
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;

    let (confirmed, refusal) = fill(&c, 0).await;
    assert!(confirmed > 10, "only {confirmed} fit");
    assert!(
        refusal.contains("No space left on device"),
        "the refusal says why: {refusal}"
    );
    // Still full: refused again, with the same clear reason, and the daemon still serves.
    let again = publish(&c, 999_999).await.expect_err("still full");
    assert!(
        again.contains("No space left on device"),
        "the refusal still says why: {again}"
    );

    // Space comes back: publishes are confirmed again, without a restart.
    std::fs::remove_file(&filler).expect("freeing space");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = confirmed;
    loop {
        match publish(&c, next).await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the store did not recover within 10 s of space coming back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next += 1;

    let seen = drain(&c).await;
    let expected: Vec<usize> = (0..confirmed).chain(confirmed..next).collect();
    assert_eq!(seen, expected, "every confirmed message, in order, once");
    c.close().await.expect("close");
    assert!(d.stop());
}

#[tokio::test]
async fn a_daemon_starts_on_a_full_disk_and_serves_reads_and_acks() {
    let Some(fs) = SmallFs::mount("32m") else {
        return;
    };
    let data = fs.path().join("data");
    let mut d = TestDaemon::start_in(&data, DISK_ARGS);
    let c = d.client().await;
    durable_queue(&c, "q", FieldTable::new()).await;
    let (confirmed, _) = fill(&c, 0).await;
    drop(c);

    // Top the disk off completely, then restart on it. runtime.json cannot be written either
    // (a directory stands in its way, since a full tmpfs may still have a page for it).
    let _ = std::fs::write(fs.path().join("rest"), vec![0u8; 32 << 20]);
    d.kill9();
    std::fs::remove_file(data.join("runtime.json")).expect("runtime.json");
    std::fs::create_dir(data.join("runtime.json")).expect("blocking runtime.json");
    d.restart();
    let c = d.client().await;
    let seen = drain(&c).await;
    assert_eq!(seen, (0..confirmed).collect::<Vec<_>>());
    assert!(
        d.logs().contains("cannot write runtime.json"),
        "the runtime file it could not write is logged"
    );
}

/// Waits (bounded) until `status` reports exactly `alarms`.
async fn wait_for_alarms(c: &Client, alarms: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Status = within("status", c.admin_typed("status", FieldTable::new()))
            .await
            .expect("status");
        if status.alarms == alarms {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "alarms stayed {:?}, expected {alarms:?}",
            status.alarms
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn low_free_space_blocks_persistent_publishers_until_space_comes_back() {
    let Some(fs) = SmallFs::mount("32m") else {
        return;
    };
    let data = fs.path().join("data");
    let d = TestDaemon::start_in(&data, &["--disk-free-limit", "8MiB"]);
    let publisher = d.client().await;
    let other = d.client().await;
    durable_queue(&publisher, "q", FieldTable::new()).await;
    publish(&publisher, 0).await.expect("room at first");
    wait_for_alarms(&other, &[]).await;

    // Something else eats the disk: the alarm goes on.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 26 << 20]).expect("filler");
    wait_for_alarms(&other, &["disk"]).await;

    // A persistent publish is held, and its connection told why.
    let mut blocked = publisher.blocked();
    let pending = publisher.publish(message(1)).await.expect("sent");
    tokio::pin!(pending);
    let reason = within("Blocked", blocked.wait_for(Option::is_some))
        .await
        .expect("notice")
        .clone();
    assert!(
        reason.is_some_and(|r| r.contains("--disk-free-limit")),
        "the notice names the limit"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "no confirm while blocked"
    );
    // Everyone else carries on: a transient publish, a get, an ack.
    let mut transient = message(2);
    transient.properties.persistent = false;
    let outcome = within("a transient confirm", other.publish_and_confirm(transient))
        .await
        .expect("transient publish");
    assert_eq!(outcome, PublishOutcome::Confirmed);
    let first = within("a get", other.get("q", false))
        .await
        .expect("get")
        .expect("message 0");
    within("an ack", other.ack_durable(first.delivery_tag, false))
        .await
        .expect("ack");

    // Space comes back: the alarm clears, the held publish is confirmed and stored.
    std::fs::remove_file(&filler).expect("freeing space");
    let outcome = within("the held confirm", &mut pending)
        .await
        .expect("confirm");
    assert_eq!(outcome, PublishOutcome::Confirmed);
    within("Unblocked", blocked.wait_for(Option::is_none))
        .await
        .expect("notice");
    wait_for_alarms(&other, &[]).await;
    assert_eq!(drain(&other).await, [2, 1]);
    assert!(d.logs().contains("disk alarm"), "the alarm is logged");
}
