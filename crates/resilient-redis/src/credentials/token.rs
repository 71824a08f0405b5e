//! [`TokenProvider`]: short-lived tokens from a closure, kept until they are due for renewal.

use std::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use futures::future::BoxFuture;
use tokio::{sync::Mutex, time::Instant};

use super::{Credentials, CredentialsProvider, ProviderError};

type Fetch = Box<dyn Fn() -> BoxFuture<'static, Result<Credentials, ProviderError>> + Send + Sync>;

/// Tokens from a closure (an IAM signer, an Entra ID or Vault client): each is kept until 80 %
/// of its lifetime ([`Credentials::renew_at`]), then the closure is called for a new one, which
/// live connections send with `AUTH` before the old one expires.
///
/// # Behavior
/// - One call of the closure at a time: connections opened together share one token.
/// - A token the server rejected is not used again ([`CredentialsProvider::rejected`]): the
///   next connection calls the closure.
/// - A token without [`Credentials::expires_at`] is kept until the server rejects it.
///
/// # Example
/// ```no_run
/// use std::{sync::Arc, time::Duration};
/// use resilient_redis::{ClientConfig, credentials::{Credentials, TokenProvider}};
/// # async fn sign_iam_token() -> Result<String, std::io::Error> { Ok(String::new()) }
/// # fn run() -> Result<(), resilient_redis::Error> {
/// let tokens = TokenProvider::new(|| async {
///     let token = sign_iam_token().await?; // e.g. a SigV4-presigned ElastiCache auth token
///     let credentials = Credentials::user_password("app", token);
///     Ok::<_, std::io::Error>(credentials.expires_in(Duration::from_secs(15 * 60)))
/// });
/// let config = ClientConfig {
///     credentials: Some(Arc::new(tokens)),
///     ..ClientConfig::from_url("rediss://my-cache.xxxxxx.cache.amazonaws.com:6379")?
/// };
/// # let _ = config; Ok(()) }
/// ```
pub struct TokenProvider {
    fetch: Fetch,
    cached: Mutex<Option<Credentials>>,
    stale: AtomicBool,
    fetched: AtomicU64,
}

impl TokenProvider {
    /// Tokens from `fetch`, which returns the credentials and, through
    /// [`Credentials::expires_in`] or [`Credentials::expires_at`], when they expire. Its error
    /// fails the connection with [`ErrorKind::Auth`](crate::ErrorKind::Auth), its message
    /// shown: keep secrets out of it.
    pub fn new<F, Fut, E>(fetch: F) -> TokenProvider
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Credentials, E>> + Send + 'static,
        E: Into<ProviderError>,
    {
        TokenProvider {
            fetch: Box::new(move || {
                let fut = fetch();
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
            cached: Mutex::new(None),
            stale: AtomicBool::new(false),
            fetched: AtomicU64::new(0),
        }
    }

    /// How many tokens the closure was asked for.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    async fn current(&self) -> Result<Credentials, ProviderError> {
        let mut cached = self.cached.lock().await;
        if self.stale.swap(false, Ordering::Relaxed) {
            *cached = None;
        }
        if let Some(c) = cached.as_ref()
            && c.renew_at().is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.clone());
        }
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let fresh = (self.fetch)().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

impl CredentialsProvider for TokenProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ProviderError>> {
        Box::pin(self.current())
    }

    fn rejected(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    fn describe(&self) -> String {
        "token provider".to_owned()
    }
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("fetched", &self.fetched())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use secrecy::ExposeSecret;

    use super::*;

    fn counting() -> TokenProvider {
        let n = Arc::new(AtomicU64::new(0));
        TokenProvider::new(move || {
            let n = n.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                Ok::<_, ProviderError>(
                    Credentials::user_password("app", format!("t{n}"))
                        .expires_in(Duration::from_secs(10)),
                )
            }
        })
    }

    async fn secret(p: &TokenProvider) -> String {
        p.credentials()
            .await
            .unwrap()
            .password
            .expose_secret()
            .to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_kept_until_four_fifths_of_its_lifetime() {
        let p = counting();
        assert_eq!(secret(&p).await, "t1");
        tokio::time::advance(Duration::from_millis(7_999)).await;
        assert_eq!(secret(&p).await, "t1");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(secret(&p).await, "t2");
        assert_eq!(p.fetched(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_not_used_again() {
        let p = counting();
        assert_eq!(secret(&p).await, "t1");
        p.rejected();
        assert_eq!(secret(&p).await, "t2");
        assert_eq!(secret(&p).await, "t2");
    }

    #[tokio::test]
    async fn the_closures_error_is_the_providers() {
        let p = TokenProvider::new(|| async { Err::<Credentials, _>("token service down") });
        let e = p.credentials().await.unwrap_err().to_string();
        assert_eq!(e, "token service down");
    }
}
