//! [`RedisStore`] and its [`LeaseManager`] implementation ([`checkpoint_core::Checkpointer`] is in
//! `checkpoints.rs`, [`checkpoint_core::Membership`] in `membership.rs`).
//!
//! Every conditional operation is one Lua script from [`crate::scripts`], called as a function
//! of the library (`FCALL`) or sent by its SHA1 (`EVALSHA`; `EVAL` on `NOSCRIPT`), see
//! [`crate::ScriptMode`] and `connection.rs`. A script runs
//! atomically on the server: it reads the record, reads the server clock (`TIME`), applies the
//! transcription of the matching [`checkpoint_core::rules`] function and writes the record
//! back, with no other command of any client in between. Reads that need no condition are single commands
//! (`HMGET`, `ZRANGEBYLEX`), atomic by themselves.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use checkpoint_core::Listing;
use checkpoint_core::{
    AppName, BatchMode, Capabilities, ClockSource, Durability, Error, FencingToken, InstanceId,
    Lease, LeaseDuration, LeaseKey, LeaseManager, Position, RenewOutcome, Result, ShardId,
    StreamName, WorkerId, rules,
};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use crate::config::RedisConfig;
use crate::connection::{Connection, LuaForm};
use crate::error::{STORE, from_redis};
use crate::reply::{self, Reply, Status};
use crate::scripts::{self, KeyLayout, LuaScript, ScriptMode};

/// The most leases one renew-many script renews: a larger batch is several scripts in one
/// pipeline, so the single-threaded server serves other clients between them (about 3 ms of
/// script time each on a small machine).
pub const RENEW_MANY_CHUNK: usize = 1_000;

/// Keys `SCAN` examines per step when listing apps: a hint to the server, which answers each
/// step in time proportional to it.
const SCAN_COUNT: usize = 1_000;

/// A lease/checkpoint store on one Redis server or one Redis Cluster, for one app.
///
/// Cheap to clone; clones and [`RedisStore::for_app`] handles share one connection: a
/// [`ConnectionManager`] (one multiplexed connection, reconnecting after it drops) on a single
/// node, a [`ClusterConnection`] (one multiplexed connection per node, following `MOVED` and
/// `ASK`) on a cluster. `Send + Sync`, usable as `Arc<dyn checkpoint_core::Store>`.
///
/// ```no_run
/// use std::sync::Arc;
/// use checkpoint_core::{AppName, Store};
/// use checkpoint_redis::{RedisConfig, RedisStore};
///
/// # async fn run() -> checkpoint_core::Result<()> {
/// let config = RedisConfig::from_url("redis://:secret@127.0.0.1:6379/0?prefix=ckpt")?;
/// let billing = RedisStore::open(config, AppName::new("billing")?).await?;
/// let audit = billing.for_app(AppName::new("audit")?); // same connection, its own keys
/// let store: Arc<dyn Store> = Arc::new(billing);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) app: AppName,
    pub(crate) keys: KeyLayout,
    pub(crate) inner: Arc<Inner>,
    /// This handle's nonce, written with the membership entries it registers.
    pub(crate) instance: InstanceId,
}

