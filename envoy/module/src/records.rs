//! Decision events to the sidecar's `--record-socket`: Envoy's worker hands
//! each decision to a bounded queue (`try_send`, never waiting); a thread of
//! the module's own reads what only the record needs from the request (its
//! id, the deciding policy's evidence), writes its record and sends
//! what one drain of the queue collected in as few Unix datagrams as fit
//! ([`sentinelnet::audit::forward`] batches). A full queue, a full socket
//! or a sidecar that is not there drops the event and counts it; the
//! request is never affected.

use crate::envoy::ConfigCounter;
use prost::Message;
use sentinelnet::audit::forward;
use sentinelnet::audit::line::LineWriter;
use sentinelnet::authz::message::CheckMessage;
use sentinelnet::authz::view::{RequestView, ViewSettings};
use sentinelnet::decision::DecisionEvent;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Events waiting for the records thread, at most (as the sidecar's queue).
const QUEUE_CAPACITY: usize = 16_384;
/// How often the records thread collects the queue.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Events dropped (queue or socket full, no sidecar); logged, and added
/// to Envoy's counter `sentinelnet_records_dropped` by the records thread.
#[derive(Default)]
pub struct Counts {
    pub dropped: AtomicU64,
}

/// Envoy's counter of dropped events, while the filter configuration that
/// defined it lives: the records thread adds to it under this lock, and
/// [`Records`]' drop (inside config_destroy) takes it away first. Envoy's
/// workers never touch the lock.
type DropCounter = Arc<Mutex<Option<ConfigCounter>>>;

/// The worker's end.
pub struct Records {
    tx: SyncSender<(DecisionEvent, CheckMessage)>,
    pub counts: Arc<Counts>,
    drop_counter: DropCounter,
}

impl Drop for Records {
    fn drop(&mut self) {
        // A poisoned lock only means a send panicked; the slot is still ours.
        let mut counter = self.drop_counter.lock().unwrap_or_else(|p| p.into_inner());
        *counter = None;
    }
}

impl Records {
    /// Start the records thread sending to `socket`; `view` is how the
    /// filter reads requests (the records thread reads them again).
    pub fn start(
        socket: PathBuf,
        view: ViewSettings,
        drop_counter: Option<ConfigCounter>,
        log: impl Fn(&str) + Send + 'static,
    ) -> std::io::Result<Records> {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let counts = Arc::new(Counts::default());
        let drop_counter: DropCounter = Arc::new(Mutex::new(drop_counter));
        let (thread_counts, thread_counter) = (counts.clone(), drop_counter.clone());
        std::thread::Builder::new()
            .name("sentinelnet-records".into())
            .spawn(move || send_events(rx, socket, view, thread_counts, thread_counter, log))?;
        Ok(Records {
            tx,
            counts,
            drop_counter,
        })
    }

    /// Hand one decision over; never waits.
    pub fn record(&self, event: DecisionEvent, request: CheckMessage) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send((event, request))
        {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn send_events(
    rx: Receiver<(DecisionEvent, CheckMessage)>,
    socket: PathBuf,
    view: ViewSettings,
    counts: Arc<Counts>,
    drop_counter: DropCounter,
    log: impl Fn(&str),
) {
    let sender = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log(&format!(
                "sentinelnet: cannot open a datagram socket, decision events are dropped: {e}"
            ));
            return;
        }
    };
    // A full socket drops the event instead of stalling the queue behind it.
    let _ = sender.set_nonblocking(true);
    let mut out = Outbox {
        sender,
        socket,
        view,
        counts,
        connected: false,
        next_connect: Instant::now(),
        batch: Vec::with_capacity(forward::MAX_DATAGRAM),
        in_batch: 0,
        request: Vec::with_capacity(2048),
        // The sidecar sets the node (and links the record) on arrival.
        lines: LineWriter::new(""),
    };
    forward::begin_batch(&mut out.batch);
    let mut last_report: Option<Instant> = None;
    let mut reported_drops = 0;
    let mut counted_drops = 0;
    // Drained on a timer rather than parked in `recv()`: a parked receiver
    // makes every `try_send` on Envoy's worker wake this thread (a futex
    // call per request). Ends when the filter configuration (the sender)
    // is gone.
    let mut pending = Vec::with_capacity(1024);
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(item) => pending.push(item),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        for (event, message) in pending.drain(..) {
            out.add(event, message);
        }
        out.flush();
        let dropped = out.counts.dropped.load(Ordering::Relaxed);
        if dropped > counted_drops {
            let counter = drop_counter.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(counter) = counter.as_ref() {
                counter.add(dropped - counted_drops);
            }
            counted_drops = dropped;
        }
        if dropped > reported_drops
            && last_report.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(60))
        {
            log(&format!(
                "sentinelnet: {} decision events dropped so far (queue or {} full, or the sidecar not listening)",
                dropped,
                out.socket.display()
            ));
            reported_drops = dropped;
            last_report = Some(Instant::now());
        }
        if closed {
            return;
        }
    }
}

