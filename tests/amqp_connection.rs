//! The AMQP 0-9-1 listener's connection level, through lapin (a RabbitMQ client nobody here
//! wrote): connect, channels, close; logins refused as RabbitMQ refuses them; heartbeat
//! negotiation.

mod common;

use common::{TestDaemon, WAIT};
use lapin::{Connection, ConnectionProperties, ErrorKind};

fn url(d: &TestDaemon, user: &str, password: &str, vhost: &str, query: &str) -> String {
    let addr = d.amqp_addr().expect("the AMQP listener is on");
    format!("amqp://{user}:{password}@{addr}/{vhost}{query}")
}

async fn connect(url: &str) -> lapin::Result<Connection> {
    tokio::time::timeout(
        WAIT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .expect("connect answered in time")
}

/// Connects expecting a refusal.
async fn refused(url: &str) -> lapin::Error {
    match connect(url).await {
        Ok(_) => panic!("connected to {url}, expected a refusal"),
        Err(e) => e,
    }
}

/// The reply code of a refused connection: the server's `connection.close`.
fn reply_code(err: &lapin::Error) -> u16 {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("expected the server's connection.close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_connects_opens_channels_and_closes() {
    let d = TestDaemon::start();
    let conn = connect(&url(&d, "guest", "guest", "%2f", ""))
        .await
        .expect("connected");
    assert_eq!(conn.configuration().frame_max(), 131_072);
    assert_eq!(conn.configuration().channel_max(), 2047);
    let one = conn.create_channel().await.expect("channel");
    let two = conn.create_channel().await.expect("channel");
    assert_ne!(one.id(), two.id());
    one.close(200, "bye".into()).await.expect("channel closed");
    // The other channel is untouched, and a new one can take the closed one's place.
    assert!(two.status().connected());
    let three = conn.create_channel().await.expect("channel");
    assert!(three.status().connected());
    conn.close(200, "bye".into())
        .await
        .expect("connection closed");
}

#[tokio::test]
async fn amqplain_logs_in_too() {
    let d = TestDaemon::start();
    let conn = connect(&url(
        &d,
        "guest",
        "guest",
        "%2f",
        "?auth_mechanism=amqplain",
    ))
    .await
    .expect("connected with AMQPLAIN");
    conn.close(200, "bye".into()).await.expect("closed");
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_access_refused() {
    let d = TestDaemon::start();
    let err = refused(&url(&d, "guest", "wrong", "%2f", "")).await;
    assert_eq!(reply_code(&err), 403, "{err}");
    let err = refused(&url(&d, "nobody", "guest", "%2f", "")).await;
    assert_eq!(reply_code(&err), 403, "{err}");
}

#[tokio::test]
async fn an_unknown_vhost_or_one_without_permissions_is_not_allowed() {
    let d = TestDaemon::start();
    let err = refused(&url(&d, "guest", "guest", "nowhere", "")).await;
    assert_eq!(reply_code(&err), 530, "{err}");
    assert!(d.cli(&["vhost", "add", "other"]).status.success());
    let err = refused(&url(&d, "guest", "guest", "other", "")).await;
    assert_eq!(reply_code(&err), 530, "{err}");
}

#[tokio::test]
async fn heartbeats_are_the_clients_choice_within_the_servers_offer() {
    let d = TestDaemon::start_with(&["--heartbeat-secs", "20"]);
    let conn = connect(&url(&d, "guest", "guest", "%2f", ""))
        .await
        .expect("connected");
    assert_eq!(conn.configuration().heartbeat(), 20, "the server's offer");
    conn.close(200, "bye".into()).await.expect("closed");
    let conn = connect(&url(&d, "guest", "guest", "%2f", "?heartbeat=5"))
        .await
        .expect("connected");
    assert_eq!(
        conn.configuration().heartbeat(),
        5,
        "a shorter one asked for"
    );
    conn.close(200, "bye".into()).await.expect("closed");
}

#[tokio::test]
async fn amqp_listen_none_turns_the_listener_off() {
    let d = TestDaemon::start_with(&["--amqp-listen", "none"]);
    assert_eq!(d.amqp_addr(), None);
}

#[tokio::test]
async fn deleting_the_vhost_closes_its_amqp_connections_with_connection_forced() {
    let d = TestDaemon::start();
    assert!(d.cli(&["vhost", "add", "doomed"]).status.success());
    d.grant_all("guest", "doomed");
    let conn = connect(&url(&d, "guest", "guest", "doomed", ""))
        .await
        .expect("connected");
    let ch = conn.create_channel().await.expect("channel");
    assert!(d.cli(&["vhost", "delete", "doomed"]).status.success());
    // Bounded: the server closes it at once; lapin notices on its next read.
    let mut closed = false;
    for _ in 0..200 {
        if !conn.status().connected() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(closed, "the connection was not closed");
    let err = ch
        .queue_declare(
            "q".into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect_err("the connection is gone");
    // lapin reports the server's reason where it kept it, else that it is not connected.
    if let ErrorKind::ProtocolError(e) = err.kind() {
        assert_eq!(e.get_id(), 320, "{err}");
    }
}

#[tokio::test]
async fn an_open_amqp_connection_does_not_hold_up_a_clean_shutdown() {
    let mut d = TestDaemon::start();
    let conn = connect(&url(&d, "guest", "guest", "%2f", ""))
        .await
        .expect("connected");
    let _ch = conn.create_channel().await.expect("channel");
    assert!(d.stop(), "the daemon stopped cleanly");
    assert!(
        d.logs()
            .contains("broker forced connection closure with reason 'shutdown'"),
        "the client was told why"
    );
}
