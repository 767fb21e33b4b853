//! cargo-fuzz target `frame_decoder`: the harness is `broker_fuzz_harness::wire::frame_decoder` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broker_fuzz_harness::wire::frame_decoder(data));
