//! One attempt in a Redis Cluster: the slot's node (waiting while it is down), its breaker and
//! throttle, the send on its pool, and the hops that are part of the same attempt: `MOVED` and
//! `ASK` (followed at once) and a reconfiguring cluster (`CLUSTERDOWN`, `TRYAGAIN`, `READONLY`:
//! sent again after the next slot-map refresh). See [`crate::routing::cluster`].

use std::sync::{Arc, Mutex, PoisonError, atomic::Ordering};

use redis::{RedisError, ServerError, Value};
use resilience::{Attempt, Classification};
use tokio::time::Instant;

use super::{Handle, admit::settle_permit};
use crate::{
    commands::command_slot,
    connection::Lease,
    error::{Error, ErrorKind, Outcome},
    replies::{self, Deployment, TopologyHint},
    request::{Reply, Request},
    retry::{AttemptError, connection_lost},
    routing::{
        Node,
        cluster::{ClusterRouter, RedirectKind, redirect_of},
    },
};

/// Where the next hop of an attempt goes.
enum Target {
    /// The master of the request's slot, from the slot map.
    Slot(u16),
    /// A node named by a redirect; `true`: `ASKING` first.
    Node(Arc<Node>, bool),
    /// A replica of the slot (a read whose first choice had no connection).
    Replica(Arc<Node>),
    /// redis-rs's cluster connection (no slot to route by).
    Keyless,
}

/// The slot of a request: its command's, or a pipeline's first keyed command's.
pub(super) fn slot_of(request: Request<'_>) -> Option<u16> {
    match request {
        Request::Cmd(cmd) => command_slot(cmd),
        Request::Pipeline { pipeline, .. } => pipeline.cmd_iter().find_map(command_slot),
    }
}

