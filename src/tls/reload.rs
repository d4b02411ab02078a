//! A server's certificate, key and client CA, re-read when they change,
//! without a restart: cert-manager and SPIFFE rotate certificates every few
//! hours, and Kubernetes delivers a Secret update as a symlink flip, so the
//! files are polled (following symlinks) rather than watched, and compared
//! by content: a flip to a file of the same size written in the same clock
//! tick looks unchanged to size and modification time.
//!
//! Central's listener and the sidecar's ext_authz listener both use it. New
//! connections get the new configuration (each handshake loads the current
//! `Arc` once); open ones keep theirs. A file that does not load (half
//! written, wrong key, garbage) leaves the current configuration in place,
//! and is logged and counted. Cost: reading and hashing a few kilobytes
//! every [`POLL`], off the runtime's threads.

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// The files of one TLS server and the flags that named them (for errors).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, callers must present a certificate it issued.
    pub client_ca: Option<PathBuf>,
    /// The flags that set `cert`, `key` and `client_ca`, in that order.
    pub flags: [&'static str; 3],
    /// Application protocols offered (see [`super::HTTP_ALPN`]).
    pub alpn: &'static [&'static [u8]],
}

/// What identifies a version of the files: their contents' digests.
pub type Stamp = Vec<Option<[u8; 32]>>;

impl ServerFiles {
    fn stamp(&self) -> Stamp {
        super::file_digests(
            [&self.cert, &self.key]
                .into_iter()
                .chain(self.client_ca.as_ref()),
        )
    }

    /// [`Self::load`], with the stamp of the files taken just before, to
    /// hand to [`watch`]: a rotation between loading and watching is then
    /// still seen.
    pub fn load_stamped(&self) -> anyhow::Result<(rustls::ServerConfig, Stamp)> {
        let stamp = self.stamp();
        Ok((self.load()?, stamp))
    }

    /// Read and check the files into a server configuration.
    pub fn load(&self) -> anyhow::Result<rustls::ServerConfig> {
        use anyhow::Context;
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
        };
        let [cert_flag, key_flag, ca_flag] = self.flags;
        let client_ca = match &self.client_ca {
            Some(path) => Some(read(path, ca_flag)?),
            None => None,
        };
        let config = super::server_config(
            &read(&self.cert, cert_flag)?,
            &read(&self.key, key_flag)?,
            client_ca.as_deref(),
            self.alpn,
        )
        .with_context(|| format!("{cert_flag} {}", self.cert.display()))?;
        Ok(config)
    }
}

/// Poll `files` and swap a new configuration into `current` when they
/// differ from `seen` (the stamp [`ServerFiles::load_stamped`] gave) and
/// load; count each reload in `reloads{result}` (`ok`/`error`), or
/// `reloads{files, result}` when `files_label` is given. `who` names the
/// listener in log lines.
pub async fn watch(
    files: ServerFiles,
    mut seen: Stamp,
    current: Arc<ArcSwap<rustls::ServerConfig>>,
    reloads: IntCounterVec,
    files_label: Option<&'static str>,
    who: &'static str,
) {
    let count = |result: &str| match files_label {
        Some(label) => reloads.with_label_values(&[label, result]).inc(),
        None => reloads.with_label_values(&[result]).inc(),
    };
    let files = Arc::new(files);
    loop {
        tokio::time::sleep(POLL).await;
        let polled = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || polled.stamp()).await else {
            continue;
        };
        if now == seen {
            continue;
        }
        seen = now;
        let changed = files.clone();
        let loaded = tokio::task::spawn_blocking(move || changed.load())
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the TLS files failed: {e}")));
        match loaded {
            Ok(config) => {
                current.store(Arc::new(config));
                count("ok");
                tracing::info!(cert = %files.cert.display(), "{who}: TLS certificate, key and client CA reloaded");
            }
            Err(e) => {
                count("error");
                tracing::warn!(
                    error = format!("{e:#}"),
                    "{who}: new TLS files do not load; still serving with the previous ones"
                );
            }
        }
    }
}
