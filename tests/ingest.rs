//! Decision records reach central: two sidecars behind real Envoys pull
//! their bundle from central and ship every record to its ingest over mTLS
//! (certificates generated here); central stores each exactly once across a
//! restart with redelivery, verifies the chains, quarantines bad lines,
//! refuses an edited copy, flags a forged link, keeps masked headers out,
//! shows recent decisions in explain and the fleet's revisions; on SQLite
//! and on a real PostgreSQL. Retention prunes old records.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;
use support::central::*;
use support::*;

/// Every stored record, through the export.
fn export(client: &reqwest::blocking::Client, central: &Central, query: &str) -> Vec<Value> {
    let text = client
        .get(central.url(&format!("/v1/audit/export{query}")))
        .send()
        .expect("export")
        .text()
        .expect("text");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one record per line"))
        .collect()
}

fn chains(client: &reqwest::blocking::Client, central: &Central) -> Vec<Value> {
    let (status, body) = call(client.get(central.url("/v1/audit/chains")));
    assert_eq!(status, 200, "{body}");
    body["chains"].as_array().cloned().unwrap_or_default()
}

/// Sends `count` requests through `envoy` (ids `prefix-N`): every third a
/// DELETE (denied by the frozen-deletes policy), all with credentials.
fn traffic(envoy: &Envoy, prefix: &str, count: usize) {
    let http = client();
    for i in 0..count {
        let request = if i % 3 == 0 {
            http.delete(envoy.url("/v1/kernels/k1"))
        } else {
            http.get(envoy.url("/v1/kernels"))
        };
        let response = request
            .header("x-request-id", format!("{prefix}-{i}"))
            .header("authorization", "Bearer top-secret-token")
            .header("x-api-key", "key-that-must-not-leave")
            .send()
            .expect("Envoy answers");
        let expected = if i % 3 == 0 { 403 } else { 200 };
        assert_eq!(response.status().as_u16(), expected, "{prefix}-{i}");
    }
}

