//! Inputs in decision records: which records carry the input document the
//! policies saw (`--record-input`), and which paths are removed from it
//! first (`--mask`).
//!
//! The check path only hands over the encoded request (a reference count);
//! the document is rebuilt here, on the audit thread, by a builder the
//! sidecar wiring supplies (the audit pipeline does not know how a request
//! becomes an input document; `authz` does). Selection is a stable hash of
//! the request id, so every replica keeps the same share of the same
//! requests. Inputs go into records only, never into logs.

use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use std::time::SystemTime;

/// Paths always removed from recorded inputs (credentials).
pub const DEFAULT_MASKS: [&str; 4] = [
    "request.headers.authorization",
    "request.headers.cookie",
    "request.headers.proxy-authorization",
    "request.headers.x-api-key",
];

/// Rebuilds the input document of a check from its encoded request and the
/// time of the decision; `None` when the bytes do not decode.
pub type InputBuilder = Arc<dyn Fn(&Bytes, SystemTime) -> Option<Value> + Send + Sync>;

/// Which records carry their input, and what is removed from it.
#[derive(Clone)]
pub struct InputRecording {
    /// Share of requests (0–100) whose records carry their input.
    pub percent: u8,
    /// Dotted paths removed from the input (the defaults included).
    pub masks: Vec<String>,
    pub build: InputBuilder,
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
    /// The masks to apply: the defaults plus `extra` (duplicates dropped).
    pub fn masks_with_defaults(extra: &[String]) -> Vec<String> {
        let mut masks: Vec<String> = DEFAULT_MASKS.iter().map(|m| (*m).to_owned()).collect();
        for m in extra.iter().map(|m| m.trim()).filter(|m| !m.is_empty()) {
            if !masks.iter().any(|known| known == m) {
                masks.push(m.to_owned());
            }
        }
        masks
    }

    /// Whether the record of `request_id` carries its input.
    pub(crate) fn selects(&self, request_id: &str) -> bool {
        match self.percent {
            0 => false,
            100.. => true,
            p => xxhash_rust::xxh3::xxh3_64(request_id.as_bytes()) % 100 < u64::from(p),
        }
    }

    /// The masked input of a selected record, and the masks that removed
    /// something.
    pub(crate) fn input(
        &self,
        request_id: &str,
        request: &Bytes,
        at: SystemTime,
    ) -> Option<(Value, Vec<String>)> {
        if !self.selects(request_id) {
            return None;
        }
        let mut document = (self.build)(request, at)?;
        let masked = self
            .masks
            .iter()
            .filter(|path| remove_path(&mut document, path))
            .cloned()
            .collect();
        Some((document, masked))
    }
}

/// Remove the value at dotted `path` from `document`; whether it was there.
fn remove_path(document: &mut Value, path: &str) -> bool {
    let mut segments = path.split('.');
    let Some(last) = segments.next_back() else {
        return false;
    };
    let mut node = document;
    for segment in segments {
        match node.get_mut(segment) {
            Some(child) => node = child,
            None => return false,
        }
    }
    node.as_object_mut()
        .is_some_and(|map| map.remove(last).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recording(percent: u8, extra: &[&str]) -> InputRecording {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        InputRecording {
            percent,
            masks: InputRecording::masks_with_defaults(&extra),
            build: Arc::new(|_, _| {
                Some(json!({"request": {"method": "GET", "headers": {
                    "authorization": "Bearer secret", "cookie": "s=1", "x-user": "alice"},
                    "body": {"card": "4111", "amount": 3}}}))
            }),
        }
    }

    #[test]
    fn masks_remove_credentials_and_configured_paths_and_say_which() {
        let r = recording(100, &["request.body.card", "request.headers.absent"]);
        let (input, masked) = r
            .input("req-1", &Bytes::new(), SystemTime::now())
            .expect("selected");
        assert_eq!(
            input,
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
