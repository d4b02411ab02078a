//! `sentinelnet serve`: wires the bundle source, the Check service, the
//! audit pipeline and the admin API together, and shuts them down in order.

use crate::admin::{self, metrics::Metrics, AdminState, LoadStatus};
use crate::audit::{log::DecisionLog, AuditConfig, AuditStatus, Pipeline};
use crate::authz::server::{self as grpc_server, Endpoint, Listener};
use crate::authz::{Authorizer, Engine, EngineSlot, ViewSettings};
use crate::bundle::fetch::{save_cache, Fetched, Fetcher, LONG_POLL};
use crate::bundle::signing::TrustedKeys;
use crate::bundle::{unpack, watch, Bundle, BundleError, Source};
use crate::policy::Verdict;
use crate::tls::ClientTls;
use anyhow::Context;
use arc_swap::ArcSwapOption;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch as signal_watch;

/// Where the gRPC listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/sentinel.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?} is not an address: use HOST:PORT or unix:/path.sock"))
    }
}

pub struct ServeConfig {
    pub grpc_addr: ListenAddr,
    pub admin_addr: SocketAddr,
    pub source: Source,
    /// When set, only bundles signed by one of these keys are activated.
    pub trusted_keys: Option<Arc<TrustedKeys>>,
    pub on_error: Verdict,
    pub view: ViewSettings,
    pub node: String,
    pub audit: AuditConfig,
    /// Client identity toward the registry (`KERNEL_MTLS_*`).
    pub client_tls: ClientTls,
    /// Where the last bundle pulled from the registry is kept.
    pub bundle_cache: Option<PathBuf>,
}

/// Longest the audit thread may take at shutdown: its own flush deadline
/// plus time to write what is left to the spool.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(8);

/// Run the sidecar until SIGTERM/SIGINT. An unusable initial bundle is an
/// error (exit 2 at the CLI); later bad bundles are refused and reported
/// while the active one keeps deciding.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    // A sidecar's work per Check is small and CPU-bound: one thread
    // avoids cross-thread wake-ups and costs less CPU per Check than a
    // work-stealing pool. Loads and audit work run on other threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// Installs bundles into the engine slot and keeps metrics and status in step.
#[derive(Clone)]
struct Activator {
    engine: EngineSlot,
    metrics: Arc<Metrics>,
    status: Arc<LoadStatus>,
    source: String,
}

impl Activator {
    fn apply(&self, loaded: Result<Bundle, BundleError>) {
        match loaded {
            Ok(bundle) => self.activate(bundle, &self.source),
            Err(e) => {
                self.metrics.bundle_loads_error.inc();
                tracing::error!(error = %e, "bundle refused; the active bundle stays");
                self.status.set_error(e.to_string());
            }
        }
    }

