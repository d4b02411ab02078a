#![no_main]
//! See `sentinelnet::fuzzing::spool_segment`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::spool_segment(data));
