//! The policy index: which of a bundle's policies could match a request,
//! answered from literal conditions derived once, at bundle load, so that a
//! check evaluates those candidates (and the policies nothing could be
//! derived from) instead of every policy. A 1,000-policy bundle written per
//! service (a path prefix, a host, a method) then costs about what its
//! handful of candidates cost.
//!
//! **Derivation** ([`requirements`]): the conditions on single input fields
//! that must hold for a rule to be truthy: `var == "literal"` (also `===`),
//! `var in ["literal", …]` and `starts_with(var, "literal")`, through `and`,
//! `or` (only a field every branch constrains, with the union of what the
//! branches allow) and `!!`. Everything else (negation, `if`, comparisons,
//! regexes, iteration) derives nothing: in doubt, a policy is a candidate.
//!
//! **Why skipping is exact**: a condition is derived only where, when it
//! fails for a string value, the rule evaluates to something falsy *without
//! an error* (an error decides by `--on-error`, so dropping one would change
//! the decision). The only evaluation error is the step budget, reachable
//! through iteration (`map`, `some`, …) or a huge rule; so inside `and`, a
//! condition counts only when no argument before it iterates, and rules
//! past [`MAX_INDEXED_RULE`] nodes are not indexed. When the field's value is
//! not a string (missing, a number, a list), every policy indexed on it is a
//! candidate: loose `==` between `["GET"]` and `"GET"` is true in
//! JavaScript, and a `var` default may apply.
//!
//! **Cost per check**: one `resolve` per indexed field, one hash lookup for
//! its exact values and one per distinct prefix length no longer than the
//! value, then a sort of the candidate list (tens of entries). Bundles too
//! small to gain from this ([`IndexSettings`]) are scanned as before.

use super::input::{Field, Input, VarPath};
use super::logic::eval::STEP_BUDGET;
use super::logic::{Expr, Op, Val};
use super::Policy;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
// The maps are keyed by policy values and only looked up with request
// values (never grown by requests), so a fixed, fast hash is safe here.
// foldhash hashes a short key in a few instructions; xxh3's streaming
// hasher (what `Xxh3DefaultBuilder` builds) first initialises ~300 bytes
// of state per lookup.
use foldhash::fast::FixedState;

/// Rules with more nodes than this are never indexed: bounded evaluation
/// of their prefix could come near the step budget.
const MAX_INDEXED_RULE: usize = (STEP_BUDGET / 4) as usize;

/// When building an index pays off.
#[derive(Debug, Clone, Copy)]
pub struct IndexSettings {
    /// Fewer evaluated policies than this: no index, every check scans.
    pub min_policies: usize,
    /// A field is indexed only when at least this many policies could be
    /// keyed on it (each indexed field costs a lookup on every check).
    pub min_per_field: usize,
}

impl Default for IndexSettings {
    /// Measured with `cargo bench --bench evaluator` (bench/README.md,
    /// "Large bundles"): the 20-policy bundle already decides in 1.02 µs
    /// indexed against 1.55 µs scanned; a handful of policies gain nothing.
    fn default() -> IndexSettings {
        IndexSettings {
            min_policies: 8,
            min_per_field: 2,
        }
    }
}

/// The literal values a rule allows one field to take: equal to one of
/// `exact`, or starting with one of `prefixes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allowed {
    exact: BTreeSet<Box<str>>,
    prefixes: BTreeSet<Box<str>>,
}

impl Allowed {
    fn admits(&self, value: &str) -> bool {
        self.exact.contains(value) || self.prefixes.iter().any(|p| value.starts_with(&**p))
    }

    fn union(mut self, other: Allowed) -> Allowed {
        self.exact.extend(other.exact);
        self.prefixes.extend(other.prefixes);
        self
    }

    fn len(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    /// `be "GET", "HEAD"`, `start with "/api/"`: what the policy needs of
    /// the field (explain).
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.exact.is_empty() {
            parts.push(format!("be {}", quoted_list(&self.exact)));
        }
        if !self.prefixes.is_empty() {
            parts.push(format!("start with {}", quoted_list(&self.prefixes)));
        }
        if parts.is_empty() {
            "be no string at all".into()
        } else {
            parts.join(" or ")
        }
    }
}

