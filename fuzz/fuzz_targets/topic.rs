//! cargo-fuzz target `topic`: the harness is `broker_fuzz_harness::routing::topic` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::routing::topic(data));
