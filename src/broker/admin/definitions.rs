//! Definitions: exporting exchanges, queues and bindings as one JSON document, and
//! importing one (checked in full before anything is declared; importing twice changes
//! nothing the second time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use warren_protocol::{
    ExchangeBind, ExchangeDeclare, ExchangeKind, FieldTable, QueueBind, QueueDeclare,
};

use crate::admin_types::{Definitions, ExchangeDefinition, ImportSummary, QueueDefinition};
use crate::broker::access::{AccessPlan, Principal};
use crate::broker::exchange;
use crate::broker::queue_args::QueueArgs;
use crate::broker::redeclare::inequivalence;
use crate::broker::session::Session;
use crate::broker::vhost::VHost;
use crate::broker::{check_owner, validate_name, Broker};
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
                auto_delete: e.auto_delete,
                internal: e.internal,
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

    /// Imports definitions: checks everything first (the caps included), then declares
    /// what is missing. Running it twice changes nothing the second time.
    ///
    /// An exchange, queue or binding goes to the virtual host its `vhost` field names (a
    /// RabbitMQ export names one for each), which must exist or be in the document's
    /// `vhosts`; one without the field (Warren's own export, which is per virtual host)
    /// goes to the connection's.
    pub(super) async fn definitions_import(
        &self,
        session: &Session,
        doc: &Value,
    ) -> Result<ImportSummary, BrokerError> {
        let by_vhost = ImportPlan::parse_by_vhost(doc, &session.vhost.name)?;
        let access = AccessPlan::parse(doc)?;
        self.check_access_plan(&access)?;
        let (mut new_queues, mut new_exchanges) = (0usize, 0usize);
        for (name, defs) in &by_vhost {
            // A virtual host the document creates is checked as the empty one it will be.
            let vh = match self.vhost(name) {
                Some(vh) => vh,
                None if access.declares_vhost(name) => VHost::new(name),
                // Neither on the server nor among the document's vhosts.
                None => return Err(BrokerError::not_found("vhost (of a definition)", name)),
            };
            self.check_import(&vh, session, defs)?;
            let (q, e) = defs.new_items(&vh);
            new_queues += q;
            new_exchanges += e;
        }
        self.check_import_caps(new_queues, new_exchanges)?;
        let mut imported = self.apply_access_plan(access).await?;
        imported.warnings.extend(not_carried_over(doc));
        let (mut created_exchanges, mut created_queues, mut bindings) = (0u64, 0u64, 0u64);
        for (name, defs) in by_vhost {
            let vh = self
                .vhost(&name)
                .ok_or_else(|| BrokerError::not_found("vhost", &name))?;
            // Another virtual host than the connection's: declared with the broker's own
            // rights (only administrators import; RabbitMQ's import checks no vhost
            // permissions either).
            let other = (!Arc::ptr_eq(&vh, &session.vhost)).then(|| {
                Session::for_user(
                    session.id,
                    session.peer.clone(),
                    Principal::internal(),
                    vh.clone(),
                    session.outbound.clone(),
                )
            });
            let s: &Session = other.as_deref().unwrap_or(session);
            for e in defs.exchanges {
                if vh.exchange(&e.name).is_none() {
                    created_exchanges += 1;
                }
                self.declare_exchange(s, e).await?;
            }
            for q in defs.queues {
                if vh.queue(&q.name).is_none() {
                    created_queues += 1;
                }
                self.declare_queue(s, q).await?;
            }
            bindings += (defs.bindings.len() + defs.exchange_bindings.len()) as u64;
            for b in defs.exchange_bindings {
                self.bind_exchange(s, b).await?;
            }
            for b in defs.bindings {
                self.bind(s, b).await?;
            }
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

impl Broker {
    /// Everything the declarations and bindings of an import would refuse, checked against
    /// the document and what exists before anything is changed, so that an import either
    /// applies in full or not at all (only a store failure can stop it halfway). Each
    /// refusal names the item.
    fn check_import(
        &self,
        vh: &VHost,
        session: &Session,
        defs: &ImportPlan,
    ) -> Result<(), BrokerError> {
        let mut seen_exchanges: HashMap<&str, &ExchangeDeclare> = HashMap::new();
        for e in &defs.exchanges {
            validate_name("exchange", &e.name)?;
            if let Some(first) = seen_exchanges.insert(&e.name, e) {
                if (
                    first.kind,
                    first.durable,
                    first.auto_delete,
                    first.internal,
                    &first.arguments,
                ) != (e.kind, e.durable, e.auto_delete, e.internal, &e.arguments)
                {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "definitions: exchange '{}' is defined twice, differently",
                        e.name
                    )));
                }
            }
            let existing = vh.exchange(&e.name);
            // As declare_exchange: `x-` arguments are refused unless the exchange already
            // has exactly these arguments.
            if !existing
                .as_ref()
                .is_some_and(|x| x.arguments == e.arguments)
            {
                exchange::validate_arguments(&e.name, &e.arguments).map_err(in_definitions)?;
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
                        (
                            "auto_delete",
                            e.auto_delete.to_string(),
                            existing.auto_delete.to_string(),
                        ),
                        (
                            "internal",
                            e.internal.to_string(),
                            existing.internal.to_string(),
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
        let mut seen_queues: HashMap<&str, &QueueDeclare> = HashMap::new();
        for q in &defs.queues {
            validate_name("queue", &q.name)?;
            if q.name.is_empty() {
                // A declare would make up a name; a document must say which queue it means.
                return Err(BrokerError::invalid(
                    "definitions: queue name",
                    "must not be empty",
                ));
            }
            if let Some(first) = seen_queues.insert(&q.name, q) {
                if (first.durable, first.auto_delete, &first.arguments)
                    != (q.durable, q.auto_delete, &q.arguments)
                {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "definitions: queue '{}' is defined twice, differently",
                        q.name
                    )));
                }
            }
            let existing = vh.queue(&q.name);
            // As declare_queue: a queue that already has exactly these arguments passes.
            if !existing
                .as_ref()
                .is_some_and(|x| x.arguments == q.arguments)
            {
                QueueArgs::parse(&q.arguments).map_err(|err| {
                    in_definitions(err.refusal(format_args!("queue '{}'", q.name)))
                })?;
            }
            let Some(existing) = existing else {
                if q.name.starts_with("amq.") {
                    return Err(BrokerError::AccessRefused(format!(
                        "definitions: queue name '{}' is reserved",
                        q.name
                    )));
                }
                continue;
            };
            check_owner(&existing, session).map_err(in_definitions)?;
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
        // The kind a binding's source will have: the document's declaration, else the
        // existing exchange's.
        let source_kind = |name: &str, what: &'static str| -> Result<ExchangeKind, BrokerError> {
            if name.is_empty() {
                return Err(BrokerError::AccessRefused(format!(
                    "definitions: {what}: the default exchange cannot be bound to or unbound from"
                )));
            }
            seen_exchanges
                .get(name)
                .map(|e| e.kind)
                .or_else(|| vh.exchange(name).map(|e| e.kind))
                .ok_or_else(|| BrokerError::not_found("exchange (binding source)", name))
        };
        for b in &defs.bindings {
            let item = format!(
                "binding of queue '{}' to exchange '{}' with key '{}'",
                b.queue, b.exchange, b.routing_key
            );
            validate_name("routing key", &b.routing_key)?;
            let kind = source_kind(&b.exchange, "binding source")?;
            exchange::validate_binding(kind, &b.routing_key, &b.arguments)
                .map_err(|err| about(&item, err))?;
            if !seen_queues.contains_key(b.queue.as_str()) {
                let Some(q) = vh.queue(&b.queue) else {
                    return Err(BrokerError::not_found(
                        "queue (binding destination)",
                        &b.queue,
                    ));
                };
                check_owner(&q, session).map_err(|err| about(&item, err))?;
            }
        }
        for b in &defs.exchange_bindings {
            let item = format!(
                "binding of exchange '{}' to exchange '{}' with key '{}'",
                b.destination, b.source, b.routing_key
            );
            validate_name("routing key", &b.routing_key)?;
            let kind = source_kind(&b.source, "binding source")?;
            if b.destination.is_empty() {
                return Err(BrokerError::AccessRefused(format!(
                    "definitions: {item}: the default exchange cannot be bound to or unbound from"
                )));
            }
            if !seen_exchanges.contains_key(b.destination.as_str())
                && vh.exchange(&b.destination).is_none()
            {
                return Err(BrokerError::not_found(
                    "exchange (binding destination)",
                    &b.destination,
                ));
            }
            exchange::validate_binding(kind, &b.routing_key, &b.arguments)
                .map_err(|err| about(&item, err))?;
        }
        Ok(())
    }
}

