//! Entry points for the coverage-guided fuzz targets in `tests/fuzz/`
//! (cargo-fuzz, libFuzzer), and for `tests/fuzz_seeds.rs`, which runs the
//! committed seed corpora through them on every `cargo test`.
//!
//! Each takes arbitrary bytes, drives one parser that reads outside input
//! the way the product does, and checks what must hold for every input: no
//! panic, and where a parser produced something, that it is well formed (a
//! CheckResponse that decodes, an input document that is JSON). A panic is
//! a finding. Not part of the API: `#[doc(hidden)]`, no stability.

use crate::audit::inputs::Masks;
use crate::audit::log::DecisionLog;
use crate::audit::{AuditConfig, AuditStatus, Pipeline};
use crate::authz::message::CheckMessage;
use crate::authz::view::RequestView;
use crate::authz::{Authorizer, Engine, ViewSettings};
use crate::bundle::{archive, Bundle, Source};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyDocument, PolicySet, Verdict};
use bytes::Bytes;
use prost::Message;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// The policy compiler: a policy document (JSON) compiled, then evaluated
/// on two fixed inputs (a compiled policy must evaluate or fail cleanly),
/// and indexed however small the set: the policy index must decide exactly
/// as the scan of every policy (policy/index.rs), or it is a finding.
pub fn policy_document(data: &[u8]) {
    let Ok(document) = serde_json::from_slice::<PolicyDocument>(data) else {
        return;
    };
    let Ok(policy) = Policy::compile(document) else {
        return;
    };
    let every_size = crate::policy::IndexSettings {
        min_policies: 1,
        min_per_field: 1,
    };
    let set = PolicySet::with_index(vec![policy], Verdict::Deny, every_size);
    for input in fixed_inputs() {
        assert_eq!(
            set.decide(input, Verdict::Deny),
            set.decide_by_scan(input, Verdict::Deny),
            "index and scan disagree on {input}"
        );
    }
}

fn fixed_inputs() -> &'static [serde_json::Value] {
    static INPUTS: OnceLock<Vec<serde_json::Value>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        vec![
            serde_json::json!({
                "request": {"method": "DELETE", "path": "/v1/kernels/k1",
                            "headers": {"x-user": "alice", "content-type": "application/json"},
                            "body": {"name": "k1", "replicas": 3}, "time": 1_700_000_000},
                "principal": {"id": "alice", "roles": ["reader", "admin"]},
                "source": {"address": "10.0.0.7"},
            }),
            serde_json::json!({}),
            // Indexed fields that are no strings: every policy keyed on
            // them must stay a candidate (`["DELETE"] == "DELETE"`).
            serde_json::json!({"request": {"method": ["DELETE"], "path": 5, "host": null}}),
        ]
    })
}

/// The bundle archive reader: a `.tar.gz` unpacked and, when it unpacks,
/// validated and compiled into a bundle.
pub fn bundle_archive(data: &[u8]) {
    if let Ok(files) = archive::unpack(data) {
        let _ = Bundle::from_files(&files);
    }
}

/// The example bundle (`policies/`), the sidecar that decides with it and
/// the settings its views use.
struct Sidecar {
    authorizer: Authorizer,
    settings: ViewSettings,
    masks: Masks,
    // Keeps the audit thread alive for the authorizer's records.
    _pipeline: Pipeline,
}

fn sidecar() -> &'static Sidecar {
    static SIDECAR: OnceLock<Sidecar> = OnceLock::new();
    SIDECAR.get_or_init(|| {
        let settings = ViewSettings {
            principal_from: "header:x-user".parse().expect("a valid identity source"),
            roles_from: "jwt:envoy.filters.http.jwt_authn:jwt_payload.roles"
                .parse()
                .expect("a valid identity source"),
        };
        let bundle = Source::Directory(concat!(env!("CARGO_MANIFEST_DIR"), "/policies").into())
            .load()
            .expect("the example bundle loads");
        let metrics = Arc::new(Metrics::new());
        let (recorder, pipeline) = Pipeline::start(
            "fuzz".into(),
            AuditConfig {
                max_bytes: 1 << 20,
                ..AuditConfig::default()
            },
            Arc::new(DecisionLog::default()),
            metrics.audit.clone(),
            Arc::new(AuditStatus::default()),
        )
        .expect("an audit pipeline in memory");
        let engine = Engine {
            counters: metrics.policy_counters(&bundle),
            bundle: Arc::new(bundle),
            source: "policies".into(),
            activated_at: SystemTime::now(),
        };
        let slot = Arc::new(arc_swap::ArcSwapOption::from_pointee(engine));
        Sidecar {
            authorizer: Authorizer::new(slot, settings.clone(), Verdict::Deny, recorder, metrics),
            settings,
            masks: Masks::with_defaults(&["request.body.password".to_owned()])
                .expect("valid masks"),
            _pipeline: pipeline,
        }
    })
}

