//! `require_binaries`: the error names the packages to install; lookup honours the given PATH.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;

use redis_lab::{LabError, find_binary_in, require_binaries, require_binaries_in};

const HINT: &str = "install it with `sudo apt-get install redis-server redis-sentinel redis-tools`";

#[test]
fn missing_server_names_the_packages() {
    let empty = tempfile::tempdir().unwrap();
    let error = require_binaries_in(false, Some(empty.path().as_os_str())).unwrap_err();
    assert!(matches!(&error, LabError::BinaryNotFound { binary } if binary == "redis-server"));
    assert_eq!(
        error.to_string(),
        format!("redis-server not found on PATH: {HINT}")
    );
    let error = require_binaries_in(true, None).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("redis-server not found on PATH: {HINT}")
    );
}

#[test]
fn missing_sentinel_is_reported_only_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("redis-server");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(["/nonexistent-dir".as_ref(), dir.path()]).unwrap();
    require_binaries_in(false, Some(&path)).unwrap();
    let error = require_binaries_in(true, Some(&path)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("redis-sentinel not found on PATH: {HINT}")
    );
    assert_eq!(find_binary_in("redis-server", Some(&path)).unwrap(), fake);
}

#[test]
fn non_executable_files_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("redis-server"), "").unwrap();
    std::fs::set_permissions(
        dir.path().join("redis-server"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(find_binary_in("redis-server", Some(dir.path().as_os_str())).is_err());
    assert!(find_binary_in("redis-server", Some(OsStr::new(""))).is_err());
}

#[test]
fn the_installed_binaries_are_found() {
    require_binaries(true).unwrap();
}
