//! `sentinelnet serve`: wires the bundle source, the Check service, the
//! audit pipeline and the admin API together, and shuts them down in order.
//!
//! [`run`] reads top-down as the steps of a sidecar's life: start the audit
//! pipeline, start the bundle source (a watched path or the registry
//! puller), open the admin and ext_authz listeners, wait for SIGTERM, then
//! stop accepting, finish in-flight checks and drain the audit queue.

use crate::admin::{self, AdminState, LoadStatus};
use crate::audit::{log::DecisionLog, AuditConfig, AuditStatus, Pipeline};
use crate::authz::server::{self as grpc_server, Endpoint, Listener, ListenerKind};
use crate::authz::{Authorizer, Engine, EngineSlot, ViewSettings};
use crate::bundle::fetch::{save_cache, FetchError, Fetched, Fetcher, RemoteSource, LONG_POLL};
use crate::bundle::signing::TrustedKeys;
use crate::bundle::{unpack, watch, Bundle, BundleError, Source};
use crate::metrics::Metrics;
use crate::policy::Verdict;
use crate::retry::{Next, Retry, BACKOFF_CAP};
use anyhow::Context;
use arc_swap::ArcSwapOption;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch as signal_watch;

/// Where the gRPC listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
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

pub(crate) struct ServeConfig {
    pub grpc_addr: ListenAddr,
    /// TLS (and with a client CA, mTLS) on the ext_authz listener.
    pub grpc_tls: Option<crate::tls::reload::ServerFiles>,
    pub admin_addr: SocketAddr,
    /// Where bundles come from; a remote source carries the client
    /// identity toward the registry and the body cap.
    pub source: Source,
    /// When set, only bundles signed by one of these keys are activated.
    pub trusted_keys: Option<Arc<TrustedKeys>>,
    pub on_error: Verdict,
    /// `--record-socket`: decision events from the in-process Envoy module.
    pub record_socket: Option<PathBuf>,
    pub view: ViewSettings,
    pub node: String,
    pub audit: AuditConfig,
    /// Where the last bundle pulled from the registry is kept.
    pub bundle_cache: Option<PathBuf>,
}

/// Least time between two bundle fetches that did not fail.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest the audit thread may take at shutdown: its own flush deadline
/// plus time to write what is left to the spool.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(8);

