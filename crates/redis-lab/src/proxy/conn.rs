//! One proxied connection: four tasks (client reader, server writer, server reader, client
//! writer) joined by channels, under a supervisor that closes everything on a fault.
//!
//! The client reader parses requests and tells the client writer, in request order, what each
//! one will be answered with (the upstream's next reply or a local `-THROTTLED`); the client
//! writer merges that queue with parsed upstream replies, so local replies keep pipeline order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Shared;
use super::resp::{NotResp, ReplyParser, RequestParser};

/// The proxy's own answer to a throttled command.
const THROTTLED: &[u8] = b"-THROTTLED too many requests\r\n";

/// Commands a client sends while setting a connection up; `drop_every` cuts the first reply to
/// anything else.
const HANDSHAKE: &[&[u8]] = &[
    b"hello",
    b"auth",
    b"client",
    b"select",
    b"readonly",
    b"readwrite",
];

/// Commands after which replies no longer answer requests one to one.
const UNORDERED: &[&[u8]] = &[b"subscribe", b"psubscribe", b"ssubscribe", b"monitor"];

const READ_CHUNK: usize = 16 * 1024;
const CHANNEL_DEPTH: usize = 64;

/// How a task ended, as seen by the supervisor.
#[derive(Debug)]
enum End {
    /// Nothing more to do in this direction.
    Done,
    /// `drop_every` cut the connection on purpose.
    Cut,
    /// An I/O error: close everything.
    Failed,
}

/// What answers one request, in request order.
#[derive(Debug)]
enum Expect {
    /// The upstream's next reply; `cut` forwards only half of it, then closes.
    Upstream { cut: bool },
    /// A reply made by the proxy.
    Local {
        bytes: &'static [u8],
        due: Option<Instant>,
    },
    /// From now on replies are not matched to requests (pub/sub, MONITOR, non-RESP).
    Unordered,
}

/// Bytes to write after `due`.
struct Chunk {
    due: Option<Instant>,
    data: Vec<u8>,
}

/// Upstream bytes made of whole replies (`replies` holds their lengths and push flags), or raw
/// bytes when the stream is not RESP (`replies == None`).
struct ReplyChunk {
    due: Option<Instant>,
    data: Vec<u8>,
    replies: Option<Vec<(usize, bool)>>,
}

/// Per-connection flag: once blackholed, always blackholed.
struct Hole {
    shared: Arc<Shared>,
    sticky: AtomicBool,
}

