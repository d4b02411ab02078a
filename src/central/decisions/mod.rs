//! Decision records at central: ingest (dedupe, quarantine, chain
//! verification), queries, export, and retention.
//!
//! One posted batch is one store transaction: the records (one multi-row
//! statement per 500), the policy index, then each chain touched, locked
//! and walked forward (sorted, so two centrals never lock in opposite
//! orders), then the quarantined lines. A record whose id is already
//! stored is a duplicate when its content is the same, and an integrity
//! alarm when it differs: the stored record stays, the new one is refused
//! (listed in the answer, kept in quarantine, counted, logged). Never a
//! silent duplicate, never a replacement.

pub(crate) mod chains;
pub(crate) mod parse;

use super::store::decisions::{
    self as sql, ChainRow, DecisionFilter, DecisionRow, QuarantineRow, Seal, StoredRecord,
};
use super::store::rollout::{self as rollout_sql, LabelRow};
use super::store::{Store, StoreError};
use crate::keys::TrustedKeys;
use crate::timestamp::{format_timestamp, unix_micros};
use chains::{Break, ChainState};
use parse::{Incoming, Refused};
use prometheus::{IntCounter, IntGauge};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sqlx::AnyConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Most records after a chain's checkpoint read to walk it in one batch.
const WALK_LIMIT: i64 = 100_000;
/// Records deleted per pruning statement, so ingest never waits long.
const PRUNE_BATCH: i64 = 5_000;
/// Records per page of an export.
const EXPORT_PAGE: i64 = 1_000;

/// Central's decision metrics.
#[derive(Clone)]
pub(crate) struct DecisionMetrics {
    pub ingested: IntCounter,
    pub duplicates: IntCounter,
    pub rejected: IntCounter,
    pub conflicts: IntCounter,
    pub chain_breaks: IntCounter,
    pub chain_gaps: IntGauge,
}

/// The answer to a posted batch.
#[derive(Debug, Serialize)]
pub(crate) struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<RejectedLine>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RejectedLine {
    pub line: usize,
    pub error: String,
}

/// Where a batch comes from.
pub(crate) enum Source<'a> {
    /// `POST /v1/audit/decisions` by this client identity.
    Posted { identity: &'a str },
    /// The decision stream: the subject each line (message) arrived on.
    Stream { subjects: &'a [&'a str] },
}

impl Source<'_> {
    /// The identity records and quarantine entries are stored under.
    fn identity(&self) -> &str {
        match self {
            Source::Posted { identity } => identity,
            Source::Stream { .. } => crate::central::stream::STREAM_IDENTITY,
        }
    }
}

fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Keep the stream records that arrived on their node's subject
/// (`sentinel.decisions.<node>`); refuse the others, naming both, so a
/// publisher allowed on one node's subject cannot write another's chain.
fn on_their_subjects(
    incoming: Vec<Incoming>,
    subjects: &[&str],
    refused: &mut Vec<Refused>,
) -> Vec<Incoming> {
    let mut kept = Vec::with_capacity(incoming.len());
    for record in incoming {
        let arrived = subjects
            .get(record.line.saturating_sub(1))
            .copied()
            .unwrap_or_default();
        if crate::nats::is_subject_for(arrived, &record.row.node) {
            kept.push(record);
        } else {
            let expected = crate::nats::subject_for(&record.row.node);
            refused.push(Refused {
                line: record.line,
                error: format!(
                    "a record of node \"{}\" arrived on subject \"{arrived}\", not \"{expected}\"",
                    record.row.node
                ),
                content: record.row.record.clone(),
            });
        }
    }
    kept
}

pub(crate) struct Decisions {
    store: Store,
    metrics: DecisionMetrics,
    /// `--pin-node-identity`: a node's records only from the identity that
    /// first posted them.
    pin_nodes: bool,
    /// `--record-keys`: checkpoint signatures are verified at ingest.
    record_keys: Option<Arc<TrustedKeys>>,
    /// [`WALK_LIMIT`]; smaller in tests, to cut walks short.
    walk_limit: i64,
}

