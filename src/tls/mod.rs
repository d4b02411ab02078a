//! TLS plumbing shared by every rustls user in the process.

pub mod reload;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Install ring as the process-wide rustls crypto provider (idempotent).
/// reqwest is built without a provider of its own, so nothing pulls in
/// aws-lc-rs, and rustls needs to be told which one to use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

/// `sentinel_tls_reloads_total{files,result}`: changed certificate files
/// re-read by this process (`files`: `listener` for a TLS listener's own,
/// `client` for the KERNEL_MTLS_* identity; `result`: `ok`, or `error` when
/// the previous ones stay in use). One family for the process, because the
/// clients that reload live in the bundle fetcher and the audit shipper;
/// the sidecar's metrics registry exposes it.
pub fn reload_counter() -> &'static prometheus::IntCounterVec {
    static COUNTER: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sentinel_tls_reloads_total",
                "Changed certificate files re-read, by files (listener, client) and result (ok; error: the previous ones stay in use).",
            ),
            &["files", "result"],
        )
        .expect("valid counter")
    })
}

/// ALPN for HTTP servers (central, test receivers).
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for gRPC servers (the ext_authz listener): HTTP/2 only.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// A server config presenting `cert_pem`/`key_pem`, speaking `alpn`; with
/// `client_ca_pem`, callers must present a certificate it issued (mTLS).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let chain = certificates(cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Invalid {
        what: "server key",
        message: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca_pem {
        Some(client_ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(client_ca_pem, "client CA")? {
                roots.add(ca).map_err(|e| TlsError::Invalid {
                    what: "client CA",
                    message: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: "client CA",
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid {
            what: "server certificate",
            message: e.to_string(),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// This process's identity as a client of central, the audit receiver and
/// the decision stream (`KERNEL_MTLS_*`, `DEV_SKIP_MTLS`), read once at the
/// command line and handed to every client that connects out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// `DEV_SKIP_MTLS=true`: plain `http://` allowed.
    pub allow_plain_http: bool,
}

impl ClientIdentity {
    /// An HTTP client for `url` with this identity (each request may take
    /// up to `timeout`), or why not.
    pub fn client_for(&self, url: &str, timeout: Duration) -> Result<reqwest::Client, String> {
        install_crypto_provider();
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60));
        match parsed.scheme() {
            "http" if self.allow_plain_http => {}
            "http" => {
                return Err(format!(
                    "{url}: plain http is refused; use https with KERNEL_MTLS_CERT_PATH/KEY_PATH (or DEV_SKIP_MTLS=true for development)"
                ))
            }
            "https" => {
                let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
                    return Err(format!(
                        "{url}: https needs a client identity: set KERNEL_MTLS_CERT_PATH and KERNEL_MTLS_KEY_PATH"
                    ));
                };
                let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()));
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("{}: not a PEM certificate and key: {e}", cert.display()))?;
                builder = builder.identity(identity);
                if let Some(ca) = &self.ca {
                    let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                        .map_err(|e| format!("{}: not a PEM CA bundle: {e}", ca.display()))?;
                    builder = builder.tls_certs_only(certs);
                }
            }
            other => return Err(format!("{url}: unsupported scheme {other:?}")),
        }
        builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client for {url}: {e}"))
    }
}

/// An HTTP client whose identity files are re-read when they change:
/// SPIFFE and cert-manager rotate client certificates every few hours, and
/// the sidecar must present the new one on its next connection to central,
/// the audit service or the stream, without a restart. The files are
/// compared by content at most every [`RELOAD_CHECK`]; files that do not
/// load keep the previous client in use (logged). Open connections keep
/// the certificate they were made with.
pub struct ReloadingClient {
    identity: ClientIdentity,
    url: String,
    timeout: Duration,
    state: std::sync::Mutex<ClientState>,
}

struct ClientState {
    client: reqwest::Client,
    stamp: Vec<Option<[u8; 32]>>,
    checked: std::time::Instant,
}

/// How often a [`ReloadingClient`] looks at its files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

