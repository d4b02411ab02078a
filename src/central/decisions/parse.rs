//! A posted batch, line by line: each line becomes a stored row or a
//! quarantined one with its error. Pure, so every refusal is unit-tested.

use crate::audit::inputs::RecordInput;
use crate::audit::record::{DecisionRecord, RECORD_TYPE, SIGNATURE_ALG};
use crate::central::store::decisions::{DecisionRow, Seal};
use crate::keys::TrustedKeys;
use crate::timestamp::parse_rfc3339;
use std::io::Read;

/// Most bytes a gzip body may inflate to (a batch is at most a few MiB).
pub(crate) const MAX_INFLATED: u64 = 64 << 20;

/// The first bytes of every gzip stream (RFC 1952). An NDJSON batch
/// starts with `{` or whitespace, so the two cannot be confused.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a posted body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the body is not valid gzip: {0}")]
    NotGzip(String),
    /// Answered 413, like a body over `--max-body`.
    #[error("the body inflates past {MAX_INFLATED} bytes")]
    InflatesTooLarge,
}

/// The body's bytes, inflating gzip: when `Content-Encoding: gzip` says so
/// (`declared_gzip`), or when the body starts with gzip's magic bytes (a
/// client that compressed without saying so would otherwise have every
/// line quarantined as "not UTF-8").
pub(crate) fn body_bytes(body: &[u8], declared_gzip: bool) -> Result<Vec<u8>, BodyError> {
    if !declared_gzip && !body.starts_with(&GZIP_MAGIC) {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    // Every member: `cat a.gz b.gz` is one valid gzip stream (RFC 1952),
    // and GzDecoder alone would stop after the first, dropping the rest
    // without a word. Bytes after the last member that are no member are
    // an error, not ignored.
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::NotGzip(e.to_string()))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(BodyError::InflatesTooLarge);
    }
    Ok(out)
}

/// A valid record, ready to store.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// 1-based line number in the batch.
    pub line: usize,
    pub row: DecisionRow,
    /// The deciding policy and every policy in `shadow`, once each.
    pub policies: Vec<String>,
}

/// A line that is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub line: usize,
    pub error: String,
    pub content: String,
}

