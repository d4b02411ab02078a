//! The command line (docs/settings.md). Every flag can also come from the
//! environment variable named in its help, and every setting is read here,
//! once: the modules below get typed values, never the environment. Bad
//! input exits 2 with one line; failed tests exit 1.

use crate::audit::inputs::{InputRecording, Masks};
use crate::audit::{to_record, verify, AuditConfig};
use crate::authz::{IdentitySource, ViewSettings};
use crate::bundle::fetch::DEFAULT_MAX_BYTES;
use crate::bundle::{self, signing, Bundle, RemoteSettings, Source};
use crate::decision::DecisionEvent;
use crate::ids;
use crate::keys::{self, KeySource};
use crate::policy::Verdict;
use crate::serve::{self, ListenAddr, ServeConfig};
use crate::tls::ClientIdentity;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

#[derive(Parser)]
#[command(
    name = "sentinelnet",
    version,
    about = "Envoy ext_authz policy decision point",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: answer Envoy ext_authz Check from a policy bundle.
    Serve(Box<ServeArgs>),
    /// Run the control plane: policy registry, lifecycle, multisig, signed bundles.
    Central(Box<CentralArgs>),
    /// Decide one input document and print the decision record.
    Eval(EvalArgs),
    /// Run a bundle's tests/*.json.
    Test(TestArgs),
    /// Impact of a candidate bundle on recorded inputs: matches, changed
    /// decisions, false positives, and the canary percent to start with.
    Simulate(SimulateArgs),
    /// Build bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Work with exported decision records.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Central's registry from the command line: push, transition, approve,
    /// explain, decisions, label, simulate, export, fleet, chains.
    Ctl(Box<CtlArgs>),
    /// Write an Ed25519 key pair NAME.key (0600) and NAME.pub; with
    /// --pkcs11, create the pair inside the token and write only NAME.pub.
    Keygen {
        /// Directory to write the keys into.
        #[arg(long, env = "SENTINEL_KEYGEN_OUT")]
        out: PathBuf,
        /// Key name (file stem and key id; the key's label in a token).
        #[arg(long, env = "SENTINEL_KEYGEN_NAME")]
        name: String,
        /// Generate inside this PKCS#11 token (RFC 7512 URI with module-path
        /// and pin-source); the private key never leaves it.
        #[arg(long, env = "SENTINEL_KEYGEN_PKCS11", value_parser = parse_pkcs11_uri)]
        pkcs11: Option<keys::pkcs11::Pkcs11Uri>,
    },
    /// Write a throwaway development PKI (CA, central and per-role client
    /// certificates, rbac.json) for demos and local runs.
    DevPki {
        /// Directory to write into.
        #[arg(long, env = "SENTINEL_DEV_PKI_OUT")]
        out: PathBuf,
    },
    /// Print Kubernetes YAML with the Envoy and sentinelnet sidecars added
    /// to every pod template (docs/kubernetes.md).
    Inject(InjectArgs),
    /// Serve the same mutation as a Kubernetes mutating admission webhook
    /// (POST /inject, AdmissionReview v1, JSONPatch).
    Injector(InjectorArgs),
    /// Print the base64 Ed25519 signature of a file.
    Sign {
        /// The private key: a file from keygen or a pkcs11: URI.
        #[arg(long, env = "SENTINEL_SIGN_KEY", value_parser = KeySource::parse)]
        key: KeySource,
        /// The file to sign.
        file: PathBuf,
    },
}

/// What `inject` and `injector` add; pod annotations override each.
#[derive(Args)]
struct InjectOptionArgs {
    /// The sidecar's bundle: a directory or .tar.gz in the image or a
    /// mounted volume, or a URL (annotation sentinelnet.io/bundle).
    #[arg(long, env = "SENTINEL_INJECT_BUNDLE")]
    bundle: Option<String>,
    /// Central's base URL (https://HOST:PORT): bundles from it with
    /// --bundle-name, records to its ingest (annotation
    /// sentinelnet.io/central). With no bundle source given anywhere:
    /// https://sentinel-central.sentinel.svc:8443 and the bundle named
    /// after the app (its app.kubernetes.io/name or app label).
    #[arg(long, env = "SENTINEL_INJECT_CENTRAL", value_parser = parse_central)]
    central: Option<String>,
    /// The bundle to pull from central (annotation sentinelnet.io/bundle-name).
    #[arg(long, env = "SENTINEL_INJECT_BUNDLE_NAME", value_parser = parse_bundle_name)]
    bundle_name: Option<String>,
    /// The sidecar's --principal-from: peer, jwt:NAMESPACE:CLAIM or
    /// header:NAME (annotation sentinelnet.io/principal-from).
    #[arg(long, env = "SENTINEL_INJECT_PRINCIPAL_FROM", value_parser = parse_principal_from)]
    principal_from: Option<String>,
    /// The sentinelnet image.
    #[arg(long, env = "SENTINEL_INJECT_IMAGE", default_value_t = crate::inject::default_image())]
    image: String,
    /// The Envoy image [default: envoyproxy/envoy:v1.40.0; with --mode
    /// inprocess, ghcr.io/sentinelnet/envoy-sentinelnet of this version].
    #[arg(long, env = "SENTINEL_INJECT_ENVOY_IMAGE")]
    envoy_image: Option<String>,
    /// sidecar: Envoy calls the sidecar (ext_authz); inprocess: the
    /// policies run inside Envoy (annotation sentinelnet.io/mode).
    #[arg(long, env = "SENTINEL_INJECT_MODE", value_enum, default_value_t = crate::inject::Mode::Sidecar)]
    mode: crate::inject::Mode,
    /// istio: the mesh's Envoy calls the sidecar (k8s/istio/); add only the sidecar.
    #[arg(long, env = "SENTINEL_INJECT_MESH", value_enum, default_value_t = crate::inject::Mesh::None)]
    mesh: crate::inject::Mesh,
}

