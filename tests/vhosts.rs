//! Virtual hosts (docs/access-control.md): each has its own exchanges and queues, the same
//! name in two is two things, deleting one deletes what is in it durably, and they survive
//! restarts and `kill -9`.

mod common;

use common::{durable_queue, ok, wait_get, within, TestDaemon};
use warren::admin_types::{ConnectionInfo, VhostInfo};
use warren::client::{Client, ClientError, ConnectOptions, OutgoingMessage, QueueOptions};
use warren_protocol::{ErrorCode, FieldTable, FieldValue};

/// Adds `name` and gives guest every permission on it.
fn add_vhost(d: &TestDaemon, name: &str) {
    ok(&d.cli(&["vhost", "add", name]));
    d.grant_all("guest", name);
}

async fn client_in(d: &TestDaemon, vhost: &str) -> Client {
    Client::connect_with(d.addr(), &ConnectOptions::default().vhost(vhost))
        .await
        .unwrap_or_else(|e| panic!("connecting to vhost {vhost}: {e}"))
}

async fn publish(c: &Client, queue: &str, body: &str) {
    let outcome = c
        .publish_and_confirm(OutgoingMessage::new("", queue, body.to_owned()).persistent())
        .await
        .expect("publish");
    assert!(outcome.is_confirmed());
}

