//! cargo-fuzz target `assembly`: the harness is `broker_fuzz_harness::wire::assembly` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::wire::assembly(data));
