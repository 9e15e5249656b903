//! Topic-exchange routing table: a trie of binding-pattern words.
//!
//! Matching follows RabbitMQ's topic exchange: patterns and routing keys are
//! split on `.` into words, `*` matches exactly one word, `#` matches zero or
//! more words, and every other word (including `a*` or `#b`) is literal.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

/// Whether the empty string splits into zero words (`true`) or into one empty
/// word (`false`, which is what `str::split('.')` gives).
///
/// RabbitMQ's own splitter (`rabbit_db_topic_exchange:split_topic_key/1`) maps
/// `<<>>` to `[]`, so Warren does too (`true`): pattern `*` does not match key
/// `""`, `#` does. Empty words inside a key (`a..b`) are still words. The two
/// settings differ only when a key or a pattern is exactly `""`; every split in
/// this module, and the tests' reference matcher, go through this one switch.
const EMPTY_STRING_IS_ZERO_WORDS: bool = true;

/// Up to this many routed destinations, duplicates are found by scanning
/// `out`; past it a `HashSet` is built, so typical routes allocate nothing
/// for deduplication while huge fan-outs stay linear.
const LINEAR_DEDUPE_LIMIT: usize = 16;

/// Memo key for a `#` node that has no children: it matches whatever is left
/// of the key, so the position it was reached at does not matter.
const ANY_POSITION: usize = usize::MAX - 1;

/// Memo key for "no words left" (`usize::MAX` can never be a real suffix length).
const NO_WORDS_LEFT: usize = usize::MAX;

/// Splits a pattern or routing key into words, honouring
/// [`EMPTY_STRING_IS_ZERO_WORDS`].
fn words(s: &str) -> impl Iterator<Item = &str> {
    let count = if EMPTY_STRING_IS_ZERO_WORDS && s.is_empty() {
        0
    } else {
        usize::MAX
    };
    s.split('.').take(count)
}

/// One trie node; the pattern prefix leading here is implied by the path.
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    /// Destinations whose pattern ends exactly at this node.
    dests: HashSet<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            star: None,
            hash: None,
            dests: HashSet::new(),
        }
    }
}

impl<T> Node<T> {
    fn child(&self, word: &str) -> Option<&Node<T>> {
        match word {
            "*" => self.star.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.literal.get(word),
        }
    }

    fn child_mut(&mut self, word: &str) -> Option<&mut Node<T>> {
        match word {
            "*" => self.star.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.literal.get_mut(word),
        }
    }

    fn child_or_insert(&mut self, word: &str) -> &mut Node<T> {
        match word {
            "*" => self.star.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.literal.entry(Box::from(word)).or_default(),
        }
    }

    fn take_child(&mut self, word: &str) -> Option<Node<T>> {
        match word {
            "*" => self.star.take().map(|b| *b),
            "#" => self.hash.take().map(|b| *b),
            _ => self.literal.remove(word),
        }
    }

    fn child_count(&self) -> usize {
        self.literal.len() + usize::from(self.star.is_some()) + usize::from(self.hash.is_some())
    }

    fn has_children(&self) -> bool {
        self.child_count() != 0
    }
}

/// Frees a subtree without recursion: the derived drop glue would recurse
/// once per level, and a pattern of tens of thousands of words is a trie that
/// deep.
fn dismantle<T>(node: Node<T>) {
    let mut pending = vec![node];
    while let Some(mut node) = pending.pop() {
        pending.extend(node.literal.drain().map(|(_, child)| child));
        pending.extend(node.star.take().map(|b| *b));
        pending.extend(node.hash.take().map(|b| *b));
    }
}

/// Routing table of a topic exchange: maps binding patterns (such as
/// `stock.*.nyse` or `audit.#`) to destinations and finds every destination
/// whose pattern matches a routing key.
///
/// `T` is the destination handle (a queue id, an `Arc<str>` name, ...). One
/// destination may be bound under many patterns; [`TopicTrie::route`] still
/// reports it once per key.
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> Drop for TopicTrie<T> {
    fn drop(&mut self) {
        dismantle(std::mem::take(&mut self.root));
    }
}

