//! Certificates made by a test: a CA and a server certificate it signed, for the TLS
//! listeners (`--tls-cert`, `--tls-key`; the AMQP over TLS one takes the same).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

use super::TestDaemon;

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, as PEM files
/// (`ca.pem`, `server.pem`, `server-key.pem`).
pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Warren AMQPS test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signing");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("signing");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).expect("write");
        Pki {
            dir,
            ca: ca_cert.der().clone(),
        }
    }

    /// The path of one of the PEM files, as an argument.
    pub fn arg(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A daemon with the certificate and `extra` arguments (the harness adds
    /// `--amqp-tls-listen 127.0.0.1:0` unless `extra` has one).
    pub fn start(&self, extra: &[&str]) -> TestDaemon {
        let (cert, key) = (self.arg("server.pem"), self.arg("server-key.pem"));
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        TestDaemon::start_with(&args)
    }

    /// A TLS connector that trusts only the test's CA.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("the CA certificate");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}
