#![no_main]
//! See `sentinelnet::fuzzing::ingest_batch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinelnet::fuzzing::ingest_batch(data));
