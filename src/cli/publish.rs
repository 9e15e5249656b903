//! `warren publish`: one message, or one per stdin line (pipelined), waiting for every
//! confirm. Exits with an error if any message was returned or nacked.

use std::io::{BufRead, Read};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use warren_protocol::FieldValue;

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
    /// VALUE is a string unless TYPE says otherwise: string, int, float, bool, bytes
    /// (base64), list (a JSON array) or table (a JSON object), e.g. `n:int=5`,
    /// `ok:bool=true`, `raw:bytes=AAEC`, `tags:list='["a",1]'`, `meta:table='{"k":1}'`.
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
    /// Deliver after this many milliseconds (sets the `x-delay` header).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    pub delay: Option<i64>,
}

impl PublishArgs {
    /// The message every publish starts from: everything but the body.
    fn template(&self) -> OutgoingMessage {
        let mut msg = OutgoingMessage::new(&*self.exchange, &*self.routing_key, Bytes::new());
        msg.mandatory = self.mandatory;
        msg.properties.persistent = self.persistent;
        msg.properties.headers = field_table(self.headers.clone());
        msg.properties.message_id.clone_from(&self.message_id);
        msg.properties.content_type.clone_from(&self.content_type);
        msg.properties.expiration = self.expiration;
        if let Some(delay) = self.delay {
            msg.properties
                .headers
                .insert("x-delay".into(), FieldValue::Int(delay));
        }
        msg
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
/// line number under `--lines`), or some messages were returned or nacked (how many).
pub async fn run(args: PublishArgs, global: &Global) -> anyhow::Result<()> {
    let template = args.template();
    let target = args.target();
    let mut tally = Tally::default();
    if args.lines {
        let client = global.server.connect().await?;
        let mut lines = spawn_line_reader();
        let mut in_flight = FuturesUnordered::new();
        let mut line_no = 0u64;
        while let Some(line) = lines.recv().await {
            let line = line.context("reading stdin")?;
            line_no += 1;
            while in_flight.len() >= MAX_CONFIRMS_IN_FLIGHT {
                if let Some((no, result)) = in_flight.next().await {
                    tally
                        .record(result)
                        .with_context(|| publishing_line(no, &target))?;
                }
            }
            let mut msg = template.clone();
            msg.body = Bytes::from(line);
            let pending = client
                .publish(msg)
                .await
                .with_context(|| publishing_line(line_no, &target))?;
            in_flight.push(pending.map(move |result| (line_no, result)));
        }
        while let Some((no, result)) = in_flight.next().await {
            tally
                .record(result)
                .with_context(|| publishing_line(no, &target))?;
        }
        client.close().await?;
    } else {
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
        let mut msg = template;
        msg.body = body;
        let outcome = client.publish_and_confirm(msg).await;
        tally
            .record(outcome)
            .with_context(|| format!("publishing to {target}"))?;
        client.close().await?;
    }
    tally.finish(&target)
}

fn publishing_line(line_no: u64, target: &str) -> String {
    format!("publishing line {line_no} to {target}")
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

/// Counts outcomes and keeps the first refusal's reason.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    returned: u64,
    nacked: u64,
    first_refusal: Option<String>,
}

impl Tally {
    /// Counts one outcome; a server error (not a verdict) is returned as is.
    fn record(&mut self, result: Result<PublishOutcome, ClientError>) -> Result<(), ClientError> {
        let outcome = result?;
        self.total += 1;
        let refusal = match outcome {
            PublishOutcome::Confirmed => return Ok(()),
            PublishOutcome::Returned {
                reply_code,
                reply_text,
            } => {
                self.returned += 1;
                describe_code(reply_code, &reply_text)
            }
            PublishOutcome::Nacked { code, reason } => {
                self.nacked += 1;
                describe_code(code, &reason)
            }
        };
        self.first_refusal.get_or_insert(refusal);
        Ok(())
    }

    /// `Ok` if every message was confirmed; otherwise one error line for `target` saying
    /// what happened: for a single message only its fate and the server's code, for several
    /// how many were refused and the first reason.
    fn finish(self, target: &str) -> anyhow::Result<()> {
        let refused = self.returned + self.nacked;
        if refused == 0 {
            return Ok(());
        }
        let first = self.first_refusal.unwrap_or_default();
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
             refusal: {first}",
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
        assert_eq!(h.get("n"), Some(&FieldValue::Int(1)));
        assert_eq!(h.get("s"), Some(&FieldValue::String("1".into())));
        assert_eq!(h.get("x-delay"), Some(&FieldValue::Int(250)));
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

    #[test]
    fn refusals_are_counted_and_reported() {
        let mut tally = Tally::default();
        tally.record(Ok(PublishOutcome::Confirmed)).unwrap();
        tally
            .record(Ok(PublishOutcome::Returned {
                reply_code: 312,
                reply_text: "no route for 'x'".into(),
            }))
            .unwrap();
        tally
            .record(Ok(PublishOutcome::Nacked {
                code: 506,
                reason: "disk full".into(),
            }))
            .unwrap();
        let err = tally.finish("exchange 'ex'").unwrap_err().to_string();
        assert_eq!(
            err,
            "publishing to exchange 'ex': 2 of 3 messages not accepted (1 returned as \
             unroutable, 1 nacked); first refusal: NO_ROUTE (312): no route for 'x'"
        );
        let mut ok = Tally::default();
        ok.record(Ok(PublishOutcome::Confirmed)).unwrap();
        assert!(ok.finish("exchange 'ex'").is_ok());
    }

    #[test]
    fn one_refused_message_reads_as_one_line_without_repeats() {
        let mut tally = Tally::default();
        tally
            .record(Ok(PublishOutcome::Returned {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
            }))
            .unwrap();
        assert_eq!(
            tally
                .finish("exchange 'amq.direct'")
                .unwrap_err()
                .to_string(),
            "publishing to exchange 'amq.direct': the message was returned: NO_ROUTE (312)"
        );
    }
}