fn decisions_reach_central(db: &str) {
    let world = World::new();
    let central = Central::start(world.path(), free_port(), db, &world.pki, &[]);
    let publisher = world.as_publisher();
    let ca = world.pki.ca_path();
    let as_sidecar = caller(Some(&world.sidecar), &ca);

    let (status, body) = call(
        publisher
            .put(central.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "allow"})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(
                &json!({"id": "kernel.freeze-deletes", "version": 1, "severity": "LOW",
                "state": "draft", "effect": "deny", "evidence": ["request.method"],
                "when": {"==": [{"var": "request.method"}, "DELETE"]}}),
            ),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        publisher
            .post(central.url("/v1/bundles/kernel/policies/kernel.freeze-deletes/transition"))
            .json(&json!({"to": "active", "reason": "freeze"})),
    );
    assert_eq!(status, 200, "{body}");

    // Two sidecars pull from central and ship to it, each with a spool.
    let bundle_url = central.url("/v1/bundles/kernel");
    let audit_url = central.url("/v1/audit/decisions");
    let trusted = world.path().join("trusted").display().to_string();
    let kernel = Kernel::start();
    let start = |node: &str| {
        let spool = world.path().join(format!("spool-{node}"));
        let flags = [
            "--trusted-keys".to_owned(),
            trusted.clone(),
            "--audit-url".to_owned(),
            audit_url.clone(),
            "--spool-dir".to_owned(),
            spool.display().to_string(),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut env: Vec<(&str, &Path)> = world.sidecar.client_env(&ca).to_vec();
        env.push(("POD_NAME", Path::new(node)));
        let sidecar = Sidecar::start_with_env(
            Path::new(&bundle_url),
            Grpc::tcp(),
            &flags,
            &env,
            world.path(),
        );
        (sidecar, spool)
    };
    let (mut a, spool_a) = start("node-a");
    let (b, _) = start("node-b");
    let envoy_a = Envoy::start(&a.grpc, kernel.port, world.path());
    let envoy_b = Envoy::start(&b.grpc, kernel.port, world.path());

    // 1,000 checks; node-a restarts half way and, its acknowledgement
    // forgotten, sends everything in its spool again.
    traffic(&envoy_a, "a1", 250);
    traffic(&envoy_b, "b", 500);
    wait_until(
        "node-a's first records stored",
        Duration::from_secs(20),
        || export(&as_sidecar, &central, "?node=node-a").len() == 250,
    );
    a.proc.terminate();
    drop((envoy_a, a));
    let _ = std::fs::remove_file(spool_a.join("acked"));
    let (a, _) = start("node-a");
    let envoy_a = Envoy::start(&a.grpc, kernel.port, world.path());
    traffic(&envoy_a, "a2", 250);

    let expected: BTreeSet<String> = (0..250)
        .map(|i| format!("a1-{i}"))
        .chain((0..250).map(|i| format!("a2-{i}")))
        .chain((0..500).map(|i| format!("b-{i}")))
        .collect();
    wait_until("all 1,000 records stored", Duration::from_secs(30), || {
        export(&as_sidecar, &central, "").len() >= 1000
    });
    let stored = export(&as_sidecar, &central, "");
    let ids: BTreeSet<&str> = stored.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        (stored.len(), ids.len()),
        (1000, 1000),
        "each record exactly once"
    );
    let request_ids: BTreeSet<String> = stored
        .iter()
        .filter_map(|r| r["requestId"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(request_ids, expected);
    let duplicates = central_metric(
        &as_sidecar,
        &central,
        "sentinel_central_ingest_duplicates_total",
    );
    assert!(
        duplicates >= 250.0,
        "the resent spool counted as duplicates: {duplicates}"
    );
    assert_eq!(
        central_metric(
            &as_sidecar,
            &central,
            "sentinel_central_ingested_records_total"
        ),
        1000.0
    );

    // Inputs arrived, masked: the credentials never left the sidecars.
    let export_text = stored.iter().map(Value::to_string).collect::<String>();
    assert!(
        !export_text.contains("top-secret-token")
            && !export_text.contains("key-that-must-not-leave")
    );
    let sample = &stored[0];
    assert_eq!(
        sample["input"]["request"]["method"]
            .as_str()
            .map(|m| m == "GET" || m == "DELETE"),
        Some(true),
        "{sample}"
    );
    assert!(
        sample["masked"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("request.headers.authorization"))
                && m.contains(&json!("request.headers.x-api-key"))),
        "{sample}"
    );

    // The chains verify, and the export verifies with `audit verify`.
    let all_chains = chains(&as_sidecar, &central);
    assert_eq!(all_chains.len(), 2, "{all_chains:?}");
    for chain in &all_chains {
        assert_eq!(chain["status"], "ok", "{chain}");
        assert_eq!(chain["verifiedThrough"], chain["lastSeq"], "{chain}");
    }
    let export_file = world.path().join("export.ndjson");
    std::fs::write(
        &export_file,
        stored.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .expect("write");
    let verified = std::process::Command::new(sentinelnet())
        .args(["audit", "verify"])
        .arg(&export_file)
        .output()
        .expect("verify");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );

    // Queries: filters, one record, explain with audit references.
    let (status, body) =
        call(as_sidecar.get(central.url(
            "/v1/decisions?policy=kernel.freeze-deletes&node=node-b&decision=deny&limit=1000",
        )));
    assert_eq!(status, 200, "{body}");
    let denied = body["decisions"].as_array().cloned().unwrap_or_default();
    assert_eq!(denied.len(), 167, "every third of node-b's 500");
    assert!(
        denied.iter().all(|r| r["input"].is_null()),
        "no inputs unless asked"
    );
    let (status, one) = call(as_sidecar.get(central.url(&format!(
        "/v1/decisions/{}",
        denied[0]["id"].as_str().unwrap_or("")
    ))));
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["evidence"]["request.method"], "DELETE");
    assert!(one["input"].is_object());
    let (status, capped) = call(as_sidecar.get(central.url("/v1/decisions?limit=5000")));
    assert_eq!(status, 200);
    assert_eq!(
        capped["decisions"].as_array().map(Vec::len),
        Some(1000),
        "limit is capped at 1000"
    );
    assert_eq!(export(&as_sidecar, &central, "?limit=3").len(), 3);
    let (status, _) = call(as_sidecar.get(central.url("/v1/decisions?limit=0")));
    assert_eq!(status, 400);
    // A limit past any integer is capped like any large one, not refused.
    let (status, huge) =
        call(as_sidecar.get(central.url("/v1/decisions?limit=99999999999999999999999")));
    assert_eq!(status, 200, "{huge}");
    assert_eq!(huge["decisions"].as_array().map(Vec::len), Some(1000));
    let (status, bad) = call(as_sidecar.get(central.url("/v1/decisions?since=yesterday")));
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap_or("").contains("since"),
        "{bad}"
    );
    let (status, explain) =
        call(publisher.get(central.url("/sentinelnet/policy/kernel.freeze-deletes/explain")));
    assert_eq!(status, 200, "{explain}");
    let recent = explain["recentDecisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recent.len(), 100, "the 100 newest");
    let by_id: HashMap<&str, &Value> = stored
        .iter()
        .filter_map(|r| Some((r["id"].as_str()?, r)))
        .collect();
    // Each is a stored denial by this policy, newest first, and its audit
    // reference is where that record sits in its chain.
    let mut previous_ts = String::from("9999");
    for entry in &recent {
        assert_eq!(
            (&entry["role"], &entry["decision"]),
            (&json!("decided"), &json!("deny")),
            "{entry}"
        );
        let ts = entry["ts"].as_str().unwrap_or_default().to_owned();
        assert!(ts <= previous_ts, "newest first: {ts} after {previous_ts}");
        previous_ts = ts;
        let stored = by_id
            .get(entry["auditRef"]["id"].as_str().unwrap_or(""))
            .expect("a stored record");
        assert_eq!(stored["policyId"], "kernel.freeze-deletes");
        assert_eq!(entry["requestId"], stored["requestId"]);
        for (field, stored_field) in [("node", "node"), ("chainId", "chainId"), ("seq", "seq")] {
            assert_eq!(entry["auditRef"][field], stored[stored_field], "{entry}");
        }
        // The entry is the stored record (SPEC 7), plus explain's fields.
        if let (Some(entry), Some(record)) = (entry.as_object(), stored.as_object()) {
            for (field, value) in record.iter().filter(|(f, _)| *f != "input") {
                assert_eq!(entry.get(field), Some(value), "{field} of {entry:?}");
            }
        } else {
            panic!("objects: {entry} and {stored}");
        }
    }
    // The newest: no stored denial of this policy is newer.
    let newest_denial = stored
        .iter()
        .filter(|r| r["policyId"] == "kernel.freeze-deletes")
        .filter_map(|r| r["ts"].as_str())
        .max()
        .unwrap_or_default();
    assert_eq!(recent[0]["ts"], newest_denial);

    // A re-posted batch is all duplicates; an edited copy is refused and the
    // stored record stays; a bad line is quarantined, its neighbours stored.
    let resent = ndjson(&stored[..5]);
    let (status, body) = call(as_sidecar.post(audit_url.clone()).body(resent));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(5)),
        "{body}"
    );
    let mut edited = stored[1].clone();
    edited["decision"] = json!(if edited["decision"] == "deny" {
        "allow"
    } else {
        "deny"
    });
    let edited = seal(edited);
    let (status, body) = call(
        as_sidecar
            .post(audit_url.clone())
            .body(ndjson(std::slice::from_ref(&edited))),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body["rejected"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("integrity alarm"),
        "{body}"
    );
    let (_, kept) = call(as_sidecar.get(central.url(&format!(
        "/v1/decisions/{}",
        stored[1]["id"].as_str().unwrap_or("")
    ))));
    assert_eq!(
        kept["decision"], stored[1]["decision"],
        "the stored record is unchanged"
    );
    assert_eq!(
        central_metric(
            &as_sidecar,
            &central,
            "sentinel_central_ingest_conflicts_total"
        ),
        1.0
    );

    let now = "2026-11-24T00:00:00.000000Z";
    let q0 = record("node-q", "cq", 0, GENESIS, now);
    let q1 = record("node-q", "cq", 1, q0["hash"].as_str().unwrap_or(""), now);
    let batch = format!("{q0}\n{{\"not\": \"a record\"}}\n{q1}\nnot json\n");
    let (status, body) = call(
        as_sidecar
            .post(audit_url.clone())
            .header("content-type", "application/x-ndjson")
            .body(batch),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"][0]["line"], 2, "{body}");
    let (_, quarantine) = call(as_sidecar.get(central.url("/v1/audit/quarantine")));
    let lines = quarantine["quarantine"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        lines
            .iter()
            .any(|q| q["content"] == "{\"not\": \"a record\"}" && q["line"] == 2),
        "{quarantine}"
    );
    // Two bad lines of one batch: both kept (one multi-row statement).
    assert_eq!(body["rejected"][1]["line"], 4, "{body}");
    assert!(
        lines
            .iter()
            .any(|q| q["content"] == "not json" && q["line"] == 4),
        "{quarantine}"
    );
    assert!(
        lines.iter().any(|q| q["error"]
            .as_str()
            .unwrap_or("")
            .contains("integrity alarm")),
        "{quarantine}"
    );

    // A forged record with a wrong link breaks node-b's chain at its seq.
    let last_b = stored
        .iter()
        .filter(|r| r["node"] == "node-b")
        .max_by_key(|r| r["seq"].as_u64())
        .cloned()
        .expect("node-b records");
    let forged_seq = last_b["seq"].as_u64().unwrap_or(0) + 1;
    let mut forged = last_b.clone();
    forged["id"] = json!("forged-record");
    forged["seq"] = json!(forged_seq);
    forged["prevHash"] = json!("f".repeat(64));
    let (status, body) = call(
        as_sidecar
            .post(audit_url.clone())
            .body(ndjson(&[seal(forged)])),
    );
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    let chain_b = chains(&as_sidecar, &central)
        .into_iter()
        .find(|c| c["node"] == "node-b")
        .expect("node-b chain");
    assert_eq!(chain_b["status"], "broken", "{chain_b}");
    assert_eq!(
        chain_b["breaks"],
        json!([{"seq": forged_seq, "reason": "link"}]),
        "{chain_b}"
    );
    assert_eq!(
        central_metric(&as_sidecar, &central, "sentinel_central_chain_breaks_total"),
        1.0
    );

    // Only sidecars post records.
    let (status, body) = call(publisher.post(audit_url.clone()).body(ndjson(&[q0])));
    assert_eq!(status, 403, "{body}");

    // The fleet: both current; node-b stopped, a new revision: node-b behind.
    let fleet = |client: &reqwest::blocking::Client| {
        let (status, body) = call(client.get(central.url("/v1/fleet")));
        assert_eq!(status, 200, "{body}");
        body["sidecars"].as_array().cloned().unwrap_or_default()
    };
    let sidecars = fleet(&publisher);
    assert_eq!(sidecars.len(), 2, "{sidecars:?}");
    assert!(
        sidecars
            .iter()
            .all(|s| s["current"] == true && s["identity"] == SIDECAR_ID),
        "{sidecars:?}"
    );
    drop(envoy_b);
    drop(b);
    let (status, body) = call(
        publisher
            .put(central.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "deny"})),
    );
    assert_eq!(status, 200, "{body}");
    let newest = body["publishedRevision"].clone();
    wait_until(
        "node-a to hold the new revision and node-b to be behind",
        Duration::from_secs(10),
        || {
            let sidecars = fleet(&publisher);
            let node = |n: &str| {
                sidecars
                    .iter()
                    .find(|s| s["node"] == n)
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            node("node-a")["current"] == true
                && node("node-b")["current"] == false
                && node("node-b")["newest"] == newest
        },
    );
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_fleet_sidecars{current=\"false\"}"
        ),
        1.0
    );
    // A sidecar's first pull (no If-None-Match) puts it in the fleet,
    // holding nothing yet; the gauge counts it at the next scrape.
    let (status, _) = call(
        as_sidecar
            .get(central.url("/v1/bundles/kernel"))
            .header("x-sentinel-node", "node-c"),
    );
    assert_eq!(status, 200);
    let sidecars = fleet(&publisher);
    let node_c = sidecars.iter().find(|s| s["node"] == "node-c");
    assert!(
        node_c.is_some_and(|s| s["revision"].is_null() && s["current"] == false),
        "{sidecars:?}"
    );
    assert_eq!(
        central_metric(
            &publisher,
            &central,
            "sentinel_central_fleet_sidecars{current=\"false\"}"
        ),
        2.0
    );
    drop((envoy_a, a, central));
}

