//! `warren queue declare|delete|purge|list|inspect|peek`.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use warren_protocol::{FieldTable, FieldValue};

use crate::admin_types::{DeadLetterInfo, QueueInfo};
use crate::cli::dlq::TABLE_PREVIEW_CHARS;
use crate::cli::field::{field_table, parse_queue_arg, VALUE_NAME};
use crate::cli::output::{
    cell, emit, exchange_name, flatten, human_bytes, key_values, one_line, opt_cell, print_json,
    rate, truncate, yes_no, Align, Table,
};
use crate::cli::{admin_args, count, decode, Global, PagedListArgs};
use crate::client::QueueOptions;

/// `warren queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Declare a queue (the server picks a name when NAME is "").
    Declare(QueueDeclareArgs),
    /// Delete a queue, saying how many messages it held.
    Delete(QueueDeleteArgs),
    /// Remove every ready message from a queue, saying how many.
    Purge(QueuePurgeArgs),
    /// List queues with their arguments, message counts and rates.
    List(PagedListArgs),
    /// Show one queue: attributes, every argument, counts, rates and totals.
    Inspect(QueueInspectArgs),
    /// Show the ready messages at the head of a queue without taking them (nothing changes:
    /// no delivery, no redelivered flag, no delivery count).
    Peek(QueuePeekArgs),
}

/// Arguments of `warren queue peek`.
#[derive(Debug, Args)]
pub struct QueuePeekArgs {
    /// Queue name.
    pub name: String,
    /// At most this many messages, from the head.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Print the server's JSON (whole bodies and headers) instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// The queue type: `classic` (the default) or `stream`, an append-only log read from any
    /// offset (docs/streams.md; sets `x-queue-type`; a stream is always durable).
    #[arg(long = "type", value_name = "TYPE", value_parser = ["classic", "stream"])]
    pub queue_type: Option<String>,
    /// A queue argument, KEY=VALUE or KEY:TYPE=VALUE, e.g. `x-max-length=1000` (repeatable).
    ///
    /// VALUE is a string unless TYPE says otherwise: string, int (or i64), i8, u8, i16,
    /// u16, i32, u32, u64, float (or f64), f32, decimal (`12.34`), timestamp (epoch
    /// seconds or RFC 3339: `at:timestamp=2026-11-30T12:00:00Z`, offsets as `+01:00`), void
    /// (no value: `k:void=`), bool, bytes (base64), list (a JSON array) or table (a JSON
    /// object), e.g. `n:int=5`, `ok:bool=true`, `raw:bytes=AAEC`, `tags:list='["a",1]'`, `meta:table='{"k":1}'`.
    /// Without a type, the arguments Warren knows take their own type: `x-message-ttl`,
    /// `x-expires`, `x-max-length`, `x-max-length-bytes`, `x-delivery-limit`,
    /// `x-consumer-timeout` and `x-max-priority` are ints; `x-retry-backoff=1s,5s` and the
    /// rest are strings.
    #[arg(long = "arg", value_name = VALUE_NAME, value_parser = parse_queue_arg)]
    pub args: Vec<(String, FieldValue)>,
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
}

/// Arguments of `warren queue purge`.
#[derive(Debug, Args)]
pub struct QueuePurgeArgs {
    /// Queue name.
    pub name: String,
}

