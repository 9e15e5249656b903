//! Permissions (docs/access-control.md): RabbitMQ's configure / write / read regular
//! expressions per user and virtual host, checked on every operation; a refusal names the
//! resource and the user, and the connection stays usable. Admin commands need tags.

mod common;

use common::{ok, wait_get, TestDaemon};
use warren::client::{
    Client, ClientError, ConnectOptions, ConsumeOptions, ExchangeKind, ExchangeOptions,
    OutgoingMessage, QueueOptions,
};
use warren_protocol::{ErrorCode, FieldTable};

/// Adds `name` (password `pw-NAME`) with `tags` and these patterns on `/`.
fn add_user(d: &TestDaemon, name: &str, tags: &str, configure: &str, write: &str, read: &str) {
    ok(&d.cli_with_stdin(
        &["user", "add", name, "--password-stdin", "--tags", tags],
        Some(&format!("pw-{name}\n")),
    ));
    ok(&d.cli(&[
        "permission",
        "set",
        name,
        "--configure",
        configure,
        "--write",
        write,
        "--read",
        read,
    ]));
}

async fn login(d: &TestDaemon, name: &str) -> Client {
    Client::connect_with(d.addr(), &ConnectOptions::new(name, format!("pw-{name}")))
        .await
        .unwrap_or_else(|e| panic!("{name} logs in: {e}"))
}

/// The refusal of a request: 403 with the message, which names the user.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>, user: &str) -> String {
    match result {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::AccessRefused.as_u16(), "{message}");
            assert!(message.contains(&format!("user '{user}'")), "{message}");
            message
        }
        other => panic!("expected ACCESS_REFUSED, got {other:?}"),
    }
}

