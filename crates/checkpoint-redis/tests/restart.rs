//! A server killed (`SIGKILL`) and restarted under a live store, on a private `redis-server`
//! this test starts on a free port (`CHECKPOINT_REDIS_SERVER` names the binary, default
//! `redis-server` on the `PATH`; a missing binary fails the test). Registered under the shared
//! server's reachability (`CHECKPOINT_REDIS_URL`): ignored when no Redis is configured. While the server is down every operation is a
//! retryable error; after the restart the store reconnects by itself and reloads its scripts.
//! What the restarted server still knows is what the crate docs promise: with
//! `appendfsync always` the acknowledged checkpoint is there; with no persistence the record is
//! gone and the holder's next write is `LeaseLost`, never a false success.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, Error, Lease, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_redis::{RedisConfig, RedisStore};

fn server_binary() -> String {
    std::env::var("CHECKPOINT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A `redis-server` child process, killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, dir: &PathBuf, aof: bool) -> Option<Self> {
        let mut cmd = Command::new(server_binary());
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd.spawn().ok()?;
        Some(Self { child })
    }

    /// Polls until the server answers PING (a condition, not a guess), at most 10 s.
    async fn wait_ready(&self, port: u16) {
        let started = Instant::now();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn seq(n: u64) -> Position {
    Position::sequence(&n.to_string()).unwrap()
}

/// Retries `op` while it fails with a retryable error (the store reconnects lazily), at most
/// 10 s; returns the first non-retryable outcome.
async fn until_not_retryable<F, Fut>(mut op: F) -> checkpoint_core::Result<Lease>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = checkpoint_core::Result<Lease>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Err(e) if e.is_retryable() && started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn kill_and_restart(aof: bool) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("checkpoint-redis-restart-{}", random_app("d")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some(server) = Server::start(port, &dir, aof) else {
        panic!(
            "no {} binary: install redis-server or set CHECKPOINT_REDIS_SERVER",
            server_binary()
        );
    };
    server.wait_ready(port).await;
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

    let server = Server::start(port, &dir, aof).expect("restart");
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
