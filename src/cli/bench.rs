//! `warren bench`: arguments for the end-to-end load generator in [`crate::bench`].
//!
//! Every value flag is optional so that a `--scenario` preset can fill it in; a flag given
//! on the command line wins over the preset, and the general default applies when neither
//! says. The defaults are what `warren bench` always ran (one producer, one consumer, one
//! durable queue on the default exchange, 200,000 persistent 256 B messages, 1,000 confirms
//! in flight, prefetch 1,000, acks), so older commands in docs/BENCHMARKS.md mean the same.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::bench::{BenchOptions, ExchangeType, Scenario, Volume};
use crate::cli::Global;

/// Arguments of `warren bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A preset workload from issue 11's table (s1..s7; docs/BENCHMARKS.md says what each
    /// is); other flags override what it sets.
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// Producer connections [default: 1].
    #[arg(long)]
    pub producers: Option<usize>,
    /// Consumer connections, spread over the queues [default: 1].
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Queues bound to the exchange [default: 1].
    #[arg(long)]
    pub queues: Option<usize>,
    /// Exchange the producers publish to: `default` (the nameless exchange) and `direct`
    /// send each message to one queue, round-robin; `fanout` and `topic` to every queue
    /// [default: default].
    #[arg(long, value_enum)]
    pub exchange_type: Option<ExchangeType>,
    /// Messages to publish, all producers together [default: 200000].
    #[arg(long, visible_alias = "messages", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Publish for this many seconds instead of a count.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Messages per second, per producer (as PerfTest's --rate); unlimited by default.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<u64>,
    /// Body size in bytes, at least 20 [default: 256].
    #[arg(long)]
    pub size: Option<usize>,
    /// Publishes awaiting their confirm at most, per producer [default: 1000].
    #[arg(long, alias = "in-flight")]
    pub confirm_window: Option<usize>,
    /// Each consumer connection's prefetch [default: 1000].
    #[arg(long)]
    pub prefetch: Option<u32>,
    /// Consume with auto-ack: deliveries count as acknowledged when sent.
    #[arg(long)]
    pub auto_ack: bool,
    /// Persistent messages to durable queues (the default; overrides a transient preset).
    #[arg(long, conflicts_with = "transient")]
    pub persistent: bool,
    /// Transient messages to transient queues instead of persistent ones to durable
    /// queues.
    #[arg(long)]
    pub transient: bool,
    /// Publish without confirms (the `Publish` no-confirm flag): the publishers send as
    /// fast as the connection lets them, and the run fails if the server refused anything.
    /// (The stream scenario measures confirmed appends.)
    #[arg(long, conflicts_with = "stream")]
    pub no_confirm: bool,
    /// Publish everything first with no consumer, then start the consumers and drain.
    #[arg(long)]
    pub backlog: bool,
    /// Application headers on every message (short string values), to measure their cost.
    #[arg(long, default_value_t = 0)]
    pub headers: usize,
    /// Data directory of the in-process broker (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The stream scenario: append the messages to a stream with confirms, then read them
    /// all back from the first offset; reports the append and the read rate.
    #[arg(long, conflicts_with = "transient")]
    pub stream: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The options these arguments ask for: flags first, then the scenario, then the
    /// defaults of [`BenchOptions::new`].
    ///
    /// # Errors
    /// A duration that is not a positive number of seconds.
    pub fn options(&self) -> anyhow::Result<BenchOptions> {
        let d = BenchOptions::new();
        let p = self.scenario.map(Scenario::preset).unwrap_or_default();
        let volume = match (self.count, self.duration) {
            (Some(n), _) => Volume::Count(n),
            (None, Some(s)) => {
                if !(s.is_finite() && s > 0.0) {
                    bail!("--duration must be a positive number of seconds");
                }
                Volume::Duration(Duration::from_secs_f64(s))
            }
            (None, None) => p.volume.unwrap_or(d.volume),
        };
        let persistent = if self.persistent {
            true
        } else if self.transient {
            false
        } else {
            p.persistent.unwrap_or(d.persistent)
        };
        Ok(BenchOptions {
            scenario: self.scenario,
            producers: self.producers.or(p.producers).unwrap_or(d.producers),
            consumers: self.consumers.or(p.consumers).unwrap_or(d.consumers),
            queues: self.queues.or(p.queues).unwrap_or(d.queues),
            exchange_type: self
                .exchange_type
                .or(p.exchange_type)
                .unwrap_or(d.exchange_type),
            size: self.size.or(p.size).unwrap_or(d.size),
            volume,
            rate: self.rate.or(p.rate),
            confirm_window: self.confirm_window.unwrap_or(d.confirm_window),
            prefetch: self.prefetch.unwrap_or(d.prefetch),
            auto_ack: self.auto_ack || p.auto_ack,
            persistent,
            no_confirm: self.no_confirm || p.no_confirm,
            backlog: self.backlog || p.backlog,
            headers: self.headers,
            stream: self.stream,
            data_dir: self.data_dir.clone(),
            ..d
        })
    }
}

