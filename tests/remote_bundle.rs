//! The sidecar pulling signed bundles from a registry over mTLS
//! (certificates generated here): ETag and long poll, a new revision live
//! within 2 s, the registry down, a restart served from `--bundle-cache`.

mod support;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// A minimal registry: serves the current tarball with its ETag, honours
/// `If-None-Match` and `?wait=` like central does (docs/central-api.md).
#[derive(Default)]
struct Registry {
    current: Mutex<(Vec<u8>, String)>,
    stopping: AtomicBool,
    refused: Arc<AtomicUsize>,
}

async fn get_bundle(
    State(registry): State<Arc<Registry>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let known = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wait = query
        .get("wait")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(0)
        .min(30);
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let (bytes, etag) = registry.current.lock().expect("lock").clone();
        if known.as_deref() != Some(etag.as_str()) {
            return (StatusCode::OK, [("etag", etag)], bytes).into_response();
        }
        if Instant::now() >= deadline || registry.stopping.load(Ordering::SeqCst) {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct RegistryServer {
    port: u16,
    registry: Arc<Registry>,
    server: ServerThread,
}

impl RegistryServer {
    fn start(port: u16, registry: Arc<Registry>, tls: rustls::ServerConfig) -> RegistryServer {
        registry.stopping.store(false, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/v1/bundles/kernel", axum::routing::get(get_bundle))
            .with_state(registry.clone());
        let server = ServerThread::start(port, app, Some((tls, registry.refused.clone())));
        RegistryServer {
            port: server.addr.port(),
            registry,
            server,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/v1/bundles/kernel", self.port)
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        // Release held long polls, then stop.
        self.registry.stopping.store(true, Ordering::SeqCst);
        self.server.stop();
    }
}

/// The example bundle at `revision`, signed with `key`.
fn signed_tarball(dir: &Path, revision: &str, key: &Path) -> Vec<u8> {
    let src = dir.join(format!("src-{revision}"));
    copy_bundle(&repo().join("policies"), &src);
    let manifest = std::fs::read_to_string(src.join("bundle.json")).expect("bundle.json");
    std::fs::write(
        src.join("bundle.json"),
        manifest.replace("\"r1\"", &format!("\"{revision}\"")),
    )
    .expect("write");
    let out = dir.join(format!("{revision}.tar.gz"));
    let status = Command::new(sentinelnet())
        .args(["bundle", "build"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("--sign-key")
        .arg(key)
        .output()
        .expect("build");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read(out).expect("tarball")
}

fn revision(sidecar: &Sidecar) -> String {
    sidecar.status()["bundle"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A PKI with central's server config and a sidecar identity, and a
/// release key whose `.pub` sidecars trust.
struct Fixture {
    pki: support::pki::Pki,
    tls: rustls::ServerConfig,
    client: support::pki::Leaf,
    /// The private key stays with the publisher...
    key: PathBuf,
    /// ...sidecars trust the directory holding its `.pub`.
    keys: PathBuf,
}

impl Fixture {
    fn new(dir: &Path) -> Fixture {
        let pki = support::pki::Pki::new(&dir.join("pki"), "central");
        let server = pki.issue("central", "central.local", None);
        let client = pki.issue(
            "sidecar",
            "kernel-7f9c",
            Some("spiffe://cluster/ns/kernel/sa/sidecar"),
        );
        let tls = sentinelnet::tls::server_config(
            &std::fs::read(&server.cert).expect("cert"),
            &std::fs::read(&server.key).expect("key"),
            Some(pki.ca_pem.as_bytes()),
            sentinelnet::tls::HTTP_ALPN,
        )
        .expect("server config");
        let private = dir.join("private");
        let keygen = Command::new(sentinelnet())
            .args(["keygen", "--out"])
            .arg(&private)
            .args(["--name", "release"])
            .output()
            .expect("keygen");
        assert!(keygen.status.success());
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).expect("mkdir");
        std::fs::copy(private.join("release.pub"), keys.join("release.pub")).expect("copy pub");
        Fixture {
            pki,
            tls,
            client,
            key: private.join("release.key"),
            keys,
        }
    }
}

#[test]
fn a_bundle_over_the_size_cap_is_refused_and_the_active_one_keeps_deciding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::new(dir.path());
    let r1 = signed_tarball(dir.path(), "r1", &fixture.key);
    let cap = r1.len() + 4096;
    let registry = Arc::new(Registry::default());
    *registry.current.lock().expect("lock") = (r1, "\"r1\"".into());
    let central = RegistryServer::start(0, registry.clone(), fixture.tls.clone());
    let url = central.url();
    let ca = fixture.pki.ca_path();
    let env = fixture.client.client_env(&ca);
    let keys_arg = fixture.keys.display().to_string();
    let cap_arg = cap.to_string();
    let flags = [
        "--trusted-keys",
        keys_arg.as_str(),
        "--bundle-max-bytes",
        cap_arg.as_str(),
        "--principal-from",
        "header:x-user",
    ];
    let sidecar = Sidecar::start_with_env(Path::new(&url), Grpc::tcp(), &flags, &env, dir.path());
    assert_eq!(revision(&sidecar), "r1");

    // The registry serves a body four times the cap (it is never unpacked).
    *registry.current.lock().expect("lock") = (vec![0x5a; cap * 4], "\"r2\"".into());
    wait_until(
        "the oversized bundle to be refused",
        Duration::from_secs(5),
        || sidecar.metric("sentinel_bundle_loads_total{result=\"error\"}") >= 1.0,
    );
    let status = sidecar.status();
    let message = status["lastBundleError"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&url) && message.contains("--bundle-max-bytes") && !message.contains('\n'),
        "{message}"
    );
    assert_eq!(revision(&sidecar), "r1", "the active bundle stays");
    let kernel = Kernel::start();
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, dir.path());
    let answer = client()
        .get(envoy.url("/v1/kernels"))
        .header("x-user", "auditor")
        .send()
        .expect("Envoy answers");
    assert_eq!(answer.status().as_u16(), 200, "the sidecar keeps deciding");
    // Refused once, not fetched again in a loop: the long poll goes on with
    // the refused ETag until the registry publishes something else.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sidecar.metric("sentinel_bundle_loads_total{result=\"error\"}"),
        1.0
    );
    *registry.current.lock().expect("lock") = (
        signed_tarball(dir.path(), "r3", &fixture.key),
        "\"r3\"".into(),
    );
    wait_until("r3 after the refusal", Duration::from_secs(5), || {
        revision(&sidecar) == "r3"
    });
}

#[test]
fn sidecar_pulls_signed_bundles_over_mtls_and_survives_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Fixture {
        pki,
        tls,
        client,
        key,
        keys,
    } = Fixture::new(dir.path());
    let tls = || tls.clone();

    let registry = Arc::new(Registry::default());
    *registry.current.lock().expect("lock") =
        (signed_tarball(dir.path(), "r1", &key), "\"r1\"".into());
    let central = RegistryServer::start(0, registry.clone(), tls());
    let port = central.port;
    let url = central.url();
    let cache = dir.path().join("cache.tar.gz");
    let ca = pki.ca_path();
    let env = client.client_env(&ca);
    let cache_arg = cache.display().to_string();
    let keys_arg = keys.display().to_string();
    let flags = [
        "--trusted-keys",
        keys_arg.as_str(),
        "--bundle-cache",
        cache_arg.as_str(),
    ];
    let sidecar = Sidecar::start_with_env(Path::new(&url), Grpc::tcp(), &flags, &env, dir.path());
    let status = sidecar.status();
    assert_eq!(status["bundle"]["revision"], "r1");
    assert_eq!(status["bundle"]["signer"], "release");
    assert_eq!(status["bundle"]["source"], url.as_str());

    // A new revision is enforced within 2 s (the sidecar is in a long poll).
    *registry.current.lock().expect("lock") =
        (signed_tarball(dir.path(), "r2", &key), "\"r2\"".into());
    wait_until("revision r2 within 2 s", Duration::from_secs(2), || {
        revision(&sidecar) == "r2"
    });
    assert!(cache.exists(), "the last good bundle is cached");

    // The registry goes away: decisions go on.
    drop(central);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_get(&sidecar.admin("/readyz")).map(|r| r.0), Some(200));
    assert_eq!(revision(&sidecar), "r2");
    drop(sidecar);

    // Restarted while the registry is down: served from the cache.
    let restarted = Sidecar::start_with_env(Path::new(&url), Grpc::tcp(), &flags, &env, dir.path());
    restarted.assert_serving_cache("r2");
    drop(restarted);

    // No cache and no registry: not ready, and says why.
    let lonely = Sidecar::spawn_with_env(
        Path::new(&url),
        Grpc::tcp(),
        &["--trusted-keys", keys_arg.as_str()],
        &env,
        dir.path(),
    );
    wait_until("a readiness answer", Duration::from_secs(10), || {
        http_get(&lonely.admin("/readyz")).is_some()
    });
    let (code, body) = http_get(&lonely.admin("/readyz")).expect("readyz");
    assert_eq!(code, 503, "{body}");
    drop(lonely);

    // A client certificate from another CA is refused by the registry.
    let central = RegistryServer::start(port, registry.clone(), tls());
    let rogue_pki = support::pki::Pki::new(&dir.path().join("rogue"), "rogue");
    let rogue = rogue_pki.issue("rogue", "kernel-7f9c", None);
    let rogue_env = rogue.client_env(&ca);
    let intruder = Sidecar::spawn_with_env(
        Path::new(&url),
        Grpc::tcp(),
        &["--trusted-keys", keys_arg.as_str()],
        &rogue_env,
        dir.path(),
    );
    wait_until(
        "the handshake to be refused",
        Duration::from_secs(10),
        || registry.refused.load(Ordering::SeqCst) >= 1,
    );
    assert_eq!(http_get(&intruder.admin("/readyz")).map(|r| r.0), Some(503));
    drop((intruder, central));
}
