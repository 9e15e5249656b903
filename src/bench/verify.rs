//! Exactly-once-per-queue checking. Every body starts with a [`Stamp`] (producer,
//! sequence, send time); each consumer records what it got in a [`Tally`]; at the end the
//! tallies are merged and compared with what routing says each queue should have got
//! ([`verify`]). A missing message, a message on a queue routing does not send it to, or a
//! second delivery without the redelivered flag is a failed run, not a statistic.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// Bytes the stamp takes at the start of every body: producer (u32), sequence (u64) and
/// send time in µs since the Unix epoch (u64), little-endian.
pub const STAMP_LEN: usize = 20;

/// Who sent a message, its place in that producer's sequence, and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The producer's index.
    pub producer: u32,
    /// The message's sequence number within its producer, from 0.
    pub seq: u64,
    /// When it was sent, µs since the Unix epoch.
    pub sent_us: u64,
}

impl Stamp {
    /// Appends the stamp to `buf`.
    pub fn write(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.producer);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.sent_us);
    }

    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `body` (a body kept between
    /// messages); a shorter body is left as it is.
    pub fn put(&self, body: &mut [u8]) {
        let Some(dst) = body.get_mut(..STAMP_LEN) else {
            return;
        };
        let mut at: &mut [u8] = dst;
        at.put_u32_le(self.producer);
        at.put_u64_le(self.seq);
        at.put_u64_le(self.sent_us);
    }

    /// Reads the stamp at the start of `body`; `None` when the body is too short.
    pub fn read(body: &[u8]) -> Option<Stamp> {
        let producer = u32::from_le_bytes(body.get(0..4)?.try_into().ok()?);
        let seq = u64::from_le_bytes(body.get(4..12)?.try_into().ok()?);
        let sent_us = u64::from_le_bytes(body.get(12..20)?.try_into().ok()?);
        Some(Stamp {
            producer,
            seq,
            sent_us,
        })
    }
}

/// Which queues a message reaches: routing, as the verifier knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Message `seq` of producer `p` reaches queue `(seq + p) % queues` only.
    RoundRobin,
    /// Every queue gets every message.
    All,
}

impl Routing {
    /// The one queue message `seq` of `producer` goes to, or `None` when it goes to all.
    pub fn queue_of(self, producer: u32, seq: u64, queues: usize) -> Option<usize> {
        match self {
            Routing::RoundRobin => {
                let k = queues.max(1) as u64;
                usize::try_from((seq + u64::from(producer)) % k).ok()
            }
            Routing::All => None,
        }
    }

    /// How many of the first `published` messages of `producer` reach `queue`.
    pub fn expected(self, producer: u32, published: u64, queue: usize, queues: usize) -> u64 {
        match self {
            Routing::All => published,
            Routing::RoundRobin => {
                let k = queues.max(1) as u64;
                let first = first_seq(producer, queue as u64, k);
                if first >= published {
                    0
                } else {
                    (published - first).div_ceil(k)
                }
            }
        }
    }
}

/// The first sequence number of `producer` that round-robin routing sends to `queue`.
fn first_seq(producer: u32, queue: u64, k: u64) -> u64 {
    (queue + k - u64::from(producer) % k) % k
}

/// The sequence numbers one queue got from one producer.
#[derive(Debug, Clone, Default)]
struct Seen {
    bits: Vec<u64>,
    /// Sequence numbers that arrived at least once with the redelivered flag.
    redelivered: Vec<u64>,
}

fn get(bits: &[u64], i: u64) -> bool {
    let word = usize::try_from(i / 64).unwrap_or(usize::MAX);
    bits.get(word).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set(bits: &mut Vec<u64>, i: u64) {
    let word = usize::try_from(i / 64).unwrap_or(usize::MAX);
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    bits[word] |= 1 << (i % 64);
}

/// What one consumer (or several, merged) received.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Looked up once per delivery: foldhash, as SipHash's cost showed per message.
    seen: foldhash::HashMap<(usize, u32), Seen>,
    /// Second deliveries of a message to the same queue that carried the redelivered flag
    /// (at-least-once: allowed, reported).
    pub redelivered_duplicates: u64,
    /// Second deliveries without the redelivered flag: a broker bug.
    pub unexpected_duplicates: u64,
    /// Bodies too short to hold a stamp.
    pub malformed: u64,
    /// An example of an unexpected duplicate, for the error message.
    first_unexpected_duplicate: Option<(usize, u32, u64)>,
}

