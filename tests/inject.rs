//! `sentinelnet inject` and `sentinelnet injector` (SPEC §10): golden files
//! for every workload kind, properties (a second run changes nothing;
//! everything but the sidecars is kept), the generated Envoy config through
//! `envoy --mode validate`, the webhook's JSONPatch applied to the pod, and
//! an injected pod's containers run on this host with requests through them.
//!
//! Golden files: `tests/inject/NAME.yaml` with `NAME.flags` is expected to
//! print `NAME.out.yaml` and warn `NAME.stderr`; `SENTINEL_UPDATE_GOLDEN=1`
//! rewrites them (review the diff).

mod support;

use proptest::prelude::*;
use sentinelnet::inject::{inject_yaml, Mesh, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{free_port, repo, sentinelnet, wait_until, Proc};

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/inject"))
        .expect("tests/inject")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "flags"))
        .map(|p| p.with_extension(""))
        .collect();
    cases.sort();
    cases
}

fn run_inject(input: &Path, flags: &[&str]) -> std::process::Output {
    Command::new(sentinelnet())
        .arg("inject")
        .arg(input)
        .args(flags)
        .output()
        .expect("sentinelnet inject runs")
}

fn flags_of(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.with_extension("flags"))
        .expect("flags")
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn golden(case: &Path, suffix: &str, actual: &str) {
    let path = PathBuf::from(format!("{}{suffix}", case.display()));
    if std::env::var_os("SENTINEL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (SENTINEL_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs (SENTINEL_UPDATE_GOLDEN=1 rewrites it; review the diff)",
        path.display()
    );
}

fn documents(yaml: &str) -> Vec<Value> {
    support::yaml_documents(yaml)
}

#[test]
fn golden_files_for_every_kind_and_option() {
    let cases = cases();
    assert!(cases.len() >= 4, "cases: {cases:?}");
    for case in cases {
        let flags = flags_of(&case);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = run_inject(&case.with_extension("yaml"), &flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", case.display());
        golden(&case, ".out.yaml", &String::from_utf8_lossy(&out.stdout));
        golden(&case, ".stderr", &stderr);

        // A second run over the output changes nothing and warns of nothing new.
        let again = run_inject(
            &PathBuf::from(format!("{}.out.yaml", case.display())),
            &flags,
        );
        assert!(again.status.success());
        assert_eq!(
            String::from_utf8_lossy(&again.stdout),
            String::from_utf8_lossy(&out.stdout),
            "{}: the second run changed the output",
            case.display()
        );
    }
}

/// What the golden files say, checked as properties a reader cares about.
#[test]
fn every_kind_gets_hardened_sidecars_and_the_port_takeover() {
    let out = run_inject(
        &repo().join("tests/inject/kinds.yaml"),
        &["--bundle", "https://bundles.example.com/kernel.tar.gz"],
    );
    assert!(out.status.success());
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    let pod_spec = |doc: &Value| -> Value {
        let kind = doc["kind"].as_str().unwrap_or("");
        match kind {
            "Pod" => doc["spec"].clone(),
            "CronJob" => doc["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone(),
            "List" => doc["items"][0]["spec"]["template"]["spec"].clone(),
            _ => doc["spec"]["template"]["spec"].clone(),
        }
    };
    let mut injected = 0;
    for doc in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or("list");
        let spec = pod_spec(doc);
        let jobs = matches!(doc["kind"].as_str(), Some("Job" | "CronJob"));
        let sidecars: Vec<&Value> = spec[if jobs { "initContainers" } else { "containers" }]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| matches!(c["name"].as_str(), Some("sentinelnet" | "envoy")))
            .collect();
        match name {
            "opted-out" => assert!(sidecars.is_empty(), "opted-out got {sidecars:?}"),
            "hand-wired" => {
                assert_eq!(sidecars.len(), 1, "the hand-written sidecar stays alone");
                assert_eq!(sidecars[0]["image"], "example.com/sentinelnet:custom");
            }
            _ => {
                injected += 1;
                assert_eq!(sidecars.len(), 2, "{name}: sentinelnet and envoy");
                for sidecar in &sidecars {
                    let security = &sidecar["securityContext"];
                    assert_eq!(security["runAsNonRoot"], true, "{name}");
                    assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                    assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
                    assert_eq!(
                        security["seccompProfile"]["type"], "RuntimeDefault",
                        "{name}"
                    );
                    assert!(
                        sidecar["resources"]["requests"]["memory"].is_string(),
                        "{name}"
                    );
                    assert!(
                        sidecar["resources"]["limits"]["memory"].is_string(),
                        "{name}"
                    );
                    if jobs {
                        assert_eq!(sidecar["restartPolicy"], "Always", "{name}: native sidecar");
                    }
                }
                let sentinel = sidecars[0];
                assert_eq!(sentinel["readinessProbe"]["httpGet"]["path"], "/readyz");
                assert_eq!(sentinel["livenessProbe"]["httpGet"]["path"], "/healthz");
                let args: Vec<&str> = sentinel["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    args.contains(&"--grpc-addr=unix:/run/sentinel/authz.sock"),
                    "{args:?}"
                );
                assert!(
                    args.contains(&"--trusted-keys=/etc/sentinel/keys"),
                    "{args:?}"
                );
                // The app's port gave its name to Envoy's.
                let app = &spec["containers"][0]["ports"][0];
                let app_name = app["name"].as_str().expect("app port name");
                let envoy_port = &sidecars[1]["ports"][0];
                assert_eq!(
                    format!("app-{}", envoy_port["name"].as_str().expect("name")),
                    app_name
                );
                assert_ne!(envoy_port["containerPort"], app["containerPort"]);
            }
        }
    }
    assert_eq!(
        injected, 7,
        "Pod, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List"
    );
}

