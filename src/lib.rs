//! SentinelNet: an Envoy ext_authz policy decision point.
//!
//! Data flows one way: a CheckRequest becomes an input view ([`authz`]),
//! compiled policies ([`policy`]) decide it, [`decision`] says what the
//! outcome means (status, evidence, the decision event), and that becomes
//! the Envoy response and a decision record ([`audit`]). Bundles
//! ([`bundle`]) are loaded, validated and swapped in atomically; [`admin`]
//! serves health, metrics and introspection; `serve` wires the sidecar;
//! `central` is the control plane that publishes signed bundles; [`cli`] is
//! the command line and the only place settings are read.
//!
//! Layers, lowest first; a module only uses those before it:
//! helpers (`ids`, `timestamp`, `retry`, `secrets`, [`tls`], `nats`, `shutdown`) → [`policy`]
//! → [`keys`] → [`simulate`] → [`bundle`] → [`decision`] → [`metrics`] → [`audit`] → [`authz`] →
//! [`admin`] → `serve` / `central` / [`ctl`] / [`inject`] → [`cli`]; `fuzzing` (entry
//! points of the fuzz targets) sits beside `cli` at the top.

mod admin;
pub mod audit;
pub mod authz;
pub mod bundle;
mod central;
pub mod cli;
pub mod ctl;
pub mod decision;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod inject;
mod json_errors;
pub mod keys;
pub mod metrics;
mod nats;
pub mod policy;
mod retry;
mod secrets;
mod serve;
mod shutdown;
pub mod simulate;
mod timestamp;
pub mod tls;

/// For `bench/ingest.rs` only (raw inserts through central's store code).
#[doc(hidden)]
pub use central::bench::{parse_records, raw_insert_rate};
