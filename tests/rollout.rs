//! Safe rollout at central (real central over mTLS, certificates generated
//! here; SQLite and a real PostgreSQL): feedback labels with their history;
//! `POST /v1/simulate` answering the same report as `sentinelnet simulate`
//! on an export of the same records; the canary guard pausing a canary
//! whose denies are labelled false positives, through a real Envoy, across
//! a central restart; auto-promotion of a quiet LOW canary and never of a
//! HIGH one.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use support::central::*;
use support::*;

fn publish(client: &reqwest::blocking::Client, central: &Central, policy: Value, to: Value) {
    let (status, body) = call(
        client
            .put(central.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "allow"})),
    );
    assert_eq!(status, 200, "{body}");
    add_policy(client, central, &policy, &to);
}

fn freeze_deletes(severity: &str) -> Value {
    json!({"id": "kernel.freeze-deletes", "version": 1, "severity": severity, "state": "draft",
           "effect": "deny", "evidence": ["request.method"],
           "when": {"==": [{"var": "request.method"}, "DELETE"]}})
}

fn block_bots() -> Value {
    json!({"id": "kernel.block-bots", "version": 1, "severity": "MEDIUM", "state": "draft",
           "effect": "deny",
           "when": {"starts_with": [{"var": "request.headers.user-agent"}, "bot-"]}})
}

/// 60 records of node `n1` with inputs: every third a DELETE denied by
/// kernel.freeze-deletes, every fourth from a bot agent.
fn recorded_traffic() -> Vec<Value> {
    let mut prev = GENESIS.to_owned();
    let mut out = Vec::new();
    for seq in 0..60u64 {
        let delete = seq % 3 == 0;
        let agent = if seq % 4 == 0 { "bot-7" } else { "curl/8" };
        // Distinct times: exports are ordered by time.
        let ts = format!("2026-11-24T01:00:{seq:02}.000000Z");
        let mut r = record("n1", "c1", seq, &prev, &ts);
        r["input"] = json!({"request": {"id": format!("req-{seq}"),
            "method": if delete { "DELETE" } else { "GET" }, "path": "/v1/kernels/k1",
            "headers": {"user-agent": agent}}});
        if delete {
            r["decision"] = json!("deny");
            r["status"] = json!(403);
            r["reason"] = json!("policy");
            r["policyId"] = json!("kernel.freeze-deletes");
            r["policyVersion"] = json!(1);
        }
        let r = seal(r);
        prev = r["hash"].as_str().expect("hash").to_owned();
        out.push(r);
    }
    out
}

