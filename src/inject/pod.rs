//! The mutation of one pod (a Pod, or the template of a workload): read
//! its annotations, choose the app port and take over its name, refuse
//! what cannot work, and add the containers and volumes of
//! [`super::sidecars`] and the annotation that makes a second run a no-op.
//!
//! The YAML tree is edited in place (`serde_yaml_ng` mappings keep their
//! order), so every field the mutation does not own is kept as it was.

use serde_yaml_ng::{Mapping, Value};

use super::envoy::{self, Authz, EnvoyPlan};
use super::sidecars::{
    self, envoy_container, module_config, sentinel_container, Sources, ADMIN_PORT, ADMIN_PORT_NAME,
    ISTIO_GRPC_ADDR, ISTIO_GRPC_PORT, SOCKET,
};
use super::{annotations, InjectError, Mesh, Mode, Options};

/// The label of injected pods.
pub const SIDECAR_LABEL: &str = "sentinelnet.io/sidecar";
/// First port tried for Envoy's listener.
pub const ENVOY_PORT: u16 = 10000;

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
    let sources = sources(
        &annotations,
        default_bundle_name(metadata, workload),
        options,
        workload,
    )?;
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
        containers.push(sidecars::to_value(&sidecar)?);
    }
    let volumes = seq_mut(spec, "volumes").ok_or_else(|| shape("spec.volumes"))?;
    for volume in sidecars::volumes(&sources, options.mesh) {
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

/// The bundle a pod pulls when nothing names one: the one named after the
/// app (its `app.kubernetes.io/name` or `app` label, else the workload's
/// name; never a `generateName` prefix).
fn default_bundle_name(metadata: &Mapping, workload: &str) -> Option<String> {
    let labels = metadata.get("labels");
    ["app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|key| labels.and_then(|l| l.get(*key)).and_then(Value::as_str))
        .or_else(|| workload.split_once('/').map(|(_, name)| name))
        .filter(|name| !name.ends_with('-') && super::check_bundle_name(name).is_ok())
        .map(String::from)
}

/// Annotations first, then flags; within each, `bundle` before `central`
/// with `bundle-name`; with none of them, the bundle named after the app
/// from central at its in-cluster address (where `k8s/` deploys it).
fn sources(
    annotations: &std::collections::BTreeMap<String, String>,
    default_name: Option<String>,
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
    let chosen = annotated(annotations::BUNDLE)
        .or_else(|| annotated_central.then(from_central).flatten())
        .or_else(|| options.bundle.clone())
        .or_else(from_central);
    let (bundle, central) = match chosen {
        Some(bundle) => (bundle, central),
        None => {
            let central = central.unwrap_or_else(|| super::DEFAULT_CENTRAL.to_string());
            let name = name.or(default_name).ok_or_else(|| InjectError::NoBundle {
                workload: workload.to_string(),
            })?;
            let bundle = format!("{}/v1/bundles/{name}", central.trim_end_matches('/'));
            (bundle, Some(central))
        }
    };
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
    if container_ports(spec)
        .iter()
        .any(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
    {
        return Err(InjectError::NameTaken {
            workload: workload.to_string(),
            what: "port",
            name: ADMIN_PORT_NAME.into(),
        });
    }
    Ok(())
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
