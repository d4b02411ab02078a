//! `POST /v1/bundles/{name}/push`: a bundle directory's settings and
//! policies in one transaction, publishing at most one revision
//! (`sentinelnet ctl push`).
//!
//! Per policy: a new id is created (version 1); a document that differs
//! from the newest version's (ignoring `version`, `state` and
//! `canaryPercent`) becomes a new version; an equal one is left alone,
//! state included, so pushing the same directory twice changes nothing and
//! never undoes a guard's pause or an operator's rollback. Each created or
//! versioned policy is then moved toward the `state` (and `canaryPercent`)
//! its file declares, when the lifecycle allows that move now: forward,
//! back to draft, or to deprecated. A move the lifecycle refuses, or an
//! activation still missing approvals, is not an error: the policy stays
//! a draft and the answer's `note` says why (approve, then transition).

use super::lifecycle::{check_transition, needs_approvals};
use super::policies::upsert_bundle;
use super::store::{self, StoreError};
use super::transitions::{plan, record_changes, Requested};
use super::{
    check_name, now, revision_name, state_of, stored_document, Registry, RegistryError, Result,
};
use crate::policy::{Policy, PolicyDocument, State, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PushRequest {
    default_decision: Verdict,
    policies: Vec<Value>,
    #[serde(default)]
    reason: Option<String>,
}

/// What a push did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushReport {
    pub bundle: String,
    pub default_decision: Verdict,
    /// The revision this push published, if what sidecars evaluate changed.
    pub published_revision: Option<String>,
    pub policies: Vec<PushedPolicy>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushedPolicy {
    pub id: String,
    /// `created`, `versioned` or `unchanged`.
    pub content: &'static str,
    pub version: i64,
    /// The state after the push, and the one the file asks for.
    pub state: String,
    pub canary_percent: f64,
    pub wanted: String,
    /// Why the policy is not (yet) in the wanted state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A pushed document as central stores a draft of it, and the state its file asks for.
fn parse_policy(index: usize, value: &Value) -> Result<(PolicyDocument, State, f64)> {
    let document: PolicyDocument = crate::bundle::typed_at(value).map_err(|(at, message)| {
        RegistryError::body(format!("at /policies/{index}{at}: {message}"))
    })?;
    let (wanted, percent) = (document.state, document.canary_percent);
    Policy::compile(document.clone()).map_err(|e| {
        RegistryError::body(format!(
            "at /policies/{index}{}: policy \"{}\": {}",
            e.pointer, e.policy, e.message
        ))
    })?;
    Ok((document, wanted, percent))
}

/// The document without what central owns (version, state, share): what
/// "changed" compares.
fn content_of(document: &PolicyDocument) -> Value {
    let mut document = document.clone();
    document.version = 1;
    document.state = State::Draft;
    document.canary_percent = 0.0;
    serde_json::to_value(&document).unwrap_or(Value::Null)
}

impl Registry {
    pub(crate) async fn push(
        &self,
        bundle_name: &str,
        body: &[u8],
        by: &str,
    ) -> Result<PushReport> {
        check_name("bundle", bundle_name)?;
        let request: PushRequest = super::parse_body(body)?;
        let mut parsed = Vec::with_capacity(request.policies.len());
        let mut ids = BTreeSet::new();
        for (index, value) in request.policies.iter().enumerate() {
            let entry = parse_policy(index, value)?;
            if !ids.insert(entry.0.id.clone()) {
                return Err(RegistryError::body(format!(
                    "at /policies/{index}/id: policy \"{}\" is given twice",
                    entry.0.id
                )));
            }
            parsed.push(entry);
        }
        parsed.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let reason = request
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or("pushed")
            .to_owned();

        let (_write, mut tx) = self.begin_write(bundle_name).await?;
        upsert_bundle(&mut tx, bundle_name, request.default_decision, by).await?;
        let at = now();
        let mut report = Vec::with_capacity(parsed.len());
        for (document, wanted, percent) in parsed {
            let id = document.id.clone();
            let (content, version) = match store::policy(&mut tx, &id).await? {
                None => {
                    store::insert_policy(
                        &mut tx,
                        &store::PolicyRow {
                            id: id.clone(),
                            bundle: bundle_name.to_owned(),
                            latest_version: 1,
                            created_by: by.to_owned(),
                            created_at: at.clone(),
                        },
                    )
                    .await?;
                    let draft = as_draft(&document, 1);
                    self.insert_draft(&mut tx, &draft, by, &at, reason.clone()).await?;
                    ("created", 1)
                }
                Some(row) if row.bundle != bundle_name => {
                    return Err(RegistryError::Conflict(format!(
                        "policy \"{id}\" belongs to bundle {}, not {bundle_name} (policy ids are unique across a central)",
                        row.bundle
                    )))
                }
                Some(row) => {
                    let latest = self.latest(&mut tx, &row).await?;
                    if content_of(&stored_document(&latest)?) == content_of(&document) {
                        ("unchanged", latest.version)
                    } else {
                        let version = latest.version + 1;
                        let draft = as_draft(&document, version);
                        self.insert_draft(&mut tx, &draft, by, &at, reason.clone()).await?;
                        store::set_latest_version(&mut tx, &id, version).await?;
                        ("versioned", version)
                    }
                }
            };
            // An unchanged policy is left alone, state included: a canary the
            // guard paused or a policy rolled back to draft stays so until
            // its file changes or an operator moves it.
            let note = if content == "unchanged" {
                let latest = store::version(&mut tx, &id, version).await?;
                latest.and_then(|row| {
                    let current = state_of(&row);
                    let differs = current != wanted
                        || (wanted == State::Canary && row.canary_percent != percent);
                    differs.then(|| {
                        format!(
                            "unchanged, so left {} (the file says {}); use a transition to move it",
                            current.as_str(),
                            wanted.as_str()
                        )
                    })
                })
            } else {
                self.move_toward(&mut tx, bundle_name, &id, wanted, percent, &reason, by, &at)
                    .await?
            };
            let latest = store::version(&mut tx, &id, version)
                .await?
                .ok_or_else(|| {
                    RegistryError::NotFound(format!("policy \"{id}\" has no version {version}"))
                })?;
            report.push(PushedPolicy {
                id,
                content,
                version,
                state: latest.state.clone(),
                canary_percent: latest.canary_percent,
                wanted: wanted.as_str().to_owned(),
                note,
            });
        }
        let why = format!("push: {reason}");
        let published = self
            .publish_if_changed(&mut tx, bundle_name, by, &why)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.announce(published);
        tracing::info!(bundle = bundle_name, policies = report.len(), by, revision = ?published, "central: push");
        Ok(PushReport {
            bundle: bundle_name.to_owned(),
            default_decision: request.default_decision,
            published_revision: published.map(revision_name),
            policies: report,
        })
    }

    /// Move policy `id` toward `wanted` if the lifecycle allows it now;
    /// why not, if it does not.
    #[allow(clippy::too_many_arguments)]
    async fn move_toward(
        &self,
        tx: &mut store::Tx,
        bundle_name: &str,
        id: &str,
        wanted: State,
        percent: f64,
        reason: &str,
        by: &str,
        at: &str,
    ) -> Result<Option<String>> {
        let policy = self.policy_in(tx, bundle_name, id).await?;
        let latest = self.latest(tx, &policy).await?;
        let current = state_of(&latest);
        let percent = if wanted == State::Canary {
            percent
        } else {
            0.0
        };
        if current == wanted && (wanted != State::Canary || latest.canary_percent == percent) {
            return Ok(None);
        }
        if let Err(why) = check_transition(current, wanted) {
            return Ok(Some(format!(
                "kept {}: {why}; use a transition",
                current.as_str()
            )));
        }
        let document = stored_document(&latest)?;
        if wanted == State::Active && needs_approvals(document.severity) {
            match self
                .check_approvals(tx, id, &latest, document.severity)
                .await
            {
                Ok(()) => {}
                Err(RegistryError::Conflict(why)) => return Ok(Some(why)),
                Err(other) => return Err(other),
            }
        }
        let versions = store::versions(tx, id).await?;
        let requested = Requested {
            to: wanted,
            canary_percent: percent,
            reason: reason.to_owned(),
        };
        let changes = plan(id, &requested, &latest, &versions)?;
        record_changes(tx, id, &changes, by, at).await?;
        Ok(None)
    }
}

/// The document stored for a new version: central owns version and state.
fn as_draft(document: &PolicyDocument, version: i64) -> PolicyDocument {
    let mut draft = document.clone();
    draft.version = version as u64;
    draft.state = State::Draft;
    draft.canary_percent = 0.0;
    draft
}