fn labels_and_simulation(db: &str) {
    let world = World::new();
    let central = Central::start(world.path(), free_port(), db, &world.pki, &[]);
    let publisher = world.as_publisher();
    let ca = world.pki.ca_path();
    let as_sidecar = caller(Some(&world.sidecar), &ca);
    let as_approver = caller(Some(&world.approver), &ca);
    publish(
        &publisher,
        &central,
        freeze_deletes("LOW"),
        json!({"to": "active", "reason": "freeze"}),
    );
    let records = recorded_traffic();
    let (status, body) = call(
        as_sidecar
            .post(central.url("/v1/audit/decisions"))
            .header("content-type", "application/x-ndjson")
            .body(ndjson(&records)),
    );
    assert_eq!((status, &body["accepted"]), (200, &json!(60)), "{body}");

    // Feedback: the last label counts, every one is kept with who and when.
    let id = records[3]["id"].as_str().expect("id");
    let feedback = |client: &reqwest::blocking::Client, id: &str, body: Value| {
        call(
            client
                .post(central.url(&format!("/v1/decisions/{id}/feedback")))
                .json(&body),
        )
    };
    let (status, body) = feedback(
        &publisher,
        id,
        json!({"label": "false_positive", "note": "ops"}),
    );
    assert_eq!(
        (status, &body["label"]),
        (200, &json!("false_positive")),
        "{body}"
    );
    let (status, body) = feedback(&as_approver, id, json!({"label": "true_positive"}));
    assert_eq!(status, 200, "{body}");
    let (status, one) = call(as_sidecar.get(central.url(&format!("/v1/decisions/{id}"))));
    assert_eq!(status, 200);
    assert_eq!(one["label"], "true_positive", "the last label counts");
    let history = one["labels"].as_array().expect("labels");
    assert_eq!(history.len(), 2, "{one}");
    assert_eq!(
        (&history[0]["label"], &history[0]["by"], &history[0]["note"]),
        (
            &json!("false_positive"),
            &json!(PUBLISHER_ID),
            &json!("ops")
        )
    );
    assert_eq!(history[1]["by"], APPROVER_ID);
    assert!(history[1]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Refusals: a sidecar may not label, an unknown id, an unknown label.
    assert_eq!(
        feedback(&as_sidecar, id, json!({"label": "true_positive"})).0,
        403
    );
    assert_eq!(
        feedback(&publisher, "no-such-id", json!({"label": "true_positive"})).0,
        404
    );
    let (status, body) = feedback(&publisher, id, json!({"label": "maybe"}));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("/label")),
        "{body}"
    );
    let (status, _) = feedback(
        &publisher,
        id,
        json!({"label": "true_positive", "extra": 1}),
    );
    assert_eq!(status, 400);

    // Label more records: the DELETEs from bots are false positives, and
    // a few GETs are right.
    for r in &records {
        let seq = r["seq"].as_u64().expect("seq");
        let label = match (seq % 3 == 0, seq % 4 == 0) {
            (true, true) => "false_positive",
            (true, false) => "true_positive",
            (false, _) if seq % 5 == 0 => "true_positive",
            _ => continue,
        };
        let (status, body) = feedback(
            &publisher,
            r["id"].as_str().expect("id"),
            json!({"label": label}),
        );
        assert_eq!(status, 200, "{body}");
    }

    // The export carries labels; the CLI on it with the live bundle plus
    // the candidate answers what central answers.
    let export = as_sidecar
        .get(central.url("/v1/audit/export"))
        .send()
        .expect("export")
        .text()
        .expect("text");
    assert!(export.contains("\"label\":\"false_positive\""));
    let export_file = world.path().join("export.jsonl");
    std::fs::write(&export_file, &export).expect("write");
    let (status, from_central) = call(
        publisher
            .post(central.url("/v1/simulate"))
            .json(&json!({"bundle": "kernel", "policies": [block_bots()]})),
    );
    assert_eq!(status, 200, "{from_central}");
    // A candidate without version and state, as for creating a policy: the
    // same report.
    let mut bare = block_bots();
    if let Some(fields) = bare.as_object_mut() {
        fields.remove("version");
        fields.remove("state");
    }
    let (status, from_bare) = call(
        publisher
            .post(central.url("/v1/simulate"))
            .json(&json!({"bundle": "kernel", "policies": [bare]})),
    );
    assert_eq!(status, 200, "{from_bare}");
    assert!(from_central["changes"]["allowToDeny"]["count"].as_u64() > Some(0));
    assert_eq!(from_bare["changes"], from_central["changes"]);
    let bundle = world.path().join("candidate");
    std::fs::create_dir_all(bundle.join("policies")).expect("mkdir");
    std::fs::write(
        bundle.join("bundle.json"),
        json!({"name": "kernel", "revision": "r1", "defaultDecision": "allow"}).to_string(),
    )
    .expect("write");
    let mut live = freeze_deletes("LOW");
    live["state"] = json!("active");
    for p in [live, block_bots()] {
        let file = bundle.join(format!("policies/{}.json", p["id"].as_str().expect("id")));
        std::fs::write(file, p.to_string()).expect("write");
    }
    let out = std::process::Command::new(sentinelnet())
        .args(["simulate", "--format", "json", "--bundle"])
        .arg(&bundle)
        .arg("--samples")
        .arg(&export_file)
        .output()
        .expect("simulate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_cli: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        from_central, from_cli,
        "the same report from central and the CLI"
    );
    // And the numbers are the ones these records make: bots that were
    // allowed (seq % 4 == 0, not % 3 == 0) are newly denied.
    let newly: Vec<u64> = (0..60).filter(|s| s % 4 == 0 && s % 3 != 0).collect();
    assert_eq!(from_central["evaluated"], 60);
    assert_eq!(
        from_central["changes"]["allowToDeny"]["count"],
        newly.len() as u64
    );
    assert_eq!(
        from_central["changes"]["allowToDeny"]["examples"][0]["requestId"],
        format!("req-{}", newly[0])
    );
    // Labelled and denied by the candidate: every DELETE (20) and the
    // labelled bot GETs (seq % 20 == 0 and not a DELETE: 20, 40). False
    // positives: the bot DELETEs labelled so (seq % 12 == 0: 5) and those
    // two GETs, labelled right to be allowed.
    assert_eq!(from_central["labelled"], 20 + 12 - 4);
    assert_eq!(from_central["falsePositives"], 7);
    assert_eq!(
        from_central["falsePositiveRate"],
        json!(((7.0f64 / 22.0) * 1e4).round() / 1e4)
    );
    assert_eq!(from_central["recommendedCanaryPercent"], 0);

    // A live policy in `simulating` stays in shadow in the candidate: it
    // is listed with its matches, and changes no decision.
    let mut shadow_gets = json!({"id": "kernel.shadow-gets", "version": 1, "severity": "LOW",
        "state": "draft", "effect": "deny", "when": {"==": [{"var": "request.method"}, "GET"]}});
    add_policy(
        &publisher,
        &central,
        &shadow_gets,
        &json!({"to": "simulating", "reason": "shadow"}),
    );
    let (status, with_shadow) = call(
        publisher
            .post(central.url("/v1/simulate"))
            .json(&json!({"bundle": "kernel", "policies": [block_bots()]})),
    );
    assert_eq!(status, 200, "{with_shadow}");
    assert_eq!(with_shadow["changes"], from_central["changes"]);
    let shadow_row = with_shadow["policies"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["policyId"] == "kernel.shadow-gets")
                .cloned()
        })
        .expect("the shadow policy is listed");
    assert_eq!(
        (&shadow_row["matches"], &shadow_row["wouldDeny"]),
        (&json!(40), &json!(0))
    );
    // Given as a candidate, the same policy is enforced.
    shadow_gets["state"] = json!("draft");
    let (_, enforced) = call(
        publisher
            .post(central.url("/v1/simulate"))
            .json(&json!({"bundle": "kernel", "policies": [shadow_gets]})),
    );
    assert_eq!(
        enforced["changes"]["allowToDeny"]["count"], 40,
        "{enforced}"
    );

    // Bad requests name what is wrong; only publishers may simulate.
    let (status, body) = call(publisher.post(central.url("/v1/simulate")).json(
        &json!({"bundle": "kernel", "policies": [{"id": "x", "version": 1, "severity": "LOW",
               "state": "draft", "effect": "deny", "when": {"nosuchop": [1]}}]}),
    ));
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/policies/0/when")),
        "{body}"
    );
    let (status, _) = call(
        publisher
            .post(central.url("/v1/simulate"))
            .json(&json!({"bundle": "nosuch", "policies": [block_bots()]})),
    );
    assert_eq!(status, 404);
    let (status, _) = call(
        as_sidecar
            .post(central.url("/v1/simulate"))
            .json(&json!({"bundle": "kernel", "policies": [block_bots()]})),
    );
    assert_eq!(status, 403);
}

