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
