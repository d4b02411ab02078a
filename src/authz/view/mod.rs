//! The input document of docs/bundles.md ("Input document") as a view over a `CheckRequest`.
//!
//! Fields a policy names are answered straight from the protobuf, borrowed
//! where possible. The body is parsed, the metadata converted and the whole
//! document built only when something asks for them, once per request.

mod document;

use super::message::{lookup, text, Attributes, CheckMessage, HttpRequest, Peer};
use crate::policy::input::{resolve_in_document, walk, Field, Input, VarPath};
use crate::policy::logic::Val;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as ProtoValue};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::str::FromStr;

/// Where `principal.*` comes from (`--principal-from`, `--roles-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The peer certificate principal Envoy reports for the downstream.
    Peer,
    /// A claim in Envoy metadata, e.g. the payload `jwt_authn` stores.
    Jwt {
        namespace: String,
        claim: Vec<String>,
    },
    /// A request header set by a trusted gateway.
    Header(String),
    None,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a principal source: use peer, jwt:NAMESPACE:CLAIM or header:NAME")]
pub struct IdentitySourceError(String);

impl FromStr for IdentitySource {
    type Err = IdentitySourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentitySourceError(s.to_owned());
        if s == "peer" {
            return Ok(IdentitySource::Peer);
        }
        if s == "none" || s.is_empty() {
            return Ok(IdentitySource::None);
        }
        if let Some(name) = s.strip_prefix("header:") {
            if name.is_empty() {
                return Err(bad());
            }
            return Ok(IdentitySource::Header(name.to_ascii_lowercase()));
        }
        if let Some(rest) = s.strip_prefix("jwt:") {
            // Namespaces contain dots, claims may too: split at the last ':'.
            let (namespace, claim) = rest.rsplit_once(':').ok_or_else(bad)?;
            if namespace.is_empty() || claim.is_empty() {
                return Err(bad());
            }
            return Ok(IdentitySource::Jwt {
                namespace: namespace.to_owned(),
                claim: claim.split('.').map(str::to_owned).collect(),
            });
        }
        Err(bad())
    }
}

/// How the sidecar derives `principal.*`.
#[derive(Debug, Clone)]
pub struct ViewSettings {
    pub principal_from: IdentitySource,
    pub roles_from: IdentitySource,
}

impl Default for ViewSettings {
    fn default() -> Self {
        ViewSettings {
            principal_from: IdentitySource::Peer,
            roles_from: IdentitySource::None,
        }
    }
}

/// The outcome of looking at the request body.
enum Body {
    Absent,
    Json(Value),
    Invalid(String),
}

pub struct RequestView<'r> {
    attributes: Option<&'r Attributes>,
    http: Option<&'r HttpRequest>,
    settings: &'r ViewSettings,
    now_unix: u64,
    /// The path and query of `:path`, split once (most policies read the
    /// path, some several times).
    target: OnceCell<(&'r str, &'r str)>,
    body: OnceCell<Body>,
    metadata: OnceCell<Value>,
    document: OnceCell<Value>,
}

impl<'r> RequestView<'r> {
    pub fn new(request: &'r CheckMessage, settings: &'r ViewSettings, now_unix: u64) -> Self {
        let attributes = request.attributes.as_ref();
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        RequestView {
            attributes,
            http,
            settings,
            now_unix,
            target: OnceCell::new(),
            body: OnceCell::new(),
            metadata: OnceCell::new(),
            document: OnceCell::new(),
        }
    }

