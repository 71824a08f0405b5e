//! The wire baseline (hidden, `--client wire`): resilient-redis's prototype single-socket
//! connection ([`WireConnection`]), no retries, replaced after it breaks as raw's is.
//!
//! It speaks plain RESP2 over TCP with no response timeout, so it takes a
//! `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` URL (its handshake sends `AUTH` and `SELECT`,
//! within [`WireConfig`]'s default handshake timeout), but no TLS, socket path or RESP3, and
//! no `--deadline-ms`.

use redis::{
    ConnectionAddr, IntoConnectionInfo as _, ProtocolVersion, RedisConnectionInfo, RedisResult,
};
use resilient_redis::wire::{WireConfig, WireConnection};

use super::replacing::{Connector, Replacing};
use crate::error::CliError;

/// The wire baseline: one shared [`WireConnection`], replaced after it breaks.
pub(crate) type WireClient = Replacing<Wire>;

/// Opens [`WireConnection`]s to one host (resolved again on every connect), each with the
/// URL's handshake.
pub(crate) struct Wire {
    host: String,
    port: u16,
    /// The URL's user, password and database (its `Debug` hides the password).
    info: RedisConnectionInfo,
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
        WireConnection::connect_with(addr, &self.info, &WireConfig::default()).await
    }
}

impl WireClient {
    /// Opens the wire connection to `url` (`redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`).
    ///
    /// # Errors
    /// [`CliError::Usage`] for a URL it cannot serve (TLS, a socket path, RESP3),
    /// [`CliError::Runtime`] when it cannot connect or the server refuses the handshake.
    pub(crate) async fn connect(url: &str) -> Result<WireClient, CliError> {
        let shown = resilient_redis::redact_url(url);
        let info = url
            .into_connection_info()
            .map_err(|err| CliError::usage(format!("invalid --url {shown:?}: {err}")))?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(CliError::usage(
                "--client wire connects over plain TCP: give a redis:// URL, not TLS or a socket",
            ));
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return Err(CliError::usage(
                "--client wire speaks RESP2 only: give a URL without protocol=resp3",
            ));
        }
        let wire = Wire {
            host: host.clone(),
            port: *port,
            info: settings.clone(),
        };
        Replacing::open(wire)
            .await
            .map_err(|err| CliError::runtime(format!("cannot connect to {shown}: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use redis_lab::{RedisServer, ServerConfig};

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
            "redis+unix:///tmp/redis.sock",
            "rediss://127.0.0.1:1",
            "redis://127.0.0.1:1/?protocol=resp3",
            "not a url",
        ] {
            let Err(err) = WireClient::connect(url).await else {
                panic!("{url} accepted")
            };
            assert!(matches!(err, CliError::Usage(_)), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn a_url_with_user_password_and_database_is_served() {
        let server = RedisServer::start_with(ServerConfig {
            password: Some("cli-s3cret".to_owned()),
            ..ServerConfig::default()
        })
        .await
        .expect("lab server");
        server
            .rotate_user("bench", "bench-pw")
            .await
            .expect("ACL user");
        let url = format!("redis://bench:bench-pw@{}/4", server.addr());
        let client = WireClient::connect(&url).await.expect("connects");
        let mut conn = client.current().clone();
        let user: String = redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut conn)
            .await
            .expect("ACL WHOAMI");
        assert_eq!(user, "bench");
        assert_eq!(redis::aio::ConnectionLike::get_db(&conn), 4);
        let () = redis::cmd("SET")
            .arg("cli:k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .expect("SET");
        let mut db4 = redis::Client::open(format!("{}/4", server.url()))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("db 4");
        let v: Option<String> = redis::cmd("GET")
            .arg("cli:k")
            .query_async(&mut db4)
            .await
            .expect("GET");
        assert_eq!(v.as_deref(), Some("v"));
        // The lab's URL: the default user's password only.
        WireClient::connect(&server.url())
            .await
            .expect("password only");
    }

    #[tokio::test]
    async fn a_wrong_password_is_a_runtime_error_that_does_not_show_it() {
        let server = RedisServer::start_with(ServerConfig {
            password: Some("right-pw".to_owned()),
            ..ServerConfig::default()
        })
        .await
        .expect("lab server");
        let url = format!("redis://:wr0ng-cli-pw@{}", server.addr());
        let Err(err) = WireClient::connect(&url).await else {
            panic!("a wrong password accepted")
        };
        assert!(matches!(err, CliError::Runtime(_)), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("authentication failed"), "{shown}");
        assert!(!shown.contains("wr0ng-cli-pw"), "{shown}");
    }
}
