//! `MOVED` and `ASK`: where a reply sends the request instead.

use redis::{RedisError, ServerErrorKind};

/// A redirect's kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RedirectKind {
    /// The slot lives on another node from now on.
    Moved,
    /// The slot is being migrated: ask the other node this once, after `ASKING`.
    Ask,
}

/// A redirect reply: its kind, the node to go to and the slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Redirect {
    pub(crate) kind: RedirectKind,
    /// `host:port`.
    pub(crate) addr: String,
    pub(crate) slot: u16,
}

/// The redirect in an error (a `MOVED` or `ASK` reply), if it is one.
pub(crate) fn redirect_of(error: &RedisError) -> Option<Redirect> {
    let kind = match error.kind() {
        redis::ErrorKind::Server(ServerErrorKind::Moved) => RedirectKind::Moved,
        redis::ErrorKind::Server(ServerErrorKind::Ask) => RedirectKind::Ask,
        _ => return None,
    };
    let (addr, slot) = error.redirect_node()?;
    Some(Redirect {
        kind,
        addr: addr.to_owned(),
        slot,
    })
}

/// Sends `cmd` after `ASKING`, in one round trip, on a connection of the node an `ASK` named;
/// the reply is `cmd`'s. (A command of the migrating slot is accepted there only so.)
pub(crate) async fn send_asking(
    conn: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
) -> redis::RedisResult<redis::Value> {
    let mut pipe = redis::pipe();
    pipe.cmd("ASKING").add_command(cmd.clone());
    let mut replies = conn.send_packed_commands(&pipe, 1, 1).await?;
    replies
        .pop()
        .ok_or_else(|| (redis::ErrorKind::Parse, "no reply after ASKING").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_read_from_replies() {
        let reply = |text: &str| {
            redis::parse_redis_value(text.as_bytes())
                .unwrap()
                .extract_error()
                .unwrap_err()
        };
        assert_eq!(
            redirect_of(&reply("-MOVED 3999 127.0.0.1:7001\r\n")),
            Some(Redirect {
                kind: RedirectKind::Moved,
                addr: "127.0.0.1:7001".to_owned(),
                slot: 3999
            })
        );
        assert_eq!(
            redirect_of(&reply("-ASK 12 127.0.0.1:7002\r\n")),
            Some(Redirect {
                kind: RedirectKind::Ask,
                addr: "127.0.0.1:7002".to_owned(),
                slot: 12
            })
        );
        assert_eq!(redirect_of(&reply("-TRYAGAIN later\r\n")), None);
    }
}