impl Decisions {
    pub(crate) fn new(
        store: Store,
        metrics: DecisionMetrics,
        pin_nodes: bool,
        record_keys: Option<TrustedKeys>,
    ) -> Decisions {
        Decisions {
            store,
            metrics,
            pin_nodes,
            record_keys: record_keys.map(Arc::new),
            walk_limit: WALK_LIMIT,
        }
    }

    /// Store a batch of NDJSON records from `source`.
    pub(crate) async fn ingest(
        &self,
        body: Vec<u8>,
        source: Source<'_>,
    ) -> Result<IngestReport, StoreError> {
        let identity = source.identity();
        // Parsing and hashing 500 records is CPU work: off the runtime, so
        // long polls and other requests are not held behind it.
        let keys = self.record_keys.clone();
        let (incoming, mut refused) =
            tokio::task::spawn_blocking(move || parse::parse_batch(&body, keys.as_deref()))
                .await
                // Answered 503: the sidecar keeps the batch and sends it again.
                .map_err(|e| {
                    StoreError::Query(sqlx::Error::Protocol(format!(
                        "parsing the batch failed: {e}"
                    )))
                })?;
        let incoming = match &source {
            Source::Stream { subjects } => on_their_subjects(incoming, subjects, &mut refused),
            Source::Posted { .. } => incoming,
        };
        let (incoming, mut duplicates, mut conflicts) = first_of_each_id(incoming, &mut refused);
        let mut tx = self.store.begin().await?;
        // Pinning is about who posts; on the stream NATS's authorization
        // says who may publish on a node's subject.
        let incoming = if self.pin_nodes && matches!(source, Source::Posted { .. }) {
            owned_by(&mut tx, incoming, identity, &mut refused).await?
        } else {
            incoming
        };
        let rows: Vec<&DecisionRow> = incoming.iter().map(|i| &i.row).collect();
        let inserted: HashSet<String> = sql::insert_decisions(&mut tx, &rows, identity)
            .await?
            .into_iter()
            .collect();
        let (new, resent): (Vec<&Incoming>, Vec<&Incoming>) =
            incoming.iter().partition(|i| inserted.contains(&i.row.id));

        // A resent id is a duplicate only if its content is what is stored.
        let resent_ids: Vec<&str> = resent.iter().map(|i| i.row.id.as_str()).collect();
        let stored: HashMap<String, (String, Option<String>)> =
            sql::stored_contents(&mut tx, &resent_ids)
                .await?
                .into_iter()
                .map(|(id, record, input)| (id, (record, input)))
                .collect();
        for r in &resent {
            let same = stored
                .get(&r.row.id)
                .is_some_and(|(record, input)| *record == r.row.record && *input == r.row.input);
            if same {
                duplicates += 1;
            } else {
                conflicts += 1;
                refused.push(conflict(r));
            }
        }

        let index: Vec<(String, i64, String)> = new
            .iter()
            .flat_map(|i| {
                i.policies
                    .iter()
                    .map(|p| (p.clone(), i.row.ts_us, i.row.id.clone()))
            })
            .collect();
        sql::insert_decision_policies(&mut tx, &index).await?;
        let breaks = verify_chains(&mut tx, &new, self.walk_limit).await?;

        let now = SystemTime::now();
        let quarantined: Vec<QuarantineRow> = refused
            .iter()
            .map(|r| QuarantineRow {
                id: crate::ids::decision_id(now).to_string(),
                received_at: format_timestamp(now),
                received_us: unix_micros(now),
                identity: identity.to_owned(),
                line: r.line as i64,
                error: without_nul(&r.error),
                // PostgreSQL's text cannot hold NUL: a line carrying one
                // would fail the whole batch, and a retried batch would
                // fail forever.
                content: without_nul(&r.content),
            })
            .collect();
        sql::insert_quarantine(&mut tx, &quarantined).await?;
        tx.commit().await?;

        self.metrics.ingested.inc_by(new.len() as u64);
        self.metrics.duplicates.inc_by(duplicates as u64);
        self.metrics.rejected.inc_by(refused.len() as u64);
        if conflicts > 0 {
            tracing::warn!(conflicts, identity, "central: record ids already stored with different content were refused; the stored records stay");
        }
        self.metrics.conflicts.inc_by(conflicts);
        self.metrics.chain_breaks.inc_by(breaks as u64);
        if !new.is_empty() {
            self.refresh_gap_gauge().await;
        }
        refused.sort_by_key(|r| r.line);
        Ok(IngestReport {
            accepted: new.len(),
            duplicates,
            rejected: refused
                .into_iter()
                .map(|r| RejectedLine {
                    line: r.line,
                    error: r.error,
                })
                .collect(),
        })
    }

