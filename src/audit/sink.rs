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
            let id = serde_json::from_slice::<RecordId>(line)
                .map(|r| r.id.into_owned())
                // Not a record: the receiver would refuse it; set aside.
                .map_err(|e| ShipError::Refused(format!("a spooled line is not a record: {e}")))?;
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
