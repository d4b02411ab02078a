//! TLS plumbing shared by every rustls user in the process.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

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

/// A server config that requires client certificates issued by
/// `client_ca_pem`, speaking h2 and http/1.1.
pub fn mtls_server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let chain = certificates(cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Invalid {
        what: "server key",
        message: e.to_string(),
    })?;
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
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid {
            what: "server certificate",
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
