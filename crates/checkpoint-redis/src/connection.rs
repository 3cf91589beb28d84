//! The one connection every call of the store goes through: a single node's
//! [`ConnectionManager`] or a Redis Cluster's [`ClusterConnection`], behind one type, so the
//! scripts, retries and `WAIT` logic are the same in both modes.
//!
//! In cluster mode the redis crate's client sends each command (and each pipeline, as a
//! whole) to the master that owns the slot of its first key and follows `MOVED` and `ASK`
//! redirections. Every key of an app shares the app's hash tag, so every command and pipeline
//! of one app goes to one node: the one owning the app's slot.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use checkpoint_core::{Error, Result};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    Cmd, Pipeline, RedisError, RedisFuture, RedisResult, ServerError, ServerErrorKind, Value,
};

use crate::config::WaitForReplicas;
use crate::error::{STORE, from_redis, has_code, has_detail};
use crate::scripts::{self, LuaScript};

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

/// A server without function commands (before Redis 7.0: `unknown command`), or where this user
/// may not load functions (`NOPERM`): the answers to `FUNCTION LOAD` that make
/// [`ScriptMode::Auto`](crate::ScriptMode::Auto) choose scripts.
fn lacks_functions(err: &RedisError) -> bool {
    has_detail(err, "unknown command") || has_code(err, "NOPERM")
}

/// How the server refused the calls of one script command or pipeline, judged from the errors of
/// the call entries only (indices below `calls`; a pipeline's `WAIT` comes after them and is
/// never taken for a refusal of the calls). `None` unless every error on a call entry is the
/// same refusal: anything else is an error to report, not a form to change.
///
/// A refused call did not run; calls of the same pipeline without an error did run (a flush in
/// the middle of a pipeline of `renew_many` chunks), and are sent again with the refused ones,
/// which every script of this crate makes safe (the same argument as for a retry after a lost
/// reply, see `RedisStore::eval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// `ERR Function not found`: the server does not have the library (a restart without
    /// persistence, `FUNCTION FLUSH`, a master that joined the cluster after open).
    FunctionMissing,
    /// `ERR unknown command`: the server has no `FCALL` (a downgrade, a failover to an older
    /// replica).
    NoFunctions,
    /// `NOSCRIPT`: the server does not have the script (a restart, `SCRIPT FLUSH`, a slot moved
    /// to a node that never loaded it).
    NoScript,
}

fn refusal(err: &RedisError, calls: usize) -> Option<Refusal> {
    let errors = err.clone().into_server_errors()?;
    let mut on_calls = errors.iter().filter(|(i, _)| *i < calls).map(|(_, e)| e);
    let classify = |e: &ServerError| {
        let detail = e.details().unwrap_or_default();
        if detail.starts_with("Function not found") {
            Some(Refusal::FunctionMissing)
        } else if detail.starts_with("unknown command") {
            Some(Refusal::NoFunctions)
        } else if e.kind() == Some(ServerErrorKind::NoScript) || e.code() == "NOSCRIPT" {
            Some(Refusal::NoScript)
        } else {
            None
        }
    };
    let first = classify(on_calls.next()?)?;
    on_calls
        .all(|e| classify(e) == Some(first))
        .then_some(first)
}

/// The form a store's calls take: `FCALL` of the function library while `functions` is set,
/// scripts otherwise. `auto` ([`ScriptMode::Auto`](crate::ScriptMode::Auto)): a server that
/// answers `unknown command` to `FCALL` switches the store to scripts for good; without it
/// ([`ScriptMode::Functions`](crate::ScriptMode::Functions)) that answer is an error.
#[derive(Debug)]
pub(crate) struct LuaForm {
    pub(crate) functions: AtomicBool,
    pub(crate) auto: bool,
}

/// One script call: its keys and its arguments.
pub(crate) type Call<'a> = (&'a [String], &'a [String]);

/// How one call of a script is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `FCALL` of the script's function in the library.
    Function,
    /// `EVALSHA` of the script's hash.
    ByHash,
    /// `EVAL` of the script's source.
    WithSource,
}

