//! The CLI's error type and how it maps to exit codes.

use std::process::ExitCode;

/// Why a subcommand stopped early.
///
/// # Behavior
/// - [`CliError::Usage`] exits with code 2: the command line itself is wrong (bad URL, bad value).
/// - [`CliError::Runtime`] exits with code 1: the command line is fine but the run failed
///   (server unreachable, lab could not start a server, chart could not be written, ...).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// The run failed.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// A usage error with a message.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    /// A runtime error with a message.
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        CliError::Runtime(message.into())
    }

    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Runtime(_) => ExitCode::from(1),
        }
    }
}
