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
}
