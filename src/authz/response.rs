//! Envoy `CheckResponse`s for a decision, encoded straight to protobuf.
//!
//! A response is described by an [`Answer`] that borrows from the policy
//! that decided, and written to the wire in one pass. The in-process Envoy
//! module (`envoy/module/`) applies the same `Answer` through Envoy's
//! filter callbacks instead, so both paths answer alike. Building the
//! envoy-types message instead cost a `String` per header and per metadata
//! field plus a hashed `Struct` map, for a message that is encoded once and
//! dropped. Field numbers are those of `envoy.service.auth.v3.CheckResponse`;
//! the tests decode what is written with envoy-types and compare.

use crate::decision::{DecisionEvent, ERROR_STATUS};
use crate::policy::{Policy, Reason, Verdict};
use bytes::BufMut;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use std::borrow::Cow;
use uuid::Uuid;

/// Header that carries the decision id to the upstream (allow) or the
/// client (deny), so a 403 can be looked up in the decision log.
pub const DECISION_HEADER: &str = "x-sentinel-decision-id";

const GRPC_OK: u64 = 0;
const GRPC_PERMISSION_DENIED: u64 = 7;
const OVERWRITE_IF_EXISTS_OR_ADD: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

/// A decision id in its text form, without allocating.
pub struct DecisionIdText([u8; 36]);

impl DecisionIdText {
    pub fn new(id: &Uuid) -> DecisionIdText {
        let mut text = [0u8; 36];
        id.hyphenated().encode_lower(&mut text);
        DecisionIdText(text)
    }

    pub fn as_str(&self) -> &str {
        // A hyphenated UUID is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Everything a `CheckResponse` says, borrowed.
pub struct Answer<'a> {
    verdict: Verdict,
    /// The denied response's HTTP status (unused when allowed).
    status: u16,
    /// Added upstream (allow) or to the client's response (deny); the
    /// decision-id header comes last.
    headers: Vec<(&'a str, &'a str)>,
    remove: Vec<Cow<'a, str>>,
    response_headers: Vec<(&'a str, &'a str)>,
    body: Cow<'a, str>,
    decision_id: &'a str,
    policy: Option<&'a Policy>,
    revision: &'a str,
}

/// The response for a decision: written from the event, so the status the
/// client sees is the one the record and `eval` report.
pub fn for_decision<'a>(event: &'a DecisionEvent, decision_id: &'a str) -> Answer<'a> {
    let (Some(bundle), Some(outcome)) = (&event.bundle, &event.outcome) else {
        return unavailable(
            event.verdict,
            decision_id,
            "no policy bundle is active",
            None,
            "",
        );
    };
    let policies = &bundle.policies;
    let deciding = outcome.deciding.map(|i| policies.get(i));
    let revision: &str = &bundle.revision;
    match (event.verdict, event.reason) {
        (verdict, Reason::Error) => unavailable(
            verdict,
            decision_id,
            "a policy could not be evaluated",
            deciding,
            revision,
        ),
        (Verdict::Deny, _) => deny(deciding, event.status, decision_id, revision),
        (Verdict::Allow, _) => allow(
            outcome.enforced_allows(policies),
            deciding,
            decision_id,
            revision,
        ),
    }
}

/// A denial by a policy (or by the default when `policy` is `None`) with
/// the status the decision settled on.
fn deny<'a>(
    policy: Option<&'a Policy>,
    status: u16,
    decision_id: &'a str,
    revision: &'a str,
) -> Answer<'a> {
    let spec = policy.map(|p| &p.document.response);
    let mut headers: Vec<(&str, &str)> = spec
        .map(|s| {
            s.headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    headers.push((DECISION_HEADER, decision_id));
    let body = match (policy, spec.and_then(|s| s.body.as_deref())) {
        (_, Some(body)) => Cow::Borrowed(body),
        (Some(p), None) => Cow::Owned(format!(
            "denied by policy {} (decision {decision_id})\n",
            p.id
        )),
        (None, None) => Cow::Owned(format!(
            "denied: no policy allows this request (decision {decision_id})\n"
        )),
    };
    Answer {
        verdict: Verdict::Deny,
        status,
        headers,
        remove: Vec::new(),
        response_headers: Vec::new(),
        body,
        decision_id,
        policy,
        revision,
    }
}

/// An allow; the headers of every matching enforced allow policy are merged
/// in id order (a later policy's value for the same header wins).
fn allow<'a>(
    allows: impl Iterator<Item = &'a Policy>,
    deciding: Option<&'a Policy>,
    decision_id: &'a str,
    revision: &'a str,
) -> Answer<'a> {
    let mut upstream: Vec<(&str, &str)> = Vec::new();
    let mut remove: Vec<Cow<'a, str>> = Vec::new();
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
                remove.push(if k.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(k.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(k)
                });
            }
        }
        for (k, v) in &spec.response_headers {
            set(&mut downstream, k, v);
        }
    }
    upstream.push((DECISION_HEADER, decision_id));
    Answer {
        verdict: Verdict::Allow,
        status: 200,
        headers: upstream,
        remove,
        response_headers: downstream,
        body: Cow::Borrowed(""),
        decision_id,
        policy: deciding,
        revision,
    }
}

