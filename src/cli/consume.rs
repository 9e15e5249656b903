//! `warren consume` and `warren subscribe`: print each delivery, then settle it (ack by
//! default), until `--count` messages, `--idle-timeout`, Ctrl-C or SIGTERM (a clean stop), a
//! closed stdout, or the end of the consumer (an error).
//!
//! A message is settled only after its line has been written to stdout, so one that was not
//! printed (a closed pipe, an interrupted run) is redelivered. With `--count N` the command
//! never takes more than N: it asks for no more prefetch than N, holds back the settles that
//! would make room for an (N+1)-th delivery, and once the N-th has arrived cancels the
//! consumer keeping its deliveries (PROTOCOL.md `Cancel`) before settling them (`Settler`).
//!
//! Settling is fire-and-forget except for the last message before exit, which is settled
//! durably: the server's `Ok` for it comes after every earlier settle on the connection, so
//! when the command exits everything it printed has been acknowledged. To have such a last
//! message on Ctrl-C too, each settle is held back until the next delivery arrives (or the
//! queue has been idle for [`IDLE_SETTLE`], when it is settled durably). With `--prefetch 1`
//! holding one back would stall delivery, so every settle is durable then.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::cli::output::write_delivery;
use crate::cli::Global;
use crate::client::{Client, ClientError, ConsumeOptions, Consumer, QueueOptions};

/// Prefetch of `warren consume` unless `--prefetch` says otherwise, and of `warren subscribe`.
pub const DEFAULT_PREFETCH: u32 = 100;

/// How long a held-back settle waits for the next delivery before it is sent durably.
pub const IDLE_SETTLE: Duration = Duration::from_millis(200);

/// Arguments of `warren consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Queue to consume from.
    pub queue: String,
    /// Exit after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Max unacknowledged messages the server sends ahead (0 = no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PREFETCH)]
    pub prefetch: u32,
    /// Let the server count messages as acknowledged when it sends them. With `--count`,
    /// exactly that many are taken (acknowledged as printed), so none are lost unprinted.
    #[arg(long, conflicts_with_all = ["reject", "reject_requeue", "nack_requeue_delay"])]
    pub no_ack: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Reject every message without requeueing it (dead-letters it, if so configured).
    #[arg(long, conflicts_with_all = ["nack_requeue_delay", "reject_requeue"])]
    pub reject: bool,
    /// Reject every message with requeue: a failed delivery, counted toward the queue's
    /// `x-delivery-limit` and delayed by its `x-retry-backoff` (RabbitMQ 4.3's
    /// `basic.reject`).
    #[arg(long, conflicts_with = "nack_requeue_delay")]
    pub reject_requeue: bool,
    /// Nack every message with requeue, ready again after this many milliseconds. A nack is
    /// not a failure: it never reaches `x-delivery-limit` (use `--reject-requeue` for that).
    #[arg(long, value_name = "MS")]
    pub nack_requeue_delay: Option<u64>,
    /// Exit (successfully) once no message has arrived for this many seconds.
    #[arg(long, value_name = "SECS", value_parser = positive_seconds)]
    pub idle_timeout: Option<f64>,
    /// This consumer's consumer timeout: the server cancels it if a message stays
    /// unacknowledged this many milliseconds (overrides the queue's and the server's).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub consumer_timeout: Option<u64>,
}

/// Arguments of `warren subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Exchange to subscribe to.
    pub exchange: String,
    /// Binding key: a topic pattern, a direct key, or anything for fanout.
    pub pattern: String,
    /// Exit after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// What happens to each printed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Reject,
    RejectRequeue,
    NackRequeue { delay_ms: u64 },
}

impl Settle {
    /// Settles `tag` (with `multiple`, every unsettled delivery up to it), fire-and-forget
    /// or `durable`: then the server's `Ok` also covers every earlier settle.
    async fn send(
        self,
        client: &Client,
        tag: u64,
        multiple: bool,
        durable: bool,
    ) -> Result<(), ClientError> {
        // Reject has no `multiple`: `Settler::flush` rejects a held-back range one by one.
        // A nack without requeue is the same refusal as a reject without.
        let (requeue, delay_ms) = match self {
            Settle::Ack if durable => return client.ack_durable(tag, multiple).await,
            Settle::Ack => return client.ack(tag, multiple).await,
            Settle::RejectRequeue if durable => return client.reject_durable(tag, true).await,
            Settle::RejectRequeue => return client.reject(tag, true).await,
            Settle::Reject => (false, 0),
            Settle::NackRequeue { delay_ms } => (true, delay_ms),
        };
        if durable {
            client.nack_durable(tag, multiple, requeue, delay_ms).await
        } else {
            client.nack(tag, multiple, requeue, delay_ms).await
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Settle::Ack => "acknowledging",
            Settle::Reject | Settle::RejectRequeue => "rejecting",
            Settle::NackRequeue { .. } => "requeueing",
        }
    }
}

