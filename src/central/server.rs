//! Central's HTTP server: one task per connection, at most
//! `max_connections` open at once, slow clients cut off, graceful shutdown.
//!
//! axum's own `serve` offers no header-read timeout and no connection cap,
//! and a client that opens connections and trickles its headers (slowloris)
//! would otherwise hold a task and a socket each for as long as it likes.
//! So connections are served with hyper-util directly: a connection must
//! start its first request, and HTTP/1 requests complete their headers,
//! within `header_timeout`; HTTP/2 connections are pinged and dropped when
//! a ping goes unanswered; a connection over the cap is closed at once and
//! counted. TLS handshakes already time out in
//! [`super::identity::TlsListener`].

use super::identity::Peer;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounterVec;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::Layer;

/// How many connections, and how patient with them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub max_connections: usize,
    /// An HTTP/1 request's headers must arrive within this.
    pub header_timeout: Duration,
}

/// Serve `app` on `listener` until `stop` completes, then wait up to
/// `grace` for requests in flight (long polls are cut short after it).
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    refusals: IntCounterVec,
    stop: impl Future<Output = ()>,
    grace: Duration,
) where
    L: axum::serve::Listener<Addr = Peer>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    tokio::pin!(stop);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.with_label_values(&["connections"]).inc();
            tracing::warn!(peer = %peer.addr, max = limits.max_connections, "central: too many open connections; closed a new one");
            drop(io);
            continue;
        };
        // Handlers read the caller (address, certificate identity) as
        // axum's `ConnectInfo`.
        let service = axum::Extension(ConnectInfo(peer)).layer(app.clone());
        let started = Arc::new(AtomicBool::new(false));
        let service = FirstRequest {
            inner: service,
            started: started.clone(),
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            tokio::pin!(connection);
            // A connection that never starts a request (not one byte, or
            // an HTTP/2 preface and nothing after) is closed after the
            // header timeout instead of holding its place forever.
            let result = match tokio::time::timeout(header_timeout, &mut connection).await {
                Ok(result) => result,
                Err(_) if !started.load(Ordering::Relaxed) => {
                    tracing::debug!("central: no request within the header timeout; closed");
                    Ok(())
                }
                Err(_) => connection.await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "central: connection ended with an error");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("central: requests still open after the grace period were cut off");
    }
}

/// Marks its connection as having started a request.
#[derive(Clone)]
struct FirstRequest<S> {
    inner: S,
    started: Arc<AtomicBool>,
}

impl<S, R> tower::Service<R> for FirstRequest<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.started.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}
