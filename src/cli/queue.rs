//! `warren queue declare|delete|purge`.

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::cli::{field_table, parse_key_value, ServerArg};
use crate::client::QueueOptions;

/// `warren queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Declare a queue and print its name (the server picks one when NAME is "").
    Declare(QueueDeclareArgs),
    /// Delete a queue and print how many messages it held.
    Delete(QueueDeleteArgs),
    /// Remove every ready message from a queue and print how many.
    Purge(QueuePurgeArgs),
}

/// Arguments of `warren queue declare`.
#[derive(Debug, Args)]
pub struct QueueDeclareArgs {
    /// Queue name; "" asks the server to choose one.
    pub name: String,
    /// Keep the queue (and its persistent messages) across server restarts.
    #[arg(long)]
    pub durable: bool,
    /// Tie the queue to this connection (mostly useful from code, not the CLI).
    #[arg(long)]
    pub exclusive: bool,
    /// Delete the queue when its last consumer goes.
    #[arg(long)]
    pub auto_delete: bool,
    /// A queue argument, e.g. `x-max-length=1000` (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub args: Vec<(String, FieldValue)>,
    #[command(flatten)]
    /// The server to talk to.
    pub server: ServerArg,
}

/// Arguments of `warren queue delete`.
#[derive(Debug, Args)]
pub struct QueueDeleteArgs {
    /// Queue name.
    pub name: String,
    /// Refuse if the queue has consumers.
    #[arg(long)]
    pub if_unused: bool,
    /// Refuse if the queue holds messages.
    #[arg(long)]
    pub if_empty: bool,
    #[command(flatten)]
    /// The server to talk to.
    pub server: ServerArg,
}

/// Arguments of `warren queue purge`.
#[derive(Debug, Args)]
pub struct QueuePurgeArgs {
    /// Queue name.
    pub name: String,
    #[command(flatten)]
    /// The server to talk to.
    pub server: ServerArg,
}

/// Runs a queue command, printing its result on stdout.
///
/// # Errors
/// Connecting failed or the server refused, with the queue's name in the context.
pub async fn run(command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::Declare(args) => {
            let client = args.server.connect().await?;
            let options = QueueOptions {
                durable: args.durable,
                exclusive: args.exclusive,
                auto_delete: args.auto_delete,
                passive: false,
                arguments: field_table(args.args),
            };
            let ok = client
                .declare_queue(&args.name, options)
                .await
                .with_context(|| declaring(&args.name))?;
            println!("{}", ok.name);
            client.close().await?;
        }
        QueueCommand::Delete(args) => {
            let client = args.server.connect().await?;
            let deleted = client
                .delete_queue(&args.name, args.if_unused, args.if_empty)
                .await
                .with_context(|| format!("deleting queue '{}'", args.name))?;
            println!("{deleted}");
            client.close().await?;
        }
        QueueCommand::Purge(args) => {
            let client = args.server.connect().await?;
            let purged = client
                .purge_queue(&args.name)
                .await
                .with_context(|| format!("purging queue '{}'", args.name))?;
            println!("{purged}");
            client.close().await?;
        }
    }
    Ok(())
}

fn declaring(name: &str) -> String {
    if name.is_empty() {
        "declaring a server-named queue".to_owned()
    } else {
        format!("declaring queue '{name}'")
    }
}
