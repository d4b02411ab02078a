//! The ext_authz `Check` service: request → input view → decision →
//! Envoy response + decision event.
//!
//! The check path reads the active [`Engine`] through `arc-swap` (no lock a
//! bundle loader could hold), decides in memory, hands the decision event to
//! the audit queue with `try_send`, and returns. No I/O, no waiting.

pub mod message;
mod response;
pub mod server;
pub mod view;

use crate::admin::metrics::{Metrics, PolicyCounters};
use crate::audit::{ids, DecisionEvent, Recorder};
use crate::bundle::Bundle;
use crate::policy::{Reason, Verdict};
use arc_swap::ArcSwapOption;
use bytes::BufMut;
use message::CheckMessage;
use response::DecisionIdText;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use view::RequestView;
pub use view::{IdentitySource, ViewSettings};

/// A bundle ready to decide: the compiled bundle plus what the check path
/// needs alongside it. Replaced whole on every activation.
pub struct Engine {
    pub bundle: Arc<Bundle>,
    pub counters: Vec<PolicyCounters>,
    pub source: String,
    pub activated_at: SystemTime,
}

/// The slot the check path reads and the bundle loader swaps.
pub type EngineSlot = Arc<ArcSwapOption<Engine>>;

/// Answers `Check`.
pub struct Authorizer {
    engine: EngineSlot,
    settings: ViewSettings,
    on_error: Verdict,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

/// The decision, with what the response and the record need.
struct Decided {
    verdict: Verdict,
    reason: Reason,
    status: u16,
}

impl Authorizer {
    pub fn new(
        engine: EngineSlot,
        settings: ViewSettings,
        on_error: Verdict,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Authorizer {
        Authorizer {
            engine,
            settings,
            on_error,
            recorder,
            metrics,
        }
    }

    /// Whether a bundle is active (what gRPC health reports as SERVING).
    pub fn has_bundle(&self) -> bool {
        self.engine.load().is_some()
    }

    /// Decide one request and append the encoded `CheckResponse` to `out`.
    /// Synchronous: everything it needs is in memory.
    pub fn check_into(&self, request: &CheckMessage, out: &mut impl BufMut) {
        let started = Instant::now();
        let at = SystemTime::now();
        let decision_id = ids::decision_id(at);
        let id_text = DecisionIdText::new(&decision_id);
        let now_unix = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let view = RequestView::new(request, &self.settings, now_unix);
        let guard = self.engine.load();

        let Some(engine) = guard.as_ref() else {
            let answer = response::unavailable(
                self.on_error,
                id_text.as_str(),
                "no policy bundle is active",
            );
            answer.encode(out);
            let decided = Decided {
                verdict: self.on_error,
                reason: Reason::Error,
                status: answer.http_status(),
            };
            self.finish(
                started,
                at,
                decision_id,
                &view,
                &decided,
                None,
                None,
                Default::default(),
            );
            return;
        };

        let policies = &engine.bundle.policies;
        let outcome = policies.decide(&view, self.on_error);
        for m in &outcome.matches {
            engine.counters[m.policy].record_match(m.mode, policies.get(m.policy).state());
        }
        for &failed in &outcome.errors {
            engine.counters[failed].record_error();
        }
        let id = id_text.as_str();
        let revision: &str = &engine.bundle.revision;
        let deciding = outcome.deciding.map(|i| policies.get(i));
        let answer = match (outcome.verdict, outcome.reason) {
            (verdict, Reason::Error) => {
                response::unavailable(verdict, id, "a policy could not be evaluated")
            }
            (Verdict::Deny, _) => response::deny(deciding, id, revision),
            (Verdict::Allow, _) => {
                response::allow(outcome.enforced_allows(policies), deciding, id, revision)
            }
        };
        answer.encode(out);
        let status = answer.http_status();
        drop(answer);
        let evidence = outcome
            .deciding
            .map(|i| policies.evidence(i, &view))
            .unwrap_or_default();
        let decided = Decided {
            verdict: outcome.verdict,
            reason: outcome.reason,
            status,
        };
        self.finish(
            started,
            at,
            decision_id,
            &view,
            &decided,
            Some(engine.bundle.clone()),
            Some(outcome),
            evidence,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        started: Instant,
        at: SystemTime,
        id: uuid::Uuid,
        view: &RequestView<'_>,
        decided: &Decided,
        bundle: Option<Arc<Bundle>>,
        outcome: Option<crate::policy::Outcome>,
        evidence: serde_json::Map<String, serde_json::Value>,
    ) {
        let elapsed = started.elapsed();
        self.metrics.check_latency.observe(elapsed.as_secs_f64());
        self.metrics.decision(decided.verdict, decided.reason).inc();
        self.recorder.record(DecisionEvent {
            id,
            at,
            request_id: view.request_id().to_owned(),
            verdict: decided.verdict,
            status: decided.status,
            reason: decided.reason,
            bundle,
            outcome,
            evidence,
            latency_us: elapsed.as_micros() as u64,
        });
    }
}
