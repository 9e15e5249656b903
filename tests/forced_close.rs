//! Deleting a user closes its connections, deleting a virtual host the connections in it,
//! with `CONNECTION_FORCED` (320) and the reason, as RabbitMQ does; other connections go on.
//! Changing a password or permissions closes nothing (docs/access-control.md).

mod common;

use common::{ok, within, TestDaemon};
use warren::client::{Client, ClientError, ConnectOptions};

fn add_user(d: &TestDaemon, name: &str, vhost: &str) {
    ok(&d.cli_with_stdin(&["user", "add", name, "--password-stdin"], Some("secret\n")));
    d.grant_all(name, vhost);
}

async fn connect(d: &TestDaemon, user: &str, vhost: &str) -> Client {
    let mut options = ConnectOptions::new(user, "secret");
    options.vhost = vhost.to_owned();
    Client::connect_with(d.addr(), &options)
        .await
        .unwrap_or_else(|e| panic!("{user} on {vhost}: {e}"))
}

/// Waits (bounded) for the server to close `c`, and returns how: code and reason.
async fn closed(c: &Client) -> (u16, String) {
    for _ in 0..100 {
        match within("a request", c.declare_queue("probe", Default::default())).await {
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(ClientError::Closed { code, reason }) => return (code, reason),
            Err(other) => panic!("expected the connection closed, got {other}"),
        }
    }
    panic!("the connection was not closed");
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections_only() {
    let d = TestDaemon::start();
    add_user(&d, "app", "/");
    add_user(&d, "other", "/");
    let app = connect(&d, "app", "/").await;
    let app2 = connect(&d, "app", "/").await;
    let other = connect(&d, "other", "/").await;

    ok(&d.cli(&["user", "delete", "app"]));
    for c in [&app, &app2] {
        assert_eq!(closed(c).await, (320, "user 'app' was deleted".to_owned()));
    }
    other
        .declare_queue("still-here", Default::default())
        .await
        .expect("another user's connection goes on");
    // Logged when the connection's task ends, just after the client has its Close.
    let logged = || {
        d.logs()
            .contains("closed by the server: user 'app' was deleted")
    };
    for _ in 0..200 {
        if logged() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(logged(), "{}", d.logs());
}

#[tokio::test]
async fn deleting_a_vhost_closes_the_connections_in_it_only() {
    let d = TestDaemon::start();
    ok(&d.cli(&["vhost", "add", "v2"]));
    add_user(&d, "app", "v2");
    d.grant_all("app", "/");
    let in_v2 = connect(&d, "app", "v2").await;
    let in_root = connect(&d, "app", "/").await;

    ok(&d.cli(&["vhost", "delete", "v2"]));
    assert_eq!(
        closed(&in_v2).await,
        (320, "vhost 'v2' was deleted".to_owned())
    );
    in_root
        .declare_queue("still-here", Default::default())
        .await
        .expect("the same user's connection in another vhost goes on");
}

#[test]
fn an_administrator_deleting_its_own_user_is_told_it_worked() {
    let d = TestDaemon::start();
    ok(&d.cli_with_stdin(
        &[
            "user",
            "add",
            "ops",
            "--tags",
            "administrator",
            "--password-stdin",
        ],
        Some("secret\n"),
    ));
    d.grant_all("ops", "/");
    // The reply goes out before the Close that follows it.
    let out = ok(&d.cli_with_stdin(
        &["--user", "ops", "--password-stdin", "user", "delete", "ops"],
        Some("secret\n"),
    ));
    assert_eq!(out, "user 'ops' deleted\n");
}

#[tokio::test]
async fn changing_a_password_or_permissions_closes_nothing() {
    let d = TestDaemon::start();
    add_user(&d, "app", "/");
    let app = connect(&d, "app", "/").await;
    ok(&d.cli_with_stdin(
        &["user", "passwd", "app", "--password-stdin"],
        Some("new-secret\n"),
    ));
    ok(&d.cli(&["permission", "clear", "app"]));
    // The connection stays open; what it may do was decided when it opened.
    app.declare_queue("still-open", Default::default())
        .await
        .expect("the connection goes on");
}
