//! Central's limits against a real central over mTLS: per-identity rate
//! limits (429 with Retry-After, counted per identity, a separate budget
//! for record batches and bundle polls) and body limits (413).

mod support;

use serde_json::json;
use std::time::Duration;
use support::central::*;

#[test]
fn rates_and_bodies_are_limited_per_identity() {
    let world = World::new();
    let (central, _db) = Central::start_sqlite(
        &world,
        &[
            "--rate-limit",
            "1",
            "--ingest-rate-limit",
            "3",
            "--max-body",
            "1MiB",
        ],
    );
    let ca = world.pki.ca_path();
    let publisher = world.as_publisher();
    let approver = caller(Some(&world.approver), &ca);
    let sidecar = caller(Some(&world.sidecar), &ca);

    // A burst of twice the rate, then 429 with Retry-After.
    let mut limited_seen = 0;
    let first: Vec<u16> = (0..2)
        .map(|_| call(publisher.get(central.url("/v1/bundles"))).0)
        .collect();
    assert_eq!(first, [200, 200]);
    let response = publisher
        .get(central.url("/v1/bundles"))
        .send()
        .expect("central answers");
    assert_eq!(response.status().as_u16(), 429);
    limited_seen += 1;
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert_eq!(retry, 1, "one token a second");
    let body: serde_json::Value = response.json().expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(PUBLISHER_ID)),
        "{body}"
    );
    // Another identity has its own budget; so has record shipping.
    assert_eq!(call(approver.get(central.url("/v1/bundles"))).0, 200);
    for seq in 0..6u64 {
        let r = record("node-a", "c1", seq, GENESIS, &rfc3339_now());
        let (status, _) = call(
            sidecar
                .post(central.url("/v1/audit/decisions"))
                .body(ndjson(&[r])),
        );
        assert_eq!(status, 200, "ingest budget: 6 = twice 3");
    }
    // Waiting as told works again.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(call(publisher.get(central.url("/v1/bundles"))).0, 200);
    let limited = central_metric(
        &approver,
        &central,
        &format!("sentinel_central_rate_limited_total{{identity=\"{PUBLISHER_ID}\"}}"),
    );
    assert_eq!(limited, f64::from(limited_seen));

    // Bodies: a batch over --max-body (one within it is read), a policy
    // over 1 MiB.
    std::thread::sleep(Duration::from_secs(1));
    let (status, _) = call(
        sidecar
            .post(central.url("/v1/audit/decisions"))
            .body("x".repeat(900 << 10)),
    );
    assert_eq!(
        status, 200,
        "a batch under the limit is read (its line quarantined)"
    );
    let big = "x".repeat(3 << 19);
    let (status, body) = call(sidecar.post(central.url("/v1/audit/decisions")).body(big));
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let huge = json!({"id": "p", "description": "y".repeat(1 << 20)});
    let (status, body) = call(
        approver
            .post(central.url("/v1/bundles/kernel/policies"))
            .json(&huge),
    );
    assert_eq!(status, 413, "{body}");
}

