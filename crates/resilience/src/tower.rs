//! The retry policy as a [`tower_layer::Layer`] (feature `tower`).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::{Classification, Idempotency, RetryError, RetryPolicy};

/// Wraps a [`Service`] so that each request runs under a [`RetryPolicy`].
///
/// # Behavior
/// - Requests must be `Clone`: each attempt sends a clone.
/// - Each attempt uses a clone of the inner service, waits for its readiness, then calls it;
///   an error from either is classified with the layer's classifier.
/// - `poll_ready` of the wrapping service is always ready; readiness is awaited per attempt.
/// - Every request uses the layer's [`Idempotency`] (default [`Idempotency::NotIdempotent`]:
///   possibly-applied failures are not retried unless you declare the requests idempotent).
///
/// # Example
/// ```no_run
/// use resilience::{Classification, RetryConfig, RetryPolicy, Idempotency};
/// use resilience::tower::RetryLayer;
/// # fn demo() -> Result<(), resilience::ConfigError> {
/// let layer = RetryLayer::new(RetryPolicy::new(RetryConfig::default())?, |_e: &std::io::Error| {
///     Classification::retry()
/// })
/// .idempotency(Idempotency::Idempotent);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetryLayer<C> {
    policy: RetryPolicy,
    classify: C,
    idempotency: Idempotency,
}

impl<C> RetryLayer<C> {
    /// A layer running every request under `policy`, classifying errors with `classify`.
    pub fn new(policy: RetryPolicy, classify: C) -> Self {
        Self {
            policy,
            classify,
            idempotency: Idempotency::NotIdempotent,
        }
    }

    /// Declares whether the requests are idempotent.
    #[must_use]
    pub fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            idempotency: self.idempotency,
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

/// The service made by [`RetryLayer`].
#[derive(Clone)]
pub struct RetryService<S, C> {
    inner: S,
    policy: RetryPolicy,
    classify: C,
    idempotency: Idempotency,
}

impl<S: fmt::Debug, C> fmt::Debug for RetryService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

/// The boxed response future of [`RetryService`].
pub type RetryFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, RetryError<E>>> + Send>>;

impl<S, C, Req> Service<Req> for RetryService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    Req: Clone + Send + 'static,
    C: Fn(&S::Error) -> Classification + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = RetryError<S::Error>;
    type Future = RetryFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let svc = self.inner.clone();
        let policy = self.policy.clone();
        let classify = self.classify.clone();
        let idempotency = self.idempotency;
        Box::pin(async move {
            policy
                .run(idempotency, classify, move |_attempt| {
                    let mut svc = svc.clone();
                    let req = req.clone();
                    async move {
                        poll_fn(|cx| svc.poll_ready(cx)).await?;
                        svc.call(req).await
                    }
                })
                .await
        })
    }
}
