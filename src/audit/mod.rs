//! Decision records: handed off by the check path without waiting, turned
//! into chained `policy.decision` records on the audit thread, kept in a
//! bounded in-memory log for the admin API.
//!
//! The check path only builds a [`DecisionEvent`] (no serialisation, no
//! hashing) and `try_send`s it into a bounded queue; a full queue drops the
//! event and counts it. Everything else happens on a dedicated thread, so
//! audit work never competes with checks on the check runtime.

mod backlog;
pub(crate) mod canonical;
pub mod forward;
pub mod inputs;
pub mod json;
pub mod line;
pub mod log;
pub mod record;
mod seal;
mod ship;
mod sink;
pub mod socket;
mod spool;
pub(crate) mod verify;

/// Records and corrupt lines recovery finds in one spool segment's bytes
/// (for the fuzz targets; the spool itself stays private).
pub(crate) fn spool_segment_lines(bytes: &[u8]) -> (usize, usize) {
    let (records, corruptions) = spool::read_segment(bytes, "seg-0.log");
    (records.len(), corruptions.len())
}

use crate::decision::DecisionEvent;
use crate::metrics::AuditCounters;
use crate::policy::{Mode, Reason};
use crate::retry::{Next, Retry};
use crate::timestamp::format_timestamp;
use crate::tls::ClientIdentity;
use backlog::{Backlog, Entry, MemoryBacklog, Rejection};
use inputs::InputRecording;
use log::DecisionLog;
use record::{Chain, DecisionRecord, ShadowEntry, RECORD_TYPE};
use spool::Spool;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

/// Events waiting for the audit thread, at most.
pub const QUEUE_CAPACITY: usize = 16_384;

/// The check path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
    counters: AuditCounters,
    /// `--record-input` (0 when records carry no input).
    input_percent: u8,
}

impl Recorder {
    /// Whether the event of `request_id` should carry its request: its
    /// record is one of those that carry their input.
    pub fn wants_request(&self, request_id: &str) -> bool {
        inputs::selected(self.input_percent, request_id)
    }

    pub fn record(&self, event: DecisionEvent) {
        if self.tx.try_send(Pending::Decided(event)).is_err() {
            self.counters.dropped.inc();
        }
    }

    /// A record another decision point took (`--record-socket`): chained,
    /// kept and shipped like this sidecar's own. Never waits.
    pub fn forward(&self, forwarded: forward::Forwarded) {
        if self
            .tx
            .try_send(Pending::Forwarded(Box::new(forwarded)))
            .is_err()
        {
            self.counters.dropped.inc();
        }
    }
}

/// What waits for the audit thread.
enum Pending {
    /// A decision this sidecar took.
    Decided(DecisionEvent),
    /// A decision the in-process Envoy module took (boxed: a record is
    /// three times the size of an event, and events are the common case).
    Forwarded(Box<forward::Forwarded>),
}

/// Where records go besides the in-memory decision log.
#[derive(Clone, Default)]
pub struct AuditConfig {
    /// POST target; `None` keeps records in the decision log only.
    pub url: Option<String>,
    pub tls: ClientIdentity,
    /// Durable backlog directory (`--spool-dir`).
    pub spool_dir: Option<PathBuf>,
    /// Byte bound of the spool, or of the in-memory backlog without one.
    pub max_bytes: u64,
    /// Which records carry their input (`None`: none do).
    pub inputs: Option<InputRecording>,
    /// Signs checkpoint records (`--record-signing-key`).
    pub signer: Option<Arc<dyn crate::keys::Signer>>,
}

/// What `/v1/status` shows about shipping.
#[derive(Default)]
pub struct AuditStatus {
    inner: Mutex<AuditStatusInner>,
}

#[derive(Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditStatusInner {
    pub destination: Option<String>,
    pub spool_dir: Option<String>,
    pub chain_id: String,
    /// The `keyId` checkpoint signatures carry (`--record-signing-key`).
    pub signing_key: Option<String>,
    pub last_shipped_at: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