/// With no bundle source given anywhere, a pod pulls the bundle named
/// after its app from central at its in-cluster address (where `k8s/`
/// deploys it), and ships its records there.
#[test]
fn no_flags_pull_the_app_bundle_from_the_in_cluster_central() {
    let out = run_inject(&repo().join("tests/inject/deployment.yaml"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    let sidecar = &containers_named(&docs, "sentinelnet")[0];
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let central = sentinelnet::inject::DEFAULT_CENTRAL;
    // The Deployment's pods are labelled app: kernel.
    assert!(
        args.contains(&format!("--bundle={central}/v1/bundles/kernel").as_str()),
        "{args:?}"
    );
    assert!(
        args.contains(&format!("--audit-url={central}/v1/audit/decisions").as_str()),
        "{args:?}"
    );
    // A label app.kubernetes.io/name wins over app; a local --bundle ships nowhere.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("named.yaml");
    std::fs::write(
        &file,
        std::fs::read_to_string(repo().join("tests/inject/istio.yaml"))
            .expect("input")
            .replace(
                "labels: {app: kernel}}",
                "labels: {app: kernel, app.kubernetes.io/name: kernel-api}}",
            ),
    )
    .expect("write");
    let docs = documents(&String::from_utf8_lossy(&run_inject(&file, &[]).stdout));
    let args = containers_named(&docs, "sentinelnet")[0]["args"].to_string();
    assert!(args.contains("/v1/bundles/kernel-api"), "{args}");
    let docs = documents(&String::from_utf8_lossy(
        &run_inject(&file, &["--bundle", "/b"]).stdout,
    ));
    let args = containers_named(&docs, "sentinelnet")[0]["args"].to_string();
    assert!(
        args.contains("--bundle=/b") && !args.contains("--audit-url"),
        "{args}"
    );
}

#[test]
fn stdin_and_dash_read_the_same_input() {
    let input = std::fs::read(repo().join("tests/inject/istio.yaml")).expect("input");
    let from_file = run_inject(
        &repo().join("tests/inject/istio.yaml"),
        &["--mesh", "istio", "--bundle", "/b"],
    );
    for args in [vec!["inject", "-"], vec!["inject"]] {
        let mut child = Command::new(sentinelnet())
            .args(&args)
            .args(["--mesh", "istio", "--bundle", "/b"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("inject");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &input).expect("write");
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success());
        assert_eq!(out.stdout, from_file.stdout, "{args:?}");
    }
}

#[test]
fn bad_input_is_one_line_naming_what_and_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let deployment = std::fs::read_to_string(repo().join("tests/inject/istio.yaml")).expect("in");
    let cases: Vec<(PathBuf, Vec<&str>, &str)> =
        vec![
        (
            write(
                "nobundle.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\nspec:\n  containers: [{name: web, image: w, ports: [{containerPort: 80}]}]\n",
            ),
            vec![],
            "Pod/web-: no bundle for the sidecar and no app name",
        ),
        (
            write("broken.yaml", &format!("{deployment}---\nkind: [unclosed\n")),
            vec!["--bundle", "/b"],
            "document 2: not YAML",
        ),
        (
            write(
                "port.yaml",
                &deployment.replace(
                    "metadata: {labels: {app: kernel}}",
                    "metadata: {labels: {app: kernel}, annotations: {sentinelnet.io/port: grpc}}",
                ),
            ),
            vec!["--bundle", "/b"],
            "annotation sentinelnet.io/port: no container declares the port \"grpc\"",
        ),
        (
            write(
                "noport.yaml",
                &deployment.replace("ports: [{containerPort: 8080, name: http}]", "args: [run]"),
            ),
            vec!["--bundle", "/b"],
            "Deployment/kernel: no container declares a port",
        ),
        (
            write(
                "clash.yaml",
                &deployment.replace("containerPort: 8080", "containerPort: 9192"),
            ),
            vec!["--bundle", "/b"],
            "port 9192 is taken in the pod",
        ),
        (
            write("shape.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: [1]\n"),
            vec!["--bundle", "/b"],
            "Pod/p: spec is not what Kubernetes expects there",
        ),
        (dir.path().join("missing.yaml"), vec!["--bundle", "/b"], "missing.yaml: cannot read"),
        (
            write(
                "host.yaml",
                &deployment.replace("      containers:", "      hostNetwork: true\n      containers:"),
            ),
            vec!["--bundle", "/b"],
            "Deployment/kernel: hostNetwork pods share the node's ports",
        ),
        (
            write(
                "envoy-named.yaml",
                &deployment.replace("- name: kernel\n", "- name: envoy\n"),
            ),
            vec!["--bundle", "/b"],
            "the pod already has a container named \"envoy\"",
        ),
        (
            write(
                "volume-named.yaml",
                &deployment.replace(
                    "      containers:",
                    "      volumes: [{name: sentinelnet-spool, emptyDir: {}}]\n      containers:",
                ),
            ),
            vec!["--bundle", "/b"],
            "the pod already has a volume named \"sentinelnet-spool\"",
        ),
        (
            write(
                "port-named.yaml",
                &deployment.replace(
                    "ports: [{containerPort: 8080, name: http}]",
                    "ports: [{containerPort: 8080, name: http}, {containerPort: 8081, name: app-http}]",
                ),
            ),
            vec!["--bundle", "/b"],
            "the pod already has a port named \"app-http\"",
        ),
        (
            write(
                "admin-named.yaml",
                &deployment.replace(
                    "ports: [{containerPort: 8080, name: http}]",
                    "ports: [{containerPort: 8080, name: http}, {containerPort: 8081, name: sentinel-admin}]",
                ),
            ),
            vec!["--bundle", "/b"],
            "the pod already has a port named \"sentinel-admin\"",
        ),
        (
            write(
                "mode.yaml",
                &deployment.replace(
                    "metadata: {labels: {app: kernel}}",
                    "metadata: {labels: {app: kernel}, annotations: {sentinelnet.io/mode: fast}}",
                ),
            ),
            vec!["--bundle", "/b"],
            "annotation sentinelnet.io/mode: \"fast\" is not a mode",
        ),
        (
            write("istio-inprocess.yaml", &deployment),
            vec!["--bundle", "/b", "--mesh", "istio", "--mode", "inprocess"],
            "inprocess needs the Envoy inject adds",
        ),
        (
            write("flag.yaml", &deployment),
            vec!["--central", "ftp://x", "--bundle-name", "k"],
            "is not an https:// URL",
        ),
    ];
    for (file, flags, expected) in cases {
        let out = run_inject(&file, &flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
        assert!(
            stderr.contains(expected),
            "{}: {stderr:?} lacks {expected:?}",
            file.display()
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty(), "nothing printed on error");
    }
}

/// The Envoy config of every injected pod in the golden files loads in the
/// real Envoy 1.40 (`--mode validate`).
#[test]
fn generated_envoy_config_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let keygen = Command::new(sentinelnet())
        .args(["keygen", "--name", "central", "--out"])
        .arg(&keys)
        .output()
        .expect("keygen");
    assert!(keygen.status.success());
    std::fs::remove_file(keys.join("central.key")).expect("only the public key stays");
    let mut validated = 0;
    for case in cases() {
        let out = std::fs::read_to_string(format!("{}.out.yaml", case.display())).expect("golden");
        for envoy in containers_named(&documents(&out), "envoy") {
            // In-process, the module loads (from this build) and reads its
            // trusted keys at validation: give it a directory with one.
            let args: Vec<String> = envoy["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| {
                    a.as_str().expect("string arg").replace(
                        sentinelnet::inject::sidecars::KEYS_DIR,
                        &keys.display().to_string(),
                    )
                })
                .collect();
            let status = Command::new(support::envoy_bin())
                .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", support::module_dir())
                .args(["--mode", "validate"])
                .args(&args)
                .args(["--base-id", &free_port().to_string()])
                .stdout(Stdio::null())
                .output()
                .expect("envoy runs");
            assert!(
                status.status.success(),
                "{}: envoy --mode validate: {}",
                case.display(),
                String::from_utf8_lossy(&status.stderr)
            );
            validated += 1;
        }
    }
    assert!(validated >= 8, "validated {validated} Envoy configs");
}

