//! [`Ready`]: a queue's ready messages in the order they go out.
//!
//! A plain queue keeps one FIFO. A priority queue (`x-max-priority`) keeps one FIFO per
//! priority level, as RabbitMQ's classic priority queues do, and its head is the head of the
//! highest non-empty level: higher priority first, FIFO within a priority. Every operation
//! picks its shape with one `match`, so a plain queue pays a branch and nothing else for
//! priorities existing. A priority queue pays, per operation, a walk down from its highest
//! non-empty level ([`Ready::Levels`]'s `top`): cheap for the few levels RabbitMQ
//! recommends (docs/queues.md).
//!
//! The level of an entry is its [`QueuedMessage::priority`], which the core has already
//! capped at the queue's max; it is capped again here so a stray value cannot index out of
//! range.

use std::collections::{vec_deque, VecDeque};

use crate::message::QueuedMessage;

/// A queue's ready messages, head first.
///
/// The methods are `#[inline]` and the priority side lives in [`Levels`], out of line, so
/// a plain queue's calls compile to the `VecDeque` call behind one branch, as before.
#[derive(Debug)]
pub enum Ready {
    /// A plain queue: one FIFO.
    Fifo(VecDeque<QueuedMessage>),
    /// A priority queue.
    Levels(Levels),
}

/// A priority queue's ready messages: one FIFO per priority level.
#[derive(Debug)]
pub struct Levels {
    /// `levels[p]` holds the messages of priority `p`, `0..=max`, each FIFO.
    levels: Box<[VecDeque<QueuedMessage>]>,
    /// Every level above this one is empty (an upper bound: lowered when a pop finds the
    /// levels above empty, raised by every push), so finding the head does not walk empty
    /// high levels again and again.
    top: usize,
    /// Messages over all levels.
    len: usize,
}

impl Ready {
    /// An empty list: one FIFO, or levels `0..=max` with `max_priority`.
    pub fn new(max_priority: Option<u8>) -> Ready {
        match max_priority {
            None => Ready::Fifo(VecDeque::new()),
            Some(max) => Ready::Levels(Levels {
                levels: (0..=max).map(|_| VecDeque::new()).collect(),
                top: 0,
                len: 0,
            }),
        }
    }

    /// How many messages are ready.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Ready::Fifo(q) => q.len(),
            Ready::Levels(l) => l.len,
        }
    }

    /// Whether none is.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message that goes out next.
    #[inline]
    pub fn front(&self) -> Option<&QueuedMessage> {
        match self {
            Ready::Fifo(q) => q.front(),
            Ready::Levels(l) => l.front(),
        }
    }

    /// Takes the message that goes out next.
    #[inline]
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        match self {
            Ready::Fifo(q) => {
                let e = q.pop_front();
                shrink_if_sparse(q);
                e
            }
            Ready::Levels(l) => l.pop_front(),
        }
    }

    /// Appends a message at the tail of its priority.
    #[inline]
    pub fn push_back(&mut self, e: QueuedMessage) {
        match self {
            Ready::Fifo(q) => q.push_back(e),
            Ready::Levels(l) => l.push(e, VecDeque::push_back),
        }
    }

    /// Puts a message at the head of its priority (a redelivery).
    #[inline]
    pub fn push_front(&mut self, e: QueuedMessage) {
        match self {
            Ready::Fifo(q) => q.push_front(e),
            Ready::Levels(l) => l.push(e, VecDeque::push_front),
        }
    }

    /// Whether `e`, appended now, would be the head: nothing is ready ahead of it (in a
    /// priority queue, nothing of its priority or higher).
    pub fn would_lead(&self, e: &QueuedMessage) -> bool {
        match self {
            Ready::Fifo(q) => q.is_empty(),
            Ready::Levels(l) => l
                .levels
                .iter()
                .skip(level_of(e, l.levels.len()))
                .all(VecDeque::is_empty),
        }
    }

    /// Inserts a message within its priority where its id places it (a put-back).
    pub fn insert_by_id(&mut self, e: QueuedMessage) {
        fn insert(q: &mut VecDeque<QueuedMessage>, e: QueuedMessage) {
            let at = q.iter().position(|x| x.id > e.id).unwrap_or(q.len());
            q.insert(at, e);
        }
        match self {
            Ready::Fifo(q) => insert(q, e),
            Ready::Levels(l) => l.push(e, insert),
        }
    }

    /// The ready messages, head first.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            Ready::Fifo(q) => Iter::Fifo(q.iter()),
            Ready::Levels(l) => Iter::Levels(l.levels.iter().rev().flatten()),
        }
    }

    /// The ready messages, head first, to change in place (bodies loaded by a refill).
    pub fn iter_mut(&mut self) -> IterMut<'_> {
        match self {
            Ready::Fifo(q) => IterMut::Fifo(q.iter_mut()),
            Ready::Levels(l) => IterMut::Levels(l.levels.iter_mut().rev().flatten()),
        }
    }

    /// Keeps only the messages `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&QueuedMessage) -> bool) {
        match self {
            Ready::Fifo(q) => q.retain(keep),
            Ready::Levels(l) => {
                for level in l.levels.iter_mut() {
                    level.retain(&mut keep);
                }
                l.len = l.levels.iter().map(VecDeque::len).sum();
            }
        }
    }

    /// Takes out the messages `take` says yes to, head first; the rest keep their order.
    pub fn take_where(
        &mut self,
        mut take: impl FnMut(&QueuedMessage) -> bool,
    ) -> Vec<QueuedMessage> {
        let mut taken = Vec::new();
        let mut split = |q: &mut VecDeque<QueuedMessage>| {
            let mut kept = VecDeque::with_capacity(q.len());
            for e in q.drain(..) {
                if take(&e) {
                    taken.push(e);
                } else {
                    kept.push_back(e);
                }
            }
            *q = kept;
        };
        match self {
            Ready::Fifo(q) => split(q),
            Ready::Levels(l) => {
                for level in l.levels.iter_mut().rev() {
                    split(level);
                }
                l.len -= taken.len();
            }
        }
        taken
    }

    /// Takes out every message, head first.
    pub fn take_all(&mut self) -> Vec<QueuedMessage> {
        match self {
            Ready::Fifo(q) => q.drain(..).collect(),
            Ready::Levels(l) => {
                l.top = 0;
                l.len = 0;
                l.levels
                    .iter_mut()
                    .rev()
                    .flat_map(|q| q.drain(..))
                    .collect()
            }
        }
    }
}

