//! The policy registry: bundles, policy versions, lifecycle transitions,
//! approvals, and publishing signed bundle revisions.
//!
//! Every mutation runs in one store transaction under one in-process write
//! lock, and every change that alters what sidecars evaluate builds, signs
//! and stores a new revision in that same transaction, then wakes long polls.

use super::lifecycle::{self, activation_manifest, check_transition, is_live, needs_approvals};
use super::store::{self, ApprovalRow, RevisionMeta, Store, StoreError, TransitionRow, VersionRow};
use crate::audit::format_timestamp;
use crate::bundle::{self, signing, Bundle, BundleError, BundleFiles};
use crate::policy::{Policy, PolicyDocument, Severity, State, Verdict};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Signs a bundle's files (adds `.signatures.json`). A trait so a KMS-held
/// key can replace the key file.
pub trait BundleSigner: Send + Sync {
    fn sign_bundle(&self, files: &mut BundleFiles);
}

impl BundleSigner for signing::SigningKey {
    fn sign_bundle(&self, files: &mut BundleFiles) {
        signing::sign_bundle(files, self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleSettings {
    pub default_decision: Verdict,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransitionRequest {
    pub to: String,
    #[serde(default)]
    pub canary_percent: Option<f64>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub approver: String,
    pub signature: String,
    /// The version the approver means; refused if it is not the current one.
    #[serde(default)]
    pub version: Option<i64>,
}

/// A policy's state after a change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub id: String,
    pub bundle: String,
    pub version: i64,
    pub state: String,
    pub canary_percent: f64,
    pub severity: Severity,
    /// The bundle revision this change published, if it changed what sidecars evaluate.
    pub published_revision: Option<String>,
}

pub struct Registry {
    store: Store,
    signer: Arc<dyn BundleSigner>,
    approvers: Option<signing::TrustedKeys>,
    approvals_required: usize,
    writes: tokio::sync::Mutex<()>,
    published: watch::Sender<u64>,
}

fn now() -> String {
    format_timestamp(SystemTime::now())
}

pub fn revision_name(revision: i64) -> String {
    format!("r{revision}")
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "{what} \"{name}\": use 1–128 letters, digits, '.', '-', '_' or ':'"
        )))
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    bundle::parse_json::<T>("request body", body)
        .map(|(typed, _)| typed)
        .map_err(|e| RegistryError::Invalid(e.to_string()))
}

/// Parse and compile-check a policy document sent by a publisher, as the
/// draft `version` central will store.
fn draft_document(body: &[u8], version: i64) -> Result<PolicyDocument> {
    let mut document: PolicyDocument = parse_body(body)?;
    // Central owns versions and states: a new version always starts as a draft.
    document.version = version as u64;
    document.state = State::Draft;
    document.canary_percent = 0.0;
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
    Ok(document)
}

fn stored_document(row: &VersionRow) -> Result<PolicyDocument> {
    serde_json::from_str(&row.document).map_err(|e| {
        RegistryError::Invalid(format!(
            "stored policy {} v{} does not parse: {e}",
            row.policy_id, row.version
        ))
    })
}

fn state_of(row: &VersionRow) -> State {
    lifecycle::parse_state(&row.state).unwrap_or(State::Draft)
}

/// The document sidecars receive for a live version: its state and canary share.
fn enforced_document(row: &VersionRow) -> Result<Vec<u8>> {
    let mut document = stored_document(row)?;
    document.version = row.version as u64;
    document.state = state_of(row);
    document.canary_percent = row.canary_percent;
    serde_json::to_vec_pretty(&document)
        .map_err(|e| RegistryError::Invalid(format!("policy {}: {e}", row.policy_id)))
}

