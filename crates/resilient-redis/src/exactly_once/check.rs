//! Which commands can run exactly once: inside the script, with a token.

use redis::{Arg, Cmd};

use super::script;
use crate::{
    commands::{self, CommandSafety},
    error::{Error, ErrorKind, Outcome},
};

/// The command's safety when it can go through [`ExactlyOnce`]; the reason it cannot otherwise.
pub(super) fn check_command(cmd: &Cmd) -> Result<CommandSafety, Error> {
    let refused = |why: &str| Error::new(ErrorKind::Refused, Outcome::Failed, why);
    let safety = commands::command_safety(cmd).map_err(refused)?;
    if safety == CommandSafety::ReadOnly {
        return Ok(safety);
    }
    if safety == CommandSafety::Blocking {
        return Err(refused(
            "exactly-once: blocking commands cannot run inside the script (they would not block); send them through the client",
        ));
    }
    let Some(name) = commands::command_name(cmd) else {
        return Err(refused("exactly-once: a command needs a name"));
    };
    if !commands::runs_in_scripts(&name) {
        return Err(refused(
            "exactly-once: scripts, functions and server administration cannot run inside the exactly-once script; send them through the client",
        ));
    }
    if cmd.args_iter().len() > script::MAX_ARGS {
        return Err(refused(
            "exactly-once: more than 7000 arguments in one command (Lua's limit); split it",
        ));
    }
    if cmd.args_iter().any(|a| !matches!(a, Arg::Simple(_))) {
        return Err(refused(
            "exactly-once: cursor commands only read; send them through the client",
        ));
    }
    Ok(safety)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::commands::cmd_of as cmd;

    #[test]
    fn commands_that_cannot_run_in_a_script_are_refused() {
        assert_eq!(
            check_command(&cmd(&["GET", "k"])).unwrap(),
            CommandSafety::ReadOnly
        );
        assert_eq!(
            check_command(&cmd(&["INCR", "k"])).unwrap(),
            CommandSafety::NonIdempotent
        );
        assert_eq!(
            check_command(&cmd(&["set", "k", "v"])).unwrap(),
            CommandSafety::Idempotent
        );
        for refused in [
            &["BLPOP", "q", "0"][..],
            &["EVAL", "return 1", "0"],
            &["evalsha", "abc", "0"],
            &["SCRIPT", "LOAD", "return 1"],
            &["CLIENT", "KILL", "TYPE", "normal"],
            &["MULTI"],
            &["SUBSCRIBE", "ch"],
        ] {
            let e = check_command(&cmd(refused)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{refused:?}");
        }
        let mut big = redis::cmd("SADD");
        big.arg("s");
        for i in 0..script::MAX_ARGS {
            big.arg(i);
        }
        assert_eq!(check_command(&big).unwrap_err().kind(), ErrorKind::Refused);
    }
}
