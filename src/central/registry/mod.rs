//! The policy registry: bundles, policy versions, lifecycle transitions,
//! approvals, and publishing signed bundle revisions.
//!
//! Every mutation runs in one store transaction under one in-process write
//! lock (and the bundle's row lock, for centrals sharing a database), and
//! every change that alters what sidecars evaluate builds, signs and stores
//! a new revision in that same transaction, then wakes long polls.
//!
//! One file per concern: [`policies`] (bundles, policies, versions, list,
//! explain), [`transitions`] (parse → plan → apply), [`approvals`]
//! (manifests and multisig), [`publishing`] (revisions).

mod approvals;
mod policies;
mod publishing;
mod push;
#[cfg(test)]
mod tests;
mod transitions;

pub(crate) use transitions::CanaryAction;

use super::lifecycle;
use super::store::{self, Store, StoreError, VersionRow};
use crate::bundle::{self, signing, BundleError};
use crate::policy::{is_identifier, Policy, PolicyDocument, Severity, State, IDENTIFIER_RULE};
use crate::timestamp::format_timestamp;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    /// The signing key (a token that stopped answering) could not sign
    /// the new revision: the change is not made.
    #[error("cannot sign the new revision: {0}")]
    Signing(crate::keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, RegistryError>;

impl RegistryError {
    /// A bad request body: `message` says where in it (a JSON pointer) and why.
    pub(crate) fn body(message: String) -> RegistryError {
        RegistryError::Invalid(format!("request body: {message}"))
    }
}

/// A policy's state after a change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyStatus {
    pub id: String,
    pub bundle: String,
    pub version: i64,
    pub state: String,
    pub canary_percent: f64,
    pub severity: Severity,
    /// The bundle revision this change published, if it changed what sidecars evaluate.
    pub published_revision: Option<String>,
}

pub(crate) struct Registry {
    store: Store,
    signer: Arc<dyn crate::keys::Signer>,
    approvers: Option<signing::TrustedKeys>,
    approvals_required: usize,
    writes: tokio::sync::Mutex<()>,
    published: watch::Sender<u64>,
}

pub(super) fn now() -> String {
    format_timestamp(SystemTime::now())
}

pub(crate) fn revision_name(revision: i64) -> String {
    format!("r{revision}")
}

pub(super) fn check_name(what: &str, name: &str) -> Result<()> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "{what} \"{name}\": use {IDENTIFIER_RULE}"
        )))
    }
}

pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    bundle::parse_json::<T>("request body", body)
        .map(|(typed, _)| typed)
        .map_err(|e| RegistryError::Invalid(e.to_string()))
}

/// `body` with `version` and `state` filled in where a publisher left them
/// out: central sets both anyway (SPEC 7 forces the state to `draft`), so
/// only what the publisher wrote can be wrong. A body that has both, or is
/// no JSON object, is read as sent (its errors keep their positions).
fn with_central_fields(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use serde_json::Value;
    // A body with a repeated key is read as sent, so its error says so.
    let Ok(Value::Object(mut fields)) = crate::bundle::strict_json(body) else {
        return body.into();
    };
    if fields.contains_key("version") && fields.contains_key("state") {
        return body.into();
    }
    fields.entry("version").or_insert(Value::from(1));
    fields
        .entry("state")
        .or_insert(Value::from(State::Draft.as_str()));
    serde_json::to_vec(&Value::Object(fields)).map_or_else(|_| body.into(), std::borrow::Cow::Owned)
}

/// Parse and compile-check a policy document sent by a publisher, as the
/// draft `version` central will store.
pub(super) fn draft_document(body: &[u8], version: i64) -> Result<PolicyDocument> {
    let mut document: PolicyDocument = parse_body(&with_central_fields(body))?;
    // Central owns versions and states: a new version always starts as a draft.
    document.version = version as u64;
    document.state = State::Draft;
    // Checked as sent (a canaryPercent of -5 is refused, not quietly
    // zeroed), then zeroed: a draft enforces nothing.
    Policy::compile(document.clone()).map_err(|e| {
        RegistryError::Invalid(
            BundleError {
                file: "request body".into(),
                policy: Some(e.policy),
                pointer: Some(e.pointer),
                message: e.message,
            }
            .to_string(),
        )
    })?;
    document.canary_percent = 0.0;
    Ok(document)
}

pub(super) fn stored_document(row: &VersionRow) -> Result<PolicyDocument> {
    serde_json::from_str(&row.document).map_err(|e| {
        RegistryError::Invalid(format!(
            "stored policy {} v{} does not parse: {e}",
            row.policy_id, row.version
        ))
    })
}

pub(super) fn state_of(row: &VersionRow) -> State {
    lifecycle::parse_state(&row.state).unwrap_or(State::Draft)
}

impl Registry {
    pub(crate) fn new(
        store: Store,
        signer: Arc<dyn crate::keys::Signer>,
        approvers: Option<signing::TrustedKeys>,
        approvals_required: usize,
    ) -> Registry {
        Registry {
            store,
            signer,
            approvers,
            approvals_required,
            writes: tokio::sync::Mutex::new(()),
            published: watch::Sender::new(0),
        }
    }

    /// Start a mutation of `bundle`: this process's write lock, a
    /// transaction, and the bundle's row lock. The row lock serialises
    /// writers across centrals sharing one PostgreSQL, so a revision is never
    /// built from a snapshot that misses another central's committed change.
    async fn begin_write(
        &self,
        bundle: &str,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, store::Tx)> {
        let guard = self.writes.lock().await;
        let mut tx = self.store.begin().await?;
        store::lock_bundle(&mut tx, bundle).await?;
        Ok((guard, tx))
    }

    /// Bumped after every published revision.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    fn announce(&self, published: Option<i64>) {
        if published.is_some() {
            self.published.send_modify(|n| *n += 1);
        }
    }
}
