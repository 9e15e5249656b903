//! `warren bench`: an end-to-end load generator over the client library, in the manner of
//! RabbitMQ's PerfTest. N producer connections publish to one exchange with K queues bound
//! (declared for the run, uniquely named, deleted afterwards); M consumer connections
//! consume them. Every body carries (producer, sequence, send time) in its first bytes, so
//! the run checks that every message reached each queue routing sends it to exactly once
//! (a redelivery excepted) — a mismatch fails the run — and reports publish, confirm,
//! delivery and ack rates, end-to-end latency percentiles (an HDR histogram), and the
//! server's CPU time and resident memory.
//!
//! Layout: [`options`] (what to run, the scenario presets), [`topology`] (what is declared,
//! routing keys), [`publisher`] and [`consumer`] (the tasks), [`verify`] (the exactly-once
//! check), [`report`] (what is printed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::broker::{Broker, BrokerConfig, DEFAULT_QUEUE_WINDOW_BYTES};
use crate::client::{Client, ConnectOptions, ConsumeOptions, StreamOffset};
use crate::connection::ConnectionConfig;

pub mod consumer;
pub mod options;
pub mod publisher;
pub mod report;
pub mod topology;
pub mod verify;

pub use options::{BenchOptions, ExchangeType, Scenario, Volume};
pub use report::BenchReport;

use consumer::{Progress, Received, Subscription};
use publisher::{Producer, Published};
use report::{GroupCommits, Latency, Rate, RunOptions, ServerUsage};
use topology::Topology;
use verify::{Tally, STAMP_LEN};

/// With the producers done, a run that gets no delivery for this long stops waiting; the
/// verifier then reports what is missing.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Microseconds since the Unix epoch (the stamps' clock: producers and consumers may be in
/// different processes).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The broker a run measures: a daemon, or one started in this process.
struct Target {
    addr: String,
    in_process: Option<InProcess>,
    /// The daemon refused `status` (a user without the monitoring tag): asked once only.
    no_status: std::sync::atomic::AtomicBool,
    _tmp: Option<tempfile::TempDir>,
}

struct InProcess {
    broker: Broker,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Target {
    async fn start(opts: &BenchOptions) -> anyhow::Result<Target> {
        if let Some(a) = &opts.server {
            return Ok(Target {
                addr: a.clone(),
                in_process: None,
                no_status: Default::default(),
                _tmp: None,
            });
        }
        if opts.tls.is_some() {
            bail!("bench measures TLS only against a running daemon: give --server with --tls");
        }
        let mut tmp = None;
        let dir = match &opts.data_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile::tempdir().context("creating a temporary data dir")?;
                let p = t.path().to_owned();
                tmp = Some(t);
                p
            }
        };
        let broker = Broker::open(BrokerConfig {
            data_dir: dir,
            queue_window_bytes: DEFAULT_QUEUE_WINDOW_BYTES,
            consumer_timeout: None,
            clock: Arc::new(crate::clock::SystemClock),
            disk_free_limit: 0,
            limits: Default::default(),
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store_quick_repair: true,
            recovery: Default::default(),
        })
        .await
        .context("starting the in-process broker")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::run(
            listener,
            broker.clone(),
            ConnectionConfig::new(warren_protocol::DEFAULT_MAX_FRAME_SIZE_BYTES, None),
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(Target {
            addr,
            in_process: Some(InProcess {
                broker,
                stop,
                server,
            }),
            no_status: Default::default(),
            _tmp: tmp,
        })
    }

    async fn stop(self) {
        if let Some(p) = self.in_process {
            let _ = p.stop.send(());
            let _ = p.server.await;
        }
    }

    fn store_stats(&self) -> Option<GroupCommits> {
        let s = self.in_process.as_ref()?.broker.store().stats();
        Some(GroupCommits {
            commits: s.commits.load(Ordering::Relaxed),
            messages_written: s.messages_written.load(Ordering::Relaxed),
            ops_committed: s.ops_committed.load(Ordering::Relaxed),
            commit_micros: s.commit_micros.load(Ordering::Relaxed),
        })
    }