/// The command of one call of `script`, sent as `how`.
fn script_cmd(script: &LuaScript, (keys, args): Call<'_>, how: Form) -> Cmd {
    let mut cmd = match how {
        Form::Function => redis::cmd("FCALL").arg(script.function()).clone(),
        Form::ByHash => redis::cmd("EVALSHA").arg(script.hash()).clone(),
        Form::WithSource => redis::cmd("EVAL").arg(script.code()).clone(),
    };
    cmd.arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// `FUNCTION LOAD` of the library. A server that already has it answers that the library
/// exists: the same name is the same text (see [`scripts::LIBRARY_NAME`]), so that is success.
fn function_load() -> Cmd {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(scripts::LIBRARY.as_str())
        .clone()
}

/// The outcome of one `FUNCTION LOAD`: `Ok(true)` loaded or already there, `Ok(false)` the
/// server has no functions or may not load them ([`lacks_functions`]).
fn library_loaded(reply: RedisResult<Value>) -> RedisResult<bool> {
    match reply {
        Ok(_) => Ok(true),
        Err(e) if has_detail(&e, "Library '") && e.to_string().contains("already exists") => {
            Ok(true)
        }
        Err(e) if lacks_functions(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn wait_cmd(wait: WaitForReplicas) -> Cmd {
    let millis = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
    redis::cmd("WAIT").arg(wait.replicas).arg(millis).clone()
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384, as the
/// cluster specification defines it.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// The cluster route to the master owning `slot`.
fn master_route(slot: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )))
}

/// The cluster route to the master owning the slot of `key`.
fn slot_route(key: &str) -> RoutingInfo {
    master_route(key_slot(key.as_bytes()))
}

/// One slot of each master of the cluster, from `CLUSTER SLOTS`.
async fn masters(conn: &ClusterConnection) -> Result<Vec<u16>> {
    let slots = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Value>(&mut conn.clone())
        .await
        .map_err(from_redis)?;
    one_slot_per_master(slots)
}

/// Checks the reply of `WAIT` against what was asked.
fn check_wait(reply: Value, wait: WaitForReplicas) -> Result<()> {
    let acknowledged = match reply {
        Value::Int(n) => n,
        other => {
            return Err(crate::reply::protocol_error(format!(
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
    Ok(())
}

impl Connection {
    /// Runs `script` once per call (all calls with keys of one app, so of one slot), then
    /// `WAIT` when `wait` is set; returns the scripts' replies in order. Each call is an `FCALL`
    /// of the script's function while `form.functions` is set (the store's [`ScriptMode`]
    /// resolved at open), else an `EVALSHA` of its hash.
    ///
    /// - Single node: one pipeline, one round trip (`WAIT` included, on the same connection).
    /// - Cluster: each call a command of its own on the node's multiplexed connection, so the
    ///   cluster client sees each reply and follows `MOVED` and `ASK` (a pipeline's errors are
    ///   only values to it); then `WAIT` sent to the master owning the slot, which is the node
    ///   that ran the scripts unless the slot moved in between (a resharding: `WAIT` then
    ///   answers for the wrong node, and may report replicas that the write did not reach).
    ///
    /// Calls the server refused ([`Refusal`], judged from the call entries only) are sent again,
    /// once, in the form the refusal asks for: `Function not found` loads the library on the
    /// node that refused and sends the `FCALL`s again; `unknown command` to `FCALL`, when
    /// `form.auto`, clears `form.functions` for every later call and sends the calls as
    /// scripts (without `auto` it is returned as an error); `NOSCRIPT` sends them as `EVAL`
    /// with the source, routed and redirected like the `EVALSHA`, so the script runs and is
    /// cached on exactly the node that owns the keys. A refused call did not run; the calls of a
    /// pipeline that did run are sent again with it, which every script makes safe.
    ///
    /// Errors: the mapped redis error ([`from_redis`]); a [`ReplicationShortfall`] as a
    /// retryable [`Error::Backend`] when `WAIT` counted fewer replicas than asked.
    ///
    /// [`ScriptMode`]: crate::ScriptMode
    pub(crate) async fn run_scripts(
        &self,
        script: &LuaScript,
        calls: &[Call<'_>],
        wait: Option<WaitForReplicas>,
        form: &LuaForm,
    ) -> Result<Vec<Value>> {
        match self {
            Self::Single(conn) => {
                let mut values = single_calls(conn, script, calls, wait, form)
                    .await
                    .map_err(from_redis)?;
                if let Some(wait) = wait {
                    let reply = values
                        .pop()
                        .ok_or_else(|| crate::reply::protocol_error("no reply to WAIT"))?;
                    check_wait(reply, wait)?;
                }
                Ok(values)
            }
            Self::Cluster(conn) => {
                let values = futures::future::try_join_all(
                    calls
                        .iter()
                        .map(|call| cluster_call(conn, script, *call, form)),
                )
                .await
                .map_err(from_redis)?;
                if let (Some(wait), Some(key)) = (wait, calls.first().and_then(|c| c.0.first())) {
                    let route = slot_route(key);
                    let reply = conn
                        .clone()
                        .route_command(wait_cmd(wait), route)
                        .await
                        .map_err(from_redis)?;
                    check_wait(reply, wait)?;
                }
                Ok(values)
            }
        }
    }

    /// Loads the function library ([`scripts::LIBRARY`]) on the one server, or on every master
    /// of a cluster (each master runs the calls of its own slots; replicas receive it from
    /// their master). `Ok(false)`: a server has no functions or may not load them, the store
    /// should send scripts.
    pub(crate) async fn load_library(&self) -> Result<bool> {
        match self {
            Self::Single(conn) => {
                library_loaded(function_load().query_async(&mut conn.clone()).await)
                    .map_err(from_redis)
            }
            Self::Cluster(conn) => {
                let mut everywhere = true;
                for slot in masters(conn).await? {
                    let reply = conn
                        .clone()
                        .route_command(function_load(), master_route(slot))
                        .await;
                    everywhere &= library_loaded(reply).map_err(from_redis)?;
                }
                Ok(everywhere)
            }
        }
    }

    /// Loads `scripts` on the node that holds `key` (the master owning the app's slot in
    /// cluster mode; the one server otherwise).
    pub(crate) async fn load_scripts(&self, key: &str, scripts: [&LuaScript; 17]) -> Result<()> {
        let load = |script: &LuaScript| redis::cmd("SCRIPT").arg("LOAD").arg(script.code()).clone();
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for script in scripts {
                    pipe.add_command(load(script)).ignore();
                }
                pipe.query_async::<()>(&mut conn.clone())
                    .await
                    .map_err(from_redis)
            }
            Self::Cluster(conn) => {
                let route = slot_route(key);
                futures::future::try_join_all(scripts.iter().map(|script| {
                    let mut conn = conn.clone();
                    let route = route.clone();
                    async move { conn.route_command(load(script), route).await }
                }))
                .await
                .map_err(from_redis)?;
                Ok(())
            }
        }
    }

    /// The server time (`TIME`) of the node that holds `key`: the clock its scripts read.
    pub(crate) async fn time_at(&self, key: &str) -> Result<std::time::SystemTime> {
        let value = match self {
            Self::Single(conn) => {
                redis::cmd("TIME")
                    .query_async::<Value>(&mut conn.clone())
                    .await
            }
            Self::Cluster(conn) => {
                conn.clone()
                    .route_command(redis::cmd("TIME"), slot_route(key))
                    .await
            }
        }
        .map_err(from_redis)?;
        let (secs, micros): (u64, u64) = redis::from_redis_value(value)
            .map_err(|e| crate::reply::protocol_error(format!("TIME replied {e}")))?;
        Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }

    /// One command per key (`HMGET key fields...`), in one pipeline on a single node, as
    /// concurrent commands on a cluster (each redirected by itself); replies in order.
    pub(crate) async fn hmget_all(&self, keys: &[String], fields: &[&str]) -> Result<Vec<Value>> {
        let hmget = |key: &String| redis::cmd("HMGET").arg(key).arg(fields).clone();
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.add_command(hmget(key));
                }
                pipe.query_async::<Vec<Value>>(&mut conn.clone())
                    .await
                    .map_err(from_redis)
            }
            Self::Cluster(conn) => futures::future::try_join_all(keys.iter().map(|key| {
                let cmd = hmget(key);
                let mut conn = conn.clone();
                async move { cmd.query_async::<Value>(&mut conn).await }
            }))
            .await
            .map_err(from_redis),
        }
    }
}

impl Connection {
    /// Every key matching `pattern` in this database, by `SCAN … MATCH pattern COUNT count` to
    /// completion: on a single node one cursor; on a cluster one cursor per master (one slot of
    /// each distinct master in `CLUSTER SLOTS`, the scan routed to that slot's master), since
    /// each master holds only its own slots. A key may appear twice (`SCAN`'s own guarantee),
    /// and a key created or removed during the scan may be missed or kept; a slot migrating
    /// during the scan may be seen on both masters or on neither.
    ///
    /// Errors: the mapped redis error; a `CLUSTER SLOTS` or `SCAN` reply of another shape is a
    /// protocol error.
    pub(crate) async fn scan_keys(&self, pattern: &str, count: usize) -> Result<Vec<String>> {
        match self {
            Self::Single(conn) => scan_to_end(&mut conn.clone(), None, pattern, count).await,
            Self::Cluster(conn) => {
                let mut conn = conn.clone();
                let mut keys = Vec::new();
                for slot in masters(&conn).await? {
                    keys.extend(scan_to_end(&mut conn, Some(slot), pattern, count).await?);
                }
                Ok(keys)
            }
        }
    }
}

/// `SCAN` with `pattern` until the cursor returns to 0; on a cluster routed to the master of
/// `slot`.
async fn scan_to_end<C: ScanRoute>(
    conn: &mut C,
    slot: Option<u16>,
    pattern: &str,
    count: usize,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let value = conn.send_scan(cmd, slot).await.map_err(from_redis)?;
        let (next, page): (u64, Vec<String>) = redis::from_redis_value(value)
            .map_err(|e| crate::reply::protocol_error(format!("SCAN replied {e}")))?;
        keys.extend(page);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// How a `SCAN` reaches its node: as is on a single node, routed to a slot's master on a
/// cluster.
trait ScanRoute {
    /// Sends `cmd`, routed to the master of `slot` when given (clusters only).
    fn send_scan(&mut self, cmd: Cmd, slot: Option<u16>) -> RedisFuture<'_, Value>;
}

impl ScanRoute for ConnectionManager {
    fn send_scan(&mut self, cmd: Cmd, _slot: Option<u16>) -> RedisFuture<'_, Value> {
        Box::pin(async move { cmd.query_async::<Value>(self).await })
    }
}

impl ScanRoute for ClusterConnection {
    fn send_scan(&mut self, cmd: Cmd, slot: Option<u16>) -> RedisFuture<'_, Value> {
        Box::pin(async move {
            match slot {
                Some(slot) => self.route_command(cmd, master_route(slot)).await,
                None => cmd.query_async::<Value>(self).await,
            }
        })
    }
}

/// The first slot of one range per distinct master in a `CLUSTER SLOTS` reply (each entry:
/// start slot, end slot, then the master as `[host, port, id, …]`, then its replicas).
fn one_slot_per_master(reply: Value) -> Result<Vec<u16>> {
    let bad = |what: &str| crate::reply::protocol_error(format!("CLUSTER SLOTS replied {what}"));
    let Value::Array(ranges) = reply else {
        return Err(bad("no array"));
    };
    let mut masters: Vec<(String, i64)> = Vec::new();
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad("a range that is not an array"));
        };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (fields.first(), fields.get(2))
        else {
            return Err(bad("a range without start slot and master"));
        };
        let host = match master.first() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad("a master without host")),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad("a master without port"));
        };
        let slot = u16::try_from(*start).map_err(|_| bad("a slot out of range"))?;
        let address = (host, *port);
        if !masters.contains(&address) {
            masters.push(address);
            slots.push(slot);
        }
    }
    Ok(slots)
}

