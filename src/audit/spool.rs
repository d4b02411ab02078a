//! The durable backlog: append-only segment files in `--spool-dir`.
//!
//! Format: one record per line, `CRC32(hex, 8) SPACE JSON NEWLINE`. A line
//! whose checksum does not match, or a last line without its newline (a
//! write torn by a crash), is reported and skipped; reading resumes at the
//! next newline, so one bad record never costs the good ones around it.
//!
//! Files: `seg-NNNNNNNNNN.log` (oldest first) and `acked` (JSON: chain id
//! and the last acknowledged `seq`). A restart never appends to an old
//! segment; it starts a new one, so a torn tail stays where it is.
//!
//! Durability (fsync policy): records are written to the active segment as
//! the audit thread receives them (one `write` per drained batch of
//! events), and the segment is fsync'd by [`Backlog::sync`], which the
//! pipeline calls every 200 ms while there are unsynced writes, on segment
//! rotation and at shutdown. A crash of the process loses nothing already
//! written; a crash of the machine loses at most the last ~200 ms, which
//! then shows up as a torn tail.
//!
//! Refused batches: a batch the receiver refuses as malformed (see
//! `audit::ship`) is written whole to `rejected/CHAIN-FIRST-LAST.ndjson`
//! (plain NDJSON records for inspection or a manual replay), fsync'd, and
//! only then counts as acknowledged, so later records keep flowing.
//!
//! Bound: the files, rejected ones included, never hold more than
//! `max_bytes`. To make room the oldest rejected file goes first (those
//! records were already refused), then the oldest segment, whose records not
//! yet acknowledged are counted as dropped.

use super::backlog::{Backlog, Batch, Cursor, Entry, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    bytes: u64,
    /// `seq` of every valid record, in file order.
    seqs: Vec<u64>,
}

/// The newest record found on disk at start: the chain continues from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainHead {
    pub chain_id: String,
    pub seq: u64,
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Acked {
    chain_id: String,
    seq: u64,
}

/// The fields recovery needs from a record line.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordHead {
    pub seq: u64,
    pub chain_id: String,
    pub hash: String,
}

/// What recovery found wrong, for the log and a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

pub(super) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    active: Option<File>,
    next_segment_id: u64,
    acked: Option<u64>,
    chain_id: Option<String>,
    cursor: Cursor,
    dirty: bool,
    /// Files in `rejected/`, oldest first, with their sizes.
    rejected: VecDeque<(PathBuf, u64)>,
}

/// Subdirectory of the spool that keeps refused batches.
pub(crate) const REJECTED_DIR: &str = "rejected";

#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub(super) struct SpoolError {
    path: String,
    source: std::io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.display().to_string(),
        source,
    }
}

fn frame(json: &[u8]) -> Vec<u8> {
    let mut line = format!("{:08x} ", crc32fast::hash(json)).into_bytes();
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

/// The rejected batch files of a spool, oldest first.
fn list_rejected(dir: &Path) -> VecDeque<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return VecDeque::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, e.path(), meta.len()))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, path, bytes)| (path, bytes))
        .collect()
}

/// Check one framed line (without its newline); the JSON payload if valid.
fn unframe(line: &[u8]) -> Result<&[u8], String> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("not a spool record".into());
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("bad checksum field")?;
    let json = &line[9..];
    if crc32fast::hash(json) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(json)
}

/// The records of one segment file's bytes, in order, and the lines found
/// corrupt (a torn tail, a bad checksum, a payload that is no record).
/// Pure, so recovery's parsing can be fuzzed (`tests/fuzz`).
pub(crate) fn read_segment(bytes: &[u8], file: &str) -> (Vec<RecordHead>, Vec<Corruption>) {
    let mut records = Vec::new();
    let mut corruptions = Vec::new();
    let mut start = 0;
    let mut line_no = 0;
    while start < bytes.len() {
        line_no += 1;
        let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') else {
            corruptions.push(Corruption {
                file: file.to_owned(),
                line: line_no,
                reason: format!("torn tail: {} bytes without a newline", bytes.len() - start),
            });
            break;
        };
        let line = &bytes[start..start + len];
        start += len + 1;
        match unframe(line).and_then(|json| {
            serde_json::from_slice::<RecordHead>(json).map_err(|e| format!("invalid record: {e}"))
        }) {
            Ok(record) => records.push(record),
            Err(reason) => corruptions.push(Corruption {
                file: file.to_owned(),
                line: line_no,
                reason,
            }),
        }
    }
    (records, corruptions)
}

