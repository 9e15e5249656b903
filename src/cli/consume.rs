//! `warren consume` and `warren subscribe`: print each delivery, then settle it (ack by
//! default), until `--count` messages, Ctrl-C or SIGTERM (a clean stop), or the end of the
//! consumer (an error).
//!
//! Settling is fire-and-forget except for the last message before exit, which is settled
//! durably: the server's `Ok` for it comes after every earlier settle on the connection, so
//! when the command exits everything it printed has been acknowledged. To have such a last
//! message on Ctrl-C too, each settle is held back until the next delivery arrives (or the
//! queue has been idle for [`IDLE_SETTLE`], when it is settled durably). With `--prefetch 1`
//! holding one back would stall delivery, so every settle is durable then.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::cli::output::{delivery_json_line, delivery_line};
use crate::cli::Global;
use crate::client::{Client, ClientError, ConsumeOptions, Consumer, Delivery, QueueOptions};

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
    #[arg(long, conflicts_with_all = ["reject", "nack_requeue_delay"])]
    pub no_ack: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Reject every message without requeueing it (dead-letters it, if so configured).
    #[arg(long, conflicts_with = "nack_requeue_delay")]
    pub reject: bool,
    /// Nack every message with requeue, ready again after this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub nack_requeue_delay: Option<u64>,
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
    NackRequeue { delay_ms: u64 },
}

impl Settle {
    async fn send(self, client: &Client, tag: u64, durable: bool) -> Result<(), ClientError> {
        match (self, durable) {
            (Settle::Ack, false) => client.ack(tag, false).await,
            (Settle::Ack, true) => client.ack_durable(tag, false).await,
            (Settle::Reject, false) => client.reject(tag, false).await,
            (Settle::Reject, true) => client.reject_durable(tag, false).await,
            (Settle::NackRequeue { delay_ms }, false) => {
                client.nack(tag, false, true, delay_ms).await
            }
            (Settle::NackRequeue { delay_ms }, true) => {
                client.nack_durable(tag, false, true, delay_ms).await
            }
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Settle::Ack => "acknowledging",
            Settle::Reject => "rejecting",
            Settle::NackRequeue { .. } => "requeueing",
        }
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
}

/// Runs `warren consume`.
///
/// # Errors
/// Connecting or consuming failed, or the consumer ended before `--count` messages.
pub async fn run_consume(mut args: ConsumeArgs, global: &Global) -> anyhow::Result<()> {
    let client = global.server.connect().await?;
    if let (true, Some(count)) = (args.no_ack, args.count) {
        // A no-ack consumer gets everything the server can push, and `--count` would drop
        // what it did not print. With a count, take exactly that many, acked as printed.
        args.no_ack = false;
        let limit = u32::try_from(count).unwrap_or(u32::MAX).max(1);
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
    let options = ConsumeOptions {
        no_ack: args.no_ack,
        ..ConsumeOptions::default()
    };
    let consumer = client
        .consume(&args.queue, options)
        .await
        .with_context(|| format!("consuming from queue '{}'", args.queue))?;
    let settle = if args.no_ack {
        None
    } else if args.reject {
        Some(Settle::Reject)
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
    client
        .qos(DEFAULT_PREFETCH)
        .await
        .with_context(|| format!("setting prefetch to {DEFAULT_PREFETCH}"))?;
    let consumer = client
        .consume(&queue, ConsumeOptions::default())
        .await
        .with_context(|| format!("consuming from queue '{queue}'"))?;
    let options = LoopOptions {
        count: args.count,
        json: args.json,
        settle: Some(Settle::Ack),
        prefetch: DEFAULT_PREFETCH,
    };
    let source = format!("exchange '{}' (queue '{queue}')", args.exchange);
    print_loop(&client, consumer, &source, options).await
}

/// Prints and settles deliveries until `--count`, Ctrl-C (or SIGTERM), a closed stdout, or
/// the end of the consumer (an error), then closes the connection.
async fn print_loop(
    client: &Client,
    mut consumer: Consumer,
    source: &str,
    options: LoopOptions,
) -> anyhow::Result<()> {
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut printed = 0u64;
    // The last printed delivery whose settle is held back (see the module docs).
    let mut held: Option<u64> = None;
    let end: anyhow::Result<()> = loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = &mut stop => break Ok(()),
            () = tokio::time::sleep(IDLE_SETTLE), if held.is_some() => {
                if let (Some(tag), Some(settle)) = (held.take(), options.settle) {
                    if let Err(e) = settle.send(client, tag, true).await {
                        break Err(settling_error(e, settle, tag));
                    }
                }
                continue;
            }
        };
        let Some(delivery) = next else {
            let reason = consumer
                .cancel_reason()
                .map_or_else(|| "no reason given".to_owned(), ToString::to_string);
            break Err(anyhow::anyhow!("consuming from {source}: {reason}"));
        };
        match print(&delivery, options.json) {
            Ok(()) => {}
            // `warren consume q | head -1`: the reader is gone; this delivery stays unsettled
            // and is redelivered.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context("writing to stdout")),
        }
        printed += 1;
        let last = options.count.is_some_and(|count| printed >= count);
        if let Some(settle) = options.settle {
            let tag = delivery.delivery_tag;
            if let Some(previous) = held.take() {
                if let Err(e) = settle.send(client, previous, false).await {
                    break Err(settling_error(e, settle, previous));
                }
            }
            if last || options.prefetch == 1 {
                if let Err(e) = settle.send(client, tag, true).await {
                    break Err(settling_error(e, settle, tag));
                }
            } else {
                held = Some(tag);
            }
        }
        if last {
            break Ok(());
        }
    };
    if let (Some(tag), Some(settle)) = (held, options.settle) {
        if !client.is_closed() {
            let settled = settle.send(client, tag, true).await;
            // After a failure, the first error is the one worth reporting.
            if end.is_ok() {
                settled.map_err(|e| settling_error(e, settle, tag))?;
            }
        }
    }
    client.close().await?;
    end
}

/// Resolves on Ctrl-C, or SIGTERM on Unix; never, if no handler can be installed.
#[cfg(unix)]
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                () = ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => ctrl_c().await,
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

fn print(delivery: &Delivery, json: bool) -> std::io::Result<()> {
    let line = if json {
        delivery_json_line(delivery)
    } else {
        delivery_line(delivery)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
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
    }
}
