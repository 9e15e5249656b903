//! Definitions: exporting exchanges, queues and bindings as one JSON document, and
//! importing one (checked in full before anything is declared; importing twice changes
//! nothing the second time).

use std::collections::HashSet;

use serde_json::Value;
use warren_protocol::{
    ExchangeBind, ExchangeDeclare, ExchangeKind, FieldTable, QueueBind, QueueDeclare,
};

use crate::admin_types::{Definitions, ExchangeDefinition, ImportSummary, QueueDefinition};
use crate::broker::access::AccessPlan;
use crate::broker::exchange;
use crate::broker::queue_args::QueueArgs;
use crate::broker::redeclare::inequivalence;
use crate::broker::session::Session;
use crate::broker::vhost::VHost;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::json::{json_table, table_map};

impl Broker {
    pub(super) fn definitions_export(&self, vh: &VHost) -> Definitions {
        let mut exchanges: Vec<ExchangeDefinition> = vh
            .exchanges
            .read()
            .values()
            .filter(|e| !e.builtin)
            .map(|e| ExchangeDefinition {
                name: e.name.to_string(),
                kind: e.kind.as_str().to_owned(),
                durable: e.durable,
                arguments: table_map(&e.arguments),
            })
            .collect();
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        let queues: Vec<QueueDefinition> = self
            .sorted_queues(vh)
            .iter()
            .filter(|q| q.exclusive_owner.is_none())
            .map(|q| QueueDefinition {
                name: q.name.to_string(),
                durable: q.durable,
                auto_delete: q.auto_delete,
                arguments: table_map(&q.arguments),
            })
            .collect();
        let exported: HashSet<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        let bindings = self
            .bindings(vh, None, None)
            .into_iter()
            // Exchange bindings go whole: every exchange they name is exported or built in.
            .filter(|b| {
                b.destination_type == "exchange" || exported.contains(b.destination.as_str())
            })
            .collect();
        let (users, vhosts, permissions) = self.access_definitions();
        Definitions {
            warren_version: env!("CARGO_PKG_VERSION").to_owned(),
            exchanges,
            queues,
            bindings,
            users,
            vhosts,
            permissions,
        }
    }

    /// Imports definitions: checks everything first, then declares what is missing. Running
    /// it twice changes nothing the second time.
    pub(super) async fn definitions_import(
        &self,
        session: &Session,
        doc: &Value,
    ) -> Result<ImportSummary, BrokerError> {
        let defs = ImportPlan::parse(doc)?;
        let access = AccessPlan::parse(doc)?;
        self.check_access_plan(&access)?;
        // Check every definition against what exists before changing anything.
        for e in &defs.exchanges {
            let existing = session.vhost.exchange(&e.name);
            // As declare_exchange: `x-` arguments are refused unless the exchange already
            // has exactly these arguments.
            if !existing
                .as_ref()
                .is_some_and(|x| x.arguments == e.arguments)
            {
                exchange::validate_arguments(&e.name, &e.arguments).map_err(|err| match err {
                    BrokerError::PreconditionFailed(why) => {
                        BrokerError::PreconditionFailed(format!("definitions: {why}"))
                    }
                    other => other,
                })?;
            }
            if let Some(existing) = existing {
                if let Some(why) = inequivalence(
                    "exchange",
                    &e.name,
                    &[
                        (
                            "type",
                            e.kind.as_str().to_owned(),
                            existing.kind.as_str().to_owned(),
                        ),
                        (
                            "durable",
                            e.durable.to_string(),
                            existing.durable.to_string(),
                        ),
                    ],
                    &e.arguments,
                    &existing.arguments,
                ) {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "definitions conflict: {why}"
                    )));
                }
            } else if e.name.is_empty() || e.name.starts_with("amq.") {
                return Err(BrokerError::AccessRefused(format!(
                    "definitions: exchange name '{}' is reserved",
                    e.name
                )));
            }
        }
        for q in &defs.queues {
            let existing = session.vhost.queue(&q.name);
            // As declare_queue: a queue that already has exactly these arguments passes.
            if !existing
                .as_ref()
                .is_some_and(|x| x.arguments == q.arguments)
            {
                QueueArgs::parse(&q.arguments).map_err(|err| {
                    BrokerError::PreconditionFailed(format!(
                        "definitions: {}",
                        err.refusal(format_args!("queue '{}'", q.name))
                    ))
                })?;
            }
            if let Some(existing) = existing {
                if let Some(why) = inequivalence(
                    "queue",
                    &q.name,
                    &[
                        (
                            "durable",
                            q.durable.to_string(),
                            existing.durable.to_string(),
                        ),
                        (
                            "exclusive",
                            q.exclusive.to_string(),
                            existing.exclusive_owner.is_some().to_string(),
                        ),
                        (
                            "auto_delete",
                            q.auto_delete.to_string(),
                            existing.auto_delete.to_string(),
                        ),
                    ],
                    &q.arguments,
                    &existing.arguments,
                ) {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "definitions conflict: {why}"
                    )));
                }
            }
        }
        let declared_queues: HashSet<&str> = defs.queues.iter().map(|q| q.name.as_str()).collect();
        for b in &defs.bindings {
            // The kind the binding will meet: the document's declaration, else the existing one.
            let kind = defs
                .exchanges
                .iter()
                .find(|e| e.name == b.exchange)
                .map(|e| e.kind)
                .or_else(|| session.vhost.exchange(&b.exchange).map(|e| e.kind));
            let Some(kind) = kind else {
                return Err(BrokerError::not_found(
                    "exchange (binding source)",
                    &b.exchange,
                ));
            };
            exchange::validate_binding_key(kind, &b.routing_key).map_err(|err| match err {
                BrokerError::PreconditionFailed(why) => {
                    BrokerError::PreconditionFailed(format!("definitions: {why}"))
                }
                other => other,
            })?;
            if !declared_queues.contains(b.queue.as_str())
                && session.vhost.queue(&b.queue).is_none()
            {
                return Err(BrokerError::not_found(
                    "queue (binding destination)",
                    &b.queue,
                ));
            }
        }
        for b in &defs.exchange_bindings {
            for (what, name) in [
                ("exchange (binding source)", &b.source),
                ("exchange (binding destination)", &b.destination),
            ] {
                if !defs.exchanges.iter().any(|e| &e.name == name)
                    && session.vhost.exchange(name).is_none()
                {
                    return Err(BrokerError::not_found(what, name));
                }
            }
        }
        let imported = self.apply_access_plan(access).await?;
        let (mut created_exchanges, mut created_queues) = (0u64, 0u64);
        for e in defs.exchanges {
            if session.vhost.exchange(&e.name).is_none() {
                created_exchanges += 1;
            }
            self.declare_exchange(session, e).await?;
        }
        for q in defs.queues {
            if session.vhost.queue(&q.name).is_none() {
                created_queues += 1;
            }
            self.declare_queue(session, q).await?;
        }
        let bindings = (defs.bindings.len() + defs.exchange_bindings.len()) as u64;
        for b in defs.exchange_bindings {
            self.bind_exchange(session, b).await?;
        }
        for b in defs.bindings {
            self.bind(session, b).await?;
        }
        Ok(ImportSummary {
            exchanges_created: created_exchanges,
            queues_created: created_queues,
            bindings,
            users_created: imported.users_created,
            vhosts_created: imported.vhosts_created,
            permissions_set: imported.permissions_set,
            warnings: imported.warnings,
        })
    }
}

