//! Pub/sub on every topology: [`ResilientPubSub`], a stream of messages and *gaps* that follows
//! reconnections, failovers and slot migrations.
//!
//! # How it works
//! - [`Client::subscribe`] (channels and patterns) and [`Client::ssubscribe`] (shard channels,
//!   Redis 7+) start one background task per subscription, with connections of its own in
//!   RESP3 (pushes and requests share them): on one server, Sentinel or a managed primary
//!   endpoint, one connection to the master; in a cluster, channels and patterns on one
//!   connection to any live master (a message published on any node reaches every node), and
//!   each shard channel on a connection to its slot's master (`link`, `place`, `driver`).
//! - A connection is checked with a `PING` when nothing was heard on it for a second: a frozen
//!   server is found within a second plus the response timeout, not left to TCP keepalive.
//! - A topic is subscribed again when its connection is lost or stops answering, its master is
//!   replaced (`+switch-master`, a demoted endpoint, a cluster failover), its slot moves (the
//!   slot map names another owner, or the server ends the subscription with `sunsubscribe`),
//!   or the connection's credentials are due for renewal. Each time, the stream yields a
//!   [`Gap`] for the topic, at its place: messages published between its `began` and `ended`
//!   may be missing. A subscription is never dropped silently.
//! - Nothing is delivered twice: a topic's messages are taken only from the connection it is
//!   currently subscribed on, and for a second after it moved, a message whose channel and
//!   payload equal one it delivered in the second before is taken for what it most likely is,
//!   the same message delivered again by the new node, and dropped (`echo`: Redis orders
//!   nothing between nodes, and messages carry no id).

mod driver;
mod echo;
mod link;
mod place;
mod topic;

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures::{Stream, StreamExt};
use rand::{SeedableRng, rngs::SmallRng};
use redis::Msg;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

pub use topic::{Topic, TopicKind};

use crate::{
    Client,
    error::{Error, ErrorKind, Outcome},
    routing::Router,
};
use driver::{Driver, Settings};
use place::Place;

/// Events buffered for a slow consumer before the subscription waits for it (the connections'
/// own inbox holds up to 4,096 more messages, then drops them and reports a gap).
const BUFFER: usize = 1024;

/// One item of a [`ResilientPubSub`].
#[derive(Debug)]
pub enum PubSubEvent {
    /// A message.
    Message(Msg),
    /// A topic was not subscribed for a while: messages published then may be missing.
    Gap(Gap),
}

/// A time when a topic was not subscribed: messages published on it between `began` and `ended`
/// may be missing from the stream. Every message before the gap in the stream was received
/// before it began, every message after it came from the new subscription.
///
/// A message published just before the loss can reach the new node late (a cluster's bus, a
/// replica's replication stream) and be delivered by it again: for a second after the gap, a
/// message with the channel and payload of one delivered in the second before it is dropped
/// (counted by [`ResilientPubSub::echoes_dropped`]). So the same payload published twice on
/// one channel within about a second, around a gap, may arrive once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// The topic.
    pub topic: Topic,
    /// When the server was last heard from on the old connection (or when the topic left it).
    pub began: std::time::Instant,
    /// When the server confirmed the new subscription.
    pub ended: std::time::Instant,
    /// Why.
    pub cause: GapCause,
}

impl Gap {
    /// Whether `msg`'s topic is this gap's.
    pub fn covers(&self, msg: &Msg) -> bool {
        self.topic.delivers(msg)
    }
}

/// Why a topic was not subscribed for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapCause {
    /// Its connection broke (the server died or restarted, the connection was killed).
    ConnectionLost,
    /// Its server stopped answering (a `PING` or a subscription got no reply in time).
    Unresponsive,
    /// Its master was replaced (Sentinel, a demoted primary endpoint).
    MasterChanged,
    /// Its slot moved to another node (a migration, a cluster failover).
    SlotMoved,
    /// Its connection's credentials were due for renewal: it moved to a fresh connection.
    CredentialsRenewal,
    /// The consumer fell behind by more than the buffers hold: messages were dropped (the gap
    /// begins and ends where they were).
    SlowConsumer,
}

/// Counters and the last error, shared by a subscription's task and its stream.
#[derive(Default)]
struct Shared {
    gaps: AtomicU64,
    resubscriptions: AtomicU64,
    echoes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A stream of pub/sub [events](PubSubEvent) that re-subscribes on its own after a lost
/// connection, a failover or a slot migration. Made by [`Client::subscribe`] and
/// [`Client::ssubscribe`].
///
/// # Behavior
/// - See [the module docs](crate::pubsub) for where topics are subscribed and when they move.
/// - **Messages can be missed**: Redis pub/sub is at-most-once. What is published while a
///   topic is not subscribed (from the loss of its connection, found at once for a reset and
///   within about a second for a silent server, until the new subscription is confirmed) is
///   not delivered, and not replayed. The stream says so with a [`Gap`] event at that place;
///   use streams (`XADD` / `XREADGROUP`) when every message matters.
/// - Up to 1,024 events wait for a slow consumer, and 4,096 more messages in the connections'
///   inbox; past that, messages are dropped and a [`GapCause::SlowConsumer`] gap says where.
/// - Dropping it ends the subscription and closes its connections.
pub struct ResilientPubSub {
    events: mpsc::Receiver<PubSubEvent>,
    shared: Arc<Shared>,
}

impl ResilientPubSub {
    /// How many times topics lost their subscription and were (or are being) subscribed again:
    /// a lost connection, a replaced master, a moved slot. Each shows as one gap per topic it
    /// concerned.
    pub fn resubscriptions(&self) -> u64 {
        self.shared.resubscriptions.load(Ordering::Relaxed)
    }

