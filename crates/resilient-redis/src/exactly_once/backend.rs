//! The client underneath an exactly-once handle: one server (standalone or Sentinel) or a
//! cluster.

use std::time::Duration;

use redis::{Cmd, Pipeline, RedisResult, Value, aio::ConnectionLike};

use crate::{client::Client, error::Error, topology::cluster::ClusterClient};

/// The client underneath.
#[derive(Clone)]
pub(super) enum Backend {
    Standalone(Client),
    Cluster(ClusterClient),
}

impl Backend {
    pub(super) async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Backend::Standalone(c) => c.req_packed_command(cmd).await,
            Backend::Cluster(c) => c.req_packed_command(cmd).await,
        }
    }

    pub(super) async fn pipeline(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Backend::Standalone(c) => c.req_packed_commands(pipeline, offset, count).await,
            Backend::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
        }
    }

    pub(super) fn db(&self) -> i64 {
        match self {
            Backend::Standalone(c) => c.get_db(),
            Backend::Cluster(c) => c.get_db(),
        }
    }

    /// The total deadline of a call.
    pub(super) fn deadline(&self) -> Duration {
        match self {
            Backend::Standalone(c) => c.call_deadline(),
            Backend::Cluster(c) => c.call_deadline(),
        }
    }

    /// The same backend with another deadline per call.
    pub(super) fn with_deadline(&self, deadline: Duration) -> Result<Backend, Error> {
        Ok(match self {
            Backend::Standalone(c) => Backend::Standalone(c.with_deadline(deadline)?),
            Backend::Cluster(c) => Backend::Cluster(c.with_deadline(deadline)?),
        })
    }
}
