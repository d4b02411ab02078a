//! The `policy.decision` record (docs/records.md) and its per-node hash chain.

use super::inputs::RecordInput;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

pub(crate) const RECORD_TYPE: &str = "policy.decision";

/// The `prevHash` of the first record of a chain.
pub(crate) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Fields are declared in the byte order of their JSON names, so that
/// serde's output is already canonical (see [`DecisionRecord::compute_hash`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowEntry {
    /// The policy's state: `canary` (request outside the slice) or `simulating`.
    pub mode: Cow<'static, str>,
    pub policy_id: String,
    pub policy_version: u64,
    pub would_decide: Cow<'static, str>,
}

/// One decision record. Fields are declared in the byte order of their
/// JSON names and maps are sorted, so serialising a record *is* its
/// canonical JSON: hashing needs no intermediate tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub bundle: String,
    pub bundle_revision: String,
    /// Identifies one chain: a restart without a spool starts a new one.
    pub chain_id: String,
    /// Fixed vocabularies (`decision`, `reason`, `type`) borrow static text
    /// when the sidecar writes a record: no allocation for them.
    pub decision: Cow<'static, str>,
    pub evidence: Map<String, Value>,
    pub evidence_refs: Vec<String>,
    /// Empty while the record is being hashed (and then not serialised).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    pub id: String,
    /// The input document the policies saw, masked (on the share of
    /// records `--record-input` selects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<RecordInput>,
    pub latency_us: u64,
    /// The `--mask` paths removed from `input`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    pub node: String,
    pub policy_id: Option<String>,
    pub policy_version: Option<u64>,
    pub prev_hash: String,
    pub rationale: String,
    /// `policy`, `default` or `error`.
    pub reason: Cow<'static, str>,
    pub request_id: String,
    pub seq: u64,
    pub shadow: Vec<ShadowEntry>,
    /// A checkpoint signature over `hash` (`--record-signing-key`); never
    /// covered by `hash`, so it can seal the chain up to here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<RecordSignature>,
    pub status: u16,
    pub ts: String,
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
}

/// `sig`: an Ed25519 signature by the node's key over the bytes of the
/// record's `hash` (its 64 hex characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordSignature {
    pub alg: String,
    pub key_id: String,
    /// Base64.
    pub value: String,
}

pub(crate) const SIGNATURE_ALG: &str = "Ed25519";

impl DecisionRecord {
    /// SHA-256 (hex) of the record's canonical JSON without its `hash`
    /// and `sig` fields: object keys in byte order at every level, no
    /// whitespace. Any verifier, in any language, recomputes the same bytes.
    pub fn compute_hash(&self) -> String {
        if self.hash.is_empty() && self.sig.is_none() {
            return self.hash_unhashed();
        }
        let mut unhashed = self.clone();
        unhashed.hash.clear();
        unhashed.sig = None;
        unhashed.hash_unhashed()
    }

    fn hash_unhashed(&self) -> String {
        // Serialise into a reused buffer and hash it in one call: serde
        // writes a record in ~100 small pieces, and feeding those to
        // SHA-256 one by one cost twice as much as serialising them.
        thread_local! {
            static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        CANONICAL.with_borrow_mut(|buffer| {
            buffer.clear();
            // Serialising plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buffer, self);
            hex::encode(Sha256::digest(buffer.as_slice()))
        })
    }
}

/// The definition of canonical JSON (object keys in byte order, no
/// whitespace), kept as the reference the fast path is tested against.
#[cfg(test)]
pub(crate) fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The writer's end of a node's chain: assigns `seq`, `prevHash`, `hash`.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub chain_id: String,
    pub next_seq: u64,
    pub last_hash: String,
}

