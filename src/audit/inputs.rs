//! Inputs in decision records: which records carry the input document the
//! policies saw (`--record-input`), and which paths are removed from it
//! first (`--mask`).
//!
//! The check path only hands over the request it decoded (a move, for the
//! records selected); the document is written here, on the audit thread,
//! by a builder the sidecar wiring supplies (the audit pipeline does not
//! know how a request becomes an input document; `authz` does). Selection is a stable hash of
//! the request id, so every replica keeps the same share of the same
//! requests. Inputs go into records only, never into logs.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Paths always removed from recorded inputs (credentials).
pub const DEFAULT_MASKS: [&str; 4] = [
    "request.headers.authorization",
    "request.headers.cookie",
    "request.headers.proxy-authorization",
    "request.headers.x-api-key",
];

/// At most this many mask paths (they are tracked as bits of a `u64`).
pub const MAX_MASKS: usize = 64;

/// Dotted paths to leave out of a recorded input, split once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masks {
    /// Each path as given (what `masked` names), bit `i` for path `i`.
    dotted: Vec<String>,
    /// Each path dotted, as a JSON string (what `masked` lists).
    quoted: Vec<String>,
    /// The paths as a tree of their segments, the root first: a writer
    /// stepping into a key compares it with the segments that follow the
    /// path so far (one at the root for the defaults), not with every path.
    nodes: Vec<MaskNode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MaskNode {
    /// The next segments and their nodes.
    children: Vec<(String, usize)>,
    /// The bits of the masks whose path ends here.
    ends: u64,
}

/// Where a writer is in the document: the node of the mask tree the path
/// so far leads to, or none when no mask goes on from here.
#[derive(Debug, Clone, Copy)]
pub struct MaskCursor<'m> {
    masks: &'m Masks,
    node: Option<usize>,
}

impl Masks {
    /// The defaults plus `extra` (duplicates and empty entries dropped, at
    /// most [`MAX_MASKS`]).
    pub fn with_defaults(extra: &[String]) -> Result<Masks, String> {
        let mut dotted: Vec<String> = DEFAULT_MASKS.iter().map(|m| (*m).to_owned()).collect();
        for m in extra.iter().map(|m| m.trim()).filter(|m| !m.is_empty()) {
            if !dotted.iter().any(|known| known == m) {
                dotted.push(m.to_owned());
            }
        }
        if dotted.len() > MAX_MASKS {
            return Err(format!(
                "--mask: at most {} paths besides the {} defaults",
                MAX_MASKS - DEFAULT_MASKS.len(),
                DEFAULT_MASKS.len()
            ));
        }
        let mut nodes = vec![MaskNode::default()];
        for (i, path) in dotted.iter().enumerate() {
            let mut at = 0;
            for segment in path.split('.') {
                let known = nodes[at].children.iter().find(|(s, _)| s == segment);
                at = match known {
                    Some(&(_, next)) => next,
                    None => {
                        nodes.push(MaskNode::default());
                        let next = nodes.len() - 1;
                        nodes[at].children.push((segment.to_owned(), next));
                        next
                    }
                };
            }
            nodes[at].ends |= 1 << i;
        }
        Ok(Masks {
            quoted: dotted.iter().map(|d| super::json::quoted(d)).collect(),
            dotted,
            nodes,
        })
    }

    /// The cursor at the document's root.
    pub fn root(&self) -> MaskCursor<'_> {
        MaskCursor {
            masks: self,
            node: self
                .nodes
                .first()
                .filter(|n| !n.children.is_empty())
                .map(|_| 0),
        }
    }

    /// The dotted paths whose bits are set in `hits`.
    pub fn named(&self, hits: u64) -> Vec<String> {
        self.dotted
            .iter()
            .enumerate()
            .filter(|(i, _)| hits & (1 << i) != 0)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// `,"masked":[…]` with the dotted paths whose bits are set in `hits`
    /// (as [`Masks::named`] lists them), or nothing when none are.
    pub fn write_named(&self, hits: u64, out: &mut Vec<u8>) {
        if hits == 0 {
            return;
        }
        out.extend_from_slice(b",\"masked\":[");
        let mut first = true;
        for (i, quoted) in self.quoted.iter().enumerate() {
            if hits & (1 << i) != 0 {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(quoted.as_bytes());
            }
        }
        out.push(b']');
    }
}

