//! `k8s/`: every kustomization renders (kustomize 4.5.4), every object it
//! renders and every `inject` output validates strictly against the
//! Kubernetes 1.33 API schemas (kubernetes-validate), the containers run
//! flags the binary has, and the pieces that must agree do: the webhook and
//! the injector's Service, the namespace label and the webhook's selector,
//! the NetworkPolicies and the label inject adds, Istio's provider and the
//! sidecar's port.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::{kubernetes_validate_bin, kustomize_bin, repo, sentinelnet};

/// The Kubernetes version the manifests are checked against (native
/// sidecars, used for Jobs, are GA from 1.33).
const KUBERNETES: &str = "1.33.0";

fn documents(yaml: &str) -> Vec<Value> {
    support::yaml_documents(yaml)
}

fn render(dir: &str) -> Vec<Value> {
    let out = Command::new(kustomize_bin())
        .arg("build")
        .arg(repo().join(dir))
        .output()
        .expect("kustomize");
    assert!(
        out.status.success(),
        "kustomize build {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8_lossy(&out.stdout))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn inject(file: &Path, flags: &[&str]) -> Vec<Value> {
    let out = Command::new(sentinelnet())
        .arg("inject")
        .arg(file)
        .args(flags)
        .output()
        .expect("inject");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8_lossy(&out.stdout))
}

/// Validate `docs` strictly; the error text on failure.
fn validate(docs: &[Value], dir: &Path, name: &str) -> Result<(), String> {
    let file = dir.join(format!("{name}.yaml"));
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("yaml"))
        .collect();
    std::fs::write(&file, text.join("---\n")).expect("write");
    let out = Command::new(kubernetes_validate_bin())
        .args(["--kubernetes-version", KUBERNETES, "--strict"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // A kind without a schema is only a warning there: here it is an error.
    if out.status.success() && !stdout.contains("WARN") {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Items of `List`s (and `ServiceList`s…) as documents of their own.
fn flatten(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .flat_map(|d| match d["kind"].as_str() {
            Some(kind) if kind.ends_with("List") => {
                d["items"].as_array().cloned().unwrap_or_default()
            }
            _ => vec![d],
        })
        .collect()
}

#[test]
fn every_rendered_manifest_and_inject_output_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for overlay in [
        "k8s",
        "k8s/overlays/dev",
        "k8s/overlays/prod",
        "k8s/observability",
    ] {
        let docs = render(overlay);
        checked += docs.len();
        validate(&docs, dir.path(), &overlay.replace('/', "-"))
            .unwrap_or_else(|e| panic!("{overlay}: {e}"));
    }
    // What the webhook would make of the Kernel, and the golden outputs.
    let kernel = inject(
        &repo().join("k8s/base/kernel/kernel.yaml"),
        &["--central", "https://sentinel-central.sentinel.svc:8443"],
    );
    checked += kernel.len();
    validate(&kernel, dir.path(), "kernel-injected").unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(repo().join("tests/inject")).expect("tests/inject") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().ends_with(".out.yaml") {
            let docs = flatten(documents(&std::fs::read_to_string(&path).expect("golden")));
            checked += docs.len();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .replace('.', "-");
            validate(&docs, dir.path(), &name)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    assert!(checked >= 40, "validated {checked} objects");

    // Strict validation does catch mistakes: a misspelt field, a wrong type.
    let mut misspelt = find(
        &render("k8s/overlays/dev"),
        "Deployment",
        "sentinel-central",
    )
    .clone();
    misspelt["spec"]["replica"] = json!(2);
    assert!(validate(&[misspelt], dir.path(), "misspelt").is_err());
    let mut wrong_type = kernel
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("kernel");
    wrong_type["spec"]["template"]["spec"]["containers"][1]["ports"][0]["containerPort"] =
        json!("admin");
    assert!(validate(&[wrong_type], dir.path(), "wrong-type").is_err());
}

/// Every `--flag` and `SENTINEL_*` variable the containers pass exists in
/// the binary's CLI, so a renamed flag cannot leave a manifest that
/// crash-loops.
#[test]
fn containers_use_flags_the_binary_has() {
    let mut docs = render("k8s/overlays/prod");
    docs.extend(render("k8s/overlays/dev"));
    docs.extend(inject(
        &repo().join("k8s/base/kernel/kernel.yaml"),
        &["--central", "https://sentinel-central.sentinel.svc:8443"],
    ));
    let mut checked = std::collections::BTreeSet::new();
    for doc in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        for container in containers {
            if !container["image"]
                .as_str()
                .unwrap_or("")
                .contains("sentinelnet")
            {
                continue;
            }
            let args: Vec<&str> = container["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let command = args[0];
            let help = Command::new(sentinelnet())
                .args([command, "--help"])
                .output()
                .expect("help");
            let help = String::from_utf8_lossy(&help.stdout);
            for arg in &args[1..] {
                let flag = arg.split('=').next().unwrap_or(arg);
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "{flag} is not a flag of `sentinelnet {command}`"
                );
            }
            for env in container["env"].as_array().into_iter().flatten() {
                let name = env["name"].as_str().expect("name");
                if name.starts_with("SENTINEL_") {
                    assert!(
                        help.contains(&format!("env: {name}=")),
                        "{name} is not read by `sentinelnet {command}`"
                    );
                }
            }
            checked.insert(command.to_string());
        }
    }
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        ["central", "injector", "serve"],
        "central, the injector and the injected sidecar"
    );
    let rbac: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("k8s/base/central/rbac.json")).expect("rbac"),
    )
    .expect("rbac.json is an identity → roles map");
    for role in rbac.values().flatten() {
        assert!(
            ["sidecar", "publisher", "approver", "admin"].contains(&role.as_str()),
            "unknown role {role}"
        );
    }
}