impl Registry {
    pub fn new(
        store: Store,
        signer: Arc<dyn BundleSigner>,
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
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    fn announce(&self, published: Option<i64>) {
        if published.is_some() {
            self.published.send_modify(|n| *n += 1);
        }
    }

    /// The newest revision of a bundle.
    pub async fn current(&self, bundle: &str) -> Result<Option<RevisionMeta>> {
        let mut conn = self.store.connection().await?;
        Ok(store::latest_revision(&mut conn, bundle).await?)
    }

    /// The signed `.tar.gz` of one revision.
    pub async fn archive(&self, bundle: &str, revision: i64) -> Result<Vec<u8>> {
        let mut conn = self.store.connection().await?;
        let text = store::revision_archive(&mut conn, bundle, revision)
            .await?
            .ok_or_else(|| {
                RegistryError::NotFound(format!("bundle {bundle} has no revision r{revision}"))
            })?;
        B64.decode(text).map_err(|e| {
            RegistryError::Invalid(format!("stored archive of {bundle} r{revision}: {e}"))
        })
    }

    pub async fn put_bundle(&self, name: &str, body: &[u8], by: &str) -> Result<Value> {
        check_name("bundle", name)?;
        let settings: BundleSettings = parse_body(body)?;
        let default_decision = settings.default_decision.as_str();
        let (_write, mut tx) = self.begin_write(name).await?;
        let at = now();
        let reason = match store::bundle(&mut tx, name).await? {
            Some(_) => {
                store::update_bundle(&mut tx, name, default_decision, by, &at).await?;
                settings
                    .reason
                    .unwrap_or_else(|| format!("default decision {default_decision}"))
            }
            None => {
                store::insert_bundle(
                    &mut tx,
                    &store::BundleRow {
                        name: name.to_owned(),
                        default_decision: default_decision.to_owned(),
                        created_by: by.to_owned(),
                        created_at: at.clone(),
                        updated_by: by.to_owned(),
                        updated_at: at,
                    },
                )
                .await?;
                settings.reason.unwrap_or_else(|| "bundle created".into())
            }
        };
        let published = self.publish_if_changed(&mut tx, name, by, &reason).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.announce(published);
        Ok(json!({
            "name": name,
            "defaultDecision": default_decision,
            "publishedRevision": published.map(revision_name),
        }))
    }

    pub async fn create_policy(
        &self,
        bundle_name: &str,
        body: &[u8],
        reason: Option<String>,
        by: &str,
    ) -> Result<PolicyStatus> {
        check_name("bundle", bundle_name)?;
        let document = draft_document(body, 1)?;
        let (_write, mut tx) = self.begin_write(bundle_name).await?;
        let at = now();
        if store::bundle(&mut tx, bundle_name).await?.is_none() {
            // A policy may create its bundle; deny by default until told otherwise.
            store::insert_bundle(
                &mut tx,
                &store::BundleRow {
                    name: bundle_name.to_owned(),
                    default_decision: Verdict::Deny.as_str().to_owned(),
                    created_by: by.to_owned(),
                    created_at: at.clone(),
                    updated_by: by.to_owned(),
                    updated_at: at.clone(),
                },
            )
            .await?;
        }
        if let Some(existing) = store::policy(&mut tx, &document.id).await? {
            return Err(RegistryError::Conflict(format!(
                "policy \"{}\" already exists (bundle {}); PUT /v1/bundles/{}/policies/{} adds a version",
                document.id, existing.bundle, existing.bundle, document.id
            )));
        }
        store::insert_policy(
            &mut tx,
            &store::PolicyRow {
                id: document.id.clone(),
                bundle: bundle_name.to_owned(),
                latest_version: 1,
                created_by: by.to_owned(),
                created_at: at.clone(),
            },
        )
        .await?;
        self.insert_draft(
            &mut tx,
            &document,
            by,
            &at,
            reason.unwrap_or_else(|| "created".into()),
        )
        .await?;
        let published = self
            .publish_if_changed(&mut tx, bundle_name, by, "bundle created")
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.announce(published);
        Ok(PolicyStatus {
            id: document.id,
            bundle: bundle_name.to_owned(),
            version: 1,
            state: State::Draft.as_str().into(),
            canary_percent: 0.0,
            severity: document.severity,
            published_revision: published.map(revision_name),
        })
    }

    async fn insert_draft(
        &self,
        tx: &mut store::Tx,
        document: &PolicyDocument,
        by: &str,
        at: &str,
        reason: String,
    ) -> Result<()> {
        let text = serde_json::to_string(document)
            .map_err(|e| RegistryError::Invalid(format!("policy {}: {e}", document.id)))?;
        store::insert_version(
            tx,
            &VersionRow {
                policy_id: document.id.clone(),
                version: document.version as i64,
                document: text,
                state: State::Draft.as_str().into(),
                canary_percent: 0.0,
                created_by: by.to_owned(),
                created_at: at.to_owned(),
                reason,
            },
        )
        .await?;
        Ok(())
    }

    async fn policy_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        bundle_name: &str,
        id: &str,
    ) -> Result<store::PolicyRow> {
        match store::policy(tx, id).await? {
            Some(row) if row.bundle == bundle_name => Ok(row),
            Some(row) => Err(RegistryError::NotFound(format!(
                "policy \"{id}\" belongs to bundle {}, not {bundle_name}",
                row.bundle
            ))),
            None => Err(RegistryError::NotFound(format!(
                "no policy \"{id}\" in bundle {bundle_name}"
            ))),
        }
    }

