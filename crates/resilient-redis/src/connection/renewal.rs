//! Credentials in a pool: live connections send `AUTH` again before their credentials expire,
//! and a connection whose credentials the server rejected is replaced.
//!
//! # Behavior
//! - The pool's background task renews at the earliest [`Credentials::renew_at`] of the
//!   credentials its connections were opened with (80 % of their lifetime): it asks the provider
//!   once and sends `AUTH` on every live connection. `AUTH` is one more request on the
//!   multiplexed connection, queued between the callers' requests: nothing waits for it and
//!   nothing is reconnected. Idle dedicated connections (blocking commands) are dropped instead,
//!   and busy ones are not reused after their command.
//! - A connection whose `AUTH` is rejected is retried once with fresh credentials (the provider
//!   hears [`CredentialsProvider::rejected`](crate::credentials::CredentialsProvider::rejected));
//!   rejected again, or broken, it is replaced by the background reconnection.
//! - A provider that fails is asked again [`RETRY`] later; the connections keep their
//!   credentials meanwhile (they are still valid until they expire).

use std::time::Duration;

use redis::{RedisError, RedisResult, Value, aio::MultiplexedConnection};
use tokio::time::Instant;

use super::{Lease, LeaseId, Pool, is_rejection};
use crate::credentials::Credentials;

/// Pause before asking a provider that failed again.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// Resolves at `at`; never for `None`.
pub(super) async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Pool {
    /// When the live connections must `AUTH` again; `None` if their credentials do not expire.
    pub(super) fn renewal_due(&self) -> Option<Instant> {
        self.endpoint.connector().renewal_due()
    }

    /// Re-authenticates every live connection with fresh credentials from the provider.
    pub(super) async fn renew_credentials(&self) {
        let connector = self.endpoint.connector();
        let credentials = match connector.renew(false).await {
            None => return,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot renew the credentials; trying again in 1 s");
                connector.retry_renewal_at(Instant::now() + RETRY);
                return;
            }
        };
        self.blocking_idle.lock().expect("idle lock").clear();
        let mut renewed = 0u32;
        for lease in self.live_leases() {
            match self.authenticate(lease.conn.clone(), &credentials).await {
                Ok(()) => renewed += 1,
                Err(e) if is_rejection(&e) => {
                    let retried = match connector.renew(true).await {
                        Some(Ok(fresh)) => self.authenticate(lease.conn.clone(), &fresh).await,
                        Some(Err(e)) => Err(e),
                        None => Err(e),
                    };
                    match retried {
                        Ok(()) => renewed += 1,
                        Err(e) => self.renewal_failed(lease.id(), &e),
                    }
                }
                Err(e) => self.renewal_failed(lease.id(), &e),
            }
        }
        metrics::counter!(crate::observe::REAUTHENTICATIONS).increment(renewed.into());
        tracing::debug!(renewed, "connections re-authenticated");
    }

    /// `AUTH` on `conn`, within the response timeout.
    async fn authenticate(
        &self,
        mut conn: MultiplexedConnection,
        credentials: &Credentials,
    ) -> RedisResult<()> {
        let auth = self.endpoint.connector().auth_command(credentials);
        match tokio::time::timeout(self.response_timeout, conn.send_packed_command(&auth)).await {
            Ok(Ok(Value::ServerError(e))) => Err(e.into()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no reply to AUTH within the response timeout",
            )
            .into()),
        }
    }

    /// A connection could not re-authenticate: a late reply is left to the call path's stall
    /// diagnosis (the credentials are still valid for a while); otherwise it is replaced.
    fn renewal_failed(&self, lease: LeaseId, e: &RedisError) {
        if e.is_timeout() {
            tracing::debug!(slot = lease.slot, error = %e, "re-authentication got no reply");
            return;
        }
        tracing::info!(slot = lease.slot, error = %e, "re-authentication failed: reconnecting");
        self.mark_broken(lease, "re-authentication failed");
    }

    /// A reply said the connection of `lease` is not (or no longer) authenticated (`NOAUTH`,
    /// `WRONGPASS`): the provider must not give the same credentials again, and the connection
    /// is replaced.
    pub(crate) fn on_credentials_rejected(&self, lease: LeaseId) {
        self.endpoint.connector().rejected();
        self.mark_broken(lease, "the server rejected the connection's credentials");
    }

    /// A (re)connection failed with `e`: remembered for waiting callers, who fail as
    /// [`ErrorKind::Auth`](crate::ErrorKind::Auth) if the server rejected the credentials.
    pub(super) fn note_connect_failure(&self, e: &RedisError) {
        self.note_down(&e.to_string());
        self.down.write().expect("down lock").auth_rejected = is_rejection(e);
    }

    /// Every live connection.
    fn live_leases(&self) -> Vec<Lease> {
        (0..self.slots.len())
            .filter_map(|i| {
                let live = self.slots[i].live.read().expect("slot lock");
                live.as_ref().map(|l| Lease {
                    conn: l.conn.clone(),
                    slot: i,
                    generation: l.generation,
                })
            })
            .collect()
    }
}