#[tokio::test]
async fn configure_write_and_read_are_checked_per_resource() {
    let d = TestDaemon::start();
    // Guest sets the stage: an exchange and queues app may not configure.
    let guest = d.client().await;
    guest
        .declare_exchange(
            "orders",
            ExchangeKind::Direct,
            ExchangeOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .expect("exchange");
    for q in ["app.in", "secret"] {
        guest
            .declare_queue(
                q,
                QueueOptions {
                    durable: true,
                    ..Default::default()
                },
            )
            .await
            .expect("queue");
    }
    add_user(
        &d,
        "app",
        "",
        "^app\\.",
        "^(orders|app\\..*)$",
        "^(app\\..*|orders)$",
    );
    let app = login(&d, "app").await;

    // configure: only app.* names.
    app.declare_queue("app.jobs", QueueOptions::default())
        .await
        .expect("app.jobs may be declared");
    let m = refused(
        app.declare_queue("jobs", QueueOptions::default()).await,
        "app",
    );
    assert_eq!(
        m,
        "access to queue 'jobs' in vhost '/' refused for user 'app': it needs configure permission"
    );
    refused(app.delete_queue("secret", false, false).await, "app");
    refused(
        app.declare_exchange(
            "app-events",
            ExchangeKind::Fanout,
            ExchangeOptions::default(),
        )
        .await,
        "app",
    );
    // A server-named queue is checked by the name the server gives it (amq.gen-...).
    let m = refused(
        app.declare_queue(
            "",
            QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await,
        "app",
    );
    assert!(m.contains("queue 'amq.gen-"), "{m}");

    // bind: write on the queue, read on the exchange.
    app.bind("app.in", "orders", "new", FieldTable::new())
        .await
        .expect("bind app.in to orders");
    let m = refused(
        app.bind("secret", "orders", "new", FieldTable::new()).await,
        "app",
    );
    assert!(m.contains("queue 'secret'") && m.contains("write"), "{m}");

    // write: publishing to orders is allowed, to the default exchange (amq.default) not.
    let outcome = app
        .publish_and_confirm(OutgoingMessage::new("orders", "new", "o-1"))
        .await
        .expect("publish to orders");
    assert!(outcome.is_confirmed());
    let m = refused(
        app.publish_and_confirm(OutgoingMessage::new("", "app.in", "direct"))
            .await,
        "app",
    );
    assert!(m.contains("exchange 'amq.default'"), "{m}");
    // The refusal is remembered per exchange, and stays a refusal.
    refused(
        app.publish_and_confirm(OutgoingMessage::new("", "app.in", "again"))
            .await,
        "app",
    );

    // read: app.in yes, secret no (get, consume, purge).
    assert_eq!(&wait_get(&app, "app.in").await.body[..], b"o-1");
    refused(app.get("secret", false).await, "app");
    refused(
        app.consume("secret", ConsumeOptions::default()).await,
        "app",
    );
    refused(app.purge_queue("secret").await, "app");

    // The connection stayed usable through every refusal.
    app.declare_queue(
        "app.jobs",
        QueueOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .expect("still usable");
    app.close().await.expect("close");
}

#[tokio::test]
async fn admin_commands_need_tags_and_monitoring_may_list() {
    let d = TestDaemon::start();
    add_user(&d, "watcher", "monitoring", "", "", "");
    add_user(&d, "plain", "", ".*", ".*", ".*");
    let as_user = |name: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.args(args)
            .env("WARREN_SERVER", d.addr())
            .env("WARREN_USER", name)
            .env("WARREN_PASSWORD", format!("pw-{name}"))
            .env_remove("WARREN_VHOST")
            .stdin(std::process::Stdio::null());
        cmd.output().expect("running the CLI")
    };
    for listing in [
        &["queue", "list"][..],
        &["exchange", "list"],
        &["status"],
        &["connection", "list"],
    ] {
        ok(&as_user("watcher", listing));
        let out = as_user("plain", listing);
        assert!(!out.status.success(), "{listing:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("needs the monitoring or administrator tag; user 'plain'"),
            "{err}"
        );
    }
    for admin in [
        &["definitions", "export"][..],
        &["user", "list"],
        &["vhost", "list"],
        &["dlq", "peek", "q"],
    ] {
        let out = as_user("watcher", admin);
        assert!(!out.status.success(), "{admin:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("needs the administrator tag; user 'watcher'"),
            "{admin:?}: {err}"
        );
    }
}

#[tokio::test]
async fn no_permission_on_a_vhost_means_no_open() {
    let d = TestDaemon::start();
    add_user(&d, "app", "", ".*", ".*", ".*");
    ok(&d.cli(&["vhost", "add", "other"]));
    let refusal = Client::connect_with(
        d.addr(),
        &ConnectOptions::new("app", "pw-app").vhost("other"),
    )
    .await;
    let m = refused(refusal, "app");
    assert_eq!(m, "user 'app' has no permissions on vhost 'other'");
    let listed = ok(&d.cli(&["permission", "list", "--of", "app"]));
    assert!(
        listed.contains("app") && !listed.contains("other"),
        "{listed}"
    );
}

#[tokio::test]
async fn definitions_carry_users_vhosts_and_permissions() {
    let source = TestDaemon::start();
    add_user(&source, "app", "billing", "^app\\.", ".*", ".*");
    ok(&source.cli(&["vhost", "add", "prod"]));
    ok(&source.cli(&[
        "permission",
        "set",
        "app",
        "--vhost",
        "prod",
        "--read",
        ".*",
    ]));
    let exported = ok(&source.cli(&["definitions", "export"]));
    let doc: serde_json::Value = serde_json::from_str(&exported).expect("JSON");
    let app = doc["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == "app")
        .expect("app exported");
    assert!(app["password_hash"]
        .as_str()
        .unwrap()
        .starts_with("$argon2id$"));
    assert_eq!(app["hashing_algorithm"], "argon2id");
    assert!(!exported.contains("pw-app"), "a password in the export");

    // Into a fresh server: app logs in with its own password, on both virtual hosts.
    let target = TestDaemon::start();
    let file = target.data_dir().join("defs.json");
    std::fs::write(&file, &exported).expect("write");
    let line = ok(&target.cli(&["definitions", "import", file.to_str().unwrap()]));
    assert!(
        line.contains("created 1 user and 1 vhost; 2 permissions set"),
        "{line}"
    );
    login(&target, "app").await;
    Client::connect_with(
        target.addr(),
        &ConnectOptions::new("app", "pw-app").vhost("prod"),
    )
    .await
    .expect("app on prod");
}

#[tokio::test]
async fn a_rabbitmq_user_is_imported_without_its_password_and_the_import_says_so() {
    let d = TestDaemon::start();
    let doc = serde_json::json!({
        "rabbit_version": "3.13.7",
        "users": [{
            "name": "legacy",
            "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": "monitoring,management"
        }],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": "legacy", "vhost": "/", "configure": "", "write": "", "read": ".*"}],
        "queues": [], "exchanges": [], "bindings": []
    });
    let file = d.data_dir().join("rabbit.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = d.cli(&["definitions", "import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: user 'legacy': its password hash (rabbit_password_hashing_sha256) cannot be verified by Warren"),
        "{stderr}"
    );
    let users = ok(&d.cli(&["user", "list"]));
    let legacy = users
        .lines()
        .find(|l| l.starts_with("legacy"))
        .expect("legacy listed");
    assert!(
        legacy.contains("management,monitoring") && legacy.ends_with("none"),
        "{legacy}"
    );
    // It cannot log in with any password until one is set.
    let refusal = Client::connect_with(d.addr(), &ConnectOptions::new("legacy", "")).await;
    assert!(matches!(refusal, Err(ClientError::Server { .. })));
    ok(&d.cli_with_stdin(
        &["user", "passwd", "legacy", "--password-stdin"],
        Some("new\n"),
    ));
    Client::connect_with(d.addr(), &ConnectOptions::new("legacy", "new"))
        .await
        .expect("legacy with its new password");
}
