//! SQL for decision records, their chains and the quarantine.
//!
//! A batch is written with one multi-row `INSERT … ON CONFLICT DO NOTHING
//! RETURNING id` per 500 records (both stores understand it), so a resent
//! batch costs one statement and tells which ids were new. Filters are
//! bound parameters numbered as they are added; no value is spliced into
//! SQL text.

use super::StoreError;
use sqlx::{Any, AnyConnection, Row};

/// Rows per multi-row statement: 13 parameters each stays far below
/// SQLite's 32,766-parameter limit.
const ROWS_PER_STATEMENT: usize = 500;

/// Placeholder `n` (1-based) of a statement on this connection. SQLite gets
/// anonymous `?`: SQLite looks a named parameter up by a linear scan, so
/// thousands of `$N` in one multi-row statement cost quadratic time there
/// (60% of an ingest profile); PostgreSQL needs `$N`.
/// A statement's parameter placeholders: `?` on SQLite, `$n` on
/// PostgreSQL. Multi-row statements write theirs straight into the text
/// ([`Placeholders::push_row`]): a batch's INSERT has 14 per record, and
/// formatting each into a String of its own, then joining them, showed in
/// central's ingest profile.
#[derive(Clone, Copy)]
struct Placeholders {
    numbered: bool,
}

impl Placeholders {
    fn of(conn: &AnyConnection) -> Placeholders {
        Placeholders {
            numbered: !conn.backend_name().eq_ignore_ascii_case("sqlite"),
        }
    }

    /// Placeholder `n` (1-based).
    fn nth(self, n: usize) -> String {
        let mut text = String::new();
        self.push(&mut text, n);
        text
    }

    fn push(self, sql: &mut String, n: usize) {
        if self.numbered {
            sql.push('$');
            sql.push_str(itoa::Buffer::new().format(n));
        } else {
            sql.push('?');
        }
    }

    /// `p,…,p`: `width` placeholders from `first + 1`.
    fn push_list(self, sql: &mut String, first: usize, width: usize) {
        for k in 1..=width {
            if k > 1 {
                sql.push(',');
            }
            self.push(sql, first + k);
        }
    }

    /// `(p,…,p)`, as [`Placeholders::push_list`].
    fn push_row(self, sql: &mut String, first: usize, width: usize) {
        sql.push('(');
        self.push_list(sql, first, width);
        sql.push(')');
    }
}

/// The identity that owns `node`'s records: `identity` if nobody did yet.
pub(crate) async fn claim_node(
    conn: &mut AnyConnection,
    node: &str,
    identity: &str,
    at: &str,
) -> Result<String, StoreError> {
    sqlx::query(
        "INSERT INTO node_owners (node, identity, since) VALUES ($1, $2, $3) ON CONFLICT (node) DO NOTHING",
    )
    .bind(node)
    .bind(identity)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let (owner,): (String,) = sqlx::query_as("SELECT identity FROM node_owners WHERE node = $1")
        .bind(node)
        .fetch_one(conn)
        .await?;
    Ok(owner)
}

/// What central found of a record's checkpoint signature at ingest
/// (stored as `sig_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Seal {
    /// No `sig`, or central has no `--record-keys` to check it with.
    #[default]
    Unchecked = 0,
    /// Made by a trusted record key over the record's `hash`.
    Valid = 1,
    /// Altered, or by a key central does not trust: a chain break.
    Invalid = 2,
}

impl Seal {
    pub(crate) fn from_stored(value: i64) -> Seal {
        match value {
            1 => Seal::Valid,
            2 => Seal::Invalid,
            _ => Seal::Unchecked,
        }
    }
}

/// A record as stored.
#[derive(Debug, Clone)]
pub(crate) struct DecisionRow {
    pub id: String,
    pub node: String,
    pub chain_id: String,
    pub seq: i64,
    pub ts_us: i64,
    pub decision: String,
    pub policy_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub hash_ok: bool,
    /// Whether its `sig` verified (`--record-keys`).
    pub seal: Seal,
    /// Canonical JSON without `input`.
    pub record: String,
    pub input: Option<String>,
}

