//! AMQP 0-9-1 over TLS (`amqps`, `--amqp-tls-listen`): the daemon with a certificate made
//! by the test serves RabbitMQ clients inside TLS, with the certificate and key the native
//! TLS listener uses; a plain AMQP client on that port gets no AMQP from it; `warren
//! connection list` names the door each connection came through and the AMQP client.
//!
//! lapin is built without a TLS stack here (its TLS features pull aws-lc-rs or OpenSSL), so
//! the test puts rustls in front of it: a loopback forwarder that lapin connects to in plain
//! AMQP and that carries the bytes to the daemon inside a TLS session it verified against
//! the test's CA. What the daemon sees is a real TLS client speaking lapin's AMQP.

mod common;

use common::pki::Pki;
use common::{ok, within, TestDaemon};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback forwarder: each connection to the returned address is carried to `amqps`
/// inside TLS (verified against the test's CA for the name `localhost`). Returns the
/// address lapin connects to.
async fn tls_forwarder(pki: &Pki, amqps: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address").to_string();
    let connector = pki.connector();
    tokio::spawn(async move {
        while let Ok((mut plain, _)) = listener.accept().await {
            let connector = connector.clone();
            let amqps = amqps.clone();
            tokio::spawn(async move {
                let Ok(tcp) = TcpStream::connect(&amqps).await else {
                    return;
                };
                let name = ServerName::try_from("localhost").expect("a server name");
                let Ok(mut tls) = connector.connect(name, tcp).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
            });
        }
    });
    addr
}

