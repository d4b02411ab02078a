//! Hooks for the benchmarks: for `bench/ingest.rs`, the same rows inserted
//! "raw" by the same parse and store code as ingest, without the duplicate
//! check, the policy index or chain verification, so the benchmark can
//! show what those cost; for `bench/evaluator.rs`, ingest's line parser
//! alone. Not part of the product's interface.

use super::decisions::parse;
use super::store::{decisions as sql, Store};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Insert every NDJSON batch into a fresh store at `db` from `concurrency`
/// tasks, one transaction per batch; records inserted and the time taken.
pub fn raw_insert_rate(
    db: &str,
    batches: Vec<String>,
    concurrency: usize,
) -> Result<(usize, Duration), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let store = Store::open(db).await.map_err(|e| e.to_string())?;
        let queue = Arc::new(Mutex::new(batches));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (store, queue) = (store.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                let mut inserted = 0;
                loop {
                    let next = queue.lock().map_err(|e| e.to_string())?.pop();
                    let Some(text) = next else {
                        return Ok::<usize, String>(inserted);
                    };
                    let (records, _) = parse::parse_batch(text.as_bytes(), None);
                    let rows: Vec<&sql::DecisionRow> = records.iter().map(|r| &r.row).collect();
                    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
                    inserted += sql::insert_decisions(&mut tx, &rows, "bench")
                        .await
                        .map_err(|e| e.to_string())?
                        .len();
                    tx.commit().await.map_err(|e| e.to_string())?;
                }
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.map_err(|e| e.to_string())??;
        }
        Ok((total, started.elapsed()))
    })
}

/// Parse an NDJSON batch as ingest does (each line a record, its hash
/// checked, its input and record text made ready to store): the records
/// accepted.
pub fn parse_records(body: &[u8]) -> usize {
    parse::parse_batch(body, None).0.len()
}