/// Arguments of `warren queue inspect`.
#[derive(Debug, Args)]
pub struct QueueInspectArgs {
    /// Queue name.
    pub name: String,
    /// Print the server's JSON instead of `key: value` lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs a queue command, printing its result on stdout.
///
/// # Errors
/// Connecting failed or the server refused, with the queue's name in the context.
pub async fn run(command: QueueCommand, global: &Global) -> anyhow::Result<()> {
    match command {
        QueueCommand::Declare(args) => {
            let client = global.server.connect().await?;
            let stream = args.queue_type.as_deref() == Some("stream");
            let mut arguments = field_table(args.args);
            if let Some(t) = &args.queue_type {
                arguments.insert("x-queue-type".to_owned(), FieldValue::String(t.clone()));
            }
            let options = QueueOptions {
                // Streams are durable by nature: `--type stream` does not need `--durable`.
                durable: args.durable || stream,
                exclusive: args.exclusive,
                auto_delete: args.auto_delete,
                passive: false,
                arguments,
            };
            let ok = client
                .declare_queue(&args.name, options)
                .await
                .with_context(|| declaring(&args.name))?;
            client.close().await?;
            if global.quiet && args.name.is_empty() {
                // The server's choice is the result a script needs, not a success message.
                emit(&format!("{}\n", ok.name))?;
            } else {
                global.done(&format!("queue '{}' declared", ok.name))?;
            }
        }
        QueueCommand::Delete(args) => {
            let client = global.server.connect().await?;
            let deleted = client
                .delete_queue(&args.name, args.if_unused, args.if_empty)
                .await
                .with_context(|| format!("deleting queue '{}'", args.name))?;
            client.close().await?;
            global.done(&format!(
                "queue '{}' deleted: {}",
                args.name,
                count(deleted, "message")
            ))?;
        }
        QueueCommand::Purge(args) => {
            let client = global.server.connect().await?;
            let purged = client
                .purge_queue(&args.name)
                .await
                .with_context(|| format!("purging queue '{}'", args.name))?;
            client.close().await?;
            global.done(&format!(
                "queue '{}' purged: {}",
                args.name,
                count(purged, "message")
            ))?;
        }
        QueueCommand::List(args) => {
            let queues = global
                .server
                .admin_list::<QueueInfo>("queue.list", FieldTable::new(), &args, || {
                    "listing queues".to_owned()
                })
                .await?;
            if args.list.json {
                print_json(&queues)?;
            } else {
                emit(&queue_table(&decode::<Vec<QueueInfo>>(
                    "queue.list",
                    &queues,
                )?))?;
            }
        }
        QueueCommand::Inspect(args) => {
            let arguments = admin_args([("queue", Some(FieldValue::String(args.name.clone())))]);
            let queue = global
                .server
                .admin("queue.inspect", arguments, || {
                    format!("inspecting queue '{}'", args.name)
                })
                .await?;
            if args.json {
                print_json(&queue)?;
            } else {
                emit(&queue_text(&decode("queue.inspect", &queue)?, &queue))?;
            }
        }
        QueueCommand::Peek(args) => {
            let arguments = admin_args([
                ("queue", Some(FieldValue::String(args.name.clone()))),
                (
                    "limit",
                    Some(FieldValue::Int(
                        i64::try_from(args.limit).unwrap_or(i64::MAX),
                    )),
                ),
            ]);
            let messages = global
                .server
                .admin("queue.peek", arguments, || {
                    format!("peeking at queue '{}'", args.name)
                })
                .await?;
            if args.json {
                print_json(&messages)?;
            } else {
                emit(&peek_table(&decode::<Vec<DeadLetterInfo>>(
                    "queue.peek",
                    &messages,
                )?))?;
            }
        }
    }
    Ok(())
}

/// `queue.peek` as a table: position, message id, where it was published, how often its
/// delivery failed, size and the start of the body (escaped to one line).
pub fn peek_table(messages: &[DeadLetterInfo]) -> String {
    let mut table = Table::new(&[
        ("POS", Align::Right),
        ("MESSAGE ID", Align::Left),
        ("EXCHANGE", Align::Left),
        ("ROUTING KEY", Align::Left),
        ("FAILED", Align::Right),
        ("ACQUIRED", Align::Right),
        ("SIZE", Align::Right),
        ("BODY", Align::Left),
    ]);
    for m in messages {
        table.row(vec![
            m.position.to_string(),
            opt_cell(m.message_id.as_deref()),
            exchange_name(&m.exchange),
            m.routing_key.clone(),
            m.delivery_count.to_string(),
            m.acquired_count.to_string(),
            human_bytes(m.size),
            truncate(&one_line(&m.body_preview), TABLE_PREVIEW_CHARS),
        ]);
    }
    table.render()
}

/// `queue.list` as a table: name, durable, flags, an arguments summary, counts, bytes,
/// consumers and rates.
pub fn queue_table(queues: &[QueueInfo]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("DURABLE", Align::Left),
        ("FLAGS", Align::Left),
        ("ARGUMENTS", Align::Left),
        ("READY", Align::Right),
        ("UNACKED", Align::Right),
        ("DELAYED", Align::Right),
        ("BYTES", Align::Right),
        ("CONSUMERS", Align::Right),
        ("PUBLISH/S", Align::Right),
        ("DELIVER/S", Align::Right),
        ("ACK/S", Align::Right),
    ]);
    for q in queues {
        table.row(vec![
            q.name.clone(),
            yes_no(q.durable),
            flags(q),
            arguments_summary(q),
            q.messages_ready.to_string(),
            q.messages_unacked.to_string(),
            q.messages_delayed.to_string(),
            human_bytes(q.message_bytes),
            q.consumers.to_string(),
            rate(q.publish_rate),
            rate(q.deliver_rate),
            rate(q.ack_rate),
        ]);
    }
    table.render()
}

