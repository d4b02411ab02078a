//! Safe rollout at central (docs/rollout.md): the canary guard, which pauses
//! a canary whose denies are labelled false positives too often, and
//! auto-promotion of quiet low-risk canaries; explain's `canary` section;
//! `POST /v1/simulate` over stored records ([`simulate`]).
//!
//! ```text
//! every tick (a quarter window): leader lock (PostgreSQL advisory lock)
//!   → canaries (policies whose newest version is a canary)
//!   → deny counts per window since the canary started (store: records + labels)
//!   → windows::decide → pause (percent 0) | promote (active) | watch
//!   → registry transition by central:canary-guard / central:auto-promote → new revision
//! ```
//!
//! Nothing is kept in memory between ticks: windows are recounted from the
//! stored records and labels every time, the start of a canary is its
//! newest transition to `canary`, and a pause is a transition. So a restart
//! loses nothing, late labels count for their record's window, and any
//! replica can take over the lock.

pub(crate) mod simulate;
pub(crate) mod windows;

use super::registry::{CanaryAction, Registry, RegistryError};
use super::store::rollout::{self as sql, CanaryRow};
use super::store::{Store, StoreError};
use crate::policy::{PolicyDocument, State};
use crate::timestamp::{format_timestamp, parse_rfc3339, unix_micros};
use prometheus::IntCounterVec;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use windows::{Action, Canary, GuardSettings, Window};

/// The PostgreSQL advisory lock the guard holds while it looks ("SntlGrd1").
const GUARD_LOCK: i64 = 0x536e_746c_4772_6431;
/// Who the guard's and the promoter's transitions are recorded as.
pub(crate) const GUARD: &str = "central:canary-guard";
pub(crate) const PROMOTER: &str = "central:auto-promote";
/// Windows explain shows.
const RECENT_WINDOWS: i64 = 12;

#[derive(Clone)]
pub(crate) struct RolloutMetrics {
    pub trips: IntCounterVec,
    pub promotions: IntCounterVec,
}

pub(crate) struct Rollout {
    store: Store,
    registry: Arc<Registry>,
    settings: GuardSettings,
    metrics: RolloutMetrics,
}

fn timestamp_of(us: i64) -> String {
    format_timestamp(UNIX_EPOCH + Duration::from_micros(us.max(0) as u64))
}

fn now_us() -> i64 {
    unix_micros(SystemTime::now())
}

fn describe(w: &Window) -> String {
    format!(
        "{} to {}: {} denies, {} false positives ({:.2}%)",
        timestamp_of(w.start_us),
        timestamp_of(w.end_us),
        w.denies,
        w.false_positives,
        w.rate().unwrap_or(0.0) * 100.0
    )
}

impl Rollout {
    pub(crate) fn new(
        store: Store,
        registry: Arc<Registry>,
        settings: GuardSettings,
        metrics: RolloutMetrics,
    ) -> Rollout {
        Rollout {
            store,
            registry,
            settings,
            metrics,
        }
    }

