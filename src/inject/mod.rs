//! Wiring pods: `sentinelnet inject` (YAML in, YAML out, like `linkerd
//! inject`) and `sentinelnet injector` (the same mutation as a mutating
//! admission webhook, like Istio's sidecar injector).
//!
//! Both run one function per pod ([`pod::inject`]): add the `sentinelnet`
//! container (ext_authz on a Unix socket in a shared `emptyDir`, probes on
//! the admin port, hardened) and, unless Istio's own Envoy is there, an
//! `envoy` container whose listener takes over the app port's name, so
//! Services that target the port by name now reach Envoy. A pod that opted
//! out or already has a `sentinelnet` container is left alone, so running
//! twice changes nothing. [`documents`] walks YAML streams; [`webhook`]
//! turns the same mutation into a JSONPatch. Nothing here is on a request
//! path: the cost is a YAML parse and print per run or per admitted pod.

pub mod documents;
pub mod envoy;
pub mod pod;
pub mod sidecars;
pub mod webhook;

pub use documents::{inject_yaml, Injection};

/// The annotations read on a pod template (and written: `INJECTED`).
pub mod annotations {
    /// `disabled` opts the pod out.
    pub const INJECT: &str = "sentinelnet.io/inject";
    /// The app port Envoy takes over, by name or number.
    pub const PORT: &str = "sentinelnet.io/port";
    pub const BUNDLE: &str = "sentinelnet.io/bundle";
    pub const CENTRAL: &str = "sentinelnet.io/central";
    pub const BUNDLE_NAME: &str = "sentinelnet.io/bundle-name";
    /// `sidecar` (ext_authz) or `inprocess` (the policies inside Envoy).
    pub const MODE: &str = "sentinelnet.io/mode";
    /// The sidecar's `--principal-from` (`peer`, `jwt:NS:CLAIM`, `header:NAME`).
    pub const PRINCIPAL_FROM: &str = "sentinelnet.io/principal-from";
    /// Set on injection (`envoy` or `istio`); its presence makes the next
    /// run a no-op.
    pub const INJECTED: &str = "sentinelnet.io/injected";
}

/// Whether Envoy is ours to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mesh {
    /// Add Envoy in front of the app.
    #[default]
    None,
    /// Istio's Envoy calls the sidecar (k8s/istio/): add only the sidecar.
    Istio,
}

/// Who decides a request in an injected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Envoy calls the sidecar over ext_authz (a Unix socket).
    #[default]
    Sidecar,
    /// The policies run inside Envoy (the dynamic module, SPEC §11); the
    /// sidecar pulls bundles for it and turns its events into records.
    #[value(name = "inprocess")]
    InProcess,
}

/// The defaults a pod's annotations may override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--bundle`: a directory, `.tar.gz` or URL the sidecar reads.
    pub bundle: Option<String>,
    /// `--central`: central's base URL; bundles from it with `bundle_name`,
    /// records to its ingest.
    pub central: Option<String>,
    pub bundle_name: Option<String>,
    /// The sidecar's `--principal-from`; its own default (`peer`) when unset.
    pub principal_from: Option<String>,
    pub image: String,
    /// The Envoy image; by default Envoy's own, or (in-process) the one
    /// with the module (`k8s/Dockerfile`, target `envoy-inprocess`).
    pub envoy_image: Option<String>,
    pub mesh: Mesh,
    pub mode: Mode,
}

/// The sidecar image this build of the tool injects by default.
pub fn default_image() -> String {
    format!(
        "ghcr.io/sentinelnet/sentinelnet:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Envoy with `libsentinelnet_envoy.so` (`k8s/Dockerfile`, target
/// `envoy-inprocess`), for in-process mode.
pub fn default_inprocess_envoy_image() -> String {
    format!(
        "ghcr.io/sentinelnet/envoy-sentinelnet:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Central's in-cluster address, where `k8s/` deploys it: the default when
/// nothing names a bundle source.
pub const DEFAULT_CENTRAL: &str = "https://sentinel-central.sentinel.svc:8443";

/// The Envoy the product is built and tested against.
pub const DEFAULT_ENVOY_IMAGE: &str = "envoyproxy/envoy:v1.40.0";

/// Why a pod (or the input) could not be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("document {document}: not YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("{workload}: {path} is not what Kubernetes expects there")]
    Shape { workload: String, path: String },
    #[error(
        "{workload}: no bundle for the sidecar and no app name to pull one by: pass --bundle or --bundle-name, or annotate the pod template (sentinelnet.io/bundle, sentinelnet.io/bundle-name, or an app label)"
    )]
    NoBundle { workload: String },
    #[error(
        "{workload}: no container declares a port, so Envoy has nothing to front; declare the app port, annotate sentinelnet.io/inject: disabled, or use --mesh istio"
    )]
    NoPort { workload: String },
    #[error("{workload}: port {port} is taken in the pod, and it is {what}")]
    PortTaken {
        workload: String,
        port: u16,
        what: &'static str,
    },
    #[error(
        "{workload}: hostNetwork pods share the node's ports and address, so Envoy cannot stand in front of the app; annotate sentinelnet.io/inject: disabled"
    )]
    HostNetwork { workload: String },
    #[error("{workload}: the pod already has a {what} named {name:?}, which inject adds")]
    NameTaken {
        workload: String,
        what: &'static str,
        name: String,
    },
    #[error("{workload}: annotation {key}: {message}")]
    Annotation {
        workload: String,
        key: &'static str,
        message: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Central's URL must be `https://` (or `http://` for a dev setup with
/// `DEV_SKIP_MTLS`) with a host.
pub fn check_central(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
    if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// A bundle name is one path segment of central's API.
pub fn check_bundle_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a bundle name (letters, digits, '-', '_', '.')"
        ))
    }
}