    /// `x-request-id`, else Envoy's own request id.
    pub fn request_id(&self) -> &'r str {
        self.header("x-request-id")
            .or_else(|| self.http.map(|h| text(&h.id)))
            .unwrap_or("")
    }

    fn method(&self) -> &'r str {
        self.http.map_or("", |h| text(&h.method))
    }

    /// Envoy sends the path with its query; the document's path has none.
    fn path(&self) -> &'r str {
        self.target().0
    }

    fn query_string(&self) -> &'r str {
        self.target().1
    }

    /// `(path, query)`: `:path` cut at `?` (the query without a fragment),
    /// or the whole path and ext_authz's separate `query` field.
    fn target(&self) -> (&'r str, &'r str) {
        *self.target.get_or_init(|| {
            let Some(http) = self.http else {
                return ("", "");
            };
            let full = text(&http.path);
            match full.split_once('?') {
                Some((path, q)) => (path, q.split_once('#').map_or(q, |(q, _)| q)),
                None => (full, text(&http.query)),
            }
        })
    }

    /// A request header by lower-case name, from the header map or, when
    /// Envoy encodes raw headers, from `header_map`.
    pub fn header(&self, name: &str) -> Option<&'r str> {
        let http = self.http?;
        if let Some(v) = lookup(&http.headers, name) {
            return Some(text(v));
        }
        let raw = http.header_map.as_ref()?;
        raw.headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| {
                if h.raw_value.is_empty() {
                    text(&h.value)
                } else {
                    text(&h.raw_value)
                }
            })
    }

    fn query_param(&self, name: &str) -> Option<Cow<'r, str>> {
        query_pairs(self.query_string()).find_map(|(k, v)| (k == name).then_some(v))
    }

    fn segments(&self) -> Vec<Val<'r>> {
        self.path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(Val::str)
            .collect()
    }

    fn size(&self) -> f64 {
        match self.http {
            Some(h) if h.size >= 0 => h.size as f64,
            Some(h) => self.raw_body(h).len() as f64,
            None => 0.0,
        }
    }

    fn raw_body<'h>(&self, http: &'h HttpRequest) -> &'h [u8] {
        if http.raw_body.is_empty() {
            &http.body
        } else {
            &http.raw_body
        }
    }

    fn body(&self) -> &Body {
        self.body.get_or_init(|| {
            let Some(http) = self.http else {
                return Body::Absent;
            };
            let bytes = self.raw_body(http);
            let is_json = self
                .header("content-type")
                .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
            if !is_json || bytes.is_empty() {
                return Body::Absent;
            }
            match serde_json::from_slice(bytes) {
                Ok(v) => Body::Json(v),
                Err(e) => Body::Invalid(format!("request body is not valid JSON: {e}")),
            }
        })
    }

    fn peer(&self, source: bool) -> Option<&'r Peer> {
        let a = self.attributes?;
        if source {
            a.source.as_ref()
        } else {
            a.destination.as_ref()
        }
    }

    fn peer_address(&self, source: bool) -> Option<Val<'r>> {
        let address = self.peer(source)?.address.as_ref()?;
        if let Some(socket) = &address.socket_address {
            return Some(Val::str(text(&socket.address)));
        }
        address.pipe.as_ref().map(|pipe| Val::str(text(&pipe.path)))
    }

    fn peer_port(&self, source: bool) -> Option<Val<'r>> {
        let socket = self
            .peer(source)?
            .address
            .as_ref()?
            .socket_address
            .as_ref()?;
        match (&socket.named_port, socket.port_value) {
            (Some(name), _) => Some(Val::str(text(name))),
            (None, Some(port)) => Some(Val::Num(f64::from(port))),
            (None, None) => None,
        }
    }

    fn peer_principal(&self, source: bool) -> Option<Val<'r>> {
        self.peer(source).map(|p| Val::str(text(&p.principal)))
    }

    /// Envoy metadata as JSON, `{namespace: {...}}`.
    fn metadata(&self) -> &Value {
        self.metadata.get_or_init(|| {
            let Some(meta) = self.attributes.and_then(|a| a.metadata_context.as_ref()) else {
                return Value::Object(Map::new());
            };
            Value::Object(
                meta.filter_metadata
                    .iter()
                    .map(|(ns, s)| (ns.clone(), struct_to_json(s)))
                    .collect(),
            )
        })
    }

    fn identity<'s>(&'s self, source: &IdentitySource) -> Option<Val<'s>> {
        match source {
            IdentitySource::Peer => self.peer_principal(true),
            IdentitySource::Header(name) => self.header(name).map(Val::str),
            IdentitySource::Jwt { namespace, claim } => {
                let ns = self.metadata().get(namespace)?;
                let mut value = ns;
                for segment in claim {
                    value = value.get(segment)?;
                }
                Some(Val::from_json(value))
            }
            IdentitySource::None => None,
        }
    }

    fn principal_id(&self) -> Option<Val<'_>> {
        self.identity(&self.settings.principal_from)
    }

    /// Roles as a list: a JSON array claim, or a space/comma separated string.
    fn principal_roles(&self) -> Option<Val<'_>> {
        let roles = self.identity(&self.settings.roles_from)?;
        if roles.is_array() {
            return Some(roles);
        }
        let separated = |c: char| c == ',' || c.is_whitespace();
        // Several policies read the roles of one request: a header's roles
        // are borrowed slices of it, only other values are copied.
        let list = match roles {
            Val::Str(Cow::Borrowed(text)) => text
                .split(separated)
                .filter(|r| !r.is_empty())
                .map(|r| Val::Str(Cow::Borrowed(r)))
                .collect(),
            other => other
                .to_js_string()
                .split(separated)
                .filter(|r| !r.is_empty())
                .map(|r| Val::Str(Cow::Owned(r.to_owned())))
                .collect(),
        };
        Some(Val::List(list))
    }

    /// The whole input document. Only paths that name a whole subtree
    /// (`request`, `request.headers`, `""`) need it.
    pub fn document(&self) -> &Value {
        self.document.get_or_init(|| self.build_document())
    }

    fn build_document(&self) -> Value {
        let mut headers = Map::new();
        if let Some(http) = self.http {
            for entry in &http.headers {
                headers.insert(
                    text(&entry.key).to_owned(),
                    Value::String(text(&entry.value).to_owned()),
                );
            }
            if let Some(raw) = &http.header_map {
                for h in &raw.headers {
                    let key = text(&h.key).to_ascii_lowercase();
                    if !headers.contains_key(&key) {
                        let v = self.header(&key).unwrap_or("");
                        headers.insert(key, Value::String(v.to_owned()));
                    }
                }
            }
        }
        let mut query = Map::new();
        for (k, v) in query_pairs(self.query_string()) {
            query
                .entry(k.into_owned())
                .or_insert_with(|| Value::String(v.into_owned()));
        }
        let mut request = Map::new();
        let put = |m: &mut Map<String, Value>, k: &str, v: Option<Val<'_>>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v.to_json());
            }
        };
        put(&mut request, "id", Some(Val::str(self.request_id())));
        put(&mut request, "method", Some(Val::str(self.method())));
        put(&mut request, "path", Some(Val::str(self.path())));
        put(
            &mut request,
            "host",
            self.http.map(|h| Val::str(text(&h.host))),
        );
        put(
            &mut request,
            "scheme",
            self.http.map(|h| Val::str(text(&h.scheme))),
        );
        put(
            &mut request,
            "protocol",
            self.http.map(|h| Val::str(text(&h.protocol))),
        );
        put(&mut request, "segments", Some(Val::List(self.segments())));
        request.insert("query".into(), Value::Object(query));
        request.insert("headers".into(), Value::Object(headers));
        match self.body() {
            Body::Json(v) => {
                request.insert("body".into(), v.clone());
            }
            Body::Invalid(e) => {
                request.insert("bodyError".into(), Value::String(e.clone()));
            }
            Body::Absent => {}
        }
        put(&mut request, "size", Some(Val::Num(self.size())));

        let peer_doc = |source: bool| {
            let mut m = Map::new();
            if self.peer(source).is_some() {
                put(&mut m, "address", self.peer_address(source));
                put(&mut m, "port", self.peer_port(source));
                put(&mut m, "principal", self.peer_principal(source));
            }
            Value::Object(m)
        };
        let context: Map<String, Value> = self
            .attributes
            .map(|a| {
                a.context_extensions
                    .iter()
                    .map(|e| {
                        (
                            text(&e.key).to_owned(),
                            Value::String(text(&e.value).to_owned()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut principal = Map::new();
        put(&mut principal, "id", self.principal_id());
        put(&mut principal, "roles", self.principal_roles());
        let mut doc = Map::new();
        doc.insert("request".into(), Value::Object(request));
        doc.insert("source".into(), peer_doc(true));
        doc.insert("destination".into(), peer_doc(false));
        doc.insert("context".into(), Value::Object(context));
        doc.insert("metadata".into(), self.metadata().clone());
        doc.insert("principal".into(), Value::Object(principal));
        doc.insert("time".into(), serde_json::json!({ "unix": self.now_unix }));
        Value::Object(doc)
    }
}

impl Input for RequestView<'_> {
    fn resolve<'s>(&'s self, path: &VarPath) -> Option<Val<'s>> {
        let rest = path.rest();
        let leaf = |v: Option<Val<'s>>| v.and_then(|v| walk(v, rest));
        match path.field() {
            Field::Document | Field::Subtree => resolve_in_document(self.document(), path),
            Field::Unknown => None,
            Field::RequestId => leaf(Some(Val::str(self.request_id()))),
            Field::RequestMethod => leaf(Some(Val::str(self.method()))),
            Field::RequestPath => leaf(Some(Val::str(self.path()))),
            Field::RequestHost => leaf(self.http.map(|h| Val::str(text(&h.host)))),
            Field::RequestScheme => leaf(self.http.map(|h| Val::str(text(&h.scheme)))),
            Field::RequestProtocol => leaf(self.http.map(|h| Val::str(text(&h.protocol)))),
            Field::RequestSize => leaf(Some(Val::Num(self.size()))),
            Field::RequestSegments => leaf(Some(Val::List(self.segments()))),
            Field::RequestHeader => leaf(self.header(path.key()).map(Val::str)),
            Field::RequestQuery => leaf(self.query_param(path.key()).map(Val::Str)),
            Field::RequestBody => match self.body() {
                Body::Json(v) => walk(Val::from_json(v), rest),
                _ => None,
            },
            Field::RequestBodyError => match self.body() {
                Body::Invalid(e) => leaf(Some(Val::str(e))),
                _ => None,
            },
            Field::SourceAddress => leaf(self.peer_address(true)),
            Field::SourcePort => leaf(self.peer_port(true)),
            Field::SourcePrincipal => leaf(self.peer_principal(true)),
            Field::DestinationAddress => leaf(self.peer_address(false)),
            Field::DestinationPort => leaf(self.peer_port(false)),
            Field::DestinationPrincipal => leaf(self.peer_principal(false)),
            Field::ContextKey => leaf(
                self.attributes
                    .and_then(|a| lookup(&a.context_extensions, path.key()))
                    .map(|v| Val::str(text(v))),
            ),
            Field::Metadata => {
                let namespaces = self.metadata();
                path.metadata_split().find_map(|(ns, rest)| {
                    namespaces.get(ns).map(|v| walk(Val::from_json(v), rest))
                })?
            }
            Field::PrincipalId => leaf(self.principal_id()),
            Field::PrincipalRoles => leaf(self.principal_roles()),
            Field::TimeUnix => leaf(Some(Val::Num(self.now_unix as f64))),
        }
    }
}

/// The `name=value` pairs of a query string, percent-decoded, in order
/// (empty pairs skipped; a name without `=` has an empty value).
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k), decode_component(v))
    })
}

