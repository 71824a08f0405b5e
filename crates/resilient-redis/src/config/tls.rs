//! TLS settings ([`TlsConfig`]) and how one address becomes a plain or a TLS connection target
//! ([`Transport`]).

use std::{fmt, path::Path};

use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::error::Error;

/// Certificates for TLS connections (`rediss://`, `rediss+sentinel://`, cluster `rediss://`
/// seeds). See [`ClientConfig::tls`](crate::ClientConfig::tls).
///
/// Without a `TlsConfig`, a `rediss://` URL verifies the server's certificate (chain and host
/// name, or IP address) against the system's trusted roots and presents no client certificate.
///
/// # Default
/// No CA (the system roots), no client certificate, verification on.
///
/// # Example
/// ```no_run
/// use resilient_redis::{Client, ClientConfig, TlsConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ClientConfig {
///     // A private CA and a client certificate (mutual TLS), read now with clear errors.
///     tls: Some(TlsConfig::from_files(
///         Some("/etc/redis/ca.crt".as_ref()),
///         Some("/etc/redis/client.crt".as_ref()),
///         Some("/etc/redis/client.key".as_ref()),
///     )?),
///     ..ClientConfig::from_url("rediss://:secret@redis.internal:6380")?
/// };
/// let client = Client::with_config(config).await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificates of the CAs that sign the servers' certificates. When set, they
    /// *replace* the system roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM certificate chain the client presents (mutual TLS, `tls-auth-clients yes`). Needs
    /// [`client_key_pem`](Self::client_key_pem).
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of [`client_cert_pem`](Self::client_cert_pem).
    pub client_key_pem: Option<Vec<u8>>,
    /// **Dangerous**: accept any server certificate, for any name. The connection is encrypted
    /// but not authenticated: anyone on the path can impersonate the server and read every
    /// command and password. For throwaway test setups only. Same as a `#insecure` URL
    /// fragment (`rediss://host:6380/#insecure`).
    pub insecure_skip_verify: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<Vec<u8>>| if v.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("TlsConfig")
            .field("ca_cert_pem", &set(&self.ca_cert_pem))
            .field("client_cert_pem", &set(&self.client_cert_pem))
            .field("client_key_pem", &set(&self.client_key_pem))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl TlsConfig {
    /// Reads the PEM files now: a CA bundle, and a client certificate with its key (both or
    /// neither). Checked as [`TlsConfig::validate`] does.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the file that
    /// cannot be read or parsed.
    pub fn from_files(
        ca_cert: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<TlsConfig, Error> {
        let read = |what: &str, path: Option<&Path>| -> Result<Option<Vec<u8>>, Error> {
            path.map(|p| {
                std::fs::read(p).map_err(|e| {
                    Error::config(format!("cannot read the {what} file {}: {e}", p.display()))
                })
            })
            .transpose()
        };
        let config = TlsConfig {
            ca_cert_pem: read("TLS CA certificate", ca_cert)?,
            client_cert_pem: read("TLS client certificate", client_cert)?,
            client_key_pem: read("TLS client key", client_key)?,
            insecure_skip_verify: false,
        };
        let name = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
        config.validate().map_err(|e| {
            Error::config(format!(
                "{} (files: CA {:?}, certificate {:?}, key {:?})",
                e,
                name(ca_cert),
                name(client_cert),
                name(client_key)
            ))
        })?;
        Ok(config)
    }

    /// Checks that a client certificate comes with its key and that every PEM parses.
    pub fn validate(&self) -> Result<(), Error> {
        Transport::tls(Some(self), false).map(drop)
    }

    /// The certificates named by `RESILIENT_REDIS_TLS_CA_FILE`, `RESILIENT_REDIS_TLS_CERT_FILE`
    /// and `RESILIENT_REDIS_TLS_KEY_FILE`, read now; `None` when none is set. Errors name the
    /// variable and the file.
    pub(crate) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TlsConfig>, Error> {
        let files = [
            "RESILIENT_REDIS_TLS_CA_FILE",
            "RESILIENT_REDIS_TLS_CERT_FILE",
            "RESILIENT_REDIS_TLS_KEY_FILE",
        ]
        .map(|name| lookup(name).map(|v| (name, std::path::PathBuf::from(v.trim()))));
        if files.iter().all(Option::is_none) {
            return Ok(None);
        }
        let read = |i: usize| -> Result<Option<Vec<u8>>, Error> {
            let Some((name, path)) = &files[i] else {
                return Ok(None);
            };
            std::fs::read(path).map(Some).map_err(|e| {
                Error::config(format!("{name}={}: cannot read it: {e}", path.display()))
            })
        };
        let tls = TlsConfig {
            ca_cert_pem: read(0)?,
            client_cert_pem: read(1)?,
            client_key_pem: read(2)?,
            insecure_skip_verify: false,
        };
        tls.validate().map_err(|e| {
            let named: Vec<String> = files
                .iter()
                .flatten()
                .map(|(name, path)| format!("{name}={}", path.display()))
                .collect();
            Error::config(format!("{e} ({})", named.join(", ")))
        })?;
        Ok(Some(tls))
    }

    /// The certificates in redis-rs's form; `None` when there are none (system roots).
    pub(crate) fn certificates(&self) -> Result<Option<redis::TlsCertificates>, Error> {
        let client_tls = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::config(
                    "tls: client_cert_pem is set without client_key_pem",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "tls: client_key_pem is set without client_cert_pem",
                ));
            }
        };
        if client_tls.is_none() && self.ca_cert_pem.is_none() {
            return Ok(None);
        }
        let no_certificate = |pem: &[u8]| {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            CertificateDer::pem_slice_iter(pem).next().is_none()
        };
        if self.ca_cert_pem.as_deref().is_some_and(no_certificate) {
            return Err(Error::config("tls: ca_cert_pem holds no PEM certificate"));
        }
        if client_tls
            .as_ref()
            .is_some_and(|c| no_certificate(&c.client_cert))
        {
            return Err(Error::config(
                "tls: client_cert_pem holds no PEM certificate",
            ));
        }
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca_cert_pem.clone(),
        }))
    }
}

