//! Criterion benchmarks of the decision path without transport:
//! input view construction, deciding with 1, 20, 1,004 and 10,004 policies
//! (with the policy index, and by scanning every policy), and a
//! whole in-process `Check` (view, decision, response, metrics, record
//! hand-off), also with the protobuf decode and encode around it, and
//! central's ingest parser over a batch. After criterion, a per-iteration timing pass prints
//! p50/p99/p99.9, which criterion does not report.
//!
//! Run: `cargo bench --bench evaluator`

use criterion::{criterion_group, BatchSize, Criterion};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address as CoreAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message;
use sentinelnet::audit::line::{LineWriter, Links};
use sentinelnet::audit::{log::DecisionLog, AuditConfig, AuditStatus, Pipeline};
use sentinelnet::authz::message::CheckMessage;
use sentinelnet::authz::view::RequestView;
use sentinelnet::authz::{Authorizer, Engine, ViewSettings};
use sentinelnet::bundle::{Bundle, BundleFiles, Source};
use sentinelnet::decision::DecisionEvent;
use sentinelnet::metrics::Metrics;
use sentinelnet::policy::input::{Input, VarPath};
use sentinelnet::policy::{IndexSettings, Policy, PolicySet, Verdict};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

#[path = "records.rs"]
mod records;

// The bench uses only the bundles, not the counts the other users check.
#[allow(dead_code)]
#[path = "bundlegen.rs"]
mod bundlegen;

const KERNEL_20: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/bundles/kernel-20");

/// What Envoy sends for `GET /v1/kernels?limit=10` from a caller in the
/// cluster, with a typical set of headers.
pub fn sample_request() -> CheckMessage {
    CheckMessage::from_envoy(&sample_envoy_request())
}

