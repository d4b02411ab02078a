//! The containers and volumes inject adds to a pod, built from typed
//! structs so they read in the usual Kubernetes field order: the
//! `sentinelnet` sidecar, Envoy (ext_authz or the in-process module), and
//! the volumes they share. [`super::pod`] decides where they go.

use serde::Serialize;
use serde_json::json;
use serde_yaml_ng::{Mapping, Value};

use super::envoy::{self, EnvoyPlan};
use super::{InjectError, Mesh, Mode, Options};

/// The sidecar's ext_authz socket, on the `emptyDir` both containers mount.
pub const SOCKET_DIR: &str = "/run/sentinel";
pub const SOCKET: &str = "/run/sentinel/authz.sock";
/// With Istio, the mesh's own Envoy calls the sidecar over loopback.
pub const ISTIO_GRPC_ADDR: &str = "127.0.0.1:9191";
pub const ISTIO_GRPC_PORT: u16 = 9191;
pub const ADMIN_PORT: u16 = 9192;
pub const ADMIN_PORT_NAME: &str = "sentinel-admin";
pub const SPOOL_DIR: &str = "/var/spool/sentinel";
pub const TLS_DIR: &str = "/etc/sentinel/tls";
pub const KEYS_DIR: &str = "/etc/sentinel/keys";
/// The Secret with the pod's client certificate toward central
/// (`tls.crt`, `tls.key`, `ca.crt`, as cert-manager writes them).
pub const TLS_SECRET: &str = "sentinelnet-client-tls";
/// The ConfigMap with the keys bundles must be signed by (`central.pub`).
pub const KEYS_CONFIGMAP: &str = "sentinelnet-trusted-keys";
/// In-process mode: the decision events' socket, and where the sidecar
/// writes the bundle it pulls for the module to read.
pub const RECORD_SOCKET: &str = "/run/sentinel/records.sock";
pub const MODULE_BUNDLE_DIR: &str = "/var/lib/sentinel/bundle";
/// Where the in-process Envoy image keeps `libsentinelnet_envoy.so`.
pub const MODULE_DIR: &str = "/usr/lib/sentinelnet";
/// The spool's bound, under the `emptyDir` size limit below.
const SPOOL_MAX_BYTES: u64 = 256 << 20;
const SPOOL_SIZE_LIMIT: &str = "300Mi";
/// The images' users: distroless `nonroot` and the Envoy image's `envoy`.
const SENTINEL_UID: u32 = 65532;
const ENVOY_UID: u32 = 101;

/// Where the sidecar's bundle comes from, where its records go, and who
/// decides (this pod's settings: flags overridden by annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sources {
    pub bundle: String,
    pub central: Option<String>,
    pub principal_from: Option<String>,
    pub mode: Mode,
}

impl Sources {
    /// The bundle the in-process module reads: the copy the sidecar pulls
    /// from a registry, or the same local path.
    fn module_bundle(&self) -> String {
        if is_registry(&self.bundle) {
            format!("{MODULE_BUNDLE_DIR}/bundle.tar.gz")
        } else {
            self.bundle.clone()
        }
    }
}

/// A generated container, in the usual Kubernetes field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Container {
    name: &'static str,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<Value>,
    ports: Vec<Value>,
    /// `Always` makes an init container a native sidecar (pods that run to
    /// completion).
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    startup_probe: Option<Value>,
    readiness_probe: Value,
    liveness_probe: Value,
    resources: Value,
    security_context: Value,
    volume_mounts: Vec<Value>,
}

/// A mapping with its keys in the order given (`json!` sorts them).
fn ordered<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> Value {
    let mut mapping = Mapping::new();
    for (key, value) in pairs {
        mapping.insert(
            key.into(),
            serde_yaml_ng::to_value(value).unwrap_or(Value::Null),
        );
    }
    Value::Mapping(mapping)
}

fn mount(name: &str, path: &str, read_only: bool) -> Value {
    if read_only {
        ordered([
            ("name", json!(name)),
            ("mountPath", json!(path)),
            ("readOnly", json!(true)),
        ])
    } else {
        ordered([("name", json!(name)), ("mountPath", json!(path))])
    }
}

fn port(name: &str, number: u16) -> Value {
    ordered([("name", json!(name)), ("containerPort", json!(number))])
}

fn resources(requests: serde_json::Value, limits: serde_json::Value) -> Value {
    ordered([("requests", requests), ("limits", limits)])
}

