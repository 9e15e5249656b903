//! Topology: declaring and deleting exchanges and queues, binding and unbinding, purging.
//!
//! Every change holds the broker's topology lock (an async mutex) across its store commit,
//! so check-then-change is atomic and the reply follows durability. Redeclaring with
//! different settings is refused by `redeclare.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use warren_protocol::{ErrorCode, ExchangeBind, ExchangeDeclare, QueueBind, QueueDeclare};

use super::access::Perm;
use super::event::{DeclaredQueue, Event};
use super::exchange::{self, Binding, Exchange, ExchangeBinding};
use super::queue::{Queue, QueueSettings};
use super::queue_args::{QueueArgs, QueueType};
use super::session::Session;
use super::vhost::VHost;
use super::{check_owner, redeclare, validate_name, Broker};
use crate::error::BrokerError;
use crate::message::QueuedMessage;
use crate::store::codec::{BindingRecord, DestinationKind, ExchangeRecord, QueueRecord};
use crate::store::{Completion, TopologyChange};

impl Broker {
    /// Declares an exchange.
    ///
    /// # Errors
    /// Reserved or invalid names, a conflicting existing exchange, a passive declare of a
    /// missing one, or a store failure.
    pub async fn declare_exchange(
        &self,
        session: &Session,
        d: ExchangeDeclare,
    ) -> Result<(), BrokerError> {
        validate_name("exchange", &d.name)?;
        let vh = &session.vhost;
        if d.name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be declared".into(),
            ));
        }
        let _guard = self.inner.topology.lock().await;
        live(vh)?;
        let existing = vh.exchange(&d.name);
        if existing.is_none() && !d.passive {
            self.check_exchange_cap(&d.name)?;
        }
        // An exchange that already has exactly these arguments (stored by an older Warren
        // that accepted them) may be redeclared as it is, so its clients keep starting.
        if !existing
            .as_ref()
            .is_some_and(|e| e.arguments == d.arguments)
        {
            exchange::validate_arguments(&d.name, &d.arguments)?;
        }
        if let Some(existing) = existing {
            if d.passive {
                return Ok(());
            }
            if let Some(why) = redeclare::inequivalence(
                "exchange",
                &d.name,
                &[
                    (
                        "type",
                        d.kind.as_str().to_owned(),
                        existing.kind.as_str().to_owned(),
                    ),
                    (
                        "durable",
                        d.durable.to_string(),
                        existing.durable.to_string(),
                    ),
                    (
                        "auto_delete",
                        d.auto_delete.to_string(),
                        existing.auto_delete.to_string(),
                    ),
                    (
                        "internal",
                        d.internal.to_string(),
                        existing.internal.to_string(),
                    ),
                ],
                &d.arguments,
                &existing.arguments,
            ) {
                return Err(BrokerError::PreconditionFailed(why));
            }
            return Ok(());
        }
        if d.passive {
            return Err(BrokerError::not_found("exchange", &d.name));
        }
        if d.name.starts_with("amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "exchange name '{}' is reserved: names starting with 'amq.' belong to the broker",
                d.name
            )));
        }
        if d.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutExchange(ExchangeRecord {
                    vhost: vh.name.to_string(),
                    name: d.name.clone(),
                    kind: d.kind,
                    arguments: d.arguments.clone(),
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                }))
                .await?;
        }
        let e = Exchange::new(
            &vh.name,
            d.name.as_str().into(),
            d.kind,
            d.durable,
            d.arguments,
            false,
        )
        .flagged(d.auto_delete, d.internal);
        vh.exchanges.write().insert(d.name, Arc::new(e));
        Ok(())
    }

    /// Deletes an exchange and its bindings. Deleting a missing exchange succeeds (as in
    /// RabbitMQ).
    ///
    /// # Errors
    /// The default or a built-in exchange, `if_unused` with bindings, or a store failure.
    pub async fn delete_exchange(
        &self,
        session: &Session,
        name: &str,
        if_unused: bool,
    ) -> Result<(), BrokerError> {
        let vh = &session.vhost;
        if name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be deleted".into(),
            ));
        }
        let _guard = self.inner.topology.lock().await;
        let Some(e) = vh.exchange(name) else {
            return Ok(());
        };
        if e.builtin {
            return Err(BrokerError::AccessRefused(format!(
                "exchange '{name}' is built in and cannot be deleted"
            )));
        }
        if if_unused && e.has_bindings() {
            return Err(BrokerError::PreconditionFailed(format!(
                "exchange '{name}' has bindings"
            )));
        }
        let sources = self.remove_exchange(vh, &e).await?;
        self.auto_delete_exchanges(vh, sources).await
    }

    /// Removes the exchange `e` of `vh`, with its bindings and the bindings to it; returns
    /// the exchanges that lost a binding to it. The topology lock must be held.
    async fn remove_exchange(
        &self,
        vh: &VHost,
        e: &Arc<Exchange>,
    ) -> Result<Vec<Arc<Exchange>>, BrokerError> {
        if e.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteExchange {
                    vhost: vh.name.to_string(),
                    name: e.name.to_string(),
                })
                .await?;
        }
        {
            let mut exchanges = vh.exchanges.write();
            // Only this very exchange: one of the same name declared since stays.
            if exchanges.get(&*e.name).is_some_and(|x| Arc::ptr_eq(x, e)) {
                exchanges.remove(&*e.name);
            }
        }
        // Bindings to it go too (the store dropped the durable ones with the exchange).
        Ok(vh
            .exchange_list()
            .into_iter()
            .filter(|source| !source.unbind_destination(&e.name).is_empty())
            .collect())
    }

    /// Deletes every auto-delete exchange among `sources` that has no binding left as a
    /// source, and then, in turn, those that lose their last binding by that (RabbitMQ's
    /// cascade). Called after a binding was removed; the topology lock must be held. An
    /// auto-delete exchange that never had a binding is not among `sources`, so it stays.
    pub(super) async fn auto_delete_exchanges(
        &self,
        vh: &VHost,
        mut sources: Vec<Arc<Exchange>>,
    ) -> Result<(), BrokerError> {
        while let Some(e) = sources.pop() {
            if !e.auto_delete || e.has_bindings() {
                continue;
            }
            if !vh.exchange(&e.name).is_some_and(|x| Arc::ptr_eq(&x, &e)) {
                continue;
            }
            tracing::debug!(exchange = %e.name, vhost = %vh.name, "auto-delete exchange lost its last binding; deleting it");
            sources.extend(self.remove_exchange(vh, &e).await?);
        }
        Ok(())
    }

    /// Declares a queue; an empty name gets a server-chosen one.
    ///
    /// # Errors
    /// Reserved or invalid names, a conflicting or exclusive existing queue, a passive
    /// declare of a missing one, or a store failure.
    pub async fn declare_queue(
        &self,
        session: &Session,
        d: QueueDeclare,
    ) -> Result<DeclaredQueue, BrokerError> {
        validate_name("queue", &d.name)?;
        let vh = &session.vhost;
        if let Some(q) = vh.queue(&d.name) {
            // Declare-ok's message count is exact, as after RabbitMQ's own recovery: a
            // recovering queue answers once it is read whole. Outside the topology lock, so
            // other declarations go on meanwhile.
            q.recovered().await;
        }
        let _guard = self.inner.topology.lock().await;
        live(vh)?;
        let existing = vh.queue(&d.name);
        if existing.is_none() && !d.passive {
            self.check_queue_cap(&d.name)?;
        }
        let args = match QueueArgs::parse(&d.arguments) {
            Ok(args) => args,
            // A queue that already has exactly these arguments (stored by an older Warren
            // that accepted them) may be redeclared as it is, so its clients keep starting;
            // the parsed arguments are only needed to create a queue.
            Err(_)
                if existing
                    .as_ref()
                    .is_some_and(|q| q.arguments == d.arguments) =>
            {
                QueueArgs::default()
            }
            Err(e) => return Err(e.refusal(format_args!("queue '{}'", d.name))),
        };
        if let Some(existing) = existing {
            check_owner(&existing, session)?;
            existing.touch();
            let exclusive = existing.exclusive_owner.is_some();
            if !d.passive {
                if let Some(why) = redeclare::inequivalence(
                    "queue",
                    &d.name,
                    &[
                        (
                            "durable",
                            d.durable.to_string(),
                            existing.durable.to_string(),
                        ),
                        ("exclusive", d.exclusive.to_string(), exclusive.to_string()),
                        (
                            "auto_delete",
                            d.auto_delete.to_string(),
                            existing.auto_delete.to_string(),
                        ),
                    ],
                    &d.arguments,
                    &existing.arguments,
                ) {
                    return Err(BrokerError::PreconditionFailed(why));
                }
            }
            let c = existing.counts();
            return Ok(DeclaredQueue {
                name: d.name,
                message_count: c.ready,
                consumer_count: c.consumers,
            });
        }
        if d.passive {
            return Err(BrokerError::not_found("queue", &d.name));
        }
        if args.queue_type == QueueType::Stream {
            // As RabbitMQ: a stream is a durable log shared by its readers.
            for (set, what) in [
                (!d.durable, "non-durable"),
                (d.exclusive, "exclusive"),
                (d.auto_delete, "auto-delete"),
            ] {
                if set {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "queue '{}': a stream cannot be {what}; streams are durable, shared and \
                         deleted only explicitly",
                        d.name
                    )));
                }
            }
        }
        let server_named = d.name.is_empty();
        let name = if server_named {
            format!("amq.gen-{}", unique_suffix())
        } else if d.name.starts_with("amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "queue name '{}' is reserved: names starting with 'amq.' belong to the broker",
                d.name
            )));
        } else {
            d.name
        };
        if server_named {
            // The connection checked every other name before the broker saw it.
            session.user.check(Perm::Configure, "queue", &name)?;
        }
        let id = self.inner.next_queue_id.fetch_add(1, Ordering::AcqRel);
        if d.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutQueue(QueueRecord {
                    vhost: vh.name.to_string(),
                    id,
                    name: name.clone(),
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments.clone(),
                }))
                .await?;
        }
        let q = Queue::new(
            QueueSettings {
                id,
                name: name.as_str().into(),
                durable: d.durable,
                exclusive_owner: d.exclusive.then_some(session.id),
                auto_delete: d.auto_delete,
                arguments: d.arguments,
                args,
            },
            self.inner.ctx.clone(),
        );
        vh.queues.write().insert(name.clone(), q);
        Ok(DeclaredQueue {
            name,
            message_count: 0,
            consumer_count: 0,
        })
    }

    /// Deletes a queue with its bindings and messages; returns how many ready messages it
    /// held. Deleting a missing queue succeeds with 0 (as in RabbitMQ).
    ///
    /// # Errors
    /// Another connection's exclusive queue, `if_unused`/`if_empty` not met, a store failure.
    pub async fn delete_queue(
        &self,
        session: &Session,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, BrokerError> {
        if let Some(q) = session.vhost.queue(name) {
            // Its count (and `if_empty`) must include the messages not read back yet.
            q.recovered().await;
        }
        let _guard = self.inner.topology.lock().await;
        let Some(q) = session.vhost.queue(name) else {
            return Ok(0);
        };
        check_owner(&q, session)?;
        let c = q.counts();
        if if_unused && c.consumers > 0 {
            return Err(BrokerError::PreconditionFailed(format!(
                "queue '{name}' has {} consumer(s)",
                c.consumers
            )));
        }
        if if_empty && c.ready > 0 {
            return Err(BrokerError::PreconditionFailed(format!(
                "queue '{name}' has {} message(s)",
                c.ready
            )));
        }
        self.remove_queue(&session.vhost, &q).await
    }

    /// Removes a queue of `vh` everywhere; the topology lock must be held.
    pub(super) async fn remove_queue(
        &self,
        vh: &VHost,
        q: &Arc<Queue>,
    ) -> Result<u64, BrokerError> {
        let entries = q.stream.as_ref().map(|s| {
            let summary = s.summary();
            (summary.first_offset, summary.next_offset)
        });
        // The auto-delete exchanges bound to it, which may lose their last binding with it.
        let sources: Vec<Arc<Exchange>> = vh
            .exchange_list()
            .into_iter()
            .filter(|e| e.auto_delete && e.binds_queue(q.id))
            .collect();
        let count = forget_queue(vh, q);
        if q.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteQueue {
                    vhost: vh.name.to_string(),
                    id: q.id,
                    name: q.name.to_string(),
                })
                .await?;
        }
        if let Some((first, next)) = entries {
            self.delete_stream_entries(q.id, first, next);
        }
        self.auto_delete_exchanges(vh, sources).await?;
        Ok(count)
    }

    /// Removes a deleted stream's entries `first..next` from the store in the background,
    /// [`DELETE_BATCH`](super::stream::DELETE_BATCH) per commit, each commit awaited before
    /// the next is asked for: a big stream never makes one long commit that would hold up
    /// every publisher. Entries left by a crash midway are removed at the next start.
    pub(super) fn delete_stream_entries(&self, id: u64, first: u64, next: u64) {
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            let mut from = first;
            while from < next {
                let to = next.min(from.saturating_add(super::stream::DELETE_BATCH));
                if let Err(e) = store.trim_stream(id, from, to).await {
                    tracing::warn!(stream = id, error = %e, "removing a deleted stream's entries failed; the rest go at the next start");
                    return;
                }
                from = to;
            }
        });
    }
}

