//! cargo-fuzz target `http_bodies`: the harness is `broker_fuzz_harness::http::bodies` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::http::bodies(data));
