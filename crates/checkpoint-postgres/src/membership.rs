//! [`Membership`] for [`PostgresStore`]: operation 12, one row a live worker in the workers
//! table, its expiry judged by the server's clock (`clock_timestamp()`); each call is one
//! statement.

use async_trait::async_trait;
use checkpoint_core::{Error, HeartbeatTtl, Membership, Result, WorkerId};

use crate::error::from_sqlx;
use crate::row::millis;
use crate::store::PostgresStore;

#[async_trait]
impl Membership for PostgresStore {
    /// Operation 12, register ([`checkpoint_core::rules::register_worker`]): one upsert whose
    /// `DO UPDATE … WHERE` replaces the row only when it carries this handle's nonce or has
    /// expired by the server's clock; PostgreSQL serialises concurrent upserts of one key, so of
    /// two instances registering at once exactly one row wins. No row affected is
    /// [`Error::WorkerIdInUse`]. A retry after a lost reply finds this instance's row.
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let done = self
            .retry(|| async {
                sqlx::query(self.inner.sql.register_worker.clone())
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .bind(millis(ttl.get()))
                    .bind(self.instance.as_str())
                    .execute(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::worker_id_in_use(worker));
        }
        Ok(())
    }

    /// Operation 12, heartbeat ([`checkpoint_core::rules::heartbeat`]): one statement extends
    /// the row carrying this handle's nonce and reads, in the same snapshot, whether a row of
    /// the id exists: another instance's row is [`Error::WorkerIdInUse`], none
    /// [`Error::NotFound`].
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let (beaten, present): (bool, bool) = self
            .retry(|| async {
                sqlx::query_as(self.inner.sql.heartbeat.clone())
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .bind(millis(ttl.get()))
                    .bind(self.instance.as_str())
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        match (beaten, present) {
            (true, _) => Ok(()),
            (false, true) => Err(Error::worker_id_in_use(worker)),
            (false, false) => Err(Error::worker_not_found(worker)),
        }
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        let names: Vec<String> = self
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
            .map(|name| {
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

    /// One `DELETE … WHERE expires_at <= clock_timestamp()`. If a first attempt's reply is lost,
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
