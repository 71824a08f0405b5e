//! What a subscription is to (channels, patterns, shard channels), and what a server push says
//! about them.

use redis::{Msg, PushInfo, PushKind, Value};

/// The kind of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// A channel (`SUBSCRIBE`); in a cluster, messages published on any node reach it.
    Channel,
    /// A pattern of channels (`PSUBSCRIBE`).
    Pattern,
    /// A shard channel (`SSUBSCRIBE`, Redis 7+): it lives in its slot's shard, like a key.
    ShardChannel,
}

impl TopicKind {
    /// The command that subscribes to a topic of this kind.
    pub(super) fn subscribe(self) -> &'static str {
        match self {
            TopicKind::Channel => "SUBSCRIBE",
            TopicKind::Pattern => "PSUBSCRIBE",
            TopicKind::ShardChannel => "SSUBSCRIBE",
        }
    }

    /// The command that ends a subscription of this kind.
    pub(super) fn unsubscribe(self) -> &'static str {
        match self {
            TopicKind::Channel => "UNSUBSCRIBE",
            TopicKind::Pattern => "PUNSUBSCRIBE",
            TopicKind::ShardChannel => "SUNSUBSCRIBE",
        }
    }
}

/// One channel, pattern or shard channel of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// Channel, pattern or shard channel.
    pub kind: TopicKind,
    /// Its name (the pattern itself for a pattern).
    pub name: String,
}

impl Topic {
    /// Whether `msg` came through this topic: a channel's or shard channel's own messages, a
    /// pattern's matches.
    pub fn delivers(&self, msg: &Msg) -> bool {
        match self.kind {
            TopicKind::Pattern => {
                msg.from_pattern()
                    && msg.get_pattern::<Vec<u8>>().ok().as_deref() == Some(self.name.as_bytes())
            }
            TopicKind::Channel | TopicKind::ShardChannel => {
                !msg.from_pattern() && msg.get_channel_name().as_bytes() == self.name.as_bytes()
            }
        }
    }
}

/// What one push from the server says.
pub(super) enum Push {
    /// A message, and the topic it came through (kind, name).
    Message(TopicKind, Vec<u8>, Msg),
    /// The server confirmed a subscription.
    Subscribed(TopicKind, Vec<u8>),
    /// The server ended a subscription (asked for, or on its own: a shard channel's slot moved
    /// away).
    Unsubscribed(TopicKind, Vec<u8>),
    /// The connection is gone.
    Disconnected,
    /// Anything else (`invalidate`, ...).
    Other,
}

impl Push {
    /// Reads a push.
    pub(super) fn of(info: PushInfo) -> Push {
        let name = |at: usize| match info.data.get(at) {
            Some(Value::BulkString(b)) => Some(b.clone()),
            Some(Value::SimpleString(s)) => Some(s.as_bytes().to_vec()),
            _ => None,
        };
        let confirmation = |kind| name(0).map(|n| (kind, n));
        match info.kind {
            PushKind::Message | PushKind::SMessage | PushKind::PMessage => {
                let kind = match info.kind {
                    PushKind::Message => TopicKind::Channel,
                    PushKind::SMessage => TopicKind::ShardChannel,
                    _ => TopicKind::Pattern,
                };
                let Some(topic) = name(0) else {
                    return Push::Other;
                };
                match Msg::from_push_info(info) {
                    Some(msg) => Push::Message(kind, topic, msg),
                    None => Push::Other,
                }
            }
            PushKind::Subscribe => confirmation(TopicKind::Channel)
                .map_or(Push::Other, |(k, n)| Push::Subscribed(k, n)),
            PushKind::PSubscribe => confirmation(TopicKind::Pattern)
                .map_or(Push::Other, |(k, n)| Push::Subscribed(k, n)),
            PushKind::SSubscribe => confirmation(TopicKind::ShardChannel)
                .map_or(Push::Other, |(k, n)| Push::Subscribed(k, n)),
            PushKind::Unsubscribe => confirmation(TopicKind::Channel)
                .map_or(Push::Other, |(k, n)| Push::Unsubscribed(k, n)),
            PushKind::PUnsubscribe => confirmation(TopicKind::Pattern)
                .map_or(Push::Other, |(k, n)| Push::Unsubscribed(k, n)),
            PushKind::SUnsubscribe => confirmation(TopicKind::ShardChannel)
                .map_or(Push::Other, |(k, n)| Push::Unsubscribed(k, n)),
            PushKind::Disconnection => Push::Disconnected,
            _ => Push::Other,
        }
    }
}

/// Whether a push of this kind is a message (counted against the buffer; the others are
/// control and never dropped).
pub(super) fn is_message(kind: &PushKind) -> bool {
    matches!(
        kind,
        PushKind::Message | PushKind::SMessage | PushKind::PMessage
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn pushes_are_read() {
        let message = PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk("orders"), bulk("42")],
        };
        let Push::Message(kind, topic, msg) = Push::of(message) else {
            panic!("not a message");
        };
        assert_eq!(
            (kind, topic.as_slice()),
            (TopicKind::ShardChannel, &b"orders"[..])
        );
        assert_eq!(msg.get_payload::<u32>().unwrap(), 42);
        let shard = Topic {
            kind: TopicKind::ShardChannel,
            name: "orders".into(),
        };
        assert!(shard.delivers(&msg));

        let pmessage = PushInfo {
            kind: PushKind::PMessage,
            data: vec![bulk("news.*"), bulk("news.eu"), bulk("x")],
        };
        let Push::Message(kind, topic, msg) = Push::of(pmessage) else {
            panic!("not a message");
        };
        assert_eq!(
            (kind, topic.as_slice()),
            (TopicKind::Pattern, &b"news.*"[..])
        );
        let pattern = Topic {
            kind: TopicKind::Pattern,
            name: "news.*".into(),
        };
        assert!(pattern.delivers(&msg));
        assert!(!shard.delivers(&msg));

        let moved = PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![bulk("orders"), Value::Int(0)],
        };
        assert!(matches!(
            Push::of(moved),
            Push::Unsubscribed(TopicKind::ShardChannel, n) if n == b"orders"
        ));
        assert!(matches!(
            Push::of(PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            }),
            Push::Disconnected
        ));
        assert!(is_message(&PushKind::Message));
        assert!(!is_message(&PushKind::Subscribe));
    }
}
