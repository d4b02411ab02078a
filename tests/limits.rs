//! Central's limits against a real central over mTLS: per-identity rate
//! limits (429 with Retry-After, counted per identity, a separate budget
//! for record batches and bundle polls) and body limits (413).

mod support;

use serde_json::json;
use std::time::Duration;
use support::central::*;

#[test]
fn rates_and_bodies_are_limited_per_identity() {
    let world = World::new();
    let (central, _db) = Central::start_sqlite(
        &world,
        &[
            "--rate-limit",
            "2",
            "--ingest-rate-limit",
            "3",
            "--max-body",
            "2KiB",
        ],
    );
    let ca = world.pki.ca_path();
    let publisher = world.as_publisher();
    let approver = caller(Some(&world.approver), &ca);
    let sidecar = caller(Some(&world.sidecar), &ca);

    // A burst of twice the rate, then 429 with Retry-After.
    let statuses: Vec<u16> = (0..6)
        .map(|_| call(publisher.get(central.url("/v1/bundles"))).0)
        .collect();
    assert_eq!(&statuses[..4], &[200, 200, 200, 200], "{statuses:?}");
    let response = publisher
        .get(central.url("/v1/bundles"))
        .send()
        .expect("central answers");
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let body: serde_json::Value = response.json().expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(PUBLISHER_ID)),
        "{body}"
    );
    // Another identity has its own budget; so has record shipping.
    assert_eq!(call(approver.get(central.url("/v1/bundles"))).0, 200);
    for seq in 0..6u64 {
        let r = record("node-a", "c1", seq, GENESIS, &rfc3339_now());
        let (status, _) = call(
            sidecar
                .post(central.url("/v1/audit/decisions"))
                .body(ndjson(&[r])),
        );
        assert_eq!(status, 200, "ingest budget: 6 = twice 3");
    }
    // Waiting as told works again.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(call(publisher.get(central.url("/v1/bundles"))).0, 200);
    let limited = central_metric(
        &approver,
        &central,
        &format!("sentinel_central_rate_limited_total{{identity=\"{PUBLISHER_ID}\"}}"),
    );
    assert!(limited >= 3.0, "{limited}");

    // Bodies: a batch over --max-body, a policy over 1 MiB.
    std::thread::sleep(Duration::from_secs(1));
    let big = "x".repeat(3 << 10);
    let (status, body) = call(sidecar.post(central.url("/v1/audit/decisions")).body(big));
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let huge = json!({"id": "p", "description": "y".repeat(1 << 20)});
    let (status, body) = call(
        approver
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&huge),
    );
    assert_eq!(status, 413, "{body}");
}
