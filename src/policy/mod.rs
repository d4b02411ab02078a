//! Policies: the document format (docs/bundles.md), compilation into a
//! [`PolicySet`], and the decision algorithm.

pub mod index;
pub mod input;
pub mod logic;

use index::Index;
pub use index::{Candidacy, IndexSettings, IndexSummary};
use input::{Input, VarPath};
use logic::{evaluate, Rule, Val};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Draft,
    Simulating,
    Canary,
    Active,
    Deprecated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Simulating => "simulating",
            State::Canary => "canary",
            State::Active => "active",
            State::Deprecated => "deprecated",
        }
    }

    /// Draft and deprecated policies are kept for explain only.
    pub fn is_evaluated(self) -> bool {
        matches!(self, State::Simulating | State::Canary | State::Active)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// A policy's `when`, kept as compact JSON text once read. A parsed `Value`
/// costs a B-tree node (~600 bytes) per operator object, ~13 KB for a
/// typical policy and 130 MB for 10,000; the compiled rule is what decides,
/// and only explain and the registry show the text.
#[derive(Debug, Clone)]
pub struct RuleText(Box<serde_json::value::RawValue>);

impl RuleText {
    /// The rule as a JSON value (parsed again: explain, compilation).
    pub fn to_value(&self) -> Value {
        // The text was rendered from a `Value`, so it parses.
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl std::fmt::Display for RuleText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for RuleText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RuleText {
    /// Through `Value`, so any deserializer works (raw values need a
    /// text one) and the text is canonical: compact, keys sorted.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        serde_json::value::RawValue::from_string(value.to_string())
            .map(RuleText)
            .map_err(serde::de::Error::custom)
    }
}

/// A policy file, as written (docs/bundles.md, "Policy document").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDocument {
    pub id: String,
    pub version: u64,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    pub state: State,
    #[serde(default)]
    pub canary_percent: f64,
    #[serde(default = "default_canary_key")]
    pub canary_key: String,
    pub effect: Verdict,
    pub when: RuleText,
    #[serde(default)]
    pub response: ResponseSpec,
    #[serde(default)]
    pub evidence: Vec<String>,
}

fn default_canary_key() -> String {
    "request.id".into()
}

/// What a matching policy does to the HTTP exchange.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseSpec {
    /// Status of a deny (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Deny: headers on the denial. Allow: headers added to the upstream request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Allow: headers removed from the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
    /// Allow: headers added to the response sent to the client.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response_headers: BTreeMap<String, String>,
}

/// A policy that failed validation: which policy, where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy \"{policy}\" at {pointer}: {message}")]
pub struct PolicyError {
    pub policy: String,
    pub pointer: String,
    pub message: String,
}

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub id: Arc<str>,
    pub document: PolicyDocument,
    rule: Rule,
    pub evidence: Vec<VarPath>,
    canary_key: VarPath,
    /// `canaryPercent × 100`, compared with a hash modulo 10000.
    canary_threshold: u64,
}

impl Policy {
    pub fn compile(document: PolicyDocument) -> Result<Policy, PolicyError> {
        let fail = |pointer: &str, message: String| PolicyError {
            policy: document.id.clone(),
            pointer: pointer.into(),
            message,
        };
        if !is_identifier(&document.id) {
            return Err(fail("/id", format!("id must be {IDENTIFIER_RULE}")));
        }
        if document.version == 0 {
            return Err(fail("/version", "version must be 1 or more".into()));
        }
        if !(0.0..=100.0).contains(&document.canary_percent) {
            return Err(fail(
                "/canaryPercent",
                format!(
                    "canaryPercent must be between 0 and 100, got {}",
                    document.canary_percent
                ),
            ));
        }
        if let Some(status) = document.response.status {
            if !(200..=599).contains(&status) {
                return Err(fail(
                    "/response/status",
                    format!("status must be an HTTP status (200-599), got {status}"),
                ));
            }
        }
        for (field, names) in [
            (
                "headers",
                document.response.headers.keys().collect::<Vec<_>>(),
            ),
            (
                "responseHeaders",
                document.response.response_headers.keys().collect(),
            ),
            (
                "removeHeaders",
                document.response.remove_headers.iter().collect(),
            ),
        ] {
            if let Some(bad) = names.iter().find(|n| !is_header_name(n)) {
                return Err(fail(
                    &format!("/response/{field}"),
                    format!("invalid header name {bad:?}"),
                ));
            }
        }
        let rule = Rule::compile(&document.when.to_value()).map_err(|e| {
            let pointer = if e.pointer == "/" {
                "/when".to_owned()
            } else {
                format!("/when{}", e.pointer)
            };
            fail(&pointer, e.message)
        })?;
        let evidence = document
            .evidence
            .iter()
            .map(|p| VarPath::parse(p))
            .collect();
        let canary_key = VarPath::parse(&document.canary_key);
        let canary_threshold = (document.canary_percent * 100.0).round() as u64;
        Ok(Policy {
            id: Arc::from(document.id.as_str()),
            evidence,
            canary_key,
            canary_threshold,
            rule,
            document,
        })
    }

