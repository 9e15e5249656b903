//! `warren get`: pull messages like AMQP's `basic.get`, returning at once.
//!
//! Each message is acknowledged once its line is written to stdout (a message whose write
//! fails is not: it is given back, like a nack with requeue, so not counted as a failed
//! delivery). With `--requeue` they are all put back at the head of the queue instead, in
//! order, by a nack: marked redelivered with their acquired count raised but not their
//! delivery (failure) count, as RabbitMQ 4.3's "get, requeue" does; `warren queue peek`
//! looks without touching anything.

use anyhow::Context;
use clap::Args;

use crate::cli::output::write_delivery;
use crate::cli::Global;

/// The exit status of `warren get` when the queue had no ready message.
pub const EXIT_EMPTY: u8 = 3;

/// Arguments of `warren get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Queue to take from.
    pub queue: String,
    /// Take up to this many (fewer if the queue has fewer ready).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Put the messages back (at the head, marked redelivered) instead of acknowledging
    /// them.
    #[arg(long)]
    pub requeue: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// The queue had no ready message: `warren get` exits with [`EXIT_EMPTY`].
#[derive(Debug, thiserror::Error)]
#[error("queue '{0}' has no ready message")]
pub struct QueueEmpty(pub String);

/// Runs `warren get`.
///
/// # Errors
/// [`QueueEmpty`] when nothing was ready; connecting, getting or settling failed.
pub async fn run(args: GetArgs, global: &Global) -> anyhow::Result<()> {
    let client = global.server.connect().await?;
    let mut taken: Vec<u64> = Vec::new();
    let mut unprinted = false;
    let mut outcome: anyhow::Result<()> = Ok(());
    for _ in 0..args.count {
        let delivery = match client.get(&args.queue, false).await {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => {
                outcome =
                    Err(anyhow::Error::new(e)
                        .context(format!("getting from queue '{}'", args.queue)));
                break;
            }
        };
        match write_delivery(&delivery, args.json) {
            Ok(()) => taken.push(delivery.delivery_tag),
            // The reader is gone: this one is given back below.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                unprinted = true;
                break;
            }
            Err(e) => {
                unprinted = true;
                outcome = Err(anyhow::Error::new(e).context("writing to stdout"));
                break;
            }
        }
    }
    if let Some(&last) = taken.last() {
        // One durable settle for all of them: its Ok means every one is settled for good.
        let settled = if args.requeue {
            client.nack_durable(last, true, true, 0).await
        } else {
            client.ack_durable(last, true).await
        };
        let verb = if args.requeue {
            "requeueing"
        } else {
            "acknowledging"
        };
        let settled = settled.with_context(|| format!("{verb} what was printed"));
        if outcome.is_ok() {
            outcome = settled;
        }
    }
    if unprinted {
        // Not seen by anyone: a nack with requeue (tag 0 with multiple: all still unsettled)
        // returns it without counting a failure, which closing with it unacked would.
        // Best effort: if it fails, the close still requeues it.
        let _ = client.nack(0, true, true, 0).await;
    }
    client.close().await?;
    outcome?;
    if taken.is_empty() {
        return Err(QueueEmpty(args.queue).into());
    }
    Ok(())
}
