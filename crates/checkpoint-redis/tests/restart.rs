//! A server killed (`SIGKILL`) and restarted under a live store, on a private `redis-server`
//! this test starts on a free port (`CHECKPOINT_REDIS_SERVER` names the binary, default
//! `redis-server` on the `PATH`; a missing binary fails the test). Registered under the shared
//! server's reachability (`CHECKPOINT_REDIS_URL`): ignored when no Redis is configured. While the server is down every operation is a
//! retryable error; after the restart the store reconnects by itself and reloads its scripts.
//! What the restarted server still knows is what the crate docs promise: with
//! `appendfsync always` the acknowledged checkpoint is there; with no persistence the record is
//! gone and the holder's next write is `LeaseLost`, never a false success.

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, Error, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_redis::{RedisConfig, RedisStore};

#[path = "support/server.rs"]
mod private_server;
use private_server::{AOF_ALWAYS, Server, until_not_retryable};

fn seq(n: u64) -> Position {
    Position::sequence(&n.to_string()).unwrap()
}

async fn kill_and_restart(aof: bool) {
    let args: &[&str] = if aof { AOF_ALWAYS } else { &[] };
    let (server, port, dir) = Server::start_fresh("restart", args).await;
    let config = RedisConfig::new()
        .with_port(port)
        .with_backoff(Backoff::none())
        .with_response_timeout(Duration::from_secs(2));
    let store = RedisStore::open(config, random_app("restart"))
        .await
        .expect("open");
    let key = LeaseKey::parse("s", "shard-0").unwrap();
    let me = WorkerId::new("w").unwrap();
    let lease = store
        .get_lease(
            &key,
            &me,
            LeaseDuration::new(Duration::from_secs(60)).unwrap(),
        )
        .await
        .unwrap();
    store
        .checkpoint_sequence(&key, &me, lease.token, &seq(1))
        .await
        .unwrap();

    server.kill();
    let down = store
        .checkpoint_sequence(&key, &me, lease.token, &seq(2))
        .await;
    match &down {
        Err(e) if e.is_retryable() => {}
        other => panic!("with the server down: expected a retryable error, got {other:?}"),
    }

    let server = Server::start(port, &dir, args).expect("restart");
    server.wait_ready(port).await;
    let two = seq(2);
    let after =
        until_not_retryable(|| store.checkpoint_sequence(&key, &me, lease.token, &two)).await;
    if aof {
        let lease = after.expect("the record survived the restart (appendfsync always)");
        assert_eq!(lease.checkpoint, Some(seq(2)));
        let stored = store.fetch_checkpoint(&key).await.unwrap().expect("record");
        assert_eq!(
            (stored.token, stored.checkpoint),
            (lease.token, Some(seq(2)))
        );
    } else {
        assert!(
            matches!(after, Err(Error::LeaseLost { .. })),
            "without persistence the record is gone: expected LeaseLost, got {after:?}"
        );
        assert!(store.fetch_checkpoint(&key).await.unwrap().is_none());
        // The restarted server lost the function library with the data; the store loaded it
        // again when its first call was refused, and still calls functions.
        assert_eq!(store.script_mode(), checkpoint_redis::ScriptMode::Functions);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn restart_with_aof_always_keeps_acknowledged_checkpoints() {
    kill_and_restart(true).await;
}

async fn restart_without_persistence_fences_instead_of_false_success() {
    kill_and_restart(false).await;
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Redis,
    tests: [
        restart_with_aof_always_keeps_acknowledged_checkpoints,
        restart_without_persistence_fences_instead_of_false_success,
    ],
}
