//! `amqp-bench`: the workloads of `warren bench --scenario s1..s6`, run over AMQP 0-9-1
//! (lapin) against RabbitMQ, reporting the fields of `warren bench --json` that
//! `bench/compare-rabbitmq.sh` tabulates.
//!
//! Same as `warren bench`: one producer connection, publishing on the main task; one
//! connection per consumer; 256 B (or 4 KiB, 1 KiB) bodies that start with the same 20-byte
//! stamp (producer u32, sequence u64, send time µs u64, little-endian); a window of 1,000
//! unconfirmed publishes; prefetch 1,000 per consumer; one ack per delivery; pacing by a 1 ms
//! timer; the topic scenario binds `bench.#`, `bench.*.*`, `*.*.*`, `#` and publishes to
//! `bench.p0.k<i>`; every delivery is checked off, and a missing, misrouted or unflagged
//! duplicate delivery fails the run (exit status 1, after the report).
//!
//! Differences, by necessity: S3's "no confirms" is a plain `basic.publish` on a channel
//! without confirm mode; prefetch is `basic.qos` per consumer (one consumer per channel, so
//! the same bound as Warren's per-connection prefetch); durable means a classic durable
//! queue and `delivery_mode` 2.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, ValueEnum};
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};
use serde::Serialize;
use tokio::time::MissedTickBehavior;

/// Bytes of stamp at the start of every body (as `warren bench`).
const STAMP_LEN: usize = 20;
/// Topic patterns, one per queue in turn; each matches every routing key the producer uses.
const TOPIC_PATTERNS: [&str; 4] = ["bench.#", "bench.*.*", "*.*.*", "#"];
/// A run whose deliveries stop for this long is checked and reported as it stands.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest latency the histogram records, µs.
const LATENCY_MAX_US: u64 = 600_000_000;
/// Acks sent but not yet written by lapin's I/O loop, at most, per consumer.
const ACKS_IN_FLIGHT: usize = 4_096;
/// Publishes handed to lapin but not yet written by its I/O loop, at most.
const SENDS_IN_FLIGHT: usize = 256;

/// The issue-11 scenarios, as `warren bench --scenario` defines them (src/bench/options.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
}

