//! The simulation report (docs/simulation.md): counters fed one sample at a
//! time, and the recommended canary percentage.

use super::sample::{self, Sample};
use crate::policy::{Mode, PolicySet, Verdict};
use serde::{Deserialize, Serialize};

/// Examples kept per kind (skipped lines, allow→deny, deny→allow).
pub const MAX_EXAMPLES: usize = 10;

/// The false-positive rate above which no canary is recommended, unless told.
pub const DEFAULT_MAX_FP_RATE: f64 = 0.05;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub bundle: String,
    /// `recorded` (each record's own decision), `NAME@REVISION` of a
    /// `--baseline` bundle, or `none` (plain inputs without a baseline).
    pub baseline: String,
    pub samples: u64,
    pub evaluated: u64,
    pub skipped: Skipped,
    pub policies: Vec<PolicyImpact>,
    pub changes: Changes,
    pub labelled: u64,
    pub false_positives: u64,
    pub false_positive_rate: Option<f64>,
    pub recommended_canary_percent: u8,
    pub recommendation: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub count: u64,
    pub examples: Vec<SkippedLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedLine {
    pub line: u64,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyImpact {
    pub policy_id: String,
    /// Samples whose input the policy's condition matched.
    pub matches: u64,
    /// `matches / evaluated`.
    pub match_rate: f64,
    /// Matches where this deny policy is enforced (so it alone denies the
    /// request); a canary outside its slice matches without denying.
    pub would_deny: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub allow_to_deny: Change,
    pub deny_to_allow: Change,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub count: u64,
    pub examples: Vec<ChangeExample>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeExample {
    pub line: u64,
    pub request_id: Option<String>,
    /// allow→deny: the candidate's denying policy; deny→allow: the policy
    /// that denied before (none when the default did).
    pub policy_id: Option<String>,
}

/// Where a simulation's baseline decisions come from.
pub enum Baseline<'a> {
    /// Each record's recorded decision; input samples have none.
    Recorded,
    /// A bundle evaluated as a sidecar would (`name@revision`).
    Bundle(&'a PolicySet, String),
}

/// A simulation in progress.
pub struct Simulation<'a> {
    bundle: String,
    candidate: &'a PolicySet,
    baseline: Baseline<'a>,
    max_fp_rate: f64,
    /// Lines read, skipped ones included (blank lines are not samples).
    samples: u64,
    evaluated: u64,
    skipped: Skipped,
    /// Per candidate policy (index into the set): matches, would-deny.
    matches: Vec<(u64, u64)>,
    changes: Changes,
    labelled: u64,
    labelled_denied: u64,
    false_positives: u64,
    /// Samples the candidate denies that the baseline did not (or that have
    /// no baseline).
    newly_denied: u64,
    /// Samples that carried a recorded decision (record form).
    recorded_samples: u64,
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0
    }
}

