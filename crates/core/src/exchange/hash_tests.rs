//! Tests of the hashing exchanges (`x-consistent-hash`, `x-modulus-hash`): balance over
//! queues and weights, what moves when a queue is added or removed, determinism whatever
//! the bind order, and the plugin's argument and weight errors.

use super::weight;
use crate::exchange::RouteInput;
use crate::routing::{Binding, Bindings, Destination, ExchangeKind};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use std::collections::HashMap;

const KEYS: usize = 100_000;

fn q(n: &str) -> Destination {
    Destination::Queue(n.into())
}

fn bind(key: &str, d: Destination) -> Binding {
    Binding {
        destination: d,
        routing_key: key.into(),
        arguments: FieldTable::default(),
    }
}

fn exchange(kind: ExchangeKind, binds: &[(&str, &str)]) -> Bindings {
    let mut b = Bindings::new(kind);
    for (key, dest) in binds {
        b.add(bind(key, q(dest)));
    }
    b
}

/// Random-looking keys (a fixed LCG, so a run is reproducible).
fn keys() -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..KEYS)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            format!("{:x}", x >> 16)
        })
        .collect()
}

fn route_one(b: &Bindings, key: &str) -> Option<String> {
    let mut out = vec![];
    b.route(key, None, &mut out);
    assert!(out.len() <= 1, "a hashing exchange routes to one destination");
    out.pop().map(|d| match d {
        Destination::Queue(n) | Destination::Exchange(n) => n.to_string(),
    })
}

fn counts(b: &Bindings, keys: &[String]) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for k in keys {
        *c.entry(route_one(b, k).unwrap()).or_default() += 1;
    }
    c
}

fn assert_share(c: &HashMap<String, usize>, queue: &str, share: f64) {
    let got = c.get(queue).copied().unwrap_or(0) as f64 / KEYS as f64;
    assert!(
        (got - share).abs() <= share * 0.10,
        "{queue}: {got:.4} of the keys, expected {share:.4} ± 10%"
    );
}

fn moved(a: &Bindings, b: &Bindings, keys: &[String]) -> Vec<(String, String)> {
    keys.iter()
        .filter_map(|k| {
            let (x, y) = (route_one(a, k).unwrap(), route_one(b, k).unwrap());
            (x != y).then_some((x, y))
        })
        .collect()
}

const FOUR: [(&str, &str); 4] = [("1", "q1"), ("1", "q2"), ("1", "q3"), ("1", "q4")];

#[test]
fn four_equal_queues_get_a_quarter_each() {
    for kind in [ExchangeKind::ConsistentHash, ExchangeKind::ModulusHash] {
        let c = counts(&exchange(kind, &FOUR), &keys());
        for n in ["q1", "q2", "q3", "q4"] {
            assert_share(&c, n, 0.25);
        }
    }
}

#[test]
fn weights_set_the_shares() {
    let keys = keys();
    let c = counts(
        &exchange(ExchangeKind::ConsistentHash, &[("1", "a"), ("2", "b")]),
        &keys,
    );
    assert_share(&c, "a", 1.0 / 3.0);
    assert_share(&c, "b", 2.0 / 3.0);
    // the plugin's README example: 10, 10, 20, 20
    let binds = [("10", "q0"), ("10", "q1"), ("20", "q2"), ("20", "q3")];
    let c = counts(&exchange(ExchangeKind::ConsistentHash, &binds), &keys);
    for (n, share) in [("q0", 1.0 / 6.0), ("q1", 1.0 / 6.0), ("q2", 1.0 / 3.0), ("q3", 1.0 / 3.0)] {
        assert_share(&c, n, share);
    }
    // a destination's bindings add up: "1" and "2" weigh as "3"
    let c = counts(
        &exchange(
            ExchangeKind::ConsistentHash,
            &[("1", "a"), ("2", "a"), ("3", "b")],
        ),
        &keys,
    );
    assert_share(&c, "a", 0.5);
    assert_share(&c, "b", 0.5);
}

#[test]
fn adding_a_fifth_queue_moves_only_the_keys_it_takes() {
    let keys = keys();
    let four = exchange(ExchangeKind::ConsistentHash, &FOUR);
    let mut five = four.clone();
    five.add(bind("1", q("q5")));
    let m = moved(&four, &five, &keys);
    assert!(m.iter().all(|(_, to)| to == "q5"), "keys moved between old queues");
    let share = m.len() as f64 / KEYS as f64;
    assert!((share - 0.2).abs() <= 0.02, "{share} of the keys moved, expected about 1/5");
    // and removing it again puts every key back where it was
    five.remove(&bind("1", q("q5")));
    assert!(moved(&four, &five, &keys).is_empty());
    // removing one of four moves only its own keys
    let mut three = four.clone();
    three.remove(&bind("1", q("q2")));
    assert!(moved(&four, &three, &keys).iter().all(|(from, _)| from == "q2"));
}

#[test]
fn modulus_hash_moves_most_keys_when_n_changes() {
    let keys = keys();
    let four = exchange(ExchangeKind::ModulusHash, &FOUR);
    let mut five = four.clone();
    five.add(bind("any", q("q5")));
    let share = moved(&four, &five, &keys).len() as f64 / KEYS as f64;
    // hash mod 4 and hash mod 5 agree for 1/5 of the hashes: 4/5 move (RabbitMQ's
    // documented trade-off)
    assert!((share - 0.8).abs() <= 0.02, "{share} moved");
}

