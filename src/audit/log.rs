//! The recent decisions, kept in memory for `/v1/decisions` and explain.
//! Written by the audit thread only; never touched by the check path.

use super::record::DecisionRecord;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Decisions kept for `/v1/decisions`.
pub const RECENT_CAPACITY: usize = 1_000;
/// Decisions kept per policy for explain.
pub const PER_POLICY_CAPACITY: usize = 100;

#[derive(Default)]
pub struct DecisionLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Arc<DecisionRecord>>,
    by_policy: HashMap<String, VecDeque<Arc<DecisionRecord>>>,
}

impl DecisionLog {
    pub fn push(&self, record: DecisionRecord) {
        let record = Arc::new(record);
        let shadowed = record.shadow.iter().map(|s| s.policy_id.as_str());
        let deciding = record.policy_id.as_deref();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, policy) in deciding.into_iter().chain(shadowed).enumerate() {
            // A policy appears once per record (the few shadow entries are
            // checked against those before them instead of collected).
            let seen_before = deciding
                .into_iter()
                .chain(record.shadow.iter().map(|s| s.policy_id.as_str()))
                .take(i)
                .any(|earlier| earlier == policy);
            if seen_before {
                continue;
            }
            let ring = match inner.by_policy.get_mut(policy) {
                Some(ring) => ring,
                None => inner.by_policy.entry(policy.to_owned()).or_default(),
            };
            if ring.len() == PER_POLICY_CAPACITY {
                ring.pop_front();
            }
            ring.push_back(record.clone());
        }
        if inner.recent.len() == RECENT_CAPACITY {
            inner.recent.pop_front();
        }
        inner.recent.push_back(record);
    }

    /// Up to `limit` most recent decisions, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Arc<DecisionRecord>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.recent.iter().rev().take(limit).cloned().collect()
    }

    /// The most recent decisions that involved `policy` (decided or shadowed), newest first.
    pub fn for_policy(&self, policy: &str) -> Vec<Arc<DecisionRecord>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_policy
            .get(policy)
            .map(|ring| ring.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::ShadowEntry;
    use std::borrow::Cow;

    fn record(id: &str, deciding: Option<&str>, shadowed: &[&str]) -> DecisionRecord {
        DecisionRecord {
            kind: Cow::Borrowed("policy.decision"),
            id: id.into(),
            ts: String::new(),
            node: "n".into(),
            chain_id: String::new(),
            request_id: String::new(),
            decision: Cow::Borrowed("allow"),
            status: 200,
            reason: Cow::Borrowed("policy"),
            policy_id: deciding.map(str::to_owned),
            policy_version: deciding.map(|_| 1),
            bundle: String::new(),
            bundle_revision: String::new(),
            rationale: String::new(),
            evidence_refs: vec![],
            evidence: Default::default(),
            shadow: shadowed
                .iter()
                .map(|p| ShadowEntry {
                    mode: Cow::Borrowed("simulating"),
                    policy_id: (*p).to_owned(),
                    policy_version: 1,
                    would_decide: Cow::Borrowed("deny"),
                })
                .collect(),
            latency_us: 0,
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_record_is_filed_once_under_every_policy_it_involves() {
        let log = DecisionLog::default();
        log.push(record("d1", Some("a"), &["b", "a", "b"]));
        log.push(record("d2", None, &["b"]));
        let ids = |policy: &str| -> Vec<String> {
            log.for_policy(policy)
                .iter()
                .map(|r| r.id.clone())
                .collect()
        };
        assert_eq!(ids("a"), vec!["d1"]);
        assert_eq!(ids("b"), vec!["d2", "d1"], "newest first, each once");
        assert!(ids("c").is_empty());
        for n in 0..PER_POLICY_CAPACITY + 5 {
            log.push(record(&format!("x{n}"), Some("a"), &[]));
        }
        assert_eq!(ids("a").len(), PER_POLICY_CAPACITY);
        assert_eq!(log.recent(3).len(), 3);
    }
}