impl Chain {
    /// A new chain, as after a restart without a spool.
    pub(crate) fn fresh(chain_id: String) -> Chain {
        Chain {
            chain_id,
            next_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Continue a chain found in the spool after `seq - 1` with `last_hash`.
    pub(crate) fn resume(chain_id: String, next_seq: u64, last_hash: String) -> Chain {
        Chain {
            chain_id,
            next_seq,
            last_hash,
        }
    }

    /// Link `record` into the chain; its NDJSON line.
    ///
    /// One serialisation serves both the hash and the line: the record is
    /// written canonically without `hash`, hashed, and `"hash"` is appended
    /// as the last key. Readers do not care about key order; verifiers
    /// re-serialise canonically, without `hash`, and get the same bytes.
    pub(crate) fn link(&mut self, record: &mut DecisionRecord) -> Vec<u8> {
        record.chain_id.clone_from(&self.chain_id);
        record.seq = self.next_seq;
        record.prev_hash.clone_from(&self.last_hash);
        record.hash.clear();
        record.sig = None;
        // Serialising plain data into a Vec cannot fail.
        let mut line = serde_json::to_vec(&*record).unwrap_or_default();
        record.hash = hex::encode(Sha256::digest(&line));
        line.pop();
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(record.hash.as_bytes());
        line.extend_from_slice(b"\"}");
        self.next_seq += 1;
        self.last_hash.clone_from(&record.hash);
        line
    }
}

/// Add `"sig"` as the last key of a linked record's line (which
/// [`Chain::link`] wrote ending in `"hash":"…"}`).
pub(crate) fn seal_line(line: &mut Vec<u8>, signature: &RecordSignature) {
    if line.last() == Some(&b'}') {
        line.pop();
        line.extend_from_slice(b",\"sig\":");
        // Serialising three strings cannot fail.
        let _ = serde_json::to_writer(&mut *line, signature);
        line.push(b'}');
    }
}

/// A plain record for tests anywhere in the crate (chain fields empty).
#[cfg(test)]
pub(crate) fn sample_record(id: &str) -> DecisionRecord {
    DecisionRecord {
        kind: RECORD_TYPE.into(),
        id: id.into(),
        ts: "2026-11-22T23:59:59.123456Z".into(),
        node: "n".into(),
        chain_id: String::new(),
        request_id: "r".into(),
        decision: "deny".into(),
        status: 403,
        reason: "policy".into(),
        policy_id: Some("p".into()),
        policy_version: Some(1),
        bundle: "b".into(),
        bundle_revision: "r1".into(),
        rationale: "p matched".into(),
        evidence_refs: vec![],
        evidence: Map::new(),
        shadow: vec![],
        latency_us: 3,
        seq: 0,
        prev_hash: String::new(),
        sig: None,
        hash: String::new(),
        input: None,
        masked: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> DecisionRecord {
        sample_record(id)
    }

    #[test]
    fn chain_links_and_detects_edits() {
        let mut chain = Chain::fresh("c1".into());
        let mut a = record("a");
        let mut b = record("b");
        chain.link(&mut a);
        let line = chain.link(&mut b);
        assert_eq!((a.seq, b.seq), (0, 1));
        // The line is the record with `hash` last: it reads back as the same record.
        let read: DecisionRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(read, b);
        assert_eq!(read.compute_hash(), b.hash);
        assert_eq!(a.prev_hash, GENESIS_HASH);
        assert_eq!(b.prev_hash, a.hash);
        assert_eq!(b.compute_hash(), b.hash);
        b.decision = "allow".into();
        assert_ne!(b.compute_hash(), b.hash);
    }

    #[test]
    fn serialising_a_record_is_its_canonical_form() {
        let mut r = record("a");
        r.evidence.insert(
            "z.path".into(),
            serde_json::json!({"b": 1, "a": [true, null]}),
        );
        r.evidence.insert("a.path".into(), serde_json::json!("x"));
        r.input = Some(RecordInput::Read(
            serde_json::json!({"request": {"method": "GET", "headers": {"x-b": "2", "x-a": "1"}}}),
        ));
        r.masked = vec!["request.headers.authorization".into()];
        r.shadow.push(ShadowEntry {
            mode: "canary".into(),
            policy_id: "p".into(),
            policy_version: 2,
            would_decide: "deny".into(),
        });
        let mut tree = serde_json::to_value(&r).unwrap();
        if let Value::Object(map) = &mut tree {
            map.remove("hash");
        }
        let mut reference = String::new();
        write_canonical(&tree, &mut reference);
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&r).unwrap()).unwrap(),
            reference
        );
        let expected = hex::encode(Sha256::digest(reference.as_bytes()));
        assert_eq!(r.compute_hash(), expected);
        r.hash = expected.clone();
        assert_eq!(r.compute_hash(), expected, "the hash field is not hashed");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut out = String::new();
        write_canonical(
            &serde_json::json!({"b": 1, "a": [true, {"d": null, "c": "x"}]}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":[true,{"c":"x","d":null}],"b":1}"#);
    }
}
