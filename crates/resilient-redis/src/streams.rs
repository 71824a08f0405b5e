//! Stream consumer groups that lose nothing between "read" and "acknowledged":
//! [`StreamConsumer`], made by [`Client::stream_consumer`].
//!
//! `XREADGROUP ... >` is a write: it moves the entries it returns into the consumer's pending
//! list. When its reply is lost (the connection broke, a blocked read ended ambiguous because
//! its master died), those entries are pending for the consumer although it never saw them, and
//! a plain retry of `>` would skip them for good (they are no longer new). A [`StreamConsumer`]
//! therefore reads its own pending entries (`XREADGROUP ... 0`, which moves nothing and is safe
//! to send again) after such a loss, and at its start, before asking for new ones. The same
//! recovery follows an `XAUTOCLAIM` whose reply was lost (the entries it claimed are ours now)
//! and an acknowledgement that failed (the entries are still pending).
//!
//! Delivery is therefore *at least once*: an entry read but not acknowledged (its `XACK` failed,
//! or the consumer restarted) comes again. Acknowledging is idempotent (`XACK` of an entry no
//! longer pending does nothing), so an entry ends acknowledged once.

use std::{collections::HashMap, time::Duration};

use redis::{Value, streams::StreamId};

use crate::{
    Client,
    error::{Error, ErrorKind, Outcome},
};

/// One consumer of a stream's consumer group (see [the module docs](self)).
///
/// Use one per consumer name, from one task at a time, and acknowledge what it returned before
/// reading again: a recovery returns every entry still pending for the consumer, including
/// those it returned before and that were not acknowledged.
#[derive(Debug, Clone)]
pub struct StreamConsumer {
    client: Client,
    stream: String,
    group: String,
    consumer: String,
    /// The next read returns the consumer's own pending entries first.
    recover: bool,
    /// Where the next `XAUTOCLAIM` scan starts.
    claim_cursor: String,
    recoveries: u64,
}

impl Client {
    /// Consumer `consumer` of group `group` on `stream` (see [`StreamConsumer`]). Its first read
    /// returns what the consumer had not acknowledged before (a restart), then new entries.
    pub fn stream_consumer(&self, stream: &str, group: &str, consumer: &str) -> StreamConsumer {
        StreamConsumer {
            client: self.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            recover: true,
            claim_cursor: "0-0".to_owned(),
            recoveries: 0,
        }
    }
}

