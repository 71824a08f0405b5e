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

/// The `master_replid` of an `INFO replication` reply: it changes when another server becomes
/// the master (a promoted replica takes a new one).
pub(crate) fn master_replid(reply: &redis::Value) -> Option<String> {
    info_field(info_text(reply)?, "master_replid").map(str::to_owned)
}

/// The replicas a master's `INFO replication` reply lists (`slaveN:ip=…,port=…`), as
/// `ip:port`: as many as its `connected_slaves`, those without a line named by their rank.
pub(crate) fn replica_names(reply: &redis::Value) -> Vec<String> {
    let Some(text) = info_text(reply) else {
        return Vec::new();
    };
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.strip_prefix("slave")?.parse::<u32>().ok()?;
            let field = |name: &str| {
                value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            Some(format!("{}:{}", field("ip")?, field("port")?.trim()))
        })
        .collect();
    let count = info_field(text, "connected_slaves")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    for rank in names.len()..count {
        names.push(format!("#{rank}"));
    }
    names
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masters_replicas_are_named_by_address() {
        let info = |t: &str| redis::Value::BulkString(t.as_bytes().to_vec());
        let two = info(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=10.0.0.2,port=6380,state=online,offset=5,lag=0\r\n\
             slave1:ip=10.0.0.3,port=6381,state=wait_bgsave,offset=0,lag=0\r\n\
             master_failover_state:no-failover\r\n",
        );
        assert_eq!(replica_names(&two), vec!["10.0.0.2:6380", "10.0.0.3:6381"]);
        // A server that hides the lines still gives the count.
        let hidden = info("role:master\r\nconnected_slaves:2\r\n");
        assert_eq!(replica_names(&hidden), vec!["#0", "#1"]);
        assert!(replica_names(&info("role:master\r\nconnected_slaves:0\r\n")).is_empty());
        assert!(replica_names(&redis::Value::Nil).is_empty());
        let with_id = info("role:master\r\nmaster_replid:abc123\r\nconnected_slaves:0\r\n");
        assert_eq!(master_replid(&with_id).as_deref(), Some("abc123"));
        assert_eq!(master_replid(&redis::Value::Nil), None);
    }
}
