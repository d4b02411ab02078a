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
//! A batch datagram is `SNR2` followed by frames, each the decision time,
//! the record's length, the request's length (both u32 big-endian), the
//! record and the request: the module sends what it collected in one
//! drain of its queue as a few datagrams instead of one per decision (a
//! `send` and a receiver wake-up each). A frame that does not read ends the
//! batch; the frames before it are kept.
//!
//! Cost for the sender: one record written as JSON per decision (straight
//! from the event, [`append_event`]) and one `send`
//! per batch, off Envoy's worker threads (the module hands events to a
//! thread of its own).

use super::line::{LineWriter, Links};
use super::record::{DecisionRecord, RECORD_TYPE};
use crate::decision::DecisionEvent;
use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 4] = b"SNR1";
const HEADER: usize = 4 + 8 + 4;
const BATCH_MAGIC: &[u8; 4] = b"SNR2";
const FRAME_HEADER: usize = 8 + 4 + 4;
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

/// Write one event into `out` (cleared first), as a single-event (`SNR1`)
/// datagram. The module sends batches now; the sidecar still reads this
/// form (modules built before batches), and the tests write it with this.
#[cfg(test)]
pub fn encode(
    record: &DecisionRecord,
    at: SystemTime,
    request: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), ForwardError> {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&epoch_micros(at).to_be_bytes());
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

/// An event's time on the wire: microseconds since the epoch.
fn epoch_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Start a batch datagram in `out` (cleared first).
pub fn begin_batch(out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(BATCH_MAGIC);
}

/// Whether `out` holds a batch with no frame yet.
pub fn batch_is_empty(out: &[u8]) -> bool {
    out.len() <= BATCH_MAGIC.len()
}

/// Append one event, given as its record, to the batch in `out` (see
/// [`begin_batch`]). A batch that would pass [`MAX_DATAGRAM`] is refused
/// with `TooLarge` and `out` is left as it was: send it and start the next
/// one. The module writes from the event instead ([`append_event`]); this
/// form serves records already read back (the `record_socket` fuzz target
/// writes the events it read again with it).
pub fn append(
    record: &DecisionRecord,
    at: SystemTime,
    request: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), ForwardError> {
    append_framed(at, request, out, |out| {
        // Serialising plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(out, record);
    })
}

/// As [`append`] for a decision event, its record written by `lines`
/// straight into the batch (the same JSON, without building the record).
pub fn append_event(
    lines: &mut LineWriter,
    event: &DecisionEvent,
    request: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), ForwardError> {
    append_framed(event.at, request, out, |out| {
        lines.write_unlinked(event, Links::NONE, None, out);
    })
}