impl InjectOptionArgs {
    fn options(self) -> Result<crate::inject::Options, Failure> {
        if self.mode == crate::inject::Mode::InProcess && self.mesh == crate::inject::Mesh::Istio {
            return Err(Failure::Usage(
                "--mode inprocess needs the Envoy inject adds; with --mesh istio the mesh's Envoy calls the sidecar (use --mode sidecar)".into(),
            ));
        }
        Ok(crate::inject::Options {
            bundle: self.bundle,
            central: self.central,
            bundle_name: self.bundle_name,
            principal_from: self.principal_from,
            image: self.image,
            envoy_image: self.envoy_image,
            mesh: self.mesh,
            mode: self.mode,
        })
    }
}

fn parse_central(value: &str) -> Result<String, String> {
    crate::inject::check_central(value).map(|()| value.to_string())
}

fn parse_principal_from(value: &str) -> Result<String, String> {
    value
        .parse::<IdentitySource>()
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

fn parse_bundle_name(value: &str) -> Result<String, String> {
    crate::inject::check_bundle_name(value).map(|()| value.to_string())
}

#[derive(Args)]
struct InjectArgs {
    /// The YAML to read (several documents and Lists); `-` or none: stdin.
    file: Option<PathBuf>,
    #[command(flatten)]
    options: InjectOptionArgs,
}

#[derive(Args)]
struct InjectorArgs {
    /// Where to listen (the webhook Service targets it).
    #[arg(long, env = "SENTINEL_INJECTOR_ADDR", default_value = "0.0.0.0:8443")]
    addr: SocketAddr,
    /// Serving certificate (PEM), for the Service's DNS name.
    #[arg(long, env = "SENTINEL_INJECTOR_TLS_CERT")]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, env = "SENTINEL_INJECTOR_TLS_KEY")]
    tls_key: PathBuf,
    #[command(flatten)]
    options: InjectOptionArgs,
}

/// Central and identity come before the command (`ctl --key K approve ID
/// --key APPROVER_KEY` has two different keys); `--format` goes anywhere.
#[derive(Args)]
struct CtlArgs {
    /// Central's URL (https://HOST:PORT).
    #[arg(long, env = "SENTINEL_CENTRAL_URL", default_value = "")]
    central: String,
    /// Client certificate (PEM); else KERNEL_MTLS_CERT_PATH.
    #[arg(long, env = "SENTINEL_CTL_CERT", value_name = "FILE", value_parser = optional_path)]
    cert: Option<OptionalPath>,
    /// Client key (PEM); else KERNEL_MTLS_KEY_PATH.
    #[arg(long, env = "SENTINEL_CTL_KEY", value_name = "FILE", value_parser = optional_path)]
    key: Option<OptionalPath>,
    /// CA that issued central's certificate (PEM); else KERNEL_MTLS_CA_PATH.
    #[arg(long, env = "SENTINEL_CTL_CA", value_name = "FILE", value_parser = optional_path)]
    ca: Option<OptionalPath>,
    /// table (for people) or json (central's answer, for scripts).
    #[arg(
        long,
        env = "SENTINEL_CTL_FORMAT",
        global = true,
        value_enum,
        default_value = "table"
    )]
    format: Format,
    #[command(flatten)]
    dev: DevSkipMtls,
    #[command(subcommand)]
    command: crate::ctl::CtlCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chains of exported decision records (NDJSON).
    Verify {
        /// The records, one JSON object per line.
        file: PathBuf,
        /// Directory of trusted record-signing keys (*.pub, file stem =
        /// keyId): every `sig` is checked and each chain's unsigned tail shown.
        #[arg(long, env = "SENTINEL_AUDIT_TRUSTED_KEYS")]
        trusted_keys: Option<PathBuf>,
    },
}

/// This process as a client of central, the audit service and the stream
/// (the same identity for all three).
#[derive(Args, Clone)]
struct ClientIdentityArgs {
    /// Client certificate chain (PEM) for https:// bundle and audit URLs.
    #[arg(long = "mtls-cert", env = "KERNEL_MTLS_CERT_PATH", value_name = "FILE", value_parser = optional_path)]
    cert: Option<OptionalPath>,
    /// Client private key (PEM).
    #[arg(long = "mtls-key", env = "KERNEL_MTLS_KEY_PATH", value_name = "FILE", value_parser = optional_path)]
    key: Option<OptionalPath>,
    /// CA bundle (PEM) that issued central's and the audit service's certificates.
    #[arg(long = "mtls-ca", env = "KERNEL_MTLS_CA_PATH", value_name = "FILE", value_parser = optional_path)]
    ca: Option<OptionalPath>,
    #[command(flatten)]
    dev: DevSkipMtls,
}

/// Plain http:// (development only).
#[derive(Args, Clone)]
struct DevSkipMtls {
    /// Allow plain http:// URLs and, for central, serve without TLS (development only).
    #[arg(long = "dev-skip-mtls", env = "DEV_SKIP_MTLS", action = ArgAction::SetTrue, value_parser = switch)]
    dev_skip_mtls: bool,
}

/// A path setting where an empty value (`KERNEL_MTLS_CA_PATH=`, as a
/// manifest may render it) means "not set".
#[derive(Clone)]
struct OptionalPath(Option<PathBuf>);

fn optional_path(value: &str) -> Result<OptionalPath, String> {
    Ok(OptionalPath(
        (!value.is_empty()).then(|| PathBuf::from(value)),
    ))
}

