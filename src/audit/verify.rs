//! `sentinelnet audit verify`: check exported decision records.
//!
//! Records are grouped into chains by `(node, chainId)`. Delivery is at
//! least once and unordered, so exact duplicates are ignored and records
//! are put in `seq` order before checking. Then every record must hash to
//! its `hash`, link to its predecessor's hash, and no `seq` may be missing
//! or claimed twice. Lines are read one at a time and only each record's
//! place, id and hashes are kept, so a large export verifies in little memory.
//!
//! With trusted record keys (`--trusted-keys`), every `sig` must be an
//! Ed25519 signature over the record's `hash` by the key it names; each
//! chain then reports how far it is sealed (the last signed record of its
//! unbroken prefix) and its unsigned tail.

use super::record::{DecisionRecord, GENESIS_HASH, SIGNATURE_ALG};
use crate::keys::TrustedKeys;
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
    /// The line holds a field its hash does not cover, or lacks one the
    /// hash covers (as `null`): an edit the hash alone cannot show.
    FieldsOutsideHash {
        line: usize,
        node: String,
        chain: String,
        seq: u64,
        what: String,
    },
    /// A `sig` that is not a trusted key's signature over the record's hash.
    BadSignature {
        line: usize,
        node: String,
        chain: String,
        seq: u64,
        why: String,
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
            Problem::FieldsOutsideHash { line, node, chain, seq, what } => write!(
                f,
                "line {line}: node {node} chain {chain} seq {seq}: edited: {what}"
            ),
            Problem::BadSignature { line, node, chain, seq, why } => {
                write!(f, "line {line}: node {node} chain {chain} seq {seq}: bad signature: {why}")
            }
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
    /// With trusted keys: the last record of the chain's unbroken prefix
    /// that carries a valid signature (everything up to it is sealed).
    pub signed_through: Option<u64>,
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
    /// Its content matches its hash and a trusted key signed that hash.
    sealed: bool,
    /// Its content matches its hash (an edited record breaks the chain).
    intact: bool,
}

/// Records of one chain by seq.
type ChainRecords = BTreeMap<u64, Seen>;

/// Verification in progress: feed lines in file order, then [`finish`](Verifier::finish).
#[derive(Default)]
pub(crate) struct Verifier {
    report: Report,
    /// Record-signing keys; without them signatures are not checked.
    keys: Option<TrustedKeys>,
    /// Record id → its hash (to tell a duplicate from a conflicting copy).
    by_id: HashMap<Box<str>, Box<str>>,
    chains: BTreeMap<(String, String), ChainRecords>,
    last_seq_seen: HashMap<(String, String), u64>,
    /// Places claimed twice (forks, conflicting copies): nothing at or
    /// after them counts as sealed.
    broken: std::collections::HashSet<((String, String), u64)>,
}

impl Verifier {
    /// A verifier that also checks every `sig` against `keys`.
    pub(crate) fn with_keys(keys: Option<TrustedKeys>) -> Verifier {
        Verifier {
            keys,
            ..Verifier::default()
        }
    }