fn passive() -> QueueOptions {
    QueueOptions {
        passive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_same_names_in_two_vhosts_are_independent() {
    let d = TestDaemon::start();
    add_vhost(&d, "a");
    add_vhost(&d, "b");
    let a = client_in(&d, "a").await;
    let b = client_in(&d, "b").await;
    durable_queue(&a, "jobs", FieldTable::new()).await;
    // Not yet in b, nor in /.
    let err = b.declare_queue("jobs", passive()).await.unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    durable_queue(&b, "jobs", FieldTable::new()).await;
    publish(&a, "jobs", "for a").await;
    publish(&b, "jobs", "for b 1").await;
    publish(&b, "jobs", "for b 2").await;
    assert_eq!(&wait_get(&a, "jobs").await.body[..], b"for a");
    assert_eq!(a.get("jobs", false).await.expect("get"), None);
    assert_eq!(&wait_get(&b, "jobs").await.body[..], b"for b 1");

    // A delayed message is released in its own virtual host.
    let delayed = OutgoingMessage::new("", "jobs", "later for a")
        .persistent()
        .header("x-delay", FieldValue::Int(100));
    assert!(a
        .publish_and_confirm(delayed)
        .await
        .expect("delayed publish")
        .is_confirmed());
    assert_eq!(&wait_get(&a, "jobs").await.body[..], b"later for a");
    assert_eq!(&wait_get(&b, "jobs").await.body[..], b"for b 2");
    assert_eq!(b.get("jobs", false).await.expect("get"), None);

    // Listings are per virtual host: --vhost on the command line.
    let in_a = ok(&d.cli(&["queue", "list", "--vhost", "a"]));
    assert!(in_a.contains("jobs"), "{in_a}");
    let in_root = ok(&d.cli(&["queue", "list"]));
    assert!(!in_root.contains("jobs"), "{in_root}");
    let vhosts: Vec<VhostInfo> =
        serde_json::from_str(&ok(&d.cli(&["vhost", "list", "--json"]))).expect("JSON");
    let names: Vec<&str> = vhosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["/", "a", "b"]);
    // Connections are listed server-wide, each with its user and virtual host.
    let connections: Vec<ConnectionInfo> =
        serde_json::from_str(&ok(&d.cli(&["connection", "list", "--json"]))).expect("JSON");
    for vhost in ["a", "b", "/"] {
        assert!(
            connections
                .iter()
                .any(|c| c.vhost == vhost && c.user == "guest"),
            "{connections:?}"
        );
    }
}

#[tokio::test]
async fn deleting_a_vhost_deletes_its_queues_durably() {
    let mut d = TestDaemon::start();
    add_vhost(&d, "tmp");
    let c = client_in(&d, "tmp").await;
    durable_queue(&c, "kept-nowhere", FieldTable::new()).await;
    publish(&c, "kept-nowhere", "gone").await;
    c.close().await.expect("close");
    // / has a queue of the same name that must stay.
    let root = d.client().await;
    durable_queue(&root, "kept-nowhere", FieldTable::new()).await;
    publish(&root, "kept-nowhere", "stays").await;
    root.close().await.expect("close");

    ok(&d.cli(&["vhost", "delete", "tmp"]));
    let out = d.cli(&["vhost", "list"]);
    assert!(!ok(&out).contains("tmp"));
    d.restart();
    let listed = ok(&d.cli(&["vhost", "list"]));
    assert!(!listed.contains("tmp"), "{listed}");
    // Recreated, it is empty: the queue and its message went with it, and guest's
    // permissions too.
    ok(&d.cli(&["vhost", "add", "tmp"]));
    let refused = Client::connect_with(d.addr(), &ConnectOptions::default().vhost("tmp")).await;
    assert!(
        matches!(refused, Err(ClientError::Server { code, .. }) if code == ErrorCode::AccessRefused.as_u16())
    );
    add_vhost_permissions_only(&d, "tmp");
    let c = client_in(&d, "tmp").await;
    let err = c
        .declare_queue("kept-nowhere", passive())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    let root = d.client().await;
    assert_eq!(&wait_get(&root, "kept-nowhere").await.body[..], b"stays");
}

fn add_vhost_permissions_only(d: &TestDaemon, name: &str) {
    d.grant_all("guest", name);
}

#[tokio::test]
async fn an_unknown_vhost_is_refused_clearly_by_the_cli() {
    let d = TestDaemon::start();
    let out = d.cli(&["queue", "list", "--vhost", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT_FOUND (404): no vhost 'nope'"), "{err}");
    let out = d.cli(&["vhost", "delete", "nope"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn vhosts_and_their_messages_survive_kill_9() {
    let mut d = TestDaemon::start();
    add_vhost(&d, "prod");
    let c = client_in(&d, "prod").await;
    durable_queue(&c, "orders", FieldTable::new()).await;
    for i in 0..3 {
        publish(&c, "orders", &format!("order {i}")).await;
    }
    d.kill9();
    d.restart();
    let c = client_in(&d, "prod").await;
    for i in 0..3 {
        let got = wait_get(&c, "orders").await;
        assert_eq!(got.body, format!("order {i}").into_bytes());
    }
    // A connection to a virtual host deleted under it is closed (CONNECTION_FORCED) and
    // creates nothing there.
    let held = client_in(&d, "prod").await;
    ok(&d.cli(&["vhost", "delete", "prod"]));
    let err = within(
        "a declare in a deleted vhost",
        held.declare_queue("again", QueueOptions::default()),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("CONNECTION_FORCED (320): vhost 'prod' was deleted"),
        "{err}"
    );
}

#[tokio::test]
async fn dead_letters_stay_in_their_vhost() {
    let d = TestDaemon::start();
    add_vhost(&d, "a");
    let a = client_in(&d, "a").await;
    let root = d.client().await;
    // A "dead" queue in both: the dead letter goes to a's.
    durable_queue(&a, "dead", FieldTable::new()).await;
    durable_queue(&root, "dead", FieldTable::new()).await;
    let mut args = FieldTable::new();
    args.insert(
        "x-dead-letter-exchange".into(),
        FieldValue::String(String::new()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        FieldValue::String("dead".into()),
    );
    durable_queue(&a, "work", args).await;
    publish(&a, "work", "doomed").await;
    let got = wait_get(&a, "work").await;
    a.reject(got.delivery_tag, false).await.expect("reject");
    assert_eq!(&wait_get(&a, "dead").await.body[..], b"doomed");
    assert_eq!(root.get("dead", false).await.expect("get"), None);
}
