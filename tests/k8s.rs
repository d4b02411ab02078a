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