fn containers_named(docs: &[Value], name: &str) -> Vec<Value> {
    fn walk(value: &Value, name: &str, found: &mut Vec<Value>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "containers" || key == "initContainers" {
                        for c in child.as_array().into_iter().flatten() {
                            if c["name"] == name {
                                found.push(c.clone());
                            }
                        }
                    } else {
                        walk(child, name, found);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, name, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    docs.iter().for_each(|d| walk(d, name, &mut found));
    found
}

// ---------------------------------------------------------------- properties

fn options(mesh: Mesh, mode: sentinelnet::inject::Mode) -> Options {
    Options {
        bundle: Some("/etc/sentinel/bundle".into()),
        central: None,
        bundle_name: None,
        principal_from: None,
        image: "sentinelnet:test".into(),
        envoy_image: Some("envoy:test".into()),
        mesh,
        mode,
    }
}

/// Take out what inject adds: the sidecars, their volumes, the annotation,
/// and the app port's new name.
fn strip_injection(mut pod: Value) -> Value {
    let spec = &mut pod["spec"];
    let mut renamed = None;
    if let Some(containers) = spec["containers"].as_array_mut() {
        if let Some(envoy) = containers.iter().find(|c| c["name"] == "envoy") {
            renamed = envoy["ports"][0]["name"].as_str().map(String::from);
        }
        containers.retain(|c| !matches!(c["name"].as_str(), Some("sentinelnet" | "envoy")));
    }
    if let Some(volumes) = spec["volumes"].as_array_mut() {
        volumes.retain(|v| !v["name"].as_str().unwrap_or("").starts_with("sentinelnet-"));
    }
    if let Some(original) = renamed {
        let new = sentinelnet::inject::pod::app_port_name(&original);
        let text = serde_json::to_string(&pod).expect("json");
        let text = text.replace(&format!("\"{new}\""), &format!("\"{original}\""));
        pod = serde_json::from_str(&text).expect("json");
    }
    if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
        annotations.remove("sentinelnet.io/injected");
        // (The generated pods never have empty maps or lists of their own.)
        if annotations.is_empty() {
            pod["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    if let Some(labels) = pod["metadata"]["labels"].as_object_mut() {
        labels.remove("sentinelnet.io/sidecar");
        if labels.is_empty() {
            pod["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if pod["spec"]["volumes"].as_array().is_some_and(Vec::is_empty) {
        pod["spec"].as_object_mut().map(|m| m.remove("volumes"));
    }
    pod
}

fn arb_pod() -> impl Strategy<Value = Value> {
    let port = (1024u16..9000, proptest::option::of("[a-z]{1,8}"));
    let container = (
        "[a-z]{1,6}",
        proptest::collection::vec(port, 0..3),
        proptest::option::of("[a-z]{1,6}"),
        any::<bool>(),
    );
    (
        proptest::collection::vec(container, 1..4),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 1..3)),
    )
        .prop_map(|(containers, opted_out, with_volume, labels)| {
            let mut seen_ports = std::collections::BTreeSet::new();
            let mut seen_names = std::collections::BTreeSet::new();
            let containers: Vec<Value> = containers
                .into_iter()
                .enumerate()
                .map(|(i, (name, ports, env, probe))| {
                    let ports: Vec<Value> = ports
                        .into_iter()
                        // Ports (and their names) are unique in a pod.
                        .filter(|(n, name)| {
                            seen_ports.insert(*n)
                                && name.as_ref().is_none_or(|name| seen_names.insert(name.clone()))
                        })
                        .map(|(n, name)| match name {
                            Some(name) => json!({"containerPort": n, "name": name}),
                            None => json!({"containerPort": n}),
                        })
                        .collect();
                    let mut c = json!({"name": format!("{name}{i}"), "image": "example/app:1"});
                    if !ports.is_empty() {
                        if probe {
                            let target = ports[0].get("name").cloned().unwrap_or(ports[0]["containerPort"].clone());
                            c["readinessProbe"] = json!({"httpGet": {"path": "/", "port": target}});
                        }
                        c["ports"] = Value::Array(ports);
                    }
                    if let Some(env) = env {
                        c["env"] = json!([{"name": "X", "value": env}]);
                    }
                    c
                })
                .collect();
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
            if let Some(labels) = labels {
                pod["metadata"]["labels"] = json!(labels);
            }
            if opted_out {
                pod["metadata"]["annotations"] = json!({"sentinelnet.io/inject": "disabled"});
            }
            if with_volume {
                pod["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            }
            pod
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Twice is once; the pod minus what inject adds is the pod it read;
    /// an opted-out pod comes back unchanged.
    #[test]
    fn inject_is_idempotent_and_keeps_everything_else(pod in arb_pod(), istio in any::<bool>(), inprocess in any::<bool>()) {
        use sentinelnet::inject::Mode;
        let mode = if inprocess && !istio { Mode::InProcess } else { Mode::Sidecar };
        let options = options(if istio { Mesh::Istio } else { Mesh::None }, mode);
        let yaml = serde_yaml_ng::to_string(&pod).expect("yaml");
        let has_port = pod["spec"]["containers"].as_array().expect("containers").iter().any(|c| c.get("ports").is_some());
        let first = match inject_yaml(&yaml, &options) {
            Ok(first) => first,
            Err(e) => {
                // The one refusal a generated pod can earn.
                prop_assert!(!istio && !has_port, "{e}");
                return Ok(());
            }
        };
        let second = inject_yaml(&first.yaml, &options).expect("second run");
        prop_assert_eq!(&second.yaml, &first.yaml);
        prop_assert_eq!(second.injected, 0);
        let injected = documents(&first.yaml).remove(0);
        let opted_out = pod["metadata"]["annotations"]["sentinelnet.io/inject"] == "disabled";
        if opted_out {
            prop_assert_eq!(first.injected, 0);
            prop_assert_eq!(&injected, &pod);
        } else {
            prop_assert_eq!(first.injected, 1);
            let names: Vec<&str> = injected["spec"]["containers"].as_array().expect("containers").iter().filter_map(|c| c["name"].as_str()).collect();
            prop_assert_eq!(names.iter().filter(|n| **n == "sentinelnet").count(), 1);
            prop_assert_eq!(names.iter().filter(|n| **n == "envoy").count(), usize::from(!istio));
            prop_assert_eq!(strip_injection(injected), pod);
        }
    }
}

// ------------------------------------------------------------------ injector

struct Injector {
    url: String,
    client: reqwest::blocking::Client,
    _proc: Proc,
}

impl Injector {
    fn start(dir: &Path, flags: &[&str]) -> Injector {
        let pki = support::pki::Pki::new(dir, "webhook");
        let leaf = pki.issue("injector", "sentinelnet-injector.sentinel.svc", None);
        let port = free_port();
        let child = Command::new(sentinelnet())
            .arg("injector")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&leaf.cert)
            .arg("--tls-key")
            .arg(&leaf.key)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("injector");
        sentinelnet::tls::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA");
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let url = format!("https://localhost:{port}");
        let injector = Injector {
            url,
            client,
            _proc: Proc {
                child,
                name: "injector",
            },
        };
        wait_until("the injector's /healthz", Duration::from_secs(20), || {
            injector
                .client
                .get(format!("{}/healthz", injector.url))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        injector
    }

    fn review(&self, object: &Value, kind: &str) -> Value {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "kernel",
                "operation": "CREATE",
                "object": object,
            },
        });
        let response = self
            .client
            .post(format!("{}/inject", self.url))
            .json(&review)
            .send()
            .expect("POST /inject");
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().expect("JSON");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        answer["response"].clone()
    }
}

/// RFC 6902 `add`, `replace` and `remove` (all the injector emits), as the
/// API server applies them.
fn apply_patch(mut doc: Value, patch: &[Value]) -> Value {
    for op in patch {
        let path = op["path"].as_str().expect("path");
        let (parent_path, last) = path.rsplit_once('/').expect("a pointer below the root");
        let last = last.replace("~1", "/").replace("~0", "~");
        let parent = doc
            .pointer_mut(parent_path)
            .unwrap_or_else(|| panic!("no {parent_path}"));
        match (op["op"].as_str(), parent) {
            (Some("add"), Value::Array(items)) if last == "-" => items.push(op["value"].clone()),
            (Some("add"), Value::Array(items)) => {
                items.insert(last.parse().expect("index"), op["value"].clone())
            }
            (Some("add" | "replace"), Value::Object(map)) => {
                if op["op"] == "replace" {
                    assert!(map.contains_key(&last), "replace of a missing {path}");
                }
                map.insert(last, op["value"].clone());
            }
            (Some("replace"), Value::Array(items)) => {
                items[last.parse::<usize>().expect("index")] = op["value"].clone()
            }
            (Some("remove"), Value::Object(map)) => {
                map.remove(&last).expect("remove of a present field");
            }
            (op, _) => panic!("unexpected op {op:?} at {path}"),
        }
    }
    doc
}

#[test]
fn injector_patch_gives_the_pod_inject_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = [
        "--central",
        "https://sentinel-central.sentinel.svc:8443",
        "--bundle-name",
        "kernel",
    ];
    let injector = Injector::start(dir.path(), &flags);
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "kernel-7d4b9c-",
            "namespace": "kernel",
            "labels": {"app": "kernel"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "kernel-7d4b9c", "uid": "u1"}],
        },
        "spec": {
            "containers": [{
                "name": "kernel",
                "image": "registry.example.com/kernel:1.0.0",
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            }],
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}],
        },
    });
    let response = injector.review(&pod, "Pod");
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: Vec<Value> = serde_json::from_slice(&patch).expect("a JSON array");
    // Appends, not a rewrite of the containers another webhook may have set.
    assert!(
        patch.iter().any(|op| op["path"] == "/spec/containers/-"),
        "{patch:?}"
    );
    assert!(
        !patch.iter().any(|op| op["path"] == "/spec/containers"),
        "{patch:?}"
    );
    let patched = apply_patch(pod.clone(), &patch);

    // The same mutation as `inject` prints for the same pod.
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&pod).expect("yaml")).expect("write");
    let printed = run_inject(&file, &flags);
    assert!(printed.status.success());
    assert_eq!(
        patched,
        documents(&String::from_utf8_lossy(&printed.stdout))[0]
    );
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][0]["name"],
        "app-http"
    );
    assert_eq!(
        patched["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "app-http"
    );

    // The patched pod is injected already: no second patch.
    let again = injector.review(&patched, "Pod");
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");

    // A pod that runs to completion (a Job's) gets native sidecars.
    let mut job_pod = pod.clone();
    job_pod["metadata"]["ownerReferences"][0]["kind"] = json!("Job");
    job_pod["spec"]["restartPolicy"] = json!("Never");
    let job = injector.review(&job_pod, "Pod");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(job["patch"].as_str().expect("patch"))
        .expect("base64");
    let patched: Value = apply_patch(
        job_pod,
        &serde_json::from_slice::<Vec<Value>>(&patch).expect("ops"),
    );
    let init = patched["spec"]["initContainers"]
        .as_array()
        .expect("initContainers");
    assert!(init.iter().all(|c| c["restartPolicy"] == "Always") && init.len() == 2);

    // Opted out, and not a Pod: allowed untouched.
    let mut opted_out = pod.clone();
    opted_out["metadata"]["annotations"] = json!({"sentinelnet.io/inject": "disabled"});
    let answer = injector.review(&opted_out, "Pod");
    assert_eq!(answer["allowed"], true);
    assert!(answer.get("patch").is_none());
    let answer = injector.review(&json!({"kind": "ConfigMap"}), "ConfigMap");
    assert_eq!(answer["allowed"], true);
    assert!(answer.get("patch").is_none());

    // A pod the mutation refuses is denied with the reason.
    let mut clash = pod.clone();
    clash["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(9192);
    let answer = injector.review(&clash, "Pod");
    assert_eq!(answer["allowed"], false);
    let message = answer["status"]["message"].as_str().expect("message");
    assert!(message.contains("port 9192 is taken"), "{message}");

    // A body that is no AdmissionReview: 400 naming what is wrong.
    let response = injector
        .client
        .post(format!("{}/inject", injector.url))
        .body("{\"request\": {}}")
        .send()
        .expect("POST");
    assert_eq!(response.status(), 400);
    assert!(response.text().expect("text").contains("request.uid"));
}

#[test]
fn injector_without_bundle_denies_and_bad_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(dir.path(), &[]);
    // No bundle flags, and a pod with no app label or name to pull one by.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "web", "image": "w", "ports": [{"containerPort": 80}]}]}});
    let answer = injector.review(&pod, "Pod");
    assert_eq!(answer["allowed"], false);
    assert!(answer["status"]["message"]
        .as_str()
        .expect("message")
        .contains("Pod/web-: no bundle"));

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let out = Command::new(sentinelnet())
        .arg("injector")
        .arg("--tls-cert")
        .arg(&garbage)
        .arg("--tls-key")
        .arg(&garbage)
        .output()
        .expect("injector");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("garbage.pem"),
        "{stderr}"
    );
}

