//! SQL for safe rollout: feedback labels, the canary policies the guard
//! watches, their deny counts per window, and the guard's leader lock.

use super::StoreError;
use serde::Serialize;
use sqlx::AnyConnection;

/// One label given to a stored decision.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelRow {
    pub label: String,
    pub note: String,
    #[serde(rename = "by")]
    pub labelled_by: String,
    pub at: String,
}

/// Label decision `id`; false when no such decision is stored.
pub(crate) async fn insert_label(
    conn: &mut AnyConnection,
    id: &str,
    row: &LabelRow,
) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE decisions SET label = $1 WHERE id = $2")
        .bind(&row.label)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO decision_labels (decision_id, seq, label, note, labelled_by, at) \
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM decision_labels WHERE decision_id = $1), $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&row.label)
    .bind(&row.note)
    .bind(&row.labelled_by)
    .bind(&row.at)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Every label of decision `id`, oldest first.
pub(crate) async fn labels(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<LabelRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT label, note, labelled_by, at FROM decision_labels WHERE decision_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(conn)
    .await?)
}

/// A policy version in the canary state (the newest version, or an older
/// one still enforced while a newer one is drafted).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CanaryRow {
    pub policy_id: String,
    pub bundle: String,
    pub version: i64,
    pub latest_version: i64,
    pub canary_percent: f64,
    pub document: String,
}

pub(crate) async fn canaries(conn: &mut AnyConnection) -> Result<Vec<CanaryRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT v.policy_id, p.bundle, v.version, p.latest_version, v.canary_percent, v.document \
         FROM policies p JOIN policy_versions v ON v.policy_id = p.id \
         WHERE v.state = 'canary' ORDER BY v.policy_id, v.version",
    )
    .fetch_all(conn)
    .await?)
}

/// A transition of a policy to `canary` (entering it, or a new percent).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CanaryStart {
    pub at: String,
    pub edited_by: String,
    pub reason: String,
}

/// The newest `count` transitions of `version` of `policy` to `canary`,
/// newest first: the first is when the running canary started.
pub(crate) async fn canary_starts(
    conn: &mut AnyConnection,
    policy: &str,
    version: i64,
    count: i64,
) -> Result<Vec<CanaryStart>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at, edited_by, reason FROM transitions \
         WHERE policy_id = $1 AND version = $2 AND to_state = 'canary' ORDER BY seq DESC LIMIT $3",
    )
    .bind(policy)
    .bind(version)
    .bind(count)
    .fetch_all(conn)
    .await?)
}

/// Per window since `start_us` (windows of `window_us`, numbered from 0):
/// the stored denies `policy` decided and how many are labelled
/// false positives. Windows without denies are absent.
pub(crate) async fn deny_windows(
    conn: &mut AnyConnection,
    policy: &str,
    start_us: i64,
    window_us: i64,
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    // decision_policies is keyed (policy_id, ts_us, …): the range scan
    // reads only this policy's records since the canary started.
    Ok(sqlx::query_as(
        "SELECT (dp.ts_us - $2) / $3 AS w, COUNT(*) AS denies, \
                SUM(CASE WHEN d.label = 'false_positive' THEN 1 ELSE 0 END) AS false_positives \
         FROM decision_policies dp JOIN decisions d ON d.id = dp.decision_id \
         WHERE dp.policy_id = $1 AND dp.ts_us >= $2 AND d.policy_id = $1 AND d.decision = 'deny' \
         GROUP BY w ORDER BY w",
    )
    .bind(policy)
    .bind(start_us)
    .bind(window_us)
    .fetch_all(conn)
    .await?)
}

/// Take PostgreSQL's session advisory lock `key` if no other session holds
/// it (SQLite: one process owns the file, so always true).
pub(crate) async fn try_lock(conn: &mut AnyConnection, key: i64) -> Result<bool, StoreError> {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        return Ok(true);
    }
    let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await?;
    Ok(taken)
}

pub(crate) async fn unlock(conn: &mut AnyConnection, key: i64) -> Result<(), StoreError> {
    if !conn.backend_name().eq_ignore_ascii_case("sqlite") {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(conn)
            .await?;
    }
    Ok(())
}
