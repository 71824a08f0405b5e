//! The naive client: the retry loop people usually write by hand, kept as the anti-pattern the
//! resilient client is compared against under overload.
//!
//! # Behavior
//! - One shared redis-rs `MultiplexedConnection` (the raw baseline's, see [`RawClient`]), with
//!   redis-rs's response timeout (500 ms) per attempt.
//! - An attempt that fails with a connection error (I/O error, timeout, dropped connection) or
//!   is answered `THROTTLED` is sent again after 10 ms, then 20, 40, 80 ... ms, capped at 1 s
//!   ([`naive_delay`]): no jitter, no retry budget, no circuit breaker, no limit on attempts. A
//!   connection error first replaces the connection.
//! - It stops at the call's deadline (`--deadline-ms`, default [`NAIVE_DEADLINE`]): a retry whose
//!   delay would end past the deadline is not made (the last error is returned), and an attempt
//!   still in flight at the deadline fails with a timeout.
//! - Every other reply (success or another error) ends the call at once.
//! - Every attempt is counted (shared by all clones), so `bench` reports its amplification.
//!
//! Why it is an anti-pattern: under overload every refused call comes back, synchronised (no
//! jitter) and without limit (no budget), so the load the server sees grows with the overload
//! it is already failing to serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::time::Instant;

use super::{AppClient, ClientCounters, RawClient};
use crate::error::CliError;

/// The naive client's total time per call when `--deadline-ms` is not given.
pub(crate) const NAIVE_DEADLINE: Duration = Duration::from_secs(5);
/// The first retry delay; each next one doubles.
const FIRST_DELAY: Duration = Duration::from_millis(10);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The delay before retry number `retry` (0 for the first retry): 10 ms x 2^retry, capped at
/// 1 s, no jitter.
pub(crate) fn naive_delay(retry: u32) -> Duration {
    FIRST_DELAY
        .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .map_or(MAX_DELAY, |delay| delay.min(MAX_DELAY))
}

/// The naive retry loop over a shared multiplexed connection (see the module docs).
#[derive(Clone)]
pub(crate) struct NaiveClient {
    raw: RawClient,
    deadline: Duration,
    counts: Arc<NaiveCounts>,
}

#[derive(Default)]
struct NaiveCounts {
    attempts: AtomicU64,
    retries: AtomicU64,
}

impl NaiveClient {
    /// Connects to `url`; `deadline` bounds each call (default [`NAIVE_DEADLINE`]).
    ///
    /// # Errors
    /// As [`RawClient::connect`].
    pub(crate) async fn connect(
        url: &str,
        deadline: Option<Duration>,
    ) -> Result<NaiveClient, CliError> {
        Ok(NaiveClient {
            raw: RawClient::connect(url, None).await?,
            deadline: deadline.unwrap_or(NAIVE_DEADLINE),
            counts: Arc::new(NaiveCounts::default()),
        })
    }

    /// Sends with `attempt` until it succeeds, fails for another reason, or the deadline.
    async fn with_retries<T, F, Fut>(
        &mut self,
        mut attempt: F,
        throttled: fn(&T) -> bool,
    ) -> RedisResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.deadline;
        let mut retry = 0;
        loop {
            self.counts.attempts.fetch_add(1, Ordering::Relaxed);
            let conn = self.raw.conn().clone();
            let Ok(result) = tokio::time::timeout_at(deadline, attempt(conn)).await else {
                return Err(deadline_exceeded());
            };
            let connection_error = match &result {
                Ok(reply) if throttled(reply) => false,
                Ok(_) => return result,
                Err(err) if is_connection_error(err) => true,
                Err(_) => return result,
            };
            if connection_error
                && tokio::time::timeout_at(deadline, self.raw.reconnect())
                    .await
                    .is_err()
            {
                return result;
            }
            let delay = naive_delay(retry);
            if Instant::now() + delay >= deadline {
                return result;
            }
            tokio::time::sleep(delay).await;
            retry = retry.saturating_add(1);
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the usual loop calls a connection error: any I/O error (timeouts included) or an error
/// redis-rs says needs a new connection.
fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
}

fn is_throttled(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(err) if err.code() == "THROTTLED")
}

fn any_throttled(replies: &[Value]) -> bool {
    replies.iter().any(is_throttled)
}

fn deadline_exceeded() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "naive client: call deadline exceeded",
    ))
}

impl ConnectionLike for NaiveClient {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            self.with_retries(
                |mut conn| async move { conn.req_packed_command(cmd).await },
                is_throttled,
            )
            .await
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            self.with_retries(
                |mut conn| async move { conn.req_packed_commands(pipeline, offset, count).await },
                |replies| any_throttled(replies),
            )
            .await
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.raw.current().get_db()
    }
}

impl AppClient for NaiveClient {
    type Conn = NaiveClient;

    fn conn(&mut self) -> &mut Self::Conn {
        self
    }

    /// The loop already replaced a broken connection.
    async fn after_error(&mut self, _err: &RedisError) {}

    fn counters(&self) -> ClientCounters {
        ClientCounters {
            retries: self.counts.retries.load(Ordering::Relaxed),
            reconnects: self.raw.counters().reconnects,
            attempts: Some(self.counts.attempts.load(Ordering::Relaxed)),
            ..ClientCounters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use redis_lab::{FaultProxy, RedisServer};

    use super::*;
    use crate::workload::{CallOutcome, timed_call};

    #[test]
    fn delays_double_from_10_ms_up_to_1_s_without_jitter() {
        let delays: Vec<u128> = (0..10).map(|r| naive_delay(r).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(naive_delay(40), MAX_DELAY);
        assert_eq!(naive_delay(u32::MAX), MAX_DELAY);
    }

    /// Against a proxy that throttles everything the naive client retries until its deadline:
    /// 10+20+40+80+160+320 = 630 ms of sleeps fit in 1 s, the 7th retry (640 ms) does not.
    #[tokio::test]
    async fn retries_throttled_replies_until_the_deadline_and_counts_attempts() {
        let server = RedisServer::start().await.expect("lab server");
        let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
        let mut client = NaiveClient::connect(&proxy.url(), Some(Duration::from_secs(1)))
            .await
            .expect("connects");
        let before = proxy.stats();
        let ping = redis::cmd("PING");
        assert_eq!(timed_call(&mut client, &ping).await.0, CallOutcome::Ok);
        assert_eq!(client.counters().attempts, Some(1));

        proxy.set_throttle(Some(1));
        // Spend the bucket's single token.
        let _ = timed_call(&mut client, &ping).await;
        let attempts_before = client.counters().attempts.unwrap_or(0);
        let (outcome, latency) = timed_call(&mut client, &ping).await;
        assert_eq!(outcome, CallOutcome::Failed("THROTTLED".into()));
        let made = client.counters().attempts.unwrap_or(0) - attempts_before;
        // One token per second: none refills during the 630 ms of retries.
        assert_eq!(made, 7, "{outcome:?} after {latency:?}");
        assert!(latency < Duration::from_secs(1), "{latency:?}");
        let seen = proxy.stats();
        assert_eq!(
            (seen.commands_forwarded + seen.commands_throttled)
                - (before.commands_forwarded + before.commands_throttled),
            client.counters().attempts.unwrap_or(0),
            "every attempt reached the proxy"
        );
    }
}
