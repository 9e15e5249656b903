//! [`Queue`]: ready messages in FIFO order, the consumers sharing them round-robin, and the
//! paging of bodies between memory and the store.
//!
//! Every field that changes lives in one `parking_lot::Mutex` held only for short, non-async
//! sections. Lock order: a queue's lock may be held while taking a session's lock, never the
//! reverse.
//!
//! # Memory policy
//! A queue keeps every message's metadata in memory (id, size, delivery count: a few dozen
//! bytes), but bodies only for the first [`QueueContext::window_bytes`] of ready messages.
//! A stored message enqueued past that window is kept without its body; when it comes within
//! reach of a consumer the queue reads a batch of bodies back from a store snapshot, off the
//! async threads. Transient messages are never paged: they exist only in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use warren_protocol::FieldTable;

use super::consumer::Consumer;
use super::session::{Outbound, Unacked};
use crate::message::{Message, QueuedMessage};
use crate::store::Store;

/// How many paged-out bodies one refill reads.
const REFILL_BATCH: usize = 512;

/// What every queue shares: the store to page from and the runtime to page on.
#[derive(Debug)]
pub struct QueueContext {
    /// The store.
    pub store: Store,
    /// Runtime for the blocking reads.
    pub runtime: tokio::runtime::Handle,
    /// Bytes of ready bodies a queue keeps in memory before paging new stored ones out.
    pub window_bytes: u64,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Numeric id (store key prefix).
    pub id: u64,
    /// Name.
    pub name: Arc<str>,
    /// Survives restarts, and so do its persistent messages.
    pub durable: bool,
    /// The connection that owns it, if exclusive.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declared arguments.
    pub arguments: FieldTable,
    deleted: AtomicBool,
    state: Mutex<QueueState>,
    ctx: Arc<QueueContext>,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<QueuedMessage>,
    ready_bytes: u64,
    resident_bytes: u64,
    unacked: u64,
    consumers: Vec<Arc<Consumer>>,
    next_consumer: usize,
    had_consumer: bool,
    refilling: bool,
}

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready messages.
    pub ready: u64,
    /// Ready bytes.
    pub ready_bytes: u64,
    /// Delivered, not yet settled.
    pub unacked: u64,
    /// Attached consumers.
    pub consumers: u32,
}