/// Every non-empty line of `body`, as a record or a refusal (a line that
/// is not UTF-8 is refused on its own; its neighbours still count).
pub(crate) fn parse_batch(
    body: &[u8],
    record_keys: Option<&TrustedKeys>,
) -> (Vec<Incoming>, Vec<Refused>) {
    let mut records = Vec::new();
    let mut refused = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = match std::str::from_utf8(raw) {
            Ok(line) => line,
            Err(e) => {
                refused.push(Refused {
                    line: line_no,
                    error: format!("not UTF-8: {e}"),
                    content: String::from_utf8_lossy(raw).into_owned(),
                });
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, record_keys) {
            Ok((row, policies)) => records.push(Incoming {
                line: line_no,
                row,
                policies,
            }),
            Err(error) => refused.push(Refused {
                line: line_no,
                error,
                content: line.to_owned(),
            }),
        }
    }
    (records, refused)
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A checkpoint signature is valid when a trusted key of the name it gives
/// made it over the record's `hash`; any other signature (altered, by an
/// unknown key, another algorithm) is invalid. Unchecked without keys.
fn check_seal(record: &DecisionRecord, keys: Option<&TrustedKeys>) -> Seal {
    match (&record.sig, keys) {
        (Some(sig), Some(keys)) => {
            let valid = sig.alg == SIGNATURE_ALG
                && keys.verify_by(&sig.key_id, record.hash.as_bytes(), &sig.value) == Some(true);
            if valid {
                Seal::Valid
            } else {
                Seal::Invalid
            }
        }
        _ => Seal::Unchecked,
    }
}

fn parse_line(
    line: &str,
    record_keys: Option<&TrustedKeys>,
) -> Result<(DecisionRow, Vec<String>), String> {
    // serde reads a struct from an array too (fields in order), which for
    // a line like `[{…}]` would say "invalid type: map, expected a string".
    match line.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(0xEF) if line.trim_start().starts_with('\u{feff}') => {
            return Err("not a decision record: the line starts with a UTF-8 byte-order mark; send JSON without one".into());
        }
        _ => return Err(
            "not a decision record: a record is one JSON object per line (this line is no object)"
                .into(),
        ),
    }
    let mut record: DecisionRecord =
        serde_json::from_str(line).map_err(|e| format!("not a decision record: {e}"))?;
    if record.kind != RECORD_TYPE {
        return Err(format!("type is {:?}, not {RECORD_TYPE:?}", record.kind));
    }
    for (field, value) in [
        ("id", &record.id),
        ("node", &record.node),
        ("chainId", &record.chain_id),
    ] {
        if value.is_empty() {
            return Err(format!("{field} is empty"));
        }
    }
    if !matches!(record.decision.as_ref(), "allow" | "deny") {
        return Err(format!(
            "decision is {:?}, not allow or deny",
            record.decision
        ));
    }
    if !is_hash(&record.hash) || !is_hash(&record.prev_hash) {
        return Err("hash and prevHash must be 64 hex digits".into());
    }
    let ts_us =
        parse_rfc3339(&record.ts).ok_or_else(|| format!("ts {:?} is not RFC 3339", record.ts))?;
    let seq = i64::try_from(record.seq).map_err(|_| format!("seq {} is too large", record.seq))?;
    // The input in canonical form, once: the hash copies this text and the
    // store keeps it. A sidecar's input arrives canonical and is kept as
    // the text it came as (no tree: `RecordInput`'s `Deserialize`).
    record.input = record
        .input
        .take()
        .map(|input| RecordInput::Written(input.into_canonical()));
    // The stored text (no input: it is stored beside) is cut from the
    // bytes the hash is computed over.
    let (computed, text) = record.hash_and_stored_text();
    let hash_ok = computed == record.hash;
    let seal = check_seal(&record, record_keys);
    let input = record.input.take().map(RecordInput::into_canonical);
    let mut policies: Vec<String> = Vec::new();
    for id in record
        .policy_id
        .iter()
        .chain(record.shadow.iter().map(|s| &s.policy_id))
    {
        if !policies.contains(id) {
            policies.push(id.clone());
        }
    }
    Ok((
        DecisionRow {
            id: record.id,
            node: record.node,
            chain_id: record.chain_id,
            seq,
            ts_us,
            decision: record.decision.into_owned(),
            policy_id: record.policy_id,
            prev_hash: record.prev_hash,
            hash: record.hash,
            hash_ok,
            seal,
            record: text,
            input,
        },
        policies,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{sample_record, Chain, ShadowEntry};
    use serde_json::json;

    fn record(id: &str, chain: &mut Chain) -> DecisionRecord {
        let mut r = sample_record(id);
        r.node = "node-a".into();
        r.shadow = vec![ShadowEntry {
            mode: "simulating".into(),
            policy_id: "q".into(),
            policy_version: 1,
            would_decide: "deny".into(),
        }];
        r.input = Some(RecordInput::Read(json!({"request": {"method": "DELETE"}})));
        chain.link(&mut r);
        r
    }

    #[test]
    fn valid_lines_are_rows_and_every_bad_line_says_why() {
        let mut chain = Chain::fresh("c1".into());
        let good = serde_json::to_string(&record("a", &mut chain)).unwrap_or_default();
        let mut edited = record("b", &mut chain);
        edited.decision = "allow".into();
        let edited = serde_json::to_string(&edited).unwrap_or_default();
        let text = format!(
            "{good}\n\nnot json\n{{\"type\": \"other\"}}\n{}\n{edited}\n",
            good.replace("2026-11-22T23:59:59.123456Z", "yesterday")
        );
        let (records, refused) = parse_batch(text.as_bytes(), None);
        assert_eq!(records.len(), 2);
        let first = &records[0];
        assert_eq!((first.line, first.row.seq, first.row.hash_ok), (1, 0, true));
        assert_eq!(first.policies, vec!["p".to_owned(), "q".to_owned()]);
        assert_eq!(
            first.row.input.as_deref(),
            Some(r#"{"request":{"method":"DELETE"}}"#)
        );
        assert!(!first.row.record.contains("\"input\""));
        assert!(
            !records[1].row.hash_ok,
            "an edited record keeps its line but fails its hash"
        );
        let lines: Vec<usize> = refused.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(
            refused[0].error.starts_with("not a decision record"),
            "{:?}",
            refused[0]
        );
        assert!(refused[2].error.contains("RFC 3339"), "{:?}", refused[2]);
    }

    /// An input that is no JSON value serde reads is refused with what is
    /// wrong inside the input (its own column) and where in the line; an
    /// input that is JSON but not canonical is stored canonically.
    #[test]
    fn an_input_is_stored_canonically_or_refused_saying_where() {
        let mut chain = Chain::fresh("c1".into());
        let line = serde_json::to_string(&record("a", &mut chain)).unwrap_or_default();
        let canonical = r#"{"request":{"method":"DELETE"}}"#;
        assert!(line.contains(canonical));
        let spaced = line.replace(canonical, r#"{ "request" : { "method" : "DELETE" } }"#);
        let huge = line.replace(canonical, r#"{"request":{"size":1e999}}"#);
        let (records, refused) = parse_batch(format!("{spaced}\n{huge}\n").as_bytes(), None);
        assert_eq!(records.len(), 1, "{refused:?}");
        assert_eq!(records[0].row.input.as_deref(), Some(canonical));
        assert!(
            records[0].row.hash_ok,
            "the hash covers the canonical input"
        );
        let error = &refused[0].error;
        assert!(
            error.contains("input: number out of range (column 24 of the input) at line 1"),
            "{error}"
        );
    }

    #[test]
    fn gzip_bodies_inflate_and_garbage_is_refused() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"line one\n").unwrap_or_default();
        let packed = gz.finish().unwrap_or_default();
        assert_eq!(body_bytes(&packed, true), Ok(b"line one\n".to_vec()));
        // Two members, as `cat a.gz b.gz` makes: both inflate.
        let mut second = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        second.write_all(b"line two\n").unwrap_or_default();
        let two = [packed.clone(), second.finish().unwrap_or_default()].concat();
        assert_eq!(body_bytes(&two, true), Ok(b"line one\nline two\n".to_vec()));
        // Bytes after the last member that are no member: refused.
        let trailing = [packed.clone(), b"garbage".to_vec()].concat();
        assert!(matches!(
            body_bytes(&trailing, true),
            Err(BodyError::NotGzip(_))
        ));
        // Compressed without saying so: the magic bytes tell.
        assert_eq!(body_bytes(&packed, false), Ok(b"line one\n".to_vec()));
        assert_eq!(
            body_bytes(b"{\"a\":1}\n", false),
            Ok(b"{\"a\":1}\n".to_vec())
        );
        assert!(matches!(
            body_bytes(b"plain", true),
            Err(BodyError::NotGzip(_))
        ));
        // A bomb: more than MAX_INFLATED once inflated.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b'\n'; 1 << 20];
        for _ in 0..=(MAX_INFLATED >> 20) {
            gz.write_all(&zeros).unwrap_or_default();
        }
        let bomb = gz.finish().unwrap_or_default();
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        assert_eq!(body_bytes(&bomb, false), Err(BodyError::InflatesTooLarge));
        // A line that is no object, or starts with a byte-order mark: said so.
        let (_, refused) = parse_batch("[{\"id\": 1}]\n\u{feff}{}\n".as_bytes(), None);
        assert!(
            refused[0].error.contains("one JSON object per line"),
            "{:?}",
            refused[0]
        );
        assert!(
            refused[1].error.contains("byte-order mark"),
            "{:?}",
            refused[1]
        );
        // A line that is not UTF-8 is refused alone.
        let (records, refused) = parse_batch(b"\xff\xfe\n\n", None);
        assert!(records.is_empty());
        assert_eq!((refused.len(), refused[0].line), (1, 1));
        assert!(
            refused[0].error.starts_with("not UTF-8"),
            "{:?}",
            refused[0]
        );
    }

    #[test]
    fn signatures_are_checked_against_the_record_keys() {
        use crate::audit::record::RecordSignature;
        use crate::keys::{FileKey, Signer, TrustedKeys};
        let dir = tempfile::tempdir().expect("tempdir");
        crate::keys::keygen(dir.path(), "node-a").expect("keygen");
        let key = FileKey::load(&dir.path().join("node-a.key")).expect("key");
        let keys = TrustedKeys::load_dir(dir.path()).expect("trusted");
        let mut chain = Chain::fresh("c1".into());
        let mut signed = record("a", &mut chain);
        signed.sig = Some(RecordSignature {
            alg: "Ed25519".into(),
            key_id: "node-a".into(),
            value: key.sign_base64(signed.hash.as_bytes()).expect("signs"),
        });
        let seal = |r: &DecisionRecord, keys: Option<&TrustedKeys>| {
            let line = serde_json::to_string(r).unwrap_or_default();
            let (records, refused) = parse_batch(line.as_bytes(), keys);
            assert!(refused.is_empty(), "{refused:?}");
            records[0].row.seal
        };
        assert_eq!(seal(&signed, Some(&keys)), Seal::Valid);
        // Without record keys nothing is checked.
        assert_eq!(seal(&signed, None), Seal::Unchecked);
        // The stored text keeps the signature (the export carries it).
        let line = serde_json::to_string(&signed).unwrap_or_default();
        let (records, _) = parse_batch(line.as_bytes(), Some(&keys));
        assert!(records[0].row.record.contains("\"sig\""));
        // Altered, another key's name, another algorithm: invalid.
        let mut altered = signed.clone();
        if let Some(sig) = altered.sig.as_mut() {
            sig.value = key.sign_base64(b"other").expect("signs");
        }
        assert_eq!(seal(&altered, Some(&keys)), Seal::Invalid);
        let mut unknown = signed.clone();
        if let Some(sig) = unknown.sig.as_mut() {
            sig.key_id = "node-z".into();
        }
        assert_eq!(seal(&unknown, Some(&keys)), Seal::Invalid);
        let mut other_alg = signed.clone();
        if let Some(sig) = other_alg.sig.as_mut() {
            sig.alg = "RS256".into();
        }
        assert_eq!(seal(&other_alg, Some(&keys)), Seal::Invalid);
        // No signature: nothing to check.
        let plain = record("b", &mut chain);
        assert_eq!(seal(&plain, Some(&keys)), Seal::Unchecked);
    }
}
