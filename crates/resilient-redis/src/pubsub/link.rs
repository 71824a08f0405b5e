//! One subscribed connection (a *link*), and the inbox every link of a subscription pushes to.
//!
//! A link is a RESP3 multiplexed connection: the server's pushes (messages, confirmations, its
//! own `sunsubscribe` when a slot moves) reach the inbox, while `SUBSCRIBE`, `SSUBSCRIBE` and
//! the liveness `PING` are ordinary requests on the same connection.
//!
//! The inbox holds at most [`INBOX`] messages: redis-rs hands pushes over without waiting, so
//! past that a message is dropped, and a marker takes its place in the order of arrival (once
//! per topic until the subscription has seen it). The subscription turns the marker into a gap
//! at exactly that position in the stream.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use redis::{PushInfo, Value, aio::MultiplexedConnection};
use tokio::{sync::mpsc, time::Instant};

use super::topic::{TopicKind, is_message};

/// Messages the inbox holds before it drops them.
pub(super) const INBOX: usize = 4096;

/// Identifies a link for its whole life (never reused).
pub(super) type LinkId = u64;

/// What reaches the subscription, in the order of arrival over all its links.
pub(super) enum Item {
    /// A push from link `LinkId`.
    Push(LinkId, PushInfo),
    /// A message of this topic was dropped here (the inbox was full).
    Dropped(LinkId, TopicKind, Vec<u8>),
}

/// A topic, as pushes name it: its kind and name.
pub(super) type TopicKey = (TopicKind, Vec<u8>);

/// The sending side of the inbox, shared by every link of one subscription.
#[derive(Clone)]
pub(super) struct Inbox {
    tx: mpsc::UnboundedSender<Item>,
    queued: Arc<AtomicUsize>,
    /// Topics with a drop marker in the inbox not yet seen by the subscription.
    marked: Arc<Mutex<HashSet<TopicKey>>>,
}

impl Inbox {
    /// An inbox and its receiving end.
    pub(super) fn new() -> (Inbox, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox = Inbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            marked: Arc::default(),
        };
        (inbox, rx)
    }

    /// The push sender of link `link`.
    pub(super) fn sender(&self, link: LinkId) -> PushSender {
        PushSender {
            link,
            inbox: self.clone(),
        }
    }

    /// The subscription took a message out of the inbox.
    pub(super) fn took_message(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// The subscription saw the drop marker of this topic: the next drop marks again.
    pub(super) fn saw_marker(&self, kind: TopicKind, name: Vec<u8>) {
        self.marked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind, name));
    }
}

/// Hands a link's pushes to the inbox (see the module docs).
pub(super) struct PushSender {
    link: LinkId,
    inbox: Inbox,
}

impl redis::aio::AsyncPushSender for PushSender {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        let inbox = &self.inbox;
        if is_message(&info.kind) && inbox.queued.fetch_add(1, Ordering::Relaxed) >= INBOX {
            inbox.queued.fetch_sub(1, Ordering::Relaxed);
            let Some((kind, name)) = topic_of(&info) else {
                return Ok(());
            };
            let first = inbox
                .marked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((kind, name.clone()));
            if !first {
                return Ok(());
            }
            return inbox
                .tx
                .send(Item::Dropped(self.link, kind, name))
                .map_err(|_| redis::aio::SendError);
        }
        inbox
            .tx
            .send(Item::Push(self.link, info))
            .map_err(|_| redis::aio::SendError)
    }
}

/// The topic a message push came through.
fn topic_of(info: &PushInfo) -> Option<TopicKey> {
    let kind = match info.kind {
        redis::PushKind::Message => TopicKind::Channel,
        redis::PushKind::SMessage => TopicKind::ShardChannel,
        redis::PushKind::PMessage => TopicKind::Pattern,
        _ => return None,
    };
    match info.data.first() {
        Some(Value::BulkString(b)) => Some((kind, b.clone())),
        _ => None,
    }
}

/// One subscribed connection.
pub(super) struct Link {
    pub(super) id: LinkId,
    /// The node (`host:port`; the server of a one-server or Sentinel deployment: `-`).
    pub(super) addr: String,
    pub(super) conn: MultiplexedConnection,
    /// When the server was last heard from on it (a push, a reply): a gap after its loss
    /// begins there.
    pub(super) last_heard: Instant,
    /// When the liveness `PING` in flight was sent.
    pub(super) ping_sent: Option<Instant>,
    /// When its credentials are due for renewal.
    pub(super) renew_at: Option<Instant>,
    /// The master epoch it was opened in (one server or Sentinel).
    pub(super) epoch: u64,
    /// Never sent to: dropped with the link, which ends the requests [`Link::bound`] to it.
    pub(super) alive: tokio::sync::watch::Sender<()>,
}

impl Link {
    /// `op`, a request holding a clone of this link's connection, made to end when the link
    /// is dropped. Otherwise a request whose reply never comes (a `SUBSCRIBE` confirmation the
    /// connection took for a push) keeps the dropped connection open, on credentials that
    /// may be about to expire (measured: a subscriber still on a token when it expired).
    pub(super) fn bound<F: Future>(
        &self,
        op: F,
    ) -> impl Future<Output = Option<F::Output>> + use<F> {
        let mut alive = self.alive.subscribe();
        async move {
            tokio::select! {
                out = op => Some(out),
                _ = alive.changed() => None,
            }
        }
    }
}
