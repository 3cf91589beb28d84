//! How the store sends its Lua ([`ScriptMode`]), each case on a private `redis-server` this test
//! starts (so the command counts it reads are the store's alone, and flushing or restarting the
//! server touches no other test): the function library on a server that has functions, scripts
//! on one that has none (started with `FUNCTION` and `FCALL` renamed away, which answers
//! `unknown command` exactly as a server before Redis 7.0 does) or where the user may not load
//! them, scripts when forced, the library loaded again after `FUNCTION FLUSH`, a store whose
//! server restarts without functions switching to scripts (only in `Auto` mode), and a refused
//! `WAIT` never taken for a refusal of the calls before it. Registered under the shared
//! server's reachability (`CHECKPOINT_REDIS_URL`): ignored when no Redis is configured.

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_redis::{RedisConfig, RedisStore, ScriptMode};
use redis::aio::MultiplexedConnection;

#[path = "support/server.rs"]
mod private_server;
use private_server::{NO_FUNCTIONS, Server, until_not_retryable};

fn config(port: u16, mode: ScriptMode) -> RedisConfig {
    RedisConfig::new()
        .with_port(port)
        .with_script_mode(mode)
        .with_backoff(Backoff::none())
        .with_response_timeout(Duration::from_secs(2))
}

async fn admin(port: u16) -> MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

