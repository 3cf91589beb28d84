//! [`PostgresStore`]: opening, the conditional-write machinery, and the [`LeaseManager`]
//! implementation. [`crate::checkpoints`] holds the [`checkpoint_core::Checkpointer`]
//! implementation and the transactional checkpoint, [`crate::membership`] the
//! [`checkpoint_core::Membership`] one, [`crate::renew`] the chunked statements of renew-many,
//! and [`crate::row`] the decoding of rows and the statements' parameters.
//!
//! Every write is one SQL statement run in its own implicit transaction (see
//! [`crate::schema`] for the statements): a conditional `UPDATE … WHERE owner = $ AND token = $
//! … RETURNING`, an `INSERT … ON CONFLICT` (for `get_lease`, only after its conditional
//! `UPDATE` matched no row), or a `DELETE`. PostgreSQL takes the row lock and
//! re-checks the `WHERE` clause against the newest committed row version before writing, so two
//! writers can never both pass a condition on one record. Expiry is compared with
//! `clock_timestamp()` inside the statement: the server's clock, never the client's.
//!
//! A statement that matched no row writes nothing. The store then re-reads the record with the
//! server's clock and applies the matching [`rules`] function to it, which names the failed
//! condition exactly as the reference store would ([`Error::LeaseLost`], [`Error::LeaseHeld`],
//! [`Error::CheckpointRegression`], ...), or finds an idempotent repeat (a release or steal that
//! already happened) and returns the record. If the rule finds the write would now succeed, the
//! record changed between the statement and the re-read, and the statement runs again.
//!
//! Transient faults (a dropped connection, a terminated backend, a pool timeout, a
//! serialization failure) are retried with the configured [`checkpoint_core::Backoff`]. A retry
//! runs the same conditional statement again, so a write whose reply was lost is resolved
//! against the stored record: the repeat of a grant, renewal, checkpoint, release or steal that
//! already happened matches the record it left and reports the same success; one that did not
//! happen is applied now or reported as the failed condition it meets. Nothing is guessed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use checkpoint_core::Listing;
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    AppName, BatchMode, Capabilities, ClockSource, Durability, Error, FencingToken, InstanceId,
    Lease, LeaseDuration, LeaseKey, LeaseManager, Position, RenewOutcome, Result, ShardId,
    StreamName, WorkerId,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{PgExecutor, Row};

use crate::config::PostgresConfig;
use crate::error::{STORE, from_sqlx};
use crate::renew::RENEW_PARALLEL;
use crate::row::{decode_lease, from_micros, millis, token_param};
use crate::schema::{self, Statements, Tables};

/// How often one call runs its statement again after the re-read found that the record changed
/// in between (another writer was faster every time) before giving up with a retryable error.
pub(crate) const MAX_RACES: usize = 8;

/// A lease/checkpoint store on one PostgreSQL database, for one app.
///
/// Cheap to clone; clones and [`PostgresStore::for_app`] handles share one connection pool.
/// `Send + Sync`, usable as `Arc<dyn checkpoint_core::Store>`.
///
/// ```no_run
/// use std::sync::Arc;
/// use checkpoint_core::{AppName, Store};
/// use checkpoint_postgres::{PostgresConfig, PostgresStore};
///
/// # async fn run() -> checkpoint_core::Result<()> {
/// let config = PostgresConfig::from_url("postgres://app@db.example/orders?schema=streaming")?
///     .with_max_connections(4);
/// let billing = PostgresStore::open(config, AppName::new("billing")?).await?;
/// let audit = billing.for_app(AppName::new("audit")?); // same pool, its own rows
/// let store: Arc<dyn Store> = Arc::new(billing);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) app: AppName,
    pub(crate) inner: Arc<Inner>,
    /// This handle's nonce, written with the membership records it registers.
    pub(crate) instance: InstanceId,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) config: PostgresConfig,
    pub(crate) tables: Tables,
    pub(crate) sql: Statements,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration's Debug redacts the password; the pool's connect options (which
        // hold it) are never shown.
        f.debug_struct("PostgresStore")
            .field("app", &self.app)
            .field("leases", &self.inner.tables.leases)
            .field("workers", &self.inner.tables.workers)
            .field("pool_size", &self.inner.pool.size())
            .field("config", &self.inner.config)
            .finish()
    }
}

pub(crate) type Attempt<'a> = Pin<Box<dyn Future<Output = Result<Option<Lease>>> + Send + 'a>>;

