//! The Kubernetes manifests stay in step with the example bundle: every
//! policy file is in the ConfigMap and mapped back to `policies/` (ConfigMap
//! volumes are flat; a policy missing here would silently not be enforced).

mod support;

#[test]
fn configmap_items_cover_every_example_policy() {
    let deployment =
        std::fs::read_to_string(support::repo().join("k8s/kernel-with-sentinelnet.yaml"))
            .expect("deployment");
    let kustomization = std::fs::read_to_string(support::repo().join("k8s/kustomization.yaml"))
        .expect("kustomization");
    let mut count = 0;
    for entry in std::fs::read_dir(support::repo().join("policies/policies")).expect("policies") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        count += 1;
        assert!(
            deployment.contains(&format!("{{key: {name}, path: policies/{name}}}")),
            "k8s/kernel-with-sentinelnet.yaml does not mount {name}"
        );
        assert!(
            kustomization.contains(&format!("../policies/policies/{name}")),
            "k8s/kustomization.yaml does not put {name} in the ConfigMap"
        );
    }
    assert!(count >= 10, "the example bundle has its policies");
    assert!(deployment.contains("{key: bundle.json, path: bundle.json}"));
}

/// Every `--flag` and `SENTINEL_*` variable the manifests pass exists in the
/// binary's CLI, so a renamed flag cannot leave a manifest that crash-loops.
#[test]
fn manifests_use_flags_the_binary_has() {
    let manifests = [
        ("k8s/kernel-with-sentinelnet.yaml", "serve"),
        ("k8s/central/central.yaml", "central"),
    ];
    for (file, command) in manifests {
        let text = std::fs::read_to_string(support::repo().join(file)).expect("manifest");
        assert!(
            text.contains(&format!("- {command}\n")),
            "{file} runs `sentinelnet {command}`"
        );
        let help = std::process::Command::new(support::sentinelnet())
            .args([command, "--help"])
            .output()
            .expect("help");
        let help = String::from_utf8_lossy(&help.stdout);
        let flags: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- --"))
            .map(|flag| flag.split('=').next().unwrap_or(flag))
            .collect();
        assert!(flags.len() >= 5, "{file}: flags found: {flags:?}");
        for flag in flags {
            assert!(
                help.contains(&format!("--{flag} ")) || help.contains(&format!("--{flag}\n")),
                "{file}: --{flag} is not a flag of `sentinelnet {command}`"
            );
        }
        for name in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if name.starts_with("SENTINEL_") {
                assert!(
                    help.contains(&format!("env: {name}="))
                        || help.contains(&format!("env: {name}]")),
                    "{file}: {name} is not read by `sentinelnet {command}`"
                );
            }
        }
    }
    let rbac: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("k8s/central/rbac.json")).expect("rbac"),
    )
    .expect("k8s/central/rbac.json is an identity → roles map");
    for roles in rbac.values() {
        for role in roles {
            assert!(
                ["sidecar", "publisher", "approver", "admin"].contains(&role.as_str()),
                "unknown role {role}"
            );
        }
    }
}
