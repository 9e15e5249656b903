//! `warren status`: the server at a glance (admin command `status`).

use clap::Args;
use serde_json::Value;
use warren_protocol::FieldTable;

use crate::admin_types::Status;
use crate::cli::output::{
    emit, flatten, human_bytes, human_duration, key_values, print_json, rate,
};
use crate::cli::{decode, Global};

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
        emit(&status_text(&decode("status", &status)?, &status))
    }
}

/// The status as `key: value` lines: the well-known fields under readable names with sizes
/// and durations humanised; then, after a blank line, every counter (and any field this
/// version does not know) under its JSON path, e.g. `totals.dead_lettered.expired: 3`,
/// read from `reply`, the JSON `status` was decoded from.
pub fn status_text(status: &Status, reply: &Value) -> String {
    let lines: Vec<(String, String)> = vec![
        ("version".into(), status.version.clone()),
        ("uptime".into(), human_duration(status.uptime_secs)),
        ("listeners".into(), status.listeners.join(", ")),
        ("data dir".into(), status.data_dir.clone()),
        ("store size".into(), human_bytes(status.store_bytes)),
        ("memory in use".into(), human_bytes(status.memory_bytes)),
        (
            "memory budget".into(),
            if status.memory_limit_bytes == 0 {
                "off".into()
            } else {
                format!(
                    "{} of {}",
                    human_bytes(status.memory_used_bytes),
                    human_bytes(status.memory_limit_bytes)
                )
            },
        ),
        ("disk free".into(), human_bytes(status.disk_free_bytes)),
        (
            "alarms".into(),
            if status.alarms.is_empty() {
                "none".into()
            } else {
                status.alarms.join(", ")
            },
        ),
        ("connections".into(), status.connections.to_string()),
        ("consumers".into(), status.consumers.to_string()),
        ("exchanges".into(), status.exchanges.to_string()),
        ("queues".into(), status.queues.to_string()),
        ("messages ready".into(), status.messages_ready.to_string()),
        (
            "messages unacked".into(),
            status.messages_unacked.to_string(),
        ),
        (
            "messages delayed".into(),
            status.messages_delayed.to_string(),
        ),
        (
            "publish rate".into(),
            format!("{}/s", rate(status.publish_rate)),
        ),
        (
            "deliver rate".into(),
            format!("{}/s", rate(status.deliver_rate)),
        ),
        ("ack rate".into(), format!("{}/s", rate(status.ack_rate))),
    ];
    const SHOWN: [&str; 20] = [
        "version",
        "uptime_secs",
        "listeners",
        "data_dir",
        "store_bytes",
        "memory_bytes",
        "disk_free_bytes",
        "alarms",
        "memory_used_bytes",
        "memory_limit_bytes",
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
    if let Value::Object(map) = reply {
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
            "disk_free_bytes": 3_221_225_472_u64,
            "memory_used_bytes": 8_388_608,
            "memory_limit_bytes": 1_073_741_824,
            "alarms": ["disk"],
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
            "totals": {"published": 5, "routed": 5, "unroutable": 0, "returned": 0,
                       "acked": 0, "requeued": 0, "expired": 1,
                       "dead_lettered": {"expired": 1}, "dead_letters_dropped": 0,
                       "scheduled": 0, "consumer_timeouts": 0},
            "store": {"commits": 9, "messages_written": 5, "operations_committed": 9,
                      "commit_seconds_total": 0.01},
        });
        let text = status_text(&serde_json::from_value(status.clone()).unwrap(), &status);
        for line in [
            "version: 0.1.0",
            "uptime:           2m 13s",
            "listeners:        warren://127.0.0.1:5680",
            "store size:       1.5 MiB",
            "memory in use:    10.0 MiB",
            "disk free:        3.0 GiB",
            "memory budget:    8.0 MiB of 1.0 GiB",
            "alarms:           disk",
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
