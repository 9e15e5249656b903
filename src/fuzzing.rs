//! The checks behind the broker-side cargo-fuzz targets in `fuzz/` (`topic_pattern`,
//! `admin_args`, `cli_field`, `definitions`, `amqp_frames`), here so that the fuzzers and the corpus replay
//! test run the very same code. The protocol's targets are in `warren_protocol::fuzzing`.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature, which only the fuzz crate
//! turns on. Each check takes arbitrary bytes and panics when an invariant breaks; a refusal
//! is fine, it is what bad input should get.

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;
use warren_protocol::field_table::read_table;
use warren_protocol::read::Reader;
use warren_protocol::{ExchangeKind, FieldTable, FieldValue};

use crate::broker::admin;
use crate::broker::exchange;
use crate::broker::queue_args::{self, QueueArgs};
use crate::broker::topic_trie::TopicTrie;
use crate::cli::field;

/// Most patterns, and most keys, one input makes.
const MAX_ITEMS: usize = 32;

/// Most words in a pattern or key: the reference matcher backtracks, so it is kept small.
const MAX_WORDS: usize = 16;

/// Most `#` words in a pattern, for the same reason (the broker refuses more than 2 anyway).
const MAX_HASHES: usize = 4;

/// Differential fuzzing of the topic trie against a word-by-word reference matcher. The
/// input is binding patterns, one per line, then a NUL byte, then routing keys, one per line
/// (no NUL: the patterns are the keys too). Patterns are bound to a few destinations, every
/// key is routed and compared with the reference; then every other binding is removed and
/// the keys are routed again.
pub fn topic_pattern(data: &[u8]) {
    let (pattern_part, key_part) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let lines = |part: &[u8]| -> Vec<String> {
        part.split(|&b| b == b'\n')
            .take(MAX_ITEMS)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .filter(|s| {
                let words: Vec<&str> = ref_words(s);
                words.len() <= MAX_WORDS
                    && words.iter().filter(|w| **w == "#").count() <= MAX_HASHES
            })
            .collect()
    };
    let patterns = lines(pattern_part);
    let keys = key_part.map_or_else(|| patterns.clone(), lines);

    let mut trie = TopicTrie::new();
    let mut model: HashSet<(String, u8)> = HashSet::new();
    let bindings: Vec<(String, u8)> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), (i % 5) as u8))
        .collect();
    for (pattern, dest) in &bindings {
        let new = model.insert((pattern.clone(), *dest));
        assert_eq!(trie.insert(pattern, *dest), new, "insert {pattern:?}");
    }
    assert_eq!(trie.len(), model.len());
    check_routes(&trie, &model, &keys);
    for (pattern, dest) in bindings.iter().step_by(2) {
        let was = model.remove(&(pattern.clone(), *dest));
        assert_eq!(trie.remove(pattern, dest), was, "remove {pattern:?}");
    }
    assert_eq!(trie.len(), model.len());
    check_routes(&trie, &model, &keys);
}

fn check_routes(trie: &TopicTrie<u8>, model: &HashSet<(String, u8)>, keys: &[String]) {
    for key in keys {
        let mut out = Vec::new();
        trie.route(key, &mut out);
        let routed: BTreeSet<u8> = out.iter().copied().collect();
        assert_eq!(routed.len(), out.len(), "duplicate destination for {key:?}");
        let expected: BTreeSet<u8> = model
            .iter()
            .filter(|(pattern, _)| ref_match(&ref_words(pattern), &ref_words(key)))
            .map(|&(_, dest)| dest)
            .collect();
        assert_eq!(routed, expected, "key {key:?}, bindings {model:?}");
    }
}

/// Words as RabbitMQ splits them: on `.`, the empty string being no words at all.
fn ref_words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// The obviously correct matcher: `*` is one word, `#` zero or more, others literal.
fn ref_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| ref_match(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && ref_match(rest, &key[1..]),
        Some((word, rest)) => key.first() == Some(word) && ref_match(rest, &key[1..]),
    }
}

