//! Reading an `INFO` reply.

/// Reads `field` from the text of an INFO reply.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then(|| v.trim())
    })
}

/// The text of an `INFO` reply (a bulk, verbatim or simple string); `None` for anything else
/// (an error reply such as `NOPERM`, or garbage).
fn info_text(reply: &redis::Value) -> Option<&str> {
    match reply {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok(),
        redis::Value::VerbatimString { text, .. } => Some(text.as_str()),
        redis::Value::SimpleString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// What an `INFO replication` reply says, as far as the client needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Replication {
    /// `role:master` (else `role:slave`).
    pub(crate) master: bool,
    /// A master's `connected_slaves`.
    pub(crate) replicas: Option<u64>,
    /// A master's offset, or the offset up to which a replica has applied its master's
    /// stream (`slave_repl_offset`; older servers give only `master_repl_offset`, the same
    /// thing on a replica).
    pub(crate) offset: Option<u64>,
}

/// Reads an `INFO replication` reply; `None` when it is not one (or names another role).
pub(crate) fn replication(reply: &redis::Value) -> Option<Replication> {
    let text = info_text(reply)?;
    let number = |name| info_field(text, name)?.parse::<u64>().ok();
    match info_field(text, "role")? {
        "master" => Some(Replication {
            master: true,
            replicas: number("connected_slaves"),
            offset: number("master_repl_offset"),
        }),
        "slave" => Some(Replication {
            master: false,
            replicas: None,
            offset: number("slave_repl_offset").or_else(|| number("master_repl_offset")),
        }),
        _ => None,
    }
}
