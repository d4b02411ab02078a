//! The runtime image, as far as this machine can build it. There is no
//! container engine, and the Dockerfile's base images cannot be pulled
//! (no registry), so `docker build -f k8s/Dockerfile` is not run. What is
//! run: an OCI image assembled with umoci (Debian) from the files the
//! Dockerfile's runtime stage copies, at the paths it copies them to, with
//! its `USER` and `ENTRYPOINT`, over the glibc the distroless `cc` base
//! provides; started with runc (Debian) on a read-only root as the image's
//! non-root user; and a real Envoy on the host deciding through the
//! containerised sidecar's Unix socket.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{free_port, repo, wait_until, Envoy, Grpc, Kernel};

/// What the Dockerfile's last stage says: the files it copies (from the
/// build stage's `/out/NAME`), where to, the user and the entrypoint.
struct RuntimeStage {
    copies: Vec<(String, String)>,
    user: String,
    entrypoint: Vec<String>,
}

fn runtime_stage() -> RuntimeStage {
    let text = std::fs::read_to_string(repo().join("k8s/Dockerfile")).expect("Dockerfile");
    let last = text.rsplit("\nFROM ").next().expect("a runtime stage");
    let mut stage = RuntimeStage {
        copies: Vec::new(),
        user: String::new(),
        entrypoint: Vec::new(),
    };
    for line in last.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["COPY", "--from=build", from, to] => {
                let name = from.strip_prefix("/out/").expect("copied from /out/");
                stage.copies.push((name.to_string(), to.to_string()));
            }
            ["USER", user] => stage.user = user.to_string(),
            ["ENTRYPOINT", ..] => {
                stage.entrypoint =
                    serde_json::from_str(line.trim_start_matches("ENTRYPOINT").trim())
                        .expect("ENTRYPOINT in exec form");
            }
            _ => {}
        }
    }
    assert_eq!(stage.copies.len(), 2, "the binary and the module");
    stage
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tool(name: &str) -> PathBuf {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed (Debian's {name} package; .ci/run installs it)"
    );
    PathBuf::from(name)
}

/// A runc container, deleted when dropped.
struct Container {
    runc: PathBuf,
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(&self.runc)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn assemble(dir: &Path, stage: &RuntimeStage) -> PathBuf {
    let umoci = tool("umoci");
    let layout = dir.join("oci");
    let image = format!("{}:sentinelnet", layout.display());
    run(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    run(Command::new(&umoci).args(["new", "--image", &image]));
    let unpacked = dir.join("unpacked");
    run(Command::new(&umoci)
        .args(["unpack", "--image", &image])
        .arg(&unpacked));
    let rootfs = unpacked.join("rootfs");
    let built = support::sentinelnet()
        .parent()
        .expect("target dir")
        .to_path_buf();
    for (name, to) in &stage.copies {
        let from = if name.ends_with(".so") {
            support::module_dir().join(name)
        } else {
            built.join(name)
        };
        let dest = rootfs.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&from, &dest).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    // The distroless cc base: glibc and libgcc, nothing else (no shell).
    let ldd = run(Command::new("ldd").arg(support::sentinelnet()));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = rootfs.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(lib, &dest).expect("copy lib");
    }
    for empty in ["run/sentinel", "policies", "tmp"] {
        std::fs::create_dir_all(rootfs.join(empty)).expect("mkdir");
    }
    run(Command::new(&umoci)
        .args(["repack", "--image", &image])
        .arg(&unpacked));
    let mut config = Command::new(&umoci);
    config.args(["config", "--image", &image, "--config.user", &stage.user]);
    for word in &stage.entrypoint {
        config.arg("--config.entrypoint").arg(word);
    }
    run(&mut config);
    // The runtime bundle runc starts.
    let bundle = dir.join("bundle");
    run(Command::new(&umoci)
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    bundle
}

#[test]
fn runtime_image_starts_non_root_on_a_read_only_root_and_decides() {
    assert_eq!(
        run(Command::new("id").arg("-u")).trim(),
        "0",
        "runc needs root"
    );
    let stage = runtime_stage();
    assert_eq!(stage.user, "65532:65532");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = assemble(dir.path(), &stage);

    // The image's own config: its user and entrypoint.
    let config_path = bundle.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
            .expect("JSON");
    assert_eq!(config["process"]["user"]["uid"], 65532);
    assert_eq!(config["process"]["user"]["gid"], 65532);
    let mut args: Vec<Value> = config["process"]["args"].as_array().expect("args").clone();
    assert_eq!(args[0], json!(stage.entrypoint[0]));

    // Run the sidecar in it: read-only root, the host's network (so Envoy
    // and the test reach it), the bundle and the socket directory mounted.
    let socket_dir = dir.path().join("socket");
    std::fs::create_dir_all(&socket_dir).expect("mkdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    let admin = free_port();
    args.truncate(1);
    for arg in [
        "serve".to_string(),
        "--bundle=/policies".to_string(),
        "--grpc-addr=unix:/run/sentinel/authz.sock".to_string(),
        format!("--admin-addr=127.0.0.1:{admin}"),
        "--principal-from=header:x-user".to_string(),
    ] {
        args.push(json!(arg));
    }
    config["process"]["args"] = json!(args);
    config["process"]["terminal"] = json!(false);
    config["process"]["env"]
        .as_array_mut()
        .expect("env")
        .push(json!("POD_NAME=kernel-image-test"));
    config["root"]["readonly"] = json!(true);
    let namespaces = config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    namespaces.retain(|ns| ns["type"] != "network");
    let mounts = config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/policies", "type": "bind", "source": repo().join("policies"), "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/run/sentinel", "type": "bind", "source": socket_dir, "options": ["rbind", "rw"]}));
    std::fs::write(&config_path, config.to_string()).expect("write config");

    let runc = tool("runc");
    let id = format!("sentinelnet-test-{}", std::process::id());
    let log = std::fs::File::create(dir.path().join("container.log")).expect("log");
    let mut child = Command::new(&runc)
        .args(["run", &id])
        .current_dir(&bundle)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("runc run");
    let container = Container {
        runc: runc.clone(),
        id: id.clone(),
    };
    let client = support::client();
    let logs = || std::fs::read_to_string(dir.path().join("container.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .map_or(true, |r| r.status() != 200)
    {
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            panic!(
                "the containerised sidecar did not become ready:\n{}",
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // It runs as the image's user, not root.
    let state: Value =
        serde_json::from_str(&run(Command::new(&runc).args(["state", &id]))).expect("state");
    let pid = state["pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|uid| uid == "65532"),
        "{uid_line}"
    );

    // Envoy on the host decides through the containerised sidecar.
    let kernel = Kernel::start();
    let envoy = Envoy::start(
        &Grpc::Unix(socket_dir.join("authz.sock")),
        kernel.port,
        dir.path(),
    );
    let mut status = 0;
    wait_until(
        "an allowed read through Envoy",
        Duration::from_secs(20),
        || {
            status = client
                .get(envoy.url("/v1/kernels"))
                .header("x-user", "alice")
                .send()
                .map_or(0, |r| r.status().as_u16());
            status == 200
        },
    );
    let denied = client
        .delete(envoy.url("/v1/kernels/k1"))
        .header("x-user", "bob")
        .send()
        .expect("delete");
    assert_eq!(denied.status(), 403);

    // SIGTERM ends it cleanly.
    run(Command::new(&runc).args(["kill", &id, "TERM"]));
    let exited = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        child.try_wait().ok().flatten()
    });
    assert!(
        exited.is_some_and(|s| s.success()),
        "{exited:?}\n{}",
        logs()
    );
    drop(container);
}