    async fn refresh_gap_gauge(&self) {
        let total = match self.store.connection().await {
            Ok(mut conn) => sql::gap_total(&mut conn).await,
            Err(e) => Err(e),
        };
        match total {
            Ok(total) => self.metrics.chain_gaps.set(total),
            Err(e) => tracing::warn!(error = %e, "central: cannot count chain gaps"),
        }
    }

    /// Newest first, as JSON records (with `input` when asked, `label` when set).
    pub(crate) async fn list(
        &self,
        filter: &DecisionFilter,
        with_input: bool,
        limit: i64,
    ) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.store.connection().await?;
        let rows = sql::newest_decisions(&mut conn, filter, with_input, limit).await?;
        Ok(rows.iter().map(record_json).collect())
    }

    /// One record with its input, its label and every label it was given.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let filter = DecisionFilter {
            id: Some(id.to_owned()),
            ..DecisionFilter::default()
        };
        let Some(mut record) = self.list(&filter, true, 1).await?.into_iter().next() else {
            return Ok(None);
        };
        let mut conn = self.store.connection().await?;
        let labels = rollout_sql::labels(&mut conn, id).await?;
        if let Value::Object(map) = &mut record {
            map.insert("labels".into(), json!(labels));
        }
        Ok(Some(record))
    }

    /// Label stored decision `id` (feedback): the last label counts, every
    /// one is kept with who and when. The record with its label history, or
    /// `None` when no such decision is stored.
    pub(crate) async fn label(
        &self,
        id: &str,
        label: &str,
        note: &str,
        by: &str,
    ) -> Result<Option<Value>, StoreError> {
        let row = LabelRow {
            label: label.to_owned(),
            note: note.to_owned(),
            labelled_by: by.to_owned(),
            at: format_timestamp(SystemTime::now()),
        };
        let mut tx = self.store.begin().await?;
        if !rollout_sql::insert_label(&mut tx, id, &row).await? {
            return Ok(None);
        }
        tx.commit().await?;
        self.get(id).await
    }

    /// The next page of an export, oldest first, one NDJSON line per
    /// record; the key to continue after (`None` at the end).
    pub(crate) async fn export_page(
        &self,
        filter: &DecisionFilter,
        after: Option<(i64, String)>,
    ) -> Result<(Vec<Vec<u8>>, Option<(i64, String)>), StoreError> {
        let mut conn = self.store.connection().await?;
        let rows = sql::decisions_after(&mut conn, filter, after, EXPORT_PAGE).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            // A stored record always serialises.
            let mut line = serde_json::to_vec(&record_json(row)).unwrap_or_default();
            line.push(b'\n');
            out.push(line);
        }
        let next = (rows.len() as i64 == EXPORT_PAGE)
            .then(|| rows.last().map(|r| (r.ts_us, r.id.clone())))
            .flatten();
        Ok((out, next))
    }

    /// Every chain's verification state.
    pub(crate) async fn chains(&self) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.store.connection().await?;
        Ok(sql::chains(&mut conn)
            .await?
            .into_iter()
            .map(|row| {
                let state = chain_state(&row);
                json!({
                    "node": row.node,
                    "chainId": row.chain_id,
                    "firstSeq": row.first_seq,
                    "lastSeq": (state.last_seq >= 0).then_some(state.last_seq),
                    "verifiedThrough": (state.verified_through >= 0).then_some(state.verified_through),
                    // Only meaningful when central checks signatures.
                    "signedThrough": self.record_keys.as_ref().and((state.signed_through >= 0).then_some(state.signed_through)),
                    "gaps": state.gaps,
                    "breaks": state.breaks,
                    "status": state.status(),
                    "updatedAt": row.updated_at,
                })
            })
            .collect())
    }

    pub(crate) async fn quarantine(&self, limit: i64) -> Result<Vec<QuarantineRow>, StoreError> {
        let mut conn = self.store.connection().await?;
        sql::quarantine(&mut conn, limit).await
    }

    /// The newest records `policy` decided or shadowed, for explain, each
    /// with where it sits in its chain.
    pub(crate) async fn recent_for_policy(
        &self,
        policy: &str,
        limit: i64,
    ) -> Result<Vec<Value>, StoreError> {
        let filter = DecisionFilter {
            policy: Some(policy.to_owned()),
            ..DecisionFilter::default()
        };
        let records = self.list(&filter, false, limit).await?;
        // How far each chain shown is sealed: a record at or before that
        // seq is covered by a verified signature. Only the chains of these
        // records are read (a fleet has a chain per sidecar start).
        let signed_through: HashMap<(String, String), i64> = if self.record_keys.is_some() {
            let mut keys: Vec<(&str, &str)> = records
                .iter()
                .map(|r| {
                    (
                        r["node"].as_str().unwrap_or_default(),
                        r["chainId"].as_str().unwrap_or_default(),
                    )
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let mut conn = self.store.connection().await?;
            sql::chains_of(&mut conn, &keys)
                .await?
                .into_iter()
                .map(|row| ((row.node, row.chain_id), row.signed_through))
                .collect()
        } else {
            HashMap::new()
        };
        Ok(records
            .iter()
            .map(|r| {
                let sealed = self.record_keys.as_ref().map(|_| {
                    let chain = (
                        r["node"].as_str().unwrap_or_default().to_owned(),
                        r["chainId"].as_str().unwrap_or_default().to_owned(),
                    );
                    let seq = r["seq"].as_i64().unwrap_or(i64::MAX);
                    signed_through
                        .get(&chain)
                        .is_some_and(|&through| seq <= through)
                });
                let role = if r["policyId"] == policy {
                    "decided"
                } else {
                    "shadow"
                };
                // The stored record itself (SPEC 7: "the 100 newest stored
                // records"), with what explain adds: its role for this
                // policy, its label, and its audit reference. `decisionId`
                // repeats `id` for readers of the earlier summary form.
                let mut entry = match r {
                    Value::Object(map) => map.clone(),
                    _ => Map::new(),
                };
                let audit_ref = json!({
                    "id": r["id"], "node": r["node"], "chainId": r["chainId"], "seq": r["seq"],
                    // Covered by a verified checkpoint signature (null when
                    // central has no --record-keys).
                    "sealed": sealed,
                });
                entry.insert("decisionId".into(), r["id"].clone());
                entry.insert("role".into(), json!(role));
                entry.entry("label").or_insert(Value::Null);
                entry.insert("auditRef".into(), audit_ref);
                Value::Object(entry)
            })
            .collect())
    }

    /// Delete records older than `retention`, a few thousand per statement
    /// so ingest interleaves; how many went.
    pub(crate) async fn prune(&self, retention: Duration) -> Result<u64, StoreError> {
        let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = unix_micros(SystemTime::now()).saturating_sub(retention);
        let mut total = 0;
        loop {
            let mut conn = self.store.connection().await?;
            let deleted = sql::prune_decisions(&mut conn, cutoff, PRUNE_BATCH).await?;
            total += deleted;
            if deleted < PRUNE_BATCH as u64 {
                sql::prune_indexes(&mut conn, cutoff).await?;
                return Ok(total);
            }
            drop(conn);
            tokio::task::yield_now().await;
        }
    }
}

/// Keep the first record of each id in a batch; a repeat is a duplicate
/// when identical and a conflict (refused) when not. The records kept, the
/// duplicates and the conflicts.
/// The records whose node belongs to `identity` (the first identity that
/// posted a node's records owns it); the others are refused, naming the
/// owner.
async fn owned_by(
    tx: &mut AnyConnection,
    incoming: Vec<Incoming>,
    identity: &str,
    refused: &mut Vec<Refused>,
) -> Result<Vec<Incoming>, StoreError> {
    let at = format_timestamp(SystemTime::now());
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::with_capacity(incoming.len());
    for record in incoming {
        let owner = match owners.get(&record.row.node) {
            Some(owner) => owner.clone(),
            None => {
                let owner = sql::claim_node(tx, &record.row.node, identity, &at).await?;
                owners.insert(record.row.node.clone(), owner.clone());
                owner
            }
        };
        if owner == identity {
            kept.push(record);
        } else {
            tracing::warn!(node = %record.row.node, owner = %owner, identity, "central: refused a record for a node another identity owns");
            refused.push(Refused {
                line: record.line,
                error: format!(
                    "node \"{}\" posts as identity \"{owner}\"; \"{identity}\" may not write into its chain",
                    record.row.node
                ),
                content: record.row.record.clone(),
            });
        }
    }
    Ok(kept)
}

fn first_of_each_id(
    incoming: Vec<Incoming>,
    refused: &mut Vec<Refused>,
) -> (Vec<Incoming>, usize, u64) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut kept: Vec<Incoming> = Vec::with_capacity(incoming.len());
    let (mut duplicates, mut conflicts) = (0, 0);
    for record in incoming {
        match seen.get(&record.row.id) {
            None => {
                seen.insert(record.row.id.clone(), kept.len());
                kept.push(record);
            }
            Some(&first) => {
                let original = &kept[first].row;
                if original.record == record.row.record && original.input == record.row.input {
                    duplicates += 1;
                } else {
                    conflicts += 1;
                    refused.push(conflict(&record));
                }
            }
        }
    }
    (kept, duplicates, conflicts)
}

