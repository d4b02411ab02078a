//! `sentinelnet ctl` against a real central over mTLS (certificates
//! generated here): push (idempotent, versions only what changed, one
//! revision), transitions, three approvals by key file activating a HIGH
//! policy, explain/decisions/label/simulate/export/fleet/chains as tables
//! and as JSON, refusals as one line with exit 1, a bad flag and an
//! unreachable central with exit 2.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::central::*;
use support::pki::Leaf;
use support::*;

struct Ctl<'a> {
    central: &'a Central,
    ca: PathBuf,
}

impl Ctl<'_> {
    /// `sentinelnet ctl ARGS` as `leaf`, identity given by flags.
    fn run(&self, leaf: &Leaf, args: &[&str]) -> Output {
        Command::new(sentinelnet())
            .arg("ctl")
            .args(["--central", &self.central.url("")])
            .arg("--cert")
            .arg(&leaf.cert)
            .arg("--key")
            .arg(&leaf.key)
            .arg("--ca")
            .arg(&self.ca)
            .args(args)
            .env_remove("SENTINEL_CENTRAL_URL")
            .output()
            .expect("ctl runs")
    }

    fn ok(&self, leaf: &Leaf, args: &[&str]) -> String {
        let out = self.run(leaf, args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, leaf: &Leaf, args: &[&str]) -> Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let text = self.ok(leaf, &all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {text}"))
    }
}

/// Exit code and the single stderr line of a failed run.
fn failure(out: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    (out.status.code().unwrap_or(-1), err)
}

fn write_bundle(dir: &Path, policies: &[Value]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("bundle.json"),
        json!({"name": "kernel", "revision": "local", "defaultDecision": "allow"}).to_string(),
    )
    .expect("bundle.json");
    for p in policies {
        let id = p["id"].as_str().expect("id");
        std::fs::write(
            dir.join(format!("policies/{id}.json")),
            serde_json::to_string_pretty(p).expect("json"),
        )
        .expect("policy");
    }
}

fn policy(id: &str, severity: &str, state: &str, method: &str) -> Value {
    json!({"id": id, "version": 1, "severity": severity, "state": state, "effect": "deny",
           "description": format!("deny {method}"),
           "when": {"==": [{"var": "request.method"}, method]}})
}