/// Percent-decode a query component; `+` is a space (form encoding, as
/// Go's `url.ParseQuery` does for OPA users).
fn decode_component(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

pub fn struct_to_json(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), proto_to_json(v)))
            .collect(),
    )
}

fn proto_to_json(v: &ProtoValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => crate::policy::logic::value::number_to_json(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(proto_to_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use envoy_types::pb::envoy::config::core::v3::{
        Address as CoreAddress, Metadata, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use serde_json::json;

    fn peer(ip: &str, port: u32, principal: &str) -> Peer {
        Peer {
            address: Some(CoreAddress {
                address: Some(Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            principal: principal.into(),
            ..Default::default()
        }
    }

    fn sample(body: &str) -> CheckMessage {
        CheckMessage::from_envoy(&sample_envoy(body))
    }

    fn sample_envoy(body: &str) -> CheckRequest {
        let headers = [
            ("x-request-id", "rid-1"),
            ("content-type", "application/json"),
            ("x-user", "alice"),
            ("x-roles", "editor, admin"),
        ];
        let jwt = json!({"jwt_payload": {"sub": "bob", "roles": ["auditor"], "n": 3}});
        let jwt_struct = Struct {
            fields: jwt
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), json_to_proto(v)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer("10.1.2.3", 41000, "spiffe://cluster/ns/a/sa/client")),
                destination: Some(peer("10.9.9.9", 8080, "spiffe://cluster/ns/k/sa/kernel")),
                request: Some(Request {
                    http: Some(HttpRequest {
                        id: "envoy-id".into(),
                        method: "POST".into(),
                        path: "/v1/kernels/k1/run?dry=true&name=a%20b&tag=x+y&dry=false".into(),
                        host: "kernel.local".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/1.1".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        raw_body: body.as_bytes().to_vec(),
                        size: body.len() as i64,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: [("tenant".to_string(), "acme".to_string())]
                    .into_iter()
                    .collect(),
                metadata_context: Some(Metadata {
                    filter_metadata: [("envoy.filters.http.jwt_authn".to_string(), jwt_struct)]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn json_to_proto(v: &Value) -> ProtoValue {
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(envoy_types::pb::google::protobuf::ListValue {
                values: a.iter().map(json_to_proto).collect(),
            }),
            Value::Object(m) => Kind::StructValue(Struct {
                fields: m
                    .iter()
                    .map(|(k, v)| (k.clone(), json_to_proto(v)))
                    .collect(),
            }),
        };
        ProtoValue { kind: Some(kind) }
    }

    const PATHS: &[&str] = &[
        "request.id",
        "request.method",
        "request.path",
        "request.host",
        "request.scheme",
        "request.protocol",
        "request.size",
        "request.segments",
        "request.segments.1",
        "request.query.dry",
        "request.query.name",
        "request.query.tag",
        "request.query.none",
        "request.headers.x-user",
        "request.headers.missing",
        "request.headers",
        "request.body",
        "request.body.amount",
        "request.body.items.0.sku",
        "request.bodyError",
        "source.address",
        "source.port",
        "source.principal",
        "destination.address",
        "destination.port",
        "context.tenant",
        "context.none",
        "metadata.envoy.filters.http.jwt_authn.jwt_payload.sub",
        "metadata.envoy.filters.http.jwt_authn.jwt_payload.roles.0",
        "metadata.envoy.filters.http.jwt_authn",
        "principal.id",
        "principal.roles",
        "principal.roles.1",
        "time.unix",
        "time",
        "request",
        "nosuch",
        "request.nosuch",
        "",
    ];

    /// Every path answers the same from the typed view as from the
    /// materialised document: the fast paths cannot drift from the documented input document.
    #[test]
    fn typed_view_answers_exactly_what_the_document_answers() {
        for body in [
            r#"{"amount": 12000, "items": [{"sku": "A1"}]}"#,
            "{broken",
            "",
        ] {
            for settings in [
                ViewSettings::default(),
                ViewSettings {
                    principal_from: "header:x-user".parse().unwrap(),
                    roles_from: "header:x-roles".parse().unwrap(),
                },
                ViewSettings {
                    principal_from: "jwt:envoy.filters.http.jwt_authn:jwt_payload.sub"
                        .parse()
                        .unwrap(),
                    roles_from: "jwt:envoy.filters.http.jwt_authn:jwt_payload.roles"
                        .parse()
                        .unwrap(),
                },
            ] {
                let request = sample(body);
                let view = RequestView::new(&request, &settings, 1_795_000_000);
                let document = view.document().clone();
                for raw in PATHS {
                    let path = VarPath::parse(raw);
                    let fast = view.resolve(&path).map(|v| v.to_json());
                    let slow = document.resolve(&path).map(|v| v.to_json());
                    assert_eq!(
                        fast, slow,
                        "path {raw:?} with body {body:?} and {settings:?}"
                    );
                }
            }
        }
    }

    /// The canonical writer behind recorded inputs writes, byte for byte,
    /// the materialised document serialised: one document, two forms.
    #[test]
    fn the_recorded_input_is_the_document_byte_for_byte() {
        use crate::audit::inputs::Masks;
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        let mut raw_headers = sample_envoy("{}");
        if let Some(http) = raw_headers
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            // Raw headers: one new (mixed case), one already in the map, one repeated.
            http.header_map = Some(HeaderMap {
                headers: ["X-Trace", "x-user", "x-trace", "Accept"]
                    .iter()
                    .enumerate()
                    .map(|(i, k)| HeaderValue {
                        key: (*k).into(),
                        raw_value: format!("v{i}").into_bytes(),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
        let mut requests = vec![CheckMessage::from_envoy(&raw_headers)];
        requests.push(CheckMessage::from_envoy(&CheckRequest::default()));
        for body in [
            r#"{"amount": 12000, "items": [{"sku": "A1"}], "é\"x": null}"#,
            "{broken",
            "",
        ] {
            requests.push(sample(body));
        }
        // Repeated names on the wire: a header map entry (the last wins, as
        // protobuf maps do) and a query parameter (the first wins).
        let mut repeated = sample("{}");
        if let Some(http) = repeated
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            for (key, value) in [("x-user", "first"), ("x-dup", "1"), ("x-user", "last")] {
                http.headers.push(crate::authz::message::Entry {
                    key: key.into(),
                    value: value.into(),
                });
            }
            http.path = "/v1/kernels/k1?dry=1&b=2&dry=2".into();
        }
        requests.push(repeated);
        let no_masks = Masks::default();
        for request in &requests {
            for settings in [
                ViewSettings::default(),
                ViewSettings {
                    principal_from: "header:x-user".parse().unwrap(),
                    roles_from: "jwt:envoy.filters.http.jwt_authn:jwt_payload.roles"
                        .parse()
                        .unwrap(),
                },
            ] {
                let view = RequestView::new(request, &settings, 1_795_000_000);
                let mut written = Vec::new();
                let hits = view.write_document(no_masks.root(), &mut written);
                let expected = serde_json::to_string(view.document()).unwrap();
                assert_eq!(String::from_utf8(written).unwrap(), expected);
                assert_eq!(hits, 0);
            }
        }

        // Masks leave out exactly their paths, at any depth.
        let masks = Masks::with_defaults(&[
            "request.body.items.0.sku".into(),
            "source.principal".into(),
            "request.query.dry".into(),
        ])
        .unwrap();
        let request = sample(r#"{"amount": 1, "items": [{"sku": "A1", "n": 2}]}"#);
        let settings = ViewSettings::default();
        let view = RequestView::new(&request, &settings, 7);
        let mut written = Vec::new();
        let hits = view.write_document(masks.root(), &mut written);
        let mut expected = view.document().clone();
        expected["request"]["body"]["items"][0]
            .as_object_mut()
            .unwrap()
            .remove("sku");
        expected["source"]
            .as_object_mut()
            .unwrap()
            .remove("principal");
        expected["request"]["query"]
            .as_object_mut()
            .unwrap()
            .remove("dry");
        assert_eq!(serde_json::from_slice::<Value>(&written).unwrap(), expected);
        assert_eq!(
            masks.named(hits),
            vec![
                "request.body.items.0.sku",
                "source.principal",
                "request.query.dry"
            ]
        );
    }

    #[test]
    fn view_fields_follow_the_spec() {
        let settings = ViewSettings {
            principal_from: "jwt:envoy.filters.http.jwt_authn:jwt_payload.sub"
                .parse()
                .unwrap(),
            roles_from: "header:x-roles".parse().unwrap(),
        };
        let request = sample(r#"{"amount": 5}"#);
        let view = RequestView::new(&request, &settings, 7);
        let get = |p: &str| view.resolve(&VarPath::parse(p)).map(|v| v.to_json());
        assert_eq!(get("request.id"), Some(json!("rid-1")));
        assert_eq!(get("request.path"), Some(json!("/v1/kernels/k1/run")));
        assert_eq!(
            get("request.segments"),
            Some(json!(["v1", "kernels", "k1", "run"]))
        );
        assert_eq!(
            get("request.query.dry"),
            Some(json!("true")),
            "first value wins"
        );
        assert_eq!(get("request.query.name"), Some(json!("a b")));
        assert_eq!(get("request.query.tag"), Some(json!("x y")));
        assert_eq!(get("request.body.amount"), Some(json!(5)));
        assert_eq!(get("principal.id"), Some(json!("bob")));
        assert_eq!(get("principal.roles"), Some(json!(["editor", "admin"])));
        assert_eq!(get("source.port"), Some(json!(41000)));
        assert_eq!(get("time.unix"), Some(json!(7)));

        let broken = sample("{broken");
        let view = RequestView::new(&broken, &settings, 7);
        assert!(view.resolve(&VarPath::parse("request.body")).is_none());
        let error = view
            .resolve(&VarPath::parse("request.bodyError"))
            .map(|v| v.to_json());
        assert!(error.is_some_and(|e| e.as_str().is_some_and(|s| s.contains("not valid JSON"))));
    }

    #[test]
    fn identity_sources_parse_or_fail_clearly() {
        assert_eq!(
            "jwt:envoy.filters.http.jwt_authn:payload.sub"
                .parse::<IdentitySource>()
                .unwrap(),
            IdentitySource::Jwt {
                namespace: "envoy.filters.http.jwt_authn".into(),
                claim: vec!["payload".into(), "sub".into()],
            }
        );
        assert!("cookie:x".parse::<IdentitySource>().is_err());
        assert!("jwt:only".parse::<IdentitySource>().is_err());
        assert!("header:".parse::<IdentitySource>().is_err());
    }
}