fn quoted_list(values: &BTreeSet<Box<str>>) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = values
        .iter()
        .take(SHOWN)
        .map(|v| format!("{v:?}"))
        .collect();
    if values.len() > SHOWN {
        out.push(format!("… ({} values in all)", values.len()));
    }
    out.join(" or ")
}

/// What a rule requires, by field path: all of these must hold for it to
/// be truthy (a conjunction).
type Requirements = BTreeMap<Box<str>, (VarPath, Allowed)>;

/// The requirements of `expr` (module docs: what is derived and why it is
/// exact). Empty when nothing can be derived.
fn requirements(expr: &Expr) -> Requirements {
    let Expr::Op { op, args } = expr else {
        return Requirements::new();
    };
    match (op, &args[..]) {
        (Op::Truthy, [inner]) => requirements(inner),
        (Op::Eq | Op::StrictEq, [a, b]) => match (a, b) {
            (Expr::Var { path, .. }, Expr::Const(Value::String(s)))
            | (Expr::Const(Value::String(s)), Expr::Var { path, .. }) => single(
                path,
                Allowed {
                    exact: BTreeSet::from([s.as_str().into()]),
                    ..Allowed::default()
                },
            ),
            _ => Requirements::new(),
        },
        // `in` with an array haystack is strict equality with an element;
        // elements that are no strings can never equal a string value.
        (Op::In, [Expr::Var { path, .. }, Expr::Const(Value::Array(items))]) => single(
            path,
            Allowed {
                exact: items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(Box::from)
                    .collect(),
                ..Allowed::default()
            },
        ),
        (Op::StartsWith, [Expr::Var { path, .. }, Expr::Const(Value::String(prefix))]) => single(
            path,
            Allowed {
                prefixes: BTreeSet::from([prefix.as_str().into()]),
                ..Allowed::default()
            },
        ),
        (Op::And, args) => {
            // Falsy as soon as one argument is; an argument's requirement
            // counts only if evaluating the ones before it cannot fail.
            let mut all = Requirements::new();
            for arg in args {
                for (key, (path, allowed)) in requirements(arg) {
                    match all.get(&key) {
                        Some((_, kept)) if kept.len() <= allowed.len() => {}
                        _ => {
                            all.insert(key, (path, allowed));
                        }
                    }
                }
                if !iteration_free(arg) {
                    break;
                }
            }
            all
        }
        (Op::Or, [first, rest @ ..]) => {
            // Falsy only when every argument is: a field every argument
            // constrains must take a value one of them allows.
            let mut common = requirements(first);
            for arg in rest {
                if common.is_empty() {
                    break;
                }
                let mut next = requirements(arg);
                common = std::mem::take(&mut common)
                    .into_iter()
                    .filter_map(|(key, (path, allowed))| {
                        let (_, other) = next.remove(&key)?;
                        Some((key, (path, allowed.union(other))))
                    })
                    .collect();
            }
            common
        }
        _ => Requirements::new(),
    }
}

/// A policy's requirements, or none when its rule is too big to index.
fn policy_requirements(policy: &Policy) -> Requirements {
    let root = &policy.rule.root;
    if node_count(root, MAX_INDEXED_RULE) <= MAX_INDEXED_RULE {
        requirements(root)
    } else {
        Requirements::new()
    }
}

fn single(path: &VarPath, allowed: Allowed) -> Requirements {
    if !indexable(path.field()) {
        return Requirements::new();
    }
    BTreeMap::from([(path.as_str().into(), (path.clone(), allowed))])
}

/// Fields an index may key on: one value per request, resolved the same
/// way every time. The whole document, whole sub-documents and unknown
/// fields are left out (they are never strings or always undefined).
fn indexable(field: Field) -> bool {
    !matches!(field, Field::Document | Field::Subtree | Field::Unknown)
}

/// How much indexing on a field narrows, best first: paths name services
/// and routes, hosts name services, headers and context keys often do;
/// methods split a bundle only a few ways.
fn field_rank(field: Field) -> u8 {
    match field {
        Field::RequestPath => 0,
        Field::RequestHost => 1,
        Field::RequestMethod => 3,
        _ => 2,
    }
}

