//! One request through the filter: Envoy's headers (and body, when the
//! bundle reads it) become the same `CheckRequest`-shaped message the
//! sidecar decodes from ext_authz, the same [`RequestView`] and policy set
//! decide, and the same [`Answer`] is applied through Envoy's callbacks:
//! a denial is sent with the policy's status, body and headers; an allow
//! sets and removes request headers and adds response headers; both set the
//! dynamic metadata (namespace `sentinelnet`).
//!
//! Cost per request: the header bytes are copied once into one buffer that
//! the message's fields slice (no copy per header; Envoy's header list is
//! read into the worker's own reused array), plus the message's entry list,
//! the outcome and the answer's few vectors. What only a record needs (the
//! request id, the deciding policy's evidence, the latency) is left to the
//! records thread, or not read at all without records. No lock, no I/O:
//! the bundle is read through `arc-swap`, the decision event goes to a
//! bounded queue.

use crate::bundles::{Active, Slot};
use crate::envoy::{HeaderKind, Stream};
use crate::records::Records;
use crate::settings::{BodyMode, Settings};
use bytes::Bytes;
use sentinelnet::authz::message::{
    Address, Attributes, CheckMessage, Entry, HttpRequest, Peer, Request, SocketAddress,
};
use sentinelnet::authz::response::{for_decision, DecisionIdText, MetadataField};
use sentinelnet::authz::view::RequestView;
use sentinelnet::authz::{IdentitySource, ViewSettings};
use sentinelnet::decision::DecisionEvent;
use sentinelnet::policy::Verdict;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Dynamic metadata namespace of the decision fields.
pub const METADATA_NAMESPACE: &str = "sentinelnet";

