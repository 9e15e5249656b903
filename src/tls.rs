//! TLS with rustls (the `ring` provider, which needs only a C compiler to build): the server's
//! configuration (`warren serve --tls-listen`, `--tls-cert`, `--tls-key`, `--tls-client-ca`)
//! and the client's ([`ClientTls`], used by [`crate::client::Client::connect_tls`] and the
//! CLI's `--tls`). Certificates and keys are read from PEM files; every error names the file.
//!
//! See docs/security.md for the set-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

/// A TLS configuration that cannot be built: a file that cannot be read or holds no usable
/// PEM, or a certificate and key rustls refuses.
///
/// The underlying errors are part of the message, not marked as its source, so that `{:#}`
/// does not print them twice.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file cannot be read.
    #[error("reading the {what} file {}: {error}", path.display())]
    Read {
        /// Which file it is (`certificate`, `private key`, `CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        error: std::io::Error,
    },
    /// The file holds no PEM item of the kind needed, or a malformed one.
    #[error("the {what} file {} {reason}", path.display())]
    Pem {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (`holds no PEM certificate`).
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, a CA
    /// certificate it cannot use).
    #[error("{context}: {error}")]
    Config {
        /// What was being set up, naming the files.
        context: String,
        /// rustls's reason.
        error: rustls::Error,
    },
    /// The name to check the server's certificate against is not a DNS name or IP address.
    #[error("'{0}' is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName(String),
}

/// The crypto provider: `ring`, named explicitly so that no process-wide default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// Every certificate in a PEM file (a chain, or a CA bundle); at least one.
fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: format!("is not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key";
    let pem = read(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: WHAT,
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".into()
            }
            e => format!("is not valid PEM: {e}"),
        },
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA", path)? {
        roots.add(cert).map_err(|error| TlsError::Config {
            context: format!("using the CA file {}", path.display()),
            error,
        })?;
    }
    Ok(roots)
}

/// The files of the server's TLS listener.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by a CA in this PEM file.
    pub client_ca: Option<PathBuf>,
}

/// Builds the server's TLS configuration: TLS 1.2 and 1.3, the certificate and key from
/// `files`, and client-certificate verification when `files.client_ca` is set.
///
/// # Errors
/// A file cannot be read or holds no usable PEM, or rustls refuses the certificate and key
/// (they do not match, say); the error names the file.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("certificate", &files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config {
            context: "choosing the TLS versions".into(),
            error,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config {
                        context: format!("using the client CA file {}", ca.display()),
                        error: rustls::Error::General(e.to_string()),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::Config {
            context: format!(
                "using the certificate {} with the key {}",
                files.cert.display(),
                files.key.display()
            ),
            error,
        })?;
    Ok(Arc::new(config))
}

/// What a client needs to know to connect with TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA(s) to trust; `None` trusts the system's certificate store.
    pub ca: Option<PathBuf>,
    /// Name the server's certificate must carry; `None` takes the host of the address.
    pub server_name: Option<String>,
    /// A client certificate chain (PEM), for servers that ask for one; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// A client's TLS configuration, built once from [`TlsOptions`] and used for any number of
/// connections.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl ClientTls {
    /// Reads the files `options` names and builds the configuration.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable PEM; only one of the client certificate and
    /// key is given, or they do not match; the server name is not a name.
    pub fn new(options: &TlsOptions) -> Result<ClientTls, TlsError> {
        if let Some(name) = &options.server_name {
            ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?;
        }
        let roots = match &options.ca {
            Some(ca) => roots(ca)?,
            None => system_roots(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config {
                context: "choosing the TLS versions".into(),
                error,
            })?
            .with_root_certificates(roots);
        let config = match (&options.client_cert, &options.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs("client certificate", cert)?, load_key(key)?)
                .map_err(|error| TlsError::Config {
                    context: format!(
                        "using the client certificate {} with the key {}",
                        cert.display(),
                        key.display()
                    ),
                    error,
                })?,
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsError::Pem {
                    what: "client certificate or key",
                    path: path.clone(),
                    reason: "is given without its pair: a client certificate needs both \
                             the certificate and the key"
                        .into(),
                })
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: options.server_name.clone(),
        })
    }

    /// The name the server's certificate is checked against when connecting to `addr`:
    /// the configured one, else the host part of `addr` (`[::1]:5681` gives `::1`).
    pub(crate) fn server_name_for(&self, addr: &str) -> String {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }
}

/// The system's trusted CAs; certificates it cannot read are skipped with a warning, as a
/// browser would.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system's CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates");
    roots
}

/// The server side of a TLS handshake on a listener's new connection, bounded by
/// `deadline` and cut short by `shutdown`. `None`, logged with `door` (`"TLS"`, `"AMQP
/// TLS"`), when the client fails it (a plain client on a TLS port lands here: rustls answers
/// its first bytes with an alert), takes too long, or the server is stopping.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    socket: tokio::net::TcpStream,
    deadline: tokio::time::Instant,
    shutdown: &crate::stop::Stop,
    peer: &str,
    door: &str,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = tokio::time::timeout_at(deadline, acceptor.accept(socket)) => r,
    };
    match handshake {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(%peer, reason = %e, "{door} handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "no {door} handshake within the handshake timeout");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(name: Option<&str>) -> ClientTls {
        ClientTls {
            config: Arc::new(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            ),
            server_name: name.map(str::to_owned),
        }
    }

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_address() {
        assert_eq!(tls(None).server_name_for("localhost:5681"), "localhost");
        assert_eq!(tls(None).server_name_for("127.0.0.1:5681"), "127.0.0.1");
        assert_eq!(tls(None).server_name_for("[::1]:5681"), "::1");
        assert_eq!(
            tls(Some("broker.example")).server_name_for("10.0.0.1:1"),
            "broker.example"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = server_config(&ServerTlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading the certificate file /nonexistent/cert.pem: "),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = load_certs("certificate", &path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )
        );
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        let err = ClientTls::new(&TlsOptions {
            server_name: Some("not a name".into()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "'not a name' is not a valid TLS server name (a DNS name or an IP address)"
        );
    }
}