/// Insert records whose id is not stored yet; the ids that were new.
pub(crate) async fn insert_decisions(
    conn: &mut AnyConnection,
    rows: &[&DecisionRow],
    ingested_by: &str,
) -> Result<Vec<String>, StoreError> {
    let mut inserted = Vec::with_capacity(rows.len());
    let ph = Placeholders::of(conn);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO decisions (id, node, chain_id, seq, ts_us, decision, policy_id, prev_hash, hash, hash_ok, sig_check, record, input, label, ingested_by) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            // 13 values, the label NULL, the 14th.
            sql.push('(');
            ph.push_list(&mut sql, i * 14, 13);
            sql.push_str(",NULL,");
            ph.push(&mut sql, i * 14 + 14);
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let mut query = sqlx::query::<Any>(&sql);
        for row in chunk {
            query = query
                .bind(&row.id)
                .bind(&row.node)
                .bind(&row.chain_id)
                .bind(row.seq)
                .bind(row.ts_us)
                .bind(&row.decision)
                .bind(&row.policy_id)
                .bind(&row.prev_hash)
                .bind(&row.hash)
                .bind(i64::from(row.hash_ok))
                .bind(row.seal as i64)
                .bind(&row.record)
                .bind(&row.input)
                .bind(ingested_by);
        }
        for row in query.fetch_all(&mut *conn).await? {
            inserted.push(row.try_get::<String, _>(0)?);
        }
    }
    Ok(inserted)
}

