//! What a bench run does: the workload ([`BenchOptions`]), how much of it ([`Volume`]),
//! through which exchange ([`ExchangeType`]), and the issue-11 scenario presets
//! ([`Scenario`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::client::ConnectOptions;

/// The default number of messages when neither a count, a duration nor a scenario says.
pub const DEFAULT_COUNT: u64 = 200_000;

/// How much each producer publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Volume {
    /// This many messages in all, split evenly over the producers (the first ones take the
    /// remainder), as `warren bench --messages N` always meant N messages in all.
    Count(u64),
    /// Publish for this long, then stop.
    Duration(#[serde(serialize_with = "secs")] Duration),
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Which exchange the producers publish to, and so which queues get each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    /// The nameless default exchange, routing key = queue name: what `warren bench` always
    /// measured. Each message reaches one queue (producers round-robin over the queues).
    Default,
    /// A declared direct exchange, each queue bound with its own name: each message reaches
    /// one queue (producers round-robin over the queues).
    Direct,
    /// A declared fanout exchange: every queue gets every message.
    Fanout,
    /// A declared topic exchange; each queue binds a different wildcard pattern that matches
    /// every routing key the producers use (`bench.#`, `bench.*.*`, `*.*.*`, `#`, in turn), so
    /// every queue gets every message, through the topic matcher.
    Topic,
}

/// The issue-11 workloads, as presets; an explicit flag overrides what a preset sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Durable 256 B, confirms with 1,000 in flight, acks, prefetch 1,000; 200,000 messages.
    S1,
    /// Durable 4 KiB, 50,000 messages.
    S2,
    /// Transient 256 B, auto-ack, no confirms, 500,000 messages.
    S3,
    /// Durable 256 B at 10,000 msgs/s for 100,000 messages: the latency scenario.
    S4,
    /// Topic fan-out to 4 durable queues (one consumer each), 100,000 messages.
    S5,
    /// 1,000,000 persistent 1 KiB messages published with no consumer, then drained.
    S6,
    /// 10,000 queues, each with its own consumer connection, one publisher sending 1 msg/s
    /// to each (10,000 msgs/s in all) for 60 s.
    S7,
}

/// What a scenario sets; `None` leaves the general default (or an explicit flag) in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preset {
    /// Producer connections.
    pub producers: Option<usize>,
    /// Consumer connections.
    pub consumers: Option<usize>,
    /// Queues.
    pub queues: Option<usize>,
    /// Exchange type.
    pub exchange_type: Option<ExchangeType>,
    /// Body size.
    pub size: Option<usize>,
    /// How much to publish.
    pub volume: Option<Volume>,
    /// Per-producer rate limit.
    pub rate: Option<u64>,
    /// Persistent messages to durable queues.
    pub persistent: Option<bool>,
    /// Consume with auto-ack.
    pub auto_ack: bool,
    /// Publish without confirms.
    pub no_confirm: bool,
    /// Publish everything before the consumers start.
    pub backlog: bool,
}

impl Scenario {
    /// The workload of the issue-11 table row of this name.
    pub fn preset(self) -> Preset {
        let base = Preset {
            size: Some(256),
            persistent: Some(true),
            ..Preset::default()
        };
        match self {
            Scenario::S1 => Preset {
                volume: Some(Volume::Count(200_000)),
                ..base
            },
            Scenario::S2 => Preset {
                size: Some(4096),
                volume: Some(Volume::Count(50_000)),
                ..base
            },
            Scenario::S3 => Preset {
                persistent: Some(false),
                auto_ack: true,
                no_confirm: true,
                volume: Some(Volume::Count(500_000)),
                ..base
            },
            Scenario::S4 => Preset {
                rate: Some(10_000),
                volume: Some(Volume::Count(100_000)),
                ..base
            },
            Scenario::S5 => Preset {
                exchange_type: Some(ExchangeType::Topic),
                queues: Some(4),
                consumers: Some(4),
                volume: Some(Volume::Count(100_000)),
                ..base
            },
            Scenario::S6 => Preset {
                size: Some(1024),
                volume: Some(Volume::Count(1_000_000)),
                backlog: true,
                ..base
            },
            Scenario::S7 => Preset {
                queues: Some(10_000),
                consumers: Some(10_000),
                rate: Some(10_000),
                volume: Some(Volume::Duration(Duration::from_secs(60))),
                ..base
            },
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The preset the options came from, for the report.
    pub scenario: Option<Scenario>,
    /// Producer connections, one publishing task each.
    pub producers: usize,
    /// Consumer connections. Queue `q` is consumed by connection `q % consumers`; with more
    /// connections than queues, connection `c` consumes queue `c % queues`.
    pub consumers: usize,
    /// Queues, all bound to the one exchange.
    pub queues: usize,
    /// The exchange the producers publish to.
    pub exchange_type: ExchangeType,
    /// Body size in bytes (at least [`super::verify::STAMP_LEN`]: producer, sequence and
    /// send time ride in the body).
    pub size: usize,
    /// How much to publish.
    pub volume: Volume,
    /// Messages per second, per producer (PerfTest's `--rate`); `None`: as fast as the
    /// confirm window lets it.
    pub rate: Option<u64>,
    /// Publishes awaiting their confirm at most, per producer.
    pub confirm_window: usize,
    /// Each consumer connection's prefetch.
    pub prefetch: u32,
    /// Consume with auto-ack (deliveries count as acknowledged when sent).
    pub auto_ack: bool,
    /// Publish persistent messages to durable queues.
    pub persistent: bool,
    /// Publish without confirms; `confirm_window` then does not apply (the connection's own
    /// bound on publishes in flight holds the publisher back).
    pub no_confirm: bool,
    /// Publish everything first, with no consumer, then start the consumers and drain.
    pub backlog: bool,
    /// Application headers on every message (`h0`..`hN`, short string values), to measure
    /// what headers cost on the publish and delivery paths.
    pub headers: usize,
    /// The stream scenario: the queue is a stream, everything is appended with confirms,
    /// then read back from the first offset (acking each).
    pub stream: bool,
    /// A running daemon to measure; `None` starts a broker in this process.
    pub server: Option<String>,
    /// Data directory for the in-process broker (a temporary one if `None`).
    pub data_dir: Option<PathBuf>,
    /// Connect to `server` with TLS (the in-process broker has no TLS listener).
    pub tls: Option<crate::tls::ClientTls>,
    /// Who logs in to `server`, and in which virtual host (the in-process broker is
    /// always measured as guest on `/`, the only user it has).
    pub login: ConnectOptions,
}

impl BenchOptions {
    /// The options `warren bench` runs with when given no flag: one producer, one
    /// consumer, one queue on the default exchange, 200,000 persistent 256 B messages,
    /// 1,000 confirms in flight, prefetch 1,000, acks, against an in-process broker.
    pub fn new() -> Self {
        BenchOptions {
            scenario: None,
            producers: 1,
            consumers: 1,
            queues: 1,
            exchange_type: ExchangeType::Default,
            size: 256,
            volume: Volume::Count(DEFAULT_COUNT),
            rate: None,
            confirm_window: 1_000,
            prefetch: 1_000,
            auto_ack: false,
            persistent: true,
            no_confirm: false,
            backlog: false,
            headers: 0,
            stream: false,
            server: None,
            data_dir: None,
            tls: None,
            login: ConnectOptions::default(),
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions::new()
    }
}
