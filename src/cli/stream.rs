//! `warren stream read|info|consumers`: reading a stream from an offset, and what a stream
//! holds (admin commands `stream.info`, `stream.consumers`; docs/streams.md).
//!
//! `read` consumes with `x-stream-offset` and prints each entry with its offset. Without
//! `--follow` it stops at the end of the stream as it was when the command started; with
//! `--name` the server keeps the reader's position, so the next `read --name` (without
//! `--from`) continues after the last entry this one printed.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_protocol::FieldValue;

use crate::admin_types::{StreamConsumerInfo, StreamInfo, StreamProducerInfo};
use crate::cli::output::{delivery_json, delivery_line, one_line};
use crate::cli::output::{emit, human_bytes, opt_cell, print_json, time_cell, Align, Table};
use crate::cli::{admin_args, decode, Global};
use crate::client::{ConsumeOptions, StreamOffset};

/// How long `read` without `--follow` waits for the next entry before deciding there is
/// none for it (a timestamp past the last entry).
pub const READ_IDLE: Duration = Duration::from_secs(2);

/// `warren stream ...`
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Print a stream's entries from an offset, with their offsets (reading removes nothing).
    Read(StreamReadArgs),
    /// Show a stream's first and last offsets and timestamps, size, retention and consumers.
    Info(StreamNameArgs),
    /// Show each named consumer's position and lag.
    Consumers(StreamNameArgs),
}

/// Arguments of `warren stream read`.
#[derive(Debug, Args)]
pub struct StreamReadArgs {
    /// The stream.
    pub name: String,
    /// Where to start: `first`, `last` (the last chunk), `next` (only new entries), an
    /// offset, or a time (RFC 3339, `2026-11-30T10:00:00Z`, ms allowed). Default: `first`,
    /// or with `--name` where that name left off.
    #[arg(long, value_name = "WHERE")]
    pub from: Option<String>,
    /// Stop after this many entries.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Keep reading new entries as they are appended (until Ctrl-C or --count).
    #[arg(long)]
    pub follow: bool,
    /// Read as this named consumer: the server stores its position.
    #[arg(long, value_name = "CONSUMER")]
    pub name_as: Option<String>,
    /// Print one JSON object per line (with `stream_offset`).
    #[arg(long)]
    pub json: bool,
}

