//! Shared by this crate's integration tests: where the server is, and a raw connection for
//! inspecting and disturbing it.
#![allow(dead_code)]

use checkpoint_core::AppName;
use checkpoint_redis::{RedisConfig, RedisStore};
use redis::aio::MultiplexedConnection;

pub(crate) const HOW: &str =
    "start one with `redis-server --port 6379` or set CHECKPOINT_REDIS_URL";

pub(crate) fn url() -> String {
    std::env::var("CHECKPOINT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

pub(crate) fn config() -> RedisConfig {
    RedisConfig::from_url(&url()).expect("CHECKPOINT_REDIS_URL is a valid redis URL")
}

/// A store on `config` for `app`. The harness (`checkpoint_test_support`) runs the server
/// tests only when the server listens, so any error fails the test; `None` is never returned.
pub(crate) async fn open(config: RedisConfig, app: AppName) -> Option<RedisStore> {
    match RedisStore::open(config, app).await {
        Ok(store) => Some(store),
        Err(e) => panic!("opening the store failed although the server listens: {e:?}"),
    }
}

/// A plain connection of its own, for commands the store never sends (CLIENT KILL, HSET of
/// garbage, TYPE, ...).
pub(crate) async fn admin() -> MultiplexedConnection {
    redis::Client::open(url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

/// The server's clock in milliseconds.
pub(crate) async fn server_ms(admin: &mut MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(admin).await.expect("TIME");
    secs * 1000 + micros / 1000
}
