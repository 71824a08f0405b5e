//! The request path: one call, its first attempt in its own state machine, then the retry
//! policy.

use std::{
    pin::Pin,
    sync::{Mutex, PoisonError, atomic::Ordering},
    time::Duration,
};

use redis::Value;
use resilience::{Attempt, Call, Classification, Idempotency};
use tokio::time::Instant;

use super::{
    Handle, Local,
    admit::settle_permit,
    atomic, durable,
    timer::{ReplyOrLimit, arm},
};
use crate::{
    Durability,
    commands::CommandSafety,
    connection::{Lease, LeaseId, Pool},
    error::{Error, ErrorKind, Outcome},
    observe,
    replies::{self, TopologyHint},
    request::{Reply, Request},
    retry::{
        AttemptError, connection_lost, cooperate, deadline_in_flight, give_up_error,
        idempotency_of, record_failure,
    },
    routing::{Node, Router},
};

impl Handle {
    /// This handle's total deadline per call.
    pub(super) fn deadline(&self) -> Duration {
        self.policy
            .config()
            .deadline
            .unwrap_or(self.inner.config.deadline)
    }

    /// Runs one call and hands its outcome to `finish` (which converts it for the caller:
    /// taking it here spares a wrapping future that would move this one when done).
    pub(super) async fn execute<T>(
        &self,
        request: Request<'_>,
        local: &mut Local,
        finish: impl FnOnce(Result<Reply, Error>) -> T + Send,
    ) -> T {
        if observe::call::wanted(self.inner.config.span_level) {
            return self.boxed_traced(request, local, finish).await;
        }
        let Local { cached, timer } = local;
        let stats = &self.inner.stats;
        stats.calls.add(1);
        let started = Instant::now();
        let safety = match request.safety() {
            Ok(safety) => safety,
            Err(why) => {
                cooperate().await;
                return finish(Err(Error::new(ErrorKind::Refused, Outcome::Failed, why)));
            }
        };
        let result = 'call: {
            let single = self.inner.router.single();
            if let Some(node) = single
                && let Some(error) = node.pool.failing_fast()
                && !(safety == CommandSafety::ReadOnly && node.pool.replicas_serve_reads())
            {
                // The server has been unreachable for a while: fail at once (one atomic load
                // while it is up), without the retry policy's machinery.
                break 'call Err(error);
            }
            if safety == CommandSafety::Blocking {
                // Boxed: the rare path keeps its (large) connect future out of every call's.
                break 'call self.boxed_blocking(request).await;
            }
            // The first attempt runs here, in this one state machine; the retry policy takes
            // over (boxed) only after a failure. Written out rather than as nested helpers: at
            // a few µs per call, each nested future's dispatch and copy shows. (Values kept
            // across an await are kept small: they make the call's state.)
            let idempotency = idempotency_of(self.call.idempotent, safety);
            let retry_safe = idempotency == Idempotency::Idempotent;
            // [sentinel] `read_only` routes the call to a replica with ReadFrom.
            let read_only = safety == CommandSafety::ReadOnly;
            let call = match self.policy.start(started) {
                Ok(call) => call,
                Err(e) => break 'call Err(give_up_error(e)),
            };
            let deadline = call.attempt().deadline;
            // The node a single command goes to when it is known at once: the server (or the
            // Sentinel master), or in a cluster the live master of the key's slot (or for a
            // read, the replica `read_from` picks).
            let cluster_route;
            let (node, to_replica) = match (&self.inner.router, request) {
                (Router::Single(node), _) => (Some(&**node), false),
                (Router::Cluster(cluster), Request::Cmd(cmd)) => {
                    cluster_route = cluster.ready_route(cmd, read_only);
                    match &cluster_route {
                        Some(route) => (Some(&*route.node), route.replica),
                        None => (None, false),
                    }
                }
                (Router::Cluster(_), Request::Pipeline { .. }) => (None, false),
            };
            // A durable write takes the general attempt (it is sent with its `WAIT`).
            let durable = !read_only && self.call.durability != Durability::Fast;
            let first = if let Request::Cmd(cmd) = request
                && !durable
                && let Some(node) = node
                && let Some(lease) = self.lease_in(cached, read_only, &node.pool)
            {
                // A single command and a connection at hand: send it, if the node admits it.
                match self.admit_lease(node, lease, started, to_replica) {
                    Err(e) => Err((e, None)),
                    Ok(permit) => {
                        self.note_attempt(1, || {
                            let replica = to_replica || !node.pool.is_master_lease(lease);
                            (node.serving_addr(lease.slot), replica)
                        });
                        let id = lease.id();
                        let fut = lease.conn.send_packed_command(cmd);
                        tokio::pin!(fut);
                        let (limit, cut) = self.reply_limit(deadline, started);
                        let waiting = ReplyOrLimit {
                            reply: fut.as_mut(),
                            timer: arm(timer, limit, started),
                            limit,
                        };
                        let outcome = match waiting.await {
                            Some(result) => Ok(result.map(Reply::One)),
                            None if cut => Err(deadline_in_flight()),
                            None => {
                                Box::pin(self.wait_late_reply(fut, id, deadline, node, request))
                                    .await
                                    .map(|late| late.map(Reply::One))
                            }
                        };
                        let result =
                            outcome.and_then(|o| self.settle(o, id, retry_safe, &node.pool));
                        settle_permit(permit, &result);
                        result.map_err(|e| (e, Some(id)))
                    }
                }
            } else {
                // A pipeline, or no connection at hand: the general attempt.
                let slot = Mutex::new(cached.take());
                let attempt = call.attempt();
                let result = self
                    .boxed_attempt(request, attempt, retry_safe, read_only, &slot)
                    .await;
                *cached = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
                result.map_err(|e| (e, None))
            };
            match first {
                Ok(reply) => {
                    call.succeeded();
                    Ok(reply)
                }
                Err((error, sent_on)) => {
                    self.retry_call(
                        call,
                        request,
                        idempotency,
                        read_only,
                        cached,
                        error,
                        sent_on.zip(node),
                    )
                    .await
                }
            }
        };
        self.inner
            .operations
            .record(request, &result, started.elapsed().as_secs_f64());
        let result = result.map_err(|e| e.for_command(safety));
        if let Err(e) = &result {
            record_failure(e, &stats.ambiguous, &stats.failed);
            cooperate().await;
        }
        finish(result)
    }

    // The rare paths' futures (these two and `retry_call`'s) are built and boxed out of line:
    // built inline, each would be laid out in `execute`'s own stack frame before moving to the
    // heap, and every call's poll would pay for a frame the size of the largest (measured:
    // 7.7 KB, two stack pages).

    /// [`Handle::execute`] in a span (see [`crate::observe`]), boxed out of line; the call
    /// inside runs untraced (the span's task-local is set) and notes into the span.
    #[inline(never)]
    fn boxed_traced<'a, T: 'a>(
        &'a self,
        request: Request<'a>,
        local: &'a mut Local,
        finish: impl FnOnce(Result<Reply, Error>) -> T + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = T> + Send + 'a>> {
        Box::pin(async move {
            let inner = &self.inner;
            let call = self.execute(request, local, std::convert::identity);
            let config = &inner.config;
            let level = config.span_level.unwrap_or(tracing::Level::DEBUG);
            let result =
                observe::call::traced(request, level, inner.db, config.trace_keys, call).await;
            finish(result)
        })
    }

    /// Counts attempt number `number` sent (`to`: its server and whether it is a replica, for
    /// the call's span).
    #[inline]
    pub(super) fn note_attempt(
        &self,
        number: u32,
        to: impl FnOnce() -> (Option<std::sync::Arc<str>>, bool),
    ) {
        let stats = &self.inner.stats;
        stats.attempts.add(1);
        if number > 1 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        observe::call::note_attempt(to, 1);
    }

    /// [`Handle::execute_blocking`], boxed out of line.
    #[inline(never)]
    fn boxed_blocking<'a>(
        &'a self,
        request: Request<'a>,
    ) -> Pin<Box<impl Future<Output = Result<Reply, Error>> + 'a>> {
        Box::pin(self.execute_blocking(request))
    }

    /// [`Handle::attempt`], boxed out of line.
    #[inline(never)]
    fn boxed_attempt<'a>(
        &'a self,
        request: Request<'a>,
        attempt: Attempt,
        retry_safe: bool,
        read_only: bool,
        cached: &'a Mutex<Option<Lease>>,
    ) -> Pin<Box<impl Future<Output = Result<Reply, AttemptError>> + 'a>> {
        Box::pin(self.attempt(request, attempt, retry_safe, read_only, cached))
    }

    /// The handle's cached connection if it is still the pool's live one for this call, else
    /// one from the pool without waiting; `None` if there is none.
    #[inline]
    fn ready_lease(
        &self,
        mut cached: Option<Lease>,
        read_only: bool,
        pool: &Pool,
    ) -> Option<Lease> {
        self.lease_in(&mut cached, read_only, pool);
        cached
    }

    /// [`Handle::ready_lease`] kept in `cached`, where the call borrows it. The common case
    /// moves nothing: the cached lease is still the pool's live connection, and the call is not
    /// a read that the pool sends to a replica.
    #[inline]
    fn lease_in<'c>(
        &self,
        cached: &'c mut Option<Lease>,
        read_only: bool,
        pool: &Pool,
    ) -> Option<&'c mut Lease> {
        // A read may have left a replica connection in the cache: never a write's.
        let usable = |l: &Lease| {
            pool.is_current(l)
                && !(read_only && pool.routes_reads_elsewhere())
                && (read_only || pool.is_master_lease(l))
        };
        if !cached.as_ref().is_some_and(usable) {
            *cached = pool.try_acquire_for(read_only);
        }
        cached.as_mut()
    }

    /// The policy's retries after the first attempt failed with `error`. `sent_on`: the
    /// connection and node the fast path sent it on, whose failure is not handled yet. Built and
    /// boxed out of line (see [`Handle::boxed_attempt`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn retry_call<'a>(
        &'a self,
        call: Call<'a>,
        request: Request<'a>,
        idempotency: Idempotency,
        read_only: bool,
        cached: &'a mut Option<Lease>,
        mut error: AttemptError,
        sent_on: Option<(LeaseId, &'a Node)>,
    ) -> Pin<Box<impl Future<Output = Result<Reply, Error>> + 'a>> {
        Box::pin(async move {
            let retry_safe = idempotency == Idempotency::Idempotent;
            // The handle's cached connection, lent to the attempts and given back after.
            let slot = Mutex::new(cached.take());
            if let Some((lease, node)) = sent_on {
                self.after_failure(&error, node, lease, call.attempt().deadline)
                    .await;
                if let Router::Cluster(cluster) = &self.inner.router {
                    // A cluster's first attempt went straight to the slot's master: what the reply
                    // says of the topology (a redirect, a reconfiguring cluster) is part of the
                    // same attempt, not a retry.
                    match self
                        .cluster_fast_failed(
                            cluster,
                            node,
                            request,
                            &error,
                            call.attempt(),
                            (retry_safe, read_only),
                            &slot,
                        )
                        .await
                    {
                        None => {}
                        Some(Ok(reply)) => {
                            *cached = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
                            call.succeeded();
                            return Ok(reply);
                        }
                        Some(Err(e)) => error = e,
                    }
                }
            }
            let result = call
                .retry(
                    idempotency,
                    AttemptError::verdict,
                    |attempt: Attempt| self.attempt(request, attempt, retry_safe, read_only, &slot),
                    error,
                )
                .await;
            *cached = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            result.map_err(give_up_error)
        })
    }

    pub(super) async fn attempt(
        &self,
        request: Request<'_>,
        attempt: Attempt,
        retry_safe: bool,
        read_only: bool,
        cached: &Mutex<Option<Lease>>,
    ) -> Result<Reply, AttemptError> {
        match &self.inner.router {
            Router::Single(node) => {
                self.attempt_on(node, request, attempt, retry_safe, read_only, cached)
                    .await
            }
            Router::Cluster(cluster) => {
                Box::pin(self.cluster_attempt(
                    cluster,
                    request,
                    attempt,
                    (retry_safe, read_only),
                    cached,
                    false,
                ))
                .await
            }
        }
    }

    /// An attempt on `node`'s pool.
    async fn attempt_on(
        &self,
        node: &Node,
        request: Request<'_>,
        attempt: Attempt,
        retry_safe: bool,
        read_only: bool,
        cached: &Mutex<Option<Lease>>,
    ) -> Result<Reply, AttemptError> {
        let pool = &node.pool;
        let reusable = cached.lock().unwrap_or_else(PoisonError::into_inner).take();
        // The policy's clock reading for this attempt, unless it waited for a connection.
        let mut started = attempt.started;
        let mut lease = match self.ready_lease(reusable, read_only, pool) {
            Some(lease) => lease,
            // The server has been unreachable for a while: fail at once, without waiting.
            None if let Some(error) = pool.failing_fast() => {
                return Err(AttemptError {
                    error,
                    class: Classification::fail().server_fault(false),
                    reply: None,
                });
            }
            // No live connection: wait for the reconnection (boxed, off the fast path).
            None => {
                started = None;
                Box::pin(pool.acquire_for(read_only, attempt.deadline))
                    .await
                    .map_err(|error| AttemptError {
                        error,
                        // Not sent: nothing to undo, nothing gained by retrying before the
                        // deadline.
                        class: Classification::fail().server_fault(false),
                        reply: None,
                    })?
            }
        };
        // Admitted (throttle, breaker) and counted once there is a connection to send on:
        // waiting is not an attempt.
        let permit = self.admit_lease(node, &lease, started.unwrap_or_else(Instant::now), false)?;
        self.note_attempt(attempt.number, || {
            (node.serving_addr(lease.slot), !pool.is_master_lease(&lease))
        });
        let lease_id = lease.id();
        let result = self
            .send_on(
                node,
                &mut lease,
                request,
                retry_safe,
                attempt.deadline,
                started,
            )
            .await;
        settle_permit(permit, &result);
        match &result {
            Ok(_) => *cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease),
            Err(e) => {
                self.after_failure(e, node, lease_id, attempt.deadline)
                    .await
            }
        }
        result
    }

    /// What a failed attempt on connection `lease` teaches: a demoted node, an overloaded
    /// server. Returns when the attempt may be retried.
    pub(super) async fn after_failure(
        &self,
        e: &AttemptError,
        node: &Node,
        lease: LeaseId,
        deadline: Option<Instant>,
    ) {
        let Some(reply) = e.reply else { return };
        // [sentinel] A READONLY reply: the node was demoted. Replace this connection (the next
        // one goes to the master, checked with ROLE) and rediscover; the policy retries.
        if reply.topology == TopologyHint::Demoted {
            node.pool.on_readonly(lease);
        }
        if reply.credentials_rejected {
            node.pool.on_credentials_rejected(lease);
        }
        if reply.overload {
            self.refused_by(node);
        }
        if reply.wait_not_busy {
            // Waiting is not retrying: hold the retry until the server can take it.
            let gate = Box::pin(node.pool.wait_until_not_busy());
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, gate).await;
                }
                None => gate.await,
            }
        }
    }

    /// Sends on a leased connection, diagnosing late replies instead of re-sending; a write
    /// under [`Durability::Replicated`] waits for its replicas (see [`Handle::send_durable`]).
    pub(super) async fn send_on(
        &self,
        node: &Node,
        lease: &mut Lease,
        request: Request<'_>,
        retry_safe: bool,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Result<Reply, AttemptError> {
        if let Durability::Replicated { replicas, timeout } = self.call.durability
            && request.safety().is_ok_and(|s| s != CommandSafety::ReadOnly)
        {
            let wait = durable::WaitFor { replicas, timeout };
            return Box::pin(
                self.send_durable(node, lease, request, wait, retry_safe, deadline, started),
            )
            .await;
        }
        let id = lease.id();
        let outcome = self
            .exchange(node, lease, request, deadline, started)
            .await?;
        self.settle(outcome, id, retry_safe, &node.pool)
    }

    /// Sends `request` on a leased connection and waits for its reply, diagnosing a late reply
    /// instead of re-sending.
    pub(super) async fn exchange(
        &self,
        node: &Node,
        lease: &mut Lease,
        request: Request<'_>,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Result<redis::RedisResult<Reply>, AttemptError> {
        let id = lease.id();
        let conn = &mut lease.conn;
        let fut = async move {
            // `Ok(Err(_))`: an atomic pipeline's refused `MULTI` whose writes ran.
            match request {
                Request::Cmd(cmd) => conn
                    .send_packed_command(cmd)
                    .await
                    .map(|v| Ok(Reply::One(v))),
                // Boxed (as redis-rs's own `ConnectionLike` does): the two futures would
                // otherwise size every call's state by the larger.
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                } if atomic::is_transaction(pipeline, offset) => {
                    match Box::pin(atomic::send(conn, pipeline, offset, count)).await {
                        Ok(replies) => replies.map(|v| Ok(Reply::Many(v))),
                        Err(applied) => Ok(Err(applied)),
                    }
                }
                Request::Pipeline {
                    pipeline,
                    offset,
                    count,
                } => Box::pin(conn.send_packed_commands(pipeline, offset, count))
                    .await
                    .map(|v| Ok(Reply::Many(v))),
            }
        };
        tokio::pin!(fut);
        // The attempt's start when known (a connection was at hand: it is a few µs old).
        let (limit, cut) = self.reply_limit(deadline, started.unwrap_or_else(Instant::now));
        let outcome = match tokio::time::timeout_at(limit, &mut fut).await {
            Ok(result) => result,
            Err(_) if cut => return Err(deadline_in_flight()),
            Err(_) => Box::pin(self.wait_late_reply(fut, id, deadline, node, request)).await?,
        };
        match outcome {
            Ok(Ok(reply)) => Ok(Ok(reply)),
            Ok(Err(applied)) => Err(applied),
            Err(e) => Ok(Err(e)),
        }
    }

    /// When a request sent at `sent` stops waiting for its reply: the response window's end or
    /// the deadline, whichever is first (`true`: the deadline). This is the only timer of an
    /// attempt that gets its reply in time.
    #[inline]
    fn reply_limit(&self, deadline: Option<Instant>, sent: Instant) -> (Instant, bool) {
        let window_end = sent + self.inner.config.response_timeout;
        match deadline {
            Some(d) if d < window_end => (d, true),
            _ => (window_end, false),
        }
    }

    /// An attempt's outcome from redis-rs's: a broken connection is marked and its request is
    /// ambiguous; a retryable error reply becomes an attempt error.
    pub(super) fn settle(
        &self,
        outcome: redis::RedisResult<Reply>,
        lease: LeaseId,
        retry_safe: bool,
        pool: &Pool,
    ) -> Result<Reply, AttemptError> {
        match outcome {
            Ok(reply) => {
                pool.touch(lease.slot);
                self.check_reply(reply, retry_safe)
            }
            Err(e) => {
                if e.is_io_error() || e.kind() == redis::ErrorKind::Parse {
                    pool.mark_broken(lease, &e.to_string());
                    Err(connection_lost(
                        "the connection broke while the request was in flight",
                        Some(e),
                    ))
                } else {
                    // A client-side error from redis-rs (never reached the wire).
                    Err(AttemptError {
                        error: Error::new(ErrorKind::Server, Outcome::Failed, "request failed")
                            .with_source(e),
                        class: Classification::fail().server_fault(false),
                        reply: None,
                    })
                }
            }
        }
    }

    /// Turns retryable error replies into attempt errors (see [the reply table](crate::replies));
    /// every other reply goes back as is.
    pub(super) fn check_reply(
        &self,
        reply: Reply,
        retry_safe: bool,
    ) -> Result<Reply, AttemptError> {
        let inner = &self.inner;
        match &reply {
            Reply::One(Value::ServerError(err)) => {
                match replies::meaning(err, inner.deployment, inner.config.reply_rules()) {
                    Some(m) => Err(AttemptError::from_reply(err, m, false)),
                    None => Ok(reply),
                }
            }
            Reply::Many(values) if retry_safe => {
                // A pipeline that is safe to repeat is sent again whole when one of its commands
                // got a retryable reply (the others may have run: that is why it must be safe).
                for v in values {
                    if let Value::ServerError(err) = v
                        && let Some(m) =
                            replies::meaning(err, inner.deployment, inner.config.reply_rules())
                    {
                        return Err(AttemptError::from_reply(err, m, true));
                    }
                }
                Ok(reply)
            }
            _ => Ok(reply),
        }
    }
}