#[test]
fn decisions_reach_central_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    decisions_reach_central(&format!(
        "sqlite://{}",
        dir.path().join("central.db").display()
    ));
}

#[test]
fn decisions_reach_central_on_postgres() {
    let db = PgDatabase::create();
    decisions_reach_central(&db.url());
}

#[test]
fn retention_prunes_old_records_and_keeps_new_ones() {
    let world = World::new();
    let db = format!("sqlite://{}", world.path().join("central.db").display());
    let central = Central::start(
        world.path(),
        free_port(),
        &db,
        &world.pki,
        &["--decision-retention", "3s"],
    );
    let as_sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    let old = record("node-r", "cr", 0, GENESIS, "2026-01-01T00:00:00Z");
    let fresh_ts = sentinel_now();
    let fresh = record(
        "node-r",
        "cr",
        1,
        old["hash"].as_str().unwrap_or(""),
        &fresh_ts,
    );
    let (status, body) = call(
        as_sidecar
            .post(central.url("/v1/audit/decisions"))
            .body(ndjson(&[old, fresh])),
    );
    assert_eq!((status, &body["accepted"]), (200, &json!(2)), "{body}");
    wait_until(
        "the old record to be pruned",
        Duration::from_secs(5),
        || export(&as_sidecar, &central, "").len() == 1,
    );
    assert_eq!(
        export(&as_sidecar, &central, "")[0]["seq"],
        1,
        "the fresh record stays"
    );
    // The chain's verification outlives the pruned record.
    let chain = &chains(&as_sidecar, &central)[0];
    assert_eq!(
        (&chain["status"], &chain["verifiedThrough"]),
        (&json!("ok"), &json!(1)),
        "{chain}"
    );
    wait_until(
        "the fresh record to be pruned too",
        Duration::from_secs(8),
        || export(&as_sidecar, &central, "").is_empty(),
    );
}