/// Slow clients are cut off and the connection cap holds (plain HTTP with
/// DEV_SKIP_MTLS, the same server loop as with mTLS).
#[test]
fn slow_clients_time_out_and_connections_are_capped() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let world = World::new();
    let port = support::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("central.log");
    let child = std::process::Command::new(support::sentinelnet())
        .args(["central", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(format!("sqlite://{}/central.db", dir.path().display()))
        .arg("--signing-key")
        .arg(world.path().join("private/central.key"))
        .args(["--max-connections", "2", "--header-timeout", "1s"])
        .env("DEV_SKIP_MTLS", "true")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("central starts");
    let _central = support::Proc {
        child,
        name: "central",
    };
    support::wait_until("central to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Give the probes of wait_until time to be closed by the server.
    std::thread::sleep(Duration::from_millis(1500));
    let closed_within = |stream: &mut TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).expect("read timeout");
        let started = Instant::now();
        let mut buffer = [0u8; 512];
        let mut answer = Vec::new();
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return Some((started.elapsed(), answer)),
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                // Still open when the read timed out.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                // Reset: closed with our bytes unread.
                Err(_) => return Some((started.elapsed(), answer)),
            }
        }
    };

    // Headers that never finish: cut off after --header-timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: central\r\nX-Slow: ")
        .expect("write");
    let (after, _) = closed_within(&mut slow, Duration::from_secs(5)).expect("closed by central");
    assert!(after < Duration::from_secs(4), "{after:?}");

    // Two idle connections fill the cap: a third is closed at once.
    let first = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let second = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: central\r\n\r\n")
        .ok();
    let (_, answer) = closed_within(&mut third, Duration::from_secs(5)).expect("closed");
    assert!(
        answer.is_empty(),
        "no answer over the cap: {}",
        String::from_utf8_lossy(&answer)
    );
    // The two idle ones never started a request: closed after the header
    // timeout too, which makes room again.
    let (mut first, mut second) = (first, second);
    assert!(
        closed_within(&mut first, Duration::from_secs(5)).is_some(),
        "idle closed"
    );
    assert!(
        closed_within(&mut second, Duration::from_secs(5)).is_some(),
        "idle closed"
    );
    let mut text = String::new();
    support::wait_until("the refusal counted", Duration::from_secs(5), || {
        let Ok(mut ok) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        if ok
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: central\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let Some((_, answer)) = closed_within(&mut ok, Duration::from_secs(5)) else {
            return false;
        };
        text = String::from_utf8_lossy(&answer).into_owned();
        text.starts_with("HTTP/1.1 200")
    });
    assert!(
        text.contains("sentinel_central_refusals_total{reason=\"connections\"} 1"),
        "{text}"
    );
}

/// A body that counts how much of it was read, handing out 64 KiB at a
/// time up to `total` bytes.
struct CountedBody {
    left: usize,
    read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::io::Read for CountedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left).min(64 << 10);
        buf[..n].fill(b' ');
        self.left -= n;
        let before = self.read.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        // 25 ms per 128 KiB (~5 MB/s): a central that answers at once has
        // ~0.75 s before a quarter of the body is out, even on a loaded
        // machine; a whole body still goes in ~3 s.
        if (before + n) >> 17 != before >> 17 {
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(n)
    }
}

/// An identity the RBAC file does not know is refused before central reads
/// its body: a 15 MiB batch from it is cut off after a small part was sent
/// (the client sees the 403 or, still writing, a closed stream), while a
/// known sidecar's batch of the same size is read to its end.
#[test]
fn unknown_identities_are_refused_before_their_body_is_read() {
    let world = World::new();
    let (central, _db) =
        Central::start_sqlite(&world, &["--rate-limit", "0", "--ingest-rate-limit", "0"]);
    let stranger_id = "spiffe://cluster/ns/x/sa/stranger";
    let stranger = world.pki.issue("stranger", "stranger", Some(stranger_id));
    let total = 15 << 20;
    let post = |leaf: &support::pki::Leaf| {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let body = CountedBody {
            left: total,
            read: read.clone(),
        };
        let answer = caller(Some(leaf), &world.pki.ca_path())
            .post(central.url("/v1/audit/decisions"))
            .header("content-type", "application/x-ndjson")
            .body(reqwest::blocking::Body::sized(body, total as u64))
            .send()
            .map(|r| r.status().as_u16());
        (answer, read.load(std::sync::atomic::Ordering::SeqCst))
    };
    let (answer, sent) = post(&stranger);
    assert!(matches!(answer, Ok(403)) || answer.is_err(), "{answer:?}");
    assert!(
        sent < total / 4,
        "central stopped the stranger after {sent} of {total} bytes"
    );
    assert!(central.log_text().contains(stranger_id));
    // The answer itself, for a body small enough to be sent whole.
    let (status, body) = call(
        caller(Some(&stranger), &world.pki.ca_path())
            .post(central.url("/v1/audit/decisions"))
            .body("{}\n"),
    );
    assert_eq!(status, 403);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not in the RBAC file")),
        "{body}"
    );
    // A known sidecar's body is read to its end (blank lines store nothing).
    let (answer, sent) = post(&world.sidecar);
    assert_eq!(answer.as_ref().ok(), Some(&200), "{answer:?}");
    assert_eq!(sent, total);
}