/// Settles printed deliveries, in the order printed, without ever making room for a
/// delivery past `--count`.
///
/// The server sends a consumer more while its unsettled deliveries are fewer than its
/// prefetch `p`, so after `s` settles it can have sent at most `s + p`. With `--count N`
/// only the first `N - p` printed messages are settled as the loop goes (`budget`); the
/// rest are held until the N-th has arrived, the consumer is cancelled keeping them, and
/// one durable settle covers them all. Without a count the newest printed delivery is held
/// back (see the module docs).
struct Settler<'a> {
    client: &'a Client,
    settle: Settle,
    /// Printed, not yet settled, oldest first.
    pending: Vec<u64>,
    /// Settles sent so far.
    settled: u64,
    /// How many may be settled before the end (`None`: no limit).
    budget: Option<u64>,
    /// Prefetch 1: holding one back would stall delivery, so each settle is durable.
    durable_each: bool,
}

impl Settler<'_> {
    /// How many more may be settled before the end.
    fn allowed(&self) -> usize {
        self.budget.map_or(usize::MAX, |b| {
            usize::try_from(b.saturating_sub(self.settled)).unwrap_or(usize::MAX)
        })
    }

    /// Records a printed delivery and settles what may be settled now.
    async fn printed(&mut self, tag: u64) -> anyhow::Result<()> {
        self.pending.push(tag);
        let keep = usize::from(!self.durable_each);
        let n = self.pending.len().saturating_sub(keep).min(self.allowed());
        let durable = self.durable_each;
        for tag in self.pending.drain(..n).collect::<Vec<_>>() {
            self.send(tag, false, durable).await?;
        }
        Ok(())
    }

    /// Whether the idle timer may settle everything held.
    fn can_flush(&self) -> bool {
        !self.pending.is_empty() && self.pending.len() <= self.allowed()
    }

    /// Settles everything held, durably: the `Ok` covers every settle before it.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.settle == Settle::RejectRequeue {
            // A reject names one delivery: one each, the last durable (its `Ok` covers all).
            let tags = std::mem::take(&mut self.pending);
            if let Some((&last, rest)) = tags.split_last() {
                for &tag in rest {
                    self.send(tag, false, false).await?;
                }
                self.send(last, false, true).await?;
            }
            return Ok(());
        }
        if let Some(&last) = self.pending.last() {
            self.send(last, true, true).await?;
            self.pending.clear();
        }
        Ok(())
    }

    async fn send(&mut self, tag: u64, multiple: bool, durable: bool) -> anyhow::Result<()> {
        self.settle
            .send(self.client, tag, multiple, durable)
            .await
            .map_err(|e| settling_error(e, self.settle, tag))?;
        self.settled += if multiple {
            self.pending.len() as u64
        } else {
            1
        };
        Ok(())
    }
}

/// How the printing loop runs.
#[derive(Debug, Clone, Copy)]
struct LoopOptions {
    count: Option<u64>,
    json: bool,
    /// `None` for `no_ack` consumers.
    settle: Option<Settle>,
    prefetch: u32,
    /// Stop after this long without a delivery.
    idle_timeout: Option<Duration>,
}

/// Runs `warren consume`.
///
/// # Errors
/// Connecting or consuming failed, or the consumer ended before `--count` messages.
pub async fn run_consume(mut args: ConsumeArgs, global: &Global) -> anyhow::Result<()> {
    let client = global.server.connect().await?;
    if let Some(count) = args.count {
        // A no-ack consumer gets everything the server can push, and `--count` would drop
        // what it did not print: with a count, take exactly that many, acked as printed.
        args.no_ack = false;
        // More prefetch than the count would only be sent back unseen.
        let limit = u32::try_from(count).unwrap_or(u32::MAX);
        args.prefetch = if args.prefetch == 0 {
            limit
        } else {
            args.prefetch.min(limit)
        };
    }
    client
        .qos(args.prefetch)
        .await
        .with_context(|| format!("setting prefetch to {}", args.prefetch))?;
    let mut options = ConsumeOptions {
        no_ack: args.no_ack,
        ..ConsumeOptions::default()
    };
    if let Some(ms) = args.consumer_timeout {
        options = options.consumer_timeout(Duration::from_millis(ms));
    }
    let consumer = client
        .consume(&args.queue, options)
        .await
        .with_context(|| format!("consuming from queue '{}'", args.queue))?;
    let settle = if args.no_ack {
        None
    } else if args.reject {
        Some(Settle::Reject)
    } else if args.reject_requeue {
        Some(Settle::RejectRequeue)
    } else if let Some(delay_ms) = args.nack_requeue_delay {
        Some(Settle::NackRequeue { delay_ms })
    } else {
        Some(Settle::Ack)
    };
    let options = LoopOptions {
        count: args.count,
        json: args.json,
        settle,
        prefetch: args.prefetch,
        idle_timeout: args.idle_timeout.map(Duration::from_secs_f64),
    };
    let source = format!("queue '{}'", args.queue);
    print_loop(&client, consumer, &source, options).await
}

