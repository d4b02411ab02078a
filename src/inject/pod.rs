//! The mutation of one pod (a Pod, or the template of a workload): the
//! `sentinelnet` container, Envoy in front of the app port, the volumes they
//! share, and the annotation that makes a second run a no-op.
//!
//! The YAML tree is edited in place (`serde_yaml_ng` mappings keep their
//! order), so every field the mutation does not own is kept as it was.
//! What is added is built from typed structs, so the generated containers
//! read in the usual Kubernetes field order.

use serde::Serialize;
use serde_json::json;
use serde_yaml_ng::{Mapping, Value};

use super::envoy::{self, Authz, EnvoyPlan};
use super::{annotations, InjectError, Mesh, Mode, Options};

/// The sidecar's ext_authz socket, on the `emptyDir` both containers mount.
pub const SOCKET_DIR: &str = "/run/sentinel";
pub const SOCKET: &str = "/run/sentinel/authz.sock";
/// With Istio, the mesh's own Envoy calls the sidecar over loopback.
pub const ISTIO_GRPC_ADDR: &str = "127.0.0.1:9191";
const ISTIO_GRPC_PORT: u16 = 9191;
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
/// The label of injected pods.
pub const SIDECAR_LABEL: &str = "sentinelnet.io/sidecar";
/// First port tried for Envoy's listener.
pub const ENVOY_PORT: u16 = 10000;
/// The spool's bound, under the `emptyDir` size limit below.
const SPOOL_MAX_BYTES: u64 = 256 << 20;
const SPOOL_SIZE_LIMIT: &str = "300Mi";
/// The images' users: distroless `nonroot` and the Envoy image's `envoy`.
const SENTINEL_UID: u32 = 65532;
const ENVOY_UID: u32 = 101;

/// What the mutation of one pod did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected(Injected),
    /// Annotated `sentinelnet.io/inject: disabled`.
    OptedOut,
    /// A `sentinelnet` container is there already (this tool's, or one the
    /// author wrote by hand): left alone.
    AlreadyInjected,
}

/// The app port Envoy took over, for the Service check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The app's port number; a Service targeting it by number bypasses Envoy.
    pub app_port: Option<u16>,
    /// The name Envoy's port took over (the app port's old name).
    pub port_name: Option<String>,
    pub envoy_port: Option<u16>,
    pub warnings: Vec<String>,
}

/// Where the sidecar's bundle comes from, where its records go, and who
/// decides (this pod's settings: flags overridden by annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sources {
    bundle: String,
    central: Option<String>,
    principal_from: Option<String>,
    mode: Mode,
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

