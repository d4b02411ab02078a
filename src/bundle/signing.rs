//! Ed25519 bundle signatures (`.signatures.json`) and keys.
//!
//! `.signatures.json` holds the SHA-256 of every other bundle file and one
//! Ed25519 signature over the canonical JSON of that map
//! (`{"bundle.json":"<hex>",...}`, keys sorted, no whitespace). A verifier
//! with several trusted keys accepts a signature from any of them, so keys
//! rotate with an overlap window.
//!
//! Key files: `NAME.key` is the base64 PKCS#8 document (mode 0600),
//! `NAME.pub` the base64 raw 32-byte public key. `ring` does the crypto (it
//! is already in the tree through rustls).

use super::{BundleError, BundleFiles};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SIGNATURES_FILE: &str = ".signatures.json";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

fn key_err(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// A private key that signs bundles and activation manifests.
pub struct SigningKey {
    pub name: String,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_err(path, format!("cannot read: {e}")))?;
        let pkcs8 = B64.decode(text.trim()).map_err(|_| {
            key_err(
                path,
                "not a key written by `sentinelnet keygen` (base64 PKCS#8)",
            )
        })?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| key_err(path, "not an Ed25519 PKCS#8 private key"))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(SigningKey { name, pair })
    }

    /// Base64 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.pair.sign(message).as_ref())
    }
}

/// Write `NAME.key` (0600) and `NAME.pub` into `dir`.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    // A key name is a file stem and an approver name: an identifier, and
    // without ':' so the files copy to any file system.
    if !crate::policy::is_identifier(name) || name.contains(':') {
        return Err(key_err(
            Path::new(name),
            "key names use 1–128 letters, digits, '-', '_' and '.'",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| key_err(dir, format!("cannot create: {e}")))?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::Generate(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    if private.exists() {
        return Err(key_err(
            &private,
            "already exists; refusing to overwrite a key",
        ));
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private)
            .map_err(|e| key_err(&private, format!("cannot write: {e}")))?;
        writeln!(file, "{}", B64.encode(pkcs8.as_ref()))
            .map_err(|e| key_err(&private, format!("cannot write: {e}")))?;
    }
    std::fs::write(
        &public,
        format!("{}\n", B64.encode(pair.public_key().as_ref())),
    )
    .map_err(|e| key_err(&public, format!("cannot write: {e}")))?;
    Ok((private, public))
}

/// Public keys a verifier trusts, by name.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, Vec<u8>>,
}

impl TrustedKeys {
    /// Every `*.pub` in `dir`.
    pub fn load_dir(dir: &Path) -> Result<TrustedKeys, KeyError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| key_err(dir, format!("cannot list trusted keys: {e}")))?;
        let mut keys = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pub") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| key_err(&path, format!("cannot read: {e}")))?;
            let key = B64
                .decode(text.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    key_err(
                        &path,
                        "not an Ed25519 public key written by `sentinelnet keygen`",
                    )
                })?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            keys.insert(name, key);
        }
        if keys.is_empty() {
            return Err(key_err(dir, "no *.pub keys found"));
        }
        Ok(TrustedKeys { keys })
    }

    /// The name of the trusted key that made `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature_b64: &str, hint: &str) -> Option<&str> {
        let signature = B64.decode(signature_b64.trim()).ok()?;
        // Try the key the signer named first, then the others (rotation).
        let ordered = self
            .keys
            .iter()
            .filter(|(name, _)| name.as_str() == hint)
            .chain(self.keys.iter().filter(|(name, _)| name.as_str() != hint));
        for (name, key) in ordered {
            if UnparsedPublicKey::new(&ED25519, key)
                .verify(message, &signature)
                .is_ok()
            {
                return Some(name);
            }
        }
        None
    }

    /// Whether the key named `name` made `signature` over `message`;
    /// `None` when no key has that name.
    pub fn verify_by(&self, name: &str, message: &[u8], signature_b64: &str) -> Option<bool> {
        let key = self.keys.get(name)?;
        let Ok(signature) = B64.decode(signature_b64.trim()) else {
            return Some(false);
        };
        Some(
            UnparsedPublicKey::new(&ED25519, key)
                .verify(message, &signature)
                .is_ok(),
        )
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }
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
pub fn sign_bundle(files: &mut BundleFiles, key: &SigningKey) {
    let hashes = file_hashes(files);
    let signatures = Signatures {
        algorithm: "ed25519".into(),
        key_id: key.name.clone(),
        signature: key.sign(&signed_bytes(&hashes)),
        files: hashes,
    };
    let json = serde_json::to_vec_pretty(&signatures).unwrap_or_default();
    files.insert(SIGNATURES_FILE.into(), json);
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
        let key = SigningKey::load(&dir.path().join("new.key")).unwrap();
        let mut signed = files();
        sign_bundle(&mut signed, &key);

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
