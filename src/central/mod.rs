//! `sentinelnet central`: the control plane (docs/central-api.md).
//!
//! ```text
//! HTTPS (client certs required) → identity (URI SAN | CN) → RBAC role
//!   → registry (store transaction: versions, transitions, approvals)
//!   → publish: build bundle → compile-check → sign → store revision → wake long polls
//! ```
//!
//! [`store`] is the only module that speaks SQL; [`lifecycle`] holds the
//! rules without I/O; [`identity`] turns a TLS connection into a caller;
//! [`api`] maps HTTP onto [`registry`].

pub(crate) mod api;
pub(crate) mod bench;
pub(crate) mod decisions;
pub(crate) mod fleet;
pub(crate) mod identity;
pub(crate) mod lifecycle;
pub(crate) mod limits;
pub(crate) mod registry;
pub(crate) mod rollout;
pub(crate) mod server;
pub(crate) mod store;
pub(crate) mod stream;

use crate::keys::{KeySource, TrustedKeys};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct CentralConfig {
    pub addr: SocketAddr,
    pub db: String,
    /// `None` only with `DEV_SKIP_MTLS=true`.
    /// Server certificate, key and the CA that issues client certificates.
    pub tls: Option<crate::tls::reload::ServerFiles>,
    pub rbac: Option<PathBuf>,
    /// Signs every published revision: a key file or a `pkcs11:` URI.
    pub signing_key: KeySource,
    pub approvers: Option<PathBuf>,
    /// `--record-keys`: public keys of sidecars' record-signing keys.
    pub record_keys: Option<PathBuf>,
    pub approvals_required: usize,
    /// Stored decision records older than this are pruned.
    pub decision_retention: Duration,
    /// The canary guard and auto-promotion.
    pub guard: rollout::windows::GuardSettings,
    /// Requests per second per identity (`--rate-limit`, `--ingest-rate-limit`).
    pub rate_limits: limits::RateLimits,
    /// Largest record batch or push body (`--max-body`).
    pub max_body: usize,
    /// Open connections and slow clients.
    pub connections: server::ConnectionLimits,
    /// `--decision-stream`: consume records from NATS JetStream.
    pub decision_stream: Option<stream::StreamSettings>,
    /// Records of a node only from the identity that first posted them.
    pub pin_node_identity: bool,
}

