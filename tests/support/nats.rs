//! A real `nats-server` (Debian's, 2.9) with JetStream, on a free port with
//! its own store directory; optionally with TLS requiring client
//! certificates from a CA.

use super::pki::Leaf;
use super::{free_port, wait_until, Proc};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub(crate) struct NatsServer {
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

/// The server's certificate and the CA its clients' certificates must
/// come from.
pub(crate) struct NatsTls<'a> {
    pub server: &'a Leaf,
    pub client_ca: &'a Path,
}

impl NatsServer {
    pub(crate) fn start(dir: &Path, tls: Option<NatsTls<'_>>) -> NatsServer {
        let port = free_port();
        let store = dir.join(format!("nats-store-{port}"));
        std::fs::create_dir_all(&store).expect("nats store dir");
        let mut config = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n",
            store.display()
        );
        if let Some(tls) = tls {
            config.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
                tls.server.cert.display(),
                tls.server.key.display(),
                tls.client_ca.display()
            ));
        }
        let config_path = dir.join(format!("nats-{port}.conf"));
        std::fs::write(&config_path, config).expect("write nats config");
        let mut server = NatsServer {
            port,
            config: config_path,
            log: dir.join(format!("nats-{port}.log")),
            proc: None,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts (Debian package nats-server; .ci/run installs it)");
        self.proc = Some(Proc {
            child,
            name: "nats-server",
        });
        let port = self.port;
        wait_until("nats-server to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stop the server (SIGTERM).
    pub(crate) fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
    }

    /// Start it again on the same port and store: JetStream keeps its
    /// streams and consumers.
    pub(crate) fn start_again(&mut self) {
        self.stop();
        self.run();
    }

    pub(crate) fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
