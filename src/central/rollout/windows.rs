//! The canary guard's rules, free of I/O (docs/rollout.md): windows, bad
//! windows, when to pause and when to promote.
//!
//! Time since a canary started (entered canary or changed its percent) is
//! cut into windows of `--canary-window`, numbered from 0. A window's
//! denies are the stored records in it that the policy decided as deny; its
//! false positives those labelled `false_positive`. The counts come from
//! the store on every look, so a label that arrives late counts for the
//! window of its record.

use crate::policy::Severity;
use std::time::Duration;

/// The guard's settings (`central --canary-*`, `--promote-after`).
#[derive(Debug, Clone)]
pub(crate) struct GuardSettings {
    pub window: Duration,
    pub max_fp_rate: f64,
    pub min_denies: u64,
    pub bad_windows: u32,
    /// `None`: auto-promotion off.
    pub promote_after: Option<Duration>,
}

/// One window's counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub index: i64,
    pub start_us: i64,
    pub end_us: i64,
    pub denies: u64,
    pub false_positives: u64,
    /// Whether the window has ended.
    pub complete: bool,
}

impl Window {
    /// False positives / denies (none without denies).
    pub(crate) fn rate(&self) -> Option<f64> {
        (self.denies > 0).then(|| self.false_positives as f64 / self.denies as f64)
    }

    pub(crate) fn is_bad(&self, settings: &GuardSettings) -> bool {
        self.denies >= settings.min_denies
            && self.rate().is_some_and(|rate| rate > settings.max_fp_rate)
    }
}

/// A canary as the guard sees it.
#[derive(Debug, Clone)]
pub(crate) struct Canary {
    pub severity: Severity,
    pub percent: f64,
    pub start_us: i64,
}

/// What the guard does about a canary now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Watch,
    /// The run of bad windows that trips the guard.
    Pause(Vec<Window>),
    /// No bad window since the start, for at least `--promote-after`.
    Promote {
        windows: u64,
        denies: u64,
        false_positives: u64,
    },
}