/// Now, as a record timestamp.
fn sentinel_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// With `--pin-node-identity`, the first identity that posts a node's
/// records owns that node: another
/// sidecar identity's records for it are refused and quarantined, naming
/// the owner, and the node's chain stays intact.
#[test]
fn a_sidecar_cannot_write_into_another_nodes_chain() {
    let world = World::new();
    let intruder_id = "spiffe://cluster/ns/other/sa/sidecar";
    let intruder = world
        .pki
        .issue("intruder", "other-sidecar", Some(intruder_id));
    std::fs::write(
        world.path().join("rbac.json"),
        json!({SIDECAR_ID: ["sidecar"], intruder_id: ["sidecar"], PUBLISHER_ID: ["publisher"]})
            .to_string(),
    )
    .expect("rbac");
    let (central, _db) = Central::start_sqlite(&world, &["--pin-node-identity"]);
    let ca = world.pki.ca_path();
    let owner = caller(Some(&world.sidecar), &ca);
    let other = caller(Some(&intruder), &ca);
    let post = |client: &reqwest::blocking::Client, records: &[Value]| {
        call(
            client
                .post(central.url("/v1/audit/decisions"))
                .body(ndjson(records)),
        )
    };
    let first = record("node-a", "c1", 0, GENESIS, "2026-11-24T01:00:00.000000Z");
    let (status, body) = post(&owner, std::slice::from_ref(&first));
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    // The intruder forges the next record of node-a's chain.
    let forged = record(
        "node-a",
        "c1",
        1,
        first["hash"].as_str().expect("hash"),
        "2026-11-24T01:00:01.000000Z",
    );
    let (status, body) = post(&other, std::slice::from_ref(&forged));
    assert_eq!((status, &body["accepted"]), (200, &json!(0)), "{body}");
    let error = body["rejected"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("node-a") && error.contains(SIDECAR_ID),
        "{body}"
    );
    let (_, quarantine) = call(owner.get(central.url("/v1/audit/quarantine")));
    assert_eq!(
        quarantine["quarantine"][0]["identity"], intruder_id,
        "{quarantine}"
    );
    // Its own node is fine; node-a's chain is untouched and the owner goes on.
    let own = record("node-z", "c9", 0, GENESIS, "2026-11-24T01:00:02.000000Z");
    let (_, body) = post(&other, &[own]);
    assert_eq!(body["accepted"], 1, "{body}");
    let (_, body) = post(&owner, std::slice::from_ref(&forged));
    assert_eq!(body["accepted"], 1, "{body}");
    let all = chains(&owner, &central);
    let node_a = all.iter().find(|c| c["node"] == "node-a").expect("node-a");
    assert_eq!(
        (&node_a["status"], &node_a["verifiedThrough"]),
        (&json!("ok"), &json!(1)),
        "{node_a}"
    );
}

