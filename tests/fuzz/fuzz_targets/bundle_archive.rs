#![no_main]
//! See `sentinelnet::fuzzing::bundle_archive`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::bundle_archive(data));