#[test]
fn labels_and_simulation_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    labels_and_simulation(&format!("sqlite://{}/central.db", dir.path().display()));
}

#[test]
fn labels_and_simulation_on_postgres() {
    let db = PgDatabase::create();
    labels_and_simulation(&db.url());
}

fn explain(client: &reqwest::blocking::Client, central: &Central, id: &str) -> Value {
    let (status, body) =
        call(client.get(central.url(&format!("/sentinelnet/policy/{id}/explain"))));
    assert_eq!(status, 200, "{body}");
    body
}

/// Denies of `policy` stored at central not labelled yet, labelled
/// false positives now; how many.
fn label_new_denies(client: &reqwest::blocking::Client, central: &Central, policy: &str) -> usize {
    let (status, body) = call(client.get(central.url(&format!(
        "/v1/decisions?policy={policy}&decision=deny&limit=1000"
    ))));
    if status != 200 {
        return 0; // central restarting
    }
    let mut labelled = 0;
    for record in body["decisions"].as_array().cloned().unwrap_or_default() {
        if !record["label"].is_null() || record["policyId"] != policy {
            continue;
        }
        let id = record["id"].as_str().expect("id");
        let response = client
            .post(central.url(&format!("/v1/decisions/{id}/feedback")))
            .json(&json!({"label": "false_positive", "note": "legit cleanup job"}))
            .send();
        if response.is_ok_and(|r| r.status().is_success()) {
            labelled += 1;
        }
    }
    labelled
}