impl<'m> MaskCursor<'m> {
    /// Step into `key`: `Err(bits)` when a mask ends exactly here (leave
    /// the key out; `bits` says which), else the cursor for its value.
    pub fn enter(self, key: &str) -> Result<MaskCursor<'m>, u64> {
        let Some(node) = self.node.and_then(|n| self.masks.nodes.get(n)) else {
            return Ok(self);
        };
        let next = node
            .children
            .iter()
            .find(|(segment, _)| segment == key)
            .map(|&(_, next)| next);
        match next.and_then(|n| self.masks.nodes.get(n)) {
            Some(child) if child.ends != 0 => Err(child.ends),
            _ => Ok(MaskCursor {
                masks: self.masks,
                node: next,
            }),
        }
    }
}

impl MaskCursor<'_> {
    /// Step into array element `i`: masks may name elements by index
    /// (`request.body.items.0.card`); an element itself is never removed.
    pub fn enter_index(self, i: usize) -> Self {
        if self.node.is_none() {
            return self;
        }
        self.enter(itoa::Buffer::new().format(i)).unwrap_or(self)
    }
}

/// A record's input: canonical JSON text (no tree built), or a parsed
/// value. Both serialise to the same canonical bytes.
#[derive(Debug, Clone)]
pub enum RecordInput {
    /// Canonical text, copied into a line as it is: written by an
    /// [`InputBuilder`] and trusted as JSON without being parsed again
    /// (validating 1 KB of JSON per record was a tenth of the audit
    /// thread's time; serde serialisation, off the write path, checks it),
    /// or read back from a record and found canonical (`canonical.rs`).
    Written(String),
    /// Read back from a record whose input text was not canonical.
    Read(Value),
}

impl RecordInput {
    /// The input as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            RecordInput::Written(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            RecordInput::Read(value) => value.clone(),
        }
    }

    /// About how many bytes the input's JSON takes.
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            RecordInput::Written(text) => text.len(),
            RecordInput::Read(_) => 1024,
        }
    }

    /// The input's canonical JSON text (a written input as it is).
    pub(crate) fn into_canonical(self) -> String {
        match self {
            RecordInput::Written(text) => text,
            RecordInput::Read(value) => value.to_string(),
        }
    }

    /// Append the input's canonical JSON to `out`.
    pub(crate) fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            RecordInput::Written(text) => out.extend_from_slice(text.as_bytes()),
            // Serialising a value into a Vec cannot fail.
            RecordInput::Read(value) => {
                let _ = serde_json::to_writer(&mut *out, value);
            }
        }
    }
}

impl PartialEq for RecordInput {
    fn eq(&self, other: &RecordInput) -> bool {
        self.to_value() == other.to_value()
    }
}

impl Serialize for RecordInput {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RecordInput::Written(text) => RawValue::from_string(text.clone())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
            RecordInput::Read(value) => value.serialize(serializer),
        }
    }
}

/// A record read back keeps an input that is already canonical (what every
/// sidecar writes) as its text, without building a tree only to write the
/// same bytes again; anything else is parsed. Either way it serialises to
/// the same canonical bytes. (Records are read with serde_json only: the
/// raw text needs its deserializer.)
impl<'de> Deserialize<'de> for RecordInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if super::canonical::is_canonical(raw.get()) {
            Ok(RecordInput::Written(Box::<str>::from(raw).into_string()))
        } else {
            serde_json::from_str(raw.get())
                .map(RecordInput::Read)
                .map_err(|e| {
                    // Its position is in the input's own text; the record
                    // line's position is added around it.
                    let text = e.to_string();
                    let message = text.rsplit_once(" at line ").map_or(&*text, |(m, _)| m);
                    serde::de::Error::custom(format_args!(
                        "input: {message} (column {} of the input)",
                        e.column()
                    ))
                })
        }
    }
}

/// Writes a check's input document, from its request and the time of the
/// decision, as canonical JSON (keys sorted at every level, compact)
/// leaving out what `masks` name; the bits of the masks that removed
/// something. The request is what the check path decoded, or the encoded
/// bytes a forwarded event carried (`Bytes`); `None` when it is neither
/// or does not decode.
pub type InputBuilder = Arc<
    dyn Fn(&(dyn Any + Send), SystemTime, MaskCursor<'_>, &mut Vec<u8>) -> Option<u64>
        + Send
        + Sync,
>;

/// Whether the record of `request_id` carries its input when `percent` of
/// records do: a stable hash of the id, so every replica keeps the same
/// share of the same requests.
pub(crate) fn selected(percent: u8, request_id: &str) -> bool {
    match percent {
        0 => false,
        100.. => true,
        p => xxhash_rust::xxh3::xxh3_64(request_id.as_bytes()) % 100 < u64::from(p),
    }
}

/// Which records carry their input, and what is removed from it.
#[derive(Clone)]
pub struct InputRecording {
    /// Share of requests (0–100) whose records carry their input.
    pub percent: u8,
    /// Paths removed from the input (the defaults included).
    pub masks: Masks,
    pub build: InputBuilder,
    /// The length of the last input written.
    size_hint: Arc<AtomicUsize>,
}

impl std::fmt::Debug for InputRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputRecording")
            .field("percent", &self.percent)
            .field("masks", &self.masks)
            .finish_non_exhaustive()
    }
}

