//! The fleet: per sidecar (client identity and node name), the bundle
//! revision it holds and when it was last seen, from its bundle pulls.
//!
//! A pull's `If-None-Match` names the revision the sidecar holds (one that
//! refused a newer revision keeps naming the old one), recorded when the
//! pull arrives: one upsert per poll. A pull without one (a sidecar's first)
//! is recorded too, holding nothing yet ([`NONE_HELD`]).

use super::registry::{revision_name, Registry};
use super::store::fleet::{self as sql, FleetRow};
use super::store::{Store, StoreError};
use crate::timestamp::format_timestamp;
use prometheus::IntGaugeVec;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::SystemTime;

/// The revision recorded for a sidecar that holds none of the bundle yet
/// (revisions count from 1); shown as `"revision": null`, never current.
pub(crate) const NONE_HELD: i64 = 0;

pub(crate) struct Fleet {
    store: Store,
    /// `sentinel_central_fleet_sidecars{current}`.
    gauge: IntGaugeVec,
}

impl Fleet {
    pub(crate) fn new(store: Store, gauge: IntGaugeVec) -> Fleet {
        Fleet { store, gauge }
    }

    /// `identity` on `node` holds `revision` of `bundle` as of now.
    pub(crate) async fn saw(
        &self,
        identity: &str,
        node: &str,
        bundle: &str,
        revision: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.store.connection().await?;
        sql::record_pull(
            &mut conn,
            &FleetRow {
                identity: identity.to_owned(),
                node: node.to_owned(),
                bundle: bundle.to_owned(),
                revision,
                last_seen: format_timestamp(SystemTime::now()),
            },
        )
        .await
    }

    /// Every sidecar with what it holds against the newest revision; the
    /// gauge follows.
    pub(crate) async fn list(&self, registry: &Registry) -> Result<Vec<Value>, StoreError> {
        let rows = {
            let mut conn = self.store.connection().await?;
            sql::fleet(&mut conn).await?
        };
        let mut newest: HashMap<String, Option<i64>> = HashMap::new();
        for row in &rows {
            if !newest.contains_key(&row.bundle) {
                let current = registry
                    .current(&row.bundle)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.revision);
                newest.insert(row.bundle.clone(), current);
            }
        }
        let (mut current_count, mut behind_count) = (0, 0);
        let sidecars = rows
            .iter()
            .map(|row| {
                let newest = newest.get(&row.bundle).copied().flatten();
                let current = newest == Some(row.revision);
                if current {
                    current_count += 1;
                } else {
                    behind_count += 1;
                }
                json!({
                    "identity": row.identity,
                    "node": row.node,
                    "bundle": row.bundle,
                    "revision": (row.revision != NONE_HELD).then(|| revision_name(row.revision)),
                    "newest": newest.map(revision_name),
                    "lastSeen": row.last_seen,
                    "current": current,
                })
            })
            .collect();
        self.gauge.with_label_values(&["true"]).set(current_count);
        self.gauge.with_label_values(&["false"]).set(behind_count);
        Ok(sidecars)
    }
}