    pub fn version(&self) -> u64 {
        self.document.version
    }

    pub fn state(&self) -> State {
        self.document.state
    }

    pub fn effect(&self) -> Verdict {
        self.document.effect
    }

    /// Whether deciding with this policy may look up a path `wanted`
    /// accepts: in its rule, its evidence or (a canary) its canary key. The
    /// whole document (`{"var": ""}`) is every path. Errs on the side of yes
    /// ([`Rule::may_read`]); the in-process filter asks it to know which
    /// attributes to fetch from Envoy.
    pub fn may_read(&self, wanted: &dyn Fn(&VarPath) -> bool) -> bool {
        let wanted = |path: &VarPath| path.field() == input::Field::Document || wanted(path);
        self.rule.may_read(&wanted)
            || self.evidence.iter().any(&wanted)
            || (self.state() == State::Canary && wanted(&self.canary_key))
    }

    /// Whether this request falls in the canary slice of this policy.
    fn canary_selected<I: Input>(&self, input: &I) -> bool {
        let key = input.resolve(&self.canary_key);
        let key = key.as_ref().map(Val::to_js_string);
        canary_bucket(key.as_deref().unwrap_or(""), &self.id) < self.canary_threshold
    }
}

/// The stable bucket (0..10000) of a canary key for a policy: xxh3-64 of
/// `key`, a NUL byte, and the policy id. xxh3 is a fixed, documented
/// algorithm, so every replica and every release agrees.
pub fn canary_bucket(key: &str, policy_id: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(key.as_bytes());
    hasher.update(&[0]);
    hasher.update(policy_id.as_bytes());
    hasher.digest() % 10_000
}

/// What a policy id or bundle name may be, for error messages.
pub const IDENTIFIER_RULE: &str = "1–128 letters, digits, '.', '-', '_' or ':'";

/// Whether `name` may be a policy id or a bundle name: it appears in file
/// names, URLs, metric labels and record fields, so it stays plain.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How a matched policy took part in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Active, or canary for a request inside the canary slice.
    Enforce,
    /// Canary, for a request outside the slice: recorded, not enforced.
    CanaryShadow,
    /// Simulating: recorded, never enforced.
    Shadow,
}

/// How a matched policy took part, by name: the label of
/// `sentinel_policy_matches_total{mode}` and `eval --explain`'s `mode`.
pub const MODE_NAMES: [&str; 3] = ["enforce", "canary", "shadow"];

impl Mode {
    /// Index into [`MODE_NAMES`]: `enforce` (active), `canary` (a canary
    /// inside its slice, enforced), `shadow` (recorded only: simulating, or
    /// a canary outside its slice).
    pub fn name_index(self, state: State) -> usize {
        match (self, state) {
            (Mode::Enforce, State::Canary) => 1,
            (Mode::Enforce, _) => 0,
            _ => 2,
        }
    }

    pub fn name(self, state: State) -> &'static str {
        MODE_NAMES[self.name_index(state)]
    }
}

/// Why the decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Policy,
    Default,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Policy => "policy",
            Reason::Default => "default",
            Reason::Error => "error",
        }
    }
}

