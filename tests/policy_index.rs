//! The policy index against its oracle, the scan of every policy: on
//! generated bundles and inputs, `decide` (index) and `decide_by_scan` give
//! the same outcome: verdict, reason, deciding policy (so the same response),
//! every match with its mode (so the same shadow entries and evidence), and
//! the same failed policies.
//!
//! The generated rules mix what the index derives from (`==`, `===`, `in` a
//! list, `starts_with` on literals, through `and`/`or`/`!!`) with what must
//! keep a policy a candidate: negation, `if`, a branch of `or` on another
//! field, substring `in`, numbers, `var` defaults, unknown fields, and
//! iteration that can exceed the step budget. Inputs give each field a
//! string, nothing, `null`, a number, a boolean or a one-element list (loose
//! `==` between `["GET"]` and `"GET"` is true).

#[path = "../bench/bundlegen.rs"]
mod bundlegen;
mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sentinelnet::bundle::Bundle;
use sentinelnet::policy::{IndexSettings, Policy, PolicyDocument, PolicySet, Verdict};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{client, wait_until, Envoy, Grpc, Kernel, Sidecar};

const FIELDS: [&str; 6] = [
    "request.method",
    "request.path",
    "request.host",
    "request.headers.x-svc",
    "context.team",
    "nosuch.field",
];
const LITERALS: [&str; 8] = ["GET", "POST", "/a", "/a/b", "/b", "", "x", "1"];

fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&FIELDS[..])
}

fn literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(&LITERALS[..]).prop_map(|s| json!(s)),
        1 => prop::sample::select(vec![json!(1), json!(0), json!(true), Value::Null]),
    ]
}

/// `{"var": F}`, sometimes with a default.
fn var() -> impl Strategy<Value = Value> {
    (field(), prop::option::weighted(0.2, literal())).prop_map(|(f, default)| match default {
        Some(d) => json!({"var": [f, d]}),
        None => json!({"var": f}),
    })
}

fn atom() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (var(), literal(), prop::sample::select(vec!["==", "===", "!=", "=="]), any::<bool>())
            .prop_map(|(v, l, op, flip)| if flip { json!({op: [l, v]}) } else { json!({op: [v, l]}) }),
        2 => (var(), prop::collection::vec(literal(), 0..4))
            .prop_map(|(v, ls)| json!({"in": [v, ls]})),
        1 => (var(), prop::sample::select(&LITERALS[..]))
            .prop_map(|(v, s)| json!({"in": [v, s]})),
        1 => (prop::sample::select(&LITERALS[..]), var())
            .prop_map(|(s, v)| json!({"in": [s, v]})),
        2 => (var(), prop::sample::select(&LITERALS[..]))
            .prop_map(|(v, s)| json!({"starts_with": [v, s]})),
        1 => Just(json!({"in": ["admin", {"var": "principal.roles"}]})),
        1 => Just(json!({"some": [{"var": "xs"}, {"==": [{"var": ""}, -1]}]})),
        1 => Just(json!({">": [{"var": ["request.size", 0]}, 100]})),
        1 => any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn rule() -> impl Strategy<Value = Value> {
    atom().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 1..4).prop_map(|xs| json!({"and": xs})),
            2 => prop::collection::vec(inner.clone(), 1..4).prop_map(|xs| json!({"or": xs})),
            1 => inner.clone().prop_map(|x| json!({"!": x})),
            1 => inner.clone().prop_map(|x| json!({"!!": x})),
            1 => (inner.clone(), inner.clone(), inner).prop_map(|(a, b, c)| json!({"if": [a, b, c]})),
        ]
    })
}

fn policy_doc(n: usize) -> impl Strategy<Value = Value> {
    (
        rule(),
        prop::sample::select(vec!["active", "active", "canary", "simulating", "draft"]),
        prop::sample::select(vec!["allow", "deny"]),
        prop::sample::select(vec!["LOW", "MEDIUM", "HIGH", "CRITICAL"]),
        0u32..=100,
    )
        .prop_map(move |(when, state, effect, severity, percent)| {
            json!({"id": format!("p{n:03}"), "version": 1, "state": state, "effect": effect,
                   "severity": severity, "canaryPercent": percent, "when": when,
                   "response": {"status": 403 + (n % 3) as u16, "body": format!("by p{n:03}")}})
        })
}

fn bundle() -> impl Strategy<Value = Vec<Value>> {
    (1usize..40).prop_flat_map(|count| (0..count).map(policy_doc).collect::<Vec<_>>())
}

/// A value for one field: mostly strings, sometimes everything else.
fn field_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => prop::sample::select(vec!["GET", "POST", "/a", "/a/b", "/a/bc", "/b", "", "x", "1", "/é"])
            .prop_map(|s| Some(json!(s))),
        1 => Just(None),
        1 => prop::sample::select(vec![Value::Null, json!(1), json!(true), json!(["GET"]), json!(["/a"])])
            .prop_map(Some),
    ]
}