#[test]
fn the_guard_pauses_a_noisy_canary_across_a_restart() {
    let world = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/central.db", dir.path().display());
    let port = free_port();
    let guard = [
        "--canary-window",
        "2s",
        "--canary-min-denies",
        "3",
        "--canary-bad-windows",
        "3",
        "--promote-after",
        "0",
    ];
    let mut central = Central::start(world.path(), port, &db, &world.pki, &guard);
    let publisher = world.as_publisher();
    let ca = world.pki.ca_path();
    publish(
        &publisher,
        &central,
        freeze_deletes("HIGH"),
        json!({"to": "canary", "canaryPercent": 100, "reason": "try the freeze on everyone"}),
    );

    let trusted = world.path().join("trusted").display().to_string();
    let bundle_url = central.url("/v1/bundles/kernel");
    let audit_url = central.url("/v1/audit/decisions");
    let kernel = Kernel::start();
    let mut env: Vec<(&str, &Path)> = world.sidecar.client_env(&ca).to_vec();
    env.push(("POD_NAME", Path::new("node-a")));
    let sidecar = Sidecar::start_with_env(
        Path::new(&bundle_url),
        Grpc::tcp(),
        &["--trusted-keys", &trusted, "--audit-url", &audit_url],
        &env,
        world.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, world.path());
    let http = client();
    let mut sent = 0usize;
    let mut delete = |expect: Option<u16>| -> u16 {
        sent += 1;
        let status = http
            .delete(envoy.url("/v1/kernels/k1"))
            .header("x-request-id", format!("del-{sent}"))
            .send()
            .expect("Envoy answers")
            .status()
            .as_u16();
        if let Some(expected) = expect {
            assert_eq!(status, expected, "del-{sent}");
        }
        status
    };
    assert_eq!(delete(None), 403, "the canary at 100% is enforced");

    // Denies every few hundred milliseconds, each labelled a false
    // positive once stored. Half way, central restarts.
    let started = Instant::now();
    let mut restarted = false;
    let mut labelled = 0;
    let paused = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the guard never paused the canary; central log:\n{}",
            central.log_text()
        );
        for _ in 0..3 {
            delete(None);
        }
        labelled += label_new_denies(&publisher, &central, "kernel.freeze-deletes");
        if !restarted && started.elapsed() > Duration::from_secs(3) && labelled >= 6 {
            // What central knew before the restart...
            let before = explain(&publisher, &central, "kernel.freeze-deletes")["canary"].clone();
            let counted_before: u64 = before["windows"]
                .as_array()
                .expect("windows")
                .iter()
                .map(|w| w["falsePositives"].as_u64().unwrap_or(0))
                .sum();
            assert!(counted_before >= 6, "{before}");
            central.proc.terminate();
            drop(central);
            central = Central::start(world.path(), port, &db, &world.pki, &guard);
            // ...it still knows after: windows are counted from the store.
            let after = explain(&publisher, &central, "kernel.freeze-deletes")["canary"].clone();
            let counted_after: u64 = after["windows"]
                .as_array()
                .expect("windows")
                .iter()
                .map(|w| w["falsePositives"].as_u64().unwrap_or(0))
                .sum();
            assert!(
                counted_after >= counted_before,
                "before {before}\nafter {after}"
            );
            restarted = true;
        }
        let canary = explain(&publisher, &central, "kernel.freeze-deletes")["canary"].clone();
        if canary["paused"] == true {
            break canary;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(restarted, "the restart happened before the pause");
    let paused_at = Instant::now();
    assert_eq!(paused["percent"], 0.0, "{paused}");
    let reason = paused["pausedReason"].as_str().expect("a reason");
    assert!(
        reason.contains("3 bad windows in a row") && reason.contains("false positives"),
        "{reason}"
    );
    let bad = paused["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .filter(|w| w["bad"] == true)
        .count();
    assert!(bad >= 3, "{paused}");
    let explained = explain(&publisher, &central, "kernel.freeze-deletes");
    assert_eq!(explained["state"], "canary", "the state stays canary");
    let last = explained["transitions"]
        .as_array()
        .and_then(|t| t.last().cloned())
        .expect("transitions");
    assert_eq!(last["editedBy"], "central:canary-guard", "{last}");
    assert_eq!(last["canaryPercent"], 0.0);
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_canary_guard_trips_total{policy=\"kernel.freeze-deletes\"}"
        ),
        1.0
    );

    // The sidecar picks the new revision up: no longer enforced.
    wait_until(
        "the paused canary to stop denying through Envoy",
        Duration::from_secs(2).saturating_sub(paused_at.elapsed()) + Duration::from_millis(500),
        || delete(None) == 200,
    );
    delete(Some(200));
}

