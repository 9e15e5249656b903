//! What a bench run measured, printed as text or (`--json`) as one JSON object.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::options::{ExchangeType, Scenario, Volume};
use super::verify::Verdict;

/// A rate, in messages and in megabytes (10^6 bytes of body) per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Body megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Over how long, seconds.
    pub secs: f64,
}

impl Rate {
    /// `n` messages of `size` bytes in `over`.
    pub fn new(n: u64, size: usize, over: Duration) -> Rate {
        let secs = over.as_secs_f64();
        let msgs_per_sec = n as f64 / secs.max(f64::EPSILON);
        Rate {
            msgs_per_sec,
            mb_per_sec: msgs_per_sec * size as f64 / 1e6,
            secs,
        }
    }
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    /// From a histogram of µs.
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The server's CPU time and resident memory, read before and after the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerUsage {
    /// The broker ran in the bench's own process: the numbers include the bench's clients.
    pub in_process: bool,
    /// CPU seconds (user + system) the server had used before the run; `None` when the
    /// server does not report it (a daemon older than `status.cpu_seconds`).
    pub cpu_seconds_before: Option<f64>,
    /// ... and once every delivery arrived.
    pub cpu_seconds_after: Option<f64>,
    /// Resident memory before the run, bytes.
    pub resident_bytes_before: u64,
    /// ... and once every delivery arrived (before the queues are deleted).
    pub resident_bytes_after: u64,
    /// The highest resident memory seen at the watchdog's 1 s samples during the run.
    pub resident_bytes_peak: u64,
}

impl ServerUsage {
    /// CPU seconds the server spent during the run.
    pub fn cpu_seconds(&self) -> Option<f64> {
        Some(self.cpu_seconds_after? - self.cpu_seconds_before?)
    }
}

/// The options as run, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunOptions {
    /// The preset, if any.
    pub scenario: Option<Scenario>,
    /// `in-process` or the daemon's address.
    pub server: String,
    /// Producer connections.
    pub producers: usize,
    /// Consumer connections.
    pub consumers: usize,
    /// Queues.
    pub queues: usize,
    /// Exchange type.
    pub exchange_type: ExchangeType,
    /// Body size, bytes.
    pub size: usize,
    /// Count (all producers together) or duration.
    pub volume: Volume,
    /// Per-producer rate limit, msgs/s.
    pub rate: Option<u64>,
    /// Confirms in flight per producer.
    pub confirm_window: usize,
    /// Prefetch per consumer connection.
    pub prefetch: u32,
    /// Auto-ack.
    pub auto_ack: bool,
    /// Persistent messages, durable queues.
    pub persistent: bool,
    /// No confirms.
    pub no_confirm: bool,
    /// Published everything before consuming.
    pub backlog: bool,
    /// Headers per message.
    pub headers: usize,
    /// The queue was a stream read from the first offset.
    pub stream: bool,
}

/// In-process store counters over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GroupCommits {
    /// Group commits.
    pub commits: u64,
    /// Messages written.
    pub messages_written: u64,
    /// Store operations committed.
    pub ops_committed: u64,
    /// Time in commits, µs.
    pub commit_micros: u64,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The options.
    pub options: RunOptions,
    /// Messages published (all producers).
    pub published: u64,
    /// Of those, confirmed (0 with `--no-confirm`).
    pub confirmed: u64,
    /// Deliveries received, duplicates included.
    pub delivered: u64,
    /// Acks sent (0 with `--auto-ack`).
    pub acked: u64,
    /// Exactly-once-per-queue check; the run failed unless `verification.is_ok()`.
    pub verification: Verdict,
    /// Publish rate: sent, until the last send.
    pub publish: Rate,
    /// Confirm rate, until the last confirm (`None` with `--no-confirm`).
    pub confirm: Option<Rate>,
    /// Delivery rate, from the first publish (after a backlog: from the consumers' start)
    /// to the last delivery.
    pub delivery: Rate,
    /// Ack rate over the same span.
    pub ack: Option<Rate>,
    /// From the first publish to the last delivery, seconds.
    pub elapsed_secs: f64,
    /// Send → delivery latency from the stamp in the body (after a backlog or from a
    /// stream: how old each message was when read).
    pub latency: Latency,
    /// The server's CPU and memory.
    pub server: ServerUsage,
    /// Group commits during the run (in-process broker only).
    pub group_commits: Option<GroupCommits>,
    /// The full latency histogram (not printed).
    #[serde(skip)]
    pub latency_us: Histogram<u64>,
}