/// Below this capacity a FIFO keeps its allocation however empty it gets: small queues
/// should not reallocate as they breathe.
const SHRINK_ABOVE: usize = 4096;

/// Halves a FIFO's allocation once it is three quarters empty, so a drained backlog gives its
/// index back (a million entries hold 40 MiB) instead of keeping its high-water mark until
/// the queue is deleted. Halving at a quarter keeps the cost amortised O(1) per pop: the
/// elements moved by one shrink are fewer than the pops since the allocation last changed.
#[inline]
fn shrink_if_sparse(q: &mut VecDeque<QueuedMessage>) {
    let cap = q.capacity();
    if cap > SHRINK_ABOVE && q.len() < cap / 4 {
        q.shrink_to(cap / 2);
    }
}

impl Levels {
    fn front(&self) -> Option<&QueuedMessage> {
        self.levels
            .get(..=self.top)?
            .iter()
            .rev()
            .find_map(VecDeque::front)
    }

    fn pop_front(&mut self) -> Option<QueuedMessage> {
        loop {
            let level = self.levels.get_mut(self.top)?;
            if let Some(e) = level.pop_front() {
                shrink_if_sparse(level);
                self.len -= 1;
                return Some(e);
            }
            if self.top == 0 {
                return None;
            }
            self.top -= 1;
        }
    }

    /// Adds `e` to its level with `add` (at the tail, the head, or by id).
    fn push(
        &mut self,
        e: QueuedMessage,
        add: impl FnOnce(&mut VecDeque<QueuedMessage>, QueuedMessage),
    ) {
        let at = level_of(&e, self.levels.len());
        add(&mut self.levels[at], e);
        self.top = self.top.max(at);
        self.len += 1;
    }
}

/// The level an entry goes to among `levels` (never 0 of them: `0..=max` with `max >= 0`).
fn level_of(e: &QueuedMessage, levels: usize) -> usize {
    usize::from(e.priority).min(levels.saturating_sub(1))
}

/// [`Ready::iter`].
#[derive(Debug)]
pub enum Iter<'a> {
    /// A plain queue's.
    Fifo(vec_deque::Iter<'a, QueuedMessage>),
    /// A priority queue's: highest level first.
    Levels(std::iter::Flatten<std::iter::Rev<std::slice::Iter<'a, VecDeque<QueuedMessage>>>>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a QueuedMessage;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Fifo(i) => i.next(),
            Iter::Levels(i) => i.next(),
        }
    }
}

