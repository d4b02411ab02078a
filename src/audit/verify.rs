//! `sentinelnet audit verify`: check exported decision records.
//!
//! Records are grouped into chains by `(node, chainId)`. Delivery is at
//! least once and unordered, so exact duplicates are ignored and records
//! are put in `seq` order before checking. Then every record must hash to
//! its `hash`, link to its predecessor's hash, and no `seq` may be missing
//! or claimed twice. Lines are read one at a time and only each record's
//! place, id and hashes are kept, so a large export verifies in little memory.

use super::record::{DecisionRecord, GENESIS_HASH};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Something wrong with the records; each names the record(s) concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A line that is not a decision record.
    Unreadable { line: usize, reason: String },
    /// The record's content does not hash to its `hash`: it was edited.
    Edited {
        line: usize,
        node: String,
        chain: String,
        seq: u64,
        id: String,
    },
    /// Two different records claim the same `id`.
    ConflictingDuplicate { line: usize, id: String },
    /// Two different records claim the same place in a chain.
    Fork {
        node: String,
        chain: String,
        seq: u64,
        ids: (String, String),
    },
    /// Records `from..=to` are missing.
    Gap {
        node: String,
        chain: String,
        from: u64,
        to: u64,
    },
    /// The record does not link to its predecessor (inserted, reordered or
    /// replaced records).
    BrokenLink {
        line: usize,
        node: String,
        chain: String,
        seq: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { line, reason } => write!(f, "line {line}: not a decision record: {reason}"),
            Problem::Edited { line, node, chain, seq, id } => write!(
                f,
                "line {line}: node {node} chain {chain} seq {seq} (id {id}): edited: content does not match its hash"
            ),
            Problem::ConflictingDuplicate { line, id } => {
                write!(f, "line {line}: id {id} appears again with different content")
            }
            Problem::Fork { node, chain, seq, ids } => write!(
                f,
                "node {node} chain {chain} seq {seq}: two different records ({} and {})",
                ids.0, ids.1
            ),
            Problem::Gap { node, chain, from, to } if from == to => {
                write!(f, "node {node} chain {chain}: seq {from} is missing")
            }
            Problem::Gap { node, chain, from, to } => {
                write!(f, "node {node} chain {chain}: seq {from}..{to} missing ({} records)", to - from + 1)
            }
            Problem::BrokenLink { line, node, chain, seq } => write!(
                f,
                "line {line}: node {node} chain {chain} seq {seq}: prevHash does not match the hash of seq {}",
                seq.saturating_sub(1)
            ),
        }
    }
}

/// One chain's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainSummary {
    pub node: String,
    pub chain: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub records: usize,
    pub duplicates: usize,
    /// Records that arrived out of `seq` order (tolerated).
    pub out_of_order: usize,
    pub chains: Vec<ChainSummary>,
    pub problems: Vec<Problem>,
}

/// What verification keeps of a record once it is checked: its place,
/// its links and its id, not its content (so memory grows by ~150 bytes a
/// record, not by the record with its input).
struct Seen {
    line: usize,
    id: Box<str>,
    hash: Box<str>,
    prev_hash: Box<str>,
}

/// Records of one chain by seq.
type ChainRecords = BTreeMap<u64, Seen>;

/// Verification in progress: feed lines in file order, then [`finish`](Verifier::finish).
#[derive(Default)]
pub(crate) struct Verifier {
    report: Report,
    /// Record id → its hash (to tell a duplicate from a conflicting copy).
    by_id: HashMap<Box<str>, Box<str>>,
    chains: BTreeMap<(String, String), ChainRecords>,
    last_seq_seen: HashMap<(String, String), u64>,
}