impl Tally {
    /// Records a delivery from `queue`; true when it is the first of this message there.
    pub fn record(&mut self, queue: usize, stamp: Stamp, redelivered: bool) -> bool {
        let seen = self.seen.entry((queue, stamp.producer)).or_default();
        let first = !get(&seen.bits, stamp.seq);
        if first {
            set(&mut seen.bits, stamp.seq);
        } else if redelivered || get(&seen.redelivered, stamp.seq) {
            self.redelivered_duplicates += 1;
        } else {
            self.unexpected_duplicates += 1;
            self.first_unexpected_duplicate
                .get_or_insert((queue, stamp.producer, stamp.seq));
        }
        if redelivered {
            set(&mut seen.redelivered, stamp.seq);
        }
        first
    }

    /// Adds what another consumer received. A message both got (two consumers on one queue)
    /// is a duplicate, allowed when either delivery carried the redelivered flag.
    pub fn merge(&mut self, other: Tally) {
        self.redelivered_duplicates += other.redelivered_duplicates;
        self.unexpected_duplicates += other.unexpected_duplicates;
        self.malformed += other.malformed;
        if self.first_unexpected_duplicate.is_none() {
            self.first_unexpected_duplicate = other.first_unexpected_duplicate;
        }
        for (key, theirs) in other.seen {
            let ours = self.seen.entry(key).or_default();
            if ours.bits.len() < theirs.bits.len() {
                ours.bits.resize(theirs.bits.len(), 0);
            }
            if ours.redelivered.len() < theirs.redelivered.len() {
                ours.redelivered.resize(theirs.redelivered.len(), 0);
            }
            for (w, (a, b)) in ours.bits.iter_mut().zip(&theirs.bits).enumerate() {
                let both = *a & *b;
                if both != 0 {
                    let excused = ours.redelivered.get(w).copied().unwrap_or(0)
                        | theirs.redelivered.get(w).copied().unwrap_or(0);
                    self.redelivered_duplicates += u64::from((both & excused).count_ones());
                    let bad = both & !excused;
                    if bad != 0 {
                        self.unexpected_duplicates += u64::from(bad.count_ones());
                        self.first_unexpected_duplicate.get_or_insert((
                            key.0,
                            key.1,
                            w as u64 * 64 + u64::from(bad.trailing_zeros()),
                        ));
                    }
                }
                *a |= *b;
            }
            for (a, b) in ours.redelivered.iter_mut().zip(&theirs.redelivered) {
                *a |= *b;
            }
        }
    }
}

/// The outcome of comparing what arrived with what routing says should have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Deliveries routing calls for (each message once per queue it reaches).
    pub expected: u64,
    /// Of those, how many arrived (at least once).
    pub arrived: u64,
    /// Expected deliveries that never arrived.
    pub missing: u64,
    /// Distinct messages that arrived on a queue routing does not send them to, or that
    /// were never published.
    pub misrouted: u64,
    /// Second deliveries with the redelivered flag (allowed: at-least-once).
    pub redelivered_duplicates: u64,
    /// Second deliveries without the redelivered flag.
    pub unexpected_duplicates: u64,
    /// Bodies without a stamp.
    pub malformed: u64,
    /// The first missing delivery found, as (queue, producer, sequence).
    pub first_missing: Option<(usize, u32, u64)>,
    /// The first unexpected duplicate, as (queue, producer, sequence).
    pub first_unexpected_duplicate: Option<(usize, u32, u64)>,
}

impl Verdict {
    /// Every expected delivery arrived, nothing else did, and no duplicate lacked the
    /// redelivered flag.
    pub fn is_ok(&self) -> bool {
        self.missing == 0
            && self.misrouted == 0
            && self.unexpected_duplicates == 0
            && self.malformed == 0
    }

