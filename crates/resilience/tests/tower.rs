//! The `tower` layer (feature `tower`).
#![cfg(feature = "tower")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::tower::RetryLayer;
use resilience::{Backoff, Classification, GiveUp, Idempotency, RetryConfig, RetryPolicy};
use tower::{Layer, Service, ServiceExt, service_fn};

fn policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig {
        max_attempts: 3,
        backoff: Backoff::constant(Duration::from_millis(10)),
        ..RetryConfig::default()
    })
    .unwrap()
    .with_rng_seed(1)
}

fn classify(status: &u16) -> Classification {
    match resilience::http::classify_status(*status) {
        resilience::RetryAction::Retry => Classification::retry(),
        _ => Classification::fail(),
    }
}

#[tokio::test(start_paused = true)]
async fn retries_a_service_until_it_succeeds() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = service_fn(move |req: &'static str| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n < 3 {
                Err(503u16)
            } else {
                Ok(format!("{req} after {n}"))
            }
        }
    });
    let mut svc = RetryLayer::new(policy(), classify as fn(&u16) -> Classification)
        .idempotency(Idempotency::Idempotent)
        .layer(svc);
    let out = svc.ready().await.unwrap().call("GET /").await.unwrap();
    assert_eq!(out, "GET / after 3");
}

#[tokio::test(start_paused = true)]
async fn does_not_retry_client_errors() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: ()| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(404u16) }
    });
    let svc = RetryLayer::new(policy(), classify as fn(&u16) -> Classification).layer(svc);
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.reason, GiveUp::NotRetryable);
    assert_eq!(err.error, Some(404));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
