//! The sidecar behind a real Envoy 1.40 with the ext_authz filter, in front
//! of a mock Kernel that echoes what reached it.

mod support;

use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

/// Principals come from gateway headers in these tests (no downstream mTLS).
const IDENTITY_FLAGS: &[&str] = &[
    "--principal-from",
    "header:x-user",
    "--roles-from",
    "header:x-roles",
];

fn send(request: RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response: Response = request.send().expect("Envoy answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().unwrap_or_default())
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Envoy + sidecar (TCP) + Kernel on the example bundle.
fn stack(dir: &std::path::Path) -> (Kernel, Sidecar, Envoy) {
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(&repo().join("policies"), Grpc::tcp(), IDENTITY_FLAGS, dir);
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir);
    (kernel, sidecar, envoy)
}

#[test]
fn allow_and_deny_through_envoy_with_headers_bodies_and_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_kernel, sidecar, envoy) = stack(dir.path());
    let http = client();

    // Allowed read: upstream sees the added header, not the removed one; the
    // client sees the policy's response header.
    let (status, headers, body) = send(
        http.get(envoy.url("/v1/kernels?limit=5"))
            .header("x-user", "alice")
            .header("x-debug-token", "s3cret")
            .header("user-agent", "kernel-cli/1.0"),
    );
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    let upstream = &echo["headers"];
    assert_eq!(upstream["x-kernel-caller"], "verified");
    assert!(
        upstream.get("x-debug-token").is_none(),
        "x-debug-token must be removed: {upstream}"
    );
    let allow_decision = upstream["x-sentinel-decision-id"]
        .as_str()
        .expect("decision id upstream")
        .to_owned();
    assert_eq!(header(&headers, "x-policy"), Some("kernel.read-allowed"));

    // Denied by a policy: its status, body and headers reach the client.
    let (status, headers, body) = send(
        http.delete(envoy.url("/v1/kernels/k1"))
            .header("x-user", "bob")
            .header("x-roles", "editor"),
    );
    assert_eq!(status, 403);
    assert_eq!(body, "admin role required");
    assert_eq!(header(&headers, "x-reason"), Some("needs-admin"));
    let deny_decision = header(&headers, "x-sentinel-decision-id")
        .expect("decision id")
        .to_owned();

    // The admin may delete: an allow policy decides.
    let (status, _, _) = send(
        http.delete(envoy.url("/v1/kernels/k1"))
            .header("x-user", "root")
            .header("x-roles", "admin,editor"),
    );
    assert_eq!(status, 200);

    // No policy matches an anonymous read: the bundle default (deny) applies.
    let (status, _, body) = send(http.get(envoy.url("/v1/kernels")));
    assert_eq!(status, 403);
    assert!(body.contains("no policy allows this request"), "{body}");

    // JSON body read by a policy.
    let (status, headers, _) = send(
        http.post(envoy.url("/v1/kernels/transfers"))
            .header("x-user", "carol")
            .header("x-roles", "editor")
            .header("content-type", "application/json")
            .body(r#"{"amount": 25000}"#),
    );
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "x-reason"), Some("transfer-limit"));
    let (status, _, _) = send(
        http.post(envoy.url("/v1/kernels/transfers"))
            .header("x-user", "carol")
            .header("x-roles", "editor")
            .header("content-type", "application/json")
            .body(r#"{"amount": 20}"#),
    );
    assert_eq!(status, 200);

    // A malformed JSON body is a policy input (request.bodyError), not an error.
    let (status, headers, body) = send(
        http.post(envoy.url("/v1/kernels"))
            .header("x-user", "carol")
            .header("x-roles", "editor")
            .header("content-type", "application/json")
            .body("{not json"),
    );
    assert_eq!(
        (status, body.as_str()),
        (400, "request body is not valid JSON")
    );
    assert_eq!(header(&headers, "x-reason"), Some("bad-json"));
    assert_eq!(
        sidecar.metric(r#"sentinel_decisions_total{decision="deny",reason="error"}"#),
        0.0
    );

    // Shadow: the simulating policy matches curl but never enforces; the
    // record says what it would have decided.
    let (status, _, _) = send(
        http.get(envoy.url("/v1/kernels"))
            .header("x-user", "dave")
            .header("x-request-id", "shadow-probe-1")
            .header("user-agent", "curl/8.4.0"),
    );
    assert_eq!(status, 200);
    // Draft: the purge policy would deny, but drafts are not evaluated.
    let (status, _, _) = send(
        http.get(envoy.url("/v1/kernels/purge"))
            .header("x-user", "dave")
            .header("x-request-id", "draft-probe-1"),
    );
    assert_eq!(status, 200);
    let (status, _, _) = send(repeated_header_probe(
        http.get(envoy.url("/v1/kernels?probe=1"))
            .header("x-user", "dave"),
    ));
    assert_eq!(status, 200);

    wait_until(
        "records to reach the decision log",
        Duration::from_secs(5),
        || {
            let records = http_json(&sidecar.admin("/v1/decisions?limit=50"));
            records["decisions"].as_array().map_or(0, Vec::len) >= 10
        },
    );
    assert_headers_as_ext_authz_sends_them(
        &http_json(&sidecar.admin("/v1/decisions?limit=50&withInput=true"))["decisions"],
        "/v1/kernels?probe=1",
    );
    let records = http_json(&sidecar.admin("/v1/decisions?limit=50"))["decisions"].clone();
    let by_request = |rid: &str| -> Value {
        records
            .as_array()
            .and_then(|a| a.iter().find(|r| r["requestId"] == rid).cloned())
            .unwrap_or_else(|| panic!("no record for {rid}"))
    };
    let shadow = by_request("shadow-probe-1");
    assert_eq!(shadow["decision"], "allow");
    assert_eq!(shadow["policyId"], "kernel.read-allowed");
    assert_eq!(
        shadow["shadow"],
        json!([{"policyId": "kernel.suspicious-agent-simulation", "policyVersion": 1, "mode": "simulating", "wouldDecide": "deny"}])
    );
    let draft = by_request("draft-probe-1");
    assert_eq!(draft["policyId"], "kernel.read-allowed");
    assert!(
        draft["shadow"].as_array().is_some_and(Vec::is_empty),
        "{draft}"
    );

    let deny_record = records
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["id"] == deny_decision.as_str())
                .cloned()
        })
        .expect("record of the deny");
    assert_eq!(deny_record["policyId"], "kernel.delete-needs-admin");
    assert_eq!(deny_record["status"], 403);
    assert_eq!(
        deny_record["evidence"],
        json!({"request.method": "DELETE", "principal.id": "bob"})
    );

    // Explain lists the decision among the policy's recent decisions.
    let explain = http_json(&sidecar.admin("/v1/policies/kernel.delete-needs-admin/explain"));
    assert_eq!(explain["rule"]["and"][0]["=="][1], "DELETE");
    assert!(explain["recentDecisions"]
        .as_array()
        .is_some_and(|d| d.iter().any(|r| r["decisionId"] == deny_decision.as_str())));
    assert_eq!(
        http_get(&sidecar.admin("/v1/policies/nope/explain")).map(|r| r.0),
        Some(404)
    );

    // Envoy's access log joins to the records through dynamic metadata.
    wait_until(
        "the access log (Envoy flushes it in batches)",
        Duration::from_secs(10),
        || {
            let lines = envoy.access_log_lines();
            [&allow_decision, &deny_decision]
                .iter()
                .all(|id| lines.iter().any(|l| l["decision_id"] == id.as_str()))
        },
    );
    let line = envoy
        .access_log_lines()
        .into_iter()
        .find(|l| l["decision_id"] == deny_decision.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no access log line for {deny_decision}: {:?}",
                envoy.access_log_lines()
            )
        });
    assert_eq!(line["policy_id"], "kernel.delete-needs-admin");
    assert_eq!(line["policy_version"], 3);
    assert_eq!(line["bundle_revision"], "r1");
    assert_eq!(line["status"], 403);
}