/// A batch is sent once it holds this much: small against the receiving
/// socket's buffer (~208 KiB by default), so a sidecar that falls behind
/// loses a few events at a time rather than a whole drain's worth.
const BATCH_BYTES: usize = 32 * 1024;

/// How long after a failed connect the next one is tried (events in
/// between are dropped and counted, as they would be by a failed send).
const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);

/// The records thread's end: where records go and its reused buffers.
///
/// The socket is connected to the sidecar's path once and sends with
/// `send`: `sendto` with a path would resolve the path in the kernel for
/// every record. A sidecar that restarts binds a new socket at the path;
/// the first send that fails reconnects.
struct Outbox {
    sender: UnixDatagram,
    socket: PathBuf,
    connected: bool,
    next_connect: Instant,
    view: ViewSettings,
    counts: Arc<Counts>,
    /// The batch datagram being filled, and how many events it holds.
    batch: Vec<u8>,
    in_batch: u64,
    request: Vec<u8>,
    /// Writes each record's JSON straight into the batch.
    lines: LineWriter,
}

impl Outbox {
    /// Turn one decision into a record and add it to the batch (sending
    /// the batch first when it is full).
    fn add(&mut self, mut event: DecisionEvent, message: CheckMessage) {
        let at = event.at;
        let now_unix = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let input = RequestView::new(&message, &self.view, now_unix);
        event.request_id = input.request_id().to_owned();
        event.read_evidence(&input);
        drop(input);
        self.request.clear();
        let _ = message.encode(&mut self.request);
        let request = Some(self.request.as_slice());
        let mut added = forward::append_event(&mut self.lines, &event, request, &mut self.batch);
        if added.is_err() && self.in_batch > 0 {
            self.flush();
            let request = Some(self.request.as_slice());
            added = forward::append_event(&mut self.lines, &event, request, &mut self.batch);
        }
        match added {
            Ok(()) => {
                self.in_batch += 1;
                if self.batch.len() >= BATCH_BYTES {
                    self.flush();
                }
            }
            // Larger than a datagram on its own.
            Err(_) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Send the batch, if it holds anything, and start the next one.
    fn flush(&mut self) {
        if forward::batch_is_empty(&self.batch) {
            return;
        }
        if !self.send_datagram() {
            self.counts
                .dropped
                .fetch_add(self.in_batch, Ordering::Relaxed);
        }
        forward::begin_batch(&mut self.batch);
        self.in_batch = 0;
    }

    /// Send the batch, connecting (again) when needed; whether it went.
    fn send_datagram(&mut self) -> bool {
        if self.connected {
            match self.sender.send(&self.batch) {
                Ok(_) => return true,
                // The sidecar's queue is full: drop this one, keep the
                // connection.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                // The sidecar is gone (or restarted at the same path).
                Err(_) => self.connected = false,
            }
        }
        let now = Instant::now();
        if now < self.next_connect {
            return false;
        }
        if self.sender.connect(&self.socket).is_err() {
            self.next_connect = now + RECONNECT_INTERVAL;
            return false;
        }
        self.connected = true;
        self.sender.send(&self.batch).is_ok()
    }
}
