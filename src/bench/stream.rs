//! The stream scenario (`--stream`): append, then read everything back from the first offset.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::bail;
use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;

use super::{now_us, BenchOptions, BenchReport};
use crate::client::{Client, ConsumeOptions, OutgoingMessage};

/// The stream scenario: appends with a window of confirms in flight, then one consumer reads
/// everything from the first offset (from the store: the appends are done), acking each.
/// The latency histogram is the read phase's age of each message when read.
pub(super) async fn stream_bench(
    opts: &BenchOptions,
    publisher: &Client,
    reader: &Client,
    queue: &str,
) -> anyhow::Result<BenchReport> {
    let n = opts.messages;
    let started = Instant::now();
    let mut window = VecDeque::with_capacity(opts.in_flight);
    let filler = vec![b'x'; opts.size - 8];
    for _ in 0..n {
        let mut body = BytesMut::with_capacity(opts.size);
        body.put_u64_le(now_us());
        body.put_slice(&filler);
        window.push_back(
            publisher
                .publish(OutgoingMessage::new("", queue, body.freeze()).persistent())
                .await?,
        );
        if window.len() >= opts.in_flight {
            if let Some(p) = window.pop_front() {
                let outcome = p.await?;
                if !outcome.is_confirmed() {
                    bail!("an append was not confirmed: {outcome:?}");
                }
            }
        }
    }
    while let Some(p) = window.pop_front() {
        let outcome = p.await?;
        if !outcome.is_confirmed() {
            bail!("an append was not confirmed: {outcome:?}");
        }
    }
    let publish_elapsed = started.elapsed();
    let read_started = Instant::now();
    let mut consumer = reader
        .consume(
            queue,
            ConsumeOptions::default().stream_offset(crate::client::StreamOffset::First),
        )
        .await?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
    for got in 0..n {
        let Some(d) = consumer.next().await else {
            bail!("the stream consumer ended after {got} messages");
        };
        let mut ts = [0u8; 8];
        if let Some(src) = d.body.get(..8) {
            ts.copy_from_slice(src);
        }
        let age = now_us()
            .saturating_sub(u64::from_le_bytes(ts))
            .clamp(1, 600_000_000);
        hist.record(age).map_err(|e| anyhow::anyhow!("{e}"))?;
        reader.ack(d.delivery_tag, false).await?;
    }
    let read_elapsed = read_started.elapsed();
    Ok(BenchReport {
        messages: n,
        elapsed: started.elapsed(),
        publish_elapsed,
        no_confirm: false,
        latency_us: hist,
        commits: None,
        messages_written: None,
        ops_committed: None,
        commit_micros: None,
        read_elapsed: Some(read_elapsed),
    })
}
