//! [`ResilientPubSub`]: subscriptions that survive reconnections and failovers.

use std::{
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use rand::{SeedableRng, rngs::SmallRng};
use redis::{Msg, aio::PubSub};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    Client,
    connection::{Master, Pool, master_changed},
    error::{Error, ErrorKind, Outcome},
};

/// Messages buffered for a slow consumer before the subscription stops reading the socket.
const BUFFER: usize = 1024;

/// A stream of pub/sub messages that re-subscribes on its own after a lost connection or a
/// failover. Made by [`Client::subscribe`].
///
/// # Behavior
/// - One dedicated connection (pub/sub cannot share the multiplexed ones), to the master when
///   the client follows Sentinel.
/// - When the connection breaks, it reconnects with the client's `reconnect_backoff` and
///   subscribes again to every channel and pattern. When Sentinel announces a new master, it
///   moves there at once. When the connection's credentials are due for renewal (see
///   [`crate::credentials`]), it moves to a fresh connection with new ones (RESP2 cannot `AUTH`
///   in subscribe mode); that is a gap too.
/// - **Messages can be missed**: Redis pub/sub is at-most-once. Whatever is published while the
///   subscription is down (from the moment the connection breaks or the master changes until the
///   new `SUBSCRIBE` is confirmed) is not delivered, and is not replayed. Use streams (`XADD` /
///   `XREAD`) when every message matters. [`ResilientPubSub::resubscriptions`] tells how many
///   such gaps there were.
/// - Up to 1024 messages are buffered for a slow consumer; beyond that the subscription stops
///   reading until the consumer catches up (the server then buffers, up to its
///   `client-output-buffer-limit pubsub`).
/// - Dropping it ends the subscription and closes its connection.
pub struct ResilientPubSub {
    messages: mpsc::Receiver<Msg>,
    resubscriptions: Arc<AtomicU64>,
}

impl ResilientPubSub {
    /// How many times the subscription was re-established (each is a gap in which messages
    /// may have been missed).
    pub fn resubscriptions(&self) -> u64 {
        self.resubscriptions.load(Ordering::Relaxed)
    }
}

impl Stream for ResilientPubSub {
    type Item = Msg;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Msg>> {
        self.messages.poll_recv(cx)
    }
}

impl std::fmt::Debug for ResilientPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientPubSub")
            .field("resubscriptions", &self.resubscriptions())
            .finish()
    }
}

/// What to subscribe to.
#[derive(Clone)]
struct Topics {
    channels: Vec<String>,
    patterns: Vec<String>,
}

