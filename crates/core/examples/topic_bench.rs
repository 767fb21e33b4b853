//! Microbenchmark of topic routing: 10,000 bindings with `*` and `#` on one exchange.
//!
//! `cargo run --release -p broker-core --example topic_bench` prints the time to add the
//! bindings (with a snapshot clone after each, as the exchange actor publishes one), the
//! routes per second for ordinary keys, and the worst case found in `#`-heavy patterns
//! against 127-word keys. Figures are recorded in docs/performance.md.

use broker_core::routing::{Binding, Bindings, Destination, ExchangeKind};
use std::time::Instant;

fn binding(key: String, i: usize) -> Binding {
    Binding {
        destination: Destination::Queue(format!("q{i}").into()),
        routing_key: key.into(),
        arguments: Default::default(),
    }
}

/// A binding key of 3 to 6 words from a small vocabulary, with wildcards in some places.
fn pattern(i: usize) -> String {
    let words = [
        "stock", "usd", "eur", "nyse", "lse", "trade", "quote", "*", "#",
    ];
    let n = 3 + i % 4;
    (0..n)
        .map(|j| words[(i / (j + 1) + j * 7 + i % 13) % words.len()])
        .collect::<Vec<_>>()
        .join(".")
}

fn main() {
    let mut b = Bindings::new(ExchangeKind::Topic);
    let start = Instant::now();
    let mut snapshot = b.clone();
    for i in 0..10_000 {
        b.add(binding(pattern(i), i));
        snapshot = b.clone();
    }
    let bind = start.elapsed();
    println!(
        "10,000 topic bindings added, a snapshot after each: {:.1} ms ({:.2} us/bind)",
        bind.as_secs_f64() * 1e3,
        bind.as_secs_f64() * 1e6 / 10_000.0
    );

    let keys: Vec<String> = (0..1000)
        .map(|i| pattern(i * 7 + 3).replace(['*', '#'], "x"))
        .collect();
    let mut out = Vec::new();
    let mut routed = 0usize;
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        for k in &keys {
            out.clear();
            snapshot.route(k, None, &mut out);
            routed += out.len();
        }
    }
    let t = start.elapsed();
    let n = rounds * keys.len();
    println!(
        "route, 10,000 bindings: {:.0} routes/s ({:.2} us/route, {:.1} destinations per route)",
        n as f64 / t.as_secs_f64(),
        t.as_secs_f64() * 1e6 / n as f64,
        routed as f64 / n as f64
    );

    let mut hostile = Bindings::new(ExchangeKind::Topic);
    for i in 0..1000 {
        let key = match i % 4 {
            0 => "#.#.#.#.#.#".to_string(),
            1 => format!("#.a.#.a.#.{i}.#"),
            2 => vec!["#"; 20 + i % 20].join(".*."),
            _ => format!("*.#.a{}.#.*", i % 7),
        };
        hostile.add(binding(key, i));
    }
    let long = vec!["a"; 127].join(".");
    let start = Instant::now();
    for _ in 0..100 {
        out.clear();
        hostile.route(&long, None, &mut out);
    }
    let t = start.elapsed();
    println!(
        "route, 1,000 '#'-heavy bindings, 127-word key: {:.1} us/route ({} destinations)",
        t.as_secs_f64() * 1e6 / 100.0,
        out.len()
    );
}
