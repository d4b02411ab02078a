//! `libsentinelnet_envoy.so`: SentinelNet's compiled policies inside Envoy,
//! as an HTTP filter loaded through Envoy's dynamic-module ABI (v0.2.0:
//! Envoy 1.39 and 1.40; README "In-process mode").
//!
//! The filter decides each request with the sidecar's own code — the same
//! input view, policy set, decision and answer (`sentinelnet` is a
//! dependency, not a copy) — without the ext_authz round trip:
//! [`filter`] is one request, [`bundles`] keeps the active bundle (loaded,
//! verified and watched on a thread of its own, swapped with `arc-swap`),
//! [`records`] sends one decision event per request to the sidecar's
//! `--record-socket`, [`settings`] reads `filter_config`. [`abi`] declares
//! the Envoy callbacks used and [`envoy`] wraps them; [`hooks`] are the
//! hooks Envoy requires that this filter leaves alone.
//!
//! Safety at the boundary: every hook runs inside `catch_unwind`, so no
//! panic crosses into Envoy; a panic while deciding answers `onError`.
//! Nothing blocks a worker: no locks the loader holds, no I/O.

// The exported hooks take Envoy's raw pointers by ABI and are called only
// by Envoy; they cannot be `unsafe fn`s (Envoy calls them as C functions).
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod abi;
mod bundles;
mod envoy;
mod filter;
mod hooks;
mod records;
mod settings;

use abi::*;
use arc_swap::ArcSwapOption;
use envoy::{HeaderKind, Stream};
use filter::{Filter, FilterConfig};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn log_warn(message: &str) {
    envoy::log(LOG_LEVEL_WARN, message);
}

fn log_info(message: &str) {
    envoy::log(LOG_LEVEL_INFO, message);
}

/// Envoy checks the ABI version the module was built against.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> AbiVersionModulePtr {
    ABI_VERSION.as_ptr()
}

/// Envoy's counter of decision events the module could not hand to the
/// sidecar (`--record-socket` full or absent, the queue full).
const DROPPED_COUNTER: &str = "sentinelnet_records_dropped";

fn new_config(
    config: &[u8],
    filter_config_envoy_ptr: FilterConfigEnvoyPtr,
) -> Result<FilterConfig, String> {
    let settings = settings::Settings::parse(config)?;
    let trusted = settings
        .trusted_keys
        .as_deref()
        .map(sentinelnet::bundle::signing::TrustedKeys::load_dir)
        .transpose()
        .map_err(|e| format!("filter_config trustedKeys: {e}"))?;
    let slot: bundles::Slot = Arc::new(ArcSwapOption::empty());
    let stop = Arc::new(AtomicBool::new(false));
    bundles::watch(
        settings.bundle.clone(),
        trusted,
        slot.clone(),
        stop.clone(),
        log_info,
    )
    .map_err(|e| format!("cannot start the bundle thread: {e}"))?;
    let records = match &settings.records {
        Some(socket) => Some(
            records::Records::start(
                socket.clone(),
                settings.view.clone(),
                envoy::ConfigCounter::define(filter_config_envoy_ptr, DROPPED_COUNTER),
                log_warn,
            )
            .map_err(|e| format!("cannot start the records thread: {e}"))?,
        ),
        None => None,
    };
    Ok(FilterConfig {
        settings,
        slot,
        records,
        stop,
    })
}

/// A filter configuration: `filter_config` parsed, the bundle thread (and
/// the records thread) started. A bad `filter_config` is refused (null),
/// with the reason in Envoy's log.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> FilterConfigModulePtr {
    let made = catch_unwind(|| {
        // SAFETY: Envoy passes a buffer valid for this call.
        let bytes = unsafe { config.as_bytes() };
        new_config(bytes, filter_config_envoy_ptr)
    });
    match made {
        Ok(Ok(config)) => Box::into_raw(Box::new(config)) as FilterConfigModulePtr,
        Ok(Err(message)) => {
            envoy::log(LOG_LEVEL_ERROR, &format!("sentinelnet: {message}"));
            std::ptr::null()
        }
        Err(_) => {
            envoy::log(LOG_LEVEL_ERROR, "sentinelnet: loading filter_config failed");
            std::ptr::null()
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: FilterConfigModulePtr,
) {
    if filter_config_ptr.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: made by Box::into_raw in config_new, destroyed once.
        drop(unsafe { Box::from_raw(filter_config_ptr as *mut FilterConfig) });
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: FilterConfigModulePtr,
    _filter_envoy_ptr: FilterEnvoyPtr,
) -> FilterModulePtr {
    let config = filter_config_ptr as *const FilterConfig;
    catch_unwind(|| Box::into_raw(Box::new(Filter::new(config))) as FilterModulePtr)
        .unwrap_or(std::ptr::null())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module_ptr: FilterModulePtr) {
    if filter_module_ptr.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: made by Box::into_raw in filter_new, destroyed once.
        drop(unsafe { Box::from_raw(filter_module_ptr as *mut Filter) });
    });
}

/// The filter and its configuration behind Envoy's pointers.
///
/// # Safety
/// Both pointers come from this module (`filter_new`, `config_new`) and
/// are alive for the hook; Envoy calls one stream's hooks on one thread.
unsafe fn parts<'a>(filter: FilterModulePtr) -> Option<&'a mut Filter> {
    // SAFETY: see above.
    unsafe { (filter as *mut Filter).as_mut() }
}

