//! Decision records past one machine: sidecars publish to a real NATS
//! JetStream (`nats-server` 2.9 started by the test, TLS with client
//! certificates generated here), two centrals on one PostgreSQL consume
//! through the shared durable consumer. Through a SIGKILL of one central
//! and a restart of the NATS server every record is stored exactly once
//! and every chain verifies; the stream keeps the messages for other
//! readers; a sidecar with a certificate from another CA is refused.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use support::central::*;
use support::nats::{NatsServer, NatsTls};
use support::pki::{Leaf, Pki};
use support::*;

const IDENTITY_FLAGS: [&str; 4] = [
    "--principal-from",
    "header:x-user",
    "--roles-from",
    "header:x-roles",
];

/// Every stored record, through the export.
fn export(client: &reqwest::blocking::Client, central: &Central, query: &str) -> Vec<Value> {
    client
        .get(central.url(&format!("/v1/audit/export{query}")))
        .send()
        .and_then(|r| r.text())
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `count` requests through `envoy` with ids `prefix-N`: every fourth a
/// DELETE the example bundle denies.
fn traffic(envoy: &Envoy, prefix: &str, count: usize) {
    let http = client();
    for i in 0..count {
        let request = if i % 4 == 0 {
            http.delete(envoy.url("/v1/kernels/k1"))
        } else {
            http.get(envoy.url("/v1/kernels"))
        };
        let response = request
            .header("x-request-id", format!("{prefix}-{i}"))
            .header("x-user", "alice")
            .send()
            .expect("Envoy answers");
        let expected = if i % 4 == 0 { 403 } else { 200 };
        assert_eq!(response.status().as_u16(), expected, "{prefix}-{i}");
    }
}

/// A sidecar on the example bundle shipping to `audit_url` as `node`, with
/// `identity` as its client certificate (trusting `ca`), and its Envoy.
fn sidecar(
    world: &World,
    node: &str,
    audit_url: &str,
    identity: &Leaf,
    ca: &Path,
    kernel: &Kernel,
) -> (Sidecar, Envoy) {
    let spool = world.path().join(format!("spool-{node}"));
    let spool = spool.display().to_string();
    let mut flags: Vec<&str> = IDENTITY_FLAGS.to_vec();
    flags.extend(["--audit-url", audit_url, "--spool-dir", &spool]);
    let mut env: Vec<(&str, &Path)> = identity.client_env(ca).to_vec();
    env.push(("POD_NAME", Path::new(node)));
    let sidecar = Sidecar::start_with_env(
        &repo().join("policies"),
        Grpc::tcp(),
        &flags,
        &env,
        world.path(),
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, world.path());
    (sidecar, envoy)
}

/// A central consuming the stream at `url` with `identity` toward NATS.
fn central(world: &World, db: &str, url: &str, identity: &Leaf) -> Central {
    let (cert, key, ca) = (
        identity.cert.display().to_string(),
        identity.key.display().to_string(),
        world.pki.ca_path().display().to_string(),
    );
    Central::start(
        world.path(),
        free_port(),
        db,
        &world.pki,
        &[
            "--decision-stream",
            url,
            "--mtls-cert",
            &cert,
            "--mtls-key",
            &key,
            "--mtls-ca",
            &ca,
            "--ingest-rate-limit",
            "0",
            "--rate-limit",
            "0",
        ],
    )
}

/// Run `work` with a JetStream client of the test's own (as a SIEM or an
/// archiver would attach).
fn with_jetstream<T>(
    url: &str,
    identity: &Leaf,
    ca: &Path,
    work: impl AsyncFnOnce(async_nats::jetstream::Context) -> T,
) -> T {
    sentinelnet::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_client_certificate(identity.cert.clone(), identity.key.clone())
            .add_root_certificates(ca.to_owned())
            .connect(url)
            .await
            .expect("a client connects");
        work(async_nats::jetstream::new(client)).await
    })
}

/// Messages the stream holds.
fn stream_messages(url: &str, identity: &Leaf, ca: &Path) -> u64 {
    with_jetstream(url, identity, ca, async |context| {
        let mut stream = context
            .get_stream("SENTINEL_DECISIONS")
            .await
            .expect("the stream exists");
        stream.info().await.expect("stream info").state.messages
    })
}

