//! The one connection every call of the store goes through: a single node's
//! [`ConnectionManager`] or a Redis Cluster's [`ClusterConnection`], behind one type, so the
//! scripts, retries and `WAIT` logic are the same in both modes.
//!
//! In cluster mode the redis crate's client sends each command (and each pipeline, as a
//! whole) to the master that owns the slot of its first key and follows `MOVED` and `ASK`
//! redirections. Every key of an app shares the app's hash tag, so every command and pipeline
//! of one app goes to one node: the one owning the app's slot.

use std::fmt;
use std::time::Duration;

use checkpoint_core::{Error, Result};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};

use crate::config::WaitForReplicas;
use crate::error::{STORE, from_redis};

/// A single node's connection manager or a cluster connection. Cheap to clone (both are
/// handles on one multiplexed connection per node).
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (standalone or a primary), reconnecting after a drop.
    Single(ConnectionManager),
    /// A Redis Cluster: one multiplexed connection per node, slot map refreshed on
    /// redirections and failures.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A write acknowledged by fewer replicas than [`crate::RedisConfig::with_wait_for_replicas`]
/// asks for, within its timeout. The write itself was applied on the primary; the error is
/// retryable (running the script again is safe) and carried as the source of a retryable
/// [`Error::Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationShortfall {
    /// Replicas that acknowledged the write.
    pub acknowledged: i64,
    /// Replicas asked for.
    pub wanted: u32,
    /// How long the write waited for them.
    pub timeout: Duration,
}

impl fmt::Display for ReplicationShortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the write was applied on the primary but acknowledged by {} of {} replicas within \
             {} ms (WAIT); a failover now could lose it",
            self.acknowledged,
            self.wanted,
            self.timeout.as_millis()
        )
    }
}

impl std::error::Error for ReplicationShortfall {}

fn is_noscript(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) || err.code() == Some("NOSCRIPT")
}

/// One script call: the script, its keys and its arguments.
pub(crate) type Call<'a> = (&'a [String], &'a [String]);

impl Connection {
    /// Runs `script` once per call in one pipeline (one round trip, on the node owning the
    /// app's slot in cluster mode), each by hash (`EVALSHA`), followed by `WAIT` when `wait`
    /// is set. Every call must use keys of one app (one slot).
    ///
    /// On `NOSCRIPT` (a restarted server, `SCRIPT FLUSH`, or in a cluster a failover or
    /// resharding that moved the slot to a node that never loaded the script) the pipeline is
    /// sent again with `SCRIPT LOAD` first, so the script is loaded on exactly the node that
    /// runs it. A script that failed with `NOSCRIPT` did not run, so sending it again is
    /// safe.
    ///
    /// Errors: the mapped redis error ([`from_redis`]); a [`ReplicationShortfall`] as a
    /// retryable [`Error::Backend`] when `WAIT` counted fewer replicas than asked.
    pub(crate) async fn run_scripts(
        &self,
        script: &Script,
        calls: &[Call<'_>],
        wait: Option<WaitForReplicas>,
    ) -> Result<Vec<Value>> {
        let mut values = match self.send_scripts(script, calls, false, wait).await {
            Err(e) if is_noscript(&e) => self.send_scripts(script, calls, true, wait).await,
            other => other,
        }
        .map_err(from_redis)?;
        if let Some(wait) = wait {
            let acknowledged = match values.pop() {
                Some(Value::Int(n)) => n,
                other => {
                    return Err(crate::scripts::protocol_error(format!(
                        "WAIT replied {other:?}"
                    )));
                }
            };
            if acknowledged < i64::from(wait.replicas) {
                let shortfall = ReplicationShortfall {
                    acknowledged,
                    wanted: wait.replicas,
                    timeout: wait.timeout,
                };
                tracing::debug!(%shortfall, "redis WAIT shortfall");
                return Err(Error::backend(STORE, true, shortfall));
            }
        }
        Ok(values)
    }

    async fn send_scripts(
        &self,
        script: &Script,
        calls: &[Call<'_>],
        load: bool,
        wait: Option<WaitForReplicas>,
    ) -> redis::RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        // The first command with a key decides where a cluster sends the whole pipeline, so
        // `SCRIPT LOAD` (keyless) goes to the node that runs the scripts.
        if load {
            pipe.load_script(script).ignore();
        }
        for (keys, args) in calls {
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(keys.len())
                .arg(*keys)
                .arg(*args);
        }
        if let Some(wait) = wait {
            let millis = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
            pipe.cmd("WAIT").arg(wait.replicas).arg(millis);
        }
        let mut conn = self.clone();
        pipe.query_async::<Vec<Value>>(&mut conn).await
    }

    /// Loads `scripts` on the node that holds `key` (the owner of the app's slot in cluster
    /// mode; the one server otherwise), in one round trip.
    pub(crate) async fn load_scripts(&self, key: &str, scripts: &[&Script]) -> Result<()> {
        let mut pipe = redis::pipe();
        // A keyed command first, so a cluster sends the pipeline to the node owning `key`.
        pipe.cmd("TYPE").arg(key).ignore();
        for script in scripts {
            pipe.load_script(script).ignore();
        }
        let mut conn = self.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    /// The server time (`TIME`) of the node that holds `key`, the clock its scripts read.
    pub(crate) async fn time_at(&self, key: &str) -> Result<std::time::SystemTime> {
        let mut pipe = redis::pipe();
        pipe.cmd("TYPE").arg(key).ignore().cmd("TIME");
        let mut conn = self.clone();
        let ((secs, micros),): ((u64, u64),) =
            pipe.query_async(&mut conn).await.map_err(from_redis)?;
        Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }
}
