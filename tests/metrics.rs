//! `warren serve --metrics-listen`: the Prometheus endpoint, against the real daemon. Scrapes
//! go over a plain TCP socket with a hand-written HTTP/1.1 request, and the exposition is
//! checked by a strict OpenMetrics text parser written here (see [`parse`]).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{within, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::client::{Client, ConsumeOptions, Consumer, Delivery, OutgoingMessage, QueueOptions};

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP response, as read off the socket.
struct HttpResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `METHOD path` with `Connection: close` and reads the whole response.
async fn http(addr: &str, method: &str, path: &str) -> HttpResponse {
    within(&format!("{method} {path}"), async {
        let mut s = TcpStream::connect(addr).await.expect("connecting to metrics");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("sending request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("reading response");
        parse_http(&raw, method == "HEAD")
    })
    .await
}

fn parse_http(raw: &[u8], head: bool) -> HttpResponse {
    let text = String::from_utf8(raw.to_vec()).expect("response is UTF-8");
    let (head_part, body) = text.split_once("\r\n\r\n").expect("end of headers");
    let mut lines = head_part.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .get("content-length")
        .expect("a content-length")
        .parse()
        .expect("numeric content-length");
    if head {
        assert!(body.is_empty(), "HEAD response with a body");
    } else {
        assert_eq!(body.len(), len, "body length vs content-length");
    }
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// A strict OpenMetrics text parser (the subset prometheus-client writes: no timestamps, no
// exemplars). It rejects anything malformed rather than skipping it.

#[derive(Debug, Default, Clone)]
struct Family {
    kind: String,
    help: Option<String>,
    unit: Option<String>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample called `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one sample {name}{labels:?}, found {}",
            found.len()
        );
        found[0].value
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value {v:?}")),
    }
}

/// Parses `{k="v",...}`; returns the labels and the rest of the line.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').expect("label set opens with {");
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let (name, r) = rest.split_once("=\"").expect("label name=\"");
        assert!(valid_label_name(name), "bad label name {name:?}");
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '"' => break i,
                '\\' => match chars.next().expect("escape at end").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other}"),
                },
                '\n' => panic!("raw newline in a label value"),
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} twice"
        );
        rest = &r[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        }
    }
}

/// The family a sample name belongs to, given the family being read.
fn sample_belongs(family: &str, f: &Family, sample: &str) -> bool {
    let suffixes: &[&str] = match f.kind.as_str() {
        "counter" => &["_total", "_created"],
        "gauge" => &[""],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "info" => &["_info"],
        _ => &[""],
    };
    suffixes.iter().any(|s| sample == format!("{family}{s}"))
}

/// Parses OpenMetrics text strictly: every line is a descriptor, a sample of the family
/// declared just before, or the final `# EOF`.
fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    let body = text
        .strip_suffix("# EOF\n")
        .expect("exposition ends with # EOF");
    let mut current: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for line in body.lines() {
        assert!(!line.is_empty(), "empty line in the exposition");
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let what = parts.next().expect("descriptor kind");
            let name = parts.next().expect("descriptor name");
            let arg = parts.next().expect("descriptor argument");
            assert!(valid_metric_name(name), "bad metric name {name:?}");
            if current.as_deref() != Some(name) {
                assert!(
                    !out.families.contains_key(name),
                    "family {name} declared twice"
                );
                current = Some(name.to_owned());
            }
            let f = out.families.entry(name.to_owned()).or_default();
            match what {
                "HELP" => {
                    assert!(
                        f.help.replace(arg.to_owned()).is_none(),
                        "two HELP for {name}"
                    )
                }
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "summary",
                            "stateset",
                            "gaugehistogram"
                        ]
                        .contains(&arg),
                        "bad type {arg:?}"
                    );
                    assert!(f.kind.is_empty(), "two TYPE for {name}");
                    f.kind = arg.to_owned();
                }
                "UNIT" => {
                    assert!(
                        name.ends_with(&format!("_{arg}")),
                        "{name} does not end in its unit {arg}"
                    );
                    f.unit = Some(arg.to_owned());
                }
                other => panic!("unknown descriptor {other:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = &line[..name_end];
        assert!(valid_metric_name(name), "bad sample name {name:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest.strip_prefix(' ').expect("space before the value");
        assert!(
            !value.contains(' '),
            "timestamps or exemplars are not expected: {line:?}"
        );
        let value = parse_value(value);
        let family = current.as_deref().expect("sample before any descriptor");
        let f = &out.families[family];
        assert!(!f.kind.is_empty(), "family {family} has no TYPE");
        assert!(
            sample_belongs(family, f, name),
            "sample {name} does not belong to family {family} ({})",
            f.kind
        );
        if f.kind == "counter" {
            assert!(value >= 0.0, "negative counter {line:?}");
        }
        assert!(
            seen.insert((name.to_owned(), labels.clone())),
            "duplicate series {line:?}"
        );
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, f) in &out.families {
        assert!(!f.kind.is_empty(), "family {name} has no TYPE");
    }
    check_histograms(&out);
    out
}

/// Histogram buckets are cumulative, end at `+Inf`, and `+Inf` equals `_count`.
fn check_histograms(e: &Exposition) {
    for name in e
        .families
        .iter()
        .filter(|(_, f)| f.kind == "histogram")
        .map(|(n, _)| n)
    {
        let buckets: Vec<(f64, f64)> = e
            .samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .map(|s| (parse_value(&s.labels["le"]), s.value))
            .collect();
        assert!(!buckets.is_empty(), "histogram {name} has no buckets");
        for pair in buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{name}: bucket bounds not ascending");
            assert!(pair[0].1 <= pair[1].1, "{name}: buckets not cumulative");
        }
        let (last_le, last) = *buckets.last().expect("a bucket");
        assert!(last_le.is_infinite(), "{name}: last bucket is not +Inf");
        assert_eq!(
            last,
            e.value(&format!("{name}_count"), &[]),
            "{name}: +Inf vs count"
        );
    }
}

#[test]
fn the_parser_rejects_what_it_should() {
    let ok = "# HELP a_total x\n# TYPE a counter\na_total 1\n# EOF\n";
    // A HELP naming the sample rather than the family is wrong in OpenMetrics.
    assert!(std::panic::catch_unwind(|| parse(ok)).is_err());
    let ok = "# HELP a x\n# TYPE a counter\na_total 1\n# HELP g y\n# TYPE g gauge\ng{q=\"a\\\"b\"} 2.5\n# EOF\n";
    let e = parse(ok);
    assert_eq!(e.value("g", &[("q", "a\"b")]), 2.5);
    for bad in [
        "# TYPE a counter\na_total 1\n",                       // no EOF
        "# TYPE a counter\na 1\n# EOF\n",                      // counter sample without _total
        "a 1\n# EOF\n",                                        // sample without a family
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n# EOF\n", // duplicate series
        "# TYPE a gauge\na one\n# EOF\n",                      // bad value
        "# TYPE a gauge\n# TYPE b gauge\na 1\n# EOF\n",        // a's sample after b's descriptor
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

async fn scrape(addr: &str) -> Exposition {
    let r = http(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    parse(&r.body)
}

/// Scrapes until the store is quiet: background commits (a dead letter's removal, say) can
/// land between the collector's reads, so counts are compared once every commit has been
/// observed by both histograms.
async fn settled_scrape(addr: &str) -> Exposition {
    within("the store's counters to settle", async {
        loop {
            let e = scrape(addr).await;
            let commits = e.value("warren_store_commits_total", &[]);
            if e.value("warren_store_commit_operations_count", &[]) == commits
                && e.value("warren_store_commit_duration_seconds_count", &[]) == commits
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn next(consumer: &mut Consumer) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("consumer ended unexpectedly")
}

async fn publish_n(c: &Client, queue: &str, n: usize) {
    for i in 0..n {
        let m = OutgoingMessage::new("", queue, format!("m{i}")).persistent();
        let p = c.publish(m).await.expect("publish");
        assert!(p.await.expect("confirm").is_confirmed());
    }
}

/// Every family the endpoint promises (docs/metrics.md), with its type.
const EXPECTED: &[(&str, &str)] = &[
    ("warren_connections", "gauge"),
    ("warren_consumers", "gauge"),
    ("warren_queues", "gauge"),
    ("warren_messages_published", "counter"),
    ("warren_messages_routed", "counter"),
    ("warren_messages_unroutable", "counter"),
    ("warren_messages_duplicate", "counter"),
    ("warren_messages_returned", "counter"),
    ("warren_messages_delivered", "counter"),
    ("warren_messages_redelivered", "counter"),
    ("warren_messages_acked", "counter"),
    ("warren_messages_nacked", "counter"),
    ("warren_messages_requeued", "counter"),
    ("warren_messages_rejected_dropped", "counter"),
    ("warren_messages_expired", "counter"),
    ("warren_dead_letters_dropped", "counter"),
    ("warren_messages_dead_lettered", "counter"),
    ("warren_messages_scheduled", "counter"),
    ("warren_consumer_timeouts", "counter"),
    ("warren_queue_messages_ready", "gauge"),
    ("warren_queue_messages_unacked", "gauge"),
    ("warren_queue_messages_delayed", "gauge"),
    ("warren_queue_messages_ready_bytes", "gauge"),
    ("warren_queue_consumers", "gauge"),
    ("warren_queue_messages_published", "counter"),
    ("warren_queue_messages_delivered", "counter"),
    ("warren_queue_messages_acked", "counter"),
    ("warren_queue_messages_dead_lettered", "counter"),
    ("warren_store_commits", "counter"),
    ("warren_store_operations", "counter"),
    ("warren_store_messages_written", "counter"),
    ("warren_store_commit_operations", "histogram"),
    ("warren_store_commit_duration_seconds", "histogram"),
    ("warren_store_size_bytes", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
];

#[tokio::test]
async fn metrics_are_openmetrics_and_counters_move_as_messages_flow() {
    let d = TestDaemon::start_with_metrics();
    let addr = d.metrics_addr().expect("runtime.json has metrics_listen");
    let c = d.client().await;
    let q = "metrics-work";
    c.declare_queue(
        q,
        QueueOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await
    .expect("declare");

    let before = settled_scrape(&addr).await;
    for (name, kind) in EXPECTED {
        let f = before
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("no family {name}"));
        assert_eq!(f.kind, *kind, "type of {name}");
        assert!(
            f.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name} has no HELP"
        );
    }
    assert_eq!(
        before.families["warren_store_commit_duration_seconds"]
            .unit
            .as_deref(),
        Some("seconds")
    );
    assert_eq!(
        before.families["warren_store_size_bytes"].unit.as_deref(),
        Some("bytes")
    );
    for reason in ["rejected", "expired", "maxlen", "delivery_limit"] {
        before.value("warren_messages_dead_lettered_total", &[("reason", reason)]);
    }
    assert!(before.value("warren_connections", &[]) >= 1.0);
    assert_eq!(
        before.value("warren_queue_messages_ready", &[("queue", q)]),
        0.0
    );
    assert!(before.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(before.value("warren_store_size_bytes", &[]) > 0.0);

    // 5 persistent messages to a consumer: ack 3, reject 1 (no dead-letter exchange: it is
    // dropped), nack 1 with requeue, which comes back redelivered and is acked. Then one more
    // by get, acked, and one publish that routes nowhere.
    publish_n(&c, q, 5).await;
    c.qos(10).await.expect("qos");
    let mut consumer = c
        .consume(q, ConsumeOptions::default())
        .await
        .expect("consume");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut consumer).await);
    }
    let during = scrape(&addr).await;
    assert_eq!(during.value("warren_consumers", &[]), 1.0);
    assert_eq!(during.value("warren_queue_consumers", &[("queue", q)]), 1.0);
    assert_eq!(
        during.value("warren_queue_messages_unacked", &[("queue", q)]),
        5.0
    );

    for dl in &got[..3] {
        c.ack_durable(dl.delivery_tag, false).await.expect("ack");
    }
    c.reject_durable(got[3].delivery_tag, false)
        .await
        .expect("reject");
    c.nack_durable(got[4].delivery_tag, false, true, 0)
        .await
        .expect("nack");
    let again = next(&mut consumer).await;
    assert!(again.redelivered);
    c.ack_durable(again.delivery_tag, false).await.expect("ack");
    c.cancel(consumer.tag()).await.expect("cancel");

    publish_n(&c, q, 1).await;
    let fetched = c.get(q, false).await.expect("get").expect("a message");
    assert!(!fetched.redelivered);
    c.ack_durable(fetched.delivery_tag, false)
        .await
        .expect("ack");

    let p = c
        .publish(OutgoingMessage::new("", "no-such-queue", "lost"))
        .await
        .expect("publish");
    assert!(p.await.expect("confirm").is_confirmed());

    let after = settled_scrape(&addr).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    for (name, want) in [
        ("warren_messages_published_total", 7.0),
        ("warren_messages_routed_total", 6.0),
        ("warren_messages_unroutable_total", 1.0),
        ("warren_messages_returned_total", 0.0),
        ("warren_messages_delivered_total", 7.0),
        ("warren_messages_redelivered_total", 1.0),
        ("warren_messages_acked_total", 5.0),
        ("warren_messages_nacked_total", 2.0),
        ("warren_messages_requeued_total", 1.0),
        ("warren_messages_rejected_dropped_total", 1.0),
        ("warren_messages_expired_total", 0.0),
        ("warren_store_messages_written_total", 6.0),
    ] {
        assert_eq!(delta(name, &[]), want, "{name} moved by");
    }
    for (name, want) in [
        ("warren_queue_messages_published_total", 6.0),
        ("warren_queue_messages_delivered_total", 7.0),
        ("warren_queue_messages_acked_total", 5.0),
        ("warren_queue_messages_dead_lettered_total", 1.0),
    ] {
        assert_eq!(delta(name, &[("queue", q)]), want, "{name} moved by");
    }
    for (name, want) in [
        ("warren_queue_messages_ready", 0.0),
        ("warren_queue_messages_unacked", 0.0),
        ("warren_queue_messages_delayed", 0.0),
        ("warren_queue_messages_ready_bytes", 0.0),
        ("warren_queue_consumers", 0.0),
    ] {
        assert_eq!(after.value(name, &[("queue", q)]), want, "{name}");
    }
    assert_eq!(after.value("warren_consumers", &[]), 0.0);
    // Every publish and ack above waited for its commit, so there were several; group
    // commit may have batched some. (settled_scrape saw one observation of each histogram
    // per commit.)
    assert!(delta("warren_store_commits_total", &[]) >= 2.0);
    assert!(delta("warren_store_commit_duration_seconds_sum", &[]) > 0.0);
    // 6 stored publishes, 5 acked removals and the requeue's delivery-count update were
    // committed before the calls above returned (the rejected message's removal may follow).
    assert!(delta("warren_store_commit_operations_sum", &[]) >= 12.0);
    assert!(delta("warren_store_operations_total", &[]) >= 12.0);
}

#[tokio::test]
async fn per_queue_series_follow_queues_as_they_come_and_go() {
    let d = TestDaemon::start_with_metrics();
    let addr = d.metrics_addr().expect("metrics_listen");
    let c = d.client().await;
    // A name that needs escaping in a label value.
    let odd = "odd \"quoted\" \\ name";
    c.declare_queue(odd, QueueOptions::default())
        .await
        .expect("declare");
    publish_n(&c, odd, 2).await;
    let e = scrape(&addr).await;
    assert_eq!(
        e.value("warren_queue_messages_ready", &[("queue", odd)]),
        2.0
    );
    assert_eq!(
        e.value("warren_queue_messages_ready_bytes", &[("queue", odd)]),
        4.0
    );
    c.delete_queue(odd, false, false).await.expect("delete");
    let e = scrape(&addr).await;
    assert!(
        !e.samples
            .iter()
            .any(|s| s.labels.get("queue").is_some_and(|v| v == odd)),
        "a deleted queue still has series"
    );
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let d = TestDaemon::start_with_metrics();
    let addr = d.metrics_addr().expect("metrics_listen");
    for path in ["/", "/metric", "/metrics/", "/metrics/x", "/favicon.ico"] {
        let r = http(&addr, "GET", path).await;
        assert_eq!(r.status, 404, "GET {path}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let r = http(&addr, method, "/metrics").await;
        assert_eq!(r.status, 405, "{method} /metrics");
        assert_eq!(
            r.headers.get("allow").map(String::as_str),
            Some("GET, HEAD")
        );
    }
    let r = http(&addr, "HEAD", "/metrics").await;
    assert_eq!(r.status, 200);
    // A query string does not change the path.
    let r = http(&addr, "GET", "/metrics?name[]=x").await;
    assert_eq!(r.status, 200);
    parse(&r.body);
}

#[tokio::test]
async fn an_idle_scrape_connection_does_not_hold_up_shutdown() {
    let mut d = TestDaemon::start_with_metrics();
    let addr = d.metrics_addr().expect("metrics_listen");

    // An idle keep-alive scrape connection must not hold up shutdown.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    idle.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut buf = vec![0u8; 1024];
    let n = within("a response", idle.read(&mut buf))
        .await
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(d.stop(), "daemon did not exit cleanly:\n{}", d.logs());
    assert!(
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
            .await
            .map_or(true, |r| r.is_err()),
        "the metrics port still accepts after shutdown"
    );
}

#[tokio::test]
async fn no_metrics_listener_unless_asked() {
    let d = TestDaemon::start();
    assert_eq!(d.metrics_addr(), None);
}
