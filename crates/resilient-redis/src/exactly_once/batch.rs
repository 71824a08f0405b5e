//! Group commit: concurrent exactly-once writes to one server share one script call.
//!
//! Most of what an exactly-once write costs is the script call around it, not the command: the
//! server parses a longer request, sets up the script's arguments, checks the record and writes
//! it (two more commands inside the script, each with its own dispatch); the client builds and
//! reads one more request and reply. When many tasks write at once, their writes are collected
//! and sent as one call of [`BATCH_BODY`], which checks the records of every write with one
//! `HMGET` per hash, runs each command, and records them with one `HSET` per hash.
//!
//! No timer is involved, and nothing waits for a batch to fill: a write goes out at once while
//! fewer than [`IN_FLIGHT`] calls are outstanding, and writes that arrive while they all are wait
//! for the first to come back and go out together (at most [`MAX_ENTRIES`] per call). A lone
//! writer sees the plain script; batches form only under load, where they are needed.
//!
//! Each write keeps its own token, and the call as a whole is retried by the client's rules
//! (with every token unchanged): the same guarantee as for one write. Only single commands with
//! generated tokens on a standalone server (or a Sentinel-managed one) are batched; groups,
//! caller-chosen keys and Redis Cluster (whose writes go to different nodes by slot) use the
//! script one call at a time.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{Cmd, RedisResult, Value, aio::ConnectionLike};
use tokio::{sync::oneshot, time::Instant};

use crate::client::Client;

use super::{
    doubt::Doubt,
    errors::{after_noscript_handle, error_of, unexpected},
    script::{self, Answer, Commands, Invoke, Script, simple},
    shared::Shared,
    token::TokenKey,
};
use crate::error::{Error, ErrorKind, Outcome};

/// Argument bytes per call at most (one write larger than this goes alone).
const MAX_BYTES: usize = 256 * 1024;

/// The script that runs a batch. `KEYS` are the records' hashes, each named once per run of
/// consecutive writes with that hash (usually one or two per call); `ARGV[1]` is a new hash's
/// TTL in milliseconds; then per run: its number of writes, and per write: its field, its
/// argument count and its arguments. Per run: one `HMGET` of the marker and the writes' fields,
/// each write without a record runs (as in the single script: its error is returned and
/// nothing recorded), one `HSET` of the new records (with the marker and a `PEXPIRE` when the
/// hash is new). A batch that only replayed records sets the expiry of one of them again, so
/// that it writes (a `WAIT` behind it covers the records: see the single script). The answer
/// is an array with one element per write, each encoded as the single script's answer.
const BATCH_BODY: &str = concat!(
    "-- resilient-redis exactly-once batch v1\n",
    script::prelude!(),
    r#"local out, i, o, replayed, wrote = {}, 2, 0, nil, false
for j = 1, #KEYS do
  local k, m = KEYS[j], tonumber(ARGV[i])
  i = i + 1
  local fields, at, last = {'.'}, {}, {}
  for x = 1, m do
    fields[x + 1] = ARGV[i]
    at[x] = i
    i = i + 2 + tonumber(ARGV[i + 1])
    last[x] = i - 1
  end
  local got = redis.call('HMGET', k, unpack(fields))
  local save, w = {}, 0
  for x = 1, m do
    local rec, a = got[x + 1], at[x]
    o = o + 1
    if rec then
      out[o], replayed = replay(rec), k
    else
      local answer, s = encode(redis.pcall(unpack(ARGV, a + 2, last[x])))
      out[o] = answer
      if s then
        save[w + 1], save[w + 2], w = ARGV[a], s, w + 2
      end
    end
  end
  if w > 0 then
    if got[1] then
      redis.call('HSET', k, unpack(save))
    else
      save[w + 1], save[w + 2] = '.', ''
      redis.call('HSET', k, unpack(save))
      redis.call('PEXPIRE', k, ARGV[1])
    end
    wrote = true
  end
end
if replayed and not wrote then
  redis.call('PEXPIRE', replayed, ARGV[1])
end
return out
"#
);