impl<'a> Simulation<'a> {
    pub fn new(
        bundle: impl Into<String>,
        candidate: &'a PolicySet,
        baseline: Baseline<'a>,
        max_fp_rate: f64,
    ) -> Simulation<'a> {
        Simulation {
            bundle: bundle.into(),
            matches: vec![(0, 0); candidate.policies().len()],
            candidate,
            baseline,
            max_fp_rate,
            samples: 0,
            evaluated: 0,
            skipped: Skipped::default(),
            changes: Changes::default(),
            labelled: 0,
            labelled_denied: 0,
            false_positives: 0,
            newly_denied: 0,
            recorded_samples: 0,
        }
    }

    /// Read and evaluate line number `line` (1-based). Blank lines are
    /// ignored; a line that is no sample is counted and listed as skipped.
    pub fn add_line(&mut self, line: u64, bytes: &[u8]) {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.samples += 1;
        match sample::parse(bytes) {
            Ok(sample) => self.evaluate(line, sample),
            Err(error) => {
                self.skipped.count += 1;
                if self.skipped.examples.len() < MAX_EXAMPLES {
                    self.skipped.examples.push(SkippedLine { line, error });
                }
            }
        }
    }

    fn evaluate(&mut self, line: u64, sample: Sample) {
        self.evaluated += 1;
        if sample.recorded.is_some() {
            self.recorded_samples += 1;
        }
        // An enforced policy that cannot be evaluated denies, like the
        // sidecar's default `--on-error deny`.
        let outcome = self.candidate.decide(&sample.input, Verdict::Deny);
        for m in &outcome.matches {
            let policy = self.candidate.get(m.policy);
            let counts = &mut self.matches[m.policy];
            counts.0 += 1;
            if m.mode == Mode::Enforce && policy.effect() == Verdict::Deny {
                counts.1 += 1;
            }
        }
        let candidate = outcome.verdict;
        let deciding = |set: &PolicySet, index: Option<usize>| {
            index.map(|i| set.get(i).id.as_ref().to_owned())
        };
        let (baseline, baseline_policy) = match &self.baseline {
            Baseline::Bundle(set, _) => {
                let before = set.decide(&sample.input, Verdict::Deny);
                (Some(before.verdict), deciding(set, before.deciding))
            }
            Baseline::Recorded => (sample.recorded, sample.recorded_policy),
        };
        match (baseline, candidate) {
            (Some(Verdict::Allow), Verdict::Deny) => push_example(
                &mut self.changes.allow_to_deny,
                line,
                &sample.request_id,
                deciding(self.candidate, outcome.deciding),
            ),
            (Some(Verdict::Deny), Verdict::Allow) => push_example(
                &mut self.changes.deny_to_allow,
                line,
                &sample.request_id,
                baseline_policy,
            ),
            _ => {}
        }
        if candidate == Verdict::Deny && baseline != Some(Verdict::Deny) {
            self.newly_denied += 1;
        }
        if let Some(right) = sample.right {
            self.labelled += 1;
            if candidate == Verdict::Deny {
                self.labelled_denied += 1;
                if right == Verdict::Allow {
                    self.false_positives += 1;
                }
            }
        }
    }

    /// The report (the simulation can go on afterwards).
    pub fn report(&self) -> Report {
        // The rule compares the exact rate; the report shows it rounded.
        let exact_rate = (self.labelled_denied > 0)
            .then(|| self.false_positives as f64 / self.labelled_denied as f64);
        let (recommended_canary_percent, recommendation) = recommend(
            self.evaluated,
            self.newly_denied,
            exact_rate,
            self.max_fp_rate,
        );
        let false_positive_rate =
            (self.labelled_denied > 0).then(|| rate(self.false_positives, self.labelled_denied));
        Report {
            bundle: self.bundle.clone(),
            baseline: match &self.baseline {
                Baseline::Recorded if self.recorded_samples > 0 => "recorded".into(),
                Baseline::Recorded => "none".into(),
                Baseline::Bundle(_, name) => name.clone(),
            },
            samples: self.samples,
            evaluated: self.evaluated,
            skipped: self.skipped.clone(),
            policies: self
                .candidate
                .policies()
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state().is_evaluated())
                .map(|(i, p)| PolicyImpact {
                    policy_id: p.id.as_ref().to_owned(),
                    matches: self.matches[i].0,
                    match_rate: rate(self.matches[i].0, self.evaluated),
                    would_deny: self.matches[i].1,
                })
                .collect(),
            changes: self.changes.clone(),
            labelled: self.labelled,
            false_positives: self.false_positives,
            false_positive_rate,
            recommended_canary_percent,
            recommendation,
        }
    }
}

fn push_example(
    change: &mut Change,
    line: u64,
    request_id: &Option<String>,
    policy_id: Option<String>,
) {
    change.count += 1;
    if change.examples.len() < MAX_EXAMPLES {
        change.examples.push(ChangeExample {
            line,
            request_id: request_id.clone(),
            policy_id,
        });
    }
}

