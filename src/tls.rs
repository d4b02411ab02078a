//! TLS plumbing shared by every rustls user in the process.

/// Install ring as the process-wide rustls crypto provider (idempotent).
/// reqwest is built without a provider of its own, so nothing pulls in
/// aws-lc-rs, and rustls needs to be told which one to use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
