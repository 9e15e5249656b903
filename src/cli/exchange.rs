//! `warren exchange declare|delete`.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::cli::ServerArg;
use crate::client::{ExchangeKind, ExchangeOptions};

/// `warren exchange ...`
#[derive(Debug, Subcommand)]
pub enum ExchangeCommand {
    /// Declare an exchange (succeeds if it exists with the same attributes).
    Declare(ExchangeDeclareArgs),
    /// Delete an exchange and its bindings.
    Delete(ExchangeDeleteArgs),
}

/// Arguments of `warren exchange declare`.
#[derive(Debug, Args)]
pub struct ExchangeDeclareArgs {
    /// Exchange name.
    pub name: String,
    /// How the exchange routes.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub kind: KindArg,
    /// Keep the exchange across server restarts.
    #[arg(long)]
    pub durable: bool,
    #[command(flatten)]
    /// The server to talk to.
    pub server: ServerArg,
}

/// Arguments of `warren exchange delete`.
#[derive(Debug, Args)]
pub struct ExchangeDeleteArgs {
    /// Exchange name.
    pub name: String,
    /// Refuse if the exchange still has bindings.
    #[arg(long)]
    pub if_unused: bool,
    #[command(flatten)]
    /// The server to talk to.
    pub server: ServerArg,
}

/// `--type` values: the exchange kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Routing key equals the binding key.
    Direct,
    /// Every bound queue.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Message headers against binding arguments.
    Headers,
}

impl From<KindArg> for ExchangeKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Direct => ExchangeKind::Direct,
            KindArg::Fanout => ExchangeKind::Fanout,
            KindArg::Topic => ExchangeKind::Topic,
            KindArg::Headers => ExchangeKind::Headers,
        }
    }
}

/// Runs an exchange command.
///
/// # Errors
/// Connecting failed or the server refused, with the exchange's name in the context.
pub async fn run(command: ExchangeCommand) -> anyhow::Result<()> {
    match command {
        ExchangeCommand::Declare(args) => {
            let client = args.server.connect().await?;
            let options = ExchangeOptions {
                durable: args.durable,
                ..ExchangeOptions::default()
            };
            client
                .declare_exchange(&args.name, args.kind.into(), options)
                .await
                .with_context(|| format!("declaring exchange '{}'", args.name))?;
            client.close().await?;
        }
        ExchangeCommand::Delete(args) => {
            let client = args.server.connect().await?;
            client
                .delete_exchange(&args.name, args.if_unused)
                .await
                .with_context(|| format!("deleting exchange '{}'", args.name))?;
            client.close().await?;
        }
    }
    Ok(())
}
