//! In-process mode: the policies run inside a real Envoy 1.40 as the
//! dynamic module (`libsentinelnet_envoy.so`), in front of the mock Kernel.
//! The same cases as the ext_authz tests (tests/e2e_envoy.rs) answer the
//! same way; decisions reach the sidecar's `--record-socket` and become
//! records in its chain; bundles swap live, a bad one is refused, an
//! unsigned one is refused when keys are trusted; no sidecar listening
//! costs the requests nothing.

mod support;

use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

fn send(request: RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response: Response = request.send().expect("Envoy answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().unwrap_or_default())
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn filter_config(bundle: &Path, records: Option<&Path>) -> Value {
    let mut config = json!({
        "bundle": bundle.display().to_string(),
        "onError": "deny",
        "principalFrom": "header:x-user",
        "rolesFrom": "header:x-roles",
    });
    if let Some(socket) = records {
        config["records"] = json!(format!("unix:{}", socket.display()));
    }
    config
}

/// A sidecar that only records (on `socket`), the mock Kernel, and Envoy
/// with the module deciding from `bundle` and sending its events there.
fn recording_stack(bundle: &Path, socket: &Path, dir: &Path) -> (Sidecar, Kernel, Envoy) {
    let sidecar = Sidecar::start(
        &repo().join("policies"),
        Grpc::tcp(),
        &["--record-socket", &format!("unix:{}", socket.display())],
        dir,
    );
    let kernel = Kernel::start();
    let envoy = Envoy::start_inprocess(&filter_config(bundle, Some(socket)), kernel.port, dir);
    (sidecar, kernel, envoy)
}

#[test]
fn the_module_decides_like_the_sidecar_and_its_decisions_become_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("records.sock");
    let (sidecar, _kernel, envoy) = recording_stack(&repo().join("policies"), &socket, dir.path());
    let http = client();

    // Allowed read: upstream sees the added header, not the removed one;
    // the client sees the policy's response header.
    let (status, headers, body) = send(
        http.get(envoy.url("/v1/kernels?limit=5"))
            .header("x-user", "alice")
            .header("x-debug-token", "s3cret")
            .header("x-request-id", "read-1"),
    );
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    let upstream = &echo["headers"];
    assert_eq!(upstream["x-kernel-caller"], "verified", "{upstream}");
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
            .header("x-roles", "editor")
            .header("authorization", "Bearer never-recorded"),
    );
    assert_eq!((status, body.as_str()), (403, "admin role required"));
    assert_eq!(header(&headers, "x-reason"), Some("needs-admin"));
    let deny_decision = header(&headers, "x-sentinel-decision-id")
        .expect("decision id")
        .to_owned();
    // The admin may delete.
    let (status, _, _) = send(
        http.delete(envoy.url("/v1/kernels/k1"))
            .header("x-user", "root")
            .header("x-roles", "admin,editor"),
    );
    assert_eq!(status, 200);
    // The bundle default (deny) for an anonymous read.
    let (status, _, body) = send(http.get(envoy.url("/v1/kernels")));
    assert_eq!(status, 403);
    assert!(body.contains("no policy allows this request"), "{body}");

    // JSON bodies, read by a policy: the module waits for the body.
    let transfer = |amount: u32| {
        send(
            http.post(envoy.url("/v1/kernels/transfers"))
                .header("x-user", "carol")
                .header("x-roles", "editor")
                .header("content-type", "application/json")
                .body(format!(r#"{{"amount": {amount}}}"#)),
        )
    };
    let (status, headers, _) = transfer(25_000);
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "x-reason"), Some("transfer-limit"));
    let (status, _, body) = transfer(20);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["bodyBytes"], 14, "the body reaches the upstream");
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

    // Shadow: the simulating policy matches curl but never enforces.
    let (status, _, _) = send(
        http.get(envoy.url("/v1/kernels"))
            .header("x-user", "dave")
            .header("x-request-id", "shadow-probe-1")
            .header("user-agent", "curl/8.4.0"),
    );
    assert_eq!(status, 200);

    // Envoy's access log reads the decision from dynamic metadata.
    wait_until("the access log", Duration::from_secs(10), || {
        let lines = envoy.access_log_lines();
        [&allow_decision, &deny_decision]
            .iter()
            .all(|id| lines.iter().any(|l| l["decision_id"] == id.as_str()))
    });
    let line = envoy
        .access_log_lines()
        .into_iter()
        .find(|l| l["decision_id"] == deny_decision.as_str())
        .expect("the deny's access log line");
    assert_eq!(line["policy_id"], "kernel.delete-needs-admin");
    assert_eq!(line["policy_version"], 3);
    assert_eq!(line["bundle_revision"], "r1");
    assert_eq!(line["status"], 403);

    // A repeated header and the pseudo-headers reach the policies as
    // ext_authz sends them to the sidecar.
    let (status, _, _) = send(repeated_header_probe(
        http.get(envoy.url("/v1/kernels?probe=1"))
            .header("x-user", "dave"),
    ));
    assert_eq!(status, 200);

    // Every decision became a record in the sidecar's chain, with its
    // input (credentials masked) built by the sidecar.
    wait_until("the module's records", Duration::from_secs(10), || {
        sidecar.metric("sentinel_audit_forwarded_total") >= 9.0
    });
    assert_headers_as_ext_authz_sends_them(
        &http_json(&sidecar.admin("/v1/decisions?limit=50&withInput=true"))["decisions"],
        "/v1/kernels?probe=1",
    );
    let records = http_json(&sidecar.admin("/v1/decisions?limit=50"))["decisions"].clone();
    let records = records.as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 9, "{records:?}");
    let deny = records
        .iter()
        .find(|r| r["id"] == deny_decision.as_str())
        .expect("the deny's record");
    assert_eq!(deny["policyId"], "kernel.delete-needs-admin");
    assert_eq!(deny["status"], 403);
    assert_eq!(deny["node"], "test-node");
    assert_eq!(
        deny["evidence"],
        json!({"request.method": "DELETE", "principal.id": "bob"})
    );
    let read = records
        .iter()
        .find(|r| r["requestId"] == "read-1")
        .expect("the read's record");
    assert_eq!(read["id"], allow_decision.as_str());
    let shadow = records
        .iter()
        .find(|r| r["requestId"] == "shadow-probe-1")
        .expect("the shadow probe's record");
    assert_eq!(
        shadow["shadow"],
        json!([{"policyId": "kernel.suspicious-agent-simulation", "policyVersion": 1, "mode": "simulating", "wouldDecide": "deny"}])
    );
    // Chained: consecutive seqs.
    let mut seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..9).collect::<Vec<u64>>());
    // A datagram that is no event is refused and counted; the rest go on.
    let stray = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    stray.send_to(b"not an event", &socket).expect("send");
    wait_until("the stray datagram counted", Duration::from_secs(5), || {
        sidecar.metric("sentinel_audit_forwarded_invalid_total") == 1.0
    });
    assert_eq!(
        sidecar.metric(r#"sentinel_decisions_total{decision="deny",reason="policy"}"#),
        0.0,
        "the sidecar decided nothing itself"
    );

    // The sidecar goes away: requests still decide (their events are
    // dropped). A new sidecar binds the same path: the module, which keeps
    // its socket connected, reconnects and records arrive again.
    drop(sidecar);
    let read = |request_id: &str| {
        send(
            http.get(envoy.url("/v1/kernels"))
                .header("x-user", "alice")
                .header("x-request-id", request_id),
        )
        .0
    };
    assert_eq!(read("while-down"), 200);
    // Envoy counts what could not be handed over, in its own stats.
    let dropped = || -> Option<f64> {
        let url = format!(
            "http://127.0.0.1:{}/stats?filter=sentinelnet_records_dropped",
            envoy.admin_port
        );
        let (_, text) = http_get(&url)?;
        text.lines()
            .find_map(|l| l.strip_prefix("dynamicmodulescustom.sentinelnet_records_dropped: "))
            .and_then(|v| v.trim().parse().ok())
    };
    wait_until(
        "the drop counted in Envoy's stats",
        Duration::from_secs(5),
        || dropped().is_some_and(|n| n >= 1.0),
    );
    let sidecar = Sidecar::start(
        &repo().join("policies"),
        Grpc::tcp(),
        &["--record-socket", &format!("unix:{}", socket.display())],
        dir.path(),
    );
    let mut sent = 0;
    wait_until(
        "records after the sidecar restarted",
        Duration::from_secs(10),
        || {
            sent += 1;
            assert_eq!(read(&format!("after-restart-{sent}")), 200);
            std::thread::sleep(Duration::from_millis(100));
            sidecar.metric("sentinel_audit_forwarded_total") >= 1.0
        },
    );
    let records = http_json(&sidecar.admin("/v1/decisions?limit=50"))["decisions"].clone();
    let ids: Vec<&str> = records
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["requestId"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.iter().any(|id| id.starts_with("after-restart-")),
        "{ids:?}"
    );
}

