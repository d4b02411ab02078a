//! Central's side of the decision stream (`--decision-stream`): consume
//! `SENTINEL_DECISIONS` through the durable pull consumer `sentinel-central`
//! that every replica shares, and store each batch exactly as a posted one
//! ([`super::decisions::Decisions::ingest`]: dedupe by id, chains in the
//! store, quarantine for what is no record).
//!
//! Delivery: a message is acknowledged only after the transaction holding
//! its record committed; a replica that dies before acking has its
//! messages redelivered to another after `ack_wait`, where they count as
//! duplicates. A message that is no record is quarantined and acknowledged
//! (it would never get better). When the store fails the batch is
//! negatively acknowledged with a delay and comes back.
//!
//! Setup: the stream is created if missing (file storage, limits retention
//! with max age = `--decision-retention`, a 2-minute duplicate window) and
//! left as it is if it exists (another replica or an operator made it);
//! nothing needs a NATS server newer than 2.9.

use super::decisions::Decisions;
use crate::nats::{CONSUMER, DUPLICATE_WINDOW, STREAM, SUBJECTS};
use crate::retry::{Next, Retry};
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::StreamExt;
use prometheus::IntGauge;
use std::sync::Arc;
use std::time::Duration;

/// Most messages stored in one transaction.
const BATCH_MESSAGES: usize = 500;
/// Batches being stored at once by one replica.
const INGESTS_IN_FLIGHT: usize = 4;
/// Messages asked for in one pull request.
const PULL_MESSAGES: usize = 2 * BATCH_MESSAGES;
/// Once a batch has its first message, how long to wait for more.
const BATCH_FILL: Duration = Duration::from_millis(20);
/// How long a delivered message may stay unacknowledged before JetStream
/// hands it to another replica.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Messages delivered and not yet acknowledged, across replicas.
const MAX_ACK_PENDING: i64 = 20_000;
/// The identity stream-ingested records are stored and quarantined under
/// (NATS authorization decides who may publish on a node's subject).
pub(crate) const STREAM_IDENTITY: &str = "nats-stream";

/// What `--decision-stream` configures.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    pub url: String,
    /// Client identity toward NATS (`KERNEL_MTLS_*`), `DEV_SKIP_MTLS`.
    pub identity: crate::tls::ClientIdentity,
    /// Max age of the stream's messages when central creates it.
    pub retention: Duration,
}

/// Consume until the process ends. Never returns an error: a NATS server
/// that is down or restarting is waited for with backoff.
pub(crate) async fn consume(
    settings: StreamSettings,
    decisions: Arc<Decisions>,
    pending: IntGauge,
) {
    let shown = crate::secrets::redact_url(&settings.url);
    let options =
        match crate::nats::connect_options(&settings.url, &settings.identity, "sentinel-central") {
            Ok(options) => options,
            Err(e) => {
                tracing::error!(error = %e, "central: the decision stream is not consumed");
                return;
            }
        };
    let client = match options.connect(settings.url.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(url = %shown, error = %e, "central: cannot connect to the decision stream; records from it are not consumed");
            return;
        }
    };
    let context = jetstream::new(client);
    let mut retry = Retry::new("consuming the decision stream");
    loop {
        let failure = match consumer(&context, settings.retention).await {
            Ok((consumer, messages)) => {
                tracing::info!(url = %shown, stream = STREAM, consumer = CONSUMER, "central: consuming the decision stream");
                run(&consumer, messages, &decisions, &pending, &mut retry).await
            }
            Err(e) => e,
        };
        match retry.failed(&failure) {
            Next::RetryAfter(delay) => tokio::time::sleep(delay).await,
            Next::GiveUp => tokio::time::sleep(Duration::from_secs(10)).await,
        }
    }
}

/// Why consuming stopped for now (always worth another try).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StreamError(String);

impl crate::retry::Retriable for StreamError {
    fn is_retriable(&self) -> bool {
        true
    }
}