/// A definitions document, parsed into the declarations it asks for. Parsed by hand from the
/// JSON rather than decoded as [`Definitions`]: the document may leave out lists, flags and
/// arguments, and each refusal names the field that is wrong.
struct ImportPlan {
    exchanges: Vec<ExchangeDeclare>,
    queues: Vec<QueueDeclare>,
    bindings: Vec<QueueBind>,
    /// Bindings with `destination_type` `exchange`.
    exchange_bindings: Vec<ExchangeBind>,
}

impl ImportPlan {
    fn parse(doc: &Value) -> Result<ImportPlan, BrokerError> {
        let bad = |what: String, reason: &str| BrokerError::invalid(what, reason.to_owned());
        let list = |key: &str| -> Result<Vec<Value>, BrokerError> {
            match doc.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(bad(format!("definitions {key}"), "must be an array")),
            }
        };
        let text = |v: &Value, key: &str, what: &str| -> Result<String, BrokerError> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    bad(
                        format!("definitions: {what} field {key}"),
                        "must be a string",
                    )
                })
        };
        let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
        let table = |v: &Value, what: &str| -> Result<FieldTable, BrokerError> {
            match v.get("arguments") {
                None => Ok(FieldTable::new()),
                Some(a) => json_table(a)
                    .map_err(|e| BrokerError::invalid(format!("definitions: {what} arguments"), e)),
            }
        };
        let mut out = ImportPlan {
            exchanges: Vec::new(),
            queues: Vec::new(),
            bindings: Vec::new(),
            exchange_bindings: Vec::new(),
        };
        for e in list("exchanges")? {
            let name = text(&e, "name", "exchange")?;
            let kind_name = text(&e, "type", "exchange")?;
            let kind = ExchangeKind::parse(&kind_name).ok_or_else(|| {
                bad(
                    format!("definitions: exchange '{name}' type"),
                    "must be direct, fanout, topic or headers",
                )
            })?;
            out.exchanges.push(ExchangeDeclare {
                arguments: table(&e, &format!("exchange '{name}'"))?,
                durable: flag(&e, "durable"),
                passive: false,
                kind,
                name,
            });
        }
        for q in list("queues")? {
            let name = text(&q, "name", "queue")?;
            out.queues.push(QueueDeclare {
                arguments: table(&q, &format!("queue '{name}'"))?,
                durable: flag(&q, "durable"),
                exclusive: false,
                auto_delete: flag(&q, "auto_delete"),
                passive: false,
                name,
            });
        }
        for b in list("bindings")? {
            let routing_key = b
                .get("routing_key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match b.get("destination_type").and_then(Value::as_str) {
                None | Some("queue") => {}
                Some("exchange") => {
                    out.exchange_bindings.push(ExchangeBind {
                        source: text(&b, "source", "binding")?,
                        destination: text(&b, "destination", "binding")?,
                        routing_key,
                        arguments: table(&b, "binding")?,
                    });
                    continue;
                }
                Some(_) => {
                    return Err(bad(
                        "definitions: binding field destination_type".into(),
                        "must be queue or exchange",
                    ))
                }
            }
            out.bindings.push(QueueBind {
                exchange: text(&b, "source", "binding")?,
                queue: text(&b, "destination", "binding")?,
                routing_key: b
                    .get("routing_key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arguments: table(&b, "binding")?,
            });
        }
        Ok(out)
    }
}
