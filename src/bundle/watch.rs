//! Watch a local bundle source and reload it when it changes.
//!
//! Directories are watched recursively with symlinks followed, which covers
//! editors that save by rename and Kubernetes ConfigMap volumes (a new
//! `..YYYY_*` directory appears and the `..data` symlink is renamed over).
//! Events are debounced; the files are re-read, hashed and installed off the
//! runtime (the check path shares its thread), and a reload whose content
//! digest is unchanged is dropped.

use super::signing::TrustedKeys;
use super::{Bundle, BundleError, Source};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last file event before reloading: long enough to
/// see a whole ConfigMap flip or `cp -r` as one change, short enough to
/// apply within a second.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Keeps the watch alive; dropping it stops watching.
pub(crate) struct WatchHandle {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch `source`; call `on_load` with every new bundle (or the error that
/// refused it). `current_digest` is the digest already active, if any.
pub(crate) fn watch<F>(
    source: Source,
    trusted: Option<Arc<TrustedKeys>>,
    current_digest: Option<String>,
    on_load: F,
) -> notify::Result<WatchHandle>
where
    F: Fn(Result<Bundle, BundleError>) + Send + Sync + 'static,
{
    let on_load = Arc::new(on_load);
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() {
                // A full channel already means "reload pending".
                let _ = tx.try_send(());
            }
        }
    })?;
    match &source {
        Source::Remote(_) => {}
        Source::Directory(dir) => watcher.watch(dir, RecursiveMode::Recursive)?,
        Source::Archive(file) => {
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            watcher.watch(parent, RecursiveMode::NonRecursive)?
        }
    }
    let task = tokio::spawn(async move {
        let mut last_digest = current_digest;
        while rx.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let src = source.clone();
            // The digest too is worked out off the runtime: it hashes every
            // file, work in the bundle's size that would otherwise hold up
            // the checks sharing the runtime's thread.
            let read = tokio::task::spawn_blocking(move || {
                src.read().map(|files| {
                    let digest = super::digest(&files);
                    (files, digest)
                })
            })
            .await;
            let files = match read {
                Ok(files) => files,
                Err(join_error) => Err(BundleError::file(
                    source.to_string(),
                    format!("reload failed: {join_error}"),
                )),
            };
            let result = match files {
                Ok((files, digest)) => {
                    if last_digest.as_deref() == Some(digest.as_str()) {
                        continue;
                    }
                    let trusted = trusted.clone();
                    let loaded = tokio::task::spawn_blocking(move || {
                        Bundle::from_trusted_files(&files, trusted.as_deref())
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(BundleError::file(
                            source.to_string(),
                            format!("reload failed: {e}"),
                        ))
                    });
                    if loaded.is_ok() {
                        last_digest = Some(digest);
                    }
                    loaded
                }
                Err(e) => Err(e),
            };
            // Installing a bundle is work in its size too (a metric per
            // policy, the previous bundle freed): off the runtime as well.
            let on_load = on_load.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || on_load(result)).await {
                tracing::error!(source = %source, error = %e, "installing a reloaded bundle failed; the active bundle stays");
            }
        }
    });
    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}
