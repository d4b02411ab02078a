//! Shipping decision records to the audit service: gzip NDJSON batches with
//! an `Idempotency-Key`, retried with capped exponential backoff and jitter.

use super::backlog::Batch;
use crate::retry::{status_is_retriable, Retriable};
use std::io::Write;
use std::time::Duration;

/// Most records in one POST.
pub(super) const BATCH_RECORDS: usize = 500;
/// Most uncompressed bytes in one POST.
pub(super) const BATCH_BYTES: usize = 1 << 20;
/// A record waits at most this long for its batch to fill.
pub(super) const FLUSH_AGE: Duration = Duration::from_millis(500);
/// One POST may take this long before it counts as failed (a hung receiver
/// then costs retries, never checks: they never wait on shipping).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(super) enum ShipError {
    #[error("audit service answered {0}")]
    Status(u16),
    #[error("audit service unreachable: {0}")]
    Transport(String),
    /// The destination can never take these records as they are.
    #[error("audit destination refused the records: {0}")]
    Refused(String),
}

impl Retriable for ShipError {
    /// A 4xx refuses these records as they are, except 408/429 (try later)
    /// and the statuses that say the sidecar is misconfigured rather than
    /// the records malformed: 401/403/407 (who we are), 404/405 (where we
    /// post). Those are retried with backoff while the records wait in the
    /// spool, so a wrong URL or RBAC entry never discards a record.
    /// Anything else (5xx, timeouts, a down receiver) may pass later.
    fn is_retriable(&self) -> bool {
        match self {
            ShipError::Status(status) => {
                status_is_retriable(*status) || matches!(status, 401 | 403 | 404 | 405 | 407)
            }
            ShipError::Transport(_) => true,
            ShipError::Refused(_) => false,
        }
    }
}

/// POST one batch.
pub(super) async fn post(
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
        // Without the URL: it may carry credentials, and the status shows
        // the (redacted) destination already.
        .map_err(|e| ShipError::Transport(error_chain(&e.without_url())))?;
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