/// Runs the benchmark and prints its report. `server` is the global `--server` as given on
/// the command line: a running daemon to measure, logged in to as every client command
/// does (`--user`, `--password-stdin`, `WARREN_USER`/`WARREN_PASSWORD`, `--vhost`, and
/// the TLS options, all in `global`); without it a broker starts in this process.
///
/// # Errors
/// The broker could not be started or reached, a message was refused, or the run's
/// verification failed (a message lost, misrouted or duplicated): the report is printed
/// first.
pub async fn run(args: BenchArgs, server: Option<String>, global: &Global) -> anyhow::Result<()> {
    let tls = global
        .server
        .tls
        .as_ref()
        .map(crate::tls::ClientTls::new)
        .transpose()?;
    let mut opts = args.options()?;
    opts.server = server;
    opts.tls = tls;
    opts.login = global.server.options.clone();
    let report = crate::bench::run(opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !report.verification.is_ok() {
        bail!("verification failed: {}", report.verification.describe());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn opts(args: &[&str]) -> BenchOptions {
        let cli = Cli::try_parse_from([&["bench"][..], args].concat()).unwrap();
        cli.bench.options().unwrap()
    }

    #[test]
    fn no_flag_runs_what_bench_always_ran() {
        let o = opts(&[]);
        assert_eq!(o.volume, Volume::Count(200_000));
        assert_eq!((o.size, o.confirm_window, o.prefetch), (256, 1_000, 1_000));
        assert!(o.persistent && !o.auto_ack && !o.no_confirm);
        assert_eq!((o.producers, o.consumers, o.queues), (1, 1, 1));
        assert_eq!(o.exchange_type, ExchangeType::Default);
    }

    #[test]
    fn old_flag_names_still_parse() {
        let o = opts(&["--messages", "50", "--in-flight", "10", "--transient"]);
        assert_eq!(o.volume, Volume::Count(50));
        assert_eq!(o.confirm_window, 10);
        assert!(!o.persistent);
    }

    #[test]
    fn flags_override_a_preset() {
        let o = opts(&["--scenario", "s3"]);
        assert!(!o.persistent && o.auto_ack && o.no_confirm);
        assert_eq!(o.volume, Volume::Count(500_000));
        let o = opts(&["--scenario", "s3", "--count", "2000", "--persistent"]);
        assert!(o.persistent);
        assert_eq!(o.volume, Volume::Count(2_000));
        let o = opts(&["--scenario", "s5", "--queues", "2"]);
        assert_eq!(o.exchange_type, ExchangeType::Topic);
        assert_eq!((o.queues, o.consumers), (2, 4));
        let o = opts(&["--scenario", "s4", "--duration", "1.5"]);
        assert_eq!(o.volume, Volume::Duration(Duration::from_millis(1500)));
        assert_eq!(o.rate, Some(10_000));
    }
}
