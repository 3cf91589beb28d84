//! [`Checkpointer`] for [`PostgresStore`] (operations 5, 6, 14 and the admin reset), and its
//! transactional checkpoint (operation 13, [`PostgresStore::checkpoint_in_transaction`]): each
//! write is the one fenced conditional `UPDATE … RETURNING` described in `store.rs`.

use async_trait::async_trait;
use checkpoint_core::rules::{self, Outcome};
use checkpoint_core::{
    Checkpointer, Error, FencingToken, Lease, LeaseKey, Position, Result, WorkerId,
};
use sqlx::{Connection, PgConnection, PgExecutor};

use crate::error::from_sqlx;
use crate::row::{decode_lease, progress_key, token_param};
use crate::store::{MAX_RACES, PostgresStore, raced};

impl PostgresStore {
    /// Transactional checkpoint (operation 13): writes the fenced checkpoint of `key` inside the
    /// caller's own open transaction on `conn` (a `&mut *tx` of a
    /// `sqlx::Transaction<'_, Postgres>`), so the application's state and the position commit
    /// or roll back together: exactly-once processing.
    ///
    /// Same rules as [`Checkpointer::checkpoint_sequence`]. Fencing: the conditional `UPDATE` matches
    /// only while `worker` holds the lease with `token`, and the row lock it takes is held until
    /// the caller's transaction ends, so no steal or take-over can slip in between this check and
    /// the commit (keep the transaction short: a competing `get_lease` or `steal` waits for it).
    /// Otherwise [`Error::LeaseLost`] or [`Error::CheckpointRegression`], with nothing written
    /// by this call; the caller should roll back. Faults are not retried here: the transaction
    /// belongs to the caller. `conn` outside a transaction is [`Error::InvalidInput`] naming
    /// `transaction` (the write would commit on its own, which is what
    /// [`Checkpointer::checkpoint_sequence`] is for).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use checkpoint_core::{AppName, Checkpointer, LeaseManager, LeaseDuration, LeaseKey, Position, WorkerId};
    /// # use checkpoint_postgres::PostgresStore;
    /// # async fn demo() -> checkpoint_core::Result<()> {
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/test", AppName::new("billing")?).await?;
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
        conn: &mut PgConnection,
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
            let written = self
                .checkpoint_statement(
                    &mut *conn,
                    &self.inner.sql.checkpoint,
                    key,
                    worker,
                    token,
                    position,
                )
                .await?;
            if let Some(lease) = written {
                return Ok(lease);
            }
            let (current, _) = self.reread(&mut *conn, key).await?;
            rules::checkpoint(current, key, worker, token, position)?;
        }
        Err(raced(key))
    }

    /// The fenced checkpoint (or prepare) statement: `sql` is `checkpoint` or
    /// `prepare_checkpoint`.
    async fn checkpoint_statement<'e, E: PgExecutor<'e>>(
        &self,
        exec: E,
        sql: &sqlx::SqlStr,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
    ) -> Result<Option<Lease>> {
        let row = sqlx::query(sql.clone())
            .bind(self.app.as_str())
            .bind(key.stream.as_str())
            .bind(key.shard.as_str())
            .bind(worker.as_str())
            .bind(token_param(token))
            .bind(position.encode())
            .bind(position.sub_sequence().to_string())
            .bind(progress_key(position))
            .fetch_optional(exec)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(decode_lease).transpose()
    }
}

#[async_trait]
impl Checkpointer for PostgresStore {
    /// Operation 5 (fencing, monotonic positions): `UPDATE … WHERE owner = $worker AND token =
    /// $token AND stored progress key <= new progress key`, the progress key being the rank and
    /// the zero-padded sequence and sub-sequence, so text order is progress order and nothing
    /// but `SHARD_END` follows `SHARD_END`. No row: [`Error::LeaseLost`] or
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
            || {
                Box::pin(self.checkpoint_statement(
                    &self.inner.pool,
                    &self.inner.sql.checkpoint,
                    key,
                    worker,
                    token,
                    position,
                ))
            },
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
                Box::pin(self.checkpoint_statement(
                    &self.inner.pool,
                    &self.inner.sql.prepare_checkpoint,
                    key,
                    worker,
                    token,
                    position,
                ))
            },
            |current, _| {
                rules::prepare_checkpoint(current, key, worker, token, position).map(Outcome::Write)
            },
        )
        .await
    }

    async fn fetch_checkpoint(&self, key: &LeaseKey) -> Result<Option<Lease>> {
        self.retry(|| self.lease_row(self.keyed(&self.inner.sql.fetch, key)))
            .await
    }

    async fn reset_checkpoint(&self, key: &LeaseKey, position: Option<&Position>) -> Result<Lease> {
        self.conditional(
            key,
            || {
                self.lease_row(
                    self.keyed(&self.inner.sql.reset_checkpoint, key)
                        .bind(position.map(Position::encode))
                        .bind(position.map_or(0, Position::sub_sequence).to_string()),
                )
            },
            |current, _| rules::reset_checkpoint(current, key, position).map(Outcome::Write),
        )
        .await
    }
}
