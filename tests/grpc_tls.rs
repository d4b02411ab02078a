//! TLS on the ext_authz listener (`--grpc-tls-cert/-key`, `--grpc-client-ca`):
//! a real Envoy on `envoy/envoy-mtls.yaml` reaches the sidecar over mutual
//! TLS and gets its decisions; a plaintext caller, a caller without a client
//! certificate and one with a certificate from another CA are refused; a
//! rotated listener certificate is presented on the next connection with no
//! restart, and a file that does not load keeps the previous one, counted.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::pki::{Leaf, Pki};
use support::*;

const IDENTITY_FLAGS: &[&str] = &[
    "--principal-from",
    "header:x-user",
    "--roles-from",
    "header:x-roles",
];

/// A gRPC health check framed for the wire: no flags, length 0 (the
/// process's own status).
const HEALTH_CHECK_FRAME: &[u8] = &[0, 0, 0, 0, 0];
/// Its answer: `HealthCheckResponse { status: SERVING }`, framed.
const SERVING_FRAME: &[u8] = &[0, 0, 0, 0, 2, 8, 1];

/// A gRPC client of the sidecar's listener: TLS trusting `ca` (plain
/// HTTP/2 when `None`), presenting `identity` when given.
fn grpc_client(ca: Option<&Path>, identity: Option<&Leaf>) -> reqwest::blocking::Client {
    sentinelnet::tls::install_crypto_provider();
    let mut builder = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("read CA");
        builder =
            builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("CA bundle"));
    }
    if let Some(leaf) = identity {
        let mut pem = std::fs::read(&leaf.cert).expect("read cert");
        pem.push(b'\n');
        pem.extend(std::fs::read(&leaf.key).expect("read key"));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    builder.build().expect("client")
}