#[test]
fn default_allow_bundle_lets_unmatched_requests_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    write_bundle(
        &bundle,
        "open",
        "r7",
        "allow",
        &[
            json!({"id": "block-secrets", "version": 1, "severity": "HIGH", "state": "active",
                 "effect": "deny", "when": {"starts_with": [{"var": "request.path"}, "/secrets"]}}),
        ],
    );
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(&bundle, Grpc::tcp(), &[], dir.path());
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    let http = client();
    let (status, _, _) = send(http.get(envoy.url("/anything")));
    assert_eq!(status, 200);
    let (status, _, body) = send(http.get(envoy.url("/secrets/x")));
    assert_eq!(status, 403);
    assert!(body.contains("denied by policy block-secrets"), "{body}");
    assert_eq!(
        sidecar.metric(r#"sentinel_decisions_total{decision="allow",reason="default"}"#),
        1.0
    );
}

/// Decide 3,000 export requests with distinct ids; return the denied ids.
fn canary_denied(envoy: &Envoy) -> BTreeSet<usize> {
    let denied = std::sync::Mutex::new(BTreeSet::new());
    std::thread::scope(|s| {
        for worker in 0..6 {
            let denied = &denied;
            s.spawn(move || {
                let http = client();
                for i in (worker..3000).step_by(6) {
                    let (status, _, body) = send(
                        http.get(envoy.url("/v1/kernels/export"))
                            .header("x-user", "erin")
                            .header("x-request-id", format!("canary-{i}")),
                    );
                    match status {
                        200 => {}
                        403 => {
                            assert_eq!(body, "exports are restricted");
                            denied.lock().expect("lock").insert(i);
                        }
                        other => panic!("unexpected status {other}: {body}"),
                    }
                }
            });
        }
    });
    denied.into_inner().expect("lock")
}