impl PostgresStore {
    /// Opens a connection pool described by `config` for `app` and runs [`LeaseManager::init`]
    /// (creating or upgrading the tables; [`Error::SchemaMismatch`] if an existing table is not
    /// ours). Invalid settings are [`Error::InvalidInput`]; an unreachable server is a retryable
    /// [`Error::Backend`] after the configured backoff is spent.
    pub async fn open(config: PostgresConfig, app: AppName) -> Result<Self> {
        config.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections())
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout())
            .idle_timeout(Duration::from_secs(60))
            // A connection is pinged when it is returned to the pool, and a connection that
            // died while idle fails its next statement with a retryable error that the store
            // retries on a fresh one: no extra round trip before every operation.
            .test_before_acquire(false)
            .connect_lazy_with(config.connect_options(&app));
        Self::from_pool(pool, config, app).await
    }

    /// A store around a pool the application already has (bring your own client), for `app`,
    /// with the schema, table prefix, renew chunk, backoff and migration setting of `config`;
    /// its connection settings (host, credentials, pool size, acquire timeout, application
    /// name) are not used, the pool's own are. Runs [`LeaseManager::init`] as
    /// [`PostgresStore::open`] does: with [`PostgresConfig::with_migrations`] off, it only
    /// checks the tables and sends no DDL.
    ///
    /// ```no_run
    /// use checkpoint_core::AppName;
    /// use checkpoint_postgres::{PostgresConfig, PostgresStore, sqlx::PgPool};
    ///
    /// # async fn run() -> checkpoint_core::Result<()> {
    /// let pool = PgPool::connect_lazy("postgres://app@db.example/orders").expect("pool");
    /// let config = PostgresConfig::from_url("postgres://unused/?schema=streaming&migrate=false")?;
    /// let store = PostgresStore::from_pool(pool, config, AppName::new("billing")?).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::InvalidInput`] for an invalid schema or prefix,
    /// [`Error::SchemaMismatch`] from `init`, a retryable [`Error::Backend`] when the server
    /// cannot be reached once the backoff is spent.
    pub async fn from_pool(pool: PgPool, config: PostgresConfig, app: AppName) -> Result<Self> {
        config.validate()?;
        let tables = Tables::new(config.schema(), config.table_prefix())?;
        let store = Self {
            app,
            inner: Arc::new(Inner {
                sql: Statements::new(&tables),
                pool,
                config,
                tables,
            }),
            instance: InstanceId::random(),
        };
        store.init().await?;
        Ok(store)
    }

    /// [`PostgresConfig::from_url`] then [`PostgresStore::open`]: connects and runs `init`.
    pub async fn connect(url: &str, app: AppName) -> Result<Self> {
        Self::open(PostgresConfig::from_url(url)?, app).await
    }

    /// A handle for another app on the same tables, sharing this store's connection pool, with
    /// an instance nonce of its own.
    pub fn for_app(&self, app: AppName) -> Self {
        Self {
            app,
            inner: self.inner.clone(),
            instance: InstanceId::random(),
        }
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// The store's connection pool, for example to begin the transaction given to
    /// [`PostgresStore::checkpoint_in_transaction`].
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema-qualified, quoted name of the lease table, for example
    /// `"public"."checkpoint_leases"`.
    pub fn lease_table(&self) -> &str {
        &self.inner.tables.leases
    }

    /// Runs `op` with the configured backoff while it fails with a retryable error.
    pub(crate) async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.inner.config.backoff().retry(|_| op()).await
    }

    /// Whether transaction `xid` committed, read with `txid_status` on a pooled connection
    /// (polled, for at most 10 s, while the server still reports it in progress: a connection
    /// that died mid-commit is cleaned up by the server shortly). Unknown (too old to tell)
    /// or still in progress after that is a non-retryable error: retrying could turn
    /// "created" into "existed".
    async fn transaction_committed(&self, xid: i64) -> Result<bool> {
        let started = std::time::Instant::now();
        loop {
            let status: Option<String> = self
                .retry(|| async {
                    sqlx::query_scalar("SELECT txid_status($1)")
                        .bind(xid)
                        .fetch_one(&self.inner.pool)
                        .await
                        .map_err(from_sqlx)
                })
                .await?;
            match status.as_deref() {
                Some("committed") => return Ok(true),
                Some("aborted") => return Ok(false),
                Some("in progress") if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => {
                    return Err(Error::backend_message(
                        STORE,
                        false,
                        format!(
                            "a create-if-absent whose commit reply was lost: transaction {xid} \
                             is {other:?}, so whether it created the record is unknown"
                        ),
                    ));
                }
            }
        }
    }

    /// A conditional write: runs `statement` (which returns the written record, or `None` when
    /// its condition matched no row); on `None` re-reads the record with the server's clock and
    /// lets `rule` decide. `rule` failing is the operation's answer; `Outcome::Unchanged` is an
    /// idempotent repeat, returned as is; `Outcome::Write` means the record changed between the
    /// statement and the re-read, so the statement runs again. Retried on transient faults.
    pub(crate) async fn conditional<'a, S, R>(
        &'a self,
        key: &'a LeaseKey,
        statement: S,
        rule: R,
    ) -> Result<Lease>
    where
        S: Fn() -> Attempt<'a> + Send + Sync,
        R: Fn(Option<Lease>, SystemTime) -> Result<Outcome> + Send + Sync,
    {
        self.retry(|| async {
            for _ in 0..MAX_RACES {
                if let Some(lease) = statement().await? {
                    return Ok(lease);
                }
                let (current, now) = self.reread(&self.inner.pool, key).await?;
                match rule(current, now)? {
                    Outcome::Unchanged(lease) => return Ok(lease),
                    Outcome::Write(_) => {}
                }
            }
            Err(raced(key))
        })
        .await
    }

    /// The record (or `None`) and the server's clock, read in one statement.
    pub(crate) async fn reread<'e, E: PgExecutor<'e>>(
        &self,
        exec: E,
        key: &LeaseKey,
    ) -> Result<(Option<Lease>, SystemTime)> {
        let row = sqlx::query(self.inner.sql.reread.clone())
            .bind(self.app.as_str())
            .bind(key.stream.as_str())
            .bind(key.shard.as_str())
            .fetch_one(exec)
            .await
            .map_err(from_sqlx)?;
        let now_us: i64 = row.try_get("now_us").map_err(from_sqlx)?;
        let now = from_micros(now_us).ok_or_else(|| {
            Error::backend_message(STORE, false, "the server clock is before 1970")
        })?;
        let stream: Option<String> = row.try_get("stream").map_err(from_sqlx)?;
        let lease = match stream {
            Some(_) => Some(decode_lease(&row)?),
            None => None,
        };
        Ok((lease, now))
    }

    /// Runs a statement that returns at most one lease row.
    pub(crate) fn lease_row<'a>(
        &'a self,
        query: sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Attempt<'a> {
        Box::pin(async move {
            let row = query
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(decode_lease).transpose()
        })
    }

    /// A query on `sql` with the key parameters `$1` app, `$2` stream, `$3` shard bound.
    pub(crate) fn keyed<'a>(
        &'a self,
        sql: &sqlx::SqlStr,
        key: &'a LeaseKey,
    ) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql.clone())
            .bind(self.app.as_str())
            .bind(key.stream.as_str())
            .bind(key.shard.as_str())
    }
}

