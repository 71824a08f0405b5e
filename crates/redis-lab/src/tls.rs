//! Throwaway certificates ([`TlsCerts`]) and TLS settings of lab servers ([`LabTls`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::binaries::find_binary;
use crate::error::LabError;

/// The package that provides the `openssl` CLI, named when it is missing.
const OPENSSL_HINT: &str = "sudo apt-get install openssl";

/// A throwaway CA, a server certificate for `127.0.0.1` / `localhost` and a client
/// certificate, made with the `openssl` CLI in their own temporary directory (removed on drop).
///
/// # Behavior
/// - Keys are ECDSA P-256; certificates are valid for 2 days.
/// - The server certificate also allows client authentication: Redis presents it when it
///   connects to other servers itself (`tls-replication`, `tls-cluster`, sentinels).
/// - [`generate`](Self::generate) runs `openssl` five times (about 50 ms, blocking).
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), redis_lab::LabError> {
/// use redis_lab::{LabTls, RedisServer, ServerConfig, TlsCerts};
/// let certs = TlsCerts::generate()?;
/// let server = RedisServer::start_with(ServerConfig {
///     tls: Some(LabTls::new(certs.clone())),
///     ..ServerConfig::default()
/// })
/// .await?;
/// assert!(server.url().starts_with("rediss://127.0.0.1:"));
/// // Trust certs.ca_pem() in the client under test.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TlsCerts {
    ca_pem: Vec<u8>,
    client_cert_pem: Vec<u8>,
    client_key_pem: Vec<u8>,
    dir: tempfile::TempDir,
}

/// TLS settings of a lab server (or of every node of a topology).
///
/// The server listens on TLS only (`port 0`, `tls-port`), with `tls-replication yes` (replicas
/// and sentinels talk TLS to it) and, for cluster nodes, `tls-cluster yes`. The lab's own
/// connections (readiness checks, fault helpers) use TLS with the client certificate.
///
/// # Default
/// Built with [`LabTls::new`]: client certificates are not requested.
#[derive(Debug, Clone)]
pub struct LabTls {
    /// The CA and certificates the server uses.
    pub certs: Arc<TlsCerts>,
    /// `tls-auth-clients yes`: clients must present a certificate signed by the CA (mutual
    /// TLS). `false` writes `tls-auth-clients no`.
    pub require_client_cert: bool,
}

impl LabTls {
    /// TLS with `certs`, no client certificate required.
    pub fn new(certs: Arc<TlsCerts>) -> LabTls {
        LabTls {
            certs,
            require_client_cert: false,
        }
    }

    /// The `redis.conf` directives (after `port 0` and `tls-port`).
    pub(crate) fn directives(&self, cluster: bool) -> Vec<String> {
        let c = &self.certs;
        let path = |p: PathBuf| crate::conf::quote(&p.display().to_string());
        let mut lines = vec![
            format!("tls-cert-file {}", path(c.server_cert())),
            format!("tls-key-file {}", path(c.server_key())),
            format!("tls-ca-cert-file {}", path(c.ca_cert())),
            format!(
                "tls-auth-clients {}",
                if self.require_client_cert {
                    "yes"
                } else {
                    "no"
                }
            ),
            "tls-replication yes".to_owned(),
        ];
        if cluster {
            lines.push("tls-cluster yes".to_owned());
        }
        lines
    }

    /// The certificates the lab's own connections use (the CA, and the client certificate).
    pub(crate) fn client_certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: self.certs.client_cert_pem.clone(),
                client_key: self.certs.client_key_pem.clone(),
            }),
            root_cert: Some(self.certs.ca_pem.clone()),
        }
    }
}

impl TlsCerts {
    /// Makes a new CA and certificates with the `openssl` CLI.
    ///
    /// # Errors
    /// [`LabError::ToolNotFound`] without `openssl` (the message names the package),
    /// [`LabError::Io`] if a command fails (with its output).
    pub fn generate() -> Result<Arc<TlsCerts>, LabError> {
        let openssl = require_openssl()?;
        let dir = tempfile::Builder::new()
            .prefix("redis-lab-tls-")
            .tempdir()
            .map_err(|e| LabError::io("creating a temporary directory", e))?;
        let d = dir.path();
        let ext = d.join("ext.cnf");
        std::fs::write(
            &ext,
            "[server]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             [client]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
        .map_err(|e| LabError::io(format!("writing {}", ext.display()), e))?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let s = |p: &Path| p.display().to_string();
        run(
            &openssl,
            d,
            &[
                &[
                    "req",
                    "-x509",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=redis-lab test CA",
                ][..],
                &ec,
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ],
        )?;
        for (name, cn, section) in [
            ("server", "127.0.0.1", "server"),
            ("client", "redis-lab client", "client"),
        ] {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let subj = format!("/CN={cn}");
            run(
                &openssl,
                d,
                &[
                    &["req", "-new", "-nodes", "-subj", &subj][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr],
                ],
            )?;
            run(
                &openssl,
                d,
                &[&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &crt,
                    "-extfile",
                    &s(&ext),
                    "-extensions",
                    section,
                ][..]],
            )?;
        }
        let read = |name: &str| {
            let p = d.join(name);
            std::fs::read(&p).map_err(|e| LabError::io(format!("reading {}", p.display()), e))
        };
        Ok(Arc::new(TlsCerts {
            ca_pem: read("ca.crt")?,
            client_cert_pem: read("client.crt")?,
            client_key_pem: read("client.key")?,
            dir,
        }))
    }

    /// The CA certificate (PEM), to trust in a client.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The client certificate (PEM), for mutual TLS.
    pub fn client_cert_pem(&self) -> &[u8] {
        &self.client_cert_pem
    }

    /// The client certificate's private key (PEM, PKCS#8).
    pub fn client_key_pem(&self) -> &[u8] {
        &self.client_key_pem
    }

    /// Path of the CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Path of the server certificate (for `127.0.0.1` and `localhost`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// Path of the server certificate's key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Path of the client certificate.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.crt")
    }

    /// Path of the client certificate's key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
}

/// Checks that the `openssl` CLI (needed only for TLS labs) is on the `PATH`.
///
/// # Errors
/// [`LabError::ToolNotFound`], with the package to install.
pub fn require_openssl() -> Result<PathBuf, LabError> {
    find_binary("openssl").map_err(|_| LabError::ToolNotFound {
        tool: "openssl".to_owned(),
        needed_for: "certificates of TLS lab servers".to_owned(),
        install: OPENSSL_HINT.to_owned(),
    })
}

/// Runs `openssl` with the concatenated argument groups in `dir`.
fn run(openssl: &Path, dir: &Path, groups: &[&[&str]]) -> Result<(), LabError> {
    let args: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let output = Command::new(openssl)
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("running {}", openssl.display()), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(LabError::io(
        format!("openssl {}", args.join(" ")),
        std::io::Error::other(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    ))
}

/// redis-rs enables no rustls crypto provider: installs `ring` as the process default unless
/// one is installed already.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
