//! Late replies and busy servers: a fresh connection tells a stalled server from a dead
//! connection (one probe at a time, shared), and one prober waits out `BUSY` / `LOADING` for
//! every caller.

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use rand::rngs::SmallRng;

use super::{Pool, StallVerdict};
use crate::replies::Code;

impl Pool {
    /// Diagnoses a late reply: PING on a fresh connection. One probe at a time is shared by all
    /// callers that ask while it runs.
    pub(crate) async fn diagnose_stall(self: &Arc<Self>) -> StallVerdict {
        let probe = {
            let mut slot = self.probe.lock().expect("probe lock");
            match slot.as_ref() {
                Some(p) if p.peek().is_none() => p.clone(),
                _ => {
                    let pool = self.clone();
                    let p = async move { pool.probe_fresh().await }.boxed().shared();
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        probe.await
    }

    /// Waits until the server stops answering `BUSY` / `LOADING`. One prober per pool PINGs every
    /// 20 to 60 ms (jittered) on a pooled connection; every caller that got such a reply waits on
    /// it, so a busy server sees one PING per interval instead of every caller's retries.
    pub(crate) async fn wait_until_not_busy(self: &Arc<Self>) {
        let gate = {
            let mut slot = self.busy_gate.lock().expect("gate lock");
            match slot.as_ref() {
                Some(g) if g.peek().is_none() => g.clone(),
                _ => {
                    let pool = Arc::downgrade(self);
                    let g = async move {
                        let mut rng: SmallRng = rand::make_rng();
                        // Bounded: a caller's own deadline ends its wait far sooner.
                        for _ in 0..2000 {
                            let jitter = Duration::from_millis(rand::RngExt::random_range(
                                &mut rng,
                                20..=60,
                            ));
                            tokio::time::sleep(jitter).await;
                            let Some(pool) = pool.upgrade() else { return };
                            let Some(mut lease) = pool.try_lease() else {
                                return;
                            };
                            let window = pool.response_timeout;
                            drop(pool);
                            // Bounded: a PING lost with its connection (or to a server that
                            // froze) must not hold every later caller that meets `BUSY`; they
                            // go on, and their own attempts find out what happened.
                            let ping = redis::cmd("PING");
                            match tokio::time::timeout(
                                window,
                                lease.conn.send_packed_command(&ping),
                            )
                            .await
                            {
                                Ok(Ok(redis::Value::ServerError(e))) if Code::of(&e).is_busy() => {}
                                _ => return,
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    *slot = Some(g.clone());
                    g
                }
            }
        };
        gate.await
    }

    async fn probe_fresh(&self) -> StallVerdict {
        let window = self.response_timeout;
        let verdict = match tokio::time::timeout(window * 2, self.open()).await {
            Err(_) => StallVerdict::Silent,
            Ok(Err(e)) if e.is_io_error() && !e.is_timeout() => {
                StallVerdict::Unreachable(e.to_string())
            }
            // Timed out, or the handshake got BUSY / LOADING: alive, but not answering us.
            Ok(Err(_)) => StallVerdict::Silent,
            Ok(Ok(mut conn)) => {
                let ping = redis::cmd("PING");
                match tokio::time::timeout(window, conn.send_packed_command(&ping)).await {
                    Ok(Ok(_)) => StallVerdict::Answers,
                    Ok(Err(e)) if e.is_io_error() && !e.is_timeout() => {
                        StallVerdict::Unreachable(e.to_string())
                    }
                    // A busy server (a long script) answers BUSY: alive, but stalled for us.
                    Ok(Err(_)) | Err(_) => StallVerdict::Silent,
                }
            }
        };
        tracing::debug!(?verdict, "stall probe");
        verdict
    }
}