/// Mutate the pod with `metadata` and `spec` (`workload` names it in
/// errors and warnings, e.g. `Deployment/kernel`). A pod that runs to
/// completion (`restartPolicy` `Never` or `OnFailure`: every Job's and
/// CronJob's) gets native sidecars (init containers with `restartPolicy:
/// Always`), which Kubernetes stops when the pod's own containers finish;
/// plain sidecars would keep it running forever.
pub fn inject(
    metadata: &mut Value,
    spec: &mut Value,
    options: &Options,
    workload: &str,
) -> Result<Outcome, InjectError> {
    let shape = |path: &str| InjectError::Shape {
        workload: workload.to_string(),
        path: path.to_string(),
    };
    if metadata.is_null() {
        *metadata = Value::Mapping(Mapping::new());
    }
    let metadata = metadata.as_mapping_mut().ok_or_else(|| shape("metadata"))?;
    let annotations = read_annotations(metadata, workload)?;
    if annotations
        .get(annotations::INJECT)
        .is_some_and(|value| value == "disabled")
    {
        return Ok(Outcome::OptedOut);
    }
    let spec = spec.as_mapping_mut().ok_or_else(|| shape("spec"))?;
    if annotations.contains_key(annotations::INJECTED) || has_sentinel_container(spec) {
        return Ok(Outcome::AlreadyInjected);
    }
    let sources = sources(&annotations, options, workload)?;
    if sources.mode == Mode::InProcess && options.mesh == Mesh::Istio {
        return Err(InjectError::Annotation {
            workload: workload.to_string(),
            key: annotations::MODE,
            message: "inprocess needs the Envoy inject adds; with --mesh istio the mesh's Envoy decides through the sidecar".into(),
        });
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        // Envoy's and the sidecar's ports would be the node's, and the app
        // would stay reachable on the node's address past Envoy.
        return Err(InjectError::HostNetwork {
            workload: workload.to_string(),
        });
    }
    let jobs = matches!(
        spec.get("restartPolicy").and_then(Value::as_str),
        Some("Never" | "OnFailure")
    );
    check_names(spec, options.mesh, workload)?;
    let used_ports = container_ports(spec);
    let mut reserved = vec![(ADMIN_PORT, "the sidecar's admin port")];
    match options.mesh {
        Mesh::None => reserved.push((envoy::ADMIN_PORT, "Envoy's admin port")),
        Mesh::Istio => reserved.push((ISTIO_GRPC_PORT, "the sidecar's ext_authz port for Istio")),
    }
    for (port, what) in reserved {
        if used_ports.iter().any(|p| p.number == port) {
            return Err(InjectError::PortTaken {
                workload: workload.to_string(),
                port,
                what,
            });
        }
    }

    let mut injected = Injected {
        app_port: None,
        port_name: None,
        envoy_port: None,
        warnings: Vec::new(),
    };
    let mut sidecars = Vec::new();
    let grpc_addr = match options.mesh {
        Mesh::Istio => ISTIO_GRPC_ADDR.to_string(),
        Mesh::None => format!("unix:{SOCKET}"),
    };
    if options.mesh == Mesh::None {
        let requested = annotations.get(annotations::PORT).map(String::as_str);
        let app = app_port(&used_ports, requested, workload)?;
        let listen_port = (ENVOY_PORT..=u16::MAX)
            .find(|port| used_ports.iter().all(|p| p.number != *port))
            .unwrap_or(ENVOY_PORT);
        let envoy_port_name = match &app.name {
            Some(name) => {
                let renamed = app_port_name(name);
                if used_ports
                    .iter()
                    .any(|p| p.name.as_deref() == Some(&renamed))
                {
                    return Err(InjectError::NameTaken {
                        workload: workload.to_string(),
                        what: "port",
                        name: renamed,
                    });
                }
                rename_port(spec, name, &renamed);
                name.clone()
            }
            None => {
                let name = ["http", "envoy-http"]
                    .into_iter()
                    .find(|candidate| {
                        used_ports
                            .iter()
                            .all(|p| p.name.as_deref() != Some(*candidate))
                    })
                    .unwrap_or("envoy-http")
                    .to_string();
                injected.warnings.push(format!(
                    "{workload}: the app port {} has no name, so a Service can only target it by number, past Envoy; point Services at port {listen_port} ({name})",
                    app.number
                ));
                name
            }
        };
        let upstream_http2 = app.http2;
        let authz = match sources.mode {
            Mode::Sidecar => Authz::ExtAuthz { socket: SOCKET },
            Mode::InProcess => Authz::InProcess {
                filter_config: module_config(&sources),
            },
        };
        sidecars.push(envoy_container(
            options,
            &sources,
            &EnvoyPlan {
                listen_port,
                app_port: app.number,
                upstream_http2,
                authz,
            },
            &envoy_port_name,
            jobs,
        ));
        injected.app_port = Some(app.number);
        injected.port_name = Some(envoy_port_name);
        injected.envoy_port = Some(listen_port);
    }
    sidecars.insert(0, sentinel_container(options, &sources, &grpc_addr, jobs));

    let list = if jobs { "initContainers" } else { "containers" };
    let containers = seq_mut(spec, list).ok_or_else(|| shape(&format!("spec.{list}")))?;
    for sidecar in sidecars {
        containers.push(to_value(&sidecar)?);
    }
    let volumes = seq_mut(spec, "volumes").ok_or_else(|| shape("spec.volumes"))?;
    for volume in self::volumes(&sources, options.mesh) {
        volumes.push(volume);
    }
    let annotations =
        map_mut(metadata, "annotations").ok_or_else(|| shape("metadata.annotations"))?;
    let mode = match (options.mesh, sources.mode) {
        (Mesh::Istio, _) => "istio",
        (Mesh::None, Mode::Sidecar) => "envoy",
        (Mesh::None, Mode::InProcess) => "inprocess",
    };
    annotations.insert(annotations::INJECTED.into(), mode.into());
    // A label (annotations cannot be selected on): NetworkPolicies let
    // only pods with a sidecar reach central (k8s/overlays/prod).
    let labels = map_mut(metadata, "labels").ok_or_else(|| shape("metadata.labels"))?;
    labels.insert(SIDECAR_LABEL.into(), "true".into());
    Ok(Outcome::Injected(injected))
}