/// Runs `warren subscribe`: a server-named, exclusive, auto-delete queue bound with the
/// pattern, consumed like `warren consume`.
///
/// # Errors
/// Connecting, declaring, binding or consuming failed, or the consumer ended early.
pub async fn run_subscribe(args: SubscribeArgs, global: &Global) -> anyhow::Result<()> {
    let client = global.server.connect().await?;
    let options = QueueOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueOptions::default()
    };
    let queue = client
        .declare_queue("", options)
        .await
        .context("declaring a server-named queue")?
        .name;
    client
        .bind(&queue, &args.exchange, &args.pattern, Default::default())
        .await
        .with_context(|| {
            format!(
                "binding queue '{queue}' to exchange '{}' with key '{}'",
                args.exchange, args.pattern
            )
        })?;
    let prefetch = args.count.map_or(DEFAULT_PREFETCH, |n| {
        DEFAULT_PREFETCH.min(u32::try_from(n).unwrap_or(u32::MAX))
    });
    client
        .qos(prefetch)
        .await
        .with_context(|| format!("setting prefetch to {prefetch}"))?;
    let consumer = client
        .consume(&queue, ConsumeOptions::default())
        .await
        .with_context(|| format!("consuming from queue '{queue}'"))?;
    let options = LoopOptions {
        count: args.count,
        json: args.json,
        settle: Some(Settle::Ack),
        prefetch,
        idle_timeout: None,
    };
    let source = format!("exchange '{}' (queue '{queue}')", args.exchange);
    print_loop(&client, consumer, &source, options).await
}

/// Prints and settles deliveries until `--count`, `--idle-timeout`, Ctrl-C (or SIGTERM), a
/// closed stdout, or the end of the consumer (an error), then closes the connection.
///
/// A delivery is settled only once its line is written to stdout; one whose write fails is
/// not, and is redelivered.
async fn print_loop(
    client: &Client,
    mut consumer: Consumer,
    source: &str,
    options: LoopOptions,
) -> anyhow::Result<()> {
    let stop = stop_signal();
    tokio::pin!(stop);
    let stdout_gone = stdout_closed();
    tokio::pin!(stdout_gone);
    let mut idle_deadline = options
        .idle_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let mut settler = options.settle.map(|settle| Settler {
        client,
        settle,
        pending: Vec::new(),
        settled: 0,
        budget: options
            .count
            .map(|n| n.saturating_sub(u64::from(options.prefetch))),
        durable_each: options.prefetch == 1,
    });
    let mut printed = 0u64;
    let end: anyhow::Result<()> = loop {
        let can_flush = settler.as_ref().is_some_and(Settler::can_flush);
        let next = tokio::select! {
            next = consumer.next() => next,
            () = &mut stop => break Ok(()),
            // `warren consume q | head -1`: the reader is gone; nothing more can be printed.
            () = &mut stdout_gone => break Ok(()),
            () = tokio::time::sleep(IDLE_SETTLE), if can_flush => {
                if let Some(s) = settler.as_mut() {
                    if let Err(e) = s.flush().await {
                        break Err(e);
                    }
                }
                continue;
            }
            () = sleep_until(idle_deadline), if idle_deadline.is_some() => break Ok(()),
        };
        if let (Some(deadline), Some(t)) = (idle_deadline.as_mut(), options.idle_timeout) {
            *deadline = tokio::time::Instant::now() + t;
        }
        let Some(delivery) = next else {
            let reason = consumer
                .cancel_reason()
                .map_or_else(|| "no reason given".to_owned(), ToString::to_string);
            break Err(anyhow::anyhow!("consuming from {source}: {reason}"));
        };
        match write_delivery(&delivery, options.json) {
            Ok(()) => {}
            // The reader is gone: this delivery stays unsettled and is redelivered.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context("writing to stdout")),
        }
        printed += 1;
        if options.count.is_some_and(|count| printed >= count) {
            if let Some(s) = settler.as_mut() {
                s.pending.push(delivery.delivery_tag);
            }
            break Ok(());
        }
        if let Some(s) = settler.as_mut() {
            if let Err(e) = s.printed(delivery.delivery_tag).await {
                break Err(e);
            }
        }
    };
    if let Some(mut s) = settler {
        if !client.is_closed() && consumer.cancel_reason().is_none() {
            // Nothing more arrives after this, and what it holds stays unsettled for the
            // settle below (not requeued, its acquired count not raised).
            let cancelled = client
                .cancel_keeping_unacked(consumer.tag())
                .await
                .with_context(|| format!("cancelling the consumer on {source}"));
            if end.is_ok() {
                cancelled?;
            }
        }
        if !client.is_closed() {
            let settled = s.flush().await;
            // After a failure, the first error is the one worth reporting.
            if end.is_ok() {
                settled?;
            }
            // Deliveries received but not printed were never seen: give them back with a
            // nack (tag 0 with multiple: all still unsettled), which counts no failure, as
            // closing with them unacked would (docs/dead-lettering.md). Best effort: if it
            // fails, the close still requeues them.
            let _ = client.nack(0, true, true, 0).await;
        }
    }
    // Anything still unsettled (the nack above failed, or no settle mode) is requeued by the
    // server as the connection closes.
    client.close().await?;
    end
}

