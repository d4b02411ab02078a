//! SentinelNet: an Envoy ext_authz policy decision point.
//!
//! Data flows one way: a CheckRequest becomes an input view ([`authz`]),
//! compiled policies ([`policy`]) decide it, and the decision becomes the
//! Envoy response and a decision record ([`audit`]). Bundles ([`bundle`]) are
//! loaded, validated and swapped in atomically; [`admin`] serves health,
//! metrics and introspection; [`serve`] wires the sidecar; [`central`] is
//! the control plane that publishes signed bundles; [`cli`] is the command
//! line.

pub mod admin;
pub mod audit;
pub mod authz;
pub mod bundle;
pub mod central;
pub mod cli;
pub mod policy;
pub mod serve;
pub mod tls;
