#![no_main]
//! See `sentinelnet::fuzzing::record_socket`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::record_socket(data));
