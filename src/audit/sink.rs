//! Where shipped records go. The ship loop (batching, retry with backoff,
//! the spool's acknowledgements, setting refused batches aside) is the same
//! for every destination; a sink only takes a batch and says whether it
//! was accepted.
//!
//! - HTTP (`https://…`, `http://…` in development): one gzip NDJSON POST
//!   per batch ([`super::ship`]).
//! - NATS JetStream (`tls://…`, `nats://…` in development): one message per
//!   record on `sentinel.decisions.<node>`, `Nats-Msg-Id` = record id; the
//!   whole batch is published with every message in flight at once and is
//!   accepted only when JetStream has acknowledged each one (a repeat
//!   inside the duplicate window is acknowledged as a duplicate, so a
//!   retried batch never stores a record twice).
//!
//! A Kafka or Redpanda sink would be a third variant of the same shape:
//! produce each line keyed by record id with an idempotent producer and
//! `acks=all`, accept the batch when every delivery report is in.

use super::backlog::Batch;
use super::ship::{self, ShipError};
use crate::tls::{ClientIdentity, ReloadingClient};
use bytes::Bytes;

pub(super) enum Sink {
    Http {
        client: ReloadingClient,
        url: String,
    },
    Stream(Box<StreamSink>),
}

impl Sink {
    /// The sink for `url` (checked now: a bad URL or identity stops the
    /// sidecar at start; nothing connects yet).
    pub(super) fn for_url(
        url: &str,
        identity: &ClientIdentity,
        node: &str,
    ) -> Result<Sink, String> {
        if crate::nats::is_stream_url(url) {
            let name = format!("sentinel-sidecar {node}");
            // Checked now; built again for each connection attempt.
            crate::nats::connect_options(url, identity, &name)?;
            return Ok(Sink::Stream(Box::new(StreamSink {
                url: url.to_owned(),
                identity: identity.clone(),
                name,
                context: tokio::sync::OnceCell::new(),
                subject: crate::nats::subject_for(node),
            })));
        }
        Ok(Sink::Http {
            client: ReloadingClient::new(identity.clone(), url, ship::REQUEST_TIMEOUT)?,
            url: url.to_owned(),
        })
    }

    /// Send one batch; `Ok` once the destination has it.
    pub(super) async fn send(&self, chain_id: &str, batch: &Batch) -> Result<(), ShipError> {
        match self {
            Sink::Http { client, url } => ship::post(&client.get(), url, chain_id, batch).await,
            Sink::Stream(stream) => stream.publish(batch).await,
        }
    }
}

/// Publishes records to JetStream. Connects on first use, from the audit
/// thread's runtime (the client's tasks live there), and reconnects by
/// itself from then on.
pub(super) struct StreamSink {
    url: String,
    identity: ClientIdentity,
    /// The connection's name, as the NATS server shows it.
    name: String,
    context: tokio::sync::OnceCell<async_nats::jetstream::Context>,
    subject: String,
}

/// How long JetStream may take to acknowledge a message.
const PUBLISH_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The one field a record line is published under.
#[derive(serde::Deserialize)]
struct RecordId<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// A record line's `id`: found by [`scan_top_level_id`] (a record writes
/// `id` before its input, so most of the line is never read: parsing the
/// whole line for it cost ~4 µs of the audit thread per record), else by
/// parsing the line, which also refuses what is no record.
fn record_id(line: &[u8]) -> Result<String, ShipError> {
    if let Some(id) = scan_top_level_id(line) {
        return Ok(id.to_owned());
    }
    serde_json::from_slice::<RecordId>(line)
        .map(|r| r.id.into_owned())
        // Not a record: the receiver would refuse it; set aside.
        .map_err(|e| ShipError::Refused(format!("a spooled line is not a record: {e}")))
}

