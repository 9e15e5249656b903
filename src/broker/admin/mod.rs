//! Administrative commands (`Admin` frames). Each answers one JSON document; the field
//! names are part of the protocol (PROTOCOL.md §15) and of `warren ... --json`.
//!
//! The results are the plain structs of [`crate::admin_types`], which the client and the
//! CLI decode; JSON is only their encoding. This file dispatches a command to the file
//! that answers it and holds the argument helpers they share:
//! - `listing.rs`: `status` and the `*.list`/`queue.inspect` listings;
//! - `dlq.rs`: dead-letter operations (`dlq.peek`, `dlq.replay`, `dlq.purge`), and
//!   `queue.peek` and `message.delete`, which use the same selection of ready messages;
//! - `definitions.rs`: `definitions.export` and `definitions.import`.

mod definitions;
mod dlq;
mod listing;

pub use dlq::DEFAULT_PEEK_LIMIT;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use warren_protocol::{FieldTable, FieldValue};

use super::queue::Queue;
use super::session::Session;
use super::Broker;
use crate::error::BrokerError;
use dlq::Filter;
use listing::queue_info;

fn opt_str<'a>(args: &'a FieldTable, name: &str) -> Result<Option<&'a str>, BrokerError> {
    match args.get(name) {
        None => Ok(None),
        Some(FieldValue::String(s)) => Ok(Some(s)),
        Some(other) => Err(BrokerError::invalid(
            format!("admin argument {name}"),
            format!("expected a string, got {other:?}"),
        )),
    }
}

fn req_str<'a>(args: &'a FieldTable, name: &str) -> Result<&'a str, BrokerError> {
    opt_str(args, name)?.ok_or_else(|| {
        BrokerError::invalid(format!("admin argument {name}"), "is required".to_owned())
    })
}

