//! `warren publish`: one message, or one per stdin line (pipelined), waiting for every
//! confirm. Exits with an error if any message was returned or nacked. A `--lines` run cut
//! short (connection lost, daemon stopped) says which lines were confirmed without a gap
//! and the line to resume from.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use warren_protocol::FieldValue;

use crate::broker::stream::{X_PRODUCER_NAME, X_PRODUCER_SEQUENCE};
use crate::cli::field::{field_table, parse_header, VALUE_NAME};
use crate::cli::Global;
use crate::client::error::describe_code;
use crate::client::{ClientError, OutgoingMessage, PublishOutcome};

/// Publishes `--lines` keeps in flight before waiting for a confirm.
pub const MAX_CONFIRMS_IN_FLIGHT: usize = 1000;

/// Arguments of `warren publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Exchange to publish to ("" is the default exchange: routes to the queue named
    /// ROUTING_KEY).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Message body; `-` reads it from stdin. Empty when omitted.
    #[arg(conflicts_with = "lines")]
    pub body: Option<String>,
    /// Publish one message per stdin line (without its line ending).
    #[arg(long)]
    pub lines: bool,
    /// Persistent message: durable queues keep it on disk.
    #[arg(long)]
    pub persistent: bool,
    /// A message header, KEY=VALUE or KEY:TYPE=VALUE (repeatable).
    ///
    /// VALUE is a string unless TYPE says otherwise: string, int (or i64), i8, u8, i16,
    /// u16, i32, u32, u64, float (or f64), f32, decimal (`12.34`), timestamp (epoch
    /// seconds or RFC 3339: `at:timestamp=2026-11-30T12:00:00Z`, offsets as `+01:00`), void
    /// (no value: `k:void=`), bool, bytes (base64), list (a JSON array) or table (a JSON
    /// object), e.g. `n:int=5`, `ok:bool=true`, `raw:bytes=AAEC`, `tags:list='["a",1]'`, `meta:table='{"k":1}'`.
    /// Without a type, `x-delay` and `x-deliver-at` are ints.
    #[arg(long = "header", value_name = VALUE_NAME, value_parser = parse_header)]
    pub headers: Vec<(String, FieldValue)>,
    /// Application message id (every message gets it with --lines).
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,
    /// Fail if no queue takes the message.
    #[arg(long)]
    pub mandatory: bool,
    /// MIME type of the body.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Per-message time to live, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub expiration: Option<u64>,
    /// Message priority, 0 to 255: a priority queue (`x-max-priority`) delivers higher
    /// priorities first, counting any above its max as the max; other queues ignore it.
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
    /// Deliver after this many milliseconds (sets the `x-delay` header).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    pub delay: Option<i64>,
    /// Name this publisher for stream deduplication: messages are numbered in order (the
    /// `x-producer-name` and `x-producer-sequence` headers), so resending the same input
    /// after a crash stores only what the stream does not have yet.
    #[arg(long, value_name = "NAME", value_parser = parse_producer_name)]
    pub producer_name: Option<String>,
    /// The sequence number of the first message with --producer-name (the next lines count
    /// up from it).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "producer_name",
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    pub producer_start: i64,
}

/// A producer name the server accepts: non-empty, at most 255 bytes.
fn parse_producer_name(name: &str) -> Result<String, String> {
    let max = crate::broker::stream::MAX_PRODUCER_NAME_BYTES;
    if name.is_empty() {
        return Err("a producer name cannot be empty".into());
    }
    if name.len() > max {
        return Err(format!(
            "a producer name is at most {max} bytes, this one is {}",
            name.len()
        ));
    }
    Ok(name.to_owned())
}