/// What a RabbitMQ export holds that Warren has no place for, one warning each, so that an
/// import does not drop it silently: policies, runtime parameters (federation, shovels),
/// topic permissions, and global parameters other than the cluster's name and id.
fn not_carried_over(doc: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let list = |key: &str| -> &[Value] {
        doc.get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    };
    let name = |v: &Value| -> String {
        crate::clip::name(v.get("name").and_then(Value::as_str).unwrap_or("?")).into_owned()
    };
    let vhost = |v: &Value| -> String {
        v.get("vhost")
            .and_then(Value::as_str)
            .map(|h| format!(" in vhost '{}'", crate::clip::name(h)))
            .unwrap_or_default()
    };
    for p in list("policies") {
        warnings.push(format!(
            "policy '{}'{} not imported: Warren has no policies (give its definition to the \
             queues as x- arguments)",
            name(p),
            vhost(p)
        ));
    }
    for p in list("parameters") {
        let component = p.get("component").and_then(Value::as_str).unwrap_or("?");
        warnings.push(format!(
            "parameter '{}' ({component}){} not imported: Warren has no runtime parameters",
            name(p),
            vhost(p)
        ));
    }
    for p in list("topic_permissions") {
        let user = p.get("user").and_then(Value::as_str).unwrap_or("?");
        warnings.push(format!(
            "topic permission of user '{}'{} not imported: Warren has no topic permissions",
            crate::clip::name(user),
            vhost(p)
        ));
    }
    for p in list("global_parameters") {
        // RabbitMQ's own bookkeeping: nothing an operator set up.
        if matches!(
            p.get("name").and_then(Value::as_str),
            Some("cluster_name" | "internal_cluster_id")
        ) {
            continue;
        }
        warnings.push(format!(
            "global parameter '{}' not imported: Warren has no global parameters",
            name(p)
        ));
    }
    warnings
}

