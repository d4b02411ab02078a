//! Central's ingest throughput: 8 simulated sidecars post realistic batches
//! (500 records of ~1 KB, each with its input, gzip, over mTLS) to a real
//! `sentinelnet central`, with chain verification on; next to it, the same
//! rows inserted raw by the same parse and store code without verification
//! (`sentinelnet::raw_insert_rate`). On SQLite and on PostgreSQL, one run.
//!
//! `stream` (on PostgreSQL): the same records from 8 simulated sidecars
//! through NATS JetStream (a `nats-server` started here, TLS with client
//! certificates, one message per record with its id, every publish of a
//! batch in flight) into one central and into two centrals consuming the
//! shared durable consumer, next to HTTP ingest into one central, each on a
//! fresh database in the same run; timed until central's
//! `sentinel_central_ingested_records_total` says all are stored. Two
//! pairs compare like with like: every sender's work inside the clock (the
//! HTTP sidecars gzip as they post, the stream's publish), or none of it
//! (HTTP bodies gzipped before the clock, the stream filled before central
//! starts and timed from its first stored batch).
//!
//!   cargo build --release --bin sentinelnet --example ingest-bench
//!   target/release/examples/ingest-bench [sqlite] [postgres] [stream]
//!
//! Environment: BATCHES (per sidecar, default 12), SENTINEL_BENCH_POSTGRES
//! (default postgres://postgres@127.0.0.1:5432), SENTINEL_BIN (the central
//! to run, default target/release/sentinelnet).

#[path = "records.rs"]
mod records;

use records::chain;
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
            let chain_id = format!("0193aaaa-0000-7000-8000-{n:012}");
            let mut records = chain(&node, &chain_id);
            (0..batches)
                .map(|_| {
                    records
                        .by_ref()
                        .take(BATCH)
                        .map(|r| format!("{r}\n"))
                        .collect()
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

/// When the simulated sidecars gzip their batches.
#[derive(Clone, Copy, PartialEq)]
enum Gzip {
    /// Before the clock starts: the rate is central's alone.
    Before,
    /// Each sidecar compresses a batch just before posting it, as the
    /// sidecar's HTTP sink does: the machine pays for it in the run, as it
    /// pays for the publishers in the stream rows.
    AsPosted,
}

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text).expect("gzip");
    gz.finish().expect("gzip")
}

