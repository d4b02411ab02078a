//! Shipping decision records to the audit service: gzip NDJSON batches with
//! an `Idempotency-Key`, retried with capped exponential backoff and jitter.

use super::backlog::Batch;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Most records in one POST.
pub const BATCH_RECORDS: usize = 500;
/// Most uncompressed bytes in one POST.
pub const BATCH_BYTES: usize = 1 << 20;
/// A record waits at most this long for its batch to fill.
pub const FLUSH_AGE: Duration = Duration::from_millis(500);
/// One POST may take this long before it counts as failed (a hung receiver
/// then costs retries, never checks: they never wait on shipping).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Client identity toward the audit service (`KERNEL_MTLS_*`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// `DEV_SKIP_MTLS=true`: plain `http://` allowed.
    pub allow_plain_http: bool,
}

impl ClientTls {
    pub fn from_env() -> ClientTls {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        ClientTls {
            cert: path("KERNEL_MTLS_CERT_PATH"),
            key: path("KERNEL_MTLS_KEY_PATH"),
            ca: path("KERNEL_MTLS_CA_PATH"),
            allow_plain_http: std::env::var("DEV_SKIP_MTLS")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
        }
    }

    /// An HTTP client for `url` with this identity, or why not.
    pub fn client_for(&self, url: &str) -> Result<reqwest::Client, String> {
        crate::tls::install_crypto_provider();
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
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

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("audit service answered {0}")]
    Status(u16),
    #[error("audit service unreachable: {0}")]
    Transport(String),
}

/// POST one batch.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    chain_id: &str,
    batch: &Batch,
) -> Result<(), ShipError> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let body = gz
        .write_all(&batch.ndjson())
        .and_then(|()| gz.finish())
        .map_err(|e| ShipError::Transport(e.to_string()))?;
    let response = client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        // The same records always carry the same key, also after a restart.
        .header(
            "idempotency-key",
            format!("{chain_id}:{}-{}", batch.first_seq, batch.last_seq),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| ShipError::Transport(error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ShipError::Status(status.as_u16()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Delay before retry `attempt` (1-based): exponential from 100 ms, capped
/// at 10 s, with "equal jitter" (half fixed, half random) so many sidecars
/// do not retry in step.
pub fn backoff(attempt: u32, random: u64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let half = ceiling / 2;
    let jitter_ms = half.as_millis() as u64;
    half + Duration::from_millis(if jitter_ms == 0 {
        0
    } else {
        random % (jitter_ms + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert!(backoff(1, 0) >= Duration::from_millis(50));
        assert!(backoff(1, u64::MAX) <= Duration::from_millis(100));
        assert!(backoff(4, 0) >= Duration::from_millis(400));
        for attempt in 1..40 {
            assert!(backoff(attempt, u64::MAX) <= BACKOFF_CAP);
        }
        assert_ne!(backoff(8, 1), backoff(8, 7777));
    }

    #[test]
    fn plain_http_needs_the_dev_switch_and_https_an_identity() {
        let strict = ClientTls::default();
        assert!(strict
            .client_for("http://127.0.0.1:1/x")
            .unwrap_err()
            .contains("DEV_SKIP_MTLS"));
        assert!(strict
            .client_for("https://127.0.0.1:1/x")
            .unwrap_err()
            .contains("KERNEL_MTLS_CERT_PATH"));
        let dev = ClientTls {
            allow_plain_http: true,
            ..ClientTls::default()
        };
        assert!(dev.client_for("http://127.0.0.1:1/x").is_ok());
    }
}