/// An on/off setting from the environment: true/1/yes/on, or
/// false/0/no/off/empty.
fn switch(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "" | "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

impl ClientIdentityArgs {
    fn identity(&self) -> ClientIdentity {
        let path = |p: &Option<OptionalPath>| p.clone().and_then(|p| p.0);
        ClientIdentity {
            cert: path(&self.cert),
            key: path(&self.key),
            ca: path(&self.ca),
            allow_plain_http: self.dev.dev_skip_mtls,
        }
    }
}

/// How `https://` bundle sources are reached.
#[derive(Args, Clone)]
struct RemoteArgs {
    #[command(flatten)]
    identity: ClientIdentityArgs,
    /// Largest bundle accepted from a registry URL, in bytes; a larger one
    /// is refused and the active bundle stays.
    #[arg(long, env = "SENTINEL_BUNDLE_MAX_BYTES", default_value_t = DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    bundle_max_bytes: u64,
}

impl RemoteArgs {
    fn settings(&self) -> RemoteSettings {
        RemoteSettings {
            identity: self.identity.identity(),
            max_bytes: self.bundle_max_bytes,
            node: None,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OnError {
    Deny,
    Allow,
}

impl OnError {
    fn verdict(self) -> Verdict {
        match self {
            OnError::Deny => Verdict::Deny,
            OnError::Allow => Verdict::Allow,
        }
    }
}

#[derive(Args)]
struct CentralArgs {
    /// HTTPS listener.
    #[arg(long, env = "SENTINEL_CENTRAL_ADDR", default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// Store: sqlite://FILE (embedded) or postgres://… (HA); migrations run at start.
    #[arg(
        long,
        env = "SENTINEL_CENTRAL_DB",
        default_value = "sqlite://./sentinelnet-central.db"
    )]
    db: String,
    /// A file holding the store URL (a mounted secret), instead of --db:
    /// the password never sits in the environment or the process list.
    #[arg(
        long,
        env = "SENTINEL_CENTRAL_DB_FILE",
        conflicts_with = "db",
        value_name = "FILE"
    )]
    db_file: Option<PathBuf>,
    /// Server certificate chain (PEM).
    #[arg(long, env = "SENTINEL_CENTRAL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "SENTINEL_CENTRAL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA that issues client certificates; every request needs one.
    #[arg(long, env = "SENTINEL_CENTRAL_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// JSON {"IDENTITY": ["sidecar" | "publisher" | "approver" | "admin", …]}; identity = URI SAN, else CN.
    #[arg(long, env = "SENTINEL_CENTRAL_RBAC")]
    rbac: Option<PathBuf>,
    /// Ed25519 key that signs published bundles: a file from keygen or a
    /// pkcs11: URI (the key stays in the token).
    #[arg(long, env = "SENTINEL_CENTRAL_SIGNING_KEY", value_parser = KeySource::parse)]
    signing_key: KeySource,
    /// Directory of approver public keys (*.pub, one per approver).
    #[arg(long, env = "SENTINEL_CENTRAL_APPROVERS")]
    approvers: Option<PathBuf>,
    /// Directory of trusted record-signing keys (*.pub; file stem = keyId):
    /// every record's `sig` is verified at ingest and chains report signedThrough.
    #[arg(long, env = "SENTINEL_CENTRAL_RECORD_KEYS")]
    record_keys: Option<PathBuf>,
    /// Distinct approvals a HIGH/CRITICAL policy version needs before it can become active.
    #[arg(long, env = "SENTINEL_CENTRAL_APPROVALS_REQUIRED", default_value_t = 3)]
    approvals_required: usize,
    /// Stored decision records older than this are pruned (500ms, 2s, 5m, 1h, 7d).
    #[arg(long, env = "SENTINEL_CENTRAL_DECISION_RETENTION", default_value = "7d",
          value_parser = crate::timestamp::parse_duration)]
    decision_retention: std::time::Duration,
    /// Canary guard: the window a canary's denies and false positives are counted in.
    #[arg(long, env = "SENTINEL_CENTRAL_CANARY_WINDOW", default_value = "5m",
          value_parser = crate::timestamp::parse_duration)]
    canary_window: std::time::Duration,
    /// Canary guard: a window is bad when false positives / denies is above this (0-1).
    #[arg(long, env = "SENTINEL_CENTRAL_CANARY_MAX_FP_RATE", default_value_t = 0.05,
          value_parser = fraction)]
    canary_max_fp_rate: f64,
    /// Canary guard: denies a window needs before its rate counts.
    #[arg(long, env = "SENTINEL_CENTRAL_CANARY_MIN_DENIES", default_value_t = 10)]
    canary_min_denies: u64,
    /// Canary guard: bad windows in a row before the canary is paused (percent 0).
    #[arg(long, env = "SENTINEL_CENTRAL_CANARY_BAD_WINDOWS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    canary_bad_windows: u32,
    /// LOW/MEDIUM canaries with no bad window for this long become active; 0 turns it off.
    #[arg(long, env = "SENTINEL_CENTRAL_PROMOTE_AFTER", default_value = "1h",
          value_parser = duration_or_zero)]
    promote_after: std::time::Duration,
    /// Requests per second per client identity (burst twice that); 429 with
    /// Retry-After past it; 0 turns it off.
    #[arg(long, env = "SENTINEL_CENTRAL_RATE_LIMIT", default_value_t = 50)]
    rate_limit: u32,
    /// Record batches and bundle polls per second per identity (their own budget).
    #[arg(
        long,
        env = "SENTINEL_CENTRAL_INGEST_RATE_LIMIT",
        default_value_t = 200
    )]
    ingest_rate_limit: u32,
    /// Largest record batch or push body (16MiB, 512KiB, bytes); 413 past
    /// it. Other calls take at most 1MiB.
    #[arg(long, env = "SENTINEL_CENTRAL_MAX_BODY", default_value = "16MiB",
          value_parser = crate::central::limits::parse_size)]
    max_body: usize,
    /// Most connections open at once; a new one past it is closed at once.
    #[arg(long, env = "SENTINEL_CENTRAL_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// An HTTP/1 request's headers must arrive within this (slow clients).
    #[arg(long, env = "SENTINEL_CENTRAL_HEADER_TIMEOUT", default_value = "10s",
          value_parser = crate::timestamp::parse_duration)]
    header_timeout: std::time::Duration,
    /// Accept a node's records only from the client identity that first
    /// posted records for it (one sidecar cannot write into another's
    /// chain). Off by default: a sidecar whose certificate is rotated to a
    /// new identity would have its records refused.
    #[arg(long, env = "SENTINEL_CENTRAL_PIN_NODE_IDENTITY", action = ArgAction::SetTrue, value_parser = switch)]
    pin_node_identity: bool,
    /// NATS JetStream to consume decision records from (nats://HOST:PORT,
    /// or tls://HOST:PORT with KERNEL_MTLS_* as the client identity).
    #[arg(long, env = "SENTINEL_CENTRAL_DECISION_STREAM", value_name = "URL")]
    decision_stream: Option<String>,
    /// Client identity toward the decision stream (KERNEL_MTLS_*), and
    /// DEV_SKIP_MTLS.
    #[command(flatten)]
    identity: ClientIdentityArgs,
}