impl Queue {
    /// A new, empty queue.
    pub fn new(
        id: u64,
        name: Arc<str>,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
        ctx: Arc<QueueContext>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            id,
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            deleted: AtomicBool::new(false),
            state: Mutex::new(QueueState::default()),
            ctx,
        })
    }

    /// Whether the queue has been deleted (routing may still hold a reference for a moment).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Its counters.
    pub fn counts(&self) -> QueueCounts {
        let st = self.state.lock();
        QueueCounts {
            ready: st.ready.len() as u64,
            ready_bytes: st.ready_bytes,
            unacked: st.unacked,
            consumers: u32::try_from(st.consumers.len()).unwrap_or(u32::MAX),
        }
    }

    /// Appends a message (after its commit) and hands it on if a consumer has room.
    pub fn enqueue(self: &Arc<Self>, mut entry: QueuedMessage) {
        let mut st = self.state.lock();
        if self.is_deleted() {
            return;
        }
        st.ready_bytes += u64::from(entry.size);
        if entry.message.is_some() {
            if entry.stored && st.resident_bytes >= self.ctx.window_bytes {
                entry.message = None;
            } else {
                st.resident_bytes += u64::from(entry.size);
            }
        }
        st.ready.push_back(entry);
        self.dispatch_locked(&mut st);
    }

    /// Loads recovered messages (ids ascending). Bodies come later, by paging.
    pub fn restore(self: &Arc<Self>, entries: impl IntoIterator<Item = QueuedMessage>) {
        let mut st = self.state.lock();
        for e in entries {
            st.ready_bytes += u64::from(e.size);
            st.ready.push_back(e);
        }
    }

    /// Puts settled-but-requeued deliveries back at the head, in their original order.
    pub fn requeue(self: &Arc<Self>, mut entries: Vec<QueuedMessage>) {
        if entries.is_empty() {
            return;
        }
        entries.sort_unstable_by_key(|e| e.id);
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(entries.len() as u64);
        if self.is_deleted() {
            return;
        }
        for e in entries.into_iter().rev() {
            st.ready_bytes += u64::from(e.size);
            if e.message.is_some() {
                st.resident_bytes += u64::from(e.size);
            }
            st.ready.push_front(e);
        }
        self.dispatch_locked(&mut st);
    }

    /// Records that `n` deliveries from this queue were settled without requeue.
    pub fn settled(self: &Arc<Self>, n: u64) {
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(n);
        self.dispatch_locked(&mut st);
    }

    /// Hands ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        let n = st.consumers.len();
        if n == 0 || self.is_deleted() {
            return;
        }
        let mut no_ack_removed = Vec::new();
        let mut idle = 0;
        while idle < n {
            let Some(head) = st.ready.front() else { break };
            if head.message.is_none() {
                self.start_refill(st);
                break;
            }
            let idx = st.next_consumer % n;
            st.next_consumer = st.next_consumer.wrapping_add(1);
            let Some(consumer) = st.consumers.get(idx).cloned() else {
                break;
            };
            if !consumer.has_credit() {
                idle += 1;
                continue;
            }
            idle = 0;
            let Some(entry) = st.ready.pop_front() else {
                break;
            };
            st.ready_bytes = st.ready_bytes.saturating_sub(u64::from(entry.size));
            st.resident_bytes = st.resident_bytes.saturating_sub(u64::from(entry.size));
            let tracked = if consumer.no_ack {
                if entry.stored {
                    no_ack_removed.push((self.id, entry.id));
                }
                None
            } else {
                st.unacked += 1;
                Some(Unacked {
                    queue: self.clone(),
                    consumer: Some(consumer.clone()),
                    entry: entry.clone(),
                })
            };
            let delivery_tag = consumer.session.record_delivery(tracked);
            consumer.on_sent();
            let _ = consumer.session.outbound.send(Outbound::Deliver {
                consumer: consumer.clone(),
                delivery_tag,
                entry,
            });
        }
        if !no_ack_removed.is_empty() {
            self.ctx.store.remove_internal(no_ack_removed);
        }
    }

    fn start_refill(self: &Arc<Self>, st: &mut QueueState) {
        if st.refilling {
            return;
        }
        let ids: Vec<u64> = st
            .ready
            .iter()
            .filter(|e| e.message.is_none())
            .take(REFILL_BATCH)
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        st.refilling = true;
        let queue = self.clone();
        let store = self.ctx.store.clone();
        self.ctx.runtime.spawn_blocking(move || {
            let loaded = store.read_messages(&ids);
            queue.finish_refill(&ids, loaded);
        });
    }

    fn finish_refill(
        self: &Arc<Self>,
        ids: &[u64],
        loaded: Result<Vec<Option<Arc<Message>>>, crate::store::StoreError>,
    ) {
        let mut st = self.state.lock();
        st.refilling = false;
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(queue = %self.name, error = %e, "paging message bodies in failed");
                return;
            }
        };
        let mut by_id: HashMap<u64, Option<Arc<Message>>> =
            ids.iter().copied().zip(loaded).collect();
        let scan_limit = ids.len().saturating_mul(4).max(REFILL_BATCH);
        let mut resident_added = 0u64;
        let mut missing = Vec::new();
        for (i, e) in st.ready.iter_mut().enumerate() {
            if by_id.is_empty() || i >= scan_limit {
                break;
            }
            if e.message.is_some() {
                continue;
            }
            match by_id.remove(&e.id) {
                Some(Some(m)) => {
                    e.message = Some(m);
                    resident_added += u64::from(e.size);
                }
                Some(None) => missing.push(e.id),
                None => {}
            }
        }
        st.resident_bytes += resident_added;
        if !missing.is_empty() {
            // A queue entry whose message row is gone: the store is inconsistent. Say so
            // loudly and drop the entries, which cannot be delivered.
            tracing::error!(queue = %self.name, ids = ?missing, "queue entries without a stored message; dropping them");
            st.ready.retain(|e| !missing.contains(&e.id));
            let gone: Vec<(u64, u64)> = missing.iter().map(|m| (self.id, *m)).collect();
            self.ctx.store.remove_internal(gone);
        }
        self.dispatch_locked(&mut st);
    }

    /// Takes the head message for `Get`. Its body may still need loading
    /// ([`Queue::load_body`]). Returns the message and how many stay ready.
    pub fn take_one(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u64)> {
        let mut st = self.state.lock();
        let entry = st.ready.pop_front()?;
        st.ready_bytes = st.ready_bytes.saturating_sub(u64::from(entry.size));
        if entry.message.is_some() {
            st.resident_bytes = st.resident_bytes.saturating_sub(u64::from(entry.size));
        }
        if !no_ack {
            st.unacked += 1;
        }
        Some((entry, st.ready.len() as u64))
    }

    /// Reads a paged-out body back from the store.
    pub async fn load_body(
        &self,
        entry: &mut QueuedMessage,
    ) -> Result<(), crate::store::StoreError> {
        if entry.message.is_some() {
            return Ok(());
        }
        let store = self.ctx.store.clone();
        let id = entry.id;
        let loaded = tokio::task::spawn_blocking(move || store.read_messages(&[id]))
            .await
            .map_err(|_| crate::store::StoreError::Closed)??;
        entry.message = loaded.into_iter().next().flatten();
        Ok(())
    }

    /// Attaches a consumer and starts deliveries to it.
    ///
    /// # Errors
    /// A message for the client when an exclusive consumer holds the queue, or when this one
    /// wants exclusivity and others are attached.
    pub fn add_consumer(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<(), String> {
        let mut st = self.state.lock();
        if st.consumers.iter().any(|c| c.exclusive) {
            return Err(format!("queue '{}' has an exclusive consumer", self.name));
        }
        if consumer.exclusive && !st.consumers.is_empty() {
            return Err(format!(
                "cannot consume queue '{}' exclusively: it has {} consumer(s)",
                self.name,
                st.consumers.len()
            ));
        }
        st.consumers.push(consumer);
        st.had_consumer = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Detaches a consumer. Returns true when the queue should now be auto-deleted.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        consumer.deactivate();
        let mut st = self.state.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.auto_delete && st.had_consumer && st.consumers.is_empty() && !self.is_deleted()
    }

    /// Removes every ready message; returns the removed ones (their store rows are the
    /// caller's to delete).
    pub fn purge(&self) -> Vec<QueuedMessage> {
        let mut st = self.state.lock();
        st.ready_bytes = 0;
        st.resident_bytes = 0;
        st.ready.drain(..).collect()
    }

    /// Marks the queue deleted and empties it. Returns its consumers (to notify) and the
    /// number of ready messages it held. Store rows go with the queue's store deletion.
    pub fn mark_deleted(&self) -> (Vec<Arc<Consumer>>, u64) {
        let mut st = self.state.lock();
        self.deleted.store(true, Ordering::Release);
        let count = st.ready.len() as u64;
        st.ready.clear();
        st.ready_bytes = 0;
        st.resident_bytes = 0;
        let consumers: Vec<Arc<Consumer>> = st.consumers.drain(..).collect();
        for c in &consumers {
            c.deactivate();
        }
        (consumers, count)
    }
}
