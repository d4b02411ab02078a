#![no_main]
//! See `sentinelnet::fuzzing::check_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::check_request(data));