/// A duration (`500ms`, `5m`, `1h`), or `0` for "off".
fn duration_or_zero(value: &str) -> Result<std::time::Duration, String> {
    if value.trim() == "0" {
        Ok(std::time::Duration::ZERO)
    } else {
        crate::timestamp::parse_duration(value)
    }
}

#[derive(Args)]
struct ServeArgs {
    /// ext_authz gRPC listener: HOST:PORT or unix:/path.sock.
    #[arg(long, env = "SENTINEL_GRPC_ADDR", default_value = "127.0.0.1:9191")]
    grpc_addr: ListenAddr,
    /// Admin HTTP listener.
    #[arg(long, env = "SENTINEL_ADMIN_ADDR", default_value = "127.0.0.1:9192")]
    admin_addr: SocketAddr,
    /// Bundle source: a directory or a .tar.gz (watched for changes), or a
    /// registry URL (pulled over mTLS).
    #[arg(long, env = "SENTINEL_BUNDLE")]
    bundle: String,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Node name in decision records (default: the host name).
    #[arg(long = "node-name", env = "POD_NAME")]
    node_name: Option<String>,
    /// Directory of trusted Ed25519 bundle keys (*.pub).
    #[arg(long, env = "SENTINEL_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
    /// Where to persist the last activated bundle.
    #[arg(long, env = "SENTINEL_BUNDLE_CACHE")]
    bundle_cache: Option<PathBuf>,
    /// Audit service URL for decision records.
    #[arg(long, env = "SENTINEL_AUDIT_URL")]
    audit_url: Option<String>,
    /// Directory for the durable decision-record spool (needs --audit-url).
    #[arg(long, env = "SENTINEL_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Byte bound of the spool (or of the in-memory backlog without one);
    /// past it the oldest records are dropped and counted.
    #[arg(long, env = "SENTINEL_SPOOL_MAX_BYTES", default_value_t = 256 << 20)]
    spool_max_bytes: u64,
    /// Decision when the sidecar cannot decide (no bundle, a policy fails).
    #[arg(long, env = "SENTINEL_ON_ERROR", value_enum, default_value = "deny")]
    on_error: OnError,
    /// Source of principal.id: peer, jwt:NAMESPACE:CLAIM or header:NAME.
    #[arg(long, env = "SENTINEL_PRINCIPAL_FROM", default_value = "peer")]
    principal_from: IdentitySource,
    /// Source of principal.roles: jwt:NAMESPACE:CLAIM or header:NAME.
    #[arg(long, env = "SENTINEL_ROLES_FROM", default_value = "none")]
    roles_from: IdentitySource,
    /// Share of decision records (0-100) that carry the input document,
    /// chosen deterministically from the request id.
    #[arg(long, env = "SENTINEL_RECORD_INPUT", default_value_t = 100,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    record_input: u8,
    /// Input paths removed from records, comma-separated (added to the
    /// credential headers removed by default).
    #[arg(long, env = "SENTINEL_MASK", value_delimiter = ',')]
    mask: Vec<String>,
    /// Receive decision events from the in-process Envoy module on this
    /// Unix datagram socket (unix:/path.sock) and record them in this
    /// sidecar's chain.
    #[arg(long, env = "SENTINEL_RECORD_SOCKET", value_parser = parse_record_socket)]
    record_socket: Option<PathBuf>,
    /// Sign checkpoint records (every second, every 1,000 records and at
    /// shutdown) with this key: a file from keygen or a pkcs11: URI.
    #[arg(long, env = "SENTINEL_RECORD_SIGNING_KEY", value_parser = KeySource::parse)]
    record_signing_key: Option<KeySource>,
    /// TLS certificate (PEM) of the ext_authz listener; re-read when it
    /// changes. Without it the listener speaks plain HTTP/2 (loopback or a
    /// Unix socket).
    #[arg(long, env = "SENTINEL_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --grpc-tls-cert.
    #[arg(long, env = "SENTINEL_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// CA (PEM) whose certificates callers of the ext_authz listener must
    /// present (mTLS); needs --grpc-tls-cert.
    #[arg(long, env = "SENTINEL_GRPC_CLIENT_CA", requires = "grpc_tls_cert")]
    grpc_client_ca: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Bundle source: a directory, a .tar.gz or a registry URL.
    #[arg(long, env = "SENTINEL_BUNDLE")]
    bundle: String,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Input document (JSON, the shape of docs/bundles.md, "Input document").
    #[arg(long, env = "SENTINEL_EVAL_INPUT")]
    input: PathBuf,
    /// Add every policy's result to the output.
    #[arg(long, env = "SENTINEL_EVAL_EXPLAIN")]
    explain: bool,
    /// Decision when a policy cannot be evaluated (as the sidecar's --on-error).
    #[arg(long, env = "SENTINEL_ON_ERROR", value_enum, default_value = "deny")]
    on_error: OnError,
}

