//! Activation manifests and multisig approvals of HIGH/CRITICAL versions.

use super::lifecycle::{activation_manifest, needs_approvals};
use super::store::{self, ApprovalRow, StoreError, VersionRow};
use super::{now, parse_body, state_of, stored_document, Registry, RegistryError, Result};
use crate::policy::{Severity, State};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ApprovalRequest {
    pub approver: String,
    pub signature: String,
    /// The version the approver means; refused if it is not the current one.
    #[serde(default)]
    pub version: Option<i64>,
}

impl Registry {
    /// Refuse (409) activating `latest` until it has enough approvals.
    pub(super) async fn check_approvals(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        latest: &VersionRow,
        severity: Severity,
    ) -> Result<()> {
        let approvals = store::approvals(tx, id).await?;
        let approvers: Vec<&str> = approvals
            .iter()
            .filter(|a| a.version == latest.version)
            .map(|a| a.approver.as_str())
            .collect();
        if approvers.len() >= self.approvals_required {
            return Ok(());
        }
        Err(RegistryError::Conflict(format!(
            "policy \"{id}\" v{} is {severity:?}: activation needs {} approvals of its manifest, has {} ({}); GET …/manifest, sign it, POST …/approvals",
            latest.version,
            self.approvals_required,
            approvers.len(),
            if approvers.is_empty() { "none".to_owned() } else { approvers.join(", ") },
        )))
    }

    /// The activation manifest of the policy's current version.
    pub(crate) async fn manifest(&self, bundle_name: &str, id: &str) -> Result<Vec<u8>> {
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

    pub(crate) async fn approve(
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
}
