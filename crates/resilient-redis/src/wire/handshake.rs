//! The handshake a [`WireConnection`](super::WireConnection) sends before it is handed out:
//! `AUTH`, `SELECT` and `CLIENT SETNAME`, as one pipelined write, in the order and with the
//! checks of redis-rs 1.8's own connection setup.

use std::time::Duration;

use redis::{
    ErrorKind, Pipeline, ProtocolVersion, RedisConnectionInfo, RedisError, RedisResult,
    ServerError, ServerErrorKind, Value,
};

/// How a [`WireConnection`](super::WireConnection) is opened, besides what its
/// [`RedisConnectionInfo`] says.
///
/// # Default
/// | field | default | why |
/// |---|---|---|
/// | `handshake_timeout` | 5 s | a server that accepts and never answers must not hold the caller; a loaded server answers `AUTH` well within it |
/// | `client_name` | none | redis-rs sends none either |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireConfig {
    /// How long the handshake may take, from its write to its last reply; after it the
    /// connection is closed and the connect fails with an I/O `TimedOut` error. Must be more
    /// than zero. It does not bound the TCP connect itself: wrap the call in
    /// `tokio::time::timeout` for that.
    pub handshake_timeout: Duration,
    /// The name sent with `CLIENT SETNAME` (shown by `CLIENT LIST`), if any. redis-rs's
    /// [`RedisConnectionInfo`] has no client name, hence this field.
    pub client_name: Option<String>,
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            handshake_timeout: Duration::from_secs(5),
            client_name: None,
        }
    }
}

/// Where each checked command's reply sits among the handshake's replies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Steps {
    auth: Option<usize>,
    select: Option<usize>,
    set_name: Option<usize>,
}

/// What a checked handshake says next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// Every step succeeded.
    Done,
    /// The server does not know `AUTH <username> <password>` (before Redis 6): send the
    /// handshake again with `AUTH <password>`, as redis-rs does.
    RetryWithoutUsername,
}

/// Refuses what the connection cannot honour, before anything is opened.
///
/// # Errors
/// [`ErrorKind::InvalidClientConfig`] for RESP3 or a zero handshake timeout.
pub(super) fn check_config(info: &RedisConnectionInfo, config: &WireConfig) -> RedisResult<()> {
    if info.protocol() != ProtocolVersion::RESP2 {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "RESP3 is not supported by WireConnection yet",
        )));
    }
    if config.handshake_timeout.is_zero() {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "WireConfig::handshake_timeout must be more than zero",
        )));
    }
    Ok(())
}

/// The handshake's commands (empty if there is nothing to send) and where their replies are.
/// `with_username` sends `AUTH <username> <password>` when a username is set.
pub(super) fn pipeline(
    info: &RedisConnectionInfo,
    config: &WireConfig,
    with_username: bool,
) -> (Pipeline, Steps) {
    let mut pipe = redis::pipe();
    let mut steps = Steps::default();
    if let Some(password) = info.password() {
        steps.auth = Some(pipe.len());
        pipe.cmd("AUTH");
        if with_username && let Some(username) = info.username() {
            pipe.arg(username);
        }
        pipe.arg(password);
    }
    if info.db() != 0 {
        steps.select = Some(pipe.len());
        pipe.cmd("SELECT").arg(info.db());
    }
    if let Some(name) = &config.client_name {
        steps.set_name = Some(pipe.len());
        pipe.cmd("CLIENT").arg("SETNAME").arg(name);
    }
    (pipe, steps)
}

/// Checks the handshake's replies, `AUTH`'s first.
///
/// # Errors
/// [`ErrorKind::AuthenticationFailed`] for a refused `AUTH` (without the password, even if
/// the server's message quoted it); the server's kind, with the database number, for a
/// refused `SELECT`; the server's kind, with the name, for a refused `CLIENT SETNAME`;
/// [`ErrorKind::Client`] for a missing reply.
pub(super) fn check(
    replies: &[Value],
    steps: Steps,
    info: &RedisConnectionInfo,
    config: &WireConfig,
) -> RedisResult<Checked> {
    if let Some(index) = steps.auth {
        let reply = reply(replies, index, "Missing AUTH response")?;
        if check_auth(reply, info.password())? == Checked::RetryWithoutUsername {
            return Ok(Checked::RetryWithoutUsername);
        }
    }
    if let Some(index) = steps.select {
        let reply = reply(replies, index, "Missing SELECT DB response")?;
        if let Value::ServerError(err) = reply {
            return Err(refused(
                err,
                "Redis server refused to switch database",
                format!("SELECT {}", info.db()),
            ));
        }
    }
    if let Some(index) = steps.set_name {
        let reply = reply(replies, index, "Missing CLIENT SETNAME response")?;
        if let Value::ServerError(err) = reply {
            let name = config.client_name.as_deref().unwrap_or_default();
            return Err(refused(
                err,
                "Redis server refused the client name",
                format!("CLIENT SETNAME {name:?}"),
            ));
        }
    }
    Ok(Checked::Done)
}

fn reply<'a>(replies: &'a [Value], index: usize, missing: &'static str) -> RedisResult<&'a Value> {
    replies
        .get(index)
        .ok_or_else(|| RedisError::from((ErrorKind::Client, missing)))
}