/// Whether evaluating `expr` is free of iteration (`map`, `filter`, `all`,
/// `some`, `none`, `reduce`), and so takes at most one step per node.
fn iteration_free(expr: &Expr) -> bool {
    match expr {
        Expr::Const(_) => true,
        Expr::Array(items) => items.iter().all(iteration_free),
        Expr::Var { default, .. } => default.as_deref().is_none_or(iteration_free),
        Expr::VarDynamic { path, default } => {
            iteration_free(path) && default.as_deref().is_none_or(iteration_free)
        }
        Expr::Op { op, args } => {
            !matches!(
                op,
                Op::Map | Op::Filter | Op::All | Op::Some | Op::None | Op::Reduce
            ) && args.iter().all(iteration_free)
        }
        Expr::Matches { subject, .. } | Expr::InCidr { subject, .. } => iteration_free(subject),
    }
}

/// Nodes in `expr`, counting stops past `limit`.
fn node_count(expr: &Expr, limit: usize) -> usize {
    let mut count = 1;
    let add = |e: &Expr, count: &mut usize| {
        if *count <= limit {
            *count += node_count(e, limit - (*count).min(limit));
        }
    };
    match expr {
        Expr::Const(_) => {}
        Expr::Array(items) | Expr::Op { args: items, .. } => {
            for item in items.iter() {
                add(item, &mut count);
            }
        }
        Expr::Var { default, .. } => {
            if let Some(d) = default {
                add(d, &mut count);
            }
        }
        Expr::VarDynamic { path, default } => {
            add(path, &mut count);
            if let Some(d) = default {
                add(d, &mut count);
            }
        }
        Expr::Matches { subject, .. } | Expr::InCidr { subject, .. } => add(subject, &mut count),
    }
    count
}

/// The index of one field: which policies allow which values.
#[derive(Debug)]
struct FieldIndex {
    path: VarPath,
    exact: HashMap<Box<str>, Vec<u32>, FixedState>,
    prefixes: HashMap<Box<str>, Vec<u32>, FixedState>,
    /// The distinct lengths of `prefixes`' keys, ascending.
    prefix_lengths: Vec<usize>,
    /// Every policy keyed on this field, ascending: the candidates when the
    /// value is not a string.
    keyed: Vec<u32>,
}

impl FieldIndex {
    /// Push the policies that allow `value`.
    fn lookup(&self, value: &str, out: &mut Vec<u32>) {
        if let Some(policies) = self.exact.get(value) {
            out.extend_from_slice(policies);
        }
        for &length in &self.prefix_lengths {
            if length > value.len() {
                break;
            }
            if let Some(policies) = value
                .get(..length)
                .and_then(|prefix| self.prefixes.get(prefix))
            {
                out.extend_from_slice(policies);
            }
        }
    }
}

/// Where one policy stands in the index.
#[derive(Debug, Clone)]
enum Entry {
    /// Not evaluated at all (draft, deprecated).
    NotEvaluated,
    /// Evaluated on every check: nothing indexable was derived.
    Always,
    /// Keyed on `fields[field]` (what it allows there is derived again
    /// for explain).
    Keyed { field: usize },
}

/// A bundle's policy index (module docs).
#[derive(Debug)]
pub(crate) struct Index {
    fields: Vec<FieldIndex>,
    /// Evaluated policies keyed on no field, ascending.
    always: Vec<u32>,
    /// Per policy of the set, in set order.
    entries: Vec<Entry>,
}

/// Why a policy was, or was not, evaluated for one input (`eval --explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidacy {
    pub candidate: bool,
    pub why: String,
}

/// How a bundle is indexed (`/v1/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    /// Whether checks use the index (false: the bundle is scanned).
    pub enabled: bool,
    /// Evaluated policies keyed on a field.
    pub indexed: usize,
    /// Evaluated policies evaluated on every check.
    pub always_evaluated: usize,
    /// Policies keyed per field path.
    pub fields: Vec<(String, usize)>,
}

