//! Central's store: SQLite (embedded default) or PostgreSQL (HA) through
//! sqlx's `Any` driver, one schema, migrations run at start.
//!
//! Every statement uses bound `$N` parameters (both drivers accept them);
//! nothing is spliced into SQL text. Functions take a connection so callers
//! compose them inside one transaction.

pub(crate) mod decisions;
pub(crate) mod fleet;
pub(crate) mod rollout;

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::MigrateDatabase;
use sqlx::AnyConnection;
use sqlx::{Any, AnyPool};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/central/migrations");

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("store {url}: {message}")]
    Open { url: String, message: String },
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
}

impl StoreError {
    /// A write lost a race with another writer (another central on the same
    /// PostgreSQL): the caller may retry.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Query(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub(crate) type Tx = sqlx::Transaction<'static, Any>;

#[derive(Clone)]
pub(crate) struct Store {
    pool: AnyPool,
}

impl Store {
    /// Connect (creating an SQLite file if needed) and migrate.
    pub(crate) async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let open_err = |message: String| StoreError::Open {
            url: crate::secrets::redact_url(url),
            message,
        };
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(open_err(
                "unsupported store; use sqlite://FILE or postgres://…".into(),
            ));
        }
        if sqlite
            && !Any::database_exists(url)
                .await
                .map_err(|e| open_err(e.to_string()))?
        {
            Any::create_database(url)
                .await
                .map_err(|e| open_err(e.to_string()))?;
        }
        let options = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(10));
        let options = if sqlite {
            // WAL: long-poll reads never wait for a publishing write.
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    // WAL with synchronous=NORMAL: a crash of central loses
                    // nothing committed, a power cut at most the last
                    // transactions (sidecars re-send what was not
                    // acknowledged); commits no longer wait for an fsync.
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA cache_size = -65536")
                        .execute(&mut *conn)
                        .await?;
                    // Checkpoint the WAL every ~32 MiB instead of 4 MiB:
                    // fewer, larger copies into the database file.
                    sqlx::query("PRAGMA wal_autocheckpoint = 8192")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let describe = |e: sqlx::Error| {
            let message = e.to_string();
            // rustls names the failure; say what it means for the URL.
            let hint = if message.contains("UnknownIssuer") {
                " (the server's certificate is not issued by the CA in sslrootcert)"
            } else if message.contains("NotValidForName") {
                " (the server's certificate does not name the host in the URL; verify-full checks it)"
            } else {
                ""
            };
            open_err(format!("{message}{hint}"))
        };
        // One connection and one read first: a pool retries until its
        // timeout, logging each failure, and then says only "pool timed
        // out"; a single attempt names the cause at once (connection
        // refused, authentication failed, file is not a database).
        {
            use sqlx::Connection as _;
            let mut probe = sqlx::AnyConnection::connect(url).await.map_err(describe)?;
            let read = if sqlite {
                "PRAGMA schema_version"
            } else {
                "SELECT 1"
            };
            sqlx::query(read)
                .execute(&mut probe)
                .await
                .map_err(describe)?;
            let _ = probe.close().await;
        }
        let pool = options.connect(url).await.map_err(describe)?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    pub(crate) async fn connection(&self) -> Result<sqlx::pool::PoolConnection<Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BundleRow {
    pub name: String,
    pub default_decision: String,
    pub created_by: String,
    pub created_at: String,
    pub updated_by: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyRow {
    pub id: String,
    pub bundle: String,
    pub latest_version: i64,
    pub created_by: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionRow {
    #[serde(skip)]
    pub policy_id: String,
    pub version: i64,
    /// The policy document as stored (JSON text).
    #[serde(skip)]
    pub document: String,
    pub state: String,
    pub canary_percent: f64,
    pub created_by: String,
    pub created_at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransitionRow {
    #[serde(skip)]
    pub policy_id: String,
    pub seq: i64,
    pub version: i64,
    #[serde(rename = "from")]
    pub from_state: String,
    #[serde(rename = "to")]
    pub to_state: String,
    pub canary_percent: f64,
    pub reason: String,
    pub edited_by: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApprovalRow {
    #[serde(skip)]
    pub policy_id: String,
    pub version: i64,
    pub approver: String,
    #[serde(skip)]
    pub signature: String,
    /// The certificate identity that submitted the signature.
    pub identity: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevisionMeta {
    pub bundle: String,
    pub revision: i64,
    pub content_digest: String,
    pub published_by: String,
    pub reason: String,
    pub at: String,
}

pub(crate) async fn bundle(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<BundleRow>, StoreError> {
    Ok(sqlx::query_as("SELECT name, default_decision, created_by, created_at, updated_by, updated_at FROM bundles WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?)
}

pub(crate) async fn insert_bundle(
    conn: &mut AnyConnection,
    row: &BundleRow,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO bundles (name, default_decision, created_by, created_at, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&row.name)
        .bind(&row.default_decision)
        .bind(&row.created_by)
        .bind(&row.created_at)
        .bind(&row.updated_by)
        .bind(&row.updated_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Take the bundle's row lock until the transaction ends (a no-op update:
/// portable, unlike `SELECT … FOR UPDATE`). Nothing to lock for a bundle
/// that does not exist yet; its primary key settles that race.
pub(crate) async fn lock_bundle(conn: &mut AnyConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE bundles SET updated_at = updated_at WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn update_bundle(
    conn: &mut AnyConnection,
    name: &str,
    default_decision: &str,
    by: &str,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE bundles SET default_decision = $1, updated_by = $2, updated_at = $3 WHERE name = $4",
    )
    .bind(default_decision)
    .bind(by)
    .bind(at)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn policy(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<PolicyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, bundle, latest_version, created_by, created_at FROM policies WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub(crate) async fn insert_policy(
    conn: &mut AnyConnection,
    row: &PolicyRow,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO policies (id, bundle, latest_version, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&row.id)
        .bind(&row.bundle)
        .bind(row.latest_version)
        .bind(&row.created_by)
        .bind(&row.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn set_latest_version(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE policies SET latest_version = $1 WHERE id = $2")
        .bind(version)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

const VERSION_COLUMNS: &str =
    "policy_id, version, document, state, canary_percent, created_by, created_at, reason";

pub(crate) async fn insert_version(
    conn: &mut AnyConnection,
    row: &VersionRow,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO policy_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&row.policy_id)
    .bind(row.version)
    .bind(&row.document)
    .bind(&row.state)
    .bind(row.canary_percent)
    .bind(&row.created_by)
    .bind(&row.created_at)
    .bind(&row.reason)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn version(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
) -> Result<Option<VersionRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM policy_versions WHERE policy_id = $1 AND version = $2"
    ))
    .bind(id)
    .bind(version)
    .fetch_optional(conn)
    .await?)
}

pub(crate) async fn versions(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<VersionRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM policy_versions WHERE policy_id = $1 ORDER BY version"
    ))
    .bind(id)
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn set_version_state(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
    state: &str,
    canary_percent: f64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE policy_versions SET state = $1, canary_percent = $2 WHERE policy_id = $3 AND version = $4")
        .bind(state)
        .bind(canary_percent)
        .bind(id)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every bundle, by name.
pub(crate) async fn bundles(conn: &mut AnyConnection) -> Result<Vec<BundleRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT name, default_decision, created_by, created_at, updated_by, updated_at FROM bundles ORDER BY name",
    )
    .fetch_all(conn)
    .await?)
}

/// The latest version of every policy in `bundle`, in id order.
pub(crate) async fn latest_versions(
    conn: &mut AnyConnection,
    bundle: &str,
) -> Result<Vec<VersionRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT v.policy_id, v.version, v.document, v.state, v.canary_percent, v.created_by, v.created_at, v.reason \
         FROM policy_versions v JOIN policies p ON p.id = v.policy_id AND p.latest_version = v.version \
         WHERE p.bundle = $1 ORDER BY v.policy_id",
    )
    .bind(bundle)
    .fetch_all(conn)
    .await?)
}

/// Versions sidecars evaluate (simulating, canary, active), in id order.
/// The lifecycle keeps at most one per policy.
pub(crate) async fn live_versions(
    conn: &mut AnyConnection,
    bundle: &str,
) -> Result<Vec<VersionRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT v.policy_id, v.version, v.document, v.state, v.canary_percent, v.created_by, v.created_at, v.reason \
         FROM policy_versions v JOIN policies p ON p.id = v.policy_id \
         WHERE p.bundle = $1 AND v.state IN ('simulating', 'canary', 'active') \
         ORDER BY v.policy_id, v.version",
    )
    .bind(bundle)
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn insert_transition(
    conn: &mut AnyConnection,
    row: &TransitionRow,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO transitions (policy_id, seq, version, from_state, to_state, canary_percent, reason, edited_by, at) \
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE policy_id = $1), $2, $3, $4, $5, $6, $7, $8)")
        .bind(&row.policy_id)
        .bind(row.version)
        .bind(&row.from_state)
        .bind(&row.to_state)
        .bind(row.canary_percent)
        .bind(&row.reason)
        .bind(&row.edited_by)
        .bind(&row.at)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn transitions(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<TransitionRow>, StoreError> {
    Ok(sqlx::query_as("SELECT policy_id, seq, version, from_state, to_state, canary_percent, reason, edited_by, at FROM transitions WHERE policy_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(conn)
        .await?)
}

pub(crate) async fn insert_approval(
    conn: &mut AnyConnection,
    row: &ApprovalRow,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO approvals (policy_id, version, approver, signature, identity, at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&row.policy_id)
        .bind(row.version)
        .bind(&row.approver)
        .bind(&row.signature)
        .bind(&row.identity)
        .bind(&row.at)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn approvals(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<ApprovalRow>, StoreError> {
    Ok(sqlx::query_as("SELECT policy_id, version, approver, signature, identity, at FROM approvals WHERE policy_id = $1 ORDER BY version, at, approver")
        .bind(id)
        .fetch_all(conn)
        .await?)
}

pub(crate) async fn latest_revision(
    conn: &mut AnyConnection,
    bundle: &str,
) -> Result<Option<RevisionMeta>, StoreError> {
    Ok(sqlx::query_as("SELECT bundle, revision, content_digest, published_by, reason, at FROM revisions WHERE bundle = $1 ORDER BY revision DESC LIMIT 1")
        .bind(bundle)
        .fetch_optional(conn)
        .await?)
}

/// The base64 archive of one revision.
pub(crate) async fn revision_archive(
    conn: &mut AnyConnection,
    bundle: &str,
    revision: i64,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT archive FROM revisions WHERE bundle = $1 AND revision = $2")
            .bind(bundle)
            .bind(revision)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(archive,)| archive))
}

pub(crate) async fn insert_revision(
    conn: &mut AnyConnection,
    meta: &RevisionMeta,
    archive_b64: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO revisions (bundle, revision, content_digest, archive, published_by, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&meta.bundle)
        .bind(meta.revision)
        .bind(&meta.content_digest)
        .bind(archive_b64)
        .bind(&meta.published_by)
        .bind(&meta.reason)
        .bind(&meta.at)
        .execute(conn)
        .await?;
    Ok(())
}
