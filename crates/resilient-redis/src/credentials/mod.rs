//! Credentials that change: a provider the client asks before every connection and every
//! re-authentication, instead of the user and password written once in the URL.
//!
//! Managed services hand out short-lived secrets: ElastiCache and MemoryDB IAM tokens (15
//! minutes), Azure Cache for Redis Entra ID tokens (about an hour), or a password that a
//! Kubernetes or Vault agent rotates in a mounted file. [`ClientConfig::credentials`](crate::ClientConfig::credentials) takes a
//! [`CredentialsProvider`]; two are built in:
//! - [`PasswordFile`]: the password is read from a file on every connection (user name from the
//!   URL, `redis://app@host:6379`); `RESILIENT_REDIS_PASSWORD_FILE` and the CLI's
//!   `--password-file` set it.
//! - [`TokenProvider`]: a closure that returns a token and when it expires; the token is kept
//!   until 80 % of its lifetime, then a new one is asked for.
//!
//! Without a provider (the default) the URL's user and password are used, as redis-rs does, at
//! no cost.
//!
//! # Behavior
//! - **Every connection** the client opens (the pool's, a blocking command's dedicated one, a
//!   subscription's, a stall probe's, a Sentinel master's or replica's, a cluster node's) asks
//!   the provider right before connecting and authenticates with what it returns (redis-rs's
//!   handshake: `AUTH` or `HELLO ... AUTH`).
//! - **Rejected credentials** (`WRONGPASS`, `NOAUTH`, `invalid password`) on connect: the
//!   provider hears [`CredentialsProvider::rejected`] and is asked once more, and the connection
//!   is tried once more with its answer. Rejected again, the connection fails with
//!   [`ErrorKind::Auth`](crate::ErrorKind::Auth): [`Client::connect`](crate::Client::connect)
//!   returns it at once; after a rotation, calls wait for the background reconnection (which
//!   asks the provider again at each step of `reconnect_backoff`, so a file rewritten a moment
//!   after the server changed is picked up) and fail with `Auth`, not applied, when their deadline
//!   comes. The circuit breaker never counts it (the server is not failing).
//! - **Expiring credentials** ([`Credentials::expires_at`]): live pooled connections send
//!   `AUTH` again with fresh credentials at 80 % of the old ones' lifetime, from the pool's
//!   background task, between the callers' requests (`AUTH` is one more request on the
//!   multiplexed connection): no call fails, no connection is dropped for it. A connection that
//!   cannot `AUTH` in RESP2 is replaced instead: a subscription is re-established on a fresh
//!   connection at that point (a gap, counted in
//!   [`ResilientPubSub::resubscriptions`](crate::ResilientPubSub::resubscriptions)), and a
//!   dedicated connection of a blocking command is not reused after it.
//! - **Secrets are never shown**: the password is a [`SecretString`] (its `Debug` prints
//!   `[REDACTED]`), errors name the provider ([`CredentialsProvider::describe`]: `file /path`)
//!   and never what it returned.
//!
//! # Why a trait of our own
//! redis-rs 1.8 has a `StreamingCredentialsProvider` (feature `token-based-authentication`),
//! but only its multiplexed connections use it: not pub/sub, not the connections this client
//! builds from a template `ConnectionInfo` (Sentinel masters and replicas, cluster nodes), and
//! its per-connection re-authentication task stops, silently, at the first failure. A provider
//! the client *asks* (pull) fits a client that already opens every connection itself, and lets
//! one schedule per pool re-authenticate every connection at once.
//!
//! # Not covered
//! redis-rs's own cluster connection, which this client uses only for keyless calls in a
//! cluster (`PING`, `FLUSHALL`, ...), takes the URL's credentials when the client is built.

mod file;
mod token;

use std::{fmt, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use secrecy::ExposeSecret;
pub use secrecy::SecretString;
use tokio::time::Instant;

pub use file::PasswordFile;
pub use token::TokenProvider;

/// The error a provider returns: anything that says why, without the secret.
pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// Where the client gets its credentials from: asked before every connection and every
/// re-authentication. See the [module docs](self) for when, and for what the client does with
/// the answer.
///
/// # Example
/// A provider that fetches a token from a service of your own:
/// ```no_run
/// use futures::future::BoxFuture;
/// use resilient_redis::credentials::{Credentials, CredentialsProvider, ProviderError};
/// use std::time::Duration;
///
/// struct Vault;
///
/// impl CredentialsProvider for Vault {
///     fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ProviderError>> {
///         Box::pin(async {
///             let token = String::from("..."); // ask the service here
///             Ok(Credentials::user_password("app", token).expires_in(Duration::from_secs(900)))
///         })
///     }
///
///     fn describe(&self) -> String {
///         "vault".to_owned()
///     }
/// }
/// ```
pub trait CredentialsProvider: Send + Sync + 'static {
    /// The credentials to use now. Called before every connection and re-authentication, so
    /// cache what is costly to get (see [`TokenProvider`], which does).
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ProviderError>>;

    /// The server rejected the credentials [`credentials`](Self::credentials) returned last:
    /// drop any cached ones, the next call must fetch fresh ones. The default does nothing.
    fn rejected(&self) {}

    /// What the provider is, for `health` and error messages (never the secret).
    /// The default is `provider`.
    fn describe(&self) -> String {
        "provider".to_owned()
    }
}

