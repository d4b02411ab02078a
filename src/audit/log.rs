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
        let mut involved: Vec<&str> = record.shadow.iter().map(|s| s.policy_id.as_str()).collect();
        if let Some(p) = record.policy_id.as_deref() {
            involved.push(p);
        }
        involved.sort_unstable();
        involved.dedup();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for policy in involved {
            if !inner.by_policy.contains_key(policy) {
                inner.by_policy.insert(policy.to_owned(), VecDeque::new());
            }
            let Some(ring) = inner.by_policy.get_mut(policy) else {
                continue;
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