/// The configuration a filter belongs to (Envoy hands it to `filter_new`
/// only, which keeps it in the filter).
fn config_of<'a>(filter: &Filter) -> Option<&'a FilterConfig> {
    // SAFETY: the configuration outlives every stream created from it.
    unsafe { filter.config.as_ref() }
}

fn decide_now(
    envoy_ptr: FilterEnvoyPtr,
    filter: &mut Filter,
    config: &FilterConfig,
    body: Option<Vec<u8>>,
) -> bool {
    // SAFETY: `envoy_ptr` is the pointer of the running hook.
    let stream = unsafe { Stream::new(envoy_ptr) };
    let on_error = config.settings.on_error;
    match catch_unwind(AssertUnwindSafe(|| {
        filter::decide(&stream, config, filter, body)
    })) {
        Ok(allowed) => allowed,
        Err(_) => filter::on_internal_error(&stream, on_error),
    }
}

/// A panic outside the decision itself (where `onError` is not known):
/// answer 503 rather than let the request through undecided.
fn fail_closed(envoy_ptr: FilterEnvoyPtr) {
    let _ = catch_unwind(|| {
        // SAFETY: the pointer of the running hook.
        let stream = unsafe { Stream::new(envoy_ptr) };
        filter::on_internal_error(&stream, sentinelnet::policy::Verdict::Deny);
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
    end_of_stream: bool,
) -> RequestHeadersStatus {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pointers from this module, alive for the hook.
        let Some(filter) = (unsafe { parts(filter_module_ptr) }) else {
            return REQUEST_HEADERS_STATUS_CONTINUE;
        };
        let Some(config) = config_of(filter) else {
            return REQUEST_HEADERS_STATUS_CONTINUE;
        };
        if !end_of_stream && filter::wants_body(config) {
            filter.waiting_for_body = true;
            return REQUEST_HEADERS_STATUS_STOP_ITERATION;
        }
        if decide_now(filter_envoy_ptr, filter, config, None) {
            REQUEST_HEADERS_STATUS_CONTINUE
        } else {
            REQUEST_HEADERS_STATUS_STOP_ITERATION
        }
    }));
    result.unwrap_or_else(|_| {
        fail_closed(filter_envoy_ptr);
        REQUEST_HEADERS_STATUS_STOP_ITERATION
    })
}

/// The request's body is complete (its last chunk, or its trailers):
/// decide with it. Whether it goes on; `None` when the filter was not
/// waiting for a body.
fn decide_with_body(envoy_ptr: FilterEnvoyPtr, filter_module_ptr: FilterModulePtr) -> Option<bool> {
    // SAFETY: pointers from this module, alive for the hook.
    let filter = unsafe { parts(filter_module_ptr) }?;
    if !filter.waiting_for_body {
        return None;
    }
    filter.waiting_for_body = false;
    let config = config_of(filter)?;
    // SAFETY: the pointer of the running hook.
    let body = unsafe { Stream::new(envoy_ptr) }.request_body();
    Some(decide_now(envoy_ptr, filter, config, Some(body)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
    end_of_stream: bool,
) -> RequestBodyStatus {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pointers from this module, alive for the hook.
        let waiting = unsafe { parts(filter_module_ptr) }.is_some_and(|f| f.waiting_for_body);
        if !waiting {
            REQUEST_BODY_STATUS_CONTINUE
        } else if !end_of_stream {
            REQUEST_BODY_STATUS_STOP_ITERATION_AND_BUFFER
        } else if decide_with_body(filter_envoy_ptr, filter_module_ptr) == Some(false) {
            REQUEST_BODY_STATUS_STOP_ITERATION_NO_BUFFER
        } else {
            REQUEST_BODY_STATUS_CONTINUE
        }
    }));
    result.unwrap_or_else(|_| {
        fail_closed(filter_envoy_ptr);
        REQUEST_BODY_STATUS_STOP_ITERATION_NO_BUFFER
    })
}

/// A request with trailers ends with them, not with a body chunk marked
/// last: a request still waiting for its body is decided here, so trailers
/// never carry a request past the filter undecided.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
) -> RequestTrailersStatus {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if decide_with_body(filter_envoy_ptr, filter_module_ptr) == Some(false) {
            REQUEST_TRAILERS_STATUS_STOP_ITERATION
        } else {
            REQUEST_TRAILERS_STATUS_CONTINUE
        }
    }));
    result.unwrap_or_else(|_| {
        fail_closed(filter_envoy_ptr);
        REQUEST_TRAILERS_STATUS_STOP_ITERATION
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> ResponseHeadersStatus {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pointers from this module, alive for the hook.
        if let Some(filter) = unsafe { parts(filter_module_ptr) } {
            if !filter.response_headers.is_empty() {
                // SAFETY: the pointer of the running hook.
                let stream = unsafe { Stream::new(filter_envoy_ptr) };
                for (key, value) in filter.response_headers.drain(..) {
                    stream.set_header(HeaderKind::Response, &key, Some(&value));
                }
            }
        }
    }));
    RESPONSE_HEADERS_STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) {
}
