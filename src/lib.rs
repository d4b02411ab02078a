//! SentinelNet: an Envoy ext_authz policy decision point.
//!
//! Data flows one way: a CheckRequest becomes an input view ([`authz`]),
//! compiled policies ([`policy`]) decide it, and the decision becomes the
//! Envoy response and a decision record ([`audit`]). Bundles ([`bundle`]) are
//! loaded, validated and swapped in atomically; [`admin`] serves health,
//! metrics and introspection; [`cli`] is the command line.

pub mod policy;
