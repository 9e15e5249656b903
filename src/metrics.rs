//! Prometheus metrics: `GET /metrics` on its own listener (`warren serve --metrics-listen`).
//!
//! Nothing here keeps counts of its own. [`BrokerCollector`] reads the broker at scrape time —
//! [`BrokerStats`](crate::broker::BrokerStats), each queue's counts and
//! [`QueueStats`](crate::broker::queue::QueueStats), the store writer's
//! [`StoreStats`](crate::store::StoreStats) — so queues that come and go are always listed
//! right, with nothing to register or unregister. The two histograms are the exception: the
//! store writer observes them once per commit, and the collector encodes their current state.
//!
//! The exposition is OpenMetrics text (`prometheus-client`'s encoder), which Prometheus asks
//! for first and parses natively. docs/metrics.md lists every metric.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::dead_letter::DeadLetterReason;
use crate::broker::queue::{Queue, QueueCounts};
use crate::broker::stats::resident_memory_bytes;
use crate::broker::Broker;

/// The path metrics are served on; every other path is 404.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of the exposition (OpenMetrics text 1.0).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrape connections served at once. Prometheus keeps one per target; the cap only stops a
/// misbehaving client from tying up the daemon.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for in-flight scrapes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the broker's counters and gauges on every scrape.
#[derive(Clone)]
pub struct BrokerCollector {
    broker: Broker,
}

impl fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerCollector").finish_non_exhaustive()
    }
}

impl BrokerCollector {
    /// A collector for `broker`.
    pub fn new(broker: Broker) -> Self {
        BrokerCollector { broker }
    }
}