/// One batch touching 150 chains (more than one statement's worth: chains
/// are locked, walked and saved in statements of 100), each chain's middle
/// record arriving in a later batch, and one forged link past the first
/// hundred: every chain is verified on its own.
fn a_batch_spanning_many_chains_verifies_each(db: &str) {
    const CHAINS: usize = 150;
    const FORGED: usize = 130;
    const DOUBLED: usize = 5;
    let world = World::new();
    let central = Central::start(world.path(), free_port(), db, &world.pki, &[]);
    let sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    let ts = "2026-11-25T01:00:00.000000Z";
    let (mut first_and_last, mut middles) = (Vec::new(), Vec::new());
    for n in 0..CHAINS {
        let (node, chain) = (format!("node-{n:03}"), format!("chain-{n:03}"));
        let r0 = record(&node, &chain, 0, GENESIS, ts);
        let r1 = record(&node, &chain, 1, r0["hash"].as_str().expect("hash"), ts);
        // The forged record hashes right but names the wrong predecessor.
        let prev = if n == FORGED {
            GENESIS
        } else {
            r1["hash"].as_str().expect("hash")
        };
        let r2 = record(&node, &chain, 2, prev, ts);
        first_and_last.extend([r2, r0]);
        middles.push(r1);
    }
    let post = |records: &[Value]| {
        call(
            sidecar
                .post(central.url("/v1/audit/decisions"))
                .body(ndjson(records)),
        )
    };
    let (status, body) = post(&first_and_last);
    assert_eq!(
        (status, &body["accepted"]),
        (200, &json!(2 * CHAINS)),
        "{body}"
    );
    let all = chains(&sidecar, &central);
    assert_eq!(all.len(), CHAINS);
    for chain in &all {
        assert_eq!(
            (&chain["status"], &chain["verifiedThrough"], &chain["gaps"]),
            (&json!("gap"), &json!(0), &json!([[1, 1]])),
            "{chain}"
        );
    }
    let (status, body) = post(&middles);
    assert_eq!((status, &body["accepted"]), (200, &json!(CHAINS)), "{body}");
    // A second record for a seq already walked (a new id, so no dedupe).
    let mut twin = middles[DOUBLED].clone();
    twin["id"] = json!("a-second-seq-1");
    twin["requestId"] = json!("another-request");
    let (status, body) = post(&[seal(twin)]);
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    for chain in chains(&sidecar, &central) {
        if chain["node"] == format!("node-{DOUBLED:03}") {
            assert_eq!(
                (&chain["status"], &chain["breaks"]),
                (
                    &json!("broken"),
                    &json!([{"seq": 1, "reason": "duplicate"}])
                ),
                "{chain}"
            );
        } else if chain["node"] == format!("node-{FORGED}") {
            assert_eq!(
                (
                    &chain["status"],
                    &chain["verifiedThrough"],
                    &chain["breaks"][0]["seq"]
                ),
                (&json!("broken"), &json!(1), &json!(2)),
                "{chain}"
            );
        } else {
            assert_eq!(
                (
                    &chain["status"],
                    &chain["verifiedThrough"],
                    &chain["lastSeq"]
                ),
                (&json!("ok"), &json!(2), &json!(2)),
                "{chain}"
            );
        }
    }
    // The forged link and the second seq 1, each counted once.
    assert_eq!(
        central_metric(&sidecar, &central, "sentinel_central_chain_breaks_total"),
        2.0
    );
}

#[test]
fn a_batch_spanning_many_chains_verifies_each_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_batch_spanning_many_chains_verifies_each(&format!(
        "sqlite://{}",
        dir.path().join("central.db").display()
    ));
}

#[test]
fn a_batch_spanning_many_chains_verifies_each_on_postgres() {
    let db = PgDatabase::create();
    a_batch_spanning_many_chains_verifies_each(&db.url());
}