/// The CheckRequest decoder and everything a Check does with the request:
/// decoded, decided by the example bundle into an encoded CheckResponse
/// (which must decode as Envoy's), and written as the recorded input
/// document (which must be canonical JSON).
pub fn check_request(data: &[u8]) {
    let raw = Bytes::copy_from_slice(data);
    let Ok(request) = CheckMessage::decode_from(raw.clone()) else {
        return;
    };
    let sidecar = sidecar();
    let mut response = Vec::new();
    sidecar
        .authorizer
        .check_into(request.clone(), &mut response);
    if let Err(e) =
        envoy_types::pb::envoy::service::auth::v3::CheckResponse::decode(response.as_slice())
    {
        panic!("the sidecar encoded a CheckResponse Envoy cannot decode: {e}");
    }
    let view = RequestView::new(&request, &sidecar.settings, 1_700_000_000);
    let mut document = Vec::new();
    view.write_document(sidecar.masks.root(), &mut document);
    let parsed = match serde_json::from_slice::<serde_json::Value>(&document) {
        Ok(parsed) => parsed,
        Err(e) => panic!(
            "the input document is not JSON ({e}): {}",
            String::from_utf8_lossy(&document)
        ),
    };
    // Records copy the text into their line as it is, and their hash is
    // over canonical JSON: the document must already be canonical.
    if serde_json::to_vec(&parsed).ok().as_deref() != Some(document.as_slice()) {
        panic!(
            "the input document is not canonical JSON: {}",
            String::from_utf8_lossy(&document)
        );
    }
}

/// The spool segment reader (recovery at start): every line is a record
/// or a reported corruption, never both and never lost; a torn tail is one
/// corruption.
pub fn spool_segment(data: &[u8]) {
    let (records, corruptions) = crate::audit::spool_segment_lines(data);
    let complete = data.iter().filter(|&&b| b == b'\n').count();
    let torn = usize::from(!data.is_empty() && !data.ends_with(b"\n"));
    assert_eq!(
        records + corruptions,
        complete + torn,
        "{records} records and {corruptions} corruptions from {complete} lines (+{torn} torn)"
    );
}

/// The record verifier (`audit verify`): any bytes give a report.
pub fn record_verify(data: &[u8]) {
    if let Err(e) = crate::audit::verify::verify_reader(data, None) {
        panic!("reading from memory failed: {e}");
    }
}

/// The canonical-JSON check that lets a record read back keep its input as
/// text (`audit/canonical.rs`): whatever it accepts must be exactly what
/// serde_json writes for the value the text parses to, or a stored input
/// and its record's hash would differ from the slow path's.
pub fn canonical_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if crate::audit::canonical::is_canonical(text) {
        let written = serde_json::from_str::<serde_json::Value>(text).map(|v| v.to_string());
        assert_eq!(
            written.as_deref().ok(),
            Some(text),
            "accepted as canonical, but serde_json writes it otherwise"
        );
    }
}

/// Central's ingest body and line parser: the first byte says whether the
/// rest is gzip (as `Content-Encoding: gzip`); every line is accepted or
/// refused with its line number.
pub fn ingest_batch(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = crate::central::decisions::parse::body_bytes(body, flags & 1 == 1) else {
        return;
    };
    let (accepted, refused) = crate::central::decisions::parse::parse_batch(&body, None);
    let lines = body.split(|&b| b == b'\n').count();
    // Every line that is not blank is accepted or refused, once.
    let blank = body
        .split(|&b| b == b'\n')
        .filter(|raw| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            std::str::from_utf8(raw).is_ok_and(|line| line.trim().is_empty())
        })
        .count();
    assert_eq!(
        accepted.len() + refused.len(),
        lines - blank,
        "{} accepted and {} refused from {lines} lines ({blank} blank)",
        accepted.len(),
        refused.len()
    );
    for refusal in &refused {
        assert!(
            refusal.line >= 1 && refusal.line <= lines,
            "line {}",
            refusal.line
        );
    }
}

/// A datagram on the sidecar's `--record-socket`, a single event or a
/// batch: every event read is a `policy.decision` with an id and an allow
/// or deny; at most one error, and nothing read after it; and the events
/// read, written again as a batch, read back the same.
pub fn record_socket(data: &[u8]) {
    use crate::audit::forward;
    let mut events = Vec::new();
    let mut errors = 0;
    forward::decode_each(data, |event| match event {
        Ok(event) => {
            assert_eq!(errors, 0, "an event read after an error");
            events.push(event);
        }
        Err(_) => errors += 1,
    });
    assert!(errors <= 1, "{errors} errors from one datagram");
    for event in &events {
        assert!(!event.record.id.is_empty());
        assert!(matches!(event.record.decision.as_ref(), "allow" | "deny"));
    }
    let mut batch = Vec::new();
    forward::begin_batch(&mut batch);
    for event in &events {
        if forward::append(
            &event.record,
            event.at,
            event.request.as_deref(),
            &mut batch,
        )
        .is_err()
        {
            // Written again, the events no longer fit one datagram (the
            // record's JSON is written compactly, so this is rare).
            return;
        }
    }
    let mut again = Vec::new();
    forward::decode_each(&batch, |event| match event {
        Ok(event) => again.push(event),
        Err(e) => panic!("an event written again does not read: {e}"),
    });
    assert_eq!(again.len(), events.len());
    for (first, second) in events.iter().zip(&again) {
        assert_eq!(first.record, second.record);
        assert_eq!(first.at, second.at);
        assert_eq!(first.request, second.request);
    }
}
