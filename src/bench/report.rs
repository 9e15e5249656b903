//! What a bench run measured, and how it is printed.

use std::time::Duration;

use hdrhistogram::Histogram;

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Messages published and consumed.
    pub messages: u64,
    /// From the first publish to the last delivery.
    pub elapsed: Duration,
    /// Until the last confirm (with `no_confirm`: until the last publish was sent).
    pub publish_elapsed: Duration,
    /// The publisher asked for no confirms.
    pub no_confirm: bool,
    /// Publish → delivery latency, microseconds.
    pub latency_us: Histogram<u64>,
    /// Group commits during the run (in-process broker only).
    pub commits: Option<u64>,
    /// Messages written to the store during the run (in-process broker only).
    pub messages_written: Option<u64>,
    /// Store operations committed during the run (in-process broker only).
    pub ops_committed: Option<u64>,
    /// Time spent in commits during the run, microseconds (in-process broker only).
    pub commit_micros: Option<u64>,
    /// The stream scenario: how long reading everything back from the first offset took
    /// (after the appends; `elapsed` then covers both phases).
    pub read_elapsed: Option<Duration>,
}

impl BenchReport {
    /// Messages per second, end to end.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.latency_us;
        writeln!(f, "messages        {}", self.messages)?;
        writeln!(
            f,
            "end to end      {:.0} msgs/s ({:.2} s)",
            self.rate(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "publish         {:.0} msgs/s {} ({:.2} s)",
            self.messages as f64 / self.publish_elapsed.as_secs_f64().max(f64::EPSILON),
            if self.no_confirm { "sent" } else { "confirmed" },
            self.publish_elapsed.as_secs_f64()
        )?;
        if let Some(read) = self.read_elapsed {
            writeln!(
                f,
                "stream read     {:.0} msgs/s from the first offset ({:.2} s)",
                self.messages as f64 / read.as_secs_f64().max(f64::EPSILON),
                read.as_secs_f64()
            )?;
        }
        writeln!(
            f,
            "{}p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            if self.read_elapsed.is_some() {
                "age read (ms)   "
            } else {
                "latency (ms)    "
            },
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        )?;
        if let (Some(commits), Some(written), Some(ops), Some(micros)) = (
            self.commits,
            self.messages_written,
            self.ops_committed,
            self.commit_micros,
        ) {
            let per = |x: u64| x as f64 / commits.max(1) as f64;
            writeln!(
                f,
                "group commits   {commits}: {:.1} messages written and {:.1} operations per commit, {:.2} ms per commit",
                per(written),
                per(ops),
                per(micros) / 1000.0
            )?;
        }
        Ok(())
    }
}
