//! The part of Envoy's `CheckRequest` that the input document (docs/bundles.md)
//! reads, decoded straight from the wire.
//!
//! Field numbers are those of `envoy.service.auth.v3` (`attribute_context.proto`),
//! so any encoded `CheckRequest` decodes into this message; fields the input document
//! does not read (request time, TLS session, route metadata, peer labels and
//! certificates, ...) are skipped without being copied. Strings are `Bytes`
//! slices of the received buffer rather than owned `String`s, and maps
//! (headers, context extensions) are kept as their wire entries rather than
//! hashed into a `HashMap`: a Check reads a handful of headers once, so a
//! linear scan over ~10 entries beats hashing every one of them. Decoding
//! the full envoy-types message cost a `String` and a SipHash per header.

use envoy_types::pb::envoy::config::core::v3::Metadata;
use prost::bytes::Bytes;
use prost::Message;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct CheckMessage {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<Attributes>,
}

/// `AttributeContext`.
#[derive(Clone, PartialEq, Message)]
pub struct Attributes {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// `map<string, string>` as its entries, in wire order.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
    #[prost(message, optional, tag = "11")]
    pub metadata_context: Option<Metadata>,
}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    #[prost(bytes = "bytes", tag = "4")]
    pub principal: Bytes,
}

/// `config.core.v3.Address`: a oneof on the wire, read as two optionals
/// (Envoy sets at most one; an internal address is neither).
#[derive(Clone, PartialEq, Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
    #[prost(message, optional, tag = "2")]
    pub pipe: Option<Pipe>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SocketAddress {
    #[prost(bytes = "bytes", tag = "2")]
    pub address: Bytes,
    /// Oneof members are on the wire whenever set, so `Some(0)` is a port 0
    /// and `None` is "no port".
    #[prost(uint32, optional, tag = "3")]
    pub port_value: Option<u32>,
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub named_port: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Pipe {
    #[prost(bytes = "bytes", tag = "1")]
    pub path: Bytes,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct HttpRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `map<string, string>` as its entries; Envoy sends lower-case keys.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub host: Bytes,
    #[prost(bytes = "bytes", tag = "6")]
    pub scheme: Bytes,
    #[prost(bytes = "bytes", tag = "7")]
    pub query: Bytes,
    #[prost(int64, tag = "9")]
    pub size: i64,
    #[prost(bytes = "bytes", tag = "10")]
    pub protocol: Bytes,
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
    /// Set instead of `headers` when Envoy's `encode_raw_headers` is on.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `config.core.v3.HeaderValue`: `raw_value` when Envoy encodes raw headers.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

/// A protobuf `string` as text. Envoy only sends UTF-8; anything else reads
/// as the empty string rather than failing the Check.
pub fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

/// The value of the last entry named `key` (protobuf maps: the last wins).
pub fn lookup<'e>(entries: &'e [Entry], key: &str) -> Option<&'e Bytes> {
    entries
        .iter()
        .rev()
        .find(|e| e.key.as_ref() == key.as_bytes())
        .map(|e| &e.value)
}

/// The ip of a socket address written as text, `ip:port` or
/// `[ipv6]:port` (how Envoy reports the connection's addresses to the
/// in-process module, with the port as an attribute of its own); anything
/// else, such as a pipe's path, as it is. Envoy writes addresses
/// canonically, so cutting the text gives what parsing and re-formatting
/// it would, without either.
pub fn ip_of_socket_text(text: &[u8]) -> &[u8] {
    let is_port = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    if let Some(rest) = text.strip_prefix(b"[") {
        return match rest.iter().position(|&b| b == b']') {
            Some(end) if rest.get(end + 1) == Some(&b':') && is_port(&rest[end + 2..]) => {
                &rest[..end]
            }
            _ => text,
        };
    }
    match text.iter().rposition(|&b| b == b':') {
        Some(colon)
            if is_port(&text[colon + 1..])
                && std::str::from_utf8(&text[..colon])
                    .is_ok_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()) =>
        {
            &text[..colon]
        }
        _ => text,
    }
}

impl CheckMessage {
    /// Decode a `CheckRequest` from the body of a gRPC call (without the
    /// 5-byte frame header). Strings stay slices of `bytes`.
    pub fn decode_from(bytes: Bytes) -> Result<CheckMessage, prost::DecodeError> {
        CheckMessage::decode(bytes)
    }