/// The shared consumer's (delivered but unacknowledged, redelivered) counts.
/// The shared consumer's messages delivered and not yet acknowledged, and
/// its last delivery's consumer and stream sequences (equal while nothing
/// was delivered twice).
fn consumer_state(url: &str, identity: &Leaf, ca: &Path) -> (usize, u64, u64) {
    with_jetstream(url, identity, ca, async |context| {
        let stream = context
            .get_stream("SENTINEL_DECISIONS")
            .await
            .expect("the stream exists");
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer("sentinel-central")
            .await
            .expect("the consumer exists");
        let info = consumer.get_info().await.expect("consumer info");
        (
            info.num_ack_pending,
            info.delivered.consumer_sequence,
            info.delivered.stream_sequence,
        )
    })
}

#[test]
fn every_record_is_stored_once_through_a_central_crash_and_a_nats_restart() {
    let world = World::new();
    let db = PgDatabase::create();
    let ca = world.pki.ca_path();
    let server = world.pki.issue("nats-server", "nats.local", None);
    let mut nats = NatsServer::start(
        world.path(),
        Some(NatsTls {
            server: &server,
            client_ca: &ca,
        }),
    );
    let url = nats.url("tls");
    let central_identity = world.pki.issue(
        "central-nats",
        "central",
        Some("spiffe://cluster/ns/sentinel/sa/central"),
    );
    let mut central_a = central(&world, &db.url(), &url, &central_identity);
    let central_b = central(&world, &db.url(), &url, &central_identity);
    let reader = caller(Some(&world.publisher), &ca);

    let kernel = Kernel::start();
    let nodes: Vec<(String, Sidecar, Envoy)> = (1..=3)
        .map(|n| {
            let node = format!("node-{n}");
            let (sidecar, envoy) = sidecar(&world, &node, &url, &world.sidecar, &ca, &kernel);
            (node, sidecar, envoy)
        })
        .collect();

    // The first half, stored by both centrals.
    for (node, _, envoy) in &nodes {
        traffic(envoy, &format!("{node}-a"), 500);
    }
    wait_until("the first half stored", Duration::from_secs(60), || {
        export(&reader, &central_b, "").len() >= 1500
    });
    // NATS goes down: the second half waits in the sidecars' spools.
    nats.stop();
    for (node, _, envoy) in &nodes {
        traffic(envoy, &format!("{node}-b"), 500);
    }
    for (node, sidecar, _) in &nodes {
        wait_until(
            &format!("{node} to fail publishing"),
            Duration::from_secs(30),
            || sidecar.status()["audit"]["shipFailures"].as_u64() >= Some(1),
        );
        assert!(
            sidecar.status()["audit"]["unacknowledged"].as_u64() > Some(0),
            "{node}: records wait in the spool"
        );
    }
    // NATS comes back; the backlog floods in, and one central dies without
    // a goodbye while it is being stored.
    nats.start_again();
    wait_until("storing to resume", Duration::from_secs(60), || {
        export(&reader, &central_b, "").len() > 1500
    });
    let _ = central_a.proc.child.kill();
    let _ = central_a.proc.child.wait();

    wait_until("all 3,000 records stored", Duration::from_secs(90), || {
        export(&reader, &central_b, "").len() >= 3000
    });
    let records = export(&reader, &central_b, "");
    let ids: BTreeSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    let request_ids: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["requestId"].as_str())
        .collect();
    assert_eq!(records.len(), 3000, "every record exactly once");
    assert_eq!(ids.len(), 3000);
    assert_eq!(request_ids.len(), 3000, "one record per check");
    let (status, chains) = call(reader.get(central_b.url("/v1/audit/chains")));
    assert_eq!(status, 200);
    let chains = chains["chains"].as_array().cloned().unwrap_or_default();
    assert_eq!(chains.len(), 3, "{chains:?}");
    for chain in &chains {
        assert_eq!(chain["status"], "ok", "{chain}");
        assert_eq!(chain["verifiedThrough"], 999, "{chain}");
    }
    // The stream keeps every record (re-publishes dropped by message id)
    // for any other reader.
    assert_eq!(stream_messages(&url, &central_identity, &ca), 3000);
    for (node, sidecar, _) in &nodes {
        let status = sidecar.status();
        assert_eq!(status["audit"]["unacknowledged"], 0, "{node}: {status}");
        assert!(
            status["audit"]["shipped"].as_u64() >= Some(1000),
            "{node}: {status}"
        );
    }
}