impl Script {
    /// The script that runs a batch ([`BATCH_BODY`]), for standalone servers.
    pub(super) fn batch() -> Script {
        Script::of(BATCH_BODY.to_owned())
    }
}

/// One write waiting for its batch.
pub(super) struct Entry {
    pub(super) record: TokenKey,
    pub(super) cmd: Cmd,
    /// Taken when answered early (see `run`).
    pub(super) reply: Option<oneshot::Sender<RedisResult<Value>>>,
    /// When the caller queued it: its deadline counts from here.
    pub(super) queued_at: Instant,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.cmd.args_iter().map(|a| simple(a).len()).sum::<usize>()
    }
}

/// The writes waiting to go out, and the tasks sending them (shared by the clones of an
/// [`ExactlyOnce`](super::ExactlyOnce)).
///
/// No task runs while nothing is written. A write that finds fewer than `in_flight` tasks
/// sending starts one for itself (and whatever else is queued); otherwise it is queued, and the
/// first task to finish its call sends everything queued as its next call. The calls run in
/// their own tasks, not in a caller's future: a caller that gives up waiting (a timeout, a
/// dropped future) does not stop the call the other writes in it depend on.
pub(super) struct Batcher {
    state: Mutex<State>,
    /// Calls outstanding at once, at most.
    in_flight: usize,
    /// Writes per call, at most.
    max_batch: usize,
}

#[derive(Default)]
struct State {
    queue: Vec<Entry>,
    /// Tasks sending batches.
    running: usize,
}

