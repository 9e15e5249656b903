//! `warren message delete`: remove single ready messages by their message id (admin command
//! `message.delete`), e.g. one poison message in a dead-letter queue.

use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::cli::output::emit;
use crate::cli::{admin_args, reply_count, Global};

/// `warren message ...`
#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Delete the ready messages with a message id from a queue and print how many.
    Delete(MessageDeleteArgs),
}

/// Arguments of `warren message delete`.
#[derive(Debug, Args)]
pub struct MessageDeleteArgs {
    /// The queue holding the message.
    pub queue: String,
    /// The message id (the `message_id` property; `warren dlq peek` shows it).
    #[arg(long, value_name = "ID")]
    pub id: String,
}

/// Runs a message command.
///
/// # Errors
/// Connecting failed, or the server refused: `NOT_FOUND` when no ready message in the queue
/// has that id.
pub async fn run(command: MessageCommand, global: &Global) -> anyhow::Result<()> {
    let MessageCommand::Delete(args) = command;
    let arguments = admin_args([
        ("queue", Some(FieldValue::String(args.queue.clone()))),
        ("id", Some(FieldValue::String(args.id.clone()))),
    ]);
    let result = global
        .server
        .admin("message.delete", arguments, || {
            format!("deleting message '{}' from queue '{}'", args.id, args.queue)
        })
        .await?;
    let deleted = reply_count(&result, "deleted")?;
    emit(&format!("deleted {deleted} message(s)\n"))
}