/// Run the sidecar until SIGTERM/SIGINT. An unusable initial bundle is an
/// error (exit 2 at the CLI); later bad bundles are refused and reported
/// while the active one keeps deciding.
pub(crate) fn run(config: ServeConfig) -> anyhow::Result<()> {
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
    log: Arc<DecisionLog>,
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

    /// [`Activator::activate`] on a blocking thread: installing is work in
    /// the bundle's size (a metric per policy, the previous bundle freed),
    /// and the check path shares the runtime's one thread.
    async fn activate_off_runtime(&self, bundle: Bundle, origin: &str) {
        let (activator, origin) = (self.clone(), origin.to_owned());
        if let Err(e) =
            tokio::task::spawn_blocking(move || activator.activate(bundle, &origin)).await
        {
            tracing::error!(error = %e, "installing a bundle failed; the active bundle stays");
        }
    }

    /// Install `bundle`; `origin` is what `/v1/status` shows as its source.
    fn activate(&self, bundle: Bundle, origin: &str) {
        self.log
            .retain_policies(bundle.policies.policies().iter().map(|p| &*p.id));
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
        log: log.clone(),
        source: config.source.to_string(),
    };
    let _source = start_source(&config, activator).await?;

    let (stop_tx, stop_rx) = signal_watch::channel(false);
    let admin_state = AdminState {
        engine: engine.clone(),
        metrics: metrics.clone(),
        status,
        log,
        audit: audit_status,
    };
    let admin = start_admin(config.admin_addr, admin_state, stop_rx.clone()).await?;
    let record_socket = match &config.record_socket {
        Some(path) => {
            let socket = crate::audit::socket::bind(path)
                .with_context(|| format!("--record-socket {}", path.display()))?;
            tracing::info!(socket = %path.display(), "receiving decision events from the in-process module");
            Some(tokio::spawn(crate::audit::socket::receive(
                socket,
                path.clone(),
                recorder.clone(),
                metrics.audit.clone(),
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let tls_reloads = metrics.tls_reloads.clone();
    let authorizer = Authorizer::new(engine, config.view, config.on_error, recorder, metrics);
    let grpc = start_grpc(
        &config.grpc_addr,
        config.grpc_tls.clone(),
        authorizer,
        tls_reloads,
        stop_rx,
    )
    .await?;

    crate::shutdown::signal().await;
    tracing::info!("shutting down: finishing in-flight checks");
    let _ = stop_tx.send(true);
    if let Err(e) = grpc.await {
        tracing::error!(error = %e, "gRPC server task failed");
    }
    let _ = admin.await;
    if let Some(receiver) = record_socket {
        let _ = receiver.await;
    }
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

/// Resolves once `stop` turns true.
async fn stopped(mut stop: signal_watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The running bundle source; dropping it stops watching or pulling.
enum SourceTask {
    /// Held only to be dropped at shutdown (dropping stops the watch).
    Watch {
        _handle: watch::WatchHandle,
    },
    Pull(tokio::task::JoinHandle<()>),
}

impl Drop for SourceTask {
    fn drop(&mut self) {
        if let SourceTask::Pull(task) = self {
            task.abort();
        }
    }
}

/// Start the bundle source. A local source's first bundle must load (the
/// CLI exits 2 otherwise); the registry puller activates what it gets when
/// it gets it, so the sidecar starts even while the registry is down.
async fn start_source(config: &ServeConfig, activator: Activator) -> anyhow::Result<SourceTask> {
    if let Source::Remote(remote) = &config.source {
        let puller = RemotePuller {
            // The client's message already names the URL.
            fetcher: Fetcher::new(remote).map_err(|e| anyhow::Error::msg(e.to_string()))?,
            remote: remote.clone(),
            trusted: config.trusted_keys.clone(),
            cache: config.bundle_cache.clone(),
            activator,
        };
        return Ok(SourceTask::Pull(tokio::spawn(puller.run())));
    }
    let source = config.source.clone();
    let trusted = config.trusted_keys.clone();
    let initial = tokio::task::spawn_blocking(move || source.load_trusted(trusted.as_deref()))
        .await
        .context("bundle loader panicked")?
        .map_err(|e| anyhow::Error::new(e).context("cannot load the initial bundle"))?;
    let initial_digest = initial.digest.clone();
    activator.activate(initial, &activator.source);
    let handle = watch::watch(
        config.source.clone(),
        config.trusted_keys.clone(),
        Some(initial_digest),
        move |loaded| activator.apply(loaded),
    )
    .with_context(|| format!("cannot watch {}", config.source))?;
    Ok(SourceTask::Watch { _handle: handle })
}

async fn start_admin(
    addr: SocketAddr,
    state: AdminState,
    stop: signal_watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on admin address {addr}"))?;
    tracing::info!(%addr, "admin HTTP listening");
    let app = admin::router(state);
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop))
            .await
    }))
}

async fn start_grpc(
    addr: &ListenAddr,
    tls_files: Option<crate::tls::reload::ServerFiles>,
    authorizer: Authorizer,
    tls_reloads: prometheus::IntCounterVec,
    stop: signal_watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Bad TLS files are a start-up error; later bad files keep the config
    // in use (tls::reload).
    let tls = match tls_files {
        Some(files) => {
            let (loaded, stamp) = files.load_stamped()?;
            let config = Arc::new(arc_swap::ArcSwap::from_pointee(loaded));
            tracing::info!(
                mtls = files.client_ca.is_some(),
                "ext_authz listener speaks TLS"
            );
            tokio::spawn(crate::tls::reload::watch(
                files,
                stamp,
                config.clone(),
                tls_reloads,
                Some("listener"),
                "ext_authz listener",
            ));
            Some(config)
        }
        None => None,
    };
    let kind = match addr {
        ListenAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on gRPC address {addr}"))?;
            tracing::info!(%addr, "ext_authz gRPC listening");
            ListenerKind::Tcp(listener)
        }
        ListenAddr::Unix(path) => {
            // A socket file left by a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on unix socket {}", path.display()))?;
            crate::audit::socket::share_with_group(path)?;
            tracing::info!(path = %path.display(), "ext_authz gRPC listening");
            ListenerKind::Unix(listener)
        }
    };
    Ok(tokio::spawn(grpc_server::serve(
        Listener { kind, tls },
        Endpoint::new(authorizer),
        stopped(stop),
    )))
}

/// Pulls bundles from the registry: the first fetch unconditionally, then
/// long polls with `If-None-Match`; failures back off with jitter. While
/// nothing is active and the registry is down, the last-good cache serves.
struct RemotePuller {
    fetcher: Fetcher,
    remote: RemoteSource,
    trusted: Option<Arc<TrustedKeys>>,
    cache: Option<PathBuf>,
    activator: Activator,
}

impl RemotePuller {
    async fn run(self) {
        let mut etag: Option<String> = None;
        let mut active_digest: Option<String> = None;
        let mut retry = Retry::new("pulling the bundle from the registry");
        let mut cache_tried = false;
        loop {
            let wait = etag.as_ref().map(|_| LONG_POLL);
            let started = tokio::time::Instant::now();
            let failure = match self.fetcher.fetch(etag.as_deref(), wait).await {
                Ok(Fetched::NotModified) => {
                    retry.succeeded();
                    None
                }
                Ok(Fetched::Bundle {
                    bytes,
                    etag: new_etag,
                }) => {
                    retry.succeeded();
                    // A refused bundle keeps its ETag too: it is not fetched
                    // again until the registry publishes something else.
                    etag = new_etag;
                    self.install(bytes, &mut active_digest).await;
                    None
                }
                Err(FetchError::TooLarge { max, etag: refused }) => {
                    // Like an invalid bundle: refused and counted, the active
                    // one stays; wait for the registry's next revision.
                    let failure = FetchError::TooLarge { max, etag: None };
                    self.activator.apply(Err(BundleError::file(
                        self.remote.url.as_str(),
                        failure.to_string(),
                    )));
                    let known = refused.is_some();
                    etag = refused;
                    (!known).then_some(failure)
                }
                Err(e) => Some(e),
            };
            // Nothing active yet and the registry gave nothing usable: the
            // last good bundle serves meanwhile.
            if !cache_tried && self.activator.engine.load().is_none() {
                cache_tried = true;
                self.serve_cache(&mut active_digest).await;
            }
            let Some(failure) = failure else {
                // A registry that ignores long polls (or answers without an
                // ETag) is not fetched in a tight loop.
                tokio::time::sleep_until(started + MIN_POLL_INTERVAL).await;
                continue;
            };
            self.activator
                .status
                .set_error(format!("{}: {failure}", self.remote.url));
            // A permanent refusal (403, 404, a bundle over the cap) is
            // retried at the slowest pace: an operator may fix it.
            let delay = match retry.failed(&failure) {
                Next::RetryAfter(delay) => delay,
                Next::GiveUp => BACKOFF_CAP,
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Load and activate a fetched bundle unless it is the active one.
    async fn install(&self, bytes: Vec<u8>, active_digest: &mut Option<String>) {
        // Shared, not copied, between the loader and the cache writer.
        let bytes = bytes::Bytes::from(bytes);
        match self.load(bytes.clone()).await {
            Ok(bundle) if active_digest.as_deref() == Some(bundle.digest.as_str()) => {}
            Ok(bundle) => {
                *active_digest = Some(bundle.digest.clone());
                self.activator
                    .activate_off_runtime(bundle, self.fetcher.url())
                    .await;
                if let Some(cache) = self.cache.clone() {
                    // A file write of the bundle's size: not on the
                    // check path's thread either.
                    let saved = tokio::task::spawn_blocking(move || {
                        save_cache(&cache, &bytes).map_err(|e| (cache, e))
                    })
                    .await;
                    if let Ok(Err((path, e))) = saved {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write the bundle cache");
                    }
                }
            }
            Err(e) => self.activator.apply(Err(e)),
        }
    }

    async fn load(&self, bytes: bytes::Bytes) -> Result<Bundle, BundleError> {
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
        let path = cache.clone();
        let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || std::fs::read(path)).await else {
            return;
        };
        match self.load(bytes.into()).await {
            Ok(bundle) => {
                tracing::warn!(path = %cache.display(), revision = %bundle.revision, "registry unreachable: serving the cached bundle");
                *active_digest = Some(bundle.digest.clone());
                self.activator
                    .activate_off_runtime(bundle, &format!("cache:{}", cache.display()))
                    .await;
            }
            Err(e) => self.activator.apply(Err(e)),
        }
    }
}