/// The value of the top-level `"id"` key of a JSON object, when it is a
/// string without escapes: a scan that follows strings and nesting and
/// stops at that key. `None` (so the caller parses) for anything else.
fn scan_top_level_id(line: &[u8]) -> Option<&str> {
    /// The end (index of the closing quote) of the string opening at `start`.
    fn string_end(line: &[u8], start: usize) -> Option<usize> {
        let mut i = start + 1;
        while i < line.len() {
            match line[i] {
                b'\\' => i += 2,
                b'"' => return Some(i),
                _ => i += 1,
            }
        }
        None
    }
    let skip_space = |mut i: usize| {
        while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let mut depth = 0usize;
    // At depth 1, right after `{` or `,`: the next string is a key.
    let mut key_next = false;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                let end = string_end(line, i)?;
                if depth == 1 && key_next && &line[i + 1..end] == b"id" {
                    let colon = skip_space(end + 1);
                    if line.get(colon) != Some(&b':') {
                        return None;
                    }
                    let open = skip_space(colon + 1);
                    if line.get(open) != Some(&b'"') {
                        return None;
                    }
                    let close = string_end(line, open)?;
                    let value = &line[open + 1..close];
                    if value.contains(&b'\\') {
                        return None;
                    }
                    return std::str::from_utf8(value).ok();
                }
                key_next = false;
                i = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                key_next = depth == 1 && line[i] == b'{';
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            b',' => {
                key_next = depth == 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

impl StreamSink {
    async fn context(&self) -> Result<&async_nats::jetstream::Context, ShipError> {
        self.context
            .get_or_try_init(|| async {
                let options = crate::nats::connect_options(&self.url, &self.identity, &self.name)
                    .map_err(ShipError::Transport)?;
                let client = options.connect(self.url.as_str()).await.map_err(|e| {
                    ShipError::Transport(format!("{}: {e}", crate::secrets::redact_url(&self.url)))
                })?;
                let mut context = async_nats::jetstream::new(client);
                context.set_timeout(PUBLISH_ACK_TIMEOUT);
                Ok(context)
            })
            .await
    }

    async fn publish(&self, batch: &Batch) -> Result<(), ShipError> {
        let context = self.context().await?;
        let mut acks = Vec::with_capacity(batch.lines.len());
        for line in &batch.lines {
            let id = record_id(line)?;
            let message = async_nats::jetstream::message::PublishMessage::build()
                .message_id(id)
                .payload(Bytes::copy_from_slice(line));
            let ack = context
                .send_publish(self.subject.clone(), message)
                .await
                .map_err(publish_error)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(publish_error)?;
        }
        Ok(())
    }
}

fn publish_error(e: async_nats::jetstream::context::PublishError) -> ShipError {
    use async_nats::jetstream::context::PublishErrorKind;
    match e.kind() {
        // A record over the server's max_payload can never be published.
        PublishErrorKind::MaxPayloadExceeded => ShipError::Refused(format!("JetStream: {e}")),
        PublishErrorKind::StreamNotFound => ShipError::Transport(format!(
            "JetStream has no stream for these subjects yet (central creates {}): {e}",
            crate::nats::STREAM
        )),
        _ => ShipError::Transport(format!("JetStream: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn parsed_id(line: &[u8]) -> Option<String> {
        serde_json::from_slice::<RecordId>(line)
            .ok()
            .map(|r| r.id.into_owned())
    }

    #[test]
    fn the_scan_finds_the_top_level_id_only() {
        let line = json!({
            "bundle": "b", "evidence": {"request.body": {"id": "nested", "x": [{"id": "deeper"}]}},
            "evidenceRefs": ["a\"id\":\"fake"], "hash": "h", "id": "0193-real", "input": {"id": "in"},
        })
        .to_string();
        assert_eq!(scan_top_level_id(line.as_bytes()), Some("0193-real"));
        // A value that merely mentions the key, and an escaped id: parsed.
        assert_eq!(scan_top_level_id(br#"{"a":"\"id\":\"x"}"#), None);
        assert_eq!(scan_top_level_id(br#"{"id":"a\u0062"}"#), None);
        assert_eq!(
            record_id(br#"{"id":"a\u0062"}"#).ok().as_deref(),
            Some("ab")
        );
        assert_eq!(scan_top_level_id(br#"{"id": 5}"#), None);
        assert!(matches!(record_id(b"not json"), Err(ShipError::Refused(_))));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z\"\\\\:,{}\\[\\] ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["id", "x", "hash", "i\"d"]).prop_map(String::from),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Wherever an `id` sits (top level or nested, before or after
        /// other keys, in keys and strings with quotes and escapes), the
        /// scan never disagrees with parsing: the same id, or no answer.
        #[test]
        fn the_scan_agrees_with_parsing(
            fields in prop::collection::btree_map("[a-z]{1,3}", json_value(), 0..5),
            id in prop::option::of("[a-z0-9\"-]{0,12}"),
        ) {
            let mut object: serde_json::Map<String, Value> = fields.into_iter().collect();
            if let Some(id) = id {
                object.insert("id".into(), Value::String(id));
            }
            let line = Value::Object(object).to_string();
            if let Some(scanned) = scan_top_level_id(line.as_bytes()) {
                prop_assert_eq!(Some(scanned.to_owned()), parsed_id(line.as_bytes()));
            }
            prop_assert_eq!(record_id(line.as_bytes()).ok(), parsed_id(line.as_bytes()));
        }
    }
}
