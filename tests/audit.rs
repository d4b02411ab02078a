//! Decision records reach a real HTTP receiver, survive outages and
//! restarts through the spool, stay within the spool bound, and verify.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::receiver::{Received, Receiver};
use support::*;

const IDENTITY: &[&str] = &["--principal-from", "header:x-user"];

/// Send GETs with the given request ids through Envoy; all must be answered
/// by a decision (200 or 403).
fn send(envoy: &Envoy, ids: impl Iterator<Item = String>) {
    let http = client();
    for id in ids {
        let response = http
            .get(envoy.url("/v1/kernels"))
            .header("x-user", "auditor")
            .header("x-request-id", &id)
            .send()
            .expect("Envoy answers");
        assert_eq!(response.status().as_u16(), 200, "request {id}");
    }
}

fn request_ids(received: &Received) -> BTreeSet<String> {
    received
        .records()
        .iter()
        .filter_map(|r| r["requestId"].as_str().map(str::to_owned))
        .collect()
}

fn verify(file: &Path) -> (i32, String) {
    let out = Command::new(sentinelnet())
        .args(["audit", "verify"])
        .arg(file)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn audit_flags(url: &str, spool: &Path) -> Vec<String> {
    let mut flags: Vec<String> = IDENTITY.iter().map(|s| s.to_string()).collect();
    flags.extend([
        "--audit-url".into(),
        url.into(),
        "--spool-dir".into(),
        spool.display().to_string(),
    ]);
    flags
}

fn refs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[test]
fn every_decision_arrives_across_an_outage_and_a_restart_and_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let received = Arc::new(Received::default());
    let receiver = Receiver::start(0, received.clone());
    let port = receiver.addr.port();
    let flags = audit_flags(&receiver.url(), &spool);

    let kernel = Kernel::start();
    let grpc = Grpc::tcp();
    let mut sidecar = Sidecar::start(
        &repo().join("policies"),
        grpc.clone(),
        &refs(&flags),
        dir.path(),
    );
    let envoy = Envoy::start(&grpc, kernel.port, dir.path());

    // A third with the receiver up.
    send(&envoy, (0..300).map(|i| format!("up-{i}")));
    // A third with the receiver down; then the sidecar restarts.
    receiver.stop();
    send(&envoy, (0..300).map(|i| format!("down-{i}")));
    wait_until(
        "the down third to wait in the spool",
        Duration::from_secs(10),
        || sidecar.status()["audit"]["spooled"].as_u64() >= Some(300),
    );
    sidecar.proc.terminate();
    let restarted = Sidecar::start(
        &repo().join("policies"),
        grpc.clone(),
        &refs(&flags),
        dir.path(),
    );
    // The receiver comes back for the last third.
    let _receiver = Receiver::start(port, received.clone());
    send(&envoy, (0..300).map(|i| format!("back-{i}")));

    let expected: BTreeSet<String> = ["up", "down", "back"]
        .iter()
        .flat_map(|p| (0..300).map(move |i| format!("{p}-{i}")))
        .collect();
    wait_until(
        "all 900 request ids at the receiver",
        Duration::from_secs(60),
        || request_ids(&received).is_superset(&expected),
    );
    assert!(received
        .records()
        .iter()
        .all(|r| r["type"] == "policy.decision"));
    // The restart continued the chain from the spool: one chain.
    let chains: BTreeSet<String> = received
        .records()
        .iter()
        .filter_map(|r| r["chainId"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(chains.len(), 1, "{chains:?}");
    assert!(restarted.metric("sentinel_audit_shipped_total") > 0.0);
    wait_until("the spool to empty", Duration::from_secs(10), || {
        restarted.status()["audit"]["spooled"] == 0
    });

    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, received.ndjson()).expect("write export");
    let (code, out) = verify(&export);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 problems"), "{out}");

    // One edited record is caught, by line and seq.
    let mut lines: Vec<Value> = received.records();
    let victim = lines.len() / 2;
    lines[victim]["decision"] = Value::String("deny".into());
    let seq = lines[victim]["seq"].as_u64().expect("seq");
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(
        &edited,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write");
    let (code, out) = verify(&edited);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("line {}: node test-node chain ", victim + 1))
            && out.contains(&format!("seq {seq}"))
            && out.contains("edited"),
        "{out}"
    );
    drop(kernel);
}

