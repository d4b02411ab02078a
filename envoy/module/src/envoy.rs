//! Safe wrappers over the few Envoy callbacks the filter uses ([`crate::abi`]).
//!
//! A [`Stream`] is valid only inside the hook Envoy called with its pointer;
//! the byte slices it hands out borrow Envoy's buffers and must not outlive
//! the hook (their lifetimes are tied to the `Stream` borrow).

use crate::abi::*;
use bytes::Bytes;
use sentinelnet::authz::message::ip_of_socket_text;
use std::cell::RefCell;

/// Which header map.
#[derive(Clone, Copy)]
pub enum HeaderKind {
    Request,
    Response,
}

impl HeaderKind {
    fn raw(self) -> HeaderType {
        match self {
            HeaderKind::Request => HEADER_TYPE_REQUEST_HEADER,
            HeaderKind::Response => HEADER_TYPE_RESPONSE_HEADER,
        }
    }
}

/// One header as Envoy lists it; its bytes are Envoy's, valid while the
/// hook runs and no setter has been called (see [`Stream::with_headers`]).
#[repr(transparent)]
pub struct Header(EnvoyHttpHeader);

impl Header {
    pub fn name(&self) -> &[u8] {
        // SAFETY: Envoy's buffer, alive for the hook (see the type).
        unsafe {
            EnvoyBuffer {
                ptr: self.0.key_ptr,
                length: self.0.key_length,
            }
            .as_bytes()
        }
    }

    pub fn value(&self) -> &[u8] {
        // SAFETY: as `name`.
        unsafe {
            EnvoyBuffer {
                ptr: self.0.value_ptr,
                length: self.0.value_length,
            }
            .as_bytes()
        }
    }
}

/// The Envoy side of one HTTP stream, for the duration of one hook.
pub struct Stream {
    ptr: FilterEnvoyPtr,
}

impl Stream {
    /// # Safety
    /// `ptr` is the `filter_envoy_ptr` Envoy passed to the running hook.
    pub unsafe fn new(ptr: FilterEnvoyPtr) -> Stream {
        Stream { ptr }
    }