impl ReloadingClient {
    /// The first client; an error is a setup error (bad URL, unreadable or
    /// invalid files).
    pub fn new(identity: ClientIdentity, url: &str, timeout: Duration) -> Result<Self, String> {
        let client = identity.client_for(url, timeout)?;
        let stamp = identity.stamp();
        Ok(ReloadingClient {
            identity,
            url: url.to_owned(),
            timeout,
            state: std::sync::Mutex::new(ClientState {
                client,
                stamp,
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The client to use now (a cheap handle), rebuilt first if the
    /// identity files changed and load.
    pub fn get(&self) -> reqwest::Client {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = std::time::Instant::now();
            let stamp = self.identity.stamp();
            if stamp != state.stamp {
                state.stamp = stamp;
                match self.identity.client_for(&self.url, self.timeout) {
                    Ok(client) => {
                        state.client = client;
                        reload_counter().with_label_values(&["client", "ok"]).inc();
                        tracing::info!(url = %crate::secrets::redact_url(&self.url), "client certificate files changed: new connections use them");
                    }
                    Err(e) => {
                        reload_counter()
                            .with_label_values(&["client", "error"])
                            .inc();
                        tracing::warn!(url = %crate::secrets::redact_url(&self.url), error = %e, "new client certificate files do not load; still using the previous ones")
                    }
                }
            }
        }
        state.client.clone()
    }
}

impl ClientIdentity {
    /// Digests of the identity files' contents (none for a missing file).
    fn stamp(&self) -> Vec<Option<[u8; 32]>> {
        file_digests([&self.cert, &self.key, &self.ca].into_iter().flatten())
    }
}

/// SHA-256 of each file's contents (`None` for one that cannot be read):
/// what tells a rotated certificate from the one in use, whatever its size
/// or modification time.
pub(crate) fn file_digests<'p>(
    paths: impl IntoIterator<Item = &'p PathBuf>,
) -> Vec<Option<[u8; 32]>> {
    use sha2::{Digest, Sha256};
    paths
        .into_iter()
        .map(|path| {
            std::fs::read(path)
                .ok()
                .map(|bytes| Sha256::digest(&bytes).into())
        })
        .collect()
}

/// The identities `sentinelnet dev-pki` issues: file stem, CN, URI SAN, roles.
const DEV_IDENTITIES: &[(&str, &str, &str, &str)] = &[
    (
        "sidecar",
        "sidecar",
        "spiffe://sentinelnet.dev/sidecar",
        "sidecar",
    ),
    (
        "publisher",
        "publisher",
        "spiffe://sentinelnet.dev/publisher",
        "publisher",
    ),
    (
        "approver",
        "approver",
        "spiffe://sentinelnet.dev/approver",
        "approver",
    ),
    ("admin", "admin", "spiffe://sentinelnet.dev/admin", "admin"),
];

/// Write a throwaway development PKI into `dir`: `ca.pem`, `central.crt`/`.key`
/// (localhost, 127.0.0.1), a client certificate per role with a SPIFFE-style
/// URI SAN, and the matching `rbac.json`. For demos and local runs only: the
/// CA key is not kept, so nothing more can be issued from it.
pub fn write_dev_pki(dir: &std::path::Path) -> Result<Vec<PathBuf>, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let fail = |what: &'static str| {
        move |e: rcgen::Error| TlsError::Invalid {
            what,
            message: e.to_string(),
        }
    };
    let io = |what: &'static str| {
        move |e: std::io::Error| TlsError::Invalid {
            what,
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(io("dev-pki directory"))?;
    let ca_key = KeyPair::generate().map_err(fail("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail("CA"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "SentinelNet development CA");
    let ca = ca_params.self_signed(&ca_key).map_err(fail("CA"))?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let mut written = Vec::new();
    let mut write = |name: String, text: String| -> Result<(), TlsError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io("dev-pki file"))?;
        written.push(path);
        Ok(())
    };
    write("ca.pem".into(), ca.pem())?;
    let leaves = std::iter::once(("central", "central", None)).chain(
        DEV_IDENTITIES
            .iter()
            .map(|(stem, cn, uri, _)| (*stem, *cn, Some(*uri))),
    );
    for (stem, common_name, uri) in leaves {
        let key = KeyPair::generate().map_err(fail("leaf key"))?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).map_err(fail("leaf"))?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        if let Some(uri) = uri {
            let uri = uri.try_into().map_err(fail("URI SAN"))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &issuer).map_err(fail("leaf"))?;
        write(format!("{stem}.crt"), cert.pem())?;
        write(format!("{stem}.key"), key.serialize_pem())?;
    }
    let rbac: std::collections::BTreeMap<&str, [&str; 1]> = DEV_IDENTITIES
        .iter()
        .map(|(_, _, uri, role)| (*uri, [*role]))
        .collect();
    write(
        "rbac.json".into(),
        serde_json::to_string_pretty(&rbac).unwrap_or_default(),
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_the_dev_switch_and_https_an_identity() {
        let timeout = Duration::from_secs(1);
        let strict = ClientIdentity::default();
        let refused = strict
            .client_for("http://127.0.0.1:1/x", timeout)
            .unwrap_err();
        assert!(refused.contains("DEV_SKIP_MTLS"), "{refused}");
        let refused = strict
            .client_for("https://127.0.0.1:1/x", timeout)
            .unwrap_err();
        assert!(refused.contains("KERNEL_MTLS_CERT_PATH"), "{refused}");
        let dev = ClientIdentity {
            allow_plain_http: true,
            ..ClientIdentity::default()
        };
        assert!(dev.client_for("http://127.0.0.1:1/x", timeout).is_ok());
    }
}
