//! The ext_authz `Check` service: request → input view → decision →
//! Envoy response + decision event.
//!
//! The check path reads the active [`Engine`] through `arc-swap` (no lock a
//! bundle loader could hold), decides in memory, hands the decision event to
//! the audit queue with `try_send`, and returns. No I/O, no waiting.

pub mod message;
pub mod response;
pub mod server;
pub mod view;

use crate::audit::inputs::InputBuilder;
use crate::audit::Recorder;
use crate::bundle::Bundle;
use crate::decision::DecisionEvent;
use crate::ids;
use crate::metrics::{Metrics, PolicyCounters};
use crate::policy::{Outcome, Verdict};
use arc_swap::ArcSwapOption;
use bytes::{BufMut, Bytes};
use message::CheckMessage;
use response::DecisionIdText;
use std::any::Any;
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

impl Engine {
    /// Count one outcome's matches and failures per policy.
    fn count(&self, outcome: &Outcome) {
        let policies = &self.bundle.policies;
        for m in &outcome.matches {
            self.counters[m.policy].record_match(m.mode, policies.get(m.policy).state());
        }
        for &failed in &outcome.errors {
            self.counters[failed].record_error();
        }
    }
}

/// How the audit thread writes a check's input document from its request
/// (the message [`Authorizer::check_into`] decoded, or a forwarded event's
/// encoded bytes): the same view the policies read, as canonical JSON.
pub fn input_builder(settings: ViewSettings) -> InputBuilder {
    Arc::new(
        move |request: &(dyn Any + Send), at: SystemTime, masks, out: &mut Vec<u8>| {
            let decoded;
            let request = match request.downcast_ref::<CheckMessage>() {
                Some(request) => request,
                None => {
                    let raw = request.downcast_ref::<Bytes>()?;
                    decoded = CheckMessage::decode_from(raw.clone()).ok()?;
                    &decoded
                }
            };
            let now_unix = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            Some(RequestView::new(request, &settings, now_unix).write_document(masks, out))
        },
    )
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
    /// When records carry inputs, `request` moves on to the audit thread,
    /// which writes the input document from it (a move here, the
    /// serialising there; decoding it again there cost a tenth of that
    /// thread's time). Synchronous: everything it needs is in memory.
    pub fn check_into(&self, request: CheckMessage, out: &mut impl BufMut) {
        let started = Instant::now();
        let at = SystemTime::now();
        let id = ids::decision_id(at);
        let id_text = DecisionIdText::new(&id);
        let now_unix = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let view = RequestView::new(&request, &self.settings, now_unix);
        let request_id = view.request_id().to_owned();
        let guard = self.engine.load();
        let mut event = match guard.as_ref() {
            None => DecisionEvent::without_bundle(id, at, request_id, self.on_error),
            Some(engine) => {
                let outcome = engine.bundle.policies.decide(&view, self.on_error);
                engine.count(&outcome);
                DecisionEvent::decided(id, at, request_id, engine.bundle.clone(), outcome, &view)
            }
        };
        drop(guard);
        drop(view);
        if self.recorder.wants_request(&event.request_id) {
            event.request = Some(Box::new(request));
        }
        response::for_decision(&event, id_text.as_str()).encode(out);
        let elapsed = started.elapsed();
        self.metrics.check_latency.observe(elapsed.as_secs_f64());
        self.metrics.decision(event.verdict, event.reason).inc();
        event.latency_us = elapsed.as_micros() as u64;
        self.recorder.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::inputs::{InputRecording, Masks};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message;
    use std::time::Duration;

    fn encoded_request() -> Bytes {
        let http = HttpRequest {
            method: "GET".into(),
            path: "/v1/kernels/k1".into(),
            headers: [("x-user".to_owned(), "alice".to_owned())].into(),
            ..Default::default()
        };
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        Bytes::from(request.encode_to_vec())
    }

    /// The builder takes what the check path moves (the decoded message)
    /// or what a forwarded event carries (its bytes), alike; nothing else.
    #[test]
    fn inputs_are_written_from_the_decoded_request_or_its_bytes() {
        let build = input_builder(ViewSettings::default());
        let masks = Masks::with_defaults(&[]).expect("default masks");
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let raw = encoded_request();
        let decoded = CheckMessage::decode_from(raw.clone()).expect("decodes");
        let (mut from_message, mut from_bytes) = (Vec::new(), Vec::new());
        assert_eq!(
            build(&decoded, at, masks.root(), &mut from_message),
            Some(0)
        );
        assert_eq!(build(&raw, at, masks.root(), &mut from_bytes), Some(0));
        assert_eq!(from_message, from_bytes);
        let document: serde_json::Value = serde_json::from_slice(&from_message).expect("JSON");
        assert_eq!(document["request"]["headers"]["x-user"], "alice");
        assert!(build(&"neither", at, masks.root(), &mut Vec::new()).is_none());

        // Through the audit pipeline's own hand-off: the event's boxed
        // request reaches the builder as the message it is.
        let recording = InputRecording::new(100, masks, build);
        let mut event =
            DecisionEvent::without_bundle(ids::decision_id(at), at, "r1".into(), Verdict::Deny);
        event.request = Some(Box::new(decoded));
        let record = crate::audit::to_record("n", event, Some(&recording));
        let input = record.input.expect("the record carries its input");
        assert_eq!(input.to_value(), document);
    }
}
