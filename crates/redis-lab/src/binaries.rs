//! Locating the Redis binaries on a `PATH`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::error::LabError;

/// Checks that `redis-server` (and, with `sentinel`, `redis-sentinel`) are on the process `PATH`.
///
/// Call it first in a test or demo to fail with an actionable message instead of a spawn error.
///
/// # Errors
/// [`LabError::BinaryNotFound`], whose message names the packages to install.
///
/// # Example
/// ```no_run
/// redis_lab::require_binaries(true).expect("redis binaries");
/// ```
pub fn require_binaries(sentinel: bool) -> Result<(), LabError> {
    require_binaries_in(sentinel, std::env::var_os("PATH").as_deref())
}

/// Like [`require_binaries`], but searches the given `PATH` value instead of the process one
/// (`None` means an empty `PATH`). Lets a test check the error without mutating the environment.
///
/// # Errors
/// [`LabError::BinaryNotFound`] for the first missing binary.
pub fn require_binaries_in(sentinel: bool, path: Option<&OsStr>) -> Result<(), LabError> {
    find_binary_in("redis-server", path)?;
    if sentinel {
        find_binary_in("redis-sentinel", path)?;
    }
    Ok(())
}

/// Finds an executable file called `name` in the directories of `path` (a `PATH`-style list).
///
/// # Errors
/// [`LabError::BinaryNotFound`] when no directory holds an executable `name`.
pub fn find_binary_in(name: &str, path: Option<&OsStr>) -> Result<PathBuf, LabError> {
    let dirs = path.map(OsString::from).unwrap_or_default();
    std::env::split_paths(&dirs)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| LabError::BinaryNotFound {
            binary: name.to_owned(),
        })
}

/// Finds `name` on the process `PATH`.
pub(crate) fn find_binary(name: &str) -> Result<PathBuf, LabError> {
    find_binary_in(name, std::env::var_os("PATH").as_deref())
}