/// One queue as seen at the start of a scrape: every per-queue family reports the same
/// snapshot, so a scrape is consistent across families for each queue.
struct QueueSnapshot {
    /// Its virtual host: a `vhost` label outside `/` (see docs/metrics.md).
    vhost: Arc<str>,
    queue: Arc<Queue>,
    counts: QueueCounts,
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// A family with one series per queue (label `queue`).
fn per_queue<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    queues: &[QueueSnapshot],
    metric: impl Fn(&QueueSnapshot) -> M,
) -> fmt::Result {
    let Some(first) = queues.first() else {
        // No series: leave the family out rather than print a descriptor with no samples.
        return Ok(());
    };
    let metric_type = metric(first).metric_type();
    let mut family = enc.encode_descriptor(name, help, unit, metric_type)?;
    for q in queues {
        if &*q.vhost == crate::broker::vhost::DEFAULT_VHOST {
            let labels = [("queue", &*q.queue.name)];
            metric(q).encode(family.encode_family(&labels)?)?;
        } else {
            let labels = [("queue", &*q.queue.name), ("vhost", &*q.vhost)];
            metric(q).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for BrokerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let broker = &self.broker;
        let stats = broker.stats();
        let mut queues: Vec<QueueSnapshot> = broker
            .vhost_list()
            .into_iter()
            .flat_map(|vh| {
                vh.queue_list().into_iter().map(move |queue| QueueSnapshot {
                    vhost: vh.name.clone(),
                    counts: queue.counts(),
                    queue,
                })
            })
            .collect();
        queues.sort_by(|a, b| (&a.vhost, &a.queue.name).cmp(&(&b.vhost, &b.queue.name)));
        let consumers: u64 = queues.iter().map(|q| u64::from(q.counts.consumers)).sum();

        // Broker-wide gauges.
        gauge(
            &mut enc,
            "warren_connections",
            "Open client connections.",
            None,
            broker.connection_count() as u64,
        )?;
        gauge(
            &mut enc,
            "warren_consumers",
            "Consumers attached to queues.",
            None,
            consumers,
        )?;
        gauge(
            &mut enc,
            "warren_queues",
            "Queues declared.",
            None,
            queues.len() as u64,
        )?;

        // Broker-wide message counters.
        counter(
            &mut enc,
            "warren_messages_published",
            "Publishes accepted (including scheduled ones).",
            load(&stats.published),
        )?;
        counter(
            &mut enc,
            "warren_messages_routed",
            "Publishes routed to at least one queue.",
            load(&stats.routed),
        )?;
        counter(
            &mut enc,
            "warren_messages_unroutable",
            "Publishes no queue took.",
            load(&stats.unroutable),
        )?;
        counter(
            &mut enc,
            "warren_messages_duplicate",
            "Publishes confirmed as duplicates (x-message-deduplication or a stream producer sequence): stored nowhere.",
            load(&stats.duplicates),
        )?;
        counter(
            &mut enc,
            "warren_messages_returned",
            "Unroutable mandatory publishes returned to the publisher.",
            load(&stats.returned),
        )?;
        counter(
            &mut enc,
            "warren_messages_delivered",
            "Deliveries to consumers and by get.",
            load(&stats.delivered),
        )?;
        counter(
            &mut enc,
            "warren_messages_redelivered",
            "Deliveries of messages that had been delivered before.",
            load(&stats.redelivered),
        )?;
        counter(
            &mut enc,
            "warren_messages_acked",
            "Deliveries acknowledged.",
            load(&stats.acked),
        )?;
        counter(
            &mut enc,
            "warren_messages_nacked",
            "Deliveries nacked or rejected, with or without requeue.",
            load(&stats.nacked),
        )?;
        counter(
            &mut enc,
            "warren_messages_requeued",
            "Deliveries nacked or rejected with requeue.",
            load(&stats.requeued),
        )?;
        counter(
            &mut enc,
            "warren_messages_rejected_dropped",
            "Deliveries nacked or rejected without requeue from a queue with no dead-letter exchange (discarded).",
            load(&stats.rejected_dropped),
        )?;
        counter(
            &mut enc,
            "warren_messages_expired",
            "Messages that expired (dead-lettered or dropped).",
            load(&stats.expired),
        )?;
        counter(
            &mut enc,
            "warren_dead_letters_dropped",
            "Dead letters dropped: their dead-letter exchange is missing, they route nowhere, or they would cycle.",
            load(&stats.dead_letters_dropped),
        )?;
        {
            let mut family = enc.encode_descriptor(
                "warren_messages_dead_lettered",
                "Messages published to a dead-letter exchange, by reason.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for reason in DeadLetterReason::ALL {
                let labels = [("reason", reason.as_str())];
                ConstCounter::new(stats.dead_lettered(reason))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut enc,
            "warren_messages_scheduled",
            "Messages accepted for later release (x-delay, x-deliver-at).",
            load(&stats.scheduled),
        )?;
        counter(
            &mut enc,
            "warren_consumer_timeouts",
            "Consumers cancelled for holding a delivery past their consumer timeout.",
            load(&stats.consumer_timeouts),
        )?;

        // Per queue.
        per_queue(
            &mut enc,
            "warren_queue_messages_ready",
            "Messages ready for delivery.",
            None,
            &queues,
            |q| ConstGauge::new(q.counts.ready),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_unacked",
            "Messages delivered and not yet acknowledged.",
            None,
            &queues,
            |q| ConstGauge::new(q.counts.unacked),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_delayed",
            "Messages waiting out a requeue delay.",
            None,
            &queues,
            |q| ConstGauge::new(q.counts.delayed),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_ready",
            "Body bytes of the ready messages.",
            Some(&Unit::Bytes),
            &queues,
            |q| ConstGauge::new(q.counts.ready_bytes),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_consumers",
            "Consumers attached to the queue.",
            None,
            &queues,
            |q| ConstGauge::new(u64::from(q.counts.consumers)),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_published",
            "Messages that entered the queue since it was created or recovered.",
            None,
            &queues,
            |q| ConstCounter::new(load(&q.queue.stats.published)),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_delivered",
            "Deliveries from the queue since it was created or recovered.",
            None,
            &queues,
            |q| ConstCounter::new(load(&q.queue.stats.delivered)),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_acked",
            "Deliveries from the queue acknowledged since it was created or recovered.",
            None,
            &queues,
            |q| ConstCounter::new(load(&q.queue.stats.acked)),
        )?;
        per_queue(
            &mut enc,
            "warren_queue_messages_dead_lettered",
            "Messages that left the queue dead-lettered or dropped (expired, rejected, maxlen, delivery limit).",
            None,
            &queues,
            |q| ConstCounter::new(load(&q.queue.stats.dead_lettered)),
        )?;

        // Storage and process.
        let store = broker.store();
        let s = store.stats();
        counter(
            &mut enc,
            "warren_store_commits",
            "Write transactions committed.",
            load(&s.commits),
        )?;
        counter(
            &mut enc,
            "warren_store_operations",
            "Store operations applied in those commits.",
            load(&s.ops_committed),
        )?;
        counter(
            &mut enc,
            "warren_store_messages_written",
            "Message bodies written to the store.",
            load(&s.messages_written),
        )?;
        s.commit_operations.encode(enc.encode_descriptor(
            "warren_store_commit_operations",
            "Operations per commit (group-commit batch size).",
            None,
            s.commit_operations.metric_type(),
        )?)?;
        s.commit_seconds.encode(enc.encode_descriptor(
            "warren_store_commit_duration",
            "Commit latency: opening the write transaction to the end of the durable commit.",
            Some(&Unit::Seconds),
            s.commit_seconds.metric_type(),
        )?)?;
        gauge(
            &mut enc,
            "warren_store_size",
            "Size of the store file.",
            Some(&Unit::Bytes),
            store.size_on_disk(),
        )?;
        gauge(
            &mut enc,
            "warren_memory_used",
            "Bytes the daemon has allocated, the memory budget's measure (0 without a budget).",
            Some(&Unit::Bytes),
            stats.memory_used_bytes.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "warren_memory_limit",
            "The memory budget, --memory-limit (0: none).",
            Some(&Unit::Bytes),
            stats.memory_limit_bytes.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "warren_memory_alarm",
            "1 while memory in use is above --memory-limit and publishers are blocked.",
            None,
            u64::from(broker.alarms().current().memory),
        )?;
        gauge(
            &mut enc,
            "warren_disk_free",
            "Free space on the data directory's filesystem at the disk monitor's last check (0 with the disk alarm off).",
            Some(&Unit::Bytes),
            stats.disk_free_bytes.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "warren_disk_alarm",
            "1 while free disk space is below --disk-free-limit and persistent publishers are blocked.",
            None,
            u64::from(broker.alarms().current().disk),
        )?;
        gauge(
            &mut enc,
            "process_resident_memory",
            "Resident memory of the warren process.",
            Some(&Unit::Bytes),
            resident_memory_bytes(),
        )?;
        Ok(())
    }
}

/// A registry holding the broker's collector.
pub fn registry(broker: &Broker) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector::new(broker.clone())));
    registry
}