/// How connections to an address are made: plain TCP, or TLS with given certificates. Turns a
/// host and port (a master named by a sentinel, a cluster node) into a connection address.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    /// A `TcpTls` address carrying the TLS settings; `None` for plain TCP.
    tls: Option<ConnectionAddr>,
}

impl Transport {
    /// Plain TCP.
    pub(crate) fn plain() -> Transport {
        Transport { tls: None }
    }

    /// The transport of an address parsed from a URL (plain, or TLS with its settings).
    pub(crate) fn of(addr: &ConnectionAddr) -> Transport {
        match addr {
            ConnectionAddr::TcpTls { .. } => Transport {
                tls: Some(addr.clone()),
            },
            _ => Transport::plain(),
        }
    }

    /// TLS with `config` (or the system roots); `insecure` (a `#insecure` URL) or
    /// [`TlsConfig::insecure_skip_verify`] turns verification off.
    pub(crate) fn tls(config: Option<&TlsConfig>, insecure: bool) -> Result<Transport, Error> {
        install_crypto_provider();
        let insecure = insecure || config.is_some_and(|c| c.insecure_skip_verify);
        let url = if insecure {
            "rediss://localhost:6379/#insecure"
        } else {
            "rediss://localhost:6379"
        };
        let info = url
            .into_connection_info()
            .map_err(|e| Error::config(format!("TLS settings: {e}")).with_source(e))?;
        let certificates = match config {
            Some(c) => c.certificates()?,
            None => None,
        };
        let addr = match certificates {
            None => info.addr().clone(),
            Some(certificates) => redis::Client::build_with_tls(info, certificates)
                .map_err(|e| {
                    Error::config("tls: a certificate or key PEM cannot be used").with_source(e)
                })?
                .get_connection_info()
                .addr()
                .clone(),
        };
        Ok(Transport { tls: Some(addr) })
    }

    /// Whether connections are encrypted.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The address of `host:port` with this transport.
    pub(crate) fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        match &self.tls {
            Some(ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            }) => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        }
    }
}

