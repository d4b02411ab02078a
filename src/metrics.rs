//! The sidecar's Prometheus metrics (names are part of the contract:
//! docs/metrics.md). A module of its own, below the check path, the audit
//! pipeline and the admin API that all write or read them.
//!
//! Counters the check path touches are resolved to handles up front (per
//! decision/reason pair here, per policy when a bundle is activated), so a
//! check never looks a label set up in a map.

use crate::bundle::Bundle;
use crate::policy::{Mode, Reason, State, Verdict, MODE_NAMES};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Check latency buckets, 5 µs to 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    100e-3, 250e-3, 500e-3, 1.0,
];

/// Counters the audit pipeline keeps.
#[derive(Clone)]
pub struct AuditCounters {
    pub shipped: IntCounter,
    pub dropped: IntCounter,
    /// Records the receiver refused as malformed (set aside, not retried).
    pub rejected: IntCounter,
    pub queue_depth: IntGauge,
    pub spool_bytes: IntGauge,
    /// `--spool-max-bytes` with a spool (0 without): alerts compare the two.
    pub spool_limit: IntGauge,
    pub backlog: IntGauge,
    pub ship_failures: IntCounter,
    pub ship_latency: Histogram,
    pub spool_corrupt: IntCounter,
    /// Checkpoint signatures made (`--record-signing-key`), and the ones
    /// the key failed to make (that record went unsigned).
    pub signatures: IntCounter,
    pub signature_failures: IntCounter,
    /// Decision events received on `--record-socket`, and datagrams there
    /// that were not events.
    pub forwarded: IntCounter,
    pub forwarded_invalid: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    pub check_latency: Histogram,
    /// `[verdict][reason]`: allow/deny × policy/default/error.
    decisions: [[IntCounter; 3]; 2],
    policy_matches: IntCounterVec,
    policy_eval_errors: IntCounterVec,
    bundle_info: IntGaugeVec,
    pub bundle_loads_success: IntCounter,
    pub bundle_loads_error: IntCounter,
    pub bundle_last_success: Gauge,
    pub audit: AuditCounters,
    /// `sentinel_tls_reloads_total{files,result}`: certificate files re-read
    /// (`listener`: the ext_authz listener's; `client`: KERNEL_MTLS_*).
    pub tls_reloads: IntCounterVec,
}

/// Per-policy counters of one activated bundle, indexed like its policy set.
pub struct PolicyCounters {
    /// `[enforce, canary, shadow]`
    matches: [IntCounter; 3],
    eval_errors: IntCounter,
}

impl PolicyCounters {
    pub fn record_match(&self, mode: Mode, state: State) {
        self.matches[mode.name_index(state)].inc();
    }