#[async_trait]
impl LeaseManager for PostgresStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(STORE, ClockSource::Server, Durability::Disk)
            .with_transactional_checkpoint(true)
            .with_renew_many(BatchMode::Chunked(self.inner.config.renew_chunk()))
            .with_multi_process(true)
    }

    /// Applies the embedded migrations in one transaction under a transaction-scoped advisory
    /// lock (`pg_advisory_xact_lock`), so any number of workers may call it at once, then checks
    /// the tables' columns and keys ([`Error::SchemaMismatch`] naming the first difference).
    ///
    /// With [`PostgresConfig::with_migrations`] off, no DDL: the same checks with reads only.
    async fn init(&self) -> Result<()> {
        self.retry(|| async {
            let mut conn = self.inner.pool.acquire().await.map_err(from_sqlx)?;
            if self.inner.config.migrations() {
                schema::migrate(&mut conn, &self.inner.tables).await
            } else {
                schema::verify(&mut conn, &self.inner.tables).await
            }
        })
        .await
    }

    /// Operation 2: `INSERT … ON CONFLICT DO NOTHING` in a transaction of its own; created iff
    /// one row was inserted.
    ///
    /// The answer is exact even when a reply is lost (the contract's decision on
    /// create-if-absent): the transaction first reads its id (`txid_current()`), and whether the
    /// `INSERT` inserted is known before `COMMIT` is sent. If the `COMMIT`'s reply is lost,
    /// the transaction's fate is read back on another connection with `txid_status`: committed,
    /// the call answers what its `INSERT` did; aborted, the whole call is retried (and then
    /// answers for the retry). Any earlier lost reply leaves the transaction uncommitted, so
    /// the retry's answer is the answer. A retry never turns "created" into "existed".
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        let parents: Vec<String> = parents.iter().map(|p| p.as_str().to_owned()).collect();
        self.retry(|| async {
            let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
            let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let done = self
                .keyed(&self.inner.sql.create_if_absent, key)
                .bind(&parents)
                .bind(initial.map(Position::encode))
                .bind(initial.map_or(0, Position::sub_sequence).to_string())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let created = done.rows_affected() == 1;
            match tx.commit().await.map_err(from_sqlx) {
                Ok(()) => Ok(created),
                Err(e) if e.is_retryable() => match self.transaction_committed(xid).await? {
                    true => Ok(created),
                    false => Err(e),
                },
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Operation 3 (mutual exclusion): a conditional `UPDATE … WHERE … RETURNING` of the
    /// existing record, whose condition (free, expired by `clock_timestamp()`, or already ours)
    /// PostgreSQL evaluates under the row lock against the newest committed version (a writer
    /// that waited for a competing one re-checks the condition on the row that one left). Of
    /// any number of racing workers exactly one passes it. When it matches no row (the record
    /// is absent, or the grant is refused), one `INSERT … ON CONFLICT DO UPDATE … WHERE` with
    /// the same condition creates the record granted to us in the same atomic step, or applies
    /// the grant to a record created meanwhile; when that matches nothing either, the re-read
    /// answers [`Error::LeaseHeld`]. So a lease that exists (the common case: renewal through
    /// `get_lease`, a take-over) costs one round trip, a new one two, and no path writes
    /// without the condition. The token is bumped unless the lease was already ours. A free
    /// lease released while claimed is refused to all but the claimant until its deadline (a
    /// claim is honoured).
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        let ms = millis(duration.get());
        self.conditional(
            key,
            || {
                Box::pin(async move {
                    let granted = self
                        .lease_row(
                            self.keyed(&self.inner.sql.grant_existing, key)
                                .bind(worker.as_str())
                                .bind(ms),
                        )
                        .await?;
                    if granted.is_some() {
                        return Ok(granted);
                    }
                    self.lease_row(
                        self.keyed(&self.inner.sql.get_lease, key)
                            .bind(worker.as_str())
                            .bind(ms),
                    )
                    .await
                })
            },
            |current, now| {
                rules::get_lease(current, key, worker, duration, now).map(Outcome::Write)
            },
        )
        .await
    }

    /// Operation 4 (fencing): `UPDATE … WHERE owner = $worker AND token = $token`, past the
    /// deadline too; otherwise [`Error::LeaseLost`] and nothing written.
    async fn renew(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.lease_row(
                    self.keyed(&self.inner.sql.renew, key)
                        .bind(worker.as_str())
                        .bind(token_param(token))
                        .bind(millis(duration.get())),
                )
            },
            |current, now| {
                rules::renew(current, key, worker, token, duration, now).map(Outcome::Write)
            },
        )
        .await
    }

    /// Operation 4, batched (fencing): `UPDATE … FROM unnest($streams, $shards, $tokens)`,
    /// matching each row on the worker as owner and that lease's own token, so a lease taken
    /// over or released meanwhile (another owner, or a bumped token) is never extended; the keys
    /// a statement did not return were not renewed and are reported lost.
    ///
    /// A batch of up to [`PostgresConfig::with_renew_chunk`] leases (default 2,500) is one
    /// statement. A larger batch is split into chunks of that size, and up to four chunk
    /// statements (never more than the pool's connections) run at once on separate connections:
    /// each lease's renewal is independent of the others', so the outcome is the same as one
    /// statement's, only not one snapshot. Each chunk is retried on transient faults on its own;
    /// if a chunk still fails, the call fails with its error once the other chunks have
    /// finished (some leases may then have been renewed; renewing is idempotent, so retrying
    /// the whole call is safe).
    async fn renew_many(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<RenewOutcome> {
        rules::check_renew_batch(leases)?;
        if leases.is_empty() {
            return Ok(RenewOutcome::default());
        }
        let chunks = leases.len().div_ceil(self.inner.config.renew_chunk());
        let parallel = chunks
            .min(RENEW_PARALLEL)
            .min(usize::try_from(self.inner.config.max_connections()).unwrap_or(1));
        let mut renewed = if parallel <= 1 {
            let mut renewed = Vec::with_capacity(leases.len());
            for chunk in leases.chunks(self.inner.config.renew_chunk()) {
                renewed.extend(self.renew_chunk(worker, chunk, duration).await?);
            }
            renewed
        } else {
            self.renew_parallel(worker, leases, duration, parallel)
                .await?
        };
        renewed.sort_by(|a, b| a.key.cmp(&b.key));
        let mut lost: Vec<LeaseKey> = leases
            .iter()
            .filter(|(k, _)| renewed.binary_search_by(|l| l.key.cmp(k)).is_err())
            .map(|(k, _)| k.clone())
            .collect();
        lost.sort();
        Ok(RenewOutcome { renewed, lost })
    }

    /// Operation 7 (fencing): `UPDATE … SET owner = NULL, deadline = NULL WHERE owner = $worker
    /// AND token = $token` (a claimed lease keeps its deadline as the claimant's reservation). No row: a repeat of a completed release (free, same token) returns
    /// the record; anything else is [`Error::LeaseLost`].
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.lease_row(
                    self.keyed(&self.inner.sql.release, key)
                        .bind(worker.as_str())
                        .bind(token_param(token)),
                )
            },
            |current, _| rules::remove_lease_owner(current, key, worker, token),
        )
        .await
    }

    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.conditional(
            key,
            || self.lease_row(self.keyed(&self.inner.sql.force_release, key)),
            |current, _| rules::evict_lease(current, key).map(Outcome::Write),
        )
        .await
    }

    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        self.retry(|| async {
            self.keyed(&self.inner.sql.delete, key)
                .execute(&self.inner.pool)
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    /// Keyset pagination over the primary key,
    /// [`PostgresConfig::with_list_page_size`](crate::PostgresConfig::with_list_page_size)
    /// rows a page (default 500); each page is a consistent read, the whole list is not one
    /// snapshot.
    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let page = i64::try_from(self.inner.config.list_page_size()).unwrap_or(i64::MAX);
        let mut all = Vec::new();
        let (mut after_stream, mut after_shard) = (String::new(), String::new());
        loop {
            let rows = self
                .retry(|| async {
                    sqlx::query(self.inner.sql.list_page.clone())
                        .bind(self.app.as_str())
                        .bind(stream.map(StreamName::as_str))
                        .bind(after_stream.as_str())
                        .bind(after_shard.as_str())
                        .bind(page)
                        .fetch_all(&self.inner.pool)
                        .await
                        .map_err(from_sqlx)
                })
                .await?;
            let full = rows.len() as i64 == page;
            for row in &rows {
                all.push(decode_lease(row)?);
            }
            match all.last() {
                Some(last) if full => {
                    after_stream = last.key.stream.as_str().to_owned();
                    after_shard = last.key.shard.as_str().to_owned();
                }
                _ => return Ok(all),
            }
        }
    }

    /// Operation 16: `SELECT DISTINCT app` over the lease table of this store's schema and
    /// prefix, keyset-paged by app name (the configured list page size a page), validated and
    /// sorted by [`rules::stored_apps`]. Each page is a consistent read.
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let page = i64::try_from(self.inner.config.list_page_size()).unwrap_or(i64::MAX);
        let mut names: Vec<String> = Vec::new();
        loop {
            let after = names.last().cloned().unwrap_or_default();
            let rows: Vec<String> = self
                .retry(|| async {
                    sqlx::query_scalar(self.inner.sql.list_apps_page.clone())
                        .bind(after.as_str())
                        .bind(page)
                        .fetch_all(&self.inner.pool)
                        .await
                        .map_err(from_sqlx)
                })
                .await?;
            let full = rows.len() as i64 == page;
            names.extend(rows);
            if !full {
                return rules::stored_apps(names);
            }
        }
    }

    /// Operation 9 with the server's clock: `clock_timestamp()` read before the first page.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let us: i64 = self
            .retry(|| async {
                sqlx::query_scalar(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
                )
                .fetch_one(&self.inner.pool)
                .await
                .map_err(from_sqlx)
            })
            .await?;
        let store_now = from_micros(us)
            .ok_or_else(|| Error::backend_message("postgres", false, "server clock before 1970"))?;
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    /// Operation 10 (fencing): `UPDATE … SET owner = $thief, token = token + 1 WHERE owner =
    /// $expected_owner AND token = $expected_token`. No row: a repeat of a completed steal
    /// returns the record; anything else is [`Error::LeaseChanged`].
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
        self.conditional(
            key,
            || {
                self.lease_row(
                    self.keyed(&self.inner.sql.steal, key)
                        .bind(thief.as_str())
                        .bind(expected_owner.as_str())
                        .bind(token_param(expected_token))
                        .bind(millis(duration.get())),
                )
            },
            |current, now| {
                rules::steal(
                    current,
                    key,
                    thief,
                    expected_owner,
                    expected_token,
                    duration,
                    now,
                )
            },
        )
        .await
    }

    /// Operation 11: `UPDATE … SET claim = $claimant` unless the claimant already holds or
    /// claimed it (then the record is returned unchanged); absent is [`Error::NotFound`].
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.lease_row(
                    self.keyed(&self.inner.sql.claim, key)
                        .bind(claimant.as_str()),
                )
            },
            |current, _| rules::claim(current, key, claimant),
        )
        .await
    }

    /// Admin import: one `INSERT … ON CONFLICT (app, stream, shard) DO NOTHING` of the whole
    /// record, so an existing record is never overwritten (the primary key decides, under its
    /// lock, between racing importers) and the carried token keeps fencing monotonic. The
    /// deadline is written in microseconds since the epoch. A token or owner-switch count beyond
    /// `i64::MAX` (the `bigint` columns) is [`Error::InvalidInput`].
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        rules::check_import(record)?;
        let token = i64::try_from(record.token.0)
            .map_err(|_| Error::invalid("token", "PostgreSQL stores tokens up to i64::MAX"))?;
        let switches = i64::try_from(record.owner_switches_since_checkpoint).map_err(|_| {
            Error::invalid("owner_switches", "PostgreSQL stores counts up to i64::MAX")
        })?;
        let deadline_us = record
            .deadline
            .map(|d| {
                d.duration_since(UNIX_EPOCH)
                    .ok()
                    .and_then(|d| i64::try_from(d.as_micros()).ok())
                    .ok_or_else(|| Error::invalid("deadline", "out of PostgreSQL's range"))
            })
            .transpose()?;
        let parents: Vec<&str> = record.parents.iter().map(ShardId::as_str).collect();
        let position = |p: &Option<Position>| {
            (
                p.as_ref().map(Position::encode),
                p.as_ref().map_or(0, Position::sub_sequence).to_string(),
            )
        };
        let ((checkpoint, checkpoint_sub), (pending, pending_sub)) = (
            position(&record.checkpoint),
            position(&record.pending_checkpoint),
        );
        let statement = format!(
            "INSERT INTO {} (app, stream, shard, owner, token, deadline, checkpoint, checkpoint_sub,
                 pending_checkpoint, pending_checkpoint_sub, parents, claim, owner_switches)
             VALUES ($1, $2, $3, $4::text, $5::bigint,
                 'epoch'::timestamptz + $6::bigint * interval '1 microsecond', $7::text,
                 $8::numeric, $9::text, $10::numeric, $11::text[], $12::text, $13::bigint)
             ON CONFLICT (app, stream, shard) DO NOTHING",
            self.inner.tables.leases
        );
        self.retry(|| async {
            let done = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .bind(self.app.as_str())
                .bind(record.key.stream.as_str())
                .bind(record.key.shard.as_str())
                .bind(record.owner.as_ref().map(WorkerId::as_str))
                .bind(token)
                .bind(deadline_us)
                .bind(checkpoint.as_deref())
                .bind(&checkpoint_sub)
                .bind(pending.as_deref())
                .bind(&pending_sub)
                .bind(&parents)
                .bind(record.claim.as_ref().map(WorkerId::as_str))
                .bind(switches)
                .execute(&self.inner.pool)
                .await
                .map_err(from_sqlx)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}

/// The retryable error when every attempt found the record changed by another writer between
/// the conditional statement and the re-read.
pub(crate) fn raced(key: &LeaseKey) -> Error {
    Error::backend_message(
        STORE,
        true,
        format!("lease {key} kept changing under concurrent writers; nothing was written"),
    )
}
