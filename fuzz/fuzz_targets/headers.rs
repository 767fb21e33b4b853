//! cargo-fuzz target `headers`: the harness is `broker_fuzz_harness::routing::headers` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::routing::headers(data));
