//! `sentinelnet central` end to end, with certificates generated here: the
//! sidecar pulls signed revisions over mTLS and a real Envoy enforces them;
//! refusals (no certificate, another CA, a role that does not cover the
//! call); central down and a sidecar restarted from its cache; the lifecycle
//! and multisig gate on SQLite and on a real PostgreSQL server.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::central::*;
use support::pki::Pki;
use support::*;

fn deny_delete(id: &str, severity: &str) -> Value {
    json!({
        "id": id,
        "version": 1,
        "severity": severity,
        "state": "active",
        "effect": "deny",
        "when": {"==": [{"var": "request.method"}, "DELETE"]},
        "response": {"status": 403, "body": "deletes are frozen", "headers": {"x-reason": "frozen"}}
    })
}

#[test]
fn sidecar_enforces_what_central_publishes_and_outlives_it() {
    let world = World::new();
    let port = free_port();
    let db = format!("sqlite://{}", world.path().join("central.db").display());
    let central = Central::start(world.path(), port, &db, &world.pki, &[]);
    let publisher = world.as_publisher();

    let (status, body) = call(
        publisher
            .put(central.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "allow", "reason": "kernel starts open"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["publishedRevision"], "r1");
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .header("x-sentinel-reason", "freeze deletes during the migration")
            .json(&deny_delete("kernel.freeze-deletes", "LOW")),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["state"], "draft",
        "created policies are forced to draft"
    );
    assert_eq!(
        body["publishedRevision"],
        Value::Null,
        "a draft changes nothing sidecars enforce"
    );

    // The sidecar pulls over mTLS and checks central's signature.
    let kernel = Kernel::start();
    let grpc = Grpc::tcp();
    let bundle_url = central.url("/v1/bundles/kernel");
    let ca = world.pki.ca_path();
    let env = world.sidecar.client_env(&ca);
    let trusted = world.path().join("trusted").display().to_string();
    let cache = world
        .path()
        .join("bundle-cache.tar.gz")
        .display()
        .to_string();
    let flags = [
        "--trusted-keys",
        trusted.as_str(),
        "--bundle-cache",
        cache.as_str(),
    ];
    let sidecar = Sidecar::start_with_env(
        Path::new(&bundle_url),
        grpc.clone(),
        &flags,
        &env,
        world.path(),
    );
    assert_eq!(sidecar.status()["bundle"]["revision"], "r1");
    assert_eq!(sidecar.status()["bundle"]["signer"], "central");
    let envoy = Envoy::start(&grpc, kernel.port, world.path());
    let http = client();
    let delete = || {
        http.delete(envoy.url("/v1/kernels/k1"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    wait_until("Envoy to route", Duration::from_secs(20), || {
        delete() == 200
    });

    // The transition publishes r2; Envoy enforces it within 2 s.
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies/kernel.freeze-deletes/transition"))
            .json(&json!({"to": "active", "reason": "migration window opens"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["publishedRevision"], "r2");
    let published = Instant::now();
    wait_until(
        "Envoy to deny DELETE within 2 s",
        Duration::from_secs(2),
        || delete() == 403,
    );
    eprintln!("r2 enforced {:?} after the transition", published.elapsed());
    assert_eq!(
        http.get(envoy.url("/v1/kernels/k1"))
            .send()
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200)
    );
    assert_eq!(sidecar.status()["bundle"]["revision"], "r2");

    // Refusals: no certificate and another CA fail the handshake; the
    // sidecar's identity may read bundles but not change policy state.
    let before_tls = central_metric(
        &publisher,
        &central,
        "sentinel_central_refusals_total{reason=\"tls\"}",
    );
    let anonymous = caller(None, &ca);
    assert!(
        anonymous
            .get(central.url("/v1/bundles/kernel"))
            .send()
            .is_err(),
        "no client certificate must be refused"
    );
    let rogue_pki = Pki::new(&world.path().join("rogue"), "rogue");
    let rogue = rogue_pki.issue("rogue", "kernel-7f9c", Some(SIDECAR_ID));
    assert!(
        caller(Some(&rogue), &ca)
            .get(central.url("/v1/bundles/kernel"))
            .send()
            .is_err(),
        "a certificate from another CA must be refused"
    );
    let as_sidecar = caller(Some(&world.sidecar), &ca);
    let (status, body) = call(
        as_sidecar
            .post(central.url("/v1/bundles/kernel/policies/kernel.freeze-deletes/transition"))
            .json(&json!({"to": "deprecated", "reason": "sidecar going rogue"})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(SIDECAR_ID),
        "{body}"
    );
    let stranger = world.pki.issue("stranger", "stranger", None);
    let (status, _) = call(caller(Some(&stranger), &ca).get(central.url("/v1/bundles/kernel")));
    assert_eq!(status, 403, "an identity missing from the RBAC file");
    assert!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_refusals_total{reason=\"tls\"}"
        ) >= before_tls + 2.0
    );
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_refusals_total{reason=\"role\"}"
        ),
        1.0
    );
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_refusals_total{reason=\"unknown_identity\"}"
        ),
        1.0
    );
    let log = central.log_text();
    assert!(
        log.contains("refused") && log.contains(SIDECAR_ID),
        "refusals are logged: {log}"
    );

    // Explain: rule, versions and transitions with who, when and why.
    let (status, explain) =
        call(publisher.get(central.url("/sentinelnet/policy/kernel.freeze-deletes/explain")));
    assert_eq!(status, 200, "{explain}");
    assert_eq!(explain["createdBy"], PUBLISHER_ID);
    assert_eq!(explain["state"], "active");
    assert_eq!(explain["bundleRevision"], "r2");
    assert_eq!(explain["rule"], deny_delete("x", "LOW")["when"]);
    assert_eq!(
        explain["versions"][0]["reason"],
        "freeze deletes during the migration"
    );
    let transition = &explain["transitions"][0];
    assert_eq!(
        (transition["from"].as_str(), transition["to"].as_str()),
        (Some("draft"), Some("active"))
    );
    assert_eq!(transition["editedBy"], PUBLISHER_ID);
    assert_eq!(transition["reason"], "migration window opens");
    assert!(transition["at"]
        .as_str()
        .is_some_and(|at| at.ends_with('Z')));

    // The tarball central serves verifies; edit one policy and it does not,
    // with the file named.
    let tarball = as_sidecar
        .get(central.url("/v1/bundles/kernel"))
        .send()
        .expect("bundle")
        .bytes()
        .expect("bytes");
    let mut files = sentinelnet::bundle::unpack(&tarball).expect("unpack");
    let policy_file = "policies/kernel.freeze-deletes.json".to_owned();
    let edited = String::from_utf8(files[&policy_file].clone())
        .expect("utf8")
        .replace("DELETE", "PATCH");
    files.insert(policy_file.clone(), edited.into_bytes());
    let tampered = world.path().join("tampered.tar.gz");
    std::fs::write(&tampered, sentinelnet::bundle::pack(&files).expect("pack")).expect("write");
    let out = Command::new(sentinelnet())
        .args(["bundle", "verify"])
        .arg(&tampered)
        .args(["--trusted-keys", trusted.as_str()])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(1), "verification failed");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&policy_file) && report.contains("modified after signing"),
        "{report}"
    );

    // Central goes away: decisions go on.
    let mut central = central;
    central.proc.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delete(), 403);
    assert_eq!(sidecar.status()["bundle"]["revision"], "r2");

    // A sidecar restarted while central is down serves its cache.
    drop(sidecar);
    let restarted = Sidecar::start_with_env(
        Path::new(&bundle_url),
        grpc.clone(),
        &flags,
        &env,
        world.path(),
    );
    restarted.assert_serving_cache("r2");
    wait_until(
        "Envoy to deny DELETE from the cached bundle",
        Duration::from_secs(5),
        || delete() == 403,
    );

    // Central comes back on the same store: same revision, and the sidecar
    // (still polling) takes the next one.
    let central = Central::start(world.path(), port, &db, &world.pki, &[]);
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies/kernel.freeze-deletes/transition"))
            .json(&json!({"to": "deprecated", "reason": "migration done"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["publishedRevision"], "r3",
        "revisions continue from the store"
    );
    wait_until(
        "Envoy to allow DELETE again (r3)",
        Duration::from_secs(15),
        || delete() == 200,
    );
    assert_eq!(restarted.status()["bundle"]["revision"], "r3");
    drop(central);
}

/// The whole registry against one store: versions, lifecycle rules,
/// approvals and the multisig gate, revisions, history, and a restart.
fn lifecycle_and_multisig(db: &str) {
    let world = World::new();
    let approvers = world.path().join("approvers");
    let approver_keys = world.path().join("approver-keys");
    for name in ["alice", "bob", "carol", "mallory"] {
        keygen(&approver_keys, name);
    }
    std::fs::create_dir_all(&approvers).expect("mkdir");
    for name in ["alice", "bob", "carol"] {
        std::fs::copy(
            approver_keys.join(format!("{name}.pub")),
            approvers.join(format!("{name}.pub")),
        )
        .expect("copy");
    }
    let approvers_arg = approvers.display().to_string();
    let extra = [
        "--approvers",
        approvers_arg.as_str(),
        "--approvals-required",
        "3",
    ];
    let port = free_port();
    let mut central = Central::start(world.path(), port, db, &world.pki, &extra);
    let ca = world.pki.ca_path();
    let publisher = world.as_publisher();
    let approver = caller(Some(&world.approver), &ca);
    let policy = |path: &str| {
        central.url(&format!(
            "/v1/bundles/kernel/policies/kernel.no-deletes{path}"
        ))
    };
    let transition = |to: &str, extra: Value| {
        let mut body = json!({"to": to, "reason": format!("to {to}")});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        call(publisher.post(policy("/transition")).json(&body))
    };
    let approve = |name: &str, signature: &str| {
        call(
            approver
                .post(policy("/approvals"))
                .json(&json!({"approver": name, "signature": signature})),
        )
    };
    let key = |name: &str| approver_keys.join(format!("{name}.key"));
    // The activation manifest of the current version, as approvers fetch it.
    let fetch_manifest = || {
        approver
            .get(policy("/manifest"))
            .send()
            .expect("manifest")
            .bytes()
            .expect("bytes")
            .to_vec()
    };

    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&deny_delete("kernel.no-deletes", "HIGH")),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&deny_delete("kernel.no-deletes", "HIGH")),
    );
    assert_eq!(status, 409, "policy ids are unique");
    // Central sets version and state itself, so a body may leave them out.
    let mut bare = deny_delete("kernel.bare", "LOW");
    if let Some(fields) = bare.as_object_mut() {
        fields.remove("version");
        fields.remove("state");
    }
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&bare),
    );
    assert_eq!(status, 201, "{body}");
    let (_, list) = call(publisher.get(central.url("/v1/bundles/kernel/policies")));
    let bare = list["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["id"] == "kernel.bare"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (bare["state"].as_str(), bare["version"].as_u64()),
        (Some("draft"), Some(1)),
        "{list}"
    );
    // A repeated key is refused, not read as its last value (which would
    // turn this deny into an allow), with and without version and state.
    for text in [
        r#"{"id": "kernel.twice", "version": 1, "severity": "LOW", "state": "draft", "effect": "deny", "effect": "allow", "when": true}"#,
        r#"{"id": "kernel.twice", "severity": "LOW", "effect": "deny", "effect": "allow", "when": true}"#,
    ] {
        let (status, body) = call(
            publisher
                .post(central.url("/v1/bundles/kernel/policies"))
                .header("content-type", "application/json")
                .body(text),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("duplicate key \"effect\""),
            "{body}"
        );
    }
    // An out-of-range canaryPercent is refused, not quietly zeroed.
    let mut out_of_range = deny_delete("kernel.range", "LOW");
    out_of_range["canaryPercent"] = json!(-5);
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&out_of_range),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/canaryPercent"),
        "{body}"
    );
    let mut bad = deny_delete("kernel.bad", "LOW");
    bad["when"] = json!({"frobnicate": [{"var": "request.path"}]});
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&bad),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("kernel.bad"),
        "{body}"
    );

    // Lifecycle rules.
    let (status, body) = transition("canary", json!({}));
    assert_eq!(status, 400, "a canary needs a percentage: {body}");
    let (status, body) = transition("simulating", json!({}));
    assert_eq!(
        (status, body["publishedRevision"].as_str()),
        (200, Some("r2")),
        "{body}"
    );
    let (status, body) = transition("canary", json!({"canaryPercent": 10}));
    assert_eq!(
        (status, body["publishedRevision"].as_str()),
        (200, Some("r3")),
        "{body}"
    );
    let (status, body) = transition("simulating", json!({}));
    assert_eq!(status, 409, "the lifecycle moves forward: {body}");
    let (status, _) = call(
        publisher
            .post(policy("/transition"))
            .json(&json!({"to": "active"})),
    );
    assert_eq!(status, 400, "every transition needs a reason");

    // Multisig: two approvals keep a HIGH policy out of active.
    let (status, _) = call(
        publisher
            .post(policy("/approvals"))
            .json(&json!({"approver": "alice", "signature": "x"})),
    );
    assert_eq!(status, 403, "publishers do not approve");
    let manifest_v1 = fetch_manifest();
    let manifest: Value = serde_json::from_slice(&manifest_v1).expect("manifest JSON");
    assert_eq!(
        (manifest["policyId"].as_str(), manifest["version"].as_i64()),
        (Some("kernel.no-deletes"), Some(1))
    );
    for name in ["alice", "bob"] {
        let (status, body) = approve(name, &sign(world.path(), &key(name), &manifest_v1));
        assert_eq!(status, 201, "{name}: {body}");
    }
    let (status, body) = approve("alice", &sign(world.path(), &key("alice"), &manifest_v1));
    assert_eq!(status, 409, "a repeated approver: {body}");
    let (status, body) = approve(
        "mallory",
        &sign(world.path(), &key("mallory"), &manifest_v1),
    );
    assert_eq!(status, 403, "an unknown key: {body}");
    let (status, body) = approve("carol", &sign(world.path(), &key("bob"), &manifest_v1));
    assert_eq!(status, 403, "carol's name on bob's signature: {body}");
    let (status, body) = transition("active", json!({}));
    assert_eq!(status, 409, "2 of 3 approvals: {body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("has 2"),
        "{body}"
    );

    // A new version needs its own approvals: signatures over v1 do not count.
    let mut v2 = deny_delete("kernel.no-deletes", "HIGH");
    v2["when"] = json!({"in": [{"var": "request.method"}, ["DELETE", "PATCH"]]});
    let (status, body) = call(publisher.put(policy("")).json(&v2));
    assert_eq!(
        (status, body["version"].as_i64(), body["state"].as_str()),
        (200, Some(2), Some("draft")),
        "{body}"
    );
    let (status, body) = approve("carol", &sign(world.path(), &key("carol"), &manifest_v1));
    assert_eq!(status, 403, "a signature over another version: {body}");
    let (_, list) = call(publisher.get(central.url("/v1/bundles/kernel/policies")));
    assert_eq!(
        list["revision"], "r3",
        "the v1 canary is still what sidecars run: {list}"
    );
    for to in ["simulating", "canary"] {
        let extra = if to == "canary" {
            json!({"canaryPercent": 50})
        } else {
            json!({})
        };
        let (status, body) = transition(to, extra);
        assert_eq!(status, 200, "{body}");
    }
    let manifest_v2 = fetch_manifest();
    assert_ne!(manifest_v1, manifest_v2);
    for (i, name) in ["alice", "bob", "carol"].into_iter().enumerate() {
        if i == 2 {
            let (status, body) = transition("active", json!({}));
            assert_eq!(status, 409, "2 of 3 approvals of v2: {body}");
        }
        let (status, body) = approve(name, &sign(world.path(), &key(name), &manifest_v2));
        assert_eq!(status, 201, "{name}: {body}");
    }
    let (status, body) = transition("active", json!({}));
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("active")),
        "the third approval activates: {body}"
    );
    let revision = body["publishedRevision"]
        .as_str()
        .expect("published")
        .to_owned();

    // What sidecars receive: v2, active, signed by central.
    let as_sidecar = caller(Some(&world.sidecar), &ca);
    let response = as_sidecar
        .get(central.url("/v1/bundles/kernel"))
        .send()
        .expect("bundle");
    assert_eq!(response.status().as_u16(), 200);
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    let tarball = response.bytes().expect("bytes");
    let files = sentinelnet::bundle::unpack(&tarball).expect("unpack");
    let trusted =
        sentinelnet::bundle::signing::TrustedKeys::load_dir(&world.path().join("trusted"))
            .expect("trusted");
    let bundle = sentinelnet::bundle::Bundle::from_trusted_files(&files, Some(&trusted))
        .expect("signed bundle loads");
    assert_eq!(&*bundle.revision, revision.as_str());
    let document: Value =
        serde_json::from_slice(&files["policies/kernel.no-deletes.json"]).expect("policy");
    assert_eq!(
        (document["version"].as_i64(), document["state"].as_str()),
        (Some(2), Some("active"))
    );
    let unchanged = as_sidecar
        .get(central.url("/v1/bundles/kernel"))
        .header("if-none-match", &etag)
        .send()
        .expect("304");
    assert_eq!(unchanged.status().as_u16(), 304);

    // History survives a restart of central on the same store.
    central.proc.terminate();
    let central = Central::start(world.path(), port, db, &world.pki, &extra);
    let (status, explain) =
        call(approver.get(central.url("/sentinelnet/policy/kernel.no-deletes/explain")));
    assert_eq!(status, 200, "{explain}");
    let versions: Vec<(i64, &str)> = explain["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap_or(0),
                v["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(versions, vec![(1, "deprecated"), (2, "active")]);
    let transitions: Vec<String> = explain["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            format!(
                "v{} {}→{}",
                t["version"],
                t["from"].as_str().unwrap_or(""),
                t["to"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            "v1 draft→simulating",
            "v1 simulating→canary",
            "v2 draft→simulating",
            "v1 canary→deprecated",
            "v2 simulating→canary",
            "v2 canary→active",
        ]
    );
    let approvals = explain["approvals"].as_array().expect("approvals");
    assert_eq!(approvals.len(), 5, "2 of v1, 3 of v2: {explain}");
    assert!(approvals.iter().all(|a| a["identity"] == APPROVER_ID));
    assert_eq!(explain["approvalsRequired"], 3);
    let (status, _) = call(
        as_sidecar
            .get(central.url("/v1/bundles/kernel"))
            .header("if-none-match", &etag),
    );
    assert_eq!(status, 304, "the same revision after the restart");
    drop(central);
}

#[test]
fn lifecycle_and_multisig_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    lifecycle_and_multisig(&format!(
        "sqlite://{}",
        dir.path().join("central.db").display()
    ));
}

