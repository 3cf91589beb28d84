//! Renew-many in chunks ([`checkpoint_core::LeaseManager::renew_many`] of [`MySqlStore`]): one
//! short transaction a chunk of [`crate::MySqlConfig::renew_chunk`] leases (the conditional
//! `UPDATE` of the batch, then a `SELECT` of the rows it renewed), several chunks at once on
//! separate pooled connections.

use std::sync::Arc;

use checkpoint_core::{Error, FencingToken, Lease, LeaseDuration, LeaseKey, Result, WorkerId};

use crate::error::{STORE, from_sqlx};
use crate::row::{self, decode_lease, micros};
use crate::store::MySqlStore;

/// Most renew-many chunk statements run at once (never more than the pool's connections).
pub(crate) const RENEW_PARALLEL: usize = 4;

impl MySqlStore {
    /// One renew-many chunk (see [`checkpoint_core::LeaseManager::renew_many`]): the renewed
    /// leases, in no particular order. Retried on transient faults.
    pub(crate) async fn renew_chunk(
        &self,
        worker: &WorkerId,
        chunk: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
    ) -> Result<Vec<Lease>> {
        let batch = row::batch_json(chunk);
        let rows = self
            .retry(|| async {
                let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
                let done = sqlx::query(self.inner.sql.renew_many.clone())
                    .bind(batch.as_str())
                    .bind(micros(duration.get()))
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                if done.rows_affected() == 0 {
                    return Ok(Vec::new());
                }
                let rows = sqlx::query(self.inner.sql.renewed_many.clone())
                    .bind(batch.as_str())
                    .bind(self.app.as_str())
                    .bind(worker.as_str())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                tx.commit().await.map_err(from_sqlx)?;
                Ok(rows)
            })
            .await?;
        rows.iter().map(decode_lease).collect()
    }

    /// Renews `leases` in chunks of [`crate::MySqlConfig::renew_chunk`] with `parallel` tasks, task
    /// `i` running chunks `i`, `i + parallel`, … one after the other. Every task runs to its
    /// end; then the first error, if any, is the answer.
    pub(crate) async fn renew_parallel(
        &self,
        worker: &WorkerId,
        leases: &[(LeaseKey, FencingToken)],
        duration: LeaseDuration,
        parallel: usize,
    ) -> Result<Vec<Lease>> {
        let leases: Arc<[(LeaseKey, FencingToken)]> = leases.into();
        let mut tasks = tokio::task::JoinSet::new();
        for first in 0..parallel {
            let (store, worker, leases) = (self.clone(), worker.clone(), leases.clone());
            tasks.spawn(async move {
                let mut renewed = Vec::new();
                let chunks = leases
                    .chunks(store.inner.config.renew_chunk())
                    .skip(first)
                    .step_by(parallel);
                for chunk in chunks {
                    renewed.extend(store.renew_chunk(&worker, chunk, duration).await?);
                }
                Ok::<_, Error>(renewed)
            });
        }
        let mut renewed = Vec::with_capacity(leases.len());
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(part)) => renewed.extend(part),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    failure.get_or_insert(Error::backend_message(
                        STORE,
                        true,
                        format!("a renew-many task was cancelled: {e}"),
                    ));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(renewed),
        }
    }
}
