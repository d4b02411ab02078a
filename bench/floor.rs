//! The floor: an ext_authz server that answers OK at once. Any sidecar is
//! measured against it in the same run, behind the same Envoy.
//!
//! usage: authz-floor ADDR [current|multi] [shaped]
//!   ADDR: HOST:PORT or unix:/path.sock; runtime defaults to current-thread,
//!   the same as `sentinelnet serve`. `shaped` answers with what every
//!   sidecar allow carries (docs/sidecar-api.md: the decision-id header and
//!   the four fields of dynamic metadata, constants here), so Envoy's cost
//!   of applying them is separated from the sidecar's cost of deciding.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc::Status;

struct Floor {
    answer: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.answer.clone()))
    }
}

fn shaped_answer() -> CheckResponse {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let fields = [
        ("decisionId", string("019ab2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")),
        ("policyId", string("kernel.read")),
        (
            "policyVersion",
            Value {
                kind: Some(Kind::NumberValue(1.0)),
            },
        ),
        ("bundleRevision", string("kernel-20")),
    ];
    CheckResponse {
        status: Some(Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: "x-sentinel-decision-id".into(),
                    value: "019ab2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".into(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            }],
            ..Default::default()
        })),
        dynamic_metadata: Some(Struct {
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: authz-floor ADDR [current|multi] [shaped]")?;
    let rest: Vec<String> = args.collect();
    let answer = if rest.iter().any(|a| a == "shaped") {
        shaped_answer()
    } else {
        CheckResponse {
            status: Some(Status::default()),
            ..Default::default()
        }
    };
    let runtime = match rest.iter().map(String::as_str).find(|a| *a != "shaped") {
        Some("multi") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        let server = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Floor { answer }));
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            server
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await?;
        } else {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming(incoming).await?;
        }
        Ok(())
    })
}