#[test]
fn a_sidecar_with_a_certificate_from_another_ca_is_refused() {
    let world = World::new();
    let db = PgDatabase::create();
    let ca = world.pki.ca_path();
    let server = world.pki.issue("nats-server", "nats.local", None);
    let nats = NatsServer::start(
        world.path(),
        Some(NatsTls {
            server: &server,
            client_ca: &ca,
        }),
    );
    let url = nats.url("tls");
    let central_identity = world.pki.issue("central-nats", "central", None);
    let central = central(&world, &db.url(), &url, &central_identity);
    let reader = caller(Some(&world.publisher), &ca);
    let other_ca = Pki::new(&world.path().join("other-pki"), "other");
    let stranger = other_ca.issue("stranger", "stranger", None);

    let kernel = Kernel::start();
    let (_good, good_envoy) = sidecar(&world, "node-good", &url, &world.sidecar, &ca, &kernel);
    // Trusts the server's CA, but its own certificate is from another one.
    let (bad, bad_envoy) = sidecar(&world, "node-bad", &url, &stranger, &ca, &kernel);
    traffic(&good_envoy, "good", 20);
    traffic(&bad_envoy, "bad", 20);
    wait_until(
        "the good sidecar's records stored",
        Duration::from_secs(30),
        || export(&reader, &central, "?node=node-good").len() == 20,
    );
    wait_until(
        "the refused sidecar to notice",
        Duration::from_secs(30),
        || bad.status()["audit"]["shipFailures"].as_u64() >= Some(1),
    );
    assert!(export(&reader, &central, "?node=node-bad").is_empty());
    let status = bad.status();
    assert_eq!(status["audit"]["shipped"], 0, "{status}");
    assert_eq!(
        status["audit"]["unacknowledged"], 20,
        "the records wait in the spool: {status}"
    );
    assert!(
        nats.log_text().contains("TLS handshake error"),
        "{}",
        nats.log_text()
    );

    // Messages that are no records (one with a NUL, which PostgreSQL's
    // text refuses), and a good record on another node's subject: each
    // quarantined and acknowledged, none delivered twice.
    let stored = export(&reader, &central, "?node=node-good&limit=1");
    let record = stored[0].to_string();
    with_jetstream(&url, &central_identity, &ca, async |context| {
        for (subject, payload) in [
            ("sentinel.decisions.node-good", "not a record".to_owned()),
            ("sentinel.decisions.node-good", "nul\u{0}inside".to_owned()),
            ("sentinel.decisions.intruder", record.clone()),
        ] {
            context
                .publish(subject, payload.into())
                .await
                .expect("publish")
                .await
                .expect("JetStream acknowledges");
        }
    });
    let quarantined = || -> Vec<Value> {
        let (_, body) = call(reader.get(central.url("/v1/audit/quarantine")));
        body["quarantine"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["identity"] == "nats-stream")
            .collect()
    };
    wait_until(
        "three messages quarantined",
        Duration::from_secs(20),
        || quarantined().len() == 3,
    );
    let entries = quarantined();
    assert!(entries.iter().any(|e| e["content"] == "not a record"));
    assert!(entries.iter().any(|e| e["content"] == "nul\u{fffd}inside"));
    assert!(
        entries.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|m| m.contains("arrived on subject \"sentinel.decisions.intruder\""))),
        "{entries:?}"
    );
    wait_until(
        "every message acknowledged",
        Duration::from_secs(20),
        || consumer_state(&url, &central_identity, &ca).0 == 0,
    );
    let (_, consumer_seq, stream_seq) = consumer_state(&url, &central_identity, &ca);
    assert_eq!(consumer_seq, stream_seq, "nothing was delivered twice");
    assert_eq!(stream_seq, 23, "20 records and 3 others");
}