/// Check the settings, open the store, and serve until SIGTERM / Ctrl-C.
pub(crate) fn run(config: CentralConfig) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let signer = config.signing_key.open().context("--signing-key")?;
    let approvers = config
        .approvers
        .as_deref()
        .map(TrustedKeys::load_dir)
        .transpose()
        .context("--approvers")?;
    let record_keys = config
        .record_keys
        .as_deref()
        .map(TrustedKeys::load_dir)
        .transpose()
        .context("--record-keys")?;
    if config.decision_retention.is_zero() {
        bail!("--decision-retention must be longer than 0 (e.g. 7d)");
    }
    if config.max_body < (1 << 20) {
        bail!("--max-body must be at least 1MiB: sidecars post batches of up to 1 MiB, and a refused batch is set aside, not retried");
    }
    if config.connections.header_timeout.is_zero() {
        bail!("--header-timeout must be longer than 0 (e.g. 10s)");
    }
    if config.guard.window.is_zero() {
        bail!("--canary-window must be longer than 0 (e.g. 5m)");
    }
    if config.approvals_required == 0 {
        bail!("--approvals-required must be at least 1");
    }
    match &approvers {
        Some(keys) if keys.len() < config.approvals_required => bail!(
            "--approvals-required is {} but --approvers holds only {} key(s): HIGH/CRITICAL policies could never become active",
            config.approvals_required,
            keys.len()
        ),
        Some(_) => {}
        None => tracing::warn!(
            "central: no --approvers; HIGH/CRITICAL policies cannot become active"
        ),
    }
    let rbac = match (&config.tls, &config.rbac) {
        (_, Some(path)) if config.tls.is_some() => {
            identity::Rbac::load(path).map_err(anyhow::Error::msg)?
        }
        (Some(_), _) => bail!("--rbac is required with mTLS: without it no identity holds a role"),
        (None, _) => {
            tracing::warn!("central: DEV_SKIP_MTLS=true: plain HTTP and every caller is an admin; never in production");
            identity::Rbac::insecure()
        }
    };
    let server_tls = config
        .tls
        .as_ref()
        .map(crate::tls::reload::ServerFiles::load_stamped)
        .transpose()?
        .map(|(tls, stamp)| (Arc::new(arc_swap::ArcSwap::from_pointee(tls)), stamp));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let store = store::Store::open(&config.db).await?;
        let metrics = api::CentralMetrics::new();
        let decisions = Arc::new(decisions::Decisions::new(
            store.clone(),
            metrics.decisions.clone(),
            config.pin_node_identity,
            record_keys,
        ));
        let fleet = Arc::new(fleet::Fleet::new(
            store.clone(),
            metrics.fleet_sidecars.clone(),
        ));
        let registry = Arc::new(registry::Registry::new(
            store.clone(),
            signer,
            approvers,
            config.approvals_required,
        ));
        let rollout = Arc::new(rollout::Rollout::new(
            store,
            registry.clone(),
            config.guard.clone(),
            metrics.rollout.clone(),
        ));
        tokio::spawn(rollout.clone().run());
        if let Some(settings) = config.decision_stream {
            tokio::spawn(stream::consume(
                settings,
                decisions.clone(),
                metrics.stream_pending.clone(),
            ));
        }
        let state = api::AppState {
            limiter: Arc::new(limits::RateLimiter::new(config.rate_limits)),
            max_body: config.max_body,
            rollout,
            registry: registry.clone(),
            decisions: decisions.clone(),
            fleet: fleet.clone(),
            rbac: Arc::new(rbac),
            metrics: metrics.clone(),
        };
        tokio::spawn(maintain(
            decisions,
            fleet,
            registry,
            config.decision_retention,
        ));
        let app = api::router(state);
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("--addr {}: cannot listen", config.addr))?;
        let local = listener.local_addr()?;
        let stop = crate::shutdown::signal();
        tracing::info!(addr = %local, db = %crate::secrets::redact_url(&config.db), mtls = server_tls.is_some(), "central: listening");
        // Long polls hold requests open for up to a minute; give in-flight
        // requests a short grace period rather than waiting for all of them.
        let grace = Duration::from_secs(3);
        let refusals = metrics.refusals.clone();
        match server_tls {
            Some((tls, stamp)) => {
                if let Some(files) = config.tls.clone() {
                    tokio::spawn(crate::tls::reload::watch(
                        files,
                        stamp,
                        tls.clone(),
                        metrics.tls_reloads.clone(),
                        None,
                        "central",
                    ));
                }
                let listener = identity::TlsListener::spawn(listener, tls, refusals.clone())?;
                server::serve(listener, app, config.connections, refusals, stop, grace).await
            }
            None => {
                let listener = identity::PlainListener(listener);
                server::serve(listener, app, config.connections, refusals, stop, grace).await
            }
        }
        tracing::info!("central: stopped");
        Ok(())
    })
}

/// Background upkeep: prune decision records past the retention, keep the
/// fleet gauge current. Pruning deletes a few thousand rows per statement,
/// so ingest never waits behind it.
async fn maintain(
    decisions: Arc<decisions::Decisions>,
    fleet: Arc<fleet::Fleet>,
    registry: Arc<registry::Registry>,
    retention: Duration,
) {
    let every = (retention / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        match decisions.prune(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "central: pruned decision records past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "central: pruning decision records failed"),
        }
        if let Err(e) = fleet.list(&registry).await {
            tracing::warn!(error = %e, "central: cannot refresh the fleet gauge");
        }
    }
}
