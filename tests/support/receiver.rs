//! A real HTTP audit receiver for the tests: accepts gzip NDJSON POSTs,
//! keeps every record it got (duplicates included, in arrival order), and
//! can be stopped, restarted on the same port, or made to hang.

use flate2::read::GzDecoder;
use serde_json::Value;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct Received {
    pub lines: Mutex<Vec<String>>,
    pub idempotency_keys: Mutex<Vec<String>>,
    pub hang: AtomicBool,
    /// TLS handshakes refused (no or untrusted client certificate).
    pub refused_handshakes: AtomicUsize,
    /// Answer 400 to any batch holding a record with this `requestId`.
    pub refuse_request_id: Mutex<Option<String>>,
    /// Answer these statuses, one per batch, before accepting again.
    pub answer_first: Mutex<Vec<u16>>,
    /// Batches answered 400 / 503.
    pub refused_batches: AtomicUsize,
    pub unavailable_answers: AtomicUsize,
}

impl Received {
    pub(crate) fn records(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub(crate) fn ndjson(&self) -> String {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

pub(crate) struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Received>,
    server: super::ServerThread,
}

impl Receiver {
    /// Listen on `port` (0 for any) and keep records in `received`.
    pub(crate) fn start(port: u16, received: Arc<Received>) -> Receiver {
        Receiver::spawn(port, received, None)
    }

    /// As [`Receiver::start`], over TLS that requires a client certificate.
    pub(crate) fn start_tls(
        port: u16,
        received: Arc<Received>,
        tls: rustls::ServerConfig,
    ) -> Receiver {
        Receiver::spawn(port, received, Some(tls))
    }

    fn spawn(port: u16, received: Arc<Received>, tls: Option<rustls::ServerConfig>) -> Receiver {
        let app = axum::Router::new()
            .route("/v1/audit/decisions", axum::routing::post(ingest))
            .with_state(received.clone());
        let server = super::ServerThread::start(port, app, tls.map(|t| (t, received.clone())));
        Receiver {
            addr: server.addr,
            received,
            server,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/v1/audit/decisions", self.addr)
    }

    pub(crate) fn https_url(&self) -> String {
        format!("https://{}/v1/audit/decisions", self.addr)
    }

    pub(crate) fn stop(self) {}
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // A hanging handler would hold graceful shutdown forever.
        self.received.hang.store(false, Ordering::SeqCst);
        self.server.stop();
    }
}

async fn ingest(
    axum::extract::State(state): axum::extract::State<Arc<Received>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    while state.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let ndjson = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-ndjson");
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "no Idempotency-Key".into(),
        );
    };
    if !gzip || !ndjson {
        return (
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "want gzip NDJSON".into(),
        );
    }
    let mut text = String::new();
    if GzDecoder::new(&body[..]).read_to_string(&mut text).is_err() {
        return (axum::http::StatusCode::BAD_REQUEST, "bad gzip".into());
    }
    let refused = state.refuse_request_id.lock().expect("lock").clone();
    if let Some(refused) = refused {
        let holds_it = text.lines().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|r| r["requestId"] == refused.as_str())
        });
        if holds_it {
            state.refused_batches.fetch_add(1, Ordering::SeqCst);
            return (
                axum::http::StatusCode::BAD_REQUEST,
                "malformed record".into(),
            );
        }
    }
    let scripted = {
        let mut queue = state.answer_first.lock().expect("lock");
        (!queue.is_empty()).then(|| queue.remove(0))
    };
    if let Some(status) = scripted {
        state.unavailable_answers.fetch_add(1, Ordering::SeqCst);
        let status =
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::IM_A_TEAPOT);
        return (status, "not now".into());
    }
    state
        .idempotency_keys
        .lock()
        .expect("lock")
        .push(key.to_owned());
    let mut lines = state.lines.lock().expect("lock");
    let before = lines.len();
    lines.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
    (
        axum::http::StatusCode::OK,
        format!("{{\"accepted\": {}}}", lines.len() - before),
    )
}