/// Arbitrary bytes as a field table (through the protocol's decoder, as a client's frame
/// brings it) into every parser of client-given arguments: the admin commands', queue
/// arguments, exchange arguments and binding arguments. No panic, and the documented
/// guarantees of what [`QueueArgs::parse`] accepts hold.
pub fn admin_args(data: &[u8]) {
    let mut r = Reader::new(Bytes::copy_from_slice(data));
    let Ok(args) = read_table(&mut r) else {
        return;
    };
    check_args(&args);
}

fn check_args(args: &FieldTable) {
    for refusal in admin::parse_args(args) {
        assert!(!refusal.is_empty());
    }

    let parsed = QueueArgs::parse(args);
    let known = QueueArgs::parse_known(args);
    if let Ok(parsed) = &parsed {
        assert!(
            queue_args::unsupported_arguments(args).is_empty(),
            "parse took unsupported arguments"
        );
        let known = known.as_ref().expect("parse_known refused what parse took");
        assert_eq!(format!("{parsed:?}"), format!("{known:?}"));
        assert_ne!(parsed.consumer_timeout_ms, Some(0));
        assert_ne!(parsed.max_priority, Some(0));
        assert!(parsed
            .retry_backoff_ms
            .as_ref()
            .is_none_or(|b| !b.is_empty()));
        assert!(parsed.dead_letter_routing_key.is_none() || parsed.dead_letters());
        for failures in [0, 1, 2, u32::MAX] {
            let _ = parsed.retry_delay_ms(failures);
        }
    }
    if let Err(e) = &parsed {
        let _ = e.refusal("queue 'q'").to_string();
    }
    let _ = queue_args::consumer_timeout_arg(args).map_err(|e| e.refusal("consumer"));

    let _ = exchange::validate_arguments("x", args).map_err(|e| e.to_string());
    let _ = exchange::alternate_exchange(args).map_err(|e| e.to_string());
    let key = args
        .get("routing_key")
        .and_then(FieldValue::as_str)
        .unwrap_or("a.#.b");
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let _ = exchange::validate_binding(kind, key, args).map_err(|e| e.to_string());
    }
    for value in args.values() {
        if let FieldValue::String(text) = value {
            let _ = queue_args::parse_duration_ms(text);
        }
    }

    // Arguments and headers are shown back to users: as JSON (listings, definitions export,
    // `--json`) and as the CLI's lines.
    let json = crate::json::table_json(args);
    let text = serde_json::to_string(&json).expect("a JSON value serializes");
    let back: serde_json::Value = serde_json::from_str(&text).expect("our JSON parses");
    let _ = crate::json::json_table(&back);
    let delivery = crate::client::Delivery {
        consumer_tag: None,
        delivery_tag: 1,
        redelivered: true,
        delivery_count: 1,
        acquired_count: 1,
        exchange: String::new(),
        routing_key: key.to_owned(),
        properties: warren_protocol::Properties {
            headers: args.into(),
            ..Default::default()
        },
        body: Bytes::from_static(b"\xff"),
        message_count: None,
        stream_offset: None,
    };
    let _ = crate::cli::output::delivery_json_line(&delivery);
    let _ = crate::cli::output::delivery_line(&delivery);
}

/// Arbitrary text through the CLI's typed `KEY[:TYPE]=VALUE` parsers (headers, queue
/// arguments, plain arguments) and its duration parser: no panic.
pub fn cli_field(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = [
        field::parse_header(&text),
        field::parse_queue_arg(&text),
        field::parse_plain_arg(&text),
    ];
    // What the CLI sends goes through the same argument checks as a client's.
    for (key, value) in parsed.into_iter().flatten() {
        check_args(&FieldTable::from([(key, value)]));
    }
    let _ = queue_args::parse_duration_ms(&text);
}

/// Arbitrary text as a definitions document, through the parse and checks of
/// `definitions.import` that need no broker: no panic.
pub fn definitions(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = admin::parse_document(&text) {
        assert!(!e.to_string().is_empty());
    }
}