    /// Install `bundle`; `origin` is what `/v1/status` shows as its source.
    fn activate(&self, bundle: Bundle, origin: &str) {
        let engine = Engine {
            counters: self.metrics.policy_counters(&bundle),
            bundle: Arc::new(bundle),
            source: origin.to_owned(),
            activated_at: SystemTime::now(),
        };
        let (name, revision) = (engine.bundle.name.clone(), engine.bundle.revision.clone());
        let current = engine.bundle.clone();
        let previous = self.engine.swap(Some(Arc::new(engine)));
        self.metrics
            .set_active_bundle(previous.as_ref().map(|e| &*e.bundle), &current);
        self.metrics.bundle_loads_success.inc();
        self.metrics.bundle_last_success.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        tracing::info!(bundle = %name, revision = %revision, policies = current.policies.policies().len(), "bundle active");
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let log = Arc::new(DecisionLog::default());
    let audit_status = Arc::new(AuditStatus::default());
    let (recorder, pipeline) = Pipeline::start(
        config.node.clone(),
        config.audit.clone(),
        log.clone(),
        metrics.audit.clone(),
        audit_status.clone(),
    )?;
    let engine: EngineSlot = Arc::new(ArcSwapOption::empty());
    let status = Arc::new(LoadStatus::new(config.source.to_string()));

    let activator = Activator {
        engine: engine.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        source: config.source.to_string(),
    };
    // Keeps the local watch or the registry poller alive until shutdown.
    let _source_task: Box<dyn std::any::Any + Send> = match &config.source {
        Source::Remote(url) => {
            let fetcher = Fetcher::new(url, &config.client_tls).map_err(anyhow::Error::msg)?;
            let puller = RemotePuller {
                fetcher,
                trusted: config.trusted_keys.clone(),
                cache: config.bundle_cache.clone(),
                activator: activator.clone(),
            };
            Box::new(AbortOnDrop(tokio::spawn(puller.run())))
        }
        local => {
            let source = local.clone();
            let trusted = config.trusted_keys.clone();
            let initial =
                tokio::task::spawn_blocking(move || source.load_trusted(trusted.as_deref()))
                    .await
                    .context("bundle loader panicked")?
                    .map_err(|e| anyhow::Error::new(e).context("cannot load the initial bundle"))?;
            let initial_digest = initial.digest.clone();
            activator.activate(initial, &activator.source);
            let watch_activator = activator.clone();
            Box::new(
                watch::watch(
                    local.clone(),
                    config.trusted_keys.clone(),
                    Some(initial_digest),
                    move |loaded| watch_activator.apply(loaded),
                )
                .with_context(|| format!("cannot watch {local}"))?,
            )
        }
    };

    let authorizer = Authorizer::new(
        engine.clone(),
        config.view,
        config.on_error,
        recorder,
        metrics.clone(),
    );
    let (stop_tx, stop_rx) = signal_watch::channel(false);
    let stopped = |mut rx: signal_watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin_addr))?;
    let admin_app = admin::router(AdminState {
        engine,
        metrics,
        status,
        log,
        audit: audit_status,
    });
    let admin_stop = stopped(stop_rx.clone());
    let admin = tokio::spawn(async move {
        axum::serve(admin_listener, admin_app)
            .with_graceful_shutdown(admin_stop)
            .await
    });

    let listener = match &config.grpc_addr {
        ListenAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on gRPC address {addr}"))?;
            tracing::info!(%addr, "ext_authz gRPC listening");
            Listener::Tcp(listener)
        }
        ListenAddr::Unix(path) => {
            // A socket file left by a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on unix socket {}", path.display()))?;
            tracing::info!(path = %path.display(), "ext_authz gRPC listening");
            Listener::Unix(listener)
        }
    };
    let grpc_task = tokio::spawn(grpc_server::serve(
        listener,
        Endpoint::new(authorizer),
        stopped(stop_rx.clone()),
    ));
    tracing::info!(addr = %config.admin_addr, "admin HTTP listening");

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight checks");
    let _ = stop_tx.send(true);
    if let Err(e) = grpc_task.await {
        tracing::error!(error = %e, "gRPC server task failed");
    }
    let _ = admin.await;
    if let ListenAddr::Unix(path) = &config.grpc_addr {
        let _ = std::fs::remove_file(path);
    }
    // The Check service (and with it the last Recorder) is gone: the audit
    // thread drains what is queued and stops.
    let drained = tokio::task::spawn_blocking(move || pipeline.join());
    if tokio::time::timeout(SHUTDOWN_DRAIN, drained).await.is_err() {
        tracing::warn!("audit queue not drained within {SHUTDOWN_DRAIN:?}");
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pulls bundles from the registry: the first fetch unconditionally, then
/// long polls with `If-None-Match`; failures back off with jitter. While
/// nothing is active and the registry is down, the last-good cache serves.
struct RemotePuller {
    fetcher: Fetcher,
    trusted: Option<Arc<TrustedKeys>>,
    cache: Option<PathBuf>,
    activator: Activator,
}

impl RemotePuller {
    async fn run(self) {
        let mut etag: Option<String> = None;
        let mut active_digest: Option<String> = None;
        let mut attempt: u32 = 0;
        let mut cache_tried = false;
        loop {
            let wait = etag.as_ref().map(|_| LONG_POLL);
            match self.fetcher.fetch(etag.as_deref(), wait).await {
                Ok(Fetched::NotModified) => attempt = 0,
                Ok(Fetched::Bundle {
                    bytes,
                    etag: new_etag,
                }) => {
                    attempt = 0;
                    // A refused bundle keeps its ETag too: it is not fetched
                    // again until the registry publishes something else.
                    etag = new_etag;
                    match self.load(bytes.clone()).await {
                        Ok(bundle) if active_digest.as_deref() == Some(bundle.digest.as_str()) => {}
                        Ok(bundle) => {
                            active_digest = Some(bundle.digest.clone());
                            self.activator.activate(bundle, self.fetcher.url());
                            if let Some(cache) = &self.cache {
                                if let Err(e) = save_cache(cache, &bytes) {
                                    tracing::warn!(path = %cache.display(), error = %e, "cannot write the bundle cache");
                                }
                            }
                        }
                        Err(e) => self.activator.apply(Err(e)),
                    }
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    if attempt == 1 || attempt % 20 == 0 {
                        tracing::warn!(error = %e, attempt, "cannot reach the bundle registry; the active bundle stays");
                    }
                    self.activator.status.set_error(e);
                    if !cache_tried && self.activator.engine.load().is_none() {
                        cache_tried = true;
                        self.serve_cache(&mut active_digest).await;
                    }
                    tokio::time::sleep(crate::tls::backoff(
                        attempt,
                        crate::audit::ids::random_u64(),
                    ))
                    .await;
                }
            }
        }
    }

    async fn load(&self, bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        let trusted = self.trusted.clone();
        let url = self.fetcher.url().to_owned();
        tokio::task::spawn_blocking(move || {
            let files = unpack(&bytes).map_err(|m| BundleError::file(url.as_str(), m))?;
            Bundle::from_trusted_files(&files, trusted.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(BundleError::file("bundle", format!("loader failed: {e}"))))
    }

    async fn serve_cache(&self, active_digest: &mut Option<String>) {
        let Some(cache) = &self.cache else { return };
        let Ok(bytes) = std::fs::read(cache) else {
            return;
        };
        match self.load(bytes).await {
            Ok(bundle) => {
                tracing::warn!(path = %cache.display(), revision = %bundle.revision, "registry unreachable: serving the cached bundle");
                *active_digest = Some(bundle.digest.clone());
                self.activator
                    .activate(bundle, &format!("cache:{}", cache.display()));
            }
            Err(e) => self.activator.apply(Err(e)),
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