#[test]
fn lifecycle_and_multisig_on_postgres() {
    let database = PgDatabase::create();
    lifecycle_and_multisig(&database.url());
}

#[test]
fn central_refuses_to_start_without_what_it_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], dev_skip_mtls: bool| {
        let mut command = Command::new(sentinelnet());
        command
            .arg("central")
            .args(args)
            .env_remove("DEV_SKIP_MTLS");
        if dev_skip_mtls {
            command.env("DEV_SKIP_MTLS", "true");
        }
        let out = command.output().expect("central");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    keygen(dir.path(), "central");
    let key = dir.path().join("central.key").display().to_string();
    let (code, stderr) = run(&["--signing-key", key.as_str()], false);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--tls-cert, --tls-key, --client-ca"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--signing-key", "/nonexistent/central.key"], true);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/central.key"), "{stderr}");
    keygen(&dir.path().join("approvers"), "alice");
    let approvers = dir.path().join("approvers").display().to_string();
    let (code, stderr) = run(
        &[
            "--signing-key",
            key.as_str(),
            "--approvers",
            approvers.as_str(),
        ],
        true,
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--approvals-required is 3 but --approvers holds only 1"),
        "{stderr}"
    );
    let (code, stderr) = run(
        &["--signing-key", key.as_str(), "--db", "mysql://localhost/x"],
        true,
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("mysql://localhost/x"), "{stderr}");
}