/// A user name and a password (or token), and when they stop working.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credentials {
    /// The ACL user; `None`: the URL's user (`redis://app@host`), or the `default` user if the
    /// URL names none.
    pub username: Option<String>,
    /// The password or token. Its `Debug` shows `[REDACTED]`.
    pub password: SecretString,
    /// When they stop working, if they do; the client authenticates again with fresh ones
    /// before then (at 80 % of the time from [`Credentials::issued_at`]).
    pub expires_at: Option<Instant>,
    /// When they were made (by the constructors: the time of the call).
    pub issued_at: Instant,
}

/// What is left of a credential's lifetime when the client authenticates again: 20 %.
const RENEW_AT: f64 = 0.8;

impl Credentials {
    /// A password for the URL's user (or the `default` user), that does not expire.
    pub fn password(password: impl Into<SecretString>) -> Credentials {
        Credentials {
            username: None,
            password: password.into(),
            expires_at: None,
            issued_at: Instant::now(),
        }
    }

    /// A user and a password (or token), that do not expire.
    pub fn user_password(
        username: impl Into<String>,
        password: impl Into<SecretString>,
    ) -> Credentials {
        Credentials {
            username: Some(username.into()),
            ..Credentials::password(password)
        }
    }

    /// The same credentials, expiring at `at`.
    pub fn expires_at(mut self, at: Instant) -> Credentials {
        self.expires_at = Some(at);
        self
    }

    /// The same credentials, expiring `lifetime` after [`Credentials::issued_at`].
    pub fn expires_in(mut self, lifetime: Duration) -> Credentials {
        self.expires_at = Some(self.issued_at + lifetime);
        self
    }

    /// When the client authenticates again with fresh credentials: at 80 % of the lifetime
    /// (from [`Credentials::issued_at`] to [`Credentials::expires_at`]); `None` if they do not
    /// expire.
    pub fn renew_at(&self) -> Option<Instant> {
        let expires = self.expires_at?;
        let lifetime = expires.saturating_duration_since(self.issued_at);
        Some(self.issued_at + lifetime.mul_f64(RENEW_AT))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The credentials of a connection: the URL's settings with `credentials` in place of the URL's
/// user and password (the URL's user stays when `credentials` names none).
pub(crate) fn apply(
    info: &redis::ConnectionInfo,
    credentials: &Credentials,
) -> redis::ConnectionInfo {
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &credentials.username {
        settings = settings.set_username(user);
    }
    settings = settings.set_password(credentials.password.expose_secret());
    info.clone().set_redis_settings(settings)
}

/// The `AUTH` command for `credentials` on a connection made with `info`'s settings.
pub(crate) fn auth_command(info: &redis::ConnectionInfo, credentials: &Credentials) -> redis::Cmd {
    let mut cmd = redis::cmd("AUTH");
    let user = credentials
        .username
        .as_deref()
        .or(info.redis_settings().username());
    if let Some(user) = user {
        cmd.arg(user);
    }
    cmd.arg(credentials.password.expose_secret());
    cmd
}

/// How [`Client::health`](crate::Client::health) names a configuration's credentials.
pub(crate) fn describe(provider: Option<&Arc<dyn CredentialsProvider>>) -> String {
    match provider {
        Some(p) => p.describe(),
        None => "static (the URL's)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_secret() {
        let c = Credentials::user_password("app", "s3cret").expires_in(Duration::from_secs(60));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("app") && shown.contains("REDACTED"),
            "{shown}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_are_renewed_at_four_fifths_of_their_lifetime() {
        let c = Credentials::password("x").expires_in(Duration::from_secs(10));
        assert_eq!(c.renew_at(), Some(c.issued_at + Duration::from_secs(8)));
        assert_eq!(Credentials::password("x").renew_at(), None);
        let past = Credentials::password("x").expires_at(Instant::now() - Duration::from_secs(1));
        assert_eq!(
            past.renew_at(),
            Some(past.issued_at),
            "already expired: renew now"
        );
    }

    #[test]
    fn applied_credentials_keep_the_urls_user_unless_they_name_one() {
        use redis::IntoConnectionInfo;
        let info = "redis://app:old@127.0.0.1:6379/2"
            .into_connection_info()
            .unwrap();
        let applied = apply(&info, &Credentials::password("new"));
        let s = applied.redis_settings();
        assert_eq!(
            (s.username(), s.password(), s.db()),
            (Some("app"), Some("new"), 2)
        );
        let applied = apply(&info, &Credentials::user_password("other", "new"));
        assert_eq!(applied.redis_settings().username(), Some("other"));
        let auth = auth_command(&info, &Credentials::password("new"));
        assert_eq!(auth.args_iter().count(), 3, "AUTH app new");
    }
}
