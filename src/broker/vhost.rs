//! [`VHost`]: one virtual host's exchanges and queues. Names are unique within a virtual
//! host; the same name in two is two different things.
//!
//! A connection looks its virtual host up once, at `Open`, and keeps the `Arc` in its
//! session: publishing, consuming and declaring then go straight to its maps, with no
//! lookup of the virtual host per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use foldhash::HashMap as FastMap;
use parking_lot::RwLock;
use warren_protocol::{ExchangeKind, FieldTable};

use super::exchange::Exchange;
use super::queue::Queue;
use super::topology::forget_queue;
use super::{validate_name, Broker};
use crate::admin_types::VhostInfo;
use crate::error::BrokerError;
use crate::store::codec::VhostRecord;
use crate::store::TopologyChange;

/// The virtual host every server has (unless deleted), and where everything stored before
/// virtual hosts lives.
pub const DEFAULT_VHOST: &str = "/";

/// The exchanges every virtual host has, which cannot be deleted.
pub const BUILTIN_EXCHANGES: [(&str, ExchangeKind); 4] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
];

/// One virtual host.
#[derive(Debug)]
pub struct VHost {
    /// Its name.
    pub name: Arc<str>,
    pub(super) exchanges: RwLock<FastMap<String, Arc<Exchange>>>,
    pub(super) queues: RwLock<FastMap<String, Arc<Queue>>>,
    /// Set when the virtual host is deleted: connections still holding it may not create
    /// anything in it any more.
    deleted: AtomicBool,
}

impl VHost {
    /// A virtual host with only the built-in exchanges.
    pub fn new(name: &str) -> Arc<VHost> {
        let exchanges = BUILTIN_EXCHANGES
            .into_iter()
            .map(|(n, kind)| {
                let e = Exchange::new(name, n.into(), kind, true, FieldTable::new(), true);
                (n.to_owned(), Arc::new(e))
            })
            .collect();
        Arc::new(VHost {
            name: name.into(),
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(FastMap::default()),
            deleted: AtomicBool::new(false),
        })
    }

    /// An exchange by name.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().get(name).cloned()
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().get(name).cloned()
    }

    /// Every queue, in no particular order.
    pub fn queue_list(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// Every exchange, in no particular order.
    pub fn exchange_list(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    /// Whether it has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(super) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }
}

impl Broker {
    /// `vhost.list`: every virtual host with how many queues it has.
    pub(crate) fn vhost_infos(&self) -> Vec<VhostInfo> {
        self.vhost_list()
            .iter()
            .map(|v| VhostInfo {
                name: v.name.to_string(),
                queues: v.queues.read().len() as u64,
            })
            .collect()
    }

    /// `vhost.add`: a new, empty virtual host (with the built-in exchanges). Nobody may open
    /// it until `permission.set` says so.
    ///
    /// # Errors
    /// A bad name, one that exists, or a store failure.
    pub(crate) async fn vhost_add(&self, name: &str) -> Result<(), BrokerError> {
        if name.is_empty() {
            return Err(BrokerError::invalid("vhost name", "is empty"));
        }
        validate_name("vhost", name)?;
        let _guard = self.inner.topology.lock().await;
        if self.vhost(name).is_some() {
            return Err(BrokerError::PreconditionFailed(format!(
                "vhost '{name}' already exists"
            )));
        }
        self.inner
            .store
            .change_topology(TopologyChange::PutVhost(VhostRecord {
                name: name.to_owned(),
            }))
            .await?;
        self.inner
            .vhosts
            .write()
            .insert(name.to_owned(), VHost::new(name));
        Ok(())
    }

    /// `vhost.delete`: the virtual host and everything in it (exchanges, queues with their
    /// messages, bindings, permissions), durably in one commit. Its consumers are cancelled
    /// and the connections in it closed with `CONNECTION_FORCED`.
    ///
    /// # Errors
    /// No such virtual host, or a store failure.
    pub(crate) async fn vhost_delete(&self, name: &str) -> Result<(), BrokerError> {
        let _guard = self.inner.topology.lock().await;
        let vh = self
            .vhost(name)
            .ok_or_else(|| BrokerError::not_found("vhost", name))?;
        self.inner
            .store
            .change_topology(TopologyChange::DeleteVhost(name.to_owned()))
            .await?;
        vh.mark_deleted();
        self.inner.vhosts.write().remove(name);
        for q in vh.queue_list() {
            let entries = q.stream.as_ref().map(|s| {
                let summary = s.summary();
                (summary.first_offset, summary.next_offset)
            });
            forget_queue(&vh, &q);
            // The commit above removed the stream's record; its entries go in batches.
            if let Some((first, next)) = entries {
                self.delete_stream_entries(q.id, first, next);
            }
        }
        vh.exchanges.write().clear();
        self.forget_vhost_permissions(name);
        // As RabbitMQ: the connections in it close (CONNECTION_FORCED).
        self.force_close_where(
            |s| s.vhost.name == vh.name,
            &format!("vhost '{}' was deleted", crate::clip::name(name)),
        );
        Ok(())
    }
}