/// Non-root, read-only root, no privilege escalation, no capabilities,
/// the runtime's default seccomp profile.
fn hardened(uid: u32, gid: u32) -> Value {
    ordered([
        ("runAsNonRoot", json!(true)),
        ("runAsUser", json!(uid)),
        ("runAsGroup", json!(gid)),
        ("readOnlyRootFilesystem", json!(true)),
        ("allowPrivilegeEscalation", json!(false)),
        ("capabilities", json!({"drop": ["ALL"]})),
        ("seccompProfile", json!({"type": "RuntimeDefault"})),
    ])
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// A registry source (central, or any bundle URL) rather than a path.
pub(super) fn is_registry(url: &str) -> bool {
    is_https(url) || url.starts_with("http://")
}

pub(super) fn sentinel_container(
    options: &Options,
    sources: &Sources,
    grpc_addr: &str,
    jobs: bool,
) -> Container {
    let mut args = vec![
        "serve".to_string(),
        format!("--bundle={}", sources.bundle),
        format!("--grpc-addr={grpc_addr}"),
        // The kubelet probes the admin port on the pod's address.
        format!("--admin-addr=0.0.0.0:{ADMIN_PORT}"),
    ];
    if let Some(principal_from) = &sources.principal_from {
        args.push(format!("--principal-from={principal_from}"));
    }
    if is_registry(&sources.bundle) {
        // Signed bundles only, and the last good one survives a restart
        // while central is down. In-process, the module reads that copy.
        args.push(format!("--trusted-keys={KEYS_DIR}"));
        let cache = match sources.mode {
            Mode::Sidecar => format!("{SPOOL_DIR}/bundle.tar.gz"),
            Mode::InProcess => sources.module_bundle(),
        };
        args.push(format!("--bundle-cache={cache}"));
    }
    if sources.mode == Mode::InProcess {
        // The module's decision events become records in this chain.
        args.push(format!("--record-socket=unix:{RECORD_SOCKET}"));
    }
    if let Some(central) = &sources.central {
        // Records wait on the spool volume while central is away.
        args.push(format!(
            "--audit-url={}/v1/audit/decisions",
            central.trim_end_matches('/')
        ));
        args.push(format!("--spool-dir={SPOOL_DIR}"));
        args.push(format!("--spool-max-bytes={SPOOL_MAX_BYTES}"));
    }
    let mut env = vec![ordered([
        ("name", json!("POD_NAME")),
        (
            "valueFrom",
            json!({"fieldRef": {"fieldPath": "metadata.name"}}),
        ),
    ])];
    let mut mounts = vec![mount("sentinelnet-spool", SPOOL_DIR, false)];
    if options.mesh == Mesh::None {
        mounts.push(mount("sentinelnet-socket", SOCKET_DIR, false));
    }
    if needs_plain_http(sources) {
        // Plain http:// to central: development only (the sidecar refuses
        // it otherwise).
        env.push(ordered([
            ("name", json!("DEV_SKIP_MTLS")),
            ("value", json!("true")),
        ]));
    }
    if needs_tls(sources) {
        for (name, file) in [
            ("KERNEL_MTLS_CERT_PATH", "tls.crt"),
            ("KERNEL_MTLS_KEY_PATH", "tls.key"),
            ("KERNEL_MTLS_CA_PATH", "ca.crt"),
        ] {
            env.push(ordered([
                ("name", json!(name)),
                ("value", json!(format!("{TLS_DIR}/{file}"))),
            ]));
        }
        mounts.push(mount("sentinelnet-tls", TLS_DIR, true));
    }
    if is_registry(&sources.bundle) {
        mounts.push(mount("sentinelnet-keys", KEYS_DIR, true));
        if sources.mode == Mode::InProcess {
            mounts.push(mount("sentinelnet-bundle", MODULE_BUNDLE_DIR, false));
        }
    }
    let probe = |path: &str, period: u32| {
        ordered([
            ("httpGet", json!({"path": path, "port": ADMIN_PORT_NAME})),
            ("periodSeconds", json!(period)),
        ])
    };
    Container {
        name: "sentinelnet",
        image: options.image.clone(),
        command: None,
        args,
        env,
        ports: vec![port(ADMIN_PORT_NAME, ADMIN_PORT)],
        restart_policy: jobs.then_some("Always"),
        // Native sidecars start in order: Envoy waits for a loaded bundle.
        startup_probe: jobs.then(|| {
            ordered([
                (
                    "httpGet",
                    json!({"path": "/readyz", "port": ADMIN_PORT_NAME}),
                ),
                ("periodSeconds", json!(1)),
                ("failureThreshold", json!(60)),
            ])
        }),
        readiness_probe: probe("/readyz", 2),
        liveness_probe: probe("/healthz", 10),
        resources: resources(
            json!({"cpu": "50m", "memory": "32Mi"}),
            json!({"cpu": "1", "memory": "128Mi"}),
        ),
        security_context: hardened(SENTINEL_UID, SENTINEL_UID),
        volume_mounts: mounts,
    }
}

fn needs_tls(sources: &Sources) -> bool {
    is_https(&sources.bundle) || sources.central.as_deref().is_some_and(is_https)
}

fn needs_plain_http(sources: &Sources) -> bool {
    let plain = |url: &str| url.starts_with("http://");
    plain(&sources.bundle) || sources.central.as_deref().is_some_and(plain)
}

/// The module's `filter_config` (SPEC §11): the same bundle, keys,
/// identity source and on-error answer as the sidecar would use.
pub(super) fn module_config(sources: &Sources) -> String {
    let mut config = serde_json::Map::new();
    config.insert("bundle".into(), json!(sources.module_bundle()));
    if is_registry(&sources.bundle) {
        config.insert("trustedKeys".into(), json!(KEYS_DIR));
    }
    config.insert("records".into(), json!(format!("unix:{RECORD_SOCKET}")));
    config.insert("onError".into(), json!("deny"));
    if let Some(principal_from) = &sources.principal_from {
        config.insert("principalFrom".into(), json!(principal_from));
    }
    serde_json::Value::Object(config).to_string()
}

pub(super) fn envoy_container(
    options: &Options,
    sources: &Sources,
    plan: &EnvoyPlan<'_>,
    port_name: &str,
    jobs: bool,
) -> Container {
    let mut env = Vec::new();
    let mut mounts = vec![mount("sentinelnet-socket", SOCKET_DIR, false)];
    let image = match (&options.envoy_image, sources.mode) {
        (Some(image), _) => image.clone(),
        (None, Mode::Sidecar) => super::DEFAULT_ENVOY_IMAGE.to_string(),
        (None, Mode::InProcess) => super::default_inprocess_envoy_image(),
    };
    if sources.mode == Mode::InProcess {
        env.push(ordered([
            ("name", json!("ENVOY_DYNAMIC_MODULES_SEARCH_PATH")),
            ("value", json!(MODULE_DIR)),
        ]));
        if is_registry(&sources.bundle) {
            mounts.push(mount("sentinelnet-bundle", MODULE_BUNDLE_DIR, true));
            mounts.push(mount("sentinelnet-keys", KEYS_DIR, true));
        }
    }
    Container {
        name: "envoy",
        image,
        // The binary itself: the image's entrypoint script would try to
        // switch users, which a non-root container cannot.
        command: Some(vec!["envoy".to_string()]),
        args: vec![
            "--config-yaml".to_string(),
            envoy::bootstrap(plan),
            "--concurrency".to_string(),
            "2".to_string(),
            // No shared memory for hot restarts (read-only root, and a
            // container restarts rather than hot-restarting).
            "--disable-hot-restart".to_string(),
        ],
        env,
        ports: vec![port(port_name, plan.listen_port)],
        restart_policy: jobs.then_some("Always"),
        startup_probe: None,
        // The admin port is loopback-only; a connection to the listener
        // says Envoy is up without passing a request through policy.
        readiness_probe: ordered([
            ("tcpSocket", json!({"port": plan.listen_port})),
            ("periodSeconds", json!(2)),
        ]),
        liveness_probe: ordered([
            ("tcpSocket", json!({"port": plan.listen_port})),
            ("periodSeconds", json!(10)),
        ]),
        resources: resources(
            json!({"cpu": "100m", "memory": "64Mi"}),
            json!({"cpu": "2", "memory": "256Mi"}),
        ),
        // The sidecar's group: its sockets are 0660.
        security_context: hardened(ENVOY_UID, SENTINEL_UID),
        volume_mounts: mounts,
    }
}

pub(super) fn volumes(sources: &Sources, mesh: Mesh) -> Vec<Value> {
    let mut volumes = Vec::new();
    let mut add = |name: &str, kind: &str, source: serde_json::Value| {
        volumes.push(ordered([("name", json!(name)), (kind, source)]));
    };
    if mesh == Mesh::None {
        add(
            "sentinelnet-socket",
            "emptyDir",
            json!({"medium": "Memory", "sizeLimit": "1Mi"}),
        );
    }
    add(
        "sentinelnet-spool",
        "emptyDir",
        json!({"sizeLimit": SPOOL_SIZE_LIMIT}),
    );
    if needs_tls(sources) {
        add(
            "sentinelnet-tls",
            "secret",
            json!({"secretName": TLS_SECRET}),
        );
    }
    if is_registry(&sources.bundle) {
        add(
            "sentinelnet-keys",
            "configMap",
            json!({"name": KEYS_CONFIGMAP}),
        );
        if sources.mode == Mode::InProcess && mesh == Mesh::None {
            add(
                "sentinelnet-bundle",
                "emptyDir",
                json!({"sizeLimit": "64Mi"}),
            );
        }
    }
    volumes
}

pub(super) fn to_value(container: &Container) -> Result<Value, InjectError> {
    serde_yaml_ng::to_value(container).map_err(|e| InjectError::Internal(e.to_string()))
}
