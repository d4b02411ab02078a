//! Secrets stay secret: central reads its store URL from a file
//! (`SENTINEL_CENTRAL_DB_FILE`, a mounted Secret), and neither the database
//! password nor a recorded input's values appear in its log, even at
//! debug level.

mod support;

use serde_json::json;
use support::central::*;

/// The URL with a password in it: the one CI set, else a made-up one
/// (the local server trusts loopback connections and ignores it).
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("user@host");
    match userinfo.split_once(':') {
        Some((_, password)) => (url.to_owned(), password.to_owned()),
        None => {
            let password = "s3cr3t-pw-4711";
            (
                format!("{scheme}://{userinfo}:{password}@{host}"),
                password.to_owned(),
            )
        }
    }
}

#[test]
fn the_store_url_comes_from_a_file_and_no_secret_is_logged() {
    let world = World::new();
    let db = PgDatabase::create();
    let (url, password) = with_password(&db.url());
    let file = world.path().join("db-url");
    std::fs::write(&file, format!("{url}\n")).expect("write");
    let central = Central::start_with_db_file(&world, &file);
    let publisher = world.as_publisher();
    let (status, body) = call(
        publisher
            .put(central.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "allow"})),
    );
    assert_eq!(status, 200, "the store works: {body}");
    // A record whose input carries a value that must never be logged.
    let marker = "input-secret-9f3c";
    let mut r = record("node-a", "c1", 0, GENESIS, &rfc3339_now());
    r["input"] = json!({"request": {"headers": {"x-custom-token": marker}}});
    let r = seal(r);
    let sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    let (status, body) = call(
        sidecar
            .post(central.url("/v1/audit/decisions"))
            .body(ndjson(&[r])),
    );
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    let (status, _) = call(sidecar.get(central.url("/v1/decisions?withInput=true")));
    assert_eq!(status, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = central.log_text();
    assert!(log.contains("central: listening"), "{log}");
    assert!(log.contains("***"), "the URL is logged redacted: {log}");
    assert!(!log.contains(&password), "the password leaked into the log");
    assert!(!log.contains(marker), "an input value leaked into the log");
}

#[test]
fn a_db_file_that_cannot_be_read_is_one_line() {
    let out = std::process::Command::new(support::sentinelnet())
        .args([
            "central",
            "--dev-skip-mtls",
            "--signing-key",
            "/nonexistent.key",
        ])
        .env("SENTINEL_CENTRAL_DB_FILE", "/nonexistent/db-url")
        .env_remove("SENTINEL_CENTRAL_DB")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--db-file /nonexistent/db-url"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A sidecar reads its audit URL, credentials and all, from
/// `SENTINEL_AUDIT_URL_FILE`; records arrive; the password is in no log
/// line (debug level) and not in `/v1/status`. Both the variable and its
/// `_FILE` set is refused with one line.
#[test]
fn the_audit_url_comes_from_a_file_and_its_password_is_never_shown() {
    use std::path::Path;
    use std::sync::Arc;
    use support::receiver::{Received, Receiver};
    use support::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let received = Arc::new(Received::default());
    let receiver = Receiver::start(0, received.clone());
    let password = "pw-secret-8812";
    let url = format!(
        "http://audit-writer:{password}@{}/v1/audit/decisions",
        receiver.addr
    );
    let file = dir.path().join("audit-url");
    std::fs::write(&file, format!("{url}\n")).expect("write");
    let env: Vec<(&str, &Path)> = vec![
        ("SENTINEL_AUDIT_URL_FILE", file.as_path()),
        ("DEV_SKIP_MTLS", Path::new("true")),
        ("SENTINEL_LOG", Path::new("debug")),
    ];
    let kernel = Kernel::start();
    let grpc = Grpc::tcp();
    let sidecar = Sidecar::start_with_env(
        &repo().join("policies"),
        grpc.clone(),
        &["--principal-from", "header:x-user"],
        &env,
        dir.path(),
    );
    let envoy = Envoy::start(&grpc, kernel.port, dir.path());
    let response = client()
        .get(envoy.url("/v1/kernels"))
        .header("x-user", "alice")
        .send()
        .expect("Envoy answers");
    assert_eq!(response.status(), 200);
    wait_until(
        "the record at the receiver",
        std::time::Duration::from_secs(10),
        || !received.records().is_empty(),
    );
    let status = sidecar.status().to_string();
    assert!(!status.contains(password), "{status}");
    let log = sidecar.log_text();
    assert!(log.contains("DEBUG"), "the run logged at debug level");
    assert!(!log.contains(password), "the password leaked into the log");

    let out = std::process::Command::new(sentinelnet())
        .args(["serve", "--bundle", "policies"])
        .env("SENTINEL_AUDIT_URL_FILE", &file)
        .env("SENTINEL_AUDIT_URL", "http://elsewhere")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "sentinelnet: SENTINEL_AUDIT_URL_FILE and SENTINEL_AUDIT_URL are both set; set one"
    );
}

/// A signing key given as `SENTINEL_SIGN_KEY_FILE` (a file holding the key
/// setting: a path here, a `pkcs11:` URI with its PIN in a cluster) signs
/// the bundle as `--sign-key` would.
#[test]
fn a_signing_key_setting_comes_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let run = |args: &[&str], env: &[(&str, &std::path::Path)]| {
        let mut command = std::process::Command::new(support::sentinelnet());
        command.args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let out = command.output().expect("sentinelnet runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let keys_arg = keys.to_str().expect("utf-8 path");
    let (code, text) = run(&["keygen", "--out", keys_arg, "--name", "ops"], &[]);
    assert_eq!(code, Some(0), "{text}");
    let setting = dir.path().join("sign-key");
    std::fs::write(&setting, format!("{}\n", keys.join("ops.key").display())).expect("write");
    let tarball = dir.path().join("kernel.tar.gz");
    let policies = support::repo().join("policies");
    let (code, text) = run(
        &[
            "bundle",
            "build",
            policies.to_str().expect("utf-8 path"),
            "-o",
            tarball.to_str().expect("utf-8 path"),
        ],
        &[("SENTINEL_SIGN_KEY_FILE", &setting)],
    );
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(
        &[
            "bundle",
            "verify",
            tarball.to_str().expect("utf-8 path"),
            "--trusted-keys",
            keys_arg,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("signed by ops"), "{text}");
}