/// The pod's annotations as strings (a non-string value is refused: the
/// API server would refuse it too).
fn read_annotations(
    metadata: &Mapping,
    workload: &str,
) -> Result<std::collections::BTreeMap<String, String>, InjectError> {
    let mut read = std::collections::BTreeMap::new();
    let Some(annotations) = metadata.get("annotations") else {
        return Ok(read);
    };
    if annotations.is_null() {
        return Ok(read);
    }
    let shape = |path: String| InjectError::Shape {
        workload: workload.to_string(),
        path,
    };
    let annotations = annotations
        .as_mapping()
        .ok_or_else(|| shape("metadata.annotations".into()))?;
    for (key, value) in annotations {
        let Some(key) = key.as_str() else {
            return Err(shape("metadata.annotations".into()));
        };
        if !key.starts_with("sentinelnet.io/") {
            continue;
        }
        let value = value
            .as_str()
            .ok_or_else(|| shape(format!("metadata.annotations.{key} (a string)")))?;
        read.insert(key.to_string(), value.to_string());
    }
    Ok(read)
}

fn has_sentinel_container(spec: &Mapping) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_sequence)
            .is_some_and(|containers| {
                containers
                    .iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some("sentinelnet"))
            })
    })
}

/// Annotations first, then flags; within each, `bundle` before `central`
/// with `bundle-name`.
fn sources(
    annotations: &std::collections::BTreeMap<String, String>,
    options: &Options,
    workload: &str,
) -> Result<Sources, InjectError> {
    let annotated = |key: &str| annotations.get(key).cloned();
    let central = annotated(annotations::CENTRAL).or_else(|| options.central.clone());
    if let Some(central) = &central {
        super::check_central(central).map_err(|message| InjectError::Annotation {
            workload: workload.to_string(),
            key: annotations::CENTRAL,
            message,
        })?;
    }
    let name = annotated(annotations::BUNDLE_NAME).or_else(|| options.bundle_name.clone());
    if let Some(name) = &name {
        super::check_bundle_name(name).map_err(|message| InjectError::Annotation {
            workload: workload.to_string(),
            key: annotations::BUNDLE_NAME,
            message,
        })?;
    }
    let from_central = || match (&central, &name) {
        (Some(central), Some(name)) => Some(format!(
            "{}/v1/bundles/{name}",
            central.trim_end_matches('/')
        )),
        _ => None,
    };
    let annotated_central = annotations.contains_key(annotations::CENTRAL)
        || annotations.contains_key(annotations::BUNDLE_NAME);
    let bundle = annotated(annotations::BUNDLE)
        .or_else(|| annotated_central.then(from_central).flatten())
        .or_else(|| options.bundle.clone())
        .or_else(from_central)
        .ok_or_else(|| match &name {
            Some(name) if central.is_none() => InjectError::NoCentral {
                workload: workload.to_string(),
                name: name.clone(),
            },
            _ => InjectError::NoBundle {
                workload: workload.to_string(),
            },
        })?;
    let principal_from =
        annotated(annotations::PRINCIPAL_FROM).or_else(|| options.principal_from.clone());
    if let Some(source) = &principal_from {
        source
            .parse::<crate::authz::IdentitySource>()
            .map_err(|e| InjectError::Annotation {
                workload: workload.to_string(),
                key: annotations::PRINCIPAL_FROM,
                message: e.to_string(),
            })?;
    }
    let mode = match annotated(annotations::MODE).as_deref() {
        None => options.mode,
        Some("sidecar") => Mode::Sidecar,
        Some("inprocess") => Mode::InProcess,
        Some(other) => {
            return Err(InjectError::Annotation {
                workload: workload.to_string(),
                key: annotations::MODE,
                message: format!("{other:?} is not a mode: use sidecar or inprocess"),
            })
        }
    };
    Ok(Sources {
        bundle,
        central,
        principal_from,
        mode,
    })
}

