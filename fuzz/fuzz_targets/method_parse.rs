//! cargo-fuzz target `method_parse`: the harness is `broker_fuzz_harness::wire::method_parse` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::wire::method_parse(data));
