//! `warren dlq peek|replay|purge`: the dead letters in a queue, selected by the reason and
//! the queue of their latest death (admin commands `dlq.peek`, `dlq.replay`, `dlq.purge`).
//!
//! `peek` changes nothing. `replay` publishes each selected message again to the exchange
//! and routing key it was first published with (or to `--to-exchange`/`--key`) and removes
//! it from the dead-letter queue in the same store commit, so after a crash every message is
//! in exactly one of the two places; a message that routes nowhere stays where it is.

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use warren_protocol::{FieldTable, FieldValue};

use crate::admin_types::{DeadLetterInfo, PurgeResult, ReplayResult};
use crate::broker::dead_letter::DeadLetterReason;
use crate::cli::output::{
    emit, exchange_name, human_bytes, one_line, opt_cell, print_json, time_cell, truncate, Align,
    Table,
};
use crate::cli::{admin_args, count, decode, Global};

/// Characters of a body shown in the `dlq peek` table (the server sends a longer preview).
pub const TABLE_PREVIEW_CHARS: usize = 40;

/// `warren dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show dead letters without taking them: why and where each died, and a body preview.
    Peek(DlqPeekArgs),
    /// Publish dead letters again to where they were first published, removing them here.
    Replay(DlqReplayArgs),
    /// Remove dead letters, saying how many.
    Purge(DlqPurgeArgs),
}

/// Which dead letters a command acts on: all of them in queue order, unless narrowed.
#[derive(Debug, Clone, Args)]
pub struct DlqFilterArgs {
    /// At most this many (the first in queue order); `peek` shows 100 unless told.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Only messages whose latest death had this reason.
    #[arg(long, value_name = "REASON", value_parser = reason_parser())]
    pub reason: Option<String>,
    /// Only messages whose latest death was in this queue.
    #[arg(long, value_name = "QUEUE")]
    pub from_queue: Option<String>,
}

impl DlqFilterArgs {
    /// The filter as admin arguments, plus the dead-letter queue itself.
    fn arguments(&self, queue: &str) -> FieldTable {
        admin_args([
            ("queue", Some(FieldValue::String(queue.to_owned()))),
            (
                "limit",
                self.limit
                    .map(|n| FieldValue::Int(i64::try_from(n).unwrap_or(i64::MAX))),
            ),
            ("reason", self.reason.clone().map(FieldValue::String)),
            (
                "from_queue",
                self.from_queue.clone().map(FieldValue::String),
            ),
        ])
    }
}

/// `--reason` accepts the reasons exactly as `x-death` spells them.
fn reason_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(DeadLetterReason::ALL.map(DeadLetterReason::as_str))
}

/// Arguments of `warren dlq peek`.
#[derive(Debug, Args)]
pub struct DlqPeekArgs {
    /// The dead-letter queue.
    pub queue: String,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
    /// Print the server's JSON (with the whole body and headers) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `warren dlq replay`.
#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    /// The dead-letter queue.
    pub queue: String,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
    /// Publish to this exchange instead of each message's original one ("" is the default
    /// exchange).
    #[arg(long, value_name = "EXCHANGE")]
    pub to_exchange: Option<String>,
    /// Routing key for --to-exchange (default "").
    #[arg(long, value_name = "KEY", requires = "to_exchange")]
    pub key: Option<String>,
}

/// Arguments of `warren dlq purge`.
#[derive(Debug, Args)]
pub struct DlqPurgeArgs {
    /// The dead-letter queue.
    pub queue: String,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
}

/// Runs a dead-letter command.
///
/// # Errors
/// Connecting failed, or the server refused (no such queue, no such `--to-exchange`).
pub async fn run(command: DlqCommand, global: &Global) -> anyhow::Result<()> {
    match command {
        DlqCommand::Peek(args) => {
            let letters = global
                .server
                .admin("dlq.peek", args.filter.arguments(&args.queue), || {
                    format!("peeking at the dead letters in '{}'", args.queue)
                })
                .await?;
            if args.json {
                print_json(&letters)
            } else {
                emit(&peek_table(&decode::<Vec<DeadLetterInfo>>(
                    "dlq.peek", &letters,
                )?))
            }
        }
        DlqCommand::Replay(args) => {
            let mut arguments = args.filter.arguments(&args.queue);
            if let Some(exchange) = &args.to_exchange {
                arguments.insert("to_exchange".into(), FieldValue::String(exchange.clone()));
                let key = args.key.clone().unwrap_or_default();
                arguments.insert("routing_key".into(), FieldValue::String(key));
            }
            let result: ReplayResult = global
                .server
                .admin_typed("dlq.replay", arguments, || {
                    format!("replaying the dead letters in '{}'", args.queue)
                })
                .await?;
            global.done(&replay_line(&result, &args.queue))
        }
        DlqCommand::Purge(args) => {
            let result: PurgeResult = global
                .server
                .admin_typed("dlq.purge", args.filter.arguments(&args.queue), || {
                    format!("purging the dead letters in '{}'", args.queue)
                })
                .await?;
            global.done(&format!(
                "dead letters in queue '{}' purged: {}",
                args.queue,
                count(result.purged, "message")
            ))
        }
    }
}