/// A gRPC health check over `client`: the answer's body, or why none came.
fn health(client: &reqwest::blocking::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = client
        .post(format!("{url}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(HEALTH_CHECK_FRAME)
        .send()
        .map_err(|e| format!("{e:?}"))?;
    if response.status() != 200 {
        return Err(format!("HTTP {}", response.status()));
    }
    response
        .bytes()
        .map(|b| b.to_vec())
        .map_err(|e| format!("{e:?}"))
}

/// The files a rotation flips between: one directory per version, with the
/// listener's certificate and key, behind a `current` symlink.
fn version(dir: &Path, name: &str, cert: &[u8], key: &Path) -> PathBuf {
    let version = dir.join(name);
    std::fs::create_dir_all(&version).expect("mkdir");
    std::fs::write(version.join("tls.crt"), cert).expect("write cert");
    std::fs::copy(key, version.join("tls.key")).expect("copy key");
    version
}

#[test]
fn envoy_reaches_the_sidecar_over_mtls_and_other_callers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The directory envoy-mtls.yaml names: ca.pem, envoy.crt, envoy.key.
    let tls = dir.path().join("tls");
    let pki = Pki::new(&tls, "authz");
    std::fs::copy(pki.ca_path(), tls.join("ca.pem")).expect("ca.pem");
    pki.issue(
        "envoy",
        "envoy",
        Some("spiffe://cluster/ns/kernel/sa/envoy"),
    );
    let server = pki.issue("sidecar", "sidecar", None);
    let stranger_ca = Pki::new(&dir.path().join("other"), "stranger");
    let stranger = stranger_ca.issue("stranger", "stranger", None);

    // The listener's files behind a symlink, as a Secret volume holds them.
    let rotated_ca = Pki::new(&dir.path().join("rotated"), "rotated");
    let rotated = rotated_ca.issue("sidecar-rotated", "sidecar", None);
    let one = version(
        dir.path(),
        "v1",
        &std::fs::read(&server.cert).expect("cert"),
        &server.key,
    );
    let two = version(
        dir.path(),
        "v2",
        &std::fs::read(&rotated.cert).expect("cert"),
        &rotated.key,
    );
    let garbage = version(dir.path(), "v3", b"not a certificate", &rotated.key);
    let current = dir.path().join("current");
    flip(&current, &one);

    let kernel = Kernel::start();
    let (cert, key) = (current.join("tls.crt"), current.join("tls.key"));
    let ca = pki.ca_path();
    let mut flags: Vec<&str> = IDENTITY_FLAGS.to_vec();
    let (cert_arg, key_arg, ca_arg) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
    );
    flags.extend([
        "--grpc-tls-cert",
        &cert_arg,
        "--grpc-tls-key",
        &key_arg,
        "--grpc-client-ca",
        &ca_arg,
    ]);
    let sidecar = Sidecar::start(&repo().join("policies"), Grpc::tcp(), &flags, dir.path());
    let Grpc::Tcp(port) = sidecar.grpc else {
        unreachable!("a TCP listener")
    };
    let envoy = Envoy::start_mtls(port, &tls, kernel.port, dir.path());

    // Envoy over mTLS: the example bundle's decisions.
    let http = client();
    let response = http
        .get(envoy.url("/v1/kernels"))
        .header("x-user", "alice")
        .send()
        .expect("Envoy answers");
    assert_eq!(response.status(), 200);
    let response = http
        .delete(envoy.url("/v1/kernels/k"))
        .header("x-user", "alice")
        .send()
        .expect("Envoy answers");
    assert_eq!(response.status(), 403);
    assert_eq!(response.text().expect("body"), "admin role required");

    // Direct callers.
    let https = format!("https://localhost:{port}");
    let envoy_leaf = Leaf {
        cert: tls.join("envoy.crt"),
        key: tls.join("envoy.key"),
    };
    assert_eq!(
        health(&grpc_client(Some(&ca), Some(&envoy_leaf)), &https).as_deref(),
        Ok(SERVING_FRAME),
        "a caller with a certificate from the client CA is served"
    );
    let plain = health(
        &grpc_client(None, None),
        &format!("http://127.0.0.1:{port}"),
    );
    assert!(plain.is_err(), "a plaintext caller is refused: {plain:?}");
    let anonymous = health(&grpc_client(Some(&ca), None), &https);
    assert!(
        anonymous.is_err(),
        "a caller without a certificate is refused: {anonymous:?}"
    );
    let strange = health(&grpc_client(Some(&ca), Some(&stranger)), &https);
    assert!(
        strange.is_err(),
        "a certificate from another CA is refused: {strange:?}"
    );
    assert!(sidecar
        .log_text()
        .contains("refused an ext_authz TLS handshake"));

    // Rotation: the next connection gets the new certificate (a client
    // that trusts only the new CA gets in), no restart.
    flip(&current, &two);
    wait_until(
        "the sidecar to present the rotated certificate",
        Duration::from_secs(15),
        || {
            health(
                &grpc_client(Some(&rotated_ca.ca_path()), Some(&envoy_leaf)),
                &https,
            )
            .is_ok()
        },
    );
    assert!(
        health(&grpc_client(Some(&ca), Some(&envoy_leaf)), &https).is_err(),
        "the old certificate is no longer presented"
    );
    assert_eq!(
        sidecar.metric("sentinel_tls_reloads_total{files=\"listener\",result=\"ok\"}"),
        1.0
    );

    // A file that does not load: counted, logged, the rotated one stays.
    flip(&current, &garbage);
    wait_until(
        "the failed reload to be counted",
        Duration::from_secs(15),
        || sidecar.metric("sentinel_tls_reloads_total{files=\"listener\",result=\"error\"}") >= 1.0,
    );
    assert_eq!(
        health(
            &grpc_client(Some(&rotated_ca.ca_path()), Some(&envoy_leaf)),
            &https
        )
        .as_deref(),
        Ok(SERVING_FRAME)
    );
    assert!(sidecar
        .log_text()
        .contains("still serving with the previous ones"));
}

#[test]
fn grpc_tls_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "authz");
    let server = pki.issue("sidecar", "sidecar", None);
    let bundle = repo().join("policies");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(sentinelnet())
            .arg("serve")
            .arg("--bundle")
            .arg(&bundle)
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(args)
            .env("DEV_SKIP_MTLS", "true")
            .output()
            .expect("sentinelnet runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let cert = server.cert.display().to_string();
    let key = server.key.display().to_string();
    // A key without its certificate.
    let (code, stderr) = run(&["--grpc-tls-key", &key]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--grpc-tls-cert"), "{stderr}");
    // A certificate file that is not one: named, with the flag.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let (code, stderr) = run(&[
        "--grpc-tls-cert",
        &garbage.display().to_string(),
        "--grpc-tls-key",
        &key,
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--grpc-tls-cert"), "{stderr}");
    assert!(stderr.contains("garbage.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A missing client CA file.
    let (code, stderr) = run(&[
        "--grpc-tls-cert",
        &cert,
        "--grpc-tls-key",
        &key,
        "--grpc-client-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("--grpc-client-ca /nonexistent/ca.pem"),
        "{stderr}"
    );
}
