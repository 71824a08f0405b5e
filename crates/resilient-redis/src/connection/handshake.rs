//! A client's first connection, and what a failed one says.
//!
//! [`Client::connect`](crate::Client::connect) promises a clear error at connect: a server that
//! cannot be reached, that rejects the credentials or needs some the URL does not give, that
//! accepts the connection and never answers, or that has no such database. redis-rs's handshake
//! sends `AUTH` only when the URL has a password (and `SELECT` only for a database other than
//! 0), so a server with `requirepass` accepts a connection without a password and refuses every
//! command after it: the first connection is checked with a `PING`.

use std::time::Duration;

use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError, Value, aio::MultiplexedConnection};

use super::Endpoint;
use crate::{
    config::ClientConfig,
    error::{Error, ErrorKind, Failure, Outcome},
};

/// Opens the pool's first connection and checks, with a `PING`, that the server takes commands
/// on it. Every failure is described by [`connect_error`].
pub(crate) async fn first_connection(
    endpoint: &Endpoint,
    conn_config: &AsyncConnectionConfig,
    config: &ClientConfig,
) -> Result<(MultiplexedConnection, u64), Error> {
    let (mut conn, epoch) = match endpoint.open(conn_config).await {
        Ok(opened) => opened,
        Err(e) => return Err(connect_error(config, e).await),
    };
    match ping(&mut conn, config.connect_timeout).await {
        Ok(()) => Ok((conn, epoch)),
        Err(e) => Err(connect_error(config, e).await),
    }
}

