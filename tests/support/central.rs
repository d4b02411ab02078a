//! `sentinelnet central` for the tests: started with mTLS and certificates
//! generated here, HTTPS clients per role, a fresh PostgreSQL database.

use super::pki::{Leaf, Pki};
use super::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where a test central's store URL comes from.
enum Store<'a> {
    Url(&'a str),
    /// `SENTINEL_CENTRAL_DB_FILE` (and debug logging, to check what is logged).
    EnvFile(&'a Path),
}

/// A running `sentinelnet central` with mTLS.
pub(crate) struct Central {
    pub(crate) port: u16,
    pub(crate) proc: Proc,
    pub(crate) log: PathBuf,
}

impl Central {
    /// A central on a fresh SQLite file (kept in the returned directory).
    pub(crate) fn start_sqlite(world: &World, extra: &[&str]) -> (Central, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = format!("sqlite://{}/central.db", dir.path().display());
        let central = Central::start(world.path(), free_port(), &db, &world.pki, extra);
        (central, dir)
    }

    /// A central on a fresh SQLite file serving the given certificate and key.
    pub(crate) fn start_sqlite_with_tls(
        world: &World,
        cert: &Path,
        key: &Path,
        extra: &[&str],
    ) -> (Central, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = format!("sqlite://{}/central.db", dir.path().display());
        let server = Leaf {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let central = Central::start_with_server(
            world.path(),
            free_port(),
            Store::Url(&db),
            &world.pki,
            &server,
            extra,
        );
        (central, dir)
    }

    /// A central whose store URL comes from a file named by
    /// `SENTINEL_CENTRAL_DB_FILE`, logging at debug level.
    pub(crate) fn start_with_db_file(world: &World, file: &Path) -> Central {
        let server = world.pki.issue("central-server", "central.local", None);
        Central::start_with_server(
            world.path(),
            free_port(),
            Store::EnvFile(file),
            &world.pki,
            &server,
            &[],
        )
    }

    pub(crate) fn start(dir: &Path, port: u16, db: &str, pki: &Pki, extra: &[&str]) -> Central {
        let server = pki.issue("central-server", "central.local", None);
        Central::start_with_server(dir, port, Store::Url(db), pki, &server, extra)
    }

    fn start_with_server(
        dir: &Path,
        port: u16,
        store: Store<'_>,
        pki: &Pki,
        server: &Leaf,
        extra: &[&str],
    ) -> Central {
        let log = dir.join(format!("central-{port}-{}.log", std::process::id()));
        let mut command = Command::new(sentinelnet());
        command
            .arg("central")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .env_remove("SENTINEL_CENTRAL_DB")
            .env_remove("SENTINEL_CENTRAL_DB_FILE");
        match store {
            Store::Url(db) => {
                command.args(["--db", db]);
            }
            Store::EnvFile(file) => {
                command
                    .env("SENTINEL_CENTRAL_DB_FILE", file)
                    .env("SENTINEL_LOG", "debug");
            }
        }
        // A test may bring its own signing key (an HSM's).
        if !extra.contains(&"--signing-key") {
            command
                .arg("--signing-key")
                .arg(dir.join("private/central.key"));
        }
        let child = command
            .arg("--tls-cert")
            .arg(&server.cert)
            .arg("--tls-key")
            .arg(&server.key)
            .arg("--client-ca")
            .arg(pki.ca_path())
            .arg("--rbac")
            .arg(dir.join("rbac.json"))
            .args(extra)
            .env_remove("DEV_SKIP_MTLS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("central starts");
        let central = Central {
            port,
            proc: Proc {
                child,
                name: "central",
            },
            log,
        };
        wait_until("central to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        central
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTPS client presenting `leaf` (or no certificate) and trusting `ca`.
pub(crate) fn caller(leaf: Option<&Leaf>, ca: &Path) -> reqwest::blocking::Client {
    sentinelnet::tls::install_crypto_provider();
    let ca =
        reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).expect("ca")).expect("ca pem");
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only(ca);
    if let Some(leaf) = leaf {
        let mut pem = std::fs::read(&leaf.cert).expect("cert");
        pem.push(b'\n');
        pem.extend(std::fs::read(&leaf.key).expect("key"));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    builder.build().expect("client")
}

/// Send and return (status, JSON body or the text as a JSON string).
pub(crate) fn call(request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let response = request.send().expect("central answers");
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub(crate) fn keygen(dir: &Path, name: &str) {
    let out = Command::new(sentinelnet())
        .args(["keygen", "--out"])
        .arg(dir)
        .args(["--name", name])
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sentinelnet sign --key KEY FILE` over `bytes`, as an approver would.
pub(crate) fn sign(dir: &Path, key: &Path, bytes: &[u8]) -> String {
    let file = dir.join("manifest-to-sign.json");
    std::fs::write(&file, bytes).expect("write manifest");
    let out = Command::new(sentinelnet())
        .args(["sign", "--key"])
        .arg(key)
        .arg(&file)
        .output()
        .expect("sign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

pub(crate) const SIDECAR_ID: &str = "spiffe://cluster/ns/kernel/sa/sidecar";
pub(crate) const PUBLISHER_ID: &str = "spiffe://cluster/ns/ci/sa/publisher";
pub(crate) const APPROVER_ID: &str = "security-oncall";

/// PKI, signing key, trusted key dir, RBAC file.
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pki: Pki,
    pub(crate) sidecar: Leaf,
    pub(crate) publisher: Leaf,
    pub(crate) approver: Leaf,
}

impl World {
    pub(crate) fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"), "kernel");
        let sidecar = pki.issue("sidecar", "kernel-7f9c", Some(SIDECAR_ID));
        let publisher = pki.issue("publisher", "ci", Some(PUBLISHER_ID));
        // No URI SAN: the identity is the CN.
        let approver = pki.issue("approver", APPROVER_ID, None);
        keygen(&dir.path().join("private"), "central");
        let trusted = dir.path().join("trusted");
        std::fs::create_dir_all(&trusted).expect("mkdir");
        std::fs::copy(
            dir.path().join("private/central.pub"),
            trusted.join("central.pub"),
        )
        .expect("copy pub");
        std::fs::write(
            dir.path().join("rbac.json"),
            json!({
                SIDECAR_ID: ["sidecar"],
                PUBLISHER_ID: ["publisher"],
                APPROVER_ID: ["approver"],
            })
            .to_string(),
        )
        .expect("rbac");
        World {
            dir,
            pki,
            sidecar,
            publisher,
            approver,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn as_publisher(&self) -> reqwest::blocking::Client {
        caller(Some(&self.publisher), &self.pki.ca_path())
    }
}

pub(crate) fn central_metric(
    client: &reqwest::blocking::Client,
    central: &Central,
    sample: &str,
) -> f64 {
    let text = client
        .get(central.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    metric_value(&text, sample)
}

/// A fresh PostgreSQL database for one test, dropped afterwards.
pub(crate) struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub(crate) fn create() -> PgDatabase {
        // `.ci/run` makes sure a server is running (installing it from
        // Debian on a fresh machine); there is no skipping when it is not.
        let base = std::env::var("SENTINEL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        // Process, time and a counter: tests of one binary run in parallel,
        // and two of them asked within one clock tick (this VM's clock is
        // coarse) once got the same name.
        static CREATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "sentinel_test_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0),
            CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let db = PgDatabase {
            admin_url: format!("{base}/postgres"),
            name,
        };
        db.run(&format!("CREATE DATABASE {}", db.name));
        db
    }

    pub(crate) fn url(&self) -> String {
        self.admin_url.trim_end_matches("/postgres").to_owned() + "/" + &self.name
    }

    pub(crate) fn run(&self, statement: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&self.admin_url)
                .await
                .unwrap_or_else(|e| {
                    panic!("PostgreSQL at {}: {e} (.ci/run starts one)", self.admin_url)
                });
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        });
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.run(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Seal a hand-made record: its `hash` over its canonical JSON (sorted
/// keys, compact; what serde_json writes for a `Value`).
pub(crate) fn seal(mut record: Value) -> Value {
    if let Some(map) = record.as_object_mut() {
        map.remove("hash");
    }
    let hash = hex::encode(Sha256::digest(record.to_string().as_bytes()));
    record["hash"] = json!(hash);
    record
}

/// A minimal valid record of `node`'s chain `chain` at `seq`.
pub(crate) fn record(node: &str, chain: &str, seq: u64, prev_hash: &str, ts: &str) -> Value {
    seal(json!({
        "type": "policy.decision", "id": format!("{node}-{chain}-{seq}"), "ts": ts,
        "node": node, "chainId": chain, "requestId": format!("req-{seq}"),
        "decision": "allow", "status": 200, "reason": "default",
        "policyId": null, "policyVersion": null, "bundle": "kernel", "bundleRevision": "r1",
        "rationale": "no enforced policy matched", "evidenceRefs": [], "evidence": {},
        "shadow": [], "latencyUs": 1, "seq": seq, "prevHash": prev_hash
    }))
}

pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) fn ndjson(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// Now as RFC 3339 UTC with microseconds, like records carry.
pub(crate) fn rfc3339_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Create `policy` in bundle `kernel` and move it with `transition`
/// (`{"to", "canaryPercent"?, "reason"}`), asserting both succeed.
pub(crate) fn add_policy(
    client: &reqwest::blocking::Client,
    central: &Central,
    policy: &Value,
    transition: &Value,
) {
    let id = policy["id"].as_str().expect("policy id");
    let (status, body) = call(
        client
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(policy),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        client
            .post(central.url(&format!("/v1/bundles/kernel/policies/{id}/transition")))
            .json(transition),
    );
    assert_eq!(status, 200, "{body}");
}
