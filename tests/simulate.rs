//! `sentinelnet simulate` on a labelled sample set whose expected numbers
//! this test computes on its own (from how it generated each sample, not
//! through the engine): matches, match rate, allow→deny and deny→allow
//! counts and examples, false positives and their rate, the recommended
//! canary percent for a noisy and for a quiet candidate; the same answers
//! from decision records and from plain inputs; skipped lines.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::*;

/// What the test knows about one generated sample.
struct Truth {
    request_id: String,
    method: &'static str,
    bot: bool,
    /// The decision the live bundle recorded: deny DELETEs.
    recorded_deny: bool,
    /// The right decision, when labelled.
    right_deny: Option<bool>,
}

const SAMPLES: usize = 2000;

fn truths() -> Vec<Truth> {
    (0..SAMPLES)
        .map(|i| {
            let method = match i % 5 {
                0 => "DELETE",
                1 | 2 => "GET",
                _ => "POST",
            };
            // Every 9th request comes from a "bot-…" agent; some of those
            // are fine (i % 4 == 0), the rest should be denied.
            let bot = i % 9 == 0;
            let recorded_deny = method == "DELETE";
            let right = if bot { i % 4 != 0 } else { recorded_deny };
            Truth {
                request_id: format!("req-{i:05}"),
                method,
                bot,
                recorded_deny,
                right_deny: (i % 3 != 1).then_some(right),
            }
        })
        .collect()
}

fn input(t: &Truth) -> Value {
    let agent = if t.bot { "bot-crawler/1.0" } else { "curl/8.5" };
    json!({"request": {"id": t.request_id, "method": t.method, "path": "/v1/kernels/k1",
                       "headers": {"user-agent": agent}}})
}

/// The sample as central exports it: a record with input and label.
fn record_line(i: usize, t: &Truth) -> Value {
    let decision = if t.recorded_deny { "deny" } else { "allow" };
    let mut record = json!({
        "type": "policy.decision", "id": format!("rec-{i}"), "ts": "2026-11-24T00:00:00.000000Z",
        "node": "n1", "chainId": "c1", "seq": i, "requestId": t.request_id,
        "decision": decision, "status": if t.recorded_deny { 403 } else { 200 },
        "policyId": if t.recorded_deny { json!("kernel.freeze-deletes") } else { Value::Null },
        "policyVersion": if t.recorded_deny { json!(1) } else { Value::Null },
        "bundle": "kernel", "bundleRevision": "r7", "shadow": [], "evidence": {},
        "prevHash": "00", "hash": "11", "input": input(t),
    });
    if let Some(right) = t.right_deny {
        let label = if right == t.recorded_deny {
            "true_positive"
        } else {
            "false_positive"
        };
        record["label"] = json!(label);
    }
    record
}

fn plain_line(t: &Truth) -> Value {
    let mut line = json!({"input": input(t)});
    if let Some(right) = t.right_deny {
        line["label"] = json!(if right { "deny" } else { "allow" });
    }
    line
}

fn write_bundle(dir: &Path, policies: &[Value]) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("bundle.json"),
        json!({"name": "kernel", "revision": "candidate", "defaultDecision": "allow"}).to_string(),
    )
    .expect("bundle.json");
    for p in policies {
        let id = p["id"].as_str().expect("id");
        std::fs::write(dir.join(format!("policies/{id}.json")), p.to_string()).expect("policy");
    }
}

fn freeze_deletes() -> Value {
    json!({"id": "kernel.freeze-deletes", "version": 1, "severity": "HIGH", "state": "active",
           "effect": "deny", "when": {"==": [{"var": "request.method"}, "DELETE"]}})
}

/// The noisy candidate: deny every bot agent (a quarter of them are fine).
fn block_bots() -> Value {
    json!({"id": "kernel.block-bots", "version": 1, "severity": "MEDIUM", "state": "draft",
           "effect": "deny", "when": {"starts_with": [{"var": "request.headers.user-agent"}, "bot-"]}})
}

/// The quiet candidate: deny bots only on the one request id family that
/// matches almost nothing.
fn block_one_bot() -> Value {
    json!({"id": "kernel.block-one-bot", "version": 1, "severity": "LOW", "state": "simulating",
           "effect": "deny", "when": {"and": [
               {"starts_with": [{"var": "request.headers.user-agent"}, "bot-"]},
               {"==": [{"var": "request.id"}, "req-00009"]}]}})
}

