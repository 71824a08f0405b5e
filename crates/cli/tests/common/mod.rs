//! Shared helpers for the end-to-end tests of the `resilient-redis` binary.
#![allow(dead_code, unreachable_pub)]

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_resilient-redis");

/// Runs the binary with `args`, failing the test if it does not exit within `limit`.
pub async fn run(args: &[&str], limit: Duration) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).kill_on_drop(true);
    match tokio::time::timeout(limit, command.output()).await {
        Ok(output) => output.expect("the binary runs"),
        Err(_) => panic!(
            "`resilient-redis {}` did not exit within {limit:?}",
            args.join(" ")
        ),
    }
}

/// The binary's stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The binary's stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
