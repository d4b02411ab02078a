//! A key in a file: `NAME.key` is the base64 PKCS#8 document (mode 0600),
//! `NAME.pub` the base64 raw 32-byte public key. `ring` does the crypto (it
//! is already in the tree through rustls).

use super::{check_key_name, claim_public_key, key_err, write_public_key, KeyError, Signer, B64};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::path::{Path, PathBuf};

/// A private key read from a `keygen` file.
pub struct FileKey {
    name: String,
    pair: Ed25519KeyPair,
}

impl FileKey {
    pub fn load(path: &Path) -> Result<FileKey, KeyError> {
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
        Ok(FileKey { name, pair })
    }

    /// The key's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }
}

impl Signer for FileKey {
    fn key_id(&self) -> &str {
        &self.name
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }
}

/// Write `NAME.key` (0600) and `NAME.pub` into `dir`.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    check_key_name(name)?;
    let private = dir.join(format!("{name}.key"));
    if private.exists() {
        return Err(key_err(
            &private,
            "already exists; refusing to overwrite a key",
        ));
    }
    let claimed = claim_public_key(dir, name)?;
    let written = write_private_key(&private).map(|pair| pair.public_key().as_ref().to_vec());
    let public = write_public_key(claimed, written)?;
    Ok((private, public))
}

/// Generate a pair and write its private half to `private` (0600).
fn write_private_key(private: &Path) -> Result<Ed25519KeyPair, KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::Generate(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private)
        .map_err(|e| key_err(private, format!("cannot write: {e}")))?;
    writeln!(file, "{}", B64.encode(pkcs8.as_ref()))
        .map_err(|e| key_err(private, format!("cannot write: {e}")))?;
    Ok(pair)
}
