//! The fuzzing harnesses, written once and used twice: by the coverage-guided targets in
//! `fuzz/` (cargo-fuzz, libFuzzer) and by the ordinary replay tests in `tests/`, which run
//! every file of the committed corpus (`fuzz/corpus/<target>/`) on stable Rust with no
//! fuzzing tool, so `cargo test --workspace` keeps every input found by fuzzing passing.
//!
//! Each harness takes arbitrary bytes, drives the broker's own parsing code exactly as the
//! broker calls it, and panics when an invariant breaks (a panic is what the fuzzer
//! reports as a crash). See docs/fuzzing.md.

pub mod http;
pub mod routing;
pub mod wire;

/// One fuzz target: its name (the corpus folder and the cargo-fuzz binary) and harness.
pub struct Target {
    /// Name of the target, of its corpus folder and of its fuzz binary.
    pub name: &'static str,
    /// The harness: panics when an invariant breaks.
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frame_decoder",
        run: wire::frame_decoder,
    },
    Target {
        name: "method_parse",
        run: wire::method_parse,
    },
    Target {
        name: "assembly",
        run: wire::assembly,
    },
    Target {
        name: "publish_stream",
        run: wire::publish_stream,
    },
    Target {
        name: "topic",
        run: routing::topic,
    },
    Target {
        name: "headers",
        run: routing::headers,
    },
    Target {
        name: "http_bodies",
        run: http::bodies,
    },
];
