//! The error type of every fallible operation in this crate.

use std::time::Duration;

/// The packages that provide the Redis binaries, named in [`LabError::BinaryNotFound`].
pub const INSTALL_HINT: &str = "sudo apt-get install redis-server redis-sentinel redis-tools";

/// Everything that can go wrong while starting, driving or stopping a lab topology.
///
/// Messages are meant to be read by a person looking at a failed test: they name the
/// process, the port and, for start failures, include the tail of the server's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A required binary is not on the `PATH` that was searched.
    #[error("{binary} not found on PATH: install it with `{}`", INSTALL_HINT)]
    BinaryNotFound {
        /// The missing binary, e.g. `redis-server`.
        binary: String,
    },
    /// A tool other than Redis (the `openssl` CLI, for TLS labs) is not on the `PATH`.
    #[error("{tool} not found on PATH ({needed_for}): install it with `{install}`")]
    ToolNotFound {
        /// The missing tool, e.g. `openssl`.
        tool: String,
        /// What needs it.
        needed_for: String,
        /// The command that installs it.
        install: String,
    },
    /// A configuration value is out of range; nothing was started.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command sent to a lab process failed.
    #[error("{context}: {source}")]
    Redis {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// A process exited (or never answered) while it was being started.
    #[error("{what} failed to start: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    StartFailed {
        /// The process, e.g. `redis-server on 127.0.0.1:6379`.
        what: String,
        /// Why the start is considered failed.
        reason: String,
        /// The log file of the process.
        log: String,
        /// The last lines of that log.
        log_tail: String,
    },
    /// A condition was not reached within its deadline.
    #[error("timed out after {waited:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// The awaited condition.
        what: String,
        /// How long it was awaited.
        waited: Duration,
        /// The last thing observed while polling.
        last: String,
    },
    /// The operation needs a running process, but it is stopped.
    #[error("{0} is not running")]
    NotRunning(String),
    /// A topology answered something unexpected.
    #[error("unexpected topology state: {0}")]
    Topology(String),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Self::Redis {
            context: context.into(),
            source,
        }
    }
}
