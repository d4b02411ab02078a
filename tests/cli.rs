//! The command line: bad input gives one line naming file, policy and JSON
//! pointer and exits 2; eval, test and bundle build do what docs/settings.md says.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use support::*;

fn run(args: &[&str]) -> Output {
    Command::new(sentinelnet())
        .args(args)
        .env_remove("SENTINEL_BUNDLE")
        .output()
        .expect("sentinelnet runs")
}

/// `run`, killed (and the test failed) if it takes longer than `seconds`:
/// for input that could make a reader wait forever.
fn run_within(args: &[&str], seconds: u64) -> Output {
    run_within_env(args, &[], seconds)
}

fn run_within_env(args: &[&str], env: &[(&str, &str)], seconds: u64) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(sentinelnet())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SENTINEL_BUNDLE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sentinelnet runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while child.try_wait().expect("waits").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still running after {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn good_policy(id: &str) -> Value {
    json!({"id": id, "version": 1, "severity": "LOW", "state": "active", "effect": "deny",
           "when": {"==": [{"var": "request.method"}, "DELETE"]}})
}

/// A bundle with one good policy plus `file` holding `content`; returns the
/// single error line `sentinelnet test` printed.
fn error_for(file: &str, content: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write_bundle(dir.path(), "b", "r1", "deny", &[good_policy("ok.policy")]);
    std::fs::write(dir.path().join(file), content).expect("write");
    let out = run(&["test", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    err.trim_end().to_owned()
}

fn policy_with_when(id: &str, when: Value) -> String {
    let mut p = good_policy(id);
    p["when"] = when;
    p.to_string()
}

#[test]
fn a_repeated_key_is_refused_not_the_last_one_kept() {
    // serde_json alone keeps the last "effect": this policy would allow.
    let text = r#"{"id": "p1", "version": 1, "severity": "LOW", "state": "active",
        "effect": "deny", "effect": "allow", "when": true}"#;
    let e = error_for("policies/p.json", text);
    assert_eq!(
        e,
        "sentinelnet: policies/p.json: invalid JSON: duplicate key \"effect\" at line 2 column 34"
    );
    // A byte-order mark is named, not "expected value at line 1 column 1".
    let e = error_for(
        "policies/bom.json",
        &format!("\u{feff}{}", good_policy("p3")),
    );
    assert_eq!(
        e,
        "sentinelnet: policies/bom.json: invalid JSON: the file starts with a UTF-8 byte-order mark; save it without one"
    );
    // Nested too: two "==" in one object of the rule.
    let nested = r#"{"id": "p2", "version": 1, "severity": "LOW", "state": "active",
        "effect": "deny", "when": {"==": [1, 1], "==": [1, 2]}}"#;
    let e = error_for("policies/q.json", nested);
    assert!(e.contains("duplicate key \"==\" at line 2"), "{e}");
}

#[test]
fn unknown_operator() {
    let e = error_for(
        "policies/p.json",
        &policy_with_when("p1", json!({"or": [false, {"eqals": [1, 1]}]})),
    );
    assert!(e.starts_with("sentinelnet: policies/p.json: policy \"p1\" at /when/or/1/eqals: unknown operator \"eqals\""), "{e}");
}

#[test]
fn wrong_arity() {
    let e = error_for(
        "policies/p.json",
        &policy_with_when("p2", json!({"!": {"==": [1, 2, 3]}})),
    );
    assert_eq!(e, "sentinelnet: policies/p.json: policy \"p2\" at /when/!/==: operator \"==\" takes 2 argument(s), got 3");
}

#[test]
fn bad_regex() {
    let e = error_for(
        "policies/p.json",
        &policy_with_when(
            "p3",
            json!({"matches": [{"var": "request.path"}, "^/v1/(kernels"]}),
        ),
    );
    assert!(e.starts_with("sentinelnet: policies/p.json: policy \"p3\" at /when/matches/1: invalid regex \"^/v1/(kernels\""), "{e}");
}

#[test]
fn bad_cidr() {
    let e = error_for(
        "policies/p.json",
        &policy_with_when(
            "p4",
            json!({"in_cidr": [{"var": "source.address"}, "10.0.0.0/33"]}),
        ),
    );
    assert_eq!(e, "sentinelnet: policies/p.json: policy \"p4\" at /when/in_cidr/1: in_cidr: invalid CIDR \"10.0.0.0/33\"");
}

#[test]
fn duplicate_id() {
    let e = error_for(
        "policies/zz-copy.json",
        &good_policy("ok.policy").to_string(),
    );
    assert_eq!(
        e,
        "sentinelnet: policies/zz-copy.json: policy \"ok.policy\" at /id: duplicate policy id (also in policies/ok.policy.json)"
    );
}

#[test]
fn unknown_field() {
    let mut p = good_policy("p5");
    p["response"] = json!({"status": 403, "bodyy": "typo"});
    let e = error_for("policies/p.json", &p.to_string());
    assert!(
        e.starts_with(
            "sentinelnet: policies/p.json: policy \"p5\" at /response/bodyy: unknown field `bodyy`"
        ),
        "{e}"
    );
}

#[test]
fn invalid_json() {
    let e = error_for("policies/p.json", "{\"id\": \"p6\",\n  \"version\": 1,,\n}");
    assert!(
        e.starts_with("sentinelnet: policies/p.json: invalid JSON: "),
        "{e}"
    );
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn wrong_type_names_the_field() {
    let mut p = good_policy("p7");
    p["severity"] = json!("SEVERE");
    let e = error_for("policies/p.json", &p.to_string());
    assert!(
        e.starts_with(
            "sentinelnet: policies/p.json: policy \"p7\" at /severity: unknown variant `SEVERE`"
        ),
        "{e}"
    );
}

#[test]
fn bad_flags_and_missing_files_exit_2_with_one_line() {
    for args in [
        vec!["serve", "--bundle", "policies", "--grpc-addr", "nonsense"],
        vec!["serve", "--bundle", "policies", "--on-error", "maybe"],
        vec![
            "serve",
            "--bundle",
            "policies",
            "--principal-from",
            "cookie:x",
        ],
        vec!["serve", "--bundle", "/no/such/bundle"],
        vec!["serve", "--no-such-flag"],
        vec!["test", "/no/such/bundle"],
        vec![
            "eval",
            "--bundle",
            "policies",
            "--input",
            "/no/such/input.json",
        ],
    ] {
        let out = Command::new(sentinelnet())
            .args(&args)
            .current_dir(repo())
            .output()
            .expect("runs");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got: {err}");
        assert!(err.starts_with("sentinelnet: "), "{args:?}: {err}");
    }
}

#[test]
fn serve_refuses_an_invalid_initial_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_bundle(dir.path(), "b", "r1", "deny", &[]);
    std::fs::write(
        dir.path().join("policies/x.json"),
        policy_with_when("x", json!({"nope": []})),
    )
    .expect("write");
    let out = run(&[
        "serve",
        "--bundle",
        dir.path().to_str().expect("path"),
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("policies/x.json: policy \"x\" at /when/nope: unknown operator"),
        "{err}"
    );
}

#[test]
fn flags_can_come_from_the_environment() {
    let out = Command::new(sentinelnet())
        .args(["serve"])
        .env("SENTINEL_BUNDLE", "/no/such/bundle/from/env")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/no/such/bundle/from/env"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn client_identity_settings_are_read_from_flags_or_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), &json!({}));
    let eval = |url: &str, env: &[(&str, &str)], flags: &[&str]| {
        let out = Command::new(sentinelnet())
            .args(["eval", "--bundle", url, "--input", &input])
            .args(flags)
            .env_remove("DEV_SKIP_MTLS")
            .env_remove("KERNEL_MTLS_CERT_PATH")
            .env_remove("KERNEL_MTLS_KEY_PATH")
            .envs(env.iter().copied())
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        stderr(&out)
    };
    let plain = "http://127.0.0.1:9/v1/bundles/x";
    // Refused before any connection without the development switch…
    for off in [
        &[][..],
        &[("DEV_SKIP_MTLS", "false")],
        &[("DEV_SKIP_MTLS", "")],
    ] {
        assert!(eval(plain, off, &[]).contains("plain http is refused"));
    }
    // …and with it, from the environment (true or 1) or the flag, the
    // request is attempted (and fails to connect).
    for on in [&[("DEV_SKIP_MTLS", "true")][..], &[("DEV_SKIP_MTLS", "1")]] {
        let e = eval(plain, on, &[]);
        assert!(!e.contains("plain http is refused"), "{e}");
    }
    assert!(!eval(plain, &[], &["--dev-skip-mtls"]).contains("plain http is refused"));
    let e = eval(plain, &[("DEV_SKIP_MTLS", "maybe")], &[]);
    assert!(
        e.contains("--dev-skip-mtls") && e.lines().count() == 1,
        "{e}"
    );
    // An empty identity variable counts as unset, and a set one is used.
    let tls = "https://127.0.0.1:9/v1/bundles/x";
    let e = eval(tls, &[("KERNEL_MTLS_CERT_PATH", "")], &[]);
    assert!(e.contains("https needs a client identity"), "{e}");
    let e = eval(
        tls,
        &[
            ("KERNEL_MTLS_CERT_PATH", "/no/cert.pem"),
            ("KERNEL_MTLS_KEY_PATH", "/no/key.pem"),
        ],
        &[],
    );
    assert!(e.contains("/no/cert.pem: cannot read"), "{e}");
}

fn write_input(dir: &Path, input: &Value) -> String {
    let path = dir.join("input.json");
    std::fs::write(&path, input.to_string()).expect("write input");
    path.to_str().expect("path").to_owned()
}

#[test]
fn eval_prints_the_decision_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(
        dir.path(),
        &json!({"request": {"id": "req-9", "method": "DELETE", "path": "/v1/kernels/k"},
                "principal": {"id": "spiffe://c/ns/a/sa/bob", "roles": ["editor"]}}),
    );
    let bundle = repo().join("policies");
    let out = run(&[
        "eval",
        "--bundle",
        bundle.to_str().expect("path"),
        "--input",
        &input,
        "--explain",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(record["type"], "policy.decision");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["status"], 403);
    assert_eq!(record["requestId"], "req-9");
    assert_eq!(record["policyId"], "kernel.delete-needs-admin");
    assert_eq!(record["policyVersion"], 3);
    assert_eq!(record["bundleRevision"], "r1");
    assert_eq!(
        record["rationale"],
        "kernel.delete-needs-admin matched: Only admins may delete Kernel objects"
    );
    assert_eq!(
        record["evidence"],
        json!({"request.method": "DELETE", "principal.id": "spiffe://c/ns/a/sa/bob"})
    );
    let explain = record["explain"].as_array().expect("explain list");
    let entry = explain
        .iter()
        .find(|e| e["policyId"] == "kernel.purge-draft")
        .expect("draft listed");
    assert_eq!(entry["evaluated"], false);
}

#[test]
fn test_command_reports_each_failure_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_bundle(&repo().join("policies"), dir.path());
    std::fs::write(
        dir.path().join("tests/wrong.json"),
        json!([{"name": "expects the wrong thing", "input": {"request": {"method": "DELETE", "path": "/v1/kernels/k"}},
                "expect": {"decision": "allow", "policyId": "kernel.read-allowed"}}])
        .to_string(),
    )
    .expect("write");
    let out = run(&["test", dir.path().to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL tests/wrong.json: test \"expects the wrong thing\": policy kernel.read-allowed: expected allow by kernel.read-allowed, got deny by kernel.delete-needs-admin"),
        "{stdout}"
    );
    assert!(stdout.contains("12 of 13 policy tests passed"), "{stdout}");
}

#[test]
fn bundle_build_packs_a_tarball_that_loads_and_tests_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_file = dir.path().join("kernel.tar.gz");
    let out = run(&[
        "bundle",
        "build",
        repo().join("policies").to_str().expect("path"),
        "-o",
        out_file.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = std::fs::read(&out_file).expect("tarball written");
    // Deterministic: building again gives the same bytes.
    run(&[
        "bundle",
        "build",
        repo().join("policies").to_str().expect("path"),
        "-o",
        out_file.to_str().expect("path"),
    ]);
    assert_eq!(first, std::fs::read(&out_file).expect("tarball"));
    let out = run(&["test", out_file.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("12 of 12 policy tests passed"));

    // A corrupt tarball is one clear error.
    std::fs::write(&out_file, &first[..first.len() / 2]).expect("truncate");
    let out = run(&["test", out_file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("kernel.tar.gz"), "{}", stderr(&out));
}

#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"request": {"method": "DELETE", "path": "/x"}}"#).expect("input");
    let mut child = Command::new(sentinelnet())
        .args(["eval", "--bundle", "policies", "--explain", "--input"])
        .arg(&input)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // The reader is gone before eval writes a byte (`eval … | head -c0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "a panic: {err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE, as `cat` would be: {:?}",
        out.status
    );
}

#[test]
fn a_bundle_file_that_is_no_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_bundle(dir.path(), "b", "r1", "deny", &[good_policy("ok.policy")]);
    let policies = dir.path().join("policies");
    // A named pipe would block the reader for good; /dev/zero never ends.
    let fifo = policies.join("pipe.json");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", policies.join("zero.json")).expect("symlink");
    for (name, keep) in [("pipe.json", "zero.json"), ("zero.json", "pipe.json")] {
        // One special file at a time, so the error is about it.
        let aside = dir.path().join(keep);
        std::fs::rename(policies.join(keep), &aside).expect("set aside");
        let out = run_within(&["test", dir.path().to_str().expect("utf-8 path")], 20);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        let path = policies.join(name);
        assert_eq!(
            err.trim_end(),
            format!("sentinelnet: {}: not a regular file", path.display()),
        );
        std::fs::rename(&aside, policies.join(keep)).expect("put back");
    }
    // A directory without bundle.json: the error names where it looked.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run(&["test", empty.path().to_str().expect("utf-8 path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: cannot read",
            empty.path().join("bundle.json").display()
        )),
        "{err}"
    );
}

