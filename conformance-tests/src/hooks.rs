//! Each in-tree backend's [`BackendHooks`](checkpoint_core::conformance::BackendHooks): how its conformance run helps the suite's backend
//! scenarios (raw records, an incompatible layout, the caller's transaction, a killed child
//! process, a lossy link). What a backend cannot provide is answered
//! [`Hooked::Unsupported`] with why, and printed in its capability row.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use checkpoint_core::conformance::Hooked;
use checkpoint_core::{Error, FencingToken, LeaseKey, Position, Result, WorkerId};
use tokio::io::{AsyncBufReadExt, BufReader};

#[cfg(feature = "dynamo")]
pub mod dynamo;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Acknowledged checkpoints after which the child is killed.
const ACKS_BEFORE_KILL: usize = 25;

/// How long the child may take to acknowledge them.
const CHILD_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `exe` (the `checkpoint-loop` binary of this package) checkpointing `key` for `app` on
/// the store `backend` at `location`, kills it with `SIGKILL` once it acknowledged
/// 25 positions (or after 60 s), and answers every position it
/// acknowledged, in order. A child that exits by itself is an error carrying its stderr.
pub async fn checkpoint_until_killed(
    exe: &Path,
    backend: &str,
    location: &str,
    app: &checkpoint_core::AppName,
    key: &LeaseKey,
    worker: &WorkerId,
    token: FencingToken,
) -> Result<Hooked<Vec<Position>>> {
    let failed = |what: String| Error::backend_message("checkpoint-loop", false, what);
    let mut child = tokio::process::Command::new(exe)
        .args([
            backend,
            location,
            app.as_str(),
            key.stream.as_str(),
            key.shard.as_str(),
            worker.as_str(),
            &token.0.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("spawning {}: {e}", exe.display())))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    let deadline = tokio::time::Instant::now() + CHILD_PATIENCE;
    while acked.len() < ACKS_BEFORE_KILL {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => acked.push(parse_ack(&line).map_err(failed)?),
            Ok(Ok(None)) | Ok(Err(_)) => {
                let output = child.wait_with_output().await;
                let stderr = output
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default();
                return Err(failed(format!(
                    "the child exited after {} acknowledgements: {stderr}",
                    acked.len()
                )));
            }
            Err(_) => break,
        }
    }
    child
        .start_kill()
        .map_err(|e| failed(format!("kill -9: {e}")))?;
    // Acknowledgements written before the kill are still in the pipe.
    while let Ok(Some(line)) = lines.next_line().await {
        acked.push(parse_ack(&line).map_err(failed)?);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| failed(format!("wait: {e}")))?;
    if status.success() {
        return Err(failed(
            "the child exited cleanly instead of being killed".into(),
        ));
    }
    Ok(Hooked::Done(acked))
}

fn parse_ack(line: &str) -> std::result::Result<Position, String> {
    Position::sequence(line.trim()).map_err(|e| format!("the child printed {line:?}: {e}"))
}

/// A [`LossyLink`](checkpoint_core::conformance::LossyLink) over `checkpoint_test_support`'s proxy, armed with one drop rule.
#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "dynamo"
))]
pub struct ProxyLink {
    /// The proxy.
    pub proxy: checkpoint_test_support::LossyProxy,
    /// The reply it drops when armed.
    pub rule: checkpoint_test_support::DropRule,
}

#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "dynamo"
))]
impl checkpoint_core::conformance::LossyLink for ProxyLink {
    fn drop_next_reply(&self) {
        self.proxy.arm(self.rule);
    }

    fn dropped(&self) -> usize {
        self.proxy.dropped()
    }
}
