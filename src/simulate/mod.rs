//! Simulation: what a candidate bundle would decide on recorded traffic,
//! against what was decided (or what a baseline bundle decides), and the
//! canary percentage that is safe to start with (docs/simulation.md).
//!
//! ```text
//! NDJSON line → [`sample::parse`] (record with input | {"input", "label"?})
//!   → candidate PolicySet.decide (the sidecar's compiled engine, on a JSON view)
//!   → [`Simulation::add`] (counters and at most 10 examples per kind)
//!   → [`Simulation::finish`] → [`Report`]
//! ```
//!
//! The CLI (`sentinelnet simulate`) and central (`POST /v1/simulate`) feed the
//! same lines through the same code, so they answer the same report. Memory
//! does not grow with the number of samples: only counters per policy and
//! the capped example lists are kept. A sample costs one JSON parse of its
//! line (fields other than `input` are skipped, not built) and one decision.

pub mod report;
pub mod sample;

pub use report::{Report, Simulation};

use crate::policy::{Policy, PolicyDocument, PolicyError, PolicySet, State, Verdict};

/// The policies a simulation enforces: every policy of the bundle that is
/// not deprecated, as the sidecar would enforce it once live. Draft and
/// simulating policies (the changes being simulated) are enforced as if
/// active; a canary keeps its percentage (so the recorded decisions of a
/// live canary are reproduced); active ones are active.
pub fn candidate_set(
    documents: impl IntoIterator<Item = PolicyDocument>,
    default_decision: Verdict,
) -> Result<PolicySet, PolicyError> {
    let mut policies = Vec::new();
    for mut document in documents {
        match document.state {
            State::Deprecated => continue,
            State::Draft | State::Simulating => document.state = State::Active,
            State::Canary | State::Active => {}
        }
        policies.push(Policy::compile(document)?);
    }
    Ok(PolicySet::new(policies, default_decision))
}

/// A live bundle with candidate policies added (or replacing the live
/// policy with the same id), as central's `POST /v1/simulate` evaluates
/// it: live policies as sidecars evaluate them (simulating ones in shadow,
/// canaries at their share), the candidates enforced as if active.
pub fn live_with_candidates(
    live: impl IntoIterator<Item = PolicyDocument>,
    candidates: impl IntoIterator<Item = PolicyDocument>,
    default_decision: Verdict,
) -> Result<PolicySet, PolicyError> {
    let candidates: Vec<PolicyDocument> = candidates
        .into_iter()
        .map(|mut d| {
            d.state = State::Active;
            d.canary_percent = 0.0;
            d
        })
        .collect();
    let mut policies = Vec::new();
    for document in live {
        if candidates.iter().any(|c| c.id == document.id) {
            continue;
        }
        policies.push(Policy::compile(document)?);
    }
    for document in candidates {
        policies.push(Policy::compile(document)?);
    }
    Ok(PolicySet::new(policies, default_decision))
}

/// Feed every line of `reader` to `simulation`, one line in memory at a time.
pub fn feed<R: std::io::BufRead>(
    simulation: &mut Simulation<'_>,
    mut reader: R,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(4096);
    let mut line = 0;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(());
        }
        line += 1;
        simulation.add_line(line, &buffer);
    }
}
