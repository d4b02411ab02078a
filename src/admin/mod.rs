//! The sidecar's admin HTTP API (docs/sidecar-api.md): health, readiness, metrics,
//! status, policies, explain and recent decisions.

use crate::audit::log::DecisionLog;
use crate::audit::{record::DecisionRecord, AuditStatus};
use crate::authz::EngineSlot;
use crate::metrics::Metrics;
use crate::timestamp::format_timestamp;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What the bundle loader reports for `/v1/status` and `/readyz`.
#[derive(Default)]
pub(crate) struct LoadStatus {
    inner: Mutex<LoadStatusInner>,
}

#[derive(Default, Clone)]
struct LoadStatusInner {
    source: String,
    last_error: Option<(SystemTime, String)>,
}

impl LoadStatus {
    pub(crate) fn new(source: String) -> LoadStatus {
        LoadStatus {
            inner: Mutex::new(LoadStatusInner {
                source,
                last_error: None,
            }),
        }
    }

    pub(crate) fn set_error(&self, message: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.last_error = Some((SystemTime::now(), message));
    }

    fn snapshot(&self) -> LoadStatusInner {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
pub(crate) struct AdminState {
    pub engine: EngineSlot,
    pub metrics: Arc<Metrics>,
    pub status: Arc<LoadStatus>,
    pub log: Arc<DecisionLog>,
    pub audit: Arc<AuditStatus>,
}

pub(crate) fn router(state: AdminState) -> Router {
    // The JSON API answers every error as `{"error": "…"}` (axum's own
    // for a bad query or a wrong method too); the probes and the metrics
    // stay plain text, as Kubernetes and Prometheus read them.
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/policies", get(policies))
        .route("/v1/policies/{id}/explain", get(explain))
        .route("/v1/decisions", get(decisions))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint (/healthz, /readyz, /metrics, /v1/status, /v1/policies, /v1/policies/{id}/explain, /v1/decisions)".into(),
            )
        })
        .layer(axum::middleware::map_response(crate::json_errors::json_errors));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(api)
        .with_state(state)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.engine.load().is_some() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let reason = match state.status.snapshot().last_error {
        Some((_, e)) => format!("no bundle active: {e}\n"),
        None => "no bundle active yet\n".to_owned(),
    };
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// How the active bundle's policies are indexed (policy/index.rs): how
/// many are keyed on a field and how many every check evaluates.
fn index_status(summary: &crate::policy::IndexSummary) -> Value {
    json!({
        "enabled": summary.enabled,
        "indexed": summary.indexed,
        "alwaysEvaluated": summary.always_evaluated,
        "fields": summary.fields.iter().map(|(f, n)| (f.clone(), json!(n))).collect::<serde_json::Map<String, Value>>(),
    })
}

async fn status(State(state): State<AdminState>) -> Json<Value> {
    let load = state.status.snapshot();
    let engine = state.engine.load_full();
    let bundle = engine.as_ref().map(|e| {
        let mut by_state = serde_json::Map::new();
        for p in e.bundle.policies.policies() {
            let n = by_state.entry(p.state().as_str()).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
        json!({
            "name": &*e.bundle.name,
            "revision": &*e.bundle.revision,
            "digest": e.bundle.digest,
            "source": e.source,
            "signer": e.bundle.signer,
            "activatedAt": format_timestamp(e.activated_at),
            "defaultDecision": e.bundle.policies.default_decision().as_str(),
            "policies": by_state,
            "index": index_status(&e.bundle.policies.index_summary()),
        })
    });
    let audit = &state.metrics.audit;
    let pipeline = state.audit.snapshot();
    Json(json!({
        "ready": bundle.is_some(),
        "source": load.source,
        "bundle": bundle,
        "lastBundleError": load.last_error.map(|(at, message)| json!({
            "at": format_timestamp(at),
            "message": message,
        })),
        "bundleLoads": {
            "success": state.metrics.bundle_loads_success.get(),
            "error": state.metrics.bundle_loads_error.get(),
        },
        "audit": {
            "queued": audit.queue_depth.get(),
            "unacknowledged": audit.backlog.get(),
            // The documented name: records waiting on disk (0 without a spool).
            "spooled": if pipeline.spool_dir.is_some() { audit.backlog.get() } else { 0 },
            "spooledBytes": audit.spool_bytes.get(),
            "shipped": audit.shipped.get(),
            "dropped": audit.dropped.get(),
            "rejected": audit.rejected.get(),
            "shipFailures": audit.ship_failures.get(),
            "pipeline": pipeline,
        },
    }))
}

async fn policies(State(state): State<AdminState>) -> Response {
    let Some(engine) = state.engine.load_full() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no bundle active".into());
    };
    let list: Vec<Value> = engine
        .bundle
        .policies
        .policies()
        .iter()
        .map(|p| {
            json!({
                "id": &*p.id,
                "version": p.version(),
                "state": p.state().as_str(),
                "severity": p.document.severity,
                "effect": p.effect().as_str(),
                "canaryPercent": p.document.canary_percent,
                "description": p.document.description,
                "file": engine.bundle.policy_files.get(&*p.id),
            })
        })
        .collect();
    Json(json!({
        "bundle": &*engine.bundle.name,
        "revision": &*engine.bundle.revision,
        "policies": list,
    }))
    .into_response()
}

fn decision_summary(record: &DecisionRecord, policy: &str) -> Value {
    let role = if record.policy_id.as_deref() == Some(policy) {
        "decided"
    } else {
        "shadow"
    };
    json!({
        "decisionId": record.id,
        "ts": record.ts,
        "requestId": record.request_id,
        "decision": record.decision,
        "status": record.status,
        "role": role,
        "bundleRevision": record.bundle_revision,
        "evidenceRefs": record.evidence_refs,
    })
}

async fn explain(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(engine) = state.engine.load_full() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no bundle active".into());
    };
    let Some(policy) = engine.bundle.policies.find(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no policy \"{id}\" in bundle {} {}",
                engine.bundle.name, engine.bundle.revision
            ),
        );
    };
    let recent: Vec<Value> = state
        .log
        .for_policy(&id)
        .iter()
        .filter_map(|line| serde_json::from_slice::<DecisionRecord>(line).ok())
        .map(|r| decision_summary(&r, &id))
        .collect();
    let doc = &policy.document;
    Json(json!({
        "id": &*policy.id,
        "version": doc.version,
        "description": doc.description,
        "severity": doc.severity,
        "state": doc.state.as_str(),
        "effect": doc.effect.as_str(),
        "canaryPercent": doc.canary_percent,
        "canaryKey": doc.canary_key,
        "rule": doc.when.to_value(),
        "response": doc.response,
        "evidence": doc.evidence,
        "file": engine.bundle.policy_files.get(&id),
        "bundle": {"name": &*engine.bundle.name, "revision": &*engine.bundle.revision},
        "recentDecisions": recent,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<String>,
}

async fn decisions(State(state): State<AdminState>, Query(q): Query<Limit>) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if n > 0 => n.min(crate::audit::log::RECENT_CAPACITY),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a positive integer".into(),
            )
        }
    };
    // The kept lines are the records' JSON already: joined, not re-encoded.
    let lines = state.log.recent(limit);
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"decisions\":[");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(line);
    }
    body.extend_from_slice(b"]}");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