/// The calls of [`Connection::run_scripts`] on a single node, each refusal handled as it says.
async fn single_calls(
    conn: &ConnectionManager,
    script: &LuaScript,
    calls: &[Call<'_>],
    wait: Option<WaitForReplicas>,
    form: &LuaForm,
) -> RedisResult<Vec<Value>> {
    if form.functions.load(Ordering::Relaxed) {
        let sent = single_pipeline(conn, script, calls, Form::Function, wait).await;
        match sent.as_ref().err().and_then(|e| refusal(e, calls.len())) {
            Some(Refusal::FunctionMissing) => {
                let reply = function_load().query_async(&mut conn.clone()).await;
                if library_loaded(reply)? {
                    return single_pipeline(conn, script, calls, Form::Function, wait).await;
                }
                if !form.auto {
                    return sent;
                }
                form.functions.store(false, Ordering::Relaxed);
            }
            Some(Refusal::NoFunctions) if form.auto => {
                form.functions.store(false, Ordering::Relaxed);
            }
            _ => return sent,
        }
        tracing::debug!("redis server without functions: sending scripts from now on");
    }
    let sent = single_pipeline(conn, script, calls, Form::ByHash, wait).await;
    match sent.as_ref().err().and_then(|e| refusal(e, calls.len())) {
        Some(Refusal::NoScript) => {
            single_pipeline(conn, script, calls, Form::WithSource, wait).await
        }
        _ => sent,
    }
}

/// One pipeline of every call, sent as `how`, and `WAIT` when set.
async fn single_pipeline(
    conn: &ConnectionManager,
    script: &LuaScript,
    calls: &[Call<'_>],
    how: Form,
    wait: Option<WaitForReplicas>,
) -> RedisResult<Vec<Value>> {
    let mut pipe = redis::pipe();
    for call in calls {
        pipe.add_command(script_cmd(script, *call, how));
    }
    if let Some(wait) = wait {
        pipe.add_command(wait_cmd(wait));
    }
    pipe.query_async::<Vec<Value>>(&mut conn.clone()).await
}

/// One call of [`Connection::run_scripts`] on a cluster, each refusal handled as it says; the
/// library is loaded on the master owning the call's slot.
async fn cluster_call(
    conn: &ClusterConnection,
    script: &LuaScript,
    call: Call<'_>,
    form: &LuaForm,
) -> RedisResult<Value> {
    let mut conn = conn.clone();
    if form.functions.load(Ordering::Relaxed) {
        let sent = script_cmd(script, call, Form::Function)
            .query_async::<Value>(&mut conn)
            .await;
        match sent.as_ref().err().and_then(|e| refusal(e, 1)) {
            Some(Refusal::FunctionMissing) => {
                let route = slot_route(call.0.first().map_or("", String::as_str));
                let reply = conn.route_command(function_load(), route).await;
                if library_loaded(reply)? {
                    return script_cmd(script, call, Form::Function)
                        .query_async::<Value>(&mut conn)
                        .await;
                }
                if !form.auto {
                    return sent;
                }
                form.functions.store(false, Ordering::Relaxed);
            }
            Some(Refusal::NoFunctions) if form.auto => {
                form.functions.store(false, Ordering::Relaxed);
            }
            _ => return sent,
        }
        tracing::debug!("redis cluster node without functions: sending scripts from now on");
    }
    let sent = script_cmd(script, call, Form::ByHash)
        .query_async::<Value>(&mut conn)
        .await;
    match sent.as_ref().err().and_then(|e| refusal(e, 1)) {
        Some(Refusal::NoScript) => {
            script_cmd(script, call, Form::WithSource)
                .query_async::<Value>(&mut conn)
                .await
        }
        _ => sent,
    }
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn key_slots_match_the_cluster_specification() {
        // CRC16/XMODEM of "123456789" is 0x31C3 (the specification's check value).
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        // Values `CLUSTER KEYSLOT` returns.
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"ckpt:{billing}:meta"), key_slot(b"billing"));
    }
}
