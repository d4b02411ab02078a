//! Certificates generated in the test: a CA and leaf certificates.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use std::path::{Path, PathBuf};

pub(crate) struct Pki {
    dir: PathBuf,
    name: String,
    params: CertificateParams,
    key: KeyPair,
    pub ca_pem: String,
}

/// A leaf certificate and key written as PEM files.
pub(crate) struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// `KERNEL_MTLS_*` for a sidecar using this certificate, trusting `ca`.
    pub(crate) fn client_env<'a>(&'a self, ca: &'a Path) -> [(&'static str, &'a Path); 3] {
        [
            ("KERNEL_MTLS_CERT_PATH", self.cert.as_path()),
            ("KERNEL_MTLS_KEY_PATH", self.key.as_path()),
            ("KERNEL_MTLS_CA_PATH", ca),
        ]
    }
}

impl Pki {
    pub(crate) fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let ca = params.self_signed(&key).expect("CA certificate");
        let ca_pem = ca.pem();
        std::fs::write(dir.join(format!("{name}-ca.pem")), &ca_pem).expect("write CA");
        Pki {
            dir: dir.to_owned(),
            name: name.to_owned(),
            params,
            key,
            ca_pem,
        }
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for 127.0.0.1/localhost (servers) with an optional
    /// SPIFFE-style URI identity (clients).
    pub(crate) fn issue(&self, file_stem: &str, common_name: &str, uri: Option<&str>) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("URI SAN")));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}
