//! `warren dlq replay` interrupted by `kill -9` of the daemon: each chunk of the replay
//! leaves the dead-letter queue in the same store commit that puts it back in its original
//! queue, so after a restart every message is in exactly one of the two, in order.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{durable_queue, ready, within, TestDaemon};
use warren::client::{
    Client, ConsumeOptions, ExchangeKind, ExchangeOptions, FieldTable, FieldValue,
};

/// Dead letters replayed while the daemon is killed: enough for tens of store commits.
const MESSAGES: usize = 20_000;

/// Bound on building the dead-letter queue and on the replay making progress.
const SLOW_WAIT: Duration = Duration::from_secs(120);

/// A ~100-byte body whose first six characters number it.
fn body(i: usize) -> String {
    format!("{i:06}-{}", "x".repeat(93))
}

/// Every ready message of `queue` (taken without acks), as the numbers their bodies start
/// with.
async fn take_all(c: &Client, queue: &str) -> Vec<usize> {
    let n = ready(c, queue).await;
    let mut consumer = c
        .consume(
            queue,
            ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let d = within(
            &format!("message {} of {n} from {queue}", out.len()),
            consumer.next(),
        )
        .await
        .unwrap_or_else(|| panic!("the consumer on {queue} ended"));
        let text = std::str::from_utf8(&d.body).expect("UTF-8 body");
        out.push(text[..6].parse().expect("numbered body"));
    }
    c.cancel(consumer.tag()).await.unwrap();
    out
}

/// Waits (bounded by [`SLOW_WAIT`]) until `queue` holds `n` ready messages.
async fn wait_ready(c: &Client, queue: &str, n: u64) {
    let deadline = Instant::now() + SLOW_WAIT;
    loop {
        let have = ready(c, queue).await;
        if have == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} has {have} messages after {SLOW_WAIT:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_large_replay_leaves_every_message_in_exactly_one_queue() {
    let mut d = TestDaemon::start();
    let c = d.client().await;
    // Messages published to `src` with key `k` land in `staging`, expire there at once and
    // are dead-lettered to `dlq` with ("src", "k") as their origin. Then `k` is rebound to
    // `orig`, which is where the replay sends them back.
    let durable = ExchangeOptions {
        durable: true,
        ..Default::default()
    };
    c.declare_exchange("src", ExchangeKind::Direct, durable.clone())
        .await
        .unwrap();
    c.declare_exchange("dlx", ExchangeKind::Fanout, durable)
        .await
        .unwrap();
    durable_queue(&c, "dlq", FieldTable::new()).await;
    c.bind("dlq", "dlx", "", FieldTable::new()).await.unwrap();
    let staging_args: FieldTable = [
        ("x-message-ttl".to_owned(), FieldValue::Int(1)),
        (
            "x-dead-letter-exchange".to_owned(),
            FieldValue::String("dlx".into()),
        ),
    ]
    .into_iter()
    .collect();
    durable_queue(&c, "staging", staging_args).await;
    c.bind("staging", "src", "k", FieldTable::new())
        .await
        .unwrap();
    let input: String = (0..MESSAGES).map(|i| body(i) + "\n").collect();
    let out = d.cli_with_stdin(
        &["publish", "src", "k", "--lines", "--persistent"],
        Some(&input),
    );
    assert!(out.status.success(), "publish failed: {out:?}");
    wait_ready(&c, "dlq", MESSAGES as u64).await;
    c.unbind("staging", "src", "k", FieldTable::new())
        .await
        .unwrap();
    durable_queue(&c, "orig", FieldTable::new()).await;
    c.bind("orig", "src", "k", FieldTable::new()).await.unwrap();

    // The replay runs as its own process; the daemon dies once some of it has committed.
    let mut replay = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["dlq", "replay", "dlq"])
        .env("WARREN_SERVER", d.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning warren dlq replay");
    let deadline = Instant::now() + SLOW_WAIT;
    let moved_before_kill = loop {
        let moved = ready(&c, "orig").await;
        if let Some(status) = replay.try_wait().unwrap() {
            let out = replay.wait_with_output().unwrap();
            panic!(
                "the replay finished ({status}) before it could be interrupted ({moved} seen \
                 in orig); raise MESSAGES. stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if moved > 0 {
            break moved;
        }
        assert!(
            Instant::now() < deadline,
            "the replay moved nothing in {SLOW_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    d.kill9();
    drop(c);
    let out = replay.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the replay should have lost its server; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.starts_with("error: replaying the dead letters in 'dlq': ")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        (moved_before_kill as usize) < MESSAGES,
        "{moved_before_kill} moved"
    );

    d.restart();
    let c = d.client().await;
    let in_orig = ready(&c, "orig").await;
    let in_dlq = ready(&c, "dlq").await;
    assert_eq!(
        in_orig + in_dlq,
        MESSAGES as u64,
        "orig {in_orig} + dlq {in_dlq}"
    );
    assert!(in_orig >= moved_before_kill, "a committed chunk was lost");
    assert!(
        in_dlq > 0,
        "killed right after the first chunks, yet nothing was left"
    );

    // Finishing the replay (from the recovered store) moves exactly the rest. The replay goes
    // in queue order, so orig held a prefix and the DLQ the rest: orig now holds every number
    // exactly once, in order; a message that had been in both queues would show up twice.
    let out = d.cli(&["dlq", "replay", "dlq"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "dead letters in queue 'dlq' replayed: {in_dlq} message{}\n",
            if in_dlq == 1 { "" } else { "s" }
        )
    );
    assert_eq!(ready(&c, "dlq").await, 0);
    let all = take_all(&c, "orig").await;
    assert_eq!(all.len(), MESSAGES);
    let expected: Vec<usize> = (0..MESSAGES).collect();
    assert!(all == expected, "not every message exactly once, in order");
}
