//! Routes for decision records: ingest (role sidecar), queries, chains,
//! quarantine and export (any role), and the fleet.

use super::{counted, ApiError, ApiResult, AppState, ANYONE};
use crate::central::decisions::parse;
use crate::central::identity::{Peer, Role};
use crate::central::store::decisions::DecisionFilter;
use crate::timestamp::parse_rfc3339;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// Default and largest `limit` of a query.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// `max_body`: the largest posted batch (compressed or not), `--max-body`.
pub(super) fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/audit/decisions",
            post(ingest).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/v1/audit/quarantine", get(quarantine))
        .route("/v1/audit/chains", get(chains))
        .route("/v1/audit/export", get(export))
        .route("/v1/decisions", get(list))
        .route("/v1/decisions/{id}", get(one))
        .route("/v1/decisions/{id}/feedback", post(feedback))
        .route("/v1/fleet", get(fleet))
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "POST /v1/audit/decisions";
    counted(&state.clone(), route, async move {
        let identity = state.authorize(&peer, route, &[Role::Sidecar])?;
        let gzip = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = parse::body_bytes(&body, gzip).map_err(|e| {
            let status = match e {
                parse::BodyError::InflatesTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                parse::BodyError::NotGzip(_) => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, format!("request body: {e}"))
        })?;
        let report = state
            .decisions
            .ingest(
                body,
                crate::central::decisions::Source::Posted {
                    identity: &identity,
                },
            )
            .await?;
        Ok(Json(report).into_response())
    })
    .await
}

/// `GET /v1/decisions` and `/v1/audit/export` filters.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilterQuery {
    policy: Option<String>,
    node: Option<String>,
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    with_input: Option<String>,
}

impl FilterQuery {
    fn filter(&self) -> ApiResult<DecisionFilter> {
        let time = |name: &str, value: &Option<String>| -> ApiResult<Option<i64>> {
            value
                .as_deref()
                .map(|v| {
                    parse_rfc3339(v).ok_or_else(|| {
                        bad_request(format!(
                            "query {name}={v:?}: not an RFC 3339 time (e.g. 2026-11-22T23:59:59Z)"
                        ))
                    })
                })
                .transpose()
        };
        if let Some(d) = self
            .decision
            .as_deref()
            .filter(|d| !matches!(*d, "allow" | "deny"))
        {
            return Err(bad_request(format!(
                "query decision={d:?}: use allow or deny"
            )));
        }
        Ok(DecisionFilter {
            policy: self.policy.clone(),
            node: self.node.clone(),
            decision: self.decision.clone(),
            since_us: time("since", &self.since)?,
            until_us: time("until", &self.until)?,
            id: None,
            with_input_only: false,
        })
    }

    /// `limit`: default 100, at most 1,000 (a larger one is capped).
    fn limit(&self) -> ApiResult<i64> {
        self.given_limit()
            .map(|n| n.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT))
    }

    /// A positive whole `limit`, if given.
    fn given_limit(&self) -> ApiResult<Option<i64>> {
        match self.limit.as_deref().map(str::parse::<i64>) {
            None => Ok(None),
            Some(Ok(n)) if n >= 1 => Ok(Some(n)),
            // Larger than any count: capped like any large limit.
            Some(Err(e)) if *e.kind() == std::num::IntErrorKind::PosOverflow => Ok(Some(i64::MAX)),
            Some(_) => Err(bad_request(
                "query limit: use a whole number of 1 or more".into(),
            )),
        }
    }

    fn with_input(&self) -> ApiResult<bool> {
        match self.with_input.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(bad_request(format!(
                "query withInput={other:?}: use true or false"
            ))),
        }
    }
}

type FilterParam = Result<Query<FilterQuery>, QueryRejection>;

/// A query string that does not parse is a 400 naming the parameter.
fn filter_query(raw: FilterParam) -> ApiResult<FilterQuery> {
    raw.map(|Query(q)| q).map_err(|e| {
        bad_request(format!(
            "query: {} (known: policy, node, decision, since, until, limit, withInput)",
            e.body_text()
        ))
    })
}

async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    query: FilterParam,
) -> Response {
    let route = "GET /v1/decisions";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        let query = filter_query(query)?;
        let records = state
            .decisions
            .list(&query.filter()?, query.with_input()?, query.limit()?)
            .await?;
        Ok(Json(json!({ "decisions": records })).into_response())
    })
    .await
}

async fn one(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
) -> Response {
    let route = "GET /v1/decisions/{id}";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        match state.decisions.get(&id).await? {
            Some(record) => Ok(Json(record).into_response()),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no stored decision {id}"),
            )),
        }
    })
    .await
}

/// `POST /v1/decisions/{id}/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Feedback {
    label: String,
    #[serde(default)]
    note: String,
}

/// The labels a decision may be given: they judge its recorded decision.
const LABELS: [&str; 2] = ["false_positive", "true_positive"];

async fn feedback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let route = "POST /v1/decisions/{id}/feedback";
    counted(&state.clone(), route, async move {
        let by = state.authorize(&peer, route, &[Role::Publisher, Role::Approver])?;
        let feedback: Feedback = crate::bundle::parse_json("request body", &body)
            .map(|(typed, _)| typed)
            .map_err(|e| bad_request(e.to_string()))?;
        if !LABELS.contains(&feedback.label.as_str()) {
            return Err(bad_request(format!(
                "request body: at /label: \"{}\" is not a label (false_positive or true_positive)",
                feedback.label
            )));
        }
        match state
            .decisions
            .label(&id, &feedback.label, feedback.note.trim(), &by)
            .await?
        {
            Some(record) => {
                tracing::info!(decision = %id, label = %feedback.label, by, "central: decision labelled");
                Ok(Json(record).into_response())
            }
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no stored decision {id}"),
            )),
        }
    })
    .await
}

async fn export(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    query: FilterParam,
) -> Response {
    let route = "GET /v1/audit/export";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        let query = filter_query(query)?;
        let filter = query.filter()?;
        // No limit unless asked: an export is everything the filters select.
        let mut left = query.given_limit()?.unwrap_or(i64::MAX);
        // Pages of 1,000 records, written as they are read: memory does not
        // grow with the export.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let decisions = state.decisions.clone();
        tokio::spawn(async move {
            let mut after = None;
            loop {
                match decisions.export_page(&filter, after).await {
                    Ok((mut lines, next)) => {
                        let take = lines.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        lines.truncate(take);
                        left -= take as i64;
                        let chunk: Vec<u8> = lines.concat();
                        if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                            return;
                        }
                        match next {
                            Some(key) if left > 0 => after = Some(key),
                            _ => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "central: export failed");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
    })
    .await
}

async fn chains(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let route = "GET /v1/audit/chains";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        Ok(Json(json!({ "chains": state.decisions.chains().await? })).into_response())
    })
    .await
}

async fn quarantine(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    query: FilterParam,
) -> Response {
    let route = "GET /v1/audit/quarantine";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        let limit = filter_query(query)?.limit()?;
        let lines = state.decisions.quarantine(limit).await?;
        Ok(Json(json!({ "quarantine": lines })).into_response())
    })
    .await
}

async fn fleet(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let route = "GET /v1/fleet";
    counted(&state.clone(), route, async move {
        state.authorize(&peer, route, ANYONE)?;
        let sidecars = state.fleet.list(&state.registry).await?;
        Ok(Json(json!({ "sidecars": sidecars })).into_response())
    })
    .await
}
