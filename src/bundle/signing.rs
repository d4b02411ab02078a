//! Ed25519 bundle signatures (`.signatures.json`) and keys.
//!
//! `.signatures.json` holds the SHA-256 of every other bundle file and one
//! Ed25519 signature over the canonical JSON of that map
//! (`{"bundle.json":"<hex>",...}`, keys sorted, no whitespace). A verifier
//! with several trusted keys accepts a signature from any of them, so keys
//! rotate with an overlap window.
//!
//! Keys (files or PKCS#11 tokens) and the trusted public keys live in
//! [`crate::keys`].

use super::{BundleError, BundleFiles};
pub use crate::keys::{keygen, FileKey, KeyError, Signer, TrustedKeys};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const SIGNATURES_FILE: &str = ".signatures.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Signatures {
    pub algorithm: String,
    pub key_id: String,
    /// File → SHA-256 (hex) of its content.
    pub files: BTreeMap<String, String>,
    /// Base64 Ed25519 signature over the canonical JSON of `files`.
    pub signature: String,
}

fn file_hashes(files: &BundleFiles) -> BTreeMap<String, String> {
    files
        .iter()
        .filter(|(name, _)| name.as_str() != SIGNATURES_FILE)
        .map(|(name, bytes)| (name.clone(), hex::encode(Sha256::digest(bytes))))
        .collect()
}

fn signed_bytes(hashes: &BTreeMap<String, String>) -> Vec<u8> {
    // A BTreeMap of strings serialises canonically: sorted, no whitespace.
    serde_json::to_vec(hashes).unwrap_or_default()
}

/// Add `.signatures.json` to `files`, signed with `key`.
pub fn sign_bundle(files: &mut BundleFiles, key: &dyn Signer) -> Result<(), KeyError> {
    let hashes = file_hashes(files);
    let signatures = Signatures {
        algorithm: "ed25519".into(),
        key_id: key.key_id().to_owned(),
        signature: key.sign_base64(&signed_bytes(&hashes))?,
        files: hashes,
    };
    let json = serde_json::to_vec_pretty(&signatures).unwrap_or_default();
    files.insert(SIGNATURES_FILE.into(), json);
    Ok(())
}

/// Check that every file is covered, unmodified, and signed by a trusted
/// key; the signer's key name on success.
pub fn verify_bundle(files: &BundleFiles, trusted: &TrustedKeys) -> Result<String, BundleError> {
    let Some(raw) = files.get(SIGNATURES_FILE) else {
        return Err(BundleError::file(
            SIGNATURES_FILE,
            "missing: the bundle is unsigned and trusted keys are configured",
        ));
    };
    let signatures: Signatures = serde_json::from_slice(raw)
        .map_err(|e| BundleError::file(SIGNATURES_FILE, format!("invalid: {e}")))?;
    let Some(signer) = trusted.verify(
        &signed_bytes(&signatures.files),
        &signatures.signature,
        &signatures.key_id,
    ) else {
        return Err(BundleError::file(
            SIGNATURES_FILE,
            format!(
                "the signature (key \"{}\") does not verify with any trusted key ({})",
                signatures.key_id,
                trusted.names().join(", ")
            ),
        ));
    };
    let actual = file_hashes(files);
    for (name, hash) in &actual {
        match signatures.files.get(name) {
            None => {
                return Err(BundleError::file(
                    name.as_str(),
                    "not covered by the bundle signature",
                ))
            }
            Some(signed) if signed != hash => {
                return Err(BundleError::file(
                    name.as_str(),
                    "content does not match its signed SHA-256 (modified after signing)",
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = signatures
        .files
        .keys()
        .find(|name| !actual.contains_key(*name))
    {
        return Err(BundleError::file(
            missing.as_str(),
            "signed but missing from the bundle",
        ));
    }
    Ok(signer.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BundleFiles {
        let mut f = BundleFiles::new();
        f.insert(
            "bundle.json".into(),
            br#"{"name":"b","revision":"r1","defaultDecision":"deny"}"#.to_vec(),
        );
        f.insert("policies/a.json".into(), b"{}".to_vec());
        f
    }

    #[test]
    fn sign_verify_tamper_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "old").unwrap();
        keygen(dir.path(), "new").unwrap();
        let mode = std::fs::metadata(dir.path().join("new.key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let key = FileKey::load(&dir.path().join("new.key")).unwrap();
        let mut signed = files();
        sign_bundle(&mut signed, &key).unwrap();

        // Both keys trusted (rotation window): accepted, signer named.
        let both = TrustedKeys::load_dir(dir.path()).unwrap();
        assert_eq!(verify_bundle(&signed, &both).unwrap(), "new");

        // Only the old key trusted: refused.
        let only_old = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("old.pub"), only_old.path().join("old.pub")).unwrap();
        let old = TrustedKeys::load_dir(only_old.path()).unwrap();
        assert!(verify_bundle(&signed, &old)
            .unwrap_err()
            .message
            .contains("does not verify"));

        // A policy edited after signing is named.
        let mut tampered = signed.clone();
        tampered.insert("policies/a.json".into(), b"{\"x\":1}".to_vec());
        let e = verify_bundle(&tampered, &both).unwrap_err();
        assert_eq!(e.file, "policies/a.json");
        assert!(e.message.contains("modified after signing"));

        // An added file is not covered; an unsigned bundle is refused.
        let mut added = signed.clone();
        added.insert("policies/b.json".into(), b"{}".to_vec());
        assert_eq!(
            verify_bundle(&added, &both).unwrap_err().file,
            "policies/b.json"
        );
        assert_eq!(
            verify_bundle(&files(), &both).unwrap_err().file,
            SIGNATURES_FILE
        );
    }
}