impl<T> fmt::Debug for TopicTrie<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTrie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Eq + Hash> TopicTrie<T> {
    /// Creates an empty routing table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, destination) bindings held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Binds `dest` under `pattern`; returns true if this exact
    /// (pattern, destination) pair was not bound before.
    ///
    /// Patterns are stored word for word (`#.#` and `#` are distinct
    /// bindings even though they match the same keys), so `remove` undoes
    /// exactly what `insert` did.
    pub fn insert(&mut self, pattern: &str, dest: T) -> bool {
        let mut node = &mut self.root;
        for word in words(pattern) {
            node = node.child_or_insert(word);
        }
        let added = node.dests.insert(dest);
        if added {
            self.len += 1;
        }
        added
    }

    /// Unbinds `dest` from `pattern`; returns true if the pair was bound.
    ///
    /// Nodes left with neither destinations nor children are freed, so
    /// bind/unbind churn does not grow the trie.
    pub fn remove(&mut self, pattern: &str, dest: &T) -> bool {
        // First a read-only walk, to learn whether the pair exists and which
        // is the deepest node on the path that must survive (root, or one
        // holding destinations or other children): the chain below it is
        // what becomes empty if the leaf does.
        let mut node = &self.root;
        let mut keep_depth = 0;
        for (depth, word) in words(pattern).enumerate() {
            if !node.dests.is_empty() || node.child_count() > 1 {
                keep_depth = depth;
            }
            node = match node.child(word) {
                Some(child) => child,
                None => return false,
            };
        }
        if !node.dests.contains(dest) {
            return false;
        }
        let leaf_becomes_empty = node.dests.len() == 1 && !node.has_children();

        // The `return false` arms below cannot fire: the walk above found
        // this very path, and `&mut self` kept it from changing since.
        let mut path = words(pattern);
        let mut node = &mut self.root;
        if leaf_becomes_empty {
            for word in path.by_ref().take(keep_depth) {
                node = match node.child_mut(word) {
                    Some(child) => child,
                    None => return false,
                };
            }
            match path.next() {
                Some(word) => match node.take_child(word) {
                    Some(detached) => dismantle(detached),
                    None => return false,
                },
                // A zero-word pattern ends at the root, which is never cut.
                None => {
                    if !node.dests.remove(dest) {
                        return false;
                    }
                }
            }
        } else {
            for word in path {
                node = match node.child_mut(word) {
                    Some(child) => child,
                    None => return false,
                };
            }
            if !node.dests.remove(dest) {
                return false;
            }
        }
        self.len -= 1;
        true
    }

    /// Appends to `out` every destination bound under a pattern that matches
    /// `routing_key`, each at most once (entries already in `out` before the
    /// call are left alone and not considered). Order is unspecified.
    ///
    /// Work is bounded by (trie nodes visited) x (key words + 1), whatever
    /// the mix of `*` and `#`, and uses no recursion, so a hostile key or
    /// pattern can neither blow up the time nor the stack.
    pub fn route(&self, routing_key: &str, out: &mut Vec<T>) {
        if self.len == 0 {
            return;
        }
        let rest = if EMPTY_STRING_IS_ZERO_WORDS && routing_key.is_empty() {
            None
        } else {
            Some(routing_key)
        };
        let mut walk = Walk {
            stack: Vec::new(),
            visited: None,
            sink: Sink {
                start: out.len(),
                out,
                seen: None,
                emitted_any: false,
            },
        };
        walk.stack.push(State {
            node: &self.root,
            rest,
            on_hash: false,
        });
        while let Some(State {
            node,
            rest,
            on_hash,
        }) = walk.stack.pop()
        {
            let Some(rest) = rest else {
                walk.sink.emit(&node.dests);
                // A trailing `#` also matches when no words are left.
                if let Some(hash) = node.hash.as_deref() {
                    walk.enter_hash(hash, None);
                }
                continue;
            };
            let (word, tail) = match rest.split_once('.') {
                Some((word, tail)) => (word, Some(tail)),
                None => (rest, None),
            };
            if let Some(child) = node.literal.get(word) {
                walk.push(child, tail);
            }
            if let Some(child) = node.star.as_deref() {
                walk.push(child, tail);
            }
            if let Some(hash) = node.hash.as_deref() {
                // `#` consuming zero words here.
                walk.enter_hash(hash, Some(rest));
            }
            if on_hash {
                // The `#` we are on swallows this word and stays put.
                walk.enter_hash(node, tail);
            }
        }
    }