impl PublishArgs {
    /// The message every publish starts from: everything but the body.
    fn template(&self) -> OutgoingMessage {
        let mut msg = OutgoingMessage::new(&*self.exchange, &*self.routing_key, Bytes::new());
        msg.mandatory = self.mandatory;
        msg.properties.persistent = self.persistent;
        let mut headers = field_table(self.headers.clone());
        if let Some(delay) = self.delay {
            headers.insert("x-delay".into(), FieldValue::Int(delay));
        }
        if let Some(name) = &self.producer_name {
            headers.insert(X_PRODUCER_NAME.into(), FieldValue::String(name.clone()));
        }
        msg.properties.headers = headers.into();
        msg.properties.message_id.clone_from(&self.message_id);
        msg.properties.content_type.clone_from(&self.content_type);
        msg.properties.expiration = self.expiration;
        msg.properties.priority = self.priority;
        msg
    }

    /// The sequence number of the `n`th message (from 1), when the publisher is named.
    fn sequence(&self, n: u64) -> Option<i64> {
        self.producer_name.as_ref()?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        Some(self.producer_start.saturating_add(n - 1))
    }

    fn target(&self) -> String {
        format!(
            "exchange '{}' with routing key '{}'",
            self.exchange, self.routing_key
        )
    }
}

/// Publishes and waits for the confirms.
///
/// # Errors
/// Connecting or reading stdin failed, the server refused a publish (its error, with the
/// line number under `--lines`), or some messages were returned or nacked (how many). An
/// interrupted `--lines` run also says which lines were confirmed (see `Lines::interrupted`).
pub async fn run(args: PublishArgs, global: &Global) -> anyhow::Result<()> {
    let template = args.template();
    let target = args.target();
    if args.lines {
        return publish_lines(template, &target, global, &args).await;
    }
    let body = match args.body.as_deref() {
        None => Bytes::new(),
        Some("-") => {
            let body = tokio::task::spawn_blocking(|| {
                let mut body = Vec::new();
                std::io::stdin().lock().read_to_end(&mut body).map(|_| body)
            })
            .await
            .context("reading the body from stdin")?
            .context("reading the body from stdin")?;
            Bytes::from(body)
        }
        Some(text) => Bytes::copy_from_slice(text.as_bytes()),
    };
    let client = global.server.connect().await?;
    report_blocking(&client);
    let mut msg = template;
    msg.body = body;
    number(&mut msg, args.sequence(1));
    let outcome = client
        .publish_and_confirm(msg)
        .await
        .with_context(|| format!("publishing to {target}"))?;
    let mut lines = Lines::default();
    lines.verdict(1, outcome);
    client.close().await?;
    lines.finish(&target)
}

/// Says on stderr when the server blocks this connection (a resource alarm) and when it lets
/// it go on, so a publish that waits does not look hung.
fn report_blocking(client: &crate::client::Client) {
    let mut blocked = client.blocked();
    tokio::spawn(async move {
        while blocked.changed().await.is_ok() {
            let note = match blocked.borrow_and_update().as_deref() {
                Some(reason) => {
                    format!("warren: the server is holding publishes: {reason}; waiting")
                }
                None => "warren: the server resumed reading publishes".to_owned(),
            };
            eprintln!("{note}");
        }
    });
}

