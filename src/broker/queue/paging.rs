//! [`BodySource`]: where a queue reads paged-out bodies back from.
//!
//! The state machine never reads a body: when a paged-out message reaches the head it asks
//! for a refill (`Effects::refill`) and is handed the bodies later
//! (`QueueCore::finish_refill`). The shell reads them through this trait, on a blocking
//! thread: from a store snapshot in the broker, from a map in tests ([`MemoryBodies`]).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::commit::BrokerStore;
use crate::message::Message;
use crate::store::StoreError;

/// A source of message bodies by id.
pub trait BodySource: Send + Sync + std::fmt::Debug {
    /// The messages `ids` name, in the same order; `None` where there is no such message
    /// (a store inconsistency the queue reports and repairs).
    ///
    /// # Errors
    /// The read failed; the queue tries again on its next dispatch.
    fn read_bodies(&self, ids: &[u64]) -> Result<Vec<Option<Arc<Message>>>, StoreError>;
}

impl BodySource for BrokerStore {
    fn read_bodies(&self, ids: &[u64]) -> Result<Vec<Option<Arc<Message>>>, StoreError> {
        self.read_messages(ids)
    }
}

/// Bodies kept in a map: a stand-in for the store in tests.
#[derive(Debug, Default)]
pub struct MemoryBodies {
    bodies: Mutex<HashMap<u64, Arc<Message>>>,
}

impl MemoryBodies {
    /// Keeps `message` as the body of `id`.
    pub fn insert(&self, id: u64, message: Arc<Message>) {
        self.bodies.lock().insert(id, message);
    }
}

impl BodySource for MemoryBodies {
    fn read_bodies(&self, ids: &[u64]) -> Result<Vec<Option<Arc<Message>>>, StoreError> {
        let bodies = self.bodies.lock();
        Ok(ids.iter().map(|id| bodies.get(id).cloned()).collect())
    }
}