/// `(policy_id, ts_us, decision_id)` rows for "decisions of policy P".
pub(crate) async fn insert_decision_policies(
    conn: &mut AnyConnection,
    rows: &[(String, i64, String)],
) -> Result<(), StoreError> {
    let ph = Placeholders::of(conn);
    for chunk in rows.chunks(ROWS_PER_STATEMENT * 2) {
        let mut sql =
            String::from("INSERT INTO decision_policies (policy_id, ts_us, decision_id) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            ph.push_row(&mut sql, i * 3, 3);
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        let mut query = sqlx::query::<Any>(&sql);
        for (policy, ts, id) in chunk {
            query = query.bind(policy).bind(*ts).bind(id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The stored `(id, record, input)` of these ids (to tell a resent record
/// from a different one with the same id).
pub(crate) async fn stored_contents(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    let ph = Placeholders::of(conn);
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from("SELECT id, record, input FROM decisions WHERE id IN ");
        ph.push_row(&mut sql, 0, chunk.len());
        let mut query = sqlx::query_as::<Any, (String, String, Option<String>)>(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// A chain's verification state as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ChainRow {
    pub node: String,
    pub chain_id: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub checked_through: i64,
    pub checked_hash: String,
    pub verified_through: i64,
    pub gaps: String,
    pub gap_count: i64,
    pub breaks: String,
    pub updated_at: String,
    pub signed_through: i64,
}

const CHAIN_COLUMNS: &str = "node, chain_id, first_seq, last_seq, checked_through, checked_hash, verified_through, gaps, gap_count, breaks, updated_at, signed_through";

/// Chains per statement when several are locked, walked or saved at once
/// (12 parameters per row: far below either store's limit).
const CHAINS_PER_STATEMENT: usize = 100;

/// Create the rows of chains that are new, then hold the row lock of every
/// chain in `fresh` until the transaction ends, so centrals sharing a
/// database verify one chain one batch at a time. Their stored state, in
/// no particular order.
///
/// A constant number of statements however many chains a batch touches: a
/// batch from the decision stream interleaves every node's records, and a
/// round trip per chain per step was most of its store work. Deadlocks
/// between two centrals are avoided by order: rows are created in the
/// order of `fresh` (the caller sorts it) and locked in the database's
/// `(node, chain_id)` order. PostgreSQL locks with `SELECT … FOR UPDATE`;
/// SQLite has one writer, which this transaction already is (it inserted
/// the batch's records).
pub(crate) async fn lock_chains(
    conn: &mut AnyConnection,
    fresh: &[ChainRow],
) -> Result<Vec<ChainRow>, StoreError> {
    // A SQLite transaction is the one writer already; PostgreSQL locks the
    // rows.
    let lock = !conn.backend_name().eq_ignore_ascii_case("sqlite");
    write_chains(conn, fresh, "DO NOTHING").await?;
    let keys: Vec<(&str, &str)> = fresh
        .iter()
        .map(|row| (row.node.as_str(), row.chain_id.as_str()))
        .collect();
    select_chains(conn, &keys, lock).await
}

/// The rows of the chains `keys` name (those that exist), without locks:
/// for readers that need a few chains, not every one.
pub(crate) async fn chains_of(
    conn: &mut AnyConnection,
    keys: &[(&str, &str)],
) -> Result<Vec<ChainRow>, StoreError> {
    select_chains(conn, keys, false).await
}

/// The rows of the chains `keys` name, in the database's `(node,
/// chain_id)` order per statement of [`CHAINS_PER_STATEMENT`] keys; with
/// `lock`, `FOR UPDATE`.
async fn select_chains(
    conn: &mut AnyConnection,
    keys: &[(&str, &str)],
    lock: bool,
) -> Result<Vec<ChainRow>, StoreError> {
    let ph = Placeholders::of(conn);
    let mut rows = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CHAINS_PER_STATEMENT) {
        let mut values = String::new();
        for i in 0..chunk.len() {
            if i > 0 {
                values.push(',');
            }
            ph.push_row(&mut values, i * 2, 2);
        }
        let select = format!(
            "SELECT {CHAIN_COLUMNS} FROM chains WHERE (node, chain_id) IN (VALUES {values}) ORDER BY node, chain_id{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let mut query = sqlx::query_as::<Any, ChainRow>(&select);
        for (node, chain_id) in chunk {
            query = query.bind(*node).bind(*chain_id);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// Save the state of chains this transaction locked ([`lock_chains`]): one
/// multi-row upsert per [`CHAINS_PER_STATEMENT`] chains.
pub(crate) async fn update_chains(
    conn: &mut AnyConnection,
    rows: &[ChainRow],
) -> Result<(), StoreError> {
    write_chains(
        conn,
        rows,
        "DO UPDATE SET first_seq = excluded.first_seq, last_seq = excluded.last_seq, checked_through = excluded.checked_through, checked_hash = excluded.checked_hash, verified_through = excluded.verified_through, gaps = excluded.gaps, gap_count = excluded.gap_count, breaks = excluded.breaks, updated_at = excluded.updated_at, signed_through = excluded.signed_through",
    )
    .await
}

/// Insert chain rows, `ON CONFLICT (node, chain_id) {on_conflict}`: one
/// multi-row statement per [`CHAINS_PER_STATEMENT`] rows.
async fn write_chains(
    conn: &mut AnyConnection,
    rows: &[ChainRow],
    on_conflict: &str,
) -> Result<(), StoreError> {
    let ph = Placeholders::of(conn);
    for chunk in rows.chunks(CHAINS_PER_STATEMENT) {
        let mut sql = format!("INSERT INTO chains ({CHAIN_COLUMNS}) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            ph.push_row(&mut sql, i * 12, 12);
        }
        sql.push_str(" ON CONFLICT (node, chain_id) ");
        sql.push_str(on_conflict);
        let mut query = sqlx::query::<Any>(&sql);
        for row in chunk {
            query = bind_chain(query, row);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A chain row's values in [`CHAIN_COLUMNS`] order.
fn bind_chain<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    row: &'q ChainRow,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&row.node)
        .bind(&row.chain_id)
        .bind(row.first_seq)
        .bind(row.last_seq)
        .bind(row.checked_through)
        .bind(&row.checked_hash)
        .bind(row.verified_through)
        .bind(&row.gaps)
        .bind(row.gap_count)
        .bind(&row.breaks)
        .bind(&row.updated_at)
        .bind(row.signed_through)
}

/// One link of a chain as stored: `(seq, id, prev_hash, hash, hash_ok,
/// sig_check)`.
pub(crate) type StoredLink = (i64, String, String, String, i64, i64);

/// For each `(node, chain_id, after)`, the links of that chain's records
/// after `after` in seq order (at most `limit` each), in the order asked:
/// one statement per [`CHAINS_PER_STATEMENT`] chains.
pub(crate) async fn chain_links(
    conn: &mut AnyConnection,
    chains: &[(&str, &str, i64)],
    limit: i64,
) -> Result<Vec<Vec<StoredLink>>, StoreError> {
    let ph = Placeholders::of(conn);
    let mut links: Vec<Vec<StoredLink>> = vec![Vec::new(); chains.len()];
    for (c, chunk) in chains.chunks(CHAINS_PER_STATEMENT).enumerate() {
        // Each branch is tagged with its chain's index (a number made
        // here, not a value from outside) so the rows can be told apart.
        let branches: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT CAST({i} AS BIGINT) AS k, seq, id, prev_hash, hash, hash_ok, sig_check FROM decisions WHERE node = {} AND chain_id = {} AND seq > {} ORDER BY seq, id LIMIT {}) AS l{i}",
                    ph.nth(i * 4 + 1),
                    ph.nth(i * 4 + 2),
                    ph.nth(i * 4 + 3),
                    ph.nth(i * 4 + 4)
                )
            })
            .collect();
        let sql = branches.join(" UNION ALL ");
        let mut query = sqlx::query_as::<Any, (i64, i64, String, String, String, i64, i64)>(&sql);
        for (node, chain_id, after) in chunk {
            query = query.bind(*node).bind(*chain_id).bind(*after).bind(limit);
        }
        for (k, seq, id, prev_hash, hash, hash_ok, sig_check) in query.fetch_all(&mut *conn).await?
        {
            let index = c * CHAINS_PER_STATEMENT + usize::try_from(k).unwrap_or(usize::MAX);
            if let Some(chain) = links.get_mut(index) {
                chain.push((seq, id, prev_hash, hash, hash_ok, sig_check));
            }
        }
    }
    // A union keeps no order between or within its branches by contract.
    for chain in &mut links {
        chain.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    }
    Ok(links)
}

pub(crate) async fn chains(conn: &mut AnyConnection) -> Result<Vec<ChainRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {CHAIN_COLUMNS} FROM chains ORDER BY node, chain_id"
    ))
    .fetch_all(conn)
    .await?)
}

/// The highest seq stored for a chain (`None`: nothing stored).
pub(crate) async fn highest_seq(
    conn: &mut AnyConnection,
    node: &str,
    chain_id: &str,
) -> Result<Option<i64>, StoreError> {
    let ph = Placeholders::of(conn);
    let (highest,): (Option<i64>,) = sqlx::query_as(&format!(
        "SELECT MAX(seq) FROM decisions WHERE node = {} AND chain_id = {}",
        ph.nth(1),
        ph.nth(2)
    ))
    .bind(node)
    .bind(chain_id)
    .fetch_one(conn)
    .await?;
    Ok(highest)
}

/// Open gaps across every chain.
pub(crate) async fn gap_total(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let (total,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(gap_count), 0) AS BIGINT) FROM chains")
            .fetch_one(conn)
            .await?;
    Ok(total)
}

/// A line that was not a valid record.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QuarantineRow {
    pub id: String,
    pub received_at: String,
    #[serde(skip)]
    pub received_us: i64,
    pub identity: String,
    pub line: i64,
    pub error: String,
    pub content: String,
}

pub(crate) async fn insert_quarantine(
    conn: &mut AnyConnection,
    rows: &[QuarantineRow],
) -> Result<(), StoreError> {
    // Multi-row, as the records are: a batch of many bad lines cost one
    // statement per line, and held the batch's transaction for minutes.
    let ph = Placeholders::of(conn);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO quarantine (id, received_at, received_us, identity, line, error, content) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            ph.push_row(&mut sql, i * 7, 7);
        }
        let mut query = sqlx::query::<Any>(&sql);
        for row in chunk {
            query = query
                .bind(&row.id)
                .bind(&row.received_at)
                .bind(row.received_us)
                .bind(&row.identity)
                .bind(row.line)
                .bind(&row.error)
                .bind(&row.content);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn quarantine(
    conn: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<QuarantineRow>, StoreError> {
    Ok(sqlx::query_as("SELECT id, received_at, received_us, identity, line, error, content FROM quarantine ORDER BY received_us DESC, id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// What a query selects; every field narrows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DecisionFilter {
    /// The deciding policy or one in `shadow`.
    pub policy: Option<String>,
    pub node: Option<String>,
    pub decision: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub id: Option<String>,
    /// Only records that carry their input (what simulations run on).
    pub with_input_only: bool,
}

/// A stored record's JSON parts.
#[derive(Debug, Clone)]
pub(crate) struct StoredRecord {
    pub ts_us: i64,
    pub id: String,
    pub record: String,
    pub input: Option<String>,
    pub label: Option<String>,
}

/// Bound parameters in the order a query text numbers them.
enum Param {
    Text(String),
    Int(i64),
}

/// `WHERE` conditions with their parameters, numbered as they are added.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Conditions {
    /// Add `template`, whose `?`s take `values` in order.
    fn add(&mut self, template: &str, values: Vec<Param>) {
        let mut clause = String::new();
        let mut values = values.into_iter();
        for (i, part) in template.split('?').enumerate() {
            if i > 0 {
                if let Some(value) = values.next() {
                    self.params.push(value);
                }
                clause.push_str(&format!("${}", self.params.len()));
            }
            clause.push_str(part);
        }
        self.clauses.push(clause);
    }

    fn of(filter: &DecisionFilter) -> Conditions {
        let mut c = Conditions::default();
        if let Some(policy) = &filter.policy {
            c.add(
                "d.id IN (SELECT decision_id FROM decision_policies WHERE policy_id = ?)",
                vec![Param::Text(policy.clone())],
            );
        }
        if let Some(node) = &filter.node {
            c.add("d.node = ?", vec![Param::Text(node.clone())]);
        }
        if let Some(decision) = &filter.decision {
            c.add("d.decision = ?", vec![Param::Text(decision.clone())]);
        }
        if let Some(since) = filter.since_us {
            c.add("d.ts_us >= ?", vec![Param::Int(since)]);
        }
        if let Some(until) = filter.until_us {
            c.add("d.ts_us <= ?", vec![Param::Int(until)]);
        }
        if let Some(id) = &filter.id {
            c.add("d.id = ?", vec![Param::Text(id.clone())]);
        }
        if filter.with_input_only {
            c.add("d.input IS NOT NULL", vec![]);
        }
        c
    }

    /// `SELECT … FROM decisions d WHERE …` then `tail` (with `?` for `tail_params`).
    async fn fetch(
        mut self,
        conn: &mut AnyConnection,
        with_input: bool,
        tail: &str,
        tail_params: Vec<Param>,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let input = if with_input { "d.input" } else { "NULL" };
        let mut sql = format!("SELECT d.ts_us, d.id, d.record, {input}, d.label FROM decisions d");
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        for (i, part) in tail.split('?').enumerate() {
            if i > 0 {
                self.params.push(Param::Int(0));
                sql.push_str(&format!("${}", self.params.len()));
            }
            sql.push_str(part);
        }
        let first_tail = self.params.len() - tail_params.len();
        self.params.truncate(first_tail);
        self.params.extend(tail_params);
        let mut query =
            sqlx::query_as::<Any, (i64, String, String, Option<String>, Option<String>)>(&sql);
        for param in self.params {
            query = match param {
                Param::Text(t) => query.bind(t),
                Param::Int(i) => query.bind(i),
            };
        }
        Ok(query
            .fetch_all(conn)
            .await?
            .into_iter()
            .map(|(ts_us, id, record, input, label)| StoredRecord {
                ts_us,
                id,
                record,
                input,
                label,
            })
            .collect())
    }
}

/// Newest first.
pub(crate) async fn newest_decisions(
    conn: &mut AnyConnection,
    filter: &DecisionFilter,
    with_input: bool,
    limit: i64,
) -> Result<Vec<StoredRecord>, StoreError> {
    Conditions::of(filter)
        .fetch(
            conn,
            with_input,
            " ORDER BY d.ts_us DESC, d.id DESC LIMIT ?",
            vec![Param::Int(limit)],
        )
        .await
}

/// Oldest first, after `(ts_us, id)` (keyset paging for export).
pub(crate) async fn decisions_after(
    conn: &mut AnyConnection,
    filter: &DecisionFilter,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<StoredRecord>, StoreError> {
    let mut conditions = Conditions::of(filter);
    if let Some((ts, id)) = after {
        conditions.add(
            "(d.ts_us > ? OR (d.ts_us = ? AND d.id > ?))",
            vec![Param::Int(ts), Param::Int(ts), Param::Text(id)],
        );
    }
    conditions
        .fetch(
            conn,
            true,
            " ORDER BY d.ts_us, d.id LIMIT ?",
            vec![Param::Int(limit)],
        )
        .await
}

/// Delete up to `batch` records older than `cutoff_us`; how many went.
pub(crate) async fn prune_decisions(
    conn: &mut AnyConnection,
    cutoff_us: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM decisions WHERE id IN (SELECT id FROM decisions WHERE ts_us < $1 ORDER BY ts_us LIMIT $2)",
    )
    .bind(cutoff_us)
    .bind(batch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Delete policy index rows and quarantined lines older than `cutoff_us`,
/// and the labels of decisions no longer stored.
pub(crate) async fn prune_indexes(
    conn: &mut AnyConnection,
    cutoff_us: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM decision_policies WHERE ts_us < $1")
        .bind(cutoff_us)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM quarantine WHERE received_us < $1")
        .bind(cutoff_us)
        .execute(&mut *conn)
        .await?;
    // Labels go with their decision (few rows: one per feedback given).
    sqlx::query("DELETE FROM decision_labels WHERE decision_id NOT IN (SELECT id FROM decisions)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
