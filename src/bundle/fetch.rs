//! Pulling signed bundles from the central registry over mTLS: `ETag` /
//! `If-None-Match`, long polls (`?wait=`), a cap on the body size, and a
//! last-good cache file.
//!
//! The body is read chunk by chunk and refused as soon as it passes
//! `--bundle-max-bytes`, so a misbehaving registry (or a URL pointing at the
//! wrong thing) costs at most that much memory, never the sidecar.

use crate::retry::{status_is_retriable, Retriable};
use crate::tls::ClientIdentity;
use std::path::Path;
use std::time::Duration;

/// How long one long poll asks the registry to hold the request.
pub(crate) const LONG_POLL: Duration = Duration::from_secs(30);
/// Default `--bundle-max-bytes`: 64 MiB.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// A registry bundle URL and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    pub url: String,
    pub identity: ClientIdentity,
    /// Largest body accepted (`--bundle-max-bytes`).
    pub max_bytes: u64,
    /// This sidecar's node name, sent as `x-sentinel-node` so central's
    /// fleet view tells apart replicas sharing one client identity.
    pub node: Option<String>,
}

pub(crate) struct Fetcher {
    source: RemoteSource,
    /// Re-reads the identity files when they change (certificate rotation).
    client: crate::tls::ReloadingClient,
}

pub(crate) enum Fetched {
    NotModified,
    Bundle {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

/// Why a fetch did not bring a bundle (the caller names the URL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Transport(String),
    #[error("registry answered {0}")]
    Status(u16),
    #[error("the bundle is larger than --bundle-max-bytes ({max} bytes); refused")]
    TooLarge {
        max: u64,
        /// The refused revision's ETag, so it is not fetched again.
        etag: Option<String>,
    },
}

impl Retriable for FetchError {
    fn is_retriable(&self) -> bool {
        match self {
            FetchError::Transport(_) => true,
            FetchError::Status(status) => status_is_retriable(*status),
            FetchError::Setup(_) | FetchError::TooLarge { .. } => false,
        }
    }
}

impl Fetcher {
    pub(crate) fn new(source: &RemoteSource) -> Result<Fetcher, FetchError> {
        // A request may legitimately take as long as the long poll.
        let client = crate::tls::ReloadingClient::new(
            source.identity.clone(),
            &source.url,
            LONG_POLL + Duration::from_secs(10),
        )
        .map_err(FetchError::Setup)?;
        Ok(Fetcher {
            source: source.clone(),
            client,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.source.url
    }

    /// GET the bundle; with `etag`, a 304 means nothing changed. With
    /// `wait`, the registry may hold the request until a newer revision.
    pub(crate) async fn fetch(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Fetched, FetchError> {
        let base = &self.source.url;
        let url = match wait {
            Some(wait) if base.contains('?') => format!("{base}&wait={}", wait.as_secs()),
            Some(wait) => format!("{base}?wait={}", wait.as_secs()),
            None => base.clone(),
        };
        let transport =
            |e: reqwest::Error| FetchError::Transport(crate::secrets::redact_url(&e.to_string()));
        let mut request = self.client.get().get(url);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        if let Some(node) = &self.source.node {
            request = request.header("x-sentinel-node", node);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let max = self.source.max_bytes;
        let too_large = |etag: Option<String>| FetchError::TooLarge { max, etag };
        if response.content_length().is_some_and(|n| n > max) {
            return Err(too_large(etag));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large(etag));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Bundle { bytes, etag })
    }
}

/// Persist the last activated bundle (temporary file, then rename, so a
/// crash never leaves half a cache).
pub(crate) fn save_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