/// The answer when the sidecar cannot decide (no bundle, a policy failed):
/// `--on-error` says whether that lets the request through. The metadata
/// names the policy that failed and the active bundle's revision, as the
/// record does, so an access log line joins to it.
fn unavailable<'a>(
    on_error: Verdict,
    decision_id: &'a str,
    why: &str,
    policy: Option<&'a Policy>,
    revision: &'a str,
) -> Answer<'a> {
    Answer {
        verdict: on_error,
        status: ERROR_STATUS,
        headers: vec![(DECISION_HEADER, decision_id)],
        remove: Vec::new(),
        response_headers: Vec::new(),
        body: match on_error {
            Verdict::Allow => Cow::Borrowed(""),
            Verdict::Deny => Cow::Owned(format!(
                "authorization unavailable: {why} (decision {decision_id})\n"
            )),
        },
        decision_id,
        policy,
        revision,
    }
}

// ------------------------------------------------------------ wire encoding

fn str_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str_field(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

fn varint_field_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_varint_field(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// A present sub-message of `len` bytes, with its key and length.
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_nested_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// `HeaderValueOption { header: HeaderValue { key, value }, append_action }`.
fn header_option_body_len(key: &str, value: &str) -> usize {
    nested_len(1, str_field_len(1, key) + str_field_len(2, value))
        + varint_field_len(3, OVERWRITE_IF_EXISTS_OR_ADD)
}

fn headers_len(tag: u32, headers: &[(&str, &str)]) -> usize {
    headers
        .iter()
        .map(|(k, v)| nested_len(tag, header_option_body_len(k, v)))
        .sum()
}

fn put_headers(tag: u32, headers: &[(&str, &str)], buf: &mut impl BufMut) {
    for (key, value) in headers {
        put_nested_header(tag, header_option_body_len(key, value), buf);
        put_nested_header(1, str_field_len(1, key) + str_field_len(2, value), buf);
        put_str_field(1, key, buf);
        put_str_field(2, value, buf);
        put_varint_field(3, OVERWRITE_IF_EXISTS_OR_ADD, buf);
    }
}

/// A `google.protobuf.Value`: the oneof member is written even when empty.
impl MetadataField<'_> {
    fn body_len(&self) -> usize {
        match self {
            MetadataField::Null => key_len(1) + 1,
            MetadataField::Number(_) => key_len(2) + 8,
            MetadataField::Text(s) => key_len(3) + encoded_len_varint(s.len() as u64) + s.len(),
        }
    }

    fn put(&self, buf: &mut impl BufMut) {
        match self {
            MetadataField::Null => {
                encode_key(1, WireType::Varint, buf);
                encode_varint(0, buf);
            }
            MetadataField::Number(n) => {
                encode_key(2, WireType::SixtyFourBit, buf);
                buf.put_f64_le(*n);
            }
            MetadataField::Text(s) => {
                encode_key(3, WireType::LengthDelimited, buf);
                encode_varint(s.len() as u64, buf);
                buf.put_slice(s.as_bytes());
            }
        }
    }
}

/// A dynamic metadata value.
pub enum MetadataField<'a> {
    Text(&'a str),
    Number(f64),
    Null,
}

impl<'a> Answer<'a> {
    /// Whether the request goes on.
    pub fn allows(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The denied response's HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Allowed: headers set on the upstream request. Denied: headers of
    /// the response sent to the client. The decision-id header is last.
    pub fn headers(&self) -> &[(&'a str, &'a str)] {
        &self.headers
    }

    /// Allowed: request headers removed before the upstream sees them.
    pub fn removed_headers(&self) -> impl Iterator<Item = &str> {
        self.remove.iter().map(|r| r.as_ref())
    }

    /// Allowed: headers added to the upstream's response to the client.
    pub fn response_headers(&self) -> &[(&'a str, &'a str)] {
        &self.response_headers
    }

    /// Denied: the body sent to the client.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// `decisionId`, `policyId`, `policyVersion`, `bundleRevision`: the
    /// dynamic metadata both paths set.
    pub fn metadata_fields(&self) -> [(&'static str, MetadataField<'_>); 4] {
        [
            ("decisionId", MetadataField::Text(self.decision_id)),
            (
                "policyId",
                self.policy
                    .map_or(MetadataField::Null, |p| MetadataField::Text(&p.id)),
            ),
            (
                "policyVersion",
                self.policy.map_or(MetadataField::Null, |p| {
                    MetadataField::Number(p.version() as f64)
                }),
            ),
            ("bundleRevision", MetadataField::Text(self.revision)),
        ]
    }
}

impl Answer<'_> {
    /// `Struct { fields: map<string, Value> }` as map entries.
    fn metadata_body_len(&self) -> usize {
        self.metadata_fields()
            .iter()
            .map(|(k, v)| nested_len(1, str_field_len(1, k) + nested_len(2, v.body_len())))
            .sum()
    }

    fn status_body_len(&self) -> usize {
        match self.verdict {
            Verdict::Allow => varint_field_len(1, GRPC_OK),
            Verdict::Deny => varint_field_len(1, GRPC_PERMISSION_DENIED),
        }
    }

    /// `OkHttpResponse` or `DeniedHttpResponse`.
    fn http_body_len(&self) -> usize {
        match self.verdict {
            Verdict::Allow => {
                headers_len(2, &self.headers)
                    + self
                        .remove
                        .iter()
                        .map(|r| str_field_len(5, r))
                        .sum::<usize>()
                    + headers_len(6, &self.response_headers)
            }
            Verdict::Deny => {
                nested_len(1, varint_field_len(1, u64::from(self.status)))
                    + headers_len(2, &self.headers)
                    + str_field_len(3, &self.body)
            }
        }
    }

    /// Bytes [`Answer::encode`] writes (the tests hold the encoder to it).
    #[cfg(test)]
    fn encoded_len(&self) -> usize {
        nested_len(1, self.status_body_len())
            + nested_len(2, self.http_body_len())
            + nested_len(4, self.metadata_body_len())
    }

    /// Write the `CheckResponse`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_nested_header(1, self.status_body_len(), buf);
        match self.verdict {
            Verdict::Allow => {
                put_varint_field(1, GRPC_OK, buf);
                put_nested_header(3, self.http_body_len(), buf);
                put_headers(2, &self.headers, buf);
                for name in &self.remove {
                    put_str_field(5, name, buf);
                }
                put_headers(6, &self.response_headers, buf);
            }
            Verdict::Deny => {
                put_varint_field(1, GRPC_PERMISSION_DENIED, buf);
                put_nested_header(2, self.http_body_len(), buf);
                let status = varint_field_len(1, u64::from(self.status));
                put_nested_header(1, status, buf);
                put_varint_field(1, u64::from(self.status), buf);
                put_headers(2, &self.headers, buf);
                put_str_field(3, &self.body, buf);
            }
        }
        put_nested_header(4, self.metadata_body_len(), buf);
        for (key, value) in self.metadata_fields() {
            put_nested_header(
                1,
                str_field_len(1, key) + nested_len(2, value.body_len()),
                buf,
            );
            put_str_field(1, key, buf);
            put_nested_header(2, value.body_len(), buf);
            value.put(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyDocument;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
    use envoy_types::pb::google::protobuf::value::Kind;
    use prost::Message;
    use serde_json::json;

    fn decode(answer: &Answer<'_>) -> CheckResponse {
        let mut buf = Vec::new();
        answer.encode(&mut buf);
        assert_eq!(buf.len(), answer.encoded_len(), "encoded_len is exact");
        CheckResponse::decode(buf.as_slice()).expect("envoy-types decodes what we write")
    }

    fn policy(response: serde_json::Value) -> Policy {
        let document: PolicyDocument = serde_json::from_value(json!({
            "id": "p.one", "version": 7, "severity": "LOW", "state": "active",
            "effect": "allow", "when": true, "response": response
        }))
        .expect("document");
        Policy::compile(document).expect("compiles")
    }

    fn headers(
        list: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
    ) -> Vec<(String, String, i32)> {
        list.iter()
            .map(|h| {
                let hv = h.header.clone().unwrap_or_default();
                (hv.key, hv.value, h.append_action)
            })
            .collect()
    }

    fn metadata(response: &CheckResponse) -> Vec<(String, Option<Kind>)> {
        let mut fields: Vec<_> = response
            .dynamic_metadata
            .clone()
            .unwrap_or_default()
            .fields
            .into_iter()
            .map(|(k, v)| (k, v.kind))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields
    }

    const ID: &str = "019ab2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";
    const OVERWRITE: i32 = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;

    #[test]
    fn an_allow_decodes_with_headers_removals_and_metadata() {
        let a = policy(json!({"headers": {"x-a": "1", "x-empty": ""},
                              "removeHeaders": ["X-Debug"], "responseHeaders": {"x-p": "one"}}));
        let response = decode(&allow([&a].into_iter(), Some(&a), ID, "r9"));
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("{response:?}");
        };
        assert_eq!(
            headers(&ok.headers),
            vec![
                ("x-a".into(), "1".into(), OVERWRITE),
                ("x-empty".into(), "".into(), OVERWRITE),
                (DECISION_HEADER.into(), ID.into(), OVERWRITE),
            ]
        );
        assert_eq!(ok.headers_to_remove, vec!["x-debug".to_string()]);
        assert_eq!(
            headers(&ok.response_headers_to_add),
            vec![("x-p".into(), "one".into(), OVERWRITE)]
        );
        assert_eq!(
            metadata(&response),
            vec![
                (
                    "bundleRevision".into(),
                    Some(Kind::StringValue("r9".into()))
                ),
                ("decisionId".into(), Some(Kind::StringValue(ID.into()))),
                ("policyId".into(), Some(Kind::StringValue("p.one".into()))),
                ("policyVersion".into(), Some(Kind::NumberValue(7.0))),
            ]
        );
    }

    #[test]
    fn a_deny_decodes_with_status_body_headers_and_null_metadata() {
        let p = policy(json!({"status": 451, "body": "no", "headers": {"x-reason": "law"}}));
        let response = decode(&deny(Some(&p), 451, ID, "r1"));
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(7));
        let Some(HttpResponse::DeniedResponse(no)) = &response.http_response else {
            panic!("{response:?}");
        };
        assert_eq!(no.status.as_ref().map(|s| s.code), Some(451));
        assert_eq!(no.body, "no");
        assert_eq!(
            headers(&no.headers),
            vec![
                ("x-reason".into(), "law".into(), OVERWRITE),
                (DECISION_HEADER.into(), ID.into(), OVERWRITE),
            ]
        );

        let by_default = decode(&deny(None, 403, ID, ""));
        let Some(HttpResponse::DeniedResponse(no)) = &by_default.http_response else {
            panic!("{by_default:?}");
        };
        assert_eq!(no.status.as_ref().map(|s| s.code), Some(403));
        assert!(no.body.contains(ID), "{}", no.body);
        assert_eq!(
            metadata(&by_default),
            vec![
                ("bundleRevision".into(), Some(Kind::StringValue("".into()))),
                ("decisionId".into(), Some(Kind::StringValue(ID.into()))),
                ("policyId".into(), Some(Kind::NullValue(0))),
                ("policyVersion".into(), Some(Kind::NullValue(0))),
            ]
        );
    }

    #[test]
    fn unavailable_follows_on_error_and_sizes_grow_past_one_byte_lengths() {
        let closed = decode(&unavailable(Verdict::Deny, ID, &"x".repeat(300), None, ""));
        let Some(HttpResponse::DeniedResponse(no)) = &closed.http_response else {
            panic!("{closed:?}");
        };
        assert_eq!(no.status.as_ref().map(|s| s.code), Some(503));
        assert!(no.body.len() > 300, "a 2-byte length prefix round-trips");
        let open = decode(&unavailable(Verdict::Allow, ID, "why", None, ""));
        assert_eq!(open.status.as_ref().map(|s| s.code), Some(0));
        assert!(matches!(
            open.http_response,
            Some(HttpResponse::OkResponse(_))
        ));
        assert_eq!(DecisionIdText::new(&Uuid::nil()).as_str().len(), 36);
        // A policy that failed under an active bundle: the metadata names
        // them, as the record does.
        let failed = policy(json!({}));
        let named = decode(&unavailable(Verdict::Deny, ID, "why", Some(&failed), "r4"));
        assert_eq!(
            metadata(&named),
            vec![
                (
                    "bundleRevision".into(),
                    Some(Kind::StringValue("r4".into()))
                ),
                ("decisionId".into(), Some(Kind::StringValue(ID.into()))),
                ("policyId".into(), Some(Kind::StringValue("p.one".into()))),
                ("policyVersion".into(), Some(Kind::NumberValue(7.0))),
            ]
        );
    }
}
