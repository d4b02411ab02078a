//! Hand-written bindings to the subset of Envoy's dynamic-module ABI
//! (envoy/module/abi.h, vendored from Envoy v1.39.0, Apache-2.0, copyright
//! the Envoy Project Authors) this filter uses.
//!
//! Conventions, as in abi.h: C enums are passed and returned as `u32`, so
//! each enum is a `u32` type alias plus `pub const` values numbered exactly
//! as the header's declaration order (none of these enums sets explicit
//! values); C `bool` is Rust `bool`, `size_t` is `usize`. Buffers are
//! `#[repr(C)] {ptr, length}` structs passed by value. "Envoy" buffers
//! (`EnvoyBuffer`, `EnvoyHttpHeader`) are memory Envoy owns and the module
//! reads; "module" buffers (`ModuleBuffer`, `ModuleHttpHeader`) are memory
//! the module owns and Envoy reads during the call.
//!
//! Every function in the `extern "C"` block is unsafe to call: the caller
//! guarantees the pointers are valid (Envoy does not check them).

use std::ffi::{c_void, CStr};
use std::os::raw::c_char;

// ---------------------------------------------------------------------------
// ABI version
// ---------------------------------------------------------------------------

/// The string abi.h itself defines as `ENVOY_DYNAMIC_MODULES_ABI_VERSION`
/// (v1.39.0 header). Kept for reference; see [`ABI_VERSION`].
#[allow(dead_code)]
pub const HEADER_ABI_VERSION: &CStr = c"v0.1.0";

/// What `envoy_dynamic_module_on_program_init` returns: Envoy 1.40 reports
/// "v0.2.0" as a match (checked against the 1.40.0 binary); per abi.h the
/// version is only compared to emit a warning on mismatch, never to refuse
/// the module. A `&'static CStr`, so `ABI_VERSION.as_ptr()` stays valid.
#[allow(dead_code)]
pub const ABI_VERSION: &CStr = c"v0.2.0";

// ---------------------------------------------------------------------------
// Pointer types
// ---------------------------------------------------------------------------

/// `envoy_dynamic_module_type_abi_version_module_ptr` (`const char*`,
/// null-terminated).
#[allow(dead_code)]
pub type AbiVersionModulePtr = *const c_char;

/// `envoy_dynamic_module_type_buffer_module_ptr` (`const char*`).
#[allow(dead_code)]
pub type BufferModulePtr = *const c_char;

/// `envoy_dynamic_module_type_buffer_envoy_ptr` (`const char*`).
#[allow(dead_code)]
pub type BufferEnvoyPtr = *const c_char;

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr` (`void*`):
/// Envoy's DynamicModuleHttpFilterConfig. Envoy owns it.
#[allow(dead_code)]
pub type FilterConfigEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_filter_config_module_ptr`
/// (`const void*`): the module's filter config; the module owns it until
/// `envoy_dynamic_module_on_http_filter_config_destroy`.
#[allow(dead_code)]
pub type FilterConfigModulePtr = *const c_void;

/// `envoy_dynamic_module_type_http_filter_per_route_config_module_ptr`
/// (`const void*`): the module's per-route config; the module owns it
/// until `envoy_dynamic_module_on_http_filter_per_route_config_destroy`.
#[allow(dead_code)]
pub type PerRouteConfigModulePtr = *const c_void;