fn input() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(field_value(), FIELDS.len()),
        any::<bool>(),
        // 70,000 items × 3 steps exceed the step budget: that policy fails.
        prop::sample::select(vec![0usize, 3, 3, 3, 3, 3, 3, 70_000]),
        "[a-z0-9]{4}",
    )
        .prop_map(|(values, admin, xs, id)| {
            let mut doc = json!({"request": {"id": id, "headers": {}}, "context": {},
                                 "principal": {"roles": if admin { json!(["admin"]) } else { json!([]) }},
                                 "xs": (0..xs).collect::<Vec<_>>()});
            for (path, value) in FIELDS.iter().zip(values) {
                let Some(value) = value else { continue };
                let mut at = &mut doc;
                let segments: Vec<&str> = path.split('.').collect();
                for segment in &segments[..segments.len() - 1] {
                    let Value::Object(map) = at else { break };
                    at = map
                        .entry(segment.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                }
                if let Value::Object(map) = at {
                    map.insert(segments[segments.len() - 1].to_owned(), value);
                }
            }
            doc
        })
}

/// The input without its (possibly 70,000-item) `xs`, for failure messages.
fn shown(input: &Value) -> String {
    let mut input = input.clone();
    if let Some(xs) = input.get_mut("xs") {
        *xs = json!(format!("[{} items]", xs.as_array().map_or(0, Vec::len)));
    }
    input.to_string()
}

fn compile(docs: &[Value]) -> Vec<Policy> {
    docs.iter()
        .filter_map(|doc| {
            let document: PolicyDocument = serde_json::from_value(doc.clone()).ok()?;
            Policy::compile(document).ok()
        })
        .collect()
}

#[test]
fn index_decides_exactly_as_the_scan_on_generated_bundles() {
    let every_size = IndexSettings {
        min_policies: 1,
        min_per_field: 1,
    };
    // How many cases the index narrowed, so the test cannot pass by never
    // indexing anything.
    let narrowed = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 600,
        ..Config::default()
    });
    runner
        .run(
            &(bundle(), prop::collection::vec(input(), 1..6)),
            |(docs, inputs)| {
                let set = PolicySet::with_index(compile(&docs), Verdict::Allow, every_size);
                for input in &inputs {
                    let candidates = (0..set.policies().len())
                        .filter(|&i| set.candidacy(i, input).candidate)
                        .count();
                    let evaluated = set
                        .policies()
                        .iter()
                        .filter(|p| p.state().is_evaluated())
                        .count();
                    if candidates < evaluated {
                        narrowed.fetch_add(1, Ordering::Relaxed);
                    }
                    for on_error in [Verdict::Deny, Verdict::Allow] {
                        let indexed = set.decide(input, on_error);
                        let scanned = set.decide_by_scan(input, on_error);
                        prop_assert_eq!(&indexed, &scanned, "input {}", shown(input));
                    }
                }
                Ok(())
            },
        )
        .expect("index and scan agree");
    let narrowed = narrowed.load(Ordering::Relaxed);
    assert!(
        narrowed > 200,
        "the index skipped policies in only {narrowed} inputs"
    );
}

#[test]
fn generated_large_bundle_is_indexed_and_decides_as_the_scan() {
    let bundle = Bundle::from_files(&bundlegen::services(100)).expect("bundle");
    let set = &bundle.policies;
    let summary = set.index_summary();
    assert!(summary.enabled);
    // Every service policy carries a path or host literal; the globals
    // (a negation, substrings, a one-off header) do not.
    assert_eq!(summary.indexed, 100 * bundlegen::POLICIES_PER_SERVICE);
    assert_eq!(summary.always_evaluated, bundlegen::GLOBAL_POLICIES);
    let fields: Vec<&str> = summary.fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, vec!["request.path", "request.host"]);

    let mut narrowed_to = Vec::new();
    for n in [0usize, 1, 42, 99, 100] {
        let name = bundlegen::service_name(n);
        for (method, path, roles) in [
            ("GET", format!("/v1/{name}/items"), json!(["reader"])),
            ("DELETE", format!("/v1/{name}/items/7"), json!(["editor"])),
            ("DELETE", format!("/v1/{name}/items/7"), json!(["admin"])),
            ("POST", format!("/v1/{name}/admin/reset"), json!(["admin"])),
            ("GET", format!("/v1/{name}/healthz"), json!([])),
            ("GET", format!("/v1/{name}/export/all"), json!(["reader"])),
            ("PUT", "/v1/other/../etc".to_owned(), json!(["admin"])),
        ] {
            let input = json!({
                "request": {"id": format!("{n}-{path}"), "method": method, "path": path,
                            "host": format!("{name}.internal"),
                            "headers": {"x-tenant": "a", "user-agent": "curl/8"},
                            "query": {"limit": "5000"}},
                "source": {"address": "192.0.2.1"},
                "context": {"tenant": "b"},
                "principal": {"id": "u", "roles": roles},
            });
            let indexed = set.decide(&input, Verdict::Deny);
            assert_eq!(
                indexed,
                set.decide_by_scan(&input, Verdict::Deny),
                "{input}"
            );
            narrowed_to.push(
                (0..set.policies().len())
                    .filter(|&i| set.candidacy(i, &input).candidate)
                    .count(),
            );
        }
    }
    // A request to a service evaluates that service's policies and the
    // globals, not the other 99 services'.
    assert!(
        narrowed_to
            .iter()
            .all(|&n| n <= 2 * bundlegen::POLICIES_PER_SERVICE + bundlegen::GLOBAL_POLICIES),
        "{narrowed_to:?}"
    );
}

