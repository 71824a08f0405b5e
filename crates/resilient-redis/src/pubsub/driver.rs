//! The task behind a [`ResilientPubSub`](super::ResilientPubSub): keeps every topic subscribed
//! on the node that serves it, and reports each time one was not (a gap) at its place in the
//! stream.
//!
//! # How a topic moves
//! A topic is *nowhere*, *subscribing* on a link, or *live* on a link. Only a live topic's
//! messages are delivered, and only from its own link: a message from a link the topic has
//! left (a demoted master that still relays, an old owner) is dropped, so nothing is delivered
//! twice. A live topic leaves its link when the link is lost (reset, not answering a `PING`,
//! credentials due for renewal), its master is replaced, the slot map names another owner, or
//! the server ends it (`sunsubscribe` for a slot that moved): it is nowhere from then on, with
//! a gap open since the link was last heard from. Once it is live again (the server confirmed
//! the new subscription), the gap is delivered, then the new link's messages. So in the stream,
//! everything before a gap came before the loss and everything after it came after the new
//! subscription: what was published in between may be missing, and nothing else.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use rand::rngs::SmallRng;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value, aio::MultiplexedConnection};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    Gap, GapCause, PubSubEvent, Shared,
    echo::{Echoes, Hasher},
    link::{Inbox, Item, Link, LinkId, TopicKey},
    place::{Changes, Place},
    topic::{Push, Topic, TopicKind},
};
use crate::{
    commands::key_slot,
    routing::cluster::{RedirectKind, redirect_of},
};

/// A link not heard from for this long is sent a `PING`.
pub(super) const LIVENESS: Duration = Duration::from_secs(1);

/// The settings a subscription takes from its client.
pub(super) struct Settings {
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) backoff: resilience::Backoff,
}

/// Where a topic is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    Nowhere,
    /// Its subscription was sent on the link at that time.
    Subscribing(LinkId, Instant),
    Live(LinkId),
}

/// One topic's state.
struct Sub {
    topic: Topic,
    /// Its slot (shard channels).
    slot: u16,
    at: At,
    /// An open gap: since when, and why.
    gap: Option<(Instant, GapCause)>,
    /// Not subscribed again before this (after a refusal).
    retry_at: Instant,
    failures: u32,
    previous_delay: Option<Duration>,
    /// What it delivered lately, to drop what a new link delivers again.
    echoes: Echoes,
}

/// What a background operation found.
enum Done {
    Opened {
        addr: String,
        id: LinkId,
        result: RedisResult<(MultiplexedConnection, u64, Option<Instant>)>,
    },
    Subscribed {
        link: LinkId,
        sub: usize,
        result: RedisResult<Value>,
    },
    Pinged {
        link: LinkId,
        sent: Instant,
        answered: bool,
    },
    /// A best-effort `UNSUBSCRIBE` on a link a topic left.
    Left,
}

/// Backoff state of the links to one address.
#[derive(Default)]
struct Opens {
    failures: u32,
    previous: Option<Duration>,
    retry_at: Option<Instant>,
}

/// The subscription's task.
pub(super) struct Driver {
    place: Place,
    settings: Settings,
    subs: Vec<Sub>,
    index: HashMap<TopicKey, usize>,
    links: HashMap<LinkId, Link>,
    /// Links being opened, by address.
    opening: HashMap<String, LinkId>,
    opens: HashMap<String, Opens>,
    next_link: LinkId,
    inbox: Inbox,
    items: mpsc::UnboundedReceiver<Item>,
    ops: FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send>>>,
    out: mpsc::Sender<PubSubEvent>,
    shared: Arc<Shared>,
    rng: SmallRng,
    hasher: Hasher,
    /// Told once every topic is live for the first time.
    ready: Option<oneshot::Sender<()>>,
}

