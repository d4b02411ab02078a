//! Decision records: handed off by the check path without waiting, turned
//! into chained `policy.decision` records on the audit thread, kept in a
//! bounded in-memory log for the admin API.
//!
//! The check path only builds a [`DecisionEvent`] (no serialisation, no
//! hashing) and `try_send`s it into a bounded queue; a full queue drops the
//! event and counts it. Everything else happens on a dedicated thread, so
//! audit work never competes with checks on the check runtime.

pub mod ids;
pub mod log;
pub mod record;

use crate::bundle::Bundle;
use crate::policy::{Mode, Outcome, Reason, Verdict};
use log::DecisionLog;
use prometheus::{IntCounter, IntGauge};
use record::{Chain, DecisionRecord, ShadowEntry, RECORD_TYPE};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Events waiting for the audit thread, at most.
pub const QUEUE_CAPACITY: usize = 16_384;

/// What the check path knows about one decision.
pub struct DecisionEvent {
    pub id: Uuid,
    pub at: SystemTime,
    pub request_id: String,
    pub verdict: Verdict,
    pub status: u16,
    pub reason: Reason,
    /// The bundle that decided (absent when none was active).
    pub bundle: Option<Arc<Bundle>>,
    pub outcome: Option<Outcome>,
    pub evidence: Map<String, Value>,
    pub latency_us: u64,
}

/// Counters the audit pipeline keeps (registered by `admin::metrics`).
#[derive(Clone)]
pub struct AuditCounters {
    pub shipped: IntCounter,
    pub dropped: IntCounter,
    pub queue_depth: IntGauge,
    pub spool_bytes: IntGauge,
}

/// The check path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<DecisionEvent>,
    counters: AuditCounters,
}

impl Recorder {
    pub fn record(&self, event: DecisionEvent) {
        if self.tx.try_send(event).is_err() {
            self.counters.dropped.inc();
        }
    }

    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The audit thread. Joins once every [`Recorder`] is dropped and the queue
/// is drained.
pub struct Pipeline {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    pub fn start(
        node: String,
        log: Arc<DecisionLog>,
        counters: AuditCounters,
    ) -> (Recorder, Pipeline) {
        let (tx, mut rx) = mpsc::channel::<DecisionEvent>(QUEUE_CAPACITY);
        let recorder = Recorder {
            tx,
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sentinel-audit".into())
            .spawn(move || {
                let mut chain = Chain::fresh(Uuid::now_v7().to_string());
                while let Some(event) = rx.blocking_recv() {
                    let mut record = to_record(&node, event);
                    chain.link(&mut record);
                    log.push(record);
                    counters.queue_depth.set(rx.len() as i64);
                }
            })
            .ok();
        (recorder, Pipeline { thread })
    }

    /// Wait for the queue to drain (all recorders must be dropped first).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Build the record for an event (everything but the chain fields).
pub fn to_record(node: &str, event: DecisionEvent) -> DecisionRecord {
    let id = event.id.to_string();
    let bundle = event.bundle.as_deref();
    let policies = bundle.map(|b| &b.policies);
    let deciding = event
        .outcome
        .as_ref()
        .and_then(|o| o.deciding)
        .zip(policies)
        .map(|(i, set)| set.get(i));
    let rationale = match (event.reason, deciding) {
        (Reason::Policy, Some(p)) if p.document.description.is_empty() => {
            format!("{} matched", p.id)
        }
        (Reason::Policy, Some(p)) => format!("{} matched: {}", p.id, p.document.description),
        (Reason::Error, Some(p)) => format!(
            "{} could not be evaluated; the on-error decision ({}) applied",
            p.id,
            event.verdict.as_str()
        ),
        (Reason::Error, None) => format!(
            "no policy bundle is active; the on-error decision ({}) applied",
            event.verdict.as_str()
        ),
        _ => format!(
            "no enforced policy matched; the bundle default ({}) applied",
            event.verdict.as_str()
        ),
    };
    let shadow = match (&event.outcome, policies) {
        (Some(outcome), Some(set)) => outcome
            .matches
            .iter()
            .filter(|m| m.mode != Mode::Enforce)
            .map(|m| {
                let p = set.get(m.policy);
                ShadowEntry {
                    policy_id: p.id.to_string(),
                    policy_version: p.version(),
                    mode: p.state().as_str().to_owned(),
                    would_decide: p.effect().as_str().to_owned(),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut evidence_refs = vec![format!("decision:{id}")];
    if let Some(b) = bundle {
        evidence_refs.push(format!("bundle:{}@{}", b.name, b.revision));
    }
    if let Some(p) = deciding {
        evidence_refs.push(format!("policy:{}@{}", p.id, p.version()));
    }
    DecisionRecord {
        kind: RECORD_TYPE.to_owned(),
        ts: format_timestamp(event.at),
        node: node.to_owned(),
        chain_id: String::new(),
        request_id: event.request_id,
        decision: event.verdict.as_str().to_owned(),
        status: event.status,
        reason: event.reason.as_str().to_owned(),
        policy_id: deciding.map(|p| p.id.to_string()),
        policy_version: deciding.map(|p| p.version()),
        bundle: bundle.map(|b| b.name.to_string()).unwrap_or_default(),
        bundle_revision: bundle.map(|b| b.revision.to_string()).unwrap_or_default(),
        rationale,
        evidence_refs,
        evidence: event.evidence,
        shadow,
        latency_us: event.latency_us,
        seq: 0,
        prev_hash: String::new(),
        hash: String::new(),
        id,
    }
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-22T23:59:59.123456Z`.
pub fn format_timestamp(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_391_999_123_456);
        assert_eq!(format_timestamp(at), "2026-11-22T23:59:59.123456Z");
        assert_eq!(
            format_timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