    /// Whether `record`'s signature verifies; `Err` says why not.
    fn check_signature(
        keys: Option<&TrustedKeys>,
        record: &DecisionRecord,
    ) -> Result<bool, String> {
        let (Some(sig), Some(keys)) = (&record.sig, keys) else {
            return Ok(false);
        };
        if sig.alg != SIGNATURE_ALG {
            return Err(format!("algorithm {:?} is not {SIGNATURE_ALG}", sig.alg));
        }
        match keys.verify_by(&sig.key_id, record.hash.as_bytes(), &sig.value) {
            None => Err(format!(
                "key {:?} is not a trusted key ({})",
                sig.key_id,
                keys.names().join(", ")
            )),
            Some(false) => Err(format!(
                "does not verify with key {:?} (altered signature or hash)",
                sig.key_id
            )),
            Some(true) => Ok(true),
        }
    }

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
        let fields = fields_outside_hash(raw);
        let content_matches = record.compute_hash() == record.hash && fields.is_none();
        let key = (record.node.clone(), record.chain_id.clone());
        // Checked before duplicates: a copy of a record with a forged
        // `sig` is a problem, not a harmless duplicate.
        let signature = Verifier::check_signature(self.keys.as_ref(), &record);
        if let Some(first_hash) = self.by_id.get(record.id.as_str()) {
            if **first_hash == *record.hash && content_matches && signature.is_ok() {
                report.duplicates += 1;
            } else {
                report.problems.push(Problem::ConflictingDuplicate {
                    line,
                    id: record.id.clone(),
                });
                self.broken.insert((key, record.seq));
            }
            return;
        }
        self.by_id
            .insert(record.id.as_str().into(), record.hash.as_str().into());
        report.records += 1;
        let signed = match signature {
            Ok(signed) => signed,
            Err(why) => {
                report.problems.push(Problem::BadSignature {
                    line,
                    node: key.0.clone(),
                    chain: key.1.clone(),
                    seq: record.seq,
                    why,
                });
                false
            }
        };
        if let Some(what) = fields {
            report.problems.push(Problem::FieldsOutsideHash {
                line,
                node: key.0.clone(),
                chain: key.1.clone(),
                seq: record.seq,
                what,
            });
        } else if !content_matches {
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
        let chain = self.chains.entry(key.clone()).or_default();
        if let Some(other) = chain.get(&record.seq) {
            self.broken.insert((key, record.seq));
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
                sealed: signed && content_matches,
                intact: content_matches && (record.sig.is_none() || signed || self.keys.is_none()),
            },
        );
    }

    /// Walk every chain in seq order: gaps and links.
    pub(crate) fn finish(self) -> Report {
        let mut report = self.report;
        let checking_signatures = self.keys.is_some();
        let broken = self.broken;
        for ((node, chain_id), records) in self.chains {
            let mut previous: Option<(u64, &Seen)> = None;
            // Sealed: the last signed record with nothing missing, edited
            // or unlinked before it.
            let mut signed_through = None;
            let mut unbroken = true;
            for (&seq, record) in &records {
                let before = report.problems.len();
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
                unbroken &= report.problems.len() == before
                    && record.intact
                    && (broken.is_empty()
                        || !broken.contains(&((node.clone(), chain_id.clone()), seq)));
                if unbroken && record.sealed {
                    signed_through = Some(seq);
                }
            }
            if let (Some(first), Some(last)) = (records.keys().next(), records.keys().last()) {
                report.chains.push(ChainSummary {
                    node: node.clone(),
                    chain: chain_id.clone(),
                    first_seq: *first,
                    last_seq: *last,
                    records: records.len(),
                    signed_through: signed_through.filter(|_| checking_signatures),
                });
            }
        }
        report
    }
}

/// Verify NDJSON read from `reader`, one line in memory at a time. A line
/// that is not UTF-8 is reported as unreadable, like any other bad line.
/// Top-level fields of a record line besides the hashed ones: `hash` and
/// `sig` (never hashed by design) and central's `label`/`labels` (its
/// verdicts on the record, added after it was stored, in exports and reads).
const UNHASHED_FIELDS: [&str; 4] = ["hash", "label", "labels", "sig"];
/// Hashed fields serde would read as `null` when they are missing.
const NULLABLE_FIELDS: [&str; 2] = ["policyId", "policyVersion"];

