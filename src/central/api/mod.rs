//! Central's HTTP API (docs/central-api.md): routing, roles per route, status codes.
//! The registry's routes are here; decision records' in [`decisions`].

mod decisions;

use super::decisions::{DecisionMetrics, Decisions};
use super::fleet::Fleet;
use super::identity::{Peer, Rbac, Refusal, Role};
use super::limits::{Budget, RateLimiter};
use super::registry::{revision_name, Registry, RegistryError};
use super::rollout::{Rollout, RolloutMetrics};
use super::store::StoreError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest body of any other call (a policy, a transition, a simulation request).
const MAX_API_BODY: usize = 1 << 20;

/// Longest `?wait=` honoured: sidecars ask for 30.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Long polls also re-read the store this often, so a revision published by
/// another central on the same PostgreSQL is seen too.
const STORE_RECHECK: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(crate) struct CentralMetrics {
    pub registry: prometheus::Registry,
    pub refusals: IntCounterVec,
    pub requests: IntCounterVec,
    pub decisions: DecisionMetrics,
    pub fleet_sidecars: IntGaugeVec,
    pub rollout: RolloutMetrics,
    pub rate_limited: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    /// Messages on the decision stream not yet delivered to any replica.
    pub stream_pending: prometheus::IntGauge,
}