#[test]
fn every_command_against_a_real_central() {
    let world = World::new();
    let approvers = world.path().join("approvers");
    let keys = world.path().join("approver-keys");
    for name in ["alice", "bob", "carol"] {
        keygen(&keys, name);
        std::fs::create_dir_all(&approvers).expect("mkdir");
        std::fs::copy(
            keys.join(format!("{name}.pub")),
            approvers.join(format!("{name}.pub")),
        )
        .expect("copy");
    }
    let (central, _db) =
        Central::start_sqlite(&world, &["--approvers", approvers.to_str().expect("utf8")]);
    let ctl = Ctl {
        central: &central,
        ca: world.pki.ca_path(),
    };
    let (publisher, approver, sidecar) = (&world.publisher, &world.approver, &world.sidecar);

    // push: three policies, their declared states, one revision.
    let bundle = world.path().join("bundle");
    let mut policies = vec![
        policy("kernel.no-delete", "LOW", "active", "DELETE"),
        policy("kernel.no-patch", "MEDIUM", "canary", "PATCH"),
        policy("kernel.no-put", "HIGH", "active", "PUT"),
    ];
    policies[1]["canaryPercent"] = json!(10);
    // A float in a condition must read back equal, or every push would
    // version it again.
    policies[0]["when"] = json!({"and": [{"==": [{"var": "request.method"}, "DELETE"]},
                                         {"<": [{"var": "request.size"}, 1048576.1]}]});
    write_bundle(&bundle, &policies);
    let bundle_arg = bundle.to_str().expect("utf8");
    let pushed = ctl.json(
        publisher,
        &[
            "push", bundle_arg, "--bundle", "kernel", "--reason", "first",
        ],
    );
    assert_eq!(pushed["publishedRevision"], "r1", "{pushed}");
    let by_id = |report: &Value, id: &str| {
        report["policies"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} in {report}"))
    };
    assert_eq!(by_id(&pushed, "kernel.no-delete")["state"], "active");
    assert_eq!(by_id(&pushed, "kernel.no-patch")["state"], "canary");
    assert_eq!(by_id(&pushed, "kernel.no-patch")["canaryPercent"], 10.0);
    let high = by_id(&pushed, "kernel.no-put");
    assert_eq!(high["state"], "draft", "HIGH waits for approvals: {high}");
    assert!(
        high["note"]
            .as_str()
            .is_some_and(|n| n.contains("approvals")),
        "{high}"
    );
    // Twice: nothing changes.
    let again = ctl.json(publisher, &["push", bundle_arg, "--bundle", "kernel"]);
    assert_eq!(again["publishedRevision"], Value::Null, "{again}");
    assert!(again["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .all(|p| p["content"] == "unchanged"));
    // One changed file: only it is versioned, at most one revision.
    policies[0]["description"] = json!("deny DELETE, reworded");
    write_bundle(&bundle, &policies);
    let changed = ctl.json(publisher, &["push", bundle_arg, "--bundle", "kernel"]);
    let contents: Vec<(String, String)> = changed["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or("").to_owned(),
                p["content"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        contents,
        vec![
            ("kernel.no-delete".into(), "versioned".into()),
            ("kernel.no-patch".into(), "unchanged".into()),
            ("kernel.no-put".into(), "unchanged".into()),
        ]
    );
    assert_eq!(by_id(&changed, "kernel.no-delete")["version"], 2);
    assert_eq!(changed["publishedRevision"], "r2");
    // The table names every policy and the revision.
    let table = ctl.ok(publisher, &["push", bundle_arg, "--bundle", "kernel"]);
    assert!(
        table.contains("kernel.no-put") && table.contains("no new revision"),
        "{table}"
    );
    // A bad file is refused locally with bundle build's message, exit 2.
    std::fs::write(bundle.join("policies/bad.json"), "{\"id\": \"bad\"").expect("write");
    let (code, err) = failure(&ctl.run(publisher, &["push", bundle_arg, "--bundle", "kernel"]));
    assert_eq!(code, 2);
    assert!(err.contains("policies/bad.json"), "{err}");
    std::fs::remove_file(bundle.join("policies/bad.json")).expect("rm");

    // policies, as a table and as JSON.
    let table = ctl.ok(publisher, &["policies"]);
    assert!(table.starts_with("BUNDLE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("kernel.no-patch") && l.contains("canary") && l.contains("10")),
        "{table}"
    );
    let listed = ctl.json(publisher, &["policies", "--bundle", "kernel"]);
    assert_eq!(
        listed["bundles"][0]["policies"].as_array().map(Vec::len),
        Some(3)
    );

    // A HIGH policy without approvals: refused, one line, exit 1.
    let (code, err) = failure(&ctl.run(
        publisher,
        &[
            "transition",
            "kernel.no-put",
            "--to",
            "active",
            "--reason",
            "go",
        ],
    ));
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("approvals"), "{err}");
    // Three approvals by key file, then the transition goes through.
    for name in ["alice", "bob", "carol"] {
        let key = keys.join(format!("{name}.key"));
        let answer = ctl.json(
            approver,
            &[
                "approve",
                "kernel.no-put",
                "--key",
                key.to_str().expect("utf8"),
            ],
        );
        assert_eq!(answer["manifest"]["policyId"], "kernel.no-put");
        assert!(answer["manifest"]["documentSha256"]
            .as_str()
            .is_some_and(|d| d.len() == 64));
    }
    let explained = ctl.json(publisher, &["explain", "kernel.no-put"]);
    assert_eq!(explained["approvals"].as_array().map(Vec::len), Some(3));
    let moved = ctl.json(
        publisher,
        &[
            "transition",
            "kernel.no-put",
            "--to",
            "active",
            "--reason",
            "approved by three",
        ],
    );
    assert_eq!(moved["state"], "active", "{moved}");
    let moved = ctl.ok(
        publisher,
        &[
            "transition",
            "kernel.no-patch",
            "--to",
            "canary",
            "--percent",
            "25",
            "--reason",
            "widen",
        ],
    );
    assert!(moved.contains("canary 25%"), "{moved}");
    // Unknown policy: 404, one line, exit 1.
    let (code, err) = failure(&ctl.run(publisher, &["explain", "kernel.nosuch"]));
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    // A bad flag: exit 2.
    let (code, _) = failure(&ctl.run(
        publisher,
        &[
            "transition",
            "x",
            "--to",
            "canary",
            "--percent",
            "lots",
            "--reason",
            "r",
        ],
    ));
    assert_eq!(code, 2);
    let (code, _) = failure(&ctl.run(publisher, &["label", "some-id", "maybe"]));
    assert_eq!(code, 2);
    let (code, err) = failure(&ctl.run(publisher, &["decisions", "--since", "yesterday"]));
    assert_eq!(code, 2, "a bad time is bad input, not a refusal: {err}");
    let (code, _) = failure(&ctl.run(
        publisher,
        &["transition", "x", "--to", "live", "--reason", "r"],
    ));
    assert_eq!(code, 2);

    // explain as sections.
    let text = ctl.ok(publisher, &["explain", "kernel.no-patch"]);
    for section in [
        "RULE",
        "TRANSITIONS",
        "APPROVALS",
        "CANARY 25%",
        "RECENT DECISIONS",
    ] {
        assert!(text.contains(section), "{section} in {text}");
    }

    // Decisions, labels, simulate, export: records posted as a sidecar.
    let mut prev = GENESIS.to_owned();
    let mut records = Vec::new();
    for seq in 0..6u64 {
        let mut r = record(
            "node-a",
            "c1",
            seq,
            &prev,
            &format!("2026-11-24T02:00:0{seq}.000000Z"),
        );
        let delete = seq % 2 == 0;
        r["input"] = json!({"request": {"id": format!("req-{seq}"), "method": if delete { "DELETE" } else { "GET" }}});
        if delete {
            r["decision"] = json!("deny");
            r["policyId"] = json!("kernel.no-delete");
            r["policyVersion"] = json!(2);
        }
        let r = seal(r);
        prev = r["hash"].as_str().expect("hash").to_owned();
        records.push(r);
    }
    let as_sidecar = caller(Some(sidecar), &world.pki.ca_path());
    let (status, body) = call(
        as_sidecar
            .post(central.url("/v1/audit/decisions"))
            .body(ndjson(&records)),
    );
    assert_eq!(status, 200, "{body}");
    let listed = ctl.json(
        publisher,
        &[
            "decisions",
            "--policy",
            "kernel.no-delete",
            "--decision",
            "deny",
        ],
    );
    assert_eq!(
        listed["decisions"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    let table = ctl.ok(publisher, &["decisions", "--limit", "2"]);
    assert_eq!(table.lines().count(), 3, "header and two rows: {table}");
    assert!(table.starts_with("TIME"), "{table}");
    let id = records[0]["id"].as_str().expect("id");
    let labelled = ctl.ok(
        publisher,
        &["label", id, "false_positive", "--note", "cleanup job"],
    );
    assert!(labelled.contains("labelled false_positive"), "{labelled}");
    let labelled = ctl.json(approver, &["label", id, "true_positive"]);
    assert_eq!(labelled["labels"].as_array().map(Vec::len), Some(2));
    let (code, err) = failure(&ctl.run(sidecar, &["label", id, "true_positive"]));
    assert_eq!((code, err.contains("403")), (1, true), "{err}");

    let candidate = world.path().join("candidate.json");
    std::fs::write(
        &candidate,
        policy("kernel.no-get", "LOW", "draft", "GET").to_string(),
    )
    .expect("write");
    let candidate = candidate.to_str().expect("utf8");
    let report = ctl.json(publisher, &["simulate", "--bundle", "kernel", candidate]);
    assert_eq!(report["evaluated"], 6);
    assert_eq!(report["changes"]["allowToDeny"]["count"], 3, "{report}");
    let table = ctl.ok(publisher, &["simulate", "--bundle", "kernel", candidate]);
    assert!(
        table.contains("allow → deny: 3") && table.contains("recommended canary:"),
        "{table}"
    );

    let export = world.path().join("export.jsonl");
    let out = ctl.run(publisher, &["export", "-o", export.to_str().expect("utf8")]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&export).expect("export");
    assert_eq!(text.lines().count(), 6);
    assert!(text.contains("\"label\":\"true_positive\""));
    let stdout = ctl.ok(publisher, &["export", "--since", "2026-11-24T02:00:04Z"]);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // fleet and chains.
    let pulled = as_sidecar
        .get(central.url("/v1/bundles/kernel"))
        .header("if-none-match", "\"kernel-r1\"")
        .header("x-sentinel-node", "node-a")
        .send()
        .expect("pull");
    assert_eq!(pulled.status().as_u16(), 200);
    let fleet = ctl.json(publisher, &["fleet"]);
    assert_eq!(fleet["sidecars"][0]["node"], "node-a", "{fleet}");
    assert_eq!(fleet["sidecars"][0]["current"], false);
    let table = ctl.ok(publisher, &["fleet"]);
    assert!(
        table.starts_with("IDENTITY") && table.contains("node-a"),
        "{table}"
    );
    let chains = ctl.json(publisher, &["chains"]);
    assert_eq!(chains["chains"][0]["status"], "ok", "{chains}");
    let table = ctl.ok(publisher, &["chains"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("node-a") && l.contains("ok")),
        "{table}"
    );

    // Identity from SENTINEL_CTL_*, else KERNEL_MTLS_*; URL from the env.
    let out = Command::new(sentinelnet())
        .args(["ctl", "policies", "--bundle", "kernel"])
        .env("SENTINEL_CENTRAL_URL", central.url(""))
        .env("KERNEL_MTLS_CERT_PATH", &publisher.cert)
        .env("KERNEL_MTLS_KEY_PATH", &publisher.key)
        .env("KERNEL_MTLS_CA_PATH", world.pki.ca_path())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(sentinelnet())
        .args(["ctl", "policies", "--bundle", "kernel"])
        .env("SENTINEL_CENTRAL_URL", central.url(""))
        .env("SENTINEL_CTL_CERT", &publisher.cert)
        .env("SENTINEL_CTL_KEY", &publisher.key)
        .env("SENTINEL_CTL_CA", world.pki.ca_path())
        .env("KERNEL_MTLS_CERT_PATH", "/nonexistent.crt")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Central down: exit 2, one line.
    let down = Command::new(sentinelnet())
        .args([
            "ctl",
            "--central",
            &format!("https://127.0.0.1:{}", free_port()),
        ])
        .arg("--cert")
        .arg(&publisher.cert)
        .arg("--key")
        .arg(&publisher.key)
        .arg("--ca")
        .arg(world.pki.ca_path())
        .arg("fleet")
        .output()
        .expect("runs");
    let (code, err) = failure(&down);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach central"), "{err}");
}
