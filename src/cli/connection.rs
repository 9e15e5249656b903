//! `warren connection list`.

use clap::Subcommand;
use warren_protocol::FieldTable;

use crate::admin_types::ConnectionInfo;
use crate::cli::output::{emit, print_json, time_cell, Align, Table};
use crate::cli::{decode, Global, PagedListArgs};

/// `warren connection ...`
#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// List client connections (this command's own included).
    List(PagedListArgs),
}

/// Runs a connection command.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(command: ConnectionCommand, global: &Global) -> anyhow::Result<()> {
    let ConnectionCommand::List(args) = command;
    let connections = global
        .server
        .admin_list::<ConnectionInfo>("connection.list", FieldTable::new(), &args, || {
            "listing connections".to_owned()
        })
        .await?;
    if args.list.json {
        print_json(&connections)
    } else {
        emit(&connection_table(&decode::<Vec<ConnectionInfo>>(
            "connection.list",
            &connections,
        )?))
    }
}

/// `connection.list` as a table: id, peer, protocol (the listener it came through), client
/// (an AMQP client's product and version; `-` when it sent none), connected at (UTC),
/// consumers, unacked, published.
pub fn connection_table(connections: &[ConnectionInfo]) -> String {
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("PEER", Align::Left),
        ("PROTOCOL", Align::Left),
        ("CLIENT", Align::Left),
        ("CONNECTED AT", Align::Left),
        ("CONSUMERS", Align::Right),
        ("UNACKED", Align::Right),
        ("PUBLISHED", Align::Right),
    ]);
    for c in connections {
        table.row(vec![
            c.id.to_string(),
            c.peer.clone(),
            c.protocol.clone(),
            client_cell(c),
            time_cell(i64::try_from(c.connected_at_ms).ok()),
            c.consumers.to_string(),
            c.unacked.to_string(),
            c.published.to_string(),
        ]);
    }
    table.render()
}

/// `product version`, either alone when the other is missing, `-` when both are.
fn client_cell(c: &ConnectionInfo) -> String {
    match (c.client_product.as_deref(), c.client_version.as_deref()) {
        (Some(p), Some(v)) => format!("{p} {v}"),
        (Some(one), None) | (None, Some(one)) => one.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connections_show_when_they_connected() {
        let connections = decode::<Vec<ConnectionInfo>>(
            "connection.list",
            &json!([
                {"id": 7, "peer": "127.0.0.1:50000", "connected_at_ms": 1_714_564_800_000_i64,
                 "consumers": 1, "unacked": 2, "published": 30},
                {"id": 8, "peer": "127.0.0.1:50001", "connected_at_ms": 1_714_564_800_000_i64,
                 "consumers": 0, "unacked": 0, "published": 0, "protocol": "amqps",
                 "client_product": "lapin", "client_version": "4.12.3"},
            ]),
        )
        .unwrap();
        let text = connection_table(&connections);
        assert_eq!(
            text,
            "ID  PEER             PROTOCOL  CLIENT        CONNECTED AT              CONSUMERS  UNACKED  PUBLISHED\n \
             7  127.0.0.1:50000  native    -             2024-05-01T12:00:00.000Z          1        2         30\n \
             8  127.0.0.1:50001  amqps     lapin 4.12.3  2024-05-01T12:00:00.000Z          0        0          0\n"
        );
    }
}
