//! The registry against a temporary SQLite file: what each concern writes,
//! publishes and refuses. (The HTTP API, mTLS and PostgreSQL are covered by
//! tests/central.rs with the real binary.)

use super::store::{Store, VersionRow};
use super::transitions::{parse, plan, Change, Requested};
use super::{Registry, RegistryError};
use crate::bundle::{unpack, Bundle};
use crate::keys::{keygen, FileKey, Signer, TrustedKeys};
use crate::policy::State;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A registry on a fresh SQLite file in `dir`, signing with a new key;
/// approvers `alice` and `bob`, two approvals required.
async fn registry(dir: &Path) -> (Registry, [FileKey; 2]) {
    let keys = dir.join("keys");
    let approvers = dir.join("approvers");
    std::fs::create_dir_all(&approvers).expect("dir");
    let (central, _) = keygen(&keys, "central").expect("keygen");
    let mut approver_keys = Vec::new();
    for name in ["alice", "bob"] {
        let (private, public) = keygen(&keys, name).expect("keygen");
        std::fs::copy(&public, approvers.join(format!("{name}.pub"))).expect("copy");
        approver_keys.push(FileKey::load(&private).expect("key"));
    }
    let url = format!("sqlite://{}", dir.join("central.db").display());
    let store = Store::open(&url).await.expect("store");
    let registry = Registry::new(
        store,
        Arc::new(FileKey::load(&central).expect("key")),
        Some(TrustedKeys::load_dir(&approvers).expect("approvers")),
        2,
    );
    let [alice, bob]: [FileKey; 2] = approver_keys.try_into().ok().expect("two keys");
    (registry, [alice, bob])
}

fn policy(id: &str, severity: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "version": 1, "severity": severity, "state": "draft",
        "effect": "deny", "when": {"==": [{"var": "request.method"}, "DELETE"]}
    }))
    .unwrap_or_default()
}

fn to(state: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"to": state, "reason": "test"})).unwrap_or_default()
}

async fn newest_revision(registry: &Registry) -> Option<i64> {
    let current = registry.current("kernel").await.expect("current");
    current.map(|r| r.revision)
}

/// The published bundle of `revision`, loaded as a sidecar would.
async fn published(registry: &Registry, revision: i64) -> Bundle {
    let archive = registry.archive("kernel", revision).await.expect("archive");
    Bundle::from_files(&unpack(&archive).expect("unpack")).expect("loads")
}

#[test]
fn versions_move_through_the_lifecycle_and_publish_what_sidecars_evaluate() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (registry, _) = registry(dir.path()).await;
        let created = registry
            .create_policy("kernel", &policy("p.one", "LOW"), None, "pub")
            .await
            .expect("created");
        assert_eq!((created.version, created.state.as_str()), (1, "draft"));
        // A new bundle publishes r1 (no live policy yet).
        assert_eq!(created.published_revision.as_deref(), Some("r1"));

        let active = registry
            .transition("kernel", "p.one", &to("active"), "pub")
            .await
            .expect("activated");
        assert_eq!(active.published_revision.as_deref(), Some("r2"));
        let r2 = published(&registry, 2).await;
        assert_eq!(
            r2.policies.find("p.one").map(|p| p.state()),
            Some(State::Active)
        );

        // A new version is a draft: nothing is published, v1 keeps enforcing.
        let v2 = registry
            .add_version("kernel", "p.one", &policy("p.one", "LOW"), None, "pub")
            .await
            .expect("v2");
        assert_eq!((v2.version, v2.published_revision), (2, None));
        assert_eq!(newest_revision(&registry).await, Some(2));

        // v2 taking over deprecates v1 and publishes r3 with v2.
        registry
            .transition("kernel", "p.one", &to("active"), "pub")
            .await
            .expect("v2 active");
        let r3 = published(&registry, 3).await;
        assert_eq!(r3.policies.find("p.one").map(|p| p.version()), Some(2));
        let explain = registry.explain("p.one").await.expect("explain");
        let states: Vec<(i64, String)> = explain["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap_or(0),
                    v["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(states, vec![(1, "deprecated".into()), (2, "active".into())]);
        let reasons: Vec<&str> = explain["transitions"]
            .as_array()
            .expect("transitions")
            .iter()
            .filter_map(|t| t["reason"].as_str())
            .collect();
        assert!(reasons.contains(&"superseded by version 2"), "{reasons:?}");

        // Backwards is refused, and refusing writes nothing.
        let refused = registry
            .transition("kernel", "p.one", &to("simulating"), "pub")
            .await
            .expect_err("backwards");
        assert!(matches!(refused, RegistryError::Conflict(_)), "{refused}");
        assert_eq!(newest_revision(&registry).await, Some(3));
    });
}

