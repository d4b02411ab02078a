#![no_main]
//! See `sentinelnet::fuzzing::canonical_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::canonical_json(data));