/// One matched policy and how it took part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub policy: usize,
    pub mode: Mode,
}

/// The result of deciding one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The policy whose response applies (deny), the first matching allow
    /// policy (allow), or the policy that failed (error).
    pub deciding: Option<usize>,
    /// Every matched policy, in id order.
    pub matches: Vec<Match>,
    /// Policies whose evaluation failed, in id order.
    pub errors: Vec<usize>,
}

impl Outcome {
    /// Enforced allow policies that matched, in id order (their response
    /// headers are merged in this order).
    pub fn enforced_allows<'p>(
        &'p self,
        set: &'p PolicySet,
    ) -> impl Iterator<Item = &'p Policy> + 'p {
        self.matches
            .iter()
            .filter(|m| m.mode == Mode::Enforce)
            .map(|m| &set.policies[m.policy])
            .filter(|p| p.effect() == Verdict::Allow)
    }
}

thread_local! {
    /// Reused candidate lists for [`PolicySet::decide`] (tens of entries;
    /// cleared before each use).
    static CANDIDATES: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Every policy of a bundle, compiled and sorted by id.
#[derive(Debug)]
pub struct PolicySet {
    policies: Vec<Policy>,
    /// Indices of the policies that are evaluated (simulating, canary, active).
    evaluated: Vec<usize>,
    /// Which evaluated policies could match a request (policy/index.rs).
    index: Index,
    default_decision: Verdict,
}

impl PolicySet {
    /// Build a set; policy ids must be unique (checked by the caller, which
    /// knows the files to name).
    pub fn new(policies: Vec<Policy>, default_decision: Verdict) -> PolicySet {
        PolicySet::with_index(policies, default_decision, IndexSettings::default())
    }

    /// [`PolicySet::new`] with the index built as `settings` say (tests use
    /// this to index bundles of any size).
    pub fn with_index(
        mut policies: Vec<Policy>,
        default_decision: Verdict,
        settings: IndexSettings,
    ) -> PolicySet {
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        let evaluated: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state().is_evaluated())
            .map(|(i, _)| i)
            .collect();
        let index = Index::build(&policies, &evaluated, settings);
        PolicySet {
            policies,
            evaluated,
            index,
            default_decision,
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn get(&self, index: usize) -> &Policy {
        &self.policies[index]
    }

    pub fn find(&self, id: &str) -> Option<&Policy> {
        self.policies
            .binary_search_by(|p| p.id.as_ref().cmp(id))
            .ok()
            .map(|i| &self.policies[i])
    }

    pub fn default_decision(&self) -> Verdict {
        self.default_decision
    }

    /// Decide one input (docs/bundles.md, "Decision"): deny if any enforced deny
    /// policy matches; else `on_error` if an enforced policy failed to
    /// evaluate; else allow if any enforced allow policy matches; else the
    /// default.
    ///
    /// Only the index's candidates are evaluated; the others cannot match
    /// or fail (policy/index.rs), so the outcome is the scan's.
    pub fn decide<I: Input>(&self, input: &I, on_error: Verdict) -> Outcome {
        if !self.index.is_used() {
            return self.decide_among(self.evaluated.iter().copied(), input, on_error);
        }
        // The candidate list is this thread's scratch buffer, taken and put
        // back: the check path does not allocate one per decision.
        let mut candidates = CANDIDATES.take();
        self.index.candidates(input, &mut candidates);
        let outcome = self.decide_among(candidates.iter().map(|&i| i as usize), input, on_error);
        CANDIDATES.set(candidates);
        outcome
    }

    /// Decide by evaluating every evaluated policy, ignoring the index: the
    /// oracle the index is tested against.
    #[doc(hidden)]
    pub fn decide_by_scan<I: Input>(&self, input: &I, on_error: Verdict) -> Outcome {
        self.decide_among(self.evaluated.iter().copied(), input, on_error)
    }

    /// Why policy `policy` (an index into [`PolicySet::policies`]) is or is
    /// not a candidate for `input` (`eval --explain`).
    pub fn candidacy<I: Input>(&self, policy: usize, input: &I) -> Candidacy {
        self.index.candidacy(policy, &self.policies[policy], input)
    }

    /// How this set is indexed (`/v1/status`).
    pub fn index_summary(&self) -> IndexSummary {
        self.index.summary()
    }

    /// The decision over `indices` (ascending policy indices).
    fn decide_among<I: Input>(
        &self,
        indices: impl Iterator<Item = usize>,
        input: &I,
        on_error: Verdict,
    ) -> Outcome {
        let mut matches = Vec::new();
        let mut errors = Vec::new();
        let mut deny: Option<usize> = None;
        let mut allow: Option<usize> = None;
        let mut enforced_error: Option<usize> = None;
        for index in indices {
            let policy = &self.policies[index];
            let matched = match evaluate(&policy.rule.root, input) {
                Ok(value) => value.truthy(),
                Err(_) => {
                    errors.push(index);
                    let enforced = match policy.state() {
                        State::Active => true,
                        State::Canary => policy.canary_selected(input),
                        _ => false,
                    };
                    if enforced && enforced_error.is_none() {
                        enforced_error = Some(index);
                    }
                    continue;
                }
            };
            if !matched {
                continue;
            }
            let mode = match policy.state() {
                State::Active => Mode::Enforce,
                State::Canary if policy.canary_selected(input) => Mode::Enforce,
                State::Canary => Mode::CanaryShadow,
                _ => Mode::Shadow,
            };
            matches.push(Match {
                policy: index,
                mode,
            });
            if mode != Mode::Enforce {
                continue;
            }
            match policy.effect() {
                Verdict::Deny => {
                    // Highest severity wins; ties go to the smallest id,
                    // which came first.
                    let better = deny.is_none_or(|d| {
                        policy.document.severity > self.policies[d].document.severity
                    });
                    if better {
                        deny = Some(index);
                    }
                }
                Verdict::Allow => {
                    allow.get_or_insert(index);
                }
            }
        }
        // Deny wins, even over a policy that failed: whatever the failed
        // one would have said, an enforced deny matched. Otherwise a failure
        // decides (`--on-error`), since it might have been a deny.
        let (verdict, reason, deciding) = if let Some(d) = deny {
            (Verdict::Deny, Reason::Policy, Some(d))
        } else if let Some(failed) = enforced_error {
            (on_error, Reason::Error, Some(failed))
        } else if let Some(a) = allow {
            (Verdict::Allow, Reason::Policy, Some(a))
        } else {
            (self.default_decision, Reason::Default, None)
        };
        Outcome {
            verdict,
            reason,
            deciding,
            matches,
            errors,
        }
    }

    /// Whether any policy may read a path under one of `prefixes` (given as
    /// segments), or a path that holds one (`request` whole holds
    /// `request.body`). Asked of the compiled rules ([`Policy::may_read`]),
    /// not of their text: a string literal that names a field does not
    /// count, `{"var": "source"}` whole does.
    pub fn may_read_under(&self, prefixes: &[&[&str]]) -> bool {
        let wanted = |path: &VarPath| {
            prefixes.iter().any(|prefix| {
                path.segments()
                    .iter()
                    .zip(prefix.iter())
                    .all(|(segment, want)| segment.as_ref() == *want)
            })
        };
        self.policies.iter().any(|p| p.may_read(&wanted))
    }

    /// Values of a policy's declared evidence paths for this input.
    pub fn evidence<I: Input>(&self, policy: usize, input: &I) -> serde_json::Map<String, Value> {
        self.policies[policy]
            .evidence
            .iter()
            .map(|path| {
                let value = input
                    .resolve(path)
                    .map_or(Value::Null, |v: Val<'_>| v.to_json());
                (path.as_str().to_owned(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(doc: Value) -> Policy {
        let document: PolicyDocument = serde_json::from_value(doc).expect("document");
        Policy::compile(document).expect("compiles")
    }

    fn base(id: &str, effect: &str, state: &str, severity: &str, when: Value) -> Value {
        json!({"id": id, "version": 1, "severity": severity, "state": state,
               "effect": effect, "when": when})
    }

    #[test]
    fn what_a_policy_may_read_comes_from_its_compiled_rule_not_its_text() {
        const CONNECTION: &[&[&str]] = &[&["source"], &["destination"], &["request", "protocol"]];
        const BODY: &[&[&str]] = &[&["request", "body"], &["request", "bodyError"]];
        let reads = |when: Value, extra: Value, prefixes: &[&[&str]]| {
            let mut doc = base("p", "deny", "active", "LOW", when);
            if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
                doc.extend(extra);
            }
            PolicySet::new(vec![policy(doc)], Verdict::Allow).may_read_under(prefixes)
        };
        let none = json!({});
        // Whole objects, fields, and the prefix that holds a field.
        assert!(reads(json!({"var": "source"}), none.clone(), CONNECTION));
        assert!(reads(
            json!({"var": ["destination.port"]}),
            none.clone(),
            CONNECTION
        ));
        assert!(reads(json!({"var": "request"}), none.clone(), CONNECTION));
        assert!(reads(json!({"var": "request"}), none.clone(), BODY));
        assert!(reads(
            json!({"var": "request.bodyError"}),
            none.clone(),
            BODY
        ));
        assert!(reads(json!({"!": {"var": ""}}), none.clone(), BODY));
        // Deep in operators, defaults and extension operators.
        let deep = json!({"and": [true, {"in_cidr": [{"var": "source.address"}, "10.0.0.0/8"]}]});
        assert!(reads(deep, none.clone(), CONNECTION));
        let default = json!({"var": ["request.method", {"var": "principal.id"}]});
        assert!(reads(default, none.clone(), &[&["principal"]]));
        // `missing` and `missing_some` read the paths they name.
        let missing = json!({"missing": ["principal.id"]});
        assert!(reads(missing, none.clone(), &[&["principal"]]));
        let missing_one = json!({"missing": "source.principal"});
        assert!(reads(missing_one, none.clone(), CONNECTION));
        let some = json!({"missing_some": [1, ["request.method", "request.body"]]});
        assert!(reads(some, none.clone(), BODY));
        let elsewhere = json!({"missing": ["request.method"]});
        assert!(!reads(elsewhere, none.clone(), CONNECTION));
        let computed = json!({"missing": {"merge": [["a"], [{"var": "request.method"}]]}});
        assert!(reads(computed, none.clone(), CONNECTION));
        // A path computed at run time may be any path.
        let dynamic = json!({"var": {"cat": ["sour", "ce"]}});
        assert!(reads(dynamic, none.clone(), CONNECTION));
        // Evidence, and a canary's key.
        let evidence = json!({"evidence": ["source.principal"]});
        assert!(reads(json!(true), evidence, CONNECTION));
        let mut canary = base("p", "deny", "canary", "LOW", json!(true));
        if let Some(doc) = canary.as_object_mut() {
            doc.insert("canaryPercent".into(), json!(10));
            doc.insert("canaryKey".into(), json!("source.address"));
        }
        let canary = PolicySet::new(vec![policy(canary)], Verdict::Allow);
        assert!(canary.may_read_under(CONNECTION));
        // Not: a literal that names a field, a sibling field, a longer name.
        let literal = json!({"==": [{"var": "request.method"}, "source.principal"]});
        assert!(!reads(literal, none.clone(), CONNECTION));
        assert!(!reads(
            literal_of("principal"),
            none.clone(),
            &[&["principal"]]
        ));
        assert!(!reads(json!({"var": "request.path"}), none.clone(), BODY));
        assert!(!reads(json!({"var": "sources"}), none.clone(), CONNECTION));
        assert!(!reads(json!({"var": "request.body"}), none, CONNECTION));
    }

    fn literal_of(text: &str) -> Value {
        json!({"in": [text, {"var": "request.headers.x-note"}]})
    }

    #[test]
    fn deny_overrides_and_highest_severity_then_smallest_id_responds() {
        let set = PolicySet::new(
            vec![
                policy(base("b.low", "deny", "active", "LOW", json!(true))),
                policy(base("c.high", "deny", "active", "HIGH", json!(true))),
                policy(base("a.high", "deny", "active", "HIGH", json!(true))),
                policy(base("0.allow", "allow", "active", "LOW", json!(true))),
            ],
            Verdict::Allow,
        );
        let out = set.decide(&json!({}), Verdict::Deny);
        assert_eq!(out.verdict, Verdict::Deny);
        assert_eq!(set.get(out.deciding.unwrap()).id.as_ref(), "a.high");
        assert_eq!(out.matches.len(), 4);
    }

    #[test]
    fn a_matching_deny_wins_over_a_policy_that_failed() {
        // A rule that runs out of its step budget on any input with `xs`.
        let runaway = json!({"some": [{"var": "xs"}, {"==": [{"+": [{"var": ""}, 1]}, -1]}]});
        let input = json!({"xs": (0..300_000).collect::<Vec<u32>>(), "method": "DELETE"});
        let deny = base(
            "deny.delete",
            "deny",
            "active",
            "LOW",
            json!({"==": [{"var": "method"}, "DELETE"]}),
        );
        let failing = |effect: &str| base("a.failing", effect, "active", "LOW", runaway.clone());
        for effect in ["allow", "deny"] {
            let set = PolicySet::new(
                vec![policy(failing(effect)), policy(deny.clone())],
                Verdict::Allow,
            );
            for on_error in [Verdict::Allow, Verdict::Deny] {
                let out = set.decide(&input, on_error);
                assert_eq!(
                    out.verdict,
                    Verdict::Deny,
                    "{effect} failing, on error {on_error:?}"
                );
                assert_eq!(out.reason, Reason::Policy);
                assert_eq!(set.get(out.deciding.unwrap()).id.as_ref(), "deny.delete");
                assert_eq!(out.errors, vec![0], "the failure is still reported");
            }
            // With no deny matching, the failure decides as configured.
            let get = json!({"xs": (0..300_000).collect::<Vec<u32>>(), "method": "GET"});
            for on_error in [Verdict::Allow, Verdict::Deny] {
                let out = set.decide(&get, on_error);
                assert_eq!((out.verdict, out.reason), (on_error, Reason::Error));
            }
        }
    }

    #[test]
    fn default_applies_when_nothing_enforced_matches() {
        let set = PolicySet::new(
            vec![
                policy(base("sim", "deny", "simulating", "LOW", json!(true))),
                policy(base("draft", "deny", "draft", "LOW", json!(true))),
            ],
            Verdict::Allow,
        );
        let out = set.decide(&json!({}), Verdict::Deny);
        assert_eq!(
            (out.verdict, out.reason, out.deciding),
            (Verdict::Allow, Reason::Default, None)
        );
        // The simulating policy matched in shadow; the draft was not evaluated.
        assert_eq!(
            out.matches,
            vec![Match {
                policy: 1,
                mode: Mode::Shadow
            }]
        );
    }

    #[test]
    fn canary_bucket_is_stable_and_near_its_percentage() {
        assert_eq!(canary_bucket("req-1", "p"), canary_bucket("req-1", "p"));
        let mut doc = base("canary", "deny", "canary", "LOW", json!(true));
        doc["canaryPercent"] = json!(10);
        let set = PolicySet::new(vec![policy(doc)], Verdict::Allow);
        let denied = (0..3000)
            .filter(|i| {
                let input = json!({"request": {"id": format!("id-{i}")}});
                set.decide(&input, Verdict::Deny).verdict == Verdict::Deny
            })
            .count();
        assert!(
            (210..=390).contains(&denied),
            "{denied} of 3000 in a 10% canary"
        );
    }

    #[test]
    fn invalid_documents_are_refused_with_a_pointer() {
        let mut doc = base("x", "deny", "active", "LOW", json!({"==": [1]}));
        let document: PolicyDocument = serde_json::from_value(doc.clone()).unwrap();
        let e = Policy::compile(document).unwrap_err();
        assert_eq!(e.pointer, "/when/==");
        doc["canaryPercent"] = json!(120);
        doc["when"] = json!(true);
        let e = Policy::compile(serde_json::from_value(doc).unwrap()).unwrap_err();
        assert_eq!(e.pointer, "/canaryPercent");
    }
}
