//! Signing keys behind one interface: a key file written by `keygen`, or a
//! key that never leaves a PKCS#11 token (an HSM; SoftHSM2 in the tests).
//!
//! Everything that signs — central's bundle revisions, `bundle build
//! --sign-key`, `sign` and `ctl approve`, the sidecar's record checkpoints —
//! holds an `Arc<dyn Signer>` opened from a [`KeySource`], so a key file and
//! an HSM key are interchangeable on every flag, and a cloud KMS is one more
//! implementation of [`Signer`] (docs/keys.md).
//!
//! A source is opened once, at start: a missing file, a module that fails
//! to load, an unknown token, a wrong PIN or a missing object is one error
//! line then, never a failure on the first signature. Signing itself can
//! still fail later (a token removed); callers decide what that costs
//! (central refuses the change, the sidecar leaves that checkpoint unsigned
//! and counts it).
//!
//! Verification needs only public keys ([`TrustedKeys`]): `NAME.pub` files,
//! whose stem is the `keyId` signatures carry.

pub mod file;
pub mod pkcs11;
mod trusted;

pub use file::{keygen, FileKey};
pub use trusted::TrustedKeys;

use base64::Engine;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file (or directory of public keys) that cannot be used.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("cannot generate a key: {0}")]
    Generate(String),
    /// A PKCS#11 URI that does not parse, or a token, PIN or object that
    /// cannot be used; the message names which.
    #[error("{0}")]
    Pkcs11(String),
}

pub(crate) fn key_err(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Something that makes Ed25519 signatures with one named key.
pub trait Signer: Send + Sync {
    /// The key's name: the `keyId` of its signatures, the approver's name,
    /// the stem of its `.pub` file.
    fn key_id(&self) -> &str;

    /// The 64-byte Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// The signature, base64.
    fn sign_base64(&self, message: &[u8]) -> Result<String, KeyError> {
        self.sign(message).map(|s| B64.encode(s))
    }
}

/// Where a private key lives: what every `--…-key` flag accepts.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A key file from `sentinelnet keygen`.
    File(PathBuf),
    /// A key in a PKCS#11 token (RFC 7512 URI).
    Pkcs11(pkcs11::Pkcs11Uri),
}

impl KeySource {
    /// A flag's value: `pkcs11:…` is a token key, anything else a file.
    pub fn parse(text: &str) -> Result<KeySource, String> {
        if text.starts_with("pkcs11:") {
            pkcs11::Pkcs11Uri::parse(text)
                .map(KeySource::Pkcs11)
                .map_err(|e| e.to_string())
        } else if text.is_empty() {
            Err("empty: give a key file or a pkcs11: URI".into())
        } else {
            Ok(KeySource::File(PathBuf::from(text)))
        }
    }

    /// Open the key, checking everything that can be checked before the
    /// first real signature.
    pub fn open(&self) -> Result<Arc<dyn Signer>, KeyError> {
        Ok(match self {
            KeySource::File(path) => Arc::new(FileKey::load(path)?),
            KeySource::Pkcs11(uri) => Arc::new(pkcs11::TokenKey::open(uri)?),
        })
    }
}

impl std::fmt::Display for KeySource {
    /// The file, or the URI with any `pin-value` hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "{}", path.display()),
            KeySource::Pkcs11(uri) => write!(f, "{uri}"),
        }
    }
}

/// Create `DIR/NAME.pub` empty, refusing to replace one. Keygen claims the
/// file before it makes a key, so a directory that cannot take it leaves
/// no key behind (in a file or in a token).
pub(crate) fn claim_public_key(
    dir: &Path,
    name: &str,
) -> Result<(PathBuf, std::fs::File), KeyError> {
    std::fs::create_dir_all(dir).map_err(|e| key_err(dir, format!("cannot create: {e}")))?;
    let public = dir.join(format!("{name}.pub"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                key_err(&public, "already exists; refusing to overwrite a key")
            }
            _ => key_err(&public, format!("cannot write: {e}")),
        })?;
    Ok((public, file))
}

/// Fill a claimed `NAME.pub` with the raw 32-byte key (base64); on any
/// failure of `key`, or of the write, the claimed file is removed.
pub(crate) fn write_public_key(
    claimed: (PathBuf, std::fs::File),
    key: Result<Vec<u8>, KeyError>,
) -> Result<PathBuf, KeyError> {
    use std::io::Write;
    let (public, mut file) = claimed;
    let written = key.and_then(|key| {
        writeln!(file, "{}", B64.encode(key))
            .map_err(|e| key_err(&public, format!("cannot write: {e}")))
    });
    match written {
        Ok(()) => Ok(public),
        Err(e) => {
            let _ = std::fs::remove_file(&public);
            Err(e)
        }
    }
}

/// Key names are file stems, approver names and `keyId`s: identifiers,
/// without ':' so the files copy to any file system.
pub(crate) fn check_key_name(name: &str) -> Result<(), KeyError> {
    if !crate::policy::is_identifier(name) || name.contains(':') {
        return Err(key_err(
            Path::new(name),
            "key names use 1–128 letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}
