//! The ext_authz endpoint speaks gRPC to a second implementation (tonic's
//! client), not only to Envoy: Check, gRPC health, and one clear gRPC error
//! for each kind of malformed call, after which the sidecar still decides.

mod support;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use support::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const IDENTITY_FLAGS: &[&str] = &[
    "--principal-from",
    "header:x-user",
    "--roles-from",
    "header:x-roles",
];

fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A sidecar on the example bundle over TCP, and its gRPC URL.
fn example_sidecar(dir: &std::path::Path) -> (Sidecar, String) {
    let sidecar = Sidecar::start(&repo().join("policies"), Grpc::tcp(), IDENTITY_FLAGS, dir);
    let url = grpc_url(&sidecar);
    (sidecar, url)
}

fn grpc_url(sidecar: &Sidecar) -> String {
    match &sidecar.grpc {
        Grpc::Tcp(port) => format!("http://127.0.0.1:{port}"),
        Grpc::Unix(_) => unreachable!("these tests use TCP"),
    }
}

async fn health(url: &str, service: &str) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[test]
fn check_and_health_answer_a_tonic_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sidecar, url) = example_sidecar(dir.path());
    runtime().block_on(async {
        let mut client = AuthorizationClient::connect(url.clone())
            .await
            .expect("connects");

        let allowed = client
            .check(check_request(
                "GET",
                "/v1/kernels?limit=5",
                &[("x-user", "alice")],
            ))
            .await
            .expect("Check answers")
            .into_inner();
        assert_eq!(allowed.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &allowed.http_response else {
            panic!("an allow carries an OkHttpResponse: {allowed:?}");
        };
        let added: Vec<_> = ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert!(
            added.contains(&("x-kernel-caller", "verified")),
            "{added:?}"
        );
        assert!(added
            .iter()
            .any(|(k, v)| *k == "x-sentinel-decision-id" && v.len() == 36));
        assert_eq!(ok.headers_to_remove, vec!["x-debug-token".to_string()]);
        let metadata = allowed.dynamic_metadata.expect("dynamic metadata");
        assert!(
            metadata.fields.contains_key("decisionId") && metadata.fields.contains_key("policyId"),
            "{metadata:?}"
        );

        let denied = client
            .check(check_request(
                "DELETE",
                "/v1/kernels/k1",
                &[("x-user", "bob"), ("x-roles", "editor")],
            ))
            .await
            .expect("Check answers")
            .into_inner();
        assert_eq!(denied.status.as_ref().map(|s| s.code), Some(7));
        let Some(HttpResponse::DeniedResponse(no)) = &denied.http_response else {
            panic!("a deny carries a DeniedHttpResponse: {denied:?}");
        };
        assert_eq!(no.status.as_ref().map(|s| s.code), Some(403));
        assert_eq!(no.body, "admin role required");

        let serving = ServingStatus::Serving as i32;
        assert_eq!(health(&url, "").await.expect("health"), serving);
        assert_eq!(
            health(&url, "envoy.service.auth.v3.Authorization")
                .await
                .expect("health"),
            serving
        );
        let unknown = health(&url, "no.such.Service")
            .await
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(unknown.message().contains("no.such.Service"));
    });
    for decision in ["allow", "deny"] {
        let sample =
            format!(r#"sentinel_decisions_total{{decision="{decision}",reason="policy"}}"#);
        assert_eq!(sidecar.metric(&sample), 1.0, "{sample}");
    }
}

#[test]
fn health_is_not_serving_until_a_bundle_is_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A registry that is not there: the sidecar runs, nothing is active.
    let registry = format!("http://127.0.0.1:{}/v1/bundles/kernel", free_port());
    let sidecar = Sidecar::spawn(
        std::path::Path::new(&registry),
        Grpc::tcp(),
        &["--on-error", "deny"],
        dir.path(),
    );
    let Grpc::Tcp(port) = sidecar.grpc else {
        unreachable!()
    };
    wait_until(
        "the gRPC listener",
        std::time::Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let url = grpc_url(&sidecar);
    runtime().block_on(async {
        assert_eq!(
            health(&url, "envoy.service.auth.v3.Authorization")
                .await
                .expect("health"),
            ServingStatus::NotServing as i32
        );
        assert_eq!(
            health(&url, "").await.expect("health"),
            ServingStatus::Serving as i32,
            "the process itself is up"
        );
        let mut client = AuthorizationClient::connect(url.clone())
            .await
            .expect("connects");
        let answer = client
            .check(check_request("GET", "/v1/kernels", &[]))
            .await
            .expect("Check answers")
            .into_inner();
        let Some(HttpResponse::DeniedResponse(no)) = &answer.http_response else {
            panic!("no bundle and --on-error deny: {answer:?}");
        };
        assert_eq!(no.status.as_ref().map(|s| s.code), Some(503));
    });
}

/// One raw HTTP/2 call; errors come back trailers-only, so `grpc-status`
/// and `grpc-message` are response headers.
fn raw_call(url: &str, path: &str, body: Vec<u8>) -> (Option<String>, String) {
    let client = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = client
        .post(format!("{url}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .expect("the sidecar answers");
    assert_eq!(response.status().as_u16(), 200, "gRPC errors are HTTP 200");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = header("grpc-status");
    let message = percent_encoding::percent_decode_str(&header("grpc-message").unwrap_or_default())
        .decode_utf8_lossy()
        .into_owned();
    (status, message)
}

fn framed(flag: u8, declared: u32, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[test]
fn malformed_calls_get_one_clear_grpc_error_and_the_sidecar_keeps_deciding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sidecar, url) = example_sidecar(dir.path());
    let check = "/envoy.service.auth.v3.Authorization/Check";
    // Field 1 claims 100 bytes that are not there.
    let garbage = [0x0a, 100, 1, 2, 3];
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        (
            check,
            framed(0, 5, &garbage),
            "3",
            "CheckRequest does not decode",
        ),
        (
            check,
            vec![0, 0],
            "3",
            "shorter than its 5-byte frame header",
        ),
        (
            check,
            framed(0, 9, &garbage),
            "3",
            "frame says 9 bytes, the request carries 5",
        ),
        (
            check,
            framed(1, 5, &garbage),
            "12",
            "compressed messages are not supported",
        ),
        (
            "/envoy.service.auth.v3.Authorization/Nope",
            framed(0, 0, &[]),
            "12",
            "unknown method",
        ),
    ];
    for (path, body, status, message) in cases {
        let (got_status, got_message) = raw_call(&url, path, body);
        assert_eq!(got_status.as_deref(), Some(status), "{path}: {got_message}");
        assert!(
            got_message.contains(message),
            "{path}: {got_message:?} should say {message:?}"
        );
    }
    // None of that was a decision, and the next Check is decided as usual.
    let allowed = r#"sentinel_decisions_total{decision="allow",reason="policy"}"#;
    let errors = r#"sentinel_decisions_total{decision="deny",reason="error"}"#;
    assert_eq!(
        (sidecar.metric(allowed), sidecar.metric(errors)),
        (0.0, 0.0)
    );
    runtime().block_on(async {
        let mut client = AuthorizationClient::connect(url.clone())
            .await
            .expect("connects");
        let answer = client
            .check(check_request("GET", "/v1/kernels", &[("x-user", "alice")]))
            .await
            .expect("Check answers")
            .into_inner();
        assert_eq!(answer.status.map(|s| s.code), Some(0));
    });
    assert_eq!(sidecar.metric(allowed), 1.0);
}

#[test]
fn eval_and_the_sidecar_agree_on_a_policy_that_cannot_be_evaluated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    // 601 × 601 iterations on a POST (arrays built from the input, so not
    // folded at compile time): past the evaluator's step budget.
    let items: Vec<u32> = (0..600).collect();
    let runaway = serde_json::json!({
        "id": "runaway", "version": 1, "severity": "LOW", "state": "active", "effect": "deny",
        "response": {"status": 418},
        "when": {"and": [{"==": [{"var": "request.method"}, "POST"]},
            {"some": [{"merge": [items, {"var": "nothing"}]}, {"some": [{"merge": [items, {"var": "nothing"}]}, {"==": [{"var": "x"}, "y"]}]}]}]}
    });
    write_bundle(&bundle, "agree", "r1", "allow", &[runaway]);
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        serde_json::json!({"request": {"method": "POST", "path": "/x"}}).to_string(),
    )
    .expect("write input");
    let eval = std::process::Command::new(sentinelnet())
        .args(["eval", "--bundle"])
        .arg(&bundle)
        .arg("--input")
        .arg(&input)
        .output()
        .expect("eval runs");
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&eval.stdout).expect("JSON");
    assert_eq!(
        (&record["decision"], &record["reason"], &record["status"]),
        (
            &serde_json::json!("deny"),
            &serde_json::json!("error"),
            &serde_json::json!(503)
        ),
        "{record}"
    );

    let sidecar = Sidecar::start(&bundle, Grpc::tcp(), IDENTITY_FLAGS, dir.path());
    let url = grpc_url(&sidecar);
    let answered = runtime().block_on(async {
        let mut client = AuthorizationClient::connect(url).await.expect("connects");
        client
            .check(check_request("POST", "/x", &[]))
            .await
            .expect("Check answers")
            .into_inner()
    });
    let Some(HttpResponse::DeniedResponse(denied)) = &answered.http_response else {
        panic!("a failed policy with --on-error deny denies: {answered:?}");
    };
    assert_eq!(
        denied.status.as_ref().map(|s| s.code as u64),
        record["status"].as_u64(),
        "the sidecar answers the status eval reports"
    );
    assert_eq!(
        sidecar.metric("sentinel_policy_eval_errors_total{policy=\"runaway\"}"),
        1.0
    );
}