fn conflict(record: &Incoming) -> Refused {
    Refused {
        line: record.line,
        error: format!(
            "integrity alarm: record {} is already stored with different content; the stored record is kept",
            record.row.id
        ),
        content: record.row.record.clone(),
    }
}

fn chain_state(row: &ChainRow) -> ChainState {
    ChainState {
        first_seq: row.first_seq,
        last_seq: row.last_seq,
        checked_through: row.checked_through,
        checked_hash: row.checked_hash.clone(),
        verified_through: row.verified_through,
        gaps: serde_json::from_str(&row.gaps).unwrap_or_default(),
        breaks: serde_json::from_str::<Vec<Break>>(&row.breaks).unwrap_or_default(),
        signed_through: row.signed_through,
    }
}

/// A chain's state as stored: the inverse of [`chain_state`].
fn chain_row(node: &str, chain_id: &str, state: &ChainState, now: &str) -> ChainRow {
    ChainRow {
        node: node.to_owned(),
        chain_id: chain_id.to_owned(),
        first_seq: state.first_seq,
        last_seq: state.last_seq,
        checked_through: state.checked_through,
        checked_hash: state.checked_hash.clone(),
        verified_through: state.verified_through,
        gaps: serde_json::to_string(&state.gaps).unwrap_or_else(|_| "[]".into()),
        gap_count: state.gaps.len() as i64,
        breaks: serde_json::to_string(&state.breaks).unwrap_or_else(|_| "[]".into()),
        updated_at: now.to_owned(),
        signed_through: state.signed_through,
    }
}