#[test]
fn bundles_swap_live_bad_and_unsigned_ones_are_refused_and_records_never_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    copy_bundle(&repo().join("policies"), &bundle);
    let kernel = Kernel::start();
    // Records go to a socket nobody listens on: dropped, requests unaffected.
    let nobody = dir.path().join("nobody.sock");
    let envoy = Envoy::start_inprocess(
        &filter_config(&bundle, Some(&nobody)),
        kernel.port,
        dir.path(),
    );
    let http = client();
    let read = || send(http.get(envoy.url("/v1/kernels")).header("x-user", "alice")).0;
    wait_until("the bundle to load", Duration::from_secs(10), || {
        read() == 200
    });

    // A broken policy file: refused, the active bundle keeps deciding.
    std::fs::write(bundle.join("policies/zz-broken.json"), "{not json").expect("write");
    std::thread::sleep(Duration::from_millis(1_500));
    for _ in 0..20 {
        assert_eq!(read(), 200);
    }
    std::fs::remove_file(bundle.join("policies/zz-broken.json")).expect("remove");

    // A new revision that denies reads goes live, with requests answered
    // throughout.
    let manifest_path = bundle.join("bundle.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("manifest JSON");
    manifest["revision"] = json!("r2");
    std::fs::write(
        bundle.join("policies/zz-freeze-reads.json"),
        json!({"id": "kernel.zz-freeze-reads", "version": 1, "severity": "LOW",
               "state": "active", "effect": "deny",
               "when": {"==": [{"var": "request.method"}, "GET"]},
               "response": {"status": 423, "body": "reads are frozen"}})
        .to_string(),
    )
    .expect("write policy");
    std::fs::write(&manifest_path, manifest.to_string()).expect("write manifest");
    let mut answered = 0;
    wait_until("revision r2 to decide", Duration::from_secs(10), || {
        let status = read();
        assert!(status == 200 || status == 423, "{status}");
        answered += 1;
        status == 423
    });
    assert!(answered >= 1);

    // With trusted keys, an unsigned bundle never activates: onError (503).
    let keys = dir.path().join("keys");
    let out = std::process::Command::new(sentinelnet())
        .args(["keygen", "--name", "release", "--out"])
        .arg(&keys)
        .output()
        .expect("keygen");
    assert!(out.status.success());
    let mut config = filter_config(&bundle, None);
    config["trustedKeys"] = json!(keys.display().to_string());
    let strict = Envoy::start_inprocess(&config, kernel.port, dir.path());
    std::thread::sleep(Duration::from_millis(1_000));
    let (status, _, body) = send(
        http.get(strict.url("/v1/kernels"))
            .header("x-user", "alice"),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("authorization unavailable"), "{body}");

    // The same bundle signed into a .tar.gz decides.
    let tarball = dir.path().join("kernel.tar.gz");
    let out = std::process::Command::new(sentinelnet())
        .args(["bundle", "build"])
        .arg(repo().join("policies"))
        .arg("-o")
        .arg(&tarball)
        .arg("--sign-key")
        .arg(keys.join("release.key"))
        .output()
        .expect("bundle build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut config = filter_config(&tarball, None);
    config["trustedKeys"] = json!(keys.display().to_string());
    let signed = Envoy::start_inprocess(&config, kernel.port, dir.path());
    wait_until(
        "the signed bundle to decide",
        Duration::from_secs(10),
        || {
            send(
                http.get(signed.url("/v1/kernels"))
                    .header("x-user", "alice"),
            )
            .0 == 200
        },
    );
}

#[test]
fn a_bad_filter_config_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = std::fs::read_to_string(repo().join("envoy/envoy-inprocess.yaml"))
        .expect("envoy-inprocess.yaml");
    let line = inprocess_filter_config_line();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        template.replace(&line, r#"{"bundle": "policies", "onError": "maybe"}"#),
    )
    .expect("write");
    let out = std::process::Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&config)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
        .output()
        .expect("envoy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("filter_config onError \"maybe\": use \"deny\" or \"allow\""),
        "{text}"
    );
}