/// redis-rs enables no rustls crypto provider; this crate builds rustls with `ring` only, and
/// installs it as the process default unless the application installed one first.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one meanwhile: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_keeps_tls_settings_for_other_hosts() {
        let plain = Transport::plain();
        assert!(matches!(plain.addr("h", 1), ConnectionAddr::Tcp(h, 1) if h == "h"));
        let tls = Transport::tls(None, true).unwrap();
        assert!(tls.is_tls());
        match tls.addr("10.0.0.2", 6380) {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            } => {
                assert_eq!((host.as_str(), port, insecure), ("10.0.0.2", 6380, true));
                assert!(tls_params.is_none());
            }
            other => panic!("{other:?}"),
        }
        let of = Transport::of(&tls.addr("x", 1));
        assert!(of.is_tls());
    }

    #[test]
    fn bad_pems_are_config_errors() {
        for (config, needle) in [
            (
                TlsConfig {
                    client_cert_pem: Some(b"x".to_vec()),
                    ..TlsConfig::default()
                },
                "client_key_pem",
            ),
            (
                TlsConfig {
                    ca_cert_pem: Some(b"not a pem".to_vec()),
                    ..TlsConfig::default()
                },
                "ca_cert_pem",
            ),
            (
                TlsConfig {
                    ca_cert_pem: Some(
                        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                    ),
                    ..TlsConfig::default()
                },
                "certificate",
            ),
        ] {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err =
            TlsConfig::from_files(Some(Path::new("/nonexistent/ca.pem")), None, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(format!("{:?}", TlsConfig::default()).contains("<none>"));
    }

    #[test]
    fn urls_choose_tls_for_data_nodes_and_sentinels() {
        use crate::ClientConfig;
        let tls_of = |c: &ClientConfig| Transport::of(c.connection_info().unwrap().addr()).is_tls();
        let c = ClientConfig::from_url("rediss://:pw@h:6380/1").unwrap();
        assert!(tls_of(&c));
        assert!(!tls_of(&ClientConfig::from_url("redis://h").unwrap()));

        let c = ClientConfig::from_url("rediss+sentinel://s1,s2:5000/m/2#insecure").unwrap();
        let s = c.sentinel.clone().unwrap();
        assert!(s.sentinel_tls && tls_of(&c));
        assert!(matches!(
            c.connection_info().unwrap().addr(),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        assert!(c.sentinel_transport(&s).unwrap().is_tls());
        let c = ClientConfig::from_url("redis+sentinel://s1/m").unwrap();
        assert!(!c.sentinel.clone().unwrap().sentinel_tls && !tls_of(&c));

        // Certificates with a plain URL: an error, not a silent plaintext connection.
        let err = ClientConfig {
            tls: Some(TlsConfig::default()),
            ..ClientConfig::from_url("redis://h").unwrap()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("rediss://"), "{err}");
        let err = ClientConfig {
            tls: Some(TlsConfig::default()),
            ..ClientConfig::from_url("redis+sentinel://s1/m").unwrap()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("sentinel_tls"), "{err}");
        // TLS to the sentinels only, plain data nodes.
        let mut c = ClientConfig::from_url("redis+sentinel://s1/m").unwrap();
        c.tls = Some(TlsConfig::default());
        c.sentinel.as_mut().unwrap().sentinel_tls = true;
        c.validate().unwrap();
    }

    #[test]
    fn tls_env_vars_name_the_variable_and_file() {
        use crate::ClientConfig;
        let err = ClientConfig::from_lookup(|k: &str| match k {
            "RESILIENT_REDIS_URL" => Some("rediss://h".to_owned()),
            "RESILIENT_REDIS_TLS_CA_FILE" => Some("/nonexistent/ca.pem".to_owned()),
            _ => None,
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("RESILIENT_REDIS_TLS_CA_FILE") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );
        let err = ClientConfig::from_lookup(|k: &str| match k {
            "RESILIENT_REDIS_URL" => Some("rediss://h".to_owned()),
            "RESILIENT_REDIS_TLS_CERT_FILE" => Some("/dev/null".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("client_key_pem"), "{err}");
        let c = ClientConfig::from_lookup(|k: &str| match k {
            "RESILIENT_REDIS_URL" => Some("rediss+sentinel://s1/m".to_owned()),
            "RESILIENT_REDIS_SENTINEL_TLS" => Some("off".to_owned()),
            _ => None,
        })
        .unwrap();
        assert!(!c.sentinel.unwrap().sentinel_tls);
        assert!(
            ClientConfig::from_lookup(|k: &str| {
                (k == "RESILIENT_REDIS_SENTINEL_TLS").then(|| "on".to_owned())
            })
            .is_err()
        );
    }
}
