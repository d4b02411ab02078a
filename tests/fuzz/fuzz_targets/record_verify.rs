#![no_main]
//! See `sentinelnet::fuzzing::record_verify`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::record_verify(data));
