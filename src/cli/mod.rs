//! The `warren` command line: `warren serve` runs the daemon; every other command is a client
//! of [`crate::client`] talking to a running server (`--server`, `WARREN_SERVER`).
//!
//! Commands are `warren <noun> <verb>` where a noun has several verbs (`exchange`, `queue`,
//! `dlq`, ...), and plain verbs otherwise (`bind`, `publish`, `consume`, `status`, ...).
//! Errors come back as `anyhow` errors whose context chain reads as one line, e.g.
//! `declaring queue 'jobs': PRECONDITION_FAILED (406): ...`.
//!
//! The operator commands (`status`, the `list` verbs, `queue inspect`, `dlq`, `message`,
//! `definitions`) are each one admin request ([`ServerArg::admin`]); with `--json` a listing
//! prints the server's JSON as-is, otherwise it decodes the reply into its type in
//! [`crate::admin_types`] ([`decode`]) and prints a table or `key: value` lines
//! ([`output`]).

pub mod bench;
pub mod binding;
pub mod connection;
pub mod consume;
pub mod consumer;
pub mod definitions;
pub mod dlq;
pub mod exchange;
pub mod field;
pub mod get;
pub mod message;
pub mod output;
pub mod permission;
pub mod publish;
pub mod queue;
pub mod serve;
pub mod status;
pub mod stream;
pub mod user;
pub mod vhost;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;
use warren_protocol::{FieldTable, FieldValue};

use crate::admin_types::{cursor_text, Listed};
use crate::client::{decode_admin, Client, ClientError, ConnectOptions};
use crate::tls::{ClientTls, TlsOptions};

pub use self::binding::{BindArgs, BindingCommand};
pub use self::connection::ConnectionCommand;
pub use self::consume::{ConsumeArgs, SubscribeArgs};
pub use self::consumer::ConsumerCommand;
pub use self::definitions::DefinitionsCommand;
pub use self::dlq::DlqCommand;
pub use self::exchange::ExchangeCommand;
pub use self::message::MessageCommand;
pub use self::permission::PermissionCommand;
pub use self::publish::PublishArgs;
pub use self::queue::QueueCommand;
pub use self::serve::ServeArgs;
pub use self::status::StatusArgs;
pub use self::user::UserCommand;
pub use self::vhost::VhostCommand;

/// The address client commands connect to by default.
pub const DEFAULT_SERVER: &str = "127.0.0.1:5680";

/// `warren`: a message broker with RabbitMQ's model.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every client command takes, before or after the subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every client command takes. They are clap `global` arguments, so
/// `warren --server H:P queue list` and `warren queue list --server H:P` mean the same.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Address of the Warren server, for client commands [env: WARREN_SERVER]
    /// [default: 127.0.0.1:5680].
    // Not a clap `env`/`default_value`: `warren bench` must tell "asked for a server on the
    // command line" from "nothing said", and `warren serve` must refuse it (it listens on
    // --listen), so the fallbacks are applied by `GlobalArgs::resolve`.
    #[arg(long, global = true, value_name = "ADDR")]
    pub server: Option<String>,
    /// Print nothing when a command that changes something succeeds (errors still go to
    /// stderr, with a non-zero exit).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Connect with TLS (to the server's --tls-listen port). Implied by --ca,
    /// --server-name, --client-cert and --client-key.
    #[arg(long, global = true)]
    pub tls: bool,
    /// With TLS: trust the CA certificate(s) in this PEM file instead of the system's.
    #[arg(long, global = true, value_name = "FILE", env = "WARREN_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// With TLS: the name the server's certificate must carry (default: the host of
    /// --server).
    #[arg(long, global = true, value_name = "NAME", env = "WARREN_SERVER_NAME")]
    pub server_name: Option<String>,
    /// With TLS: present this client certificate (PEM) to a server that asks for one.
    #[arg(long, global = true, value_name = "FILE", env = "WARREN_CLIENT_CERT")]
    pub client_cert: Option<std::path::PathBuf>,
    /// With TLS: the private key (PEM) of --client-cert.
    #[arg(long, global = true, value_name = "FILE", env = "WARREN_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// User to log in as [env: WARREN_USER] [default: guest].
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Read the login password from the first line of stdin (else WARREN_PASSWORD; `guest`
    /// for the guest user). For `user add` and `user passwd` it is the new password
    /// instead, and the login password comes from WARREN_PASSWORD.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Virtual host to work in [env: WARREN_VHOST] [default: /].
    #[arg(long, global = true, value_name = "VHOST")]
    pub vhost: Option<String>,
}

