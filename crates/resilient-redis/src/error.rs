//! Errors and outcomes.
//!
//! Every call ends in exactly one of three ways: success, a definite failure ([`Outcome::Failed`]:
//! the server surely did not apply the command) or an ambiguous failure ([`Outcome::Ambiguous`]: it
//! may have been applied). An ambiguous failure is never reported as a plain failure, and it is
//! never retried silently unless the command is safe to repeat. One more case is not a failure of
//! the call at all: the server ran the command and replied, and redis-rs could not convert the
//! reply to the type the caller asked for ([`Outcome::Applied`], [`ErrorKind::Conversion`]).
//!
//! Through [`redis::aio::ConnectionLike`] the client must return [`redis::RedisError`]. Error
//! replies that the server sent and that the client did not retry (`WRONGTYPE`, `NOSCRIPT`, syntax
//! errors, ...) come back unchanged, so redis-rs code keeps working. Every other failure carries a
//! [`resilient_redis::Error`](Error) inside the `RedisError` (as the source of an I/O-kind error);
//! [`Error::from_redis`] finds it, and [`Failure::of`] tells the kind and the outcome of any
//! `RedisError`.

use std::{fmt, io, time::Duration};

use redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};

use crate::commands::CommandSafety;

/// Whether a failed call was applied by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The server surely did not apply the command.
    Failed,
    /// The command may have been applied: the request may have reached the server before the
    /// connection broke or the reply was lost.
    Ambiguous,
    /// The server ran the command and replied; what failed is the conversion of the reply to the
    /// type asked for ([`ErrorKind::Conversion`]). A write was applied: do not send it again.
    Applied,
}

impl Outcome {
    /// The outcome of any [`RedisError`], from this client or from a plain redis-rs connection:
    /// [`Failure::of`]`(err).outcome`.
    ///
    /// An error of this client answers with the outcome it recorded. For other errors: a reply
    /// from the server (`-ERR ...`) is [`Outcome::Failed`]; an error before any connection existed
    /// (refused, bad config) is `Failed`; an I/O error or a timeout on a live connection is
    /// [`Outcome::Ambiguous`], since the request may have been written; a reply that could not
    /// be converted to the type asked for is [`Outcome::Applied`].
    pub fn of(err: &RedisError) -> Outcome {
        Failure::of(err).outcome
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Failed => "not applied",
            Outcome::Ambiguous => "may have been applied",
            Outcome::Applied => "applied",
        })
    }
}

/// What went wrong, in terms of what an application can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting or the URL is invalid. Fix the configuration.
    InvalidConfig,
    /// The server could not be reached (refused, unreachable, not connected in time).
    Unavailable,
    /// The password or user was rejected, or the user lacks a permission.
    Auth,
    /// The connection broke, or stopped answering, while the request was in flight.
    ConnectionLost,
    /// The call's total deadline passed.
    DeadlineExceeded,
    /// The circuit breaker is open: the server failed repeatedly and the call was not attempted.
    BreakerOpen,
    /// The retry budget is spent: retries are refused to avoid multiplying load.
    BudgetExhausted,
    /// The server answered with an error reply (after any retries the reply allowed).
    Server,
    /// The server is throttling requests (`THROTTLED`), and retries did not get through in time.
    Throttled,
    /// The client refuses this command on a shared connection (`SELECT`, `MULTI`, `SUBSCRIBE`, ...).
    Refused,
    /// Not sent: the server has been refusing work (`THROTTLED`, `BUSY`, `LOADING`), and adaptive
    /// throttling rejected the call locally to keep from flooding it (see
    /// [`ClientConfig::adaptive_throttle`](crate::ClientConfig::adaptive_throttle)). Definite
    /// failure: the server never saw the call. Retry later, or shed the work.
    RejectedLocally,
    /// The server replied, but redis-rs could not convert the reply to the type asked for: a
    /// `GET` of a missing key into `String` (ask for `Option<String>`), `OK` into `i64`. The
    /// command ran ([`Outcome::Applied`]).
    Conversion,
    /// With [`Durability::Replicated`](crate::Durability::Replicated): the master applied the
    /// write, but fewer replicas than required confirmed it in time (a replica lagging or gone,
    /// a failover under way), so a failover could still take it back. Always
    /// [`Outcome::Ambiguous`]; writes safe to repeat are retried before this is returned.
    Unconfirmed,
    /// An optimistic transaction ([`Client::transaction`](crate::Client::transaction)) found a
    /// watched key changed at every run within its deadline or retry budget: nothing applied.
    Conflict,
}

