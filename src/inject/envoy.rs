//! The Envoy bootstrap an injected pod runs: one listener on the pod's
//! interfaces in front of the app, the ext_authz filter calling the
//! sentinelnet container over the Unix socket both mount, admin on
//! loopback only.
//!
//! It is passed inline (`envoy --config-yaml JSON`) rather than as a
//! ConfigMap: a webhook mutating a Pod cannot create a ConfigMap beside it,
//! and a pod whose Envoy config lives in its own spec cannot drift from the
//! sidecar it calls. The text is compact JSON (YAML's subset), a few KB.

use serde_json::json;

/// Where Envoy's admin interface listens (loopback: `/quitquitquit` and
/// friends must not be reachable from the network).
pub const ADMIN_PORT: u16 = 9901;

/// What one pod's Envoy needs to know.
#[derive(Debug, Clone)]
pub struct EnvoyPlan<'a> {
    /// The port Envoy's listener takes on the pod's interfaces.
    pub listen_port: u16,
    /// The app's port on loopback.
    pub app_port: u16,
    /// Speak HTTP/2 to the app (gRPC, h2c) instead of HTTP/1.1.
    pub upstream_http2: bool,
    pub authz: Authz<'a>,
}

/// Who decides: the sidecar over ext_authz, or the module inside Envoy.
#[derive(Debug, Clone)]
pub enum Authz<'a> {
    /// ext_authz gRPC to the sidecar's Unix socket.
    ExtAuthz { socket: &'a str },
    /// The dynamic module (`libsentinelnet_envoy.so`) with this
    /// `filter_config` JSON (SPEC §11).
    InProcess { filter_config: String },
}

/// The module's name: Envoy loads `lib<name>.so` from
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub const MODULE_NAME: &str = "sentinelnet_envoy";

/// The bootstrap as one line of JSON for `--config-yaml`.
pub fn bootstrap(plan: &EnvoyPlan<'_>) -> String {
    // The dynamic metadata's namespace: ext_authz's, or the module's own.
    let namespace = match plan.authz {
        Authz::ExtAuthz { .. } => "envoy.filters.http.ext_authz",
        Authz::InProcess { .. } => "sentinelnet",
    };
    let metadata = |key: &str| format!("%DYNAMIC_METADATA({namespace}:{key})%");
    let access_log_format = json!({
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "status": "%RESPONSE_CODE%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        // Joins the access log to the sidecar's decision records.
        "decision_id": metadata("decisionId"),
        "policy_id": metadata("policyId"),
        "policy_version": metadata("policyVersion"),
        "bundle_revision": metadata("bundleRevision"),
    });
    let authz_filter = match &plan.authz {
        Authz::ExtAuthz { socket: _ } => json!({
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                // Fail closed, with a retryable 503 rather than a 403
                // that would look like a policy decision.
                "failure_mode_allow": false,
                "status_on_error": {"code": "ServiceUnavailable"},
                "include_peer_certificate": true,
                // Policies may read JSON bodies; larger ones arrive
                // truncated and surface as request.bodyError.
                "with_request_body": {
                    "max_request_bytes": 65536,
                    "allow_partial_message": true,
                    "pack_as_bytes": true,
                },
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": "sentinelnet"},
                    "timeout": "0.5s",
                },
            },
        }),
        Authz::InProcess { filter_config } => json!({
            "name": "sentinelnet",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": {"name": MODULE_NAME},
                "filter_name": "sentinelnet",
                "filter_config": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": filter_config,
                },
            },
        }),
    };
    let manager = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "app",
        // Policies see the path the app will route on: `//admin`,
        // `/x/../admin` and `%2F` cannot slip past a path rule.
        "normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        // WebSockets pass (the upgrade request is decided like any other).
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "access_log": [{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"json_format": access_log_format},
            },
        }],
        "route_config": {
            "name": "app",
            "virtual_hosts": [{
                "name": "app",
                "domains": ["*"],
                // No route timeout: streams and long polls are the app's to end.
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app", "timeout": "0s"}}],
            }],
        },
        "http_filters": [
            authz_filter,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    });
    let mut app = json!({
        "name": "app",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "app",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": plan.app_port},
            }}}]}],
        },
    });
    if plan.upstream_http2 {
        app["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    let mut clusters = vec![app];
    if let Authz::ExtAuthz { socket } = plan.authz {
        clusters.push(json!({
            "name": "sentinelnet",
            "type": "STATIC",
            "connect_timeout": "0.25s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                },
            },
            "load_assignment": {
                "cluster_name": "sentinelnet",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}],
            },
        }));
    }
    let config = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN_PORT}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                // IPv4 (binding `::` fails where a node disables IPv6).
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": plan.listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager,
                }]}],
            }],
            "clusters": clusters,
        },
    });
    config.to_string()
}
