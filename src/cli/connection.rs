//! `warren connection list`.

use clap::Subcommand;
use serde_json::Value;
use warren_protocol::FieldTable;

use crate::cli::output::{cell, emit, print_json, time_cell, Align, Table};
use crate::cli::{Global, ListArgs};

/// `warren connection ...`
#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// List client connections (this command's own included).
    List(ListArgs),
}

/// Runs a connection command.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(command: ConnectionCommand, global: &Global) -> anyhow::Result<()> {
    let ConnectionCommand::List(args) = command;
    let connections = global
        .server
        .admin("connection.list", FieldTable::new(), || {
            "listing connections".to_owned()
        })
        .await?;
    if args.json {
        print_json(&connections)
    } else {
        emit(&connection_table(&connections))
    }
}

/// `connection.list` as a table: id, peer, connected at (UTC), consumers, unacked, published.
pub fn connection_table(connections: &Value) -> String {
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("PEER", Align::Left),
        ("CONNECTED AT", Align::Left),
        ("CONSUMERS", Align::Right),
        ("UNACKED", Align::Right),
        ("PUBLISHED", Align::Right),
    ]);
    for c in connections.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&c["id"]),
            cell(&c["peer"]),
            time_cell(&c["connected_at_ms"]),
            cell(&c["consumers"]),
            cell(&c["unacked"]),
            cell(&c["published"]),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connections_show_when_they_connected() {
        let text = connection_table(&json!([
            {"id": 7, "peer": "127.0.0.1:50000", "connected_at_ms": 1_714_564_800_000_i64,
             "consumers": 1, "unacked": 2, "published": 30},
        ]));
        assert_eq!(
            text,
            "ID  PEER             CONNECTED AT              CONSUMERS  UNACKED  PUBLISHED\n \
             7  127.0.0.1:50000  2024-05-01T12:00:00.000Z          1        2         30\n"
        );
    }
}