/// `publish --lines`: one message per stdin line, up to [`MAX_CONFIRMS_IN_FLIGHT`]
/// unconfirmed. On the first failure (connection lost, a publish refused with an error,
/// stdin unreadable) it stops reading, waits for the answers still owed, and reports the
/// confirmed prefix.
async fn publish_lines(
    template: OutgoingMessage,
    target: &str,
    global: &Global,
    args: &PublishArgs,
) -> anyhow::Result<()> {
    let client = global.server.connect().await?;
    report_blocking(&client);
    let mut stdin = spawn_line_reader();
    let mut in_flight = FuturesUnordered::new();
    let mut lines = Lines {
        producer_start: args.producer_name.as_ref().map(|_| args.producer_start),
        ..Lines::default()
    };
    let mut line_no = 0u64;
    loop {
        // Answers are taken as they come, not only when the window is full, so a lost
        // connection is reported while stdin is idle too (`tail -f log | warren publish`),
        // as long as a line is waiting for its confirm.
        tokio::select! {
            Some((no, result)) = in_flight.next(), if !in_flight.is_empty() => {
                if !lines.record(no, result) {
                    break;
                }
            }
            line = stdin.recv(), if in_flight.len() < MAX_CONFIRMS_IN_FLIGHT => {
                let Some(line) = line else { break };
                line_no += 1;
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        lines.fail(line_no, anyhow::Error::new(e), Stage::Reading);
                        break;
                    }
                };
                let mut msg = template.clone();
                msg.body = Bytes::from(line);
                number(&mut msg, args.sequence(line_no));
                match client.publish(msg).await {
                    Ok(pending) => in_flight.push(pending.map(move |result| (line_no, result))),
                    Err(e) => {
                        lines.fail(line_no, e.into(), Stage::Publishing);
                        break;
                    }
                }
            }
            // Unreachable (the window being full implies a pending answer), but a select
            // with every branch disabled would panic.
            else => break,
        }
    }
    // Every line sent gets an answer or an error (the client resolves all pending confirms
    // when the connection ends), so this ends, and afterwards the prefix is exact.
    while let Some((no, result)) = in_flight.next().await {
        lines.record(no, result);
    }
    if let Some(error) = lines.interrupted(target) {
        return Err(error);
    }
    client.close().await?;
    lines.finish(target)
}

/// Gives a named publisher's message its sequence number (`x-producer-sequence`).
fn number(msg: &mut OutgoingMessage, sequence: Option<i64>) {
    if let Some(seq) = sequence {
        msg.properties
            .headers
            .insert(X_PRODUCER_SEQUENCE, FieldValue::Int(seq));
    }
}

/// Reads stdin line by line on a plain thread (tokio's stdin is not enabled, and a thread
/// blocked on a terminal must not hold up runtime shutdown when we exit early). Lines come
/// without their line ending; the channel's bound keeps the reader near the publisher.
fn spawn_line_reader() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(MAX_CONFIRMS_IN_FLIGHT);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let item = match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    strip_line_ending(&mut line);
                    Ok(line)
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