impl Client {
    /// Subscribes to `channels` (`SUBSCRIBE`) and `patterns` (`PSUBSCRIBE`); the subscription
    /// survives reconnections and Sentinel failovers (see [`ResilientPubSub`] for which messages
    /// can be missed).
    ///
    /// Returns once the server has confirmed the subscription, waiting up to the client's
    /// deadline for a connection.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when both lists are empty; [`ErrorKind::Unavailable`] when
    /// no subscription could be made before the deadline.
    ///
    /// # Example
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = resilient_redis::Client::connect("redis+sentinel://10.0.0.1:26379/mymaster").await?;
    /// let mut news = client.subscribe(&["news"], &[]).await?;
    /// while let Some(msg) = news.next().await {
    ///     let text: String = msg.get_payload()?;
    ///     println!("{}: {text}", msg.get_channel_name());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(
        &self,
        channels: &[&str],
        patterns: &[&str],
    ) -> Result<ResilientPubSub, Error> {
        if channels.is_empty() && patterns.is_empty() {
            return Err(Error::config(
                "subscribe needs at least one channel or pattern",
            ));
        }
        let topics = Topics {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        };
        let Some(pool) = self.pool().cloned() else {
            return Err(Error::new(
                crate::ErrorKind::Refused,
                crate::Outcome::Failed,
                "subscribe is not supported on a cluster yet",
            ));
        };
        let changes = pool.master_changes();
        let config = self.config();
        let deadline = Instant::now() + config.deadline;
        let mut rng = match config.rng_seed {
            Some(seed) => SmallRng::seed_from_u64(seed ^ 0x9b5b),
            None => rand::make_rng(),
        };
        let backoff = config.reconnect_backoff;
        let mut failures = 0u32;
        let mut previous = None;
        let (pubsub, renew_at) = loop {
            match subscribe_on(&pool, &topics).await {
                Ok(p) => break p,
                Err(e) => {
                    failures += 1;
                    let delay = backoff.delay(failures, previous, &mut rng);
                    previous = Some(delay);
                    if Instant::now() + delay >= deadline {
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            Outcome::Failed,
                            "cannot subscribe before the deadline",
                        )
                        .with_source(e));
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let (tx, messages) = mpsc::channel(BUFFER);
        let resubscriptions = Arc::new(AtomicU64::new(0));
        let task = Subscription {
            pool: Arc::downgrade(&pool),
            topics,
            tx,
            changes,
            resubscriptions: resubscriptions.clone(),
            backoff,
            rng,
        };
        tokio::spawn(task.run(pubsub, renew_at));
        Ok(ResilientPubSub {
            messages,
            resubscriptions,
        })
    }
}

/// A subscribed connection, and when its credentials are due for renewal.
async fn subscribe_on(
    pool: &Pool,
    topics: &Topics,
) -> redis::RedisResult<(PubSub, Option<Instant>)> {
    let (mut pubsub, renew_at) = pool.open_pubsub().await?;
    if !topics.channels.is_empty() {
        pubsub.subscribe(&topics.channels).await?;
    }
    if !topics.patterns.is_empty() {
        pubsub.psubscribe(&topics.patterns).await?;
    }
    Ok((pubsub, renew_at))
}

/// The state of a subscription's background task.
struct Subscription {
    pool: Weak<Pool>,
    topics: Topics,
    tx: mpsc::Sender<Msg>,
    changes: Option<watch::Receiver<Master>>,
    resubscriptions: Arc<AtomicU64>,
    backoff: resilience::Backoff,
    rng: SmallRng,
}

impl Subscription {
    /// Forwards messages, and re-subscribes after a lost connection or a master switch, until
    /// the [`ResilientPubSub`] is dropped.
    async fn run(mut self, mut pubsub: PubSub, mut renew_at: Option<Instant>) {
        loop {
            if !self.forward(pubsub, renew_at).await {
                return;
            }
            match self.resubscribe().await {
                Some((p, at)) => (pubsub, renew_at) = (p, at),
                None => return,
            }
            self.resubscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forwards messages until the connection is lost, the master changes or the credentials
    /// are due for renewal at `renew_at` (`true`), or the consumer is gone (`false`).
    async fn forward(&mut self, pubsub: PubSub, renew_at: Option<Instant>) -> bool {
        let mut stream = pubsub.into_on_message();
        let renewal = crate::connection::until(renew_at);
        tokio::pin!(renewal);
        loop {
            tokio::select! {
                _ = self.tx.closed() => return false,
                _ = &mut renewal => {
                    tracing::info!("credentials due for renewal: moving the subscription to a fresh connection");
                    return true;
                }
                _ = master_changed(&mut self.changes) => {
                    tracing::info!("the master changed: moving the subscription");
                    return true;
                }
                message = stream.next() => match message {
                    Some(m) => {
                        if self.tx.send(m).await.is_err() {
                            return false;
                        }
                    }
                    None => {
                        tracing::debug!("pub/sub connection lost: re-subscribing");
                        return true;
                    }
                },
            }
        }
    }

    /// A new subscription, with backoff between failures (none after a master switch); `None`
    /// when the consumer or the client is gone.
    async fn resubscribe(&mut self) -> Option<(PubSub, Option<Instant>)> {
        let mut failures = 0u32;
        let mut previous: Option<Duration> = None;
        loop {
            let pool = self.pool.upgrade()?;
            let attempt = tokio::select! {
                _ = self.tx.closed() => return None,
                r = subscribe_on(&pool, &self.topics) => r,
            };
            drop(pool);
            let error = match attempt {
                Ok(pubsub) => return Some(pubsub),
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            let delay = self.backoff.delay(failures, previous, &mut self.rng);
            previous = Some(delay);
            tracing::debug!(%error, ?delay, "re-subscribe failed");
            tokio::select! {
                _ = self.tx.closed() => return None,
                _ = tokio::time::sleep(delay) => {}
                _ = master_changed(&mut self.changes) => {
                    failures = 0;
                    previous = None;
                }
            }
        }
    }
}
