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
    /// Never hashed (the canonical writer leaves it out); set by
    /// [`Chain::link`]. Not serialised while empty.
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
    /// The JSON names of the fields `hash` covers (every field but `hash`
    /// and `sig`), in byte order. A test holds it to serde's names.
    pub(crate) const FIELDS: [&'static str; 22] = [
        "bundle",
        "bundleRevision",
        "chainId",
        "decision",
        "evidence",
        "evidenceRefs",
        "id",
        "input",
        "latencyUs",
        "masked",
        "node",
        "policyId",
        "policyVersion",
        "prevHash",
        "rationale",
        "reason",
        "requestId",
        "seq",
        "shadow",
        "status",
        "ts",
        "type",
    ];

    /// SHA-256 (hex) of the record's canonical JSON without its `hash`
    /// and `sig` fields: object keys in byte order at every level, no
    /// whitespace. Any verifier, in any language, recomputes the same bytes.
    pub fn compute_hash(&self) -> String {
        CANONICAL.with_borrow_mut(|buffer| {
            buffer.clear();
            self.write_unhashed(buffer);
            hex::encode(Sha256::digest(buffer.as_slice()))
        })
    }

    /// [`DecisionRecord::compute_hash`] and, from the same canonical
    /// bytes, the record as central stores it: its canonical JSON with
    /// `hash` and `sig` and without `input` (stored beside it), which is
    /// what serde writes for the record with `input` taken (a test holds
    /// the two to the same bytes). The stored text is cut and pasted from
    /// the hashed bytes instead of serialised a second time.
    pub(crate) fn hash_and_stored_text(&self) -> (String, String) {
        CANONICAL.with_borrow_mut(|buffer| {
            buffer.clear();
            let marks = self.write_marked(buffer);
            let hash = hex::encode(Sha256::digest(buffer.as_slice()));
            let mut stored = Vec::with_capacity(buffer.len() - marks.input.len() + 128);
            stored.extend_from_slice(&buffer[..marks.before_id]);
            if !self.hash.is_empty() {
                stored.extend_from_slice(b",\"hash\":");
                super::json::string(&mut stored, &self.hash);
            }
            stored.extend_from_slice(&buffer[marks.before_id..marks.input.start]);
            stored.extend_from_slice(&buffer[marks.input.end..marks.before_status]);
            if let Some(sig) = &self.sig {
                stored.extend_from_slice(b",\"sig\":");
                // Serialising three strings cannot fail.
                let _ = serde_json::to_writer(&mut stored, sig);
            }
            stored.extend_from_slice(&buffer[marks.before_status..]);
            // Whole fields of UTF-8 text, cut at their ASCII separators.
            (hash, String::from_utf8(stored).unwrap_or_default())
        })
    }

    /// Append the record's canonical JSON without `hash` and `sig` (what
    /// is hashed, and the start of its NDJSON line).
    ///
    /// Field by field, in the order serde's derived `Serialize` writes
    /// them (a test holds the two to the same bytes), so that a written
    /// input's text is copied as it is: serde could only take it as a
    /// `RawValue`, which parses the text again to be sure it is JSON.
    pub(crate) fn write_unhashed(&self, out: &mut Vec<u8>) {
        self.write_marked(out);
    }

    /// [`DecisionRecord::write_unhashed`], saying where the fields that
    /// the stored form differs by go.
    fn write_marked(&self, out: &mut Vec<u8>) -> Marks {
        fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) {
            out.extend_from_slice(key);
            // Serialising plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        }
        put(out, b"{\"bundle\":", &self.bundle);
        put(out, b",\"bundleRevision\":", &self.bundle_revision);
        put(out, b",\"chainId\":", &self.chain_id);
        put(out, b",\"decision\":", &self.decision);
        put(out, b",\"evidence\":", &self.evidence);
        put(out, b",\"evidenceRefs\":", &self.evidence_refs);
        let before_id = out.len();
        put(out, b",\"id\":", &self.id);
        let input_start = out.len();
        if let Some(input) = &self.input {
            out.extend_from_slice(b",\"input\":");
            input.write_canonical(out);
        }
        let input = input_start..out.len();
        put(out, b",\"latencyUs\":", &self.latency_us);
        if !self.masked.is_empty() {
            put(out, b",\"masked\":", &self.masked);
        }
        put(out, b",\"node\":", &self.node);
        put(out, b",\"policyId\":", &self.policy_id);
        put(out, b",\"policyVersion\":", &self.policy_version);
        put(out, b",\"prevHash\":", &self.prev_hash);
        put(out, b",\"rationale\":", &self.rationale);
        put(out, b",\"reason\":", &self.reason);
        put(out, b",\"requestId\":", &self.request_id);
        put(out, b",\"seq\":", &self.seq);
        put(out, b",\"shadow\":", &self.shadow);
        let before_status = out.len();
        put(out, b",\"status\":", &self.status);
        put(out, b",\"ts\":", &self.ts);
        put(out, b",\"type\":", &self.kind);
        out.push(b'}');
        Marks {
            before_id,
            input,
            before_status,
        }
    }
}