impl StreamConsumer {
    /// Creates the group (`XGROUP CREATE stream group start MKSTREAM`: `"$"` for entries added
    /// from now on, `"0"` for the whole stream). `Ok(false)` when it exists already.
    ///
    /// # Errors
    /// Those of the call.
    pub async fn create_group(&self, start: &str) -> Result<bool, Error> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(start)
            .arg("MKSTREAM");
        // Creating the group twice fails with BUSYGROUP: safe to send again (the command table
        // says so: XGROUP is retried as idempotent).
        match self.client.send(&cmd).await? {
            Value::ServerError(e) if e.code() == "BUSYGROUP" => Ok(false),
            Value::ServerError(e) => Err(server_error(e)),
            _ => Ok(true),
        }
    }

    /// Up to `count` entries for this consumer: its own pending ones while it is recovering
    /// (after a lost reply, a failed acknowledgement, or at its start), else new ones, waiting
    /// up to `block` for some (`None`: do not wait; `Duration::ZERO`: wait without limit, bounded
    /// by the client's blocking rules). An empty list: nothing yet.
    ///
    /// # Errors
    /// A read that surely took nothing ([`Outcome::Failed`]: the server unavailable, a refusal)
    /// comes back as it is. A read whose reply was lost is not an error: the entries it may have
    /// taken are read again as the consumer's own pending ones, at once; only if that fails
    /// too does its error come back (and the next read recovers).
    pub async fn read(
        &mut self,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<StreamId>, Error> {
        if self.recover {
            let own = self.own_pending(count).await?;
            if !own.is_empty() {
                return Ok(own);
            }
            self.recover = false;
        }
        let mut cmd = self.read_cmd(count, block);
        cmd.arg(">");
        match call(&self.client, &cmd).await {
            Ok(reply) => self.entries(reply).await,
            Err(e) if e.outcome() == Outcome::Failed => Err(e),
            Err(e) => {
                tracing::debug!(stream = %self.stream, error = %e, "a group read lost its reply: reading the consumer's pending entries");
                self.recover = true;
                self.recoveries += 1;
                self.own_pending(count).await
            }
        }
    }

    /// Acknowledges `ids` (`XACK`; safe to repeat); returns how many were still pending. On
    /// an error the entries may still be pending: the next read returns them again.
    ///
    /// # Errors
    /// Those of the call.
    pub async fn ack(&mut self, ids: &[&str]) -> Result<u64, Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream).arg(&self.group).arg(ids);
        match call(&self.client, &cmd).await {
            Ok(Value::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
            Ok(other) => Err(unexpected("XACK", &other)),
            Err(e) => {
                self.recover = true;
                Err(e)
            }
        }
    }

    /// Takes over up to `count` entries that other consumers of the group left pending for at
    /// least `min_idle` (a consumer that died), with `XAUTOCLAIM`, scanning on from where the
    /// last call stopped. If the reply is lost, the entries it may have claimed are this
    /// consumer's now: they come from the next [`read`](Self::read), and this returns none.
    ///
    /// # Errors
    /// A claim that surely took nothing.
    pub async fn claim_idle(
        &mut self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamId>, Error> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(count.max(1));
        let reply = match call(&self.client, &cmd).await {
            Ok(reply) => reply,
            Err(e) if e.outcome() == Outcome::Failed => return Err(e),
            Err(e) => {
                tracing::debug!(stream = %self.stream, error = %e, "a claim lost its reply: the next read recovers what it took");
                self.recover = true;
                self.recoveries += 1;
                return Ok(Vec::new());
            }
        };
        let Value::Array(mut parts) = reply else {
            return Err(unexpected("XAUTOCLAIM", &reply));
        };
        if parts.len() < 2 {
            return Err(unexpected("XAUTOCLAIM", &Value::Array(parts)));
        }
        let claimed = parts.swap_remove(1);
        if let Some(cursor) = text(&parts[0]) {
            self.claim_cursor = cursor;
        }
        let (entries, deleted) = parse_entries(claimed)?;
        // Entries deleted while pending (XDEL, XTRIM) have nothing to process.
        self.drop_deleted(&deleted).await;
        Ok(entries)
    }

    /// How many entries are pending for this consumer (`XPENDING` summary).
    ///
    /// # Errors
    /// Those of the call.
    pub async fn pending(&self) -> Result<u64, Error> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.stream).arg(&self.group);
        let reply = call(&self.client, &cmd).await?;
        let Value::Array(parts) = &reply else {
            return Err(unexpected("XPENDING", &reply));
        };
        let Some(Value::Array(consumers)) = parts.get(3) else {
            return Ok(0); // Nothing pending in the group: the list is nil.
        };
        for c in consumers {
            if let Value::Array(pair) = c
                && let [name, n] = pair.as_slice()
                && text(name).as_deref() == Some(self.consumer.as_str())
            {
                return Ok(text(n).and_then(|n| n.parse().ok()).unwrap_or(0));
            }
        }
        Ok(0)
    }

    /// Whether the next read returns the consumer's own pending entries first.
    pub fn recovering(&self) -> bool {
        self.recover
    }

    /// How many reads or claims lost their reply and were recovered.
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s` (the id follows).
    fn read_cmd(&self, count: usize, block: Option<Duration>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(&self.stream);
        cmd
    }

    /// The consumer's own pending entries (id `0`: moves nothing, safe to send again).
    async fn own_pending(&mut self, count: usize) -> Result<Vec<StreamId>, Error> {
        let mut cmd = self.read_cmd(count, None);
        cmd.arg("0");
        let reply = call(&self.client.idempotent(), &cmd).await?;
        self.entries(reply).await
    }

    /// The entries of an `XREADGROUP` reply; those deleted while pending are acknowledged.
    async fn entries(&self, reply: Value) -> Result<Vec<StreamId>, Error> {
        let list = match reply {
            Value::Nil => return Ok(Vec::new()), // BLOCK timed out.
            // RESP2: [[stream, entries]]; RESP3: {stream: entries}.
            Value::Array(streams) => streams.into_iter().find_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Some(pair.swap_remove(1)),
                _ => None,
            }),
            Value::Map(streams) => streams.into_iter().next().map(|(_, entries)| entries),
            other => return Err(unexpected("XREADGROUP", &other)),
        };
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        let (entries, deleted) = parse_entries(list)?;
        self.drop_deleted(&deleted).await;
        Ok(entries)
    }

    /// Acknowledges pending entries that no longer exist (best effort: they come back, and
    /// are dropped again, if it fails).
    async fn drop_deleted(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream).arg(&self.group).arg(ids);
        if let Err(e) = call(&self.client, &cmd).await {
            tracing::debug!(error = %e, "cannot acknowledge entries deleted while pending");
        }
    }
}

/// Runs `cmd`; a server error reply is an error (nothing was applied).
async fn call(client: &Client, cmd: &redis::Cmd) -> Result<Value, Error> {
    match client.send(cmd).await? {
        Value::ServerError(e) => Err(server_error(e)),
        reply => Ok(reply),
    }
}

/// A server's error reply (the command was refused: nothing applied).
fn server_error(e: redis::ServerError) -> Error {
    Error::new(
        ErrorKind::Server,
        Outcome::Failed,
        format!("server replied {}", e.code()),
    )
    .with_source(redis::RedisError::from(e))
}

/// Entries `[[id, [field, value, ...]], ...]`, and the ids of those whose fields are nil
/// (deleted while pending).
fn parse_entries(list: Value) -> Result<(Vec<StreamId>, Vec<String>), Error> {
    let Value::Array(items) = list else {
        return match list {
            Value::Nil => Ok((Vec::new(), Vec::new())),
            other => Err(unexpected("a stream entry list", &other)),
        };
    };
    let (mut entries, mut deleted) = (Vec::with_capacity(items.len()), Vec::new());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(unexpected("a stream entry", &item));
        };
        let mut pair = pair.into_iter();
        let (Some(id), fields) = (pair.next(), pair.next()) else {
            return Err(Error::new(
                ErrorKind::Conversion,
                Outcome::Applied,
                "a stream entry without an id",
            ));
        };
        let id = text(&id).ok_or_else(|| unexpected("a stream entry id", &id))?;
        let map = match fields {
            None | Some(Value::Nil) => {
                deleted.push(id);
                continue;
            }
            Some(Value::Array(kv)) => {
                let mut map = HashMap::with_capacity(kv.len() / 2);
                let mut kv = kv.into_iter();
                while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                    map.insert(text(&k).unwrap_or_default(), v);
                }
                map
            }
            Some(Value::Map(kv)) => kv
                .into_iter()
                .map(|(k, v)| (text(&k).unwrap_or_default(), v))
                .collect(),
            Some(other) => return Err(unexpected("stream entry fields", &other)),
        };
        entries.push(StreamId {
            id,
            map,
            ..StreamId::default()
        });
    }
    Ok((entries, deleted))
}

/// A bulk or simple string as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A reply of a shape the command never gives (applied: the server ran it).
fn unexpected(what: &str, v: &Value) -> Error {
    Error::new(
        ErrorKind::Conversion,
        Outcome::Applied,
        format!("unexpected reply to {what}: {v:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_and_deleted_ones_are_told_apart() {
        let list = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("n"), bulk("7")])]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let (entries, deleted) = parse_entries(list).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].get::<String>("n").as_deref(), Some("7"));
        assert_eq!(deleted, vec!["2-0".to_owned()]);
    }

    #[test]
    fn a_malformed_entry_is_a_conversion_error() {
        let err = parse_entries(Value::Array(vec![Value::Int(3)])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conversion);
    }
}