impl ErrorKind {
    /// A short, stable name (`"unavailable"`, `"deadline_exceeded"`, ...), for metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Auth => "auth",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::BreakerOpen => "breaker_open",
            ErrorKind::BudgetExhausted => "budget_exhausted",
            ErrorKind::Server => "server",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Refused => "refused",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RejectedLocally => "rejected_locally",
            ErrorKind::Conversion => "conversion",
            ErrorKind::Unconfirmed => "unconfirmed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a [`RedisError`] is, and whether the command was applied: one answer
/// for every error a call can return, from this client or from a plain redis-rs connection.
///
/// | error | `kind` | `outcome` |
/// |---|---|---|
/// | this client's own ([`Error::from_redis`] finds it) | as recorded | as recorded |
/// | `NOAUTH`, `WRONGPASS`, `NOPERM` reply; redis-rs's `AuthenticationFailed` | [`ErrorKind::Auth`] | [`Outcome::Failed`] |
/// | any other error reply (`WRONGTYPE`, `ERR ...`, `EXECABORT`, ...) | [`ErrorKind::Server`] | `Failed` |
/// | connection refused | [`ErrorKind::Unavailable`] | `Failed` |
/// | other I/O error or timeout; a reply that is not valid RESP | [`ErrorKind::ConnectionLost`] | [`Outcome::Ambiguous`] |
/// | a reply not convertible to the type asked for | [`ErrorKind::Conversion`] | [`Outcome::Applied`] |
/// | redis-rs's configuration errors (bad URL, no sentinel, RESP3 unsupported) | [`ErrorKind::InvalidConfig`] | `Failed` |
/// | Sentinel or Cluster found no node to send to | `Unavailable` | `Failed` |
/// | any other error redis-rs raises before sending | [`ErrorKind::Refused`] | `Failed` |
///
/// A server reply keeps its code in [`RedisError::code`] (`"WRONGTYPE"`); [`error_kind_name`]
/// gives a stable string for reports.
///
/// ```no_run
/// # async fn f(mut client: resilient_redis::Client) {
/// use redis::AsyncCommands;
/// use resilient_redis::{ErrorKind, Failure, Outcome};
///
/// if let Err(e) = client.incr::<_, _, i64>("counter", 1).await {
///     let failure = Failure::of(&e);
///     match failure.kind {
///         ErrorKind::Auth | ErrorKind::InvalidConfig => eprintln!("fix the configuration: {e}"),
///         ErrorKind::Server => eprintln!("the server refused it ({:?}): {e}", e.code()),
///         _ => eprintln!("{}: {e}", failure.kind),
///     }
///     match failure.outcome {
///         Outcome::Failed => { /* not applied: safe to send again */ }
///         Outcome::Ambiguous => { /* may have been applied: check before sending again */ }
///         Outcome::Applied => { /* applied; only reading the reply failed */ }
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Failure {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Whether the command was applied.
    pub outcome: Outcome,
}

impl Failure {
    /// The kind and outcome of `err` (see the table above).
    pub fn of(err: &RedisError) -> Failure {
        if let Some(e) = Error::from_redis(err) {
            return Failure {
                kind: e.kind(),
                outcome: e.outcome(),
            };
        }
        let (kind, outcome) = match err.kind() {
            RedisKind::Server(_) | RedisKind::Extension => {
                match crate::replies::Code::of_redis(err) {
                    Some(code) if code.is_auth() => (ErrorKind::Auth, Outcome::Failed),
                    _ => (ErrorKind::Server, Outcome::Failed),
                }
            }
            RedisKind::AuthenticationFailed => (ErrorKind::Auth, Outcome::Failed),
            RedisKind::Io if err.is_connection_refusal() => {
                (ErrorKind::Unavailable, Outcome::Failed)
            }
            RedisKind::Io => (ErrorKind::ConnectionLost, Outcome::Ambiguous),
            RedisKind::Parse if is_wire_parse_error(err) => {
                (ErrorKind::ConnectionLost, Outcome::Ambiguous)
            }
            RedisKind::Parse | RedisKind::UnexpectedReturnType => {
                (ErrorKind::Conversion, Outcome::Applied)
            }
            RedisKind::InvalidClientConfig
            | RedisKind::EmptySentinelList
            | RedisKind::RESP3NotSupported => (ErrorKind::InvalidConfig, Outcome::Failed),
            RedisKind::MasterNameNotFoundBySentinel
            | RedisKind::NoValidReplicasFoundBySentinel
            | RedisKind::ClusterConnectionNotFound => (ErrorKind::Unavailable, Outcome::Failed),
            RedisKind::Client => (ErrorKind::Refused, Outcome::Failed),
            // redis-rs may add kinds; those it has now are raised before anything is sent.
            _ => (ErrorKind::Refused, Outcome::Failed),
        };
        Failure { kind, outcome }
    }
}

/// Whether a `Parse` error of redis-rs is a reply that is not valid RESP (the connection is out
/// of step: ambiguous) rather than a valid reply that did not convert to the type asked for.
/// redis-rs gives both the same kind and tells them apart only in the text: its RESP decoder's
/// errors are those of `combine`, which begin `Parse error at`. This client never returns a wire
/// error raw (it reports the broken connection as its own error), so this matters only for
/// errors of plain redis-rs connections.
fn is_wire_parse_error(err: &RedisError) -> bool {
    err.detail()
        .is_some_and(|d| d.trim_start().starts_with("Parse error at"))
}

/// An error of the resilient client: a kind, an outcome, and the last underlying error.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    outcome: Outcome,
    message: String,
    attempts: u32,
    retry_in: Option<Duration>,
    /// The call was a read ([`CommandSafety::ReadOnly`]): "may have been applied" says nothing
    /// true about it.
    read: bool,
    source: Option<RedisError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, outcome: Outcome, message: impl Into<String>) -> Self {
        Error {
            kind,
            outcome,
            message: message.into(),
            attempts: 0,
            retry_in: None,
            read: false,
            source: None,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, Outcome::Failed, message)
    }

    pub(crate) fn with_source(mut self, source: RedisError) -> Self {
        self.source = Some(source);
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Notes what kind of command the call was, for the message: an ambiguous read is not
    /// described as "may have been applied".
    pub(crate) fn for_command(mut self, safety: CommandSafety) -> Self {
        self.read = safety == CommandSafety::ReadOnly;
        self
    }

    pub(crate) fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub(crate) fn with_retry_in(mut self, retry_in: Duration) -> Self {
        self.retry_in = Some(retry_in);
        self
    }

    /// The message alone, without the outcome note and the source.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the command may have been applied.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// `true` when the command may have been applied ([`Outcome::Ambiguous`]).
    pub fn is_ambiguous(&self) -> bool {
        self.outcome == Outcome::Ambiguous
    }

    /// How many attempts reached the point of sending (0 when none did).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// For [`ErrorKind::BreakerOpen`]: how long until the breaker lets a probe through.
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry_in
    }

    /// The last error from redis-rs, if there was one.
    pub fn redis_error(&self) -> Option<&RedisError> {
        self.source.as_ref()
    }

    /// Finds the client's error inside a [`RedisError`] returned through
    /// [`redis::aio::ConnectionLike`] (for example by a [`redis::AsyncCommands`] method).
    ///
    /// ```no_run
    /// # async fn f(mut client: resilient_redis::Client) {
    /// use redis::AsyncCommands;
    /// if let Err(e) = client.incr::<_, _, i64>("counter", 1).await {
    ///     match resilient_redis::Error::from_redis(&e) {
    ///         Some(err) if err.is_ambiguous() => eprintln!("may have been applied: {err}"),
    ///         Some(err) => eprintln!("{}: {err}", err.outcome()),
    ///         // A server reply (WRONGTYPE, ...) or a reply of another type than asked for: see
    ///         // `Failure::of` for both.
    ///         None => eprintln!("{}: {e}", resilient_redis::Outcome::of(&e)),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn from_redis(err: &RedisError) -> Option<&Error> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
        while let Some(s) = source {
            if let Some(e) = s.downcast_ref::<Error>() {
                return Some(e);
            }
            // redis-rs keeps an I/O error as `Arc<dyn Error + Send + Sync>` and hands out the Arc.
            let io = s.downcast_ref::<io::Error>().or_else(|| {
                s.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
                    .and_then(|arc| arc.downcast_ref::<io::Error>())
            });
            if let Some(inner) = io.and_then(io::Error::get_ref)
                && let Some(e) = inner.downcast_ref::<Error>()
            {
                return Some(e);
            }
            source = s.source();
        }
        None
    }

    /// Turns the error into a [`RedisError`] for [`redis::aio::ConnectionLike`]: a plain server
    /// reply that was not retried comes back unchanged; anything else carries this error.
    pub fn into_redis(self) -> RedisError {
        if self.kind == ErrorKind::Server
            && self.attempts <= 1
            && self.outcome == Outcome::Failed
            && let Some(source) = self.source
        {
            return source;
        }
        RedisError::from(io::Error::other(self))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        f.write_str(match self.outcome {
            Outcome::Ambiguous if self.read => {
                " (the read got no answer; a read changes nothing, so it can be sent again)"
            }
            Outcome::Ambiguous => " (outcome unknown: the command may have been applied)",
            Outcome::Failed | Outcome::Applied => "",
        })?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for RedisError {
    fn from(err: Error) -> Self {
        err.into_redis()
    }
}

/// A short, stable name for any [`RedisError`]: the client's [`ErrorKind::as_str`] for its own
/// errors, the server's error code (`"WRONGTYPE"`, `"LOADING"`, ...) for replies, else `"io"`,
/// `"timeout"`, `"refused"`, `"auth"`, `"conversion"` (a reply not of the type asked for),
/// `"parse"` (a reply that is not valid RESP) or `"client"`. For reports such as the
/// benchmark's `errors_by_kind`; to act on an error, match [`Failure::of`] instead.
pub fn error_kind_name(err: &RedisError) -> String {
    if let Some(e) = Error::from_redis(err) {
        return e.kind().as_str().to_owned();
    }
    if let Some(code) = err.code() {
        return code.to_owned();
    }
    match err.kind() {
        RedisKind::Io if err.is_timeout() => "timeout".into(),
        RedisKind::Io if err.is_connection_refusal() => "refused".into(),
        RedisKind::Io => "io".into(),
        RedisKind::AuthenticationFailed => "auth".into(),
        RedisKind::Parse if is_wire_parse_error(err) => "parse".into(),
        RedisKind::Parse | RedisKind::UnexpectedReturnType => ErrorKind::Conversion.as_str().into(),
        RedisKind::Server(ServerErrorKind::ResponseError) => "ERR".into(),
        _ => "client".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_survives_the_trip_through_redis_error() {
        let e = Error::new(
            ErrorKind::ConnectionLost,
            Outcome::Ambiguous,
            "connection lost",
        );
        let r: RedisError = e.into();
        assert_eq!(Outcome::of(&r), Outcome::Ambiguous);
        let back = Error::from_redis(&r).expect("inner error");
        assert_eq!(back.kind(), ErrorKind::ConnectionLost);
        assert_eq!(error_kind_name(&r), "connection_lost");
    }

    #[test]
    fn plain_server_replies_pass_through_unchanged() {
        let reply = redis::make_extension_error("WRONGTYPE".into(), Some("bad".into()));
        let e = Error::new(ErrorKind::Server, Outcome::Failed, "server error")
            .with_source(reply.clone())
            .with_attempts(1);
        let r: RedisError = e.into();
        assert_eq!(r.code(), Some("WRONGTYPE"));
        assert!(Error::from_redis(&r).is_none());
        assert_eq!(Outcome::of(&r), Outcome::Failed);
    }

    fn reply(text: &str) -> RedisError {
        match redis::parse_redis_value(text.as_bytes()).expect("a reply") {
            redis::Value::ServerError(e) => RedisError::from(e),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    fn failure(kind: ErrorKind, outcome: Outcome) -> Failure {
        Failure { kind, outcome }
    }

    #[test]
    fn a_reply_of_the_wrong_type_was_applied_and_is_not_ambiguous() {
        // GET of a missing key into `String`: what redis-rs returns after the call succeeded.
        let nil: RedisError = redis::from_redis_value::<String>(redis::Value::Nil)
            .expect_err("nil is not a String")
            .into();
        assert_eq!(
            Failure::of(&nil),
            failure(ErrorKind::Conversion, Outcome::Applied)
        );
        assert_eq!(Outcome::of(&nil), Outcome::Applied);
        assert_eq!(error_kind_name(&nil), "conversion");
        let okay: RedisError = redis::from_redis_value::<i64>(redis::Value::Okay)
            .expect_err("OK is not a number")
            .into();
        assert_eq!(Outcome::of(&okay), Outcome::Applied);
    }

    #[test]
    fn a_reply_that_is_not_resp_is_a_lost_connection() {
        // The same redis-rs kind (`Parse`) as a conversion, from its RESP decoder.
        let garbled = redis::parse_redis_value(b"?what\r\n").expect_err("not RESP");
        assert_eq!(garbled.kind(), RedisKind::Parse);
        assert_eq!(
            Failure::of(&garbled),
            failure(ErrorKind::ConnectionLost, Outcome::Ambiguous)
        );
        assert_eq!(error_kind_name(&garbled), "parse");
    }

    #[test]
    fn server_replies_have_a_kind_too() {
        for (text, kind) in [
            ("-NOAUTH Authentication required.\r\n", ErrorKind::Auth),
            (
                "-WRONGPASS invalid username-password pair\r\n",
                ErrorKind::Auth,
            ),
            ("-NOPERM this user has no permissions\r\n", ErrorKind::Auth),
            ("-WRONGTYPE Operation against a key\r\n", ErrorKind::Server),
            ("-ERR unknown command\r\n", ErrorKind::Server),
        ] {
            let e = reply(text);
            assert!(Error::from_redis(&e).is_none(), "{text}");
            assert_eq!(Failure::of(&e), failure(kind, Outcome::Failed), "{text}");
        }
        let auth = RedisError::from((RedisKind::AuthenticationFailed, "bad password"));
        assert_eq!(Failure::of(&auth).kind, ErrorKind::Auth);
        let config = RedisError::from((RedisKind::InvalidClientConfig, "bad URL"));
        assert_eq!(Failure::of(&config).kind, ErrorKind::InvalidConfig);
    }

    #[test]
    fn an_ambiguous_read_says_what_is_true_for_a_read() {
        let lost = || Error::new(ErrorKind::ConnectionLost, Outcome::Ambiguous, "lost");
        let write = lost().for_command(CommandSafety::NonIdempotent).to_string();
        assert!(write.contains("may have been applied"), "{write}");
        let read = lost().for_command(CommandSafety::ReadOnly).to_string();
        assert!(!read.contains("applied"), "{read}");
        assert!(read.contains("read"), "{read}");
        // The outcome itself stays honest: nobody knows whether the server ran it.
        assert_eq!(
            lost().for_command(CommandSafety::ReadOnly).outcome(),
            Outcome::Ambiguous
        );
    }

    #[test]
    fn raw_io_errors_are_ambiguous_and_refusals_are_not() {
        let reset = RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(Outcome::of(&reset), Outcome::Ambiguous);
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(Outcome::of(&refused), Outcome::Failed);
    }
}
