//! Shared helpers for the exactly-once tests (`exactly_once*.rs`).

use redis_lab::RedisServer;
use resilient_redis::{Client, ExactlyOnceConfig};
use tokio::sync::Mutex;

/// The fault tests share two cores: one at a time.
pub static SERIAL: Mutex<()> = Mutex::const_new(());

/// Tasks writing at once in the workloads.
pub const TASKS: usize = 50;

/// A lab server, a client of it, an admin connection, and exactly-once writes through the client.
pub async fn one_server() -> (
    RedisServer,
    Client,
    redis::aio::MultiplexedConnection,
    resilient_redis::ExactlyOnce,
) {
    let server = RedisServer::start().await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let admin = server.admin().await.unwrap();
    let xo = client.exactly_once(ExactlyOnceConfig::default()).unwrap();
    (server, client, admin, xo)
}

/// The server memory per exactly-once write that the module docs state (`**N bytes of server
/// memory per write**`), which README.md and `lib.rs` must repeat (tests/docs.rs).
pub fn documented_bytes_per_write() -> i64 {
    let figures = bytes_per_write_in(include_str!("../../src/exactly_once/mod.rs"));
    *figures
        .first()
        .expect("the exactly_once module docs state the bytes per write")
}

/// The `N` of every `N bytes of server memory per write` in `text` (doc comments or Markdown).
pub fn bytes_per_write_in(text: &str) -> Vec<i64> {
    const PHRASE: &str = " bytes of server memory per write";
    let text = prose(text);
    text.match_indices(PHRASE)
        .filter_map(|(at, _)| {
            let digits = text[..at].rsplit(|c: char| !c.is_ascii_digit()).next()?;
            digits.parse().ok()
        })
        .collect()
}

/// `text` (Markdown, or Rust with `//!` docs) with the comment markers gone and every run of
/// white space one space: a phrase reads the same wherever its lines break.
pub fn prose(text: &str) -> String {
    text.replace("//!", " ")
        .replace("///", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
