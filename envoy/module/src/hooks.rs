//! The `envoy_dynamic_module_on_http_filter_*` hooks this filter does not
//! use. Envoy refuses to load an HTTP filter module unless it exports every
//! such hook abi.h declares, so each one is here with its exact C signature
//! and does nothing: a status-returning hook returns its "Continue" value,
//! and nothing is allocated, dereferenced or able to panic.
//!
//! Implemented elsewhere: `envoy_dynamic_module_on_program_init`,
//! `..._on_http_filter_config_new`, `..._config_destroy`, `..._new`,
//! `..._destroy`, `..._request_headers`, `..._request_body`,
//! `..._response_headers` and `..._stream_complete`.
//!
//! The filter starts no HTTP callouts or streams, schedules no events and
//! is not a terminal filter, so the callout, stream, scheduled and watermark
//! hooks are never called in practice.

use crate::abi::*;

// ----------------------------- Per-route config -----------------------------

/// Per-route config is not supported: returning null makes Envoy reject the
/// per-route configuration, which only happens when a route actually
/// carries a per-route config for this filter; the filter's own config and
/// routes without one are unaffected.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> PerRouteConfigModulePtr {
    std::ptr::null()
}

/// Never handed a non-null config (per_route_config_new never makes one).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _filter_config_ptr: PerRouteConfigModulePtr,
) {
}

// ----------------------------- Stream events -----------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> ResponseBodyStatus {
    RESPONSE_BODY_STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) -> ResponseTrailersStatus {
    RESPONSE_TRAILERS_STATUS_CONTINUE
}

/// Lets a local reply (ours or another filter's) go out as normal.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _response_code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> LocalReplyStatus {
    LOCAL_REPLY_STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _event_id: u64,
) {
}

// ----------------------- Per-stream callouts and streams -----------------------

#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _callout_id: u64,
    _result: HttpCalloutResult,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _reason: HttpStreamResetReason,
) {
}

// ---------------------- Config-level events, callouts, streams ----------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _event_id: u64,
) {
}

#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _callout_id: u64,
    _result: HttpCalloutResult,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _reason: HttpStreamResetReason,
) {
}