fn opt_u64(args: &FieldTable, name: &str) -> Result<Option<u64>, BrokerError> {
    match args.get(name) {
        None => Ok(None),
        Some(FieldValue::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(other) => Err(BrokerError::invalid(
            format!("admin argument {name}"),
            format!("expected a non-negative integer, got {other:?}"),
        )),
    }
}

/// An admin result as the JSON body of `AdminOk`. It goes through a `Value`, whose maps
/// are sorted, so every object's keys go out in sorted order whatever the field order of
/// its struct: the bytes are what they were when the results were built with `json!`.
fn encode<T: Serialize>(result: &T) -> Result<Bytes, BrokerError> {
    serde_json::to_value(result)
        .and_then(|value| serde_json::to_vec(&value))
        .map(Bytes::from)
        .map_err(|e| BrokerError::CommandInvalid(format!("encoding the result: {e}")))
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use definitions::parse_document;

/// Runs every parser of client-given admin arguments over `args`, as the commands of
/// [`Broker::admin`] would, with no broker behind them: for the fuzz checks
/// (`crate::fuzzing`). Returns each parser's refusal, if any, as text.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_args(args: &FieldTable) -> Vec<String> {
    let mut refusals = Vec::new();
    let mut note = |r: Result<(), BrokerError>| {
        if let Err(e) = r {
            refusals.push(e.to_string());
        }
    };
    for name in [
        "queue",
        "exchange",
        "to_exchange",
        "routing_key",
        "id",
        "definitions",
    ] {
        note(opt_str(args, name).map(drop));
        note(req_str(args, name).map(drop));
    }
    note(opt_u64(args, "limit").map(drop));
    note(Filter::parse(args).map(drop));
    if let Ok(Some(text)) = opt_str(args, "definitions") {
        note(parse_document(text));
    }
    refusals
}

impl Broker {
    /// Runs an admin command and returns its result (a type of [`crate::admin_types`]) as
    /// JSON.
    ///
    /// # Errors
    /// An unknown command, a bad or missing argument, a missing queue, a conflicting import,
    /// or a store failure.
    pub async fn admin(
        &self,
        session: &Session,
        command: &str,
        args: &FieldTable,
    ) -> Result<Bytes, BrokerError> {
        match command {
            "status" => encode(&self.status()),
            "queue.list" => encode(
                &self
                    .sorted_queues()
                    .iter()
                    .map(|q| queue_info(q))
                    .collect::<Vec<_>>(),
            ),
            "queue.inspect" => {
                let name = req_str(args, "queue")?;
                let q = self
                    .queue(name)
                    .ok_or_else(|| BrokerError::not_found("queue", name))?;
                encode(&queue_info(&q))
            }
            "exchange.list" => encode(&self.exchanges()),
            "binding.list" => {
                encode(&self.bindings(opt_str(args, "queue")?, opt_str(args, "exchange")?))
            }
            "connection.list" => encode(&self.connections()),
            "consumer.list" => encode(&self.consumers()),
            // One engine: a queue peek is a dead-letter peek without the dead-letter filters.
            "dlq.peek" | "queue.peek" => encode(
                &self
                    .dlq_peek(req_str(args, "queue")?, Filter::parse(args)?)
                    .await?,
            ),
            "dlq.replay" => {
                let target = match (opt_str(args, "to_exchange")?, opt_str(args, "routing_key")?) {
                    (Some(e), k) => Some((e.to_owned(), k.unwrap_or("").to_owned())),
                    (None, Some(_)) => {
                        return Err(BrokerError::invalid(
                            "admin argument routing_key",
                            "needs to_exchange".to_owned(),
                        ))
                    }
                    (None, None) => None,
                };
                encode(
                    &self
                        .dlq_replay(req_str(args, "queue")?, Filter::parse(args)?, target)
                        .await?,
                )
            }
            "dlq.purge" => encode(
                &self
                    .dlq_purge(req_str(args, "queue")?, Filter::parse(args)?)
                    .await?,
            ),
            "message.delete" => encode(
                &self
                    .message_delete(req_str(args, "queue")?, req_str(args, "id")?)
                    .await?,
            ),
            "definitions.export" => encode(&self.definitions_export()),
            "definitions.import" => {
                let text = req_str(args, "definitions")?;
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    BrokerError::invalid("definitions", format!("not valid JSON: {e}"))
                })?;
                encode(&self.definitions_import(session, &doc).await?)
            }
            other => Err(BrokerError::CommandInvalid(format!(
                "unknown admin command '{other}'"
            ))),
        }
    }

    fn sorted_queues(&self) -> Vec<Arc<Queue>> {
        let mut qs: Vec<Arc<Queue>> = self.inner.queues.read().values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        qs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_types::{
        BindingInfo, ConnectionInfo, ConsumerInfo, DeadLetterInfo, Definitions, DeleteResult,
        ExchangeInfo, ImportSummary, PurgeResult, QueueInfo, ReplayResult, Status,
    };
    use crate::broker::BrokerConfig;
    use serde::de::DeserializeOwned;
    use warren_protocol::{
        ExchangeDeclare, ExchangeKind, Properties, Publish, QueueBind, QueueDeclare,
    };

    fn args<const N: usize>(pairs: [(&str, FieldValue); N]) -> FieldTable {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::String(s.to_owned())
    }

    /// Runs `command` on the server code path and decodes its reply as `T`; checks that
    /// encoding the typed value again gives the very bytes the server sent (no field lost,
    /// keys sorted).
    async fn typed<T: DeserializeOwned + Serialize>(
        b: &Broker,
        session: &Session,
        command: &str,
        arguments: FieldTable,
    ) -> T {
        let body = b
            .admin(session, command, &arguments)
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let value: T = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{command} does not decode: {e}"));
        assert_eq!(
            encode(&value).expect("encodes"),
            body,
            "{command}: the typed reply re-encodes differently"
        );
        value
    }

    #[tokio::test]
    async fn every_reply_decodes_into_its_type_and_re_encodes_byte_for_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = Broker::open(BrokerConfig {
            data_dir: dir.path().to_owned(),
            queue_window_bytes: crate::broker::DEFAULT_QUEUE_WINDOW_BYTES,
            consumer_timeout: None,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            disk_free_limit: 0,
        })
        .await
        .expect("opening a broker");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let s = b.new_session("127.0.0.1:1".into(), tx);
        b.declare_exchange(ExchangeDeclare {
            name: "logs".into(),
            kind: ExchangeKind::Topic,
            durable: true,
            passive: false,
            arguments: FieldTable::new(),
        })
        .await
        .expect("declare exchange");
        let mut queue_args = FieldTable::new();
        queue_args.insert("x-max-length".into(), FieldValue::Int(10));
        b.declare_queue(
            &s,
            QueueDeclare {
                name: "jobs".into(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                passive: false,
                arguments: queue_args,
            },
        )
        .await
        .expect("declare queue");
        b.bind(
            &s,
            QueueBind {
                queue: "jobs".into(),
                exchange: "logs".into(),
                routing_key: "#".into(),
                arguments: FieldTable::new(),
            },
        )
        .await
        .expect("bind");
        for (i, body) in [&b"text"[..], &[0xff, 0x00]].into_iter().enumerate() {
            let properties = Properties {
                message_id: Some(format!("m-{i}")),
                ..Properties::default()
            };
            let publish = Publish {
                exchange: "logs".into(),
                routing_key: "a.b".into(),
                mandatory: false,
                properties,
                body: Bytes::copy_from_slice(body),
            };
            b.publish(&s, 1, publish).await.expect("publish");
        }
        // The messages reach the queue after their commit.
        let peek = args([("queue", text("jobs"))]);
        let mut peeked: Vec<DeadLetterInfo> = Vec::new();
        for _ in 0..200 {
            peeked = typed(&b, &s, "queue.peek", peek.clone()).await;
            if peeked.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(peeked.len(), 2);
        assert_eq!(peeked[0].body, "text");
        assert_eq!(peeked[1].body_encoding.as_deref(), Some("base64"));
        assert_eq!(peeked[1].reason, None);

        let status: Status = typed(&b, &s, "status", FieldTable::new()).await;
        assert_eq!(status.queues, 1);
        assert_eq!(status.totals.published, 2);
        assert_eq!(status.totals.dead_lettered.len(), 4);
        let queues: Vec<QueueInfo> = typed(&b, &s, "queue.list", FieldTable::new()).await;
        assert_eq!(queues.len(), 1);
        assert_eq!(queues[0].max_length, Some(10));
        let queue: QueueInfo = typed(&b, &s, "queue.inspect", peek.clone()).await;
        assert_eq!(queue.messages_ready, 2);
        let exchanges: Vec<ExchangeInfo> = typed(&b, &s, "exchange.list", FieldTable::new()).await;
        assert_eq!(exchanges[0].name, "");
        assert!(exchanges
            .iter()
            .any(|e| e.name == "logs" && e.kind == "topic"));
        let bindings: Vec<BindingInfo> = typed(&b, &s, "binding.list", peek.clone()).await;
        assert_eq!(bindings.len(), 1);
        let connections: Vec<ConnectionInfo> =
            typed(&b, &s, "connection.list", FieldTable::new()).await;
        assert_eq!(connections[0].peer, "127.0.0.1:1");
        let consumers: Vec<ConsumerInfo> = typed(&b, &s, "consumer.list", FieldTable::new()).await;
        assert!(consumers.is_empty());
        let dead: Vec<DeadLetterInfo> = typed(&b, &s, "dlq.peek", peek.clone()).await;
        assert_eq!(dead, peeked);
        let definitions: Definitions = typed(&b, &s, "definitions.export", FieldTable::new()).await;
        assert_eq!(definitions.queues.len(), 1);
        let document = serde_json::to_string(&definitions).expect("encodes");
        let imported: ImportSummary = typed(
            &b,
            &s,
            "definitions.import",
            args([("definitions", text(&document))]),
        )
        .await;
        assert_eq!(imported.queues_created, 0);
        let replayed: ReplayResult = typed(
            &b,
            &s,
            "dlq.replay",
            args([("queue", text("jobs")), ("limit", FieldValue::Int(0))]),
        )
        .await;
        assert_eq!(
            replayed,
            ReplayResult {
                moved: 0,
                unroutable: 0
            }
        );
        let deleted: DeleteResult = typed(
            &b,
            &s,
            "message.delete",
            args([("queue", text("jobs")), ("id", text("m-0"))]),
        )
        .await;
        assert_eq!(deleted.deleted, 1);
        let purged: PurgeResult = typed(&b, &s, "dlq.purge", peek).await;
        assert_eq!(purged.purged, 1);
        b.shutdown().await;
    }
}