impl Index {
    pub(crate) fn build(
        policies: &[Policy],
        evaluated: &[usize],
        settings: IndexSettings,
    ) -> Index {
        let mut entries = vec![Entry::NotEvaluated; policies.len()];
        let mut fields: Vec<FieldIndex> = Vec::new();
        let mut always = Vec::new();
        if evaluated.len() < settings.min_policies {
            for &i in evaluated {
                always.push(i as u32);
                entries[i] = Entry::Always;
            }
            return Index {
                fields,
                always,
                entries,
            };
        }
        // Requirements are derived twice (counting, then keying) rather
        // than kept: held for 10,000 policies at once they were the peak of
        // a bundle load (33 MB of small maps).
        let mut could: HashMap<Box<str>, usize> = HashMap::new();
        for &i in evaluated {
            for key in policy_requirements(&policies[i]).into_keys() {
                *could.entry(key).or_default() += 1;
            }
        }
        for &i in evaluated {
            let derived = policy_requirements(&policies[i]);
            let best = derived
                .iter()
                .filter(|(key, _)| could.get(*key).copied().unwrap_or(0) >= settings.min_per_field)
                .min_by_key(|(_, (path, allowed))| (field_rank(path.field()), allowed.len()));
            let Some((_, (path, allowed))) = best else {
                always.push(i as u32);
                entries[i] = Entry::Always;
                continue;
            };
            let field = match fields.iter().position(|f| f.path.as_str() == path.as_str()) {
                Some(field) => field,
                None => {
                    fields.push(FieldIndex {
                        path: path.clone(),
                        exact: HashMap::default(),
                        prefixes: HashMap::default(),
                        prefix_lengths: Vec::new(),
                        keyed: Vec::new(),
                    });
                    fields.len() - 1
                }
            };
            let index = &mut fields[field];
            let policy = i as u32;
            for value in &allowed.exact {
                index.exact.entry(value.clone()).or_default().push(policy);
            }
            for prefix in &allowed.prefixes {
                index
                    .prefixes
                    .entry(prefix.clone())
                    .or_default()
                    .push(policy);
            }
            index.keyed.push(policy);
            entries[i] = Entry::Keyed { field };
        }
        for index in &mut fields {
            let mut lengths: Vec<usize> = index.prefixes.keys().map(|p| p.len()).collect();
            lengths.sort_unstable();
            lengths.dedup();
            index.prefix_lengths = lengths;
            index.exact.shrink_to_fit();
            index.prefixes.shrink_to_fit();
        }
        Index {
            fields,
            always,
            entries,
        }
    }

