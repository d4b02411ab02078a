#![no_main]
//! See `sentinelnet::fuzzing::policy_document`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::policy_document(data));
