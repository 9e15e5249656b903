//! `warren status`: the server at a glance (admin command `status`).

use clap::Args;
use serde_json::Value;
use warren_protocol::FieldTable;

use crate::cli::output::{
    bytes_cell, cell, emit, flatten, human_duration, key_values, print_json, rate,
};
use crate::cli::Global;

/// Arguments of `warren status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the server's JSON instead of `key: value` lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs `warren status`.
///
/// # Errors
/// Connecting failed or the server refused.
pub async fn run(args: StatusArgs, global: &Global) -> anyhow::Result<()> {
    let status = global
        .server
        .admin("status", FieldTable::new(), || {
            "asking for the server status".to_owned()
        })
        .await?;
    if args.json {
        print_json(&status)
    } else {
        emit(&status_text(&status))
    }
}

/// The status as `key: value` lines: the well-known fields under readable names with sizes
/// and durations humanised; then, after a blank line, every counter (and any field this
/// version does not know) under its JSON path, e.g. `totals.dead_lettered.expired: 3`.
pub fn status_text(status: &Value) -> String {
    let field = |name: &str| status.get(name).unwrap_or(&Value::Null);
    let listeners = match field("listeners") {
        Value::Array(list) => list.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => cell(other),
    };
    let uptime = field("uptime_secs")
        .as_u64()
        .map_or_else(|| "-".to_owned(), human_duration);
    let lines: Vec<(String, String)> = vec![
        ("version".into(), cell(field("version"))),
        ("uptime".into(), uptime),
        ("listeners".into(), listeners),
        ("data dir".into(), cell(field("data_dir"))),
        ("store size".into(), bytes_cell(field("store_bytes"))),
        ("memory in use".into(), bytes_cell(field("memory_bytes"))),
        ("connections".into(), cell(field("connections"))),
        ("consumers".into(), cell(field("consumers"))),
        ("exchanges".into(), cell(field("exchanges"))),
        ("queues".into(), cell(field("queues"))),
        ("messages ready".into(), cell(field("messages_ready"))),
        ("messages unacked".into(), cell(field("messages_unacked"))),
        ("messages delayed".into(), cell(field("messages_delayed"))),
        (
            "publish rate".into(),
            format!("{}/s", rate(field("publish_rate"))),
        ),
        (
            "deliver rate".into(),
            format!("{}/s", rate(field("deliver_rate"))),
        ),
        ("ack rate".into(), format!("{}/s", rate(field("ack_rate")))),
    ];
    const SHOWN: [&str; 16] = [
        "version",
        "uptime_secs",
        "listeners",
        "data_dir",
        "store_bytes",
        "memory_bytes",
        "connections",
        "consumers",
        "exchanges",
        "queues",
        "messages_ready",
        "messages_unacked",
        "messages_delayed",
        "publish_rate",
        "deliver_rate",
        "ack_rate",
    ];
    let mut counters = Vec::new();
    if let Value::Object(map) = status {
        for (key, value) in map.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())) {
            flatten(key, value, &mut counters);
        }
    }
    let mut text = key_values(&lines);
    if !counters.is_empty() {
        text.push('\n');
        text.push_str(&key_values(&counters));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_reads_as_aligned_lines_with_counters_by_path() {
        let status = json!({
            "version": "0.1.0",
            "uptime_secs": 133,
            "listeners": ["warren://127.0.0.1:5680"],
            "data_dir": "/var/lib/warren",
            "store_bytes": 1_572_864,
            "memory_bytes": 10_485_760,
            "connections": 1,
            "consumers": 0,
            "exchanges": 7,
            "queues": 2,
            "messages_ready": 5,
            "messages_unacked": 0,
            "messages_delayed": 0,
            "publish_rate": 1.25,
            "deliver_rate": 0.0,
            "ack_rate": 0.0,
            "totals": {"published": 5, "dead_lettered": {"expired": 1}},
            "store": {"commits": 9},
        });
        let text = status_text(&status);
        for line in [
            "version: 0.1.0",
            "uptime:           2m 13s",
            "listeners:        warren://127.0.0.1:5680",
            "store size:       1.5 MiB",
            "memory in use:    10.0 MiB",
            "publish rate:     1.2/s",
            "store.commits:    9",
            "totals.dead_lettered.expired: 1",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().eq(line.split_whitespace())),
                "no {line:?} in\n{text}"
            );
        }
    }
}
