//! Central on PostgreSQL over TLS: a private cluster this test starts with
//! `ssl=on` and a server certificate from a CA the test makes, accepting
//! only TLS connections (`hostssl`). Central connects with
//! `sslmode=verify-full&sslrootcert=CA` and works; with another CA it
//! refuses to start with one clear line; without TLS the server refuses it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::central::*;
use support::pki::Pki;
use support::*;

/// The newest PostgreSQL server binaries on the machine (Debian keeps them
/// under /usr/lib/postgresql/VERSION/bin; `.ci/run` installs them).
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|entry| entry.path().join("bin").join(name))
        .filter(|path| path.exists())
        .collect();
    versions.sort_by_key(|path| {
        path.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().expect("a PostgreSQL server binary")
}

/// PostgreSQL refuses to run as root: as root, run its tools as `postgres`.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Give `path` to the `postgres` user (when running as root).
fn give_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// A private PostgreSQL cluster on a free port, stopped on drop.
struct Cluster {
    data: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(dir: &Path, cert: &Path, key: &Path) -> Cluster {
        let data = dir.join("data");
        let sockets = dir.join("sockets");
        std::fs::create_dir_all(&sockets).expect("mkdir");
        // The server's certificate and key where it may read them (the key
        // private to the server's user, as PostgreSQL insists).
        let tls = dir.join("server-tls");
        std::fs::create_dir_all(&tls).expect("mkdir");
        std::fs::copy(cert, tls.join("server.crt")).expect("copy cert");
        std::fs::copy(key, tls.join("server.key")).expect("copy key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            tls.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod key");
        give_to_postgres(dir);
        let output = as_postgres(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            sockets.display(),
            tls.join("server.crt").display(),
            tls.join("server.key").display(),
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        // TCP only over TLS: a plaintext connection is refused.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        give_to_postgres(dir);
        let output = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            output.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
        Cluster { data, port }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Start central on `db` and return how it ended within a few seconds:
/// `None` while it still runs (then it is stopped), else its exit code and
/// stderr.
fn central_exit(world: &World, db: &str) -> (Option<i32>, String) {
    let server = world.pki.issue("central-server", "central.local", None);
    let mut child = Command::new(sentinelnet())
        .arg("central")
        .args(["--addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--db", db])
        .arg("--tls-cert")
        .arg(&server.cert)
        .arg("--tls-key")
        .arg(&server.key)
        .arg("--client-ca")
        .arg(world.pki.ca_path())
        .arg("--rbac")
        .arg(world.path().join("rbac.json"))
        .arg("--signing-key")
        .arg(world.path().join("private/central.key"))
        .env_remove("DEV_SKIP_MTLS")
        .env_remove("SENTINEL_CENTRAL_DB")
        .env_remove("SENTINEL_CENTRAL_DB_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("central starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr)
}

#[test]
fn central_reaches_postgresql_over_verified_tls_and_refuses_another_ca() {
    let world = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_pki = Pki::new(&dir.path().join("db-pki"), "database");
    let server = db_pki.issue("postgres", "localhost", None);
    let other = Pki::new(&dir.path().join("other-pki"), "other");
    let cluster_dir = dir.path().join("cluster");
    let cluster = Cluster::start(&cluster_dir, &server.cert, &server.key);
    let base = format!("postgres://postgres@localhost:{}/postgres", cluster.port);

    // verify-full with the database's CA: central starts and serves.
    let db = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        db_pki.ca_path().display()
    );
    let central = Central::start(world.path(), free_port(), &db, &world.pki, &[]);
    let publisher = world.as_publisher();
    add_policy(
        &publisher,
        &central,
        &serde_json::json!({"id": "kernel.tls", "version": 1, "severity": "LOW", "state": "draft",
                            "effect": "deny", "when": {"==": [{"var": "request.method"}, "DELETE"]}}),
        &serde_json::json!({"to": "active", "reason": "stored over TLS"}),
    );
    let (status, policies) = call(publisher.get(central.url("/v1/bundles/kernel/policies")));
    assert_eq!(status, 200, "{policies}");
    assert!(policies.to_string().contains("kernel.tls"), "{policies}");
    // The server saw an encrypted session from central.
    let output = as_postgres(&pg_bin("psql"))
        .args(["-h", &cluster_dir.join("sockets").display().to_string()])
        .args(["-p", &cluster.port.to_string(), "-U", "postgres", "-d", "postgres", "-tAc"])
        .arg("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.client_addr IS NOT NULL")
        .output()
        .expect("psql runs");
    let encrypted: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        encrypted >= 1,
        "central's connections are TLS: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(central);

    // Another CA: refused at start with one line naming the store and why.
    let wrong = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        other.ca_path().display()
    );
    let (code, stderr) = central_exit(&world, &wrong);
    assert!(
        matches!(code, Some(c) if c != 0),
        "central must not start: {stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.starts_with("sentinelnet:"))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    assert!(lines[0].contains("localhost:"), "{stderr}");
    assert!(
        lines[0].contains("not issued by the CA in sslrootcert"),
        "the line says the certificate is the problem: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Without TLS the server itself refuses (hostnossl reject): the cluster
    // really only speaks TLS, so the success above went over it.
    let (code, stderr) = central_exit(&world, &format!("{base}?sslmode=disable"));
    assert!(matches!(code, Some(c) if c != 0), "{stderr}");
    assert!(
        stderr.contains("no encryption") || stderr.contains("pg_hba.conf"),
        "{stderr}"
    );
}