    /// One line saying what went wrong (or that nothing did).
    pub fn describe(&self) -> String {
        if self.is_ok() {
            return format!(
                "all {} expected deliveries arrived exactly once per queue ({} redelivered duplicates)",
                self.expected, self.redelivered_duplicates
            );
        }
        let mut parts = Vec::new();
        if self.missing > 0 {
            let at = self
                .first_missing
                .map(|(q, p, s)| format!(" (first: queue {q}, producer {p}, sequence {s})"))
                .unwrap_or_default();
            parts.push(format!(
                "{} of {} expected deliveries never arrived{at}",
                self.missing, self.expected
            ));
        }
        if self.misrouted > 0 {
            parts.push(format!(
                "{} messages arrived on a queue routing does not send them to (or were never published)",
                self.misrouted
            ));
        }
        if self.unexpected_duplicates > 0 {
            let at = self
                .first_unexpected_duplicate
                .map(|(q, p, s)| format!(" (first: queue {q}, producer {p}, sequence {s})"))
                .unwrap_or_default();
            parts.push(format!(
                "{} duplicate deliveries without the redelivered flag{at}",
                self.unexpected_duplicates
            ));
        }
        if self.malformed > 0 {
            parts.push(format!("{} bodies without a bench stamp", self.malformed));
        }
        parts.join("; ")
    }
}