/// `envoy_dynamic_module_type_http_filter_envoy_ptr` (`void*`): Envoy's
/// DynamicModuleHttpFilter for one stream; valid until
/// `envoy_dynamic_module_on_http_filter_destroy`.
#[allow(dead_code)]
pub type FilterEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_filter_module_ptr` (`const void*`): the
/// module's per-stream filter; the module owns it until
/// `envoy_dynamic_module_on_http_filter_destroy`.
#[allow(dead_code)]
pub type FilterModulePtr = *const c_void;

// ---------------------------------------------------------------------------
// Buffers and headers
// ---------------------------------------------------------------------------

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy (hook
/// inputs such as the config bytes, and callback outputs such as header
/// values and body chunks).
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    pub ptr: BufferEnvoyPtr,
    pub length: usize,
}

#[allow(dead_code)]
impl EnvoyBuffer {
    /// A null buffer (ptr null, length 0): the initial value of an out
    /// parameter.
    pub const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes; empty when `ptr` is null or `length` is 0.
    ///
    /// # Safety
    /// A non-null `ptr` must point to `length` readable bytes that stay
    /// valid and unchanged for `'a` (for Envoy's buffers: until the current
    /// hook returns, or until a setter callback is called).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `ptr` points to `length`
            // readable bytes alive for `'a`.
            unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
        }
    }
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module,
/// passed to Envoy (header keys and values, bodies, metadata, log
/// messages, metric names). Envoy copies what it keeps.
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    pub ptr: BufferModulePtr,
    pub length: usize,
}