    /// Look at every canary a few times per window, until the process ends.
    pub(crate) async fn run(self: Arc<Self>) {
        let every =
            (self.settings.window / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "central: canary guard could not look at the canaries");
            }
        }
    }

    /// One look, by whichever central holds the lock.
    pub(crate) async fn tick(&self) -> Result<(), RegistryError> {
        let mut lock = self.store.connection().await?;
        if !sql::try_lock(&mut lock, GUARD_LOCK).await? {
            return Ok(());
        }
        let result = self.look().await;
        if let Err(e) = sql::unlock(&mut lock, GUARD_LOCK).await {
            // The lock goes with the session: drop the connection instead
            // of returning it to the pool still holding it.
            tracing::warn!(error = %e, "central: cannot release the canary guard lock");
            lock.close_on_drop();
        }
        result
    }

    async fn look(&self) -> Result<(), RegistryError> {
        let canaries = {
            let mut conn = self.store.connection().await?;
            sql::canaries(&mut conn).await?
        };
        for row in canaries {
            if row.canary_percent <= 0.0 {
                continue;
            }
            // One canary that cannot be looked at must not stop the guard
            // for the others.
            if let Err(e) = self.check(&row).await {
                tracing::warn!(policy = %row.policy_id, version = row.version, error = %e, "central: canary guard could not look at this canary");
            }
        }
        Ok(())
    }

    async fn check(&self, row: &CanaryRow) -> Result<(), RegistryError> {
        let Some((canary, windows, started_at)) = self.windows_of(row).await? else {
            return Ok(());
        };
        let now = now_us();
        match windows::decide(&canary, &windows, &self.settings, now) {
            Action::Watch => Ok(()),
            Action::Pause(run) => {
                let reason = format!(
                    "canary guard: {} bad windows in a row (false positives above {:.2}% of at least {} denies): {}; canary paused at 0% (was {}%)",
                    run.len(),
                    self.settings.max_fp_rate * 100.0,
                    self.settings.min_denies,
                    run.iter().map(describe).collect::<Vec<_>>().join("; "),
                    row.canary_percent
                );
                self.act(row, &started_at, State::Canary, reason, GUARD)
                    .await
            }
            Action::Promote { .. } if row.version != row.latest_version => {
                // A newer version is being drafted: promoting this one now
                // would race the fix.
                Ok(())
            }
            Action::Promote {
                windows,
                denies,
                false_positives,
            } => {
                let ran = Duration::from_micros(now.saturating_sub(canary.start_us).max(0) as u64);
                let reason = format!(
                    "auto-promoted: canary at {}% for {} with no bad window ({windows} windows, {denies} denies, {false_positives} false positives)",
                    row.canary_percent,
                    humantime(ran),
                );
                self.act(row, &started_at, State::Active, reason, PROMOTER)
                    .await
            }
        }
    }

    async fn act(
        &self,
        row: &CanaryRow,
        started_at: &str,
        to: State,
        reason: String,
        by: &str,
    ) -> Result<(), RegistryError> {
        let applied = self
            .registry
            .automatic_transition(
                CanaryAction {
                    bundle: &row.bundle,
                    policy: &row.policy_id,
                    version: row.version,
                    started_at,
                    to,
                    canary_percent: 0.0,
                    reason: reason.clone(),
                },
                by,
            )
            .await?;
        let Some(status) = applied else {
            return Ok(());
        };
        let counter = if by == GUARD {
            &self.metrics.trips
        } else {
            &self.metrics.promotions
        };
        counter.with_label_values(&[row.policy_id.as_str()]).inc();
        tracing::warn!(policy = %row.policy_id, version = row.version, by, revision = ?status.published_revision, reason, "central: canary {}", if by == GUARD { "paused" } else { "promoted" });
        Ok(())
    }

    /// A canary's severity, share, start and windows so far, and the `at`
    /// of the transition that started its run; `None` when it has no
    /// transition to canary (cannot happen through the API).
    async fn windows_of(
        &self,
        row: &CanaryRow,
    ) -> Result<Option<(Canary, Vec<Window>, String)>, RegistryError> {
        let starts = {
            let mut conn = self.store.connection().await?;
            sql::canary_starts(&mut conn, &row.policy_id, row.version, 1).await?
        };
        let Some(started) = starts.into_iter().next() else {
            return Ok(None);
        };
        let Some(start_us) = parse_rfc3339(&started.at) else {
            return Ok(None);
        };
        let document: PolicyDocument = serde_json::from_str(&row.document).map_err(|e| {
            RegistryError::Invalid(format!(
                "stored policy {} v{} does not parse: {e}",
                row.policy_id, row.version
            ))
        })?;
        let canary = Canary {
            severity: document.severity,
            percent: row.canary_percent,
            start_us,
        };
        let windows = self.count(&row.policy_id, start_us, now_us()).await?;
        Ok(Some((canary, windows, started.at)))
    }

    /// The windows of a canary that started at `start_us`, as of `until_us`.
    async fn count(
        &self,
        policy: &str,
        start_us: i64,
        until_us: i64,
    ) -> Result<Vec<Window>, StoreError> {
        let window_us = windows::window_us(&self.settings);
        let mut conn = self.store.connection().await?;
        let counts = sql::deny_windows(&mut conn, policy, start_us, window_us).await?;
        Ok(windows::windows(&counts, start_us, window_us, until_us))
    }

    /// Explain's `canary` section for `policy`: its share, the recent
    /// windows, and whether the guard paused it; `null` unless one of its
    /// versions is a canary. A paused canary shows the windows that paused
    /// it (the run before the pause).
    pub(crate) async fn explain(&self, policy: &str) -> Result<Value, StoreError> {
        let mut conn = self.store.connection().await?;
        let Some(row) = sql::canaries(&mut conn)
            .await?
            .into_iter()
            .rfind(|c| c.policy_id == policy)
        else {
            return Ok(Value::Null);
        };
        let starts = sql::canary_starts(&mut conn, &row.policy_id, row.version, 2).await?;
        drop(conn);
        let latest = starts.first();
        let pause = latest.filter(|s| s.edited_by == GUARD && row.canary_percent <= 0.0);
        // Which run of windows to show: the one the guard paused, or the
        // running one.
        let (start, until_us) = match (pause, starts.get(1)) {
            (Some(pause), Some(before)) => (Some(before), parse_rfc3339(&pause.at)),
            _ => (latest, None),
        };
        let start_us = start.and_then(|s| parse_rfc3339(&s.at));
        let until_us = until_us.unwrap_or_else(now_us);
        let windows = match start_us {
            Some(start_us) => {
                let sparse = self.count(&row.policy_id, start_us, until_us).await?;
                let window_us = windows::window_us(&self.settings);
                windows::recent(&sparse, start_us, window_us, until_us, RECENT_WINDOWS)
            }
            None => Vec::new(),
        };
        let windows: Vec<Value> = windows
            .iter()
            .map(|w| {
                json!({
                    "start": timestamp_of(w.start_us),
                    "end": timestamp_of(w.end_us),
                    "denies": w.denies,
                    "falsePositives": w.false_positives,
                    "rate": w.rate(),
                    "bad": w.is_bad(&self.settings),
                    "complete": w.complete,
                })
            })
            .collect();
        Ok(json!({
            "percent": row.canary_percent,
            "version": row.version,
            "since": latest.map(|s| &s.at),
            "windowSeconds": self.settings.window.as_secs_f64(),
            "windows": windows,
            "paused": pause.is_some(),
            "pausedAt": pause.map(|s| &s.at),
            "pausedReason": pause.map(|s| &s.reason),
        }))
    }
}

/// `1h 2m`, `45s`, `500ms`: how long a canary ran, for a reason text.
fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}