#[test]
fn overlays_choose_the_store_replicas_and_policies() {
    let dev = render("k8s/overlays/dev");
    let central = find(&dev, "Deployment", "sentinel-central");
    assert_eq!(central["spec"]["replicas"], 1);
    assert_eq!(central["spec"]["strategy"]["type"], "Recreate");
    let env = &central["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.to_string()
            .contains("sqlite:///var/lib/sentinel/central.db"),
        "{env}"
    );
    find(&dev, "PersistentVolumeClaim", "sentinel-central-store");
    assert_eq!(render("k8s"), dev, "k8s/ is the dev overlay");

    let prod = render("k8s/overlays/prod");
    let central = find(&prod, "Deployment", "sentinel-central");
    assert!(central["spec"]["replicas"].as_u64() >= Some(2));
    let env = &central["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.to_string().contains("SENTINEL_CENTRAL_DB_FILE"),
        "{env}"
    );
    assert!(
        !prod.iter().any(|d| d.to_string().contains("sqlite")),
        "no SQLite in prod"
    );
    for (kind, name) in [
        ("PodDisruptionBudget", "sentinel-central"),
        ("PodDisruptionBudget", "sentinelnet-injector"),
        ("PodDisruptionBudget", "kernel"),
        ("HorizontalPodAutoscaler", "kernel"),
    ] {
        find(&prod, kind, name);
    }
    let hpa = find(&prod, "HorizontalPodAutoscaler", "kernel");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "kernel");

    // Only pods with the label inject adds (and operators) reach central;
    // only central reaches PostgreSQL.
    let injected = inject(&repo().join("tests/inject/istio.yaml"), &["--bundle", "/b"]);
    let labels = &injected[0]["spec"]["template"]["metadata"]["labels"];
    let central_policy = find(&prod, "NetworkPolicy", "sentinel-central");
    let from = &central_policy["spec"]["ingress"][0]["from"];
    let sidecar_selector = from[0]["podSelector"]["matchLabels"]
        .as_object()
        .expect("labels");
    for (key, value) in sidecar_selector {
        assert_eq!(&labels[key], value, "inject adds {key}={value}");
    }
    assert_eq!(
        central_policy["spec"]["ingress"][0]["ports"][0]["port"],
        8443
    );
    let postgres = find(&prod, "NetworkPolicy", "postgresql-from-central");
    assert_eq!(
        postgres["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"],
        "sentinel-central"
    );
    find(&prod, "NetworkPolicy", "default-deny-ingress");

    // Everything that runs is hardened.
    for doc in prod.iter().filter(|d| d["kind"] == "Deployment") {
        for container in doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
        {
            let security = &container["securityContext"];
            let name = &container["name"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{name}"
            );
        }
    }
}

