//! `warren bench`: an end-to-end load generator over the client library. One publisher with
//! a window of confirms in flight and one consumer acking every message run at once; the
//! report gives throughput, end-to-end latency percentiles (from an HDR histogram) and, when
//! the broker runs in-process, how many messages each group commit carried.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;

use crate::broker::{Broker, BrokerConfig, DEFAULT_QUEUE_WINDOW_BYTES};
use crate::client::{Client, ConnectOptions, ConsumeOptions, OutgoingMessage, QueueOptions};
use crate::connection::ConnectionConfig;

mod report;
mod stream;

pub use report::BenchReport;
use stream::stream_bench;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages to publish and consume.
    pub messages: u64,
    /// Body size in bytes (at least 8: the send time rides in the body).
    pub size: usize,
    /// Publishes awaiting their confirm at most.
    pub in_flight: usize,
    /// The consumer's prefetch.
    pub prefetch: u32,
    /// Publish persistent messages to a durable queue.
    pub persistent: bool,
    /// A running daemon to measure; `None` starts a broker in this process.
    pub server: Option<String>,
    /// Data directory for the in-process broker (a temporary one if `None`).
    pub data_dir: Option<PathBuf>,
    /// Connect to `server` with TLS (the in-process broker has no TLS listener).
    pub tls: Option<crate::tls::ClientTls>,
    /// Who logs in to `server`, and in which virtual host (the in-process broker is
    /// always measured as guest on `/`, the only user it has).
    pub login: ConnectOptions,
    /// Application headers on every message (`h0`..`hN`, short string values), to measure
    /// what headers cost on the publish and delivery paths.
    pub headers: usize,
    /// The stream scenario: append `messages` to a stream with confirms, then read them all
    /// back from the first offset (acking each), and report both rates.
    pub stream: bool,
    /// Publish without confirms; `in_flight` then does not apply (the connection's own
    /// bound on publishes in flight holds the publisher back).
    pub no_confirm: bool,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Runs the benchmark.