#[test]
fn central_names_why_its_store_cannot_be_opened_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_db = dir.path().join("notdb");
    std::fs::write(&not_a_db, vec![0x5a; 4096]).expect("write");
    let keys = dir.path().join("keys");
    let made = run(&[
        "keygen",
        "--out",
        keys.to_str().expect("utf-8"),
        "--name",
        "central",
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let key = keys.join("central.key");
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    for (db, cause) in [
        (
            format!("sqlite://{}", not_a_db.display()),
            "file is not a database",
        ),
        (
            format!("postgres://postgres@127.0.0.1:{closed_port}/x"),
            "Connection refused",
        ),
    ] {
        let started = std::time::Instant::now();
        let out = run_within_env(
            &[
                "central",
                "--addr",
                "127.0.0.1:0",
                "--db",
                &db,
                "--signing-key",
                key.to_str().expect("utf-8"),
            ],
            &[("DEV_SKIP_MTLS", "true"), ("SENTINEL_LOG", "error")],
            20,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{db}: {err}");
        assert_eq!(err.lines().count(), 1, "{db}: one line: {err}");
        assert!(err.contains(cause), "{db}: {err}");
        // Not after a pool's retries (10 s and a line per attempt).
        assert!(
            started.elapsed().as_secs() < 5,
            "{db}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_bundle_directory_without_policies_is_refused_not_loaded_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_bundle(dir.path(), "b", "r1", "allow", &[good_policy("ok.policy")]);
    std::fs::remove_dir_all(dir.path().join("policies")).expect("rm");
    let out = run(&["test", dir.path().to_str().expect("utf-8 path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "sentinelnet: {}: missing: a bundle keeps its policies in policies/ (an empty directory for none)",
            dir.path().join("policies").display()
        )
    );
    // An empty policies/ is a bundle of no policies, on purpose.
    std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
    let out = run(&["test", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