impl AuditStatus {
    fn update(&self, f: impl FnOnce(&mut AuditStatusInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn snapshot(&self) -> AuditStatusInner {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How long shutdown may spend shipping what is left before leaving it in
/// the spool (or, without one, dropping and counting it).
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// How often the audit thread collects queued decision events.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// How often unsynced spool writes are fsync'd.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// The audit thread: turns events into chained records, keeps the decision
/// log, and ships. Finishes once every [`Recorder`] is dropped and what was
/// queued is shipped, spooled or (past [`SHUTDOWN_FLUSH`]) given up on.
pub struct Pipeline {
    thread: Option<std::thread::JoinHandle<()>>,
}

/// State shared by the writer and the shipper (both on the audit thread).
struct Shared {
    backlog: Mutex<Box<dyn Backlog>>,
    wake: Notify,
    closing: AtomicBool,
    counters: AuditCounters,
}

impl Shared {
    fn backlog(&self) -> std::sync::MutexGuard<'_, Box<dyn Backlog>> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_sizes(&self, backlog: &dyn Backlog, spooled: bool) {
        self.counters.backlog.set(backlog.pending() as i64);
        if spooled {
            self.counters.spool_bytes.set(backlog.bytes() as i64);
        }
    }
}

impl Pipeline {
    /// Start the audit thread. Fails on an unusable spool directory or
    /// audit URL (bad input: the sidecar should not start).
    pub fn start(
        node: String,
        config: AuditConfig,
        log: Arc<DecisionLog>,
        counters: AuditCounters,
        status: Arc<AuditStatus>,
    ) -> anyhow::Result<(Recorder, Pipeline)> {
        let sink = match &config.url {
            Some(url) => {
                Some(sink::Sink::for_url(url, &config.tls, &node).map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        let (backlog, chain): (Box<dyn Backlog>, Chain) = match &config.spool_dir {
            Some(dir) => {
                let (mut spool, head, corrupt) = Spool::open(dir, config.max_bytes)?;
                for c in &corrupt {
                    tracing::warn!(file = %c.file, line = c.line, reason = %c.reason, "skipping corrupt spool record");
                }
                counters.spool_corrupt.inc_by(corrupt.len() as u64);
                let chain = match head {
                    Some(h) => Chain::resume(h.chain_id, h.seq + 1, h.hash),
                    None => Chain::fresh(Uuid::now_v7().to_string()),
                };
                spool.set_chain(&chain.chain_id);
                counters
                    .spool_limit
                    .set(i64::try_from(config.max_bytes).unwrap_or(i64::MAX));
                (Box::new(spool), chain)
            }
            None => (
                Box::new(MemoryBacklog::new(config.max_bytes)),
                Chain::fresh(Uuid::now_v7().to_string()),
            ),
        };
        status.update(|s| {
            s.destination = config.url.as_deref().map(crate::secrets::redact_url);
            s.spool_dir = config.spool_dir.as_ref().map(|d| d.display().to_string());
            s.chain_id.clone_from(&chain.chain_id);
            s.signing_key = config.signer.as_ref().map(|k| k.key_id().to_owned());
        });
        let (tx, rx) = mpsc::channel::<Pending>(QUEUE_CAPACITY);
        let inputs = config.inputs.clone().filter(|i| i.percent > 0);
        let recorder = Recorder {
            tx,
            counters: counters.clone(),
            input_percent: inputs.as_ref().map_or(0, |i| i.percent),
        };
        let shared = Arc::new(Shared {
            backlog: Mutex::new(backlog),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            counters,
        });
        let spooled = config.spool_dir.is_some();
        // What a restart found in the spool is waiting from the start.
        {
            let backlog = shared.backlog();
            shared.publish_sizes(backlog.as_ref(), spooled);
        }
        let destination = sink;
        let signer = config.signer.clone();
        let thread = std::thread::Builder::new()
            .name("sentinel-audit".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the audit runtime; records are not kept");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let writer = write_records(
                        RecordWriter {
                            node,
                            chain,
                            log,
                            shared: shared.clone(),
                            shipping: destination.is_some(),
                            spooled,
                            inputs,
                            sealer: signer.map(|s| seal::Sealer::new(s, shared.counters.clone())),
                        },
                        rx,
                    );
                    let syncer = sync_periodically(shared.clone());
                    match destination {
                        Some(sink) => {
                            let shipper = ship_records(shared.clone(), sink, status, spooled);
                            tokio::join!(writer, shipper, syncer);
                        }
                        None => {
                            tokio::join!(writer, syncer);
                        }
                    }
                    shared.backlog().sync();
                });
            })
            .map_err(|e| anyhow::anyhow!("cannot start the audit thread: {e}"))?;
        Ok((
            recorder,
            Pipeline {
                thread: Some(thread),
            },
        ))
    }

    /// Wait for the audit thread (all recorders must be dropped first).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Turns events into chained records: the audit thread's writer half.
struct RecordWriter {
    node: String,
    chain: Chain,
    log: Arc<DecisionLog>,
    shared: Arc<Shared>,
    /// Records go to the backlog (an audit URL is set).
    shipping: bool,
    spooled: bool,
    inputs: Option<InputRecording>,
    sealer: Option<seal::Sealer>,
}

async fn write_records(writer: RecordWriter, mut rx: mpsc::Receiver<Pending>) {
    let RecordWriter {
        node,
        mut chain,
        log,
        shared,
        shipping,
        spooled,
        inputs,
        mut sealer,
    } = writer;
    let mut lines = line::LineWriter::new(&node);
    // Drain on a timer instead of parking in `recv()`: a parked receiver
    // makes every `try_send` on the check path wake this thread (a futex
    // call and a context switch per decision). Polling every few
    // milliseconds costs a timer tick and amortises everything else.
    let mut ticker = tokio::time::interval(DRAIN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = Vec::with_capacity(1024);
    let mut closed = false;
    while !closed {
        ticker.tick().await;
        // What waits at each drain: records a crash of the process would
        // lose (they are in no file yet). Read before draining, and again
        // while the writer catches up, so the gauge shows the lag (reading
        // it after a drain would always say 0).
        shared.counters.queue_depth.set(rx.len() as i64);
        loop {
            let waiting = rx.len();
            if waiting > 0 {
                shared.counters.queue_depth.set(waiting as i64);
            }
            while events.len() < 1024 {
                match rx.try_recv() {
                    Ok(event) => events.push(event),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if events.is_empty() {
                if let Some(entry) = sealer.as_mut().and_then(|s| s.idle(Instant::now())) {
                    append(&shared, vec![entry], spooled);
                }
                break;
            }
            let mut entries = Vec::with_capacity(events.len() + 1);
            let now = Instant::now();
            for pending in events.drain(..) {
                let seq = chain.next_seq;
                // Each record is written as its line, linked, maybe signed,
                // then kept by the log (and the backlog) as those bytes.
                let mut sign_and_keep = |mut line: Vec<u8>, chain: &Chain| {
                    if let Some(sealer) = sealer.as_mut() {
                        sealer.linked(&chain.last_hash, &mut line, now);
                    }
                    let line = bytes::Bytes::from(line);
                    if shipping {
                        entries.push(Entry {
                            seq,
                            line: line.clone(),
                        });
                    }
                    line
                };
                match pending {
                    Pending::Decided(event) => {
                        let line = lines.write(&event, &mut chain, inputs.as_ref());
                        let line = sign_and_keep(line, &chain);
                        log.push(line, line::involved(&event));
                    }
                    Pending::Forwarded(forwarded) => {
                        let mut record = forwarded_record(&node, *forwarded, inputs.as_ref());
                        let line = chain.link(&mut record);
                        let line = sign_and_keep(line, &chain);
                        let shadowed = record.shadow.iter().map(|s| s.policy_id.as_str());
                        log.push(
                            line,
                            record.policy_id.as_deref().into_iter().chain(shadowed),
                        );
                    }
                }
            }
            if shipping {
                if let Some(sealer) = sealer.as_mut() {
                    sealer.hold_newest(&mut entries, &chain.last_hash);
                }
                append(&shared, entries, spooled);
            }
        }
    }
    // The chain's last record before a clean shutdown is signed.
    if let Some(entry) = sealer.as_mut().and_then(seal::Sealer::finish) {
        append(&shared, vec![entry], spooled);
    }
    shared.counters.queue_depth.set(0);
    shared.closing.store(true, Ordering::SeqCst);
    shared.wake.notify_one();
}

/// Hand linked records to the backlog and wake the shipper.
fn append(shared: &Shared, entries: Vec<Entry>, spooled: bool) {
    if entries.is_empty() {
        return;
    }
    let mut backlog = shared.backlog();
    let dropped = backlog.append(entries);
    shared.counters.dropped.inc_by(dropped);
    shared.publish_sizes(backlog.as_ref(), spooled);
    drop(backlog);
    shared.wake.notify_one();
}

async fn sync_periodically(shared: Arc<Shared>) {
    while !shared.closing.load(Ordering::SeqCst) {
        tokio::time::sleep(SYNC_INTERVAL).await;
        shared.backlog().sync();
    }
}

async fn ship_records(
    shared: Arc<Shared>,
    sink: sink::Sink,
    status: Arc<AuditStatus>,
    spooled: bool,
) {
    let chain_id = status.snapshot().chain_id;
    let mut retry = Retry::new("shipping decision records");
    let mut oldest_waiting: Option<Instant> = None;
    let mut close_deadline: Option<Instant> = None;
    loop {
        let closing = shared.closing.load(Ordering::SeqCst);
        if closing && close_deadline.is_none() {
            close_deadline = Some(Instant::now() + SHUTDOWN_FLUSH);
        }
        if close_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let pending = shared.backlog().pending();
        if pending == 0 {
            if closing {
                break;
            }
            oldest_waiting = None;
            shared.wake.notified().await;
            continue;
        }
        // Fill a batch by count or age, unless shutting down.
        let since = *oldest_waiting.get_or_insert_with(Instant::now);
        if !closing && pending < ship::BATCH_RECORDS && since.elapsed() < ship::FLUSH_AGE {
            let _ = tokio::time::timeout(ship::FLUSH_AGE - since.elapsed(), shared.wake.notified())
                .await;
            continue;
        }
        let Some(batch) = shared
            .backlog()
            .next_batch(ship::BATCH_RECORDS, ship::BATCH_BYTES)
        else {
            oldest_waiting = None;
            continue;
        };
        let started = Instant::now();
        let post = sink.send(&chain_id, &batch);
        // Shutting down: a hung receiver may not hold the flush past its deadline.
        let result = match close_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::timeout(left, post)
                    .await
                    .unwrap_or_else(|_| Err(ship::ShipError::Transport("shutdown deadline".into())))
            }
            None => post.await,
        };
        shared
            .counters
            .ship_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                retry.succeeded();
                let mut backlog = shared.backlog();
                backlog.ack(&batch);
                shared.publish_sizes(backlog.as_ref(), spooled);
                drop(backlog);
                shared.counters.shipped.inc_by(batch.lines.len() as u64);
                oldest_waiting = None;
                status.update(|s| {
                    s.last_shipped_at = Some(format_timestamp(SystemTime::now()));
                    s.consecutive_failures = 0;
                });
            }
            Err(e) => {
                shared.counters.ship_failures.inc();
                let next = retry.failed(&e);
                status.update(|s| {
                    s.last_error = Some(format!("{}: {e}", format_timestamp(SystemTime::now())));
                    s.consecutive_failures = retry.attempts();
                });
                match next {
                    Next::RetryAfter(mut delay) => {
                        if let Some(deadline) = close_deadline {
                            delay = delay.min(deadline.saturating_duration_since(Instant::now()));
                        }
                        tokio::time::sleep(delay).await;
                    }
                    Next::GiveUp => {
                        // The receiver refused these records as malformed:
                        // sending them again cannot succeed, and holding them
                        // would stop every later record. Set them aside.
                        let mut backlog = shared.backlog();
                        let kept = backlog.reject(&batch);
                        shared.publish_sizes(backlog.as_ref(), spooled);
                        drop(backlog);
                        let records = batch.lines.len() as u64;
                        shared.counters.rejected.inc_by(records);
                        oldest_waiting = None;
                        let (first_seq, last_seq) = (batch.first_seq, batch.last_seq);
                        match kept {
                            Rejection::Kept(path) => {
                                tracing::info!(records, first_seq, last_seq, file = %path.display(), "refused batch kept in the spool's rejected/ directory; shipping goes on")
                            }
                            Rejection::NoSpool => tracing::info!(
                                records,
                                first_seq,
                                last_seq,
                                "refused batch not kept (no spool); shipping goes on"
                            ),
                            Rejection::Lost(why) => {
                                shared.counters.dropped.inc_by(records);
                                tracing::error!(
                                    records,
                                    first_seq,
                                    last_seq,
                                    why,
                                    "refused batch could not be kept: dropped"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    let left = shared.backlog().pending();
    if left > 0 {
        if spooled {
            tracing::warn!(
                records = left,
                "shutting down with unshipped records; they stay in the spool"
            );
        } else {
            tracing::warn!(
                records = left,
                "shutting down with unshipped records and no spool: dropped"
            );
            shared.counters.dropped.inc_by(left as u64);
        }
    }
}

/// A forwarded record, made this node's: its input built from the request
/// it carried, with this sidecar's `--record-input` and `--mask`.
fn forwarded_record(
    node: &str,
    forwarded: forward::Forwarded,
    inputs: Option<&InputRecording>,
) -> DecisionRecord {
    let forward::Forwarded {
        mut record,
        at,
        request,
    } = forwarded;
    node.clone_into(&mut record.node);
    if let (Some(inputs), Some(request)) = (inputs, &request) {
        if let Some((input, masked)) = inputs.input(&record.request_id, request as _, at) {
            record.input = Some(input);
            record.masked = masked;
        }
    }
    record
}

/// Build the record for an event (everything but the chain fields): for
/// `sentinelnet eval` and as the reference the audit thread's line writer
/// (`line.rs`, which writes the same bytes without this struct) is tested
/// against.
pub fn to_record(
    node: &str,
    event: DecisionEvent,
    inputs: Option<&InputRecording>,
) -> DecisionRecord {
    let id = event.id.to_string();
    let (input, masked) = match (inputs, &event.request) {
        (Some(inputs), Some(request)) => inputs
            .input(&event.request_id, request.as_ref(), event.at)
            .map_or((None, Vec::new()), |(input, masked)| (Some(input), masked)),
        _ => (None, Vec::new()),
    };
    let bundle = event.bundle.as_deref();
    let policies = bundle.map(|b| &b.policies);
    let deciding = event
        .outcome
        .as_ref()
        .and_then(|o| o.deciding)
        .zip(policies)
        .map(|(i, set)| set.get(i));
    let rationale = match (event.reason, deciding) {
        (Reason::Policy, Some(p)) if p.document.description.is_empty() => {
            format!("{} matched", p.id)
        }
        (Reason::Policy, Some(p)) => format!("{} matched: {}", p.id, p.document.description),
        (Reason::Error, Some(p)) => format!(
            "{} could not be evaluated; the on-error decision ({}) applied",
            p.id,
            event.verdict.as_str()
        ),
        (Reason::Error, None) => format!(
            "no policy bundle is active; the on-error decision ({}) applied",
            event.verdict.as_str()
        ),
        _ => format!(
            "no enforced policy matched; the bundle default ({}) applied",
            event.verdict.as_str()
        ),
    };
    let shadow = match (&event.outcome, policies) {
        (Some(outcome), Some(set)) => outcome
            .matches
            .iter()
            .filter(|m| m.mode != Mode::Enforce)
            .map(|m| {
                let p = set.get(m.policy);
                ShadowEntry {
                    policy_id: p.id.to_string(),
                    policy_version: p.version(),
                    mode: Cow::Borrowed(p.state().as_str()),
                    would_decide: Cow::Borrowed(p.effect().as_str()),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut evidence_refs = vec![format!("decision:{id}")];
    if let Some(b) = bundle {
        evidence_refs.push(format!("bundle:{}@{}", b.name, b.revision));
    }
    if let Some(p) = deciding {
        evidence_refs.push(format!("policy:{}@{}", p.id, p.version()));
    }
    DecisionRecord {
        kind: Cow::Borrowed(RECORD_TYPE),
        ts: format_timestamp(event.at),
        node: node.to_owned(),
        chain_id: String::new(),
        request_id: event.request_id,
        decision: Cow::Borrowed(event.verdict.as_str()),
        status: event.status,
        reason: Cow::Borrowed(event.reason.as_str()),
        policy_id: deciding.map(|p| p.id.to_string()),
        policy_version: deciding.map(|p| p.version()),
        bundle: bundle.map(|b| b.name.to_string()).unwrap_or_default(),
        bundle_revision: bundle.map(|b| b.revision.to_string()).unwrap_or_default(),
        rationale,
        evidence_refs,
        evidence: event.evidence,
        shadow,
        latency_us: event.latency_us,
        seq: 0,
        prev_hash: String::new(),
        sig: None,
        hash: String::new(),
        id,
        input,
        masked,
    }
}