#[derive(Args)]
struct SimulateArgs {
    /// The candidate bundle: a directory, a .tar.gz or a registry URL. Its
    /// draft and simulating policies are enforced as if active.
    #[arg(long, env = "SENTINEL_BUNDLE")]
    bundle: String,
    /// Samples, one per line (`-` for stdin): decision records carrying
    /// `input` (as central exports them) or {"input": …, "label"?: "allow"|"deny"}.
    #[arg(long, env = "SENTINEL_SIMULATE_SAMPLES")]
    samples: PathBuf,
    /// Compare with this bundle's decisions instead of the recorded ones.
    #[arg(long, env = "SENTINEL_SIMULATE_BASELINE")]
    baseline: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// No canary is recommended above this false-positive rate (0-1).
    #[arg(long, env = "SENTINEL_SIMULATE_MAX_FP_RATE",
          default_value_t = crate::simulate::report::DEFAULT_MAX_FP_RATE, value_parser = fraction)]
    max_fp_rate: f64,
    /// table (for people; the default on a terminal) or json.
    #[arg(long, env = "SENTINEL_SIMULATE_FORMAT", value_enum)]
    format: Option<Format>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A rate between 0 and 1.
fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{value:?} is not a rate between 0 and 1 (e.g. 0.05)"
        )),
    }
}

#[derive(Args)]
struct TestArgs {
    /// Bundle source: a directory, a .tar.gz or a registry URL.
    #[arg(env = "SENTINEL_BUNDLE")]
    src: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Validate, compile-check and pack a bundle directory.
    Build {
        /// The bundle directory.
        dir: PathBuf,
        /// The .tar.gz to write.
        #[arg(short, long, env = "SENTINEL_BUNDLE_OUTPUT")]
        output: PathBuf,
        /// Sign the bundle with this private key, a file or a pkcs11: URI
        /// (writes .signatures.json).
        #[arg(long, env = "SENTINEL_SIGN_KEY", value_parser = KeySource::parse)]
        sign_key: Option<KeySource>,
    },
    /// Verify a bundle's signature and contents.
    Verify {
        /// A bundle directory or .tar.gz.
        file: String,
        /// Directory of trusted public keys (*.pub).
        #[arg(long, env = "SENTINEL_TRUSTED_KEYS")]
        trusted_keys: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// How a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: flags, files, policies (exit 2).
    Usage(String),
    /// The command ran and found problems, e.g. failing tests (exit 1).
    Failed,
    /// A server refused the request (exit 1, with its one-line reason).
    Refused(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Usage(format!("{e:#}"))
    }
}

impl From<bundle::BundleError> for Failure {
    fn from(e: bundle::BundleError) -> Self {
        Failure::Usage(e.to_string())
    }
}

/// Parse the command line, run, and return the process exit code.
pub fn main() -> i32 {
    // NAME_FILE settings become NAME before clap reads the environment
    // (one thread so far, so writing the environment is safe).
    if let Err(e) = crate::secrets::resolve_env_files() {
        eprintln!("sentinelnet: {e}");
        return 2;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                };
            }
            // One line, not clap's usage block: the error's first paragraph
            // (a missing argument is named on the lines after the first).
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| !line.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            eprintln!(
                "sentinelnet: {}",
                if message.is_empty() {
                    "invalid arguments"
                } else {
                    message
                }
            );
            return 2;
        }
    };
    init_tracing();
    crate::tls::install_crypto_provider();
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Central(_) | Command::Injector(_)
    ) {
        // A command whose output goes to `head` ends quietly when the reader
        // does, as Unix tools do, instead of a panic on the next `println!`
        // (Rust ignores SIGPIPE, so writing to the closed pipe is an error).
        // Servers keep ignoring it: a peer that goes away is no reason to
        // die. SAFETY: restoring a signal's default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli.command) {
        Ok(()) => 0,
        Err(Failure::Usage(message)) => {
            eprintln!("sentinelnet: {message}");
            2
        }
        Err(Failure::Failed) => 1,
        Err(Failure::Refused(message)) => {
            eprintln!("sentinelnet: {message}");
            1
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SENTINEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve(args) => run_serve(*args),
        Command::Central(args) => run_central(*args),
        Command::Eval(args) => run_eval(args),
        Command::Test(args) => run_test(args),
        Command::Simulate(args) => run_simulate(args),
        Command::Bundle(BundleCommand::Build {
            dir,
            output,
            sign_key,
        }) => run_build(dir, output, sign_key),
        Command::Bundle(BundleCommand::Verify {
            file,
            trusted_keys,
            remote,
        }) => run_bundle_verify(&file, &trusted_keys, &remote.settings()),
        Command::Keygen {
            out,
            name,
            pkcs11: None,
        } => {
            let (private, public) =
                keys::keygen(&out, &name).map_err(|e| Failure::Usage(e.to_string()))?;
            println!("wrote {} and {}", private.display(), public.display());
            Ok(())
        }
        Command::Keygen {
            out,
            name,
            pkcs11: Some(uri),
        } => {
            let public = keys::pkcs11::keygen(&uri, &out, &name)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            println!(
                "created Ed25519 key \"{name}\" in the token; wrote {} (the private key stays in the token)",
                public.display()
            );
            Ok(())
        }
        Command::DevPki { out } => {
            let written =
                crate::tls::write_dev_pki(&out).map_err(|e| Failure::Usage(e.to_string()))?;
            println!(
                "wrote {} files into {} (development only)",
                written.len(),
                out.display()
            );
            Ok(())
        }
        Command::Sign { key, file } => {
            let key = key.open().map_err(|e| Failure::Usage(e.to_string()))?;
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", file.display())))?;
            let signature = key
                .sign_base64(&bytes)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            println!("{signature}");
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { file, trusted_keys }) => {
            run_verify(file, trusted_keys)
        }
        Command::Ctl(args) => run_ctl(*args),
        Command::Inject(args) => run_inject(args),
        Command::Injector(args) => run_injector(args),
    }
}

fn run_inject(args: InjectArgs) -> Result<(), Failure> {
    use std::io::Read as _;
    let (text, from) = match args.file.as_deref() {
        None => (String::new(), "stdin".to_string()),
        Some(path) if path.as_os_str() == "-" => (String::new(), "stdin".to_string()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", path.display())))?;
            (text, path.display().to_string())
        }
    };
    let text = if from == "stdin" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("stdin: cannot read: {e}")))?;
        text
    } else {
        text
    };
    let options = args.options.options()?;
    let injected = crate::inject::inject_yaml(&text, &options)
        .map_err(|e| Failure::Usage(format!("{from}: {e}")))?;
    for warning in &injected.warnings {
        eprintln!("sentinelnet: warning: {warning}");
    }
    print!("{}", injected.yaml);
    Ok(())
}