/// A stream's name, and `--json`.
#[derive(Debug, Args)]
pub struct StreamNameArgs {
    /// The stream.
    pub name: String,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--from` as a consume argument.
fn parse_from(text: &str) -> anyhow::Result<StreamOffset> {
    Ok(match text {
        "first" => StreamOffset::First,
        "last" => StreamOffset::Last,
        "next" => StreamOffset::Next,
        t => match t.parse::<u64>() {
            Ok(n) => StreamOffset::Offset(n),
            Err(_) => StreamOffset::Timestamp(
                crate::broker::stream::parse_rfc3339_ms(t).with_context(|| {
                    format!(
                        "--from {t}: expected first, last, next, an offset or an RFC 3339 time \
                         like 2026-11-30T10:00:00Z"
                    )
                })?,
            ),
        },
    })
}

/// Runs a stream command.
///
/// # Errors
/// Connecting failed, the server refused (no such stream, a bad offset), or stdout closed.
pub async fn run(command: StreamCommand, global: &Global) -> anyhow::Result<()> {
    match command {
        StreamCommand::Info(args) => {
            let json = info_json(global, &args.name).await?;
            if args.json {
                return print_json(&json);
            }
            emit(&info_text(&decode::<StreamInfo>("stream.info", &json)?))
        }
        StreamCommand::Consumers(args) => {
            let json = global
                .server
                .admin(
                    "stream.consumers",
                    admin_args([("queue", Some(FieldValue::String(args.name.clone())))]),
                    || format!("listing the consumers of stream '{}'", args.name),
                )
                .await?;
            if args.json {
                return print_json(&json);
            }
            emit(&consumers_table(&decode::<Vec<StreamConsumerInfo>>(
                "stream.consumers",
                &json,
            )?))
        }
        StreamCommand::Read(args) => read(args, global).await,
    }
}

async fn info_json(global: &Global, name: &str) -> anyhow::Result<serde_json::Value> {
    global
        .server
        .admin(
            "stream.info",
            admin_args([("queue", Some(FieldValue::String(name.to_owned())))]),
            || format!("inspecting stream '{name}'"),
        )
        .await
}

async fn read(args: StreamReadArgs, global: &Global) -> anyhow::Result<()> {
    let info: StreamInfo = decode("stream.info", &info_json(global, &args.name).await?)?;
    // Without --follow the read ends at the stream's end as of now.
    let end = info.next_offset;
    let from = match (&args.from, &args.name_as) {
        (Some(f), _) => Some(parse_from(f)?),
        (None, Some(_)) => None,
        (None, None) => Some(StreamOffset::First),
    };
    if !args.follow && (info.messages == 0 || from == Some(StreamOffset::Next)) {
        return Ok(());
    }
    let client = global.server.connect().await?;
    let prefetch = args.count.map_or(1000, |n| n.min(1000)) as u32;
    client.qos(prefetch).await?;
    let mut options = ConsumeOptions::default();
    if let Some(f) = from {
        options = options.stream_offset(f);
    }
    if let Some(n) = &args.name_as {
        options = options.stream_consumer_name(n);
    }
    let mut consumer = client
        .consume(&args.name, options)
        .await
        .with_context(|| format!("reading stream '{}'", args.name))?;
    let mut printed = 0u64;
    let mut last_tag = None;
    loop {
        let next = if args.follow {
            consumer.next().await
        } else {
            match tokio::time::timeout(READ_IDLE, consumer.next()).await {
                Ok(d) => d,
                Err(_) => break,
            }
        };
        let Some(d) = next else { break };
        let offset = d.stream_offset.unwrap_or(0);
        if !args.follow && offset >= end {
            break;
        }
        let line = if args.json {
            serde_json::to_string(&delivery_json(&d)).unwrap_or_default()
        } else {
            format!("{offset} {}", delivery_line(&d))
        };
        emit(&format!("{line}\n"))?;
        if let Some(tag) = last_tag.replace(d.delivery_tag) {
            client.ack(tag, false).await?;
        }
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) || (!args.follow && offset + 1 >= end) {
            break;
        }
    }
    if let Some(tag) = last_tag {
        // Durable: when the command exits, a named reader's position includes what it
        // printed.
        client.ack_durable(tag, false).await?;
    }
    client.close().await?;
    Ok(())
}

/// `stream.info` as `key: value` lines.
pub fn info_text(i: &StreamInfo) -> String {
    let retention = match (i.max_length_bytes, i.max_age_ms) {
        (None, None) => "none".to_owned(),
        (b, a) => {
            let mut parts = Vec::new();
            if let Some(b) = b {
                parts.push(format!("max {}", human_bytes(b)));
            }
            if let Some(a) = a {
                parts.push(format!("max age {}", human_age(a)));
            }
            parts.join(", ")
        }
    };
    let ts = |t: Option<u64>| time_cell(t.map(|v| i64::try_from(v).unwrap_or(i64::MAX)));
    format!(
        "stream:          {}\nmessages:        {}\nfirst offset:    {}\nlast offset:     {}\n\
         first timestamp: {}\nlast timestamp:  {}\nsize:            {}\nchunks:          {} (of up to {})\n\
         retention:       {}\nconsumers:       {} attached, {} named\nproducers:       {}\n",
        i.name,
        i.messages,
        opt_cell(i.first_offset),
        opt_cell(i.last_offset),
        ts(i.first_timestamp_ms),
        ts(i.last_timestamp_ms),
        human_bytes(i.bytes),
        i.chunks,
        human_bytes(i.chunk_bytes),
        retention,
        i.consumers,
        i.named_consumers.len(),
        producers_cell(&i.producers),
    )
}

/// The named producers and their last sequences, `none` without any: a resending publisher
/// compares its numbering with these. A stream keeps every name it was ever sent, so only
/// the first few fit on the line; `--json` lists them all.
fn producers_cell(producers: &[StreamProducerInfo]) -> String {
    const SHOWN: usize = 10;
    if producers.is_empty() {
        return "none".to_owned();
    }
    let mut cell = producers
        .iter()
        .take(SHOWN)
        .map(|p| format!("{} at {}", one_line(&p.name), p.sequence))
        .collect::<Vec<_>>()
        .join(", ");
    if producers.len() > SHOWN {
        cell.push_str(&format!(
            ", and {} more (--json lists them all)",
            producers.len() - SHOWN
        ));
    }
    cell
}

fn human_age(ms: u64) -> String {
    match ms {
        m if m % 86_400_000 == 0 => format!("{}D", m / 86_400_000),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m => format!("{}s", m / 1000),
    }
}

/// `stream.consumers` as a table.
pub fn consumers_table(consumers: &[StreamConsumerInfo]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("OFFSET", Align::Right),
        ("LAG", Align::Right),
        ("ATTACHED", Align::Left),
    ]);
    for c in consumers {
        table.row(vec![
            c.name.clone(),
            c.offset.to_string(),
            c.lag.to_string(),
            if c.attached { "yes" } else { "no" }.to_owned(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producers_line_names_the_first_ten_and_counts_the_rest() {
        assert_eq!(producers_cell(&[]), "none");
        let p = |i: u64| StreamProducerInfo {
            name: format!("p{i}"),
            sequence: i * 10,
        };
        assert_eq!(producers_cell(&[p(1), p(2)]), "p1 at 10, p2 at 20");
        let many: Vec<_> = (0..13).map(p).collect();
        let cell = producers_cell(&many);
        assert!(cell.starts_with("p0 at 0, p1 at 10,"), "{cell}");
        assert!(cell.contains("p9 at 90, and 3 more"), "{cell}");
        assert!(!cell.contains("p10 at"), "{cell}");
    }
}