fn simulate(args: &[&str]) -> Value {
    let out = Command::new(sentinelnet())
        .arg("simulate")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("simulate runs");
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The §8 rule, written out again here.
fn expected_percent(fp_rate: Option<f64>, newly_denied: usize, evaluated: usize) -> u64 {
    if fp_rate.is_some_and(|r| r > 0.05) {
        return 0;
    }
    let r = newly_denied as f64 / evaluated as f64;
    if r <= 0.001 {
        10
    } else if r <= 0.01 {
        5
    } else if r <= 0.05 {
        2
    } else {
        1
    }
}

#[test]
fn the_report_matches_numbers_computed_from_the_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truths = truths();
    let mut records = String::new();
    let mut plain = String::new();
    for (i, t) in truths.iter().enumerate() {
        records.push_str(&format!("{}\n", record_line(i, t)));
        plain.push_str(&format!("{}\n", plain_line(t)));
        if i == 100 {
            // Lines that are no sample: skipped, listed, never fatal.
            records.push_str("{this is not json\n");
            records.push_str(
                "{\"type\":\"policy.decision\",\"id\":\"no-input\",\"decision\":\"deny\"}\n",
            );
            records.push('\n');
            plain.push_str("{this is not json\n");
            plain.push_str("{\"hello\": \"world\"}\n");
            plain.push('\n');
        }
    }
    let records_file = dir.path().join("records.jsonl");
    let plain_file = dir.path().join("plain.jsonl");
    std::fs::write(&records_file, &records).expect("write");
    std::fs::write(&plain_file, &plain).expect("write");
    let live = dir.path().join("live");
    write_bundle(&live, &[freeze_deletes()]);
    let noisy = dir.path().join("noisy");
    write_bundle(&noisy, &[freeze_deletes(), block_bots()]);

    // What the noisy candidate must report, from the generated truths:
    // it denies DELETEs and bots.
    let candidate_denies = |t: &Truth| t.method == "DELETE" || t.bot;
    let bots = truths.iter().filter(|t| t.bot).count();
    let deletes = truths.iter().filter(|t| t.method == "DELETE").count();
    let allow_to_deny: Vec<&Truth> = truths
        .iter()
        .filter(|t| !t.recorded_deny && candidate_denies(t))
        .collect();
    let labelled = truths.iter().filter(|t| t.right_deny.is_some()).count();
    let labelled_denied = truths
        .iter()
        .filter(|t| t.right_deny.is_some() && candidate_denies(t))
        .count();
    let false_positives = truths
        .iter()
        .filter(|t| t.right_deny == Some(false) && candidate_denies(t))
        .count();
    assert!(
        false_positives > 0 && !allow_to_deny.is_empty(),
        "the sample set exercises both"
    );
    let fp_rate = false_positives as f64 / labelled_denied as f64;

    let check = |report: &Value, baseline: &str, skipped_lines: [u64; 2]| {
        assert_eq!(report["bundle"], "kernel");
        assert_eq!(report["baseline"], baseline);
        assert_eq!(report["samples"], SAMPLES as u64 + 2, "{report}");
        assert_eq!(report["evaluated"], SAMPLES as u64);
        assert_eq!(report["skipped"]["count"], 2);
        let lines: Vec<u64> = report["skipped"]["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .map(|e| e["line"].as_u64().expect("line"))
            .collect();
        assert_eq!(lines, skipped_lines);
        let policies = report["policies"].as_array().expect("policies");
        let find = |id: &str| {
            policies
                .iter()
                .find(|p| p["policyId"] == id)
                .unwrap_or_else(|| panic!("{id} in {report}"))
        };
        let bots_row = find("kernel.block-bots");
        assert_eq!(bots_row["matches"], bots as u64);
        assert_eq!(bots_row["wouldDeny"], bots as u64);
        assert_eq!(
            bots_row["matchRate"].as_f64(),
            Some(round4(bots as f64 / SAMPLES as f64))
        );
        assert_eq!(find("kernel.freeze-deletes")["matches"], deletes as u64);
        let changes = &report["changes"];
        assert_eq!(changes["allowToDeny"]["count"], allow_to_deny.len() as u64);
        assert_eq!(changes["denyToAllow"]["count"], 0);
        let examples = changes["allowToDeny"]["examples"]
            .as_array()
            .expect("examples");
        assert_eq!(examples.len(), 10, "at most 10 examples");
        for (example, truth) in examples.iter().zip(&allow_to_deny) {
            assert_eq!(example["requestId"], truth.request_id.as_str());
            assert_eq!(example["policyId"], "kernel.block-bots");
        }
        assert_eq!(report["labelled"], labelled as u64);
        assert_eq!(report["falsePositives"], false_positives as u64);
        assert_eq!(report["falsePositiveRate"].as_f64(), Some(round4(fp_rate)));
        assert_eq!(
            report["recommendedCanaryPercent"],
            expected_percent(Some(fp_rate), allow_to_deny.len(), SAMPLES)
        );
        assert_eq!(report["recommendedCanaryPercent"], 0, "noisy: fix first");
        let why = report["recommendation"].as_str().expect("a sentence");
        assert!(why.contains("false-positive rate"), "{why}");
    };

    // Records (baseline: what was recorded); the bad lines come after
    // sample 101, i.e. lines 102 and 103 (the blank line is not a sample).
    let from_records = simulate(&[
        "--bundle",
        noisy.to_str().expect("utf8"),
        "--samples",
        records_file.to_str().expect("utf8"),
    ]);
    check(&from_records, "recorded", [102, 103]);
    // Plain inputs with the live bundle as baseline: the same numbers.
    let from_plain = simulate(&[
        "--bundle",
        noisy.to_str().expect("utf8"),
        "--samples",
        plain_file.to_str().expect("utf8"),
        "--baseline",
        live.to_str().expect("utf8"),
    ]);
    check(&from_plain, "kernel@candidate", [102, 103]);
    for key in [
        "policies",
        "changes",
        "labelled",
        "falsePositives",
        "recommendedCanaryPercent",
    ] {
        assert_eq!(from_records[key], from_plain[key], "{key}");
    }

    // Plain inputs without a baseline: no changes to report; every deny
    // counts as new for the recommendation.
    let no_baseline = simulate(&[
        "--bundle",
        noisy.to_str().expect("utf8"),
        "--samples",
        plain_file.to_str().expect("utf8"),
    ]);
    assert_eq!(no_baseline["baseline"], "none");
    assert_eq!(no_baseline["changes"]["allowToDeny"]["count"], 0);
    assert_eq!(no_baseline["falsePositives"], false_positives as u64);

    // The quiet candidate: one bot request newly denied, correctly.
    let quiet = dir.path().join("quiet");
    write_bundle(&quiet, &[freeze_deletes(), block_one_bot()]);
    let report = simulate(&[
        "--bundle",
        quiet.to_str().expect("utf8"),
        "--samples",
        records_file.to_str().expect("utf8"),
    ]);
    let quiet_fp = truths
        .iter()
        .filter(|t| {
            t.right_deny == Some(false) && (t.method == "DELETE" || t.request_id == "req-00009")
        })
        .count();
    let quiet_denied = truths
        .iter()
        .filter(|t| t.right_deny.is_some() && (t.method == "DELETE" || t.request_id == "req-00009"))
        .count();
    let quiet_rate = quiet_fp as f64 / quiet_denied as f64;
    assert_eq!(report["changes"]["allowToDeny"]["count"], 1);
    assert_eq!(
        report["changes"]["allowToDeny"]["examples"][0]["requestId"],
        "req-00009"
    );
    assert_eq!(report["falsePositives"], quiet_fp as u64);
    assert_eq!(
        report["recommendedCanaryPercent"],
        expected_percent(Some(quiet_rate), 1, SAMPLES)
    );
    assert_eq!(report["recommendedCanaryPercent"], 10, "{report}");

    // The deny→allow direction: a candidate that drops the freeze.
    let unfrozen = dir.path().join("unfrozen");
    let mut retired = freeze_deletes();
    retired["state"] = json!("deprecated");
    write_bundle(&unfrozen, &[retired]);
    let report = simulate(&[
        "--bundle",
        unfrozen.to_str().expect("utf8"),
        "--samples",
        records_file.to_str().expect("utf8"),
    ]);
    assert_eq!(report["changes"]["denyToAllow"]["count"], deletes as u64);
    assert_eq!(
        report["changes"]["denyToAllow"]["examples"][0]["policyId"],
        "kernel.freeze-deletes"
    );
    assert_eq!(
        report["falsePositiveRate"],
        Value::Null,
        "it denies nothing"
    );
}

#[test]
fn the_table_shows_the_numbers_and_bad_input_is_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("b");
    write_bundle(&bundle, &[freeze_deletes(), block_bots()]);
    let samples = dir.path().join("s.jsonl");
    let t = &truths()[0..10];
    let text: String = t.iter().map(|t| format!("{}\n", plain_line(t))).collect();
    std::fs::write(&samples, text).expect("write");
    let out = Command::new(sentinelnet())
        .args(["simulate", "--format", "table", "--bundle"])
        .arg(&bundle)
        .arg("--samples")
        .arg(&samples)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("kernel.block-bots"), "{table}");
    assert!(table.contains("recommended canary:"), "{table}");
    assert!(
        table.contains("samples     10 (10 evaluated, 0 skipped)"),
        "{table}"
    );

    for (args, needle) in [
        (vec!["--samples", "/nonexistent.jsonl"], "cannot read"),
        (
            vec![
                "--samples",
                samples.to_str().expect("utf8"),
                "--max-fp-rate",
                "2",
            ],
            "between 0 and 1",
        ),
    ] {
        let out = Command::new(sentinelnet())
            .arg("simulate")
            .arg("--bundle")
            .arg(&bundle)
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
