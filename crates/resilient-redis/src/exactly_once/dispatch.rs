//! Where a call goes: a read straight to the client; a write to the batcher (group commit)
//! or to its own script call; a pipeline or transaction as one group under one token.

use std::sync::Arc;

use redis::{Cmd, Pipeline, RedisResult, Value};
use tokio::time::Instant;

use super::{
    batch,
    check::check_command,
    errors::unexpected,
    pipeline::wire_replies,
    script::Commands,
    shared::Shared,
    slot::{self, Placement},
    token::Token,
};
use crate::{
    client::Client,
    commands::CommandSafety,
    error::{Error, ErrorKind, Outcome},
    retry::cooperate,
};
use redis::aio::ConnectionLike;

/// A call refused before anything is sent: its error, after giving the scheduler its turn (it
/// fails without waiting for anything, so a caller that calls again at once must not keep the
/// runtime from other work; see [`crate::retry::cooperate`]). Failures of calls that were sent
/// cooperate in the client.
async fn refuse<T>(e: Error) -> RedisResult<T> {
    cooperate().await;
    Err(e.into_redis())
}

impl Shared {
    /// One command: a read as it is, a write under a token.
    pub(super) async fn command(
        self: &Arc<Self>,
        batcher: &Arc<batch::Batcher>,
        backend: &mut Client,
        cmd: &Cmd,
        token: Token<'_>,
    ) -> RedisResult<Value> {
        let safety = match check_command(cmd) {
            Ok(safety) => safety,
            Err(e) => return refuse(e).await,
        };
        if safety == CommandSafety::ReadOnly {
            self.reads.add(1);
            return backend.req_packed_command(cmd).await;
        }
        if !self.cluster && self.config.max_batch > 1 && matches!(token, Token::Generated) {
            // Group commit (see `batch.rs`).
            // One clock reading: the token's period and the write's place in the queue.
            let now = Instant::now();
            let record = match self.token_key(token, Placement::Keyless, now) {
                Ok(record) => record,
                Err(e) => return refuse(e).await,
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            let entry = batch::Entry {
                record,
                cmd: cmd.clone(),
                reply: Some(reply),
                queued_at: now,
            };
            return match batcher.submit(self, backend, entry) {
                None => answer.await.unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Server,
                        Outcome::Ambiguous,
                        "exactly-once: the write's batch was dropped (its runtime stopped)",
                    )
                    .into_redis())
                }),
                Some(entry) => {
                    self.invoke(backend, &entry.record, &[], Commands::One(&entry.cmd))
                        .await
                }
            };
        }
        let keys = if self.cluster {
            slot::command_keys(cmd).collect()
        } else {
            Vec::new()
        };
        let key = match self.token_key(token, slot::placement_of(&keys), Instant::now()) {
            Ok(key) => key,
            Err(e) => return refuse(e).await,
        };
        self.invoke(backend, &key, &keys, Commands::One(cmd)).await
    }

    /// A pipeline or transaction: as it is if it only reads, else as one group under one token.
    pub(super) async fn group(
        &self,
        backend: &mut Client,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
        token: Token<'_>,
    ) -> RedisResult<Vec<Value>> {
        let mut safety = CommandSafety::ReadOnly;
        let mut keys = Vec::new();
        for cmd in pipeline.cmd_iter() {
            safety = match check_command(cmd) {
                Ok(s) => safety.max(s),
                Err(e) => return refuse(e).await,
            };
            if self.cluster {
                keys.extend(slot::command_keys(cmd));
            }
        }
        if safety == CommandSafety::ReadOnly {
            self.reads.add(1);
            return backend.req_packed_commands(pipeline, offset, count).await;
        }
        let key = match self.token_key(token, slot::placement_of(&keys), Instant::now()) {
            Ok(key) => key,
            Err(e) => return refuse(e).await,
        };
        let results = match self
            .invoke(backend, &key, &keys, Commands::Group(pipeline))
            .await?
        {
            Value::Array(results) => results,
            // The script failed as a whole (nothing ran): the pipeline's error.
            Value::ServerError(e) => return Err(e.into()),
            other => return Err(unexpected(other)),
        };
        Ok(wire_replies(pipeline, results, offset, count))
    }
}