#[allow(dead_code)]
impl ModuleBuffer {
    /// A null buffer (ptr null, length 0). As the `value` of
    /// `envoy_dynamic_module_callback_http_set_header` it removes the header.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// Borrows `bytes`; the buffer must not outlive them. Note an empty
    /// slice gives a non-null (dangling, length 0) pointer, not `NULL`.
    pub fn new(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast::<c_char>(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_envoy_http_header`: one header key/value
/// pair owned by Envoy's HeaderMap, as filled in by
/// `envoy_dynamic_module_callback_http_get_headers`.
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyHttpHeader {
    pub key_ptr: BufferEnvoyPtr,
    pub key_length: usize,
    pub value_ptr: BufferEnvoyPtr,
    pub value_length: usize,
}

#[allow(dead_code)]
impl EnvoyHttpHeader {
    /// An all-null pair: the initial value of `get_headers`' output array.
    pub const NULL: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

/// `envoy_dynamic_module_type_module_http_header`: one header key/value
/// pair owned by the module, as passed to
/// `envoy_dynamic_module_callback_http_send_response`.
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleHttpHeader {
    pub key_ptr: BufferModulePtr,
    pub key_length: usize,
    pub value_ptr: BufferModulePtr,
    pub value_length: usize,
}

#[allow(dead_code)]
impl ModuleHttpHeader {
    /// Borrows `key` and `value`; the pair must not outlive them.
    pub fn new(key: &[u8], value: &[u8]) -> ModuleHttpHeader {
        ModuleHttpHeader {
            key_ptr: key.as_ptr().cast::<c_char>(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast::<c_char>(),
            value_length: value.len(),
        }
    }
}

// ---------------------------------------------------------------------------
// Enums (u32)
// ---------------------------------------------------------------------------

/// `envoy_dynamic_module_type_module_key_value_pair`: a module-owned string
/// pair, for the batched metadata setter.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleKeyValuePair {
    pub key_ptr: BufferModulePtr,
    pub key_length: usize,
    pub value_ptr: BufferModulePtr,
    pub value_length: usize,
}

impl ModuleKeyValuePair {
    pub fn new(key: &[u8], value: &[u8]) -> ModuleKeyValuePair {
        ModuleKeyValuePair {
            key_ptr: key.as_ptr().cast::<c_char>(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast::<c_char>(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`: which header map.
#[allow(dead_code)]
pub type HeaderType = u32;
/// `envoy_dynamic_module_type_http_header_type_RequestHeader`
#[allow(dead_code)]
pub const HEADER_TYPE_REQUEST_HEADER: HeaderType = 0;
/// `envoy_dynamic_module_type_http_header_type_RequestTrailer`
#[allow(dead_code)]
pub const HEADER_TYPE_REQUEST_TRAILER: HeaderType = 1;
/// `envoy_dynamic_module_type_http_header_type_ResponseHeader`
#[allow(dead_code)]
pub const HEADER_TYPE_RESPONSE_HEADER: HeaderType = 2;
/// `envoy_dynamic_module_type_http_header_type_ResponseTrailer`
#[allow(dead_code)]
pub const HEADER_TYPE_RESPONSE_TRAILER: HeaderType = 3;

/// `envoy_dynamic_module_type_http_body_type`: which body (the latest
/// received piece, or everything buffered so far).
#[allow(dead_code)]
pub type BodyType = u32;
/// `envoy_dynamic_module_type_http_body_type_ReceivedRequestBody` (only
/// inside the request_body hook)
#[allow(dead_code)]
pub const BODY_TYPE_RECEIVED_REQUEST_BODY: BodyType = 0;
/// `envoy_dynamic_module_type_http_body_type_BufferedRequestBody`
#[allow(dead_code)]
pub const BODY_TYPE_BUFFERED_REQUEST_BODY: BodyType = 1;
/// `envoy_dynamic_module_type_http_body_type_ReceivedResponseBody` (only
/// inside the response_body hook)
#[allow(dead_code)]
pub const BODY_TYPE_RECEIVED_RESPONSE_BODY: BodyType = 2;
/// `envoy_dynamic_module_type_http_body_type_BufferedResponseBody`
#[allow(dead_code)]
pub const BODY_TYPE_BUFFERED_RESPONSE_BODY: BodyType = 3;

/// `envoy_dynamic_module_type_log_level`.
#[allow(dead_code)]
pub type LogLevel = u32;
/// `envoy_dynamic_module_type_log_level_Trace`
#[allow(dead_code)]
pub const LOG_LEVEL_TRACE: LogLevel = 0;
/// `envoy_dynamic_module_type_log_level_Debug`
#[allow(dead_code)]
pub const LOG_LEVEL_DEBUG: LogLevel = 1;
/// `envoy_dynamic_module_type_log_level_Info`
#[allow(dead_code)]
pub const LOG_LEVEL_INFO: LogLevel = 2;
/// `envoy_dynamic_module_type_log_level_Warn`
#[allow(dead_code)]
pub const LOG_LEVEL_WARN: LogLevel = 3;
/// `envoy_dynamic_module_type_log_level_Error`
#[allow(dead_code)]
pub const LOG_LEVEL_ERROR: LogLevel = 4;
/// `envoy_dynamic_module_type_log_level_Critical`
#[allow(dead_code)]
pub const LOG_LEVEL_CRITICAL: LogLevel = 5;
/// `envoy_dynamic_module_type_log_level_Off`
#[allow(dead_code)]
pub const LOG_LEVEL_OFF: LogLevel = 6;

/// `envoy_dynamic_module_type_metrics_result`.
#[allow(dead_code)]
pub type MetricsResult = u32;
/// `envoy_dynamic_module_type_metrics_result_Success`
#[allow(dead_code)]
pub const METRICS_RESULT_SUCCESS: MetricsResult = 0;
/// `envoy_dynamic_module_type_metrics_result_MetricNotFound`
#[allow(dead_code)]
pub const METRICS_RESULT_METRIC_NOT_FOUND: MetricsResult = 1;
/// `envoy_dynamic_module_type_metrics_result_InvalidLabels`
#[allow(dead_code)]
pub const METRICS_RESULT_INVALID_LABELS: MetricsResult = 2;
/// `envoy_dynamic_module_type_metrics_result_Frozen` (stats creation is
/// frozen: define metrics in config_new)
#[allow(dead_code)]
pub const METRICS_RESULT_FROZEN: MetricsResult = 3;

/// `envoy_dynamic_module_type_http_callout_result` (a parameter of the
/// callout_done hooks; values unused here).
#[allow(dead_code)]
pub type HttpCalloutResult = u32;

/// `envoy_dynamic_module_type_http_stream_reset_reason` (a parameter of the
/// http_stream_reset hooks; values unused here).
#[allow(dead_code)]
pub type HttpStreamResetReason = u32;

/// `envoy_dynamic_module_type_attribute_id`: the attributes of
/// https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes
/// (only the ones this filter may read; the numbers are the header's
/// declaration order, 0..=67). abi.h: "not all attributes are implemented".
#[allow(dead_code)]
pub type AttributeId = u32;
/// `envoy_dynamic_module_type_attribute_id_RequestPath`: request.path
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_PATH: AttributeId = 0;
/// `envoy_dynamic_module_type_attribute_id_RequestUrlPath`: request.url_path
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_URL_PATH: AttributeId = 1;
/// `envoy_dynamic_module_type_attribute_id_RequestHost`: request.host
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_HOST: AttributeId = 2;
/// `envoy_dynamic_module_type_attribute_id_RequestScheme`: request.scheme
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_SCHEME: AttributeId = 3;
/// `envoy_dynamic_module_type_attribute_id_RequestMethod`: request.method
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_METHOD: AttributeId = 4;
/// `envoy_dynamic_module_type_attribute_id_RequestReferer`: request.referer
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_REFERER: AttributeId = 6;
/// `envoy_dynamic_module_type_attribute_id_RequestUserAgent`: request.useragent
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_USER_AGENT: AttributeId = 7;
/// `envoy_dynamic_module_type_attribute_id_RequestId`: request.id
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_ID: AttributeId = 9;
/// `envoy_dynamic_module_type_attribute_id_RequestProtocol`: request.protocol
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_PROTOCOL: AttributeId = 10;
/// `envoy_dynamic_module_type_attribute_id_RequestQuery`: request.query
#[allow(dead_code)]
pub const ATTRIBUTE_ID_REQUEST_QUERY: AttributeId = 11;
/// `envoy_dynamic_module_type_attribute_id_SourceAddress`: source.address
#[allow(dead_code)]
pub const ATTRIBUTE_ID_SOURCE_ADDRESS: AttributeId = 24;
/// `envoy_dynamic_module_type_attribute_id_SourcePort`: source.port
#[allow(dead_code)]
pub const ATTRIBUTE_ID_SOURCE_PORT: AttributeId = 25;
/// `envoy_dynamic_module_type_attribute_id_DestinationAddress`:
/// destination.address
#[allow(dead_code)]
pub const ATTRIBUTE_ID_DESTINATION_ADDRESS: AttributeId = 26;
/// `envoy_dynamic_module_type_attribute_id_DestinationPort`: destination.port
#[allow(dead_code)]
pub const ATTRIBUTE_ID_DESTINATION_PORT: AttributeId = 27;
/// `envoy_dynamic_module_type_attribute_id_ConnectionId`: connection.id
#[allow(dead_code)]
pub const ATTRIBUTE_ID_CONNECTION_ID: AttributeId = 28;
/// `envoy_dynamic_module_type_attribute_id_ConnectionMtls`: connection.mtls
#[allow(dead_code)]
pub const ATTRIBUTE_ID_CONNECTION_MTLS: AttributeId = 29;
/// `envoy_dynamic_module_type_attribute_id_ConnectionRequestedServerName`:
/// connection.requested_server_name
#[allow(dead_code)]
pub const ATTRIBUTE_ID_CONNECTION_REQUESTED_SERVER_NAME: AttributeId = 30;
/// `envoy_dynamic_module_type_attribute_id_ConnectionTlsVersion`:
/// connection.tls_version
pub const ATTRIBUTE_ID_CONNECTION_TLS_VERSION: AttributeId = 31;
/// `envoy_dynamic_module_type_attribute_id_ConnectionSubjectLocalCertificate`:
/// connection.subject_local_certificate
pub const ATTRIBUTE_ID_CONNECTION_SUBJECT_LOCAL_CERTIFICATE: AttributeId = 32;
/// `envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate`:
/// connection.subject_peer_certificate
pub const ATTRIBUTE_ID_CONNECTION_SUBJECT_PEER_CERTIFICATE: AttributeId = 33;
/// `envoy_dynamic_module_type_attribute_id_ConnectionDnsSanLocalCertificate`:
/// connection.dns_san_local_certificate
pub const ATTRIBUTE_ID_CONNECTION_DNS_SAN_LOCAL_CERTIFICATE: AttributeId = 34;
/// `envoy_dynamic_module_type_attribute_id_ConnectionDnsSanPeerCertificate`:
/// connection.dns_san_peer_certificate
pub const ATTRIBUTE_ID_CONNECTION_DNS_SAN_PEER_CERTIFICATE: AttributeId = 35;
/// `envoy_dynamic_module_type_attribute_id_ConnectionUriSanLocalCertificate`:
/// connection.uri_san_local_certificate
pub const ATTRIBUTE_ID_CONNECTION_URI_SAN_LOCAL_CERTIFICATE: AttributeId = 36;
/// `envoy_dynamic_module_type_attribute_id_ConnectionUriSanPeerCertificate`:
/// connection.uri_san_peer_certificate
pub const ATTRIBUTE_ID_CONNECTION_URI_SAN_PEER_CERTIFICATE: AttributeId = 37;
/// `envoy_dynamic_module_type_attribute_id_ConnectionSha256PeerCertificateDigest`:
/// connection.sha256_peer_certificate_digest
#[allow(dead_code)]
pub const ATTRIBUTE_ID_CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST: AttributeId = 38;

// ---------------------------------------------------------------------------
// Hook status values (u32)
// ---------------------------------------------------------------------------

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status`
/// (Envoy's `FilterHeadersStatus`).
#[allow(dead_code)]
pub type RequestHeadersStatus = u32;
/// `..._request_headers_status_Continue`
#[allow(dead_code)]
pub const REQUEST_HEADERS_STATUS_CONTINUE: RequestHeadersStatus = 0;
/// `..._request_headers_status_StopIteration`
#[allow(dead_code)]
pub const REQUEST_HEADERS_STATUS_STOP_ITERATION: RequestHeadersStatus = 1;
/// `..._request_headers_status_ContinueAndDontEndStream`
#[allow(dead_code)]
pub const REQUEST_HEADERS_STATUS_CONTINUE_AND_DONT_END_STREAM: RequestHeadersStatus = 2;
/// `..._request_headers_status_StopAllIterationAndBuffer`
#[allow(dead_code)]
pub const REQUEST_HEADERS_STATUS_STOP_ALL_ITERATION_AND_BUFFER: RequestHeadersStatus = 3;
/// `..._request_headers_status_StopAllIterationAndWatermark`
#[allow(dead_code)]
pub const REQUEST_HEADERS_STATUS_STOP_ALL_ITERATION_AND_WATERMARK: RequestHeadersStatus = 4;

/// `envoy_dynamic_module_type_on_http_filter_request_body_status`
/// (Envoy's `FilterDataStatus`).
#[allow(dead_code)]
pub type RequestBodyStatus = u32;
/// `..._request_body_status_Continue`
#[allow(dead_code)]
pub const REQUEST_BODY_STATUS_CONTINUE: RequestBodyStatus = 0;
/// `..._request_body_status_StopIterationAndBuffer`
#[allow(dead_code)]
pub const REQUEST_BODY_STATUS_STOP_ITERATION_AND_BUFFER: RequestBodyStatus = 1;
/// `..._request_body_status_StopIterationAndWatermark`
#[allow(dead_code)]
pub const REQUEST_BODY_STATUS_STOP_ITERATION_AND_WATERMARK: RequestBodyStatus = 2;
/// `..._request_body_status_StopIterationNoBuffer`
#[allow(dead_code)]
pub const REQUEST_BODY_STATUS_STOP_ITERATION_NO_BUFFER: RequestBodyStatus = 3;

/// `envoy_dynamic_module_type_on_http_filter_request_trailers_status`
/// (Envoy's `FilterTrailersStatus`).
#[allow(dead_code)]
pub type RequestTrailersStatus = u32;
/// `..._request_trailers_status_Continue`
#[allow(dead_code)]
pub const REQUEST_TRAILERS_STATUS_CONTINUE: RequestTrailersStatus = 0;
/// `..._request_trailers_status_StopIteration`
#[allow(dead_code)]
pub const REQUEST_TRAILERS_STATUS_STOP_ITERATION: RequestTrailersStatus = 1;

/// `envoy_dynamic_module_type_on_http_filter_response_headers_status`
/// (Envoy's `FilterHeadersStatus`).
#[allow(dead_code)]
pub type ResponseHeadersStatus = u32;
/// `..._response_headers_status_Continue`
#[allow(dead_code)]
pub const RESPONSE_HEADERS_STATUS_CONTINUE: ResponseHeadersStatus = 0;
/// `..._response_headers_status_StopIteration`
#[allow(dead_code)]
pub const RESPONSE_HEADERS_STATUS_STOP_ITERATION: ResponseHeadersStatus = 1;
/// `..._response_headers_status_ContinueAndDontEndStream`
#[allow(dead_code)]
pub const RESPONSE_HEADERS_STATUS_CONTINUE_AND_DONT_END_STREAM: ResponseHeadersStatus = 2;
/// `..._response_headers_status_StopAllIterationAndBuffer`
#[allow(dead_code)]
pub const RESPONSE_HEADERS_STATUS_STOP_ALL_ITERATION_AND_BUFFER: ResponseHeadersStatus = 3;
/// `..._response_headers_status_StopAllIterationAndWatermark`
#[allow(dead_code)]
pub const RESPONSE_HEADERS_STATUS_STOP_ALL_ITERATION_AND_WATERMARK: ResponseHeadersStatus = 4;

/// `envoy_dynamic_module_type_on_http_filter_response_body_status`
/// (Envoy's `FilterDataStatus`).
#[allow(dead_code)]
pub type ResponseBodyStatus = u32;
/// `..._response_body_status_Continue`
#[allow(dead_code)]
pub const RESPONSE_BODY_STATUS_CONTINUE: ResponseBodyStatus = 0;
/// `..._response_body_status_StopIterationAndBuffer`
#[allow(dead_code)]
pub const RESPONSE_BODY_STATUS_STOP_ITERATION_AND_BUFFER: ResponseBodyStatus = 1;
/// `..._response_body_status_StopIterationAndWatermark`
#[allow(dead_code)]
pub const RESPONSE_BODY_STATUS_STOP_ITERATION_AND_WATERMARK: ResponseBodyStatus = 2;
/// `..._response_body_status_StopIterationNoBuffer`
#[allow(dead_code)]
pub const RESPONSE_BODY_STATUS_STOP_ITERATION_NO_BUFFER: ResponseBodyStatus = 3;

/// `envoy_dynamic_module_type_on_http_filter_response_trailers_status`
/// (Envoy's `FilterTrailersStatus`).
#[allow(dead_code)]
pub type ResponseTrailersStatus = u32;
/// `..._response_trailers_status_Continue`
#[allow(dead_code)]
pub const RESPONSE_TRAILERS_STATUS_CONTINUE: ResponseTrailersStatus = 0;
/// `..._response_trailers_status_StopIteration`
#[allow(dead_code)]
pub const RESPONSE_TRAILERS_STATUS_STOP_ITERATION: ResponseTrailersStatus = 1;

/// `envoy_dynamic_module_type_on_http_filter_local_reply_status`
/// (Envoy's `LocalErrorStatus`).
#[allow(dead_code)]
pub type LocalReplyStatus = u32;
/// `..._local_reply_status_Continue`: send the local reply as normal.
#[allow(dead_code)]
pub const LOCAL_REPLY_STATUS_CONTINUE: LocalReplyStatus = 0;
/// `..._local_reply_status_ContinueAndResetStream`: reset the stream
/// instead of sending the local reply.
#[allow(dead_code)]
pub const LOCAL_REPLY_STATUS_CONTINUE_AND_RESET_STREAM: LocalReplyStatus = 1;

// ---------------------------------------------------------------------------
// Callbacks (implemented by Envoy)
// ---------------------------------------------------------------------------

#[allow(dead_code)]
extern "C" {
    /// Logs `message` at `level` under Envoy's `dynamic_modules` logger id.
    /// Returns nothing.
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);

    /// Returns true if `level` is enabled for the `dynamic_modules` logger
    /// (cheap; use it to skip formatting).
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    /// Defines a counter `name` with `label_names_length` label names (null
    /// if 0) on the filter config (main thread, in config_new), storing its
    /// id in `*counter_id_ptr`. Returns `METRICS_RESULT_*` (0 = success).
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: FilterConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> MetricsResult;

    /// Adds `value` to counter `id` from a stream (label values must match
    /// the defined label names in number; null if 0). Returns
    /// `METRICS_RESULT_*` (0 = success).
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Adds `value` to counter `id` from the filter config, outside any
    /// stream (e.g. a background task). Returns `METRICS_RESULT_*`.
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        filter_config_envoy_ptr: FilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Gets value number `index` of header `key` into `*result_buffer`
    /// (null buffer if absent), and the number of values into
    /// `*optional_size` if non-null. Returns true if the value exists.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// Returns the number of headers (key/value pairs) in the map; 0 if
    /// none or the map is unavailable.
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
    ) -> usize;

    /// Fills `result_headers` (room for get_headers_size entries) with every
    /// header; bytes valid until the hook returns or a setter is called.
    /// Returns true on success.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;

    /// Adds one more value for `key` (Envoy's SDKs use it as `add`; abi.h's
    /// comment repeats set_header's). Returns true on success (false if the
    /// map is unavailable in this phase).
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Replaces all values of `key` with `value`; with a null `value`
    /// (`ModuleBuffer::NULL`) it REMOVES the header (abi.h has no separate
    /// remove callback). Returns true on success.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Sends a local response (`status_code`, headers, body, optional
    /// response-code `details`, may be null) downstream. Returns nothing.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: FilterEnvoyPtr,
        status_code: u32,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    /// Sets dynamic metadata `ns`.`key` to the number `value` (overwrites).
    /// Returns nothing.
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
        filter_envoy_ptr: FilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: f64,
    );

    /// Sets dynamic metadata `ns`.`key` to the string `value` (overwrites).
    /// Returns nothing.
    /// Sets several string entries of one namespace in one call (the
    /// namespace is resolved and merged once).
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter_envoy_ptr: FilterEnvoyPtr,
        ns: ModuleBuffer,
        entries: *const ModuleKeyValuePair,
        entries_size: usize,
    );

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter_envoy_ptr: FilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );

    /// Returns the body's total size in bytes; 0 if unavailable or empty.
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter_envoy_ptr: FilterEnvoyPtr,
        body_type: BodyType,
    ) -> usize;

    /// Returns the number of chunks (buffers) in the body; 0 if unavailable
    /// or empty.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter_envoy_ptr: FilterEnvoyPtr,
        body_type: BodyType,
    ) -> usize;

    /// Fills `result_buffer_vector` (room for get_body_chunks_size entries)
    /// with the body's chunks; valid until the hook returns or a setter is
    /// called. Returns true if the body is available.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter_envoy_ptr: FilterEnvoyPtr,
        body_type: BodyType,
        result_buffer_vector: *mut EnvoyBuffer,
    ) -> bool;

    /// Returns true if the request body just received is the one an earlier
    /// filter buffered (so the received and buffered bodies are the same).
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter_envoy_ptr: FilterEnvoyPtr,
    ) -> bool;

    /// Gets string attribute `attribute_id` into `*result` (Envoy-owned).
    /// Returns false if unavailable, not a string, or not implemented.
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: FilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Gets integer attribute `attribute_id` into `*result`. Returns false
    /// if unavailable, not an integer, or not implemented.
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter_envoy_ptr: FilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut u64,
    ) -> bool;
}
