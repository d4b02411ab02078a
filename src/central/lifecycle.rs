//! The policy lifecycle rules and the activation manifest, free of I/O.
//!
//! draft → simulating → canary → active moves forward (steps may be
//! skipped; HIGH/CRITICAL still need approvals to reach `active`); any state
//! may go back to `draft` or on to `deprecated`; `canary` → `canary` changes
//! the percentage. A state belongs to a policy *version*: a new version
//! starts as a draft while the previous one keeps being enforced, and takes
//! over (the older one becomes `deprecated`) when it leaves draft.

use crate::policy::{Severity, State};
use serde_json::json;
use sha2::{Digest, Sha256};

pub(crate) fn parse_state(text: &str) -> Option<State> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn rank(state: State) -> u8 {
    match state {
        State::Draft => 0,
        State::Simulating => 1,
        State::Canary => 2,
        State::Active => 3,
        State::Deprecated => 4,
    }
}

/// Whether sidecars evaluate a version in this state.
pub(crate) fn is_live(state: State) -> bool {
    matches!(state, State::Simulating | State::Canary | State::Active)
}

/// Why `from` → `to` is not allowed, if it is not.
pub(crate) fn check_transition(from: State, to: State) -> Result<(), String> {
    let refuse = |hint: &str| {
        Err(format!(
            "cannot move from {} to {}{hint}",
            from.as_str(),
            to.as_str()
        ))
    };
    match (from, to) {
        (State::Draft, State::Draft) => refuse(": already a draft"),
        (State::Deprecated, State::Deprecated) => refuse(": already deprecated"),
        (_, State::Draft) | (_, State::Deprecated) => Ok(()),
        (State::Deprecated, _) => refuse("; move it back to draft first"),
        (State::Canary, State::Canary) => Ok(()),
        _ if rank(to) > rank(from) => Ok(()),
        _ => refuse("; the lifecycle moves forward (or back to draft)"),
    }
}

/// Whether activating a policy of this severity needs approvals.
pub(crate) fn needs_approvals(severity: Severity) -> bool {
    matches!(severity, Severity::High | Severity::Critical)
}

/// The bytes approvers sign to let one version of a policy become active.
/// It names the exact document (by SHA-256), so a signature over one
/// version never approves another. Canonical JSON: sorted keys, no spaces.
pub(crate) fn activation_manifest(
    bundle: &str,
    policy_id: &str,
    version: i64,
    severity: Severity,
    document: &str,
) -> Vec<u8> {
    let manifest = json!({
        "action": "activate",
        "bundle": bundle,
        "documentSha256": hex::encode(Sha256::digest(document.as_bytes())),
        "policyId": policy_id,
        "severity": severity,
        "version": version,
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_moves_forward_back_to_draft_or_to_deprecated() {
        use State::*;
        let allowed = [
            (Draft, Simulating),
            (Draft, Active),
            (Simulating, Canary),
            (Canary, Canary),
            (Canary, Active),
            (Active, Draft),
            (Active, Deprecated),
            (Deprecated, Draft),
        ];
        for (from, to) in allowed {
            assert!(check_transition(from, to).is_ok(), "{from:?} → {to:?}");
        }
        let refused = [
            (Draft, Draft),
            (Active, Canary),
            (Canary, Simulating),
            (Active, Active),
            (Deprecated, Active),
            (Deprecated, Deprecated),
        ];
        for (from, to) in refused {
            let message = check_transition(from, to).expect_err("refused");
            assert!(message.contains(from.as_str()), "{message}");
        }
    }

    #[test]
    fn manifests_differ_per_version_and_document() {
        let a = activation_manifest("kernel", "p", 1, Severity::High, "{\"a\":1}");
        let b = activation_manifest("kernel", "p", 2, Severity::High, "{\"a\":1}");
        let c = activation_manifest("kernel", "p", 1, Severity::High, "{\"a\":2}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        let text = String::from_utf8(a).expect("utf8");
        assert!(text.starts_with("{\"action\":\"activate\",\"bundle\":\"kernel\""));
    }
}
