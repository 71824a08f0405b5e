//! The wire baseline (hidden, `--client wire`): resilient-redis's prototype single-socket
//! connection ([`WireConnection`]), no retries, replaced after it breaks as raw's is.
//!
//! It speaks plain RESP2 over TCP to database 0 with no response timeout, so it takes a
//! `redis://HOST:PORT` URL without password or database, and no `--deadline-ms`.

use redis::{ConnectionAddr, ProtocolVersion, RedisResult};
use resilient_redis::wire::WireConnection;

use super::replacing::{Connector, Replacing};
use crate::error::CliError;

/// The wire baseline: one shared [`WireConnection`], replaced after it breaks.
pub(crate) type WireClient = Replacing<Wire>;

/// Opens [`WireConnection`]s to one host (resolved again on every connect).
pub(crate) struct Wire {
    host: String,
    port: u16,
}

impl Connector for Wire {
    type Conn = WireConnection;

    async fn connect(&self) -> RedisResult<WireConnection> {
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} has no address", self.host),
                )
            })?;
        WireConnection::connect(addr).await
    }
}

impl WireClient {
    /// Opens the wire connection to `url` (`redis://HOST:PORT`, nothing more).
    ///
    /// # Errors
    /// [`CliError::Usage`] for a URL it cannot serve (TLS, a socket path, a password, a
    /// database, RESP3), [`CliError::Runtime`] when it cannot connect.
    pub(crate) async fn connect(url: &str) -> Result<WireClient, CliError> {
        let shown = resilient_redis::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|err| CliError::usage(format!("invalid --url {shown:?}: {err}")))?;
        let info = client.get_connection_info();
        let settings = info.redis_settings();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(CliError::usage(
                "--client wire connects over plain TCP: give a redis://HOST:PORT URL",
            ));
        };
        if settings.password().is_some()
            || settings.username().is_some()
            || settings.db() != 0
            || settings.protocol() != ProtocolVersion::RESP2
        {
            return Err(CliError::usage(
                "--client wire sends no AUTH, SELECT or HELLO: give a URL without user, \
                 password, database or protocol",
            ));
        }
        let wire = Wire {
            host: host.clone(),
            port: *port,
        };
        Replacing::open(wire)
            .await
            .map_err(|err| CliError::runtime(format!("cannot connect to {shown}: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use redis_lab::RedisServer;

    use super::*;
    use crate::client::replacing::assert_replaced_once_for_every_worker;

    #[tokio::test]
    async fn a_broken_connection_is_replaced_once_for_every_worker() {
        let server = RedisServer::start().await.expect("lab server");
        let first = WireClient::connect(&server.url()).await.expect("connects");
        assert_replaced_once_for_every_worker(&server, first).await;
    }

    #[test]
    fn client_wire_parses_and_is_hidden_from_help() {
        use clap::ValueEnum;
        let kind = crate::client::ClientKind::from_str("wire", false).expect("parses");
        assert_eq!(kind.name(), "wire");
        let value = kind.to_possible_value().expect("a value");
        assert!(value.is_hide_set());
    }

    #[tokio::test]
    async fn urls_it_cannot_serve_are_usage_errors() {
        for url in [
            "redis://:secret@127.0.0.1:1",
            "redis://127.0.0.1:1/2",
            "redis+unix:///tmp/redis.sock",
            "redis://127.0.0.1:1/?protocol=resp3",
        ] {
            let Err(err) = WireClient::connect(url).await else {
                panic!("{url} accepted")
            };
            assert!(matches!(err, CliError::Usage(_)), "{url}: {err}");
        }
    }
}