    /// The server's CPU seconds and resident bytes: its `status` reply, or this process's
    /// own for the in-process broker.
    async fn usage(&self, control: &Client) -> (Option<f64>, u64) {
        if self.in_process.is_some() {
            return (
                Some(crate::broker::stats::process_cpu_seconds()),
                crate::broker::stats::resident_memory_bytes(),
            );
        }
        if self.no_status.load(Ordering::Relaxed) {
            return (None, 0);
        }
        match control
            .admin("status", warren_protocol::FieldTable::new())
            .await
        {
            Ok(v) => (
                v.get("cpu_seconds").and_then(serde_json::Value::as_f64),
                v.get("memory_bytes")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            ),
            Err(e) => {
                tracing::warn!("bench: reading the server's status (CPU and memory left out): {e}");
                self.no_status.store(true, Ordering::Relaxed);
                (None, 0)
            }
        }
    }
}

fn check(opts: &BenchOptions) -> anyhow::Result<()> {
    if opts.size < STAMP_LEN {
        bail!("--size must be at least {STAMP_LEN} bytes (producer, sequence and send time ride in the body)");
    }
    if opts.producers == 0 || opts.consumers == 0 || opts.queues == 0 {
        bail!("--producers, --consumers and --queues must each be at least 1");
    }
    if u32::try_from(opts.producers).is_err() {
        bail!("--producers: at most {}", u32::MAX);
    }
    if opts.rate == Some(0) {
        bail!("--rate must be at least 1 message per second");
    }
    if opts.stream
        && (opts.producers != 1
            || opts.consumers != 1
            || opts.queues != 1
            || opts.exchange_type != ExchangeType::Default
            || opts.no_confirm
            || opts.auto_ack)
    {
        bail!(
            "--stream measures one producer and one reader on one stream, with confirms and acks"
        );
    }
    Ok(())
}

/// Runs the benchmark. The report's `verification` says whether every message arrived as
/// routing says; the caller decides what a failed verification means (`warren bench`
/// prints the report and exits non-zero).
///
/// # Errors
/// The broker cannot start or be reached, a declaration or a message is refused, or a
/// consumer ends early.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    check(&opts)?;
    let target = Target::start(&opts).await?;
    let result = run_on(&opts, &target).await;
    target.stop().await;
    result
}

async fn run_on(opts: &BenchOptions, target: &Target) -> anyhow::Result<BenchReport> {
    let addr = target.addr.as_str();
    let login = match &opts.server {
        Some(_) => opts.login.clone(),
        None => ConnectOptions::default(),
    };
    let connect = || async {
        match &opts.tls {
            None => Client::connect_with(addr, &login).await,
            Some(tls) => Client::connect_tls_with(addr, tls, &login).await,
        }
        .with_context(|| format!("connecting to {addr} as '{}'", login.user))
    };
    let control = connect().await?;
    let topology = Topology::new(
        &format!("bench-{}", now_us()),
        opts.exchange_type,
        opts.queues,
    );
    topology
        .declare(&control, opts.persistent, opts.stream)
        .await?;
    let result = measure(opts, target, &control, &topology, &connect).await;
    topology.delete(&control).await;
    let _ = control.close().await;
    result
}

/// Consumer connections opened at once: with thousands of them (S7) one at a time would
/// take minutes, as each login verifies a password hash on the server.
const CONNECT_CONCURRENCY: usize = 32;

