//! Signed bundles: keygen, build --sign-key, bundle verify, sign, and a
//! sidecar with --trusted-keys refusing unsigned and tampered bundles.

mod support;

use sentinelnet::bundle::{pack, BundleFiles, Source};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use support::*;

fn run(args: &[&str]) -> Output {
    Command::new(sentinelnet())
        .args(args)
        .output()
        .expect("sentinelnet runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Keys `old` and `new` in `keys/`, and the example bundle signed with `new`.
fn signed_bundle(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let keys = dir.join("keys");
    for name in ["old", "new"] {
        let out = run(&["keygen", "--out", path(&keys), "--name", name]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let tarball = dir.join("kernel.tar.gz");
    let out = run(&[
        "bundle",
        "build",
        path(&repo().join("policies")),
        "-o",
        path(&tarball),
        "--sign-key",
        path(&keys.join("new.key")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    (keys, tarball)
}

fn write_dir(files: &BundleFiles, dir: &Path) {
    for (name, bytes) in files {
        let target = dir.join(name);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, bytes).expect("write");
    }
}

#[test]
fn build_sign_verify_and_catch_a_tampered_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, tarball) = signed_bundle(dir.path());
    let out = run(&[
        "bundle",
        "verify",
        path(&tarball),
        "--trusted-keys",
        path(&keys),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("signed by new"), "{}", text(&out));

    // Only the old key trusted (rotation finished the other way): refused.
    let old_only = dir.path().join("old-only");
    std::fs::create_dir_all(&old_only).expect("mkdir");
    std::fs::copy(keys.join("old.pub"), old_only.join("old.pub")).expect("copy");
    let out = run(&[
        "bundle",
        "verify",
        path(&tarball),
        "--trusted-keys",
        path(&old_only),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not verify with any trusted key (old)"),
        "{}",
        text(&out)
    );

    // A policy edited after signing is refused, naming the file.
    let mut files = Source::Archive(tarball.clone())
        .read()
        .expect("read tarball");
    let policy = "policies/kernel.delete-needs-admin.json";
    let edited = String::from_utf8_lossy(&files[policy]).replace("\"admin\"", "\"anyone\"");
    files.insert(policy.into(), edited.into_bytes());
    let tampered = dir.path().join("tampered.tar.gz");
    std::fs::write(&tampered, pack(&files).expect("pack")).expect("write");
    let out = run(&[
        "bundle",
        "verify",
        path(&tampered),
        "--trusted-keys",
        path(&keys),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "policies/kernel.delete-needs-admin.json: content does not match its signed SHA-256"
        ),
        "{}",
        text(&out)
    );
}

/// Content that was signed but is no valid bundle (here a policy with an
/// operator that does not exist) is bad input: exit 2, one line on stderr
/// naming the file and the policy. A signature that does not verify stays
/// the command's finding (exit 1, above).
#[test]
fn a_signed_bundle_with_an_invalid_policy_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, tarball) = signed_bundle(dir.path());
    let mut files = Source::Archive(tarball).read().expect("read tarball");
    let policy = "policies/kernel.delete-needs-admin.json";
    let edited = String::from_utf8_lossy(&files[policy]).replacen("\"==\"", "\"frobnicate\"", 1);
    files.insert(policy.into(), edited.into_bytes());
    let key = sentinelnet::keys::KeySource::parse(path(&keys.join("new.key")))
        .expect("key source")
        .open()
        .expect("key opens");
    sentinelnet::bundle::signing::sign_bundle(&mut files, key.as_ref()).expect("signs");
    let resigned = dir.path().join("resigned.tar.gz");
    std::fs::write(&resigned, pack(&files).expect("pack")).expect("write");
    let out = run(&[
        "bundle",
        "verify",
        path(&resigned),
        "--trusted-keys",
        path(&keys),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(policy) && err.contains("kernel.delete-needs-admin"),
        "{err}"
    );
}

#[test]
fn sign_prints_a_signature_that_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    run(&["keygen", "--out", path(&keys), "--name", "approver1"]);
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, br#"{"policy":"p","version":3}"#).expect("write");
    let out = run(&[
        "sign",
        "--key",
        path(&keys.join("approver1.key")),
        path(&manifest),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let signature = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let trusted = sentinelnet::bundle::signing::TrustedKeys::load_dir(&keys).expect("keys");
    assert_eq!(
        trusted.verify(br#"{"policy":"p","version":3}"#, &signature, "approver1"),
        Some("approver1")
    );
    assert_eq!(
        trusted.verify(br#"{"policy":"p","version":4}"#, &signature, "approver1"),
        None
    );
    // Refuses to overwrite an existing key.
    let out = run(&["keygen", "--out", path(&keys), "--name", "approver1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sidecar_with_trusted_keys_refuses_unsigned_and_tampered_bundles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, tarball) = signed_bundle(dir.path());
    let bundle_dir = dir.path().join("live");
    let files = Source::Archive(tarball).read().expect("read");
    write_dir(&files, &bundle_dir);
    let flags = ["--trusted-keys", path(&keys)];
    let sidecar = Sidecar::start(&bundle_dir, Grpc::tcp(), &flags, dir.path());
    let status = sidecar.status();
    assert_eq!(status["bundle"]["signer"], "new");
    assert_eq!(status["bundle"]["revision"], "r1");

    // Edit a policy in place without re-signing: refused, the signed bundle stays.
    let policy = bundle_dir.join("policies/kernel.read-allowed.json");
    let edited = std::fs::read_to_string(&policy)
        .expect("read")
        .replace("\"GET\"", "\"POST\"");
    std::fs::write(&policy, edited).expect("write");
    wait_until(
        "the tampered bundle to be refused",
        Duration::from_secs(10),
        || sidecar.metric(r#"sentinel_bundle_loads_total{result="error"}"#) >= 1.0,
    );
    let status = sidecar.status();
    let message = status["lastBundleError"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with(
            "policies/kernel.read-allowed.json: content does not match its signed SHA-256"
        ),
        "{message}"
    );
    assert_eq!(status["bundle"]["signer"], "new");

    // An unsigned bundle does not start a sidecar that requires signatures.
    let out = run(&[
        "serve",
        "--bundle",
        path(&repo().join("policies")),
        "--trusted-keys",
        path(&keys),
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains(".signatures.json: missing"),
        "{}",
        text(&out)
    );
}