/// Calls of `command` the server has counted (`INFO commandstats`), 0 when never called.
async fn calls(admin: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// The names of the function libraries loaded on the server.
async fn libraries(admin: &mut MultiplexedConnection) -> Vec<String> {
    let list: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("FUNCTION LIST");
    let redis::Value::Array(libraries) = list else {
        panic!("FUNCTION LIST replied {list:?}");
    };
    libraries
        .into_iter()
        .map(|library| {
            let fields: Vec<redis::Value> = redis::from_redis_value(library).expect("fields");
            let name = fields
                .iter()
                .position(|f| {
                    redis::from_redis_value_ref::<String>(f).ok().as_deref() == Some("library_name")
                })
                .and_then(|i| fields.get(i + 1))
                .expect("a library name");
            redis::from_redis_value_ref::<String>(name).expect("a name")
        })
        .collect()
}

/// One lease taken, checkpointed and renewed through `store`: every kind of script call.
async fn exercise(store: &RedisStore) {
    let key = LeaseKey::parse("s", "shard-0").unwrap();
    let me = WorkerId::new("w").unwrap();
    let duration = LeaseDuration::new(Duration::from_secs(60)).unwrap();
    let lease = store
        .get_lease(&key, &me, duration)
        .await
        .expect("get_lease");
    let lease = store
        .checkpoint_sequence(&key, &me, lease.token, &Position::sequence("7").unwrap())
        .await
        .expect("checkpoint");
    let renewed = store
        .renew_many(&me, &[(key.clone(), lease.token)], duration)
        .await
        .expect("renew_many");
    assert_eq!(renewed.renewed.len(), 1);
    let stored = store.fetch_checkpoint(&key).await.unwrap().expect("record");
    assert_eq!(stored.checkpoint, Some(Position::sequence("7").unwrap()));
}

async fn auto_mode_calls_the_function_library_on_a_server_that_has_functions() {
    let (server, port, dir) = Server::start_fresh("functions", &[]).await;
    let mut admin = admin(port).await;
    let store = RedisStore::open(config(port, ScriptMode::Auto), random_app("fn"))
        .await
        .expect("open");
    assert_eq!(store.script_mode(), ScriptMode::Functions);
    let loaded = libraries(&mut admin).await;
    assert!(
        loaded.len() == 1 && loaded[0].starts_with("checkpoint_"),
        "one library of this crate: {loaded:?}"
    );
    exercise(&store).await;
    assert!(
        calls(&mut admin, "fcall").await >= 4,
        "every write is an FCALL"
    );
    assert_eq!(calls(&mut admin, "evalsha").await, 0, "no script was sent");
    assert_eq!(calls(&mut admin, "eval").await, 0, "no script was sent");
    assert_eq!(
        calls(&mut admin, "script|load").await,
        0,
        "no script was loaded"
    );
    // A second store of the same build finds the library loaded and uses it as is.
    let again = RedisStore::open(config(port, ScriptMode::Functions), random_app("fn"))
        .await
        .expect("open again");
    exercise(&again).await;
    assert_eq!(libraries(&mut admin).await, loaded);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn auto_mode_sends_scripts_to_a_server_without_functions() {
    let (server, port, dir) = Server::start_fresh("nofunctions", NO_FUNCTIONS).await;
    let mut admin = admin(port).await;
    let store = RedisStore::open(config(port, ScriptMode::Auto), random_app("fn"))
        .await
        .expect("open");
    assert_eq!(store.script_mode(), ScriptMode::Scripts);
    exercise(&store).await;
    assert!(
        calls(&mut admin, "evalsha").await >= 4,
        "every write is an EVALSHA"
    );

    let forced = RedisStore::open(config(port, ScriptMode::Functions), random_app("fn")).await;
    let err = forced.expect_err("functions asked of a server without them");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("script_mode"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn auto_mode_sends_scripts_when_the_user_may_not_load_functions() {
    let (server, port, dir) = Server::start_fresh("noperm", &[]).await;
    let mut admin = admin(port).await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "limited",
                "on",
                ">pw",
                "~*",
                "&*",
                "+@all",
                "-function",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let limited = config(port, ScriptMode::Auto)
        .with_username("limited")
        .with_password("pw");
    let store = RedisStore::open(limited, random_app("fn"))
        .await
        .expect("open");
    assert_eq!(store.script_mode(), ScriptMode::Scripts);
    exercise(&store).await;
    assert!(libraries(&mut admin).await.is_empty());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn scripts_mode_sends_scripts_to_a_server_with_functions() {
    let (server, port, dir) = Server::start_fresh("scripts", &[]).await;
    let mut admin = admin(port).await;
    let store = RedisStore::open(config(port, ScriptMode::Scripts), random_app("fn"))
        .await
        .expect("open");
    assert_eq!(store.script_mode(), ScriptMode::Scripts);
    exercise(&store).await;
    assert_eq!(calls(&mut admin, "fcall").await, 0);
    assert!(calls(&mut admin, "evalsha").await >= 4);
    assert!(libraries(&mut admin).await.is_empty());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_flushed_library_is_loaded_again_by_the_next_call() {
    let (server, port, dir) = Server::start_fresh("flush", &[]).await;
    let mut admin = admin(port).await;
    let store = RedisStore::open(config(port, ScriptMode::Functions), random_app("fn"))
        .await
        .expect("open");
    exercise(&store).await;
    let loaded = libraries(&mut admin).await;
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .expect("FUNCTION FLUSH");
    assert!(libraries(&mut admin).await.is_empty());
    // No retry budget (Backoff::none): the refused FCALL is answered by loading, not retrying.
    exercise(&store).await;
    assert_eq!(libraries(&mut admin).await, loaded);
    assert_eq!(store.script_mode(), ScriptMode::Functions);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_server_restarted_without_functions_gets_scripts() {
    let (server, port, dir) = Server::start_fresh("downgrade", &[]).await;
    let store = RedisStore::open(config(port, ScriptMode::Auto), random_app("fn"))
        .await
        .expect("open");
    assert_eq!(store.script_mode(), ScriptMode::Functions);
    exercise(&store).await;
    server.kill();
    let server = Server::start(port, &dir, NO_FUNCTIONS).expect("restart");
    server.wait_ready(port).await;
    let key = LeaseKey::parse("s", "shard-1").unwrap();
    let me = WorkerId::new("w").unwrap();
    let duration = LeaseDuration::new(Duration::from_secs(60)).unwrap();
    until_not_retryable(|| store.get_lease(&key, &me, duration))
        .await
        .expect("the call is sent again as a script");
    assert_eq!(store.script_mode(), ScriptMode::Scripts);
    exercise(&store).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn functions_mode_reports_a_server_that_lost_functions_instead_of_switching() {
    let (server, port, dir) = Server::start_fresh("forced", &[]).await;
    let store = RedisStore::open(config(port, ScriptMode::Functions), random_app("fn"))
        .await
        .expect("open");
    exercise(&store).await;
    server.kill();
    let server = Server::start(port, &dir, NO_FUNCTIONS).expect("restart");
    server.wait_ready(port).await;
    let key = LeaseKey::parse("s", "shard-1").unwrap();
    let me = WorkerId::new("w").unwrap();
    let duration = LeaseDuration::new(Duration::from_secs(60)).unwrap();
    let refused = until_not_retryable(|| store.get_lease(&key, &me, duration)).await;
    assert!(
        refused.is_err(),
        "script_mode=functions never falls back to scripts: {refused:?}"
    );
    assert_eq!(store.script_mode(), ScriptMode::Functions);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused `WAIT` after the calls of a pipeline is the caller's error, never taken for a
/// refusal of the calls: the store does not switch to scripts and does not send the calls again.
/// (Opening runs the init function followed by `WAIT`, so the open itself is refused here.)
async fn a_refused_wait_is_not_a_refusal_of_the_calls() {
    let (server, port, dir) = Server::start_fresh("nowait", &[]).await;
    let mut admin = admin(port).await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "nowait", "on", ">pw", "~*", "&*", "+@all", "-wait",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let config = config(port, ScriptMode::Auto)
        .with_username("nowait")
        .with_password("pw")
        .with_wait_for_replicas(1, Duration::from_millis(10));
    let refused = RedisStore::open(config, random_app("fn")).await;
    let err = refused.expect_err("WAIT is refused");
    assert!(err.to_string().contains("wait"), "{err}");
    assert_eq!(
        calls(&mut admin, "fcall").await,
        1,
        "the init FCALL, not sent again"
    );
    assert_eq!(
        calls(&mut admin, "evalsha").await,
        0,
        "no switch to scripts"
    );
    assert_eq!(calls(&mut admin, "eval").await, 0, "no switch to scripts");
    assert_eq!(
        calls(&mut admin, "script|load").await,
        0,
        "no switch to scripts"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Redis,
    tests: [
        auto_mode_calls_the_function_library_on_a_server_that_has_functions,
        auto_mode_sends_scripts_to_a_server_without_functions,
        auto_mode_sends_scripts_when_the_user_may_not_load_functions,
        scripts_mode_sends_scripts_to_a_server_with_functions,
        a_flushed_library_is_loaded_again_by_the_next_call,
        a_server_restarted_without_functions_gets_scripts,
        functions_mode_reports_a_server_that_lost_functions_instead_of_switching,
        a_refused_wait_is_not_a_refusal_of_the_calls,
    ],
}