/// One declared container port.
#[derive(Debug, Clone)]
struct Port {
    number: u16,
    name: Option<String>,
    /// Declared in an init container (never the app port).
    init: bool,
    /// TCP (Envoy fronts only TCP).
    tcp: bool,
    /// The app speaks HTTP/2 in clear text (gRPC, h2c): by `appProtocol`,
    /// or Istio's naming convention (`grpc…`, `http2…`, `h2c…`).
    http2: bool,
}

fn container_ports(spec: &Mapping) -> Vec<Port> {
    let mut ports = Vec::new();
    for list in ["containers", "initContainers"] {
        for container in spec
            .get(list)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            for port in container
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let Some(number) = port
                    .get("containerPort")
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                else {
                    continue;
                };
                let name = port.get("name").and_then(Value::as_str).map(String::from);
                let tcp = port
                    .get("protocol")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p == "TCP");
                let app_protocol = port.get("appProtocol").and_then(Value::as_str);
                let http2 = matches!(app_protocol, Some("kubernetes.io/h2c" | "grpc" | "h2c"))
                    || name
                        .as_deref()
                        .is_some_and(|n| ["grpc", "http2", "h2c"].iter().any(|p| n.starts_with(p)));
                ports.push(Port {
                    number,
                    name,
                    init: list == "initContainers",
                    tcp,
                    http2,
                });
            }
        }
    }
    ports
}

/// The app port: the one `sentinelnet.io/port` names (by name or number),
/// else the first container's first port.
fn app_port(ports: &[Port], requested: Option<&str>, workload: &str) -> Result<Port, InjectError> {
    let mut candidates = ports.iter().filter(|p| !p.init && p.tcp);
    let found = match requested {
        Some(wanted) => candidates.find(|p| {
            p.name.as_deref() == Some(wanted) || wanted.parse::<u16>().ok() == Some(p.number)
        }),
        None => candidates.next(),
    };
    found.cloned().ok_or_else(|| match requested {
        Some(wanted) => InjectError::Annotation {
            workload: workload.to_string(),
            key: annotations::PORT,
            message: format!("no container declares the port {wanted:?}"),
        },
        None => InjectError::NoPort {
            workload: workload.to_string(),
        },
    })
}

/// `app-<name>`, within the 15 characters a port name may have.
pub fn app_port_name(name: &str) -> String {
    let mut renamed = format!("app-{name}");
    renamed.truncate(15);
    renamed.trim_end_matches('-').to_string()
}