/// The first line of stdin without its line ending: a password.
///
/// # Errors
/// Reading stdin failed or it was empty.
pub fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    let n = std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    if n == 0 {
        anyhow::bail!("no password on stdin (--password-stdin reads its first line)");
    }
    let trimmed = line.trim_end_matches(['\n', '\r']);
    Ok(trimmed.to_owned())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

impl GlobalArgs {
    /// The options as client commands use them: `--server`, else `WARREN_SERVER` (when not
    /// empty), else [`DEFAULT_SERVER`]; the credentials likewise (`--user`, `WARREN_USER`,
    /// `guest`; `--password-stdin`, `WARREN_PASSWORD`, `guest` for guest; `--vhost`,
    /// `WARREN_VHOST`, `/`). With `stdin_is_login` false, `--password-stdin` is left to the
    /// command (the new password of `user add`).
    ///
    /// # Errors
    /// Reading the password from stdin failed, or a user other than guest has no password.
    pub fn resolve(&self, stdin_is_login: bool) -> anyhow::Result<Global> {
        let server = self
            .server
            .clone()
            .or_else(|| env_var("WARREN_SERVER"))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let user = self
            .user
            .clone()
            .or_else(|| env_var("WARREN_USER"))
            .unwrap_or_else(|| crate::auth::GUEST.to_owned());
        let password = if self.password_stdin && stdin_is_login {
            read_password_line()?
        } else if let Some(p) = env_var("WARREN_PASSWORD") {
            p
        } else if user == crate::auth::GUEST {
            crate::auth::GUEST.to_owned()
        } else {
            anyhow::bail!(
                "no password for user '{user}': pipe it to --password-stdin or set WARREN_PASSWORD"
            );
        };
        let vhost_given = self.vhost.clone().or_else(|| env_var("WARREN_VHOST"));
        let vhost = vhost_given.clone().unwrap_or_else(|| "/".to_owned());
        Ok(Global {
            server: ServerArg {
                server,
                tls: self.tls_options(),
                options: ConnectOptions {
                    user,
                    password,
                    vhost,
                },
            },
            quiet: self.quiet,
            vhost_given,
            password_stdin: self.password_stdin,
        })
    }

    /// The TLS options, when TLS is asked for: `--tls`, or any of the TLS files or the server
    /// name (which mean nothing without it).
    fn tls_options(&self) -> Option<TlsOptions> {
        let implied = self.ca.is_some()
            || self.server_name.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some();
        (self.tls || implied).then(|| TlsOptions {
            ca: self.ca.clone(),
            server_name: self.server_name.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        })
    }
}

/// The resolved global options a client command runs with.
#[derive(Debug, Clone)]
pub struct Global {
    /// The server to talk to.
    pub server: ServerArg,
    /// `--quiet`: no success lines.
    pub quiet: bool,
    /// `--vhost` (or `WARREN_VHOST`) when given: the filter of `permission list`.
    pub vhost_given: Option<String>,
    /// `--password-stdin`: for `user add` and `user passwd`, the new password is on stdin.
    pub password_stdin: bool,
}

