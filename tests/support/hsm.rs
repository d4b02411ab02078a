//! SoftHSM2 for the tests: one token directory per test process (its
//! `SOFTHSM2_CONF` is set for this process and inherited by every
//! `sentinelnet` it starts), one freshly initialised token per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub(crate) const PIN: &str = "4321";
const SO_PIN: &str = "87654321";

/// Debian's `softhsm2` module, or `$SOFTHSM2_MODULE`.
pub(crate) fn module() -> PathBuf {
    let module = std::env::var_os("SOFTHSM2_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        module.exists(),
        "{} is missing: install softhsm2 (apt-get install softhsm2; .ci/run does) or set SOFTHSM2_MODULE",
        module.display()
    );
    module
}

/// The process's SoftHSM2 configuration, created on first use.
fn config() -> &'static Path {
    static CONFIG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, conf) = CONFIG.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        // Set before any module is loaded in this process (the tests' own
        // cryptoki calls read it at C_Initialize) and inherited by children.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        (dir, conf)
    });
    conf
}

/// An initialised token with user PIN [`PIN`].
pub(crate) struct Token {
    pub label: String,
}

impl Token {
    /// A new token labelled `prefix-N`.
    pub(crate) fn new(prefix: &str) -> Token {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let label = format!(
            "{prefix}-{}-{}",
            std::process::id() % 10_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let conf = config();
        module();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                &label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("softhsm2-util runs (install softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Token { label }
    }

    /// The RFC 7512 URI of key `object` in this token, PIN inline.
    pub(crate) fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-value={PIN}",
            self.label,
            module().display()
        )
    }

    /// The same key with the PIN read from `pin_file`.
    pub(crate) fn uri_with_pin_file(&self, object: &str, pin_file: &Path) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-source=file:{}",
            self.label,
            module().display(),
            pin_file.display()
        )
    }

    /// `sentinelnet keygen --pkcs11` for `object`, writing `DIR/object.pub`.
    pub(crate) fn keygen(&self, object: &str, dir: &Path) {
        let out = Command::new(super::sentinelnet())
            .args([
                "keygen",
                "--pkcs11",
                &self.uri(object),
                "--name",
                object,
                "--out",
            ])
            .arg(dir)
            .output()
            .expect("keygen runs");
        assert!(
            out.status.success(),
            "keygen --pkcs11: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