    pub fn record_error(&self) {
        self.eval_errors.inc();
    }
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    // Names are fixed and unique here, so registration cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let check_latency = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sentinel_check_latency_seconds",
                    "Time to decide one ext_authz Check.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid histogram"),
        );
        let decisions_vec = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sentinel_decisions_total",
                    "Decisions by outcome and reason.",
                ),
                &["decision", "reason"],
            )
            .expect("valid counter"),
        );
        let reasons = [Reason::Policy, Reason::Default, Reason::Error];
        let decisions = [Verdict::Allow, Verdict::Deny]
            .map(|v| reasons.map(|r| decisions_vec.with_label_values(&[v.as_str(), r.as_str()])));
        let policy_matches = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sentinel_policy_matches_total",
                    "Policy matches by policy and mode.",
                ),
                &["policy", "mode"],
            )
            .expect("valid counter"),
        );
        let policy_eval_errors = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sentinel_policy_eval_errors_total",
                    "Policy evaluations that failed.",
                ),
                &["policy"],
            )
            .expect("valid counter"),
        );
        let bundle_info = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new("sentinel_bundle_info", "The active bundle (value 1)."),
                &["name", "revision"],
            )
            .expect("valid gauge"),
        );
        let loads = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("sentinel_bundle_loads_total", "Bundle loads by result."),
                &["result"],
            )
            .expect("valid counter"),
        );
        let bundle_last_success = registered(
            &registry,
            Gauge::new(
                "sentinel_bundle_last_success_timestamp_seconds",
                "When a bundle was last activated (unix seconds).",
            )
            .expect("valid gauge"),
        );
        let counter = |name: &str, help: &str| {
            registered(
                &registry,
                IntCounter::new(name, help).expect("valid counter"),
            )
        };
        let gauge = |name: &str, help: &str| {
            registered(&registry, IntGauge::new(name, help).expect("valid gauge"))
        };
        let audit = AuditCounters {
            shipped: counter(
                "sentinel_audit_shipped_total",
                "Decision records acknowledged by the audit service.",
            ),
            dropped: counter(
                "sentinel_audit_dropped_total",
                "Decision records dropped, whatever the reason (queue full, spool bound).",
            ),
            rejected: counter(
                "sentinel_audit_rejected_total",
                "Decision records the audit service refused as malformed (a 4xx other than 408/429); kept in SPOOL/rejected/, not retried.",
            ),
            queue_depth: gauge(
                "sentinel_audit_queue_depth",
                "Decision records waiting in memory.",
            ),
            spool_bytes: gauge(
                "sentinel_audit_spool_bytes",
                "Bytes of decision records in the spool.",
            ),
            spool_limit: gauge(
                "sentinel_audit_spool_limit_bytes",
                "The spool's bound (--spool-max-bytes); 0 without --spool-dir.",
            ),
            backlog: gauge(
                "sentinel_audit_backlog_records",
                "Decision records written but not yet acknowledged by the audit service.",
            ),
            ship_failures: counter(
                "sentinel_audit_ship_failures_total",
                "Failed POSTs to the audit service.",
            ),
            ship_latency: registered(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "sentinel_audit_ship_latency_seconds",
                        "Time of one POST to the audit service.",
                    )
                    .buckets(vec![
                        1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                )
                .expect("valid histogram"),
            ),
            spool_corrupt: counter(
                "sentinel_audit_spool_corrupt_records_total",
                "Spool lines found corrupt or torn at start and skipped.",
            ),
            signatures: counter(
                "sentinel_audit_signatures_total",
                "Decision records signed as checkpoints (--record-signing-key).",
            ),
            forwarded: counter(
                "sentinel_audit_forwarded_total",
                "Decision events from the in-process Envoy module received on --record-socket (then chained and shipped like the sidecar's own).",
            ),
            forwarded_invalid: counter(
                "sentinel_audit_forwarded_invalid_total",
                "Datagrams on --record-socket that were not valid decision events (refused).",
            ),
            signature_failures: counter(
                "sentinel_audit_signature_failures_total",
                "Checkpoint signatures the record-signing key failed to make (those records went unsigned; the next one tries again).",
            ),
        };
        let tls_reloads = registered(&registry, crate::tls::reload_counter().clone());
        Metrics {
            tls_reloads,
            check_latency,
            decisions,
            policy_matches,
            policy_eval_errors,
            bundle_info,
            bundle_loads_success: loads.with_label_values(&["success"]),
            bundle_loads_error: loads.with_label_values(&["error"]),
            bundle_last_success,
            audit,
            registry,
        }
    }

    pub fn decision(&self, verdict: Verdict, reason: Reason) -> &IntCounter {
        let v = match verdict {
            Verdict::Allow => 0,
            Verdict::Deny => 1,
        };
        let r = match reason {
            Reason::Policy => 0,
            Reason::Default => 1,
            Reason::Error => 2,
        };
        &self.decisions[v][r]
    }

    /// Counter handles for every policy of a bundle about to be activated.
    pub fn policy_counters(&self, bundle: &Bundle) -> Vec<PolicyCounters> {
        bundle
            .policies
            .policies()
            .iter()
            .map(|p| PolicyCounters {
                matches: MODE_NAMES.map(|m| self.policy_matches.with_label_values(&[&*p.id, m])),
                eval_errors: self.policy_eval_errors.with_label_values(&[&*p.id]),
            })
            .collect()
    }

    /// Point `sentinel_bundle_info` at the new bundle.
    pub fn set_active_bundle(&self, previous: Option<&Bundle>, current: &Bundle) {
        if let Some(old) = previous {
            let _ = self
                .bundle_info
                .remove_label_values(&[&*old.name, &*old.revision]);
        }
        self.bundle_info
            .with_label_values(&[&*current.name, &*current.revision])
            .set(1);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
