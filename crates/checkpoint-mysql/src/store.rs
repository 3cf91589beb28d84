//! [`MySqlStore`]: opening, the conditional-write machinery, and the [`LeaseManager`]
//! implementation ([`crate::checkpoints`] holds the [`checkpoint_core::Checkpointer`] and
//! [`checkpoint_core::Membership`] ones, [`crate::renew`] the chunked transactions of
//! renew-many).
//!
//! MySQL and MariaDB have no `RETURNING` on `UPDATE` (MariaDB has it on `INSERT` and `DELETE`
//! only), so a conditional write is one short transaction: the conditional
//! `UPDATE … WHERE owner = ? AND token = ? …`, whose affected-rows count says whether the
//! condition held (sqlx connects with `CLIENT_FOUND_ROWS`, so a matched row counts even when
//! the write changed no value), then, in the same transaction and under the row lock the
//! `UPDATE` took, a `SELECT` of the record it wrote. InnoDB evaluates an `UPDATE`'s `WHERE`
//! against the newest committed row version under an exclusive row lock, so of any number of
//! racing writers at most one passes a condition. Expiry is compared with `UTC_TIMESTAMP(6)`
//! inside the statement: the server's clock, never the client's.
//!
//! When the `UPDATE` matched no row, nothing was written. The store then re-reads the record
//! with the server's clock and applies the matching [`rules`] function to it, which names the
//! failed condition exactly as the reference store would ([`Error::LeaseLost`],
//! [`Error::CheckpointRegression`], ...), or finds an idempotent repeat (a release or steal that
//! already happened) and returns the record. If the rule finds the write would now succeed, the
//! record changed between the statement and the re-read, and the transaction runs again.
//!
//! `get_lease`, where the record may be absent, locks it with `SELECT … FOR UPDATE` (reading
//! the server's clock in the same statement), applies [`rules::get_lease`] to it, and writes
//! the rule's record with an `UPDATE` or, when absent, an `INSERT` (a racing `INSERT` of the
//! same key fails with duplicate key 1062, and the transaction runs again and finds the row).
//!
//! Transient faults (a dropped or killed connection, a pool timeout, a deadlock, a lock wait
//! timeout) are retried with the configured [`checkpoint_core::Backoff`]. A retry runs the same
//! transaction again, so a write whose reply was lost (the `COMMIT` went through, its answer did
//! not) is resolved against the stored record: the repeat of a grant, renewal, checkpoint,
//! release or steal that already happened matches the record it left and reports the same
//! success; one that did not happen is applied now or reported as the failed condition it
//! meets. Nothing is guessed.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    AppName, BatchMode, Capabilities, ClockSource, Durability, Error, FencingToken, InstanceId,
    Lease, LeaseDuration, LeaseKey, LeaseManager, Listing, Position, RenewOutcome, Result, ShardId,
    StreamName, WorkerId,
};
use sqlx::mysql::{MySql, MySqlArguments, MySqlPool, MySqlPoolOptions};
use sqlx::{MySqlConnection, Row};

use crate::config::MySqlConfig;
use crate::error::{ER_DUP_ENTRY, STORE, error_number, from_sqlx};
use crate::renew::RENEW_PARALLEL;
use crate::row::{self, decode_lease, micros, to_micros};
use crate::schema::{self, Statements, Tables};

/// Rows fetched per page by [`LeaseManager::list_leases`].
const LIST_PAGE: i64 = 500;

/// How often one call runs its transaction again after the re-read found that the record
/// changed in between (another writer was faster every time) before giving up with a
/// retryable error.
pub(crate) const MAX_RACES: usize = 8;

/// A query with its parameters bound.
pub(crate) type Query<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

/// A lease/checkpoint store on one MySQL 8 or MariaDB database, for one app.
///
/// Cheap to clone; clones and [`MySqlStore::for_app`] handles share one connection pool.
/// `Send + Sync`, usable as `Arc<dyn checkpoint_core::Store>`.
#[derive(Clone)]
pub struct MySqlStore {
    pub(crate) app: AppName,
    pub(crate) inner: Arc<Inner>,
    /// This handle's nonce, written with the membership records it registers.
    pub(crate) instance: InstanceId,
}