/// [`Ready::iter_mut`].
#[derive(Debug)]
pub enum IterMut<'a> {
    /// A plain queue's.
    Fifo(vec_deque::IterMut<'a, QueuedMessage>),
    /// A priority queue's: highest level first.
    Levels(std::iter::Flatten<std::iter::Rev<std::slice::IterMut<'a, VecDeque<QueuedMessage>>>>),
}

impl<'a> Iterator for IterMut<'a> {
    type Item = &'a mut QueuedMessage;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            IterMut::Fifo(i) => i.next(),
            IterMut::Levels(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, priority: u8) -> QueuedMessage {
        QueuedMessage {
            early: 0,
            id,
            message: None,
            size: 1,
            delivery_count: 0,
            acquired_count: 0,
            stored: false,
            expires_at: 0,
            priority,
        }
    }

    fn ids(r: &Ready) -> Vec<u64> {
        r.iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_plain_list_ignores_priorities() {
        let mut r = Ready::new(None);
        for (id, p) in [(1, 0), (2, 9), (3, 5)] {
            r.push_back(entry(id, p));
        }
        assert_eq!(ids(&r), [1, 2, 3]);
        r.push_front(entry(0, 9));
        assert_eq!(r.pop_front().map(|e| e.id), Some(0));
        assert!(!r.would_lead(&entry(4, 9)));
    }

    #[test]
    fn levels_go_out_highest_first_fifo_within_and_redeliveries_at_the_head_of_theirs() {
        let mut r = Ready::new(Some(3));
        for (id, p) in [(1, 0), (2, 2), (3, 2), (4, 3), (5, 0), (6, 9)] {
            r.push_back(entry(id, p));
        }
        // 9 counts as the max, 3.
        assert_eq!(ids(&r), [4, 6, 2, 3, 1, 5]);
        assert_eq!(r.len(), 6);
        assert!(!r.would_lead(&entry(7, 9)));
        r.push_front(entry(0, 0));
        assert_eq!(ids(&r), [4, 6, 2, 3, 0, 1, 5]);
        let out: Vec<u64> = std::iter::from_fn(|| r.pop_front().map(|e| e.id)).collect();
        assert_eq!(out, [4, 6, 2, 3, 0, 1, 5]);
        assert!(r.is_empty());
        assert!(r.would_lead(&entry(8, 0)));
        // The head is found again after the top levels empty and refill.
        r.push_back(entry(9, 1));
        assert_eq!(r.front().map(|e| e.id), Some(9));
        r.push_back(entry(10, 2));
        assert_eq!(r.front().map(|e| e.id), Some(10));
        assert!(r.would_lead(&entry(11, 3)));
        assert!(!r.would_lead(&entry(11, 2)));
    }

    #[test]
    fn a_drained_backlog_gives_its_allocation_back() {
        for max_priority in [None, Some(2)] {
            let mut r = Ready::new(max_priority);
            for id in 0..100_000 {
                r.push_back(entry(id, 1));
            }
            let capacity = |r: &Ready| match r {
                Ready::Fifo(q) => q.capacity(),
                Ready::Levels(l) => l.levels.iter().map(VecDeque::capacity).sum(),
            };
            assert!(capacity(&r) >= 100_000);
            let mut next = 0;
            while r.len() > 10 {
                assert_eq!(r.pop_front().map(|e| e.id), Some(next), "order kept");
                next += 1;
            }
            assert!(capacity(&r) <= 2 * SHRINK_ABOVE, "{}", capacity(&r));
            // A queue that stays small keeps its allocation.
            for id in 100_000..103_000 {
                r.push_back(entry(id, 1));
            }
            let settled = capacity(&r);
            for _ in 0..10 {
                let e = r.pop_front().expect("ready");
                r.push_back(e);
            }
            assert_eq!(capacity(&r), settled);
        }
    }

    #[test]
    fn take_where_and_insert_by_id_keep_the_order() {
        let mut r = Ready::new(Some(1));
        for (id, p) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
            r.push_back(entry(id, p));
        }
        let taken = r.take_where(|e| e.id % 2 == 1);
        assert_eq!(taken.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(ids(&r), [2, 4]);
        assert_eq!(r.len(), 2);
        r.insert_by_id(entry(3, 1));
        assert_eq!(ids(&r), [2, 3, 4]);
        r.retain(|e| e.id != 2);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.take_all().iter().map(|e| e.id).collect::<Vec<_>>(),
            [3, 4]
        );
        assert!(r.is_empty());
    }
}