/// Lock, walk and save every chain the new records belong to; the number
/// of new breaks.
///
/// A walk needs every stored record after the chain's checkpoint. Usually
/// those are exactly this batch's: when the chain's row says nothing
/// stored lies past the checkpoint (`last_seq <= checked_through`), the
/// walk takes the batch's records from memory and the store is not read
/// back. That holds because every transaction that stores records for a
/// chain walks it under the row's lock before it commits, and a walk sees
/// every committed record after the checkpoint (a walk cut at
/// [`WALK_LIMIT`] asks the store for the chain's highest seq instead):
/// `last_seq` covers every committed record. Records that arrived ahead of
/// a gap make `last_seq` larger, and then the chain is read from the store
/// as before.
async fn verify_chains(
    tx: &mut sqlx::AnyConnection,
    new: &[&Incoming],
    walk_limit: i64,
) -> Result<usize, StoreError> {
    let mut by_chain: BTreeMap<(&str, &str), Vec<&Incoming>> = BTreeMap::new();
    for r in new {
        by_chain
            .entry((r.row.node.as_str(), r.row.chain_id.as_str()))
            .or_default()
            .push(r);
    }
    let now = format_timestamp(SystemTime::now());
    let fresh_state = ChainState::new();
    let fresh: Vec<ChainRow> = by_chain
        .keys()
        .map(|(node, chain_id)| chain_row(node, chain_id, &fresh_state, &now))
        .collect();
    let locked = sql::lock_chains(tx, &fresh).await?;
    let locked: HashMap<(&str, &str), &ChainRow> = locked
        .iter()
        .map(|r| ((r.node.as_str(), r.chain_id.as_str()), r))
        .collect();
    let mut walks: Vec<ChainWalk> = Vec::with_capacity(by_chain.len());
    for ((node, chain_id), records) in &by_chain {
        let row = locked.get(&(*node, *chain_id)).ok_or_else(|| {
            StoreError::Query(sqlx::Error::Protocol(format!(
                "chain {node}/{chain_id} has no row after it was created"
            )))
        })?;
        let mut state = chain_state(row);
        let before = state.breaks.len();
        for r in records {
            if r.row.seq <= state.checked_through {
                state.duplicate_seq(r.row.seq);
            }
        }
        let from_batch = (state.last_seq <= state.checked_through)
            .then(|| batch_links(records, state.checked_through));
        walks.push(ChainWalk {
            node,
            chain_id,
            state,
            breaks_before: before,
            from_batch,
        });
    }
    let to_read: Vec<(&str, &str, i64)> = walks
        .iter()
        .filter(|w| w.from_batch.is_none())
        .map(|w| (w.node, w.chain_id, w.state.checked_through))
        .collect();
    let mut read = if to_read.is_empty() {
        Vec::new()
    } else {
        sql::chain_links(tx, &to_read, walk_limit).await?
    }
    .into_iter();
    let mut breaks = 0;
    let mut saved = Vec::with_capacity(walks.len());
    for walk in walks {
        let (node, chain_id, before, mut state) =
            (walk.node, walk.chain_id, walk.breaks_before, walk.state);
        let (links, cut) = match walk.from_batch {
            Some(links) => (links, false),
            None => {
                let stored = read.next().unwrap_or_default();
                let cut = i64::try_from(stored.len()).unwrap_or(i64::MAX) >= walk_limit;
                (stored.into_iter().map(stored_link).collect(), cut)
            }
        };
        state.advance(&links);
        if cut {
            // Records lie past what this walk read: `last_seq` must still
            // cover them, or the next batch would walk from memory alone.
            if let Some(highest) = sql::highest_seq(tx, node, chain_id).await? {
                state.last_seq = state.last_seq.max(highest);
            }
        }
        for b in &state.breaks[before..] {
            tracing::warn!(node, chain = chain_id, seq = b.seq, reason = %b.reason, "central: decision chain broken");
        }
        breaks += state.breaks.len() - before;
        saved.push(chain_row(node, chain_id, &state, &now));
    }
    sql::update_chains(tx, &saved).await?;
    Ok(breaks)
}