///
/// # Errors
/// The broker cannot start or be reached, or a message is refused.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    if opts.size < 8 {
        bail!("--size must be at least 8 bytes (the send time rides in the body)");
    }
    let mut _tmp = None;
    let mut in_process = None;
    let addr = match &opts.server {
        Some(a) => a.clone(),
        None => {
            let dir = match &opts.data_dir {
                Some(d) => d.clone(),
                None => {
                    let t = tempfile::tempdir().context("creating a temporary data dir")?;
                    let p = t.path().to_owned();
                    _tmp = Some(t);
                    p
                }
            };
            let broker = Broker::open(BrokerConfig {
                data_dir: dir,
                queue_window_bytes: DEFAULT_QUEUE_WINDOW_BYTES,
                consumer_timeout: None,
                clock: std::sync::Arc::new(crate::clock::SystemClock),
                disk_free_limit: 0,
                limits: Default::default(),
                store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            })
            .await
            .context("starting the in-process broker")?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(crate::server::run(
                listener,
                broker.clone(),
                ConnectionConfig::new(warren_protocol::DEFAULT_MAX_FRAME_SIZE_BYTES, None),
                async move {
                    let _ = stop_rx.await;
                },
            ));
            in_process = Some((broker, stop_tx, server));
            addr
        }
    };

    let queue = format!("bench-{}", now_us());
    if opts.tls.is_some() && opts.server.is_none() {
        bail!("bench measures TLS only against a running daemon: give --server with --tls");
    }
    let login = match &opts.server {
        Some(_) => opts.login.clone(),
        None => ConnectOptions::default(),
    };
    let connect = || async {
        match &opts.tls {
            None => Client::connect_with(&addr, &login).await,
            Some(tls) => Client::connect_tls_with(&addr, tls, &login).await,
        }
        .with_context(|| format!("connecting to {addr} as '{}'", login.user))
    };
    let publisher = connect().await?;
    let consumer_client = connect().await?;
    let mut arguments = warren_protocol::FieldTable::new();
    if opts.stream {
        arguments.insert(
            "x-queue-type".to_owned(),
            warren_protocol::FieldValue::String("stream".to_owned()),
        );
    }
    publisher
        .declare_queue(
            &queue,
            QueueOptions {
                // A stream is always durable, and stores every message routed to it.
                durable: opts.persistent || opts.stream,
                auto_delete: false,
                arguments,
                ..Default::default()
            },
        )
        .await?;
    consumer_client.qos(opts.prefetch).await?;
    if opts.stream {
        let stats = |b: &Broker| {
            let s = b.store().stats();
            [
                s.commits.load(Ordering::Relaxed),
                s.messages_written.load(Ordering::Relaxed),
                s.ops_committed.load(Ordering::Relaxed),
                s.commit_micros.load(Ordering::Relaxed),
            ]
        };
        let before = in_process.as_ref().map(|(b, _, _)| stats(b));
        let result = stream_bench(&opts, &publisher, &consumer_client, &queue).await;
        let after = in_process.as_ref().map(|(b, _, _)| stats(b));
        let _ = publisher.delete_queue(&queue, false, false).await;
        let _ = publisher.close().await;
        if let Some((_, stop, server)) = in_process {
            let _ = stop.send(());
            let _ = server.await;
        }
        let mut report = result?;
        let diff = before
            .zip(after)
            .map(|(a, b)| [b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3]]);
        report.commits = diff.map(|d| d[0]);
        report.messages_written = diff.map(|d| d[1]);
        report.ops_committed = diff.map(|d| d[2]);
        report.commit_micros = diff.map(|d| d[3]);
        return Ok(report);
    }
    let mut consumer = consumer_client
        .consume(&queue, ConsumeOptions::default())
        .await?;

    let store_before = in_process.as_ref().map(|(b, _, _)| {
        let s = b.store().stats();
        [
            s.commits.load(Ordering::Relaxed),
            s.messages_written.load(Ordering::Relaxed),
            s.ops_committed.load(Ordering::Relaxed),
            s.commit_micros.load(Ordering::Relaxed),
        ]
    });

    let started = Instant::now();
    let n = opts.messages;
    let consume = tokio::spawn(async move {
        // 1 µs to 10 min, 3 significant digits.
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut got = 0u64;
        while got < n {
            let Some(d) = consumer.next().await else {
                bail!("the consumer ended after {got} messages");
            };
            let mut ts = [0u8; 8];
            if let Some(src) = d.body.get(..8) {
                ts.copy_from_slice(src);
            }
            let sent = u64::from_le_bytes(ts);
            let latency = now_us().saturating_sub(sent).clamp(1, 600_000_000);
            hist.record(latency).map_err(|e| anyhow::anyhow!("{e}"))?;
            consumer_client.ack(d.delivery_tag, false).await?;
            got += 1;
        }
        Ok::<_, anyhow::Error>((hist, Instant::now()))
    });

    let mut window = VecDeque::with_capacity(opts.in_flight);
    let filler = vec![b'x'; opts.size - 8];
    let headers: warren_protocol::FieldTable = (0..opts.headers)
        .map(|i| {
            (
                format!("h{i}"),
                warren_protocol::FieldValue::String(format!("value-{i}")),
            )
        })
        .collect();
    for _ in 0..n {
        let mut body = BytesMut::with_capacity(opts.size);
        body.put_u64_le(now_us());
        body.put_slice(&filler);
        let mut m = OutgoingMessage::new("", queue.clone(), body.freeze());
        if opts.persistent {
            m = m.persistent();
        }
        if !headers.is_empty() {
            m.properties.headers = headers.clone().into();
        }
        if opts.no_confirm {
            publisher.publish_unconfirmed(m).await?;
            continue;
        }
        window.push_back(publisher.publish(m).await?);
        if window.len() >= opts.in_flight {
            if let Some(p) = window.pop_front() {
                let outcome = p.await?;
                if !outcome.is_confirmed() {
                    bail!("a publish was not confirmed: {outcome:?}");
                }
            }
        }
    }
    while let Some(p) = window.pop_front() {
        let outcome = p.await?;
        if !outcome.is_confirmed() {
            bail!("a publish was not confirmed: {outcome:?}");
        }
    }
    let publish_elapsed = started.elapsed();
    let (latency_us, finished) = consume.await.context("the consumer task failed")??;
    if opts.no_confirm {
        // Every message arrived, so nothing was refused; a refusal would also have left the
        // consumer short. Checked anyway: a refusal must never pass unnoticed.
        if let Some(r) = publisher.take_refusals().first() {
            bail!("a publish was refused: {r:?}");
        }
    }
    let elapsed = finished - started;

    let store_after = in_process.as_ref().map(|(b, _, _)| {
        let s = b.store().stats();
        [
            s.commits.load(Ordering::Relaxed),
            s.messages_written.load(Ordering::Relaxed),
            s.ops_committed.load(Ordering::Relaxed),
            s.commit_micros.load(Ordering::Relaxed),
        ]
    });
    let _ = publisher.delete_queue(&queue, false, false).await;
    let _ = publisher.close().await;
    if let Some((_, stop, server)) = in_process {
        let _ = stop.send(());
        let _ = server.await;
    }
    let diff = store_before
        .zip(store_after)
        .map(|(a, b)| [b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3]]);
    Ok(BenchReport {
        messages: n,
        elapsed,
        publish_elapsed,
        no_confirm: opts.no_confirm,
        latency_us,
        commits: diff.map(|d| d[0]),
        messages_written: diff.map(|d| d[1]),
        ops_committed: diff.map(|d| d[2]),
        commit_micros: diff.map(|d| d[3]),
        read_elapsed: None,
    })
}
