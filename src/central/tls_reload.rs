//! Central's server certificate, key and client CA, re-read when they
//! change, without a restart: cert-manager and SPIFFE rotate certificates
//! every few hours, and Kubernetes delivers a Secret update as a symlink
//! flip, so the files are polled (following symlinks) rather than watched,
//! and compared by content: a flip to a file of the same size written in
//! the same clock tick looks unchanged to size and modification time.
//!
//! New connections get the new configuration; open ones keep theirs. A
//! file that does not load (half written, wrong key, garbage) leaves the
//! current configuration in place, and is logged and counted.

use super::TlsFiles;
use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use std::sync::Arc;
use std::time::Duration;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(2);

/// What identifies a version of the three files: their contents' digests
/// (a few kilobytes read every poll).
type Stamp = Vec<Option<[u8; 32]>>;

fn stamp(files: &TlsFiles) -> Stamp {
    crate::tls::file_digests([&files.cert, &files.key, &files.client_ca])
}

/// Read and check the three files into a server configuration.
pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    let read = |path: &std::path::PathBuf, flag: &str| {
        std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
    };
    Ok(crate::tls::mtls_server_config(
        &read(&files.cert, "--tls-cert")?,
        &read(&files.key, "--tls-key")?,
        &read(&files.client_ca, "--client-ca")?,
    )?)
}

/// Poll `files` and swap a new configuration into `current` when they
/// change and load; count each reload in `reloads{result}`.
pub(crate) async fn watch(
    files: TlsFiles,
    current: Arc<ArcSwap<rustls::ServerConfig>>,
    reloads: IntCounterVec,
) {
    // Reading and parsing files is blocking work: off the runtime's threads.
    let mut seen = stamp(&files);
    loop {
        tokio::time::sleep(POLL).await;
        let polled = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || stamp(&polled)).await else {
            continue;
        };
        if now == seen {
            continue;
        }
        seen = now;
        let changed = files.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&changed))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the TLS files failed: {e}")));
        match loaded {
            Ok(config) => {
                current.store(Arc::new(config));
                reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %files.cert.display(), "central: TLS certificate, key and client CA reloaded");
            }
            Err(e) => {
                reloads.with_label_values(&["error"]).inc();
                tracing::warn!(
                    error = format!("{e:#}"),
                    "central: new TLS files do not load; still serving with the previous ones"
                );
            }
        }
    }
}
