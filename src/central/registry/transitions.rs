//! Lifecycle transitions in three steps: [`parse`] the request (400s),
//! [`plan`] the state changes from the policy's versions (409s; pure, so it
//! is unit-tested without a store), then apply them and publish.

use super::lifecycle::{check_transition, is_live, needs_approvals};
use super::store::{self, StoreError, TransitionRow, VersionRow};
use super::{
    lifecycle, now, parse_body, revision_name, state_of, stored_document, PolicyStatus, Registry,
    RegistryError, Result,
};
use crate::policy::State;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TransitionRequest {
    pub to: String,
    #[serde(default)]
    pub canary_percent: Option<f64>,
    #[serde(default)]
    pub reason: String,
}

/// A transition request, validated on its own.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Requested {
    pub(super) to: State,
    pub(super) canary_percent: f64,
    pub(super) reason: String,
}

/// One version's state change, and why.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Change {
    pub(super) version: i64,
    pub(super) from: String,
    pub(super) to: State,
    pub(super) canary_percent: f64,
    pub(super) reason: String,
}

/// Step 1: the body, checked without the store.
pub(super) fn parse(body: &[u8]) -> Result<Requested> {
    let request: TransitionRequest = parse_body(body)?;
    let to = lifecycle::parse_state(&request.to).ok_or_else(|| {
        RegistryError::Invalid(format!(
            "request body: at /to: unknown state \"{}\" (draft, simulating, canary, active, deprecated)",
            request.to
        ))
    })?;
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(RegistryError::Invalid(
            "request body: at /reason: every transition needs a reason".into(),
        ));
    }
    let canary_percent = match (to, request.canary_percent) {
        (State::Canary, Some(p)) if p.is_finite() && (0.0..=100.0).contains(&p) => p,
        (State::Canary, Some(p)) => {
            return Err(RegistryError::Invalid(format!(
                "request body: at /canaryPercent: {p} is not between 0 and 100"
            )))
        }
        (State::Canary, None) => {
            return Err(RegistryError::Invalid(
                "request body: at /canaryPercent: a canary needs canaryPercent (0–100)".into(),
            ))
        }
        (_, Some(_)) => {
            return Err(RegistryError::Invalid(format!(
            "request body: at /canaryPercent: only a move to canary takes a percentage, not to {}",
            to.as_str()
        )))
        }
        (_, None) => 0.0,
    };
    Ok(Requested {
        to,
        canary_percent,
        reason,
    })
}

/// Step 2: the changes a transition of policy `id` makes, given its newest
/// version and all its versions. Moving to deprecated deprecates every
/// version; back to draft touches the newest only; any other move takes the
/// newest version there and deprecates an older live one it supersedes.
pub(super) fn plan(
    id: &str,
    requested: &Requested,
    latest: &VersionRow,
    versions: &[VersionRow],
) -> Result<Vec<Change>> {
    let from = state_of(latest);
    check_transition(from, requested.to).map_err(|m| {
        RegistryError::Conflict(format!("policy \"{id}\" v{}: {m}", latest.version))
    })?;
    let change = |version: &VersionRow, to: State, canary_percent: f64, reason: String| Change {
        version: version.version,
        from: version.state.clone(),
        to,
        canary_percent,
        reason,
    };
    let reason = &requested.reason;
    let changes = match requested.to {
        State::Deprecated => versions
            .iter()
            .filter(|v| state_of(v) != State::Deprecated)
            .map(|v| change(v, State::Deprecated, 0.0, reason.clone()))
            .collect(),
        State::Draft => vec![change(latest, State::Draft, 0.0, reason.clone())],
        to => std::iter::once(change(latest, to, requested.canary_percent, reason.clone()))
            .chain(
                versions
                    .iter()
                    .filter(|v| v.version < latest.version && is_live(state_of(v)))
                    .map(|older| {
                        change(
                            older,
                            State::Deprecated,
                            0.0,
                            format!("superseded by version {}", latest.version),
                        )
                    }),
            )
            .collect(),
    };
    Ok(changes)
}

/// What central itself does to a running canary: pause it or promote it.
pub(crate) struct CanaryAction<'a> {
    pub bundle: &'a str,
    pub policy: &'a str,
    /// The canary version the decision was made about.
    pub version: i64,
    /// When its run started (its newest transition to canary), as read.
    pub started_at: &'a str,
    pub to: State,
    pub canary_percent: f64,
    pub reason: String,
}