/// The shared durable consumer (the stream created first if missing) and
/// a subscription to its messages.
async fn consumer(
    context: &jetstream::Context,
    retention: Duration,
) -> Result<(jetstream::consumer::PullConsumer, pull::Stream), StreamError> {
    let config = jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECTS.into()],
        storage: jetstream::stream::StorageType::File,
        retention: jetstream::stream::RetentionPolicy::Limits,
        max_age: retention,
        // The window cannot be longer than what the stream keeps.
        duplicate_window: DUPLICATE_WINDOW.min(retention),
        num_replicas: 1,
        ..Default::default()
    };
    let stream = context
        .get_or_create_stream(config)
        .await
        .map_err(|e| StreamError(format!("stream {STREAM}: {e}")))?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                filter_subject: SUBJECTS.into(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| StreamError(format!("consumer {CONSUMER}: {e}")))?;
    let messages = consumer
        .stream()
        // Pull several batches' worth at a time: the next ones are on
        // their way while these are stored.
        .max_messages_per_batch(PULL_MESSAGES)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| StreamError(format!("consumer {CONSUMER}: {e}")))?;
    Ok((consumer, messages))
}

/// Store batches from `messages` until the subscription fails; return why.
/// Up to [`INGESTS_IN_FLIGHT`] batches are stored at once, as several
/// sidecars' posts would be: the store works on one while the next is
/// parsed and the one after is delivered. Order does not matter (chains are
/// verified out of order).
async fn run(
    consumer: &jetstream::consumer::PullConsumer,
    mut messages: pull::Stream,
    decisions: &Arc<Decisions>,
    pending: &IntGauge,
    retry: &mut Retry,
) -> StreamError {
    let mut last_info = std::time::Instant::now() - Duration::from_secs(60);
    let mut ingests = tokio::task::JoinSet::new();
    let failure = loop {
        if last_info.elapsed() >= Duration::from_secs(5) {
            last_info = std::time::Instant::now();
            if let Ok(info) = consumer.get_info().await {
                pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            }
        }
        while ingests.len() >= INGESTS_IN_FLIGHT {
            let _ = ingests.join_next().await;
        }
        // The first message of a batch, then whatever follows at once.
        let mut batch: Vec<jetstream::Message> = Vec::with_capacity(BATCH_MESSAGES);
        match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
            Err(_) => continue,
            Ok(None) => break StreamError("the subscription ended".into()),
            Ok(Some(Err(e))) => break StreamError(format!("consumer {CONSUMER}: {e}")),
            Ok(Some(Ok(message))) => batch.push(message),
        }
        while batch.len() < BATCH_MESSAGES {
            match tokio::time::timeout(BATCH_FILL, messages.next()).await {
                Ok(Some(Ok(message))) => batch.push(message),
                _ => break,
            }
        }
        // Only messages arriving count as recovered: a subscription that
        // fails at once keeps backing off.
        retry.succeeded();
        ingests.spawn(store_batch(decisions.clone(), batch));
    };
    // What was delivered is stored (and acknowledged) before reconnecting.
    while ingests.join_next().await.is_some() {}
    failure
}

/// Store one batch and acknowledge its messages, or give them back.
async fn store_batch(decisions: Arc<Decisions>, batch: Vec<jetstream::Message>) {
    // One record per message and line; a newline inside a payload (never
    // in a record) must not split it into two lines.
    let mut body = Vec::with_capacity(batch.iter().map(|m| m.payload.len() + 1).sum());
    for message in &batch {
        let payload = &message.payload[..];
        if memchr::memchr(b'\n', payload).is_some() {
            body.extend(payload.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        } else {
            // Every record: compact JSON has no newline; copied at once.
            body.extend_from_slice(payload);
        }
        body.push(b'\n');
    }
    let subjects: Vec<&str> = batch.iter().map(|m| m.subject.as_str()).collect();
    match decisions
        .ingest(
            body,
            super::decisions::Source::Stream {
                subjects: &subjects,
            },
        )
        .await
    {
        Ok(report) => {
            if !report.rejected.is_empty() {
                tracing::warn!(
                    quarantined = report.rejected.len(),
                    "central: messages on the decision stream that are no records were quarantined"
                );
            }
            for message in &batch {
                if let Err(e) = message.ack().await {
                    // Redelivered later and then counted as a duplicate.
                    tracing::debug!(error = %e, "central: cannot acknowledge a stream message");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "central: cannot store records from the decision stream; they come back");
            for message in &batch {
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
            }
        }
    }
}