    /// Number of trie nodes, root included; lets tests check pruning.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.literal.values());
            pending.extend(node.star.as_deref());
            pending.extend(node.hash.as_deref());
        }
        count
    }
}

/// A pending match attempt: `node`'s pattern prefix has matched the key up
/// to `rest` (`None` once every word is consumed).
struct State<'a, T> {
    node: &'a Node<T>,
    rest: Option<&'a str>,
    /// `node` is reached through a `#` edge, so it may swallow more words.
    on_hash: bool,
}

/// Per-call state of [`TopicTrie::route`].
struct Walk<'a, 'o, T> {
    stack: Vec<State<'a, T>>,
    /// (`#` node address, remaining key length) pairs already queued. Only
    /// `#` nodes can be reached at the same key position along different
    /// paths (every other edge consumes exactly one word), so memoising them
    /// alone makes every state unique. Built on the first `#` met.
    visited: Option<HashSet<(usize, usize)>>,
    sink: Sink<'o, T>,
}

impl<'a, T: Clone + Eq + Hash> Walk<'a, '_, T> {
    fn push(&mut self, node: &'a Node<T>, rest: Option<&'a str>) {
        self.stack.push(State {
            node,
            rest,
            on_hash: false,
        });
    }

    /// Queues `#` node `hash` at `rest` unless that state was already seen.
    fn enter_hash(&mut self, hash: &'a Node<T>, rest: Option<&'a str>) {
        let leaf = !hash.has_children();
        let position = if leaf {
            ANY_POSITION
        } else {
            rest.map_or(NO_WORDS_LEFT, str::len)
        };
        let address = hash as *const Node<T> as usize;
        if !self
            .visited
            .get_or_insert_with(HashSet::new)
            .insert((address, position))
        {
            return;
        }
        if leaf {
            // Nothing follows this `#`, so it matches whatever remains; no
            // need to walk the rest of the key word by word.
            self.sink.emit(&hash.dests);
        } else {
            self.stack.push(State {
                node: hash,
                rest,
                on_hash: true,
            });
        }
    }
}

/// Appends matched destinations to the caller's vector without duplicates.
struct Sink<'o, T> {
    out: &'o mut Vec<T>,
    start: usize,
    seen: Option<HashSet<T>>,
    emitted_any: bool,
}

