//! SQL for the fleet: which revision each sidecar holds.

use super::StoreError;
use sqlx::AnyConnection;

/// One sidecar's latest pull of one bundle.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FleetRow {
    pub identity: String,
    pub node: String,
    pub bundle: String,
    pub revision: i64,
    pub last_seen: String,
}

/// Remember (or update) what a sidecar holds.
pub(crate) async fn record_pull(
    conn: &mut AnyConnection,
    row: &FleetRow,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO fleet (identity, node, bundle, revision, last_seen) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (identity, node, bundle) DO UPDATE SET revision = excluded.revision, last_seen = excluded.last_seen")
        .bind(&row.identity)
        .bind(&row.node)
        .bind(&row.bundle)
        .bind(row.revision)
        .bind(&row.last_seen)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn fleet(conn: &mut AnyConnection) -> Result<Vec<FleetRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT identity, node, bundle, revision, last_seen FROM fleet ORDER BY bundle, identity, node",
    )
    .fetch_all(conn)
    .await?)
}