fn append_framed(
    at: SystemTime,
    request: Option<&[u8]>,
    out: &mut Vec<u8>,
    write_record: impl FnOnce(&mut Vec<u8>),
) -> Result<(), ForwardError> {
    let start = out.len();
    out.extend_from_slice(&epoch_micros(at).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    write_record(out);
    let json = (out.len() - start - FRAME_HEADER) as u32;
    let request = request.unwrap_or_default();
    out[start + 8..start + 12].copy_from_slice(&json.to_be_bytes());
    out[start + 12..start + 16].copy_from_slice(&(request.len() as u32).to_be_bytes());
    out.extend_from_slice(request);
    if out.len() > MAX_DATAGRAM {
        let size = out.len() - start + BATCH_MAGIC.len();
        out.truncate(start);
        return Err(ForwardError::TooLarge(size));
    }
    Ok(())
}

/// Read the events of one datagram, a single event or a batch, in order:
/// `each` gets every event that reads and then, if one does not, its
/// error (the rest of a batch cannot be found past a bad frame).
pub fn decode_each(datagram: &[u8], mut each: impl FnMut(Result<Forwarded, ForwardError>)) {
    let Some(mut frames) = datagram.strip_prefix(BATCH_MAGIC) else {
        each(decode(datagram));
        return;
    };
    while !frames.is_empty() {
        match next_frame(frames) {
            Ok((event, rest)) => {
                each(Ok(event));
                frames = rest;
            }
            Err(e) => {
                each(Err(e));
                return;
            }
        }
    }
}

fn be_u32(bytes: &[u8]) -> usize {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_be_bytes(word) as usize
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_be_bytes(word)
}

/// One frame of a batch and what follows it.
fn next_frame(frames: &[u8]) -> Result<(Forwarded, &[u8]), ForwardError> {
    if frames.len() < FRAME_HEADER {
        return Err(ForwardError::Truncated(FRAME_HEADER));
    }
    let micros = be_u64(&frames[..8]);
    let record_length = be_u32(&frames[8..12]);
    let request_length = be_u32(&frames[12..16]);
    let end = FRAME_HEADER + record_length;
    let (Some(json), Some(request)) = (
        frames.get(FRAME_HEADER..end),
        frames.get(end..end + request_length),
    ) else {
        return Err(ForwardError::Truncated(record_length + request_length));
    };
    let event = event(json, micros, request)?;
    Ok((event, &frames[end + request_length..]))
}

/// Read one event; the record must be a `policy.decision` with an id and
/// an allow or deny decision. Chain fields, `hash` and `sig` are the
/// receiver's to set.
pub fn decode(datagram: &[u8]) -> Result<Forwarded, ForwardError> {
    if datagram.len() < HEADER || &datagram[..4] != MAGIC {
        return Err(ForwardError::NotAnEvent);
    }
    let micros = be_u64(&datagram[4..12]);
    let length = be_u32(&datagram[12..HEADER]);
    let Some(json) = datagram.get(HEADER..HEADER + length) else {
        return Err(ForwardError::Truncated(length));
    };
    event(json, micros, &datagram[HEADER + length..])
}

/// The event of a record's JSON, its time and its request bytes.
fn event(json: &[u8], micros: u64, request: &[u8]) -> Result<Forwarded, ForwardError> {
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
    Ok(Forwarded {
        record,
        at: UNIX_EPOCH + Duration::from_micros(micros),
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

    fn decoded(datagram: &[u8]) -> Vec<Result<Forwarded, ForwardError>> {
        let mut events = Vec::new();
        decode_each(datagram, |e| events.push(e));
        events
    }

    #[test]
    fn events_written_straight_read_back_as_their_record() {
        let at = UNIX_EPOCH + Duration::from_micros(1_790_000_000_123_456);
        let id = crate::ids::decision_id(at);
        let event = || {
            let mut e = DecisionEvent::without_bundle(
                id,
                at,
                "req \"1\"".into(),
                crate::policy::Verdict::Deny,
            );
            e.latency_us = 42;
            e
        };
        let mut batch = Vec::new();
        begin_batch(&mut batch);
        let mut lines = LineWriter::new("");
        append_event(&mut lines, &event(), Some(b"\x0a\x01x"), &mut batch).expect("appends");
        let events = decoded(&batch);
        let [Ok(back)] = &events[..] else {
            panic!("one event expected: {events:?}");
        };
        assert_eq!(back.record, crate::audit::to_record("", event(), None));
        assert_eq!(back.at, at);
        assert_eq!(back.request.as_deref(), Some(&b"\x0a\x01x"[..]));
    }

    #[test]
    fn batches_carry_events_in_order_and_stop_at_a_bad_frame() {
        let at = UNIX_EPOCH + Duration::from_micros(1_790_000_000_123_456);
        let records = [sample_record("a"), sample_record("b"), sample_record("c")];
        let mut batch = Vec::new();
        begin_batch(&mut batch);
        assert!(batch_is_empty(&batch));
        append(&records[0], at, Some(b"\x0a\x01x"), &mut batch).expect("appends");
        append(&records[1], at, None, &mut batch).expect("appends");
        let before_last = batch.len();
        append(&records[2], at, Some(b"\x0a\x02yz"), &mut batch).expect("appends");
        assert!(!batch_is_empty(&batch));
        let events = decoded(&batch);
        assert_eq!(events.len(), 3);
        let events: Vec<Forwarded> = events.into_iter().map(|e| e.expect("reads")).collect();
        assert_eq!(events[0].record, records[0]);
        assert_eq!(events[0].request.as_deref(), Some(&b"\x0a\x01x"[..]));
        assert_eq!(events[1].record, records[1]);
        assert!(events[1].request.is_none());
        assert_eq!(events[2].record, records[2]);
        assert_eq!(events[2].request.as_deref(), Some(&b"\x0a\x02yz"[..]));
        assert!(events.iter().all(|e| e.at == at));

        // A cut last frame: the two before it are kept, then one error.
        let cut = decoded(&batch[..batch.len() - 1]);
        assert_eq!(cut.len(), 3);
        assert!(cut[0].is_ok() && cut[1].is_ok());
        assert!(matches!(cut[2], Err(ForwardError::Truncated(_))));
        // A frame whose record is no decision: an error, the first kept.
        let mut bad = batch[..before_last].to_vec();
        let mut other = records[2].clone();
        other.decision = "maybe".into();
        append(&other, at, None, &mut bad).expect("appends");
        let read = decoded(&bad);
        assert_eq!(read.len(), 3);
        assert!(matches!(read[2], Err(ForwardError::Invalid(_))));
        // Single-event datagrams still read.
        let mut single = Vec::new();
        encode(&records[0], at, None, &mut single).expect("encodes");
        let one = decoded(&single);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_ref().map(|e| &e.record), Ok(&records[0]));
        assert!(matches!(
            decoded(b"SNR3")[..],
            [Err(ForwardError::NotAnEvent)]
        ));
        // An empty batch holds no event.
        begin_batch(&mut single);
        assert!(decoded(&single).is_empty());
    }

    #[test]
    fn a_batch_never_passes_the_datagram_limit() {
        let at = UNIX_EPOCH;
        let record = sample_record("a");
        let mut batch = Vec::new();
        begin_batch(&mut batch);
        let request = vec![b'x'; MAX_DATAGRAM / 3];
        append(&record, at, Some(&request), &mut batch).expect("first");
        append(&record, at, Some(&request), &mut batch).expect("second");
        let full = batch.clone();
        assert!(matches!(
            append(&record, at, Some(&request), &mut batch),
            Err(ForwardError::TooLarge(_))
        ));
        assert_eq!(batch, full, "a refused frame leaves the batch as it was");
        assert!(batch.len() <= MAX_DATAGRAM);
        assert_eq!(decoded(&batch).len(), 2);
    }
}
