//! Large bundles the way people write them: per service, ten policies keyed
//! by the service's path prefix, host or method, checking roles, networks,
//! headers and sizes (the shapes of `bench/bundles/kernel-20`), plus four
//! global policies nothing can be indexed on. `services(100)` is the
//! 1,000-policy bundle of bench/README.md, `services(1000)` the 10,000 one.
//!
//! Service 0 is `kernels` (`/v1/kernels`, host `kernels.internal`), so the
//! benchmarks' sample request, `GET /v1/kernels?limit=10` by a reader, is
//! decided by the same kinds of policies in every bundle size.
//!
//! Shared by the criterion bench (`#[path]` include), the `gen-bundle`
//! example that writes a bundle directory for `bench/load.py`, and the
//! index's differential test.

use std::collections::BTreeMap;

/// Policies each service has.
pub(crate) const POLICIES_PER_SERVICE: usize = 10;
/// Global policies every bundle has.
pub(crate) const GLOBAL_POLICIES: usize = 4;

/// The service name of service `n`.
pub(crate) fn service_name(n: usize) -> String {
    if n == 0 {
        "kernels".into()
    } else {
        format!("svc{n:04}")
    }
}

/// Bundle files (`bundle.json`, `policies/*.json`) for `count` services.
pub(crate) fn services(count: usize) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "bundle.json".to_owned(),
        br#"{"name": "generated", "revision": "r1", "defaultDecision": "deny"}"#.to_vec(),
    );
    let mut add = |doc: serde_json::Value| {
        let id = doc["id"].as_str().unwrap_or("policy").to_owned();
        files.insert(format!("policies/{id}.json"), doc.to_string().into_bytes());
    };
    for policy in globals() {
        add(policy);
    }
    for n in 0..count {
        for policy in service(&service_name(n)) {
            add(policy);
        }
    }
    files
}

fn policy(id: String, effect: &str, severity: &str, when: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "id": id, "version": 1, "state": "active", "effect": effect,
        "severity": severity, "description": "generated", "when": when,
    })
}

/// Policies that apply to every request, with nothing to index on.
fn globals() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        policy(
            "global.method-allowlist".into(),
            "deny",
            "HIGH",
            json!({"!": {"in": [{"var": "request.method"},
                ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]]}}),
        ),
        policy(
            "global.path-traversal".into(),
            "deny",
            "CRITICAL",
            json!({"or": [{"in": ["..", {"var": "request.path"}]},
                          {"in": ["%2e%2e", {"var": "request.path"}]}]}),
        ),
        policy(
            "global.bad-json".into(),
            "deny",
            "MEDIUM",
            json!({"!!": {"var": "request.bodyError"}}),
        ),
        policy(
            "global.debug-header".into(),
            "deny",
            "LOW",
            json!({"==": [{"var": "request.headers.x-debug"}, "1"]}),
        ),
    ]
}

/// One service's ten policies.
fn service(name: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    let prefix = format!("/v1/{name}");
    let path = json!({"var": "request.path"});
    let method = json!({"var": "request.method"});
    let under = |suffix: &str| json!({"starts_with": [path, format!("{prefix}{suffix}")]});
    let roles_any = |roles: &[&str]| json!({"some": [{"var": "principal.roles"}, {"in": [{"var": ""}, roles]}]});
    let is_admin = json!({"in": ["admin", {"var": "principal.roles"}]});
    let mut canary = policy(
        format!("{name}.export-canary"),
        "deny",
        "MEDIUM",
        under("/export"),
    );
    canary["state"] = json!("canary");
    canary["canaryPercent"] = json!(10);
    let mut simulating = policy(
        format!("{name}.agent-sim"),
        "deny",
        "LOW",
        json!({"and": [under(""), {"matches": [{"var": "request.headers.user-agent"},
            "(?i)^(curl|python-requests|go-http-client)/"]}]}),
    );
    simulating["state"] = json!("simulating");
    vec![
        policy(
            format!("{name}.read"),
            "allow",
            "LOW",
            json!({"and": [{"in": [method, ["GET", "HEAD"]]}, under(""),
                           roles_any(&["reader", "editor", "admin"])]}),
        ),
        policy(
            format!("{name}.write"),
            "allow",
            "MEDIUM",
            json!({"and": [{"in": [method, ["POST", "PUT", "PATCH"]]}, under(""),
                           roles_any(&["editor", "admin"])]}),
        ),
        policy(
            format!("{name}.delete-needs-admin"),
            "deny",
            "HIGH",
            json!({"and": [{"==": [method, "DELETE"]}, under(""), {"!": is_admin}]}),
        ),
        policy(
            format!("{name}.delete-allow"),
            "allow",
            "HIGH",
            json!({"and": [{"==": [method, "DELETE"]}, under(""), is_admin]}),
        ),
        policy(
            format!("{name}.admin-network"),
            "deny",
            "CRITICAL",
            json!({"and": [under("/admin"),
                           {"!": {"in_cidr": [{"var": "source.address"}, ["10.0.0.0/8"]]}}]}),
        ),
        policy(
            format!("{name}.health-open"),
            "allow",
            "LOW",
            json!({"or": [{"==": [path, format!("{prefix}/healthz")]},
                          {"==": [path, format!("{prefix}/readyz")]}]}),
        ),
        policy(
            format!("{name}.tenant-match"),
            "deny",
            "HIGH",
            json!({"and": [{"==": [{"var": "request.host"}, format!("{name}.internal")]},
                           {"!!": {"var": "request.headers.x-tenant"}},
                           {"!=": [{"var": "request.headers.x-tenant"}, {"var": "context.tenant"}]}]}),
        ),
        canary,
        simulating,
        policy(
            format!("{name}.query-limit"),
            "deny",
            "MEDIUM",
            json!({"and": [under(""), {">": [{"var": ["request.query.limit", 0]}, 1000]}]}),
        ),
    ]
}
