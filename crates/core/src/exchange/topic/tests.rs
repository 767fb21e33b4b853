//! Topic matching against RabbitMQ's examples and against the naive definition.

use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn m(pattern: &str, key: &str) -> bool {
    let mut t = TopicTrie::default();
    t.insert(pattern, 1u32);
    let mut out = vec![];
    t.matches(key, &mut out);
    !out.is_empty()
}

#[test]
fn rabbitmq_examples() {
    assert!(m("*.orange.*", "quick.orange.rabbit"));
    assert!(m("*.*.rabbit", "lazy.orange.rabbit"));
    assert!(m("lazy.#", "lazy.brown.fox"));
    assert!(m("lazy.#", "lazy"));
    assert!(!m("*.orange.*", "quick.orange.male.rabbit"));
    assert!(m("#", ""));
    assert!(m("#", "a.b.c"));
    assert!(!m("*", ""));
    assert!(m("", ""));
    assert!(m("a.#.b", "a.b"));
    assert!(m("a.#.#.b", "a.x.y.b"));
    assert!(m("#.#", "a"));
    assert!(m("#.*", "a"));
    assert!(!m("#.*", ""));
    assert!(m("*.#.*", "a.b"));
    assert!(!m("*.#.*", "a"));
    assert!(m("a..b", "a..b"));
    assert!(!m("a.b", "a..b"));
}

#[test]
fn remove_prunes() {
    let mut t = TopicTrie::default();
    t.insert("a.*.c", 1u32);
    t.insert("a.#", 2u32);
    t.remove("a.*.c", &1);
    let mut out = vec![];
    t.matches("a.b.c", &mut out);
    assert_eq!(out, vec![2]);
    t.remove("a.#", &2);
    assert!(t.root.is_empty());
}

#[test]
fn collapsed_hashes_share_a_node() {
    let mut t = TopicTrie::default();
    t.insert("a.#.#.#", 1u32);
    t.insert("a.#", 2u32);
    let mut out = vec![];
    t.matches("a.b.c", &mut out);
    out.sort();
    assert_eq!(out, vec![1, 2]);
    t.remove("a.#.#", &1);
    out.clear();
    t.matches("a", &mut out);
    assert_eq!(out, vec![2]);
}

/// Found by fuzzing the first version: `#` and `#.#` bound to one destination share a
/// node, and unbinding one took the other's route with it.
#[test]
fn unbinding_one_of_two_collapsing_keys_keeps_the_other() {
    let mut t = TopicTrie::default();
    t.insert("#", 1u32);
    t.insert("#.#", 1u32);
    t.remove("#", &1);
    let mut out = vec![];
    t.matches("a.b", &mut out);
    assert_eq!(out, vec![1]);
    t.remove("#.#", &1);
    out.clear();
    t.matches("a.b", &mut out);
    assert!(out.is_empty());
    assert!(t.root.is_empty());
}

#[test]
fn a_snapshot_is_unchanged_by_later_binds() {
    let mut t = TopicTrie::default();
    t.insert("a.*", 1u32);
    let snap = t.clone();
    t.insert("a.*", 2);
    t.remove("a.*", &1);
    let (mut old, mut new) = (vec![], vec![]);
    snap.matches("a.b", &mut old);
    t.matches("a.b", &mut new);
    assert_eq!((old, new), (vec![1], vec![2]));
}

#[test]
fn destinations_already_routed_are_not_repeated() {
    let mut t = TopicTrie::default();
    t.insert("a.*", 1u32);
    t.insert("#", 1u32);
    t.insert("#", 3u32);
    let mut out = vec![1];
    t.matches("a.b", &mut out);
    assert_eq!(out, vec![1, 3]);
}

/// The reproduced attack: `#.#.#.#.#.#` against a 101-word key took one publish past
/// 2 GB and kept a worker busy; it must be answered at once, with the right answer.
#[test]
fn hash_heavy_patterns_against_long_keys_are_bounded() {
    let mut t = TopicTrie::default();
    t.insert("#.#.#.#.#.#", 1u32);
    t.insert("#.a.#.a.#.a.#.a.#.b", 2);
    t.insert(&["#"; 64].join(".*."), 3);
    let key = vec!["a"; 127].join(".");
    let start = Instant::now();
    let mut out = vec![];
    t.matches(&key, &mut out);
    out.sort();
    assert_eq!(out, vec![1, 3]);
    assert!(naive_match("#.a.#.a.#.a.#.a.#.b", &(key.clone() + ".b")));
    assert!(start.elapsed() < Duration::from_secs(1));
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("".to_string())
    ]
}

fn pattern_word() -> impl Strategy<Value = String> {
    prop_oneof![
        word(),
        Just("*".to_string()),
        Just("#".to_string()),
        Just("#".to_string())
    ]
}

/// Checks the trie against `naive_match` for these patterns and key.
fn agrees(patterns: &[String], key: &str) -> Result<(), TestCaseError> {
    let mut t = TopicTrie::default();
    for (i, p) in patterns.iter().enumerate() {
        t.insert(p, i);
    }
    let mut got = vec![];
    t.matches(key, &mut got);
    got.sort();
    let want: Vec<usize> = patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| naive_match(p, key))
        .map(|(i, _)| i)
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #[test]
    fn trie_agrees_with_naive(
        patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..5), 1..6),
        key in proptest::collection::vec(word(), 1..6),
    ) {
        let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
        agrees(&patterns, &key.join("."))?;
    }

    /// `#`-heavy patterns and keys of up to 127 words (the most a 255-byte key holds).
    #[test]
    fn trie_agrees_with_naive_on_long_keys(
        patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..24), 1..12),
        key in proptest::collection::vec(prop_oneof![Just("a".to_string()), Just("b".to_string())], 0..128),
    ) {
        let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
        agrees(&patterns, &key.join("."))?;
    }

    /// Removing bindings leaves exactly the rest matching.
    #[test]
    fn removal_agrees_with_naive(
        patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..6), 2..8),
        key in proptest::collection::vec(word(), 0..8),
    ) {
        let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
        let key = key.join(".");
        let mut t = TopicTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(p, i);
        }
        for (i, p) in patterns.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            t.remove(p, &i);
        }
        let mut got = vec![];
        t.matches(&key, &mut got);
        got.sort();
        let want: Vec<usize> = patterns.iter().enumerate()
            .filter(|(i, p)| i % 2 == 1 && naive_match(p, &key)).map(|(i, _)| i).collect();
        prop_assert_eq!(got, want);
    }
}
