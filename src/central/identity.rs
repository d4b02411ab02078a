//! Who is calling: the verified client certificate's identity (URI SAN, else
//! CN), and what that identity may do (`--rbac`).
//!
//! TLS handshakes run in their own tasks so a slow or hostile client never
//! holds up the accept loop; a refused handshake (no certificate, another
//! CA) is logged and counted before the request layer ever sees it.

use prometheus::IntCounterVec;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Sidecar,
    Publisher,
    Approver,
    Admin,
}

/// Identity → roles, from the `--rbac` JSON file.
#[derive(Debug, Default)]
pub(crate) struct Rbac {
    roles: BTreeMap<String, Vec<Role>>,
    /// `DEV_SKIP_MTLS`: every caller is an admin.
    insecure: bool,
}

impl Rbac {
    pub(crate) fn load(path: &Path) -> Result<Rbac, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut de = serde_json::Deserializer::from_slice(&text);
        let roles: BTreeMap<String, Vec<Role>> = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| {
                format!(
                    "{}: at {}: {} (expected {{\"IDENTITY\": [\"sidecar\" | \"publisher\" | \"approver\" | \"admin\", …]}})",
                    path.display(),
                    e.path(),
                    e.inner()
                )
            })?;
        Ok(Rbac {
            roles,
            insecure: false,
        })
    }

    pub(crate) fn insecure() -> Rbac {
        Rbac {
            roles: BTreeMap::new(),
            insecure: true,
        }
    }

    /// Whether `identity` holds one of `allowed` (admin holds every role).
    pub(crate) fn permits(&self, identity: &str, allowed: &[Role]) -> Result<(), Refusal> {
        if self.insecure {
            return Ok(());
        }
        let roles = self.roles.get(identity).ok_or(Refusal::UnknownIdentity)?;
        if roles
            .iter()
            .any(|role| *role == Role::Admin || allowed.contains(role))
        {
            Ok(())
        } else {
            Err(Refusal::Role)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoIdentity,
    UnknownIdentity,
    Role,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::NoIdentity => "no_identity",
            Refusal::UnknownIdentity => "unknown_identity",
            Refusal::Role => "role",
        }
    }
}

/// The calling peer, as axum's connect info (set per connection by
/// [`super::server`]).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// URI SAN, else CN, of the verified client certificate.
    pub identity: Option<String>,
}

const INSECURE_IDENTITY: &str = "insecure-dev";

/// The certificate's first URI SAN, else its subject CN.
pub(crate) fn identity_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                return Some((*uri).to_owned());
            }
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    common_name
}

/// Most TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 512;

/// Accepts TCP connections and completes mTLS handshakes off the accept loop.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// `config` may be swapped at any time (certificate rotation): each
    /// new connection takes the configuration current when it arrives.
    pub(crate) fn spawn(
        listener: TcpListener,
        config: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
        refusals: IntCounterVec,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        // Handshakes in flight are bounded too: an anonymous client opening
        // sockets cannot run unlimited 10-second handshakes.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "central: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    refusals.with_label_values(&["connections"]).inc();
                    tracing::warn!(peer = %addr, "central: too many TLS handshakes in flight; closed a new connection");
                    drop(tcp);
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
                let tx = tx.clone();
                let refusals = refusals.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let identity = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|leaf| identity_of(leaf));
                            let _ = tx.send((tls, Peer { addr, identity })).await;
                        }
                        Ok(Err(e)) => {
                            refusals.with_label_values(&["tls"]).inc();
                            tracing::warn!(peer = %addr, error = %e, "central: refused TLS handshake");
                        }
                        Err(_) => {
                            refusals.with_label_values(&["tls"]).inc();
                            tracing::warn!(peer = %addr, "central: TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            identity: None,
        })
    }
}

/// Plain HTTP for `DEV_SKIP_MTLS=true`: every caller is `insecure-dev`.
pub(crate) struct PlainListener(pub TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (
            io,
            Peer {
                addr,
                identity: Some(INSECURE_IDENTITY.to_owned()),
            },
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            identity: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_holds_every_role_and_unknown_identities_hold_none() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("rbac.json");
        std::fs::write(
            &path,
            r#"{"spiffe://kernel/sidecar": ["sidecar"], "ops": ["admin"]}"#,
        )
        .expect("write");
        let rbac = Rbac::load(&path).expect("load");
        assert_eq!(
            rbac.permits("spiffe://kernel/sidecar", &[Role::Publisher]),
            Err(Refusal::Role)
        );
        assert!(rbac
            .permits("spiffe://kernel/sidecar", &[Role::Sidecar])
            .is_ok());
        assert!(rbac.permits("ops", &[Role::Approver]).is_ok());
        assert_eq!(
            rbac.permits("someone", &[Role::Sidecar]),
            Err(Refusal::UnknownIdentity)
        );
    }

    #[test]
    fn an_unknown_role_names_where() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("rbac.json");
        std::fs::write(&path, r#"{"a": ["sidecar", "root"]}"#).expect("write");
        let message = Rbac::load(&path).expect_err("refused");
        assert!(message.contains("rbac.json: at a[1]"), "{message}");
        assert!(message.contains("root"), "{message}");
    }
}
