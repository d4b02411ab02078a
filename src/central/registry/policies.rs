//! Bundles, policies and their versions: create, version, list, explain.

use super::lifecycle::{is_live, needs_approvals};
use super::store::{self, StoreError, VersionRow};
use super::{
    check_name, draft_document, now, parse_body, revision_name, state_of, stored_document,
    PolicyStatus, Registry, RegistryError, Result,
};
use crate::policy::{PolicyDocument, State, Verdict};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct BundleSettings {
    pub default_decision: Verdict,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Create `name` or set its default decision; whether it was created.
pub(super) async fn upsert_bundle(
    tx: &mut store::Tx,
    name: &str,
    default_decision: Verdict,
    by: &str,
) -> Result<bool> {
    let at = now();
    let default_decision = default_decision.as_str();
    if let Some(existing) = store::bundle(tx, name).await? {
        // Only a real change is recorded (a repeated push writes nothing).
        if existing.default_decision != default_decision {
            store::update_bundle(tx, name, default_decision, by, &at).await?;
        }
        return Ok(false);
    }
    store::insert_bundle(
        tx,
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
    Ok(true)
}

impl Registry {
    pub(crate) async fn put_bundle(&self, name: &str, body: &[u8], by: &str) -> Result<Value> {
        check_name("bundle", name)?;
        let settings: BundleSettings = parse_body(body)?;
        let default_decision = settings.default_decision.as_str();
        let (_write, mut tx) = self.begin_write(name).await?;
        let created = upsert_bundle(&mut tx, name, settings.default_decision, by).await?;
        let reason = settings.reason.unwrap_or_else(|| {
            if created {
                "bundle created".into()
            } else {
                format!("default decision {default_decision}")
            }
        });
        let published = self.publish_if_changed(&mut tx, name, by, &reason).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.announce(published);
        Ok(json!({
            "name": name,
            "defaultDecision": default_decision,
            "publishedRevision": published.map(revision_name),
        }))
    }

    pub(crate) async fn create_policy(
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

    pub(super) async fn insert_draft(
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

    pub(super) async fn policy_in(
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

    pub(super) async fn latest(
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
    pub(crate) async fn add_version(
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

    /// Every bundle with its default decision and newest revision.
    pub(crate) async fn bundles(&self) -> Result<Value> {
        let mut conn = self.store.connection().await?;
        let mut out = Vec::new();
        for row in store::bundles(&mut conn).await? {
            let revision = store::latest_revision(&mut conn, &row.name).await?;
            out.push(json!({
                "name": row.name,
                "defaultDecision": row.default_decision,
                "revision": revision.map(|r| revision_name(r.revision)),
                "updatedBy": row.updated_by,
                "updatedAt": row.updated_at,
            }));
        }
        Ok(json!({ "bundles": out }))
    }

    pub(crate) async fn list(&self, bundle_name: &str) -> Result<Value> {
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
    pub(crate) async fn explain(&self, id: &str) -> Result<Value> {
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
            "rule": document.when.to_value(),
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
}