pub(crate) fn window_us(settings: &GuardSettings) -> i64 {
    i64::try_from(settings.window.as_micros())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Windows from the store's sparse counts `(index, denies, false positives)`.
pub(crate) fn windows(
    counts: &[(i64, i64, i64)],
    start_us: i64,
    window_us: i64,
    now_us: i64,
) -> Vec<Window> {
    counts
        .iter()
        .filter(|(index, _, _)| *index >= 0)
        .map(|&(index, denies, fps)| window_at(index, start_us, window_us, now_us, denies, fps))
        .collect()
}

fn window_at(
    index: i64,
    start_us: i64,
    window_us: i64,
    now_us: i64,
    denies: i64,
    fps: i64,
) -> Window {
    let start = start_us.saturating_add(index.saturating_mul(window_us));
    let end = start.saturating_add(window_us);
    Window {
        index,
        start_us: start,
        end_us: end,
        denies: denies.max(0) as u64,
        false_positives: fps.max(0) as u64,
        complete: end <= now_us,
    }
}

/// The newest `count` windows up to now, empty ones included (for explain).
pub(crate) fn recent(
    sparse: &[Window],
    start_us: i64,
    window_us: i64,
    now_us: i64,
    count: i64,
) -> Vec<Window> {
    let current = (now_us.saturating_sub(start_us)).max(0) / window_us;
    let first = (current - count + 1).max(0);
    (first..=current)
        .map(|index| {
            sparse
                .iter()
                .find(|w| w.index == index)
                .copied()
                .unwrap_or_else(|| window_at(index, start_us, window_us, now_us, 0, 0))
        })
        .collect()
}

/// Pause after `bad_windows` complete bad windows in a row (a window
/// without denies breaks a run); promote a LOW/MEDIUM canary with a share
/// above 0 that had no bad window, complete or not, for `promote_after`.
pub(crate) fn decide(
    canary: &Canary,
    windows: &[Window],
    settings: &GuardSettings,
    now_us: i64,
) -> Action {
    if canary.percent <= 0.0 {
        return Action::Watch;
    }
    let needed = settings.bad_windows.max(1) as usize;
    let mut run: Vec<Window> = Vec::new();
    for w in windows.iter().filter(|w| w.complete) {
        let continues = run.last().is_some_and(|last| last.index + 1 == w.index);
        if !w.is_bad(settings) {
            run.clear();
            continue;
        }
        if !continues {
            run.clear();
        }
        run.push(*w);
        if run.len() >= needed {
            return Action::Pause(run);
        }
    }
    let Some(after) = settings.promote_after else {
        return Action::Watch;
    };
    let after_us = i64::try_from(after.as_micros()).unwrap_or(i64::MAX);
    let low_risk = matches!(canary.severity, Severity::Low | Severity::Medium);
    let quiet = !windows.iter().any(|w| w.is_bad(settings));
    if low_risk && quiet && now_us.saturating_sub(canary.start_us) >= after_us {
        return Action::Promote {
            windows: (now_us.saturating_sub(canary.start_us) / window_us(settings)) as u64,
            denies: windows.iter().map(|w| w.denies).sum(),
            false_positives: windows.iter().map(|w| w.false_positives).sum(),
        };
    }
    Action::Watch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings {
            window: Duration::from_secs(2),
            max_fp_rate: 0.05,
            min_denies: 10,
            bad_windows: 3,
            promote_after: Some(Duration::from_secs(10)),
        }
    }

    const W: i64 = 2_000_000;

    fn canary(severity: Severity) -> Canary {
        Canary {
            severity,
            percent: 5.0,
            start_us: 0,
        }
    }

    #[test]
    fn a_window_is_bad_above_the_rate_with_enough_denies() {
        let s = settings();
        let w = |denies, fps| window_at(0, 0, W, 10 * W, denies, fps);
        assert!(w(10, 1).is_bad(&s)); // 10% > 5%
        assert!(!w(20, 1).is_bad(&s)); // exactly 5% is not above it
        assert!(!w(9, 9).is_bad(&s)); // too few denies to count
        assert_eq!(w(0, 0).rate(), None);
    }

    #[test]
    fn three_bad_windows_in_a_row_pause_and_a_gap_breaks_the_run() {
        let s = settings();
        let now = 10 * W;
        // Bad in 0, 1, (2 empty), 3, 4: never three in a row.
        let broken = windows(&[(0, 10, 5), (1, 10, 5), (3, 10, 5), (4, 10, 5)], 0, W, now);
        assert_eq!(
            decide(&canary(Severity::High), &broken, &s, now),
            Action::Watch
        );
        // 3, 4, 5 bad in a row.
        let tripped = windows(&[(0, 10, 5), (3, 10, 5), (4, 12, 6), (5, 10, 9)], 0, W, now);
        match decide(&canary(Severity::High), &tripped, &s, now) {
            Action::Pause(run) => {
                assert_eq!(
                    run.iter().map(|w| w.index).collect::<Vec<_>>(),
                    vec![3, 4, 5]
                )
            }
            other => panic!("expected a pause, got {other:?}"),
        }
        // The current window does not count until it ends.
        let now = 5 * W + 1;
        let partial = windows(&[(3, 10, 5), (4, 10, 5), (5, 10, 5)], 0, W, now);
        assert_eq!(
            decide(&canary(Severity::High), &partial, &s, now),
            Action::Watch
        );
    }

    #[test]
    fn only_quiet_low_risk_canaries_are_promoted_after_the_delay() {
        let s = settings();
        let quiet = windows(&[(0, 50, 1), (3, 10, 0)], 0, W, 6 * W);
        assert!(matches!(
            decide(&canary(Severity::Low), &quiet, &s, 6 * W),
            Action::Promote {
                denies: 60,
                false_positives: 1,
                ..
            }
        ));
        assert_eq!(
            decide(&canary(Severity::High), &quiet, &s, 6 * W),
            Action::Watch
        );
        assert_eq!(
            decide(&canary(Severity::Medium), &quiet, &s, 4 * W),
            Action::Watch
        );
        let one_bad = windows(&[(1, 10, 5)], 0, W, 6 * W);
        assert_eq!(
            decide(&canary(Severity::Low), &one_bad, &s, 6 * W),
            Action::Watch
        );
        let off = GuardSettings {
            promote_after: None,
            ..settings()
        };
        assert_eq!(
            decide(&canary(Severity::Low), &quiet, &off, 6 * W),
            Action::Watch
        );
        let paused = Canary {
            percent: 0.0,
            ..canary(Severity::Low)
        };
        assert_eq!(decide(&paused, &quiet, &s, 6 * W), Action::Watch);
    }

    #[test]
    fn recent_windows_fill_the_empty_ones() {
        let sparse = windows(&[(1, 4, 1)], 0, W, 3 * W + 5);
        let recent = recent(&sparse, 0, W, 3 * W + 5, 12);
        assert_eq!(recent.len(), 4);
        assert_eq!((recent[1].denies, recent[1].false_positives), (4, 1));
        assert!(recent[2].complete && !recent[3].complete);
    }
}