/// One chain a batch touches, on its way to being walked.
struct ChainWalk<'a> {
    node: &'a str,
    chain_id: &'a str,
    state: ChainState,
    /// Breaks it had before this batch (a seq already walked is a break
    /// found before the walk, and counts as new).
    breaks_before: usize,
    /// Its walk when this batch's records alone make it.
    from_batch: Option<Vec<chains::Link>>,
}

/// A link as the store gives it back.
fn stored_link((seq, _id, prev_hash, hash, hash_ok, sig_check): sql::StoredLink) -> chains::Link {
    chains::Link {
        seq,
        prev_hash,
        hash,
        hash_ok: hash_ok != 0,
        seal: Seal::from_stored(sig_check),
    }
}

/// A chain's walk from this batch's records alone: those after `after`, in
/// the order the store would give them (seq, then id).
fn batch_links(records: &[&Incoming], after: i64) -> Vec<chains::Link> {
    let mut after_checkpoint: Vec<&DecisionRow> = records
        .iter()
        .map(|r| &r.row)
        .filter(|row| row.seq > after)
        .collect();
    after_checkpoint.sort_unstable_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    after_checkpoint
        .into_iter()
        .map(|row| chains::Link {
            seq: row.seq,
            prev_hash: row.prev_hash.clone(),
            hash: row.hash.clone(),
            hash_ok: row.hash_ok,
            seal: row.seal,
        })
        .collect()
}

