//! Bundle hot swap: under load through Envoy, with broken bundles, and with
//! the Kubernetes ConfigMap `..data` symlink flip.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

/// The load test saturates this 2-core machine; the ConfigMap test has a
/// 1 s deadline. They take turns.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An allow-everything bundle whose policy stamps its revision on the
/// upstream request, so the upstream shows which bundle decided.
fn revision_policy(revision: &str) -> Value {
    json!({"id": "stamp", "version": 1, "severity": "LOW", "state": "active", "effect": "allow",
           "when": {"starts_with": [{"var": "request.path"}, "/"]},
           "response": {"headers": {"x-bundle-revision": revision}}})
}

/// Write a file the way editors and config managers do: to a temporary name,
/// then rename over the old one.
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

fn write_revision(dir: &Path, revision: &str) {
    replace_file(
        &dir.join("policies/stamp.json"),
        &revision_policy(revision).to_string(),
    );
    replace_file(
        &dir.join("bundle.json"),
        &json!({"name": "swap", "revision": revision, "defaultDecision": "deny"}).to_string(),
    );
}

fn active_revision(sidecar: &Sidecar) -> String {
    sidecar.status()["bundle"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn twelve_swaps_under_load_fail_no_request() {
    let _turn = take_turn();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    write_bundle(&bundle, "swap", "r0", "deny", &[revision_policy("r0")]);
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(&bundle, Grpc::tcp(), &[], dir.path());
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());

    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let seen = Mutex::new(BTreeSet::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let http = client();
                // Bounded: stops when the swaps are done, or after 60 s.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    sent.fetch_add(1, Ordering::Relaxed);
                    match http.get(envoy.url("/v1/kernels")).send() {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let echo: Value = serde_json::from_str(&r.text().unwrap_or_default())
                                .unwrap_or(Value::Null);
                            if let Some(rev) = echo["headers"]["x-bundle-revision"].as_str() {
                                seen.lock().expect("lock").insert(rev.to_owned());
                            }
                        }
                        Ok(r) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("status {}", r.status())),
                        Err(e) => failures.lock().expect("lock").push(e.to_string()),
                    }
                }
            });
        }
        let mut revisions = Vec::new();
        for n in 1..=12 {
            std::thread::sleep(Duration::from_millis(150));
            let revision = format!("r{n}");
            write_revision(&bundle, &revision);
            wait_until(
                &format!("revision {revision} to be active"),
                Duration::from_secs(10),
                || active_revision(&sidecar) == revision,
            );
            revisions.push(revision);
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().expect("lock");
    let sent = sent.into_inner();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sent > 100, "the load generator sent only {sent} requests");
    let seen = seen.into_inner().expect("lock");
    assert!(
        seen.contains("r12"),
        "the last revision decided requests: {seen:?}"
    );
    assert!(
        seen.len() >= 6,
        "requests were decided by several revisions during the run: {seen:?}"
    );
    // r0 and twelve revisions, each loaded at least once. A revision is
    // two file writes here; when a loaded machine spaces them past the
    // watcher's debounce, the first one loads too (a consistent bundle:
    // the new policy with the old bundle.json), so at most two loads per
    // revision.
    let loads = sidecar.metric(r#"sentinel_bundle_loads_total{result="success"}"#);
    assert!(
        (13.0..=25.0).contains(&loads),
        "{loads} successful loads for r0 and twelve revisions"
    );
    assert_eq!(
        sidecar.metric(r#"sentinel_bundle_loads_total{result="error"}"#),
        0.0
    );
    assert_eq!(
        sidecar.metric(r#"sentinel_bundle_info{name="swap",revision="r12"}"#),
        1.0
    );
    drop(kernel);
}

#[test]
fn broken_bundle_is_refused_counted_and_the_old_one_keeps_deciding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    write_bundle(&bundle, "swap", "r1", "deny", &[revision_policy("r1")]);
    let kernel = Kernel::start();
    let sidecar = Sidecar::start(&bundle, Grpc::tcp(), &[], dir.path());
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());

    let mut broken = revision_policy("r2");
    broken["when"] = json!({"and": [true, {"startz_with": [{"var": "request.path"}, "/"]}]});
    replace_file(&bundle.join("policies/stamp.json"), &broken.to_string());
    wait_until(
        "the broken bundle to be refused",
        Duration::from_secs(10),
        || sidecar.metric(r#"sentinel_bundle_loads_total{result="error"}"#) == 1.0,
    );
    let status = sidecar.status();
    let message = status["lastBundleError"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with(
            "policies/stamp.json: policy \"stamp\" at /when/and/1/startz_with: unknown operator"
        ),
        "{message}"
    );
    assert_eq!(status["bundle"]["revision"], "r1");

    let (status_code, body) = http_get(&envoy.url("/v1/kernels")).expect("Envoy answers");
    assert_eq!(status_code, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo");
    assert_eq!(echo["headers"]["x-bundle-revision"], "r1");
    assert!(http_get(&sidecar.admin("/readyz")).is_some_and(|r| r.0 == 200));

    // Fixing it activates the new revision.
    write_revision(&bundle, "r2");
    wait_until("the fixed bundle", Duration::from_secs(10), || {
        active_revision(&sidecar) == "r2"
    });
}

/// Lay a bundle out as the kubelet does for a ConfigMap volume with `items`
/// paths: the files live in a timestamped directory, `..data` points at it,
/// and the visible names are symlinks through `..data`.
fn configmap_revision(root: &Path, stamp: &str, revision: &str) {
    let data = root.join(stamp);
    write_bundle(&data, "cm", revision, "deny", &[revision_policy(revision)]);
}

#[test]
fn configmap_symlink_flip_is_picked_up_within_a_second() {
    let _turn = take_turn();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("mount");
    std::fs::create_dir_all(&root).expect("mkdir");
    configmap_revision(&root, "..2026_11_23_10_00_00.1", "r1");
    std::os::unix::fs::symlink("..2026_11_23_10_00_00.1", root.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/bundle.json", root.join("bundle.json")).expect("symlink");
    std::os::unix::fs::symlink("..data/policies", root.join("policies")).expect("symlink");
    let sidecar = Sidecar::start(&root, Grpc::tcp(), &[], dir.path());
    assert_eq!(active_revision(&sidecar), "r1");

    // The kubelet's update: new directory, new symlink, atomic rename over
    // `..data`, old directory removed.
    configmap_revision(&root, "..2026_11_23_10_05_00.2", "r2");
    std::os::unix::fs::symlink("..2026_11_23_10_05_00.2", root.join("..data_tmp"))
        .expect("symlink");
    let flipped = Instant::now();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("flip");
    std::fs::remove_dir_all(root.join("..2026_11_23_10_00_00.1")).expect("cleanup");
    wait_until("the flipped revision", Duration::from_secs(1), || {
        active_revision(&sidecar) == "r2"
    });
    let took = flipped.elapsed();
    eprintln!("ConfigMap flip picked up after {took:?}");
    assert_eq!(
        sidecar.metric(r#"sentinel_bundle_loads_total{result="error"}"#),
        0.0
    );
}