#[derive(Parser, Debug)]
#[command(about = "warren bench's scenarios over AMQP 0-9-1 (lapin), for RabbitMQ")]
struct Args {
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// The workload.
    #[arg(long)]
    scenario: Scenario,
    /// Messages in all, instead of the scenario's count.
    #[arg(long)]
    count: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What a scenario runs.
#[derive(Debug, Clone, Serialize)]
struct Workload {
    scenario: Scenario,
    producers: usize,
    consumers: usize,
    queues: usize,
    /// `default` or `topic`.
    exchange_type: &'static str,
    size: usize,
    count: u64,
    rate: Option<u64>,
    confirm_window: usize,
    prefetch: u16,
    auto_ack: bool,
    persistent: bool,
    no_confirm: bool,
    backlog: bool,
}

impl Workload {
    fn of(s: Scenario) -> Workload {
        let base = Workload {
            scenario: s,
            producers: 1,
            consumers: 1,
            queues: 1,
            exchange_type: "default",
            size: 256,
            count: 200_000,
            rate: None,
            confirm_window: 1_000,
            prefetch: 1_000,
            auto_ack: false,
            persistent: true,
            no_confirm: false,
            backlog: false,
        };
        match s {
            Scenario::S1 => base,
            Scenario::S2 => Workload {
                size: 4096,
                count: 50_000,
                ..base
            },
            Scenario::S3 => Workload {
                persistent: false,
                auto_ack: true,
                no_confirm: true,
                count: 500_000,
                ..base
            },
            Scenario::S4 => Workload {
                rate: Some(10_000),
                count: 100_000,
                ..base
            },
            Scenario::S5 => Workload {
                exchange_type: "topic",
                queues: 4,
                consumers: 4,
                count: 100_000,
                ..base
            },
            Scenario::S6 => Workload {
                size: 1024,
                count: 1_000_000,
                backlog: true,
                ..base
            },
        }
    }
}

/// A rate, as `warren bench --json` reports it.
#[derive(Debug, Clone, Copy, Serialize)]
struct Rate {
    msgs_per_sec: f64,
    mb_per_sec: f64,
    secs: f64,
}

impl Rate {
    fn new(n: u64, size: usize, over: Duration) -> Rate {
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
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

/// What arrived against what routing calls for (the fields of `warren bench`'s verdict that
/// apply with one producer).
#[derive(Debug, Clone, Default, Serialize)]
struct Verdict {
    expected: u64,
    arrived: u64,
    missing: u64,
    misrouted: u64,
    redelivered_duplicates: u64,
    unexpected_duplicates: u64,
    malformed: u64,
}

impl Verdict {
    fn is_ok(&self) -> bool {
        self.missing == 0
            && self.misrouted == 0
            && self.unexpected_duplicates == 0
            && self.malformed == 0
    }
}

/// The report, with `warren bench --json`'s field names.
#[derive(Debug, Serialize)]
struct Report {
    broker: String,
    options: Workload,
    published: u64,
    confirmed: u64,
    delivered: u64,
    acked: u64,
    verification: Verdict,
    publish: Rate,
    confirm: Option<Rate>,
    delivery: Rate,
    ack: Option<Rate>,
    elapsed_secs: f64,
    end_to_end_msgs_per_sec: f64,
    latency: Latency,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| anyhow!("{e}"))
}

/// Deliveries counted so far, over all consumers, for the stall check.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);
/// Set once every delivery is in: lapin reports closing a channel with a consumer on it as
/// an error, which is not one here.
static CLOSING: AtomicBool = AtomicBool::new(false);
/// Publishes and deliveries so far, for the watchdog.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Opens a connection that prints its events (blocked, flow, errors) to stderr: lapin
/// otherwise only fails the next call on it, and a pending confirm may wait for ever.
async fn connect(uri: &str, what: &'static str) -> anyhow::Result<Connection> {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("{what}: connect"))?;
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if !matches!(e, lapin::Event::Connected) && !CLOSING.load(Ordering::Relaxed) {
                eprintln!("amqp-bench: {what} connection: {e:?}");
            }
        }
    });
    Ok(conn)
}

/// Ends the process when neither a publish nor a delivery happened for
/// [`STALL_TIMEOUT`] (twice the consumers' own stall check, which reports what arrived):
/// a connection lost under a pending confirm would otherwise hang the run.
fn watchdog() {
    tokio::spawn(async {
        let mut last = (PROGRESS.load(Ordering::Relaxed), Instant::now());
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = PROGRESS.load(Ordering::Relaxed);
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= 2 * STALL_TIMEOUT {
                eprintln!(
                    "amqp-bench: no publish or delivery for {:?}; giving up",
                    2 * STALL_TIMEOUT
                );
                std::process::exit(3);
            }
        }
    });
}

/// What one consumer saw.
struct Received {
    /// Per queue it consumes: which sequence numbers arrived.
    seen: Vec<(usize, Vec<bool>)>,
    misrouted: u64,
    redelivered_duplicates: u64,
    unexpected_duplicates: u64,
    malformed: u64,
    latency_us: Histogram<u64>,
    deliveries: u64,
    acks: u64,
    last_delivery: Option<Instant>,
}

