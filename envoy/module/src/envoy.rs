//! Safe wrappers over the few Envoy callbacks the filter uses ([`crate::abi`]).
//!
//! A [`Stream`] is valid only inside the hook Envoy called with its pointer;
//! the byte slices it hands out borrow Envoy's buffers and must not outlive
//! the hook (their lifetimes are tied to the `Stream` borrow).

use crate::abi::*;
use std::net::SocketAddr;

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

    /// Every header of `kind`, in order (a repeated header once per value).
    pub fn headers(&self, kind: HeaderKind) -> Vec<(&[u8], &[u8])> {
        // SAFETY: `ptr` is valid for this hook; the array is sized by Envoy's
        // own count and every returned buffer stays valid until the hook ends
        // (the headers are not modified while the slices are alive: the
        // setters take `&self` but are only called after these are dropped).
        unsafe {
            let count = envoy_dynamic_module_callback_http_get_headers_size(self.ptr, kind.raw());
            let mut raw = vec![EnvoyHttpHeader::NULL; count];
            if count == 0
                || !envoy_dynamic_module_callback_http_get_headers(
                    self.ptr,
                    kind.raw(),
                    raw.as_mut_ptr(),
                )
            {
                return Vec::new();
            }
            raw.iter()
                .map(|h| {
                    (
                        EnvoyBuffer {
                            ptr: h.key_ptr,
                            length: h.key_length,
                        }
                        .as_bytes(),
                        EnvoyBuffer {
                            ptr: h.value_ptr,
                            length: h.value_length,
                        }
                        .as_bytes(),
                    )
                })
                .collect()
        }
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
    pub fn protocol(&self) -> Option<Vec<u8>> {
        self.attribute_string(ATTRIBUTE_ID_REQUEST_PROTOCOL)
            .map(<[u8]>::to_vec)
    }

    fn address(&self, address: AttributeId, port: AttributeId) -> Option<(String, u32)> {
        let text = std::str::from_utf8(self.attribute_string(address)?).ok()?;
        // Envoy gives `ip:port`; keep the ip (and the port attribute).
        let ip = match text.parse::<SocketAddr>() {
            Ok(socket) => socket.ip().to_string(),
            Err(_) => text.to_owned(),
        };
        let port = self
            .attribute_int(port)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        Some((ip, port))
    }

    pub fn source_address(&self) -> Option<(String, u32)> {
        self.address(ATTRIBUTE_ID_SOURCE_ADDRESS, ATTRIBUTE_ID_SOURCE_PORT)
    }

    pub fn destination_address(&self) -> Option<(String, u32)> {
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
