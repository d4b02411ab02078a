//! `POST /v1/simulate`: the simulation report (docs/simulation.md) of
//! candidate policies against the live bundle, over stored records that
//! carry their input, baseline = their recorded decision, labels from
//! feedback.
//!
//! The records go through exactly the lines `GET /v1/audit/export` writes,
//! in its order, into the same [`Simulation`] the CLI uses, so
//! `sentinelnet simulate` on an export of the same records (with the live
//! bundle plus the candidates as its bundle) answers the same report.

use super::super::decisions::Decisions;
use super::super::registry::{Registry, RegistryError};
use super::super::store::decisions::DecisionFilter;
use crate::policy::{Policy, PolicyDocument, State};
use crate::simulate::report::{Baseline, DEFAULT_MAX_FP_RATE};
use crate::simulate::{live_with_candidates, Report, Simulation};
use crate::timestamp::parse_rfc3339;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// Most records one simulation reads.
pub(crate) const MAX_RECORDS: i64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SimulateRequest {
    bundle: String,
    policies: Vec<Value>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    max_fp_rate: Option<f64>,
}

/// The candidate policies, each enforced as if active, checked like a
/// bundle's files (errors name `/policies/N…`).
fn candidates(policies: &[Value]) -> Result<Vec<PolicyDocument>, RegistryError> {
    if policies.is_empty() {
        return Err(RegistryError::body(
            "at /policies: give at least one candidate policy".into(),
        ));
    }
    let mut ids = BTreeSet::new();
    let mut documents = Vec::new();
    for (i, value) in policies.iter().enumerate() {
        // Version and state may be left out, as when creating a policy:
        // a candidate is evaluated as active whatever it says.
        let mut value = value.clone();
        if let Value::Object(fields) = &mut value {
            fields.entry("version").or_insert(Value::from(1));
            fields
                .entry("state")
                .or_insert(Value::from(State::Active.as_str()));
        }
        let mut document: PolicyDocument =
            crate::bundle::typed_at(&value).map_err(|(at, message)| {
                RegistryError::body(format!("at /policies/{i}{at}: {message}"))
            })?;
        document.state = State::Active;
        document.canary_percent = 0.0;
        Policy::compile(document.clone()).map_err(|e| {
            RegistryError::body(format!(
                "at /policies/{i}{}: policy \"{}\": {}",
                e.pointer, e.policy, e.message
            ))
        })?;
        if !ids.insert(document.id.clone()) {
            return Err(RegistryError::body(format!(
                "at /policies/{i}/id: policy \"{}\" is given twice",
                document.id
            )));
        }
        documents.push(document);
    }
    Ok(documents)
}

fn time_filter(name: &str, value: Option<&str>) -> Result<Option<i64>, RegistryError> {
    value
        .map(|text| {
            parse_rfc3339(text).ok_or_else(|| {
                RegistryError::body(format!("at /{name}: \"{text}\" is not an RFC 3339 time"))
            })
        })
        .transpose()
}

pub(crate) async fn simulate(
    registry: &Registry,
    decisions: &Decisions,
    body: &[u8],
) -> Result<Report, RegistryError> {
    let request: SimulateRequest = crate::bundle::parse_json("request body", body)
        .map(|(typed, _)| typed)
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let candidates = candidates(&request.policies)?;
    let limit = match request.limit {
        None => MAX_RECORDS,
        Some(n) if (1..=MAX_RECORDS).contains(&n) => n,
        Some(n) => {
            return Err(RegistryError::body(format!(
                "at /limit: {n} is not between 1 and {MAX_RECORDS}"
            )))
        }
    };
    let max_fp_rate = match request.max_fp_rate {
        None => DEFAULT_MAX_FP_RATE,
        Some(r) if (0.0..=1.0).contains(&r) => r,
        Some(r) => {
            return Err(RegistryError::body(format!(
                "at /maxFpRate: {r} is not between 0 and 1"
            )))
        }
    };
    let filter = DecisionFilter {
        since_us: time_filter("since", request.since.as_deref())?,
        until_us: time_filter("until", request.until.as_deref())?,
        with_input_only: true,
        ..DecisionFilter::default()
    };
    let (live, default_decision) = registry.live_documents(&request.bundle).await?;
    let set = live_with_candidates(live, candidates, default_decision).map_err(|e| {
        RegistryError::body(format!(
            "policy \"{}\" at {}: {}",
            e.policy, e.pointer, e.message
        ))
    })?;
    let mut simulation = Simulation::new(
        request.bundle.as_str(),
        &set,
        Baseline::Recorded,
        max_fp_rate,
    );
    let mut line = 0u64;
    let mut after = None;
    'pages: loop {
        let (page, next) = decisions.export_page(&filter, after).await?;
        // Deciding a page of records is CPU work: keep it off the
        // threads that serve other requests' I/O.
        let done = tokio::task::block_in_place(|| {
            for record in &page {
                if line as i64 >= limit {
                    return true;
                }
                line += 1;
                simulation.add_line(line, record);
            }
            false
        });
        if done {
            break 'pages;
        }
        match next {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    Ok(simulation.report())
}