/// `stream` (a stream queue), `excl`, `auto-del`, `recovering` (its counts are not whole
/// yet), any of them (comma-separated) or `-`.
fn flags(q: &QueueInfo) -> String {
    let flags: Vec<&str> = [
        (q.queue_type == "stream", "stream"),
        (q.exclusive, "excl"),
        (q.auto_delete, "auto-del"),
        (q.recovering, "recovering"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, flag)| flag)
    .collect();
    if flags.is_empty() {
        "-".to_owned()
    } else {
        flags.join(",")
    }
}

/// The dead-lettering and limit arguments that are set, e.g.
/// `DLX=dlx TTL=5000ms max-len=100 overflow=reject-publish delivery-limit=3
/// max-priority=10`; `-` if none.
fn arguments_summary(q: &QueueInfo) -> String {
    let mut parts = Vec::new();
    if let Some(dlx) = &q.dead_letter_exchange {
        parts.push(format!("DLX={}", exchange_name(dlx)));
    }
    if let Some(key) = &q.dead_letter_routing_key {
        parts.push(format!("DLK={key}"));
    }
    if let Some(ttl) = q.message_ttl_ms {
        parts.push(format!("TTL={ttl}ms"));
    }
    if let Some(max) = q.max_length {
        parts.push(format!("max-len={max}"));
    }
    if let Some(max) = q.max_length_bytes {
        parts.push(format!("max-bytes={max}"));
    }
    // The server always reports an overflow mode; show it only when it was asked for.
    if q.arguments.contains_key("x-overflow") {
        parts.push(format!("overflow={}", q.overflow));
    }
    if let Some(limit) = q.delivery_limit {
        parts.push(format!("delivery-limit={limit}"));
    }
    // Read from the declared arguments: the listing has no field of its own for it.
    if let Some(max) = q.arguments.get("x-max-priority") {
        parts.push(format!("max-priority={max}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `queue.inspect` as `key: value` lines: attributes, one `argument NAME` line per argument,
/// the effective limits, counts, rates and totals; fields this version does not know follow
/// under their JSON names, read from `reply`, the JSON `q` was decoded from.
pub fn queue_text(q: &QueueInfo, reply: &Value) -> String {
    let mut lines: Vec<(String, String)> = vec![
        ("name".into(), q.name.clone()),
        ("durable".into(), yes_no(q.durable)),
        ("exclusive".into(), yes_no(q.exclusive)),
        ("auto delete".into(), yes_no(q.auto_delete)),
    ];
    for (name, value) in &q.arguments {
        lines.push((format!("argument {name}"), cell(value)));
    }
    lines.extend([
        (
            "dead letter exchange".into(),
            opt_cell(q.dead_letter_exchange.as_deref()),
        ),
        (
            "dead letter routing key".into(),
            opt_cell(q.dead_letter_routing_key.as_deref()),
        ),
        ("message ttl ms".into(), opt_cell(q.message_ttl_ms)),
        ("max length".into(), opt_cell(q.max_length)),
        ("max length bytes".into(), opt_cell(q.max_length_bytes)),
        ("overflow".into(), q.overflow.clone()),
        ("delivery limit".into(), opt_cell(q.delivery_limit)),
        ("messages ready".into(), q.messages_ready.to_string()),
        ("messages unacked".into(), q.messages_unacked.to_string()),
        ("messages delayed".into(), q.messages_delayed.to_string()),
        (
            "message bytes".into(),
            format!("{} ({})", human_bytes(q.message_bytes), q.message_bytes),
        ),
        ("consumers".into(), q.consumers.to_string()),
        ("publish rate".into(), format!("{}/s", rate(q.publish_rate))),
        ("deliver rate".into(), format!("{}/s", rate(q.deliver_rate))),
        ("ack rate".into(), format!("{}/s", rate(q.ack_rate))),
        ("published total".into(), q.published_total.to_string()),
        ("delivered total".into(), q.delivered_total.to_string()),
        ("acked total".into(), q.acked_total.to_string()),
        (
            "dead lettered total".into(),
            q.dead_lettered_total.to_string(),
        ),
    ]);
    const SHOWN: [&str; 24] = [
        "name",
        "durable",
        "exclusive",
        "auto_delete",
        "arguments",
        "dead_letter_exchange",
        "dead_letter_routing_key",
        "message_ttl_ms",
        "max_length",
        "max_length_bytes",
        "overflow",
        "delivery_limit",
        "messages_ready",
        "messages_unacked",
        "messages_delayed",
        "message_bytes",
        "consumers",
        "publish_rate",
        "deliver_rate",
        "ack_rate",
        "published_total",
        "delivered_total",
        "acked_total",
        "dead_lettered_total",
    ];
    if let Value::Object(map) = reply {
        // `as_of_ms` only dates the rates.
        for (key, value) in map
            .iter()
            .filter(|(k, _)| !SHOWN.contains(&k.as_str()) && k.as_str() != "as_of_ms")
        {
            flatten(key, value, &mut lines);
        }
    }
    key_values(&lines)
}

fn declaring(name: &str) -> String {
    if name.is_empty() {
        "declaring a server-named queue".to_owned()
    } else {
        format!("declaring queue '{name}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue() -> Value {
        json!({
            "name": "work",
            "durable": true,
            "exclusive": false,
            "auto_delete": true,
            "arguments": {"x-dead-letter-exchange": "", "x-message-ttl": 5000,
                          "x-max-length": 10, "x-overflow": "reject-publish"},
            "dead_letter_exchange": "",
            "dead_letter_routing_key": null,
            "message_ttl_ms": 5000,
            "max_length": 10,
            "max_length_bytes": null,
            "overflow": "reject-publish",
            "delivery_limit": null,
            "messages_ready": 3,
            "messages_unacked": 1,
            "messages_delayed": 0,
            "message_bytes": 2048,
            "consumers": 1,
            "publish_rate": 0.5,
            "deliver_rate": 0.0,
            "ack_rate": 0.0,
            "published_total": 4,
            "delivered_total": 1,
            "acked_total": 0,
            "dead_lettered_total": 0,
            "as_of_ms": 1,
        })
    }

    fn typed(q: Value) -> QueueInfo {
        serde_json::from_value(q).expect("a queue object")
    }

    #[test]
    fn the_table_summarises_arguments_that_are_set() {
        let text = queue_table(&[typed(queue())]);
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("NAME  DURABLE  FLAGS     ARGUMENTS"));
        let row: Vec<&str> = lines
            .next()
            .unwrap()
            .split("  ")
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            row.iter().map(|c| c.trim()).collect::<Vec<_>>(),
            [
                "work",
                "yes",
                "auto-del",
                "DLX=(default) TTL=5000ms max-len=10 overflow=reject-publish",
                "3",
                "1",
                "0",
                "2.0 KiB",
                "1",
                "0.5",
                "0.0",
                "0.0"
            ]
        );
        let mut plain = typed(queue());
        plain.name = "q".into();
        plain.durable = false;
        plain.exclusive = true;
        plain.auto_delete = false;
        plain.arguments.clear();
        plain.dead_letter_exchange = None;
        plain.message_ttl_ms = None;
        plain.max_length = None;
        plain.overflow = "drop-head".into();
        let text = queue_table(&[plain]);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("q     no       excl   -"),
            "{text}"
        );
    }

    #[test]
    fn inspect_lists_every_argument() {
        let text = queue_text(&typed(queue()), &queue());
        for line in [
            "argument x-message-ttl: 5000",
            "argument x-dead-letter-exchange:",
            "message bytes: 2.0 KiB (2048)",
            "delivery limit: -",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().eq(line.split_whitespace())),
                "no {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("as_of_ms"), "{text}");
    }
}