/// Takes a queue out of `vh` in memory: it leaves the map and the exchanges' bindings, is
/// marked deleted, and its consumers are cancelled. Returns how many ready messages it held.
pub(super) fn forget_queue(vh: &VHost, q: &Arc<Queue>) -> u64 {
    {
        let mut queues = vh.queues.write();
        // Only this very queue: a queue of the same name declared since stays.
        if queues.get(&*q.name).is_some_and(|x| Arc::ptr_eq(x, q)) {
            queues.remove(&*q.name);
        }
    }
    let (consumers, count) = q.mark_deleted();
    for c in consumers {
        c.session.remove_consumer(&c.tag);
        c.session.send(
            0,
            Event::ConsumerCancelled {
                consumer_tag: c.tag.to_string(),
                code: ErrorCode::NotFound,
                reason: format!("queue '{}' was deleted", q.name),
            },
        );
    }
    for e in vh.exchange_list() {
        e.unbind_queue(q.id);
    }
    count
}

impl Broker {
    /// Removes every ready message from a queue; returns how many.
    ///
    /// # Errors
    /// Missing or foreign exclusive queue, or a store failure.
    pub async fn purge_queue(&self, session: &Session, name: &str) -> Result<u64, BrokerError> {
        let q = self.usable_queue(session, name)?;
        if q.stream.is_some() {
            return Err(BrokerError::NotImplemented(format!(
                "purge is not supported on stream '{name}': entries leave a stream by its \
                 retention (x-max-length-bytes, x-max-age) or with the stream"
            )));
        }
        // Messages not read back yet would come back after the purge: wait for them.
        q.recovered().await;
        let removed = q.purge();
        self.forget_durably(&q, &removed).await?;
        Ok(removed.len() as u64)
    }

