//! One description of a decision: what a policy set's [`Outcome`] means for
//! the client (the HTTP status), what it keeps as evidence, and the
//! [`DecisionEvent`] the audit thread turns into a record.
//!
//! The check path and `sentinelnet eval` both build their event here, so
//! the status eval prints is the status the sidecar answers, also when a
//! policy fails or no bundle is active. The Envoy response is then written
//! from the event (`authz::response`), never decided a second time.
//!
//! Cost on the check path: the request id is copied once (the record needs
//! it after the request buffer is gone) and the deciding policy's evidence
//! paths are resolved; nothing is serialised. A caller that still holds the
//! request where the record is made (the in-process module's records
//! thread) defers the evidence with [`DecisionEvent::decided_without_evidence`].

use crate::bundle::Bundle;
use crate::policy::input::Input;
use crate::policy::{Outcome, Reason, Verdict};
use serde_json::{Map, Value};
use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;
use uuid::Uuid;

/// Status of a decision that came from an internal error rather than a
/// policy (no bundle, a policy that could not be evaluated) when
/// `--on-error deny` applies: retryable, and distinct from a policy's 403.
pub const ERROR_STATUS: u16 = 503;
/// Status of a denial whose policy names none, and of a default deny.
pub const DENY_STATUS: u16 = 403;

/// What is known about one decision when it is taken.
pub struct DecisionEvent {
    pub id: Uuid,
    pub at: SystemTime,
    pub request_id: String,
    pub verdict: Verdict,
    /// The HTTP status the client sees (200 when allowed).
    pub status: u16,
    pub reason: Reason,
    /// The bundle that decided (absent when none was active).
    pub bundle: Option<Arc<Bundle>>,
    pub outcome: Option<Outcome>,
    /// The deciding policy's declared evidence paths and their values.
    pub evidence: Map<String, Value>,
    /// Filled in by the caller once the response is written.
    pub latency_us: u64,
    /// The decoded request, when records carry their input: moved here
    /// from the check path, the audit thread writes the input document
    /// from it. Opaque at this layer (the input builder knows its type).
    pub request: Option<Box<dyn Any + Send>>,
}

impl DecisionEvent {
    /// The decision `bundle` reached on `input` (`outcome` is
    /// `bundle.policies.decide(input, on_error)`), with its evidence.
    pub fn decided<I: Input>(
        id: Uuid,
        at: SystemTime,
        request_id: String,
        bundle: Arc<Bundle>,
        outcome: Outcome,
        input: &I,
    ) -> DecisionEvent {
        let mut event =
            DecisionEvent::decided_without_evidence(id, at, request_id, bundle, outcome);
        event.read_evidence(input);
        event
    }

    /// As [`DecisionEvent::decided`], leaving the evidence empty: for a
    /// caller that reads it later, off the hot path, with
    /// [`DecisionEvent::read_evidence`] (the in-process module's records
    /// thread), or that keeps no record at all.
    pub fn decided_without_evidence(
        id: Uuid,
        at: SystemTime,
        request_id: String,
        bundle: Arc<Bundle>,
        outcome: Outcome,
    ) -> DecisionEvent {
        let policies = &bundle.policies;
        let status = match (outcome.verdict, outcome.reason) {
            (Verdict::Allow, _) => 200,
            (Verdict::Deny, Reason::Error) => ERROR_STATUS,
            (Verdict::Deny, _) => outcome
                .deciding
                .and_then(|i| policies.get(i).document.response.status)
                .unwrap_or(DENY_STATUS),
        };
        DecisionEvent {
            id,
            at,
            request_id,
            verdict: outcome.verdict,
            status,
            reason: outcome.reason,
            evidence: Map::new(),
            outcome: Some(outcome),
            bundle: Some(bundle),
            latency_us: 0,
            request: None,
        }
    }

    /// Resolve the deciding policy's evidence paths on `input` (the input
    /// the decision was taken on).
    pub fn read_evidence<I: Input>(&mut self, input: &I) {
        if let (Some(bundle), Some(deciding)) =
            (&self.bundle, self.outcome.as_ref().and_then(|o| o.deciding))
        {
            self.evidence = bundle.policies.evidence(deciding, input);
        }
    }

