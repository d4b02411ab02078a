//! The fuzz targets' seed corpora (`tests/fuzz/seeds/TARGET/`) replayed
//! through the same entry points on every `cargo test`, so a seed that
//! once found a bug stays a regression test without libFuzzer; and the
//! seeds are checked to be what they claim (a decodable CheckRequest, a
//! compilable policy, a verifiable chain), or the fuzzer would start from
//! nothing.

mod support;

use prost::Message;
use std::path::{Path, PathBuf};
use support::*;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = repo().join("tests/fuzz/seeds").join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| {
            let path = entry.path();
            let bytes = std::fs::read(&path).expect("read seed");
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

/// A fuzz target's name and its entry point.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_seed_runs_through_its_target() {
    let targets: [Target; 8] = [
        ("policy_document", sentinelnet::fuzzing::policy_document),
        ("bundle_archive", sentinelnet::fuzzing::bundle_archive),
        ("check_request", sentinelnet::fuzzing::check_request),
        ("spool_segment", sentinelnet::fuzzing::spool_segment),
        ("record_verify", sentinelnet::fuzzing::record_verify),
        ("ingest_batch", sentinelnet::fuzzing::ingest_batch),
        ("record_socket", sentinelnet::fuzzing::record_socket),
        ("canonical_json", sentinelnet::fuzzing::canonical_json),
    ];
    let mut ran = 0;
    for (target, run) in targets {
        for (_, bytes) in seeds(target) {
            run(&bytes);
            ran += 1;
        }
    }
    assert!(ran >= 20, "{ran} seeds");
}

#[test]
fn seeds_are_what_they_claim() {
    for (path, bytes) in seeds("check_request") {
        let request =
            envoy_types::pb::envoy::service::auth::v3::CheckRequest::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let http = request
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_else(|| panic!("{}: no HTTP request", path.display()));
        assert!(!http.method.is_empty(), "{}", path.display());
    }
    for (path, bytes) in seeds("policy_document") {
        let document: sentinelnet::policy::PolicyDocument =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sentinelnet::policy::Policy::compile(document)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let verify = |path: &Path| {
        std::process::Command::new(sentinelnet())
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .expect("audit verify runs")
            .status
            .code()
    };
    let dir = repo().join("tests/fuzz/seeds/record_verify");
    assert_eq!(verify(&dir.join("chain.ndjson")), Some(0));
    assert_ne!(verify(&dir.join("edited.ndjson")), Some(0));
    let archive = repo().join("tests/fuzz/seeds/bundle_archive/kernel.tar.gz");
    let status = std::process::Command::new(sentinelnet())
        .arg("test")
        .arg(&archive)
        .output()
        .expect("sentinelnet test runs")
        .status;
    assert!(status.success());
    for (path, bytes) in seeds("record_socket") {
        let mut read = 0;
        sentinelnet::audit::forward::decode_each(&bytes, |event| {
            event.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            read += 1;
        });
        assert!(read >= 1, "{}: no event", path.display());
    }
}