impl<T: Clone + Eq + Hash> Sink<'_, T> {
    /// Each node is emitted at most once per route (the walk's states are
    /// unique), and one node's destinations are distinct, so only matches
    /// coming from different nodes need checking.
    fn emit(&mut self, dests: &HashSet<T>) {
        if dests.is_empty() {
            return;
        }
        if !self.emitted_any {
            self.emitted_any = true;
            self.out.extend(dests.iter().cloned());
            return;
        }
        let routed = self.out.len() - self.start;
        if self.seen.is_none() && routed + dests.len() > LINEAR_DEDUPE_LIMIT {
            self.seen = Some(self.out[self.start..].iter().cloned().collect());
        }
        match &mut self.seen {
            Some(seen) => {
                for dest in dests {
                    if !seen.contains(dest) {
                        seen.insert(dest.clone());
                        self.out.push(dest.clone());
                    }
                }
            }
            None => {
                for dest in dests {
                    if !self.out[self.start..].contains(dest) {
                        self.out.push(dest.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// Slow, obviously-correct matcher over word lists.
    fn ref_match_words(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| ref_match_words(rest, &key[skip..])),
            Some((&"*", rest)) => !key.is_empty() && ref_match_words(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && ref_match_words(rest, &key[1..]),
        }
    }

    fn ref_split(s: &str) -> Vec<&str> {
        if EMPTY_STRING_IS_ZERO_WORDS && s.is_empty() {
            Vec::new()
        } else {
            s.split('.').collect()
        }
    }

    fn ref_match(pattern: &str, key: &str) -> bool {
        ref_match_words(&ref_split(pattern), &ref_split(key))
    }

    fn routed<T: Clone + Eq + Hash + Ord>(trie: &TopicTrie<T>, key: &str) -> Vec<T> {
        let mut out = Vec::new();
        trie.route(key, &mut out);
        let unique: BTreeSet<T> = out.iter().cloned().collect();
        assert_eq!(unique.len(), out.len(), "duplicate destination for {key:?}");
        out.sort();
        out
    }

    fn matches(pattern: &str, key: &str) -> bool {
        let mut trie = TopicTrie::new();
        trie.insert(pattern, 1u64);
        let hit = !routed(&trie, key).is_empty();
        assert_eq!(
            hit,
            ref_match(pattern, key),
            "trie and reference disagree on {pattern:?} vs {key:?}"
        );
        hit
    }

    #[test]
    fn edge_case_table() {
        let empty_is_one_word = !EMPTY_STRING_IS_ZERO_WORDS;
        let cases: &[(&str, &str, bool)] = &[
            // `#` matches zero words.
            ("a.#", "a", true),
            ("#.a", "a", true),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y.c", false),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#", "", true),
            ("#", ".", true),
            ("#.#", "", true),
            ("#.#", "a.b.c", true),
            ("#.#.#", "a", true),
            // `*` matches exactly one word, never zero.
            ("a.*", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.#.*", "a", false),
            ("*.#.*", "a.b", true),
            ("*.#.*", "a.b.c.d", true),
            ("*.*", "", false),
            // Empty words.
            ("a..b", "a..b", true),
            ("a..b", "a.b", false),
            ("a.*.b", "a..b", true),
            ("a.#.b", "a..b", true),
            ("", "", true),
            ("", "a", false),
            ("*", "", empty_is_one_word),
            ("*.#", "", empty_is_one_word),
            ("#.", "", empty_is_one_word),
            ("*", ".", false),
            ("*.*", ".", true),
            // Trailing dots make a trailing empty word.
            ("a.", "a.", true),
            ("a.", "a", false),
            ("a.*", "a.", true),
            ("a.#", "a.", true),
            ("a", "a.", false),
            // Only whole words are wildcards.
            ("a*", "a*", true),
            ("a*", "ab", false),
            ("a#", "a", false),
            ("a#", "a#", true),
            ("*", "*", true),
            ("#", "#", true),
            ("a.b", "a.*", false),
        ];
        for &(pattern, key, expected) in cases {
            assert_eq!(matches(pattern, key), expected, "{pattern:?} vs {key:?}");
        }
    }

    #[test]
    fn dedupes_across_patterns() {
        let mut trie = TopicTrie::new();
        assert!(trie.insert("a.*", 7u64));
        assert!(trie.insert("a.#", 7));
        assert!(trie.insert("#", 7));
        assert!(trie.insert("#.b", 8));
        assert!(!trie.insert("a.*", 7));
        assert_eq!(trie.len(), 4);
        assert_eq!(routed(&trie, "a.b"), vec![7, 8]);
    }

    #[test]
    fn dedupes_large_fanouts_and_keeps_existing_out() {
        let mut trie = TopicTrie::new();
        for dest in 0..100u64 {
            trie.insert("#", dest);
            trie.insert("a.#", dest);
            trie.insert(if dest % 2 == 0 { "*.b" } else { "a.*" }, dest);
        }
        trie.insert("a.b", 1000);
        let mut out = vec![5u64, 5];
        trie.route("a.b", &mut out);
        assert_eq!(&out[..2], &[5, 5]);
        let mut new: Vec<u64> = out[2..].to_vec();
        new.sort_unstable();
        let expected: Vec<u64> = (0..100).chain([1000]).collect();
        assert_eq!(new, expected);
    }

    #[test]
    fn works_with_arc_names() {
        let mut trie: TopicTrie<Arc<str>> = TopicTrie::new();
        let q1: Arc<str> = Arc::from("q1");
        let q2: Arc<str> = Arc::from("q2");
        trie.insert("logs.#", q1.clone());
        trie.insert("logs.*.error", q1.clone());
        trie.insert("logs.*.error", q2.clone());
        assert_eq!(routed(&trie, "logs.db.error"), vec![q1.clone(), q2.clone()]);
        assert!(trie.remove("logs.*.error", &q2));
        assert_eq!(routed(&trie, "logs.db.error"), vec![q1]);
    }

    #[test]
    fn remove_then_no_match_and_prunes() {
        let mut trie = TopicTrie::new();
        let patterns = [
            "a.b.c",
            "a.b",
            "a.*.c",
            "a.#",
            "#",
            "#.#",
            "*.#.*",
            "",
            "a..",
            "a*",
            "x.y.z.#.w",
        ];
        for (i, pattern) in patterns.iter().enumerate() {
            assert!(trie.insert(pattern, i as u64));
            assert!(trie.insert(pattern, 100));
        }
        assert_eq!(trie.len(), patterns.len() * 2);
        assert!(trie.node_count() > 1);

        assert!(!trie.remove("a.b.c.d", &0));
        assert!(!trie.remove("a.b.c", &1));
        assert!(!trie.remove("a.b", &999));

        assert!(routed(&trie, "a.b.c").contains(&0));
        assert!(trie.remove("a.b.c", &0));
        assert!(!trie.remove("a.b.c", &0));
        assert!(!routed(&trie, "a.b.c").contains(&0));

        for (i, pattern) in patterns.iter().enumerate().skip(1) {
            assert!(trie.remove(pattern, &(i as u64)));
        }
        for pattern in patterns {
            assert!(trie.remove(pattern, &100));
        }
        assert!(trie.is_empty());
        assert_eq!(trie.len(), 0);
        assert_eq!(trie.node_count(), 1, "only the root may remain");
        assert!(routed(&trie, "a.b.c").is_empty());
    }

    #[test]
    fn prune_keeps_shared_prefixes() {
        let mut trie = TopicTrie::new();
        trie.insert("a.b.c.d", 1u64);
        trie.insert("a.b", 2);
        trie.insert("a.x", 3);
        let before = trie.node_count();
        trie.insert("a.b.c.e.f", 4);
        assert!(trie.remove("a.b.c.e.f", &4));
        assert_eq!(trie.node_count(), before);
        assert!(trie.remove("a.b.c.d", &1));
        assert_eq!(routed(&trie, "a.b"), vec![2]);
        assert_eq!(routed(&trie, "a.x"), vec![3]);
        assert!(trie.remove("a.b", &2));
        assert_eq!(routed(&trie, "a.x"), vec![3]);
        assert_eq!(trie.node_count(), 3);
        assert!(trie.remove("a.x", &3));
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn churn_does_not_grow() {
        let mut trie = TopicTrie::new();
        trie.insert("keep.#", 0u64);
        let baseline = trie.node_count();
        for i in 0..1000u64 {
            let pattern = format!("tmp.{i}.*.#.{}", i % 7);
            assert!(trie.insert(&pattern, i));
            assert!(trie.remove(&pattern, &i));
        }
        assert_eq!(trie.node_count(), baseline);
        assert_eq!(trie.len(), 1);
    }

    #[test]
    fn many_hashes_do_not_blow_up() {
        let mut trie = TopicTrie::new();
        // Backtracking matchers are exponential in the number of `#` on
        // these; the memoised walk is polynomial.
        let hashes = vec!["#"; 40].join(".");
        trie.insert(&format!("{hashes}.b"), 1u64);
        trie.insert(&vec!["#.a"; 30].join("."), 2);
        trie.insert(&format!("{}.b", vec!["#.a"; 30].join(".")), 3);
        let key = vec!["a"; 200].join(".");
        assert_eq!(routed(&trie, &key), vec![2]);
        assert_eq!(routed(&trie, &format!("{key}.b")), vec![1, 3]);
    }

    #[test]
    fn huge_keys_and_patterns_do_not_overflow_the_stack() {
        let mut trie = TopicTrie::new();
        let dots = ".".repeat(64 * 1024);
        let deep_pattern = vec!["*"; 30_000].join(".");
        trie.insert("#", 1u64);
        trie.insert("#.#", 2);
        trie.insert("#.*.#", 3);
        trie.insert("*.#.*", 4);
        trie.insert(&deep_pattern, 5);
        trie.insert(&dots, 6);
        assert_eq!(routed(&trie, &dots), vec![1, 2, 3, 4, 6]);
        let deep_key = vec!["k"; 30_000].join(".");
        assert_eq!(routed(&trie, &deep_key), vec![1, 2, 3, 4, 5]);
        assert!(trie.remove(&deep_pattern, &5));
        assert!(trie.remove(&dots, &6));
        // Dropping the trie with a deep pattern still in it must not recurse.
        trie.insert(&deep_pattern, 5);
        drop(trie);
    }

    #[test]
    fn fifty_thousand_patterns() {
        let mut trie = TopicTrie::new();
        let mut patterns = Vec::new();
        for i in 0..50_000u64 {
            let pattern = match i % 5 {
                0 => format!("s{}.*.end", i % 1000),
                1 => format!("s{}.#", i % 1000),
                2 => format!("#.t{}", i % 1000),
                3 => format!("s{}.mid.end", i % 1000),
                _ => format!("*.u{i}"),
            };
            assert!(trie.insert(&pattern, i));
            patterns.push((pattern, i));
        }
        assert_eq!(trie.len(), 50_000);
        for key in [
            "s5.mid.end",
            "s6.x.end",
            "a.t7",
            "s12.t12",
            "x.u49999",
            "s3.mid.end.t8",
            "nothing.here",
            "",
        ] {
            let expected: Vec<u64> = patterns
                .iter()
                .filter(|(pattern, _)| ref_match(pattern, key))
                .map(|&(_, dest)| dest)
                .collect();
            assert_eq!(routed(&trie, key), expected, "key {key:?}");
        }
        assert!(!routed(&trie, "s5.mid.end").is_empty());
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "*", "#"]), 1..=6)
            .prop_map(|words| words.join("."))
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", ""]), 1..=6)
            .prop_map(|words| words.join("."))
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8),
        Remove(String, u8),
        Route(String),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (pattern_strategy(), 0..4u8).prop_map(|(p, d)| Op::Insert(p, d)),
            2 => (pattern_strategy(), 0..4u8).prop_map(|(p, d)| Op::Remove(p, d)),
            2 => key_strategy().prop_map(Op::Route),
        ]
    }

    fn check_route(trie: &TopicTrie<u8>, model: &HashSet<(String, u8)>, key: &str) {
        let expected: BTreeSet<u8> = model
            .iter()
            .filter(|(pattern, _)| ref_match(pattern, key))
            .map(|&(_, dest)| dest)
            .collect();
        let expected: Vec<u8> = expected.into_iter().collect();
        assert_eq!(
            routed(trie, key),
            expected,
            "key {key:?}, bindings {model:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn matches_reference(
            bindings in prop::collection::vec((pattern_strategy(), 0..6u8), 1..8),
            keys in prop::collection::vec(key_strategy(), 1..8),
        ) {
            let mut trie = TopicTrie::new();
            let mut model = HashSet::new();
            for (pattern, dest) in &bindings {
                prop_assert_eq!(trie.insert(pattern, *dest), model.insert((pattern.clone(), *dest)));
            }
            prop_assert_eq!(trie.len(), model.len());
            for key in &keys {
                check_route(&trie, &model, key);
            }
        }

        #[test]
        fn insert_remove_sequences(ops in prop::collection::vec(op_strategy(), 1..60)) {
            let mut trie = TopicTrie::new();
            let mut model: HashSet<(String, u8)> = HashSet::new();
            for op in ops {
                match op {
                    Op::Insert(pattern, dest) => {
                        let new = model.insert((pattern.clone(), dest));
                        prop_assert_eq!(trie.insert(&pattern, dest), new);
                    }
                    Op::Remove(pattern, dest) => {
                        let was = model.remove(&(pattern.clone(), dest));
                        prop_assert_eq!(trie.remove(&pattern, &dest), was);
                    }
                    Op::Route(key) => check_route(&trie, &model, &key),
                }
                prop_assert_eq!(trie.len(), model.len());
                prop_assert_eq!(trie.is_empty(), model.is_empty());
            }
            for key in ["", "a", "b", ".", "a.b", "a..b", "b.a.", "a.a.a.a.a.a"] {
                check_route(&trie, &model, key);
            }
            let remaining: Vec<(String, u8)> = model.drain().collect();
            for (pattern, dest) in remaining {
                prop_assert!(trie.remove(&pattern, &dest));
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.node_count(), 1);
        }
    }
}