pub(crate) struct Inner {
    pub(crate) pool: MySqlPool,
    pub(crate) config: MySqlConfig,
    pub(crate) tables: Tables,
    pub(crate) sql: Statements,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration's Debug redacts the password; the pool's connect options (which
        // hold it) are never shown.
        f.debug_struct("MySqlStore")
            .field("app", &self.app)
            .field("leases", &self.inner.tables.leases)
            .field("workers", &self.inner.tables.workers)
            .field("pool_size", &self.inner.pool.size())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl MySqlStore {
    /// Opens a connection pool described by `config` for `app` and runs [`LeaseManager::init`]
    /// (creating or upgrading the tables; [`Error::SchemaMismatch`] if an existing table is not
    /// ours). The pool's sessions run at `READ COMMITTED`, so racing first grants of one absent
    /// lease queue on the duplicate key instead of deadlocking on gap locks. Invalid settings
    /// are [`Error::InvalidInput`]; an unreachable server is a retryable [`Error::Backend`]
    /// after the configured backoff is spent.
    pub async fn open(config: MySqlConfig, app: AppName) -> Result<Self> {
        config.validate()?;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections())
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout())
            .idle_timeout(Duration::from_secs(60))
            // A connection is pinged when it is returned to the pool, and a connection that
            // died while idle fails its next statement with a retryable error that the store
            // retries on a fresh one: no extra round trip before every operation.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy_with(config.connect.clone());
        Self::from_pool(pool, config, app).await
    }

    /// [`MySqlConfig::from_url`] then [`MySqlStore::open`]: connects and runs `init`.
    pub async fn connect(url: &str, app: AppName) -> Result<Self> {
        Self::open(MySqlConfig::from_url(url)?, app).await
    }

    /// A store on an existing pool (for example the application's own, so
    /// [`MySqlStore::checkpoint_in_transaction`] can join its transactions), then
    /// [`LeaseManager::init`]. The tables live in the pool's database; of `config` only the
    /// table prefix, renew chunk, backoff and `max_connections` (as the bound of parallel
    /// renew-many chunks) are used, its connection settings are not.
    ///
    /// The pool's isolation level is kept: at `REPEATABLE READ` (the server default) racing
    /// first grants of one absent lease may deadlock on gap locks; InnoDB aborts one
    /// (error 1213) and the store retries it.
    pub async fn from_pool(pool: MySqlPool, config: MySqlConfig, app: AppName) -> Result<Self> {
        let tables = Tables::new(config.table_prefix())?;
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
    pub fn config(&self) -> &MySqlConfig {
        &self.inner.config
    }

    /// The store's connection pool, for example to begin the transaction given to
    /// [`MySqlStore::checkpoint_in_transaction`].
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    /// The backquoted name of the lease table, for example `` `checkpoint_leases` ``.
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

    /// `sql` with the key parameters app, stream, shard bound after whatever `query` bound.
    pub(crate) fn keyed<'q>(&'q self, query: Query<'q>, key: &'q LeaseKey) -> Query<'q> {
        query
            .bind(self.app.as_str())
            .bind(key.stream.as_str())
            .bind(key.shard.as_str())
    }

    /// A conditional write: in one transaction runs `statement` (an `UPDATE` whose `WHERE`
    /// holds the contract's condition); if it matched the row, reads the record back and
    /// commits. If it matched nothing, re-reads the record with the server's clock and lets
    /// `rule` decide: `rule` failing is the operation's answer; `Outcome::Unchanged` is an
    /// idempotent repeat, returned as is; `Outcome::Write` means the record changed between
    /// the statement and the re-read, so the transaction runs again. Retried on transient
    /// faults.
    pub(crate) async fn conditional<'a, S, R>(
        &'a self,
        key: &'a LeaseKey,
        statement: S,
        rule: R,
    ) -> Result<Lease>
    where
        S: Fn() -> Query<'a> + Send + Sync,
        R: Fn(Option<Lease>, SystemTime) -> Result<Outcome> + Send + Sync,
    {
        self.retry(|| async {
            for _ in 0..MAX_RACES {
                let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
                if let Some(lease) = self.write_and_read(&mut tx, key, statement()).await? {
                    tx.commit().await.map_err(from_sqlx)?;
                    return Ok(lease);
                }
                let (current, now) = self.reread(&mut tx, key, false).await?;
                tx.rollback().await.map_err(from_sqlx)?;
                match rule(current, now)? {
                    Outcome::Unchanged(lease) => return Ok(lease),
                    Outcome::Write(_) => {}
                }
            }
            Err(raced(key))
        })
        .await
    }

    /// Runs a conditional `UPDATE` of `key` on `conn` (inside a transaction) and, if it matched
    /// the row, reads back the record it wrote (the row lock the `UPDATE` took keeps it ours
    /// until the transaction ends). `None` when it matched nothing.
    pub(crate) async fn write_and_read(
        &self,
        conn: &mut MySqlConnection,
        key: &LeaseKey,
        statement: Query<'_>,
    ) -> Result<Option<Lease>> {
        let done = statement.execute(&mut *conn).await.map_err(from_sqlx)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = self
            .keyed(sqlx::query(self.inner.sql.fetch.clone()), key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(decode_lease).transpose()
    }

    /// The record (or `None`) and the server's clock, read in one statement; with
    /// `for_update`, the record is locked until the transaction ends.
    pub(crate) async fn reread(
        &self,
        conn: &mut MySqlConnection,
        key: &LeaseKey,
        for_update: bool,
    ) -> Result<(Option<Lease>, SystemTime)> {
        let sql = if for_update {
            &self.inner.sql.reread_for_update
        } else {
            &self.inner.sql.reread
        };
        let row = self
            .keyed(sqlx::query(sql.clone()), key)
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        let now_us: i64 = row.try_get("now_us").map_err(from_sqlx)?;
        let now = row::from_micros(now_us).ok_or_else(|| {
            Error::backend_message(STORE, false, "the server clock is before 1970")
        })?;
        let stream: Option<String> = row.try_get("stream").map_err(from_sqlx)?;
        let lease = match stream {
            Some(_) => Some(decode_lease(&row)?),
            None => None,
        };
        Ok((lease, now))
    }

    /// Runs a statement that returns at most one lease row, on the pool.
    pub(crate) async fn lease_row(&self, query: Query<'_>) -> Result<Option<Lease>> {
        let row = query
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(decode_lease).transpose()
    }
}

