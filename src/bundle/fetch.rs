//! Pulling signed bundles from the central registry over mTLS: `ETag` /
//! `If-None-Match`, long polls (`?wait=`), and a last-good cache file.

use crate::tls::ClientTls;
use std::path::Path;
use std::time::Duration;

/// How long one long poll asks the registry to hold the request.
pub const LONG_POLL: Duration = Duration::from_secs(30);

pub struct Fetcher {
    url: String,
    client: reqwest::Client,
}

pub enum Fetched {
    NotModified,
    Bundle {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

impl Fetcher {
    pub fn new(url: &str, tls: &ClientTls) -> Result<Fetcher, String> {
        // A request may legitimately take as long as the long poll.
        let client = tls.client_for(url, LONG_POLL + Duration::from_secs(10))?;
        Ok(Fetcher {
            url: url.to_owned(),
            client,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// GET the bundle; with `etag`, a 304 means nothing changed. With
    /// `wait`, the registry may hold the request until a newer revision.
    pub async fn fetch(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Fetched, String> {
        let url = match wait {
            Some(wait) if self.url.contains('?') => format!("{}&wait={}", self.url, wait.as_secs()),
            Some(wait) => format!("{}?wait={}", self.url, wait.as_secs()),
            None => self.url.clone(),
        };
        let mut request = self.client.get(url);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(format!("{}: registry answered {status}", self.url));
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        Ok(Fetched::Bundle {
            bytes: bytes.to_vec(),
            etag,
        })
    }
}

/// Persist the last activated bundle (temporary file, then rename, so a
/// crash never leaves half a cache).
pub fn save_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