/// One consumer connection: a channel with prefetch, consuming `queue`, until every
/// expected message arrived (`expected` distinct sequence numbers) or `stop` fires.
async fn consume(
    channel: Channel,
    consumer: lapin::Consumer,
    queue: usize,
    expected: u64,
    auto_ack: bool,
    stop: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Received> {
    let mut consumer = consumer;
    let n = usize::try_from(expected).context("count")?;
    let mut r = Received {
        seen: vec![(queue, vec![false; n])],
        misrouted: 0,
        redelivered_duplicates: 0,
        unexpected_duplicates: 0,
        malformed: 0,
        latency_us: histogram()?,
        deliveries: 0,
        acks: 0,
        last_delivery: None,
    };
    let mut arrived = 0u64;
    // lapin's ack future resolves once its I/O loop has written the frame; awaiting each in
    // turn would make the consumer wait for that thread per message. They are polled here
    // instead (the first poll queues the frame) and drained at the end.
    let mut acks = FuturesUnordered::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    while arrived < expected {
        let d = tokio::select! {
            biased;
            d = consumer.next() => d,
            () = &mut stopped => break,
        };
        let Some(d) = d else {
            bail!(
                "the consumer on queue {queue} ended after {} deliveries",
                r.deliveries
            );
        };
        let d = d.context("delivery")?;
        r.deliveries += 1;
        r.last_delivery = Some(Instant::now());
        DELIVERIES.fetch_add(1, Ordering::Relaxed);
        PROGRESS.fetch_add(1, Ordering::Relaxed);
        if !auto_ack {
            acks.push(channel.basic_ack(d.delivery_tag, BasicAckOptions::default()));
            r.acks += 1;
            while let Some(Some(a)) = acks.next().now_or_never() {
                a.context("ack")?;
            }
            if acks.len() >= ACKS_IN_FLIGHT {
                if let Some(a) = acks.next().await {
                    a.context("ack")?;
                }
            }
        }
        let Some(stamp) = d.data.get(..STAMP_LEN) else {
            r.malformed += 1;
            continue;
        };
        let producer = u32::from_le_bytes(stamp[0..4].try_into()?);
        let seq = u64::from_le_bytes(stamp[4..12].try_into()?);
        let sent_us = u64::from_le_bytes(stamp[12..20].try_into()?);
        let latency = now_us().saturating_sub(sent_us).clamp(1, LATENCY_MAX_US);
        r.latency_us.record(latency).map_err(|e| anyhow!("{e}"))?;
        let slot = usize::try_from(seq)
            .ok()
            .filter(|_| producer == 0)
            .and_then(|s| r.seen[0].1.get_mut(s));
        match slot {
            None => r.misrouted += 1,
            Some(seen) if *seen => {
                if d.redelivered {
                    r.redelivered_duplicates += 1;
                } else {
                    r.unexpected_duplicates += 1;
                }
            }
            Some(seen) => {
                *seen = true;
                arrived += 1;
            }
        }
    }
    while let Some(a) = acks.next().await {
        a.context("ack")?;
    }
    Ok(r)
}

/// The producer: publishes `w.count` messages to `exchange` with the keys in turn, with
/// confirms (at most `w.confirm_window` unconfirmed) unless `w.no_confirm`.
///
/// lapin's `basic_publish` resolves once its I/O loop has written the frames; awaiting each
/// in turn would cost a round trip to that thread per message and measure lapin rather than
/// the broker. Up to [`SENDS_IN_FLIGHT`] publishes are therefore queued at once (in order:
/// each is handed to lapin on its first poll, and the confirms come back in that order).
async fn publish(
    channel: &Channel,
    w: &Workload,
    exchange: &str,
    keys: &[String],
    started: Instant,
) -> anyhow::Result<(u64, Instant, Option<Instant>)> {
    let filler: Vec<u8> = (0..w.size.saturating_sub(STAMP_LEN))
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let props = if w.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut pacer = w.rate.map(|_| {
        let mut i = tokio::time::interval(Duration::from_millis(1));
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    });
    let mut sending = FuturesOrdered::new();
    let mut window = VecDeque::with_capacity(w.confirm_window);
    let (mut confirmed, mut last_confirm) = (0u64, None);
    let k = keys.len().max(1) as u64;
    let written = |c: lapin::Result<PublisherConfirm>,
                   window: &mut VecDeque<PublisherConfirm>|
     -> anyhow::Result<()> {
        let c = c.context("basic.publish")?;
        if !w.no_confirm {
            window.push_back(c);
        }
        Ok(())
    };
    for seq in 0..w.count {
        if let (Some(rate), Some(pacer)) = (w.rate, pacer.as_mut()) {
            loop {
                let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if seq < allowed {
                    break;
                }
                pacer.tick().await;
            }
        }
        let mut body = Vec::with_capacity(w.size.max(STAMP_LEN));
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&now_us().to_le_bytes());
        body.extend_from_slice(&filler);
        let key = keys
            .get(usize::try_from(seq % k).unwrap_or(0))
            .map_or("", String::as_str);
        let (ch, ex, key, props) = (
            channel.clone(),
            ShortString::from(exchange),
            ShortString::from(key),
            props.clone(),
        );
        sending.push_back(async move {
            ch.basic_publish(ex, key, BasicPublishOptions::default(), &body, props)
                .await
        });
        PROGRESS.fetch_add(1, Ordering::Relaxed);
        while let Some(Some(c)) = sending.next().now_or_never() {
            written(c, &mut window)?;
        }
        if sending.len() >= SENDS_IN_FLIGHT {
            if let Some(c) = sending.next().await {
                written(c, &mut window)?;
            }
        }
        while !window.is_empty() && window.len() + sending.len() >= w.confirm_window.max(1) {
            if let Some(c) = window.pop_front() {
                check(c.await.context("confirm")?)?;
                confirmed += 1;
                last_confirm = Some(Instant::now());
            }
        }
    }
    while let Some(c) = sending.next().await {
        written(c, &mut window)?;
    }
    let last_send = Instant::now();
    while let Some(c) = window.pop_front() {
        check(c.await.context("confirm")?)?;
        confirmed += 1;
        last_confirm = Some(Instant::now());
    }
    Ok((confirmed, last_send, last_confirm))
}