/// Post every sidecar's batches concurrently; records/s, the 99th
/// percentile batch latency and the machine's CPU time meanwhile.
fn post_all(tmp: &Path, port: u16, work: &[Vec<String>], when: Gzip) -> (f64, Duration, Duration) {
    let client = dev_client(tmp, "sidecar");
    let url = format!("https://127.0.0.1:{port}/v1/audit/decisions");
    let bodies: Vec<Vec<Vec<u8>>> = work
        .iter()
        .map(|batches| {
            batches
                .iter()
                .map(|text| match when {
                    Gzip::Before => gzip(text.as_bytes()),
                    Gzip::AsPosted => text.as_bytes().to_vec(),
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
        let (started, machine_before) = (Instant::now(), machine_busy());
        let mut tasks = Vec::new();
        for batches in bodies {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for body in batches {
                    let t = Instant::now();
                    let body = match when {
                        Gzip::Before => body,
                        Gzip::AsPosted => tokio::task::spawn_blocking(move || gzip(&body))
                            .await
                            .expect("gzip"),
                    };
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
        (
            records / elapsed.as_secs_f64(),
            p99,
            machine_busy() - machine_before,
        )
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

/// An HTTPS client with the `dev-pki` identity `stem` (`sidecar`, `admin`).
fn dev_client(tmp: &Path, stem: &str) -> reqwest::Client {
    let pki = tmp.join("pki");
    let read = |name: &str| std::fs::read(pki.join(name)).expect("pki file");
    sentinelnet::tls::install_crypto_provider();
    let mut identity = read(&format!("{stem}.crt"));
    identity.push(b'\n');
    identity.extend(read(&format!("{stem}.key")));
    reqwest::Client::builder()
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&read("ca.pem")).expect("ca"))
        .build()
        .expect("client")
}

/// Wait until something listens on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A central on `db`, optionally consuming the stream at `nats`.
fn start_central(bin: &Path, tmp: &Path, db: &str, nats: Option<&str>) -> (Central, u16) {
    let port = free_port();
    let pki = tmp.join("pki");
    let mut command = Command::new(bin);
    command
        .args([
            "central",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--db",
            db,
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
        .arg(tmp.join("keys/central.key"))
        .args(["--rate-limit", "0", "--ingest-rate-limit", "0"])
        .env("SENTINEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = nats {
        command
            .args(["--decision-stream", url])
            .arg("--mtls-cert")
            .arg(pki.join("admin.crt"))
            .arg("--mtls-key")
            .arg(pki.join("admin.key"))
            .arg("--mtls-ca")
            .arg(pki.join("ca.pem"));
    }
    let central = Central(command.spawn().expect("central starts"));
    wait_for_port(port, "central");
    (central, port)
}

/// Records central on `port` has stored (its ingest counter).
async fn stored(client: &reqwest::Client, port: u16) -> u64 {
    let Ok(response) = client
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("sentinel_central_ingested_records_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Publish every record of `work` to JetStream at `url` (8 publishers, each
/// batch's messages in flight together, as the sidecar's sink does) and
/// wait until the centrals on `ports` stored them all: records/s, and the
/// machine's CPU time meanwhile.
fn stream_all(tmp: &Path, url: &str, ports: &[u16], work: &[Vec<String>]) -> (f64, Duration) {
    let pki = tmp.join("pki");
    let metrics_client = dev_client(tmp, "admin");
    let total: u64 = work
        .iter()
        .flatten()
        .map(|b| b.lines().count() as u64)
        .sum();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let connect = || async {
            async_nats::ConnectOptions::new()
                .require_tls(true)
                .add_client_certificate(pki.join("sidecar.crt"), pki.join("sidecar.key"))
                .add_root_certificates(pki.join("ca.pem"))
                .connect(url)
                .await
                .expect("NATS answers")
        };
        let mut before = 0;
        for port in ports {
            before += stored(&metrics_client, *port).await;
        }
        // Messages ready before the clock starts (a sidecar's spool holds
        // the lines; their ids are read the same way by its sink).
        let messages: Vec<Vec<Vec<(String, bytes::Bytes)>>> = work
            .iter()
            .map(|batches| {
                batches
                    .iter()
                    .map(|batch| {
                        batch
                            .lines()
                            .map(|line| {
                                let id = serde_json::from_str::<Value>(line).expect("record")["id"]
                                    .as_str()
                                    .expect("id")
                                    .to_owned();
                                (id, bytes::Bytes::copy_from_slice(line.as_bytes()))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut contexts = Vec::new();
        for _ in 0..messages.len() {
            contexts.push(async_nats::jetstream::new(connect().await));
        }
        let (started, machine_before) = (Instant::now(), machine_busy());
        let mut tasks = Vec::new();
        for (n, (batches, context)) in messages.into_iter().zip(contexts).enumerate() {
            let subject = format!("sentinel.decisions.kernel-{n}");
            tasks.push(tokio::spawn(async move {
                for batch in batches {
                    let mut acks = Vec::with_capacity(BATCH);
                    for (id, payload) in batch {
                        let message = async_nats::jetstream::message::PublishMessage::build()
                            .message_id(id)
                            .payload(payload);
                        acks.push(
                            context
                                .send_publish(subject.clone(), message)
                                .await
                                .expect("publish"),
                        );
                    }
                    for ack in acks {
                        ack.await.expect("JetStream acknowledges");
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("publisher");
        }
        loop {
            if ports.is_empty() {
                // Publish only: done when JetStream acknowledged all.
                break;
            }
            let mut now = 0;
            for port in ports {
                now += stored(&metrics_client, *port).await;
            }
            if now - before >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (
            total as f64 / started.elapsed().as_secs_f64(),
            machine_busy() - machine_before,
        )
    })
}

/// How fast a central drained records waiting for it, and what it cost.
struct Drained {
    rate: f64,
    /// Records counted from the first poll that saw any stored.
    records: u64,
    /// CPU of each watched process over the same span.
    cpu: Vec<Duration>,
    machine: Duration,
}

impl Drained {
    fn per_thousand(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e3 / (self.records as f64 / 1e3)
    }
}

/// Time central on `port` storing records that are already waiting for it
/// until `total` are stored. The clock starts at the first poll that sees
/// any stored, so central's start-up (store, NATS, consumer) is not in it;
/// the records stored before that poll are not counted either.
fn drain(tmp: &Path, port: u16, total: u64, watched: &[&Child]) -> Drained {
    let client = dev_client(tmp, "admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let poll = Duration::from_millis(5);
        let first = loop {
            let now = stored(&client, port).await;
            if now > 0 {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "central stores nothing from the stream"
            );
            tokio::time::sleep(poll).await;
        };
        let (started, machine_before) = (Instant::now(), machine_busy());
        let cpu_before: Vec<Duration> = watched.iter().map(|c| cpu_time(c)).collect();
        while stored(&client, port).await < total {
            assert!(
                Instant::now() < deadline,
                "central did not store every record"
            );
            tokio::time::sleep(poll).await;
        }
        let records = total - first;
        Drained {
            rate: records as f64 / started.elapsed().as_secs_f64(),
            records,
            cpu: watched
                .iter()
                .zip(cpu_before)
                .map(|(c, before)| cpu_time(c) - before)
                .collect(),
            machine: machine_busy() - machine_before,
        }
    })
}

/// A nats-server with JetStream and TLS (clients need a certificate from
/// the dev CA), stopped on drop.
fn start_nats(tmp: &Path) -> (Central, String) {
    let port = free_port();
    let pki = tmp.join("pki");
    let config = tmp.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\ntls {{ cert_file: \"{}\"\n key_file: \"{}\"\n ca_file: \"{}\"\n verify: true }}\n",
            tmp.join("nats-store").display(),
            pki.join("central.crt").display(),
            pki.join("central.key").display(),
            pki.join("ca.pem").display()
        ),
    )
    .expect("nats config");
    let server = Central(
        Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)"),
    );
    wait_for_port(port, "nats-server");
    (server, format!("tls://127.0.0.1:{port}"))
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(child: &Child) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the
    // name (state is 0).
    let field = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// CPU time the whole machine has been busy so far (all cores: user, nice,
/// system, interrupts, steal; not idle or I/O wait), from `/proc/stat`.
/// Across a row it counts PostgreSQL, NATS, the simulated sidecars and
/// everything else the path makes the machine do.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 8 | 9))
        .map(|(_, v)| v)
        .sum();
    Duration::from_millis(busy * 10)
}

/// HTTP ingest vs the stream into one and two centrals, on PostgreSQL.
fn stream_comparison(bin: &Path, tmp: &Path, pg_base: &str, work: &[Vec<String>]) {
    let total = (work.iter().flatten().count() * BATCH) as f64;
    let per_thousand = |cpu: Duration| cpu.as_secs_f64() * 1e3 / (total / 1e3);
    println!("\n| path (PostgreSQL, fresh database each) | records/s | × HTTP ingest | × HTTP, gzip before the clock | central CPU ms / 1k records (all replicas) | nats-server CPU ms / 1k records | machine CPU ms / 1k records |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    // Every row counts what its simulated sidecars make the machine do
    // during the run: publishing for the stream, compressing and posting
    // for HTTP. The row with gzip before the clock is central's rate alone.
    let mut http = [0.0; 2];
    for (slot, when, label) in [
        (0, Gzip::AsPosted, "HTTP ingest, one central"),
        (
            1,
            Gzip::Before,
            "HTTP ingest, one central, gzip before the clock",
        ),
    ] {
        let db = PgDb::create(pg_base, &format!("http{slot}"));
        let (central, port) = start_central(bin, tmp, &db.url(), None);
        let before = cpu_time(&central.0);
        let (rate, _, machine) = post_all(tmp, port, work, when);
        let used = cpu_time(&central.0) - before;
        http[slot] = rate;
        // The second ratio is known from the second row on.
        let against_before = if slot == 1 { "1.00" } else { "" };
        println!(
            "| {label} | {rate:.0} | {:.2} | {against_before} | {:.0} | | {:.0} |",
            rate / http[0],
            per_thousand(used),
            per_thousand(machine)
        );
    }
    let [http, http_before] = http;
    let (_nats, url) = start_nats(tmp);
    {
        // What the publishers and JetStream alone sustain, nobody
        // consuming: the most any consumer can store in this setup.
        create_stream(tmp, &url);
        let nats_before = cpu_time(&_nats.0);
        let (rate, machine) = stream_all(tmp, &url, &[], work);
        println!(
            "| JetStream publish only (no consumer) | {rate:.0} | {:.2} | {:.2} | | {:.0} | {:.0} |",
            rate / http,
            rate / http_before,
            per_thousand(cpu_time(&_nats.0) - nats_before),
            per_thousand(machine)
        );
        // The same records, already in the stream, drained by one central:
        // its rate alone, next to HTTP's with gzip before the clock (no
        // sender works during either).
        let db = PgDb::create(pg_base, "drain");
        let (central, port) = start_central(bin, tmp, &db.url(), Some(&url));
        let drained = drain(tmp, port, total as u64, &[&central.0, &_nats.0]);
        let [central_used, nats_used] = drained.cpu[..] else {
            unreachable!("two processes watched")
        };
        println!(
            "| JetStream filled before the clock, drained by one central | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            drained.rate,
            drained.rate / http,
            drained.rate / http_before,
            drained.per_thousand(central_used),
            drained.per_thousand(nats_used),
            drained.per_thousand(drained.machine)
        );
        drop(central);
        purge_stream(tmp, &url);
    }
    for (label, centrals) in [
        ("JetStream, one central", 1),
        ("JetStream, two centrals", 2),
    ] {
        let db = PgDb::create(pg_base, &format!("stream{centrals}"));
        let running: Vec<(Central, u16)> = (0..centrals)
            .map(|_| start_central(bin, tmp, &db.url(), Some(&url)))
            .collect();
        // The stream and consumer exist once a central has started on them.
        std::thread::sleep(Duration::from_secs(2));
        let ports: Vec<u16> = running.iter().map(|(_, p)| *p).collect();
        let cpu = |running: &[(Central, u16)]| -> Duration {
            running.iter().map(|(c, _)| cpu_time(&c.0)).sum()
        };
        let (central_before, nats_before) = (cpu(&running), cpu_time(&_nats.0));
        let (rate, machine_used) = stream_all(tmp, &url, &ports, work);
        let (central_used, nats_used) = (
            cpu(&running) - central_before,
            cpu_time(&_nats.0) - nats_before,
        );
        println!(
            "| {label} | {rate:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            rate / http,
            rate / http_before,
            per_thousand(central_used),
            per_thousand(nats_used),
            per_thousand(machine_used)
        );
        // The next run starts from an empty stream: a new record set would
        // collide with these ids inside the duplicate window.
        drop(running);
        purge_stream(tmp, &url);
    }
}

/// A JetStream context as `admin`, on a runtime of its own (the client's
/// tasks live there), for the bench's own setup of the stream.
fn admin_jetstream(
    tmp: &Path,
    url: &str,
) -> (tokio::runtime::Runtime, async_nats::jetstream::Context) {
    let pki = tmp.join("pki");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let context = runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_client_certificate(pki.join("admin.crt"), pki.join("admin.key"))
            .add_root_certificates(pki.join("ca.pem"))
            .connect(url)
            .await
            .expect("NATS answers");
        async_nats::jetstream::new(client)
    });
    (runtime, context)
}

/// The stream as central creates it (for the publish-only row).
fn create_stream(tmp: &Path, url: &str) {
    let (runtime, context) = admin_jetstream(tmp, url);
    runtime
        .block_on(
            context.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "SENTINEL_DECISIONS".into(),
                subjects: vec!["sentinel.decisions.>".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            }),
        )
        .expect("stream created");
}

/// Empty the stream and remove the consumer between runs.
fn purge_stream(tmp: &Path, url: &str) {
    let (runtime, context) = admin_jetstream(tmp, url);
    let _ = runtime.block_on(context.delete_stream("SENTINEL_DECISIONS"));
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
    // SENTINEL_BIN: another build's central (a baseline), as for load.py.
    let bin = std::env::var_os("SENTINEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/sentinelnet"));
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
    if stores.iter().any(|s| s == "stream") {
        println!(
            "{SIDECARS} simulated sidecars × {batches} batches × {BATCH} records = {} records",
            SIDECARS * batches * BATCH
        );
        sentinelnet::tls::install_crypto_provider();
        stream_comparison(&bin, tmp.path(), &pg_base, &work);
        if stores.len() == 1 {
            return;
        }
    }
    let bytes: usize = work.iter().flatten().map(String::len).sum();
    let records = SIDECARS * batches * BATCH;
    println!(
        "{SIDECARS} sidecars × {batches} batches × {BATCH} records = {records} records, {:.0} bytes each on average (with input)",
        bytes as f64 / records as f64
    );
    println!("\n| store | ingest via central (mTLS, gzip, dedupe, index, chains) | p99 per batch | raw insert, same store code | ingest ÷ raw |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for store in stores.iter().filter(|s| *s != "stream") {
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
        let (_central, port) = start_central(&bin, tmp.path(), &central_db, None);
        let (ingest_rate, p99, _) = post_all(tmp.path(), port, &work, Gzip::Before);
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
