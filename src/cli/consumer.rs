//! `warren consumer list`. (`warren consume` itself lives in `consume.rs`.)

use clap::Subcommand;
use serde_json::Value;
use warren_protocol::FieldTable;

use crate::cli::output::{cell, emit, print_json, yes_no, Align, Table};
use crate::cli::{Global, ListArgs};

/// `warren consumer ...`
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// List consumers on every connection.
    List(ListArgs),
}

/// Runs a consumer command.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(command: ConsumerCommand, global: &Global) -> anyhow::Result<()> {
    let ConsumerCommand::List(args) = command;
    let consumers = global
        .server
        .admin("consumer.list", FieldTable::new(), || {
            "listing consumers".to_owned()
        })
        .await?;
    if args.json {
        print_json(&consumers)
    } else {
        emit(&consumer_table(&consumers))
    }
}

/// `consumer.list` as a table: tag, connection id, queue, prefetch, no-ack, exclusive,
/// unacked.
pub fn consumer_table(consumers: &Value) -> String {
    let mut table = Table::new(&[
        ("TAG", Align::Left),
        ("CONNECTION", Align::Right),
        ("QUEUE", Align::Left),
        ("PREFETCH", Align::Right),
        ("NO ACK", Align::Left),
        ("EXCLUSIVE", Align::Left),
        ("UNACKED", Align::Right),
    ]);
    for c in consumers.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&c["tag"]),
            cell(&c["connection"]),
            cell(&c["queue"]),
            cell(&c["prefetch"]),
            yes_no(&c["no_ack"]),
            yes_no(&c["exclusive"]),
            cell(&c["unacked"]),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn consumers_show_their_prefetch() {
        let text = consumer_table(&json!([
            {"tag": "ctag-1", "connection": 3, "queue": "jobs", "prefetch": 10,
             "no_ack": false, "exclusive": false, "unacked": 4},
        ]));
        assert_eq!(
            text,
            "TAG     CONNECTION  QUEUE  PREFETCH  NO ACK  EXCLUSIVE  UNACKED\n\
             ctag-1           3  jobs         10  no      no               4\n"
        );
    }
}