fn run_injector(args: InjectorArgs) -> Result<(), Failure> {
    let options = args.options.options()?;
    let tls = crate::tls::reload::ServerFiles {
        cert: args.tls_cert,
        key: args.tls_key,
        client_ca: None,
        flags: ["--tls-cert", "--tls-key", ""],
        alpn: crate::tls::HTTP_ALPN,
    };
    // Refuse a bad certificate at start, with the flag that named it.
    tls.load().map_err(|e| Failure::Usage(format!("{e:#}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
    runtime
        .block_on(crate::inject::webhook::serve(
            args.addr,
            tls,
            options,
            crate::shutdown::signal(),
        ))
        .map_err(|e| Failure::Usage(format!("{e:#}")))
}

fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    // Refuse rather than ignore: silently dropping signature checks or the
    // audit destination would be worse than not starting.
    let trusted_keys = args
        .trusted_keys
        .as_deref()
        .map(signing::TrustedKeys::load_dir)
        .transpose()
        .map_err(|e| Failure::Usage(e.to_string()))?
        .map(Arc::new);
    if args.spool_dir.is_some() && args.audit_url.is_none() {
        return Err(Failure::Usage(
            "--spool-dir needs --audit-url: the spool holds records until the audit service acknowledges them".into(),
        ));
    }
    if args.spool_max_bytes < 64 * 1024 {
        return Err(Failure::Usage(
            "--spool-max-bytes must be at least 65536".into(),
        ));
    }
    let node = node_name(args.node_name);
    let source = Source::parse(
        &args.bundle,
        &RemoteSettings {
            node: Some(node.clone()),
            ..args.remote.settings()
        },
    )?;
    let view = ViewSettings {
        principal_from: args.principal_from,
        roles_from: args.roles_from,
    };
    let grpc_tls = match (args.grpc_tls_cert, args.grpc_tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::reload::ServerFiles {
            cert,
            key,
            client_ca: args.grpc_client_ca,
            flags: ["--grpc-tls-cert", "--grpc-tls-key", "--grpc-client-ca"],
            alpn: crate::tls::GRPC_ALPN,
        }),
        // clap's `requires` makes the pair complete or absent.
        _ => None,
    };
    let record_signer = args
        .record_signing_key
        .as_ref()
        .map(KeySource::open)
        .transpose()
        .map_err(|e| Failure::Usage(format!("--record-signing-key: {e}")))?;
    let config = ServeConfig {
        grpc_addr: args.grpc_addr,
        grpc_tls,
        admin_addr: args.admin_addr,
        source,
        trusted_keys,
        on_error: args.on_error.verdict(),
        record_socket: args.record_socket,
        view: view.clone(),
        node,
        audit: AuditConfig {
            url: args.audit_url,
            tls: args.remote.identity.identity(),
            spool_dir: args.spool_dir,
            max_bytes: args.spool_max_bytes,
            inputs: Some(InputRecording::new(
                args.record_input,
                Masks::with_defaults(&args.mask).map_err(Failure::Usage)?,
                crate::authz::input_builder(view),
            )),
            signer: record_signer,
        },
        bundle_cache: args.bundle_cache,
    };
    serve::run(config).map_err(Failure::from)
}

fn run_central(args: CentralArgs) -> Result<(), Failure> {
    let dev_skip_mtls = args.identity.dev.dev_skip_mtls;
    let db = match &args.db_file {
        None => args.db.clone(),
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Failure::Usage(format!("--db-file {}: cannot read: {e}", file.display()))
            })?;
            let url = text.trim().to_owned();
            if url.is_empty() {
                return Err(Failure::Usage(format!(
                    "--db-file {}: the file is empty (it should hold the store URL)",
                    file.display()
                )));
            }
            url
        }
    };
    let tls = match (args.tls_cert, args.tls_key, args.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(crate::tls::reload::ServerFiles {
            cert,
            key,
            client_ca: Some(client_ca),
            flags: ["--tls-cert", "--tls-key", "--client-ca"],
            alpn: crate::tls::HTTP_ALPN,
        }),
        (None, None, None) if dev_skip_mtls => None,
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert"),
                (key.is_none(), "--tls-key"),
                (ca.is_none(), "--client-ca"),
            ]
            .into_iter()
            .filter(|(absent, _)| *absent)
            .map(|(_, flag)| flag)
            .collect();
            return Err(Failure::Usage(format!(
                "central needs {} (client certificates are required; DEV_SKIP_MTLS=true for plain-HTTP development)",
                missing.join(", ")
            )));
        }
    };
    let decision_stream = match &args.decision_stream {
        Some(url) if !url.is_empty() => {
            let identity = args.identity.identity();
            // Checked now: a bad URL or identity is a start-up error.
            crate::nats::connect_options(url, &identity, "sentinel-central")
                .map_err(|e| Failure::Usage(format!("--decision-stream {e}")))?;
            Some(crate::central::stream::StreamSettings {
                url: url.clone(),
                identity,
                retention: args.decision_retention,
            })
        }
        _ => None,
    };
    crate::central::run(crate::central::CentralConfig {
        decision_stream,
        addr: args.addr,
        db,
        tls,
        rbac: args.rbac,
        signing_key: args.signing_key,
        approvers: args.approvers,
        record_keys: args.record_keys,
        approvals_required: args.approvals_required,
        decision_retention: args.decision_retention,
        guard: crate::central::rollout::windows::GuardSettings {
            window: args.canary_window,
            max_fp_rate: args.canary_max_fp_rate,
            min_denies: args.canary_min_denies,
            bad_windows: args.canary_bad_windows,
            promote_after: (!args.promote_after.is_zero()).then_some(args.promote_after),
        },
        rate_limits: crate::central::limits::RateLimits {
            api_per_second: args.rate_limit,
            ingest_per_second: args.ingest_rate_limit,
        },
        max_body: args.max_body,
        pin_node_identity: args.pin_node_identity,
        connections: crate::central::server::ConnectionLimits {
            max_connections: args.max_connections as usize,
            header_timeout: args.header_timeout,
        },
    })
    .map_err(Failure::from)
}

