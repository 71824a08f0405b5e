//! What a server says of its role (`ROLE`): asked of a new connection by a primary endpoint
//! (see [`super::fixed`]) and by the Sentinel resolver (see [`super::sentinel`]).

use std::time::Duration;

use redis::{RedisResult, Value, aio::MultiplexedConnection};

/// What a `ROLE` reply says of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    Replica,
    /// No usable answer (`NOPERM`, an unknown command, another reply): taken at its word.
    Unknown,
}

impl Role {
    /// As `ROLE` says it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Primary => "master",
            Role::Replica => "replica",
            Role::Unknown => "unknown",
        }
    }
}

/// What `ROLE` on `conn` says, within `limit`. An error reply is [`Role::Unknown`]; no reply in
/// time, or a broken connection, is an error.
pub(crate) async fn role(conn: &mut MultiplexedConnection, limit: Duration) -> RedisResult<Role> {
    let reply = tokio::time::timeout(limit, conn.send_packed_command(&redis::cmd("ROLE")))
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer to ROLE",
            ))
        })?;
    let reply = match reply {
        Ok(v) => v,
        Err(e) if e.is_io_error() || e.kind() == redis::ErrorKind::Parse => return Err(e),
        Err(_) => return Ok(Role::Unknown),
    };
    Ok(role_of(&reply))
}

/// A `ROLE` reply's meaning.
pub(crate) fn role_of(reply: &Value) -> Role {
    let Value::Array(items) = reply else {
        return Role::Unknown;
    };
    let first = match items.first() {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).unwrap_or(""),
        Some(Value::SimpleString(s)) => s,
        _ => "",
    };
    match first {
        "master" => Role::Primary,
        "slave" | "replica" => Role::Replica,
        _ => Role::Unknown,
    }
}

/// The replicas a master's `ROLE` reply lists (those online), as `ip:port` (as
/// [`crate::commands::replica_names`] names them); `None` when the reply is not a master's.
pub(crate) fn master_replicas(reply: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = reply else {
        return None;
    };
    if role_of(reply) != Role::Primary {
        return None;
    }
    let Some(Value::Array(replicas)) = items.get(2) else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    replicas
        .iter()
        .map(|replica| match replica {
            Value::Array(fields) => Some(format!(
                "{}:{}",
                text(fields.first()?)?,
                text(fields.get(1)?)?
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_replies_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(role_of(&Value::Array(vec![bulk("master")])), Role::Primary);
        assert_eq!(role_of(&Value::Array(vec![bulk("slave")])), Role::Replica);
        assert_eq!(
            role_of(&Value::Array(vec![Value::SimpleString("replica".into())])),
            Role::Replica
        );
        assert_eq!(
            role_of(&Value::Array(vec![bulk("sentinel")])),
            Role::Unknown
        );
        assert_eq!(role_of(&Value::Okay), Role::Unknown);
        assert_eq!(role_of(&Value::Nil), Role::Unknown);
        // A master's full reply: role, offset, replicas.
        let master = Value::Array(vec![bulk("master"), Value::Int(0), Value::Array(vec![])]);
        assert_eq!(role_of(&master), Role::Primary);
    }

    #[test]
    fn a_masters_role_names_its_replicas_by_address() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let replica = |ip: &str, port: &str| Value::Array(vec![bulk(ip), bulk(port), bulk("14")]);
        let two = Value::Array(vec![
            bulk("master"),
            Value::Int(14),
            Value::Array(vec![
                replica("10.0.0.2", "6380"),
                replica("10.0.0.3", "6381"),
            ]),
        ]);
        assert_eq!(
            master_replicas(&two),
            Some(vec!["10.0.0.2:6380".to_owned(), "10.0.0.3:6381".to_owned()])
        );
        let alone = Value::Array(vec![bulk("master"), Value::Int(0), Value::Array(vec![])]);
        assert_eq!(master_replicas(&alone), Some(vec![]));
        let a_replica = Value::Array(vec![bulk("slave"), bulk("10.0.0.1"), Value::Int(6379)]);
        assert_eq!(master_replicas(&a_replica), None);
        assert_eq!(master_replicas(&Value::Nil), None);
        let garbled = Value::Array(vec![
            bulk("master"),
            Value::Int(0),
            Value::Array(vec![Value::Nil]),
        ]);
        assert_eq!(master_replicas(&garbled), None);
    }
}