#[test]
fn high_severity_needs_distinct_approvals_of_the_current_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (registry, [alice, bob]) = registry(dir.path()).await;
        registry
            .create_policy("kernel", &policy("p.high", "HIGH"), None, "pub")
            .await
            .expect("created");
        let manifest = registry
            .manifest("kernel", "p.high")
            .await
            .expect("manifest");
        let approve = |key: &FileKey, name: &str| {
            serde_json::to_vec(
                &json!({"approver": name, "signature": key.sign_base64(&manifest).expect("signs")}),
            )
            .unwrap_or_default()
        };
        let refused = registry
            .transition("kernel", "p.high", &to("active"), "pub")
            .await
            .expect_err("no approvals yet");
        assert!(refused.to_string().contains("has 0 (none)"), "{refused}");

        let one: Value = registry
            .approve("kernel", "p.high", &approve(&alice, "alice"), "appr")
            .await
            .expect("alice approves");
        assert_eq!(
            (one["approvals"].as_u64(), one["required"].as_u64()),
            (Some(1), Some(2))
        );
        let again = registry
            .approve("kernel", "p.high", &approve(&alice, "alice"), "appr")
            .await
            .expect_err("alice twice");
        assert!(matches!(again, RegistryError::Conflict(_)), "{again}");
        // Bob's key signing as alice's name is not alice's approval.
        let forged = registry
            .approve("kernel", "p.high", &approve(&bob, "alice"), "appr")
            .await
            .expect_err("forged");
        assert!(matches!(forged, RegistryError::Refused(_)), "{forged}");
        let still = registry
            .transition("kernel", "p.high", &to("active"), "pub")
            .await
            .expect_err("one approval");
        assert!(still.to_string().contains("has 1 (alice)"), "{still}");

        registry
            .approve("kernel", "p.high", &approve(&bob, "bob"), "appr")
            .await
            .expect("bob approves");
        let active = registry
            .transition("kernel", "p.high", &to("active"), "pub")
            .await
            .expect("two approvals activate");
        assert_eq!(active.state, "active");
    });
}

fn version(version: i64, state: &str) -> VersionRow {
    VersionRow {
        policy_id: "p".into(),
        version,
        document: String::new(),
        state: state.into(),
        canary_percent: 0.0,
        created_by: String::new(),
        created_at: String::new(),
        reason: String::new(),
    }
}

#[test]
fn parse_refuses_what_no_plan_could_use() {
    let body = |v: Value| serde_json::to_vec(&v).unwrap_or_default();
    let e = parse(&body(json!({"to": "active"}))).expect_err("no reason");
    assert!(e.to_string().contains("/reason"), "{e}");
    let e = parse(&body(json!({"to": "canary", "reason": "r"}))).expect_err("no percent");
    assert!(e.to_string().contains("/canaryPercent"), "{e}");
    let e = parse(&body(
        json!({"to": "active", "reason": "r", "canaryPercent": 5}),
    ))
    .expect_err("percent outside canary");
    assert!(e.to_string().contains("only a move to canary"), "{e}");
    let e = parse(&body(json!({"to": "nowhere", "reason": "r"}))).expect_err("state");
    assert!(e.to_string().contains("unknown state"), "{e}");
    let ok = parse(&body(
        json!({"to": "canary", "reason": " r ", "canaryPercent": 12.5}),
    ))
    .expect("valid");
    assert_eq!(
        ok,
        Requested {
            to: State::Canary,
            canary_percent: 12.5,
            reason: "r".into()
        }
    );
}

#[test]
fn plans_supersede_deprecate_and_refuse_backward_moves() {
    let requested = |to: State| Requested {
        to,
        canary_percent: 0.0,
        reason: "why".into(),
    };
    let versions = [version(1, "active"), version(2, "draft")];
    let changes = plan("p", &requested(State::Active), &versions[1], &versions).expect("plan");
    assert_eq!(
        changes,
        vec![
            Change {
                version: 2,
                from: "draft".into(),
                to: State::Active,
                canary_percent: 0.0,
                reason: "why".into()
            },
            Change {
                version: 1,
                from: "active".into(),
                to: State::Deprecated,
                canary_percent: 0.0,
                reason: "superseded by version 2".into()
            },
        ]
    );
    let all = plan("p", &requested(State::Deprecated), &versions[1], &versions).expect("plan");
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|c| c.to == State::Deprecated));
    let back = [version(1, "active")];
    let e = plan("p", &requested(State::Simulating), &back[0], &back).expect_err("backwards");
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
}