impl Spool {
    /// Open (creating) a spool directory and recover what is in it.
    /// Returns the spool, the chain head to continue from, and what was
    /// found corrupt.
    pub(super) fn open(
        dir: &Path,
        max_bytes: u64,
    ) -> Result<(Spool, Option<ChainHead>, Vec<Corruption>), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked: Option<Acked> = std::fs::read(dir.join("acked"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((id, e.path()))
            })
            .collect();
        names.sort();
        let mut segments = VecDeque::new();
        let mut corruptions = Vec::new();
        let mut head: Option<ChainHead> = None;
        for (id, path) in names {
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (records, found) = read_segment(&bytes, &file);
            corruptions.extend(found);
            let mut seqs = Vec::with_capacity(records.len());
            for record in records {
                seqs.push(record.seq);
                if head.as_ref().is_none_or(|h| record.seq >= h.seq) {
                    head = Some(ChainHead {
                        chain_id: record.chain_id,
                        seq: record.seq,
                        hash: record.hash,
                    });
                }
            }
            segments.push_back(Segment {
                id,
                path,
                bytes: bytes.len() as u64,
                seqs,
            });
        }
        let chain_id = head.as_ref().map(|h| h.chain_id.clone());
        // An acknowledgement for another chain says nothing about this one.
        let acked_seq = acked
            .filter(|a| Some(&a.chain_id) == chain_id.as_ref())
            .map(|a| a.seq);
        let next_segment_id = segments.back().map_or(0, |s| s.id + 1);
        let cursor = Cursor {
            segment: segments.front().map_or(next_segment_id, |s| s.id),
            offset: 0,
        };
        let mut spool = Spool {
            rejected: list_rejected(&dir.join(REJECTED_DIR)),
            dir: dir.to_owned(),
            max_bytes,
            // Small enough that dropping one segment frees real room.
            segment_max: (max_bytes / 8).clamp(4096, 8 << 20),
            segments,
            active: None,
            next_segment_id,
            acked: acked_seq,
            chain_id,
            cursor,
            dirty: false,
        };
        spool.delete_acked_segments();
        Ok((spool, head, corruptions))
    }

    /// Use this chain id for acknowledgements from now on (a new chain).
    pub(super) fn set_chain(&mut self, chain_id: &str) {
        if self.chain_id.as_deref() != Some(chain_id) {
            self.chain_id = Some(chain_id.to_owned());
        }
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>()
            + self.rejected.iter().map(|(_, bytes)| bytes).sum::<u64>()
    }

    /// Delete the oldest rejected batch file; false when there is none.
    fn drop_oldest_rejected(&mut self) -> bool {
        let Some((path, _)) = self.rejected.pop_front() else {
            return false;
        };
        tracing::warn!(path = %path.display(), "spool bound reached: deleting the oldest rejected batch");
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a rejected batch");
        }
        true
    }

    /// Write a refused batch to `rejected/` durably; its path and size.
    fn write_rejected(&self, batch: &Batch, body: &[u8]) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(REJECTED_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // The chain id comes from disk: keep it to file-name-safe characters.
        let chain: String = self
            .chain_id
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let path = dir.join(format!(
            "{chain}-{}-{}.ndjson",
            batch.first_seq, batch.last_seq
        ));
        let mut file = File::create(&path).map_err(io_err(&path))?;
        file.write_all(body)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))?;
        Ok(path)
    }

    fn unacked_in(&self, segment: &Segment) -> u64 {
        segment
            .seqs
            .iter()
            .filter(|&&s| self.acked.is_none_or(|a| s > a))
            .count() as u64
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        if let Some(file) = self.active.take() {
            file.sync_data().map_err(io_err(&self.dir))?;
        }
        let id = self.next_segment_id;
        self.next_segment_id += 1;
        let path = self.dir.join(format!("seg-{id:010}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.segments.push_back(Segment {
            id,
            path,
            bytes: 0,
            seqs: Vec::new(),
        });
        self.active = Some(file);
        Ok(())
    }

    /// Delete the oldest segment; the number of its unacknowledged records.
    fn drop_oldest(&mut self) -> u64 {
        let Some(oldest) = self.segments.pop_front() else {
            return 0;
        };
        let lost = self.unacked_in(&oldest);
        if let Err(e) = std::fs::remove_file(&oldest.path) {
            tracing::warn!(path = %oldest.path.display(), error = %e, "cannot delete spool segment");
        }
        if self.segments.is_empty() {
            self.active = None;
        }
        lost
    }

    fn delete_acked_segments(&mut self) {
        // Keep the newest segment: it holds the chain head for a restart.
        while self.segments.len() > 1 && self.unacked_in(&self.segments[0]) == 0 {
            let oldest = self.segments.pop_front();
            if let Some(s) = oldest {
                let _ = std::fs::remove_file(&s.path);
            }
        }
    }

    fn write_lines(&mut self, lines: &[(u64, Vec<u8>)]) -> Result<(), SpoolError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buffer = Vec::with_capacity(lines.iter().map(|(_, l)| l.len()).sum());
        for (_, line) in lines {
            buffer.extend_from_slice(line);
        }
        let Some(segment) = self.segments.back_mut() else {
            return Ok(());
        };
        let path = segment.path.clone();
        let Some(file) = self.active.as_mut() else {
            return Ok(());
        };
        file.write_all(&buffer).map_err(io_err(&path))?;
        segment.bytes += buffer.len() as u64;
        segment.seqs.extend(lines.iter().map(|(seq, _)| *seq));
        self.dirty = true;
        Ok(())
    }

    fn try_append(&mut self, entries: Vec<Entry>) -> Result<u64, SpoolError> {
        let mut dropped = 0;
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut pending_bytes = 0u64;
        for entry in entries {
            let line = frame(&entry.line);
            let size = line.len() as u64;
            if size > self.max_bytes / 2 {
                dropped += 1;
                continue;
            }
            // Make room: rotate away from a full active segment, then drop
            // the oldest segments until the new line fits the bound.
            loop {
                let total = self.total_bytes() + pending_bytes;
                let active_bytes = self.segments.back().map_or(0, |s| s.bytes) + pending_bytes;
                if self.active.is_none() || active_bytes + size > self.segment_max {
                    self.write_lines(&pending)?;
                    pending.clear();
                    pending_bytes = 0;
                    self.rotate()?;
                    continue;
                }
                if total + size > self.max_bytes
                    && (!self.rejected.is_empty() || self.segments.len() > 1)
                {
                    self.write_lines(&pending)?;
                    pending.clear();
                    pending_bytes = 0;
                    if !self.drop_oldest_rejected() {
                        dropped += self.drop_oldest();
                    }
                    continue;
                }
                break;
            }
            pending_bytes += size;
            pending.push((entry.seq, line));
        }
        self.write_lines(&pending)?;
        Ok(dropped)
    }

    /// Read framed lines of one segment from `offset`: (seq, json, end offset).
    fn read_segment(
        path: &Path,
        offset: u64,
        max_bytes: usize,
    ) -> std::io::Result<Vec<(u64, Vec<u8>, u64)>> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buffer = Vec::new();
        file.take(max_bytes as u64 + 65_536)
            .read_to_end(&mut buffer)?;
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &buffer[start..start + len];
            start += len + 1;
            let end = offset + start as u64;
            // Corrupt lines were reported at recovery; here they are skipped.
            if let Ok(json) = unframe(line) {
                if let Ok(head) = serde_json::from_slice::<RecordHead>(json) {
                    out.push((head.seq, json.to_vec(), end));
                    continue;
                }
            }
            out.push((u64::MAX, Vec::new(), end));
        }
        Ok(out)
    }
}