/// Connects the consumers and subscribes them to their queues: queue `q` goes to
/// connection `q % M`; a connection beyond the K-th also takes queue `c % K`.
async fn subscribe<F, Fut>(
    opts: &BenchOptions,
    topology: &Topology,
    connect: &F,
    progress: &Arc<Progress>,
) -> anyhow::Result<(Vec<Client>, Vec<Subscription>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Client>>,
{
    use futures::stream::{StreamExt, TryStreamExt};
    let (m, k) = (opts.consumers, topology.queues.len());
    let one = |c: usize| async move {
        let client = connect().await?;
        if !opts.auto_ack {
            client.qos(opts.prefetch).await?;
        }
        let mine: Vec<usize> = if c < k {
            (c..k).step_by(m).collect()
        } else {
            vec![c % k]
        };
        let mut subs = Vec::with_capacity(mine.len());
        for q in mine {
            let mut o = ConsumeOptions {
                no_ack: opts.auto_ack,
                ..ConsumeOptions::default()
            };
            if opts.stream {
                o = o.stream_offset(StreamOffset::First);
            }
            let consumer = client
                .consume(&topology.queues[q], o)
                .await
                .with_context(|| format!("consuming '{}'", topology.queues[q]))?;
            subs.push(Subscription {
                queue: q,
                consumer,
                client: client.clone(),
                auto_ack: opts.auto_ack,
                progress: progress.clone(),
            });
        }
        Ok::<_, anyhow::Error>((client, subs))
    };
    let connected: Vec<(Client, Vec<Subscription>)> = futures::stream::iter(0..m)
        .map(one)
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    let mut clients = Vec::with_capacity(m);
    let mut subs = Vec::new();
    for (c, s) in connected {
        clients.push(c);
        subs.extend(s);
    }
    Ok((clients, subs))
}

async fn measure<F, Fut>(
    opts: &BenchOptions,
    target: &Target,
    control: &Client,
    topology: &Topology,
    connect: &F,
) -> anyhow::Result<BenchReport>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Client>>,
{
    let k = topology.queues.len();
    let progress = Arc::new(Progress::new(k));
    // A stream is read after the appends, like a backlog.
    let backlog = opts.backlog || opts.stream;
    let mut consumer_clients = Vec::new();
    let mut subscriptions = Vec::new();
    if !backlog {
        (consumer_clients, subscriptions) = subscribe(opts, topology, connect, &progress).await?;
    }
    let mut producers = Vec::with_capacity(opts.producers);
    let stop = tokio_util::sync::CancellationToken::new();
    let headers = publisher::bench_headers(opts.headers);
    for p in 0..opts.producers {
        let id = u32::try_from(p).unwrap_or(u32::MAX);
        let volume = match opts.volume {
            Volume::Count(n) => {
                let share =
                    n / opts.producers as u64 + u64::from((p as u64) < n % opts.producers as u64);
                Volume::Count(share)
            }
            d @ Volume::Duration(_) => d,
        };
        producers.push(Producer {
            id,
            client: connect().await?,
            exchange: topology.exchange.clone(),
            keys: topology.keys(id),
            size: opts.size,
            persistent: opts.persistent || opts.stream,
            headers: headers.clone(),
            confirm_window: opts.confirm_window,
            no_confirm: opts.no_confirm,
            rate: opts.rate,
            volume,
            stop: stop.clone(),
        });
    }
    let producer_clients: Vec<Client> = producers.iter().map(|p| p.client.clone()).collect();

    let (cpu_before, rss_before) = target.usage(control).await;
    let store_before = target.store_stats();
    let started = Instant::now();
    let mut consuming: Vec<_> = subscriptions
        .drain(..)
        .map(|s| tokio::spawn(s.run()))
        .collect();
    let mut producers = producers.into_iter();
    let first = producers.next();
    let rest: Vec<_> = producers.map(|p| tokio::spawn(p.run(started))).collect();
    // The first producer runs on this task rather than a spawned one: under `warren bench`
    // that is the runtime's own thread, publishing while the workers consume, as bench
    // always did. Spawned as well, S1 measured 3-9% slower on a busy 2-core machine.
    let mut outcomes = Vec::with_capacity(rest.len() + 1);
    if let Some(p) = first {
        let r = p.run(started).await;
        if r.is_err() {
            stop.cancel();
        }
        outcomes.push(r);
    }
    for h in rest {
        outcomes.push(h.await.context("a producer task failed").and_then(|r| r));
    }
    let mut published: Vec<Published> = Vec::with_capacity(outcomes.len());
    let mut failure = None;
    for r in outcomes {
        match r {
            Ok(p) => published.push(p),
            Err(e) => {
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        progress.stop_all();
        for h in consuming {
            let _ = h.await;
        }
        return Err(e);
    }
    let sent: Vec<u64> = published.iter().map(|p| p.sent).collect();
    let routing = topology.routing();
    for q in 0..k {
        let target_q = sent
            .iter()
            .enumerate()
            .map(|(p, &n)| routing.expected(u32::try_from(p).unwrap_or(u32::MAX), n, q, k))
            .sum();
        progress.set_target(q, target_q);
    }
    let mut deliver_from = started;
    if backlog {
        deliver_from = Instant::now();
        (consumer_clients, subscriptions) = subscribe(opts, topology, connect, &progress).await?;
        consuming = subscriptions
            .drain(..)
            .map(|s| tokio::spawn(s.run()))
            .collect();
    }

    // Wait for the consumers; stop them if deliveries stall, and sample the server's
    // memory meanwhile.
    let mut peak_rss = rss_before;
    let all = futures::future::join_all(consuming);
    tokio::pin!(all);
    let mut last_seen = (progress.deliveries.load(Ordering::Relaxed), Instant::now());
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                peak_rss = peak_rss.max(target.usage(control).await.1);
                let n = progress.deliveries.load(Ordering::Relaxed);
                if n != last_seen.0 {
                    last_seen = (n, Instant::now());
                } else if last_seen.1.elapsed() >= STALL_TIMEOUT {
                    tracing::warn!("bench: no delivery for {STALL_TIMEOUT:?}; checking what arrived");
                    progress.stop_all();
                }
            }
        }
    };
    let mut tally = Tally::default();
    let mut latency_us = consumer::histogram()?;
    let (mut delivered, mut acked, mut last_delivery) = (0u64, 0u64, None::<Instant>);
    for r in results {
        let r: Received = r.context("a consumer task failed")??;
        tally.merge(r.tally);
        latency_us
            .add(&r.latency_us)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        delivered += r.deliveries;
        acked += r.acks;
        last_delivery = last_delivery.max(r.last_delivery);
    }
    if opts.no_confirm {
        // A refusal leaves a queue short, which the verifier reports; name the cause too.
        for c in &producer_clients {
            if let Some(r) = c.take_refusals().first() {
                bail!("a publish was refused: {r:?}");
            }
        }
    }
    let verification = verify::verify(&tally, &sent, k, routing);
    let (cpu_mid, rss_mid) = target.usage(control).await;
    let store_after = target.store_stats();
    for c in producer_clients.iter().chain(&consumer_clients) {
        let _ = c.close().await;
    }

    let last_delivery = last_delivery.unwrap_or(deliver_from);
    let total_sent: u64 = sent.iter().sum();
    let last_send = published
        .iter()
        .map(|p| p.last_send)
        .max()
        .unwrap_or(started);
    let last_confirm = published.iter().filter_map(|p| p.last_confirm).max();
    let confirmed = published.iter().map(|p| p.confirmed).sum();
    let deliver_span = last_delivery.saturating_duration_since(deliver_from);
    Ok(BenchReport {
        options: RunOptions {
            scenario: opts.scenario,
            server: opts
                .server
                .clone()
                .unwrap_or_else(|| "in-process".to_owned()),
            producers: opts.producers,
            consumers: opts.consumers,
            queues: k,
            exchange_type: opts.exchange_type,
            size: opts.size,
            volume: opts.volume,
            rate: opts.rate,
            confirm_window: opts.confirm_window,
            prefetch: opts.prefetch,
            auto_ack: opts.auto_ack,
            persistent: opts.persistent || opts.stream,
            no_confirm: opts.no_confirm,
            backlog,
            headers: opts.headers,
            stream: opts.stream,
        },
        published: total_sent,
        confirmed,
        delivered,
        acked,
        verification,
        publish: Rate::new(total_sent, opts.size, last_send - started),
        confirm: (!opts.no_confirm).then(|| {
            Rate::new(
                confirmed,
                opts.size,
                last_confirm.unwrap_or(last_send) - started,
            )
        }),
        delivery: Rate::new(delivered, opts.size, deliver_span),
        ack: (!opts.auto_ack).then(|| Rate::new(acked, opts.size, deliver_span)),
        elapsed_secs: last_delivery
            .saturating_duration_since(started)
            .as_secs_f64(),
        latency: Latency::of(&latency_us),
        server: ServerUsage {
            in_process: target.in_process.is_some(),
            cpu_seconds_before: cpu_before,
            cpu_seconds_after: cpu_mid,
            resident_bytes_before: rss_before,
            resident_bytes_after: rss_mid,
            resident_bytes_peak: peak_rss.max(rss_mid),
        },
        group_commits: store_before.zip(store_after).map(|(a, b)| GroupCommits {
            commits: b.commits - a.commits,
            messages_written: b.messages_written - a.messages_written,
            ops_committed: b.ops_committed - a.ops_committed,
            commit_micros: b.commit_micros - a.commit_micros,
        }),
        latency_us,
    })
}