// ------------------------------------------------------- the pod on this host

/// Inject a Deployment, then run its containers' commands, args and env on
/// this host: the mount paths become temporary directories, the fixed ports
/// free ones, `envoy` the Envoy from PyPI (and, in-process, the module's
/// search path this build's `libsentinelnet_envoy.so`). Requests through
/// Envoy's port reach the app only when the policies allow.
fn run_injected_pod(mode: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = support::Kernel::start();
    let bundle = repo().join("policies");
    let input = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: kernel}}\nspec:\n  selector: {{matchLabels: {{app: kernel}}}}\n  template:\n    metadata: {{labels: {{app: kernel}}}}\n    spec:\n      containers:\n      - name: kernel\n        image: kernel\n        ports: [{{containerPort: {}, name: http}}]\n",
        kernel.port
    );
    let file = dir.path().join("kernel.yaml");
    std::fs::write(&file, input).expect("write");
    let out = run_inject(
        &file,
        &[
            "--mode",
            mode,
            "--bundle",
            &bundle.display().to_string(),
            // No mesh TLS here: the caller is named by a header.
            "--principal-from",
            "header:x-user",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    let sentinel = &containers_named(&docs, "sentinelnet")[0];
    let envoy = &containers_named(&docs, "envoy")[0];

    // Each volume mount becomes a directory of this test.
    let mut replacements: Vec<(String, String)> = Vec::new();
    for container in [sentinel, envoy] {
        for mount in container["volumeMounts"].as_array().expect("mounts") {
            let path = mount["mountPath"].as_str().expect("mountPath").to_string();
            let name = mount["name"].as_str().expect("name");
            let host = dir.path().join(name);
            std::fs::create_dir_all(&host).expect("mkdir");
            if !replacements.iter().any(|(p, _)| *p == path) {
                replacements.push((path, host.display().to_string()));
            }
        }
    }
    let admin = free_port();
    let listen = free_port();
    let envoy_admin = free_port();
    let listen_port = envoy["ports"][0]["containerPort"]
        .as_u64()
        .expect("port")
        .to_string();
    replacements.push(("0.0.0.0:9192".into(), format!("127.0.0.1:{admin}")));
    replacements.push((
        format!("\"port_value\":{listen_port}"),
        format!("\"port_value\":{listen}"),
    ));
    replacements.push((
        "\"port_value\":9901".into(),
        format!("\"port_value\":{envoy_admin}"),
    ));
    replacements.push((
        sentinelnet::inject::sidecars::MODULE_DIR.into(),
        support::module_dir().display().to_string(),
    ));
    let on_host = |text: &str| -> String {
        let mut text = text.to_string();
        for (from, to) in &replacements {
            text = text.replace(from, to);
        }
        text
    };
    let args = |container: &Value| -> Vec<String> {
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| on_host(a.as_str().expect("arg")))
            .collect()
    };
    let env = |container: &Value| -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let value = match e.get("value") {
                    Some(v) => on_host(v.as_str().expect("value")),
                    // fieldRef metadata.name: the pod's name.
                    None => "kernel-host-test".to_string(),
                };
                (e["name"].as_str().expect("name").to_string(), value)
            })
            .collect()
    };
    let log = std::fs::File::create(dir.path().join("sentinelnet.log")).expect("log");
    let _sidecar = Proc {
        child: Command::new(sentinelnet())
            .args(args(sentinel))
            .envs(env(sentinel))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sidecar"),
        name: "sentinelnet",
    };
    let client = support::client();
    wait_until(
        "the sidecar's readiness probe",
        Duration::from_secs(20),
        || {
            let probe = &sentinel["readinessProbe"]["httpGet"]["path"];
            client
                .get(format!(
                    "http://127.0.0.1:{admin}{}",
                    probe.as_str().unwrap_or("")
                ))
                .send()
                .is_ok_and(|r| r.status() == 200)
        },
    );
    // Envoy runs as another user in the pod's group: the sidecar's sockets
    // are 0660.
    let mut sockets = 0;
    for entry in std::fs::read_dir(dir.path().join("sentinelnet-socket")).expect("socket dir") {
        use std::os::unix::fs::PermissionsExt;
        let entry = entry.expect("entry");
        let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{}", entry.path().display());
        sockets += 1;
    }
    assert_eq!(
        sockets,
        if mode == "inprocess" { 2 } else { 1 },
        "ext_authz (and records) sockets"
    );
    assert_eq!(
        envoy["securityContext"]["runAsGroup"], sentinel["securityContext"]["runAsGroup"],
        "one group for both"
    );
    assert_eq!(envoy["command"], json!(["envoy"]));
    let envoy_log = std::fs::File::create(dir.path().join("envoy.log")).expect("log");
    let _envoy = Proc {
        child: Command::new(support::envoy_bin())
            .args(args(envoy))
            .args(["--base-id", &listen.to_string()])
            .envs(env(envoy))
            .stdout(Stdio::null())
            .stderr(envoy_log)
            .spawn()
            .expect("envoy"),
        name: "envoy",
    };
    wait_until("Envoy's listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    });
    let url = |path: &str| format!("http://127.0.0.1:{listen}{path}");
    // The example bundle: authenticated callers read, deletes need an admin.
    let mut allowed = None;
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while allowed.is_none() && std::time::Instant::now() < deadline {
        match client
            .get(url("/v1/kernels/k1"))
            .header("x-user", "alice")
            .send()
        {
            Ok(r) if r.status() == 200 => allowed = Some(r),
            Ok(r) => last = format!("{} {:?}", r.status(), r.text()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = || {
        ["sentinelnet.log", "envoy.log"]
            .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
            .join("\n----\n")
    };
    assert!(
        allowed.is_some(),
        "{mode}: no allowed read through Envoy: last {last}\n{}",
        logs()
    );
    let echoed: Value = allowed.expect("answered").json().expect("the app's echo");
    assert_eq!(
        echoed["path"], "/v1/kernels/k1",
        "the stand-in app answered"
    );
    assert_eq!(
        echoed["headers"]["x-kernel-caller"], "verified",
        "the policy's header"
    );
    let denied = client
        .delete(url("/v1/kernels/k1"))
        .header("x-user", "bob")
        .send()
        .expect("delete");
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.text().expect("body"), "admin role required");
    // Either way the sidecar holds the records: its own decisions, or the
    // module's events forwarded over the records socket.
    let metric = |name: &str| {
        let text = client
            .get(format!("http://127.0.0.1:{admin}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        support::metric_value(&text, name)
    };
    let (sample, wanted) = match mode {
        "inprocess" => ("sentinel_audit_forwarded_total", 2.0),
        _ => (
            "sentinel_decisions_total{decision=\"deny\",reason=\"policy\"}",
            1.0,
        ),
    };
    wait_until(
        &format!("{sample} >= {wanted}"),
        Duration::from_secs(10),
        || metric(sample) >= wanted,
    );
    // The record of the denial (the audit thread writes it a moment later).
    let mut denied_record = Value::Null;
    wait_until("the denial's record", Duration::from_secs(10), || {
        let decisions: Value = client
            .get(format!("http://127.0.0.1:{admin}/v1/decisions?limit=10"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        denied_record = decisions["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["decision"] == "deny")
            .cloned()
            .unwrap_or_default();
        !denied_record.is_null()
    });
    assert_eq!(denied_record["policyId"], "kernel.delete-needs-admin");
}

#[test]
fn injected_pod_runs_and_decides() {
    run_injected_pod("sidecar");
}

/// The same pod in in-process mode: the policies decide inside Envoy (the
/// module from `cargo build -p sentinelnet-envoy`), records still reach the
/// sidecar's chain.
#[test]
fn injected_inprocess_pod_runs_and_decides() {
    run_injected_pod("inprocess");
}

/// The edge cases of `tests/inject/edge.yaml`, checked as properties.
#[test]
fn run_to_completion_grpc_udp_octal_modes_and_service_lists() {
    let out = run_inject(
        &repo().join("tests/inject/edge.yaml"),
        &["--bundle", "/etc/sentinel/bundle.tar.gz"],
    );
    assert!(out.status.success());
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    // A bare Pod with restartPolicy Never: native sidecars, so it completes.
    let once = &docs[0]["spec"];
    let init = once["initContainers"].as_array().expect("initContainers");
    assert_eq!(init.len(), 2);
    assert!(init.iter().all(|c| c["restartPolicy"] == "Always"));
    assert_eq!(once["containers"].as_array().expect("containers").len(), 1);
    // The gRPC app: its TCP port (not the UDP one) behind Envoy, spoken to
    // in HTTP/2; the preStop hook follows the rename.
    let spec = &docs[1]["spec"]["template"]["spec"];
    let app = &spec["containers"][0];
    assert_eq!(app["ports"][0]["name"], "dns", "the UDP port is left alone");
    assert_eq!(app["ports"][1]["name"], "app-grpc-api");
    assert_eq!(
        app["lifecycle"]["preStop"]["httpGet"]["port"],
        "app-grpc-api"
    );
    let envoy = &containers_named(&docs[1..2], "envoy")[0];
    let config: Value =
        serde_json::from_str(envoy["args"][1].as_str().expect("bootstrap")).expect("JSON");
    let app_cluster = config["static_resources"]["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == "app")
        .expect("app cluster");
    assert_eq!(
        app_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"],
        9000
    );
    assert!(app_cluster["typed_extension_protocol_options"]
        .to_string()
        .contains("http2_protocol_options"));
    // `defaultMode: 0400` stays the number Kubernetes reads (256).
    let secret = &spec["volumes"][0]["secret"];
    assert_eq!(secret["defaultMode"], 256);
    assert_eq!(secret["items"][0]["mode"], 0o440);
    // The Service inside a ServiceList is checked too.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Service/rpc: port 9000 targets port 9000 of Deployment/rpc by number"),
        "{stderr}"
    );
}