pub(crate) struct Inner {
    config: RedisConfig,
    conn: Connection,
    /// Whether calls go as `FCALL` of the function library (else as scripts): the
    /// [`ScriptMode`] resolved at init, cleared in `Auto` mode if a server later answers that
    /// it has no functions (see [`Connection::run_scripts`]).
    lua: LuaForm,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug redacts the password; the connection is not shown.
        f.debug_struct("RedisStore")
            .field("app", &self.app)
            .field("hash_tag", &self.keys.hash_tag())
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A fresh 128-bit nonce in hex, from std's randomly keyed hasher over a counter, the time and
/// the process id. Unique enough to tell two `create_lease_if_absent` calls apart; not secret.
fn nonce() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let half = |salt: u64| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u64(count);
        hasher.write_u128(time);
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// The reply's record; a missing one where the status promises it is a protocol error.
pub(crate) fn record(reply: Reply) -> Result<Lease> {
    reply
        .lease
        .ok_or_else(|| reply::protocol_error("a successful reply without the record"))
}

/// Turns a `CORRUPT` or unknown status into its error.
pub(crate) fn unexpected(key: &LeaseKey, reply: &Reply) -> Error {
    match reply.status {
        Status::Corrupt => reply::corrupt_field(key, &reply.detail),
        other => reply::protocol_error(format!("status {other:?} for {key}")),
    }
}

pub(crate) fn lost(key: &LeaseKey, worker: &WorkerId, token: FencingToken) -> Error {
    Error::LeaseLost {
        key: key.clone(),
        worker: worker.clone(),
        token,
    }
}

impl RedisStore {
    /// Connects to the server (or, with [`RedisConfig::with_cluster_nodes`], the cluster)
    /// described by `config` for `app`, and runs [`LeaseManager::init`] (loads the scripts on
    /// the node owning the app's slot, checks the key layout). Invalid settings are
    /// [`Error::InvalidInput`]; an unreachable server is a retryable [`Error::Backend`].
    pub async fn open(config: RedisConfig, app: AppName) -> Result<Self> {
        config.validate()?;
        #[cfg(feature = "tls")]
        if config.tls() {
            // rustls needs one process-wide crypto provider; when another crate of the build
            // enables a second one, it cannot pick by itself. Installing ring fails harmlessly
            // when a provider is already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if config.is_cluster() {
            let client = config.cluster_client()?;
            let conn = client.get_async_connection().await.map_err(from_redis)?;
            return Self::with_connection(Connection::Cluster(conn), config, app).await;
        }
        let client = config.client()?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout()))
            .set_response_timeout(Some(config.response_timeout()))
            // Reconnection attempts inside the manager, per failed operation; the store's own
            // backoff retries the operation on top.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(from_redis)?;
        Self::with_connection(Connection::Single(conn), config, app).await
    }

    /// A store on a connection the application already has (bring your own client), for
    /// `app`, with the key prefix and backoff of `config`; its connection settings (address,
    /// credentials, TLS, timeouts) are not used, the manager's own are. Runs
    /// [`LeaseManager::init`] as [`RedisStore::open`] does (loads the scripts, checks the key
    /// layout).
    ///
    /// ```no_run
    /// use checkpoint_core::AppName;
    /// use checkpoint_redis::{RedisConfig, RedisStore, redis};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    /// let manager = redis::aio::ConnectionManager::new(client).await?;
    /// let config = RedisConfig::from_url("redis://unused/?prefix=ckpt")?;
    /// let store = RedisStore::from_connection_manager(manager, config, AppName::new("billing")?).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::InvalidInput`] for an invalid prefix; a retryable [`Error::Backend`]
    /// when the server cannot be reached once the backoff is spent.
    pub async fn from_connection_manager(
        conn: ConnectionManager,
        config: RedisConfig,
        app: AppName,
    ) -> Result<Self> {
        Self::with_connection(Connection::Single(conn), config, app).await
    }

    /// A store on a Redis Cluster connection the application already has, for `app`, with the
    /// key prefix, backoff and `WAIT` setting of `config` (its addresses, credentials, TLS and
    /// timeouts are not used, the connection's own are). Runs [`LeaseManager::init`] as
    /// [`RedisStore::open`] does.
    ///
    /// ```no_run
    /// use checkpoint_core::AppName;
    /// use checkpoint_redis::{RedisConfig, RedisStore, redis};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::cluster::ClusterClient::new(vec!["redis://127.0.0.1:7000/"])?;
    /// let conn = client.get_async_connection().await?;
    /// let config = RedisConfig::new().with_prefix("ckpt");
    /// let store = RedisStore::from_cluster_connection(conn, config, AppName::new("billing")?).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: as [`RedisStore::from_connection_manager`].
    pub async fn from_cluster_connection(
        conn: ClusterConnection,
        config: RedisConfig,
        app: AppName,
    ) -> Result<Self> {
        Self::with_connection(Connection::Cluster(conn), config, app).await
    }

    async fn with_connection(conn: Connection, config: RedisConfig, app: AppName) -> Result<Self> {
        config.validate()?;
        let store = Self {
            keys: KeyLayout::new(config.prefix(), &app),
            app,
            inner: Arc::new(Inner {
                lua: LuaForm {
                    functions: AtomicBool::new(config.script_mode() != ScriptMode::Scripts),
                    auto: config.script_mode() == ScriptMode::Auto,
                },
                config,
                conn,
            }),
            instance: InstanceId::random(),
        };
        store.init().await?;
        Ok(store)
    }

    /// [`RedisConfig::from_url`] then [`RedisStore::open`]: connects and runs init.
    pub async fn connect(url: &str, app: AppName) -> Result<Self> {
        Self::open(RedisConfig::from_url(url)?, app).await
    }

    /// A handle for another app on the same connection, with an instance nonce of its own.
    /// Call [`LeaseManager::init`] on it before first use if the app may be new (it checks the
    /// app's key layout).
    pub fn for_app(&self, app: AppName) -> Self {
        Self {
            keys: KeyLayout::new(self.inner.config.prefix(), &app),
            app,
            inner: self.inner.clone(),
            instance: InstanceId::random(),
        }
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The keys of this store's app.
    pub fn key_layout(&self) -> &KeyLayout {
        &self.keys
    }

    /// How this store sends its Lua now: [`ScriptMode::Functions`] or [`ScriptMode::Scripts`]
    /// ([`RedisConfig::with_script_mode`]; `Auto` resolved at open by whether the server
    /// accepted the function library).
    pub fn script_mode(&self) -> ScriptMode {
        if self.inner.lua.functions.load(Ordering::Relaxed) {
            ScriptMode::Functions
        } else {
            ScriptMode::Scripts
        }
    }

    /// Loads the Lua the store will call: the function library (`FUNCTION LOAD`, on every
    /// master of a cluster) unless the mode is [`ScriptMode::Scripts`] or, for
    /// [`ScriptMode::Auto`], the server has no functions; otherwise every script
    /// (`SCRIPT LOAD` in one pipeline, on the node owning the app's slot, so later calls go by
    /// hash).
    ///
    /// Errors: a non-retryable [`Error::Backend`] when [`ScriptMode::Functions`] was asked of a
    /// server without functions; the mapped redis error otherwise.
    async fn load_lua(&self, meta_key: &str) -> Result<()> {
        let backoff = self.inner.config.backoff();
        let mode = self.inner.config.script_mode();
        let functions = mode != ScriptMode::Scripts
            && backoff.retry(|_| self.inner.conn.load_library()).await?;
        if mode == ScriptMode::Functions && !functions {
            return Err(Error::backend_message(
                STORE,
                false,
                "script_mode=functions, but the server has no functions (Redis 7.0 or later) \
                 or this user may not load them (FUNCTION LOAD); use script_mode=scripts",
            ));
        }
        self.inner.lua.functions.store(functions, Ordering::Relaxed);
        if !functions {
            backoff
                .retry(|_| self.inner.conn.load_scripts(meta_key, scripts::all()))
                .await?;
        }
        Ok(())
    }

    /// The server-side id (`CLIENT ID`) of the connection currently in use, for `CLIENT LIST`
    /// and `CLIENT KILL ID`. It changes when the store reconnects. (In cluster mode: the id of
    /// the connection to whichever node the client picks, so of little use.)
    pub async fn client_id(&self) -> Result<i64> {
        self.command(|| redis::cmd("CLIENT").arg("ID").clone())
            .await
    }

    /// Runs one command, retried with the configured backoff on transient faults. Only used for
    /// reads and for writes that are idempotent as a whole (`ZREM`).
    pub(crate) async fn command<T, F>(&self, build: F) -> Result<T>
    where
        T: redis::FromRedisValue + Send,
        F: Fn() -> redis::Cmd + Send + Sync,
    {
        let build = &build;
        self.inner
            .config
            .backoff()
            .retry(|_| {
                let mut conn = self.inner.conn.clone();
                async move {
                    build()
                        .query_async::<T>(&mut conn)
                        .await
                        .map_err(from_redis)
                }
            })
            .await
    }

    /// Runs one script, as an `FCALL` of its function or by hash (`EVALSHA`) as the store's
    /// [`ScriptMode`] says (loading the library or the script where a node refuses the call for
    /// lack of it, see [`Connection::run_scripts`]), followed by `WAIT` when
    /// [`RedisConfig::with_wait_for_replicas`] is set, retried with the configured backoff on
    /// transient faults.
    ///
    /// A fault after the script was sent (dropped connection, response timeout, a failover)
    /// leaves it unknown whether the script ran. The retry runs the same script again, which
    /// reads the record as it is then and applies the rule to it: every script is written so
    /// that running it again after it already ran returns the same success (the grant to the
    /// same worker, the renewal, the equal checkpoint, the completed release or steal, the
    /// creation nonce), so a lost reply is resolved by re-reading, never reported as a failure
    /// or success by guessing. The same makes a `WAIT` shortfall safe to retry. When the
    /// retries are spent the caller gets a retryable [`Error::Backend`].
    pub(crate) async fn eval(
        &self,
        script: &'static LuaScript,
        keys: &[String],
        args: &[String],
    ) -> Result<Value> {
        let mut values = self.eval_pipelined(script, &[(keys, args)]).await?;
        values
            .pop()
            .ok_or_else(|| reply::protocol_error("no reply to a script"))
    }

    /// Runs one script several times in one pipeline (one round trip), once per `(keys, args)`
    /// (all of this app, so of one slot), then `WAIT` if configured; retried as a whole like
    /// [`Self::eval`], which every script of this crate makes safe.
    pub(crate) async fn eval_pipelined(
        &self,
        script: &'static LuaScript,
        calls: &[(&[String], &[String])],
    ) -> Result<Vec<Value>> {
        let wait = self.inner.config.wait_for_replicas();
        self.inner
            .config
            .backoff()
            .retry(|_| {
                self.inner
                    .conn
                    .run_scripts(script, calls, wait, &self.inner.lua)
            })
            .await
    }

    /// Runs a lease script on the record of `key` and decodes its reply.
    pub(crate) async fn lease_script(
        &self,
        script: &'static LuaScript,
        key: &LeaseKey,
        with_index: bool,
        args: Vec<String>,
    ) -> Result<Reply> {
        let mut keys = vec![self.keys.lease(key)];
        if with_index {
            keys.push(self.keys.index());
        }
        let value = self.eval(script, &keys, &args).await?;
        reply::decode_reply(key, value)
    }
}