    /// How many [`Gap`] events the stream has yielded.
    pub fn gaps(&self) -> u64 {
        self.shared.gaps.load(Ordering::Relaxed)
    }

    /// How many messages a topic's new connection delivered again after a gap and were
    /// dropped (see [`Gap`]: Redis orders nothing between nodes).
    pub fn echoes_dropped(&self) -> u64 {
        self.shared.echoes.load(Ordering::Relaxed)
    }

    /// The next message, skipping gap events; `None` once the client is gone.
    pub async fn next_message(&mut self) -> Option<Msg> {
        loop {
            match self.events.recv().await? {
                PubSubEvent::Message(m) => return Some(m),
                PubSubEvent::Gap(_) => {}
            }
        }
    }

    /// The messages alone, gap events dropped.
    pub fn into_messages(self) -> impl Stream<Item = Msg> + Send {
        self.filter_map(|event| async move {
            match event {
                PubSubEvent::Message(m) => Some(m),
                PubSubEvent::Gap(_) => None,
            }
        })
    }
}

impl Stream for ResilientPubSub {
    type Item = PubSubEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PubSubEvent>> {
        self.events.poll_recv(cx)
    }
}

impl std::fmt::Debug for ResilientPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientPubSub")
            .field("resubscriptions", &self.resubscriptions())
            .field("gaps", &self.gaps())
            .field("echoes_dropped", &self.echoes_dropped())
            .finish()
    }
}

impl Client {
    /// Subscribes to `channels` (`SUBSCRIBE`) and `patterns` (`PSUBSCRIBE`), on any topology;
    /// the subscription follows reconnections, failovers and, in a cluster, the nodes (see
    /// [`ResilientPubSub`] for which messages can be missed).
    ///
    /// Returns once the server has confirmed every subscription, waiting up to the client's
    /// deadline.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when both lists are empty; [`ErrorKind::Unavailable`] when
    /// the subscriptions could not all be made before the deadline.
    ///
    /// # Example
    /// ```no_run
    /// use futures::StreamExt;
    /// use resilient_redis::PubSubEvent;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = resilient_redis::Client::connect("redis+sentinel://10.0.0.1:26379/mymaster").await?;
    /// let mut news = client.subscribe(&["news"], &[]).await?;
    /// while let Some(event) = news.next().await {
    ///     match event {
    ///         PubSubEvent::Message(msg) => {
    ///             let text: String = msg.get_payload()?;
    ///             println!("{}: {text}", msg.get_channel_name());
    ///         }
    ///         PubSubEvent::Gap(gap) => println!("{} may have missed messages: {:?}", gap.topic.name, gap.cause),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(
        &self,
        channels: &[&str],
        patterns: &[&str],
    ) -> Result<ResilientPubSub, Error> {
        let topics = channels
            .iter()
            .map(|c| (TopicKind::Channel, c))
            .chain(patterns.iter().map(|p| (TopicKind::Pattern, p)));
        self.subscribe_to(topics).await
    }

    /// Subscribes to shard channels (`SSUBSCRIBE`, Redis 7+): in a cluster each lives in its
    /// slot's shard (publish with `SPUBLISH`), and the subscription follows the slot through
    /// failovers and migrations; on other topologies they work as channels do.
    ///
    /// # Errors
    /// As [`Client::subscribe`].
    pub async fn ssubscribe(&self, channels: &[&str]) -> Result<ResilientPubSub, Error> {
        self.subscribe_to(channels.iter().map(|c| (TopicKind::ShardChannel, c)))
            .await
    }

    async fn subscribe_to<'a>(
        &self,
        topics: impl Iterator<Item = (TopicKind, &'a &'a str)>,
    ) -> Result<ResilientPubSub, Error> {
        let mut list: Vec<Topic> = Vec::new();
        for (kind, name) in topics {
            let topic = Topic {
                kind,
                name: (*name).to_owned(),
            };
            if !list.contains(&topic) {
                list.push(topic);
            }
        }
        if list.is_empty() {
            return Err(Error::config(
                "subscribe needs at least one channel or pattern",
            ));
        }
        let place = match self.router() {
            Router::Single(node) => Place::Single(Arc::downgrade(&node.pool)),
            Router::Cluster(cluster) => place::cluster(cluster),
        };
        let config = self.config();
        let settings = Settings {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            backoff: config.reconnect_backoff,
        };
        let rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x9b5b),
            None => rand::make_rng(),
        };
        let (tx, events) = mpsc::channel(BUFFER);
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready) = oneshot::channel();
        let driver = Driver::new(place, settings, list, tx, shared.clone(), rng, ready_tx);
        tokio::spawn(driver.run());
        let pubsub = ResilientPubSub { events, shared };
        let deadline = Instant::now() + self.call_deadline();
        match tokio::time::timeout_at(deadline, ready).await {
            Ok(Ok(())) => Ok(pubsub),
            _ => {
                let last = pubsub
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let mut message = "cannot subscribe before the deadline".to_owned();
                if let Some(last) = last {
                    message.push_str(": ");
                    message.push_str(&last);
                }
                Err(Error::new(ErrorKind::Unavailable, Outcome::Failed, message))
            }
        }
    }
}