/// `--node-name` (`POD_NAME`), else the host name.
fn node_name(configured: Option<String>) -> String {
    configured
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn load(src: &str, remote: &RemoteArgs) -> Result<Bundle, Failure> {
    Ok(Source::parse(src, &remote.settings())?.load()?)
}

fn run_eval(args: EvalArgs) -> Result<(), Failure> {
    let bundle = Arc::new(load(&args.bundle, &args.remote)?);
    let display = args.input.display().to_string();
    // Bounded: an input document is a request's view, not a data set
    // (`--input /dev/zero` would otherwise fill memory).
    use std::io::Read as _;
    const MAX_INPUT_BYTES: u64 = 64 << 20;
    let mut text = Vec::new();
    std::fs::File::open(&args.input)
        .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut text))
        .map_err(|e| Failure::Usage(format!("{display}: cannot read: {e}")))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(Failure::Usage(format!(
            "{display}: larger than {MAX_INPUT_BYTES} bytes; an input document is one request's"
        )));
    }
    let input: Value = serde_json::from_slice(&text)
        .map_err(|e| Failure::Usage(format!("{display}: invalid JSON: {e}")))?;
    if !input.is_object() {
        return Err(Failure::Usage(format!(
            "{display}: the input document must be a JSON object"
        )));
    }
    let started = Instant::now();
    let at = SystemTime::now();
    let outcome = bundle.policies.decide(&input, args.on_error.verdict());
    let request_id = input
        .pointer("/request/id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let explain = args.explain.then(|| explain(&bundle, &outcome, &input));
    // The same description of a decision as the check path: the status
    // printed is the status the sidecar answers.
    let mut event = DecisionEvent::decided(
        ids::decision_id(at),
        at,
        request_id,
        bundle.clone(),
        outcome,
        &input,
    );
    event.latency_us = started.elapsed().as_micros() as u64;
    let record = to_record("eval", event, None);
    let mut out = serde_json::to_value(&record).unwrap_or(Value::Null);
    if let (Some((policies, index)), Value::Object(map)) = (explain, &mut out) {
        map.insert("explain".into(), Value::Array(policies));
        map.insert("index".into(), index);
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// Every policy's part in `outcome`, for `eval --explain`, and what the
/// policy index did: each evaluated policy says why it was a candidate or
/// why the index skipped it (a skipped policy cannot match this input).
fn explain(
    bundle: &Bundle,
    outcome: &crate::policy::Outcome,
    input: &Value,
) -> (Vec<Value>, Value) {
    let set = &bundle.policies;
    let (mut candidates, mut skipped) = (0, 0);
    let policies = set
        .policies()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let matched = outcome.matches.iter().find(|m| m.policy == i);
            let evaluated = p.state().is_evaluated();
            let candidacy = evaluated.then(|| set.candidacy(i, input));
            match &candidacy {
                Some(c) if c.candidate => candidates += 1,
                Some(_) => skipped += 1,
                None => {}
            }
            json!({
                "policyId": &*p.id,
                "state": p.state().as_str(),
                "effect": p.effect().as_str(),
                "evaluated": evaluated,
                "candidate": candidacy.as_ref().map(|c| c.candidate),
                "why": candidacy.map(|c| c.why),
                "matched": matched.is_some(),
                "failed": outcome.errors.contains(&i),
                "mode": matched.map(|m| m.mode.name(p.state())),
            })
        })
        .collect();
    let summary = set.index_summary();
    let index = json!({
        "enabled": summary.enabled,
        "candidates": candidates,
        "skipped": skipped,
    });
    (policies, index)
}

fn run_ctl(args: CtlArgs) -> Result<(), Failure> {
    use crate::ctl::{CtlConfig, CtlError};
    // SENTINEL_CTL_* first, then the sidecar's KERNEL_MTLS_* (one
    // identity file set for every client of central on a machine).
    let fallback = |given: Option<OptionalPath>, env: &str| {
        given.and_then(|p| p.0).or_else(|| {
            std::env::var_os(env)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    };
    let config = CtlConfig {
        central: args.central,
        identity: ClientIdentity {
            cert: fallback(args.cert, "KERNEL_MTLS_CERT_PATH"),
            key: fallback(args.key, "KERNEL_MTLS_KEY_PATH"),
            ca: fallback(args.ca, "KERNEL_MTLS_CA_PATH"),
            allow_plain_http: args.dev.dev_skip_mtls,
        },
        json: args.format == Format::Json,
    };
    crate::ctl::run(config, args.command).map_err(|e| match e {
        CtlError::Refused { .. } => Failure::Refused(e.to_string()),
        CtlError::Usage(message) => Failure::Usage(message),
    })
}

fn run_simulate(args: SimulateArgs) -> Result<(), Failure> {
    use crate::simulate::{self, report::Baseline, Simulation};
    use std::io::{BufRead, BufReader, IsTerminal, Read};
    let candidate = load(&args.bundle, &args.remote)?;
    let documents = candidate
        .policies
        .policies()
        .iter()
        .map(|p| p.document.clone());
    let candidate_set = simulate::candidate_set(documents, candidate.policies.default_decision())
        .map_err(|e| Failure::Usage(format!("{}: {e}", args.bundle)))?;
    let baseline = args
        .baseline
        .as_deref()
        .map(|src| load(src, &args.remote))
        .transpose()?;
    let baseline = match &baseline {
        Some(b) => Baseline::Bundle(&b.policies, format!("{}@{}", b.name, b.revision)),
        None => Baseline::Recorded,
    };
    let display = args.samples.display().to_string();
    let (reader, size): (Box<dyn Read>, u64) = if display == "-" {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = std::fs::File::open(&args.samples)
            .map_err(|e| Failure::Usage(format!("{display}: cannot read: {e}")))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), size)
    };
    // A progress bar for long files, on a terminal only (indicatif draws
    // nothing when stderr is not one).
    let progress = if size >= 8 << 20 && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} simulating {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let reader: Box<dyn BufRead> = Box::new(BufReader::with_capacity(
        1 << 16,
        progress.wrap_read(reader),
    ));
    let mut simulation = Simulation::new(
        candidate.name.as_ref(),
        &candidate_set,
        baseline,
        args.max_fp_rate,
    );
    simulate::feed(&mut simulation, reader)
        .map_err(|e| Failure::Usage(format!("{display}: cannot read: {e}")))?;
    progress.finish_and_clear();
    let report = simulation.report();
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    });
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Table => print!("{}", report.table()),
    }
    Ok(())
}

