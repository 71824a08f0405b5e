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
