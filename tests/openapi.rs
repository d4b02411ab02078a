//! Central's `/openapi.json` against central itself: Schemathesis (PyPI)
//! fuzzes every operation of a live central over mTLS with a client
//! certificate of each role, a fixed number of examples per operation:
//! no 5xx, no status, content type or body outside the document, no panic
//! in central's log. And errors axum writes itself are `{"error"}` too.

mod support;

use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::central::*;
use support::*;

/// Schemathesis: `$SCHEMATHESIS_BIN`, else `target/st-venv/bin/schemathesis`,
/// installed from PyPI if missing (`.ci/run` installs it).
fn schemathesis() -> PathBuf {
    python_tool(
        "SCHEMATHESIS_BIN",
        "st-venv",
        "schemathesis",
        "schemathesis>=4,<5",
    )
}

#[test]
fn schemathesis_finds_nothing_outside_the_document() {
    let world = World::new();
    // An admin identity too, so every role is exercised.
    let admin = world
        .pki
        .issue("admin", "ops", Some("spiffe://cluster/ns/ops/sa/admin"));
    std::fs::write(
        world.path().join("rbac.json"),
        json!({
            SIDECAR_ID: ["sidecar"],
            PUBLISHER_ID: ["publisher"],
            APPROVER_ID: ["approver"],
            "spiffe://cluster/ns/ops/sa/admin": ["admin"],
        })
        .to_string(),
    )
    .expect("rbac");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/central.db", dir.path().display());
    // No rate limit: the fuzzer's ~1,250 requests per role should reach
    // the API's logic, not its 429 (which is documented and tested apart).
    let central = Central::start(
        world.path(),
        free_port(),
        &db,
        &world.pki,
        &["--rate-limit", "0", "--ingest-rate-limit", "0"],
    );
    let ca = world.pki.ca_path();

    // Something to read: the example bundle and a few records.
    let pushed = Command::new(sentinelnet())
        .args(["ctl", "--central", &central.url("")])
        .arg("--cert")
        .arg(&world.publisher.cert)
        .arg("--key")
        .arg(&world.publisher.key)
        .arg("--ca")
        .arg(&ca)
        .args(["push"])
        .arg(repo().join("policies"))
        .args(["--bundle", "kernel"])
        .output()
        .expect("ctl push");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let mut prev = GENESIS.to_owned();
    let mut records = Vec::new();
    for seq in 0..5 {
        let r = record("node-a", "c1", seq, &prev, &rfc3339_now());
        prev = r["hash"].as_str().expect("hash").to_owned();
        records.push(r);
    }
    let as_sidecar = caller(Some(&world.sidecar), &ca);
    let (status, _) = call(
        as_sidecar
            .post(central.url("/v1/audit/decisions"))
            .body(ndjson(&records)),
    );
    assert_eq!(status, 200);

    // Errors axum writes itself are JSON like ours.
    let publisher = world.as_publisher();
    for (request, expected) in [
        (
            publisher.get(central.url("/v1/bundles/kernel?wait=soon")),
            400,
        ),
        (publisher.get(central.url("/v1/no/such/thing")), 404),
        (publisher.delete(central.url("/v1/fleet")), 405),
        (publisher.put(central.url("/v1/simulate")), 405),
    ] {
        let (status, body) = call(request);
        assert_eq!(status, expected, "{body}");
        assert!(body["error"].is_string(), "{status}: {body}");
    }

    // Every answer carries the security headers, errors and 304s too.
    for (request, expected) in [
        (publisher.get(central.url("/v1/bundles")), 200),
        (publisher.get(central.url("/v1/no/such/thing")), 404),
        (
            as_sidecar
                .get(central.url("/v1/bundles/kernel"))
                .header("if-none-match", "\"kernel-r1\""),
            304,
        ),
    ] {
        let response = request.send().expect("central answers");
        assert_eq!(response.status().as_u16(), expected);
        let headers = response.headers();
        for (name, value) in [
            ("strict-transport-security", "max-age=31536000"),
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-store"),
            ("content-security-policy", "default-src 'none'"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{name} on a {expected}"
            );
        }
    }

    // The document as central serves it.
    let (status, doc) = call(publisher.get(central.url("/openapi.json")));
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let schema = world.path().join("openapi.json");
    std::fs::write(&schema, doc.to_string()).expect("write");

    let bin = schemathesis();
    for (role, leaf) in [
        ("sidecar", &world.sidecar),
        ("publisher", &world.publisher),
        ("approver", &world.approver),
        ("admin", &admin),
    ] {
        let out = Command::new(&bin)
            .arg("run")
            .arg(&schema)
            .args(["--url", &central.url("")])
            .arg("--request-cert")
            .arg(&leaf.cert)
            .arg("--request-cert-key")
            .arg(&leaf.key)
            .arg("--tls-verify")
            .arg(&ca)
            .args(["--max-examples", "10", "--seed", "20261124", "--workers", "1"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .env("NO_COLOR", "1")
            // Schemathesis keeps a cache in its working directory.
            .current_dir(world.path())
            .output()
            .expect("schemathesis runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis as {role} found problems:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "N generated, N passed": every generated case passed.
        let summary = text
            .lines()
            .map(str::trim)
            .find(|l| l.contains(" generated, "))
            .unwrap_or_default();
        let counts: Vec<&str> = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .collect();
        assert!(
            counts.len() == 2 && counts[0] == counts[1] && counts[0] != "0",
            "as {role}: {summary}\n{text}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = central.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // Central still answers after the fuzzing.
    let (status, _) = call(publisher.get(central.url("/v1/bundles")));
    assert_eq!(status, 200);
}
