//! Envoy `CheckResponse`s for a decision.

use crate::policy::{Policy, Verdict};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as ProtoValue};
use envoy_types::pb::google::rpc::Status;
use std::collections::HashMap;
use uuid::Uuid;

/// Header that carries the decision id to the upstream (allow) or the
/// client (deny), so a 403 can be looked up in the decision log.
pub const DECISION_HEADER: &str = "x-sentinel-decision-id";

/// Status of a denial that came from an internal error rather than a policy:
/// retryable, and distinct from a policy's 403.
pub const ERROR_STATUS: u16 = 503;

/// The HTTP status the client sees for a verdict (`deny_status` when denied).
pub fn status_of(verdict: Verdict, deny_status: u16) -> u16 {
    match verdict {
        Verdict::Allow => 200,
        Verdict::Deny => deny_status,
    }
}

const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string(s: &str) -> ProtoValue {
    ProtoValue {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// `{decisionId, policyId, policyVersion, bundleRevision}`, under the
/// ext_authz filter's namespace, so access logs join to decision records.
fn metadata(decision_id: &str, policy: Option<&Policy>, revision: &str) -> Struct {
    let null = || ProtoValue {
        kind: Some(Kind::NullValue(0)),
    };
    let mut fields = HashMap::with_capacity(4);
    fields.insert("decisionId".to_owned(), string(decision_id));
    fields.insert(
        "policyId".to_owned(),
        policy.map_or_else(null, |p| string(&p.id)),
    );
    fields.insert(
        "policyVersion".to_owned(),
        policy.map_or_else(null, |p| ProtoValue {
            kind: Some(Kind::NumberValue(p.version() as f64)),
        }),
    );
    fields.insert("bundleRevision".to_owned(), string(revision));
    Struct { fields }
}

fn status(code: i32) -> Option<Status> {
    Some(Status {
        code,
        ..Default::default()
    })
}

/// A denial by a policy (or by the default when `policy` is `None`).
pub fn deny(policy: Option<&Policy>, decision_id: &Uuid, revision: &str) -> (CheckResponse, u16) {
    let id = decision_id.to_string();
    let spec = policy.map(|p| &p.document.response);
    let code = spec.and_then(|s| s.status).unwrap_or(403);
    let mut headers: Vec<HeaderValueOption> = spec
        .map(|s| s.headers.iter().map(|(k, v)| header(k, v)).collect())
        .unwrap_or_default();
    headers.push(header(DECISION_HEADER, &id));
    let body = match (policy, spec.and_then(|s| s.body.as_deref())) {
        (_, Some(body)) => body.to_owned(),
        (Some(p), None) => format!("denied by policy {} (decision {id})\n", p.id),
        (None, None) => format!("denied: no policy allows this request (decision {id})\n"),
    };
    let response = CheckResponse {
        status: status(GRPC_PERMISSION_DENIED),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(code),
            }),
            headers,
            body,
        })),
        dynamic_metadata: Some(metadata(&id, policy, revision)),
    };
    (response, code)
}

/// An allow; the headers of every matching enforced allow policy are merged
/// in id order (a later policy's value for the same header wins).
pub fn allow<'p>(
    allows: impl Iterator<Item = &'p Policy>,
    deciding: Option<&Policy>,
    decision_id: &Uuid,
    revision: &str,
) -> CheckResponse {
    let id = decision_id.to_string();
    let mut upstream: Vec<(&str, &str)> = Vec::new();
    let mut remove: Vec<String> = Vec::new();
    let mut downstream: Vec<(&str, &str)> = Vec::new();
    fn set<'a>(list: &mut Vec<(&'a str, &'a str)>, key: &'a str, value: &'a str) {
        match list.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some(slot) => slot.1 = value,
            None => list.push((key, value)),
        }
    }
    for policy in allows {
        let spec = &policy.document.response;
        for (k, v) in &spec.headers {
            set(&mut upstream, k, v);
        }
        for k in &spec.remove_headers {
            if !remove.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                remove.push(k.to_ascii_lowercase());
            }
        }
        for (k, v) in &spec.response_headers {
            set(&mut downstream, k, v);
        }
    }
    let mut headers: Vec<HeaderValueOption> = upstream.iter().map(|(k, v)| header(k, v)).collect();
    headers.push(header(DECISION_HEADER, &id));
    CheckResponse {
        status: status(GRPC_OK),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: remove,
            response_headers_to_add: downstream.iter().map(|(k, v)| header(k, v)).collect(),
            ..Default::default()
        })),
        dynamic_metadata: Some(metadata(&id, deciding, revision)),
    }
}

/// The answer when the sidecar cannot decide (no bundle, a policy failed):
/// `--on-error` says whether that lets the request through.
pub fn unavailable(on_error: Verdict, decision_id: &Uuid, why: &str) -> CheckResponse {
    let id = decision_id.to_string();
    match on_error {
        Verdict::Allow => CheckResponse {
            status: status(GRPC_OK),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![header(DECISION_HEADER, &id)],
                ..Default::default()
            })),
            dynamic_metadata: Some(metadata(&id, None, "")),
        },
        Verdict::Deny => CheckResponse {
            status: status(GRPC_PERMISSION_DENIED),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(ERROR_STATUS),
                }),
                headers: vec![header(DECISION_HEADER, &id)],
                body: format!("authorization unavailable: {why} (decision {id})\n"),
            })),
            dynamic_metadata: Some(metadata(&id, None, "")),
        },
    }
}
