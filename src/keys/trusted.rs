//! Public keys a verifier trusts: every `NAME.pub` in a directory, by name.
//! Bundle signatures, approvals and record checkpoints are all checked
//! against a set of these.

use super::{key_err, KeyError, B64};
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};
use std::collections::BTreeMap;
use std::path::Path;

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