impl Hole {
    fn is_open(&self) -> bool {
        if self.sticky.load(Ordering::Relaxed) {
            return true;
        }
        if self.shared.blackhole() {
            self.sticky.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Serves one accepted client connection until either side closes or a fault cuts it.
pub(super) async fn run(
    shared: Arc<Shared>,
    client: TcpStream,
    cut: bool,
    mut generation: watch::Receiver<u64>,
) {
    let hole = Arc::new(Hole {
        shared: Arc::clone(&shared),
        sticky: AtomicBool::new(false),
    });
    if hole.is_open() {
        tokio::select! {
            () = swallow(&shared, client) => {}
            _ = generation.changed() => count_drop(&shared),
        }
        return;
    }
    let upstream = shared.upstream();
    let server = tokio::select! {
        connected = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)) => connected,
        _ = generation.changed() => {
            count_drop(&shared);
            return;
        }
    };
    let server = match server {
        Ok(Ok(server)) => server,
        Ok(Err(error)) => {
            tracing::debug!(%upstream, %error, "fault proxy could not reach upstream");
            return;
        }
        Err(_) => {
            tracing::debug!(%upstream, "fault proxy timed out connecting upstream");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    let (to_server_tx, to_server_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (expect_tx, expect_rx) = mpsc::unbounded_channel();
    let (reply_tx, reply_rx) = mpsc::channel(CHANNEL_DEPTH);

    let mut tasks = JoinSet::new();
    tasks.spawn(client_reader(
        Arc::clone(&hole),
        client_rd,
        to_server_tx,
        expect_tx,
        cut,
    ));
    tasks.spawn(server_writer(Arc::clone(&shared), server_wr, to_server_rx));
    tasks.spawn(server_reader(Arc::clone(&hole), server_rd, reply_tx));
    let writer = tasks
        .spawn(client_writer(
            Arc::clone(&shared),
            client_wr,
            expect_rx,
            reply_rx,
        ))
        .id();
    loop {
        tokio::select! {
            _ = generation.changed() => {
                count_drop(&shared);
                return;
            }
            ended = tasks.join_next_with_id() => match ended {
                None => return,
                Some(Ok((id, End::Done))) if id != writer => {}
                Some(Ok((_, End::Cut))) => {
                    count_drop(&shared);
                    return;
                }
                // The client writer finished, an I/O error, or a panic: close both sides.
                Some(_) => return,
            }
        }
    }
}

fn count_drop(shared: &Shared) {
    shared
        .counters
        .connections_dropped
        .fetch_add(1, Ordering::Relaxed);
}

/// Reads and discards until the client closes.
async fn swallow(shared: &Shared, mut client: TcpStream) {
    let mut buf = vec![0; READ_CHUNK];
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            break;
        }
        shared
            .counters
            .bytes_blackholed
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn client_reader(
    hole: Arc<Hole>,
    mut client: OwnedReadHalf,
    to_server: mpsc::Sender<Chunk>,
    expect: mpsc::UnboundedSender<Expect>,
    mut cut_pending: bool,
) -> End {
    let shared = &hole.shared;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut parser = RequestParser::default();
    let mut parsing = true;
    loop {
        buf.reserve(READ_CHUNK);
        match client.read_buf(&mut buf).await {
            Ok(0) => return End::Done,
            Ok(_) => {}
            Err(_) => return End::Failed,
        }
        if hole.is_open() {
            shared
                .counters
                .bytes_blackholed
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
            continue;
        }
        let due = shared.due();
        let mut out = Vec::with_capacity(buf.len());
        let mut pos = 0;
        while parsing && pos < buf.len() {
            match parser.parse(&buf[pos..]) {
                Ok(Some(req)) => {
                    let bytes = &buf[pos..pos + req.len];
                    pos += req.len;
                    if req.argc == 0 {
                        // Redis ignores it and sends nothing back.
                        out.extend_from_slice(bytes);
                        continue;
                    }
                    if !shared.admit() {
                        shared
                            .counters
                            .commands_throttled
                            .fetch_add(1, Ordering::Relaxed);
                        let _ = expect.send(Expect::Local {
                            bytes: THROTTLED,
                            due,
                        });
                        continue;
                    }
                    shared
                        .counters
                        .commands_forwarded
                        .fetch_add(1, Ordering::Relaxed);
                    if UNORDERED.contains(&req.name.as_slice()) {
                        let _ = expect.send(Expect::Unordered);
                    }
                    let cut = cut_pending && !HANDSHAKE.contains(&req.name.as_slice());
                    cut_pending &= !cut;
                    // Sent before the bytes leave, so it is queued before its reply can arrive.
                    let _ = expect.send(Expect::Upstream { cut });
                    out.extend_from_slice(bytes);
                }
                Ok(None) => break,
                Err(NotResp) => {
                    parsing = false;
                    let _ = expect.send(Expect::Unordered);
                }
            }
        }
        if !parsing {
            out.extend_from_slice(&buf[pos..]);
            pos = buf.len();
        }
        buf.drain(..pos);
        if !out.is_empty() && to_server.send(Chunk { due, data: out }).await.is_err() {
            return End::Done;
        }
    }
}

async fn server_writer(
    shared: Arc<Shared>,
    mut server: OwnedWriteHalf,
    mut chunks: mpsc::Receiver<Chunk>,
) -> End {
    while let Some(chunk) = chunks.recv().await {
        if let Some(due) = chunk.due {
            tokio::time::sleep_until(due).await;
        }
        if server.write_all(&chunk.data).await.is_err() {
            return End::Failed;
        }
        shared
            .counters
            .bytes_to_server
            .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
    }
    // The client closed its side: pass the EOF on; Redis then closes, which ends the rest.
    let _ = server.shutdown().await;
    End::Done
}

async fn server_reader(
    hole: Arc<Hole>,
    mut server: OwnedReadHalf,
    replies: mpsc::Sender<ReplyChunk>,
) -> End {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut parser = ReplyParser::default();
    let mut parsing = true;
    loop {
        buf.reserve(READ_CHUNK);
        match server.read_buf(&mut buf).await {
            Ok(0) => return End::Done,
            Ok(_) => {}
            Err(_) => return End::Failed,
        }
        if hole.is_open() {
            buf.clear();
            continue;
        }
        let due = hole.shared.due();
        let mut metas = Vec::new();
        let mut pos = 0;
        while parsing && pos < buf.len() {
            match parser.parse(&buf[pos..]) {
                Ok(Some(reply)) => {
                    metas.push((reply.len, reply.push));
                    pos += reply.len;
                }
                Ok(None) => break,
                Err(NotResp) => parsing = false,
            }
        }
        let chunk = if parsing {
            if pos == 0 {
                continue;
            }
            let data = buf[..pos].to_vec();
            buf.drain(..pos);
            ReplyChunk {
                due,
                data,
                replies: Some(metas),
            }
        } else {
            // Whole replies parsed so far still count as replies; the rest goes raw.
            if !metas.is_empty() {
                let data = buf[..pos].to_vec();
                if replies
                    .send(ReplyChunk {
                        due,
                        data,
                        replies: Some(metas),
                    })
                    .await
                    .is_err()
                {
                    return End::Done;
                }
            }
            let data = buf.split_off(pos);
            buf.clear();
            ReplyChunk {
                due,
                data,
                replies: None,
            }
        };
        if replies.send(chunk).await.is_err() {
            return End::Done;
        }
    }
}

/// Writes replies to the client in request order, inserting local replies where they belong.
async fn client_writer(
    shared: Arc<Shared>,
    mut client: OwnedWriteHalf,
    mut expect_rx: mpsc::UnboundedReceiver<Expect>,
    mut reply_rx: mpsc::Receiver<ReplyChunk>,
) -> End {
    let mut order = Order::default();
    let mut expect_open = true;
    loop {
        // Local replies with nothing from upstream ahead of them go out at once.
        let out = order.flush_locals();
        if !out.data.is_empty() && write(&shared, &mut client, out).await.is_err() {
            return End::Failed;
        }
        tokio::select! {
            biased;
            expected = expect_rx.recv(), if expect_open => match expected {
                Some(expected) => order.push(expected),
                None => expect_open = false,
            },
            chunk = reply_rx.recv() => {
                let Some(chunk) = chunk else {
                    let _ = client.shutdown().await;
                    return End::Done;
                };
                // Every expectation for a request sent upstream is queued before its reply.
                while let Ok(expected) = expect_rx.try_recv() {
                    order.push(expected);
                }
                let (out, cut) = order.answer(chunk);
                if write(&shared, &mut client, out).await.is_err() {
                    return End::Failed;
                }
                if cut {
                    return End::Cut;
                }
            }
        }
    }
}

async fn write(shared: &Shared, client: &mut OwnedWriteHalf, out: Chunk) -> std::io::Result<()> {
    if let Some(due) = out.due {
        tokio::time::sleep_until(due).await;
    }
    client.write_all(&out.data).await?;
    shared
        .counters
        .bytes_to_client
        .fetch_add(out.data.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// The queue of what answers each outstanding request.
#[derive(Default)]
struct Order {
    queue: VecDeque<Expect>,
    unordered: bool,
}

impl Order {
    fn push(&mut self, expected: Expect) {
        match expected {
            Expect::Unordered => self.unordered = true,
            Expect::Upstream { cut: false } if self.unordered => {}
            other => self.queue.push_back(other),
        }
    }

    /// Takes the local replies at the head of the queue (all of them once unordered).
    fn flush_locals(&mut self) -> Chunk {
        let mut out = Chunk {
            due: None,
            data: Vec::new(),
        };
        let mut i = 0;
        while i < self.queue.len() {
            match &self.queue[i] {
                Expect::Local { bytes, due } => {
                    out.data.extend_from_slice(bytes);
                    out.due = out.due.max(*due);
                    self.queue.remove(i);
                }
                _ if self.unordered => i += 1,
                _ => break,
            }
        }
        out
    }

    /// Interleaves a chunk of upstream replies with the queue; `true` if the connection must be
    /// cut after writing the returned bytes.
    fn answer(&mut self, chunk: ReplyChunk) -> (Chunk, bool) {
        let mut out = Chunk {
            due: chunk.due,
            data: Vec::with_capacity(chunk.data.len()),
        };
        let Some(replies) = chunk.replies else {
            let cut = self.take_cut();
            let keep = if cut {
                chunk.data.len() / 2
            } else {
                chunk.data.len()
            };
            out.data.extend_from_slice(&chunk.data[..keep]);
            return (out, cut);
        };
        let mut offset = 0;
        for (len, push) in replies {
            let reply = &chunk.data[offset..offset + len];
            offset += len;
            if !push {
                let locals = self.flush_locals();
                out.data.extend_from_slice(&locals.data);
                if self.next_upstream_is_cut() {
                    out.data.extend_from_slice(&reply[..len / 2]);
                    return (out, true);
                }
            }
            out.data.extend_from_slice(reply);
        }
        let locals = self.flush_locals();
        out.data.extend_from_slice(&locals.data);
        (out, false)
    }

    /// Consumes the expectation a (non-push) upstream reply answers; whether it is the cut one.
    fn next_upstream_is_cut(&mut self) -> bool {
        if let Some(position) = self
            .queue
            .iter()
            .position(|e| matches!(e, Expect::Upstream { .. }))
            && (self.unordered || position == 0)
        {
            return matches!(
                self.queue.remove(position),
                Some(Expect::Upstream { cut: true })
            );
        }
        // An unsolicited reply (e.g. a RESP2 pub/sub message): nothing to consume.
        false
    }

    /// For raw streams: whether a cut is pending (consumes it).
    fn take_cut(&mut self) -> bool {
        match self
            .queue
            .iter()
            .position(|e| matches!(e, Expect::Upstream { cut: true }))
        {
            Some(position) => {
                self.queue.remove(position);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(replies: &[&[u8]]) -> ReplyChunk {
        ReplyChunk {
            due: None,
            data: replies.concat(),
            replies: Some(
                replies
                    .iter()
                    .map(|r| (r.len(), r.starts_with(b">")))
                    .collect(),
            ),
        }
    }

    fn local() -> Expect {
        Expect::Local {
            bytes: THROTTLED,
            due: None,
        }
    }

    #[test]
    fn local_replies_wait_for_earlier_upstream_replies() {
        let mut order = Order::default();
        order.push(Expect::Upstream { cut: false });
        order.push(local());
        order.push(Expect::Upstream { cut: false });
        order.push(local());
        assert!(order.flush_locals().data.is_empty());
        let (out, cut) = order.answer(chunk(&[b":1\r\n"]));
        assert!(!cut);
        assert_eq!(out.data, [&b":1\r\n"[..], THROTTLED].concat());
        let (out, _) = order.answer(chunk(&[b":2\r\n"]));
        assert_eq!(out.data, [&b":2\r\n"[..], THROTTLED].concat());
        assert!(order.queue.is_empty());
    }

    #[test]
    fn pushes_do_not_answer_requests() {
        let mut order = Order::default();
        order.push(Expect::Upstream { cut: false });
        order.push(local());
        let (out, _) = order.answer(chunk(&[b">2\r\n+a\r\n+b\r\n"]));
        assert_eq!(out.data, b">2\r\n+a\r\n+b\r\n");
        let (out, _) = order.answer(chunk(&[b"+OK\r\n"]));
        assert_eq!(out.data, [&b"+OK\r\n"[..], THROTTLED].concat());
    }

    #[test]
    fn cut_forwards_half_of_the_reply() {
        let mut order = Order::default();
        order.push(Expect::Upstream { cut: false });
        order.push(Expect::Upstream { cut: true });
        let (out, cut) = order.answer(chunk(&[b"+OK\r\n", b"$4\r\nabcd\r\n"]));
        assert!(cut);
        assert_eq!(out.data, b"+OK\r\n$4\r\na");
    }

    #[test]
    fn unordered_connections_write_locals_at_once() {
        let mut order = Order::default();
        order.push(Expect::Upstream { cut: false });
        order.push(Expect::Unordered);
        order.push(local());
        assert_eq!(order.flush_locals().data, THROTTLED);
    }
}