    async fn latest(
        &self,
        tx: &mut sqlx::AnyConnection,
        policy: &store::PolicyRow,
    ) -> Result<VersionRow> {
        store::version(tx, &policy.id, policy.latest_version)
            .await?
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "policy \"{}\" has no version {}",
                    policy.id, policy.latest_version
                ))
            })
    }

    /// A new version, as a draft; the version sidecars evaluate today stays
    /// until this one leaves draft.
    pub async fn add_version(
        &self,
        bundle_name: &str,
        id: &str,
        body: &[u8],
        reason: Option<String>,
        by: &str,
    ) -> Result<PolicyStatus> {
        let (_write, mut tx) = self.begin_write(bundle_name).await?;
        let policy = self.policy_in(&mut tx, bundle_name, id).await?;
        let version = policy.latest_version + 1;
        let document = draft_document(body, version)?;
        if document.id != id {
            return Err(RegistryError::Invalid(format!(
                "request body: at /id: the document's id \"{}\" differs from the path's \"{id}\"",
                document.id
            )));
        }
        let at = now();
        self.insert_draft(
            &mut tx,
            &document,
            by,
            &at,
            reason.unwrap_or_else(|| format!("version {version}")),
        )
        .await?;
        store::set_latest_version(&mut tx, id, version).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(PolicyStatus {
            id: id.to_owned(),
            bundle: bundle_name.to_owned(),
            version,
            state: State::Draft.as_str().into(),
            canary_percent: 0.0,
            severity: document.severity,
            published_revision: None,
        })
    }

    pub async fn transition(
        &self,
        bundle_name: &str,
        id: &str,
        body: &[u8],
        by: &str,
    ) -> Result<PolicyStatus> {
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

        let (_write, mut tx) = self.begin_write(bundle_name).await?;
        let policy = self.policy_in(&mut tx, bundle_name, id).await?;
        let latest = self.latest(&mut tx, &policy).await?;
        let from = state_of(&latest);
        check_transition(from, to).map_err(|m| {
            RegistryError::Conflict(format!("policy \"{id}\" v{}: {m}", latest.version))
        })?;
        let document = stored_document(&latest)?;
        if to == State::Active && needs_approvals(document.severity) {
            let approvals = store::approvals(&mut tx, id).await?;
            let approvers: Vec<&str> = approvals
                .iter()
                .filter(|a| a.version == latest.version)
                .map(|a| a.approver.as_str())
                .collect();
            if approvers.len() < self.approvals_required {
                return Err(RegistryError::Conflict(format!(
                    "policy \"{id}\" v{} is {:?}: activation needs {} approvals of its manifest, has {} ({}); GET …/manifest, sign it, POST …/approvals",
                    latest.version,
                    document.severity,
                    self.approvals_required,
                    approvers.len(),
                    if approvers.is_empty() { "none".to_owned() } else { approvers.join(", ") },
                )));
            }
        }

        let at = now();
        let record = |version: &VersionRow, to: State, percent: f64, why: &str| TransitionRow {
            policy_id: id.to_owned(),
            seq: 0,
            version: version.version,
            from_state: version.state.clone(),
            to_state: to.as_str().to_owned(),
            canary_percent: percent,
            reason: why.to_owned(),
            edited_by: by.to_owned(),
            at: at.clone(),
        };
        let versions = store::versions(&mut tx, id).await?;
        let mut changes: Vec<(VersionRow, State, f64, String)> = Vec::new();
        match to {
            State::Deprecated => {
                for version in versions.iter().filter(|v| state_of(v) != State::Deprecated) {
                    changes.push((version.clone(), State::Deprecated, 0.0, reason.clone()));
                }
            }
            State::Draft => changes.push((latest.clone(), State::Draft, 0.0, reason.clone())),
            _ => {
                changes.push((latest.clone(), to, canary_percent, reason.clone()));
                // The new version takes over from the one sidecars evaluate now.
                for older in versions
                    .iter()
                    .filter(|v| v.version < latest.version && is_live(state_of(v)))
                {
                    changes.push((
                        older.clone(),
                        State::Deprecated,
                        0.0,
                        format!("superseded by version {}", latest.version),
                    ));
                }
            }
        }
        for (version, state, percent, why) in &changes {
            store::set_version_state(&mut tx, id, version.version, state.as_str(), *percent)
                .await?;
            store::insert_transition(&mut tx, &record(version, *state, *percent, why)).await?;
        }
        let why = format!(
            "{id} v{}: {} → {}: {reason}",
            latest.version,
            from.as_str(),
            to.as_str()
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
            canary_percent,
            severity: document.severity,
            published_revision: published.map(revision_name),
        })
    }

    /// The activation manifest of the policy's current version.
    pub async fn manifest(&self, bundle_name: &str, id: &str) -> Result<Vec<u8>> {
        let mut conn = self.store.connection().await?;
        let policy = self.policy_in(&mut conn, bundle_name, id).await?;
        let latest = self.latest(&mut conn, &policy).await?;
        let document = stored_document(&latest)?;
        Ok(activation_manifest(
            bundle_name,
            id,
            latest.version,
            document.severity,
            &latest.document,
        ))
    }

    pub async fn approve(
        &self,
        bundle_name: &str,
        id: &str,
        body: &[u8],
        by: &str,
    ) -> Result<Value> {
        let request: ApprovalRequest = parse_body(body)?;
        let approvers = self.approvers.as_ref().ok_or_else(|| {
            RegistryError::Refused("central has no approver keys (--approvers)".into())
        })?;
        let (_write, mut tx) = self.begin_write(bundle_name).await?;
        let policy = self.policy_in(&mut tx, bundle_name, id).await?;
        let latest = self.latest(&mut tx, &policy).await?;
        if let Some(version) = request.version.filter(|v| *v != latest.version) {
            return Err(RegistryError::Conflict(format!(
                "approval for version {version} of \"{id}\", but its current version is {}",
                latest.version
            )));
        }
        if state_of(&latest) == State::Deprecated {
            return Err(RegistryError::Conflict(format!(
                "policy \"{id}\" v{} is deprecated",
                latest.version
            )));
        }
        let document = stored_document(&latest)?;
        let manifest = activation_manifest(
            bundle_name,
            id,
            latest.version,
            document.severity,
            &latest.document,
        );
        match approvers.verify_by(&request.approver, &manifest, &request.signature) {
            None => {
                return Err(RegistryError::Refused(format!(
                    "unknown approver \"{}\": no {}.pub among the approver keys",
                    request.approver, request.approver
                )))
            }
            Some(false) => {
                return Err(RegistryError::Refused(format!(
                    "the signature of \"{}\" does not match the activation manifest of \"{id}\" version {}",
                    request.approver, latest.version
                )))
            }
            Some(true) => {}
        }
        let existing = store::approvals(&mut tx, id).await?;
        if existing
            .iter()
            .any(|a| a.version == latest.version && a.approver == request.approver)
        {
            return Err(RegistryError::Conflict(format!(
                "\"{}\" already approved \"{id}\" version {}",
                request.approver, latest.version
            )));
        }
        store::insert_approval(
            &mut tx,
            &ApprovalRow {
                policy_id: id.to_owned(),
                version: latest.version,
                approver: request.approver.clone(),
                signature: request.signature.trim().to_owned(),
                identity: by.to_owned(),
                at: now(),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let mut names: Vec<String> = existing
            .into_iter()
            .filter(|a| a.version == latest.version)
            .map(|a| a.approver)
            .collect();
        names.push(request.approver);
        Ok(json!({
            "policyId": id,
            "version": latest.version,
            "approvers": names,
            "approvals": names.len(),
            "required": if needs_approvals(document.severity) { self.approvals_required } else { 0 },
        }))
    }

    pub async fn list(&self, bundle_name: &str) -> Result<Value> {
        let mut conn = self.store.connection().await?;
        let bundle_row = store::bundle(&mut conn, bundle_name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no bundle {bundle_name}")))?;
        let revision = store::latest_revision(&mut conn, bundle_name).await?;
        let mut policies = Vec::new();
        for row in store::latest_versions(&mut conn, bundle_name).await? {
            let document = stored_document(&row)?;
            policies.push(json!({
                "id": row.policy_id,
                "version": row.version,
                "state": row.state,
                "canaryPercent": row.canary_percent,
                "severity": document.severity,
                "effect": document.effect,
            }));
        }
        Ok(json!({
            "name": bundle_row.name,
            "defaultDecision": bundle_row.default_decision,
            "revision": revision.map(|r| revision_name(r.revision)),
            "policies": policies,
        }))
    }

    /// Rule text, every version and transition, approvals.
    pub async fn explain(&self, id: &str) -> Result<Value> {
        let mut conn = self.store.connection().await?;
        let policy = store::policy(&mut conn, id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no policy \"{id}\"")))?;
        let versions = store::versions(&mut conn, id).await?;
        let transitions = store::transitions(&mut conn, id).await?;
        let approvals = store::approvals(&mut conn, id).await?;
        let revision = store::latest_revision(&mut conn, &policy.bundle).await?;
        let latest = versions
            .iter()
            .find(|v| v.version == policy.latest_version)
            .ok_or_else(|| RegistryError::NotFound(format!("policy \"{id}\" has no versions")))?;
        let document = stored_document(latest)?;
        let enforced = versions.iter().find(|v| is_live(state_of(v)));
        let mut version_list = Vec::new();
        for v in &versions {
            let mut entry = serde_json::to_value(v).unwrap_or(Value::Null);
            let doc: Value = serde_json::from_str(&v.document).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut entry {
                map.insert("document".into(), doc);
            }
            version_list.push(entry);
        }
        Ok(json!({
            "policyId": id,
            "bundle": policy.bundle,
            "createdBy": policy.created_by,
            "createdAt": policy.created_at,
            "version": latest.version,
            "state": latest.state,
            "canaryPercent": latest.canary_percent,
            "enforcedVersion": enforced.map(|v| v.version),
            "bundleRevision": revision.map(|r| revision_name(r.revision)),
            "severity": document.severity,
            "effect": document.effect,
            "description": document.description,
            "rule": document.when,
            "ruleText": document.when.to_string(),
            "versions": version_list,
            "transitions": transitions,
            "approvals": approvals,
            "approvalsRequired": if needs_approvals(document.severity) { self.approvals_required } else { 0 },
            // Decision ingest (POST /v1/audit/decisions) is later work; until
            // then recent decisions are on each sidecar's /v1/decisions.
            "recentDecisions": [],
        }))
    }

    /// Build, sign and store a new revision of `bundle_name` if what
    /// sidecars evaluate differs from the newest revision.
    async fn publish_if_changed(
        &self,
        tx: &mut store::Tx,
        bundle_name: &str,
        by: &str,
        reason: &str,
    ) -> Result<Option<i64>> {
        let bundle_row = store::bundle(tx, bundle_name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no bundle {bundle_name}")))?;
        let mut files = BundleFiles::new();
        for row in store::live_versions(tx, bundle_name).await? {
            files.insert(
                format!("policies/{}.json", row.policy_id),
                enforced_document(&row)?,
            );
        }
        let mut content = files.clone();
        content.insert(
            "defaultDecision".into(),
            bundle_row.default_decision.clone().into_bytes(),
        );
        let digest = bundle::digest(&content);
        let previous = store::latest_revision(tx, bundle_name).await?;
        if previous
            .as_ref()
            .is_some_and(|p| p.content_digest == digest)
        {
            return Ok(None);
        }
        let revision = previous.map_or(1, |p| p.revision + 1);
        let manifest = json!({
            "name": bundle_name,
            "revision": revision_name(revision),
            "defaultDecision": bundle_row.default_decision,
        });
        files.insert(
            "bundle.json".into(),
            serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        );
        Bundle::from_files(&files)
            .map_err(|e| RegistryError::Invalid(format!("the new revision would not load: {e}")))?;
        self.signer.sign_bundle(&mut files);
        let archive = bundle::pack(&files)
            .map_err(|e| RegistryError::Invalid(format!("cannot pack the bundle: {e}")))?;
        store::insert_revision(
            tx,
            &RevisionMeta {
                bundle: bundle_name.to_owned(),
                revision,
                content_digest: digest,
                published_by: by.to_owned(),
                reason: reason.to_owned(),
                at: now(),
            },
            &B64.encode(archive),
        )
        .await?;
        tracing::info!(bundle = bundle_name, revision = %revision_name(revision), by, reason, "central: published");
        Ok(Some(revision))
    }
}