    /// Call `f` with every header of `kind`, in order (a repeated header
    /// once per value). The pairs borrow Envoy's buffers and the array is
    /// the worker's own, reused from request to request: no allocation.
    /// `f` must not call a setter of this stream: a header write may move
    /// the buffers the pairs point into.
    pub fn with_headers<R>(&self, kind: HeaderKind, f: impl FnOnce(&[Header]) -> R) -> R {
        thread_local! {
            static SCRATCH: RefCell<Vec<EnvoyHttpHeader>> = const { RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| {
            // Never re-entered in practice; a fresh array if it ever were.
            let mut fresh = Vec::new();
            let mut borrowed = scratch.try_borrow_mut();
            let raw = borrowed.as_deref_mut().unwrap_or(&mut fresh);
            // SAFETY: `ptr` is valid for this hook; the array is sized by
            // Envoy's own count.
            let filled = unsafe {
                let count =
                    envoy_dynamic_module_callback_http_get_headers_size(self.ptr, kind.raw());
                raw.clear();
                raw.resize(count, EnvoyHttpHeader::NULL);
                count > 0
                    && envoy_dynamic_module_callback_http_get_headers(
                        self.ptr,
                        kind.raw(),
                        raw.as_mut_ptr(),
                    )
            };
            if !filled {
                raw.clear();
            }
            // SAFETY: `Header` is a transparent wrapper of `EnvoyHttpHeader`.
            let headers =
                unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<Header>(), raw.len()) };
            f(headers)
        })
    }

    /// Set (`Some`) or remove (`None`) a header.
    pub fn set_header(&self, kind: HeaderKind, key: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::new(v.as_bytes()));
        // SAFETY: valid pointer for this hook; the buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                kind.raw(),
                ModuleBuffer::new(key.as_bytes()),
                value,
            );
        }
    }

    /// Answer the client directly (a denial); the request does not go on.
    pub fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let mut raw: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::new(k.as_bytes(), v.as_bytes()))
            .collect();
        // SAFETY: valid pointer for this hook; `raw` and the strings it
        // points into outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::new(body.as_bytes()),
                ModuleBuffer::new(b"sentinelnet_denied"),
            );
        }
    }

    /// Set string entries of one namespace in one call.
    pub fn set_metadata_strings(&self, namespace: &str, entries: &[(&str, &str)]) {
        let mut raw = [ModuleKeyValuePair::new(b"", b""); 4];
        let count = entries.len().min(raw.len());
        for (slot, (key, value)) in raw.iter_mut().zip(entries) {
            *slot = ModuleKeyValuePair::new(key.as_bytes(), value.as_bytes());
        }
        // SAFETY: valid pointer for this hook; `raw` and the strings it
        // points into outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
                self.ptr,
                ModuleBuffer::new(namespace.as_bytes()),
                raw.as_ptr(),
                count,
            );
        }
    }

    pub fn set_metadata_number(&self, namespace: &str, key: &str, value: f64) {
        // SAFETY: valid pointer for this hook; the buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
                self.ptr,
                ModuleBuffer::new(namespace.as_bytes()),
                ModuleBuffer::new(key.as_bytes()),
                value,
            );
        }
    }

    fn attribute_string(&self, id: AttributeId) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::NULL;
        // SAFETY: valid pointer for this hook; the result stays valid until
        // the hook ends.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.ptr,
                id,
                &mut result,
            )
            .then(|| result.as_bytes())
        }
    }

    fn attribute_int(&self, id: AttributeId) -> Option<u64> {
        let mut result = 0u64;
        // SAFETY: valid pointer for this hook.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.ptr, id, &mut result)
                .then_some(result)
        }
    }

    /// `HTTP/1.1`, `HTTP/2`, … as ext_authz reports it.
    pub fn protocol(&self) -> Option<&[u8]> {
        self.attribute_string(ATTRIBUTE_ID_REQUEST_PROTOCOL)
    }

    fn address(&self, address: AttributeId, port: AttributeId) -> Option<(Bytes, u32)> {
        let ip = ip_of_socket_text(self.attribute_string(address)?);
        let port = self
            .attribute_int(port)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        Some((Bytes::copy_from_slice(ip), port))
    }

    /// Whether the downstream connection is TLS (Envoy has a TLS version
    /// for it): on a plain connection there are no certificates to ask for.
    pub fn is_tls(&self) -> bool {
        self.attribute_string(ATTRIBUTE_ID_CONNECTION_TLS_VERSION)
            .is_some_and(|v| !v.is_empty())
    }

    /// The first of `ids` Envoy has a non-empty value for.
    fn first_attribute(&self, ids: [AttributeId; 3]) -> Option<&[u8]> {
        ids.into_iter()
            .find_map(|id| self.attribute_string(id).filter(|v| !v.is_empty()))
    }

    /// The downstream's principal as ext_authz reports it in
    /// `source.principal`: the peer certificate's first URI SAN, else its
    /// first DNS SAN, else its subject; `None` without a peer certificate.
    pub fn peer_principal(&self) -> Option<&[u8]> {
        self.first_attribute([
            ATTRIBUTE_ID_CONNECTION_URI_SAN_PEER_CERTIFICATE,
            ATTRIBUTE_ID_CONNECTION_DNS_SAN_PEER_CERTIFICATE,
            ATTRIBUTE_ID_CONNECTION_SUBJECT_PEER_CERTIFICATE,
        ])
    }

    /// This listener's own principal (`destination.principal`), from its
    /// certificate in the same order.
    pub fn local_principal(&self) -> Option<&[u8]> {
        self.first_attribute([
            ATTRIBUTE_ID_CONNECTION_URI_SAN_LOCAL_CERTIFICATE,
            ATTRIBUTE_ID_CONNECTION_DNS_SAN_LOCAL_CERTIFICATE,
            ATTRIBUTE_ID_CONNECTION_SUBJECT_LOCAL_CERTIFICATE,
        ])
    }

    pub fn source_address(&self) -> Option<(Bytes, u32)> {
        self.address(ATTRIBUTE_ID_SOURCE_ADDRESS, ATTRIBUTE_ID_SOURCE_PORT)
    }

    pub fn destination_address(&self) -> Option<(Bytes, u32)> {
        self.address(
            ATTRIBUTE_ID_DESTINATION_ADDRESS,
            ATTRIBUTE_ID_DESTINATION_PORT,
        )
    }

    /// The request body Envoy holds: what it buffered plus the latest
    /// chunk (inside the request-body hook).
    pub fn request_body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for kind in [
            BODY_TYPE_BUFFERED_REQUEST_BODY,
            BODY_TYPE_RECEIVED_REQUEST_BODY,
        ] {
            // SAFETY: valid pointer for this hook; the chunk array is sized
            // by Envoy's count and the chunks are copied before it returns.
            unsafe {
                let count = envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, kind);
                if count == 0 {
                    continue;
                }
                let mut chunks = vec![EnvoyBuffer::NULL; count];
                if envoy_dynamic_module_callback_http_get_body_chunks(
                    self.ptr,
                    kind,
                    chunks.as_mut_ptr(),
                ) {
                    for chunk in chunks {
                        body.extend_from_slice(chunk.as_bytes());
                    }
                }
            }
        }
        body
    }
}

/// Log through Envoy's logger (its `dynamic_modules` component).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the buffer outlives the call; the callback is thread-safe.
    unsafe {
        if envoy_dynamic_module_callback_log_enabled(level) {
            envoy_dynamic_module_callback_log(level, ModuleBuffer::new(message.as_bytes()));
        }
    }
}

/// A counter in Envoy's stats, defined on the filter configuration and
/// added to from any thread of the module (Envoy's counters are atomic;
/// the config-scoped increment needs no stream). Valid while the filter
/// configuration lives: whoever holds one must give it up before
/// `config_destroy` returns (see `records::Records`).
pub struct ConfigCounter {
    config: FilterConfigEnvoyPtr,
    id: usize,
}

// SAFETY: the pointer is only passed back to Envoy's config-scoped counter
// callback, which Envoy documents as callable outside any request (e.g.
// from a background task); the owner drops it before the config goes.
unsafe impl Send for ConfigCounter {}

impl ConfigCounter {
    /// Define counter `name` on `config` (only inside config_new: Envoy
    /// freezes stats creation after). None when Envoy refuses.
    pub fn define(config: FilterConfigEnvoyPtr, name: &str) -> Option<ConfigCounter> {
        if config.is_null() {
            return None;
        }
        let mut id = 0usize;
        // SAFETY: `config` is the pointer Envoy passed to config_new, which
        // is running; the name buffer outlives the call.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                ModuleBuffer::new(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (result == METRICS_RESULT_SUCCESS).then_some(ConfigCounter { config, id })
    }

    pub fn add(&self, value: u64) {
        // SAFETY: defined on `config`, which outlives `self` (type docs).
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.config,
                self.id,
                std::ptr::null_mut(),
                0,
                value,
            );
        }
    }
}
