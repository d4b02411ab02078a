//! Records waiting to be acknowledged by the audit service, in chain order.
//!
//! Two implementations: [`MemoryBacklog`] (no `--spool-dir`: bounded, lost on
//! restart) and [`super::spool::Spool`] (durable segment files). Both are
//! bounded in bytes and drop the oldest records first, returning how many
//! they dropped so the one `sentinel_audit_dropped_total` counts them.

use std::collections::VecDeque;

/// One serialised record (compact JSON, no trailing newline) and its `seq`.
/// The line is shared with the decision log, not copied.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub seq: u64,
    pub line: bytes::Bytes,
}

/// Where reading resumes in a backlog; opaque to the shipper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// Records to ship together, and where the backlog continues after them.
#[derive(Debug, Clone)]
pub(super) struct Batch {
    pub first_seq: u64,
    pub last_seq: u64,
    pub lines: Vec<Vec<u8>>,
    pub resume: Cursor,
}

impl Batch {
    /// NDJSON: one record per line.
    pub(super) fn ndjson(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum());
        for line in &self.lines {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out
    }
}

/// What became of a batch the receiver refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rejection {
    /// Kept in the spool's `rejected/` directory.
    Kept(std::path::PathBuf),
    /// No spool: only its seq range is logged.
    NoSpool,
    /// It could not be kept (why): the records are lost and count as dropped.
    Lost(String),
}

pub(super) trait Backlog: Send {
    /// Add records (in seq order). Returns how many records were dropped to
    /// stay within the byte bound.
    fn append(&mut self, entries: Vec<Entry>) -> u64;
    /// The next records after the last acknowledged one, without removing them.
    fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Option<Batch>;
    /// The audit service acknowledged `batch`.
    fn ack(&mut self, batch: &Batch);
    /// The audit service refused `batch` for good: set it aside (where, if
    /// it is kept) and continue after it as if it were acknowledged.
    fn reject(&mut self, batch: &Batch) -> Rejection;
    /// Records not yet acknowledged.
    fn pending(&self) -> usize;
    /// Bytes held.
    fn bytes(&self) -> u64;
    /// Make appended records durable (no-op in memory).
    fn sync(&mut self) {}
}

/// The in-memory backlog used without a spool directory.
pub(super) struct MemoryBacklog {
    entries: VecDeque<Entry>,
    bytes: u64,
    max_bytes: u64,
}

impl MemoryBacklog {
    pub(super) fn new(max_bytes: u64) -> MemoryBacklog {
        MemoryBacklog {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }
}

impl Backlog for MemoryBacklog {
    fn append(&mut self, entries: Vec<Entry>) -> u64 {
        let mut dropped = 0;
        for entry in entries {
            let size = entry.line.len() as u64;
            while self.bytes + size > self.max_bytes {
                match self.entries.pop_front() {
                    Some(old) => {
                        self.bytes -= old.line.len() as u64;
                        dropped += 1;
                    }
                    None => break,
                }
            }
            if size > self.max_bytes {
                dropped += 1;
                continue;
            }
            self.bytes += size;
            self.entries.push_back(entry);
        }
        dropped
    }

    fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Option<Batch> {
        let mut lines = Vec::new();
        let mut size = 0;
        let mut first_seq = None;
        let mut last_seq = 0;
        for entry in self.entries.iter() {
            if !lines.is_empty()
                && (lines.len() >= max_records || size + entry.line.len() > max_bytes)
            {
                break;
            }
            first_seq.get_or_insert(entry.seq);
            last_seq = entry.seq;
            size += entry.line.len();
            lines.push(entry.line.to_vec());
        }
        Some(Batch {
            first_seq: first_seq?,
            last_seq,
            lines,
            resume: Cursor::default(),
        })
    }

    fn ack(&mut self, batch: &Batch) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.seq <= batch.last_seq)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.line.len() as u64;
            }
        }
    }

    fn reject(&mut self, batch: &Batch) -> Rejection {
        // Without a spool there is nowhere durable to keep them; the caller
        // logs their seq range.
        self.ack(batch);
        Rejection::NoSpool
    }

    fn pending(&self) -> usize {
        self.entries.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, size: usize) -> Entry {
        Entry {
            seq,
            line: vec![b'x'; size].into(),
        }
    }

    #[test]
    fn memory_backlog_drops_oldest_past_its_bound_and_acks_by_seq() {
        let mut backlog = MemoryBacklog::new(100);
        assert_eq!(backlog.append((0..10).map(|s| entry(s, 20)).collect()), 5);
        assert_eq!(backlog.pending(), 5);
        assert!(backlog.bytes() <= 100);
        let batch = backlog.next_batch(3, 1000).expect("batch");
        assert_eq!(
            (batch.first_seq, batch.last_seq, batch.lines.len()),
            (5, 7, 3)
        );
        backlog.ack(&batch);
        assert_eq!(backlog.pending(), 2);
    }
}