/// A refusal of a declaration in a document, marked as such; the refusal names the item.
fn in_definitions(err: BrokerError) -> BrokerError {
    match err {
        BrokerError::PreconditionFailed(why) => {
            BrokerError::PreconditionFailed(format!("definitions: {why}"))
        }
        BrokerError::ResourceLocked(why) => {
            BrokerError::ResourceLocked(format!("definitions: {why}"))
        }
        other => other,
    }
}

/// Parses a definitions document and checks what needs no broker (names, exchange and queue
/// arguments): the parse step of `definitions.import`, for the fuzz checks (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_document(text: &str) -> Result<(), BrokerError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| BrokerError::invalid("definitions", format!("not valid JSON: {e}")))?;
    ImportPlan::parse_by_vhost(&doc, "/")?;
    let plan = ImportPlan::parse(&doc)?;
    for e in &plan.exchanges {
        validate_name("exchange", &e.name)?;
        exchange::validate_arguments(&e.name, &e.arguments)?;
    }
    for q in &plan.queues {
        validate_name("queue", &q.name)?;
        QueueArgs::parse(&q.arguments)
            .map_err(|e| e.refusal(format_args!("queue '{}'", q.name)))?;
    }
    for b in &plan.bindings {
        for kind in [ExchangeKind::Topic, ExchangeKind::Headers] {
            exchange::validate_binding(kind, &b.routing_key, &b.arguments)?;
        }
    }
    for b in &plan.exchange_bindings {
        for kind in [ExchangeKind::Topic, ExchangeKind::Headers] {
            exchange::validate_binding(kind, &b.routing_key, &b.arguments)?;
        }
    }
    Ok(())
}