/// The exposition of `registry`, in OpenMetrics text.
///
/// # Errors
/// A collector failed to encode (it cannot with the types used here; `fmt::Error` is what the
/// encoder's signature allows).
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

fn text_response(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request: the exposition for `GET /metrics` (and `HEAD`), 404 for other paths,
/// 405 for other methods.
pub fn respond<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != METRICS_PATH {
        return text_response(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let started = Instant::now();
    match encode(registry) {
        Ok(text) => {
            tracing::debug!(
                bytes = text.len(),
                micros = started.elapsed().as_micros() as u64,
                "metrics scraped"
            );
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled, then lets in-flight
/// scrapes finish (bounded by a drain timeout).
pub async fn serve(listener: TcpListener, broker: Broker, shutdown: CancellationToken) {
    let registry = Arc::new(registry(&broker));
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, path = METRICS_PATH, "serving metrics");
    }
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let registry = registry.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&registry, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "metrics connections still open after the drain timeout"
        );
    }
    tracing::info!("metrics endpoint stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerConfig;
    use warren_protocol::{FieldTable, QueueDeclare};

    async fn broker(dir: &std::path::Path) -> Broker {
        Broker::open(BrokerConfig {
            data_dir: dir.to_owned(),
            queue_window_bytes: crate::broker::DEFAULT_QUEUE_WINDOW_BYTES,
            consumer_timeout: None,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            disk_free_limit: 0,
            limits: Default::default(),
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store_quick_repair: false,
            recovery: Default::default(),
        })
        .await
        .expect("opening a broker")
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("a request")
    }

    #[tokio::test]
    async fn routes_by_path_then_method() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = broker(dir.path()).await;
        let r = registry(&b);
        let ok = respond(&r, &request(Method::GET, "/metrics?x=1"));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(CONTENT_TYPE_OPENMETRICS)
        );
        assert_eq!(
            respond(&r, &request(Method::HEAD, "/metrics")).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&r, &request(Method::GET, "/")).status(),
            StatusCode::NOT_FOUND
        );
        // An unknown path is 404 whatever the method.
        assert_eq!(
            respond(&r, &request(Method::POST, "/other")).status(),
            StatusCode::NOT_FOUND
        );
        let post = respond(&r, &request(Method::POST, "/metrics"));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            post.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
            Some("GET, HEAD")
        );
        b.shutdown().await;
    }

    #[tokio::test]
    async fn per_queue_families_appear_with_queues_and_escape_their_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = broker(dir.path()).await;
        let r = registry(&b);
        let text = encode(&r).expect("encoding");
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("\nwarren_queues 0\n"));
        // No queue, no per-queue family (not even its descriptor).
        assert!(!text.contains("warren_queue_messages_ready"));

        let (tx, _rx) = crate::broker::outbox::outbox();
        let session = b.new_session(
            "test".into(),
            crate::broker::access::Principal::internal(),
            tx,
        );
        b.declare_queue(
            &session,
            QueueDeclare {
                name: "a \"b\" \\c".into(),
                durable: false,
                exclusive: false,
                auto_delete: false,
                passive: false,
                arguments: FieldTable::new(),
            },
        )
        .await
        .expect("declare");
        let text = encode(&r).expect("encoding");
        assert!(text.contains("\nwarren_queues 1\n"));
        assert!(
            text.contains("\nwarren_queue_messages_ready{queue=\"a \\\"b\\\" \\\\c\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE warren_queue_messages_ready_bytes gauge\n"));
        assert!(text.contains("# UNIT warren_queue_messages_ready_bytes bytes\n"));
        assert!(text.contains("warren_queue_messages_published_total{queue="));

        // The same name in another virtual host is another series, labelled with it.
        b.vhost_add("prod").await.expect("vhost");
        let (tx, _rx) = crate::broker::outbox::outbox();
        let principal = crate::broker::access::Principal {
            vhost: "prod".into(),
            ..(*crate::broker::access::Principal::internal()).clone()
        };
        let session = b.new_session("test".into(), std::sync::Arc::new(principal), tx);
        b.declare_queue(
            &session,
            QueueDeclare {
                name: "a \"b\" \\c".into(),
                durable: false,
                exclusive: false,
                auto_delete: false,
                passive: false,
                arguments: FieldTable::new(),
            },
        )
        .await
        .expect("declare");
        let text = encode(&r).expect("encoding");
        assert!(text.contains("\nwarren_queues 2\n"), "{text}");
        assert!(
            text.contains(
                "\nwarren_queue_messages_ready{queue=\"a \\\"b\\\" \\\\c\",vhost=\"prod\"} 0\n"
            ),
            "{text}"
        );
        b.shutdown().await;
    }

    #[test]
    fn store_histograms_have_the_documented_buckets() {
        let stats = crate::store::StoreStats::default();
        stats.commit_operations.observe(3.0);
        let mut r = Registry::default();
        r.register("ops", "x", stats.commit_operations.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encoding");
        assert!(text.contains("ops_bucket{le=\"2.0\"} 0\n"), "{text}");
        assert!(text.contains("ops_bucket{le=\"4.0\"} 1\n"), "{text}");
        assert!(text.contains("ops_bucket{le=\"4096.0\"} 1\n"), "{text}");
    }
}
