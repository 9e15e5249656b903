//! [`Outbox`]: what the broker sends one connection (events and deliveries), in order, to
//! that connection's writer task.
//!
//! A `VecDeque` under a lock, and the writer's waker. It replaces tokio's unbounded mpsc
//! for memory: that channel allocates its first block of 32 slots when it is made (2.3 KB
//! of 72-byte items, per connection, idle or not), where an empty deque holds nothing and
//! grows only as deep as the connection's bursts (issue 11's S7: 10,000 connections).
//! The writer takes everything waiting with one lock (a swap of the two deques), not one
//! atomic step per item.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use super::session::Outbound;

/// Past this capacity the writer's deque is let go once it is emptied, so a burst does not
/// hold its high-water mark for the connection's life.
const KEEP_CAPACITY: usize = 64;

/// The sending side: cloned by whatever delivers to the connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the connection's writer task.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
    /// What the last swap took, head first.
    local: VecDeque<Outbound>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// The receiver was dropped: sends are refused (and their items dropped), so nothing
    /// piles up for a connection that is gone.
    closed: bool,
}

/// A new, empty outbox and its receiver.
pub fn outbox() -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared::default());
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver {
            shared,
            local: VecDeque::new(),
        },
    )
}

impl Outbox {
    /// Queues `item` for the writer and wakes it; gives the item back if the receiver is
    /// gone (the connection has ended).
    pub fn send(&self, item: Outbound) -> Result<(), Outbound> {
        {
            let mut state = self.shared.state.lock();
            if state.closed {
                return Err(item);
            }
            state.items.push_back(item);
        }
        self.shared.waker.wake();
        Ok(())
    }
}

impl OutboxReceiver {
    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        if let Some(item) = self.local.pop_front() {
            return Some(item);
        }
        if self.local.capacity() > KEEP_CAPACITY {
            self.local = VecDeque::new();
        }
        {
            let mut state = self.shared.state.lock();
            if state.items.is_empty() {
                return None;
            }
            // Ours is empty: the senders carry on into it while we work through theirs.
            std::mem::swap(&mut state.items, &mut self.local);
        }
        self.local.pop_front()
    }

    /// Waits for the next item. Cancel-safe: an item is taken only when this returns it.
    pub async fn recv(&mut self) -> Outbound {
        poll_fn(|cx| {
            if let Some(item) = self.try_recv() {
                return Poll::Ready(item);
            }
            self.shared.waker.register(cx.waker());
            // A send between the look above and the registration woke no one: look again.
            match self.try_recv() {
                Some(item) => Poll::Ready(item),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Lets the receiver's own deque go if it is empty: called when the writer is about to
    /// wait, so an idle connection holds at most the senders' deque.
    pub fn release_if_idle(&mut self) {
        if self.local.is_empty() {
            self.local = VecDeque::new();
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.shared.state.lock().items.is_empty()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        state.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::event::Event;

    fn event(request_id: u64) -> Outbound {
        Outbound::Event {
            request_id,
            event: Event::Ok,
        }
    }

    fn id(item: Outbound) -> u64 {
        match item {
            Outbound::Event { request_id, .. } => request_id,
            Outbound::Deliver { delivery_tag, .. } => delivery_tag,
        }
    }

    #[test]
    fn items_come_out_in_order_across_swaps() {
        let (tx, mut rx) = outbox();
        assert!(rx.is_empty());
        for i in 0..10 {
            tx.send(event(i)).expect("open");
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(id(rx.try_recv().expect("waiting")));
        }
        // Sent while the receiver works through its swapped-out batch: after it.
        for i in 10..20 {
            tx.clone().send(event(i)).expect("open");
        }
        while let Some(item) = rx.try_recv() {
            got.push(id(item));
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(rx.is_empty());
    }

    #[test]
    fn a_burst_does_not_keep_its_allocation() {
        let (tx, mut rx) = outbox();
        for i in 0..10_000 {
            tx.send(event(i)).expect("open");
        }
        while rx.try_recv().is_some() {}
        assert!(rx.try_recv().is_none());
        assert!(rx.local.capacity() <= KEEP_CAPACITY);
        assert!(tx.shared.state.lock().items.capacity() <= KEEP_CAPACITY);
        // An idle connection's writer lets its own deque go.
        tx.send(event(1)).expect("open");
        assert!(rx.try_recv().is_some());
        assert!(rx.local.capacity() > 0);
        rx.release_if_idle();
        assert_eq!(rx.local.capacity(), 0);
    }

    #[test]
    fn sends_to_a_dropped_receiver_are_refused() {
        let (tx, rx) = outbox();
        tx.send(event(1)).expect("open");
        drop(rx);
        assert_eq!(tx.send(event(2)).map_err(id), Err(2));
        assert!(tx.shared.state.lock().items.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = outbox();
        let sender = tokio::spawn(async move {
            for i in 0..1_000 {
                tx.send(event(i)).expect("open");
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        for i in 0..1_000 {
            let item = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("woken");
            assert_eq!(id(item), i);
        }
        sender.await.expect("sender");
    }
}
