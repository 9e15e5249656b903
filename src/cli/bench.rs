//! `warren bench`: arguments for the end-to-end load generator in [`crate::bench`].

use std::path::PathBuf;

use clap::Args;

use crate::bench::BenchOptions;
use crate::cli::Global;

/// Arguments of `warren bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Messages to publish and consume.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Body size in bytes (at least 8).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Publishes awaiting their confirm at most.
    #[arg(long, default_value_t = 1_000)]
    pub in_flight: usize,
    /// The consumer's prefetch.
    #[arg(long, default_value_t = 1_000)]
    pub prefetch: u32,
    /// Publish transient messages to a transient queue instead of persistent ones to a durable
    /// queue.
    #[arg(long)]
    pub transient: bool,
    /// Publish without confirms (the `Publish` no-confirm flag): the publisher sends as
    /// fast as the connection lets it, and fails the run if the server refused anything. (The stream scenario measures
    /// confirmed appends.)
    #[arg(long, conflicts_with = "stream")]
    pub no_confirm: bool,
    /// Application headers on every message (short string values), to measure their cost.
    #[arg(long, default_value_t = 0)]
    pub headers: usize,
    /// Data directory of the in-process broker (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The stream scenario: append --messages to a stream with confirms, then read them all
    /// back from the first offset; reports the append and the read rate.
    #[arg(long, conflicts_with = "transient")]
    pub stream: bool,
}

/// Runs the benchmark and prints its report. `server` is the global `--server` as given on
/// the command line: a running daemon to measure, logged in to as every client command
/// does (`--user`, `--password-stdin`, `WARREN_USER`/`WARREN_PASSWORD`, `--vhost`, and
/// the TLS options, all in `global`); without it a broker starts in this process.
///
/// # Errors
/// The broker could not be started or reached, or a message was refused.
pub async fn run(args: BenchArgs, server: Option<String>, global: &Global) -> anyhow::Result<()> {
    let tls = global
        .server
        .tls
        .as_ref()
        .map(crate::tls::ClientTls::new)
        .transpose()?;
    let report = crate::bench::run(BenchOptions {
        messages: args.messages,
        size: args.size,
        in_flight: args.in_flight,
        prefetch: args.prefetch,
        persistent: !args.transient,
        server,
        data_dir: args.data_dir,
        tls,
        login: global.server.options.clone(),
        headers: args.headers,
        stream: args.stream,
        no_confirm: args.no_confirm,
    })
    .await?;
    print!("{report}");
    Ok(())
}
