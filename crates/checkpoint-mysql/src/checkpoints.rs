//! The [`Checkpointer`] and [`Membership`] implementations of [`MySqlStore`], and its
//! transactional checkpoint.

use async_trait::async_trait;
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    Checkpointer, Error, FencingToken, HeartbeatTtl, Lease, LeaseKey, Membership, Position, Result,
    WorkerId,
};
use sqlx::{Connection, MySqlConnection};

use crate::error::from_sqlx;
use crate::row::{micros, progress_key};
use crate::store::{MAX_RACES, MySqlStore, Query, raced};

impl MySqlStore {
    /// Transactional checkpoint (operation 13): writes the fenced checkpoint of `key` inside the
    /// caller's own open transaction on `conn` (a `&mut *tx` of a
    /// `sqlx::Transaction<'_, MySql>`), so the application's state and the position commit or
    /// roll back together: exactly-once processing.
    ///
    /// Same rules as [`Checkpointer::checkpoint_sequence`]. Fencing: the conditional `UPDATE`
    /// matches only while `worker` holds the lease with `token`, and the exclusive row lock it
    /// takes is held until the caller's transaction ends, so no steal or take-over can slip in
    /// between this check and the commit (keep the transaction short: a competing `get_lease`
    /// or `steal` waits for it, up to `innodb_lock_wait_timeout`). Otherwise
    /// [`Error::LeaseLost`] or [`Error::CheckpointRegression`], with nothing written by this
    /// call; the caller should roll back. Faults are not retried here: the transaction belongs
    /// to the caller. `conn` outside a transaction is [`Error::InvalidInput`] naming
    /// `transaction` (the write would commit on its own, which is what
    /// [`Checkpointer::checkpoint_sequence`] is for). The tables must be InnoDB (they are, as
    /// `init` creates them) and so must the caller's, for the two to commit together.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
    /// # use checkpoint_mysql::MySqlStore;
    /// # async fn demo() -> checkpoint_core::Result<()> {
    /// let store = MySqlStore::connect("mysql://root@127.0.0.1/test", AppName::new("billing")?).await?;
    /// let key = LeaseKey::parse("orders", "shard-0")?;
    /// let me = WorkerId::new("worker-1")?;
    /// let lease = store.get_lease(&key, &me, LeaseDuration::new(Duration::from_secs(10))?).await?;
    ///
    /// let mut tx = store.pool().begin().await.expect("begin");
    /// sqlx::query("UPDATE totals SET amount = amount + 42 WHERE id = 1")
    ///     .execute(&mut *tx).await.expect("app write");
    /// store.checkpoint_in_transaction(&mut tx, &key, &me, lease.token, &Position::sequence("1000")?).await?;
    /// tx.commit().await.expect("commit"); // the total and the position, or neither
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint_in_transaction(
        &self,
        conn: &mut MySqlConnection,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        if !conn.is_in_transaction() {
            return Err(Error::invalid(
                "transaction",
                "the connection is not inside a transaction; begin one first",
            ));
        }
        for _ in 0..MAX_RACES {
            let statement =
                self.checkpoint_statement(&self.inner.sql.checkpoint, key, worker, token, position);
            if let Some(lease) = self.write_and_read(&mut *conn, key, statement).await? {
                return Ok(lease);
            }
            let (current, _) = self.reread(&mut *conn, key, false).await?;
            rules::checkpoint(current, key, worker, token, position)?;
        }
        Err(raced(key))
    }

    /// The fenced checkpoint (or prepare) statement with its parameters: `sql` is `checkpoint`
    /// or `prepare_checkpoint`.
    fn checkpoint_statement<'q>(
        &'q self,
        sql: &sqlx::SqlStr,
        key: &'q LeaseKey,
        worker: &'q WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Query<'q> {
        self.keyed(
            sqlx::query(sql.clone())
                .bind(position.encode())
                .bind(position.sub_sequence()),
            key,
        )
        .bind(worker.as_str())
        .bind(token.0)
        .bind(progress_key(position))
    }
}

#[async_trait]
impl Checkpointer for MySqlStore {
    /// Operation 5 (fencing, monotonic positions): `UPDATE … WHERE owner = ? AND token = ? AND
    /// stored progress key <= new progress key`, the progress key being the rank and the
    /// zero-padded sequence and sub-sequence (a generated column of the table), so byte order
    /// is numeric progress order for sequence numbers of up to 128 digits and nothing but
    /// `SHARD_END` follows `SHARD_END`. No row: [`Error::LeaseLost`] or
    /// [`Error::CheckpointRegression`] from the re-read, nothing written.
    async fn checkpoint_sequence(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.conditional(
            key,
            || self.checkpoint_statement(&self.inner.sql.checkpoint, key, worker, token, position),
            |current, _| {
                rules::checkpoint(current, key, worker, token, position).map(Outcome::Write)
            },
        )
        .await
    }

