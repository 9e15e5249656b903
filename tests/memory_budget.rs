//! The memory budget (`--memory-limit`): past it every publisher is blocked — told so, its
//! frames unread — until consumers drain; consumers, acks and admin go on, and nothing is
//! dropped or lost.

mod common;

use std::time::{Duration, Instant};

use common::{within, TestDaemon};
use warren::admin_types::Status;
use warren::client::{Client, OutgoingMessage, PublishOutcome};
use warren_protocol::FieldTable;

const BODY: usize = 1 << 20;

fn message(i: usize) -> OutgoingMessage {
    let mut body = format!("{i:08}").into_bytes();
    body.resize(BODY, b'.');
    OutgoingMessage::new("", "q", body)
}

async fn status(c: &Client) -> Status {
    within("status", c.admin_typed("status", FieldTable::new()))
        .await
        .expect("status")
}

#[tokio::test]
async fn past_the_memory_limit_publishers_wait_until_consumers_drain() {
    let d = TestDaemon::start_with(&["--memory-limit", "128MiB"]);
    let publisher = d.client().await;
    let admin = d.client().await;
    let consumer = d.client().await;
    publisher
        .declare_queue("q", Default::default())
        .await
        .expect("declare");
    let before = status(&admin).await;
    assert_eq!(before.memory_limit_bytes, 128 << 20);
    assert!(
        before.memory_used_bytes > 0 && before.memory_used_bytes < 96 << 20,
        "{before:?}"
    );

    // Publish 1 MiB transient messages, each confirmed, until the server blocks us.
    let mut blocked = publisher.blocked();
    let mut confirmed = 0usize;
    let held = loop {
        assert!(confirmed < 200, "never blocked after {confirmed} MiB");
        let mut pending = Box::pin(publisher.publish(message(confirmed)).await.expect("sent"));
        tokio::select! {
            outcome = &mut pending => {
                assert_eq!(outcome.expect("confirm"), PublishOutcome::Confirmed);
                confirmed += 1;
            }
            notice = blocked.wait_for(Option::is_some) => {
                let reason = notice.expect("notice").clone().expect("reason");
                assert!(reason.contains("--memory-limit"), "{reason}");
                break pending;
            }
        }
    };
    assert!(confirmed >= 20, "blocked after only {confirmed} MiB");
    let during = status(&admin).await;
    assert_eq!(during.alarms, ["memory"]);
    assert!(during.memory_used_bytes > 128 << 20, "{during:?}");

    // Consumers and acks go on: drain until the publisher is let go.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while blocked.borrow().is_some() {
        assert!(Instant::now() < deadline, "still blocked after draining");
        if let Some(m) = within("a get", consumer.get("q", false))
            .await
            .expect("get")
        {
            got.push(String::from_utf8_lossy(&m.body[..8]).into_owned());
            within("an ack", consumer.ack_durable(m.delivery_tag, false))
                .await
                .expect("ack");
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let outcome = within("the held confirm", held).await.expect("confirm");
    assert_eq!(outcome, PublishOutcome::Confirmed, "held, not dropped");
    assert_eq!(status(&admin).await.alarms, Vec::<String>::new());

    // Everything published is there, once, in order.
    while let Some(m) = within("a get", consumer.get("q", true)).await.expect("get") {
        got.push(String::from_utf8_lossy(&m.body[..8]).into_owned());
    }
    let want: Vec<String> = (0..=confirmed).map(|i| format!("{i:08}")).collect();
    assert_eq!(got, want);
    assert!(d.logs().contains("memory alarm"), "the alarm is logged");
}

/// A login's argon2 working memory (19 MiB) is given back when the login is done: logins
/// leave the daemon's allocated bytes where they were. (It was kept per password-hashing
/// thread, 19 MiB each, for the daemon's life.) The last login's may be freed a moment
/// after its client is in, so the check waits, bounded.
#[tokio::test]
async fn logins_leave_no_password_hashing_memory_behind() {
    let d = TestDaemon::start();
    let admin = d.client().await;
    let before = status(&admin).await.memory_used_bytes;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(d.client().await);
    }
    let mut after = status(&admin).await.memory_used_bytes;
    for _ in 0..100 {
        if after < before + (8 << 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = status(&admin).await.memory_used_bytes;
    }
    assert!(
        after < before + (8 << 20),
        "six logins left {} bytes more allocated ({before} -> {after})",
        after.saturating_sub(before)
    );
}
