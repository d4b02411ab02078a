//! Central re-reads its server certificate and key when they change (a
//! Kubernetes Secret update arrives as a symlink flip): new connections get
//! the new certificate with no restart; a file that does not load keeps the
//! previous one in service, logged and counted.

mod support;

use std::path::Path;
use std::time::Duration;
use support::central::*;
use support::pki::Pki;
use support::*;

#[test]
fn a_rotated_server_certificate_is_served_without_a_restart() {
    let world = World::new();
    // The certificate central starts with, from the world's CA, behind
    // symlinks; the one it rotates to, from another CA.
    let first = world.pki.issue("server-one", "central.local", None);
    let other_ca = Pki::new(&world.path().join("pki-two"), "rotated");
    let second = other_ca.issue("server-two", "central.local", None);
    // Like a Secret volume: the files live in a directory that a
    // `current` symlink points at; an update flips the symlink.
    let version = |name: &str, cert: &Path, key: &Path| {
        let dir = world.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(cert, dir.join("tls.crt")).expect("copy cert");
        std::fs::copy(key, dir.join("tls.key")).expect("copy key");
        dir
    };
    let one = version("v1", &first.cert, &first.key);
    let two = version("v2", &second.cert, &second.key);
    let garbage = world.path().join("v3");
    std::fs::create_dir_all(&garbage).expect("mkdir");
    std::fs::write(garbage.join("tls.crt"), "not a certificate").expect("write");
    std::fs::copy(&second.key, garbage.join("tls.key")).expect("copy key");
    let current = world.path().join("current");
    flip(&current, &one);
    let cert = current.join("tls.crt");
    let key = current.join("tls.key");
    let (central, _db) = Central::start_sqlite_with_tls(&world, &cert, &key, &[]);

    // A client that trusts only the new CA (its own certificate still from
    // the world's CA, which central keeps trusting for clients).
    let trusts_new = caller(Some(&world.publisher), &other_ca.ca_path());
    let trusts_old = world.as_publisher();
    assert_eq!(call(trusts_old.get(central.url("/v1/bundles"))).0, 200);
    assert!(
        trusts_new.get(central.url("/v1/bundles")).send().is_err(),
        "the old certificate is not from the new CA"
    );

    flip(&current, &two);
    wait_until(
        "central to serve the rotated certificate",
        Duration::from_secs(15),
        || {
            // A new connection each time (a fresh client).
            let client = caller(Some(&world.publisher), &other_ca.ca_path());
            client
                .get(central.url("/v1/bundles"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        },
    );
    assert!(world
        .as_publisher()
        .get(central.url("/v1/bundles"))
        .send()
        .is_err());

    // A broken file: central keeps the rotated certificate, says why.
    let client = caller(Some(&world.publisher), &other_ca.ca_path());
    let errors = |client: &reqwest::blocking::Client| {
        central_metric(
            client,
            &central,
            "sentinel_central_tls_reloads_total{result=\"error\"}",
        )
    };
    assert_eq!(
        errors(&client),
        0.0,
        "atomic flips never load half an update"
    );
    flip(&current, &garbage);
    wait_until(
        "the failed reload to be counted",
        Duration::from_secs(15),
        || {
            let client = caller(Some(&world.publisher), &other_ca.ca_path());
            errors(&client) >= 1.0
        },
    );
    let client = caller(Some(&world.publisher), &other_ca.ca_path());
    assert_eq!(call(client.get(central.url("/v1/bundles"))).0, 200);
    assert!(
        central_metric(
            &client,
            &central,
            "sentinel_central_tls_reloads_total{result=\"ok\"}"
        ) >= 1.0
    );
    assert!(central
        .log_text()
        .contains("still serving with the previous ones"));
}

/// A sidecar whose client certificate files change presents the new
/// certificate on its next connection to central, without a restart: the
/// fleet shows it under the new identity.
#[test]
fn a_sidecar_presents_its_rotated_client_certificate() {
    let world = World::new();
    let rotated_id = "spiffe://cluster/ns/kernel/sa/sidecar-rotated";
    let rotated = world
        .pki
        .issue("sidecar-rotated", "kernel-rotated", Some(rotated_id));
    std::fs::write(
        world.path().join("rbac.json"),
        serde_json::json!({SIDECAR_ID: ["sidecar"], rotated_id: ["sidecar"], PUBLISHER_ID: ["publisher"]})
            .to_string(),
    )
    .expect("rbac");
    let (central, _db) = Central::start_sqlite(&world, &[]);
    let publisher = world.as_publisher();
    let publish = |id: &str| {
        add_policy(
            &publisher,
            &central,
            &serde_json::json!({"id": id, "version": 1, "severity": "LOW", "state": "draft",
                                "effect": "deny", "when": {"==": [{"var": "request.method"}, "DELETE"]}}),
            &serde_json::json!({"to": "active", "reason": "test"}),
        );
    };
    publish("kernel.one");

    let cert = world.path().join("client.crt");
    let key = world.path().join("client.key");
    flip(&cert, &world.sidecar.cert);
    flip(&key, &world.sidecar.key);
    let ca = world.pki.ca_path();
    let env: Vec<(&str, &Path)> = vec![
        ("KERNEL_MTLS_CERT_PATH", cert.as_path()),
        ("KERNEL_MTLS_KEY_PATH", key.as_path()),
        ("KERNEL_MTLS_CA_PATH", ca.as_path()),
        ("POD_NAME", Path::new("node-r")),
    ];
    let trusted = world.path().join("trusted").display().to_string();
    let bundle_url = central.url("/v1/bundles/kernel");
    let sidecar = Sidecar::start_with_env(
        Path::new(&bundle_url),
        Grpc::tcp(),
        &["--trusted-keys", &trusted],
        &env,
        world.path(),
    );
    let fleet_identities = || -> Vec<String> {
        let (_, fleet) = call(publisher.get(central.url("/v1/fleet")));
        fleet["sidecars"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|s| s["node"] == "node-r")
                    .filter_map(|s| s["identity"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The first pull names no revision; publish once more so the sidecar
    // asks again with If-None-Match and the fleet records it.
    publish("kernel.two");
    wait_until("the sidecar in the fleet", Duration::from_secs(20), || {
        fleet_identities().contains(&SIDECAR_ID.to_owned())
    });

    flip(&cert, &rotated.cert);
    flip(&key, &rotated.key);
    // Wake the long poll: the next pull goes out with the new certificate.
    std::thread::sleep(Duration::from_millis(2500));
    publish("kernel.three");
    wait_until(
        "the sidecar under its rotated identity",
        Duration::from_secs(20),
        || fleet_identities().contains(&rotated_id.to_owned()),
    );
    assert!(sidecar.metric("sentinel_tls_reloads_total{files=\"client\",result=\"ok\"}") >= 1.0);
}