/// Why a record line's fields are not the ones its hash covers, if they
/// are not: serde reads a record without complaint when a field was added
/// (ignored) or a nullable one removed (read as `null`), and the hash of
/// what it read then still matches.
fn fields_outside_hash(raw: &str) -> Option<String> {
    let Ok(TopLevelKeys(keys)) = serde_json::from_str::<TopLevelKeys>(raw) else {
        return None; // the record itself was read, so this cannot fail
    };
    let added: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !DecisionRecord::FIELDS.contains(k) && !UNHASHED_FIELDS.contains(k))
        .collect();
    let missing: Vec<&str> = NULLABLE_FIELDS
        .into_iter()
        .filter(|k| !keys.iter().any(|key| key == k))
        .collect();
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (added.is_empty(), missing.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!("{} not covered by its hash", list(&added))),
        (true, false) => Some(format!("{} missing (its hash covers them)", list(&missing))),
        (false, false) => Some(format!(
            "{} not covered by its hash; {} missing (its hash covers them)",
            list(&added),
            list(&missing)
        )),
    }
}

/// The top-level keys of a JSON object, values skipped.
struct TopLevelKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(TopLevelKeys(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// Longest line read as a record: far past any record (central takes a
/// batch of at most 64 MiB inflated), so memory stays bounded on a file
/// that is no NDJSON at all.
const MAX_LINE_BYTES: u64 = 64 << 20;

pub(crate) fn verify_reader<R: std::io::BufRead>(
    reader: R,
    keys: Option<TrustedKeys>,
) -> std::io::Result<Report> {
    verify_lines_of_at_most(reader, keys, MAX_LINE_BYTES)
}

fn verify_lines_of_at_most<R: std::io::BufRead>(
    mut reader: R,
    keys: Option<TrustedKeys>,
    max_line: u64,
) -> std::io::Result<Report> {
    use std::io::{BufRead as _, Read as _};
    let mut verifier = Verifier::with_keys(keys);
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        if (&mut reader)
            .take(max_line + 1)
            .read_until(b'\n', &mut buffer)?
            == 0
        {
            return Ok(verifier.finish());
        }
        line += 1;
        if buffer.len() as u64 > max_line && buffer.last() != Some(&b'\n') {
            // Too long to be a record: skip to the end of the line unread.
            verifier.report.problems.push(Problem::Unreadable {
                line,
                reason: format!("longer than {max_line} bytes"),
            });
            loop {
                let available = reader.fill_buf()?;
                if available.is_empty() {
                    break;
                }
                match memchr::memchr(b'\n', available) {
                    Some(end) => {
                        reader.consume(end + 1);
                        break;
                    }
                    None => {
                        let all = available.len();
                        reader.consume(all);
                    }
                }
            }
            continue;
        }
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
                    sig: None,
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
        let report = verify_reader(std::io::Cursor::new(text), None).expect("reads");
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

    #[test]
    fn a_line_too_long_to_be_a_record_is_one_problem_and_the_rest_verifies() {
        let records = chain_of(3);
        let lines: Vec<String> = ndjson(&records).lines().map(str::to_owned).collect();
        let longest = lines.iter().map(String::len).max().unwrap_or(0) as u64;
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            lines[0],
            "x".repeat(5_000),
            lines[1],
            lines[2]
        );
        let report = verify_lines_of_at_most(text.as_bytes(), None, longest + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            report.problems,
            vec![Problem::Unreadable {
                line: 2,
                reason: format!("longer than {} bytes", longest + 1)
            }]
        );
        assert_eq!(report.records, 3, "the lines after it are read");
    }

    #[test]
    fn a_field_added_or_a_null_one_removed_is_an_edit() {
        let records = chain_of(4);
        let mut lines: Vec<String> = ndjson(&records).lines().map(str::to_owned).collect();
        lines[1] = lines[1].replacen('{', r#"{"injected":"evil","#, 1);
        lines[2] = lines[2].replacen(r#""policyId":null,"#, "", 1);
        // Central's label in an export is not an edit.
        lines[3] = lines[3].replacen('{', r#"{"label":"false-positive","#, 1);
        assert_ne!(
            lines[2],
            ndjson(&records[2..3]).trim_end(),
            "the test edited the line"
        );
        let report = verify(&(lines.join("\n") + "\n"));
        let edited = |line: usize, seq: u64, what: &str| Problem::FieldsOutsideHash {
            line,
            node: "n1".into(),
            chain: "c1".into(),
            seq,
            what: what.into(),
        };
        assert_eq!(
            report.problems,
            vec![
                edited(2, 1, "`injected` not covered by its hash"),
                edited(3, 2, "`policyId` missing (its hash covers them)"),
            ]
        );
        assert_eq!(
            report.problems[0].to_string(),
            "line 2: node n1 chain c1 seq 1: edited: `injected` not covered by its hash"
        );
        // The same records, unedited, verify clean.
        assert!(verify(&ndjson(&records)).problems.is_empty());
    }

    /// A chain of `n` whose records at `signed` carry a signature by `key`.
    fn signed_chain(n: u64, signed: &[u64], key: &crate::keys::FileKey) -> Vec<DecisionRecord> {
        use crate::keys::Signer;
        let mut records = chain_of(n);
        for r in records.iter_mut().filter(|r| signed.contains(&r.seq)) {
            r.sig = Some(super::super::record::RecordSignature {
                alg: SIGNATURE_ALG.into(),
                key_id: key.key_id().into(),
                value: key.sign_base64(r.hash.as_bytes()).expect("signs"),
            });
        }
        records
    }

    #[test]
    fn signatures_seal_chains_and_bad_ones_are_named() {
        use crate::keys::Signer;
        let dir = tempfile::tempdir().expect("tempdir");
        crate::keys::keygen(dir.path(), "node-a").expect("keygen");
        let stranger_dir = tempfile::tempdir().expect("tempdir");
        crate::keys::keygen(stranger_dir.path(), "node-a").expect("keygen");
        let key = crate::keys::FileKey::load(&dir.path().join("node-a.key")).expect("key");
        let stranger =
            crate::keys::FileKey::load(&stranger_dir.path().join("node-a.key")).expect("key");
        let keys = || Some(TrustedKeys::load_dir(dir.path()).expect("trusted"));
        let check = |records: &[DecisionRecord]| {
            let text = ndjson(records);
            verify_reader(std::io::Cursor::new(text.into_bytes()), keys()).expect("reads")
        };

        // Signed at 2 and 5 of 0..7: sealed through 5, tail 6..7.
        let records = signed_chain(8, &[2, 5], &key);
        let report = check(&records);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.chains[0].signed_through, Some(5));
        // Without keys signatures are not checked and nothing is "sealed".
        let unchecked = verify(&ndjson(&records));
        assert_eq!(unchecked.chains[0].signed_through, None);

        // One altered signature: a problem at its line, sealed only before it.
        let mut altered = records.clone();
        if let Some(sig) = altered[5].sig.as_mut() {
            sig.value = key.sign_base64(b"something else").expect("signs");
        }
        let report = check(&altered);
        assert!(
            matches!(&report.problems[..], [Problem::BadSignature { seq: 5, why, .. }] if why.contains("does not verify")),
            "{:?}",
            report.problems
        );
        assert_eq!(report.chains[0].signed_through, Some(2));

        // A signature by a key nobody trusts, under a trusted key's name.
        let forged = signed_chain(8, &[2, 5], &stranger);
        let report = check(&forged);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert_eq!(report.chains[0].signed_through, None);
        // A key id that is not trusted at all.
        let mut unknown = records.clone();
        if let Some(sig) = unknown[2].sig.as_mut() {
            sig.key_id = "node-z".into();
        }
        let report = check(&unknown);
        assert!(
            matches!(&report.problems[..], [Problem::BadSignature { seq: 2, why, .. }] if why.contains("not a trusted key")),
            "{:?}",
            report.problems
        );

        // Content edited under a valid signature: the hash no longer
        // matches, so the signature seals nothing from there on.
        let mut edited = records.clone();
        edited[4].decision = "deny".into();
        let report = check(&edited);
        assert!(
            matches!(&report.problems[..], [Problem::Edited { seq: 4, .. }]),
            "{:?}",
            report.problems
        );
        assert_eq!(report.chains[0].signed_through, Some(2));
    }
}