    /// The lean form of an envoy-types `CheckRequest`, through its wire
    /// encoding (for tests and benchmarks that build requests in code).
    pub fn from_envoy(
        request: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
    ) -> CheckMessage {
        // Encoding a well-formed message and decoding it again cannot fail.
        CheckMessage::decode(Bytes::from(request.encode_to_vec())).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ip_of_a_socket_address_text_is_what_parsing_it_gives() {
        for (text, ip) in [
            ("10.1.2.3:8080", "10.1.2.3"),
            ("127.0.0.1:0", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("[2001:db8::7]:65535", "2001:db8::7"),
        ] {
            assert_eq!(ip_of_socket_text(text.as_bytes()), ip.as_bytes(), "{text}");
            let parsed: std::net::SocketAddr = text.parse().expect("a socket address");
            assert_eq!(parsed.ip().to_string(), ip, "{text}");
        }
        // Not an ip:port: kept whole (a pipe's path may hold a colon).
        for text in [
            "/run/envoy.sock",
            "/tmp/a:1",
            "10.1.2.3",
            "10.1.2.3:",
            "10.1.2.3:http",
            "[::1]",
            "[::1]:",
            "[::1",
            "",
        ] {
            assert_eq!(
                ip_of_socket_text(text.as_bytes()),
                text.as_bytes(),
                "{text}"
            );
        }
    }
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context as ctx;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

    fn full_request() -> CheckRequest {
        let peer = |address: core::address::Address, principal: &str| ctx::Peer {
            address: Some(core::Address {
                address: Some(address),
            }),
            principal: principal.into(),
            service: "svc".into(),
            labels: [("l".to_string(), "v".to_string())].into_iter().collect(),
            certificate: "-----BEGIN CERTIFICATE-----".into(),
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer(
                    core::address::Address::SocketAddress(core::SocketAddress {
                        address: "10.0.0.1".into(),
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(0)),
                        resolver_name: "ignored".into(),
                        ..Default::default()
                    }),
                    "spiffe://a",
                )),
                destination: Some(peer(
                    core::address::Address::Pipe(core::Pipe {
                        path: "/run/k.sock".into(),
                        mode: 0o600,
                    }),
                    "",
                )),
                request: Some(ctx::Request {
                    time: Some(Default::default()),
                    http: Some(ctx::HttpRequest {
                        id: "id-1".into(),
                        method: "PATCH".into(),
                        headers: [("x-a".to_string(), "1".to_string())].into_iter().collect(),
                        header_map: Some(core::HeaderMap {
                            headers: vec![core::HeaderValue {
                                key: "X-Raw".into(),
                                raw_value: b"raw".to_vec(),
                                ..Default::default()
                            }],
                        }),
                        path: "/p?q=1".into(),
                        host: "h".into(),
                        scheme: "https".into(),
                        query: "q=1".into(),
                        fragment: "frag".into(),
                        size: -1,
                        protocol: "HTTP/2".into(),
                        body: "text".into(),
                        raw_body: b"raw body".to_vec(),
                    }),
                }),
                context_extensions: [("tenant".to_string(), "acme".to_string())]
                    .into_iter()
                    .collect(),
                metadata_context: Some(core::Metadata {
                    filter_metadata: [("ns".to_string(), Default::default())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// Every field the view reads survives the trip from Envoy's encoding;
    /// a wrong tag or type here would read another field or nothing.
    #[test]
    fn decodes_every_field_the_input_document_reads() {
        let lean = CheckMessage::from_envoy(&full_request());
        let a = lean.attributes.expect("attributes");
        let source = a.source.expect("source");
        assert_eq!(text(&source.principal), "spiffe://a");
        let socket = source
            .address
            .and_then(|a| a.socket_address)
            .expect("socket");
        assert_eq!(text(&socket.address), "10.0.0.1");
        assert_eq!(socket.port_value, Some(0), "port 0 is a port");
        assert_eq!(socket.named_port, None);
        let pipe = a
            .destination
            .and_then(|d| d.address)
            .and_then(|a| a.pipe)
            .expect("pipe");
        assert_eq!(text(&pipe.path), "/run/k.sock");
        assert_eq!(
            lookup(&a.context_extensions, "tenant").map(text),
            Some("acme")
        );
        assert!(a
            .metadata_context
            .is_some_and(|m| m.filter_metadata.contains_key("ns")));
        let http = a.request.and_then(|r| r.http).expect("http");
        let fields = [
            (&http.id, "id-1"),
            (&http.method, "PATCH"),
            (&http.path, "/p?q=1"),
            (&http.host, "h"),
            (&http.scheme, "https"),
            (&http.query, "q=1"),
            (&http.protocol, "HTTP/2"),
            (&http.body, "text"),
            (&http.raw_body, "raw body"),
        ];
        for (field, expected) in fields {
            assert_eq!(text(field), expected);
        }
        assert_eq!(http.size, -1);
        assert_eq!(lookup(&http.headers, "x-a").map(text), Some("1"));
        let raw = http.header_map.expect("header_map");
        assert_eq!(text(&raw.headers[0].key), "X-Raw");
        assert_eq!(text(&raw.headers[0].raw_value), "raw");
    }

    #[test]
    fn map_entries_follow_protobuf_rules() {
        let entries = vec![
            Entry {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"first"),
            },
            Entry {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"last"),
            },
        ];
        assert_eq!(lookup(&entries, "k").map(text), Some("last"));
        assert_eq!(lookup(&entries, "K"), None);
        assert_eq!(text(&Bytes::from_static(b"\xff\xfe")), "");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        // Field 1 (attributes) claims 100 bytes that are not there.
        let truncated = Bytes::from_static(&[0x0a, 100, 1, 2, 3]);
        assert!(CheckMessage::decode_from(truncated).is_err());
    }
}
