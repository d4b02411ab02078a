//! Decision ids: UUIDv7 (time-ordered) without a system call per id.
//!
//! The 48-bit millisecond timestamp comes from the clock; the 74 random bits
//! come from a per-process random seed mixed with a counter through
//! splitmix64, a bijection, so ids never repeat within a process and differ
//! across processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

static SEED: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A pseudo-random number for jitter (not for secrets).
pub(crate) fn random_u64() -> u64 {
    let seed = *SEED.get_or_init(|| Uuid::new_v4().as_u64_pair().0);
    splitmix64(seed.rotate_left(17) ^ COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A new time-ordered id for a decision taken at `at`.
pub fn decision_id(at: SystemTime) -> Uuid {
    let seed = *SEED.get_or_init(|| Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = splitmix64(seed ^ n);
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&mixed.to_be_bytes());
    random[8..].copy_from_slice(&(seed as u16).to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_unique_and_time_ordered() {
        let now = SystemTime::now();
        let ids: Vec<Uuid> = (0..10_000).map(|_| decision_id(now)).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let later = decision_id(now + std::time::Duration::from_millis(2));
        assert!(ids.iter().all(|id| id < &later));
    }
}