#[test]
fn two_centrals_on_one_postgres_never_lose_a_change() {
    let world = World::new();
    let database = PgDatabase::create();
    let db = database.url();
    let first = Central::start(world.path(), free_port(), &db, &world.pki, &[]);
    let second = Central::start(world.path(), free_port(), &db, &world.pki, &[]);
    let publisher = world.as_publisher();
    let (status, body) = call(
        publisher
            .put(first.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "allow"})),
    );
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = (0..40).map(|i| format!("kernel.p{i}")).collect();
    for id in &ids {
        let (status, body) = call(
            publisher
                .post(first.url("/v1/bundles/kernel/policies"))
                .json(&deny_delete(id, "LOW")),
        );
        assert_eq!(status, 201, "{body}");
    }
    // Both centrals activate policies at the same time; a writer that loses
    // a race gets 409 and retries, as a client would.
    std::thread::scope(|scope| {
        for (central, half) in [(&first, &ids[..20]), (&second, &ids[20..])] {
            let publisher = publisher.clone();
            scope.spawn(move || {
                for id in half {
                    let url = central.url(&format!("/v1/bundles/kernel/policies/{id}/transition"));
                    let mut attempts = 0;
                    loop {
                        let (status, body) = call(
                            publisher
                                .post(&url)
                                .json(&json!({"to": "active", "reason": "race"})),
                        );
                        attempts += 1;
                        if status == 200 {
                            break;
                        }
                        assert!(status == 409 && attempts < 50, "{id}: {status} {body}");
                    }
                }
            });
        }
    });
    // The newest revision, from either central, holds every change.
    let as_sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    let mut etags = Vec::new();
    for central in [&first, &second] {
        let response = as_sidecar
            .get(central.url("/v1/bundles/kernel"))
            .send()
            .expect("bundle");
        etags.push(
            response.headers()["etag"]
                .to_str()
                .expect("etag")
                .to_owned(),
        );
        let files = sentinelnet::bundle::unpack(&response.bytes().expect("bytes")).expect("unpack");
        for id in &ids {
            let document: Value = serde_json::from_slice(
                files
                    .get(&format!("policies/{id}.json"))
                    .unwrap_or_else(|| panic!("{id} missing from the newest revision")),
            )
            .expect("policy");
            assert_eq!(document["state"], "active", "{id}");
        }
    }
    assert_eq!(
        etags[0], etags[1],
        "both centrals serve the same newest revision"
    );
    assert_eq!(
        etags[0], "\"kernel-r41\"",
        "one revision per activation after r1"
    );
}