#[test]
fn webhook_configuration_reaches_the_injector() {
    let docs = render("k8s/overlays/prod");
    let webhook = find(
        &docs,
        "MutatingWebhookConfiguration",
        "sentinelnet-injector",
    );
    let hook = &webhook["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
    let service_ref = &hook["clientConfig"]["service"];
    assert_eq!(service_ref["path"], "/inject");
    let service = find(
        &docs,
        "Service",
        service_ref["name"].as_str().expect("name"),
    );
    assert_eq!(service["metadata"]["namespace"], service_ref["namespace"]);
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["port"], service_ref["port"]);
    let deployment = find(&docs, "Deployment", "sentinelnet-injector");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["name"], port["targetPort"]);
    let addr = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--addr="))
        .expect("--addr");
    assert!(
        addr.ends_with(&format!(":{}", container["ports"][0]["containerPort"])),
        "{addr}"
    );
    // The Kernel's namespace carries the label the webhook selects, the
    // injector's own does not (it must never wait on itself).
    let selector = hook["namespaceSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let namespace = |name: &str| find(&docs, "Namespace", name)["metadata"]["labels"].clone();
    for (key, value) in selector {
        assert_eq!(&namespace("kernel")[key], value);
        assert_ne!(&namespace("sentinel")[key], value);
    }

    // Enforcement: in the Kernel's namespace no pod runs without the
    // container inject adds (opting out is refused there).
    let policy = find(&docs, "ValidatingAdmissionPolicy", "sentinelnet-required");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let expression = policy["spec"]["validations"][0]["expression"]
        .as_str()
        .expect("CEL");
    let injected = inject(&repo().join("tests/inject/istio.yaml"), &["--bundle", "/b"]);
    let names: Vec<&str> = injected[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"sentinelnet"));
    assert!(
        expression.contains("c.name == 'sentinelnet'") && expression.contains("initContainers")
    );
    let binding = find(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "sentinelnet-required",
    );
    assert_eq!(binding["spec"]["policyName"], "sentinelnet-required");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    let enforce = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (key, value) in enforce {
        assert_eq!(&namespace("kernel")[key], value);
        assert_ne!(
            &namespace("sentinel")[key],
            value,
            "never the injector's own namespace"
        );
    }
}

/// Istio's extension provider reaches the port `inject --mesh istio` gives
/// the sidecar, through the ServiceEntry, for the pods the
/// AuthorizationPolicy selects.
#[test]
fn istio_provider_reaches_the_injected_sidecar() {
    let docs = render("k8s/istio");
    let mesh = documents(
        &std::fs::read_to_string(repo().join("k8s/istio/mesh-config.yaml")).expect("mesh"),
    );
    let provider = &mesh[0]["spec"]["meshConfig"]["extensionProviders"][0];
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(grpc["failOpen"], false);
    let policy = find(&docs, "AuthorizationPolicy", "sentinelnet");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    let entry = find(&docs, "ServiceEntry", "sentinelnet-local");
    assert_eq!(entry["spec"]["hosts"][0], grpc["service"]);
    assert_eq!(entry["spec"]["endpoints"][0]["address"], "127.0.0.1");
    assert_eq!(entry["spec"]["ports"][0]["number"], grpc["port"]);

    let injected = inject(
        &repo().join("tests/inject/istio.yaml"),
        &["--mesh", "istio", "--bundle", "/b"],
    );
    let template = &injected[0]["spec"]["template"];
    let containers = template["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert!(
        !containers.iter().any(|c| c["name"] == "envoy"),
        "Istio brings its own Envoy"
    );
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == "sentinelnet")
        .expect("sidecar");
    let addr = sidecar["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--grpc-addr="))
        .expect("--grpc-addr");
    assert_eq!(addr, format!("127.0.0.1:{}", grpc["port"]));
    for (key, value) in policy["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &template["metadata"]["labels"][key], value,
            "the policy selects injected pods"
        );
    }
}

/// The image is not built here (no container engine, and no registry to
/// pull base images from): its Dockerfile is checked for what the
/// manifests rely on instead.
#[test]
fn dockerfile_is_multi_stage_pinned_non_root_and_ships_both_artifacts() {
    let text = std::fs::read_to_string(repo().join("k8s/Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        3,
        "build, Envoy with the module, runtime: {froms:?}"
    );
    for from in &froms {
        assert!(
            !from.contains(":latest") && from.contains(':'),
            "unpinned: {from}"
        );
    }
    assert!(
        text.contains("ARG RUST_VERSION=1."),
        "the toolchain is pinned"
    );
    assert!(text.contains("cargo build --release --locked"));
    // The user the manifests run as (runAsUser 65532), numerically.
    assert!(text.contains("\nUSER 65532:65532\n"));
    let manifests = render("k8s/overlays/prod");
    let central = find(&manifests, "Deployment", "sentinel-central");
    assert_eq!(
        central["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        65532
    );
    assert!(
        text.contains("/usr/local/bin/sentinelnet") && text.contains("libsentinelnet_envoy.so")
    );
    // The in-process Envoy image has the module where inject looks for it.
    assert!(text.contains(&format!(
        "ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH={}\n",
        sentinelnet::inject::sidecars::MODULE_DIR
    )));
    assert!(
        text.contains(&sentinelnet::inject::default_inprocess_envoy_image().replace(":0.1.0", ":"))
    );
    for secret in ["PASSWORD", "TOKEN", "SECRET", ".key "] {
        assert!(!text.contains(secret), "{secret:?} in the Dockerfile");
    }
    let ignore =
        std::fs::read_to_string(repo().join("k8s/Dockerfile.dockerignore")).expect("dockerignore");
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == "**/*.key"));
}