/// Write bench/bundlegen.rs's bundle for `services` into `dir`, with
/// `revision`; bundle.json last, by rename, so a watcher sees it complete.
fn write_generated(dir: &Path, services: usize, revision: &str) {
    for (name, bytes) in bundlegen::services(services) {
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        if name == "bundle.json" {
            let mut manifest: Value = serde_json::from_slice(&bytes).expect("manifest");
            manifest["revision"] = json!(revision);
            let staged = dir.join("bundle.json.tmp");
            std::fs::write(&staged, manifest.to_string()).expect("write");
            std::fs::rename(&staged, &path).expect("rename");
        } else {
            std::fs::write(&path, bytes).expect("write policy");
        }
    }
}

#[test]
fn large_bundles_decide_through_envoy_explain_the_index_and_swap_to_ten_thousand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    write_generated(&bundle, 100, "r1");
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(
        &bundle,
        Grpc::tcp(),
        &[
            "--principal-from",
            "header:x-user",
            "--roles-from",
            "header:x-roles",
        ],
        dir.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    let http = client();
    let send = |method: reqwest::Method, path: &str, roles: &str| {
        let response = http
            .request(method, envoy.url(path))
            .header("x-user", "alice")
            .header("x-roles", roles)
            .send()
            .expect("Envoy answers");
        let status = response.status().as_u16();
        (status, response.text().unwrap_or_default())
    };

    // A 403 whose body names the deciding policy.
    let denied_by = |method: reqwest::Method, path: &str, roles: &str, policy: &str| {
        let (status, body) = send(method, path, roles);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains(policy), "{path}: {body}");
    };

    let index = &sidecar.status()["bundle"]["index"];
    assert_eq!(
        index,
        &json!({"enabled": true, "indexed": 1000, "alwaysEvaluated": 4,
                "fields": {"request.path": 900, "request.host": 100}})
    );
    // Its own service's policies decide; nothing of the 99 others interferes.
    assert_eq!(
        send(reqwest::Method::GET, "/v1/svc0042/items", "reader").0,
        200
    );
    denied_by(
        reqwest::Method::DELETE,
        "/v1/svc0042/items/7",
        "editor",
        "svc0042.delete-needs-admin",
    );
    denied_by(
        reqwest::Method::GET,
        "/v1/svc0099/admin/keys",
        "admin",
        "svc0099.admin-network",
    );
    // No service: nothing allows, the default (deny) applies.
    assert_eq!(
        send(reqwest::Method::GET, "/v1/nobody/items", "admin").0,
        403
    );

    // `eval --explain` on the same bundle: the index's candidates and why.
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        json!({"request": {"id": "r", "method": "GET", "path": "/v1/svc0042/items",
                           "host": "svc0042.internal", "headers": {}},
               "principal": {"id": "alice", "roles": ["reader"]}})
        .to_string(),
    )
    .expect("input");
    let out = std::process::Command::new(support::sentinelnet())
        .args(["eval", "--explain", "--bundle"])
        .arg(&bundle)
        .arg("--input")
        .arg(&input)
        .output()
        .expect("eval runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(record["policyId"], "svc0042.read");
    // svc0042's policies but the three needing other paths (admin-network,
    // health-open, export-canary), and the 4 globals.
    assert_eq!(
        record["index"],
        json!({"enabled": true, "candidates": 11, "skipped": 993})
    );
    let why = |id: &str| {
        record["explain"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["policyId"] == id))
            .map(|e| {
                (
                    e["candidate"].clone(),
                    e["why"].as_str().unwrap_or("").to_owned(),
                )
            })
            .expect("listed")
    };
    assert_eq!(
        why("svc0042.read"),
        (json!(true), r#"request.path "/v1/svc0042/items" can match: the policy needs it to start with "/v1/svc0042""#.to_owned())
    );
    assert_eq!(
        why("svc0041.tenant-match"),
        (json!(false), r#"request.host "svc0042.internal" cannot match: the policy needs it to be "svc0041.internal""#.to_owned())
    );
    assert_eq!(why("global.path-traversal").0, json!(true));

    // Swap to 10,004 policies while requests keep being answered.
    write_generated(&bundle, 1000, "r2");
    wait_until(
        "the 10,004-policy revision",
        Duration::from_secs(60),
        || {
            assert_eq!(
                send(reqwest::Method::GET, "/v1/svc0042/items", "reader").0,
                200
            );
            sidecar.status()["bundle"]["revision"] == "r2"
        },
    );
    let status = sidecar.status();
    assert_eq!(status["bundle"]["index"]["indexed"], 10_000, "{status}");
    assert_eq!(
        send(reqwest::Method::GET, "/v1/svc0999/items", "reader").0,
        200
    );
    denied_by(
        reqwest::Method::DELETE,
        "/v1/svc0999/items/7",
        "reader",
        "svc0999.delete-needs-admin",
    );
}