    /// No bundle is active: `--on-error` decides.
    pub fn without_bundle(
        id: Uuid,
        at: SystemTime,
        request_id: String,
        on_error: Verdict,
    ) -> DecisionEvent {
        DecisionEvent {
            id,
            at,
            request_id,
            verdict: on_error,
            status: match on_error {
                Verdict::Allow => 200,
                Verdict::Deny => ERROR_STATUS,
            },
            reason: Reason::Error,
            bundle: None,
            outcome: None,
            evidence: Map::new(),
            latency_us: 0,
            request: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Bundle, BundleFiles};
    use serde_json::json;

    fn bundle(policies: &[Value]) -> Arc<Bundle> {
        let mut files = BundleFiles::new();
        files.insert(
            "bundle.json".into(),
            br#"{"name": "t", "revision": "r1", "defaultDecision": "allow"}"#.to_vec(),
        );
        for p in policies {
            files.insert(
                format!("policies/{}.json", p["id"].as_str().unwrap_or("x")),
                serde_json::to_vec(p).unwrap_or_default(),
            );
        }
        Arc::new(Bundle::from_files(&files).expect("bundle loads"))
    }

    /// A rule that exceeds the evaluator's step budget on any input when
    /// `x` is 3 (601 × 601 iterations over arrays built from the input, so
    /// nothing is folded at compile time), so its policy fails.
    fn runaway_rule() -> Value {
        let items: Vec<u32> = (0..600).collect();
        json!({"and": [{"==": [{"var": "x"}, 3]},
            {"some": [{"merge": [items, {"var": "nothing"}]}, {"some": [{"merge": [items, {"var": "nothing"}]}, {"==": [{"var": "nothing"}, "here"]}]}]}]})
    }

    fn decide(bundle: &Arc<Bundle>, input: &Value, on_error: Verdict) -> DecisionEvent {
        let outcome = bundle.policies.decide(input, on_error);
        DecisionEvent::decided(
            Uuid::nil(),
            SystemTime::now(),
            String::new(),
            bundle.clone(),
            outcome,
            input,
        )
    }

    #[test]
    fn status_follows_the_deciding_policy_the_default_and_errors() {
        let b = bundle(&[
            json!({"id": "teapot", "version": 1, "severity": "LOW", "state": "active",
                   "effect": "deny", "when": {"==": [{"var": "x"}, 1]},
                   "response": {"status": 418}, "evidence": ["x"]}),
            json!({"id": "plain", "version": 1, "severity": "LOW", "state": "active",
                   "effect": "deny", "when": {"==": [{"var": "x"}, 2]}}),
            json!({"id": "runaway", "version": 1, "severity": "LOW", "state": "active",
                   "effect": "deny", "when": runaway_rule()}),
        ]);
        let teapot = decide(&b, &json!({"x": 1}), Verdict::Deny);
        assert_eq!((teapot.verdict, teapot.status), (Verdict::Deny, 418));
        assert_eq!(teapot.evidence.get("x"), Some(&json!(1)));
        assert_eq!(decide(&b, &json!({"x": 2}), Verdict::Deny).status, 403);
        let failed = decide(&b, &json!({"x": 3}), Verdict::Deny);
        assert_eq!(
            (failed.verdict, failed.reason, failed.status),
            (Verdict::Deny, Reason::Error, ERROR_STATUS)
        );
        let failed_open = decide(&b, &json!({"x": 3}), Verdict::Allow);
        assert_eq!(
            (failed_open.verdict, failed_open.status),
            (Verdict::Allow, 200)
        );
        let b = bundle(&[json!({"id": "teapot", "version": 1, "severity": "LOW",
            "state": "active", "effect": "deny", "when": {"==": [{"var": "x"}, 1]}})]);
        let allowed = decide(&b, &json!({"x": 9}), Verdict::Deny);
        assert_eq!((allowed.reason, allowed.status), (Reason::Default, 200));
        let none = DecisionEvent::without_bundle(
            Uuid::nil(),
            SystemTime::now(),
            String::new(),
            Verdict::Deny,
        );
        assert_eq!((none.reason, none.status), (Reason::Error, ERROR_STATUS));
    }

    #[test]
    fn evidence_read_later_is_the_evidence_read_at_once() {
        let b = bundle(&[
            json!({"id": "teapot", "version": 1, "severity": "LOW", "state": "active",
                   "effect": "deny", "when": {"==": [{"var": "x"}, 1]},
                   "response": {"status": 418}, "evidence": ["x", "who", "absent"]}),
            json!({"id": "open", "version": 1, "severity": "LOW", "state": "active",
                   "effect": "allow", "when": {"==": [{"var": "x"}, 2]},
                   "evidence": ["who"]}),
        ]);
        for input in [
            json!({"x": 1, "who": "ann"}),
            json!({"x": 2, "who": "bob"}),
            json!({"x": 9}),
        ] {
            let at_once = decide(&b, &input, Verdict::Deny);
            let outcome = b.policies.decide(&input, Verdict::Deny);
            let mut later = DecisionEvent::decided_without_evidence(
                Uuid::nil(),
                SystemTime::now(),
                String::new(),
                b.clone(),
                outcome,
            );
            assert!(later.evidence.is_empty());
            assert_eq!(
                (later.verdict, later.status, later.reason),
                (at_once.verdict, at_once.status, at_once.reason)
            );
            later.read_evidence(&input);
            assert_eq!(later.evidence, at_once.evidence, "{input}");
        }
        let teapot = decide(&b, &json!({"x": 1, "who": "ann"}), Verdict::Deny);
        assert_eq!(
            Value::Object(teapot.evidence),
            json!({"x": 1, "who": "ann", "absent": null})
        );
    }
}
