//! The recent decisions, kept in memory for `/v1/decisions` and explain.
//! Written by the audit thread (records) and the bundle activator (which
//! policies exist); never touched by the check path.
//!
//! Memory is bounded: 1,000 recent records, and 100 per policy of the
//! active bundle. Activating a bundle forgets the per-policy lists of
//! policies it no longer has, and records of a replaced bundle still in
//! flight are not filed under policies the active one lacks.

use super::record::DecisionRecord;
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// The active bundle's policy ids; `None` until a bundle is announced.
    known: Option<HashSet<String>>,
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
            let unknown = inner.known.as_ref().is_some_and(|k| !k.contains(policy));
            if seen_before || unknown {
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

    /// A bundle with these policies is now active: forget every other
    /// policy's decisions and file no new ones under them.
    pub fn retain_policies<'a>(&self, policies: impl IntoIterator<Item = &'a str>) {
        let known: HashSet<String> = policies.into_iter().map(str::to_owned).collect();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by_policy.retain(|id, _| known.contains(id));
        inner.known = Some(known);
    }

    /// Policies with decisions kept for explain.
    #[cfg(test)]
    fn tracked_policies(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_policy
            .len()
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
            input: None,
            masked: vec![],
            sig: None,
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

    #[test]
    fn the_per_policy_index_is_bounded_by_the_active_bundle() {
        let log = DecisionLog::default();
        for n in 0..50 {
            log.push(record(&format!("d{n}"), Some(&format!("old-{n}")), &[]));
        }
        assert_eq!(log.tracked_policies(), 50);
        log.retain_policies(["kept", "old-7"]);
        assert_eq!(
            log.tracked_policies(),
            1,
            "only old-7 is still in the bundle"
        );
        // A late record of the replaced bundle is not filed under a removed policy.
        log.push(record("late", Some("old-9"), &["kept"]));
        assert!(log.for_policy("old-9").is_empty());
        assert_eq!(log.for_policy("kept").len(), 1);
        assert_eq!(log.tracked_policies(), 2);
        assert_eq!(
            log.recent(1)[0].id,
            "late",
            "the recent list keeps every record"
        );
    }
}