    /// Deletes the store rows of entries that left `q` (purged, deleted by an operator) and
    /// returns once that is committed.
    pub(super) async fn forget_durably(
        &self,
        q: &Queue,
        entries: &[QueuedMessage],
    ) -> Result<(), BrokerError> {
        let stored: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| e.stored)
            .map(|e| (q.id, e.id))
            .collect();
        if stored.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .store
            .remove(stored, Completion::Oneshot(tx))
            .await?;
        rx.await.map_err(|_| BrokerError::ShuttingDown)??;
        Ok(())
    }

    fn binding_parts(
        &self,
        session: &Session,
        b: &QueueBind,
    ) -> Result<(Arc<Exchange>, Arc<Queue>), BrokerError> {
        if b.exchange.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be bound to or unbound from".into(),
            ));
        }
        let e = session
            .vhost
            .exchange(&b.exchange)
            .ok_or_else(|| BrokerError::not_found("exchange", &b.exchange))?;
        let q = self.usable_queue(session, &b.queue)?;
        validate_name("routing key", &b.routing_key)?;
        Ok((e, q))
    }

    /// Binds a queue to an exchange (idempotent).
    ///
    /// # Errors
    /// Missing exchange or queue, the default exchange, bad headers arguments, a store failure.
    pub async fn bind(&self, session: &Session, b: QueueBind) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let (e, q) = self.binding_parts(session, &b)?;
        e.validate_binding(&b.routing_key, &b.arguments)?;
        if e.durable && q.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutBinding(record(&session.vhost, &b)))
                .await?;
        }
        e.bind(Binding {
            queue: q,
            routing_key: b.routing_key,
            arguments: b.arguments,
        });
        Ok(())
    }

    /// Removes a binding (removing a missing binding succeeds).
    ///
    /// # Errors
    /// Missing exchange or queue, the default exchange, a store failure.
    pub async fn unbind(&self, session: &Session, b: QueueBind) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let (e, q) = self.binding_parts(session, &b)?;
        if !e.unbind(q.id, &b.routing_key, &b.arguments) {
            return Ok(());
        }
        if e.durable && q.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteBinding(record(&session.vhost, &b)))
                .await?;
        }
        self.auto_delete_exchanges(&session.vhost, vec![e]).await
    }
}