async fn lapin_via(addr: &str) -> lapin::Result<Connection> {
    within(
        "the AMQP connection",
        Connection::connect(
            &format!("amqp://guest:guest@{addr}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await
}

#[tokio::test]
async fn lapin_publishes_and_gets_over_amqps() {
    let pki = Pki::new();
    // No --tls-listen: the certificate serves AMQP over TLS alone.
    let d = pki.start(&[]);
    let amqps = d.amqp_tls_addr().expect("runtime.json has amqp_tls_listen");
    let conn = lapin_via(&tls_forwarder(&pki, amqps.clone()).await)
        .await
        .expect("connected over TLS");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    ch.queue_declare(
        "over-tls".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declared");
    let confirm = ch
        .basic_publish(
            "".into(),
            "over-tls".into(),
            BasicPublishOptions::default(),
            b"sealed",
            BasicProperties::default(),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack(), "{confirm:?}");
    let got = within(
        "basic.get",
        ch.basic_get("over-tls".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("get")
    .expect("a message");
    assert_eq!(got.delivery.data, b"sealed");
    // The same queue through the plain AMQP door and the native CLI: one broker.
    let listed = ok(&d.cli(&["queue", "list"]));
    assert!(listed.contains("over-tls"), "{listed}");
    let status = ok(&d.cli(&["status"]));
    assert!(status.contains(&format!("amqps://{amqps}")), "{status}");
    ch.queue_delete("over-tls".into(), QueueDeleteOptions::default())
        .await
        .expect("deleted");
    conn.close(200, "bye".into()).await.expect("closed");
}

#[tokio::test]
async fn plain_amqp_on_the_tls_port_is_refused() {
    let pki = Pki::new();
    let d = pki.start(&[]);
    let amqps = d.amqp_tls_addr().expect("runtime.json has amqp_tls_listen");
    // A plain client's protocol header gets a TLS alert (or nothing), never AMQP's.
    let mut raw = TcpStream::connect(&amqps).await.expect("connect");
    raw.write_all(b"AMQP\x00\x00\x09\x01").await.expect("write");
    let mut reply = Vec::new();
    within("the server closing", raw.read_to_end(&mut reply))
        .await
        .expect("read");
    assert!(!reply.starts_with(b"AMQP"), "{reply:?}");
    if let Some(first) = reply.first() {
        assert_eq!(*first, 0x15, "a TLS alert record, got {reply:?}");
    }
    // lapin, plain, on the TLS port: refused.
    let err = lapin_via(&amqps).await.expect_err("no plain AMQP here");
    drop(err);
    // The plain AMQP door is unaffected, and TLS clients still get in.
    let conn = d.amqp().await;
    conn.close(200, "bye".into()).await.expect("closed");
    let conn = lapin_via(&tls_forwarder(&pki, amqps).await)
        .await
        .expect("connected over TLS");
    conn.close(200, "bye".into()).await.expect("closed");
}

#[tokio::test]
async fn amqp_over_tls_can_be_turned_off_or_moved() {
    let pki = Pki::new();
    // --amqp-tls-listen none with the native TLS listener on: only the native one.
    let d = pki.start(&["--amqp-tls-listen", "none", "--tls-listen", "127.0.0.1:0"]);
    assert_eq!(d.amqp_tls_addr(), None);
    assert!(d.tls_addr().is_some());
    // Without a certificate there is no AMQP over TLS (asking for one is refused: a unit
    // test of `ServeArgs::amqp_tls`).
    let d = TestDaemon::start();
    assert_eq!(d.amqp_tls_addr(), None);
}

#[tokio::test]
async fn connection_list_names_the_door_and_the_amqp_client() {
    let pki = Pki::new();
    let d = pki.start(&["--tls-listen", "127.0.0.1:0"]);
    let amqps = d.amqp_tls_addr().expect("runtime.json has amqp_tls_listen");
    let tls = warren::tls::ClientTls::new(&warren::tls::TlsOptions {
        ca: Some(pki.arg("ca.pem").into()),
        ..warren::tls::TlsOptions::default()
    })
    .expect("client TLS configuration");
    let native_tls = within(
        "the native TLS connection",
        warren::client::Client::connect_tls(&d.tls_addr().expect("tls_listen"), &tls),
    )
    .await
    .expect("connected over native TLS");
    let plain_amqp = d.amqp().await;
    let over_tls = lapin_via(&tls_forwarder(&pki, amqps).await)
        .await
        .expect("connected over TLS");
    // A client that names itself, with a control character an operator's terminal must not
    // get, and a name longer than a table cell should hold.
    let long = "v".repeat(100);
    let named = within(
        "the named AMQP connection",
        Connection::connect(
            &format!(
                "amqp://guest:guest@{}/%2f",
                d.amqp_addr().expect("amqp_listen")
            ),
            ConnectionProperties::default()
                .with_client_property("product".into(), "billing\x1b[31m-app".into())
                .with_client_property("version".into(), long.as_str().into()),
        ),
    )
    .await
    .expect("connected");

    let listed: serde_json::Value =
        serde_json::from_str(&ok(&d.cli(&["connection", "list", "--json"]))).expect("JSON");
    let rows = listed.as_array().expect("a list");
    let with = |protocol: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|c| c["protocol"] == protocol).collect()
    };
    // The CLI's own connection, and Client::connect_tls's.
    assert!(!with("native").is_empty(), "{listed:#}");
    assert_eq!(with("native-tls").len(), 1, "{listed:#}");
    assert_eq!(
        with("native-tls")[0]["client_product"],
        serde_json::Value::Null
    );
    let amqps_rows = with("amqps");
    assert_eq!(amqps_rows.len(), 1, "{listed:#}");
    assert_eq!(amqps_rows[0]["client_product"], "lapin");
    let lapin_version = amqps_rows[0]["client_version"].as_str().expect("a version");
    assert!(lapin_version.starts_with("4."), "{lapin_version}");
    let amqp_rows = with("amqp");
    assert_eq!(amqp_rows.len(), 2, "{listed:#}");
    let named_row = amqp_rows
        .iter()
        .find(|c| c["client_product"] != "lapin")
        .expect("the named client");
    assert_eq!(named_row["client_product"], "billing[31m-app");
    assert_eq!(named_row["client_version"], "v".repeat(64));

    let table = ok(&d.cli(&["connection", "list"]));
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header[..4], ["ID", "PEER", "PROTOCOL", "CLIENT"], "{table}");
    assert!(table.contains(&format!("lapin {lapin_version}")), "{table}");
    assert!(!table.contains('\x1b'), "{table}");
    for door in ["native-tls", "amqps", "amqp"] {
        assert!(table.contains(&format!("  {door}  ")), "{door} in\n{table}");
    }
    drop(native_tls);
    for conn in [plain_amqp, over_tls, named] {
        conn.close(200, "bye".into()).await.expect("closed");
    }
}
