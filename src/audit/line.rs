//! A decision's record written as its NDJSON line straight from the event,
//! on the audit thread.
//!
//! A record is canonical JSON (keys in byte order, compact) hashed into the
//! node's chain. Building a [`DecisionRecord`](super::record::DecisionRecord)
//! first cost ~15 allocations (ids, rationale, evidence refs, shadow
//! entries, timestamp) that were serialised once and freed later, cold,
//! when the decision log let the record go. Here the line is written in key
//! order from the event and from text prepared once per policy (its quoted
//! id, rationale, evidence ref and shadow entry): per record, one buffer,
//! which the decision log then keeps as it is.
//!
//! [`super::to_record`] followed by [`Chain::link`] stays the reference: a
//! test holds the two to the same bytes for every kind of decision.
//!
//! Cost: a policy's text is prepared on its first record under a bundle,
//! so a swap to a 10,000-policy bundle costs nothing up front; a few
//! hundred bytes per policy that decided or shadowed something.

use super::inputs::InputRecording;
use super::json;
use super::record::{Chain, LINE_WITHOUT_INPUT, RECORD_TYPE};
use crate::bundle::Bundle;
use crate::decision::DecisionEvent;
use crate::policy::{Mode, Policy, Reason, Verdict};
use crate::timestamp::write_timestamp;
use std::sync::{Arc, Weak};

/// Writes decision lines for one node's chain.
pub struct LineWriter {
    /// The node, as a JSON string.
    node: String,
    /// Text of the bundle the last event was decided by.
    bundle: Option<BundleText>,
}

/// The chain fields a record is written with.
#[derive(Debug, Clone, Copy)]
pub struct Links<'c> {
    pub chain_id: &'c str,
    pub prev_hash: &'c str,
    pub seq: u64,
}

impl Links<'_> {
    /// Not linked yet: empty ids, seq 0 (as an unlinked record serialises).
    pub const NONE: Links<'static> = Links {
        chain_id: "",
        prev_hash: "",
        seq: 0,
    };
}

/// A bundle's text, and its policies' as they are needed.
struct BundleText {
    /// Which bundle, without keeping it: after a swap the old bundle is
    /// freed with its last event, not held by an idle writer until the
    /// next record. (A weak reference keeps the allocation's address
    /// taken, so a new bundle can never be mistaken for it.)
    bundle: Weak<Bundle>,
    name: String,
    revision: String,
    /// `"bundle:NAME@REVISION"`.
    reference: String,
    /// By policy index; filled on a policy's first record.
    policies: Vec<Option<PolicyText>>,
}

/// One policy's parts of a record, as JSON text.
struct PolicyText {
    id: String,
    version: u64,
    /// The rationale when it decided by matching.
    matched: String,
    /// `"policy:ID@VERSION"`.
    reference: String,
    /// Its entry in `shadow` when it matched without enforcing.
    shadow: String,
}

impl PolicyText {
    fn new(policy: &Policy) -> PolicyText {
        let id = &*policy.id;
        let version = policy.version();
        let rationale = if policy.document.description.is_empty() {
            format!("{id} matched")
        } else {
            format!("{id} matched: {}", policy.document.description)
        };
        let mut shadow = Vec::with_capacity(128);
        shadow.extend_from_slice(b"{\"mode\":");
        json::string(&mut shadow, policy.state().as_str());
        shadow.extend_from_slice(b",\"policyId\":");
        json::string(&mut shadow, id);
        shadow.extend_from_slice(b",\"policyVersion\":");
        json::number(&mut shadow, version);
        shadow.extend_from_slice(b",\"wouldDecide\":");
        json::string(&mut shadow, policy.effect().as_str());
        shadow.push(b'}');
        PolicyText {
            id: json::quoted(id),
            version,
            matched: json::quoted(&rationale),
            reference: json::quoted(&format!("policy:{id}@{version}")),
            // Written from strings only: valid UTF-8.
            shadow: String::from_utf8(shadow).unwrap_or_default(),
        }
    }
}

impl BundleText {
    fn new(bundle: &Arc<Bundle>) -> BundleText {
        BundleText {
            bundle: Arc::downgrade(bundle),
            name: json::quoted(&bundle.name),
            revision: json::quoted(&bundle.revision),
            reference: json::quoted(&format!("bundle:{}@{}", bundle.name, bundle.revision)),
            policies: Vec::new(),
        }
    }