impl Verifier {
    /// Check line number `line` (1-based).
    pub(crate) fn add_line(&mut self, line: usize, raw: &str) {
        let report = &mut self.report;
        if raw.trim().is_empty() {
            return;
        }
        let record: DecisionRecord = match serde_json::from_str(raw) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(Problem::Unreadable {
                    line,
                    reason: e.to_string(),
                });
                return;
            }
        };
        let content_matches = record.compute_hash() == record.hash;
        if let Some(first_hash) = self.by_id.get(record.id.as_str()) {
            if **first_hash == *record.hash && content_matches {
                report.duplicates += 1;
            } else {
                report.problems.push(Problem::ConflictingDuplicate {
                    line,
                    id: record.id.clone(),
                });
            }
            return;
        }
        self.by_id
            .insert(record.id.as_str().into(), record.hash.as_str().into());
        report.records += 1;
        let key = (record.node.clone(), record.chain_id.clone());
        if !content_matches {
            report.problems.push(Problem::Edited {
                line,
                node: key.0.clone(),
                chain: key.1.clone(),
                seq: record.seq,
                id: record.id.clone(),
            });
        }
        if self
            .last_seq_seen
            .get(&key)
            .is_some_and(|&last| record.seq < last)
        {
            report.out_of_order += 1;
        }
        self.last_seq_seen.insert(key.clone(), record.seq);
        let chain = self.chains.entry(key).or_default();
        if let Some(other) = chain.get(&record.seq) {
            report.problems.push(Problem::Fork {
                node: record.node.clone(),
                chain: record.chain_id.clone(),
                seq: record.seq,
                ids: (other.id.to_string(), record.id.clone()),
            });
            return;
        }
        chain.insert(
            record.seq,
            Seen {
                line,
                id: record.id.into(),
                hash: record.hash.into(),
                prev_hash: record.prev_hash.into(),
            },
        );
    }

    /// Walk every chain in seq order: gaps and links.
    pub(crate) fn finish(self) -> Report {
        let mut report = self.report;
        for ((node, chain_id), records) in self.chains {
            let mut previous: Option<(u64, &Seen)> = None;
            for (&seq, record) in &records {
                match previous {
                    None if seq > 0 => report.problems.push(Problem::Gap {
                        node: node.clone(),
                        chain: chain_id.clone(),
                        from: 0,
                        to: seq - 1,
                    }),
                    None => {
                        if *record.prev_hash != *GENESIS_HASH {
                            report.problems.push(Problem::BrokenLink {
                                line: record.line,
                                node: node.clone(),
                                chain: chain_id.clone(),
                                seq,
                            });
                        }
                    }
                    Some((prev_seq, _)) if prev_seq + 1 < seq => {
                        report.problems.push(Problem::Gap {
                            node: node.clone(),
                            chain: chain_id.clone(),
                            from: prev_seq + 1,
                            to: seq - 1,
                        })
                    }
                    Some((_, prev)) => {
                        if record.prev_hash != prev.hash {
                            report.problems.push(Problem::BrokenLink {
                                line: record.line,
                                node: node.clone(),
                                chain: chain_id.clone(),
                                seq,
                            });
                        }
                    }
                }
                previous = Some((seq, record));
            }
            if let (Some(first), Some(last)) = (records.keys().next(), records.keys().last()) {
                report.chains.push(ChainSummary {
                    node: node.clone(),
                    chain: chain_id.clone(),
                    first_seq: *first,
                    last_seq: *last,
                    records: records.len(),
                });
            }
        }
        report
    }
}

/// Verify NDJSON read from `reader`, one line in memory at a time. A line
/// that is not UTF-8 is reported as unreadable, like any other bad line.
pub(crate) fn verify_reader<R: std::io::BufRead>(mut reader: R) -> std::io::Result<Report> {
    let mut verifier = Verifier::default();
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(verifier.finish());
        }
        line += 1;
        match std::str::from_utf8(&buffer) {
            Ok(text) => verifier.add_line(line, text.trim_end_matches(['\n', '\r'])),
            Err(e) => verifier.report.problems.push(Problem::Unreadable {
                line,
                reason: format!("not UTF-8: {e}"),
            }),
        }
    }
}

/// Verify NDJSON text.
#[cfg(test)]
pub(crate) fn verify(text: &str) -> Report {
    let mut verifier = Verifier::default();
    for (index, raw) in text.lines().enumerate() {
        verifier.add_line(index + 1, raw);
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::super::record::{Chain, RECORD_TYPE};
    use super::*;

    fn chain_of(n: u64) -> Vec<DecisionRecord> {
        let mut chain = Chain::fresh("c1".into());
        (0..n)
            .map(|i| {
                let mut r = DecisionRecord {
                    kind: RECORD_TYPE.into(),
                    id: format!("id-{i}"),
                    ts: "2026-11-23T00:00:00.000000Z".into(),
                    node: "n1".into(),
                    chain_id: String::new(),
                    request_id: format!("r{i}"),
                    decision: "allow".into(),
                    status: 200,
                    reason: "default".into(),
                    policy_id: None,
                    policy_version: None,
                    bundle: "b".into(),
                    bundle_revision: "r1".into(),
                    rationale: "default".into(),
                    evidence_refs: vec![],
                    evidence: Default::default(),
                    shadow: vec![],
                    latency_us: 1,
                    seq: 0,
                    prev_hash: String::new(),
                    input: None,
                    masked: vec![],
                    hash: String::new(),
                };
                chain.link(&mut r);
                r
            })
            .collect()
    }

    fn ndjson(records: &[DecisionRecord]) -> String {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect()
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_problem_and_the_rest_verifies() {
        let mut text = ndjson(&chain_of(3)).into_bytes();
        text.extend_from_slice(b"\xff\xfe not utf-8\n");
        let report = verify_reader(std::io::Cursor::new(text)).expect("reads");
        assert_eq!(report.records, 3);
        assert!(
            matches!(&report.problems[..], [Problem::Unreadable { line: 4, .. }]),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn duplicates_and_reordering_are_tolerated() {
        let mut records = chain_of(6);
        records.swap(1, 4);
        records.push(records[2].clone());
        let report = verify(&ndjson(&records));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.records, report.duplicates), (6, 1));
        assert!(report.out_of_order > 0);
    }

    #[test]
    fn edits_gaps_and_forks_are_reported_precisely() {
        let mut records = chain_of(8);
        records[3].decision = "deny".into();
        records.remove(5);
        let report = verify(&ndjson(&records));
        assert!(report.problems.contains(&Problem::Edited {
            line: 4,
            node: "n1".into(),
            chain: "c1".into(),
            seq: 3,
            id: "id-3".into()
        }));
        assert!(report.problems.contains(&Problem::Gap {
            node: "n1".into(),
            chain: "c1".into(),
            from: 5,
            to: 5
        }));
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    }
}