#[test]
fn quiet_low_canaries_are_promoted_and_high_ones_never() {
    let world = World::new();
    let (central, _db) =
        Central::start_sqlite(&world, &["--canary-window", "1s", "--promote-after", "3s"]);
    let publisher = world.as_publisher();
    let mut low = freeze_deletes("LOW");
    low["id"] = json!("kernel.low-canary");
    let mut high = freeze_deletes("HIGH");
    high["id"] = json!("kernel.high-canary");
    let to_canary = json!({"to": "canary", "canaryPercent": 10, "reason": "start small"});
    // --promote-after counts from the LOW canary's transition.
    let started = Instant::now();
    publish(&publisher, &central, low, to_canary.clone());
    publish(&publisher, &central, high, to_canary);
    wait_until("the LOW canary promoted", Duration::from_secs(20), || {
        explain(&publisher, &central, "kernel.low-canary")["state"] == "active"
    });
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not before --promote-after"
    );
    let low = explain(&publisher, &central, "kernel.low-canary");
    let last = low["transitions"]
        .as_array()
        .and_then(|t| t.last().cloned())
        .expect("transitions");
    assert_eq!(
        (&last["editedBy"], &last["to"]),
        (&json!("central:auto-promote"), &json!("active")),
        "{last}"
    );
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no bad window")),
        "{last}"
    );
    assert_eq!(low["canary"], Value::Null, "no longer a canary");
    // Give the HIGH one the same time and more: it stays a canary.
    std::thread::sleep(Duration::from_secs(2));
    let high = explain(&publisher, &central, "kernel.high-canary");
    assert_eq!(
        (&high["state"], &high["canaryPercent"]),
        (&json!("canary"), &json!(10.0))
    );
    assert_eq!(high["canary"]["paused"], false);
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_promotions_total{policy=\"kernel.low-canary\"}"
        ),
        1.0
    );
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_promotions_total{policy=\"kernel.high-canary\"}"
        ),
        0.0
    );
}