    /// Prepare the text of policy `index` of `bundle` (this text's bundle,
    /// as the event holds it) if it is not yet.
    fn prepare(&mut self, bundle: &Bundle, index: usize) {
        if self.policies.len() <= index {
            self.policies.resize_with(index + 1, || None);
        }
        if self.policies[index].is_none() {
            self.policies[index] = Some(PolicyText::new(bundle.policies.get(index)));
        }
    }

    fn policy(&self, index: usize) -> Option<&PolicyText> {
        self.policies.get(index).and_then(Option::as_ref)
    }
}

/// The policies a decision's record names, by index in its bundle: the
/// deciding one, and those that matched without enforcing (its `shadow`);
/// none without a bundle.
fn named_policies(
    event: &DecisionEvent,
) -> (Option<usize>, impl Iterator<Item = usize> + Clone + '_) {
    let outcome = event.outcome.as_ref().filter(|_| event.bundle.is_some());
    let shadowed = outcome
        .into_iter()
        .flat_map(|o| o.matches.iter())
        .filter(|m| m.mode != Mode::Enforce)
        .map(|m| m.policy);
    (outcome.and_then(|o| o.deciding), shadowed)
}

/// The policies a decision involves, as the decision log files it: the
/// deciding one, then those that matched without enforcing.
pub(super) fn involved(event: &DecisionEvent) -> impl Iterator<Item = &str> + Clone {
    let set = event.bundle.as_deref().map(|b| &b.policies);
    let (deciding, shadowed) = named_policies(event);
    deciding
        .into_iter()
        .chain(shadowed)
        .filter_map(move |i| set.map(|set| &*set.get(i).id))
}

impl LineWriter {
    pub fn new(node: &str) -> LineWriter {
        LineWriter {
            node: json::quoted(node),
            bundle: None,
        }
    }

    /// The record of `event` as its line, linked into `chain` (what
    /// [`super::to_record`] and [`Chain::link`] write, byte for byte).
    pub(super) fn write(
        &mut self,
        event: &DecisionEvent,
        chain: &mut Chain,
        inputs: Option<&InputRecording>,
    ) -> Vec<u8> {
        let room = LINE_WITHOUT_INPUT + inputs.map_or(0, InputRecording::size_hint);
        let mut line = Vec::with_capacity(room);
        let links = Links {
            chain_id: &chain.chain_id,
            prev_hash: &chain.last_hash,
            seq: chain.next_seq,
        };
        self.write_unlinked(event, links, inputs, &mut line);
        chain.finish_line(&mut line);
        line
    }