#[async_trait]
impl LeaseManager for RedisStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(STORE, ClockSource::Server, Durability::ServerConfigured)
            .with_renew_many(BatchMode::OneRoundTrip)
            .with_multi_process(true)
    }

    /// Loads the function library or every script (see [`RedisConfig::with_script_mode`]) and
    /// checks the app's keys:
    /// each present key must have the type this layout gives it, and the meta hash's `layout`
    /// must be this version (written when absent). Anything else is
    /// [`Error::SchemaMismatch`] naming the key. Idempotent; concurrent calls are safe (one
    /// script, `HSETNX`).
    async fn init(&self) -> Result<()> {
        let keys = [self.keys.meta(), self.keys.index(), self.keys.workers()];
        self.load_lua(&keys[0]).await?;
        let reply = reply::items(
            self.eval(&scripts::INIT, &keys, &[scripts::LAYOUT_VERSION.to_owned()])
                .await?,
        )?;
        let status = reply.first().map(reply::text).transpose()?;
        let detail = reply
            .get(1)
            .map(reply::text)
            .transpose()?
            .unwrap_or_default();
        match status.as_deref() {
            Some("OK") => Ok(()),
            Some("MISMATCH") => Err(Error::SchemaMismatch {
                store: STORE,
                detail,
            }),
            other => Err(reply::protocol_error(format!("init status {other:?}"))),
        }
    }

    /// Operation 2, one script: creates the record and its index entry only if `EXISTS` is
    /// false, atomically, so two creators never both report `true` (a retry of this call whose
    /// reply was lost recognises its own nonce and still reports `true`).
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        let parents = parents
            .iter()
            .map(ShardId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let (has_initial, text, sub) = match initial {
            Some(p) => ("1", p.encode(), p.sub_sequence().to_string()),
            None => ("0", String::new(), "0".to_owned()),
        };
        let keys = [self.keys.lease(key), self.keys.index()];
        let args = [
            KeyLayout::member(key),
            parents,
            has_initial.to_owned(),
            text,
            sub,
            nonce(),
        ];
        match self.eval(&scripts::CREATE, &keys, &args).await? {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(reply::protocol_error(format!("create replied {other:?}"))),
        }
    }

    /// Operation 3, one script (`rules::get_lease`): mutual exclusion holds because the script
    /// reads owner and deadline and writes the grant with no other command in between, judging
    /// expiry by the server's `TIME`; a grant to a new owner bumps the token (fencing). A
    /// retried call finds itself the owner and only moves the deadline, so it never bumps twice.
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let args = vec![
            worker.to_string(),
            duration.as_millis().to_string(),
            KeyLayout::member(key),
        ];
        let reply = self
            .lease_script(&scripts::GET_LEASE, key, true, args)
            .await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::Held => {
                let now = reply
                    .now
                    .ok_or_else(|| reply::protocol_error("HELD without the server time"))?;
                let lease = record(reply)?;
                // A free lease reserved for its claimant is held for everyone else.
                let holder = lease
                    .owner
                    .clone()
                    .or_else(|| lease.claim.clone())
                    .ok_or_else(|| reply::protocol_error("HELD without an owner"))?;
                Err(Error::LeaseHeld {
                    key: key.clone(),
                    holder,
                    remaining: rules::remaining(lease.deadline, now),
                })
            }
            _ => Err(unexpected(key, &reply)),
        }
    }

    /// Operation 4, one script (`rules::renew`): moves the deadline only if owner and token
    /// still match (fencing), even past the deadline when nobody took the lease.
    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let args = vec![
            worker.to_string(),
            token.0.to_string(),
            duration.as_millis().to_string(),
        ];
        let reply = self.lease_script(&scripts::RENEW, key, false, args).await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::Lost => Err(lost(key, worker, token)),
            _ => Err(unexpected(key, &reply)),
        }
    }

    /// Operation 4 batched (fencing): the batch is split into chunks of at most
    /// [`RENEW_MANY_CHUNK`] leases, one script per chunk, all sent in one pipeline (one round
    /// trip). Each script applies `rules::renew` to every record of its chunk as one atomic
    /// step: records no longer held with their token are reported lost and left untouched. A
    /// corrupt record fails its chunk before anything of that chunk is written, and the call
    /// reports it; other chunks may have been renewed, which a renewal makes harmless (it only
    /// moves the deadline of a lease the caller still holds, and a retry renews again).
    /// Chunking keeps one script from blocking the single-threaded server for long.
    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome> {
        rules::check_renew_batch(leases)?;
        let chunks: Vec<&[(LeaseKey, FencingToken)]> = leases.chunks(RENEW_MANY_CHUNK).collect();
        let calls: Vec<(Vec<String>, Vec<String>)> = chunks
            .iter()
            .map(|chunk| {
                let keys = chunk.iter().map(|(k, _)| self.keys.lease(k)).collect();
                let mut args = Vec::with_capacity(chunk.len() + 2);
                args.push(worker.to_string());
                args.push(duration.as_millis().to_string());
                args.extend(chunk.iter().map(|(_, t)| t.0.to_string()));
                (keys, args)
            })
            .collect();
        let calls: Vec<(&[String], &[String])> = calls
            .iter()
            .map(|(keys, args)| (keys.as_slice(), args.as_slice()))
            .collect();
        let values = match calls.as_slice() {
            [] => Vec::new(),
            _ => self.eval_pipelined(&scripts::RENEW_MANY, &calls).await?,
        };
        let mut outcome = RenewOutcome::default();
        for (chunk, value) in chunks.iter().zip(values) {
            reply::decode_renew_many(chunk, value, &mut outcome)?;
        }
        outcome.renewed.sort_by(|a, b| a.key.cmp(&b.key));
        outcome.lost.sort();
        Ok(outcome)
    }

    /// Operation 7, one script (`rules::release`): clears owner and deadline only if owner and
    /// token match (fencing); token and checkpoint are kept, so the next grant still bumps the
    /// token. Repeating a completed release is not an error.
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        let args = vec![worker.to_string(), token.0.to_string()];
        let reply = self
            .lease_script(&scripts::RELEASE, key, false, args)
            .await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::Lost => Err(lost(key, worker, token)),
            _ => Err(unexpected(key, &reply)),
        }
    }

    /// Operation 7, admin form, one script (`rules::evict_lease`). The token is kept, so the
    /// released holder's writes stay fenced after the next grant.
    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        let reply = self
            .lease_script(&scripts::FORCE_RELEASE, key, false, Vec::new())
            .await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::NotFound => Err(Error::lease_not_found(key)),
            _ => Err(unexpected(key, &reply)),
        }
    }

    /// Operation 8, one script: deletes the record and its index entry together, so a listing
    /// never shows a half-deleted lease. A holder's later writes find no record and fail
    /// (`LeaseLost`) without recreating it.
    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        let keys = [self.keys.lease(key), self.keys.index()];
        self.eval(&scripts::DELETE, &keys, &[KeyLayout::member(key)])
            .await?;
        Ok(())
    }

    /// Operation 9: pages of the app's lease index (`ZRANGEBYLEX` over `<stream>:<shard>`
    /// members, a stream being one lexical range), each page's records read with one pipeline of
    /// `HMGET`s (on a cluster, concurrent `HMGET`s). Never `KEYS` or `SCAN`. A record deleted between the two reads is skipped.
    /// Operation 9 with the server's clock: `TIME` read before the first page, on the node
    /// that runs the app's scripts.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let index = self.keys.index();
        let store_now = self
            .inner
            .config
            .backoff()
            .retry(|_| self.inner.conn.time_at(&index))
            .await?;
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let (mut min, max) = KeyLayout::member_range(stream);
        let page = self.inner.config.list_page_size();
        let index = self.keys.index();
        let mut leases = Vec::new();
        loop {
            let members: Vec<String> = self
                .command(|| {
                    redis::cmd("ZRANGEBYLEX")
                        .arg(&index)
                        .arg(&min)
                        .arg(&max)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(page)
                        .clone()
                })
                .await?;
            let keys = members
                .iter()
                .map(|m| KeyLayout::parse_member(m))
                .collect::<Result<Vec<_>>>()?;
            if !keys.is_empty() {
                let lease_keys: Vec<String> = keys.iter().map(|k| self.keys.lease(k)).collect();
                let values: Vec<Value> = self
                    .inner
                    .config
                    .backoff()
                    .retry(|_| self.inner.conn.hmget_all(&lease_keys, &scripts::FIELDS))
                    .await?;
                for (key, value) in keys.iter().zip(values) {
                    if let Some(lease) = reply::decode_hmget(key, value)? {
                        leases.push(lease);
                    }
                }
            }
            match members.last() {
                Some(last) if members.len() == page => min = format!("({last}"),
                _ => break,
            }
        }
        // Index order puts `:` after `-` and `.`, so `a:x` sorts after `a.b:y`; the contract's
        // order is by (stream, shard).
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    /// Operation 16: `SCAN MATCH <prefix>:{*}:leases` over this database, each app's lease
    /// index being a key of its own that exists exactly while the app holds a lease record
    /// (Redis removes a sorted set with its last member, and the create, grant and import
    /// scripts add to the index in the script that writes the record, the delete script
    /// removes from it). So the listing is exact at rest without a namespace-wide index that
    /// every script would have to keep: such a set would live in a Cluster slot of its own,
    /// beyond the reach of a script over one app's slot. `SCAN` may return a key twice (the
    /// names are de-duplicated by [`rules::stored_apps`]) and may miss or keep an app created
    /// or emptied during the scan. On Redis Cluster every primary holds its own slots, so the
    /// scan has to run on each primary, one request per node.
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let prefix = self.inner.config.prefix();
        let pattern = KeyLayout::index_pattern(prefix);
        let keys = self
            .inner
            .config
            .backoff()
            .retry_named("list_apps", |_| {
                self.inner.conn.scan_keys(&pattern, SCAN_COUNT)
            })
            .await?;
        rules::stored_apps(
            keys.iter()
                .filter_map(|k| KeyLayout::app_of_index(prefix, k))
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    }

    /// Operation 10, one script (`rules::steal`): takes the lease only if owner and token are
    /// exactly what the caller saw, and bumps the token (fencing the robbed holder). A repeat
    /// after a lost reply finds the thief holding the next token and succeeds unchanged.
    async fn steal(
        &self,
        key: &LeaseKey,
        thief: &WorkerId,
        expected_owner: &WorkerId,
        expected_token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        if thief == expected_owner {
            return Err(Error::invalid(
                "thief",
                "a worker cannot steal a lease from itself",
            ));
        }
        let args = vec![
            thief.to_string(),
            expected_owner.to_string(),
            expected_token.0.to_string(),
            expected_token.next().0.to_string(),
            duration.as_millis().to_string(),
        ];
        let reply = self.lease_script(&scripts::STEAL, key, false, args).await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::Changed => Err(Error::LeaseChanged {
                key: key.clone(),
                expected_owner: expected_owner.clone(),
                expected_token,
            }),
            _ => Err(unexpected(key, &reply)),
        }
    }

    /// Operation 11, one script (`rules::claim`): records the claimant on an existing record;
    /// ownership and token are untouched.
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        let reply = self
            .lease_script(&scripts::CLAIM, key, false, vec![claimant.to_string()])
            .await?;
        match reply.status {
            Status::Ok => record(reply),
            Status::NotFound => Err(Error::lease_not_found(key)),
            _ => Err(unexpected(key, &reply)),
        }
    }

    /// Admin import, one script (`scripts::IMPORT`, `rules::import_lease`): writes the whole
    /// record only when its key does not exist, so an existing record is never overwritten and
    /// the carried token keeps fencing monotonic; the call's nonce lets a retried call whose
    /// reply was lost still answer that it wrote. A deadline before the epoch is
    /// [`Error::InvalidInput`].
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        checkpoint_core::rules::check_import(record)?;
        if record
            .deadline
            .is_some_and(|d| d < std::time::SystemTime::UNIX_EPOCH)
        {
            return Err(Error::invalid("deadline", "before 1970"));
        }
        let keys = [self.keys.lease(&record.key), self.keys.index()];
        let mut args = vec![KeyLayout::member(&record.key), nonce()];
        args.extend(reply::import_values(record));
        match self.eval(&scripts::IMPORT, &keys, &args).await? {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(reply::protocol_error(format!("import replied {other:?}"))),
        }
    }
}