/// With mutual TLS on Envoy's listener, the module reads the caller's
/// identity from its certificate as ext_authz reports it to the sidecar
/// (`source.principal`: the first URI SAN, else the first DNS SAN, else
/// the subject; `destination.principal` from Envoy's own certificate), so
/// the default `principalFrom` (the peer) works in process too.
#[test]
fn the_callers_certificate_is_its_principal_in_process() {
    const GOOD: &str = "spiffe://sentinel.test/ns/default/sa/good";
    const KERNEL: &str = "spiffe://sentinel.test/ns/kernel/sa/kernel";
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki::Pki::new(&dir.path().join("pki"), "mesh");
    let server = pki.issue("envoy", "kernel envoy", Some(KERNEL));
    let good = pki.issue("good", "good client", Some(GOOD));
    // No URI SAN: its first DNS SAN (`localhost`) is its principal.
    let plain = pki.issue("plain", "plain client", None);
    let bundle = dir.path().join("bundle");
    let allow = |id: &str, path: &str, when: Value| {
        json!({"id": id, "version": 1, "severity": "LOW", "state": "active", "effect": "allow",
               "when": {"and": [{"==": [{"var": "request.path"}, path]}, when]},
               "response": {"responseHeaders": {"x-policy": id}}})
    };
    write_bundle(
        &bundle,
        "mesh",
        "r1",
        "deny",
        &[
            allow(
                "mesh.uri-san",
                "/uri",
                json!({"==": [{"var": "principal.id"}, GOOD]}),
            ),
            allow(
                "mesh.dns-san",
                "/dns",
                json!({"==": [{"var": "principal.id"}, "localhost"]}),
            ),
            allow(
                "mesh.both-ends",
                "/ends",
                json!({"and": [
                    {"==": [{"var": "source.principal"}, GOOD]},
                    {"==": [{"var": "destination.principal"}, KERNEL]}
                ]}),
            ),
        ],
    );
    let kernel = Kernel::start();
    // principalFrom left out: the peer, as for `serve`.
    let config = json!({"bundle": bundle.display().to_string(), "onError": "deny"});
    let envoy =
        Envoy::start_inprocess_mtls(&config, &server, &pki.ca_path(), kernel.port, dir.path());
    let good_client = central::caller(Some(&good), &pki.ca_path());
    let plain_client = central::caller(Some(&plain), &pki.ca_path());

    for (client, who, path, policy) in [
        (&good_client, "good", "/uri", Some("mesh.uri-san")),
        (&plain_client, "plain", "/uri", None),
        (&plain_client, "plain", "/dns", Some("mesh.dns-san")),
        (&good_client, "good", "/dns", None),
        (&good_client, "good", "/ends", Some("mesh.both-ends")),
        (&plain_client, "plain", "/ends", None),
    ] {
        let (status, headers, _) = send(client.get(envoy.url_tls(path)));
        match policy {
            Some(policy) => {
                assert_eq!(status, 200, "{who} {path}");
                assert_eq!(header(&headers, "x-policy"), Some(policy), "{who} {path}");
            }
            None => assert_eq!(status, 403, "{who} {path}: the default decision"),
        }
    }

    // A bundle whose only policy reads the peer through a path built at run
    // time: no field is named in its text, and the module must still ask
    // Envoy for what the rule may read.
    std::fs::remove_dir_all(bundle.join("policies")).expect("clear the bundle");
    write_bundle(
        &bundle,
        "mesh",
        "r2",
        "deny",
        &[allow(
            "mesh.computed-path",
            "/computed",
            json!({"==": [{"var": {"cat": ["sour", "ce.", "princ", "ipal"]}}, GOOD]}),
        )],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, headers, _) = send(good_client.get(envoy.url_tls("/computed")));
        if status == 200 {
            assert_eq!(header(&headers, "x-policy"), Some("mesh.computed-path"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the computed path never saw the caller's principal (last status {status})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, _) = send(plain_client.get(envoy.url_tls("/computed")));
    assert_eq!(status, 403, "another caller's principal does not match");
}

/// With records on, a recorded input holds the connection as the sidecar
/// path records it, even when no policy reads it: a later simulation of a
/// policy on `source.*` then has it to read.
#[test]
fn a_recorded_input_holds_the_connection_though_no_policy_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("records.sock");
    let bundle = dir.path().join("bundle");
    write_bundle(
        &bundle,
        "plain",
        "r1",
        "deny",
        &[
            json!({"id": "plain.reads", "version": 1, "severity": "LOW", "state": "active",
                 "effect": "allow", "when": {"==": [{"var": "request.method"}, "GET"]}}),
        ],
    );
    let (sidecar, _kernel, envoy) = recording_stack(&bundle, &socket, dir.path());
    let (status, _, _) = send(
        client()
            .get(envoy.url("/x"))
            .header("x-request-id", "conn-1"),
    );
    assert_eq!(status, 200);
    wait_until("the record", Duration::from_secs(10), || {
        sidecar.metric("sentinel_audit_forwarded_total") >= 1.0
    });
    let records =
        http_json(&sidecar.admin("/v1/decisions?limit=5&withInput=true"))["decisions"].clone();
    let record = records
        .as_array()
        .and_then(|a| a.iter().find(|r| r["requestId"] == "conn-1"))
        .cloned()
        .unwrap_or_else(|| panic!("no record of conn-1 in {records}"));
    let input = &record["input"];
    assert_eq!(input["source"]["address"], "127.0.0.1", "{input}");
    assert_eq!(input["destination"]["port"], envoy.port, "{input}");
    assert_eq!(input["request"]["protocol"], "HTTP/1.1", "{input}");
}