    /// Whether checks consult the index (some policy is keyed).
    pub(crate) fn is_used(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The candidate policies for `input`, ascending and without repeats,
    /// into `out` (cleared first).
    pub(crate) fn candidates<I: Input>(&self, input: &I, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.always);
        for field in &self.fields {
            match input.resolve(&field.path) {
                Some(Val::Str(value)) => field.lookup(&value, out),
                _ => out.extend_from_slice(&field.keyed),
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Why policy `policy` is or is not a candidate for `input`.
    pub(crate) fn candidacy<I: Input>(
        &self,
        index: usize,
        policy: &Policy,
        input: &I,
    ) -> Candidacy {
        let (candidate, why) = match self.entries.get(index) {
            None | Some(Entry::NotEvaluated) => (false, "not evaluated in its state".to_owned()),
            Some(Entry::Always) if self.is_used() => (
                true,
                "always evaluated: no literal condition on an indexed field".to_owned(),
            ),
            Some(Entry::Always) => (
                true,
                "evaluated: the bundle is too small to index".to_owned(),
            ),
            Some(Entry::Keyed { field }) => {
                let path = &self.fields[*field].path;
                let name = path.as_str();
                let allowed = policy_requirements(policy)
                    .remove(name)
                    .map(|(_, allowed)| allowed)
                    .unwrap_or_default();
                match input.resolve(path) {
                    Some(Val::Str(value)) => {
                        let candidate = allowed.admits(&value);
                        let verb = if candidate {
                            "can match"
                        } else {
                            "cannot match"
                        };
                        let needs = allowed.describe();
                        (
                            candidate,
                            format!("{name} {value:?} {verb}: the policy needs it to {needs}"),
                        )
                    }
                    _ => (
                        true,
                        format!(
                            "{name} is not a string here, so every policy keyed on it is evaluated"
                        ),
                    ),
                }
            }
        };
        Candidacy { candidate, why }
    }

    pub(crate) fn summary(&self) -> IndexSummary {
        let keyed: usize = self.fields.iter().map(|f| f.keyed.len()).sum();
        IndexSummary {
            enabled: self.is_used(),
            indexed: keyed,
            always_evaluated: self.always.len(),
            fields: self
                .fields
                .iter()
                .map(|f| (f.path.as_str().to_owned(), f.keyed.len()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::logic::Rule;
    use serde_json::json;

    fn derived(rule: Value) -> Vec<(String, Allowed)> {
        let rule = Rule::compile(&rule).expect("compiles");
        requirements(&rule.root)
            .into_iter()
            .map(|(k, (_, a))| (k.to_string(), a))
            .collect()
    }

    fn exact(values: &[&str]) -> Allowed {
        Allowed {
            exact: values.iter().map(|v| Box::from(*v)).collect(),
            ..Allowed::default()
        }
    }

    fn prefix(values: &[&str]) -> Allowed {
        Allowed {
            prefixes: values.iter().map(|v| Box::from(*v)).collect(),
            ..Allowed::default()
        }
    }

    #[test]
    fn literal_conditions_are_derived_through_and_or_and_truthy() {
        let rule = json!({"and": [
            {"in": [{"var": "request.method"}, ["GET", "HEAD", 3]]},
            {"!!": {"starts_with": [{"var": "request.path"}, "/api/"]}},
        ]});
        assert_eq!(
            derived(rule),
            vec![
                ("request.method".into(), exact(&["GET", "HEAD"])),
                ("request.path".into(), prefix(&["/api/"])),
            ]
        );
        let rule = json!({"or": [
            {"==": ["/healthz", {"var": "request.path"}]},
            {"and": [{"starts_with": [{"var": "request.path"}, "/ready"]},
                     {"==": [{"var": "request.host"}, "a"]}]},
        ]});
        let mut both = exact(&["/healthz"]);
        both.prefixes = prefix(&["/ready"]).prefixes;
        assert_eq!(derived(rule), vec![("request.path".into(), both)]);
    }

    #[test]
    fn nothing_is_derived_where_a_policy_could_match_or_fail_otherwise() {
        for rule in [
            // Negation, a branch without the field, numbers (loose `==`
            // coerces strings), a string haystack (substring), `if`.
            json!({"!": {"==": [{"var": "request.method"}, "GET"]}}),
            json!({"or": [{"==": [{"var": "request.method"}, "GET"]}, {"var": "x"}]}),
            json!({"==": [{"var": "request.port"}, 8080]}),
            json!({"in": [{"var": "request.method"}, "GET,HEAD"]}),
            json!({"if": [{"==": [{"var": "request.method"}, "GET"]}, true, false]}),
            json!({"==": [{"var": "request"}, "GET"]}),
            json!({"==": [{"var": "nosuch.field"}, "GET"]}),
            // The condition after iteration: the iteration could exceed
            // the step budget and decide by --on-error.
            json!({"and": [{"some": [{"var": "xs"}, {"var": ""}]},
                           {"==": [{"var": "request.method"}, "GET"]}]}),
        ] {
            assert_eq!(derived(rule.clone()), vec![], "{rule}");
        }
        // Before the iteration, it counts.
        let rule = json!({"and": [{"==": [{"var": "request.method"}, "GET"]},
                                  {"some": [{"var": "xs"}, {"var": ""}]}]});
        assert_eq!(
            derived(rule),
            vec![("request.method".into(), exact(&["GET"]))]
        );
    }

    #[test]
    fn prefix_lookup_checks_every_length_and_character_boundaries() {
        let mut index = FieldIndex {
            path: VarPath::parse("request.path"),
            exact: HashMap::default(),
            prefixes: HashMap::default(),
            prefix_lengths: vec![],
            keyed: vec![],
        };
        for (p, i) in [("", 0), ("/a", 1), ("/a/b", 2), ("/é", 3)] {
            index.prefixes.insert(p.into(), vec![i]);
        }
        index.prefix_lengths = vec![0, 2, 3, 4];
        let mut out = vec![];
        index.lookup("/a/bc", &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        out.clear();
        index.lookup("/éx", &mut out);
        assert_eq!(out, vec![0, 3]);
    }
}