impl Driver {
    /// A subscription to `topics` that delivers to `out`, and tells `ready` once every topic
    /// is subscribed.
    pub(super) fn new(
        place: Place,
        settings: Settings,
        topics: Vec<Topic>,
        out: mpsc::Sender<PubSubEvent>,
        shared: Arc<Shared>,
        rng: SmallRng,
        ready: oneshot::Sender<()>,
    ) -> Driver {
        let now = Instant::now();
        let mut index = HashMap::new();
        let subs = topics
            .into_iter()
            .enumerate()
            .map(|(i, topic)| {
                index.insert((topic.kind, topic.name.as_bytes().to_vec()), i);
                Sub {
                    slot: key_slot(topic.name.as_bytes()),
                    topic,
                    at: At::Nowhere,
                    gap: None,
                    retry_at: now,
                    failures: 0,
                    previous_delay: None,
                    echoes: Echoes::default(),
                }
            })
            .collect();
        let (inbox, items) = Inbox::new();
        Driver {
            place,
            settings,
            subs,
            index,
            links: HashMap::new(),
            opening: HashMap::new(),
            opens: HashMap::new(),
            next_link: 0,
            inbox,
            items,
            ops: FuturesUnordered::new(),
            out,
            shared,
            rng,
            hasher: Hasher::default(),
            ready: Some(ready),
        }
    }

    /// Runs until the [`ResilientPubSub`](super::ResilientPubSub) or the client is dropped.
    pub(super) async fn run(mut self) {
        let Some(mut changes): Option<Changes> = self.place.changes() else {
            return;
        };
        loop {
            self.reconcile();
            if self.ready.is_some() && self.subs.iter().all(|s| matches!(s.at, At::Live(_))) {
                let _ = self.ready.take().map(|r| r.send(()));
            }
            let wake = self.next_wake();
            let go_on = tokio::select! {
                _ = self.out.closed() => false,
                Some(done) = self.ops.next(), if !self.ops.is_empty() => {
                    self.on_done(done);
                    true
                }
                _ = changes.next() => {
                    self.on_topology_change();
                    true
                }
                item = self.items.recv() => match item {
                    Some(item) => self.on_item(item).await,
                    None => false,
                },
                _ = tokio::time::sleep_until(wake) => {
                    self.on_tick();
                    true
                }
            };
            if !go_on || self.place.gone() {
                return;
            }
        }
    }

    /// Sends what is due: subscriptions of topics that are nowhere, links they need; closes
    /// links that carry nothing.
    fn reconcile(&mut self) {
        let now = Instant::now();
        for i in 0..self.subs.len() {
            let sub = &self.subs[i];
            if sub.at != At::Nowhere || sub.retry_at > now {
                continue;
            }
            let (kind, slot) = (sub.topic.kind, sub.slot);
            let open: Vec<&str> = self
                .links
                .values()
                .map(|l| l.addr.as_str())
                .chain(self.opening.keys().map(String::as_str))
                .collect();
            let Some(target) = self.place.target(kind, slot, &open, &mut self.rng) else {
                continue;
            };
            match self.links.values().find(|l| l.addr == target) {
                Some(link) => {
                    let id = link.id;
                    self.subscribe(i, id);
                }
                None => self.open(target, now),
            }
        }
        let carried: Vec<LinkId> = self
            .subs
            .iter()
            .filter_map(|s| match s.at {
                At::Live(l) | At::Subscribing(l, _) => Some(l),
                At::Nowhere => None,
            })
            .collect();
        self.links.retain(|id, _| carried.contains(id));
    }