/// Write planned changes: each version's new state and its transition.
pub(super) async fn record_changes(
    tx: &mut store::Tx,
    id: &str,
    changes: &[Change],
    by: &str,
    at: &str,
) -> Result<()> {
    for c in changes {
        store::set_version_state(tx, id, c.version, c.to.as_str(), c.canary_percent).await?;
        store::insert_transition(
            tx,
            &TransitionRow {
                policy_id: id.to_owned(),
                seq: 0,
                version: c.version,
                from_state: c.from.clone(),
                to_state: c.to.as_str().to_owned(),
                canary_percent: c.canary_percent,
                reason: c.reason.clone(),
                edited_by: by.to_owned(),
                at: at.to_owned(),
            },
        )
        .await?;
    }
    Ok(())
}

impl Registry {
    pub(crate) async fn transition(
        &self,
        bundle_name: &str,
        id: &str,
        body: &[u8],
        by: &str,
    ) -> Result<PolicyStatus> {
        let requested = parse(body)?;
        let (_write, mut tx) = self.begin_write(bundle_name).await?;
        let policy = self.policy_in(&mut tx, bundle_name, id).await?;
        let latest = self.latest(&mut tx, &policy).await?;
        let versions = store::versions(&mut tx, id).await?;
        let changes = plan(id, &requested, &latest, &versions)?;
        let document = stored_document(&latest)?;
        if requested.to == State::Active && needs_approvals(document.severity) {
            self.check_approvals(&mut tx, id, &latest, document.severity)
                .await?;
        }
        self.finish(tx, bundle_name, id, &latest, &requested, &changes, by)
            .await
    }

    /// A transition central makes by itself (the canary guard pausing a
    /// canary, auto-promotion), recorded as `by` (`central:…`). Applied only
    /// if `action.version` is still a canary with a share above 0 whose run
    /// started at `action.started_at` (an operator's change made meanwhile
    /// wins); a promotion only if that version is also the newest. A pause
    /// sets that version's share to 0 even while a newer version is being
    /// drafted. `None` when it no longer applies.
    pub(crate) async fn automatic_transition(
        &self,
        action: CanaryAction<'_>,
        by: &str,
    ) -> Result<Option<PolicyStatus>> {
        let id = action.policy;
        let (_write, mut tx) = self.begin_write(action.bundle).await?;
        let policy = self.policy_in(&mut tx, action.bundle, id).await?;
        let Some(target) = store::version(&mut tx, id, action.version).await? else {
            return Ok(None);
        };
        let started = store::rollout::canary_starts(&mut tx, id, action.version, 1).await?;
        let running = state_of(&target) == State::Canary
            && target.canary_percent > 0.0
            && started.first().map(|s| s.at.as_str()) == Some(action.started_at);
        if !running {
            return Ok(None);
        }
        let requested = Requested {
            to: action.to,
            canary_percent: action.canary_percent,
            reason: action.reason,
        };
        let changes = match action.to {
            State::Canary => vec![Change {
                version: target.version,
                from: target.state.clone(),
                to: State::Canary,
                canary_percent: requested.canary_percent,
                reason: requested.reason.clone(),
            }],
            _ if target.version != policy.latest_version => return Ok(None),
            _ => {
                let versions = store::versions(&mut tx, id).await?;
                plan(id, &requested, &target, &versions)?
            }
        };
        self.finish(tx, action.bundle, id, &target, &requested, &changes, by)
            .await
            .map(Some)
    }

    /// Step 3: apply the changes and publish, in the same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        mut tx: store::Tx,
        bundle_name: &str,
        id: &str,
        latest: &VersionRow,
        requested: &Requested,
        changes: &[Change],
        by: &str,
    ) -> Result<PolicyStatus> {
        record_changes(&mut tx, id, changes, by, &now()).await?;
        let document = stored_document(latest)?;
        let from = state_of(latest);
        let to = requested.to;
        let why = format!(
            "{id} v{}: {} → {}: {}",
            latest.version,
            from.as_str(),
            to.as_str(),
            requested.reason
        );
        let published = self
            .publish_if_changed(&mut tx, bundle_name, by, &why)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.announce(published);
        tracing::info!(policy = id, version = latest.version, from = from.as_str(), to = to.as_str(), by, revision = ?published, "central: transition");
        Ok(PolicyStatus {
            id: id.to_owned(),
            bundle: bundle_name.to_owned(),
            version: latest.version,
            state: to.as_str().into(),
            canary_percent: requested.canary_percent,
            severity: document.severity,
            published_revision: published.map(revision_name),
        })
    }
}
