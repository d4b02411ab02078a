//! Realistic decision records for the benchmarks (~1.7 KB each, with their
//! input), chained like a sidecar chains them.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A node's chain from seq 0, each record linked to the one before, as a
/// sidecar writes them.
pub(crate) fn chain<'a>(node: &'a str, chain_id: &'a str) -> impl Iterator<Item = Value> + 'a {
    let mut prev = GENESIS.to_owned();
    (0u64..).map(move |seq| {
        let r = record(node, chain_id, seq, &prev);
        prev = r["hash"].as_str().unwrap_or_default().to_owned();
        r
    })
}

/// A record as a sidecar writes it: realistic fields and input (~1 KB).
fn record(node: &str, chain: &str, seq: u64, prev: &str) -> Value {
    // A mix of requests, so a realistic bundle's rules match some of them.
    let (method, path, role) = match seq % 10 {
        0 => ("DELETE", "/v1/kernels/k-1234", "reader"),
        1 => ("DELETE", "/v1/kernels/k-1234", "admin"),
        2 => ("POST", "/v1/kernels/batch", "writer"),
        3 => ("GET", "/v1/admin/keys", "reader"),
        4 => ("PUT", "/v1/kernels/k-1234", "writer"),
        _ => ("GET", "/v1/kernels/k-1234", "reader"),
    };
    let source = if seq % 10 == 3 {
        "203.0.113.7"
    } else {
        "10.1.2.3"
    };
    let agent = if seq % 7 == 0 {
        "curl/8.5.0"
    } else {
        "kernel-client/2.3"
    };
    let mut record = json!({
        "type": "policy.decision", "id": format!("{chain}-{seq:08}"),
        "ts": format!("2026-11-24T01:{:02}:{:02}.{:06}Z", (seq / 60) % 60, seq % 60, seq % 1_000_000),
        "node": node, "chainId": chain, "requestId": format!("{node}-req-{seq}"),
        "decision": if seq % 5 == 0 { "deny" } else { "allow" },
        "status": if seq % 5 == 0 { 403 } else { 200 },
        "reason": "policy",
        "policyId": if seq % 5 == 0 { "kernel.delete-needs-admin" } else { "kernel.read-allowed" },
        "policyVersion": 3, "bundle": "kernel", "bundleRevision": "r42",
        "rationale": "kernel.read-allowed matched: readers may list and get Kernel objects",
        "evidenceRefs": [format!("decision:{chain}-{seq:08}"), "bundle:kernel@r42", "policy:kernel.read-allowed@3"],
        "evidence": {"request.method": "GET", "principal.id": "spiffe://cluster/ns/app/sa/reader"},
        "shadow": [{"policyId": "kernel.suspicious-agent-simulation", "policyVersion": 1, "mode": "simulating", "wouldDecide": "deny"}],
        "latencyUs": 7, "seq": seq, "prevHash": prev,
        "masked": ["request.headers.authorization"],
        "input": {
            "request": {"id": format!("{node}-req-{seq}"), "method": method, "path": path,
                "host": "kernel.svc:10000", "scheme": "http", "protocol": "HTTP/1.1",
                "segments": path.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>(), "query": {"limit": "10"}, "size": 0,
                "headers": {":authority": "kernel.svc:10000", ":method": method, ":path": format!("{path}?limit=10"),
                    "user-agent": agent, "x-request-id": format!("{node}-req-{seq}"),
                    "x-user": "spiffe://cluster/ns/app/sa/reader", "x-roles": "reader"}},
            "source": {"address": source, "port": 43512, "principal": "spiffe://cluster/ns/app/sa/reader"},
            "destination": {"address": "10.1.9.9", "port": 10000},
            "principal": {"id": "spiffe://cluster/ns/app/sa/reader", "roles": [role]},
            "time": {"unix": 1_795_000_000u64 + seq}
        }
    });
    // The hash covers the canonical JSON (sorted keys, compact): what
    // serde_json writes for a `Value`.
    let hash = hex::encode(Sha256::digest(record.to_string().as_bytes()));
    record["hash"] = json!(hash);
    record
}