    /// Operation 14: fenced and checked against the stored checkpoint exactly as
    /// [`Checkpointer::checkpoint_sequence`], storing the pending position.
    async fn prepare_checkpoint(
        &self,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.checkpoint_statement(
                    &self.inner.sql.prepare_checkpoint,
                    key,
                    worker,
                    token,
                    position,
                )
            },
            |current, _| {
                rules::prepare_checkpoint(current, key, worker, token, position).map(Outcome::Write)
            },
        )
        .await
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        self.retry(|| self.lease_row(self.keyed(sqlx::query(self.inner.sql.fetch.clone()), key)))
            .await
    }

    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.keyed(
                    sqlx::query(self.inner.sql.reset_checkpoint.clone())
                        .bind(position.map(Position::encode))
                        .bind(position.map_or(0, Position::sub_sequence)),
                    key,
                )
            },
            |current, _| rules::reset_checkpoint(current, key, position).map(Outcome::Write),
        )
        .await
    }
}

#[async_trait]
impl Membership for MySqlStore {
    /// Operation 12, register ([`checkpoint_core::rules::register_worker`]), in one
    /// transaction: `INSERT … ON DUPLICATE KEY UPDATE` that makes the row this handle's only
    /// when it carries this handle's nonce or has expired by the server's clock (the upsert
    /// holds the row's lock to the commit, so of two instances registering at once one row
    /// wins), then a read of the row's instance under that lock: another instance's is
    /// [`Error::WorkerIdInUse`] (nothing was changed). A retry after a lost reply finds this
    /// instance's row.
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let instance = self.instance.as_str();
        let holder: Option<String> = self
            .retry(|| async {
                let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
                sqlx::query(self.inner.sql.register_worker.clone())
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .bind(micros(ttl.get()))
                    .bind(instance)
                    .bind(instance)
                    .bind(instance)
                    .bind(instance)
                    .bind(micros(ttl.get()))
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                let holder = sqlx::query_scalar(self.inner.sql.worker_instance.clone())
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                tx.commit().await.map_err(from_sqlx)?;
                Ok(holder)
            })
            .await?;
        match holder {
            Some(h) if h == instance => Ok(()),
            _ => Err(Error::worker_id_in_use(worker)),
        }
    }

    /// Operation 12, heartbeat ([`checkpoint_core::rules::heartbeat`]): `UPDATE … SET
    /// expires_at = UTC_TIMESTAMP(6) + ttl` of the row carrying this handle's nonce; when no row
    /// matched, a read tells another instance's row ([`Error::WorkerIdInUse`]) from none
    /// ([`Error::NotFound`]).
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let updated = self
            .retry(|| async {
                sqlx::query(self.inner.sql.heartbeat.clone())
                    .bind(micros(ttl.get()))
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .bind(self.instance.as_str())
                    .execute(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        if updated.rows_affected() > 0 {
            return Ok(());
        }
        let holder: Option<String> = self
            .retry(|| async {
                sqlx::query_scalar(self.inner.sql.worker_instance.clone())
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        Err(match holder {
            Some(_) => Error::worker_id_in_use(worker),
            None => Error::worker_not_found(worker),
        })
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let names: Vec<Vec<u8>> = self
            .retry(|| async {
                sqlx::query_scalar(self.inner.sql.live_workers.clone())
                    .bind(self.app.as_str())
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        names
            .into_iter()
            .map(|bytes| {
                let name = String::from_utf8(bytes)
                    .map_err(|e| Error::corrupt("worker", "worker", e.to_string()))?;
                WorkerId::new(name.clone()).map_err(|e| {
                    Error::corrupt(format!("worker {name:?}"), "worker", e.to_string())
                })
            })
            .collect()
    }

    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        self.retry(|| async {
            sqlx::query(self.inner.sql.deregister_worker.clone())
                .bind(self.app.as_str())
                .bind(worker.as_str())
                .execute(&self.inner.pool)
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    /// One `DELETE … WHERE expires_at <= UTC_TIMESTAMP(6)`. If a first attempt's reply is lost,
    /// the retry's count misses what that attempt deleted.
    async fn prune_dead_workers(&self) -> Result<usize> {
        let done = self
            .retry(|| async {
                sqlx::query(self.inner.sql.prune_workers.clone())
                    .bind(self.app.as_str())
                    .execute(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
}
