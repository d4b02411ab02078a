//! Decision events from a decision point outside this process (the
//! in-process Envoy module, `envoy/module/`) to `serve --record-socket`:
//! one Unix datagram per decision, which the sidecar links into its own
//! chain, spool and shipping, so central sees them like any other record.
//!
//! A datagram is `SNR1`, the decision time (u64 big-endian, microseconds
//! since the epoch), the length of the record JSON (u32 big-endian), the
//! record (a `policy.decision` without chain fields or input), and then the
//! encoded `CheckRequest` the policies read, if any. The sidecar builds the
//! record's `input` from those bytes with its own `--record-input` and
//! `--mask` settings, as for its own decisions.
//!
//! Cost for the sender: one JSON serialisation and one `sendto` per
//! decision, off Envoy's worker threads (the module hands events to a
//! thread of its own).

use super::record::{DecisionRecord, RECORD_TYPE};
use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 4] = b"SNR1";
const HEADER: usize = 4 + 8 + 4;
/// Largest datagram accepted (Linux's default socket buffer is ~208 KiB; a
/// record whose input is larger is dropped by the sender and counted).
pub const MAX_DATAGRAM: usize = 192 * 1024;

/// A decision record received from another decision point.
#[derive(Debug)]
pub struct Forwarded {
    pub record: DecisionRecord,
    pub at: SystemTime,
    /// The encoded `CheckRequest`, for the record's input.
    pub request: Option<Bytes>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("not a SentinelNet decision event (no SNR1 header)")]
    NotAnEvent,
    #[error("truncated: the record is {0} bytes, the datagram holds fewer")]
    Truncated(usize),
    #[error("the record is not valid: {0}")]
    Invalid(String),
    #[error("the event is {0} bytes, past the {MAX_DATAGRAM}-byte limit")]
    TooLarge(usize),
}

/// Write one event into `out` (cleared first).
pub fn encode(
    record: &DecisionRecord,
    at: SystemTime,
    request: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), ForwardError> {
    out.clear();
    out.extend_from_slice(MAGIC);
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    out.extend_from_slice(&micros.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    // Serialising plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, record);
    let json = (out.len() - HEADER) as u32;
    out[12..HEADER].copy_from_slice(&json.to_be_bytes());
    if let Some(request) = request {
        out.extend_from_slice(request);
    }
    if out.len() > MAX_DATAGRAM {
        return Err(ForwardError::TooLarge(out.len()));
    }
    Ok(())
}

/// Read one event; the record must be a `policy.decision` with an id and
/// an allow or deny decision. Chain fields, `hash` and `sig` are the
/// receiver's to set.
pub fn decode(datagram: &[u8]) -> Result<Forwarded, ForwardError> {
    if datagram.len() < HEADER || &datagram[..4] != MAGIC {
        return Err(ForwardError::NotAnEvent);
    }
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&datagram[4..12]);
    let mut length = [0u8; 4];
    length.copy_from_slice(&datagram[12..HEADER]);
    let length = u32::from_be_bytes(length) as usize;
    let Some(json) = datagram.get(HEADER..HEADER + length) else {
        return Err(ForwardError::Truncated(length));
    };
    let mut record: DecisionRecord =
        serde_json::from_slice(json).map_err(|e| ForwardError::Invalid(e.to_string()))?;
    if record.kind != RECORD_TYPE {
        return Err(ForwardError::Invalid(format!(
            "type is {:?}, not {RECORD_TYPE:?}",
            record.kind
        )));
    }
    if record.id.is_empty() || !matches!(record.decision.as_ref(), "allow" | "deny") {
        return Err(ForwardError::Invalid(
            "needs an id and a decision of allow or deny".into(),
        ));
    }
    record.hash.clear();
    record.sig = None;
    record.input = None;
    record.masked.clear();
    let request = &datagram[HEADER + length..];
    Ok(Forwarded {
        record,
        at: UNIX_EPOCH + Duration::from_micros(u64::from_be_bytes(micros)),
        request: (!request.is_empty()).then(|| Bytes::copy_from_slice(request)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::sample_record;

    #[test]
    fn events_round_trip_and_bad_datagrams_are_refused() {
        let record = sample_record("0193-a");
        let at = UNIX_EPOCH + Duration::from_micros(1_790_000_000_123_456);
        let mut out = Vec::new();
        encode(&record, at, Some(b"\x0a\x02request"), &mut out).expect("encodes");
        let back = decode(&out).expect("decodes");
        assert_eq!(back.record, record);
        assert_eq!(back.at, at);
        assert_eq!(back.request.as_deref(), Some(&b"\x0a\x02request"[..]));
        encode(&record, at, None, &mut out).expect("encodes");
        assert!(decode(&out).expect("decodes").request.is_none());

        assert_eq!(decode(b"hello").unwrap_err(), ForwardError::NotAnEvent);
        assert!(matches!(
            decode(&out[..out.len() - 3]),
            Err(ForwardError::Truncated(_))
        ));
        let mut other = record.clone();
        other.decision = "maybe".into();
        encode(&other, at, None, &mut out).expect("encodes");
        assert!(matches!(decode(&out), Err(ForwardError::Invalid(_))));
        let huge = vec![b'x'; MAX_DATAGRAM];
        assert!(matches!(
            encode(&record, at, Some(&huge), &mut out),
            Err(ForwardError::TooLarge(_))
        ));
    }
}