/// Where [`DecisionRecord::write_marked`] wrote what a stored record's
/// text differs by: `hash` goes before `id` and `sig` before `status` (the
/// fields are in byte order of their names), and `input` is left out.
struct Marks {
    before_id: usize,
    /// `,"input":…`, empty without an input.
    input: std::ops::Range<usize>,
    before_status: usize,
}

// The canonical bytes of a record, written into a reused buffer and hashed
// in one call: feeding SHA-256 the ~100 small pieces of a record one by one
// cost twice as much as writing them.
thread_local! {
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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

/// Room for a record's line besides its input (a record without input
/// with its hash is ~0.7 KB).
pub(super) const LINE_WITHOUT_INPUT: usize = 1024;

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
        record.sig = None;
        // Sized for the whole line up front: grown from serde's default
        // it was copied four times on the way to ~1.7 KB.
        let input = record.input.as_ref().map_or(0, RecordInput::size_hint);
        let mut line = Vec::with_capacity(LINE_WITHOUT_INPUT + input);
        record.write_unhashed(&mut line);
        self.finish_line(&mut line);
        record.hash.clone_from(&self.last_hash);
        line
    }

    /// Finish a line written canonically without `hash` (ending in `}`)
    /// with this chain's `chainId`, `prevHash` and `seq` in it: hash it,
    /// append `"hash"` as the last key, and advance the chain.
    pub(crate) fn finish_line(&mut self, line: &mut Vec<u8>) {
        let digest = Sha256::digest(line.as_slice());
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(digest, &mut hex);
        line.pop();
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(&hex);
        line.extend_from_slice(b"\"}");
        self.next_seq += 1;
        self.last_hash.clear();
        // Hex digits are ASCII.
        self.last_hash
            .push_str(std::str::from_utf8(&hex).unwrap_or_default());
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
    fn the_hashed_field_names_are_serdes_less_hash_and_sig() {
        let mut full = record("a");
        full.hash = "h".into();
        full.masked = vec!["request.headers.authorization".into()];
        full.input = Some(RecordInput::Read(serde_json::json!({"request": {}})));
        full.sig = Some(RecordSignature {
            alg: SIGNATURE_ALG.into(),
            key_id: "k".into(),
            value: "v".into(),
        });
        let Ok(Value::Object(map)) = serde_json::to_value(&full) else {
            panic!("a record is an object");
        };
        let names: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !["hash", "sig"].contains(k))
            .collect();
        assert_eq!(names, DecisionRecord::FIELDS);
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

    /// A record with every optional field set and text that needs escaping.
    fn full_record() -> DecisionRecord {
        let mut r = record("a\"b");
        r.evidence.insert(
            "z".into(),
            serde_json::json!({"b": [1.5, null], "a": "\u{1}"}),
        );
        r.evidence_refs = vec!["decision:a".into(), "policy:p@1".into()];
        r.masked = vec!["request.headers.cookie".into()];
        r.rationale = "p matched: \"quoted\" \\ and \n".into();
        r.policy_id = None;
        r.shadow.push(ShadowEntry {
            mode: "simulating".into(),
            policy_id: "q".into(),
            policy_version: 7,
            would_decide: "allow".into(),
        });
        r.sig = Some(RecordSignature {
            alg: SIGNATURE_ALG.into(),
            key_id: "k".into(),
            value: "c2ln".into(),
        });
        r.hash = "f".repeat(64);
        r
    }

    /// Serde's bytes for `r` without `hash` and `sig`.
    fn serde_unhashed(r: &DecisionRecord) -> String {
        let mut plain = r.clone();
        plain.hash.clear();
        plain.sig = None;
        String::from_utf8(serde_json::to_vec(&plain).unwrap()).unwrap()
    }

    #[test]
    fn the_record_writer_writes_what_serde_writes() {
        // The plain record (no input, nothing masked) and one without a
        // deciding policy, as serde writes them.
        let mut plain = record("plain");
        for r in [plain.clone(), {
            plain.policy_id = None;
            plain.policy_version = None;
            plain
        }] {
            let mut written = Vec::new();
            r.write_unhashed(&mut written);
            assert_eq!(String::from_utf8(written).unwrap(), serde_unhashed(&r));
        }
        let mut r = full_record();
        let mut written = Vec::new();
        r.write_unhashed(&mut written);
        assert_eq!(
            String::from_utf8(written.clone()).unwrap(),
            serde_unhashed(&r)
        );
        // Every field serde writes is written, but `hash` and `sig`: a
        // field added to the struct and not to the writer fails here.
        let Value::Object(all) = serde_json::to_value(&r).unwrap() else {
            panic!("a record is an object")
        };
        let Value::Object(hand) = serde_json::from_slice::<Value>(&written).unwrap() else {
            panic!("the writer writes an object")
        };
        let mut expected: Vec<&String> =
            all.keys().filter(|k| *k != "hash" && *k != "sig").collect();
        expected.sort();
        assert_eq!(hand.keys().collect::<Vec<_>>(), expected);
        // A written input is copied as it is, and reads back as the same.
        let text = r#"{"request":{"headers":{"x-a":"1"},"method":"GET"}}"#;
        r.input = Some(RecordInput::Written(text.into()));
        let mut with_input = Vec::new();
        r.write_unhashed(&mut with_input);
        assert_eq!(String::from_utf8(with_input).unwrap(), serde_unhashed(&r));
        let read = RecordInput::Read(serde_json::from_str(text).unwrap());
        r.input = Some(read);
        assert_eq!(
            r.compute_hash(),
            hex::encode(Sha256::digest(serde_unhashed(&r)))
        );
    }

    /// Central's stored text, cut from the hashed bytes, is what serde
    /// writes for the record without its input; the hash is the record's.
    #[test]
    fn the_stored_text_is_what_serde_writes_without_the_input() {
        let written_input = r#"{"request":{"headers":{"x-a":"1"},"method":"GET"}}"#;
        let mut variants = vec![record("plain"), full_record()];
        let mut no_sig = full_record();
        no_sig.sig = None;
        no_sig.hash.clear();
        no_sig.masked.clear();
        variants.push(no_sig);
        for mut r in variants.clone() {
            r.input = Some(RecordInput::Written(written_input.into()));
            variants.push(r.clone());
            r.input = Some(RecordInput::Read(
                serde_json::json!({"b": [1, "\n"], "a": {}}),
            ));
            variants.push(r);
        }
        for r in variants {
            let (hash, stored) = r.hash_and_stored_text();
            assert_eq!(hash, r.compute_hash());
            let mut without_input = r.clone();
            without_input.input = None;
            assert_eq!(stored, serde_json::to_string(&without_input).unwrap());
        }
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
