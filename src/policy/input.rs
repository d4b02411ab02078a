//! What a `var` sees. Paths are split and classified once, when a rule is
//! compiled, against the input document (docs/bundles.md); an [`Input`] answers
//! them. A plain JSON document is one input (the `eval`/`test` commands, the
//! conformance suite); the CheckRequest view in `authz` is the other, and it
//! answers the classified fields straight from the protobuf.

use super::logic::value::Val;
use serde_json::Value;

/// The fields of the input document (docs/bundles.md) a path can start with.
/// `segments[..prefix_len]` name the field; the rest walk into its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The whole document (`{"var": ""}`).
    Document,
    /// A path that does not start with a known field: always undefined.
    Unknown,
    /// A whole sub-document (`request`, `request.headers`, `source`, ...):
    /// answered from the materialised document.
    Subtree,
    RequestId,
    RequestMethod,
    RequestPath,
    RequestHost,
    RequestScheme,
    RequestProtocol,
    RequestSize,
    RequestSegments,
    /// `request.headers.NAME` (NAME is `segments[2]`).
    RequestHeader,
    /// `request.query.NAME` (NAME is `segments[2]`).
    RequestQuery,
    RequestBody,
    RequestBodyError,
    SourceAddress,
    SourcePort,
    SourcePrincipal,
    DestinationAddress,
    DestinationPort,
    DestinationPrincipal,
    /// `context.KEY` (KEY is `segments[1]`).
    ContextKey,
    /// `metadata.NAMESPACE...`: see [`VarPath::metadata_split`].
    Metadata,
    PrincipalId,
    PrincipalRoles,
    TimeUnix,
}

/// A `var` path compiled once: split on `.`, classified.
#[derive(Debug, Clone)]
pub struct VarPath {
    raw: Box<str>,
    segments: Box<[Box<str>]>,
    field: Field,
    prefix_len: usize,
    /// For `metadata.*`: (namespace, index of the first segment after it),
    /// longest namespace first, because Envoy namespaces contain dots
    /// (`envoy.filters.http.jwt_authn`).
    metadata_namespaces: Box<[(Box<str>, usize)]>,
}

impl VarPath {
    pub fn parse(raw: &str) -> VarPath {
        let segments: Box<[Box<str>]> = if raw.is_empty() {
            Box::new([])
        } else {
            raw.split('.').map(Box::from).collect()
        };
        let (field, prefix_len) = classify(&segments);
        let metadata_namespaces = if field == Field::Metadata {
            (2..segments.len() + 1)
                .rev()
                .map(|end| (segments[1..end].join(".").into_boxed_str(), end))
                .collect()
        } else {
            Box::default()
        };
        VarPath {
            raw: raw.into(),
            segments,
            field,
            prefix_len,
            metadata_namespaces,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn segments(&self) -> &[Box<str>] {
        &self.segments
    }

    pub fn field(&self) -> Field {
        self.field
    }

    /// The segments after the classified field.
    pub fn rest(&self) -> &[Box<str>] {
        &self.segments[self.prefix_len.min(self.segments.len())..]
    }

    /// The name under a keyed field (`request.headers.NAME`, `context.KEY`).
    pub fn key(&self) -> &str {
        match self.field {
            Field::ContextKey => &self.segments[1],
            _ => self.segments.get(2).map_or("", |s| s),
        }
    }

    /// Candidate (namespace, rest) splits of a `metadata.*` path.
    pub fn metadata_split(&self) -> impl Iterator<Item = (&str, &[Box<str>])> {
        self.metadata_namespaces
            .iter()
            .map(|(ns, end)| (ns.as_ref(), &self.segments[*end..]))
    }
}

fn classify(segments: &[Box<str>]) -> (Field, usize) {
    use Field::*;
    let seg = |i: usize| segments.get(i).map(|s| s.as_ref());
    match (seg(0), seg(1)) {
        (None, _) => (Document, 0),
        (Some("request"), None) => (Subtree, 1),
        (Some("request"), Some(second)) => match second {
            "id" => (RequestId, 2),
            "method" => (RequestMethod, 2),
            "path" => (RequestPath, 2),
            "host" => (RequestHost, 2),
            "scheme" => (RequestScheme, 2),
            "protocol" => (RequestProtocol, 2),
            "size" => (RequestSize, 2),
            "segments" => (RequestSegments, 2),
            "body" => (RequestBody, 2),
            "bodyError" => (RequestBodyError, 2),
            "headers" if segments.len() == 2 => (Subtree, 2),
            "headers" => (RequestHeader, 3),
            "query" if segments.len() == 2 => (Subtree, 2),
            "query" => (RequestQuery, 3),
            _ => (Unknown, 2),
        },
        (Some("source" | "destination"), None) => (Subtree, 1),
        (Some(peer @ ("source" | "destination")), Some(second)) => {
            let source = peer == "source";
            match second {
                "address" => (
                    if source {
                        SourceAddress
                    } else {
                        DestinationAddress
                    },
                    2,
                ),
                "port" => (if source { SourcePort } else { DestinationPort }, 2),
                "principal" => (
                    if source {
                        SourcePrincipal
                    } else {
                        DestinationPrincipal
                    },
                    2,
                ),
                _ => (Unknown, 2),
            }
        }
        (Some("context"), None) => (Subtree, 1),
        (Some("context"), Some(_)) => (ContextKey, 2),
        (Some("metadata"), None) => (Subtree, 1),
        (Some("metadata"), Some(_)) => (Metadata, 1),
        (Some("principal"), None) => (Subtree, 1),
        (Some("principal"), Some("id")) => (PrincipalId, 2),
        (Some("principal"), Some("roles")) => (PrincipalRoles, 2),
        (Some("time"), None) => (Subtree, 1),
        (Some("time"), Some("unix")) => (TimeUnix, 2),
        _ => (Unknown, segments.len()),
    }
}

/// What answers `var` lookups at the top level of a rule.
pub trait Input {
    /// The value at `path`, or `None` when it is undefined (which is what
    /// makes `var` fall back to its default and `missing` report the key).
    fn resolve<'s>(&'s self, path: &VarPath) -> Option<Val<'s>>;
}

/// A plain input document.
impl Input for Value {
    fn resolve<'s>(&'s self, path: &VarPath) -> Option<Val<'s>> {
        resolve_in_document(self, path)
    }
}