/// Two centrals on one PostgreSQL: the guard (under an advisory lock)
/// pauses a noisy canary once, not once per replica.
#[test]
fn two_centrals_on_postgres_pause_a_canary_once() {
    let world = World::new();
    let db = PgDatabase::create();
    let guard = [
        "--canary-window",
        "1s",
        "--canary-min-denies",
        "3",
        "--canary-bad-windows",
        "2",
        "--promote-after",
        "0",
    ];
    let first = Central::start(world.path(), free_port(), &db.url(), &world.pki, &guard);
    let second = Central::start(world.path(), free_port(), &db.url(), &world.pki, &guard);
    let publisher = world.as_publisher();
    let as_sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    publish(
        &publisher,
        &first,
        freeze_deletes("HIGH"),
        json!({"to": "canary", "canaryPercent": 50, "reason": "half"}),
    );
    // Denies recorded now, every 250 ms, each labelled a false positive
    // (through either central), until one of them pauses the canary.
    let started = Instant::now();
    let mut prev = GENESIS.to_owned();
    let mut seq = 0u64;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never paused:\n{}\n{}",
            first.log_text(),
            second.log_text()
        );
        let mut r = record("n1", "c1", seq, &prev, &rfc3339_now());
        r["decision"] = json!("deny");
        r["status"] = json!(403);
        r["reason"] = json!("policy");
        r["policyId"] = json!("kernel.freeze-deletes");
        r["policyVersion"] = json!(1);
        let r = seal(r);
        prev = r["hash"].as_str().expect("hash").to_owned();
        let central = if seq % 2 == 0 { &first } else { &second };
        let (status, body) = call(
            as_sidecar
                .post(central.url("/v1/audit/decisions"))
                .body(ndjson(std::slice::from_ref(&r))),
        );
        assert_eq!(status, 200, "{body}");
        let id = r["id"].as_str().expect("id");
        let (status, body) = call(
            publisher
                .post(central.url(&format!("/v1/decisions/{id}/feedback")))
                .json(&json!({"label": "false_positive"})),
        );
        assert_eq!(status, 200, "{body}");
        seq += 1;
        if explain(&publisher, &second, "kernel.freeze-deletes")["canary"]["paused"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Give the other replica time to (not) act as well.
    std::thread::sleep(Duration::from_secs(2));
    let explained = explain(&publisher, &first, "kernel.freeze-deletes");
    let by_guard = explained["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter(|t| t["editedBy"] == "central:canary-guard")
        .count();
    assert_eq!(by_guard, 1, "{}", explained["transitions"]);
    let trips: f64 = [&first, &second]
        .iter()
        .map(|c| {
            central_metric(
                &publisher,
                c,
                "sentinel_central_canary_guard_trips_total{policy=\"kernel.freeze-deletes\"}",
            )
        })
        .sum();
    assert_eq!(trips, 1.0);
    assert_eq!(explained["canaryPercent"], 0.0);
}

/// A canary whose fix is being drafted (a newer version in draft) is still
/// enforced, so the guard still watches and pauses it.
#[test]
fn the_guard_pauses_a_canary_while_its_fix_is_drafted() {
    let world = World::new();
    let (central, _db) = Central::start_sqlite(
        &world,
        &[
            "--canary-window",
            "1s",
            "--canary-min-denies",
            "2",
            "--canary-bad-windows",
            "2",
        ],
    );
    let publisher = world.as_publisher();
    let as_sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    publish(
        &publisher,
        &central,
        freeze_deletes("LOW"),
        json!({"to": "canary", "canaryPercent": 20, "reason": "try"}),
    );
    let mut fix = freeze_deletes("LOW");
    fix["description"] = json!("the fix, still a draft");
    let (status, body) = call(
        publisher
            .put(central.url("/v1/bundles/kernel/policies/kernel.freeze-deletes"))
            .json(&fix),
    );
    assert_eq!((status, &body["version"]), (200, &json!(2)), "{body}");
    let started = Instant::now();
    let mut prev = GENESIS.to_owned();
    let mut seq = 0u64;
    let canary = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never paused:\n{}",
            central.log_text()
        );
        let mut r = record("n1", "c1", seq, &prev, &rfc3339_now());
        r["decision"] = json!("deny");
        r["policyId"] = json!("kernel.freeze-deletes");
        r["policyVersion"] = json!(1);
        let r = seal(r);
        prev = r["hash"].as_str().expect("hash").to_owned();
        let (status, _) = call(
            as_sidecar
                .post(central.url("/v1/audit/decisions"))
                .body(ndjson(std::slice::from_ref(&r))),
        );
        assert_eq!(status, 200);
        let id = r["id"].as_str().expect("id");
        let (status, _) = call(
            publisher
                .post(central.url(&format!("/v1/decisions/{id}/feedback")))
                .json(&json!({"label": "false_positive"})),
        );
        assert_eq!(status, 200);
        seq += 1;
        let canary = explain(&publisher, &central, "kernel.freeze-deletes")["canary"].clone();
        if canary["paused"] == true {
            break canary;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (&canary["version"], &canary["percent"]),
        (&json!(1), &json!(0.0))
    );
    let explained = explain(&publisher, &central, "kernel.freeze-deletes");
    assert_eq!(
        (&explained["version"], &explained["state"]),
        (&json!(2), &json!("draft")),
        "the draft is untouched"
    );
    // A LOW canary with a drafted fix is not auto-promoted either (it is
    // paused now; the draft stays a draft).
    assert_eq!(explained["enforcedVersion"], 1);
}
