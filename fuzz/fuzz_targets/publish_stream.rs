//! cargo-fuzz target `publish_stream`: the harness is `broker_fuzz_harness::wire::publish_stream` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::wire::publish_stream(data));
