//! `sentinelnet injector`: the mutation of [`super::pod`] as a Kubernetes
//! mutating admission webhook.
//!
//! `POST /inject` takes an `admission.k8s.io/v1` AdmissionReview of a Pod
//! and answers it with the mutation as a JSONPatch (RFC 6902), computed by
//! diffing the pod before and after: fields are added or replaced one by
//! one and containers and volumes appended with `/-`, so a patch never
//! rewrites what another webhook set. Anything that is not a Pod, and pods
//! that opted out or are injected already, are allowed unchanged (a pod
//! that runs to completion gets native sidecars, as with `inject`). A pod the
//! mutation refuses (no bundle configured, a port clash) is denied with the
//! reason: admitted without its sidecar it would serve unguarded.
//! `GET /healthz` answers 200. TLS only; the certificate files are re-read
//! when they change (cert-manager rotation).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value as Json};

use super::documents::{inject_template, workload_name};
use super::pod::Outcome;
use super::Options;
use crate::tls::reload::ServerFiles;

/// The API server sends objects up to 3 MiB; a review is a little more.
const MAX_BODY: usize = 4 << 20;
/// Connections served at once: the API server keeps a few; more is a
/// client that should not be here (each may hold a body of `MAX_BODY`).
const MAX_CONNECTIONS: usize = 64;
/// Reviews read and answered at once, whatever the connections: each
/// holds its body a few times over while it is parsed (with 4 MiB bodies,
/// ~128 MiB at most; k8s/base/injector gives the container 256 MiB).
const MAX_REVIEWS: usize = 8;
/// A handshake, a request's headers, and a whole review must arrive within
/// this (the API server itself gives up after the webhook's 5 s timeout).
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve the webhook on `addr` until `stop` completes.
pub async fn serve(
    addr: SocketAddr,
    tls: ServerFiles,
    options: Options,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (config, stamp) = tls.load_stamped()?;
    let current = Arc::new(ArcSwap::from_pointee(config));
    let reloads = crate::tls::reload_counter().clone();
    tokio::spawn(crate::tls::reload::watch(
        tls,
        stamp,
        current.clone(),
        reloads,
        None,
        "injector",
    ));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--addr {addr}"))?;
    tracing::info!(%addr, "injector: serving POST /inject (AdmissionReview v1)");
    let options = Arc::new(options);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let reviews = Arc::new(tokio::sync::Semaphore::new(MAX_REVIEWS));
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "injector: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_CONNECTIONS, "injector: too many open connections; closed a new one");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(current.load_full());
        let options = options.clone();
        let reviews = reviews.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(PATIENCE, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "injector: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let options = options.clone();
                let reviews = reviews.clone();
                async move {
                    let answer = tokio::time::timeout(PATIENCE, async {
                        // Wait for a review slot before reading a body.
                        let _slot = reviews.acquire().await;
                        route(request, &options).await
                    })
                    .await
                    .unwrap_or_else(|_| text(StatusCode::REQUEST_TIMEOUT, "request timed out\n"));
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(PATIENCE);
            let served = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "injector: connection ended with an error");
            }
        });
    }
}

async fn route(request: Request<Incoming>, options: &Options) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/inject") => {
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("body: over {MAX_BODY} bytes\n"),
                    )
                }
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("body: {e}\n")),
            };
            match review(&body, options) {
                Ok(answer) => Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(answer.to_string())))
                    .unwrap_or_default(),
                Err(message) => text(StatusCode::BAD_REQUEST, &format!("{message}\n")),
            }
        }
        (_, "/inject" | "/healthz") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: POST /inject, GET /healthz\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// Answer one AdmissionReview (the body of `POST /inject`); `Err` for a
/// body that is no AdmissionReview at all.
pub fn review(body: &[u8], options: &Options) -> Result<Json, String> {
    let review: Json = serde_json::from_slice(body).map_err(|e| format!("body: not JSON: {e}"))?;
    let request = review
        .get("request")
        .ok_or("body: an AdmissionReview with a request")?;
    let uid = request
        .get("uid")
        .and_then(Json::as_str)
        .ok_or("body: request.uid")?;
    let respond = |response: Json| {
        let mut response = response;
        response["uid"] = json!(uid);
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
    };
    let kind = request
        .get("kind")
        .and_then(|k| k.get("kind"))
        .and_then(Json::as_str);
    let Some(object) = request.get("object").filter(|_| kind == Some("Pod")) else {
        return Ok(respond(json!({"allowed": true})));
    };
    let mut pod: serde_yaml_ng::Value =
        serde_json::from_value(object.clone()).map_err(|e| format!("body: request.object: {e}"))?;
    let mut workload = workload_name(&pod);
    if workload == "Pod/(unnamed)" {
        workload = format!(
            "Pod in namespace {}",
            request
                .get("namespace")
                .and_then(Json::as_str)
                .unwrap_or("default")
        );
    }
    let Some(template) = pod.as_mapping_mut() else {
        return Err("body: request.object is not an object".into());
    };
    match inject_template(template, options, &workload) {
        Ok(Some(Outcome::Injected(done))) => {
            for warning in &done.warnings {
                tracing::info!(%workload, "{warning}");
            }
            let after = serde_json::to_value(&pod).map_err(|e| format!("the injected pod: {e}"))?;
            let mut patch = Vec::new();
            diff("", object, &after, &mut patch);
            let patch =
                base64::engine::general_purpose::STANDARD.encode(Json::Array(patch).to_string());
            Ok(respond(
                json!({"allowed": true, "patchType": "JSONPatch", "patch": patch}),
            ))
        }
        Ok(Some(Outcome::OptedOut | Outcome::AlreadyInjected)) => {
            Ok(respond(json!({"allowed": true})))
        }
        Ok(None) => Ok(respond(json!({
            "allowed": false,
            "status": {"code": 400, "message": format!("sentinelnet injector: {workload}: a Pod without spec")},
        }))),
        Err(e) => {
            tracing::warn!(%workload, error = %e, "injector: pod refused");
            Ok(respond(json!({
                "allowed": false,
                "status": {"code": 400, "message": format!("sentinelnet injector: {e}")},
            })))
        }
    }
}

/// RFC 6901: `~` and `/` in a key.
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSONPatch turning `before` into `after`: objects field by field,
/// arrays element by element with growth appended (`/-`), anything else
/// replaced.
pub fn diff(path: &str, before: &Json, after: &Json, patch: &mut Vec<Json>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Json::Object(old), Json::Object(new)) => {
            for (key, value) in new {
                let at = format!("{path}/{}", pointer_segment(key));
                match old.get(key) {
                    Some(previous) => diff(&at, previous, value, patch),
                    None => patch.push(json!({"op": "add", "path": at, "value": value})),
                }
            }
            for key in old.keys().filter(|key| !new.contains_key(*key)) {
                patch.push(
                    json!({"op": "remove", "path": format!("{path}/{}", pointer_segment(key))}),
                );
            }
        }
        (Json::Array(old), Json::Array(new)) if new.len() >= old.len() => {
            for (index, (previous, value)) in old.iter().zip(new).enumerate() {
                diff(&format!("{path}/{index}"), previous, value, patch);
            }
            for value in &new[old.len()..] {
                patch.push(json!({"op": "add", "path": format!("{path}/-"), "value": value}));
            }
        }
        _ => patch.push(json!({"op": "replace", "path": path, "value": after})),
    }
}