impl Broker {
    fn exchange_binding_parts(
        &self,
        vh: &VHost,
        b: &ExchangeBind,
    ) -> Result<(Arc<Exchange>, Arc<Exchange>), BrokerError> {
        if b.source.is_empty() || b.destination.is_empty() {
            return Err(BrokerError::AccessRefused(
                "the default exchange cannot be bound to or unbound from".into(),
            ));
        }
        let source = vh
            .exchange(&b.source)
            .ok_or_else(|| BrokerError::not_found("exchange", &b.source))?;
        let destination = vh
            .exchange(&b.destination)
            .ok_or_else(|| BrokerError::not_found("exchange", &b.destination))?;
        validate_name("routing key", &b.routing_key)?;
        Ok((source, destination))
    }

    /// Binds a destination exchange to a source exchange (idempotent); durable when both
    /// are.
    ///
    /// # Errors
    /// A missing or default exchange, bad binding arguments for the source's kind, a store
    /// failure.
    pub async fn bind_exchange(
        &self,
        session: &Session,
        b: ExchangeBind,
    ) -> Result<(), BrokerError> {
        let vh = &session.vhost;
        let _guard = self.inner.topology.lock().await;
        let (source, destination) = self.exchange_binding_parts(vh, &b)?;
        source.validate_binding(&b.routing_key, &b.arguments)?;
        if source.durable && destination.durable {
            self.inner
                .store
                .change_topology(TopologyChange::PutBinding(exchange_record(vh, &b)))
                .await?;
        }
        source.bind_exchange(ExchangeBinding {
            destination: destination.name.clone(),
            routing_key: b.routing_key,
            arguments: b.arguments,
        });
        Ok(())
    }