impl Backlog for Spool {
    fn append(&mut self, entries: Vec<Entry>) -> u64 {
        let count = entries.len() as u64;
        match self.try_append(entries) {
            Ok(dropped) => dropped,
            Err(e) => {
                // A full or broken disk must not stop decisions: the records
                // that could not be written are counted as dropped.
                tracing::error!(error = %e, "cannot write to the audit spool");
                count
            }
        }
    }

    fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Option<Batch> {
        let mut lines = Vec::new();
        let mut size = 0;
        let mut first_seq = None;
        let mut last_seq = 0;
        let mut resume = self.cursor;
        // A cursor into a deleted segment restarts at the oldest one.
        if !self.segments.iter().any(|s| s.id == resume.segment) {
            resume = Cursor {
                segment: self.segments.front()?.id,
                offset: 0,
            };
        }
        let start_index = self.segments.iter().position(|s| s.id == resume.segment)?;
        'segments: for segment in self.segments.iter().skip(start_index) {
            let offset = if segment.id == resume.segment {
                resume.offset
            } else {
                0
            };
            let records = match Spool::read_segment(&segment.path, offset, max_bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %segment.path.display(), error = %e, "cannot read spool segment");
                    break;
                }
            };
            for (seq, json, end) in records {
                let already_acked = self.acked.is_some_and(|a| seq <= a);
                if seq != u64::MAX && !already_acked {
                    if !lines.is_empty()
                        && (lines.len() >= max_records || size + json.len() > max_bytes)
                    {
                        break 'segments;
                    }
                    first_seq.get_or_insert(seq);
                    last_seq = seq;
                    size += json.len();
                    lines.push(json);
                }
                resume = Cursor {
                    segment: segment.id,
                    offset: end,
                };
            }
            if lines.len() >= max_records || size >= max_bytes {
                break;
            }
        }
        Some(Batch {
            first_seq: first_seq?,
            last_seq,
            lines,
            resume,
        })
    }

    fn ack(&mut self, batch: &Batch) {
        self.acked = Some(self.acked.map_or(batch.last_seq, |a| a.max(batch.last_seq)));
        self.cursor = batch.resume;
        if let (Some(chain_id), Some(seq)) = (&self.chain_id, self.acked) {
            let acked = Acked {
                chain_id: chain_id.clone(),
                seq,
            };
            let tmp = self.dir.join("acked.tmp");
            let written = serde_json::to_vec(&acked)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&tmp, bytes))
                .and_then(|()| std::fs::rename(&tmp, self.dir.join("acked")));
            if let Err(e) = written {
                // Losing the ack position only means re-shipping (at least once).
                tracing::warn!(error = %e, "cannot record the acknowledged position");
            }
        }
        self.delete_acked_segments();
    }

    fn reject(&mut self, batch: &Batch) -> Rejection {
        // Durable copy first, acknowledgement second: a crash in between
        // re-sends the batch (at least once), never loses it.
        let body = batch.ndjson();
        let size = body.len() as u64;
        let written = if size > self.max_bytes / 2 {
            Err("larger than half the spool bound".to_owned())
        } else {
            self.write_rejected(batch, &body).map_err(|e| e.to_string())
        };
        self.ack(batch);
        let path = match written {
            Ok(path) => path,
            Err(why) => return Rejection::Lost(why),
        };
        self.rejected.retain(|(p, _)| *p != path);
        // The acknowledgement may have freed segments; now make room,
        // oldest rejected files first, unless the new one cannot fit at all.
        let segments: u64 = self.segments.iter().map(|s| s.bytes).sum();
        if segments + size > self.max_bytes {
            let _ = std::fs::remove_file(&path);
            return Rejection::Lost("the spool bound is full of unshipped records".into());
        }
        self.rejected.push_back((path.clone(), size));
        while self.total_bytes() > self.max_bytes && self.rejected.len() > 1 {
            self.drop_oldest_rejected();
        }
        Rejection::Kept(path)
    }

    fn pending(&self) -> usize {
        self.segments
            .iter()
            .map(|s| self.unacked_in(s) as usize)
            .sum()
    }

    fn bytes(&self) -> u64 {
        self.total_bytes()
    }

    fn sync(&mut self) {
        if self.dirty {
            if let Some(file) = &self.active {
                if let Err(e) = file.sync_data() {
                    tracing::warn!(error = %e, "cannot fsync the audit spool");
                }
            }
            self.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(chain: &str, seq: u64, pad: usize) -> Entry {
        let line = serde_json::json!({"seq": seq, "chainId": chain, "hash": format!("h{seq}"), "pad": "x".repeat(pad)});
        Entry {
            seq,
            line: serde_json::to_vec(&line).unwrap_or_default().into(),
        }
    }

    #[test]
    fn survives_reopen_and_continues_after_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, head, bad) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(head.is_none() && bad.is_empty());
        spool.set_chain("c1");
        spool.append((0..10).map(|s| entry("c1", s, 10)).collect());
        let batch = spool.next_batch(4, 1 << 20).unwrap();
        assert_eq!((batch.first_seq, batch.last_seq), (0, 3));
        spool.ack(&batch);
        spool.sync();
        drop(spool);

        let (mut spool, head, bad) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(bad.is_empty());
        assert_eq!(head.map(|h| (h.chain_id, h.seq)), Some(("c1".into(), 9)));
        assert_eq!(spool.pending(), 6);
        let batch = spool.next_batch(100, 1 << 20).unwrap();
        assert_eq!(
            (batch.first_seq, batch.last_seq, batch.lines.len()),
            (4, 9, 6)
        );
    }

    #[test]
    fn bound_is_never_exceeded_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let (mut spool, _, _) = Spool::open(dir.path(), max).unwrap();
        spool.set_chain("c1");
        let mut dropped = 0;
        for seq in 0..2000 {
            dropped += spool.append(vec![entry("c1", seq, 200)]);
            let on_disk: u64 = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum();
            assert!(on_disk <= max, "spool holds {on_disk} bytes, bound {max}");
        }
        assert!(dropped > 0);
        assert_eq!(dropped as usize + spool.pending(), 2000);
        // What is left is the newest records, in order.
        let batch = spool.next_batch(100_000, 1 << 30).unwrap();
        assert_eq!(batch.last_seq, 1999);
        assert_eq!(batch.first_seq, dropped);
    }

    #[test]
    fn a_rejected_batch_is_kept_aside_and_shipping_continues_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let (mut spool, _, _) = Spool::open(dir.path(), max).unwrap();
        spool.set_chain("c1");
        spool.append((0..10).map(|s| entry("c1", s, 10)).collect());
        let batch = spool.next_batch(4, 1 << 20).unwrap();
        let Rejection::Kept(kept) = spool.reject(&batch) else {
            panic!("kept")
        };
        assert!(
            kept.ends_with("rejected/c1-0-3.ndjson"),
            "{}",
            kept.display()
        );
        assert_eq!(std::fs::read(&kept).unwrap(), batch.ndjson());
        let next = spool.next_batch(100, 1 << 20).unwrap();
        assert_eq!((next.first_seq, next.last_seq), (4, 9));
        drop(spool);

        // Rejected files count toward the bound and go first when room is needed.
        let (mut spool, _, _) = Spool::open(dir.path(), max).unwrap();
        assert_eq!(spool.pending(), 6);
        assert_eq!(spool.rejected.len(), 1);
        let mut dropped = 0;
        for seq in 10..400 {
            dropped += spool.append(vec![entry("c1", seq, 200)]);
            assert!(spool.total_bytes() <= max);
        }
        assert!(
            spool.rejected.is_empty(),
            "the rejected file made room first"
        );
        assert!(!kept.exists());
        assert!(dropped > 0);
    }

    #[test]
    fn corrupt_and_torn_lines_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.set_chain("c1");
        spool.append((0..5).map(|s| entry("c1", s, 10)).collect());
        drop(spool);
        let seg = dir.path().join("seg-0000000000.log");
        let mut bytes = std::fs::read(&seg).unwrap();
        // Garble a byte inside the second record and tear the tail.
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 20;
        bytes[second] ^= 0x55;
        bytes.extend_from_slice(b"0badc0de {\"seq\": 5");
        std::fs::write(&seg, bytes).unwrap();

        let (mut spool, head, bad) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].line, 2);
        assert!(bad[1].reason.starts_with("torn tail"));
        assert_eq!(head.map(|h| h.seq), Some(4));
        let batch = spool.next_batch(100, 1 << 20).unwrap();
        let seqs: Vec<u64> = batch
            .lines
            .iter()
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![0, 2, 3, 4]);
    }
}
