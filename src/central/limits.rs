//! Per-identity rate limits (`--rate-limit`, `--ingest-rate-limit`): a
//! token bucket per client identity and budget, refilled continuously,
//! holding up to twice the per-second rate (the burst).
//!
//! Two budgets, so a fleet's record shipping and bundle polls never starve
//! (or are starved by) people and pipelines calling the API. The map holds
//! one entry per identity that called, bounded by the RBAC file's
//! identities (unknown ones are refused before they are counted here).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which budget a call spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    /// The API for people and pipelines (`--rate-limit`).
    Api,
    /// Record batches and bundle polls from sidecars (`--ingest-rate-limit`).
    Ingest,
}

/// Requests per second per identity for each budget; 0 turns a limit off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimits {
    pub api_per_second: u32,
    pub ingest_per_second: u32,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub(crate) struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Budget), Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spend one token of `identity`'s `budget`, or say how long until the
    /// next one.
    pub(crate) fn check(&self, identity: &str, budget: Budget) -> Result<(), Duration> {
        self.check_at(identity, budget, Instant::now())
    }

    fn check_at(&self, identity: &str, budget: Budget, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(match budget {
            Budget::Api => self.limits.api_per_second,
            Budget::Ingest => self.limits.ingest_per_second,
        });
        if rate == 0.0 {
            return Ok(());
        }
        let burst = rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry((identity.to_owned(), budget))
            .or_insert(Bucket {
                tokens: burst,
                refilled: now,
            });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// A size setting: `16MiB`, `512KiB`, `1MB`, `2048` (bytes).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 16MiB, 512KiB, 1048576)"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size above 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_then_one_per_interval() {
        let limiter = RateLimiter::new(RateLimits {
            api_per_second: 5,
            ingest_per_second: 0,
        });
        let start = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check_at("a", Budget::Api, start).is_ok());
        }
        let wait = limiter
            .check_at("a", Budget::Api, start)
            .expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Another identity and the other budget are not affected.
        assert!(limiter.check_at("b", Budget::Api, start).is_ok());
        assert!(limiter.check_at("a", Budget::Ingest, start).is_ok());
        // A token comes back after 1/rate seconds.
        assert!(limiter
            .check_at("a", Budget::Api, start + Duration::from_millis(210))
            .is_ok());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