#[async_trait]
impl LeaseManager for MySqlStore {
    fn app(&self) -> &AppName {
        &self.app
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(STORE, ClockSource::Server, Durability::Disk)
            .with_transactional_checkpoint(true)
            .with_renew_many(BatchMode::Chunked(self.inner.config.renew_chunk()))
            .with_multi_process(true)
    }

    /// Applies the embedded migrations under the server-wide named lock `GET_LOCK`, so any
    /// number of workers may call it at once, then checks the tables' columns, collations and
    /// keys ([`Error::SchemaMismatch`] naming the first difference).
    async fn init(&self) -> Result<()> {
        self.retry(|| async {
            let mut conn = self.inner.pool.acquire().await.map_err(from_sqlx)?;
            schema::migrate(&mut conn, &self.inner.tables).await
        })
        .await
    }

    /// Operation 2: `INSERT` carrying a fresh random nonce; created iff the insert succeeded.
    /// When the key exists (duplicate key 1062) the stored nonce answers whether this call
    /// created it: a first attempt whose reply was lost left its own nonce, which the retry
    /// finds, so the answer is exact even then.
    async fn create_lease_if_absent(
        &self,
        key: &LeaseKey,
        parents: &[ShardId],
        initial: Option<&Position>,
    ) -> Result<bool> {
        let parents = row::encode_parents(parents);
        let nonce = row::nonce();
        self.retry(|| async {
            for _ in 0..MAX_RACES {
                let inserted = self
                    .keyed(sqlx::query(self.inner.sql.create_if_absent.clone()), key)
                    .bind(parents.as_str())
                    .bind(initial.map(Position::encode))
                    .bind(initial.map_or(0, Position::sub_sequence))
                    .bind(nonce)
                    .execute(&self.inner.pool)
                    .await;
                match inserted {
                    Ok(_) => return Ok(true),
                    Err(e) if error_number(&e) == Some(ER_DUP_ENTRY) => {}
                    Err(e) => return Err(from_sqlx(e)),
                }
                let stored = self
                    .keyed(sqlx::query(self.inner.sql.create_nonce.clone()), key)
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)?;
                // No row: deleted since the insert found it, so try again.
                if let Some(row) = stored {
                    let stored: Option<u64> = row.try_get("create_nonce").map_err(from_sqlx)?;
                    return Ok(stored == Some(nonce));
                }
            }
            Err(raced(key))
        })
        .await
    }

    /// Operation 3 (mutual exclusion): in one transaction, `SELECT … FOR UPDATE` locks the
    /// record (reading `UTC_TIMESTAMP(6)` in the same statement), [`rules::get_lease`] decides
    /// (free, expired by the server's clock, or already ours: granted, the token bumped unless
    /// it was ours; otherwise [`Error::LeaseHeld`]), and the rule's record is written with an
    /// `UPDATE`, or an `INSERT` when absent, before the lock is released by the commit. Of any
    /// number of racing workers the first to lock the row decides; the others then see it
    /// held. Two racing inserts of an absent record meet on the primary key: the second fails
    /// with duplicate key 1062 and runs again, finding the first's record.
    async fn get_lease(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        duration: LeaseDuration,
    ) -> Result<Lease> {
        self.retry(|| async {
            for _ in 0..MAX_RACES {
                let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
                let (current, now) = self.reread(&mut tx, key, true).await?;
                let existed = current.is_some();
                let lease = rules::get_lease(current, key, worker, duration, now)?;
                let deadline = lease.deadline.map(to_micros);
                let owner = lease.owner.as_ref().map(WorkerId::as_str);
                let written = if existed {
                    self.keyed(
                        sqlx::query(self.inner.sql.grant_update.clone())
                            .bind(owner)
                            .bind(lease.token.0)
                            .bind(deadline)
                            .bind(lease.claim.as_ref().map(WorkerId::as_str))
                            .bind(lease.owner_switches_since_checkpoint),
                        key,
                    )
                    .execute(&mut *tx)
                    .await
                } else {
                    self.keyed(sqlx::query(self.inner.sql.grant_insert.clone()), key)
                        .bind(owner)
                        .bind(lease.token.0)
                        .bind(deadline)
                        .bind(lease.owner_switches_since_checkpoint)
                        .execute(&mut *tx)
                        .await
                };
                match written {
                    Ok(_) => {}
                    Err(e) if error_number(&e) == Some(ER_DUP_ENTRY) => continue,
                    Err(e) => return Err(from_sqlx(e)),
                }
                tx.commit().await.map_err(from_sqlx)?;
                return Ok(lease);
            }
            Err(raced(key))
        })
        .await
    }

    /// Operation 4 (fencing): `UPDATE … SET deadline = UTC_TIMESTAMP(6) + duration WHERE owner
    /// = ? AND token = ?`, past the deadline too; otherwise [`Error::LeaseLost`] and nothing
    /// written.
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
                self.keyed(
                    sqlx::query(self.inner.sql.renew.clone()).bind(micros(duration.get())),
                    key,
                )
                .bind(worker.as_str())
                .bind(token.0)
            },
            |current, now| {
                rules::renew(current, key, worker, token, duration, now).map(Outcome::Write)
            },
        )
        .await
    }

    /// Operation 4, batched (fencing): per chunk, one `UPDATE … JOIN JSON_TABLE(?) …` over the
    /// chunk's `(stream, shard, token)` triples sent as one JSON parameter, matching each row
    /// on the worker as owner and that lease's own token, so a lease taken over or released
    /// meanwhile (another owner, or a bumped token) is never extended. In the same transaction,
    /// a `SELECT` with the same match returns the renewed records: the rows the `UPDATE` wrote
    /// are locked by it, and a row it did not match cannot come to match (a grant to this
    /// worker from any other state bumps the token past the batch's), so the keys not returned
    /// were not renewed and are reported lost.
    ///
    /// A batch of up to [`MySqlConfig::with_renew_chunk`] leases (default 2,500) is one
    /// statement. A larger batch is split into chunks of that size, and up to four chunks
    /// (never more than the pool's connections) run at once on separate connections: each
    /// lease's renewal is independent of the others', so the outcome is the same as one
    /// statement's, only not one snapshot. Each chunk is retried on transient faults on its
    /// own; if a chunk still fails, the call fails with its error once the other chunks have
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

    /// Operation 7 (fencing): `UPDATE … SET owner = NULL, deadline = NULL WHERE owner = ? AND
    /// token = ?`. No row: a repeat of a completed release (free, same token) returns the
    /// record; anything else is [`Error::LeaseLost`].
    async fn remove_lease_owner(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.keyed(sqlx::query(self.inner.sql.release.clone()), key)
                    .bind(worker.as_str())
                    .bind(token.0)
            },
            |current, _| rules::remove_lease_owner(current, key, worker, token),
        )
        .await
    }

    async fn evict_lease(&self, key: &LeaseKey) -> Result<Lease> {
        self.conditional(
            key,
            || self.keyed(sqlx::query(self.inner.sql.force_release.clone()), key),
            |current, _| rules::evict_lease(current, key).map(Outcome::Write),
        )
        .await
    }

    async fn remove_lease_info(&self, key: &LeaseKey) -> Result<()> {
        self.retry(|| async {
            self.keyed(sqlx::query(self.inner.sql.delete.clone()), key)
                .execute(&self.inner.pool)
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    /// Keyset pagination over the primary key, 500 rows a page; each page is a
    /// consistent read, the whole list is not one snapshot.
    async fn list_leases(&self, stream: Option<&StreamName>) -> Result<Vec<Lease>> {
        let mut all = Vec::new();
        let (mut after_stream, mut after_shard) = (String::new(), String::new());
        let stream = stream.map(StreamName::as_str);
        loop {
            let rows = self
                .retry(|| async {
                    sqlx::query(self.inner.sql.list_page.clone())
                        .bind(self.app.as_str())
                        .bind(stream)
                        .bind(stream)
                        .bind(after_stream.as_str())
                        .bind(after_shard.as_str())
                        .bind(LIST_PAGE)
                        .fetch_all(&self.inner.pool)
                        .await
                        .map_err(from_sqlx)
                })
                .await?;
            let full = rows.len() as i64 == LIST_PAGE;
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

    /// Operation 16: `SELECT DISTINCT app` over the lease table of this store's prefix,
    /// keyset-paged by app name (500 a page), validated and sorted by
    /// [`rules::stored_apps`]. Each page is a consistent read.
    async fn list_apps(&self) -> Result<Vec<AppName>> {
        let mut names: Vec<String> = Vec::new();
        loop {
            let after = names.last().cloned().unwrap_or_default();
            let rows: Vec<String> = self
                .retry(|| async {
                    sqlx::query_scalar(self.inner.sql.list_apps_page.clone())
                        .bind(after.as_str())
                        .bind(LIST_PAGE)
                        .fetch_all(&self.inner.pool)
                        .await
                        .map_err(from_sqlx)
                })
                .await?;
            let full = rows.len() as i64 == LIST_PAGE;
            names.extend(rows);
            if !full {
                return rules::stored_apps(names);
            }
        }
    }

    /// Operation 10 (fencing): `UPDATE … SET owner = ?thief, token = token + 1 WHERE owner =
    /// ?expected_owner AND token = ?expected_token`. No row: a repeat of a completed steal
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
                self.keyed(
                    sqlx::query(self.inner.sql.steal.clone())
                        .bind(thief.as_str())
                        .bind(micros(duration.get())),
                    key,
                )
                .bind(expected_owner.as_str())
                .bind(expected_token.0)
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

    /// Operation 11: `UPDATE … SET claim = ?claimant` unless the claimant already holds or
    /// claimed it (then the record is returned unchanged); absent is [`Error::NotFound`].
    async fn claim(&self, key: &LeaseKey, claimant: &WorkerId) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.keyed(
                    sqlx::query(self.inner.sql.claim.clone()).bind(claimant.as_str()),
                    key,
                )
                .bind(claimant.as_str())
                .bind(claimant.as_str())
            },
            |current, _| rules::claim(current, key, claimant),
        )
        .await
    }

    /// Operation 9, timed: `UTC_TIMESTAMP(6)` read first, then the pages of
    /// [`LeaseManager::list_leases`]; every record was judged at or after `store_now`.
    async fn list_leases_timed(&self, stream: Option<&StreamName>) -> Result<Listing> {
        let now_us: i64 = self
            .retry(|| async {
                sqlx::query_scalar(self.inner.sql.now.clone())
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        let store_now = row::from_micros(now_us).ok_or_else(|| {
            Error::backend_message(STORE, false, "the server clock is before 1970")
        })?;
        let leases = self.list_leases(stream).await?;
        Ok(Listing { leases, store_now })
    }

    /// Operation 15 (admin import): [`rules::check_import`] first, then one `INSERT` of the
    /// whole record; an existing record meets the primary key (duplicate key 1062) and is left
    /// untouched, answering `false`. As on PostgreSQL, a call whose reply was lost and that
    /// was retried answers `false` for its own write.
    async fn import_lease(&self, record: &Lease) -> Result<bool> {
        rules::check_import(record)?;
        let deadline = record.deadline.map(to_micros);
        let parents = row::encode_parents(&record.parents);
        let checkpoint = record.checkpoint.as_ref();
        let pending = record.pending_checkpoint.as_ref();
        self.retry(|| async {
            let inserted = self
                .keyed(sqlx::query(self.inner.sql.import.clone()), &record.key)
                .bind(record.owner.as_ref().map(WorkerId::as_str))
                .bind(record.token.0)
                .bind(deadline)
                .bind(checkpoint.map(Position::encode))
                .bind(checkpoint.map_or(0, Position::sub_sequence))
                .bind(pending.map(Position::encode))
                .bind(pending.map_or(0, Position::sub_sequence))
                .bind(parents.as_str())
                .bind(record.claim.as_ref().map(WorkerId::as_str))
                .bind(record.owner_switches_since_checkpoint)
                .execute(&self.inner.pool)
                .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(e) if error_number(&e) == Some(ER_DUP_ENTRY) => Ok(false),
                Err(e) => Err(from_sqlx(e)),
            }
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
