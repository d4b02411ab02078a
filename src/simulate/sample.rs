//! One sample line, in either of the two forms a simulation reads:
//!
//! - a decision record carrying `input` (as central exports it): the
//!   baseline is its recorded `decision`; its `label` (`false_positive` /
//!   `true_positive`) judges that recorded decision;
//! - `{"input": DOC, "requestId"?: …, "label"?: "allow" | "deny"}`: the label
//!   is the right decision; there is no recorded decision.
//!
//! Only the fields a simulation needs are read; the rest of a record
//! (evidence, shadow, chain fields) is skipped by the parser, not built.

use crate::policy::Verdict;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// A sample ready to evaluate.
#[derive(Debug)]
pub struct Sample {
    pub input: Value,
    pub request_id: Option<String>,
    /// The recorded decision (record form only).
    pub recorded: Option<Verdict>,
    /// The recorded deciding policy (record form only).
    pub recorded_policy: Option<String>,
    /// The right decision, when the sample is labelled.
    pub right: Option<Verdict>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default, borrow)]
    decision: Option<Cow<'a, str>>,
    #[serde(rename = "requestId", default, borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(rename = "policyId", default, borrow)]
    policy_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    label: Option<Cow<'a, str>>,
}

fn verdict(text: &str) -> Option<Verdict> {
    match text {
        "allow" => Some(Verdict::Allow),
        "deny" => Some(Verdict::Deny),
        _ => None,
    }
}

fn opposite(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Allow => Verdict::Deny,
        Verdict::Deny => Verdict::Allow,
    }
}

/// Read one line; the error says why it is not a sample.
pub fn parse(line: &[u8]) -> Result<Sample, String> {
    // One UTF-8 check of the whole line (word at a time) instead of one per
    // string inside it.
    let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let parsed: Line<'_> = serde_json::from_str(line).map_err(|e| {
        if e.is_data() {
            format!("not a sample: {e}")
        } else {
            format!("not JSON: {e}")
        }
    })?;
    let is_record = match parsed.kind.as_deref() {
        Some("policy.decision") => true,
        Some(other) => {
            return Err(format!(
                "type \"{other}\" is not a decision record (\"policy.decision\")"
            ))
        }
        None => false,
    };
    let input = match parsed.input {
        Some(input @ Value::Object(_)) => input,
        Some(_) => return Err("\"input\" must be a JSON object (the input document)".into()),
        None if is_record => {
            return Err(
                "decision record without \"input\" (the sidecar's --record-input left it out)"
                    .into(),
            )
        }
        None => {
            return Err(
                "neither a decision record with \"input\" nor {\"input\": …, \"label\"?: …}".into(),
            )
        }
    };
    let request_id = parsed
        .request_id
        .map(Cow::into_owned)
        .or_else(|| {
            input
                .pointer("/request/id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|id| !id.is_empty());
    if is_record {
        let recorded = parsed
            .decision
            .as_deref()
            .and_then(verdict)
            .ok_or_else(|| "decision record without a \"decision\" of allow or deny".to_owned())?;
        let right = match parsed.label.as_deref() {
            None => None,
            Some("true_positive") => Some(recorded),
            Some("false_positive") => Some(opposite(recorded)),
            Some(other) => {
                return Err(format!(
                    "label \"{other}\" of a decision record must be false_positive or true_positive"
                ))
            }
        };
        Ok(Sample {
            input,
            request_id,
            recorded: Some(recorded),
            recorded_policy: parsed.policy_id.map(Cow::into_owned),
            right,
        })
    } else {
        let right = match parsed.label.as_deref() {
            None => None,
            Some(text) => Some(verdict(text).ok_or_else(|| {
                format!("label \"{text}\" of an input sample must be allow or deny (the right decision)")
            })?),
        };
        Ok(Sample {
            input,
            request_id,
            recorded: None,
            recorded_policy: None,
            right,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_judged_relative_to_their_recorded_decision() {
        let line = br#"{"type":"policy.decision","id":"x","decision":"deny","policyId":"p","requestId":"r1","label":"false_positive","input":{"request":{"id":"r1"}},"shadow":[{"a":1}]}"#;
        let s = parse(line).expect("a sample");
        assert_eq!(s.recorded, Some(Verdict::Deny));
        assert_eq!(s.right, Some(Verdict::Allow));
        assert_eq!(s.recorded_policy.as_deref(), Some("p"));
        assert_eq!(s.request_id.as_deref(), Some("r1"));
        let s = parse(br#"{"type":"policy.decision","decision":"allow","label":"true_positive","policyId":null,"input":{}}"#).expect("a sample");
        assert_eq!((s.right, s.recorded_policy), (Some(Verdict::Allow), None));
    }

    #[test]
    fn plain_inputs_take_their_label_as_the_right_decision() {
        let s = parse(br#"{"input":{"request":{"id":"from-input"}},"label":"deny"}"#)
            .expect("a sample");
        assert_eq!(
            (s.recorded, s.right, s.request_id.as_deref()),
            (None, Some(Verdict::Deny), Some("from-input"))
        );
    }

    #[test]
    fn lines_that_are_no_sample_say_why() {
        for (line, needle) in [
            (&b"{not json"[..], "not JSON"),
            (
                br#"{"type":"policy.decision","decision":"deny"}"#,
                "without \"input\"",
            ),
            (br#"{"hello":1}"#, "neither"),
            (br#"{"input":[1]}"#, "JSON object"),
            (br#"{"input":{},"label":"false_positive"}"#, "allow or deny"),
            (
                br#"{"type":"policy.decision","decision":"deny","input":{},"label":"maybe"}"#,
                "false_positive or true_positive",
            ),
            (br#"{"type":"other","input":{}}"#, "not a decision record"),
            (br#"[1,2]"#, "not a sample"),
        ] {
            let e = parse(line).expect_err("skipped");
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }
}