/// The AMQP listener's decoding of a client's bytes, without a socket: frames cut under
/// either size limit, methods and content headers parsed as the listener parses them (the
/// table nesting check first), what decodes re-encoded stably, and content properties
/// taken to Warren's and back unchanged. The check is `amqp::fuzz`, next to the code.
pub fn amqp_frames(data: &[u8]) {
    crate::amqp::fuzz::frames(data);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A fuzz target's check.
    type Check = fn(&[u8]);

    /// Every committed corpus file of the broker-side fuzz targets (`fuzz/corpus/<target>/`),
    /// seeds and crash inputs alike, through the same checks as the fuzzers, so CI keeps them
    /// honest without libFuzzer.
    #[test]
    fn replays_committed_fuzz_corpora() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let targets: [(&str, Check); 5] = [
            ("topic_pattern", super::topic_pattern),
            ("admin_args", super::admin_args),
            ("cli_field", super::cli_field),
            ("definitions", super::definitions),
            ("amqp_frames", super::amqp_frames),
        ];
        for (target, check) in targets {
            let dir = root.join(target);
            let mut files = 0;
            for entry in std::fs::read_dir(&dir).expect("corpus directory") {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                // Shown only when the test fails: which file broke the check.
                eprintln!("{target}: {}", path.display());
                check(&data);
                files += 1;
            }
            assert!(files > 0, "no corpus in {}", dir.display());
        }
    }

    /// Writes the seed corpora of the broker-side fuzz targets from valid inputs, replacing
    /// the seeds (files named `seed-*`) and leaving crash inputs alone. Run by hand:
    /// `cargo test --lib write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore = "writes files; run by hand to refresh the fuzz seeds"]
    fn write_fuzz_seeds() {
        use bytes::BytesMut;
        use warren_protocol::field_table::put_table;
        use warren_protocol::{FieldTable, FieldValue};

        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let targets = [
            "topic_pattern",
            "admin_args",
            "cli_field",
            "definitions",
            "amqp_frames",
        ];
        for target in targets {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).expect("corpus directory");
            for entry in std::fs::read_dir(&dir).expect("corpus directory").flatten() {
                if entry.file_name().to_string_lossy().starts_with("seed-") {
                    std::fs::remove_file(entry.path()).expect("old seed");
                }
            }
        }
        let write = |target: &str, name: &str, bytes: &[u8]| {
            std::fs::write(root.join(target).join(format!("seed-{name}")), bytes)
                .expect("seed file");
        };

        let topics: [(&str, &str); 5] = [
            (
                "stocks",
                "stock.*.nyse\nstock.#\n#.nyse\n*.usd.*\n#\0stock.usd.nyse\nstock.eur.nyse\nbond.usd.lse\nstock\nnyse",
            ),
            (
                "logs",
                "logs.*.error\nlogs.#\naudit.#.login\napp.start\0logs.db.error\nlogs\naudit.user.x.login\naudit.login\napp.start",
            ),
            (
                "edges",
                "a..b\na.\n\n*\n#.#\n*.#.*\na*\n#b\0a..b\na.\n\n.\na\na.b.c\n*\n#",
            ),
            ("patterns-as-keys", "a.b.c\na.*.c\na.#\n#\n*.#.*\n*.*\n#.a.#"),
            ("many-hashes", "#.a.#.b.#\n#.#.#.#\n*.*.*.*\0a.b\na.x.b.y\nb.a\na.a.a.a.a.a.a.b"),
        ];
        for (name, text) in topics {
            write("topic_pattern", name, text.as_bytes());
        }

        let s = |v: &str| FieldValue::String(v.to_owned());
        let definitions = r#"{"exchanges":[{"name":"logs","type":"topic","durable":true,"arguments":{"alternate-exchange":"unrouted"}},{"name":"unrouted","type":"fanout"}],"queues":[{"name":"jobs","durable":true,"auto_delete":false,"arguments":{"x-message-ttl":60000,"x-dead-letter-exchange":"dlx","x-retry-backoff":"1s,5s"}},{"name":"audit"}],"bindings":[{"source":"logs","destination":"audit","destination_type":"queue","routing_key":"app.#"},{"source":"logs","destination":"unrouted","destination_type":"exchange","routing_key":"*.error","arguments":{"x-match":"any"}}]}"#;
        let tables: Vec<(&str, Vec<(&str, FieldValue)>)> = vec![
            (
                "dlq-peek",
                vec![
                    ("queue", s("jobs.dlq")),
                    ("limit", FieldValue::Int(10)),
                    ("reason", s("expired")),
                    ("from_queue", s("jobs")),
                ],
            ),
            (
                "dlq-replay",
                vec![
                    ("queue", s("jobs.dlq")),
                    ("to_exchange", s("retry")),
                    ("routing_key", s("jobs")),
                    ("reason", s("delivery_limit")),
                ],
            ),
            (
                "message-delete",
                vec![("queue", s("jobs")), ("id", s("42"))],
            ),
            (
                "binding-list",
                vec![("queue", s("jobs")), ("exchange", s("logs"))],
            ),
            ("definitions-import", vec![("definitions", s(definitions))]),
            (
                "queue-args",
                vec![
                    ("x-queue-type", s("classic")),
                    ("x-message-ttl", FieldValue::Int(60_000)),
                    ("x-expires", FieldValue::Int(3_600_000)),
                    ("x-max-length", FieldValue::Int(1000)),
                    ("x-max-length-bytes", FieldValue::U32(1 << 20)),
                    ("x-overflow", s("reject-publish-dlx")),
                    ("x-dead-letter-exchange", s("dlx")),
                    ("x-dead-letter-routing-key", s("dead")),
                    ("x-delivery-limit", FieldValue::Int(5)),
                    ("x-consumer-timeout", FieldValue::Float(1_800_000.0)),
                    ("x-retry-backoff", s("250ms,1s,5s")),
                    ("x-single-active-consumer", FieldValue::Bool(true)),
                    ("x-max-priority", FieldValue::U8(10)),
                ],
            ),
            (
                "queue-args-list-backoff",
                vec![
                    (
                        "x-retry-backoff",
                        FieldValue::List(vec![FieldValue::Int(100), s("2m"), FieldValue::U16(5)]),
                    ),
                    ("x-delivery-limit", FieldValue::Int(-1)),
                    ("x-overflow", s("drop-head")),
                ],
            ),
            (
                "headers-binding",
                vec![
                    ("x-match", s("any-with-x")),
                    ("format", s("pdf")),
                    ("routing_key", s("a.*.#")),
                ],
            ),
            ("alternate-exchange", vec![("alternate-exchange", s("ae"))]),
        ];
        for (name, entries) in tables {
            let table: FieldTable = entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            if name.starts_with("queue-args") {
                let parsed = crate::broker::queue_args::QueueArgs::parse(&table);
                assert!(parsed.is_ok(), "seed {name}: {parsed:?}");
            }
            let mut buf = BytesMut::new();
            put_table(&mut buf, &table);
            write("admin_args", name, &buf);
        }

        let fields = [
            "x-message-ttl=60000",
            "x-max-priority:u8=10",
            "x-single-active-consumer=true",
            "x-retry-backoff=1s,5s",
            "x-delay=5000",
            "retries:int=3",
            "tags:list=[1,\"a\",null,{\"k\":2.5}]",
            "meta:table={\"a\":{\"b\":[true]}}",
            "at:timestamp=2026-11-30T13:00:00+01:00",
            "at:timestamp=1700000000",
            "price:decimal=-12.34",
            "raw:bytes=AAEC",
            "ok:bool=false",
            "flag:void=",
            "ratio:f32=0.5",
            "n:i16=-1000",
            "a:b:string=v",
            "zip=01234",
        ];
        for (i, text) in fields.iter().enumerate() {
            let parsed = crate::cli::field::parse_header(text)
                .or_else(|_| crate::cli::field::parse_queue_arg(text));
            assert!(parsed.is_ok(), "seed {text}: {parsed:?}");
            write("cli_field", &format!("{i:02}"), text.as_bytes());
        }

        let parsed = crate::broker::admin::parse_document(definitions);
        assert!(parsed.is_ok(), "definitions seed: {parsed:?}");
        write("definitions", "full", definitions.as_bytes());
        write("definitions", "empty", b"{}");
        write(
            "definitions",
            "exported",
            br#"{"warren_version":"0.1.0","exchanges":[],"queues":[{"name":"q","durable":false,"auto_delete":true,"arguments":{}}],"bindings":[]}"#,
        );

        for (name, bytes) in crate::amqp::fuzz::seeds() {
            write("amqp_frames", name, &bytes);
        }
    }
}
