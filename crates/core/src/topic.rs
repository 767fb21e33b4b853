//! Topic exchange matching: a trie of binding-key words, walked literally, by `*` (exactly
//! one word) and by `#` (zero or more words), as RabbitMQ's topic trie does.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Clone)]
struct Node<D> {
    words: HashMap<Box<str>, Node<D>>,
    star: Option<Box<Node<D>>>,
    hash: Option<Box<Node<D>>>,
    destinations: Vec<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Self {
            words: HashMap::new(),
            star: None,
            hash: None,
            destinations: Vec::new(),
        }
    }
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.destinations.is_empty()
    }
}

/// Splits a key into words; the empty key has no words at all (as in RabbitMQ), so `#`
/// matches it and `*` does not.
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// A set of topic bindings, each a binding key with a destination.
#[derive(Debug, Clone)]
pub struct TopicTrie<D> {
    root: Node<D>,
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

impl<D: Clone + PartialEq + Eq + Hash> TopicTrie<D> {
    /// Adds a binding (duplicates are ignored).
    pub fn insert(&mut self, binding_key: &str, dest: D) {
        let mut node = &mut self.root;
        for word in words(binding_key) {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                w => node.words.entry(w.into()).or_default(),
            };
        }
        if !node.destinations.contains(&dest) {
            node.destinations.push(dest);
        }
    }

    /// Removes a binding; prunes empty branches.
    pub fn remove(&mut self, binding_key: &str, dest: &D) {
        let words = words(binding_key);
        Self::remove_at(&mut self.root, &words, dest);
    }

    fn remove_at(node: &mut Node<D>, words: &[&str], dest: &D) {
        match words.split_first() {
            None => node.destinations.retain(|d| d != dest),
            Some((w, rest)) => {
                let child = match *w {
                    "*" => node.star.as_deref_mut(),
                    "#" => node.hash.as_deref_mut(),
                    w => node.words.get_mut(w),
                };
                let Some(child) = child else { return };
                Self::remove_at(child, rest, dest);
                if child.is_empty() {
                    match *w {
                        "*" => node.star = None,
                        "#" => node.hash = None,
                        w => {
                            node.words.remove(w);
                        }
                    }
                }
            }
        }
    }

    /// Appends every destination whose binding key matches `routing_key` (each once).
    pub fn matches(&self, routing_key: &str, out: &mut Vec<D>) {
        let words = words(routing_key);
        let start = out.len();
        Self::walk(&self.root, &words, out);
        // dedup the newly added part, keeping first occurrence order
        let mut i = start;
        while i < out.len() {
            if out[start..i].contains(&out[i]) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn walk(node: &Node<D>, words: &[&str], out: &mut Vec<D>) {
        if let Some(h) = &node.hash {
            // '#' consumes zero or more words
            for skip in 0..=words.len() {
                Self::walk(h, &words[skip..], out);
            }
        }
        match words.split_first() {
            None => out.extend(node.destinations.iter().cloned()),
            Some((w, rest)) => {
                if let Some(c) = node.words.get(*w) {
                    Self::walk(c, rest, out);
                }
                if let Some(s) = &node.star {
                    Self::walk(s, rest, out);
                }
            }
        }
    }
}

/// The straightforward definition of topic matching, for checking the trie.
pub fn naive_match(binding_key: &str, routing_key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && go(rest, &k[1..]),
        }
    }
    let p = words(binding_key);
    let k = words(routing_key);
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            Just("".to_string())
        ]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
    }

    proptest! {
        #[test]
        fn trie_agrees_with_naive(
            patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..5), 1..6),
            key in proptest::collection::vec(word(), 1..6),
        ) {
            let key = key.join(".");
            let mut t = TopicTrie::default();
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            for (i, p) in patterns.iter().enumerate() {
                t.insert(p, i);
            }
            let mut got = vec![];
            t.matches(&key, &mut got);
            got.sort();
            let want: Vec<usize> = patterns.iter().enumerate()
                .filter(|(_, p)| naive_match(p, &key)).map(|(i, _)| i).collect();
            prop_assert_eq!(got, want);
        }
    }
}