#[test]
fn a_refused_batch_is_set_aside_and_every_later_record_arrives() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let received = Arc::new(Received::default());
    // The receiver refuses (400) any batch holding the record of request
    // "poison"; first it is unavailable (503), then answers as if the
    // sidecar were misconfigured (403, 404): all three are retried.
    *received.refuse_request_id.lock().expect("lock") = Some("poison".into());
    *received.answer_first.lock().expect("lock") = vec![503, 403, 404];
    let receiver = Receiver::start(0, received.clone());
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(
        &repo().join("policies"),
        Grpc::tcp(),
        &refs(&audit_flags(&receiver.url(), &spool)),
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());

    let before: BTreeSet<String> = (0..50).map(|i| format!("before-{i}")).collect();
    send(&envoy, before.iter().cloned());
    wait_until(
        "records before the refusal arrive",
        Duration::from_secs(20),
        || request_ids(&received).is_superset(&before),
    );
    // Every record before the refusal arrived although the first batches
    // were answered 503, 403 and 404: those answers were retried, not
    // set aside.
    send(&envoy, std::iter::once("poison".to_owned()));
    // Past the batch age bound, so the refused batch holds only this record.
    std::thread::sleep(Duration::from_millis(1500));
    let after: BTreeSet<String> = (0..150).map(|i| format!("after-{i}")).collect();
    send(&envoy, after.iter().cloned());
    wait_until(
        "every record after the refusal arrives",
        Duration::from_secs(20),
        || request_ids(&received).is_superset(&after),
    );

    assert_eq!(
        received.refused_batches.load(Ordering::SeqCst),
        1,
        "refused once, not retried"
    );
    let rejected_dir = spool.join("rejected");
    let files: Vec<_> = std::fs::read_dir(&rejected_dir)
        .expect("SPOOL/rejected exists")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let rejected_text = std::fs::read_to_string(&files[0]).expect("read");
    let rejected: Vec<Value> = rejected_text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record per line"))
        .collect();
    let rejected_ids: Vec<&str> = rejected
        .iter()
        .filter_map(|r| r["requestId"].as_str())
        .collect();
    assert_eq!(rejected_ids, vec!["poison"]);
    assert_eq!(sidecar.metric("sentinel_audit_rejected_total"), 1.0);
    assert_eq!(sidecar.status()["audit"]["rejected"], 1);
    assert!(sidecar.metric("sentinel_audit_ship_failures_total") >= 4.0);

    // Nothing lost or duplicated: what arrived plus what was set aside is
    // every decision exactly once, and the chain verifies across both.
    let arrived = received.records();
    let arrived_ids: Vec<&str> = arrived.iter().filter_map(|r| r["id"].as_str()).collect();
    let unique: BTreeSet<&str> = arrived_ids.iter().copied().collect();
    assert_eq!(unique.len(), arrived_ids.len(), "duplicates arrived");
    assert_eq!(arrived.len() + rejected.len(), 201);
    let all = dir.path().join("all.ndjson");
    std::fs::write(&all, received.ndjson() + &rejected_text).expect("write");
    let (code, report) = verify(&all);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("201 records"), "{report}");
}

#[test]
fn shutdown_flushes_what_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let received = Arc::new(Received::default());
    let receiver = Receiver::start(0, received.clone());
    let mut flags: Vec<String> = IDENTITY.iter().map(|s| s.to_string()).collect();
    flags.extend(["--audit-url".into(), receiver.url()]);
    let kernel = Kernel::start();
    let mut sidecar = Sidecar::start(
        &repo().join("policies"),
        Grpc::tcp(),
        &refs(&flags),
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    send(&envoy, (0..40).map(|i| format!("flush-{i}")));
    sidecar.proc.terminate();
    let expected: BTreeSet<String> = (0..40).map(|i| format!("flush-{i}")).collect();
    assert!(
        request_ids(&received).is_superset(&expected),
        "records lost at shutdown"
    );
}

fn spool_bytes_on_disk(spool: &Path) -> u64 {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn spool_stays_within_its_bound_and_counts_every_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    // Nothing listens here: the audit service is down for the whole test.
    let dead_url = format!("http://127.0.0.1:{}/v1/audit/decisions", free_port());
    let mut flags = audit_flags(&dead_url, &spool);
    flags.extend(["--spool-max-bytes".into(), "65536".into()]);
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(
        &repo().join("policies"),
        Grpc::tcp(),
        &refs(&flags),
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());

    let checks = 600;
    let mut largest = 0;
    for chunk in 0..12 {
        send(
            &envoy,
            (0..checks / 12).map(|i| format!("bound-{chunk}-{i}")),
        );
        largest = largest.max(spool_bytes_on_disk(&spool));
    }
    wait_until(
        "every record spooled or dropped",
        Duration::from_secs(10),
        || {
            sidecar.metric("sentinel_audit_dropped_total")
                + sidecar.metric("sentinel_audit_backlog_records")
                == checks as f64
        },
    );
    largest = largest.max(spool_bytes_on_disk(&spool));
    assert!(largest <= 65536, "spool reached {largest} bytes");
    let dropped = sidecar.metric("sentinel_audit_dropped_total");
    assert!(dropped > 0.0, "600 records cannot fit in 64 KiB");
    assert!(sidecar.metric("sentinel_audit_spool_bytes") <= 65536.0);
    // The bound itself, for alerts on spool_bytes / spool_limit_bytes.
    assert_eq!(sidecar.metric("sentinel_audit_spool_limit_bytes"), 65536.0);
    assert!(sidecar.metric("sentinel_audit_ship_failures_total") > 0.0);
    let status = sidecar.status();
    assert_eq!(status["audit"]["dropped"], dropped as u64);
}

