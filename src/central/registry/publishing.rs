//! Publishing: the newest revision, stored archives, and building, signing
//! and storing a new revision when what sidecars evaluate changed.

use super::store::{self, RevisionMeta, VersionRow};
use super::{now, revision_name, state_of, stored_document, Registry, RegistryError, Result, B64};
use crate::bundle::{self, Bundle, BundleFiles};
use crate::policy::{PolicyDocument, Verdict};
use base64::Engine;
use serde_json::json;

/// A live version as sidecars evaluate it: with its state and canary share.
fn live_document(row: &VersionRow) -> Result<PolicyDocument> {
    let mut document = stored_document(row)?;
    document.version = row.version as u64;
    document.state = state_of(row);
    document.canary_percent = row.canary_percent;
    Ok(document)
}

/// The file sidecars receive for a live version.
fn enforced_document(row: &VersionRow) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(&live_document(row)?)
        .map_err(|e| RegistryError::Invalid(format!("policy {}: {e}", row.policy_id)))
}

impl Registry {
    /// What sidecars of `bundle` evaluate (each live version with its state
    /// and canary share) and its default decision: the base a simulation
    /// adds candidate policies to.
    pub(crate) async fn live_documents(
        &self,
        bundle_name: &str,
    ) -> Result<(Vec<PolicyDocument>, Verdict)> {
        let mut conn = self.store.connection().await?;
        let bundle_row = store::bundle(&mut conn, bundle_name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no bundle {bundle_name}")))?;
        let default = match bundle_row.default_decision.as_str() {
            "allow" => Verdict::Allow,
            _ => Verdict::Deny,
        };
        let documents = store::live_versions(&mut conn, bundle_name)
            .await?
            .iter()
            .map(live_document)
            .collect::<Result<Vec<_>>>()?;
        Ok((documents, default))
    }

    /// The newest revision of a bundle.
    pub(crate) async fn current(&self, bundle: &str) -> Result<Option<RevisionMeta>> {
        let mut conn = self.store.connection().await?;
        Ok(store::latest_revision(&mut conn, bundle).await?)
    }

    /// The signed `.tar.gz` of one revision.
    pub(crate) async fn archive(&self, bundle: &str, revision: i64) -> Result<Vec<u8>> {
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

    /// Build, sign and store a new revision of `bundle_name` if what
    /// sidecars evaluate differs from the newest revision.
    pub(super) async fn publish_if_changed(
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
        // A token that stopped answering refuses the change; nothing is
        // published unsigned.
        bundle::signing::sign_bundle(&mut files, self.signer.as_ref())
            .map_err(RegistryError::Signing)?;
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