fn check(c: Confirmation) -> anyhow::Result<()> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("a publish was not confirmed: {other:?}"),
    }
}

/// Opens a consumer connection on queue `name`: its own channel, prefetch, consume.
async fn subscribe(
    uri: &str,
    w: &Workload,
    name: &str,
) -> anyhow::Result<(Connection, Channel, lapin::Consumer)> {
    let conn = connect(uri, "consumer").await?;
    let ch = conn.create_channel().await?;
    if !w.auto_ack {
        ch.basic_qos(w.prefetch, BasicQosOptions::default()).await?;
    }
    let consumer = ch
        .basic_consume(
            name.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: w.auto_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("basic.consume")?;
    Ok((conn, ch, consumer))
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let mut w = Workload::of(args.scenario);
    if let Some(n) = args.count {
        w.count = n;
    }
    let tag = format!("bench-{}", now_us());
    let control = connect(&args.uri, "control").await?;
    let ctl = control.create_channel().await?;
    let queues: Vec<String> = (0..w.queues).map(|i| format!("{tag}-q{i}")).collect();
    for q in &queues {
        ctl.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: w.persistent,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("queue.declare")?;
    }
    let (exchange, keys): (String, Vec<String>) = if w.exchange_type == "topic" {
        let x = format!("{tag}-x");
        ctl.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: w.persistent,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("exchange.declare")?;
        for (i, q) in queues.iter().enumerate() {
            ctl.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                TOPIC_PATTERNS[i % TOPIC_PATTERNS.len()].into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("queue.bind")?;
        }
        let keys = (0..w.queues).map(|i| format!("bench.p0.k{i}")).collect();
        (x, keys)
    } else {
        (String::new(), queues.clone())
    };
    // Each queue's share: every message on a topic exchange, round-robin on the default one.
    let expected_per_queue = |q: usize| -> u64 {
        if w.exchange_type == "topic" {
            w.count
        } else {
            let k = w.queues as u64;
            w.count / k + u64::from((q as u64) < w.count % k)
        }
    };
    // One consumer connection per queue (the scenarios have as many consumers as queues).
    if w.consumers != w.queues {
        bail!("amqp-bench runs one consumer per queue");
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let start_consumers = |w: Workload, queues: Vec<String>, stop: Arc<tokio::sync::Notify>| {
        let uri = args.uri.clone();
        async move {
            let mut conns = Vec::new();
            let mut tasks = Vec::new();
            for (i, q) in queues.iter().enumerate() {
                let (conn, ch, consumer) = subscribe(&uri, &w, q).await?;
                tasks.push(tokio::spawn(consume(
                    ch,
                    consumer,
                    i,
                    expected_per_queue(i),
                    w.auto_ack,
                    stop.clone(),
                )));
                conns.push(conn);
            }
            anyhow::Ok((conns, tasks))
        }
    };
    let mut consumers = None;
    if !w.backlog {
        consumers = Some(start_consumers(w.clone(), queues.clone(), stop.clone()).await?);
    }
    let producer = connect(&args.uri, "producer").await?;
    let pch = producer.create_channel().await?;
    if !w.no_confirm {
        pch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let started = Instant::now();
    let (confirmed, last_send, last_confirm) = publish(&pch, &w, &exchange, &keys, started).await?;
    let mut deliver_from = started;
    let (conns, tasks) = match consumers {
        Some(c) => c,
        None => {
            deliver_from = Instant::now();
            start_consumers(w.clone(), queues.clone(), stop.clone()).await?
        }
    };
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    let mut last_seen = (DELIVERIES.load(Ordering::Relaxed), Instant::now());
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let n = DELIVERIES.load(Ordering::Relaxed);
                if n != last_seen.0 {
                    last_seen = (n, Instant::now());
                } else if last_seen.1.elapsed() >= STALL_TIMEOUT {
                    eprintln!("amqp-bench: no delivery for {STALL_TIMEOUT:?}; checking what arrived");
                    stop.notify_waiters();
                }
            }
        }
    };
    let mut v = Verdict::default();
    let mut latency_us = histogram()?;
    let (mut delivered, mut acked, mut last_delivery) = (0u64, 0u64, None::<Instant>);
    for r in results {
        let r = r.context("a consumer task failed")??;
        for (q, seen) in &r.seen {
            let arrived = seen.iter().filter(|s| **s).count() as u64;
            v.expected += expected_per_queue(*q);
            v.arrived += arrived;
        }
        v.misrouted += r.misrouted;
        v.redelivered_duplicates += r.redelivered_duplicates;
        v.unexpected_duplicates += r.unexpected_duplicates;
        v.malformed += r.malformed;
        latency_us.add(&r.latency_us).map_err(|e| anyhow!("{e}"))?;
        delivered += r.deliveries;
        acked += r.acks;
        last_delivery = last_delivery.max(r.last_delivery);
    }
    v.missing = v.expected - v.arrived;
    let last_delivery = last_delivery.unwrap_or(deliver_from);
    CLOSING.store(true, Ordering::Relaxed);
    for c in conns {
        let _ = c.close(200, "done".into()).await;
    }
    let _ = producer.close(200, "done".into()).await;
    for q in &queues {
        let _ = ctl
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    if !exchange.is_empty() {
        let _ = ctl
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = control.close(200, "done".into()).await;
    let elapsed_secs = last_delivery
        .saturating_duration_since(started)
        .as_secs_f64();
    let deliver_span = last_delivery.saturating_duration_since(deliver_from);
    Ok(Report {
        broker: args.uri.clone(),
        published: w.count,
        confirmed,
        delivered,
        acked,
        verification: v,
        publish: Rate::new(w.count, w.size, last_send - started),
        confirm: (!w.no_confirm).then(|| {
            Rate::new(
                confirmed,
                w.size,
                last_confirm.unwrap_or(last_send) - started,
            )
        }),
        delivery: Rate::new(delivered, w.size, deliver_span),
        ack: (!w.auto_ack).then(|| Rate::new(acked, w.size, deliver_span)),
        elapsed_secs,
        end_to_end_msgs_per_sec: w.count as f64 / elapsed_secs.max(f64::EPSILON),
        latency: Latency {
            p50_us: latency_us.value_at_quantile(0.5),
            p99_us: latency_us.value_at_quantile(0.99),
            p999_us: latency_us.value_at_quantile(0.999),
            max_us: latency_us.max(),
        },
        options: w,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    watchdog();
    let report = match run(&args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("amqp-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("amqp-bench: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        let l = &report.latency;
        println!("scenario        {:?}", report.options.scenario);
        println!(
            "end to end      {:.0} msgs/s ({:.2} s)",
            report.end_to_end_msgs_per_sec, report.elapsed_secs
        );
        println!(
            "delivery        {:.0} msgs/s ({} deliveries, {} acks)",
            report.delivery.msgs_per_sec, report.delivered, report.acked
        );
        println!(
            "latency (ms)    p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50_us as f64 / 1e3,
            l.p99_us as f64 / 1e3,
            l.p999_us as f64 / 1e3,
            l.max_us as f64 / 1e3
        );
        println!("verified        {:?}", report.verification);
    }
    if report.verification.is_ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!("amqp-bench: verification failed: {:?}", report.verification);
        ExitCode::FAILURE
    }
}
