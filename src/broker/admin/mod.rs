//! Administrative commands (`Admin` frames). Each answers one JSON document; the field
//! names are part of the protocol (PROTOCOL.md §15) and of `warren ... --json`.
//!
//! This file dispatches a command to the file that answers it and holds the argument helpers
//! they share:
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
use serde_json::Value;
use warren_protocol::{FieldTable, FieldValue};

use super::queue::Queue;
use super::session::Session;
use super::Broker;
use crate::error::BrokerError;
use dlq::Filter;
use listing::queue_json;

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

impl Broker {
    /// Runs an admin command and returns its JSON result.
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
        let value = match command {
            "status" => self.status_json(),
            "queue.list" => {
                Value::Array(self.sorted_queues().iter().map(|q| queue_json(q)).collect())
            }
            "queue.inspect" => {
                let name = req_str(args, "queue")?;
                let q = self
                    .queue(name)
                    .ok_or_else(|| BrokerError::not_found("queue", name))?;
                queue_json(&q)
            }
            "exchange.list" => self.exchanges_json(),
            "binding.list" => {
                self.bindings_json(opt_str(args, "queue")?, opt_str(args, "exchange")?)
            }
            "connection.list" => self.connections_json(),
            "consumer.list" => self.consumers_json(),
            // One engine: a queue peek is a dead-letter peek without the dead-letter filters.
            "dlq.peek" | "queue.peek" => {
                self.dlq_peek(req_str(args, "queue")?, Filter::parse(args)?)
                    .await?
            }
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
                self.dlq_replay(req_str(args, "queue")?, Filter::parse(args)?, target)
                    .await?
            }
            "dlq.purge" => {
                self.dlq_purge(req_str(args, "queue")?, Filter::parse(args)?)
                    .await?
            }
            "message.delete" => {
                self.message_delete(req_str(args, "queue")?, req_str(args, "id")?)
                    .await?
            }
            "definitions.export" => self.definitions_export(),
            "definitions.import" => {
                let text = req_str(args, "definitions")?;
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    BrokerError::invalid("definitions", format!("not valid JSON: {e}"))
                })?;
                self.definitions_import(session, &doc).await?
            }
            other => {
                return Err(BrokerError::CommandInvalid(format!(
                    "unknown admin command '{other}'"
                )))
            }
        };
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| BrokerError::CommandInvalid(format!("encoding the result: {e}")))
    }

    fn sorted_queues(&self) -> Vec<Arc<Queue>> {
        let mut qs: Vec<Arc<Queue>> = self.inner.queues.read().values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        qs
    }
}