    /// Append the record of `event` without `hash`, with the given chain
    /// fields: the JSON serde writes for [`super::to_record`]'s record
    /// with them set. The in-process module sends records this way, with
    /// the fields empty ([`Links::NONE`]); the sidecar that receives them
    /// links them into its chain.
    pub fn write_unlinked(
        &mut self,
        event: &DecisionEvent,
        links: Links<'_>,
        inputs: Option<&InputRecording>,
        line: &mut Vec<u8>,
    ) {
        let bundle = match &event.bundle {
            Some(b) => {
                if !self
                    .bundle
                    .as_ref()
                    .is_some_and(|t| std::ptr::eq(t.bundle.as_ptr(), Arc::as_ptr(b)))
                {
                    self.bundle = Some(BundleText::new(b));
                }
                self.bundle.as_mut().map(|text| (text, &**b))
            }
            None => None,
        };
        let (deciding, shadowed) = named_policies(event);
        let text = bundle.map(|(text, bundle)| {
            deciding
                .into_iter()
                .chain(shadowed.clone())
                .for_each(|i| text.prepare(bundle, i));
            &*text
        });
        let deciding = deciding.and_then(|i| text.and_then(|t| t.policy(i)));

        line.extend_from_slice(b"{\"bundle\":");
        put_text(line, text.map(|t| t.name.as_str()));
        line.extend_from_slice(b",\"bundleRevision\":");
        put_text(line, text.map(|t| t.revision.as_str()));
        line.extend_from_slice(b",\"chainId\":");
        json::string(line, links.chain_id);
        line.extend_from_slice(b",\"decision\":");
        json::string(line, event.verdict.as_str());
        line.extend_from_slice(b",\"evidence\":");
        // Serialising plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *line, &event.evidence);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = event.id.hyphenated().encode_lower(&mut id);
        line.extend_from_slice(b",\"evidenceRefs\":[\"decision:");
        line.extend_from_slice(id.as_bytes());
        line.push(b'"');
        if let Some(t) = text {
            line.push(b',');
            line.extend_from_slice(t.reference.as_bytes());
        }
        if let Some(p) = deciding {
            line.push(b',');
            line.extend_from_slice(p.reference.as_bytes());
        }
        line.extend_from_slice(b"],\"id\":\"");
        line.extend_from_slice(id.as_bytes());
        line.push(b'"');
        let hits = match (inputs, &event.request) {
            (Some(inputs), Some(request)) => inputs
                .write_field(&event.request_id, request.as_ref(), event.at, line)
                .map(|hits| (inputs, hits)),
            _ => None,
        };
        line.extend_from_slice(b",\"latencyUs\":");
        json::number(line, event.latency_us);
        if let Some((inputs, hits)) = hits {
            inputs.masks.write_named(hits, line);
        }
        line.extend_from_slice(b",\"node\":");
        line.extend_from_slice(self.node.as_bytes());
        line.extend_from_slice(b",\"policyId\":");
        match deciding {
            Some(p) => {
                line.extend_from_slice(p.id.as_bytes());
                line.extend_from_slice(b",\"policyVersion\":");
                json::number(line, p.version);
            }
            None => line.extend_from_slice(b"null,\"policyVersion\":null"),
        }
        line.extend_from_slice(b",\"prevHash\":");
        json::string(line, links.prev_hash);
        line.extend_from_slice(b",\"rationale\":");
        write_rationale(line, event, deciding);
        line.extend_from_slice(b",\"reason\":");
        json::string(line, event.reason.as_str());
        line.extend_from_slice(b",\"requestId\":");
        json::string(line, &event.request_id);
        line.extend_from_slice(b",\"seq\":");
        json::number(line, links.seq);
        line.extend_from_slice(b",\"shadow\":[");
        if let Some(t) = text {
            for (n, i) in shadowed.enumerate() {
                if n > 0 {
                    line.push(b',');
                }
                if let Some(p) = t.policy(i) {
                    line.extend_from_slice(p.shadow.as_bytes());
                }
            }
        }
        line.extend_from_slice(b"],\"status\":");
        json::number(line, u64::from(event.status));
        line.extend_from_slice(b",\"ts\":\"");
        write_timestamp(event.at, line);
        line.extend_from_slice(b"\",\"type\":");
        json::string(line, RECORD_TYPE);
        line.push(b'}');
    }
}

/// Prepared JSON text, or `""` when there is none.
fn put_text(line: &mut Vec<u8>, text: Option<&str>) {
    line.extend_from_slice(text.unwrap_or("\"\"").as_bytes());
}