fn sample_envoy_request() -> CheckRequest {
    let headers = [
        (":authority", "kernel.svc:10000"),
        (":method", "GET"),
        (":path", "/v1/kernels?limit=10"),
        (":scheme", "http"),
        ("accept", "application/json"),
        ("user-agent", "kernel-cli/2.3"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5b0f4f0e-8a2c-4c44-9d5f-2b1d3c0e7a11"),
        ("x-user", "spiffe://cluster/ns/app/sa/reader"),
        ("x-roles", "reader,viewer"),
    ];
    let peer = |ip: &str, port: u32| Peer {
        address: Some(CoreAddress {
            address: Some(Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("10.1.2.3", 40123)),
            destination: Some(peer("10.9.0.7", 10000)),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: "GET".into(),
                    path: "/v1/kernels?limit=10".into(),
                    host: "kernel.svc:10000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn settings() -> ViewSettings {
    ViewSettings {
        principal_from: "header:x-user".parse().expect("valid"),
        roles_from: "header:x-roles".parse().expect("valid"),
    }
}

fn kernel_files() -> BundleFiles {
    Source::Directory(KERNEL_20.into())
        .read()
        .expect("bench bundle reads")
}

fn one_policy() -> Bundle {
    let mut files = kernel_files();
    files.retain(|name, _| name == "bundle.json" || name == "policies/kernel.read.json");
    Bundle::from_files(&files).expect("1-policy bundle")
}

/// The generated bundles of bench/bundlegen.rs: `services × 10 + 4`
/// policies (100 services: 1,004; 1,000 services: 10,004).
pub fn generated(services: usize) -> Bundle {
    Bundle::from_files(&bundlegen::services(services)).expect("generated bundle")
}

fn authorizer(bundle: Bundle) -> (Authorizer, Pipeline) {
    let metrics = Arc::new(Metrics::new());
    let (recorder, pipeline) = Pipeline::start(
        "bench".into(),
        AuditConfig {
            max_bytes: 64 << 20,
            ..AuditConfig::default()
        },
        Arc::new(DecisionLog::default()),
        metrics.audit.clone(),
        Arc::new(AuditStatus::default()),
    )
    .expect("audit pipeline");
    let engine = Engine {
        counters: metrics.policy_counters(&bundle),
        bundle: Arc::new(bundle),
        source: KERNEL_20.into(),
        activated_at: SystemTime::now(),
    };
    let slot = Arc::new(arc_swap::ArcSwapOption::from_pointee(engine));
    (
        Authorizer::new(slot, settings(), Verdict::Deny, recorder, metrics),
        pipeline,
    )
}

fn benches(c: &mut Criterion) {
    let request = sample_request();
    let settings = settings();
    let paths: Vec<VarPath> = [
        "request.method",
        "request.path",
        "principal.id",
        "source.address",
    ]
    .iter()
    .map(|p| VarPath::parse(p))
    .collect();
    c.bench_function("view/build and resolve 4 fields", |b| {
        b.iter(|| {
            let view = RequestView::new(black_box(&request), &settings, 1_795_000_000);
            for p in &paths {
                black_box(view.resolve(p));
            }
        })
    });
    // What recording a check's input costs the audit thread: the §5
    // document written as canonical JSON, the default masks applied.
    let masks = sentinelnet::audit::inputs::Masks::with_defaults(&[]).expect("default masks");
    let mut document = Vec::with_capacity(2048);
    c.bench_function("record/input document, written", |b| {
        b.iter(|| {
            document.clear();
            let view = RequestView::new(black_box(&request), &settings, 1_795_000_000);
            black_box(view.write_document(masks.root(), &mut document));
        })
    });
    // Central's ingest parser over one realistic batch (500 records of
    // ~1.7 KB with input, one chain): every line parsed, its hash checked,
    // its input and record text made ready to store.
    let batch: String = records::chain("kernel-0", "0193aaaa-0000-7000-8000-000000000000")
        .take(500)
        .map(|r| format!("{r}\n"))
        .collect();
    assert_eq!(sentinelnet::parse_records(batch.as_bytes()), 500);
    c.bench_function("ingest/parse a batch of 500 records", |b| {
        b.iter(|| black_box(sentinelnet::parse_records(black_box(batch.as_bytes()))))
    });
    // A decision's record as JSON (the 20-policy bundle deciding the
    // sample request): built as a `DecisionRecord` and serialised by serde,
    // as the in-process module did before, against written straight from
    // the event, as the module and the sidecar's audit thread do now
    // (`sentinelnet::audit::line`). Chain fields empty, no input.
    let kernel20 = Arc::new(
        Source::Directory(Path::new(KERNEL_20).into())
            .load()
            .expect("bundle"),
    );
    let event = || {
        let view = RequestView::new(&request, &settings, 1_795_000_000);
        let outcome = kernel20.policies.decide(&view, Verdict::Deny);
        let at = SystemTime::now();
        DecisionEvent::decided(
            sentinelnet::ids::decision_id(at),
            at,
            view.request_id().to_owned(),
            kernel20.clone(),
            outcome,
            &view,
        )
    };
    let mut json = Vec::with_capacity(2048);
    c.bench_function("record/decision JSON, DecisionRecord + serde", |b| {
        b.iter_batched(
            event,
            |e| {
                json.clear();
                let record = sentinelnet::audit::to_record("", e, None);
                let _ = serde_json::to_writer(&mut json, &record);
                record
            },
            BatchSize::SmallInput,
        )
    });
    let sample = event();
    let mut lines = LineWriter::new("");
    c.bench_function("record/decision JSON, written from the event", |b| {
        b.iter(|| {
            json.clear();
            lines.write_unlinked(black_box(&sample), Links::NONE, None, &mut json);
        })
    });
    let bundles = [
        ("decide/1 policy", one_policy()),
        (
            "decide/20 policies",
            Source::Directory(Path::new(KERNEL_20).into())
                .load()
                .expect("bundle"),
        ),
        ("decide/1,004 policies", generated(100)),
        ("decide/10,004 policies", generated(1000)),
    ];
    for (name, bundle) in &bundles {
        c.bench_function(name, |b| {
            b.iter(|| {
                let view = RequestView::new(black_box(&request), &settings, 1_795_000_000);
                black_box(bundle.policies.decide(&view, Verdict::Deny))
            })
        });
    }
    // The 20-policy bundle indexed anyway (below IndexSettings'
    // min_policies it is scanned): whether the threshold is right.
    let twenty = &bundles[1].1.policies;
    let recompiled = twenty
        .policies()
        .iter()
        .map(|p| Policy::compile(p.document.clone()).expect("compiles"))
        .collect();
    let twenty_indexed = PolicySet::with_index(
        recompiled,
        twenty.default_decision(),
        IndexSettings {
            min_policies: 1,
            min_per_field: 1,
        },
    );
    c.bench_function("decide/20 policies, indexed", |b| {
        b.iter(|| {
            let view = RequestView::new(black_box(&request), &settings, 1_795_000_000);
            black_box(twenty_indexed.decide(&view, Verdict::Deny))
        })
    });
    // The same bundles without the index (every evaluated policy, as
    // before it): what the index saves, measured in the same run.
    for (name, bundle) in &bundles[1..] {
        c.bench_function(&format!("{name}, scan"), |b| {
            b.iter(|| {
                let view = RequestView::new(black_box(&request), &settings, 1_795_000_000);
                black_box(bundle.policies.decide_by_scan(&view, Verdict::Deny))
            })
        });
    }
    let (authorizer, _pipeline) =
        authorizer(Source::Directory(KERNEL_20.into()).load().expect("bundle"));
    c.bench_function("check/in-process handler, 20 policies", |b| {
        // The decoded message moves into the check (and on to the audit
        // thread): each iteration gets a copy made outside the timing.
        b.iter_batched(
            || request.clone(),
            |request| {
                let mut out = Vec::with_capacity(512);
                authorizer.check_into(black_box(request), &mut out);
                black_box(out)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let wire = prost::bytes::Bytes::from(sample_envoy_request().encode_to_vec());
    c.bench_function("check/decode, handler, encode, 20 policies", |b| {
        b.iter(|| black_box(decode_check_encode(&authorizer, &wire)))
    });
    checkpoint_signatures(c);
}

/// One record checkpoint signature (the audit thread makes about one a
/// second): with a key file, and with a token key when
/// `SENTINEL_BENCH_PKCS11_URI` names one (bench/README.md shows how).
fn checkpoint_signatures(c: &mut Criterion) {
    use sentinelnet::keys::{KeySource, Signer};
    // A record's hash is 64 hex characters; which ones does not matter.
    let hash = "9f2c".repeat(16);
    let dir = tempfile::tempdir().expect("tempdir");
    sentinelnet::keys::keygen(dir.path(), "bench").expect("keygen");
    let file_key = sentinelnet::keys::FileKey::load(&dir.path().join("bench.key")).expect("key");
    c.bench_function("sign/record checkpoint, key file", |b| {
        b.iter(|| black_box(file_key.sign(black_box(hash.as_bytes()))))
    });
    if let Ok(uri) = std::env::var("SENTINEL_BENCH_PKCS11_URI") {
        let token_key = KeySource::parse(&uri)
            .and_then(|source| source.open().map_err(|e| e.to_string()))
            .expect("SENTINEL_BENCH_PKCS11_URI opens");
        c.bench_function("sign/record checkpoint, PKCS#11 token (SoftHSM2)", |b| {
            b.iter(|| black_box(token_key.sign(black_box(hash.as_bytes()))))
        });
    }
}

/// What the gRPC endpoint does with a request message, minus HTTP/2.
fn decode_check_encode(authorizer: &Authorizer, wire: &prost::bytes::Bytes) -> Vec<u8> {
    let request = CheckMessage::decode_from(wire.clone()).expect("decodes");
    let mut out = Vec::with_capacity(512);
    authorizer.check_into(request, &mut out);
    out
}

/// p50/p99/p99.9 from timing each iteration.
fn distribution(name: &str, iterations: usize, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut samples: Vec<u64> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    println!(
        "{name:<42} p50 {:>7.2} µs   p99 {:>7.2} µs   p99.9 {:>7.2} µs",
        at(0.50),
        at(0.99),
        at(0.999)
    );
}

fn percentiles() {
    let request = sample_request();
    let settings = settings();
    println!("\nlatency distribution (per-iteration timing, includes ~20 ns of clock reads)");
    let twenty = Source::Directory(KERNEL_20.into()).load().expect("bundle");
    distribution("decide/20 policies", 200_000, || {
        let view = RequestView::new(&request, &settings, 1_795_000_000);
        black_box(twenty.policies.decide(&view, Verdict::Deny));
    });
    for services in [100, 1000] {
        let bundle = generated(services);
        let name = format!("decide/{} policies", bundle.policies.policies().len());
        distribution(&name, 200_000, || {
            let view = RequestView::new(&request, &settings, 1_795_000_000);
            black_box(bundle.policies.decide(&view, Verdict::Deny));
        });
    }
    let (authorizer, _pipeline) = authorizer(twenty);
    // The check takes the decoded message: the copy is timed with it.
    distribution(
        "check/in-process handler + request copy, 20 policies",
        200_000,
        || {
            let mut out = Vec::with_capacity(512);
            authorizer.check_into(request.clone(), &mut out);
            black_box(out);
        },
    );
    let wire = prost::bytes::Bytes::from(sample_envoy_request().encode_to_vec());
    distribution(
        "check/decode, handler, encode, 20 policies",
        200_000,
        || {
            black_box(decode_check_encode(&authorizer, &wire));
        },
    );
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
