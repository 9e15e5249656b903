//! `warren consumer list`. (`warren consume` itself lives in `consume.rs`.)

use clap::Subcommand;
use warren_protocol::FieldTable;

use crate::admin_types::ConsumerInfo;
use crate::cli::output::{emit, opt_cell, print_json, yes_no, Align, Table};
use crate::cli::{decode, Global, PagedListArgs};

/// `warren consumer ...`
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// List consumers on every connection.
    List(PagedListArgs),
}

/// Runs a consumer command.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(command: ConsumerCommand, global: &Global) -> anyhow::Result<()> {
    let ConsumerCommand::List(args) = command;
    let consumers = global
        .server
        .admin_list::<ConsumerInfo>("consumer.list", FieldTable::new(), &args, || {
            "listing consumers".to_owned()
        })
        .await?;
    if args.list.json {
        print_json(&consumers)
    } else {
        emit(&consumer_table(&decode::<Vec<ConsumerInfo>>(
            "consumer.list",
            &consumers,
        )?))
    }
}

/// `consumer.list` as a table: tag, connection id, queue, prefetch, no-ack, exclusive,
/// unacked, active (no: waiting its turn on a single-active-consumer queue).
pub fn consumer_table(consumers: &[ConsumerInfo]) -> String {
    let mut table = Table::new(&[
        ("TAG", Align::Left),
        ("CONNECTION", Align::Right),
        ("QUEUE", Align::Left),
        ("PREFETCH", Align::Right),
        ("NO ACK", Align::Left),
        ("EXCLUSIVE", Align::Left),
        ("UNACKED", Align::Right),
        ("ACTIVE", Align::Left),
    ]);
    for c in consumers {
        table.row(vec![
            c.tag.clone(),
            c.connection.to_string(),
            opt_cell(c.queue.as_deref()),
            c.prefetch.to_string(),
            yes_no(c.no_ack),
            yes_no(c.exclusive),
            c.unacked.to_string(),
            yes_no(c.active),
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
        let consumers = decode::<Vec<ConsumerInfo>>(
            "consumer.list",
            &json!([
                {"tag": "ctag-1", "connection": 3, "queue": "jobs", "prefetch": 10,
                 "no_ack": false, "exclusive": false, "unacked": 4},
            ]),
        )
        .unwrap();
        let text = consumer_table(&consumers);
        assert_eq!(
            text,
            "TAG     CONNECTION  QUEUE  PREFETCH  NO ACK  EXCLUSIVE  UNACKED  ACTIVE\n\
             ctag-1           3  jobs         10  no      no               4  yes\n"
        );
    }
}
