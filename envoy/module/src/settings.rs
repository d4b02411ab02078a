//! The filter's `filter_config` (JSON), read once when Envoy loads the
//! filter configuration:
//! `{"bundle": DIR_OR_TAR_GZ, "trustedKeys"?: DIR, "records"?: "unix:/path.sock",
//!   "onError"?: "deny" | "allow", "principalFrom"?: SOURCE, "rolesFrom"?: SOURCE,
//!   "withBody"?: "auto" | "always" | "never"}`
//! (SOURCE as `serve --principal-from`).

use sentinelnet::authz::{IdentitySource, ViewSettings};
use sentinelnet::policy::Verdict;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    bundle: String,
    #[serde(default)]
    trusted_keys: Option<PathBuf>,
    #[serde(default)]
    records: Option<String>,
    #[serde(default)]
    on_error: Option<String>,
    #[serde(default)]
    principal_from: Option<String>,
    #[serde(default)]
    roles_from: Option<String>,
    #[serde(default)]
    with_body: Option<String>,
}

/// When the filter waits for the request body before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// When the active bundle reads `request.body` (as the sidecar gets it
    /// from ext_authz's `with_request_body`).
    Auto,
    Always,
    Never,
}

#[derive(Debug)]
pub struct Settings {
    pub bundle: PathBuf,
    pub trusted_keys: Option<PathBuf>,
    /// The sidecar's `--record-socket`.
    pub records: Option<PathBuf>,
    pub on_error: Verdict,
    pub view: ViewSettings,
    pub with_body: BodyMode,
}

impl Settings {
    /// One line naming what is wrong.
    pub fn parse(config: &[u8]) -> Result<Settings, String> {
        let raw: Raw = serde_json::from_slice(config)
            .map_err(|e| format!("filter_config is not valid: {e}"))?;
        let records = match raw.records.as_deref() {
            None => None,
            Some(spec) => match spec.strip_prefix("unix:") {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => {
                    return Err(format!(
                        "filter_config records {spec:?}: give the sidecar's --record-socket as unix:/path.sock"
                    ))
                }
            },
        };
        let on_error = match raw.on_error.as_deref() {
            None | Some("deny") => Verdict::Deny,
            Some("allow") => Verdict::Allow,
            Some(other) => {
                return Err(format!(
                    "filter_config onError {other:?}: use \"deny\" or \"allow\""
                ))
            }
        };
        let source = |name: &str, value: Option<&str>, default: IdentitySource| match value {
            None => Ok(default),
            Some(text) => text
                .parse::<IdentitySource>()
                .map_err(|e| format!("filter_config {name}: {e}")),
        };
        let with_body = match raw.with_body.as_deref() {
            None | Some("auto") => BodyMode::Auto,
            Some("always") => BodyMode::Always,
            Some("never") => BodyMode::Never,
            Some(other) => {
                return Err(format!(
                    "filter_config withBody {other:?}: use \"auto\", \"always\" or \"never\""
                ))
            }
        };
        if raw.bundle.is_empty() {
            return Err("filter_config bundle is empty: give a bundle directory or .tar.gz".into());
        }
        Ok(Settings {
            bundle: PathBuf::from(raw.bundle),
            trusted_keys: raw.trusted_keys,
            records,
            on_error,
            view: ViewSettings {
                principal_from: source(
                    "principalFrom",
                    raw.principal_from.as_deref(),
                    IdentitySource::Peer,
                )?,
                roles_from: source("rolesFrom", raw.roles_from.as_deref(), IdentitySource::None)?,
            },
            with_body,
        })
    }
}