impl Batcher {
    pub(super) fn new(in_flight: usize, max_batch: usize) -> Batcher {
        Batcher {
            state: Mutex::default(),
            in_flight: in_flight.max(1),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `entry`, starting a task to send it if fewer than `in_flight` run. Gives the entry
    /// back when there is no Tokio runtime to start one on.
    pub(super) fn submit(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        backend: &Client,
        entry: Entry,
    ) -> Option<Entry> {
        let mut state = self.lock();
        if state.running >= self.in_flight {
            state.queue.push(entry);
            return None;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some(entry);
        };
        state.queue.push(entry);
        let batch = take_batch(&mut state.queue, self.max_batch);
        state.running += 1;
        drop(state);
        let sender = Sender {
            batcher: self.clone(),
            shared: shared.clone(),
            backend: backend.clone(),
            done: false,
        };
        runtime.spawn(sender.send(batch));
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writes of the next call: the oldest queued, up to `max` and [`MAX_BYTES`].
fn take_batch(queue: &mut Vec<Entry>, max: usize) -> Vec<Entry> {
    let mut bytes = 0;
    let mut n = 0;
    for entry in queue.iter() {
        let size = entry.bytes();
        if n == max || (n > 0 && bytes + size > MAX_BYTES) {
            break;
        }
        bytes += size;
        n += 1;
    }
    if n == queue.len() {
        std::mem::take(queue)
    } else {
        queue.drain(..n).collect()
    }
}

/// One task sending batches until the queue is empty.
struct Sender {
    batcher: Arc<Batcher>,
    shared: Arc<Shared>,
    backend: Client,
    /// Set when it stops with the queue empty (and has counted itself out).
    done: bool,
}

impl Sender {
    async fn send(mut self, mut batch: Vec<Entry>) {
        loop {
            run(&self.shared, &mut self.backend, batch).await;
            let mut state = self.batcher.lock();
            if state.queue.is_empty() {
                state.running -= 1;
                self.done = true;
                return;
            }
            batch = take_batch(&mut state.queue, self.batcher.max_batch);
        }
    }
}

impl Drop for Sender {
    /// A task stopped early (a panic, or its runtime shutting down): the writes of its call
    /// get an error (their reply channels close: ambiguous); it counts itself out, and a new
    /// task takes over the queue if a runtime is there to run it.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.batcher.lock();
        state.running -= 1;
        if state.queue.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let batch = take_batch(&mut state.queue, self.batcher.max_batch);
        state.running += 1;
        drop(state);
        let sender = Sender {
            batcher: self.batcher.clone(),
            shared: self.shared.clone(),
            backend: self.backend.clone(),
            done: false,
        };
        runtime.spawn(sender.send(batch));
    }
}

/// Sends one batch and hands each write its reply.
///
/// Deadlines count from when each write was queued: a write whose deadline passed in the queue
/// fails without being sent (`DeadlineExceeded`, definitely not applied), and a call whose
/// writes waited is sent with what is left of the earliest one's deadline, so that no caller
/// waits longer than its deadline, whatever the queue.
async fn run(shared: &Shared, backend: &mut Client, mut batch: Vec<Entry>) {
    let deadline = backend.call_deadline();
    let now = Instant::now();
    batch.retain_mut(|entry| {
        if now.saturating_duration_since(entry.queued_at) < deadline {
            return true;
        }
        let error = Error::new(
            ErrorKind::DeadlineExceeded,
            Outcome::Failed,
            "exactly-once: the deadline passed while the write waited for its turn (not sent)",
        );
        if let Some(reply) = entry.reply.take() {
            let _ = reply.send(Err(error.into_redis()));
        }
        false
    });
    let Some(oldest) = batch.iter().map(|e| e.queued_at).min() else {
        return;
    };
    let waited = now.saturating_duration_since(oldest);
    let left = deadline.saturating_sub(waited);
    let mut shortened;
    // Shortened once the oldest write waited a timer tick (1 ms) or more: a call that waited
    // less ends within that tick of its deadline.
    let backend = if waited >= Duration::from_millis(1) {
        match backend.with_deadline(left.max(Duration::from_millis(1))) {
            Ok(b) => {
                shortened = b;
                &mut shortened
            }
            Err(_) => backend,
        }
    } else {
        backend
    };
    if batch.len() == 1 {
        let Some(Entry {
            record, cmd, reply, ..
        }) = batch.pop()
        else {
            return;
        };
        let result = shared
            .invoke(backend, &record, &[], Commands::One(&cmd))
            .await;
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
        return;
    }
    shared.writes.add(batch.len() as u64);
    shared.script_calls.add(1);
    match call(shared, backend, &batch).await {
        Ok(answers) => {
            for (entry, answer) in batch.into_iter().zip(answers) {
                let result = match answer {
                    Answer::Reply { value, replayed } => {
                        if replayed {
                            shared.replayed(&entry.record);
                        }
                        Ok(value)
                    }
                    Answer::Error(value) => Ok(value),
                    Answer::NoScript | Answer::Unexpected(_) => Err(unexpected(Value::Nil)),
                };
                if let Some(reply) = entry.reply {
                    let _ = reply.send(result);
                }
            }
        }
        Err(e) => {
            let error = error_of(e);
            for entry in batch {
                if let Some(reply) = entry.reply {
                    let _ = reply.send(Err(error.clone().into_redis()));
                }
            }
        }
    }
}

/// The batch's script call (once more with `EVAL` after `NOSCRIPT`), read into one answer per
/// write.
async fn call(shared: &Shared, backend: &mut Client, batch: &[Entry]) -> RedisResult<Vec<Answer>> {
    let started = Instant::now();
    let mut how = Invoke::Sha;
    // After `NOSCRIPT`, or to send writes in doubt again: the handle with what is left of the
    // deadline.
    let mut whole: Option<Client> = None;
    let mut doubt = Doubt::new(started);
    loop {
        let request = invocation(
            &shared.batch_script,
            how,
            shared.hash_ttl_ms.as_bytes(),
            batch,
        );
        let conn = match &mut whole {
            Some(whole) => whole,
            None => &mut *backend,
        };
        let value = match conn.req_packed_command(&request).await {
            Err(e) if e.code() == Some("NOSCRIPT") => Value::Nil,
            Err(e) => {
                whole = Some(doubt.after(backend, e, how).await?);
                continue;
            }
            Ok(Value::ServerError(e)) if e.code() == "NOSCRIPT" => Value::Nil,
            Ok(value) => value,
        };
        match value {
            Value::Nil if how == Invoke::Sha => {
                shared.loaded_script();
                how = Invoke::Body;
                whole = Some(after_noscript_handle(backend, started)?);
            }
            Value::Array(items) if items.len() == batch.len() => {
                return Ok(items.into_iter().map(script::read_answer).collect());
            }
            // The script failed as a whole (some writes may have run before it stopped).
            Value::ServerError(e) => {
                return Err(Error::new(
                    ErrorKind::Server,
                    Outcome::Ambiguous,
                    format!("exactly-once: the batch script failed: {e}"),
                )
                .into_redis());
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// The request that runs `batch`: one allocation for the arguments and one for their bytes.
fn invocation(script: &Script, how: Invoke, ttl_ms: &[u8], batch: &[Entry]) -> Cmd {
    let (name, head) = script.invoke_as(how);
    // Runs of consecutive writes with the same hash: (first write, writes).
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(2);
    for (i, e) in batch.iter().enumerate() {
        match runs.last_mut() {
            Some((first, n)) if batch[*first].record.as_bytes() == e.record.as_bytes() => *n += 1,
            _ => runs.push((i, 1)),
        }
    }
    let mut argc = 4 + runs.len() * 2 + batch.len() * 2;
    let mut bytes = name.len() + head.len() + ttl_ms.len() + 4 + runs.len() * 40;
    for e in batch {
        argc += e.cmd.args_iter().len();
        bytes += e.bytes() + e.record.field().len() + 4;
    }
    let mut c = Cmd::with_capacity(argc, bytes);
    c.arg(name).arg(head).arg(runs.len());
    for (first, _) in &runs {
        c.arg(batch[*first].record.as_bytes());
    }
    c.arg(ttl_ms);
    for (first, n) in runs {
        c.arg(n);
        for e in &batch[first..first + n] {
            c.arg(e.record.field()).arg(e.cmd.args_iter().len());
            for a in e.cmd.args_iter() {
                c.arg(simple(a));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::exactly_once::token::{Token, instance_id};

    #[test]
    fn a_batch_names_each_run_of_one_hash_once() {
        let instance = instance_id([7; 16]);
        let seq = AtomicU64::new(62);
        let entry = |key: &str| {
            let record = TokenKey::new(b"xo:", b"", Token::Generated, &instance, &seq, 0);
            let (reply, _) = oneshot::channel();
            Entry {
                record,
                cmd: redis::cmd("INCR").arg(key).clone(),
                reply: Some(reply),
                queued_at: Instant::now(),
            }
        };
        // Sequence numbers 62, 63 (hash 0), 64 (hash 1).
        let batch = [entry("a"), entry("b"), entry("c")];
        let script = Script::batch();
        let c = invocation(&script, Invoke::Sha, b"75000", &batch);
        let args: Vec<String> = c
            .args_iter()
            .map(|a| String::from_utf8_lossy(simple(a)).into_owned())
            .collect();
        let id = String::from_utf8_lossy(&instance).into_owned();
        let expected = [
            "EVALSHA".to_owned(),
            script.invoke_as(Invoke::Sha).1.to_owned(),
            "2".into(),
            format!("xo:{id}A.A"),
            format!("xo:{id}B.A"),
            "75000".into(),
            "2".into(),
            "-".into(),
            "2".into(),
            "INCR".into(),
            "a".into(),
            "_".into(),
            "2".into(),
            "INCR".into(),
            "b".into(),
            "1".into(),
            "A".into(),
            "2".into(),
            "INCR".into(),
            "c".into(),
        ];
        assert_eq!(args, expected);
    }
}