fn write_rationale(line: &mut Vec<u8>, event: &DecisionEvent, deciding: Option<&PolicyText>) {
    let verdict = event.verdict.as_str();
    match (event.reason, deciding) {
        (Reason::Policy, Some(p)) => line.extend_from_slice(p.matched.as_bytes()),
        // Rare: a policy failed, or no bundle is active.
        (Reason::Error, Some(p)) => {
            // Escaped pieces concatenate into the escaped whole: JSON
            // escapes character by character.
            line.extend_from_slice(&p.id.as_bytes()[..p.id.len() - 1]);
            line.extend_from_slice(b" could not be evaluated; the on-error decision (");
            line.extend_from_slice(verdict.as_bytes());
            line.extend_from_slice(b") applied\"");
        }
        (Reason::Error, None) => json::string(
            line,
            &format!("no policy bundle is active; the on-error decision ({verdict}) applied"),
        ),
        _ => json::string(
            line,
            match event.verdict {
                Verdict::Allow => "no enforced policy matched; the bundle default (allow) applied",
                Verdict::Deny => "no enforced policy matched; the bundle default (deny) applied",
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::inputs::Masks;
    use crate::bundle::BundleFiles;
    use serde_json::{json, Value};
    use std::time::{Duration, SystemTime};
    use uuid::Uuid;

    fn bundle(revision: &str, policies: &[Value]) -> Arc<Bundle> {
        let mut files = BundleFiles::new();
        files.insert(
            "bundle.json".into(),
            serde_json::to_vec(
                &json!({"name": "kernel \"edge\"", "revision": revision, "defaultDecision": "allow"}),
            )
            .unwrap_or_default(),
        );
        for p in policies {
            files.insert(
                format!("policies/{}.json", p["id"].as_str().unwrap_or("x")),
                serde_json::to_vec(p).unwrap_or_default(),
            );
        }
        Arc::new(Bundle::from_files(&files).expect("bundle loads"))
    }

    fn policy(id: &str, state: &str, effect: &str, x: i64, description: &str) -> Value {
        json!({"id": id, "version": 3, "severity": "LOW", "state": state, "effect": effect,
               "description": description, "when": {"==": [{"var": "x"}, x]},
               "evidence": ["x", "who"]})
    }

    /// A rule that fails on any input with `x` = 4 (the evaluator's step
    /// budget), so its policy decides by `onError`.
    fn failing(id: &str) -> Value {
        let items: Vec<u32> = (0..600).collect();
        json!({"id": id, "version": 1, "severity": "LOW", "state": "active", "effect": "deny",
               "when": {"and": [{"==": [{"var": "x"}, 4]},
                 {"some": [{"merge": [items, {"var": "nothing"}]}, {"some": [{"merge": [items, {"var": "nothing"}]},
                   {"==": [{"var": "nothing"}, "here"]}]}]}]}})
    }

    /// Inputs that name a fixed document and say the first mask removed
    /// something, as the real builder does for a request with credentials.
    fn recording() -> InputRecording {
        InputRecording::new(
            100,
            Masks::with_defaults(&["request.body.card".into()]).expect("masks"),
            Arc::new(|request, _, _, out| {
                let doc = json!({"request": {"headers": {"x-user": "ann \"q\""}, "method": "GET"}});
                out.extend_from_slice(doc.to_string().as_bytes());
                // A request that does not decode writes no input.
                request.downcast_ref::<&str>().is_none().then_some(0b101)
            }),
        )
    }

    /// One decision to write: the bundle (if any), the input it was
    /// decided on, its request id, `onError`, and the request the event
    /// carries for its input (`None`: none; "undecodable": one the input
    /// builder cannot read).
    struct Case<'b> {
        bundle: Option<&'b Arc<Bundle>>,
        input: Value,
        request_id: &'static str,
        on_error: Verdict,
        request: Option<&'static str>,
    }

    impl Case<'_> {
        fn event(&self, n: usize, at: SystemTime) -> DecisionEvent {
            let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n as u128);
            let request_id = self.request_id.to_owned();
            let mut event = match self.bundle {
                Some(b) => {
                    let outcome = b.policies.decide(&self.input, self.on_error);
                    DecisionEvent::decided(id, at, request_id, b.clone(), outcome, &self.input)
                }
                None => DecisionEvent::without_bundle(id, at, request_id, self.on_error),
            };
            event.latency_us = 17 + n as u64;
            event.request = self.request.map(|r| -> Box<dyn std::any::Any + Send> {
                match r {
                    "undecodable" => Box::new("undecodable"),
                    _ => Box::new(()),
                }
            });
            event
        }
    }

    #[test]
    fn lines_are_the_bytes_of_the_reference_record() {
        let first = bundle(
            "r1",
            &[
                policy("deny-one", "active", "deny", 1, "no \"ones\"\there"),
                policy("allow-two", "active", "allow", 2, ""),
                policy("shadow-deny", "simulating", "deny", 2, "watch"),
                policy("shadow-allow", "simulating", "allow", 1, ""),
                json!({"id": "canary-none", "version": 2, "severity": "LOW", "state": "canary",
                       "effect": "deny", "canaryPercent": 0, "when": {"==": [{"var": "x"}, 2]}}),
                failing("runaway"),
            ],
        );
        let second = bundle("r2", &[policy("deny-one", "active", "deny", 1, "v2")]);
        let inputs = recording();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_391_999_123_456);
        let case = |bundle, input, request_id, on_error, request| Case {
            bundle,
            input,
            request_id,
            on_error,
            request,
        };
        // Every kind of decision: by a policy (deny, allow), by the default,
        // by a failed policy, with no bundle; with and without shadowing,
        // evidence, input and masks; request ids that need escaping; and a
        // swap to another bundle between records.
        let (deny, allow, plain) = (Verdict::Deny, Verdict::Allow, Some("plain"));
        let cases = [
            case(
                Some(&first),
                json!({"x": 1, "who": "ann"}),
                "req-1",
                deny,
                plain,
            ),
            case(
                Some(&first),
                json!({"x": 2, "who": "bob"}),
                "req \"2\"\n",
                deny,
                plain,
            ),
            case(Some(&first), json!({"x": 9}), "req-3", deny, None),
            case(Some(&first), json!({"x": 4}), "req-4", deny, plain),
            case(
                Some(&first),
                json!({"x": 4}),
                "req-5",
                allow,
                Some("undecodable"),
            ),
            case(None, json!({}), "req-6", deny, plain),
            case(None, json!({}), "req-7", allow, None),
            case(Some(&second), json!({"x": 1}), "req-8", deny, plain),
            case(Some(&first), json!({"x": 2}), "req-9", deny, plain),
        ];
        let mut writer = LineWriter::new("node \"a\"");
        let mut written = Chain::fresh("chain-1".into());
        let mut reference = Chain::fresh("chain-1".into());
        let mut seen: Vec<Value> = Vec::new();
        let mut module = LineWriter::new("");
        for (n, c) in cases.iter().enumerate() {
            let event = c.event(n, at);
            let line = writer.write(&event, &mut written, Some(&inputs));
            let mut record = super::super::to_record("node \"a\"", c.event(n, at), Some(&inputs));
            let expected = reference.link(&mut record);
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&expected),
                "case {n}"
            );
            assert_eq!(written.last_hash, reference.last_hash);
            assert_eq!(written.next_seq, reference.next_seq);
            // The log files it under the policies the record names.
            let shadowed = record.shadow.iter().map(|s| s.policy_id.as_str());
            let named: Vec<&str> = record
                .policy_id
                .as_deref()
                .into_iter()
                .chain(shadowed)
                .collect();
            assert_eq!(involved(&event).collect::<Vec<_>>(), named, "case {n}");
            seen.push(serde_json::from_slice(&line).unwrap_or_default());
            // Unlinked, as the in-process module sends it: serde's JSON of
            // the reference record without node, chain fields or input.
            let mut unlinked = Vec::new();
            module.write_unlinked(&event, Links::NONE, None, &mut unlinked);
            let reference = serde_json::to_vec(&super::super::to_record("", c.event(n, at), None))
                .unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&unlinked),
                String::from_utf8_lossy(&reference),
                "case {n}, unlinked"
            );
        }
        // The cases covered what they claim to.
        for reason in ["policy", "default", "error"] {
            assert!(
                seen.iter().any(|r| r["reason"] == reason),
                "a {reason} decision"
            );
        }
        let shadows = |mode: &str| seen.iter().any(|r| r["shadow"].to_string().contains(mode));
        assert!(shadows("simulating") && shadows("canary"));
        assert!(seen
            .iter()
            .any(|r| r["masked"].is_array() && r["input"].is_object()));
        assert!(seen.iter().any(|r| r["evidence"]["who"] == "ann"));
        assert!(seen.iter().any(|r| r["bundleRevision"] == "r2"));
    }

    /// The writer does not keep a bundle alive: once a swap has replaced
    /// it and its events are written, it is freed though the writer, idle,
    /// has written nothing since; a later bundle gets its own text.
    #[test]
    fn a_swapped_out_bundle_is_freed_with_its_last_event() {
        let old = bundle("r1", &[policy("deny-one", "active", "deny", 1, "old")]);
        let watch = Arc::downgrade(&old);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        fn event(b: &Arc<Bundle>, n: usize, at: SystemTime) -> DecisionEvent {
            let case = Case {
                bundle: Some(b),
                input: json!({"x": 1}),
                request_id: "req-1",
                on_error: Verdict::Deny,
                request: None,
            };
            case.event(n, at)
        }
        let mut writer = LineWriter::new("node");
        let mut chain = Chain::fresh("chain-1".into());
        let line = writer.write(&event(&old, 0, at), &mut chain, None);
        assert!(String::from_utf8_lossy(&line).contains("deny-one matched: old"));
        drop(old);
        assert!(watch.upgrade().is_none(), "the writer kept the old bundle");
        let new = bundle("r2", &[policy("deny-one", "active", "deny", 1, "new")]);
        let line = writer.write(&event(&new, 1, at), &mut chain, None);
        let line = String::from_utf8_lossy(&line);
        assert!(
            line.contains("deny-one matched: new") && line.contains("\"r2\""),
            "{line}"
        );
    }
}
