//! `sentinelnet inject` over a YAML stream: find every pod template in the
//! documents (every workload kind, inside `List`s too), mutate it with
//! [`super::pod::inject`], and warn about Services that would bypass Envoy.

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::pod::{self, Outcome};
use super::{InjectError, Options};

/// The printed result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The documents, `---`-separated, with the sidecars added.
    pub yaml: String,
    /// For stderr: Services targeting an app port by number, unnamed ports.
    pub warnings: Vec<String>,
    /// Pod templates mutated this time (0 on a second run).
    pub injected: usize,
}

/// A pod template that now has Envoy in front of `app_port`.
struct TakenOver {
    workload: String,
    namespace: Option<String>,
    labels: Mapping,
    app_port: u16,
    port_name: String,
}

/// Kinds whose pod template is at `spec.template`.
const TEMPLATE_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
];

/// Inject every pod template in `text` (several documents, `List`s).
pub fn inject_yaml(text: &str, options: &Options) -> Result<Injection, InjectError> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let mut value = Value::deserialize(document).map_err(|e| InjectError::Yaml {
            document: index + 1,
            message: e.to_string(),
        })?;
        octal_modes(&mut value);
        documents.push(value);
    }
    let mut taken = Vec::new();
    let mut warnings = Vec::new();
    let mut injected = 0;
    for document in &mut documents {
        visit(document, options, &mut taken, &mut warnings, &mut injected)?;
    }
    for document in &documents {
        services(document, &taken, &mut warnings);
    }
    let mut yaml = String::new();
    for document in documents.iter().filter(|d| !d.is_null()) {
        if !yaml.is_empty() {
            yaml.push_str("---\n");
        }
        let text =
            serde_yaml_ng::to_string(document).map_err(|e| InjectError::Internal(e.to_string()))?;
        yaml.push_str(&text);
    }
    Ok(Injection {
        yaml,
        warnings,
        injected,
    })
}

/// File modes written the usual way (`defaultMode: 0400`) are octal numbers
/// to Kubernetes (YAML 1.1), but a YAML 1.2 reader keeps them as the
/// string "0400", which would be printed quoted and refused by the API
/// server. Turn them back into the numbers Kubernetes reads.
fn octal_modes(value: &mut Value) {
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping.iter_mut() {
                let is_mode = matches!(key.as_str(), Some("defaultMode" | "mode"));
                let octal = child
                    .as_str()
                    .filter(|text| text.len() > 1 && text.starts_with('0'))
                    .and_then(|text| u32::from_str_radix(&text[1..], 8).ok());
                match octal {
                    Some(number) if is_mode => *child = Value::from(number),
                    _ => octal_modes(child),
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// `Kind/name` (or `generateName`) for messages.
pub fn workload_name(object: &Value) -> String {
    let metadata = object.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    format!("{}/{name}", kind(object))
}

fn visit(
    object: &mut Value,
    options: &Options,
    taken: &mut Vec<TakenOver>,
    warnings: &mut Vec<String>,
    injected: &mut usize,
) -> Result<(), InjectError> {
    let kind = kind(object).to_string();
    let workload = workload_name(object);
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(String::from);
    let shape = |path: &str| InjectError::Shape {
        workload: workload.clone(),
        path: path.to_string(),
    };
    let template = if kind == "List" || (kind.ends_with("List") && object.get("items").is_some()) {
        let items = object
            .get_mut("items")
            .and_then(Value::as_sequence_mut)
            .ok_or_else(|| shape("items"))?;
        for item in items {
            visit(item, options, taken, warnings, injected)?;
        }
        return Ok(());
    } else if kind == "Pod" {
        Some(object)
    } else if TEMPLATE_KINDS.contains(&kind.as_str()) {
        object.get_mut("spec").and_then(|s| s.get_mut("template"))
    } else if kind == "CronJob" {
        object
            .get_mut("spec")
            .and_then(|s| s.get_mut("jobTemplate"))
            .and_then(|j| j.get_mut("spec"))
            .and_then(|s| s.get_mut("template"))
    } else {
        return Ok(());
    };
    let template = template
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| shape("the pod template"))?;
    let Some(outcome) = inject_template(template, options, &workload)? else {
        return Err(shape("spec"));
    };
    if let Outcome::Injected(done) = outcome {
        *injected += 1;
        warnings.extend(done.warnings);
        if let (Some(app_port), Some(port_name)) = (done.app_port, done.port_name) {
            let labels = template
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default();
            taken.push(TakenOver {
                workload,
                namespace,
                labels,
                app_port,
                port_name,
            });
        }
    }
    Ok(())
}

/// Mutate a mapping holding `metadata` and `spec` (a Pod, or a template);
/// `None` when it has no `spec`.
pub fn inject_template(
    template: &mut Mapping,
    options: &Options,
    workload: &str,
) -> Result<Option<Outcome>, InjectError> {
    // Both fields are edited at once: lift metadata out and put it back in
    // its place (a template without metadata gets it at the end).
    let mut metadata = template
        .get_mut("metadata")
        .map(std::mem::take)
        .unwrap_or(Value::Null);
    let outcome = template
        .get_mut("spec")
        .map(|spec| pod::inject(&mut metadata, spec, options, workload));
    match template.get_mut("metadata") {
        Some(slot) => *slot = metadata,
        None if metadata.as_mapping().is_some_and(|m| !m.is_empty()) => {
            template.insert("metadata".into(), metadata);
        }
        None => {}
    }
    outcome.transpose()
}

/// Warn about Service ports selecting a taken-over pod and targeting the
/// app port by number: that traffic goes to the app, past Envoy.
fn services(object: &Value, taken: &[TakenOver], warnings: &mut Vec<String>) {
    if kind(object).ends_with("List") {
        for item in object
            .get("items")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            services(item, taken, warnings);
        }
        return;
    }
    if kind(object) != "Service" {
        return;
    }
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let Some(selector) = object
        .get("spec")
        .and_then(|s| s.get("selector"))
        .and_then(Value::as_mapping)
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let service = workload_name(object);
    for pod in taken {
        // No namespace on either side: the one kubectl applies to.
        let same_namespace = match (pod.namespace.as_deref(), namespace) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if !same_namespace || !selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)) {
            continue;
        }
        for port in object
            .get("spec")
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let number = |v: &Value| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            };
            let target = port
                .get("targetPort")
                .map(number)
                .unwrap_or_else(|| port.get("port").and_then(number));
            if target == Some(u64::from(pod.app_port)) {
                let shown = port.get("port").and_then(number).unwrap_or_default();
                warnings.push(format!(
                    "{service}: port {shown} targets port {} of {} by number, which bypasses Envoy; set targetPort: {}",
                    pod.app_port, pod.workload, pod.port_name
                ));
            }
        }
    }
}