impl Global {
    /// The same options with the connection opening `/`: the commands on users, virtual
    /// hosts and permissions are not about the virtual host they run in (`permission`
    /// takes its target from `--vhost`, `vhost_given`), and the one to change may not exist
    /// yet, or the administrator may have no permissions there.
    pub fn at_default_vhost(&self) -> Global {
        let mut g = self.clone();
        g.server.options.vhost = "/".to_owned();
        g
    }

    /// Prints the one line a command that changed something ends with
    /// (`queue 'jobs' purged: 3 messages`), unless `--quiet`.
    ///
    /// # Errors
    /// Writing to stdout failed.
    pub fn done(&self, line: &str) -> anyhow::Result<()> {
        if self.quiet {
            return Ok(());
        }
        output::emit(&format!("{line}\n"))
    }
}

/// `1 message`, `0 messages`, `3 queues`: a count with its noun, plural unless one.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The `warren` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker daemon.
    Serve(ServeArgs),
    /// Declare, delete or list exchanges.
    Exchange {
        /// The exchange operation.
        #[command(subcommand)]
        command: ExchangeCommand,
    },
    /// Declare, delete, purge, list or inspect queues.
    Queue {
        /// The queue operation.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Bind a queue to an exchange.
    Bind(BindArgs),
    /// Remove a binding between a queue and an exchange.
    Unbind(BindArgs),
    /// Publish a message (or one per stdin line) and wait for the confirms.
    Publish(PublishArgs),
    /// Consume messages from a queue, printing each and acknowledging it once written to
    /// stdout.
    Consume(ConsumeArgs),
    /// Subscribe to an exchange through a temporary queue and print what arrives.
    Subscribe(SubscribeArgs),
    /// Take messages from a queue at once, like AMQP's basic.get (exit status 3 when it
    /// has none ready).
    Get(get::GetArgs),
    /// Show the server's version, uptime, totals, rates and counters.
    Status(StatusArgs),
    /// List bindings (`warren bind` and `warren unbind` change them).
    Binding {
        /// The binding operation.
        #[command(subcommand)]
        command: BindingCommand,
    },
    /// List client connections.
    Connection {
        /// The connection operation.
        #[command(subcommand)]
        command: ConnectionCommand,
    },
    /// List consumers.
    Consumer {
        /// The consumer operation.
        #[command(subcommand)]
        command: ConsumerCommand,
    },
    /// Read a stream from an offset; show a stream's offsets, retention and named consumers.
    Stream {
        /// The stream operation.
        #[command(subcommand)]
        command: stream::StreamCommand,
    },
    /// Inspect, replay or purge the dead letters in a queue.
    Dlq {
        /// The dead-letter operation.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Delete single messages from a queue.
    Message {
        /// The message operation.
        #[command(subcommand)]
        command: MessageCommand,
    },
    /// Export or import exchanges, queues and bindings as JSON.
    Definitions {
        /// The definitions operation.
        #[command(subcommand)]
        command: DefinitionsCommand,
    },
    /// Add, delete or list users; change their passwords and tags (administrators only).
    User {
        /// The user operation.
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Set, clear or list what users may do in virtual hosts (administrators only).
    Permission {
        /// The permission operation.
        #[command(subcommand)]
        command: PermissionCommand,
    },
    /// Add, delete or list virtual hosts (administrators only).
    Vhost {
        /// The vhost operation.
        #[command(subcommand)]
        command: VhostCommand,
    },
    /// Measure end-to-end throughput and latency (an in-process broker unless --server is
    /// given on the command line; WARREN_SERVER does not count).
    Bench(bench::BenchArgs),
}

/// The server a client command talks to (`--server`, `WARREN_SERVER` or the default), and
/// who it logs in as.
#[derive(Debug, Clone)]
pub struct ServerArg {
    /// Address of the Warren server, `host:port`.
    pub server: String,
    /// Connect with TLS, with these options; `None` for plain TCP.
    pub tls: Option<TlsOptions>,
    /// User, password and virtual host.
    pub options: ConnectOptions,
}

impl ServerArg {
    /// Connects to the server, with the address in the error context.
    ///
    /// # Errors
    /// The connection or handshake failed: `connecting to 127.0.0.1:5680: Connection refused
    /// (os error 111)`.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let connected = match &self.tls {
            None => Client::connect_with(&self.server, &self.options).await,
            Some(options) => match ClientTls::new(options) {
                Ok(tls) => Client::connect_tls_with(&self.server, &tls, &self.options).await,
                Err(e) => Err(e.into()),
            },
        };
        match connected {
            Ok(client) => Ok(client),
            // It names the address already: `127.0.0.1:5711 answered with HTTP, ...`.
            Err(e @ (ClientError::NotWarren { .. } | ClientError::TlsHandshake { .. })) => {
                Err(e.into())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("connecting to {}", self.server))),
        }
    }

    /// Runs one admin command (PROTOCOL.md §15) on a new connection, closes it and returns
    /// the server's JSON. `what` describes the operation for the error context
    /// (`listing queues`).
    ///
    /// # Errors
    /// Connecting failed, or the server refused the command: `listing queues:
    /// NOT_FOUND (404): ...`.
    pub async fn admin(
        &self,
        command: &str,
        arguments: FieldTable,
        what: impl FnOnce() -> String,
    ) -> anyhow::Result<Value> {
        let client = self.connect().await?;
        let value = client.admin(command, arguments).await.with_context(what)?;
        client.close().await?;
        Ok(value)
    }

    /// Runs a paged listing (`queue.list`, `binding.list`, ...; PROTOCOL.md §15) on one
    /// connection, with the filters in `arguments`: one page when `page` gives `--limit`,
    /// otherwise every page of [`LIST_PAGE`] entries from `--after` on, concatenated; the
    /// cursor of each next page is the key ([`Listed`]) of the last entry of the one before.
    /// Returns the JSON array.
    ///
    /// # Errors
    /// As [`ServerArg::admin`], or a page that is not a JSON array of `T`.
    pub async fn admin_list<T: Listed + DeserializeOwned>(
        &self,
        command: &str,
        arguments: FieldTable,
        page: &PagedListArgs,
        what: impl Fn() -> String,
    ) -> anyhow::Result<Value> {
        let client = self.connect().await?;
        let mut items = Vec::new();
        let mut after = page.after.clone();
        loop {
            let limit = page.limit.unwrap_or(LIST_PAGE);
            let mut args = arguments.clone();
            args.insert(
                "limit".into(),
                FieldValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            );
            if let Some(a) = &after {
                args.insert("after".into(), FieldValue::String(a.clone()));
            }
            let reply = client.admin(command, args).await.with_context(&what)?;
            let Value::Array(got) = reply else {
                anyhow::bail!("{}: the server's {command} reply is not a list", what());
            };
            let full = got.len() as u64 >= limit;
            after = match got.last() {
                Some(last) => Some(cursor_text(&decode::<T>(command, last)?.page_key())),
                None => None,
            };
            items.extend(got);
            if page.limit.is_some() || !full || after.is_none() {
                break;
            }
        }
        client.close().await?;
        Ok(Value::Array(items))
    }

    /// As [`ServerArg::admin`], decoding the result as `T`, the command's type in
    /// [`crate::admin_types`].
    ///
    /// # Errors
    /// As [`ServerArg::admin`], or the reply is not a `T` (a field missing or mistyped).
    pub async fn admin_typed<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: FieldTable,
        what: impl FnOnce() -> String,
    ) -> anyhow::Result<T> {
        let reply = self.admin(command, arguments, what).await?;
        decode(command, &reply)
    }
}

