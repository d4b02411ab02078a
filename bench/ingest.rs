//! Central's ingest throughput: 8 simulated sidecars post realistic batches
//! (500 records of ~1 KB, each with its input, gzip, over mTLS) to a real
//! `sentinelnet central`, with chain verification on; next to it, the same
//! rows inserted raw by the same parse and store code without verification
//! (`sentinelnet::raw_insert_rate`). On SQLite and on PostgreSQL, one run.
//!
//!   cargo build --release --bin sentinelnet --example ingest-bench
//!   target/release/examples/ingest-bench [sqlite] [postgres]
//!
//! Environment: BATCHES (per sidecar, default 12), SENTINEL_BENCH_POSTGRES
//! (default postgres://postgres@127.0.0.1:5432).

#[path = "records.rs"]
mod records;

use records::{record, GENESIS};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIDECARS: usize = 8;
const BATCH: usize = 500;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Per sidecar, its batches as NDJSON, chained.
fn workload(batches: usize) -> Vec<Vec<String>> {
    (0..SIDECARS)
        .map(|n| {
            let node = format!("kernel-{n}");
            let chain = format!("0193aaaa-0000-7000-8000-{n:012}");
            let mut prev = GENESIS.to_owned();
            (0..batches)
                .map(|b| {
                    let mut text = String::new();
                    for i in 0..BATCH {
                        let r = record(&node, &chain, (b * BATCH + i) as u64, &prev);
                        prev = r["hash"].as_str().unwrap_or_default().to_owned();
                        text.push_str(&r.to_string());
                        text.push('\n');
                    }
                    text
                })
                .collect()
        })
        .collect()
}

fn run(bin: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("sentinelnet runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Central(Child);

impl Drop for Central {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Post every sidecar's batches concurrently; records/s and the 99th
/// percentile batch latency.
fn post_all(tmp: &Path, port: u16, work: &[Vec<String>]) -> (f64, Duration) {
    let pki = tmp.join("pki");
    let read = |name: &str| std::fs::read(pki.join(name)).expect("pki file");
    sentinelnet::tls::install_crypto_provider();
    let mut identity = read("sidecar.crt");
    identity.push(b'\n');
    identity.extend(read("sidecar.key"));
    let client = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&read("ca.pem")).expect("ca"))
        .build()
        .expect("client");
    let url = format!("https://127.0.0.1:{port}/v1/audit/decisions");
    let bodies: Vec<Vec<Vec<u8>>> = work
        .iter()
        .map(|batches| {
            batches
                .iter()
                .map(|text| {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(text.as_bytes()).expect("gzip");
                    gz.finish().expect("gzip")
                })
                .collect()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for batches in bodies {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for body in batches {
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .header("content-encoding", "gzip")
                        .body(body)
                        .send()
                        .await
                        .expect("central answers");
                    let status = response.status();
                    let report: Value = response.json().await.expect("JSON answer");
                    assert!(
                        status.is_success() && report["accepted"] == BATCH,
                        "{status} {report}"
                    );
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("task"));
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
        let records = (latencies.len() * BATCH) as f64;
        (records / elapsed.as_secs_f64(), p99)
    })
}

/// A fresh PostgreSQL database; dropped by the returned guard.
struct PgDb {
    base: String,
    name: String,
}

impl PgDb {
    fn create(base: &str, tag: &str) -> PgDb {
        let db = PgDb {
            base: base.to_owned(),
            name: format!("sentinel_bench_{tag}_{}", std::process::id()),
        };
        db.run(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }

    fn run(&self, statement: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", self.base))
                .await
                .expect("PostgreSQL answers");
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .expect("statement");
        });
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        self.run(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn main() {
    let stores: Vec<String> = std::env::args().skip(1).collect();
    let stores = if stores.is_empty() {
        vec!["sqlite".to_owned(), "postgres".to_owned()]
    } else {
        stores
    };
    let batches: usize = std::env::var("BATCHES")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(12);
    let pg_base = std::env::var("SENTINEL_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let bin = root().join("target/release/sentinelnet");
    let tmp = tempfile::tempdir().expect("tempdir");
    run(
        &bin,
        &[
            "dev-pki",
            "--out",
            &tmp.path().join("pki").display().to_string(),
        ],
    );
    run(
        &bin,
        &[
            "keygen",
            "--out",
            &tmp.path().join("keys").display().to_string(),
            "--name",
            "central",
        ],
    );
    let work = workload(batches);
    let bytes: usize = work.iter().flatten().map(String::len).sum();
    let records = SIDECARS * batches * BATCH;
    println!(
        "{SIDECARS} sidecars × {batches} batches × {BATCH} records = {records} records, {:.0} bytes each on average (with input)",
        bytes as f64 / records as f64
    );
    println!("\n| store | ingest via central (mTLS, gzip, dedupe, index, chains) | p99 per batch | raw insert, same store code | ingest ÷ raw |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for store in &stores {
        let mut guards = Vec::new();
        let mut db_url = |tag: &str| -> String {
            if store == "postgres" {
                let db = PgDb::create(&pg_base, tag);
                let url = db.url();
                guards.push(db);
                url
            } else {
                format!(
                    "sqlite://{}",
                    tmp.path().join(format!("{tag}.db")).display()
                )
            }
        };
        let central_db = db_url("central");
        let raw_db = db_url("raw");
        let port = free_port();
        let pki = tmp.path().join("pki");
        let _central = Central(
            Command::new(&bin)
                .args([
                    "central",
                    "--addr",
                    &format!("127.0.0.1:{port}"),
                    "--db",
                    &central_db,
                ])
                .arg("--tls-cert")
                .arg(pki.join("central.crt"))
                .arg("--tls-key")
                .arg(pki.join("central.key"))
                .arg("--client-ca")
                .arg(pki.join("ca.pem"))
                .arg("--rbac")
                .arg(pki.join("rbac.json"))
                .arg("--signing-key")
                .arg(tmp.path().join("keys/central.key"))
                .env("SENTINEL_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("central starts"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "central did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (ingest_rate, p99) = post_all(tmp.path(), port, &work);
        let all: Vec<String> = work.iter().flatten().cloned().collect();
        let (inserted, took) =
            sentinelnet::raw_insert_rate(&raw_db, all, SIDECARS).expect("raw inserts");
        assert_eq!(inserted, records);
        let raw_rate = inserted as f64 / took.as_secs_f64();
        println!(
            "| {store} | {ingest_rate:.0} records/s | {:.0} ms | {raw_rate:.0} records/s | {:.2} |",
            p99.as_secs_f64() * 1000.0,
            ingest_rate / raw_rate
        );
    }
}