fn run_test(args: TestArgs) -> Result<(), Failure> {
    let bundle = load(&args.src, &args.remote)?;
    let (total, failures) = bundle.run_tests();
    for line in &failures {
        println!("{line}");
    }
    let passed = total - failures.len();
    println!(
        "bundle {} {}: {passed} of {total} policy tests passed",
        bundle.name, bundle.revision
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed)
    }
}

fn run_build(dir: PathBuf, output: PathBuf, sign_key: Option<KeySource>) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::Usage(format!(
            "{}: not a bundle directory",
            dir.display()
        )));
    }
    let source = Source::Directory(dir);
    let mut files = source.read()?;
    // A stale signature from an earlier build must not be packed.
    files.remove(signing::SIGNATURES_FILE);
    let bundle = Bundle::from_files(&files)?;
    if let Some(key) = sign_key {
        let key = key.open().map_err(|e| Failure::Usage(e.to_string()))?;
        signing::sign_bundle(&mut files, key.as_ref())
            .map_err(|e| Failure::Usage(e.to_string()))?;
        println!("signed with key {}", key.key_id());
    }
    let packed = bundle::pack(&files).map_err(|e| Failure::Usage(format!("cannot pack: {e}")))?;
    std::fs::write(&output, packed)
        .map_err(|e| Failure::Usage(format!("{}: cannot write: {e}", output.display())))?;
    println!(
        "wrote {} (bundle {} {}, {} policies, sha256 {})",
        output.display(),
        bundle.name,
        bundle.revision,
        bundle.policies.policies().len(),
        bundle.digest
    );
    Ok(())
}

fn run_verify(file: PathBuf, trusted_keys: Option<PathBuf>) -> Result<(), Failure> {
    let display = file.display().to_string();
    let keys = trusted_keys
        .as_deref()
        .map(keys::TrustedKeys::load_dir)
        .transpose()
        .map_err(|e| Failure::Usage(format!("--trusted-keys: {e}")))?;
    let checking_signatures = keys.is_some();
    let reader = std::fs::File::open(&file)
        .map(|f| std::io::BufReader::with_capacity(1 << 16, f))
        .map_err(|e| Failure::Usage(format!("{display}: cannot read: {e}")))?;
    let report = verify::verify_reader(reader, keys)
        .map_err(|e| Failure::Usage(format!("{display}: cannot read: {e}")))?;
    for chain in &report.chains {
        let sealing = if !checking_signatures {
            String::new()
        } else {
            match chain.signed_through {
                Some(through) if through == chain.last_seq => {
                    format!(", signed through {through}, no unsigned tail")
                }
                Some(through) => format!(
                    ", signed through {through}, unsigned tail seq {}..{} ({} records)",
                    through + 1,
                    chain.last_seq,
                    chain.last_seq - through
                ),
                None => format!(
                    ", no valid signature: unsigned tail seq {}..{} (the whole chain)",
                    chain.first_seq, chain.last_seq
                ),
            }
        };
        println!(
            "node {} chain {}: seq {}..{} ({} records){sealing}",
            chain.node, chain.chain, chain.first_seq, chain.last_seq, chain.records
        );
    }
    for problem in &report.problems {
        println!("{display}: {problem}");
    }
    println!(
        "{} records, {} duplicates ignored, {} out of order (tolerated), {} problems",
        report.records,
        report.duplicates,
        report.out_of_order,
        report.problems.len()
    );
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed)
    }
}

fn run_bundle_verify(
    src: &str,
    trusted_keys: &std::path::Path,
    remote: &RemoteSettings,
) -> Result<(), Failure> {
    let trusted =
        signing::TrustedKeys::load_dir(trusted_keys).map_err(|e| Failure::Usage(e.to_string()))?;
    let source = Source::parse(src, remote)?;
    let files = source.read()?;
    // The verdict first: a signature that does not verify is what this
    // command found (exit 1). Signed content that is no valid bundle is bad
    // input, like any other (exit 2, one line naming file, policy, path).
    let signer = match signing::verify_bundle(&files, &trusted) {
        Ok(signer) => signer,
        Err(e) => {
            println!("{src}: {e}");
            return Err(Failure::Failed);
        }
    };
    let bundle = Bundle::from_files(&files).map_err(|e| Failure::Usage(format!("{src}: {e}")))?;
    println!(
        "{src}: bundle {} {} ({} policies) signed by {signer}, every file matches its signature",
        bundle.name,
        bundle.revision,
        bundle.policies.policies().len(),
    );
    Ok(())
}

fn parse_pkcs11_uri(text: &str) -> Result<keys::pkcs11::Pkcs11Uri, String> {
    keys::pkcs11::Pkcs11Uri::parse(text).map_err(|e| e.to_string())
}

fn parse_record_socket(text: &str) -> Result<PathBuf, String> {
    match text.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "{text:?}: give a Unix datagram socket as unix:/path.sock"
        )),
    }
}
