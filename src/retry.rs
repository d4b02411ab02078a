//! Retrying calls to services outside the process (the bundle registry, the
//! audit receiver): which failures are worth retrying, how long to wait, and
//! how loudly to say so.
//!
//! Modelled on Vector's `RetryLogic::is_retriable_error`: the caller's error
//! type says whether trying the same thing again can succeed
//! ([`Retriable`]). A retriable failure waits a capped exponential backoff
//! with jitter; a permanent one is reported at once so the caller can set
//! the work aside (a refused audit batch) instead of repeating it forever.
//! Warnings are throttled to the first failure and every 20th after it, so
//! an outage of hours costs a few log lines, not one per attempt.

use std::fmt::Display;
use std::time::Duration;

/// First delay; it doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A warning every this many consecutive failures (and on the first).
const LOG_EVERY: u32 = 20;

/// Whether an error may go away if the same call is repeated.
pub(crate) trait Retriable: Display {
    fn is_retriable(&self) -> bool;
}

/// Whether an HTTP status from a peer is worth retrying: server errors,
/// request timeout (408) and too many requests (429). Any other 4xx says the
/// request itself is wrong and will be refused again.
pub(crate) fn status_is_retriable(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Repeating the call cannot succeed.
    GiveUp,
}

/// Consecutive-failure state of one retried activity.
#[derive(Debug)]
pub(crate) struct Retry {
    what: &'static str,
    attempt: u32,
    /// Permanent refusals so far (logged like attempts: first and every 20th).
    refusals: u32,
}

impl Retry {
    /// `what` names the activity in log lines, e.g. "shipping decision records".
    pub(crate) fn new(what: &'static str) -> Retry {
        Retry {
            what,
            attempt: 0,
            refusals: 0,
        }
    }

    /// Consecutive failures so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The call succeeded: the next failure starts from the shortest delay.
    pub(crate) fn succeeded(&mut self) {
        if self.attempt >= LOG_EVERY {
            tracing::info!(what = self.what, failures = self.attempt, "recovered");
        }
        self.attempt = 0;
    }

    /// The call failed with `error`: log (throttled) and say what next.
    pub(crate) fn failed(&mut self, error: &impl Retriable) -> Next {
        if !error.is_retriable() {
            self.refusals = self.refusals.saturating_add(1);
            if self.refusals == 1 || self.refusals % LOG_EVERY == 0 {
                tracing::error!(what = self.what, error = %error, refusals = self.refusals, "refused; not retrying the same request");
            }
            return Next::GiveUp;
        }
        self.attempt = self.attempt.saturating_add(1);
        if self.attempt == 1 || self.attempt % LOG_EVERY == 0 {
            tracing::warn!(what = self.what, error = %error, attempt = self.attempt, "failed; retrying");
        }
        Next::RetryAfter(backoff(self.attempt, crate::ids::random_u64()))
    }
}

/// Delay before retry `attempt` (1-based): exponential from 100 ms, capped
/// at 10 s, with "equal jitter" (half fixed, half random) so many sidecars
/// do not retry in step.
pub(crate) fn backoff(attempt: u32, random: u64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let half = ceiling / 2;
    let jitter_ms = half.as_millis() as u64;
    half + Duration::from_millis(if jitter_ms == 0 {
        0
    } else {
        random % (jitter_ms + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failure(bool);

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.0 { "transient" } else { "permanent" })
        }
    }

    impl Retriable for Failure {
        fn is_retriable(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert!(backoff(1, 0) >= Duration::from_millis(50));
        assert!(backoff(1, u64::MAX) <= Duration::from_millis(100));
        assert!(backoff(4, 0) >= Duration::from_millis(400));
        for attempt in 1..40 {
            assert!(backoff(attempt, u64::MAX) <= BACKOFF_CAP);
        }
        assert_ne!(backoff(8, 1), backoff(8, 7777));
    }

    #[test]
    fn only_retriable_failures_are_retried_and_success_resets() {
        let mut retry = Retry::new("test");
        assert!(matches!(retry.failed(&Failure(true)), Next::RetryAfter(_)));
        assert!(matches!(retry.failed(&Failure(true)), Next::RetryAfter(_)));
        assert_eq!(retry.attempts(), 2);
        assert_eq!(retry.failed(&Failure(false)), Next::GiveUp);
        assert_eq!(retry.attempts(), 2, "a permanent failure is not an attempt");
        retry.succeeded();
        assert_eq!(retry.attempts(), 0);
    }

    #[test]
    fn http_statuses_are_classified() {
        for retried in [500, 502, 503, 504, 408, 429] {
            assert!(status_is_retriable(retried), "{retried}");
        }
        for refused in [400, 401, 403, 404, 409, 413, 415, 422] {
            assert!(!status_is_retriable(refused), "{refused}");
        }
    }
}
