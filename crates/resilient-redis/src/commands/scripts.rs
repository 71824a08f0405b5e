//! Which commands can run inside a Lua script (the exactly-once writes run there).

use super::args::Name;

/// Commands that cannot run inside a script (or must not run twice as scripts do).
const NOT_IN_SCRIPTS: &[&str] = &[
    "ACL",
    "BGREWRITEAOF",
    "BGSAVE",
    "CLIENT",
    "CLUSTER",
    "CONFIG",
    "DEBUG",
    "EVAL",
    "EVALSHA",
    "EVALSHA_RO",
    "EVAL_RO",
    "FAILOVER",
    "FCALL",
    "FCALL_RO",
    "FUNCTION",
    "MODULE",
    "REPLICAOF",
    "SAVE",
    "SCRIPT",
    "SHUTDOWN",
    "SLAVEOF",
];

/// Whether the command `name` may run inside a script: not scripts, functions and server
/// administration.
pub(crate) fn runs_in_scripts(name: &Name) -> bool {
    !name.is_in(NOT_IN_SCRIPTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::args::assert_sorted_names;

    #[test]
    fn scripts_and_administration_do_not_run_in_scripts() {
        assert_sorted_names(NOT_IN_SCRIPTS.iter().copied());
        for name in ["evalsha", "EVAL_RO", "Script", "config", "SHUTDOWN"] {
            assert!(!runs_in_scripts(&Name::of(name.as_bytes())), "{name}");
        }
        for name in ["INCR", "set", "XADD", "SCRIPTS", ""] {
            assert!(runs_in_scripts(&Name::of(name.as_bytes())), "{name}");
        }
    }
}
