//! Keys in an HSM (SoftHSM2, a token initialised here) and signed decision
//! records: `keygen --pkcs11` writes only the public key; `sign`, central's
//! bundle signing and the sidecar's record checkpoints use the token key;
//! each PKCS#11 failure is one line at start; a sidecar signing records
//! ships to central, whose chain is sealed through its last record after
//! SIGTERM, and `audit verify --trusted-keys` accepts central's export and
//! rejects altered or foreign signatures and content edited under one.

mod support;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sentinelnet::keys::TrustedKeys;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use support::central::*;
use support::hsm::{self, Token};
use support::*;

fn run(args: &[&str]) -> Output {
    Command::new(sentinelnet())
        .args(args)
        .output()
        .expect("sentinelnet runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `out` failed with exit 2 and exactly one line on stderr containing `needle`.
fn one_line_error(out: &Output, needle: &str) -> String {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not: {text}");
    assert!(lines[0].contains(needle), "{needle:?} not in: {text}");
    assert!(!text.contains("panicked"), "{text}");
    lines[0].to_owned()
}

/// What the token itself says about a private key: (sensitive, extractable).
fn private_key_flags(token: &Token, label: &str) -> (bool, bool) {
    let pkcs11 = Pkcs11::new(hsm::module()).expect("module loads");
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .is_ok_and(|i| i.label() == token.label)
        })
        .expect("the token");
    let session = pkcs11.open_ro_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from(hsm::PIN.to_owned())))
        .expect("login");
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("find");
    assert_eq!(found.len(), 1, "one private key labelled {label}");
    let attributes = session
        .get_attributes(
            found[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .expect("attributes");
    let mut flags = (false, true);
    for attribute in attributes {
        match attribute {
            Attribute::Sensitive(s) => flags.0 = s,
            Attribute::Extractable(e) => flags.1 = e,
            _ => {}
        }
    }
    // The key material itself cannot be read out.
    assert!(
        !session
            .get_attributes(found[0], &[AttributeType::Value])
            .expect("query")
            .iter()
            .any(|a| matches!(a, Attribute::Value(_))),
        "the private key's value must not be readable"
    );
    flags
}

#[test]
fn token_keys_sign_and_every_pkcs11_failure_is_one_line_at_start() {
    let token = Token::new("modes");
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    token.keygen("approver", &keys);
    // Only the public key is written; the private key is in the token,
    // sensitive and not extractable.
    let written: Vec<String> = std::fs::read_dir(&keys)
        .expect("keys dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(written, vec!["approver.pub".to_owned()]);
    assert_eq!(private_key_flags(&token, "approver"), (true, false));

    // `sign` with the token key, PIN inline and from a file, verifies
    // against the written public key.
    let message = dir.path().join("manifest.json");
    std::fs::write(&message, br#"{"policyId":"p","version":1}"#).expect("write");
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{}\n", hsm::PIN)).expect("pin file");
    let trusted = TrustedKeys::load_dir(&keys).expect("trusted");
    for uri in [
        token.uri("approver"),
        token.uri_with_pin_file("approver", &pin_file),
    ] {
        let out = run(&["sign", "--key", &uri, path(&message)]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let signature = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let bytes = std::fs::read(&message).expect("read");
        assert_eq!(
            trusted.verify_by("approver", &bytes, &signature),
            Some(true)
        );
    }

    // `bundle build --sign-key` with the token key: the bundle verifies
    // against the public half.
    let tarball = dir.path().join("kernel.tar.gz");
    let out = run(&[
        "bundle",
        "build",
        path(&repo().join("policies")),
        "-o",
        path(&tarball),
        "--sign-key",
        &token.uri("approver"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&[
        "bundle",
        "verify",
        path(&tarball),
        "--trusted-keys",
        path(&keys),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("approver"));

    // Each failure mode: its own line, exit 2, for every command that
    // opens a key.
    let module = hsm::module();
    let module = path(&module);
    let label = &token.label;
    let cases = [
        (
            format!("pkcs11:token={label};object=approver?module-path={module}&pin-value=0000"),
            "wrong PIN",
        ),
        (
            format!("pkcs11:token=no-such-token;object=approver?module-path={module}&pin-value=1"),
            "no token \"no-such-token\"",
        ),
        (
            format!("pkcs11:token={label};object=nobody?module-path={module}&pin-value={}", hsm::PIN),
            "has no private key with object=\"nobody\"",
        ),
        (
            format!("pkcs11:token={label};object=approver?module-path=/nonexistent/libp11.so&pin-value=1"),
            "cannot load the PKCS#11 module /nonexistent/libp11.so",
        ),
        (
            format!("pkcs11:token={label};object=approver?module-path={module}&pin-source=file:/nonexistent/pin"),
            "cannot read the PIN file",
        ),
        (
            format!("pkcs11:token={label};object=approver?module-path={module}"),
            "needs a PIN",
        ),
        (
            format!("pkcs11:token={label};objct=approver?module-path={module}"),
            "unknown path attribute \"objct\"",
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (uri, needle) in &cases {
        let line = one_line_error(&run(&["sign", "--key", uri, path(&message)]), needle);
        assert!(
            !line.contains(hsm::PIN) && !line.contains("pin-value=0000"),
            "the PIN is never printed: {line}"
        );
        seen.insert(line);
    }
    assert_eq!(seen.len(), cases.len(), "each failure has its own message");

    // The sidecar and central refuse to start, naming the flag.
    let (wrong_pin, _) = &cases[0];
    let bundle = repo().join("policies");
    let out = Command::new(sentinelnet())
        .args([
            "serve",
            "--bundle",
            path(&bundle),
            "--record-signing-key",
            wrong_pin,
        ])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
        .env("DEV_SKIP_MTLS", "true")
        .output()
        .expect("serve runs");
    let line = one_line_error(&out, "wrong PIN");
    assert!(line.contains("--record-signing-key"), "{line}");
    let (no_object, _) = &cases[2];
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let out = Command::new(sentinelnet())
        .args(["central", "--db", &db, "--signing-key", no_object])
        .args(["--addr", &format!("127.0.0.1:{}", free_port())])
        .env("DEV_SKIP_MTLS", "true")
        .output()
        .expect("central runs");
    let line = one_line_error(&out, "has no private key with object=\"nobody\"");
    assert!(line.contains("--signing-key"), "{line}");

    // keygen refuses a second key of one name, and a label that is not
    // the key's name (signatures carry the label as keyId).
    let again = Command::new(sentinelnet())
        .args([
            "keygen",
            "--pkcs11",
            &token.uri("approver"),
            "--name",
            "approver",
            "--out",
        ])
        .arg(dir.path().join("other"))
        .output()
        .expect("keygen");
    one_line_error(&again, "already holds a key labelled \"approver\"");
    let mismatch = run(&[
        "keygen",
        "--pkcs11",
        &token.uri("alice"),
        "--name",
        "bob",
        "--out",
        path(&keys),
    ]);
    one_line_error(&mismatch, "must be the same");
}

/// `count` checks through `envoy`: every third a DELETE (denied).
fn traffic(envoy: &Envoy, prefix: &str, count: usize) {
    let http = client();
    for i in 0..count {
        let request = if i % 3 == 0 {
            http.delete(envoy.url("/v1/kernels/k1"))
        } else {
            http.get(envoy.url("/v1/kernels"))
        };
        let response = request
            .header("x-request-id", format!("{prefix}-{i}"))
            .send()
            .expect("Envoy answers");
        let expected = if i % 3 == 0 { 403 } else { 200 };
        assert_eq!(response.status().as_u16(), expected, "{prefix}-{i}");
    }
}

fn export_text(client: &reqwest::blocking::Client, central: &Central) -> String {
    client
        .get(central.url("/v1/audit/export"))
        .send()
        .expect("export")
        .text()
        .expect("text")
}

fn audit_verify(file: &Path, keys: &Path) -> Output {
    run(&["audit", "verify", path(file), "--trusted-keys", path(keys)])
}

fn signed_records_and_bundles_through_an_hsm(db: &str) {
    let world = World::new();
    let token = Token::new("e2e");
    // Central's bundle key and the node's record key live in the token;
    // only their public halves are files.
    let bundle_keys = world.path().join("hsm-bundle-keys");
    let record_keys = world.path().join("hsm-record-keys");
    token.keygen("central-hsm", &bundle_keys);
    token.keygen("node-a", &record_keys);
    let central = Central::start(
        world.path(),
        free_port(),
        db,
        &world.pki,
        &[
            "--signing-key",
            &token.uri("central-hsm"),
            "--record-keys",
            path(&record_keys),
        ],
    );
    let publisher = world.as_publisher();
    let as_sidecar = caller(Some(&world.sidecar), &world.pki.ca_path());
    let (status, body) = call(
        publisher
            .put(central.url("/v1/bundles/kernel"))
            .json(&json!({"defaultDecision": "allow"})),
    );
    assert_eq!(status, 200, "{body}");
    add_policy(
        &publisher,
        &central,
        &json!({"id": "kernel.freeze-deletes", "version": 1, "severity": "LOW",
            "state": "draft", "effect": "deny", "evidence": ["request.method"],
            "when": {"==": [{"var": "request.method"}, "DELETE"]}}),
        &json!({"to": "active", "reason": "freeze"}),
    );

    // The sidecar trusts only the token key's public half, signs its
    // records with its own token key, and ships to central.
    let ca = world.pki.ca_path();
    let spool = world.path().join("spool");
    let bundle_url = central.url("/v1/bundles/kernel");
    let audit_url = central.url("/v1/audit/decisions");
    let record_key = token.uri("node-a");
    let flags = [
        "--trusted-keys",
        path(&bundle_keys),
        "--audit-url",
        &audit_url,
        "--spool-dir",
        path(&spool),
        "--record-signing-key",
        &record_key,
    ];
    let mut env: Vec<(&str, &Path)> = world.sidecar.client_env(&ca).to_vec();
    env.push(("POD_NAME", Path::new("node-a")));
    let kernel = Kernel::start();
    let mut sidecar = Sidecar::start_with_env(
        Path::new(&bundle_url),
        Grpc::tcp(),
        &flags,
        &env,
        world.path(),
    );
    let status = sidecar.status();
    assert_eq!(status["bundle"]["signer"], "central-hsm", "{status}");
    assert_eq!(
        status["audit"]["pipeline"]["signingKey"], "node-a",
        "{status}"
    );
    let envoy = Envoy::start(&sidecar.grpc, kernel.port, world.path());

    // Enforced through Envoy: DELETE denied by the HSM-signed bundle.
    traffic(&envoy, "a", 600);
    // An idle second: the newest record is sealed without waiting for more
    // traffic (held back, then signed and shipped).
    wait_until(
        "the idle chain sealed through its newest record",
        Duration::from_secs(15),
        || {
            let (_, body) = call(as_sidecar.get(central.url("/v1/audit/chains")));
            body["chains"][0]["signedThrough"] == 599
        },
    );
    traffic(&envoy, "b", 300);
    let signatures = sidecar.metric("sentinel_audit_signatures_total");
    assert!(signatures >= 2.0, "checkpoints were signed: {signatures}");

    // SIGTERM: the last record is signed, everything ships.
    sidecar.proc.terminate();
    drop(envoy);
    wait_until("all 900 records stored", Duration::from_secs(30), || {
        export_text(&as_sidecar, &central).lines().count() >= 900
    });
    let (status, body) = call(as_sidecar.get(central.url("/v1/audit/chains")));
    assert_eq!(status, 200, "{body}");
    let chains = body["chains"].as_array().cloned().unwrap_or_default();
    assert_eq!(chains.len(), 1, "{body}");
    let chain = &chains[0];
    assert_eq!(chain["status"], "ok", "{chain}");
    assert_eq!(chain["lastSeq"], 899, "{chain}");
    assert_eq!(chain["signedThrough"], chain["lastSeq"], "{chain}");

    // Explain says the records are sealed.
    let (status, explained) =
        call(publisher.get(central.url("/sentinelnet/policy/kernel.freeze-deletes/explain")));
    assert_eq!(status, 200, "{explained}");
    let recent = explained["recentDecisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!recent.is_empty(), "{explained}");
    assert!(
        recent.iter().all(|d| d["auditRef"]["sealed"] == true),
        "{recent:?}"
    );

    // Central's export verifies with the record keys: no unsigned tail.
    let text = export_text(&as_sidecar, &central);
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record per line"))
        .collect();
    let signed = records.iter().filter(|r| r.get("sig").is_some()).count();
    assert!(
        (2..=20).contains(&signed),
        "checkpoints, not a signature per record: {signed} of {}",
        records.len()
    );
    let exported = world.path().join("export.ndjson");
    std::fs::write(&exported, &text).expect("write export");
    let out = audit_verify(&exported, &record_keys);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
    assert!(
        report.contains("signed through 899, no unsigned tail"),
        "{report}"
    );

    // Without the seal the same records are not trusted: one altered
    // signature, one by a key nobody trusts, one record edited under a
    // valid signature. Each fails on its own.
    let signed_index = records
        .iter()
        .position(|r| r.get("sig").is_some() && r["seq"].as_u64() > Some(0))
        .expect("a signed record after the first");
    let rewrite = |name: &str, change: &dyn Fn(&mut Vec<Value>)| -> String {
        let mut copy = records.clone();
        change(&mut copy);
        let file = world.path().join(name);
        let body: String = copy.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&file, body).expect("write");
        let out = audit_verify(&file, &record_keys);
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{name}: {report}");
        report
    };
    let report = rewrite("altered.ndjson", &|copy| {
        let value = copy[signed_index]["sig"]["value"]
            .as_str()
            .unwrap_or_default();
        // Flip one character of the base64 signature.
        let mut chars: Vec<char> = value.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        copy[signed_index]["sig"]["value"] = json!(chars.into_iter().collect::<String>());
    });
    assert!(
        report.contains("bad signature: does not verify"),
        "{report}"
    );
    let stranger_dir = world.path().join("stranger");
    keygen(&stranger_dir, "node-a");
    let report = rewrite("foreign.ndjson", &|copy| {
        let hash = copy[signed_index]["hash"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let signature = sign(
            world.path(),
            &stranger_dir.join("node-a.key"),
            hash.as_bytes(),
        );
        copy[signed_index]["sig"]["value"] = json!(signature);
    });
    assert!(
        report.contains("bad signature: does not verify with key \"node-a\""),
        "{report}"
    );
    let report = rewrite("unknown-key.ndjson", &|copy| {
        copy[signed_index]["sig"]["keyId"] = json!("node-z");
    });
    assert!(report.contains("is not a trusted key"), "{report}");
    let report = rewrite("edited.ndjson", &|copy| {
        copy[signed_index]["decision"] = json!(if copy[signed_index]["decision"] == "deny" {
            "allow"
        } else {
            "deny"
        });
    });
    assert!(
        report.contains("edited: content does not match its hash"),
        "{report}"
    );

    // At ingest, a bad signature is a chain break with reason `signature`.
    let ts = rfc3339_now();
    let first = record("node-forged", "c1", 0, GENESIS, &ts);
    let mut second = record(
        "node-forged",
        "c1",
        1,
        first["hash"].as_str().unwrap_or_default(),
        &ts,
    );
    second["sig"] = json!({"keyId": "node-a", "alg": "Ed25519",
        "value": sign(world.path(), &stranger_dir.join("node-a.key"), second["hash"].as_str().unwrap_or_default().as_bytes())});
    let (status, body) = call(
        as_sidecar
            .post(central.url("/v1/audit/decisions"))
            .header("content-type", "application/x-ndjson")
            .body(ndjson(&[first, second])),
    );
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(as_sidecar.get(central.url("/v1/audit/chains")));
    let forged = body["chains"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["node"] == "node-forged").cloned())
        .unwrap_or_default();
    assert_eq!(forged["status"], "broken", "{forged}");
    assert_eq!(
        forged["breaks"],
        json!([{"seq": 1, "reason": "signature"}]),
        "{forged}"
    );
    assert_eq!(forged["signedThrough"], Value::Null, "{forged}");
    drop((sidecar, central));
}

#[test]
fn signed_records_and_bundles_through_an_hsm_on_postgres() {
    let db = PgDatabase::create();
    signed_records_and_bundles_through_an_hsm(&db.url());
}