impl InputRecording {
    pub fn new(percent: u8, masks: Masks, build: InputBuilder) -> InputRecording {
        InputRecording {
            percent,
            masks,
            build,
            size_hint: Arc::new(AtomicUsize::new(1024)),
        }
    }

    /// Whether the record of `request_id` carries its input.
    pub(crate) fn selects(&self, request_id: &str) -> bool {
        selected(self.percent, request_id)
    }

    /// About how many bytes the last input took.
    pub(crate) fn size_hint(&self) -> usize {
        self.size_hint.load(Ordering::Relaxed)
    }

    /// The masked input of a selected record, and the masks that removed
    /// something.
    pub(crate) fn input(
        &self,
        request_id: &str,
        request: &(dyn Any + Send),
        at: SystemTime,
    ) -> Option<(RecordInput, Vec<String>)> {
        // Sized like the last input (plus room for a longer one), so the
        // text is neither grown while written nor shrunk afterwards.
        let hint = self.size_hint();
        let mut text = Vec::with_capacity(hint + hint / 4 + 64);
        let hits = self.write(request_id, request, at, &mut text)?;
        let text = String::from_utf8(text).ok()?;
        Some((RecordInput::Written(text), self.masks.named(hits)))
    }

    /// Append `,"input":` and the masked input of a selected record to a
    /// record line being written; the bits of the masks that removed
    /// something. Nothing is appended when the record carries no input.
    pub(crate) fn write_field(
        &self,
        request_id: &str,
        request: &(dyn Any + Send),
        at: SystemTime,
        line: &mut Vec<u8>,
    ) -> Option<u64> {
        const KEY: &[u8] = b",\"input\":";
        let start = line.len();
        line.extend_from_slice(KEY);
        let hits = self.write(request_id, request, at, line);
        if hits.is_none() {
            line.truncate(start);
        }
        hits
    }