/// `--json`: part of every listing's [`PagedListArgs`].
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print the server's JSON (field names exactly the server's) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of every listing: `--json`, and a page (each listing is sorted by its key:
/// docs/operations.md, "queue list, queue inspect").
#[derive(Debug, Clone, Args)]
pub struct PagedListArgs {
    /// `--json`.
    #[command(flatten)]
    pub list: ListArgs,
    /// List at most this many (in key order); without it, everything is listed, fetched
    /// a page at a time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// List only what sorts after KEY: a name (queues, exchanges, users, vhosts), a
    /// connection id, or for bindings, consumers and permissions the JSON array of the key
    /// fields (possibly fewer: '["logs"]' starts after source exchange logs). With
    /// --limit: the next page after the last key of the previous one.
    #[arg(long, value_name = "KEY")]
    pub after: Option<String>,
}

/// Items per request when a CLI listing fetches everything: small enough that a page fits in
/// a frame, large enough that 100,000 queues take 100 requests on one connection.
pub const LIST_PAGE: u64 = 1000;

/// Runs a client command (everything but `serve`) with the global options.
///
/// # Errors
/// Whatever the command hit, with context; for [`Command::Serve`] an error saying that
/// the daemon is started elsewhere.
pub async fn run_client_command(command: Command, global: &GlobalArgs) -> anyhow::Result<()> {
    let new_password_on_stdin = matches!(
        command,
        Command::User {
            command: UserCommand::Add(_) | UserCommand::Passwd(_)
        }
    );
    let g = &global.resolve(!new_password_on_stdin)?;
    match command {
        Command::Serve(_) => {
            anyhow::bail!("`warren serve` runs the daemon; it is not a client command")
        }
        Command::Exchange { command } => exchange::run(command, g).await,
        Command::Queue { command } => queue::run(command, g).await,
        Command::Bind(args) => binding::run(args, binding::Action::Bind, g).await,
        Command::Unbind(args) => binding::run(args, binding::Action::Unbind, g).await,
        Command::Publish(args) => publish::run(args, g).await,
        Command::Consume(args) => consume::run_consume(args, g).await,
        Command::Subscribe(args) => consume::run_subscribe(args, g).await,
        Command::Get(args) => get::run(args, g).await,
        Command::Status(args) => status::run(args, g).await,
        Command::Binding { command } => binding::run_list(command, g).await,
        Command::Connection { command } => connection::run(command, g).await,
        Command::Consumer { command } => consumer::run(command, g).await,
        Command::Dlq { command } => dlq::run(command, g).await,
        Command::Stream { command } => stream::run(command, g).await,
        Command::Message { command } => message::run(command, g).await,
        Command::Definitions { command } => definitions::run(command, g).await,
        Command::User { command } => user::run(command, &g.at_default_vhost()).await,
        Command::Permission { command } => permission::run(command, &g.at_default_vhost()).await,
        Command::Vhost { command } => vhost::run(command, &g.at_default_vhost()).await,
        // Without --server on its command line, bench starts a broker in this process.
        Command::Bench(args) => bench::run(args, global.server.clone(), g).await,
    }
}

/// Decodes the reply of admin command `command` (from [`ServerArg::admin`], kept as JSON
/// for `--json`) as `T`, its type in [`crate::admin_types`], to print it as a table.
///
/// # Errors
/// The reply is not a `T`: a field is missing or mistyped.
pub fn decode<T: DeserializeOwned>(command: &str, reply: &Value) -> anyhow::Result<T> {
    Ok(decode_admin(command, reply)?)
}

/// An admin arguments table from the options that are set, with their server names.
pub fn admin_args<const N: usize>(pairs: [(&str, Option<FieldValue>); N]) -> FieldTable {
    pairs
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_missing_equals_sign_is_a_clap_error_naming_the_argument() {
        let err =
            Cli::try_parse_from(["warren", "queue", "declare", "q", "--arg", "oops"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--arg <KEY[:TYPE]=VALUE>"), "{text}");
        assert!(text.contains("no '=' in 'oops'"), "{text}");
    }

    #[test]
    fn a_bad_typed_value_is_one_clap_error_line_naming_the_flag_and_the_value() {
        let err = Cli::try_parse_from(["warren", "publish", "ex", "k", "--header", "n:int=x"])
            .unwrap_err();
        let text = err.to_string();
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "error: invalid value 'n:int=x' for '--header <KEY[:TYPE]=VALUE>': n: 'x' is not \
             an int (a whole number that fits in 64 bits)"
        );
    }

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(count(0, "message"), "0 messages");
        assert_eq!(count(1, "message"), "1 message");
        assert_eq!(count(3, "binding"), "3 bindings");
    }

    #[test]
    fn quiet_goes_before_or_after_the_subcommand() {
        for argv in [
            &["warren", "-q", "queue", "purge", "q"][..],
            &["warren", "queue", "purge", "q", "--quiet"][..],
        ] {
            assert!(Cli::try_parse_from(argv).unwrap().global.quiet, "{argv:?}");
        }
    }

    #[test]
    fn server_defaults_and_overrides() {
        let cli = Cli::try_parse_from(["warren", "bind", "q", "ex", "--key", "a.*"]).unwrap();
        let Command::Bind(args) = cli.command else {
            panic!("expected bind");
        };
        assert_eq!(args.key, "a.*");
        assert_eq!(cli.global.server, None);
        // The env var may be set in the test environment; only check the flag wins.
        let cli = Cli::try_parse_from(["warren", "queue", "purge", "q", "--server", "10.0.0.1:1"])
            .unwrap();
        assert_eq!(
            cli.global.resolve(true).expect("resolves").server.server,
            "10.0.0.1:1"
        );
    }

    #[test]
    fn server_goes_before_or_after_the_subcommand() {
        for argv in [
            &["warren", "--server", "h:1", "queue", "list"][..],
            &["warren", "queue", "--server", "h:1", "list"][..],
            &["warren", "queue", "list", "--server", "h:1"][..],
            &["warren", "queue", "list", "--server=h:1"][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(cli.global.server.as_deref(), Some("h:1"), "{argv:?}");
            assert!(matches!(
                cli.command,
                Command::Queue {
                    command: QueueCommand::List(_)
                }
            ));
        }
    }

    #[test]
    fn tls_is_on_with_tls_or_any_tls_option() {
        let tls = |argv: &[&str]| {
            Cli::try_parse_from([&["warren"][..], argv, &["queue", "list"][..]].concat())
                .expect("parses")
                .global
                .tls_options()
        };
        assert!(tls(&["--tls"]).is_some());
        let with_ca = tls(&["--ca", "ca.pem"]).expect("--ca implies --tls");
        assert_eq!(with_ca.ca, Some("ca.pem".into()));
        assert!(tls(&["--server-name", "broker.internal"]).is_some());
        // The env vars may be set in the test environment; only check flags turn it on.
        let env = [
            "WARREN_CA",
            "WARREN_SERVER_NAME",
            "WARREN_CLIENT_CERT",
            "WARREN_CLIENT_KEY",
        ];
        if env.iter().all(|v| std::env::var_os(v).is_none()) {
            assert!(tls(&[]).is_none());
        }
    }

    #[test]
    fn a_command_naming_a_user_does_not_change_who_logs_in() {
        let cli =
            Cli::try_parse_from(["warren", "--user", "ops", "permission", "set", "app"]).unwrap();
        assert_eq!(cli.global.user.as_deref(), Some("ops"));
        let Command::Permission {
            command: PermissionCommand::Set(args),
        } = cli.command
        else {
            panic!("expected permission set");
        };
        assert_eq!(args.user, "app");
    }

    #[test]
    fn bench_sees_only_a_server_given_on_its_command_line() {
        let cli = Cli::try_parse_from(["warren", "bench"]).unwrap();
        assert_eq!(cli.global.server, None);
        let cli = Cli::try_parse_from(["warren", "bench", "--server", "h:1"]).unwrap();
        assert_eq!(cli.global.server.as_deref(), Some("h:1"));
    }
}
