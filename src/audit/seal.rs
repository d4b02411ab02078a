//! Signed checkpoints (`--record-signing-key`): which records carry `sig`.
//!
//! A hash chain shows an edit or a gap, but whoever can rewrite a whole
//! chain can forge one; a signature by the node's key over one record's
//! `hash` seals every record before it. Signing every record would cost a
//! signature per check (and, with an HSM, a call into the token), so the
//! audit thread signs checkpoints: the first record, then the first record
//! once a second has passed since the last signature or the 1,000th
//! unsigned one, and the last record before a clean shutdown.
//!
//! An idle sidecar would otherwise leave its newest records unsigned until
//! the next check. So while shipping, the newest record of a drain is held
//! back when it is unsigned: the next drain sends it on (unsigned, sealed
//! by a later checkpoint), or, if no record follows within the second, it
//! is signed and sent. At most one record waits, at most a second.
//!
//! Cost: one signature per second or per 1,000 records, on the audit
//! thread; the check path never sees it. A failed signature (a token that
//! stopped answering) leaves that record unsigned and is counted; the next
//! attempt waits a second, so a token that hangs costs one call a second,
//! not one per record.

use super::backlog::Entry;
use super::record::{seal_line, RecordSignature, SIGNATURE_ALG};
use crate::keys::Signer;
use crate::metrics::AuditCounters;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A signature at least this often while records flow.
pub(crate) const SEAL_EVERY: Duration = Duration::from_secs(1);
/// And at least every this many records.
pub(crate) const SEAL_EVERY_RECORDS: u64 = 1_000;
/// At most one signing failure is logged per this interval.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The newest record, held back unsigned.
struct Held {
    entry: Entry,
    hash: String,
}

pub(crate) struct Sealer {
    signer: Arc<dyn Signer>,
    counters: AuditCounters,
    /// Records linked since the last signature.
    unsigned: u64,
    last_signature: Option<Instant>,
    /// Whether the record linked last was signed.
    last_signed: bool,
    held: Option<Held>,
    failure_logged: Option<Instant>,
    /// After a failed signature, no attempt before this.
    retry_at: Option<Instant>,
}

impl Sealer {
    pub(crate) fn new(signer: Arc<dyn Signer>, counters: AuditCounters) -> Sealer {
        Sealer {
            signer,
            counters,
            unsigned: 0,
            last_signature: None,
            last_signed: false,
            held: None,
            failure_logged: None,
            retry_at: None,
        }
    }

    fn due_by_time(&self, now: Instant) -> bool {
        self.last_signature
            .is_none_or(|at| now.duration_since(at) >= SEAL_EVERY)
    }

    /// Whether the key may be asked now (not inside a failure's back-off).
    fn may_try(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// The signature for a record whose hash is `hash`, or `None` when the
    /// key failed (counted, logged now and then).
    fn signature(&mut self, hash: &str, now: Instant) -> Option<RecordSignature> {
        match self.signer.sign_base64(hash.as_bytes()) {
            Ok(value) => {
                self.counters.signatures.inc();
                self.unsigned = 0;
                self.last_signature = Some(now);
                self.retry_at = None;
                Some(RecordSignature {
                    alg: SIGNATURE_ALG.to_owned(),
                    key_id: self.signer.key_id().to_owned(),
                    value,
                })
            }
            Err(e) => {
                self.counters.signature_failures.inc();
                self.retry_at = Some(now + SEAL_EVERY);
                if self
                    .failure_logged
                    .is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_INTERVAL)
                {
                    self.failure_logged = Some(now);
                    tracing::warn!(error = %e, "cannot sign a decision record checkpoint; records stay unsigned until the key answers again");
                }
                None
            }
        }
    }

    /// A record was just linked (its line ends with `hash`): sign it if a
    /// checkpoint is due; whether it was signed.
    pub(crate) fn linked(&mut self, hash: &str, line: &mut Vec<u8>, now: Instant) -> bool {
        self.last_signed = false;
        if self.may_try(now) && (self.due_by_time(now) || self.unsigned + 1 >= SEAL_EVERY_RECORDS) {
            if let Some(signature) = self.signature(hash, now) {
                seal_line(line, &signature);
                self.last_signed = true;
                return true;
            }
        }
        self.unsigned += 1;
        false
    }

    /// Before a drain's `entries` go to the backlog: the record held from an
    /// earlier drain goes first, and this drain's newest is held if it is
    /// unsigned. `newest_hash` is the hash of the last entry.
    pub(crate) fn hold_newest(&mut self, entries: &mut Vec<Entry>, newest_hash: &str) {
        if let Some(held) = self.held.take() {
            entries.insert(0, held.entry);
        }
        if !self.last_signed {
            if let Some(entry) = entries.pop() {
                self.held = Some(Held {
                    entry,
                    hash: newest_hash.to_owned(),
                });
            }
        }
    }

    /// No new records: the held one, signed, once a checkpoint is due.
    pub(crate) fn idle(&mut self, now: Instant) -> Option<Entry> {
        if self.held.is_some() && self.due_by_time(now) && self.may_try(now) {
            return self.release(now);
        }
        None
    }

    /// Shutting down: the held record, signed (the chain's last record).
    pub(crate) fn finish(&mut self) -> Option<Entry> {
        self.release(Instant::now())
    }