/// What `filter_config` set up: shared by every stream of the listener.
pub struct FilterConfig {
    pub settings: Settings,
    pub slot: Slot,
    pub records: Option<Records>,
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FilterConfig {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One stream's state.
pub struct Filter {
    /// The configuration the stream was created from (Envoy keeps it alive
    /// longer than every stream made from it).
    pub config: *const FilterConfig,
    /// Response headers an allow adds (owned: the bundle may be swapped
    /// before the upstream answers).
    pub response_headers: Vec<(String, String)>,
    /// The request is waiting for its body before the decision.
    pub waiting_for_body: bool,
}

impl Filter {
    pub fn new(config: *const FilterConfig) -> Filter {
        Filter {
            config,
            response_headers: Vec::new(),
            waiting_for_body: false,
        }
    }
}

/// Whether to hold the request until its body is complete.
pub fn wants_body(config: &FilterConfig) -> bool {
    match config.settings.with_body {
        BodyMode::Always => true,
        BodyMode::Never => false,
        BodyMode::Auto => config.slot.load().as_ref().is_some_and(|a| a.reads_body),
    }
}

/// What of the connection a request's message carries: each is a call
/// into Envoy that formats a string, so only what the bundle reads.
#[derive(Clone, Copy)]
struct ConnectionReads {
    /// Addresses, ports, protocol and this listener's own principal
    /// (`source.*`, `destination.*`, `request.protocol`).
    connection: bool,
    /// The peer certificate's principal (`source.principal`, and
    /// `principal.*` when it comes from the peer).
    peer_principal: bool,
}

impl ConnectionReads {
    /// What to ask Envoy for: what the loaded policies may read, or
    /// everything when decisions are recorded (`recording`), so a recorded
    /// input holds the connection as the sidecar path records it, and a
    /// simulation of a policy on `source.*` later has it to read.
    fn of(active: Option<&Active>, view: &ViewSettings, recording: bool) -> ConnectionReads {
        let Some(active) = active.filter(|_| !recording) else {
            // Recorded, or nothing decides without a bundle (the record
            // says so): the whole connection.
            return ConnectionReads {
                connection: true,
                peer_principal: true,
            };
        };
        let identity_from_peer = matches!(view.principal_from, IdentitySource::Peer)
            || matches!(view.roles_from, IdentitySource::Peer);
        ConnectionReads {
            connection: active.reads_connection,
            peer_principal: active.reads_connection
                || (active.reads_principal && identity_from_peer),
        }
    }
}

/// The message the view reads, from Envoy's request headers and `body`.
fn request_message(stream: &Stream, body: Option<Vec<u8>>, reads: ConnectionReads) -> CheckMessage {
    let reads_connection = reads.connection;
    let mut http = HttpRequest::default();
    stream.with_headers(HeaderKind::Request, |headers| {
        // One buffer holds every header byte; the message's fields are
        // slices of it.
        let total: usize = headers
            .iter()
            .map(|h| h.name().len() + h.value().len())
            .sum();
        let mut arena = Vec::with_capacity(total);
        for header in headers {
            arena.extend_from_slice(header.name());
            arena.extend_from_slice(header.value());
        }
        let arena = Bytes::from(arena);
        let mut entries = Vec::with_capacity(headers.len());
        let mut start = 0;
        for header in headers {
            let middle = start + header.name().len();
            let end = middle + header.value().len();
            let value = arena.slice(middle..end);
            match header.name() {
                b":method" => http.method = value.clone(),
                b":path" => http.path = value.clone(),
                b":authority" => http.host = value.clone(),
                b":scheme" => http.scheme = value.clone(),
                b"x-request-id" => http.id = value.clone(),
                _ => {}
            }
            // As ext_authz builds its header map: every header, the pseudo
            // ones included, and a repeated header once, its values joined
            // with "," (two entries would also write one key twice into a
            // recorded input).
            let name = header.name();
            match entries.iter_mut().find(|e: &&mut Entry| e.key[..] == *name) {
                Some(earlier) => {
                    let mut joined = Vec::with_capacity(earlier.value.len() + 1 + value.len());
                    joined.extend_from_slice(&earlier.value);
                    joined.push(b',');
                    joined.extend_from_slice(&value);
                    earlier.value = Bytes::from(joined);
                }
                None => entries.push(Entry {
                    key: arena.slice(start..middle),
                    value,
                }),
            }
            start = end;
        }
        http.headers = entries;
    });
    if reads_connection {
        if let Some(protocol) = stream.protocol() {
            http.protocol = Bytes::copy_from_slice(protocol);
        }
    }
    if let Some(body) = body {
        http.size = body.len() as i64;
        http.body = Bytes::from(body);
    }
    // A peer as ext_authz describes it: its address, and the principal of
    // its certificate (mTLS) when there is one.
    let peer = |address: Option<(Bytes, u32)>, principal: Option<&[u8]>| {
        if address.is_none() && principal.is_none() {
            return None;
        }
        Some(Peer {
            address: address.map(|(ip, port)| Address {
                socket_address: Some(SocketAddress {
                    address: ip,
                    port_value: Some(port),
                    named_port: None,
                }),
                pipe: None,
            }),
            principal: principal.map_or_else(Bytes::new, Bytes::copy_from_slice),
        })
    };
    let (source, destination) = if reads_connection {
        (stream.source_address(), stream.destination_address())
    } else {
        (None, None)
    };
    // One call on a plain connection instead of six that find nothing.
    let tls = (reads.peer_principal || reads_connection) && stream.is_tls();
    let source_principal = if tls && reads.peer_principal {
        stream.peer_principal()
    } else {
        None
    };
    let local_principal = if tls && reads_connection {
        stream.local_principal()
    } else {
        None
    };
    CheckMessage {
        attributes: Some(Attributes {
            source: peer(source, source_principal),
            destination: peer(destination, local_principal),
            request: Some(Request { http: Some(http) }),
            context_extensions: Vec::new(),
            metadata_context: None,
        }),
    }
}

/// Decide the request and apply the answer; whether it goes on.
///
/// What only a record needs (the request id, the deciding policy's
/// evidence) is not read here: the records thread reads it from the
/// request message it is handed, and without records nobody does.
pub fn decide(
    stream: &Stream,
    config: &FilterConfig,
    filter: &mut Filter,
    body: Option<Vec<u8>>,
) -> bool {
    // The latency goes in the record only.
    let started = config.records.as_ref().map(|_| Instant::now());
    let at = SystemTime::now();
    let id = sentinelnet::ids::decision_id(at);
    let id_text = DecisionIdText::new(&id);
    let active: Option<std::sync::Arc<Active>> = config.slot.load_full();
    let reads = ConnectionReads::of(
        active.as_deref(),
        &config.settings.view,
        config.records.is_some(),
    );
    let message = request_message(stream, body, reads);
    let now_unix = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let on_error = config.settings.on_error;
    let mut event = match &active {
        None => DecisionEvent::without_bundle(id, at, String::new(), on_error),
        Some(active) => {
            let view = RequestView::new(&message, &config.settings.view, now_unix);
            let outcome = active.bundle.policies.decide(&view, on_error);
            DecisionEvent::decided_without_evidence(
                id,
                at,
                String::new(),
                active.bundle.clone(),
                outcome,
            )
        }
    };
    let answer = for_decision(&event, id_text.as_str());
    // The strings in one call (Envoy merges the namespace once), the
    // version on its own.
    let mut texts: [(&str, &str); 4] = [("", ""); 4];
    let mut count = 0;
    for (key, value) in &answer.metadata_fields() {
        match value {
            MetadataField::Text(text) => {
                texts[count] = (key, text);
                count += 1;
            }
            MetadataField::Number(n) => stream.set_metadata_number(METADATA_NAMESPACE, key, *n),
            MetadataField::Null => {}
        }
    }
    if count > 0 {
        stream.set_metadata_strings(METADATA_NAMESPACE, &texts[..count]);
    }
    let allowed = answer.allows();
    if allowed {
        for (key, value) in answer.headers() {
            stream.set_header(HeaderKind::Request, key, Some(value));
        }
        for key in answer.removed_headers() {
            stream.set_header(HeaderKind::Request, key, None);
        }
        filter.response_headers = answer
            .response_headers()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    } else {
        stream.send_response(answer.status(), answer.headers(), answer.body());
    }
    drop(answer);
    if let (Some(records), Some(started)) = (&config.records, started) {
        event.latency_us = started.elapsed().as_micros() as u64;
        records.record(event, message);
    }
    allowed
}

/// What a request gets when deciding failed inside the module (a panic
/// caught at the boundary): `onError`.
pub fn on_internal_error(stream: &Stream, on_error: Verdict) -> bool {
    match on_error {
        Verdict::Allow => true,
        Verdict::Deny => {
            stream.send_response(
                sentinelnet::decision::ERROR_STATUS,
                &[],
                "authorization unavailable: the in-process filter failed\n",
            );
            false
        }
    }
}
