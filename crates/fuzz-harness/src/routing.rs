//! Harnesses for routing decisions: the topic trie against reference matchers, and headers
//! matching against a model of RabbitMQ's rules (rabbit_exchange_type_headers).

use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use broker_core::headers;
use broker_core::topic::{naive_match, TopicTrie};
use std::collections::BTreeSet;

/// Longest key the harness builds: routing and binding keys are AMQP short strings.
const MAX_KEY: usize = 255;

/// A key cut to at most 255 bytes on a character boundary.
fn short(s: &str) -> &str {
    let mut end = s.len().min(MAX_KEY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Words of a key as RabbitMQ splits them: the empty key has none.
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Topic matching by dynamic programming: polynomial in the key lengths whatever the
/// number of `#`, so it can check keys that make a backtracking matcher explode.
fn dp_match(binding_key: &str, routing_key: &str) -> bool {
    let (p, k) = (words(binding_key), words(routing_key));
    // row i: whether p[i..] matches k[j..], for each j
    let mut next = vec![false; k.len() + 1];
    next[k.len()] = true;
    for i in (0..p.len()).rev() {
        let mut row = vec![false; k.len() + 1];
        for j in (0..=k.len()).rev() {
            row[j] = match p[i] {
                "#" => next[j] || (j < k.len() && row[j + 1]),
                "*" => j < k.len() && next[j + 1],
                w => j < k.len() && k[j] == w && next[j + 1],
            };
        }
        next = row;
    }
    next[0]
}

/// The topic trie, used as `Bindings` uses it (each (key, destination) pair inserted and
/// removed once). Input lines: `-key` removes a binding, `?key` routes a key, anything
/// else binds that key; a binding's destination is a small number derived from the line,
/// so duplicates and shared keys happen. Every routed key must give exactly the
/// destinations whose binding keys match it, each once. `naive_match` is compared too when
/// the binding has few `#` words (it backtracks); libFuzzer's timeout catches a trie whose
/// matching is not bounded.
pub fn topic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut trie: TopicTrie<usize> = TopicTrie::default();
    let mut bound: BTreeSet<(String, usize)> = BTreeSet::new();
    for line in text.split('\n').take(64) {
        let dest = line.len() % 7;
        if let Some(key) = line.strip_prefix('-') {
            // as `Bindings` uses the trie: each (key, destination) pair once
            let key = short(key);
            if bound.remove(&(key.to_owned(), dest)) {
                trie.remove(key, &dest);
            }
        } else if let Some(key) = line.strip_prefix('?') {
            let key = short(key);
            let mut got = Vec::new();
            trie.matches(key, &mut got);
            let unique: BTreeSet<usize> = got.iter().copied().collect();
            assert_eq!(
                unique.len(),
                got.len(),
                "a destination twice for {key:?}: {got:?}"
            );
            let mut want = BTreeSet::new();
            for (b, d) in &bound {
                let m = dp_match(b, key);
                if words(b).iter().filter(|w| **w == "#").count() <= 3 {
                    assert_eq!(naive_match(b, key), m, "naive_match({b:?}, {key:?})");
                }
                if m {
                    want.insert(*d);
                }
            }
            assert_eq!(
                unique, want,
                "trie routes {key:?} wrongly; bindings {bound:?}"
            );
        } else {
            let key = short(line);
            if bound.insert((key.to_owned(), dest)) {
                trie.insert(key, dest);
            }
        }
    }
}

/// A small alphabet of keys, so that binding arguments and headers share names.
const KEYS: &[&str] = &["a", "b", "c", "x-match", "x-k", "x-", "A"];

/// A value from a small alphabet: strings of both kinds, numbers of several types (which
/// RabbitMQ never treats as equal across types), void and a nested table.
fn value(b: u8) -> AMQPValue {
    match b % 12 {
        0 => AMQPValue::LongString(LongString::from("all")),
        1 => AMQPValue::LongString(LongString::from("any")),
        2 => AMQPValue::ShortString(ShortString::from("any-with-x")),
        3 => AMQPValue::LongString(LongString::from("all-with-x")),
        4 => AMQPValue::ShortString(ShortString::from("1")),
        5 => AMQPValue::LongString(LongString::from("1")),
        6 => AMQPValue::LongInt(1),
        7 => AMQPValue::LongLongInt(1),
        8 => AMQPValue::Void,
        9 => AMQPValue::Boolean(true),
        10 => AMQPValue::Double(f64::NAN),
        _ => AMQPValue::FieldTable(FieldTable::default()),
    }
}

/// How RabbitMQ compares a binding value with a header value: void matches on presence,
/// otherwise equal values of one type (long and short strings count as one type here, as
/// the broker documents).
fn model_hit(binding: &AMQPValue, header: Option<&AMQPValue>) -> bool {
    let Some(h) = header else { return false };
    let text = |v: &AMQPValue| match v {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    };
    match (binding, text(binding), text(h)) {
        (AMQPValue::Void, _, _) => true,
        (_, Some(a), Some(b)) => a == b,
        _ => binding == h,
    }
}

/// The headers model: `x-match` of all/any (and the `-with-x` variants, which also compare
/// `x-` arguments); anything else means all.
fn model_matches(args: &FieldTable, hdrs: Option<&FieldTable>) -> bool {
    let mode = match args.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    };
    let any = mode == "any" || mode == "any-with-x";
    let with_x = mode.ends_with("-with-x") && (mode == "any-with-x" || mode == "all-with-x");
    let considered = args
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let mut hits =
        considered.map(|(k, v)| model_hit(v, hdrs.and_then(|h| h.inner().get(k.as_str()))));
    if any {
        hits.any(|h| h)
    } else {
        hits.all(|h| h)
    }
}

/// Headers matching: byte pairs put a key and value in the binding arguments or in the
/// message headers; the broker's answer must be the model's, and absent headers must
/// count as an empty table.
pub fn headers(data: &[u8]) {
    let mut args = FieldTable::default();
    let mut hdrs = FieldTable::default();
    for pair in data.chunks(2).take(32) {
        let (k, v) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let key = ShortString::from(KEYS[usize::from(k & 0x7f) % KEYS.len()]);
        if k & 0x80 == 0 {
            args.insert(key, value(v));
        } else {
            hdrs.insert(key, value(v));
        }
    }
    let got = headers::matches(&args, Some(&hdrs));
    assert_eq!(
        got,
        model_matches(&args, Some(&hdrs)),
        "args {args:?} headers {hdrs:?}"
    );
    assert_eq!(
        headers::matches(&args, None),
        headers::matches(&args, Some(&FieldTable::default())),
        "no headers differs from empty headers"
    );
}