/// `PING` on `conn` within `limit`; an error reply (`NOAUTH`, `NOPERM`) is an error.
async fn ping(conn: &mut MultiplexedConnection, limit: Duration) -> Result<(), RedisError> {
    let answer = tokio::time::timeout(limit, conn.send_packed_command(&redis::cmd("PING"))).await;
    match answer {
        Ok(Ok(Value::ServerError(e))) => Err(e.into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

/// The client's error for a connection that could not be opened (or whose first `PING`
/// failed): what failed, named in the terms of the configuration, with the URL shown without
/// its password.
pub(crate) async fn connect_error(config: &ClientConfig, e: RedisError) -> Error {
    let shown = crate::redact_url(&config.url);
    let info = config.connection_info().ok();
    let settings = info.as_ref().map(|i| i.redis_settings());
    let db = settings.map_or(0, |s| s.db());
    let no_password =
        settings.is_some_and(|s| s.password().is_none()) && config.credentials.is_none();
    let tls_url = config.url.trim_start().starts_with("rediss");
    let limit = config.connect_timeout;
    let failure = Failure::of(&e);
    let (kind, what) = if failure.kind == ErrorKind::Auth {
        let what = if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) {
            format!("permission denied to {shown}")
        } else if no_password {
            format!(
                "authentication required by {shown}: the server has a password (requirepass or \
                 ACL) and the URL gives none (redis://[user]:PASSWORD@host:port)"
            )
        } else if let Some(provider) = &config.credentials {
            format!(
                "authentication failed to {shown} with the credentials from {}",
                provider.describe()
            )
        } else {
            format!("authentication failed to {shown}")
        };
        (ErrorKind::Auth, what)
    } else if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) && db != 0
    {
        // The handshake's only commands whose error replies redis-rs does not ignore are
        // `AUTH`/`HELLO` (an authentication error, above) and `SELECT`.
        select_refused(config, &shown, db, no_password).await
    } else if crate::connection::tls_error(&e).is_some() {
        (
            ErrorKind::Unavailable,
            format!("TLS handshake failed with {shown}"),
        )
    } else if e.is_timeout() && tls_url {
        (
            ErrorKind::Unavailable,
            format!(
                "cannot connect to {shown}: no TLS handshake within the connect timeout ({}): \
                 does the server speak TLS on this port?",
                millis(limit)
            ),
        )
    } else if e.is_timeout() {
        (ErrorKind::Unavailable, timed_out(config, &shown).await)
    } else if !tls_url && e.is_connection_dropped() && !e.is_connection_refusal() {
        (
            ErrorKind::Unavailable,
            format!(
                "cannot connect to {shown} (the server closed the connection at once: if it \
                 expects TLS, use rediss://)"
            ),
        )
    } else if e.kind() == redis::ErrorKind::Parse {
        (
            ErrorKind::Unavailable,
            format!(
                "cannot connect to {shown}: the answer to the handshake is not the Redis \
                 protocol: is this port a Redis server (not HTTP, not TLS)?"
            ),
        )
    } else if failure.kind == ErrorKind::InvalidConfig {
        (
            ErrorKind::InvalidConfig,
            format!("cannot connect to {shown}"),
        )
    } else {
        (ErrorKind::Unavailable, format!("cannot connect to {shown}"))
    };
    Error::new(kind, Outcome::Failed, what).with_source(e)
}

/// The handshake's `SELECT db` was refused. Without a password in the URL that may be `NOAUTH`
/// (redis-rs keeps only the reply's text, not its code): a connection to database 0 and its
/// `PING` tell. Otherwise the server has no such database.
async fn select_refused(
    config: &ClientConfig,
    shown: &str,
    db: i64,
    no_password: bool,
) -> (ErrorKind, String) {
    if no_password && config.sentinel_config().ok().flatten().is_none() {
        let answer = async {
            let info = config.connection_info()?;
            let settings = info.redis_settings().clone().set_db(0);
            let client = redis::Client::open(info.set_redis_settings(settings))?;
            let conn_config =
                AsyncConnectionConfig::new().set_connection_timeout(Some(config.connect_timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&conn_config)
                .await?;
            ping(&mut conn, config.connect_timeout).await
        };
        if let Err(e) = answer.await
            && Failure::of(&e).kind == ErrorKind::Auth
        {
            return (
                ErrorKind::Auth,
                format!(
                    "authentication required by {shown}: the server has a password \
                     (requirepass or ACL) and the URL gives none \
                     (redis://[user]:PASSWORD@host:port/{db})"
                ),
            );
        }
    }
    (
        ErrorKind::InvalidConfig,
        format!(
            "the server at {shown} refused database {db} (SELECT {db}, from the URL's /{db}): \
             a server has databases 0 to `databases` - 1 (16 by default), a cluster only 0"
        ),
    )
}

/// What timed out: a TCP connect that was never accepted, or a Redis handshake that was never
/// answered. A second TCP connect (on this failure path only) tells them apart.
async fn timed_out(config: &ClientConfig, shown: &str) -> String {
    let limit = millis(config.connect_timeout);
    let addr = config
        .connection_info()
        .ok()
        .filter(|_| config.sentinel_config().ok().flatten().is_none())
        .and_then(|info| match info.addr() {
            ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
            _ => None,
        });
    let Some((host, port)) = addr else {
        return format!(
            "cannot connect to {shown}: no answer within the connect timeout ({limit}), TCP \
             connect and Redis handshake together"
        );
    };
    let probe = config.connect_timeout.min(Duration::from_millis(500));
    let accepted = matches!(
        tokio::time::timeout(probe, tokio::net::TcpStream::connect((host.as_str(), port))).await,
        Ok(Ok(_))
    );
    if accepted {
        format!(
            "cannot connect to {shown}: the server accepted the TCP connection but did not \
             answer the Redis handshake within the connect timeout ({limit}): is it stopped, \
             overloaded, or not a Redis server?"
        )
    } else {
        format!(
            "cannot connect to {shown}: no TCP connection within the connect timeout ({limit}): \
             is the host reachable, or is a firewall dropping the packets?"
        )
    }
}

/// A duration for a message: `300 ms`, `1 s`, `1.5 s`.
fn millis(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(100) {
        format!("{} s", d.as_secs_f64())
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_would_write_them() {
        assert_eq!(millis(Duration::from_millis(300)), "300 ms");
        assert_eq!(millis(Duration::from_secs(1)), "1 s");
        assert_eq!(millis(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(millis(Duration::from_millis(1234)), "1234 ms");
    }
}