/// `dead letters in queue 'dlq' replayed: 42 messages`, plus `; 3 could not be routed and
/// stayed` when some did not route.
pub fn replay_line(result: &ReplayResult, queue: &str) -> String {
    let mut line = format!(
        "dead letters in queue '{queue}' replayed: {}",
        count(result.moved, "message")
    );
    if result.unroutable > 0 {
        line.push_str(&format!(
            "; {} could not be routed and stayed",
            result.unroutable
        ));
    }
    line
}

/// `dlq.peek` as a table: position in the queue, message id, reason and queue of the latest
/// death, where the message was first published, death count, time of death (UTC), size
/// and the start of the body.
pub fn peek_table(letters: &[DeadLetterInfo]) -> String {
    let mut table = Table::new(&[
        ("POS", Align::Right),
        ("MESSAGE ID", Align::Left),
        ("REASON", Align::Left),
        ("FROM QUEUE", Align::Left),
        ("ORIGINAL EXCHANGE", Align::Left),
        ("ROUTING KEY", Align::Left),
        ("DEATHS", Align::Right),
        ("DIED AT", Align::Left),
        ("SIZE", Align::Right),
        ("BODY", Align::Left),
    ]);
    for m in letters {
        table.row(vec![
            m.position.to_string(),
            opt_cell(m.message_id.as_deref()),
            opt_cell(m.reason.as_deref()),
            opt_cell(m.source_queue.as_deref()),
            opt_cell(m.original_exchange.as_deref().map(exchange_name)),
            opt_cell(m.original_routing_key.as_deref()),
            opt_cell(m.death_count),
            time_cell(m.death_time_ms),
            human_bytes(m.size),
            truncate(&one_line(&m.body_preview), TABLE_PREVIEW_CHARS),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use serde_json::json;

    #[test]
    fn reasons_are_the_servers_spellings() {
        for reason in ["rejected", "expired", "maxlen", "delivery_limit"] {
            let cli =
                Cli::try_parse_from(["warren", "dlq", "peek", "dlq", "--reason", reason]).unwrap();
            let Command::Dlq {
                command: DlqCommand::Peek(args),
            } = cli.command
            else {
                panic!("expected dlq peek");
            };
            assert_eq!(args.filter.reason.as_deref(), Some(reason));
        }
        let err = Cli::try_parse_from(["warren", "dlq", "peek", "dlq", "--reason", "max-len"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("possible values: rejected, expired, maxlen, delivery_limit"),
            "{err}"
        );
    }

    #[test]
    fn key_needs_to_exchange() {
        let err = Cli::try_parse_from(["warren", "dlq", "replay", "dlq", "--key", "k"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--to-exchange <EXCHANGE>"), "{err}");
        assert!(
            Cli::try_parse_from(["warren", "dlq", "replay", "dlq", "--to-exchange", "x"]).is_ok()
        );
    }

    #[test]
    fn filters_become_admin_arguments() {
        let filter = DlqFilterArgs {
            limit: Some(5),
            reason: Some("expired".into()),
            from_queue: None,
        };
        let args = filter.arguments("dlq");
        assert_eq!(args.get("queue"), Some(&FieldValue::String("dlq".into())));
        assert_eq!(args.get("limit"), Some(&FieldValue::Int(5)));
        assert_eq!(
            args.get("reason"),
            Some(&FieldValue::String("expired".into()))
        );
        assert!(!args.contains_key("from_queue"));
    }

    #[test]
    fn replay_reports_what_did_not_route() {
        let replayed = |moved, unroutable| ReplayResult { moved, unroutable };
        assert_eq!(
            replay_line(&replayed(42, 0), "dlq"),
            "dead letters in queue 'dlq' replayed: 42 messages"
        );
        assert_eq!(
            replay_line(&replayed(42, 3), "dlq"),
            "dead letters in queue 'dlq' replayed: 42 messages; 3 could not be routed and stayed"
        );
        assert!(decode::<ReplayResult>("dlq.replay", &json!({})).is_err());
    }

    #[test]
    fn peek_rows_read_as_one_line_each() {
        let letters = decode::<Vec<DeadLetterInfo>>(
            "dlq.peek",
            &json!([{
                "position": 0, "message_id": "m-1", "reason": "rejected", "source_queue": "work",
                "original_exchange": "", "original_routing_key": "work", "death_count": 2,
                "death_time_ms": 1_714_564_800_000_i64, "size": 2048,
                "body_preview": "line one\nline two, which is long enough to be cut short here…",
                "delivery_count": 0, "exchange": "dlx", "routing_key": "work", "headers": {},
                "body": "", "body_encoding": null,
            }]),
        )
        .unwrap();
        let text = peek_table(&letters);
        let row = text.lines().nth(1).unwrap();
        assert_eq!(
            row.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>(),
            [
                "0",
                "m-1",
                "rejected",
                "work",
                "(default)",
                "work",
                "2",
                "2024-05-01T12:00:00.000Z",
                "2.0 KiB",
                "line one\\nline two, which is long enoug…"
            ]
        );
    }
}