    /// Starts opening a link to `addr`, unless one is being opened or it failed too recently.
    fn open(&mut self, addr: String, now: Instant) {
        if self.opening.contains_key(&addr) {
            return;
        }
        if let Some(at) = self.opens.get(&addr).and_then(|o| o.retry_at)
            && at > now
        {
            return;
        }
        self.next_link += 1;
        let id = self.next_link;
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout))
            .set_push_sender(self.inbox.sender(id));
        let opening = self.place.open(&addr, settings);
        self.opening.insert(addr.clone(), id);
        self.ops.push(Box::pin(async move {
            Done::Opened {
                addr,
                id,
                result: opening.await,
            }
        }));
    }

    /// Sends topic `i`'s subscription on `link`.
    fn subscribe(&mut self, i: usize, link: LinkId) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let sub = &mut self.subs[i];
        sub.at = At::Subscribing(link, Instant::now());
        let mut conn = l.conn.clone();
        let cmd = redis::cmd(sub.topic.kind.subscribe())
            .arg(&sub.topic.name)
            .clone();
        let sent = l.bound(async move { conn.send_packed_command(&cmd).await });
        self.ops.push(Box::pin(async move {
            Done::Subscribed {
                link,
                sub: i,
                // (A link dropped meanwhile: its topics have moved on; the answer is ignored.)
                result: sent.await.unwrap_or_else(|| Err(link_dropped())),
            }
        }));
    }

    /// One push, or drop marker, from the inbox. `false` once the consumer is gone.
    async fn on_item(&mut self, item: Item) -> bool {
        let now = Instant::now();
        let (link, push) = match item {
            Item::Dropped(link, kind, name) => {
                self.inbox.saw_marker(kind, name.clone());
                let Some(&i) = self.index.get(&(kind, name)) else {
                    return true;
                };
                if self.subs[i].at != At::Live(link) {
                    return true;
                }
                let gap = self.gap(i, now, GapCause::SlowConsumer);
                return self.emit(PubSubEvent::Gap(gap)).await;
            }
            Item::Push(link, info) => {
                if super::topic::is_message(&info.kind) {
                    self.inbox.took_message();
                }
                (link, Push::of(info))
            }
        };
        if let Some(l) = self.links.get_mut(&link) {
            l.last_heard = now;
        }
        match push {
            Push::Message(kind, name, msg) => {
                let Some(&i) = self.index.get(&(kind, name)) else {
                    return true;
                };
                if self.subs[i].at != At::Live(link) {
                    return true;
                }
                let hash = self.hasher.of(&msg);
                if !self.subs[i].echoes.arrived(hash, now) {
                    self.shared.echoes.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                return self.emit(PubSubEvent::Message(msg)).await;
            }
            Push::Subscribed(kind, name) => {
                let Some(&i) = self.index.get(&(kind, name)) else {
                    return true;
                };
                if matches!(self.subs[i].at, At::Subscribing(l, _) if l == link) {
                    let sub = &mut self.subs[i];
                    sub.at = At::Live(link);
                    (sub.failures, sub.previous_delay) = (0, None);
                    if let Some((began, cause)) = sub.gap.take() {
                        sub.echoes.moved(now);
                        let gap = Gap {
                            topic: sub.topic.clone(),
                            began: began.into_std(),
                            ended: now.into_std(),
                            cause,
                        };
                        return self.emit(PubSubEvent::Gap(gap)).await;
                    }
                }
            }
            Push::Unsubscribed(kind, name) => {
                // Ours are sent only for topics that already left the link: this one is the
                // server's (a shard channel's slot moved away).
                let Some(&i) = self.index.get(&(kind, name)) else {
                    return true;
                };
                let on_link = match self.subs[i].at {
                    At::Live(l) | At::Subscribing(l, _) => l == link,
                    At::Nowhere => false,
                };
                if on_link {
                    tracing::debug!(topic = %self.subs[i].topic.name, "the server ended a subscription: its slot moved");
                    self.leave(i, now, GapCause::SlotMoved);
                    self.shared.resubscriptions.fetch_add(1, Ordering::Relaxed);
                    if let Some(l) = self.links.get(&link) {
                        self.place.lost(&l.addr.clone(), false);
                    }
                }
            }
            Push::Disconnected => self.drop_link(link, GapCause::ConnectionLost, false),
            Push::Other => {}
        }
        true
    }

    /// Delivers `event`; `false` once the consumer is gone.
    async fn emit(&mut self, event: PubSubEvent) -> bool {
        if let PubSubEvent::Gap(gap) = &event {
            self.shared.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic = %gap.topic.name, cause = ?gap.cause, lasted = ?gap.ended.duration_since(gap.began), "subscription gap");
        }
        self.out.send(event).await.is_ok()
    }

    /// A gap of topic `i` that begins and ends now (a drop in the inbox).
    fn gap(&self, i: usize, now: Instant, cause: GapCause) -> Gap {
        Gap {
            topic: self.subs[i].topic.clone(),
            began: now.into_std(),
            ended: now.into_std(),
            cause,
        }
    }

    /// Topic `i` leaves its link (a gap opens if it was live).
    fn leave(&mut self, i: usize, began: Instant, cause: GapCause) {
        let sub = &mut self.subs[i];
        if matches!(sub.at, At::Live(_)) && sub.gap.is_none() {
            sub.gap = Some((began, cause));
        }
        sub.at = At::Nowhere;
    }

    /// Link `link` is gone (lost, not answering, replaced): its topics leave it, with a gap
    /// since it was last heard from. `down`: the node is flagged down (cluster).
    fn drop_link(&mut self, link: LinkId, cause: GapCause, down: bool) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        let mut moved = false;
        for i in 0..self.subs.len() {
            match self.subs[i].at {
                At::Live(x) | At::Subscribing(x, _) if x == link => {
                    moved |= matches!(self.subs[i].at, At::Live(_));
                    self.leave(i, l.last_heard, cause);
                }
                _ => {}
            }
        }
        if moved {
            self.shared.resubscriptions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = %l.addr, ?cause, "subscription link lost: subscribing again");
        }
        self.place.lost(&l.addr, down);
    }

    /// A background operation ended.
    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Opened { addr, id, result } => {
                self.opening.remove(&addr);
                match result {
                    Ok((conn, epoch, renew_at)) if !self.place.replaced(epoch) => {
                        self.opens.remove(&addr);
                        self.links.insert(
                            id,
                            Link {
                                id,
                                addr,
                                conn,
                                last_heard: now,
                                ping_sent: None,
                                renew_at,
                                epoch,
                                alive: tokio::sync::watch::channel(()).0,
                            },
                        );
                    }
                    Ok(_) => {} // Opened for a master replaced since: open again.
                    Err(e) => {
                        self.note_error(&e);
                        let opens = self.opens.entry(addr.clone()).or_default();
                        opens.failures = opens.failures.saturating_add(1);
                        let delay = self.settings.backoff.delay(
                            opens.failures,
                            opens.previous,
                            &mut self.rng,
                        );
                        opens.previous = Some(delay);
                        opens.retry_at = Some(now + delay);
                        tracing::debug!(node = %addr, error = %e, ?delay, "cannot open a subscription link");
                        self.place.lost(&addr, true);
                    }
                }
            }
            Done::Subscribed { link, sub, result } => {
                let error = match result {
                    Ok(Value::ServerError(e)) => RedisError::from(e),
                    Ok(_) => return, // The confirmation comes as a push.
                    Err(e) => e,
                };
                if !matches!(self.subs[sub].at, At::Subscribing(l, _) if l == link) {
                    return;
                }
                if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
                    let down = error.is_timeout();
                    let cause = if down {
                        GapCause::Unresponsive
                    } else {
                        GapCause::ConnectionLost
                    };
                    self.drop_link(link, cause, down);
                    return;
                }
                self.refused(sub, link, &error, now);
            }
            Done::Pinged {
                link,
                sent,
                answered,
            } => {
                let Some(l) = self.links.get_mut(&link) else {
                    return;
                };
                l.ping_sent = None;
                if answered {
                    l.last_heard = l.last_heard.max(now);
                } else if l.last_heard <= sent {
                    tracing::info!(node = %l.addr, "a subscription link stopped answering");
                    self.drop_link(link, GapCause::Unresponsive, true);
                }
            }
            Done::Left => {}
        }
    }

    /// The server refused topic `i`'s subscription on `link`: `MOVED` sends it to the slot's
    /// owner at once; anything else is tried again after a backoff.
    fn refused(&mut self, i: usize, link: LinkId, error: &RedisError, now: Instant) {
        self.subs[i].at = At::Nowhere;
        if let Some(redirect) = redirect_of(error)
            && redirect.kind == RedirectKind::Moved
        {
            self.place.moved(redirect.slot, &redirect.addr);
            return;
        }
        self.note_error(error);
        let sub = &mut self.subs[i];
        sub.failures = sub.failures.saturating_add(1);
        let delay = self
            .settings
            .backoff
            .delay(sub.failures, sub.previous_delay, &mut self.rng);
        sub.previous_delay = Some(delay);
        sub.retry_at = now + delay;
        tracing::debug!(topic = %sub.topic.name, %error, ?delay, "subscription refused");
        if let Some(l) = self.links.get(&link) {
            let addr = l.addr.clone();
            self.place.lost(&addr, false);
        }
    }

    /// Keeps the last error, for a first subscription that never succeeds.
    fn note_error(&self, e: &RedisError) {
        *self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// The master or the slot map changed: links to a replaced master go, shard channels whose
    /// slot moved leave their link.
    fn on_topology_change(&mut self) {
        let replaced: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| self.place.replaced(l.epoch))
            .map(|l| l.id)
            .collect();
        for link in replaced {
            self.drop_link(link, GapCause::MasterChanged, false);
        }
        let now = Instant::now();
        let mut moved = false;
        for i in 0..self.subs.len() {
            let sub = &self.subs[i];
            if sub.topic.kind != TopicKind::ShardChannel {
                continue;
            }
            let link = match sub.at {
                At::Live(l) | At::Subscribing(l, _) => l,
                At::Nowhere => continue,
            };
            let Some(l) = self.links.get(&link) else {
                continue;
            };
            if !self.place.moved_away(sub.slot, &l.addr) {
                continue;
            }
            moved |= matches!(sub.at, At::Live(_));
            let mut conn = l.conn.clone();
            let cmd = redis::cmd(sub.topic.kind.unsubscribe())
                .arg(&sub.topic.name)
                .clone();
            let sent = l.bound(async move { conn.send_packed_command(&cmd).await });
            self.ops.push(Box::pin(async move {
                let _ = sent.await;
                Done::Left
            }));
            self.leave(i, now, GapCause::SlotMoved);
        }
        if moved {
            self.shared.resubscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Periodic work: liveness `PING`s, credentials renewal, subscriptions never confirmed.
    fn on_tick(&mut self) {
        let now = Instant::now();
        let renew: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.renew_at.is_some_and(|at| at <= now))
            .map(|l| l.id)
            .collect();
        for link in renew {
            tracing::info!(
                "credentials due for renewal: moving a subscription link to a fresh connection"
            );
            self.drop_link(link, GapCause::CredentialsRenewal, false);
        }
        for l in self.links.values_mut() {
            if l.ping_sent.is_none() && now.duration_since(l.last_heard) >= LIVENESS {
                l.ping_sent = Some(now);
                let (mut conn, link, limit) =
                    (l.conn.clone(), l.id, self.settings.response_timeout);
                let ping = redis::cmd("PING");
                let sent = l.bound(async move {
                    tokio::time::timeout(limit, conn.send_packed_command(&ping)).await
                });
                self.ops.push(Box::pin(async move {
                    let answered = matches!(sent.await, Some(Ok(Ok(_))));
                    Done::Pinged {
                        link,
                        sent: now,
                        answered,
                    }
                }));
            }
        }
        // A confirmation that never came (its reply taken by a push the server sent at the
        // same time): subscribe again.
        let limit = self.settings.response_timeout * 2;
        for sub in &mut self.subs {
            if let At::Subscribing(_, since) = sub.at
                && now.duration_since(since) > limit
            {
                sub.at = At::Nowhere;
            }
        }
    }

    /// When the task must look again without being woken: the next liveness check, renewal,
    /// confirmation limit or retry; soon while a topic is nowhere (the topology may have come
    /// back without a change being announced).
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + LIVENESS;
        for l in self.links.values() {
            if l.ping_sent.is_none() {
                wake = wake.min(l.last_heard + LIVENESS);
            }
            if let Some(at) = l.renew_at.filter(|at| *at > now) {
                wake = wake.min(at);
            }
        }
        for sub in &self.subs {
            match sub.at {
                At::Subscribing(_, since) => {
                    wake = wake.min(since + self.settings.response_timeout * 2);
                }
                At::Nowhere => {
                    let soon = now + Duration::from_millis(50);
                    wake = wake.min(sub.retry_at.max(soon));
                }
                At::Live(_) => {}
            }
        }
        for o in self.opens.values() {
            if let Some(at) = o.retry_at.filter(|at| *at > now) {
                wake = wake.min(at);
            }
        }
        wake.max(now + Duration::from_millis(1))
    }
}

/// The error of a request on a subscription link dropped before its reply.
fn link_dropped() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "subscription link dropped",
    ))
}