    /// Removes an exchange-to-exchange binding (removing a missing one succeeds).
    ///
    /// # Errors
    /// A missing or default exchange, a store failure.
    pub async fn unbind_exchange(
        &self,
        session: &Session,
        b: ExchangeBind,
    ) -> Result<(), BrokerError> {
        let vh = &session.vhost;
        let _guard = self.inner.topology.lock().await;
        let (source, destination) = self.exchange_binding_parts(vh, &b)?;
        if !source.unbind_exchange(&b.destination, &b.routing_key, &b.arguments) {
            return Ok(());
        }
        if source.durable && destination.durable {
            self.inner
                .store
                .change_topology(TopologyChange::DeleteBinding(exchange_record(vh, &b)))
                .await?;
        }
        self.auto_delete_exchanges(vh, vec![source]).await
    }
}

fn exchange_record(vh: &VHost, b: &ExchangeBind) -> BindingRecord {
    BindingRecord {
        vhost: vh.name.to_string(),
        exchange: b.source.clone(),
        destination: b.destination.clone(),
        destination_kind: DestinationKind::Exchange,
        routing_key: b.routing_key.clone(),
        arguments: b.arguments.clone(),
    }
}

/// Refuses to create anything in a virtual host deleted while the session held it.
fn live(vh: &VHost) -> Result<(), BrokerError> {
    if vh.is_deleted() {
        return Err(BrokerError::not_found("vhost", &vh.name));
    }
    Ok(())
}

fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

fn record(vh: &VHost, b: &QueueBind) -> BindingRecord {
    BindingRecord {
        vhost: vh.name.to_string(),
        exchange: b.exchange.clone(),
        destination: b.queue.clone(),
        destination_kind: DestinationKind::Queue,
        routing_key: b.routing_key.clone(),
        arguments: b.arguments.clone(),
    }
}

impl Broker {
    /// Refuses a new queue past `--max-queues` (all virtual hosts together). Called under
    /// the topology lock, so the count cannot move meanwhile.
    fn check_queue_cap(&self, name: &str) -> Result<(), BrokerError> {
        let count = self.count_in_vhosts(|vh| vh.queues.read().len());
        at_most(
            "queue",
            name,
            count,
            self.inner.config.limits.max_queues,
            "--max-queues",
        )
    }

    /// Refuses a new exchange past `--max-exchanges` (declared ones, all virtual hosts).
    fn check_exchange_cap(&self, name: &str) -> Result<(), BrokerError> {
        let count =
            self.count_in_vhosts(|vh| vh.exchanges.read().values().filter(|e| !e.builtin).count());
        let max = self.inner.config.limits.max_exchanges;
        at_most("exchange", name, count, max, "--max-exchanges")
    }

    fn count_in_vhosts(&self, count: impl Fn(&VHost) -> usize) -> usize {
        self.inner.vhosts.read().values().map(|vh| count(vh)).sum()
    }

    /// Refuses a definitions import that would create `queues` new queues and `exchanges`
    /// new exchanges past `--max-queues` / `--max-exchanges`, before it changes anything
    /// (each declare still checks its cap, for declares racing the import).
    pub(crate) fn check_import_caps(
        &self,
        queues: usize,
        exchanges: usize,
    ) -> Result<(), BrokerError> {
        let limits = &self.inner.config.limits;
        let have_queues = self.count_in_vhosts(|vh| vh.queues.read().len());
        let have_exchanges =
            self.count_in_vhosts(|vh| vh.exchanges.read().values().filter(|e| !e.builtin).count());
        for (kind, have, new, max, flag) in [
            (
                "queue",
                have_queues,
                queues,
                limits.max_queues,
                "--max-queues",
            ),
            (
                "exchange",
                have_exchanges,
                exchanges,
                limits.max_exchanges,
                "--max-exchanges",
            ),
        ] {
            if have.saturating_add(new) > max {
                return Err(BrokerError::PreconditionFailed(format!(
                    "definitions: importing would create {new} {kind}s where {have} exist, \
                     more than the server's {kind} limit ({max}; warren serve {flag}); \
                     nothing was imported"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses declaring one more `kind` when `count` have reached `max`, naming the flag.
fn at_most(
    kind: &str,
    name: &str,
    count: usize,
    max: usize,
    flag: &str,
) -> Result<(), BrokerError> {
    if count >= max {
        return Err(BrokerError::PreconditionFailed(format!(
            "cannot declare {kind} '{}': the server's {kind} limit ({max}) is reached \
             (warren serve {flag})",
            crate::clip::name(name)
        )));
    }
    Ok(())
}