#[test]
fn canary_slice_is_near_its_percent_and_identical_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kernel, mut sidecar, envoy) = stack(dir.path());
    let first = canary_denied(&envoy);
    assert!(
        (210..=390).contains(&first.len()),
        "a 10% canary denied {} of 3000",
        first.len()
    );
    assert_eq!(
        sidecar.metric(
            r#"sentinel_policy_matches_total{mode="canary",policy="kernel.export-canary"}"#
        ),
        first.len() as f64
    );
    assert_eq!(
        sidecar.metric(
            r#"sentinel_policy_matches_total{mode="shadow",policy="kernel.export-canary"}"#
        ),
        (3000 - first.len()) as f64
    );

    // Restart the sidecar on the same port: the same ids fall in the slice.
    sidecar.proc.terminate();
    let grpc = sidecar.grpc.clone();
    let restarted = Sidecar::start(&repo().join("policies"), grpc, IDENTITY_FLAGS, dir.path());
    let second = canary_denied(&envoy);
    assert_eq!(first, second);
    drop((kernel, restarted));
}

#[test]
fn unix_socket_variant_decides_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sentinel.sock");
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(
        &repo().join("policies"),
        Grpc::Unix(socket),
        IDENTITY_FLAGS,
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    let http = client();
    let (status, _, _) = send(http.get(envoy.url("/v1/kernels")).header("x-user", "alice"));
    assert_eq!(status, 200);
    let (status, _, body) = send(
        http.delete(envoy.url("/v1/kernels/k"))
            .header("x-user", "alice"),
    );
    assert_eq!((status, body.as_str()), (403, "admin role required"));
}

#[test]
fn sidecar_down_fails_closed_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = Kernel::start();
    // Nothing listens on this port.
    let envoy = Envoy::start(&Grpc::tcp(), kernel.port, dir.path());
    let (status, _, _) = send(
        client()
            .get(envoy.url("/v1/kernels"))
            .header("x-user", "alice"),
    );
    assert_eq!(status, 503);
}
