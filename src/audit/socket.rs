//! `serve --record-socket unix:/path.sock`: decision events from the
//! in-process Envoy module ([`super::forward`]) arrive as Unix datagrams and
//! join this sidecar's chain, spool and shipping.
//!
//! A datagram that is not a valid event is counted and logged (at most once
//! a minute) and the rest go on. The socket is a local trust boundary like
//! the ext_authz listener: put it where only Envoy can write (its directory
//! and file mode), as docs/settings.md says.

use super::forward;
use super::Recorder;
use crate::metrics::AuditCounters;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

/// Bind the socket, replacing a stale one a previous run left behind.
pub fn bind(path: &Path) -> std::io::Result<UnixDatagram> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let socket = UnixDatagram::bind(path)?;
    share_with_group(path)?;
    Ok(socket)
}

/// Mode 0660 on a socket this process created: writing to a Unix socket
/// (connecting, sending) needs write permission, and Envoy runs as another
/// user. In a pod both containers share the group (`sentinelnet inject`
/// runs them with one `runAsGroup`); others get nothing.
pub fn share_with_group(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot set the mode of {}: {e}", path.display()),
        )
    })
}

/// Receive events until `stop` resolves, then remove the socket file (and
/// drop the recorder, so the audit thread can finish).
pub async fn receive(
    socket: UnixDatagram,
    path: PathBuf,
    recorder: Recorder,
    counters: AuditCounters,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut buffer = vec![0u8; forward::MAX_DATAGRAM + 1];
    let mut last_complaint: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let received = tokio::select! {
            _ = &mut stop => break,
            received = socket.recv(&mut buffer) => received,
        };
        let length = match received {
            Ok(length) => length,
            Err(e) => {
                tracing::warn!(error = %e, socket = %path.display(), "record socket: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        forward::decode_each(&buffer[..length], |event| match event {
            Ok(event) => {
                counters.forwarded.inc();
                recorder.forward(event);
            }
            Err(e) => {
                counters.forwarded_invalid.inc();
                if last_complaint.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    last_complaint = Some(Instant::now());
                    tracing::warn!(error = %e, socket = %path.display(), "record socket: refused a datagram that is not a decision event (counted in sentinel_audit_forwarded_invalid_total)");
                }
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}