    /// Write the masked input document of a selected record to `out`.
    fn write(
        &self,
        request_id: &str,
        request: &(dyn Any + Send),
        at: SystemTime,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        if !self.selects(request_id) {
            return None;
        }
        let start = out.len();
        let hits = (self.build)(request, at, self.masks.root(), out)?;
        self.size_hint.store(out.len() - start, Ordering::Relaxed);
        // Records take the text as it is, unchecked: a builder must write
        // one JSON value, canonical and without padding.
        debug_assert!(
            std::str::from_utf8(&out[start..]).is_ok_and(|text| {
                serde_json::from_str::<Value>(text)
                    .is_ok_and(|v| serde_json::to_string(&v).is_ok_and(|c| c == text))
            }),
            "an input builder wrote text that is not canonical JSON: {}",
            String::from_utf8_lossy(&out[start..])
        );
        Some(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A builder writing a fixed document through the mask cursor, like the
    /// real one (authz) does field by field.
    fn recording(percent: u8, extra: &[&str]) -> InputRecording {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        InputRecording::new(
            percent,
            Masks::with_defaults(&extra).expect("masks"),
            Arc::new(|_, _, cursor, out| {
                let doc = json!({"request": {"method": "GET", "headers": {
                    "authorization": "Bearer secret", "cookie": "s=1", "x-user": "alice"},
                    "body": {"card": "4111", "amount": 3}}});
                Some(write_masked(&doc, cursor, out))
            }),
        )
    }

    fn write_masked(value: &Value, cursor: MaskCursor<'_>, out: &mut Vec<u8>) -> u64 {
        let Value::Object(map) = value else {
            let _ = serde_json::to_writer(&mut *out, value);
            return 0;
        };
        let mut hits = 0;
        out.push(b'{');
        let mut first = true;
        for (k, v) in map {
            match cursor.enter(k) {
                Err(bits) => hits |= bits,
                Ok(child) => {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.push(b':');
                    hits |= write_masked(v, child, out);
                }
            }
        }
        out.push(b'}');
        hits
    }

    #[test]
    fn masks_remove_credentials_and_configured_paths_and_say_which() {
        let r = recording(100, &["request.body.card", "request.headers.absent"]);
        let (input, masked) = r.input("req-1", &(), SystemTime::now()).expect("selected");
        assert_eq!(
            input.to_value(),
            json!({"request": {"method": "GET", "headers": {"x-user": "alice"},
                   "body": {"amount": 3}}})
        );
        assert_eq!(
            masked,
            vec![
                "request.headers.authorization",
                "request.headers.cookie",
                "request.body.card"
            ]
        );
        // Written and read forms serialise to the same canonical bytes.
        let written = serde_json::to_string(&input).unwrap_or_default();
        let read = RecordInput::Read(input.to_value());
        assert_eq!(serde_json::to_string(&read).unwrap_or_default(), written);
    }

    #[test]
    fn a_mask_on_a_parent_removes_it_whole_and_alone_is_named() {
        // `request.headers` ends where the default masks go on: the
        // headers go, and only the mask that removed them is listed.
        let r = recording(100, &["request.headers", "request.body.card.number"]);
        let (input, masked) = r.input("req-1", &(), SystemTime::now()).expect("selected");
        assert_eq!(
            input.to_value(),
            json!({"request": {"method": "GET", "body": {"amount": 3, "card": "4111"}}})
        );
        assert_eq!(masked, vec!["request.headers"]);
        // No masks at all: nothing removed, nothing named.
        let bare = Masks::default();
        let doc = json!({"request": {"headers": {"cookie": "s=1"}}});
        let mut out = Vec::new();
        assert_eq!(write_masked(&doc, bare.root(), &mut out), 0);
        assert_eq!(out, serde_json::to_vec(&doc).unwrap_or_default());
    }

    #[test]
    fn the_field_written_into_a_line_is_the_input_and_its_masks() {
        let r = recording(100, &["request.body.card", "request.headers.absent"]);
        let (input, masked) = r.input("req-1", &(), SystemTime::now()).expect("selected");
        let mut line = b"{\"id\":1".to_vec();
        let hits = r
            .write_field("req-1", &(), SystemTime::now(), &mut line)
            .expect("selected");
        let expected = format!(
            "{{\"id\":1,\"input\":{}",
            serde_json::to_string(&input).unwrap_or_default()
        );
        assert_eq!(String::from_utf8_lossy(&line), expected);
        let mut named = Vec::new();
        r.masks.write_named(hits, &mut named);
        assert_eq!(
            String::from_utf8_lossy(&named),
            format!(
                ",\"masked\":{}",
                serde_json::to_string(&masked).unwrap_or_default()
            )
        );
        let mut nothing = Vec::new();
        r.masks.write_named(0, &mut nothing);
        assert!(nothing.is_empty());
        // A record that carries no input gets no field.
        let none = recording(0, &[]);
        let mut line = b"{".to_vec();
        assert!(none
            .write_field("req-1", &(), SystemTime::now(), &mut line)
            .is_none());
        assert_eq!(line, b"{");
        // Nor does one whose request does not decode, whatever the builder
        // wrote before it gave up.
        let failing = InputRecording::new(
            100,
            Masks::with_defaults(&[]).expect("masks"),
            Arc::new(|_, _, _, out| {
                out.extend_from_slice(b"{\"half");
                None
            }),
        );
        assert!(failing
            .write_field("req-1", &(), SystemTime::now(), &mut line)
            .is_none());
        assert_eq!(line, b"{");
    }

    #[test]
    fn too_many_masks_are_refused() {
        let many: Vec<String> = (0..70).map(|i| format!("request.headers.h{i}")).collect();
        assert!(Masks::with_defaults(&many).is_err());
    }

    #[test]
    fn selection_is_a_stable_share_of_request_ids() {
        let none = recording(0, &[]);
        let all = recording(100, &[]);
        let some = recording(30, &[]);
        let ids: Vec<String> = (0..5000).map(|i| format!("req-{i}")).collect();
        assert!(ids.iter().all(|id| !none.selects(id) && all.selects(id)));
        let chosen = ids.iter().filter(|id| some.selects(id)).count();
        assert!((1300..=1700).contains(&chosen), "{chosen} of 5000 at 30%");
        // Not random: another sidecar with the same setting picks the same requests.
        let replica = recording(30, &[]);
        assert!(ids.iter().all(|id| replica.selects(id) == some.selects(id)));
    }
}