/// Compares `tally` with what routing says: producer `p` published messages
/// `0..published[p]`, spread over `queues` queues by `routing`.
pub fn verify(tally: &Tally, published: &[u64], queues: usize, routing: Routing) -> Verdict {
    let mut v = Verdict {
        redelivered_duplicates: tally.redelivered_duplicates,
        unexpected_duplicates: tally.unexpected_duplicates,
        malformed: tally.malformed,
        first_unexpected_duplicate: tally.first_unexpected_duplicate,
        ..Verdict::default()
    };
    let empty = Seen::default();
    let k = queues.max(1) as u64;
    for q in 0..queues {
        for (p, &n) in published.iter().enumerate() {
            let p = u32::try_from(p).unwrap_or(u32::MAX);
            let seen = tally.seen.get(&(q, p)).unwrap_or(&empty);
            let (first, step) = match routing {
                Routing::All => (0, 1),
                Routing::RoundRobin => (first_seq(p, q as u64, k), k),
            };
            let mut found = 0u64;
            let mut seq = first;
            while seq < n {
                if get(&seen.bits, seq) {
                    found += 1;
                } else {
                    v.first_missing.get_or_insert((q, p, seq));
                }
                seq += step;
            }
            let expected = routing.expected(p, n, q, queues);
            let distinct: u64 = seen.bits.iter().map(|w| u64::from(w.count_ones())).sum();
            v.expected += expected;
            v.arrived += found;
            v.missing += expected - found;
            v.misrouted += distinct - found;
        }
    }
    // Producers beyond `published` (a corrupt stamp) or queues beyond `queues`.
    for ((q, p), seen) in &tally.seen {
        if *q >= queues || *p as usize >= published.len() {
            v.misrouted += seen
                .bits
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(producer: u32, seq: u64) -> Stamp {
        Stamp {
            producer,
            seq,
            sent_us: 0,
        }
    }

    /// Every message of 2 producers × 10 delivered where round-robin over 3 queues sends it.
    fn complete_round_robin() -> Tally {
        let mut t = Tally::default();
        for p in 0..2 {
            for s in 0..10 {
                let q = Routing::RoundRobin.queue_of(p, s, 3).unwrap();
                assert!(t.record(q, stamp(p, s), false));
            }
        }
        t
    }

    #[test]
    fn stamp_round_trips_and_short_bodies_have_none() {
        let mut b = BytesMut::new();
        let s = Stamp {
            producer: 7,
            seq: 1 << 40,
            sent_us: 123_456_789,
        };
        s.write(&mut b);
        assert_eq!(b.len(), STAMP_LEN);
        assert_eq!(Stamp::read(&b), Some(s));
        assert_eq!(Stamp::read(&b[..STAMP_LEN - 1]), None);
    }

    #[test]
    fn a_complete_run_verifies() {
        let v = verify(&complete_round_robin(), &[10, 10], 3, Routing::RoundRobin);
        assert!(v.is_ok(), "{v:?}");
        assert_eq!(v.expected, 20);
        assert_eq!(v.arrived, 20);
    }

    #[test]
    fn round_robin_expected_counts_add_up() {
        for k in 1..6 {
            for p in 0..4 {
                for n in 0..13 {
                    let sum: u64 = (0..k)
                        .map(|q| Routing::RoundRobin.expected(p, n, q, k))
                        .sum();
                    assert_eq!(sum, n, "k {k} p {p} n {n}");
                }
            }
        }
    }

    #[test]
    fn a_lost_message_fails_the_run() {
        let mut t = Tally::default();
        for p in 0..2 {
            for s in 0..10 {
                if (p, s) == (1, 4) {
                    continue;
                }
                let q = Routing::RoundRobin.queue_of(p, s, 3).unwrap();
                t.record(q, stamp(p, s), false);
            }
        }
        let v = verify(&t, &[10, 10], 3, Routing::RoundRobin);
        assert!(!v.is_ok());
        assert_eq!(v.missing, 1);
        assert_eq!(v.first_missing, Some((2, 1, 4)));
        assert!(v.describe().contains("1 of 20"), "{}", v.describe());
    }

    #[test]
    fn the_last_message_lost_fails_the_run() {
        // Nothing arrived beyond the loss to give it away: only `published` can.
        let mut t = Tally::default();
        for s in 0..9 {
            t.record(0, stamp(0, s), false);
        }
        let v = verify(&t, &[10], 1, Routing::All);
        assert_eq!(v.missing, 1);
        assert!(!v.is_ok());
    }

    #[test]
    fn fanout_wants_every_message_on_every_queue() {
        let mut t = Tally::default();
        for q in 0..3 {
            for s in 0..5 {
                if (q, s) != (2, 0) {
                    t.record(q, stamp(0, s), false);
                }
            }
        }
        let v = verify(&t, &[5], 3, Routing::All);
        assert_eq!((v.expected, v.missing), (15, 1));
    }

    #[test]
    fn a_message_on_the_wrong_queue_fails_the_run() {
        let mut t = complete_round_robin();
        // Producer 0's message 0 belongs on queue 0 only.
        t.record(1, stamp(0, 0), false);
        let v = verify(&t, &[10, 10], 3, Routing::RoundRobin);
        assert_eq!(v.misrouted, 1);
        assert!(!v.is_ok());
        // As does one that was never published.
        let mut t = complete_round_robin();
        t.record(1, stamp(0, 10), false);
        assert_eq!(verify(&t, &[10, 10], 3, Routing::RoundRobin).misrouted, 1);
    }

    #[test]
    fn a_duplicate_without_the_redelivered_flag_fails_the_run() {
        let mut t = complete_round_robin();
        assert!(!t.record(0, stamp(0, 0), false));
        let v = verify(&t, &[10, 10], 3, Routing::RoundRobin);
        assert_eq!(v.unexpected_duplicates, 1);
        assert_eq!(v.first_unexpected_duplicate, Some((0, 0, 0)));
        assert!(!v.is_ok());
    }

    #[test]
    fn a_redelivered_duplicate_is_reported_not_failed() {
        let mut t = complete_round_robin();
        t.record(0, stamp(0, 0), true);
        let v = verify(&t, &[10, 10], 3, Routing::RoundRobin);
        assert!(v.is_ok(), "{v:?}");
        assert_eq!(v.redelivered_duplicates, 1);
    }

    #[test]
    fn duplicates_across_consumers_of_one_queue_are_caught_in_the_merge() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for s in 0..10 {
            if s % 2 == 0 {
                a.record(0, stamp(0, s), false);
            } else {
                b.record(0, stamp(0, s), false);
            }
        }
        let mut c = Tally::default();
        c.record(0, stamp(0, 3), false); // already in b, not redelivered
        let mut d = Tally::default();
        d.record(0, stamp(0, 4), true); // already in a, redelivered
        a.merge(b);
        a.merge(c);
        a.merge(d);
        let v = verify(&a, &[10], 1, Routing::All);
        assert_eq!(v.missing, 0);
        assert_eq!(v.unexpected_duplicates, 1);
        assert_eq!(v.redelivered_duplicates, 1);
        assert_eq!(v.first_unexpected_duplicate, Some((0, 0, 3)));
        assert!(!v.is_ok());
    }
}
