//! `warren serve`: the daemon's command-line arguments. Running the daemon lives with the
//! server; this file only declares what it accepts.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use warren_protocol::DEFAULT_MAX_FRAME_SIZE_BYTES;

/// Arguments of `warren serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:5680",
        env = "WARREN_LISTEN"
    )]
    pub listen: String,

    /// Directory holding the store and `runtime.json`.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "./warren-data",
        env = "WARREN_DATA_DIR"
    )]
    pub data_dir: PathBuf,

    /// Heartbeat interval offered to clients, in seconds (0 turns heartbeats off).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        env = "WARREN_HEARTBEAT_SECS"
    )]
    pub heartbeat_secs: u32,

    /// Largest frame either side may send, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_SIZE_BYTES)]
    pub max_frame_size: u32,

    /// Seconds a frame that has started arriving may take to arrive whole; a client that
    /// sends part of a frame and stalls is closed with FRAME_ERROR after this, heartbeats or
    /// not (0 turns the limit off).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "WARREN_FRAME_TIMEOUT_SECS"
    )]
    pub frame_timeout_secs: u32,

    /// Largest encoded message properties, headers included, a publish may carry, in bytes;
    /// larger ones are refused with CONTENT_TOO_LARGE. The default, 128 KiB, is RabbitMQ's
    /// practical limit (its content header must fit in one default-sized frame).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::connection::DEFAULT_MAX_HEADER_BYTES,
        env = "WARREN_MAX_HEADER_BYTES"
    )]
    pub max_header_bytes: u32,

    /// Seconds the server may fail to write a single byte to a client before it closes the
    /// connection (requeueing its unacked messages). Default: two heartbeat intervals, or 60
    /// with heartbeats off; 0 turns the limit off.
    #[arg(long, value_name = "SECS", env = "WARREN_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u32>,

    /// Bytes of ready message bodies each queue keeps in memory; stored messages past this
    /// are paged out and read back when due.
    #[arg(long, value_name = "BYTES", default_value_t = crate::broker::DEFAULT_QUEUE_WINDOW_BYTES)]
    pub queue_window_bytes: u64,

    /// How long a delivery may stay unacked before its consumer is cancelled and the message
    /// requeued, for queues without `x-consumer-timeout` (milliseconds; default: no limit).
    #[arg(long, value_name = "MS", env = "WARREN_CONSUMER_TIMEOUT_MS")]
    pub consumer_timeout_ms: Option<u64>,

    /// Address to serve Prometheus metrics on, at `GET /metrics` (default: off;
    /// `127.0.0.1:0` picks a free port, recorded in `runtime.json` as `metrics_listen`).
    #[arg(long, value_name = "ADDR", env = "WARREN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// Block persistent publishers while free space on the data directory's filesystem is
    /// below this (the disk alarm; RabbitMQ's `disk_free_limit`). Bytes, or with a unit:
    /// `50MB`, `2GiB`; `0` turns the alarm off.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "50MB",
        value_parser = parse_size,
        env = "WARREN_DISK_FREE_LIMIT"
    )]
    pub disk_free_limit: u64,

    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How the daemon writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a size in bytes: a number, optionally followed by a unit (`kB`, `MB`, `GB`, `TB`
/// in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of 1024; case does not matter).
///
/// # Errors
/// Not a number, an unknown unit, or more than `u64::MAX` bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: expected a number of bytes, e.g. 50MB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is more bytes than fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512 kb"), Ok(512_000));
        assert!(parse_size("50XB")
            .unwrap_err()
            .contains("unknown unit 'xb'"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999TB").is_err());
    }
}