#[test]
fn modulus_hash_ignores_keys_and_counts_a_destination_once() {
    let keys = keys();
    let once = exchange(ExchangeKind::ModulusHash, &[("", "a"), ("", "b")]);
    let twice = exchange(
        ExchangeKind::ModulusHash,
        &[("x", "a"), ("y", "a"), ("z", "b")],
    );
    assert!(moved(&once, &twice, &keys).is_empty());
    let mut b = twice.clone();
    b.remove(&bind("x", q("a")));
    assert!(moved(&once, &b, &keys).is_empty(), "a still bound by y");
    b.remove(&bind("y", q("a")));
    assert_eq!(counts(&b, &keys)["b"], KEYS);
}

#[test]
fn an_exchange_without_bindings_routes_nowhere() {
    for kind in [ExchangeKind::ConsistentHash, ExchangeKind::ModulusHash] {
        assert_eq!(route_one(&Bindings::new(kind), "k"), None);
    }
}

#[test]
fn weights_are_checked_with_the_plugins_texts() {
    let text = |k: &str| weight(k).unwrap_err().reply_text();
    assert_eq!(
        text("abc"),
        "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>"
    );
    assert_eq!(
        text(""),
        "PRECONDITION_FAILED - The binding key must be an integer: <<\"\">>"
    );
    assert_eq!(text("1.5"), text("1.5"));
    assert!(text("1.5").contains("must be an integer"));
    assert_eq!(
        text("0"),
        "PRECONDITION_FAILED - The binding key must be greater than 0"
    );
    assert_eq!(text("-3"), text("0"));
    assert_eq!(
        text("1000001"),
        "PRECONDITION_FAILED - The binding key must be at most 1000000"
    );
    assert_eq!(weight("7").unwrap(), 7);
    assert_eq!(weight("+7").unwrap(), 7);
    assert_eq!(weight("007").unwrap(), 7);
    let k = ExchangeKind::ConsistentHash;
    assert!(k.validate_binding("x", &FieldTable::default()).is_err());
    assert!(ExchangeKind::ModulusHash
        .validate_binding("x", &FieldTable::default())
        .is_ok());
}

fn header_exchange(arg: &str, value: &str) -> Bindings {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from(arg),
        AMQPValue::LongString(LongString::from(value)),
    );
    let kind = ExchangeKind::ConsistentHash;
    assert!(kind.validate_declare(&args, "x", "/").is_ok());
    let mut b = Bindings::with_arguments(kind, &args);
    for (key, d) in FOUR {
        b.add(bind(key, q(d)));
    }
    b
}

#[test]
fn hash_header_routes_by_the_header_and_is_not_cached() {
    let b = header_exchange("hash-header", "user");
    assert!(b.routes_by_headers());
    assert!(!exchange(ExchangeKind::ConsistentHash, &FOUR).routes_by_headers());
    assert!(!exchange(ExchangeKind::ModulusHash, &FOUR).routes_by_headers());
    let mut seen = HashMap::new();
    for (i, user) in keys().iter().take(2000).enumerate() {
        let mut h = FieldTable::default();
        h.insert("user".into(), AMQPValue::LongString(user.as_str().into()));
        let mut out = vec![];
        // the routing key changes every time; the header decides
        b.route(&format!("rk{i}"), Some(&h), &mut out);
        let again = seen.entry(user.clone()).or_insert_with(|| out.clone());
        assert_eq!(*again, out);
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert_eq!(distinct.len(), 4);
    // without the header: always the same queue
    let mut first = vec![];
    b.route("a", None, &mut first);
    for k in ["b", "c", "d"] {
        let mut out = vec![];
        b.route(k, Some(&FieldTable::default()), &mut out);
        assert_eq!(out, first);
    }
}

#[test]
fn hash_property_routes_by_the_property() {
    use amq_protocol::protocol::basic::AMQPProperties;
    let b = header_exchange("hash-property", "correlation_id");
    assert!(b.routes_by_headers());
    let mut by_id: HashMap<String, Vec<Destination>> = HashMap::new();
    for (i, id) in keys().iter().take(2000).enumerate() {
        let p = AMQPProperties::default().with_correlation_id(id.as_str().into());
        let mut out = vec![];
        b.route_input(&RouteInput::with_properties(&format!("{i}"), Some(&p)), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(*by_id.entry(id.clone()).or_insert_with(|| out.clone()), out);
    }
    let distinct: std::collections::HashSet<_> = by_id.values().collect();
    assert_eq!(distinct.len(), 4);
}

#[test]
fn exchange_destinations_are_routed_to() {
    let mut b = Bindings::new(ExchangeKind::ConsistentHash);
    b.add(bind("1", Destination::Exchange("x2".into())));
    b.add(bind("1", q("q")));
    let c = counts(&b, &keys());
    assert_share(&c, "x2", 0.5);
}

proptest! {
    /// The route depends on the set of bindings, not on the order they were made (a
    /// restart or another node rebuilds the index in another order), nor on a rebuild.
    #[test]
    fn routes_do_not_depend_on_bind_order(
        binds in proptest::collection::vec((1u64..20, 0usize..12), 1..12),
        seed in any::<u64>(),
    ) {
        for kind in [ExchangeKind::ConsistentHash, ExchangeKind::ModulusHash] {
            let list: Vec<Binding> = binds
                .iter()
                .map(|(w, d)| bind(&w.to_string(), q(&format!("q{d}"))))
                .collect();
            let mut a = Bindings::new(kind);
            for b in &list {
                a.add(b.clone());
            }
            let mut z = Bindings::new(kind);
            for b in list.iter().rev() {
                z.add(b.clone());
            }
            let snapshot = a.clone();
            for i in 0..200u64 {
                let k = format!("{:x}", seed.wrapping_add(i).wrapping_mul(0x9e37_79b9));
                let r = route_one(&a, &k);
                prop_assert!(r.is_some());
                prop_assert_eq!(&r, &route_one(&z, &k));
                prop_assert_eq!(&r, &route_one(&snapshot, &k));
            }
        }
    }
}