/// `AUTH`'s reply, as redis-rs 1.8 checks it (its messages, its retry without a username);
/// the server's own words are kept in the detail, with the password masked out.
fn check_auth(reply: &Value, password: Option<&str>) -> RedisResult<Checked> {
    let err = match reply {
        Value::Okay => return Ok(Checked::Done),
        Value::ServerError(err) => err,
        _ => {
            return Err(RedisError::from((
                ServerErrorKind::ResponseError.into(),
                "Redis server refused to authenticate, returns Ok() != Value::Okay",
            )));
        }
    };
    let details = err.details().unwrap_or_default();
    if details.contains("wrong number of arguments for 'auth' command") {
        return Ok(Checked::RetryWithoutUsername);
    }
    let said = format!("{} {}", err.code(), details);
    Err(RedisError::from((
        ErrorKind::AuthenticationFailed,
        "Password authentication failed",
        masked(said.trim_end(), password),
    )))
}

/// `text` with every occurrence of `secret` (when set and not empty) replaced.
fn masked(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "<redacted>"),
        _ => text.to_owned(),
    }
}

/// A refused step's error: the server error's kind, `what` and the command it refused.
fn refused(err: &ServerError, what: &'static str, command: String) -> RedisError {
    let kind = RedisError::from(err.clone()).kind();
    RedisError::from((kind, what, format!("{command}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: &str) -> Value {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).expect("an error reply")
    }

    fn info() -> RedisConnectionInfo {
        RedisConnectionInfo::default()
    }

    fn packed(pipe: &Pipeline) -> String {
        String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned()
    }

    #[test]
    fn nothing_to_send_by_default() {
        let (pipe, steps) = pipeline(&info(), &WireConfig::default(), true);
        assert!(pipe.is_empty());
        assert_eq!(steps, Steps::default());
        assert_eq!(
            check(&[], steps, &info(), &WireConfig::default()),
            Ok(Checked::Done)
        );
    }

    #[test]
    fn auth_select_and_name_in_redis_rs_order() {
        let info = info().set_username("app").set_password("pw").set_db(3);
        let config = WireConfig {
            client_name: Some("me".into()),
            ..WireConfig::default()
        };
        let (pipe, steps) = pipeline(&info, &config, true);
        let expected = redis::pipe()
            .cmd("AUTH")
            .arg("app")
            .arg("pw")
            .cmd("SELECT")
            .arg(3)
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg("me")
            .clone();
        assert_eq!(packed(&pipe), packed(&expected));
        assert_eq!(
            steps,
            Steps {
                auth: Some(0),
                select: Some(1),
                set_name: Some(2)
            }
        );
        let (pipe, _) = pipeline(&info, &config, false);
        assert!(packed(&pipe).starts_with("*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"));
    }

    #[test]
    fn a_refused_auth_is_authentication_failed_without_the_password() {
        let info = info().set_password("hunter2");
        let (_, steps) = pipeline(&info, &WireConfig::default(), true);
        let reply = error("WRONGPASS the password hunter2 is wrong");
        let err = check(&[reply], steps, &info, &WireConfig::default()).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("WRONGPASS"), "{shown}");
        }
    }

    #[test]
    fn an_old_server_gets_auth_without_username() {
        let info = info().set_username("app").set_password("pw");
        let (_, steps) = pipeline(&info, &WireConfig::default(), true);
        let reply = error("ERR wrong number of arguments for 'auth' command");
        assert_eq!(
            check(&[reply], steps, &info, &WireConfig::default()),
            Ok(Checked::RetryWithoutUsername)
        );
    }

    #[test]
    fn a_refused_select_names_the_database() {
        let info = info().set_db(99);
        let (_, steps) = pipeline(&info, &WireConfig::default(), true);
        let reply = error("ERR DB index is out of range");
        let err = check(&[reply], steps, &info, &WireConfig::default()).expect_err("refused");
        assert_eq!(
            err.kind(),
            ErrorKind::Server(ServerErrorKind::ResponseError)
        );
        assert!(err.to_string().contains("SELECT 99"), "{err}");
    }

    #[test]
    fn a_missing_reply_is_a_client_error() {
        let info = info().set_db(1);
        let (_, steps) = pipeline(&info, &WireConfig::default(), true);
        let err = check(&[], steps, &info, &WireConfig::default()).expect_err("missing");
        assert_eq!(err.kind(), ErrorKind::Client);
    }

    #[test]
    fn resp3_and_a_zero_timeout_are_refused() {
        let resp3 = info().set_protocol(ProtocolVersion::RESP3);
        let err = check_config(&resp3, &WireConfig::default()).expect_err("RESP3");
        assert_eq!(err.kind(), ErrorKind::InvalidClientConfig);
        assert!(err.to_string().contains("RESP3 is not supported"), "{err}");
        let zero = WireConfig {
            handshake_timeout: Duration::ZERO,
            ..WireConfig::default()
        };
        let err = check_config(&info(), &zero).expect_err("zero");
        assert_eq!(err.kind(), ErrorKind::InvalidClientConfig);
    }
}