/// A refusal of `item` in a document, naming it; the code stays the refusal's.
fn about(item: &str, err: BrokerError) -> BrokerError {
    let say = |why: String| format!("definitions: {item}: {why}");
    match err {
        BrokerError::PreconditionFailed(why) => BrokerError::PreconditionFailed(say(why)),
        BrokerError::ResourceLocked(why) => BrokerError::ResourceLocked(say(why)),
        BrokerError::AccessRefused(why) => BrokerError::AccessRefused(say(why)),
        other => other,
    }
}

/// A definitions document, parsed into the declarations it asks for. Parsed by hand from the
/// JSON rather than decoded as [`Definitions`]: the document may leave out lists, flags and
/// arguments, and each refusal names the field that is wrong.
#[derive(Default)]
struct ImportPlan {
    exchanges: Vec<ExchangeDeclare>,
    queues: Vec<QueueDeclare>,
    bindings: Vec<QueueBind>,
    /// Bindings with `destination_type` `exchange`.
    exchange_bindings: Vec<ExchangeBind>,
}

impl ImportPlan {
    /// The document's items by the virtual host they go to: the one their `vhost` field
    /// names, else `default` (the connection's).
    fn parse_by_vhost(
        doc: &Value,
        default: &str,
    ) -> Result<BTreeMap<String, ImportPlan>, BrokerError> {
        let vhost_of = |v: &Value, what: &str| -> Result<String, BrokerError> {
            match v.get("vhost") {
                None | Some(Value::Null) => Ok(default.to_owned()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(BrokerError::invalid(
                    format!("definitions: {what} field vhost"),
                    "must be a string".to_owned(),
                )),
            }
        };
        let list = |key: &str| -> Vec<Value> {
            doc.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        // Parsed whole first, so that a malformed item is refused with the same message
        // whatever its virtual host.
        let all = ImportPlan::parse(doc)?;
        let mut out: BTreeMap<String, ImportPlan> = BTreeMap::new();
        for (e, raw) in all.exchanges.into_iter().zip(list("exchanges")) {
            let vhost = vhost_of(&raw, "exchange")?;
            out.entry(vhost).or_default().exchanges.push(e);
        }
        for (q, raw) in all.queues.into_iter().zip(list("queues")) {
            let vhost = vhost_of(&raw, "queue")?;
            out.entry(vhost).or_default().queues.push(q);
        }
        let (mut queue_bindings, mut exchange_bindings) =
            (all.bindings.into_iter(), all.exchange_bindings.into_iter());
        for raw in list("bindings") {
            let vhost = vhost_of(&raw, "binding")?;
            let plan = out.entry(vhost).or_default();
            if raw.get("destination_type").and_then(Value::as_str) == Some("exchange") {
                plan.exchange_bindings.extend(exchange_bindings.next());
            } else {
                plan.bindings.extend(queue_bindings.next());
            }
        }
        Ok(out)
    }

    /// How many queues and exchanges importing this into `vh` creates.
    fn new_items(&self, vh: &VHost) -> (usize, usize) {
        let queues: HashSet<&str> = self
            .queues
            .iter()
            .map(|q| q.name.as_str())
            .filter(|q| vh.queue(q).is_none())
            .collect();
        let exchanges: HashSet<&str> = self
            .exchanges
            .iter()
            .map(|e| e.name.as_str())
            .filter(|e| vh.exchange(e).is_none())
            .collect();
        (queues.len(), exchanges.len())
    }

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
                auto_delete: flag(&e, "auto_delete"),
                internal: flag(&e, "internal"),
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