/// Resolves on Ctrl-C, or SIGTERM on Unix; never, if no handler can be installed.
///
/// The handlers are installed here, when called, not when the future is first polled: the
/// print loop's `select!` may find a delivery ready every time before it polls this future,
/// and a SIGTERM arriving then would kill the process (the default action) with deliveries
/// printed but not acked.
#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Ok(mut term), Err(_)) => {
                tokio::select! {
                    () = ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            (Err(_), _) => ctrl_c().await,
        }
    }
}

/// Resolves on Ctrl-C; never, if no handler can be installed.
#[cfg(not(unix))]
async fn stop_signal() {
    ctrl_c().await;
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn settling_error(e: ClientError, settle: Settle, tag: u64) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("{} delivery {tag}", settle.verb()))
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `--idle-timeout`: a positive number of seconds (fractions allowed).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs < 1e9 => Ok(secs),
        _ => Err(format!(
            "expected a positive number of seconds, got '{text}'"
        )),
    }
}

/// Resolves when stdout is a pipe whose reader has gone (`warren consume q | head -1`), so a
/// consumer waiting on an empty queue notices at once instead of at its next write; never
/// for a terminal or a file.
async fn stdout_closed() {
    #[cfg(unix)]
    if let Some(pipe) = stdout_pipe() {
        let (gone, rx) = tokio::sync::oneshot::channel::<()>();
        // poll(2) blocks; a detached thread ends with the process.
        std::thread::spawn(move || {
            use rustix::event::{poll, PollFd, PollFlags};
            loop {
                // A pipe's write end reports an error once no reader is left.
                let mut fds = [PollFd::new(&pipe, PollFlags::empty())];
                match poll(&mut fds, None) {
                    Ok(_) if fds.iter().any(|f| !f.revents().is_empty()) => {
                        let _ = gone.send(());
                        return;
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => return,
                }
            }
        });
        if rx.await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// A handle on stdout when it is a pipe.
#[cfg(unix)]
fn stdout_pipe() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
    let is_pipe = file.metadata().ok()?.file_type().is_fifo();
    is_pipe.then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn settle_flags_conflict() {
        for argv in [
            &["warren", "consume", "q", "--no-ack", "--reject"][..],
            &[
                "warren",
                "consume",
                "q",
                "--reject",
                "--nack-requeue-delay",
                "5",
            ],
            &[
                "warren",
                "consume",
                "q",
                "--no-ack",
                "--nack-requeue-delay",
                "5",
            ],
            &["warren", "consume", "q", "--count", "0"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn consume_defaults() {
        let cli = Cli::try_parse_from(["warren", "consume", "q"]).unwrap();
        let Command::Consume(args) = cli.command else {
            panic!("expected consume");
        };
        assert_eq!(args.prefetch, DEFAULT_PREFETCH);
        assert_eq!(args.count, None);
        assert!(!args.no_ack && !args.json && !args.reject);
        assert_eq!(args.consumer_timeout, None);
        for bad in ["0", "-5", "1s"] {
            assert!(
                Cli::try_parse_from(["warren", "consume", "q", "--consumer-timeout", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