impl CentralMetrics {
    pub(crate) fn new() -> CentralMetrics {
        let registry = prometheus::Registry::new();
        let refusals = IntCounterVec::new(
            prometheus::Opts::new(
                "sentinel_central_refusals_total",
                "Requests refused: TLS handshake, unknown identity, or a role that does not cover the call",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            prometheus::Opts::new(
                "sentinel_central_requests_total",
                "API requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        for collector in [&refusals, &requests] {
            let _ = registry.register(Box::new(collector.clone()));
        }
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let decisions = DecisionMetrics {
            ingested: counter(
                "sentinel_central_ingested_records_total",
                "Decision records stored (new ids)",
            ),
            duplicates: counter(
                "sentinel_central_ingest_duplicates_total",
                "Decision records received again with the same id and content",
            ),
            rejected: counter(
                "sentinel_central_ingest_rejected_total",
                "Posted lines refused (not a valid record, or an id stored with other content); kept in quarantine",
            ),
            conflicts: counter(
                "sentinel_central_ingest_conflicts_total",
                "Integrity alarms: a record id already stored with different content (the stored record is kept)",
            ),
            chain_breaks: counter(
                "sentinel_central_chain_breaks_total",
                "Hash-chain breaks found at ingest (wrong link, edited record, second record for a seq)",
            ),
            chain_gaps: IntGauge::new(
                "sentinel_central_chain_gaps",
                "Missing seq ranges across all decision chains",
            )
            .expect("valid metric"),
        };
        let _ = registry.register(Box::new(decisions.chain_gaps.clone()));
        let fleet_sidecars = IntGaugeVec::new(
            prometheus::Opts::new(
                "sentinel_central_fleet_sidecars",
                "Sidecars by whether they hold their bundle's newest revision",
            ),
            &["current"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(fleet_sidecars.clone()));
        let per_policy = |name: &str, help: &str| {
            let c = IntCounterVec::new(prometheus::Opts::new(name, help), &["policy"])
                .expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let rollout = RolloutMetrics {
            trips: per_policy(
                "sentinel_central_canary_guard_trips_total",
                "Canaries the guard paused (percent set to 0) after consecutive bad windows",
            ),
            promotions: per_policy(
                "sentinel_central_promotions_total",
                "LOW/MEDIUM canaries promoted to active after --promote-after without a bad window",
            ),
        };
        let rate_limited = IntCounterVec::new(
            prometheus::Opts::new(
                "sentinel_central_rate_limited_total",
                "Requests answered 429 because the identity was over --rate-limit or --ingest-rate-limit",
            ),
            &["identity"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(rate_limited.clone()));
        let tls_reloads = IntCounterVec::new(
            prometheus::Opts::new(
                "sentinel_central_tls_reloads_total",
                "Reloads of --tls-cert/--tls-key/--client-ca after they changed, by result (error: the previous files stay in use)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(tls_reloads.clone()));
        let stream_pending = prometheus::IntGauge::new(
            "sentinel_central_stream_pending",
            "Messages on the decision stream not yet delivered to any central replica (read every 5 s; 0 without --decision-stream)",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(stream_pending.clone()));
        CentralMetrics {
            stream_pending,
            tls_reloads,
            rate_limited,
            rollout,
            registry,
            refusals,
            requests,
            decisions,
            fleet_sidecars,
        }
    }
}

impl Default for CentralMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub limiter: Arc<RateLimiter>,
    /// Largest body of a record batch or a push (`--max-body`).
    pub max_body: usize,
    pub registry: Arc<Registry>,
    pub rollout: Arc<Rollout>,
    pub decisions: Arc<Decisions>,
    pub fleet: Arc<Fleet>,
    pub rbac: Arc<Rbac>,
    pub metrics: CentralMetrics,
}

struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds a rate-limited caller should wait (`Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> ApiError {
        ApiError {
            status,
            message,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Conflict(_) => StatusCode::CONFLICT,
            RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
            RegistryError::Refused(_) => StatusCode::FORBIDDEN,
            RegistryError::Signing(k) => {
                tracing::error!(error = %k, "central: cannot sign a bundle revision");
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Store(s) if s.is_conflict() => StatusCode::CONFLICT,
            RegistryError::Store(s) => {
                tracing::error!(error = %s, "central: store failure");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(RegistryError::Store(e))
    }
}

type ApiResult<T> = Result<T, ApiError>;

impl AppState {
    /// The caller's identity if it holds one of `allowed`; otherwise a
    /// logged, counted 403.
    fn identify(&self, peer: &Peer, route: &str, allowed: &[Role]) -> ApiResult<String> {
        let outcome = match &peer.identity {
            None => Err(Refusal::NoIdentity),
            Some(identity) => self
                .rbac
                .permits(identity, allowed)
                .map(|()| identity.clone()),
        };
        let identity = outcome.map_err(|refusal| {
            self.metrics.refusals.with_label_values(&[refusal.label()]).inc();
            let who = peer.identity.as_deref().unwrap_or("(no identity)");
            tracing::warn!(peer = %peer.addr, identity = who, route, reason = refusal.label(), "central: refused");
            let message = match refusal {
                Refusal::NoIdentity => "the client certificate names no identity (URI SAN or CN)".to_owned(),
                Refusal::UnknownIdentity => format!("identity \"{who}\" is not in the RBAC file"),
                Refusal::Role => format!(
                    "identity \"{who}\" may not call {route} (needs one of: {})",
                    allowed.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(", ")
                ),
            };
            ApiError::new(StatusCode::FORBIDDEN, message)
        })?;
        Ok(identity)
    }

    /// [`Self::identify`], then the identity's rate limit for `route`.
    fn authorize(&self, peer: &Peer, route: &str, allowed: &[Role]) -> ApiResult<String> {
        let identity = self.identify(peer, route, allowed)?;
        // Sidecars' record batches and bundle polls have their own budget.
        let budget = match route {
            "POST /v1/audit/decisions" | "GET /v1/bundles/{name}" => Budget::Ingest,
            _ => Budget::Api,
        };
        if let Err(wait) = self.limiter.check(&identity, budget) {
            self.metrics
                .rate_limited
                .with_label_values(&[identity.as_str()])
                .inc();
            tracing::debug!(identity, route, "central: rate limited");
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("identity \"{identity}\" is over its request rate; retry in {seconds} s"),
            );
            error.retry_after = Some(seconds);
            return Err(error);
        }
        Ok(identity)
    }

    /// Remember what a sidecar holds (pulls by publishers are not the fleet).
    async fn saw_sidecar(&self, identity: &str, node: &str, bundle: &str, revision: i64) {
        if self.rbac.permits(identity, &[Role::Sidecar]).is_err() {
            return;
        }
        if let Err(e) = self.fleet.saw(identity, node, bundle, revision).await {
            tracing::warn!(error = %e, identity, "central: cannot record the fleet");
        }
    }

    fn count(&self, route: &str, status: StatusCode) {
        self.metrics
            .requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }
}

/// Run a handler body, count its outcome by route.
async fn counted<F>(state: &AppState, route: &'static str, body: F) -> Response
where
    F: std::future::Future<Output = ApiResult<Response>>,
{
    let response = match body.await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    state.count(route, response.status());
    response
}

const PUBLISHERS: &[Role] = &[Role::Publisher];
/// Any role: an identity the RBAC file knows.
const KNOWN: &[Role] = &[Role::Sidecar, Role::Publisher, Role::Approver, Role::Admin];

/// Refuse a caller whose certificate names no identity, or one the RBAC
/// file does not know, before its request body is read: an anonymous
/// certificate from the CA must not make central read and parse megabytes.
/// Roles per route are checked by each handler; `/healthz` and `/metrics`
/// need no role.
async fn admit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    matched: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = matched.as_str();
    if matches!(path, "/healthz" | "/metrics") {
        return next.run(request).await;
    }
    // A fixed set of methods: the route is a metric label, and any token is
    // a valid HTTP method.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "OTHER",
    };
    let route = format!("{method} {path}");
    match state.identify(&peer, &route, KNOWN) {
        Ok(_) => next.run(request).await,
        Err(refused) => {
            let response = refused.into_response();
            state.count(&route, response.status());
            response
        }
    }
}
const ANYONE: &[Role] = &[Role::Sidecar, Role::Publisher, Role::Approver];

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/bundles", get(list_bundles))
        .route("/v1/bundles/{name}", get(get_bundle).put(put_bundle))
        .route(
            "/v1/bundles/{name}/push",
            post(push).layer(axum::extract::DefaultBodyLimit::max(state.max_body)),
        )
        .route(
            "/v1/bundles/{name}/policies",
            get(list_policies).post(create_policy),
        )
        .route(
            "/v1/bundles/{name}/policies/{id}",
            axum::routing::put(add_version),
        )
        .route(
            "/v1/bundles/{name}/policies/{id}/transition",
            post(transition),
        )
        .route("/v1/bundles/{name}/policies/{id}/manifest", get(manifest))
        .route("/v1/bundles/{name}/policies/{id}/approvals", post(approve))
        .route("/sentinelnet/policy/{id}/explain", get(explain))
        .route("/v1/simulate", post(simulate))
        .route("/openapi.json", get(openapi))
        .merge(decisions::routes(state.max_body))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_API_BODY))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint (GET /openapi.json lists them)".into(),
            )
        })
        .layer(axum::middleware::map_response(
            crate::json_errors::json_errors,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The response headers every answer carries (a browser that reaches the
/// API by mistake renders nothing, caches nothing, leaks no referrer).
const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("strict-transport-security", "max-age=31536000"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("content-security-policy", "default-src 'none'"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    response
}

/// The OpenAPI 3 description of every endpoint, kept next to the routes
/// and tested against them (`openapi_lists_every_route`).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let route = "GET /openapi.json";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
    })
    .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    // The fleet gauge as of this scrape (the pruning loop refreshes it
    // too, but only once a minute).
    if let Err(e) = state.fleet.list(&state.registry).await {
        tracing::warn!(error = %e, "central: cannot refresh the fleet gauge");
    }
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&state.metrics.registry.gather(), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

fn etag_of(bundle: &str, revision: i64) -> String {
    format!("\"{bundle}-{}\"", revision_name(revision))
}

/// The revision an `etag_of` names for `bundle`, if it is one.
fn revision_of(etag: &str, bundle: &str) -> Option<i64> {
    etag.strip_prefix('"')?
        .strip_suffix('"')?
        .strip_prefix(bundle)?
        .strip_prefix("-r")?
        .parse()
        .ok()
}

async fn get_bundle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    let route = "GET /v1/bundles/{name}";
    counted(&state.clone(), route, async move {
        let identity = state.authorize(&peer, route, &[Role::Sidecar, Role::Publisher])?;
        let node = headers
            .get("x-sentinel-node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let known = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The fleet: what the sidecar holds is what its If-None-Match names
        // (a sidecar that refuses a new revision keeps asking with the old);
        // without one it holds nothing of this bundle yet.
        let held = known
            .as_deref()
            .and_then(|e| revision_of(e, &name))
            .unwrap_or(super::fleet::NONE_HELD);
        state.saw_sidecar(&identity, &node, &name, held).await;
        let wait = Duration::from_secs(query.wait.unwrap_or(0)).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let mut published = state.registry.subscribe();
        loop {
            // Mark the current value seen before reading the store, so a
            // publish between the read and the wait still wakes us.
            published.borrow_and_update();
            let current = state.registry.current(&name).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no published revision of bundle {name}"),
                )
            })?;
            let etag = etag_of(&name, current.revision);
            if known.as_deref() != Some(etag.as_str()) {
                let archive = state.registry.archive(&name, current.revision).await?;
                return Ok((
                    [
                        (header::ETAG, etag),
                        (header::CONTENT_TYPE, "application/gzip".to_owned()),
                        (
                            header::HeaderName::from_static("x-sentinel-revision"),
                            revision_name(current.revision),
                        ),
                    ],
                    archive,
                )
                    .into_response());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
            }
            let nap = (deadline - now).min(STORE_RECHECK);
            let _ = tokio::time::timeout(nap, published.changed()).await;
        }
    })
    .await
}

async fn put_bundle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let route = "PUT /v1/bundles/{name}";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, PUBLISHERS)?;
        let result = state.registry.put_bundle(&name, &body, &by).await?;
        Ok(Json(result).into_response())
    })
    .await
}

async fn list_bundles(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Response {
    let route = "GET /v1/bundles";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        Ok(Json(state.registry.bundles().await?).into_response())
    })
    .await
}

async fn push(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let route = "POST /v1/bundles/{name}/push";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, PUBLISHERS)?;
        let report = state.registry.push(&name, &body, &by).await?;
        Ok(Json(report).into_response())
    })
    .await
}

async fn list_policies(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Response {
    let route = "GET /v1/bundles/{name}/policies";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        Ok(Json(state.registry.list(&name).await?).into_response())
    })
    .await
}

/// Why a version was written: the `X-Sentinel-Reason` header (the body is
/// the policy document itself).
fn reason_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-sentinel-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

async fn create_policy(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "POST /v1/bundles/{name}/policies";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, PUBLISHERS)?;
        let status = state
            .registry
            .create_policy(&name, &body, reason_header(&headers), &by)
            .await?;
        Ok((StatusCode::CREATED, Json(status)).into_response())
    })
    .await
}

async fn add_version(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "PUT /v1/bundles/{name}/policies/{id}";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, PUBLISHERS)?;
        let status = state
            .registry
            .add_version(&name, &id, &body, reason_header(&headers), &by)
            .await?;
        Ok(Json(status).into_response())
    })
    .await
}

async fn transition(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let route = "POST /v1/bundles/{name}/policies/{id}/transition";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, PUBLISHERS)?;
        let status = state.registry.transition(&name, &id, &body, &by).await?;
        Ok(Json(status).into_response())
    })
    .await
}

async fn manifest(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let route = "GET /v1/bundles/{name}/policies/{id}/manifest";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, &[Role::Approver, Role::Publisher])?;
        let bytes = state.registry.manifest(&name, &id).await?;
        Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
    })
    .await
}

async fn approve(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let route = "POST /v1/bundles/{name}/policies/{id}/approvals";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, &[Role::Approver])?;
        let result = state.registry.approve(&name, &id, &body, &by).await?;
        Ok((StatusCode::CREATED, Json(result)).into_response())
    })
    .await
}

async fn explain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
) -> Response {
    let route = "GET /sentinelnet/policy/{id}/explain";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        let mut explained = state.registry.explain(&id).await?;
        let recent = state.decisions.recent_for_policy(&id, 100).await?;
        let canary = state.rollout.explain(&id).await?;
        if let Some(map) = explained.as_object_mut() {
            map.insert("recentDecisions".into(), serde_json::Value::Array(recent));
            map.insert("canary".into(), canary);
        }
        Ok(Json(explained).into_response())
    })
    .await
}

async fn simulate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    let route = "POST /v1/simulate";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, PUBLISHERS)?;
        let report =
            super::rollout::simulate::simulate(&state.registry, &state.decisions, &body).await?;
        Ok(Json(report).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;
    use std::collections::BTreeSet;

    const SOURCES: [&str; 2] = [include_str!("mod.rs"), include_str!("decisions.rs")];

    /// Every `let route = "METHOD PATH"` a handler counts itself under.
    fn counted_routes() -> BTreeSet<String> {
        let mut routes = BTreeSet::new();
        for source in SOURCES {
            for line in source.lines() {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("let route = \"") {
                    if let Some(route) = rest.strip_suffix("\";") {
                        routes.insert(route.to_owned());
                    }
                }
            }
        }
        routes
    }

    /// Every method and path registered with `.route(PATH, get(…).post(…))`.
    fn registered_routes() -> BTreeSet<String> {
        let mut routes = BTreeSet::new();
        for source in SOURCES {
            let mut rest = source;
            while let Some(at) = rest.find(".route(") {
                rest = &rest[at + ".route(".len()..];
                // The call's text, up to its closing parenthesis.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i);
                let call = &rest[..end];
                let Some(path) = call.split('"').nth(1) else {
                    continue;
                };
                if !path.starts_with('/') {
                    continue;
                }
                for method in ["get", "post", "put", "delete", "patch"] {
                    let needle = format!("{method}(");
                    let mut from = 0;
                    while let Some(i) = call[from..].find(&needle) {
                        let at = from + i;
                        let before = call[..at].chars().next_back().unwrap_or(' ');
                        if !before.is_ascii_alphanumeric() && before != '_' {
                            routes.insert(format!("{} {path}", method.to_uppercase()));
                        }
                        from = at + needle.len();
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn openapi_lists_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, operations) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in operations.as_object().expect("operations") {
                documented.insert(format!("{} {path}", method.to_uppercase()));
                assert!(
                    operation["x-roles"].is_array(),
                    "{method} {path} lists its roles"
                );
                for status in ["400", "403", "404", "409", "413", "429", "503"] {
                    assert!(
                        operation["responses"][status]["content"]["application/json"].is_object(),
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
        let registered = registered_routes();
        assert!(registered.len() > 20, "{registered:?}");
        assert_eq!(documented, registered, "openapi.json vs the router");
        // Every route but the two unauthenticated ones counts itself.
        let mut counted = counted_routes();
        counted.insert("GET /healthz".into());
        counted.insert("GET /metrics".into());
        assert_eq!(counted, registered, "handlers' route names vs the router");
    }
}
