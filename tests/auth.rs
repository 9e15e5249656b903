//! Users and logging in (`Open`, PROTOCOL.md §3; docs/access-control.md): a failed login
//! says nothing about whether the user exists, users come and go through the CLI, guest
//! works from loopback, and no password is stored in plain text.

mod common;

use std::process::{Command, Output, Stdio};

use common::{ok, TestDaemon};
use warren::admin_types::UserInfo;
use warren::client::{Client, ClientError, ConnectOptions};
use warren_protocol::ErrorCode;

/// Runs the CLI with `env` set (besides the server) and `stdin` as its input.
fn cli_env(d: &TestDaemon, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(args)
        .env("WARREN_SERVER", d.addr())
        .env_remove("WARREN_USER")
        .env_remove("WARREN_PASSWORD")
        .env_remove("WARREN_VHOST")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning the warren CLI");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    // The CLI bounds its own connection and request times.
    child.wait_with_output().expect("CLI output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Adds `name` with `password` and every permission on `/`, through the CLI as guest.
fn add_user(d: &TestDaemon, name: &str, password: &str, tags: Option<&str>) {
    let mut args = vec!["user", "add", name, "--password-stdin"];
    if let Some(t) = tags {
        args.extend(["--tags", t]);
    }
    ok(&d.cli_with_stdin(&args, Some(&format!("{password}\n"))));
    d.grant_all(name, "/");
}

async fn connect_as(d: &TestDaemon, user: &str, password: &str) -> Result<Client, ClientError> {
    Client::connect_with(d.addr(), &ConnectOptions::new(user, password)).await
}

fn refused(result: Result<Client, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Server { code, message }) => (code, message),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the connection opened"),
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_refusal() {
    let d = TestDaemon::start();
    let wrong_password = refused(connect_as(&d, "guest", "nope").await);
    let unknown_user = refused(connect_as(&d, "nobody", "guest").await);
    assert_eq!(wrong_password, unknown_user);
    assert_eq!(
        wrong_password,
        (
            ErrorCode::AccessRefused.as_u16(),
            "authentication failed".to_owned()
        )
    );
    // The CLI says so in one line, with a non-zero exit.
    let out = cli_env(&d, &["queue", "list"], &[("WARREN_PASSWORD", "nope")], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ACCESS_REFUSED (403): authentication failed"),
        "{err}"
    );
    // Refusals close only their own connections.
    d.client().await.close().await.expect("guest still works");
}

#[tokio::test]
async fn guest_works_from_loopback_by_default() {
    let d = TestDaemon::start();
    let c = Client::connect_with(d.addr(), &ConnectOptions::default())
        .await
        .expect("guest/guest from 127.0.0.1");
    c.close().await.expect("close");
    let users: Vec<UserInfo> =
        serde_json::from_str(&ok(&d.cli(&["user", "list", "--json"]))).expect("user list JSON");
    assert_eq!(
        users,
        vec![UserInfo {
            name: "guest".into(),
            tags: vec!["administrator".into()],
            has_password: true,
        }]
    );
}

#[tokio::test]
async fn a_user_is_added_logs_in_and_is_refused_once_deleted() {
    let d = TestDaemon::start();
    add_user(&d, "alice", "s3cret", None);
    let c = connect_as(&d, "alice", "s3cret")
        .await
        .expect("alice logs in");
    c.declare_queue("alice-q", Default::default())
        .await
        .expect("alice declares");
    c.close().await.expect("close");
    // The CLI logs in as alice with --user and the password on stdin, or from the env
    // (commands her permissions allow: she has no tag for listings).
    ok(&cli_env(
        &d,
        &[
            "--user",
            "alice",
            "--password-stdin",
            "queue",
            "declare",
            "alice-q",
        ],
        &[],
        Some("s3cret\n"),
    ));
    ok(&cli_env(
        &d,
        &["queue", "purge", "alice-q"],
        &[("WARREN_USER", "alice"), ("WARREN_PASSWORD", "s3cret")],
        None,
    ));
    // Without a password the CLI says where to give one.
    let out = cli_env(&d, &["--user", "alice", "queue", "list"], &[], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no password for user 'alice'"),
        "{}",
        stderr(&out)
    );

    ok(&d.cli(&["user", "delete", "alice"]));
    let (code, message) = refused(connect_as(&d, "alice", "s3cret").await);
    assert_eq!(code, ErrorCode::AccessRefused.as_u16());
    assert_eq!(message, "authentication failed");
}

#[tokio::test]
async fn passwords_change_and_a_user_without_permissions_cannot_open() {
    let d = TestDaemon::start();
    ok(&d.cli_with_stdin(&["user", "add", "bob", "--password-stdin"], Some("one\n")));
    let (code, message) = refused(connect_as(&d, "bob", "one").await);
    assert_eq!(code, ErrorCode::AccessRefused.as_u16());
    assert_eq!(message, "user 'bob' has no permissions on vhost '/'");
    ok(&d.cli(&["permission", "set", "bob", "--read", ".*"]));
    connect_as(&d, "bob", "one").await.expect("bob logs in");
    ok(&d.cli_with_stdin(
        &["user", "passwd", "bob", "--password-stdin"],
        Some("two\n"),
    ));
    refused(connect_as(&d, "bob", "one").await);
    connect_as(&d, "bob", "two")
        .await
        .expect("the new password");
    ok(&d.cli(&["permission", "clear", "bob"]));
    refused(connect_as(&d, "bob", "two").await);
    // A new password is never typed at a prompt; with no stdin at all there is none.
    let out = d.cli(&["user", "add", "carol"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no password on stdin"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn tags_are_listed_and_only_administrators_manage_users() {
    let d = TestDaemon::start();
    add_user(&d, "ops", "pw-ops", Some("monitoring,administrator"));
    add_user(&d, "app", "pw-app", Some("billing"));
    ok(&d.cli(&["user", "tags", "app", "billing,monitoring"]));
    let table = ok(&d.cli(&["user", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("app ") && lines[1].contains("billing,monitoring"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("guest") && lines[2].contains("administrator"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("ops ") && lines[3].contains("administrator,monitoring"),
        "{table}"
    );

    // app is no administrator: it may not add users, and is told why.
    let out = cli_env(
        &d,
        &["user", "add", "mallory", "--password-stdin"],
        &[("WARREN_USER", "app"), ("WARREN_PASSWORD", "pw-app")],
        Some("x\n"),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ACCESS_REFUSED (403)")
            && err.contains("user.add needs the administrator tag"),
        "{err}"
    );
    // ops is one, and may.
    ok(&cli_env(
        &d,
        &["user", "delete", "guest"],
        &[("WARREN_USER", "ops"), ("WARREN_PASSWORD", "pw-ops")],
        None,
    ));
    refused(Client::connect(d.addr()).await);
}

#[tokio::test]
async fn an_unknown_vhost_is_refused_clearly() {
    let d = TestDaemon::start();
    let options = ConnectOptions::default().vhost("nowhere");
    let (code, message) = refused(Client::connect_with(d.addr(), &options).await);
    assert_eq!(code, ErrorCode::NotFound.as_u16());
    assert_eq!(message, "no vhost 'nowhere'");
}

#[tokio::test]
async fn passwords_are_not_stored_in_plain_text_and_users_survive_restarts() {
    let mut d = TestDaemon::start();
    let password = "plain-text-canary-7f3a91";
    add_user(&d, "dave", password, Some("monitoring"));
    d.restart();
    connect_as(&d, "dave", password)
        .await
        .expect("dave after a restart");
    assert!(d.stop(), "clean stop");
    let store = std::fs::read(d.data_dir().join("warren.redb")).expect("store file");
    let contains = |needle: &[u8]| store.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(password.as_bytes()),
        "the password is in the store file"
    );
    assert!(
        contains(b"$argon2id$"),
        "no argon2id hash in the store file"
    );
}