/// The canary percentage to start with, and one sentence saying why:
/// 0 when no sample was evaluated, or when the false-positive rate is
/// above `max_fp_rate`; otherwise by the
/// share `r` of evaluated samples the candidate newly denies: 10 when
/// r ≤ 0.1%, 5 when r ≤ 1%, 2 when r ≤ 5%, else 1.
pub fn recommend(
    evaluated: u64,
    newly_denied: u64,
    false_positive_rate: Option<f64>,
    max_fp_rate: f64,
) -> (u8, String) {
    let percent = |x: f64| format!("{:.2}%", x * 100.0);
    if let Some(fp) = false_positive_rate.filter(|&fp| fp > max_fp_rate) {
        return (
            0,
            format!(
                "0%: the false-positive rate {} is above the {} limit, so fix the rule before any canary",
                percent(fp),
                percent(max_fp_rate)
            ),
        );
    }
    if evaluated == 0 {
        // No evidence either way: the widest canary would be a guess.
        return (
            0,
            "0%: no sample could be evaluated (none carries an input document), so there is nothing to base a canary on".to_owned(),
        );
    }
    let r = newly_denied as f64 / evaluated as f64;
    let (chosen, band) = if r <= 0.001 {
        (10, "at most 0.1%")
    } else if r <= 0.01 {
        (5, "at most 1%")
    } else if r <= 0.05 {
        (2, "at most 5%")
    } else {
        (1, "more than 5%")
    };
    let fp = match false_positive_rate {
        Some(fp) => format!(
            "a false-positive rate of {} (limit {})",
            percent(fp),
            percent(max_fp_rate)
        ),
        None => "no labelled sample it denies to measure false positives on".to_owned(),
    };
    (
        chosen,
        format!(
            "{chosen}%: the candidate newly denies {newly_denied} of {evaluated} samples ({}, {band}) with {fp}",
            percent(r)
        ),
    )
}

impl Report {
    /// The report for a person: the same numbers as the JSON, aligned.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let rate = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{:.2}%", r * 100.0));
        let _ = writeln!(out, "bundle      {}", self.bundle);
        let _ = writeln!(out, "baseline    {}", self.baseline);
        let _ = writeln!(
            out,
            "samples     {} ({} evaluated, {} skipped)",
            self.samples, self.evaluated, self.skipped.count
        );
        let _ = writeln!(
            out,
            "labelled    {} ({} false positives, rate {})",
            self.labelled,
            self.false_positives,
            rate(self.false_positive_rate)
        );
        let _ = writeln!(out);
        let width = self
            .policies
            .iter()
            .map(|p| p.policy_id.len())
            .chain(std::iter::once("POLICY".len()))
            .max()
            .unwrap_or(6);
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>10}  {:>10}",
            "POLICY", "MATCHES", "MATCH RATE", "WOULD DENY"
        );
        for p in &self.policies {
            let _ = writeln!(
                out,
                "{:<width$}  {:>9}  {:>10}  {:>10}",
                p.policy_id,
                p.matches,
                rate(Some(p.match_rate)),
                p.would_deny
            );
        }
        for (title, change) in [
            ("allow → deny", &self.changes.allow_to_deny),
            ("deny → allow", &self.changes.deny_to_allow),
        ] {
            let _ = writeln!(out, "\n{title}: {}", change.count);
            for e in &change.examples {
                let _ = writeln!(
                    out,
                    "  line {:<8} request {:<36} policy {}",
                    e.line,
                    e.request_id.as_deref().unwrap_or("-"),
                    e.policy_id.as_deref().unwrap_or("(default)")
                );
            }
        }
        if self.skipped.count > 0 {
            let _ = writeln!(out, "\nskipped: {}", self.skipped.count);
            for s in &self.skipped.examples {
                let _ = writeln!(out, "  line {:<8} {}", s.line, s.error);
            }
        }
        let _ = writeln!(
            out,
            "\nrecommended canary: {}%\n{}",
            self.recommended_canary_percent, self.recommendation
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommended_percent_follows_the_new_denies_and_the_false_positive_limit() {
        let pick = |newly, fp| recommend(10_000, newly, fp, 0.05).0;
        assert_eq!(pick(10, None), 10); // 0.1%
        assert_eq!(pick(11, Some(0.0)), 5);
        assert_eq!(pick(100, Some(0.05)), 5); // at the limit is not above it
        assert_eq!(pick(101, None), 2);
        assert_eq!(pick(500, None), 2);
        assert_eq!(pick(501, None), 1);
        assert_eq!(pick(1, Some(0.0501)), 0);
        let (nothing, why_not) = recommend(0, 0, None, 0.05);
        assert_eq!(nothing, 0, "no samples, no evidence: {why_not}");
        assert!(
            why_not.contains("no sample could be evaluated"),
            "{why_not}"
        );
        let (_, why) = recommend(10_000, 1, Some(0.2), 0.05);
        assert!(why.contains("20.00%") && why.contains("5.00%"), "{why}");
    }
}