impl Handle {
    /// The first attempt of a cluster call, sent straight to the slot's master, failed with
    /// `error`: what its reply says of the topology (`MOVED`, `ASK`, `CLUSTERDOWN`, a lost
    /// connection) is taken in, and the attempt goes on from the slot map (`Some`) if the reply
    /// asks for it; `None`: a plain failure, for the policy.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn cluster_fast_failed(
        &self,
        cluster: &ClusterRouter,
        node: &Node,
        request: Request<'_>,
        error: &AttemptError,
        attempt: Attempt,
        (retry_safe, read_only): (bool, bool),
        cached: &Mutex<Option<Lease>>,
    ) -> Option<Result<Reply, AttemptError>> {
        if error.error.kind() == ErrorKind::ConnectionLost {
            cluster.node_failed(&node.addr);
            if !(retry_safe && cluster.reads_elsewhere(read_only)) {
                return None;
            }
            // A read with other copies to go to: sent again at once to the next node
            // `read_from` picks (the dead one is flagged down), as a redirect is.
            let how = (retry_safe, read_only);
            return Some(
                Box::pin(self.cluster_attempt(cluster, request, attempt, how, cached, false)).await,
            );
        }
        let hint = error.reply.map(|h| h.topology);
        if !matches!(
            hint,
            Some(
                TopologyHint::Moved
                    | TopologyHint::Ask
                    | TopologyHint::Reconfiguring
                    | TopologyHint::Demoted
            )
        ) {
            return None;
        }
        if let Some(redirect) = error.error.redis_error().and_then(redirect_of)
            && redirect.kind == RedirectKind::Moved
        {
            cluster.moved(redirect.slot, &redirect.addr);
        } else {
            // `ASK` is met again from the slot map's node and followed there; a reconfiguring
            // cluster is waited for as in any attempt.
            cluster.request_refresh();
        }
        let how = (retry_safe, read_only);
        Some(Box::pin(self.cluster_attempt(cluster, request, attempt, how, cached, true)).await)
    }

    /// One attempt of a call on a cluster (`counted`: the attempt was counted already). A read
    /// (`read_only`) goes where the client's `read_from` says; one that loses its connection
    /// while other copies answer is sent again at once elsewhere.
    pub(super) async fn cluster_attempt(
        &self,
        cluster: &ClusterRouter,
        request: Request<'_>,
        attempt: Attempt,
        (retry_safe, read_only): (bool, bool),
        cached: &Mutex<Option<Lease>>,
        counted: bool,
    ) -> Result<Reply, AttemptError> {
        let pipelined = matches!(request, Request::Pipeline { .. });
        let mut target = match slot_of(request) {
            Some(slot) if cluster.knows(slot) => Target::Slot(slot),
            _ => Target::Keyless,
        };
        let mut hops = 0;
        let mut counted = counted;
        loop {
            // The slot map's version this hop routes by: a wait below ends as soon as it moves
            // on, even if it moved between this reading and the wait.
            let seen = cluster.epoch();
            let (node, asking, to_replica) = match target {
                Target::Keyless => {
                    self.count_attempt(attempt, &mut counted, None, false);
                    return self.keyless_attempt(cluster, request, retry_safe).await;
                }
                Target::Node(ref node, asking) => (node.clone(), asking, false),
                Target::Replica(ref node) => (node.clone(), false, true),
                Target::Slot(slot) => match cluster.route(slot, read_only) {
                    Ok(route) => (route.node, false, route.replica),
                    Err(_) => {
                        self.wait_for_topology(cluster, seen, attempt.deadline, || {
                            format!("the node of slot {slot} stayed down and no other took over before the deadline")
                        })
                        .await?;
                        continue;
                    }
                },
            };
            let reusable = cached.lock().unwrap_or_else(PoisonError::into_inner).take();
            let lease = match reusable.filter(|l| node.pool.is_current(l)) {
                Some(lease) => Some(lease),
                None => node.pool.try_acquire_for(false),
            };
            let mut lease = match lease {
                Some(lease) => lease,
                // A read with a live copy elsewhere does not wait for this node's connection.
                None if let Target::Slot(slot) = &target
                    && cluster.reads_elsewhere(read_only)
                    && let Some(replica) = cluster.live_replica(*slot, &node.addr) =>
                {
                    target = Target::Replica(replica);
                    continue;
                }
                None => match self
                    .wait_for_node(cluster, &node, seen, attempt.deadline)
                    .await?
                {
                    Some(lease) => lease,
                    // The slot map changed while waiting: route again.
                    None => continue,
                },
            };
            let permit = self.admit_to(&node, Instant::now())?;
            self.count_attempt(attempt, &mut counted, Some(&node), to_replica);
            if to_replica {
                self.count_replica_read();
            }
            let id = lease.id();
            let result = if asking {
                self.send_asking(&node, &mut lease, request, retry_safe, attempt.deadline)
                    .await
            } else {
                self.send_on(
                    &node,
                    &mut lease,
                    request,
                    retry_safe,
                    attempt.deadline,
                    None,
                )
                .await
            };
            // Redirects and a reconfiguring cluster are not the node's fault: the breaker hears
            // only successes and the node's own failures.
            settle_permit(permit, &result);
            let e = match result {
                Ok(reply) => {
                    *cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
                    return Ok(reply);
                }
                Err(e) => e,
            };
            let hint = e.reply.map(|h| h.topology);
            if let Some(redirect) = e.error.redis_error().and_then(redirect_of) {
                hops += 1;
                if redirect.kind == RedirectKind::Moved {
                    cluster.moved(redirect.slot, &redirect.addr);
                } else {
                    cluster.redirects.fetch_add(1, Ordering::Relaxed);
                    crate::observe::call::note_redirect();
                    if pipelined {
                        // Some of the pipeline's commands may have run on this node.
                        return Err(AttemptError {
                            error: Error::new(
                                ErrorKind::Server,
                                Outcome::Ambiguous,
                                "a pipeline met a slot being migrated (ASK); its commands may have run on either node",
                            )
                            .with_source(e.error.redis_error().cloned().unwrap_or_else(|| {
                                RedisError::from((redis::ErrorKind::Io, "ASK"))
                            })),
                            class: Classification::retry().ambiguous().server_fault(false),
                            reply: None,
                        });
                    }
                }
                if hops > cluster.cluster.max_redirects {
                    cluster.request_refresh();
                    return Err(AttemptError {
                        error: Error::new(
                            ErrorKind::Server,
                            Outcome::Failed,
                            format!("more than {} redirects", cluster.cluster.max_redirects),
                        ),
                        class: Classification::retry().server_fault(false),
                        reply: None,
                    });
                }
                let to = cluster.node(&redirect.addr).map_err(|error| AttemptError {
                    error,
                    class: Classification::fail(),
                    reply: None,
                })?;
                target = Target::Node(to, redirect.kind == RedirectKind::Ask);
                continue;
            }
            if matches!(
                hint,
                Some(TopologyHint::Reconfiguring | TopologyHint::Demoted)
            ) {
                // The cluster is changing (a failover, a migration): nothing ran; send again
                // once the slot map may have changed, within the deadline.
                if cluster.reads_elsewhere(read_only) {
                    cluster.refused_read_while_down(&e.error);
                }
                cluster.request_refresh();
                self.wait_for_refresh(cluster, seen, attempt.deadline, &e)
                    .await?;
                if let Target::Node(..) | Target::Replica(_) = target {
                    target = match slot_of(request) {
                        Some(slot) => Target::Slot(slot),
                        None => Target::Keyless,
                    };
                }
                continue;
            }
            if e.error.kind() == ErrorKind::ConnectionLost {
                cluster.node_failed(&node.addr);
                if retry_safe
                    && cluster.reads_elsewhere(read_only)
                    && hops < cluster.cluster.max_redirects
                {
                    // Another copy may answer: the next node `read_from` picks (this one is
                    // flagged down), at once.
                    hops += 1;
                    if let Some(slot) = slot_of(request) {
                        target = Target::Slot(slot);
                        continue;
                    }
                }
            }
            self.after_failure(&e, &node, id, attempt.deadline).await;
            return Err(e);
        }
    }

    /// Counts an attempt once per attempt (hops are not attempts); the call's span notes the
    /// node of its last hop.
    fn count_attempt(
        &self,
        attempt: Attempt,
        counted: &mut bool,
        node: Option<&Node>,
        to_replica: bool,
    ) {
        if *counted {
            crate::observe::call::note_attempt(|| (node.map(|n| n.addr.clone()), to_replica), 0);
            return;
        }
        *counted = true;
        self.note_attempt(attempt.number, || {
            (node.map(|n| n.addr.clone()), to_replica)
        });
    }

    /// Waits, up to `deadline`, for the slot map to move on from version `seen` (the node of a
    /// slot is down).
    pub(super) async fn wait_for_topology(
        &self,
        cluster: &ClusterRouter,
        seen: u64,
        deadline: Option<Instant>,
        why: impl FnOnce() -> String,
    ) -> Result<(), AttemptError> {
        cluster.waits.fetch_add(1, Ordering::Relaxed);
        cluster.request_refresh();
        let waiting = Instant::now();
        let changed = cluster.changed_since(seen, deadline).await;
        crate::observe::call::note_wait(waiting.elapsed());
        if changed {
            return Ok(());
        }
        Err(AttemptError {
            error: Error::new(ErrorKind::Unavailable, Outcome::Failed, why()),
            class: Classification::fail(),
            reply: None,
        })
    }

    /// Waits for the slot map to move on from version `seen`, at most `min_refresh_interval`
    /// and never past `deadline`, after a reply that says the cluster is reconfiguring. At the
    /// deadline, the reply's error.
    pub(super) async fn wait_for_refresh(
        &self,
        cluster: &ClusterRouter,
        seen: u64,
        deadline: Option<Instant>,
        e: &AttemptError,
    ) -> Result<(), AttemptError> {
        cluster.waits.fetch_add(1, Ordering::Relaxed);
        let pause = Instant::now() + cluster.cluster.min_refresh_interval;
        let until = deadline.map_or(pause, |d| d.min(pause));
        let waiting = Instant::now();
        cluster.changed_since(seen, Some(until)).await;
        crate::observe::call::note_wait(waiting.elapsed());
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(AttemptError {
                error: e.error.clone(),
                class: Classification::fail(),
                reply: None,
            });
        }
        Ok(())
    }

    /// Waits for a connection to `node`, up to `deadline`; `None` if the slot map moved on from
    /// version `seen` first (the slot may have moved).
    async fn wait_for_node(
        &self,
        cluster: &ClusterRouter,
        node: &Node,
        seen: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<Lease>, AttemptError> {
        if node.pool.last_error().is_some() {
            cluster.node_failed(&node.addr);
        }
        cluster.waits.fetch_add(1, Ordering::Relaxed);
        let waited = tokio::select! {
            lease = node.pool.acquire_for(false, deadline) => Some(lease),
            _ = cluster.changed_since(seen, None) => None,
        };
        match waited {
            Some(Ok(lease)) => Ok(Some(lease)),
            None => Ok(None),
            Some(Err(error)) => {
                cluster.node_failed(&node.addr);
                Err(AttemptError {
                    error,
                    // Not sent: nothing to undo.
                    class: Classification::fail().server_fault(false),
                    reply: None,
                })
            }
        }
    }

    /// Sends `ASKING` and the command in one pipeline on `lease` (so no other request slips in
    /// between on the shared connection).
    async fn send_asking(
        &self,
        node: &Node,
        lease: &mut Lease,
        request: Request<'_>,
        retry_safe: bool,
        deadline: Option<Instant>,
    ) -> Result<Reply, AttemptError> {
        let Request::Cmd(cmd) = request else {
            return self
                .send_on(node, lease, request, retry_safe, deadline, None)
                .await;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").add_command(cmd.clone());
        let asked = Request::Pipeline {
            pipeline: &pipe,
            offset: 1,
            count: 1,
        };
        // The ASKING reply is skipped; the command's reply is checked as a single command's.
        match self
            .send_on(node, lease, asked, false, deadline, None)
            .await?
        {
            Reply::Many(mut values) => {
                let reply = Reply::One(values.pop().unwrap_or(Value::Nil));
                self.check_reply(reply, retry_safe)
            }
            one => Ok(one),
        }
    }

    /// An attempt through redis-rs's cluster connection (no slot to route by).
    async fn keyless_attempt(
        &self,
        cluster: &ClusterRouter,
        request: Request<'_>,
        retry_safe: bool,
    ) -> Result<Reply, AttemptError> {
        let pipelined = matches!(request, Request::Pipeline { .. });
        match cluster.keyless.send(request).await {
            Some(Ok(reply)) => self.check_reply(reply, retry_safe),
            Some(Err(error)) => Err(self.keyless_error(error, pipelined)),
            None => Err(connection_lost(
                "the cluster connection stopped answering while the request was in flight",
                None,
            )),
        }
    }

    /// What an error of redis-rs's cluster connection means.
    fn keyless_error(&self, error: RedisError, pipelined: bool) -> AttemptError {
        if error.code().is_some() {
            let server = ServerError::try_from(error.clone()).ok();
            let rules = self.inner.config.reply_rules();
            let meaning = server
                .as_ref()
                .and_then(|s| Some((s, replies::meaning(s, Deployment::Cluster, rules)?)));
            return match meaning {
                Some((server, m)) => AttemptError::from_reply(server, m, pipelined),
                None => AttemptError {
                    error: Error::new(
                        ErrorKind::Server,
                        Outcome::Failed,
                        format!("server replied {}", error.code().unwrap_or_default()),
                    )
                    .with_source(error),
                    class: Classification::fail(),
                    reply: None,
                },
            };
        }
        if error.kind() == redis::ErrorKind::ClusterConnectionNotFound
            || error.is_connection_refusal()
        {
            return AttemptError {
                error: Error::new(
                    ErrorKind::Unavailable,
                    Outcome::Failed,
                    "no connection to a cluster node",
                )
                .with_source(error),
                class: Classification::retry(),
                reply: None,
            };
        }
        if error.is_io_error() || error.kind() == redis::ErrorKind::Parse {
            return connection_lost(
                "the connection to the node broke while the request was in flight",
                Some(error),
            );
        }
        AttemptError {
            error: Error::new(ErrorKind::Server, Outcome::Failed, "request failed")
                .with_source(error),
            class: Classification::fail(),
            reply: None,
        }
    }
}
