//! The active bundle: loaded, verified and watched on a thread of the
//! module's own, swapped in with `arc-swap`, so Envoy's workers read it
//! without a lock and never wait for a load.
//!
//! The watch polls: every 500 ms it takes a fingerprint of the source
//! (every file's path, size and modification time; a ConfigMap's symlink
//! flip or a `--bundle-cache` rename changes it) and re-reads only when it
//! changed. A bundle that does not load, or whose signature does not verify
//! against `trustedKeys`, is refused, logged, and the active one keeps
//! deciding. Before any bundle loads, requests get `onError`.

use arc_swap::ArcSwapOption;
use sentinelnet::bundle::signing::TrustedKeys;
use sentinelnet::bundle::{Bundle, Source};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const POLL: Duration = Duration::from_millis(500);

/// A loaded bundle and whether it reads the request body.
pub struct Active {
    pub bundle: Arc<Bundle>,
    pub reads_body: bool,
    /// Reads `source.*`, `destination.*` or `request.protocol` (attributes
    /// the filter then asks Envoy for).
    pub reads_connection: bool,
    /// Reads `principal` or a field of it (which may come from the peer
    /// certificate).
    pub reads_principal: bool,
}

pub type Slot = Arc<ArcSwapOption<Active>>;

/// Size and modification time of every file under `path`, hashed.
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    fn walk(path: &Path, hasher: &mut Sha256, depth: usize) -> Option<()> {
        let meta = std::fs::metadata(path).ok()?;
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(meta.len().to_le_bytes());
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(modified.to_le_bytes());
        if meta.is_dir() && depth < 8 {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, hasher, depth + 1)?;
            }
        }
        Some(())
    }
    let mut hasher = Sha256::new();
    walk(path, &mut hasher, 0)?;
    Some(hasher.finalize().into())
}

/// Load and then watch `path` until `stop` is set, keeping `slot` current.
pub fn watch(
    path: std::path::PathBuf,
    trusted: Option<TrustedKeys>,
    slot: Slot,
    stop: Arc<AtomicBool>,
    log: impl Fn(&str) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sentinelnet-bundle".into())
        .spawn(move || {
            let source = if path.is_dir() {
                Source::Directory(path.clone())
            } else {
                Source::Archive(path.clone())
            };
            let mut seen: Option<[u8; 32]> = None;
            let mut digest = String::new();
            while !stop.load(Ordering::Relaxed) {
                let now = fingerprint(&path);
                if now.is_some() && now != seen {
                    seen = now;
                    match source.load_trusted(trusted.as_ref()) {
                        Ok(bundle) if bundle.digest == digest => {}
                        Ok(bundle) => {
                            digest.clone_from(&bundle.digest);
                            log(&format!(
                                "sentinelnet: bundle {} revision {} active ({} policies)",
                                bundle.name,
                                bundle.revision,
                                bundle.policies.policies().len()
                            ));
                            let policies = &bundle.policies;
                            let reads_body = policies
                                .may_read_under(&[&["request", "body"], &["request", "bodyError"]]);
                            let reads_connection = policies.may_read_under(&[
                                &["source"],
                                &["destination"],
                                &["request", "protocol"],
                            ]);
                            let reads_principal = policies.may_read_under(&[&["principal"]]);
                            slot.store(Some(Arc::new(Active {
                                bundle: Arc::new(bundle),
                                reads_body,
                                reads_connection,
                                reads_principal,
                            })));
                        }
                        Err(e) => log(&format!(
                            "sentinelnet: bundle refused, the active one keeps deciding: {e}"
                        )),
                    }
                }
                std::thread::sleep(POLL);
            }
        })
}