/// Resolve a path in a JSON input document with `var` semantics, including
/// the dotted-namespace rule for `metadata.*`.
pub fn resolve_in_document<'s>(doc: &'s Value, path: &VarPath) -> Option<Val<'s>> {
    if path.field == Field::Metadata {
        if let Some(Value::Object(namespaces)) = doc.get("metadata") {
            for (ns, rest) in path.metadata_split() {
                if let Some(value) = namespaces.get(ns) {
                    return walk(Val::from_json(value), rest);
                }
            }
        }
        return None;
    }
    walk(Val::from_json(doc), path.segments())
}

/// Walk `segments` down from `start`. An undefined or null step makes the
/// whole path undefined; a final null is returned as null (json-logic-js).
pub fn walk<'s>(start: Val<'s>, segments: &[Box<str>]) -> Option<Val<'s>> {
    let mut current = start;
    for segment in segments {
        current = current.member(segment)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_known_fields_and_keys() {
        let p = VarPath::parse("request.headers.x-user");
        assert_eq!(p.field(), Field::RequestHeader);
        assert_eq!(p.key(), "x-user");
        let p = VarPath::parse("request.body.items.0.sku");
        assert_eq!(p.field(), Field::RequestBody);
        assert_eq!(p.rest().len(), 3);
        assert_eq!(VarPath::parse("nosuch.thing").field(), Field::Unknown);
        assert_eq!(VarPath::parse("").field(), Field::Document);
    }

    #[test]
    fn metadata_namespaces_with_dots_resolve_longest_first() {
        let doc = json!({"metadata": {"envoy.filters.http.jwt_authn": {"jwt_payload": {"sub": "alice"}}}});
        let p = VarPath::parse("metadata.envoy.filters.http.jwt_authn.jwt_payload.sub");
        assert_eq!(doc.resolve(&p).map(|v| v.to_json()), Some(json!("alice")));
    }

    #[test]
    fn null_midway_is_undefined_but_final_null_is_null() {
        let doc = json!({"a": null});
        assert!(doc.resolve(&VarPath::parse("a.b")).is_none());
        assert!(matches!(doc.resolve(&VarPath::parse("a")), Some(Val::Null)));
    }
}
