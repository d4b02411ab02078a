//! The recent decisions, kept in memory for `/v1/decisions` and explain.
//! Written by the audit thread (records) and the bundle activator (which
//! policies exist); never touched by the check path.
//!
//! Records are kept as the lines the chain wrote (shared with the backlog,
//! not copied): one allocation per record to let go of, where a parsed
//! record was ~20, cold by the time the log evicted it. Readers parse the
//! few lines they show.
//!
//! Memory is bounded: 1,000 recent records, and 100 per policy of the
//! active bundle. Activating a bundle forgets the per-policy lists of
//! policies it no longer has, and records of a replaced bundle still in
//! flight are not filed under policies the active one lacks.

use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// Decisions kept for `/v1/decisions`.
pub const RECENT_CAPACITY: usize = 1_000;
/// Decisions kept per policy for explain.
pub const PER_POLICY_CAPACITY: usize = 100;

type PolicyMap<V> = HashMap<String, V, foldhash::fast::FixedState>;

#[derive(Default)]
pub struct DecisionLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Record lines (NDJSON without the newline), oldest first.
    recent: VecDeque<Bytes>,
    by_policy: PolicyMap<VecDeque<Bytes>>,
    /// The active bundle's policy ids; `None` until a bundle is announced.
    known: Option<HashSet<String, foldhash::fast::FixedState>>,
}

impl DecisionLog {
    /// Keep a record's `line`, filed under the `policies` it involves (the
    /// deciding one, then those shadowing; repeats are filed once).
    pub fn push<'a>(&self, line: Bytes, policies: impl Iterator<Item = &'a str> + Clone) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, policy) in policies.clone().enumerate() {
            // A policy appears once per record (the few shadow entries are
            // checked against those before them instead of collected).
            let seen_before = policies.clone().take(i).any(|earlier| earlier == policy);
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
            ring.push_back(line.clone());
        }
        if inner.recent.len() == RECENT_CAPACITY {
            inner.recent.pop_front();
        }
        inner.recent.push_back(line);
    }

    /// A bundle with these policies is now active: forget every other
    /// policy's decisions and file no new ones under them.
    pub fn retain_policies<'a>(&self, policies: impl IntoIterator<Item = &'a str>) {
        let known: HashSet<String, _> = policies.into_iter().map(str::to_owned).collect();
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

    /// Up to `limit` most recent decisions' lines, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.recent.iter().rev().take(limit).cloned().collect()
    }

    /// The lines of the most recent decisions that involved `policy`
    /// (decided or shadowed), newest first.
    pub fn for_policy(&self, policy: &str) -> Vec<Bytes> {
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

    /// File a line carrying only `id` under `deciding` and `shadowed`.
    fn push(log: &DecisionLog, id: &str, deciding: Option<&str>, shadowed: &[&str]) {
        let line = Bytes::from(serde_json::json!({ "id": id }).to_string());
        log.push(line, deciding.into_iter().chain(shadowed.iter().copied()));
    }

    fn id_of(line: &Bytes) -> String {
        serde_json::from_slice::<serde_json::Value>(line).map_or_else(
            |e| format!("unreadable: {e}"),
            |v| v["id"].as_str().unwrap_or_default().to_owned(),
        )
    }

    #[test]
    fn a_record_is_filed_once_under_every_policy_it_involves() {
        let log = DecisionLog::default();
        push(&log, "d1", Some("a"), &["b", "a", "b"]);
        push(&log, "d2", None, &["b"]);
        let ids =
            |policy: &str| -> Vec<String> { log.for_policy(policy).iter().map(id_of).collect() };
        assert_eq!(ids("a"), vec!["d1"]);
        assert_eq!(ids("b"), vec!["d2", "d1"], "newest first, each once");
        assert!(ids("c").is_empty());
        for n in 0..PER_POLICY_CAPACITY + 5 {
            push(&log, &format!("x{n}"), Some("a"), &[]);
        }
        assert_eq!(ids("a").len(), PER_POLICY_CAPACITY);
        assert_eq!(ids("a")[0], format!("x{}", PER_POLICY_CAPACITY + 4));
        let recent: Vec<String> = log.recent(3).iter().map(id_of).collect();
        assert_eq!(recent, vec!["x104", "x103", "x102"]);
        for n in 0..RECENT_CAPACITY {
            push(&log, &format!("y{n}"), None, &[]);
        }
        assert_eq!(log.recent(usize::MAX).len(), RECENT_CAPACITY, "bounded");
    }

    #[test]
    fn the_per_policy_index_is_bounded_by_the_active_bundle() {
        let log = DecisionLog::default();
        for n in 0..50 {
            push(&log, &format!("d{n}"), Some(&format!("old-{n}")), &[]);
        }
        assert_eq!(log.tracked_policies(), 50);
        log.retain_policies(["kept", "old-7"]);
        assert_eq!(
            log.tracked_policies(),
            1,
            "only old-7 is still in the bundle"
        );
        // A late record of the replaced bundle is not filed under a removed policy.
        push(&log, "late", Some("old-9"), &["kept"]);
        assert!(log.for_policy("old-9").is_empty());
        assert_eq!(log.for_policy("kept").len(), 1);
        assert_eq!(log.tracked_policies(), 2);
        assert_eq!(
            id_of(&log.recent(1)[0]),
            "late",
            "the recent list keeps every record"
        );
    }
}