    fn release(&mut self, now: Instant) -> Option<Entry> {
        let Held { mut entry, hash } = self.held.take()?;
        if let Some(signature) = self.signature(&hash, now) {
            // The one line a second that is signed late is copied to be.
            let mut line = entry.line.to_vec();
            seal_line(&mut line, &signature);
            entry.line = line.into();
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{sample_record, Chain};
    use crate::keys::{FileKey, KeyError, TrustedKeys};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A file key that can be told to fail, as a token that stops answering.
    struct Flaky {
        key: FileKey,
        failing: AtomicBool,
    }

    impl Signer for Flaky {
        fn key_id(&self) -> &str {
            self.key.key_id()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(KeyError::Pkcs11("token removed".into()));
            }
            self.key.sign(message)
        }
    }

    struct Setup {
        sealer: Sealer,
        signer: Arc<Flaky>,
        trusted: TrustedKeys,
        chain: Chain,
        counters: AuditCounters,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::keys::keygen(dir.path(), "node-a").expect("keygen");
        let signer = Arc::new(Flaky {
            key: FileKey::load(&dir.path().join("node-a.key")).expect("key"),
            failing: AtomicBool::new(false),
        });
        let counters = crate::metrics::Metrics::new().audit.clone();
        Setup {
            sealer: Sealer::new(signer.clone(), counters.clone()),
            signer,
            trusted: TrustedKeys::load_dir(dir.path()).expect("trusted"),
            chain: Chain::fresh("c1".into()),
            counters,
            _dir: dir,
        }
    }

    /// Link one record at `now`; its entry and whether it carries a valid `sig`.
    fn link(s: &mut Setup, now: Instant) -> (Entry, bool) {
        let mut record = sample_record(&format!("id-{}", s.chain.next_seq));
        let mut line = s.chain.link(&mut record);
        let signed = s.sealer.linked(&record.hash, &mut line, now);
        (
            Entry {
                seq: record.seq,
                line: line.into(),
            },
            signed,
        )
    }

    /// The line parses back, hashes to its `hash` (sig not covered) and, if
    /// signed, the signature verifies over the hash.
    fn signed_and_valid(s: &Setup, entry: &Entry) -> bool {
        let record: crate::audit::record::DecisionRecord =
            serde_json::from_slice(&entry.line).expect("a record");
        assert_eq!(record.compute_hash(), record.hash, "sig must not be hashed");
        record.sig.is_some_and(|sig| {
            sig.alg == "Ed25519"
                && s.trusted
                    .verify_by(&sig.key_id, record.hash.as_bytes(), &sig.value)
                    == Some(true)
        })
    }

    #[test]
    fn checkpoints_every_second_and_every_thousand_records() {
        let mut s = setup();
        let t0 = Instant::now();
        // The chain's first record is signed, then none within the second...
        let (first, signed) = link(&mut s, t0);
        assert!(signed && signed_and_valid(&s, &first));
        let mut signed_seqs = vec![];
        for i in 1..=1_500u64 {
            let (entry, signed) = link(&mut s, t0 + Duration::from_micros(i * 100));
            if signed {
                assert!(signed_and_valid(&s, &entry));
                signed_seqs.push(entry.seq);
            }
        }
        // ...until the 1,000th unsigned record (all within 0.15 s).
        assert_eq!(signed_seqs, vec![1_000]);
        // A record a second after the last signature is signed.
        let (entry, signed) = link(&mut s, t0 + Duration::from_millis(1_200));
        assert!(signed && signed_and_valid(&s, &entry));
        assert_eq!(s.counters.signatures.get(), 3);
    }

    #[test]
    fn the_newest_unsigned_record_waits_at_most_a_second_and_shutdown_seals_it() {
        let mut s = setup();
        let t0 = Instant::now();
        // Drain 1: three records, the first signed; the newest is held.
        let mut entries: Vec<Entry> = (0..3).map(|_| link(&mut s, t0).0).collect();
        s.sealer
            .hold_newest(&mut entries, &s.chain.last_hash.clone());
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // Idle before the second is up: still held.
        assert!(s.sealer.idle(t0 + Duration::from_millis(500)).is_none());
        // Drain 2: the held record goes first, unsigned; the new newest waits.
        let mut entries = vec![link(&mut s, t0 + Duration::from_millis(600)).0];
        s.sealer
            .hold_newest(&mut entries, &s.chain.last_hash.clone());
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        assert!(!signed_and_valid(&s, &entries[0]));
        // A second after the last signature, the idle chain's tail is sealed.
        let sealed = s
            .sealer
            .idle(t0 + Duration::from_millis(1_000))
            .expect("released");
        assert_eq!(sealed.seq, 3);
        assert!(signed_and_valid(&s, &sealed));
        // Shutdown seals whatever is held, even inside the second.
        let t1 = t0 + Duration::from_millis(1_100);
        let mut entries = vec![link(&mut s, t1).0, link(&mut s, t1).0];
        s.sealer
            .hold_newest(&mut entries, &s.chain.last_hash.clone());
        let last = s.sealer.finish().expect("held");
        assert_eq!(last.seq, 5);
        assert!(signed_and_valid(&s, &last));
        assert!(s.sealer.finish().is_none());
    }

    #[test]
    fn a_failing_key_leaves_records_unsigned_and_the_next_one_retries() {
        let mut s = setup();
        let t0 = Instant::now();
        s.signer.failing.store(true, Ordering::SeqCst);
        let (entry, signed) = link(&mut s, t0);
        assert!(!signed && !signed_and_valid(&s, &entry));
        assert_eq!(s.counters.signature_failures.get(), 1);
        // Within the back-off the key is not asked again (a hanging token
        // costs one call a second, not one per record)...
        s.signer.failing.store(false, Ordering::SeqCst);
        let (_, signed) = link(&mut s, t0 + Duration::from_millis(500));
        assert!(!signed);
        assert_eq!(s.counters.signature_failures.get(), 1);
        // ...after it, the key answers again and the next record is signed.
        let (entry, signed) = link(&mut s, t0 + Duration::from_millis(1_001));
        assert!(signed && signed_and_valid(&s, &entry));
    }
}
