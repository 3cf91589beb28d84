//! A private `redis-server` for tests that restart, reconfigure or flush a server: started by
//! the test on a free loopback port (`CHECKPOINT_REDIS_SERVER` names the binary, default
//! `redis-server` on the `PATH`), no snapshots, killed when dropped.

#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use checkpoint_core::Lease;

pub(crate) fn server_binary() -> String {
    std::env::var("CHECKPOINT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A `redis-server` child process, killed when dropped.
pub(crate) struct Server {
    child: Child,
}

/// The arguments that make a server persist every write to its append-only file before
/// acknowledging it.
pub(crate) const AOF_ALWAYS: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// The arguments that make a server behave as one before Redis 7.0 towards this crate: no
/// `FUNCTION` command, no `FCALL` (`unknown command`, as an older server answers).
pub(crate) const NO_FUNCTIONS: &[&str] = &[
    "--rename-command",
    "FUNCTION",
    "",
    "--rename-command",
    "FCALL",
    "",
    "--rename-command",
    "FCALL_RO",
    "",
];

impl Server {
    /// Starts a server on `port` with its files in `dir` and `extra` arguments (no append-only
    /// file unless `extra` asks for one); `None` when the binary cannot be started.
    pub(crate) fn start(port: u16, dir: &Path, extra: &[&str]) -> Option<Self> {
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
        if !extra.contains(&"--appendonly") {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(extra);
        let child = cmd.spawn().ok()?;
        Some(Self { child })
    }

    /// [`Server::start`] on a free port and a fresh directory named after `tag`, waiting until
    /// it answers; panics (failing the test) when no server binary can be started.
    pub(crate) async fn start_fresh(tag: &str, extra: &[&str]) -> (Self, u16, std::path::PathBuf) {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "checkpoint-redis-{tag}-{}",
            checkpoint_core::conformance::random_app("d")
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let Some(server) = Self::start(port, &dir, extra) else {
            panic!(
                "no {} binary: install redis-server or set CHECKPOINT_REDIS_SERVER",
                server_binary()
            );
        };
        server.wait_ready(port).await;
        (server, port, dir)
    }

    /// Polls until the server answers PING (a condition, not a guess), at most 10 s.
    pub(crate) async fn wait_ready(&self, port: u16) {
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

    pub(crate) fn kill(mut self) {
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

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Retries `op` while it fails with a retryable error (the store reconnects lazily), at most
/// 10 s; returns the first non-retryable outcome.
pub(crate) async fn until_not_retryable<F, Fut>(mut op: F) -> checkpoint_core::Result<Lease>
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
