//! Secret-bearing settings: read from files, never shown.
//!
//! Kubernetes mounts a Secret as files, and a secret in an environment
//! variable shows in `/proc/PID/environ` and in crash reports, so every
//! setting that may carry a credential (a URL with a password, above all
//! the store URL) can also be given as `NAME_FILE`, a path to a file
//! holding the value (SPEC §3). [`resolve_env_files`] runs once, first
//! thing in `main`, while the process has one thread, and turns each
//! `NAME_FILE` into `NAME` for the command line parser. Wherever such a URL
//! is shown (logs, `/v1/status`, errors) it goes through [`redact_url`].

use std::path::PathBuf;

/// Settings that may hold a credential, read from `NAME_FILE` when that is
/// set. Central's store URL has its own flag too (`--db-file`, env
/// `SENTINEL_CENTRAL_DB_FILE`), which clap reads.
pub(crate) const SECRET_ENV: &[&str] = &[
    // Sidecar: audit receiver or stream URL, bundle registry URL.
    "SENTINEL_AUDIT_URL",
    "SENTINEL_BUNDLE",
    // ctl: central's URL.
    "SENTINEL_CENTRAL_URL",
    // central: the decision stream (a NATS URL may carry user:password).
    "SENTINEL_CENTRAL_DECISION_STREAM",
    // Signing keys: a key file's path, or a `pkcs11:` URI that may carry
    // its token's PIN (`pin-value=`).
    "SENTINEL_CENTRAL_SIGNING_KEY",
    "SENTINEL_RECORD_SIGNING_KEY",
    "SENTINEL_SIGN_KEY",
    "SENTINEL_KEYGEN_PKCS11",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SecretFileError {
    #[error("{name}_FILE and {name} are both set; set one")]
    Both { name: &'static str },
    #[error("{name}_FILE {}: cannot read: {message}", path.display())]
    Unreadable {
        name: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{name}_FILE {}: the file is empty", path.display())]
    Empty { name: &'static str, path: PathBuf },
}

/// For each of `names` whose `NAME_FILE` is set, the value to set `NAME`
/// to: the file's contents without the trailing newline. `get` reads the
/// environment (a parameter so tests need not touch the real one).
pub(crate) fn env_file_values(
    names: &[&'static str],
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, SecretFileError> {
    let mut values = Vec::new();
    for &name in names {
        let Some(path) = get(&format!("{name}_FILE")).filter(|p| !p.is_empty()) else {
            continue;
        };
        if get(name).is_some_and(|v| !v.is_empty()) {
            return Err(SecretFileError::Both { name });
        }
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).map_err(|e| SecretFileError::Unreadable {
            name,
            path: path.clone(),
            message: e.to_string(),
        })?;
        let value = text.trim_end_matches(['\n', '\r']).to_owned();
        if value.trim().is_empty() {
            return Err(SecretFileError::Empty { name, path });
        }
        values.push((name, value));
    }
    Ok(values)
}

/// Set `NAME` from `NAME_FILE` for every [`SECRET_ENV`] setting. Call
/// before any thread starts: it writes the process environment.
pub(crate) fn resolve_env_files() -> Result<(), SecretFileError> {
    for (name, value) in env_file_values(SECRET_ENV, |n| std::env::var(n).ok())? {
        std::env::set_var(name, value);
    }
    Ok(())
}

/// `url` with the password of its userinfo replaced by `***`
/// (`postgres://app:s3cret@db/x` → `postgres://app:***@db/x`); anything
/// else unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    // The authority ends at the first '/', '?' or '#'; its userinfo at the
    // last '@' inside it.
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn passwords_are_redacted_and_nothing_else() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/central"),
            "postgres://app:***@db:5432/central"
        );
        assert_eq!(
            redact_url("nats://user:p%40ss@nats:4222"),
            "nats://user:***@nats:4222"
        );
        assert_eq!(
            redact_url("postgres://app@db:5432/central?sslmode=require"),
            "postgres://app@db:5432/central?sslmode=require"
        );
        // An '@' after the authority is not userinfo.
        assert_eq!(
            redact_url("https://central:8443/v1/bundles/a@b"),
            "https://central:8443/v1/bundles/a@b"
        );
        assert_eq!(redact_url("sqlite://./central.db"), "sqlite://./central.db");
        assert_eq!(redact_url("/srv/bundle"), "/srv/bundle");
    }

    #[test]
    fn name_file_gives_the_value_and_refuses_ambiguity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("url");
        std::fs::write(&file, "nats://u:p@h:4222\n").expect("write");
        let path = file.display().to_string();
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let set = env(&[("SENTINEL_AUDIT_URL_FILE", &path)]);
        assert_eq!(
            env_file_values(SECRET_ENV, |n| set.get(n).cloned()),
            Ok(vec![("SENTINEL_AUDIT_URL", "nats://u:p@h:4222".to_owned())])
        );
        let both = env(&[
            ("SENTINEL_AUDIT_URL_FILE", &path),
            ("SENTINEL_AUDIT_URL", "http://x"),
        ]);
        assert_eq!(
            env_file_values(SECRET_ENV, |n| both.get(n).cloned()),
            Err(SecretFileError::Both {
                name: "SENTINEL_AUDIT_URL"
            })
        );
        let missing = env(&[("SENTINEL_BUNDLE_FILE", "/nonexistent/url")]);
        let err = env_file_values(SECRET_ENV, |n| missing.get(n).cloned()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SENTINEL_BUNDLE_FILE /nonexistent/url: cannot read"),
            "{err}"
        );
        let empty_file = dir.path().join("empty");
        std::fs::write(&empty_file, "\n").expect("write");
        let empty = env(&[(
            "SENTINEL_CENTRAL_URL_FILE",
            &empty_file.display().to_string(),
        )]);
        assert!(matches!(
            env_file_values(SECRET_ENV, |n| empty.get(n).cloned()),
            Err(SecretFileError::Empty { .. })
        ));
        let none = env(&[]);
        assert_eq!(
            env_file_values(SECRET_ENV, |n| none.get(n).cloned()),
            Ok(vec![])
        );
    }
}