fn strip_line_ending(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// What stopped a `--lines` run before the server answered every line.
#[derive(Debug)]
enum Stage {
    /// Reading the line from stdin failed.
    Reading,
    /// Sending the line failed, or it got an error instead of a verdict.
    Publishing,
}

/// The first line that got no verdict, and why.
#[derive(Debug)]
struct Failure {
    line: u64,
    stage: Stage,
    error: anyhow::Error,
}

/// What a publish run knows about its messages, by line (a single publish is line 1): the
/// server's verdicts, how far they reach without a gap, and the first line that got none.
#[derive(Debug, Default)]
struct Lines {
    /// Messages with a verdict: confirmed, returned, nacked or duplicate.
    total: u64,
    returned: u64,
    nacked: u64,
    /// Messages the server dropped as duplicates: not refusals (the earlier copy is stored),
    /// but said on stderr so a retry that stored nothing is visible.
    duplicates: u64,
    /// The lowest-numbered refused line and the server's reason.
    first_refusal: Option<(u64, String)>,
    /// Lines `1..=prefix` all have a verdict: the resume point is the line after.
    prefix: u64,
    /// Lines past a gap that have a verdict (`true`: refused). Confirms may arrive out of
    /// order, so a line counts towards the prefix only once every earlier line has one;
    /// the confirm window bounds this map.
    ahead: BTreeMap<u64, bool>,
    /// Refused lines within the prefix.
    refused_in_prefix: u64,
    /// `--producer-start` when the publisher is named: line `n` is numbered `start + n - 1`,
    /// so resuming partway must start the numbering there too.
    producer_start: Option<i64>,
    failure: Option<Failure>,
}

impl Lines {
    /// Records line `line`'s answer; returns `false` if it is an error, not a verdict.
    fn record(&mut self, line: u64, result: Result<PublishOutcome, ClientError>) -> bool {
        match result {
            Ok(outcome) => {
                self.verdict(line, outcome);
                true
            }
            Err(e) => {
                self.fail(line, e.into(), Stage::Publishing);
                false
            }
        }
    }

    /// Records the server's verdict on line `line`.
    fn verdict(&mut self, line: u64, outcome: PublishOutcome) {
        self.total += 1;
        let refusal = match outcome {
            PublishOutcome::Confirmed => None,
            PublishOutcome::Duplicate => {
                self.duplicates += 1;
                None
            }
            PublishOutcome::Returned {
                reply_code,
                reply_text,
            } => {
                self.returned += 1;
                Some(describe_code(reply_code, &reply_text))
            }
            PublishOutcome::Nacked { code, reason } => {
                self.nacked += 1;
                Some(describe_code(code, &reason))
            }
        };
        let refused = refusal.is_some();
        if let Some(reason) = refusal {
            if self.first_refusal.as_ref().is_none_or(|(l, _)| line < *l) {
                self.first_refusal = Some((line, reason));
            }
        }
        self.ahead.insert(line, refused);
        while let Some(refused) = self.ahead.remove(&(self.prefix + 1)) {
            self.prefix += 1;
            self.refused_in_prefix += u64::from(refused);
        }
    }

    /// Records that line `line` got no verdict; the lowest such line is the one reported.
    fn fail(&mut self, line: u64, error: anyhow::Error, stage: Stage) {
        if self.failure.as_ref().is_none_or(|f| line < f.line) {
            self.failure = Some(Failure { line, stage, error });
        }
    }

    /// `1 duplicate not stored` (or `N duplicates …`) when the server dropped any message
    /// as a duplicate of one it already had (docs/deduplication.md).
    fn duplicates_note(&self) -> Option<String> {
        match self.duplicates {
            0 => None,
            1 => Some("1 duplicate not stored (the server already had it)".into()),
            n => Some(format!(
                "{n} duplicates not stored (the server already had them)"
            )),
        }
    }

    /// For a run cut short, one error line: what failed on which line, what the server
    /// answered before it, and the line to resume from, e.g. `publishing line 1234 to
    /// exchange 'logs' with routing key 'k': connection closed: NORMAL (200): server
    /// shutting down; lines 1 to 1233 were confirmed; resume from line 1234`. Numbers are
    /// plain digits so they can go straight into `tail -n +1234`. Call once every line sent
    /// has its answer.
    fn interrupted(&mut self, target: &str) -> Option<anyhow::Error> {
        let Failure { line, stage, error } = self.failure.take()?;
        let doing = match stage {
            Stage::Reading => format!("reading line {line} of stdin"),
            Stage::Publishing => format!("publishing line {line} to {target}"),
        };
        let n = self.prefix;
        let span = match n {
            1 => "line 1 was".to_owned(),
            n => format!("lines 1 to {n} were"),
        };
        let mut answered = match (n, self.refused_in_prefix, &self.first_refusal) {
            (0, _, _) => "no line was confirmed".to_owned(),
            (_, 0, _) | (_, _, None) => format!("{span} confirmed"),
            (_, refused, Some((first, reason))) => format!(
                "{span} answered, {} refused (the first, line {first}: {reason})",
                refused
            ),
        };
        let later = self.ahead.len();
        if later > 0 {
            answered.push_str(&format!(
                ", and {} (resuming sends {} again)",
                if later == 1 {
                    "1 later line".to_owned()
                } else {
                    format!("{later} later lines")
                },
                if later == 1 { "it" } else { "them" }
            ));
        }
        let resume = n + 1;
        // Resumed from line `resume` but numbered from the start again, every line up to
        // the last one stored would be dropped as a duplicate.
        let numbering = match self.producer_start {
            None => String::new(),
            Some(start) => format!(
                " with --producer-start {} (or send the whole input again: the lines the \
                 stream has are skipped)",
                start.saturating_add(i64::try_from(n).unwrap_or(i64::MAX))
            ),
        };
        Some(anyhow::anyhow!(
            "{doing}: {error:#}; {answered}; resume from line {resume}{numbering}"
        ))
    }

    /// `Ok` if every message was confirmed; otherwise one error line for `target` saying
    /// what happened: for a single message only its fate and the server's code, for several
    /// how many were refused and the first refused line.
    fn finish(self, target: &str) -> anyhow::Result<()> {
        if let Some(note) = self.duplicates_note() {
            eprintln!("publishing to {target}: {note}");
        }
        let refused = self.returned + self.nacked;
        let Some((line, first)) = self.first_refusal.filter(|_| refused > 0) else {
            return Ok(());
        };
        if self.total == 1 {
            let fate = if self.returned == 1 {
                "returned"
            } else {
                "nacked"
            };
            anyhow::bail!("publishing to {target}: the message was {fate}: {first}");
        }
        let mut parts = Vec::new();
        if self.returned > 0 {
            parts.push(format!("{} returned as unroutable", self.returned));
        }
        if self.nacked > 0 {
            parts.push(format!("{} nacked", self.nacked));
        }
        anyhow::bail!(
            "publishing to {target}: {refused} of {} messages not accepted ({}); first \
             refusal (line {line}): {first}",
            self.total,
            parts.join(", "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> PublishArgs {
        let mut argv = vec!["warren", "publish"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Publish(args) => args,
            other => panic!("expected publish, got {other:?}"),
        }
    }

    #[test]
    fn flags_shape_the_message() {
        let args = parse(&[
            "logs",
            "a.b",
            "hi",
            "--persistent",
            "--mandatory",
            "--header",
            "n:int=1",
            "--header",
            "s=1",
            "--message-id",
            "m",
            "--content-type",
            "text/plain",
            "--expiration",
            "500",
            "--delay",
            "250",
        ]);
        assert_eq!(args.body.as_deref(), Some("hi"));
        let msg = args.template();
        assert!(msg.mandatory && msg.properties.persistent);
        let h = &msg.properties.headers;
        assert_eq!(h.get("n"), Some(FieldValue::Int(1)));
        assert_eq!(h.get("s"), Some(FieldValue::String("1".into())));
        assert_eq!(h.get("x-delay"), Some(FieldValue::Int(250)));
        assert_eq!(msg.properties.message_id.as_deref(), Some("m"));
        assert_eq!(msg.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(msg.properties.expiration, Some(500));
    }

    #[test]
    fn lines_and_a_body_conflict() {
        let argv = ["warren", "publish", "ex", "rk", "body", "--lines"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn line_endings_are_stripped() {
        let mut l = b"abc\r\n".to_vec();
        strip_line_ending(&mut l);
        assert_eq!(l, b"abc");
        let mut l = b"last".to_vec();
        strip_line_ending(&mut l);
        assert_eq!(l, b"last");
    }

    fn nacked(reason: &str) -> PublishOutcome {
        PublishOutcome::Nacked {
            code: 506,
            reason: reason.into(),
        }
    }

    fn closed() -> ClientError {
        ClientError::Closed {
            code: 200,
            reason: "server shutting down".into(),
        }
    }

    #[test]
    fn duplicates_are_not_refusals_but_are_counted() {
        let mut lines = Lines::default();
        lines.verdict(1, PublishOutcome::Duplicate);
        lines.verdict(2, PublishOutcome::Confirmed);
        assert_eq!(
            lines.duplicates_note().as_deref(),
            Some("1 duplicate not stored (the server already had it)")
        );
        lines
            .finish("exchange 'ex'")
            .expect("a duplicate is not a failure");
    }

    #[test]
    fn refusals_are_counted_and_reported_with_the_first_refused_line() {
        let mut lines = Lines::default();
        // Out of order: the lowest refused line is the one named, not the first to arrive.
        lines.verdict(3, nacked("disk full"));
        lines.verdict(1, PublishOutcome::Confirmed);
        lines.verdict(
            2,
            PublishOutcome::Returned {
                reply_code: 312,
                reply_text: "no route for 'x'".into(),
            },
        );
        let err = lines.finish("exchange 'ex'").unwrap_err().to_string();
        assert_eq!(
            err,
            "publishing to exchange 'ex': 2 of 3 messages not accepted (1 returned as \
             unroutable, 1 nacked); first refusal (line 2): NO_ROUTE (312): no route for 'x'"
        );
        let mut ok = Lines::default();
        ok.verdict(1, PublishOutcome::Confirmed);
        assert!(ok.finish("exchange 'ex'").is_ok());
    }

    #[test]
    fn one_refused_message_reads_as_one_line_without_repeats() {
        let mut lines = Lines::default();
        lines.verdict(
            1,
            PublishOutcome::Returned {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
            },
        );
        assert_eq!(
            lines
                .finish("exchange 'amq.direct'")
                .unwrap_err()
                .to_string(),
            "publishing to exchange 'amq.direct': the message was returned: NO_ROUTE (312)"
        );
    }

    #[test]
    fn an_interruption_reports_the_unbroken_prefix_of_answered_lines() {
        let mut lines = Lines::default();
        for line in [2, 1, 3, 6, 7] {
            assert!(lines.record(line, Ok(PublishOutcome::Confirmed)));
        }
        assert!(!lines.record(5, Err(closed())));
        assert!(!lines.record(4, Err(closed())));
        let err = lines.interrupted("exchange 'ex'").expect("interrupted");
        assert_eq!(
            err.to_string(),
            "publishing line 4 to exchange 'ex': connection closed: NORMAL (200): server \
             shutting down; lines 1 to 3 were confirmed, and 2 later lines (resuming sends \
             them again); resume from line 4"
        );
    }

    #[test]
    fn an_interruption_names_refusals_within_the_prefix() {
        let mut lines = Lines::default();
        lines.verdict(1, PublishOutcome::Confirmed);
        lines.verdict(3, nacked("queue 'q' is full"));
        lines.verdict(2, nacked("queue 'q' is full"));
        lines.fail(
            4,
            anyhow::anyhow!("Input/output error (os error 5)"),
            Stage::Reading,
        );
        assert_eq!(
            lines.interrupted("x").expect("interrupted").to_string(),
            "reading line 4 of stdin: Input/output error (os error 5); lines 1 to 3 were \
             answered, 2 refused (the first, line 2: RESOURCE_ERROR (506): queue 'q' is \
             full); resume from line 4"
        );
    }

    #[test]
    fn an_interruption_before_any_answer_or_after_one() {
        let mut lines = Lines::default();
        lines.record(1, Err(closed()));
        let text = lines.interrupted("x").expect("interrupted").to_string();
        assert!(
            text.ends_with("; no line was confirmed; resume from line 1"),
            "{text}"
        );
        let mut lines = Lines::default();
        lines.verdict(1, PublishOutcome::Confirmed);
        lines.record(2, Err(closed()));
        let text = lines.interrupted("x").expect("interrupted").to_string();
        assert!(
            text.ends_with("; line 1 was confirmed; resume from line 2"),
            "{text}"
        );
        let mut whole = Lines::default();
        whole.verdict(1, PublishOutcome::Confirmed);
        assert!(whole.interrupted("x").is_none());
    }

    #[test]
    fn a_named_publisher_is_told_where_its_numbering_resumes() {
        let mut lines = Lines {
            producer_start: Some(10),
            ..Lines::default()
        };
        lines.verdict(1, PublishOutcome::Confirmed);
        lines.verdict(2, PublishOutcome::Duplicate);
        lines.record(3, Err(closed()));
        let text = lines.interrupted("x").expect("interrupted").to_string();
        assert!(
            text.ends_with(
                "; lines 1 to 2 were confirmed; resume from line 3 with --producer-start 12 \
                 (or send the whole input again: the lines the stream has are skipped)"
            ),
            "{text}"
        );
    }
}