/// A stored record as JSON: the record, its input if read, its label if set.
fn record_json(row: &StoredRecord) -> Value {
    let mut record = match serde_json::from_str::<Value>(&row.record) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if let Some(input) = row
        .input
        .as_deref()
        .and_then(|i| serde_json::from_str(i).ok())
    {
        record.insert("input".into(), input);
    }
    if let Some(label) = &row.label {
        record.insert("label".into(), Value::String(label.clone()));
    }
    Value::Object(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{sample_record, Chain};

    fn metrics() -> DecisionMetrics {
        let counter = |name: &str| IntCounter::new(name, name).unwrap_or_else(|e| panic!("{e}"));
        DecisionMetrics {
            ingested: counter("ingested"),
            duplicates: counter("duplicates"),
            rejected: counter("rejected"),
            conflicts: counter("conflicts"),
            chain_breaks: counter("breaks"),
            chain_gaps: IntGauge::new("gaps", "gaps").unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// Walks cut at three records, with records stored past the cut that
    /// no walk has seen: the chain row must still know they are there, so
    /// that a later batch is not walked from memory alone (which would
    /// report the stored records as missing).
    #[tokio::test]
    async fn a_walk_cut_short_still_counts_the_records_past_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("d.db").display());
        let store = Store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let mut decisions = Decisions::new(store, metrics(), false, None);
        decisions.walk_limit = 3;
        let mut chain = Chain::fresh("c1".into());
        let lines: Vec<String> = (0..24)
            .map(|i| {
                let mut record = sample_record(&format!("r{i:02}"));
                String::from_utf8(chain.link(&mut record)).unwrap_or_default()
            })
            .collect();
        let post = |seqs: Vec<usize>| {
            let body: String = seqs.iter().map(|&s| format!("{}\n", lines[s])).collect();
            let (decisions, count) = (&decisions, seqs.len());
            async move {
                let source = Source::Posted {
                    identity: "sidecar",
                };
                let report = decisions.ingest(body.into_bytes(), source).await;
                let report = report.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(report.accepted, count, "{:?}", report.rejected);
            }
        };
        let chain_now = || async {
            let chains = decisions.chains().await.unwrap_or_else(|e| panic!("{e}"));
            chains[0].clone()
        };
        // 0 and 2..=9: a gap at 1. Then 10..=20 arrive while the gap is
        // open; the walk reads only 2, 3, 4 and never sees them.
        post(vec![0, 2, 3, 4, 5, 6, 7, 8, 9]).await;
        post((10..=20).collect()).await;
        // 1 fills the gap; each later batch walks three more.
        post(vec![1]).await;
        post(vec![21]).await;
        post(vec![22]).await;
        let now = chain_now().await;
        assert_eq!(now["verifiedThrough"], 9, "{now}");
        assert_eq!(now["lastSeq"], 22, "{now}");
        // Nothing stored past 9 may be taken for missing now.
        post(vec![23]).await;
        let now = chain_now().await;
        assert_eq!(
            (now["verifiedThrough"].clone(), now["status"].clone()),
            (json!(12), json!("ok")),
            "{now}"
        );
    }
}
