//! `sentinelnet serve`: wires the bundle source, the Check service, the
//! audit pipeline and the admin API together, and shuts them down in order.

use crate::admin::{self, metrics::Metrics, AdminState, LoadStatus};
use crate::audit::{log::DecisionLog, AuditConfig, AuditStatus, Pipeline};
use crate::authz::{Authorizer, Engine, EngineSlot, ViewSettings};
use crate::bundle::signing::TrustedKeys;
use crate::bundle::{watch, Bundle, BundleError, Source};
use crate::policy::Verdict;
use anyhow::Context;
use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
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
    health: tonic_health::server::HealthReporter,
}

impl Activator {
    fn apply(&self, loaded: Result<Bundle, BundleError>) {
        match loaded {
            Ok(bundle) => self.activate(bundle),
            Err(e) => {
                self.metrics.bundle_loads_error.inc();
                tracing::error!(error = %e, "bundle refused; the active bundle stays");
                self.status.set_error(e.to_string());
            }
        }
    }

    fn activate(&self, bundle: Bundle) {
        let engine = Engine {
            counters: self.metrics.policy_counters(&bundle),
            bundle: Arc::new(bundle),
            source: self.source.clone(),
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
        let health = self.health.clone();
        tokio::spawn(async move {
            health
                .set_serving::<AuthorizationServer<Authorizer>>()
                .await;
        });
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
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<AuthorizationServer<Authorizer>>()
        .await;

    let activator = Activator {
        engine: engine.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        source: config.source.to_string(),
        health,
    };
    let source = config.source.clone();
    let trusted = config.trusted_keys.clone();
    let initial = tokio::task::spawn_blocking(move || source.load_trusted(trusted.as_deref()))
        .await
        .context("bundle loader panicked")?
        .map_err(|e| anyhow::Error::new(e).context("cannot load the initial bundle"))?;
    let initial_digest = initial.digest.clone();
    activator.activate(initial);
    let watch_activator = activator.clone();
    let _watch = watch::watch(
        config.source.clone(),
        config.trusted_keys.clone(),
        Some(initial_digest),
        move |loaded| watch_activator.apply(loaded),
    )
    .with_context(|| format!("cannot watch {}", config.source))?;

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

    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(authorizer));
    let grpc_stop = stopped(stop_rx.clone());
    let grpc_task = match &config.grpc_addr {
        ListenAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on gRPC address {addr}"))?;
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tracing::info!(%addr, "ext_authz gRPC listening");
            tokio::spawn(grpc.serve_with_incoming_shutdown(incoming, grpc_stop))
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
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(grpc.serve_with_incoming_shutdown(incoming, grpc_stop))
        }
    };
    tracing::info!(addr = %config.admin_addr, "admin HTTP listening");

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight checks");
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = grpc_task.await {
        tracing::error!(error = %e, "gRPC server stopped with an error");
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