#[test]
fn a_corrupt_spool_segment_costs_only_its_bad_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let dead_url = format!("http://127.0.0.1:{}/v1/audit/decisions", free_port());
    let kernel = Kernel::start();
    let grpc = Grpc::tcp();
    let mut sidecar = Sidecar::start(
        &repo().join("policies"),
        grpc.clone(),
        &refs(&audit_flags(&dead_url, &spool)),
        dir.path(),
    );
    let envoy = Envoy::start(&grpc, kernel.port, dir.path());
    send(&envoy, (0..100).map(|i| format!("c-{i}")));
    sidecar.proc.terminate();

    // Garble one record in the middle and tear the tail of the segment.
    let segment = std::fs::read_dir(&spool)
        .expect("spool")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
        })
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let newlines: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .collect();
    assert_eq!(newlines.len(), 100);
    bytes[newlines[49] + 30] ^= 0x20; // inside record 50 (seq 50)
    bytes.truncate(newlines[98] + 40); // record 99 (seq 99) torn
    std::fs::write(&segment, bytes).expect("write");

    let received = Arc::new(Received::default());
    let receiver = Receiver::start(0, received.clone());
    let sidecar = Sidecar::start(
        &repo().join("policies"),
        grpc,
        &refs(&audit_flags(&receiver.url(), &spool)),
        dir.path(),
    );
    assert_eq!(
        sidecar.metric("sentinel_audit_spool_corrupt_records_total"),
        2.0
    );
    assert!(sidecar.log_text().contains("skipping corrupt spool record"));
    send(&envoy, (0..5).map(|i| format!("after-{i}")));
    let expected: BTreeSet<String> = (0..100)
        .filter(|i| *i != 50 && *i != 99)
        .map(|i| format!("c-{i}"))
        .chain((0..5).map(|i| format!("after-{i}")))
        .collect();
    wait_until("the good records", Duration::from_secs(20), || {
        request_ids(&received).is_superset(&expected)
    });
    let ids = request_ids(&received);
    assert!(!ids.contains("c-50") && !ids.contains("c-99"));

    // The verifier shows exactly what was lost: seq 50; the torn seq 99
    // was never shipped and the chain continued from seq 98.
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, received.ndjson()).expect("write");
    let (code, out) = verify(&export);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 50 is missing"), "{out}");
    assert!(out.contains("1 problems"), "{out}");
    drop(kernel);
}

#[test]
fn records_ship_over_mtls_with_the_kernel_client_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = support::pki::Pki::new(&dir.path().join("pki"), "audit");
    let server = pki.issue("receiver", "audit.local", None);
    let client = pki.issue(
        "sidecar",
        "kernel-7f9c",
        Some("spiffe://cluster/ns/kernel/sa/sidecar"),
    );
    let tls = sentinelnet::tls::server_config(
        &std::fs::read(&server.cert).expect("cert"),
        &std::fs::read(&server.key).expect("key"),
        Some(pki.ca_pem.as_bytes()),
        sentinelnet::tls::HTTP_ALPN,
    )
    .expect("server TLS config");
    let received = Arc::new(Received::default());
    let receiver = Receiver::start_tls(0, received.clone(), tls);
    let url = receiver.https_url();
    let flags = [
        "--principal-from",
        "header:x-user",
        "--audit-url",
        url.as_str(),
    ];
    let ca = pki.ca_path();

    // With the identity: records arrive.
    let kernel = Kernel::start();
    let env = client.client_env(&ca);
    let sidecar = Sidecar::start_with_env(
        &repo().join("policies"),
        Grpc::tcp(),
        &flags,
        &env,
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    send(&envoy, (0..20).map(|i| format!("tls-{i}")));
    let expected: BTreeSet<String> = (0..20).map(|i| format!("tls-{i}")).collect();
    wait_until("records over mTLS", Duration::from_secs(15), || {
        request_ids(&received).is_superset(&expected)
    });
    drop((envoy, sidecar));

    // A certificate from another CA is refused by the receiver; the sidecar
    // keeps deciding and counts the failures.
    let other = support::pki::Pki::new(&dir.path().join("other"), "rogue");
    let rogue = other.issue("rogue", "kernel-7f9c", None);
    let env = rogue.client_env(&ca);
    let sidecar = Sidecar::start_with_env(
        &repo().join("policies"),
        Grpc::tcp(),
        &flags,
        &env,
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    send(&envoy, (0..5).map(|i| format!("rogue-{i}")));
    wait_until("refused shipping attempts", Duration::from_secs(15), || {
        sidecar.metric("sentinel_audit_ship_failures_total") >= 1.0
    });
    assert!(
        received
            .refused_handshakes
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    assert!(!request_ids(&received)
        .iter()
        .any(|id| id.starts_with("rogue-")));

    // Plain http without DEV_SKIP_MTLS is refused at start, with one line.
    let out = Command::new(sentinelnet())
        .args(["serve", "--bundle"])
        .arg(repo().join("policies"))
        .args([
            "--audit-url",
            "http://127.0.0.1:9/v1/audit/decisions",
            "--admin-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("DEV_SKIP_MTLS", "false")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain http is refused"));
}