impl BenchReport {
    /// Messages published per second from the first publish to the last delivery: what
    /// `warren bench` always called "end to end" (with fan-out, deliveries are a multiple).
    pub fn end_to_end(&self) -> f64 {
        self.published as f64 / self.elapsed_secs.max(f64::EPSILON)
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        if let Some(s) = o.scenario {
            writeln!(f, "scenario        {s:?}")?;
        }
        writeln!(f, "messages        {}", self.published)?;
        writeln!(
            f,
            "workload        {} producer(s), {} consumer(s), {} queue(s) on {:?}, {} B, {}{}{}{}",
            o.producers,
            o.consumers,
            o.queues,
            o.exchange_type,
            o.size,
            if o.persistent {
                "persistent"
            } else {
                "transient"
            },
            if o.no_confirm { ", no confirms" } else { "" },
            if o.auto_ack { ", auto-ack" } else { "" },
            o.rate
                .map(|r| format!(", {r} msgs/s per producer"))
                .unwrap_or_default(),
        )?;
        writeln!(
            f,
            "end to end      {:.0} msgs/s ({:.2} s)",
            self.end_to_end(),
            self.elapsed_secs
        )?;
        let (what, r) = match (o.no_confirm, self.confirm) {
            (false, Some(c)) => ("confirmed", c),
            _ => ("sent", self.publish),
        };
        writeln!(
            f,
            "publish         {:.0} msgs/s {what} ({:.2} s), {:.1} MB/s",
            r.msgs_per_sec, r.secs, r.mb_per_sec,
        )?;
        writeln!(
            f,
            "{}{:.0} msgs/s, {:.1} MB/s ({} deliveries, {} acks)",
            if o.stream {
                "stream read     "
            } else if o.backlog {
                "drain           "
            } else {
                "delivery        "
            },
            self.delivery.msgs_per_sec,
            self.delivery.mb_per_sec,
            self.delivered,
            self.acked,
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "{}p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            if o.stream || o.backlog {
                "age read (ms)   "
            } else {
                "latency (ms)    "
            },
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
        )?;
        let s = &self.server;
        writeln!(
            f,
            "server{}  cpu {} s, rss {:.1} → {:.1} MB (peak {:.1} MB)",
            if s.in_process {
                " (+bench)"
            } else {
                "        "
            },
            s.cpu_seconds()
                .map_or("n/a".to_owned(), |c| format!("{c:.2}")),
            s.resident_bytes_before as f64 / 1e6,
            s.resident_bytes_after as f64 / 1e6,
            s.resident_bytes_peak as f64 / 1e6,
        )?;
        if let Some(c) = s.cpu_seconds().filter(|c| *c > 0.0) {
            writeln!(
                f,
                "per cpu second  {:.0} deliveries",
                self.delivered as f64 / c
            )?;
        }
        if let Some(g) = self.group_commits {
            let per = |x: u64| x as f64 / g.commits.max(1) as f64;
            writeln!(
                f,
                "group commits   {}: {:.1} messages written and {:.1} operations per commit, {:.2} ms per commit",
                g.commits,
                per(g.messages_written),
                per(g.ops_committed),
                per(g.commit_micros) / 1000.0
            )?;
        }
        writeln!(f, "verified        {}", self.verification.describe())?;
        Ok(())
    }
}
