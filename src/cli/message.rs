//! `warren message delete`: remove single ready messages by their message id (admin command
//! `message.delete`), e.g. one poison message in a dead-letter queue.

use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::admin_types::DeleteResult;
use crate::cli::{admin_args, count, Global};

/// `warren message ...`
#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Delete the ready messages with a message id from a queue, saying how many.
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
    let result: DeleteResult = global
        .server
        .admin_typed("message.delete", arguments, || {
            format!("deleting message '{}' from queue '{}'", args.id, args.queue)
        })
        .await?;
    global.done(&delete_line(result.deleted, &args.id, &args.queue))
}

/// `message 'm-1' deleted from queue 'q'`, or `3 messages with id 'm-1' deleted from queue
/// 'q'` when several shared the id.
fn delete_line(deleted: u64, id: &str, queue: &str) -> String {
    if deleted == 1 {
        format!("message '{id}' deleted from queue '{queue}'")
    } else {
        format!(
            "{} with id '{id}' deleted from queue '{queue}'",
            count(deleted, "message")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_id_and_the_queue() {
        assert_eq!(
            delete_line(1, "m-1", "dlq"),
            "message 'm-1' deleted from queue 'dlq'"
        );
        assert_eq!(
            delete_line(3, "m-1", "dlq"),
            "3 messages with id 'm-1' deleted from queue 'dlq'"
        );
    }
}