/// Rename the port `from` to `to` in the containers that declare it, and in
/// their probes (a probe by name would otherwise follow the name to Envoy
/// and be decided by policy).
fn rename_port(spec: &mut Mapping, from: &str, to: &str) {
    let Some(containers) = spec.get_mut("containers").and_then(Value::as_sequence_mut) else {
        return;
    };
    for container in containers {
        let Some(container) = container.as_mapping_mut() else {
            continue;
        };
        for port in container
            .get_mut("ports")
            .and_then(Value::as_sequence_mut)
            .into_iter()
            .flatten()
        {
            if let Some(name) = port.get_mut("name") {
                if name.as_str() == Some(from) {
                    *name = Value::from(to);
                }
            }
        }
        let mut handlers: Vec<&mut Value> = Vec::new();
        for (key, value) in container.iter_mut() {
            match key.as_str() {
                Some("livenessProbe" | "readinessProbe" | "startupProbe") => handlers.push(value),
                Some("lifecycle") => {
                    if let Some(hooks) = value.as_mapping_mut() {
                        for (hook, handler) in hooks.iter_mut() {
                            if matches!(hook.as_str(), Some("postStart" | "preStop")) {
                                handlers.push(handler);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for handler in handlers {
            for action in ["httpGet", "tcpSocket"] {
                let port = handler.get_mut(action).and_then(|a| a.get_mut("port"));
                if let Some(port) = port {
                    if port.as_str() == Some(from) {
                        *port = Value::from(to);
                    }
                }
            }
        }
    }
}

/// A generated container, in the usual Kubernetes field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: &'static str,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<Value>,
    ports: Vec<Value>,
    /// `Always` makes an init container a native sidecar (Jobs).
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
fn is_registry(url: &str) -> bool {
    is_https(url) || url.starts_with("http://")
}

/// The names inject adds must be free: two containers or volumes of one
/// name, or a port name used twice, and the API server refuses the pod.
fn check_names(spec: &Mapping, mesh: Mesh, workload: &str) -> Result<(), InjectError> {
    let taken = |list: &str, name: &str| {
        spec.get(list)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .any(|item| item.get("name").and_then(Value::as_str) == Some(name))
    };
    if mesh == Mesh::None && (taken("containers", "envoy") || taken("initContainers", "envoy")) {
        return Err(InjectError::NameTaken {
            workload: workload.to_string(),
            what: "container",
            name: "envoy".into(),
        });
    }
    for volume in [
        "sentinelnet-socket",
        "sentinelnet-spool",
        "sentinelnet-tls",
        "sentinelnet-keys",
        "sentinelnet-bundle",
    ] {
        if taken("volumes", volume) {
            return Err(InjectError::NameTaken {
                workload: workload.to_string(),
                what: "volume",
                name: volume.into(),
            });
        }
    }
    let ports = container_ports(spec);
    for name in [ADMIN_PORT_NAME] {
        if ports.iter().any(|p| p.name.as_deref() == Some(name)) {
            return Err(InjectError::NameTaken {
                workload: workload.to_string(),
                what: "port",
                name: name.into(),
            });
        }
    }
    Ok(())
}

fn sentinel_container(
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
fn module_config(sources: &Sources) -> String {
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

fn envoy_container(
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

fn volumes(sources: &Sources, mesh: Mesh) -> Vec<Value> {
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

fn to_value(container: &Container) -> Result<Value, InjectError> {
    serde_yaml_ng::to_value(container).map_err(|e| InjectError::Internal(e.to_string()))
}

/// The mapping under `key`, created when absent or null.
pub(super) fn map_mut<'a>(parent: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let entry = parent.entry(key.into()).or_insert(Value::Null);
    if entry.is_null() {
        *entry = Value::Mapping(Mapping::new());
    }
    entry.as_mapping_mut()
}

/// The sequence under `key`, created when absent or null.
fn seq_mut<'a>(parent: &'a mut Mapping, key: &str) -> Option<&'a mut Vec<Value>> {
    let entry = parent.entry(key.into()).or_insert(Value::Null);
    if entry.is_null() {
        *entry = Value::Sequence(Vec::new());
    }
    entry.as_sequence_mut()
}
