//! The [`Membership`] implementation of [`SqliteStore`]: worker records in the `<prefix>workers`
//! table, each written in one write transaction and judged by the host clock.

use async_trait::async_trait;
use checkpoint_core::{Error, HeartbeatTtl, Membership, Result, WorkerId};
use rusqlite::params;

use crate::error::from_sqlite;
use crate::rows::text;
use crate::store::SqliteStore;

#[async_trait]
impl Membership for SqliteStore {
    /// Operation 12, register ([`checkpoint_core::rules::register_worker`]): one upsert whose
    /// `DO UPDATE … WHERE` replaces an existing row only when it carries this handle's nonce or
    /// has expired by the host clock (`expires_ms <= now`); no row changed is
    /// [`Error::WorkerIdInUse`]. The expiry becomes now + `ttl` by the host clock.
    async fn register_worker(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let worker = worker.clone();
        let instance = self.instance.clone();
        self.write(move |conn, sql, app, _, now_ms| {
            let changed = conn
                .prepare_cached(&sql.upsert_worker)
                .and_then(|mut s| {
                    s.execute(params![
                        app.as_str(),
                        worker.as_str(),
                        expiry(now_ms, ttl),
                        instance.as_str(),
                        now_ms
                    ])
                })
                .map_err(from_sqlite)?;
            if changed == 0 {
                return Err(Error::worker_id_in_use(&worker));
            }
            Ok(())
        })
        .await
    }

    /// Operation 12, heartbeat ([`checkpoint_core::rules::heartbeat`]): one `UPDATE` of the row
    /// carrying this handle's nonce; when none changed, a read in the same write transaction
    /// tells another instance's row ([`Error::WorkerIdInUse`]) from none ([`Error::NotFound`]).
    async fn heartbeat(&self, worker: &WorkerId, ttl: HeartbeatTtl) -> Result<()> {
        let worker = worker.clone();
        let instance = self.instance.clone();
        self.write(move |conn, sql, app, _, now_ms| {
            let updated = conn
                .prepare_cached(&sql.heartbeat)
                .and_then(|mut s| {
                    s.execute(params![
                        app.as_str(),
                        worker.as_str(),
                        expiry(now_ms, ttl),
                        instance.as_str()
                    ])
                })
                .map_err(from_sqlite)?;
            if updated > 0 {
                return Ok(());
            }
            let exists = conn
                .prepare_cached(&sql.worker_exists)
                .and_then(|mut s| s.exists(params![app.as_str(), worker.as_str()]))
                .map_err(from_sqlite)?;
            Err(if exists {
                Error::worker_id_in_use(&worker)
            } else {
                Error::worker_not_found(&worker)
            })
        })
        .await
    }

    async fn live_workers(&self) -> Result<Vec<WorkerId>> {
        self.read(move |conn, sql, app, _, now_ms| {
            let mut stmt = conn
                .prepare_cached(&sql.live_workers)
                .map_err(from_sqlite)?;
            let mut rows = stmt
                .query(params![app.as_str(), now_ms])
                .map_err(from_sqlite)?;
            let mut workers = Vec::new();
            while let Some(row) = rows.next().map_err(from_sqlite)? {
                let raw = text(row, 0, &app.as_str(), "worker")?.unwrap_or_default();
                workers.push(WorkerId::new(raw.clone()).map_err(|e| {
                    Error::corrupt(format!("{app}/{raw}"), "worker", e.to_string())
                })?);
            }
            Ok(workers)
        })
        .await
    }

    async fn deregister_worker(&self, worker: &WorkerId) -> Result<()> {
        let worker = worker.clone();
        self.write(move |conn, sql, app, _, _| {
            conn.prepare_cached(&sql.delete_worker)
                .and_then(|mut s| s.execute(params![app.as_str(), worker.as_str()]))
                .map_err(from_sqlite)?;
            Ok(())
        })
        .await
    }

    async fn prune_dead_workers(&self) -> Result<usize> {
        self.write(move |conn, sql, app, _, now_ms| {
            conn.prepare_cached(&sql.prune_workers)
                .and_then(|mut s| s.execute(params![app.as_str(), now_ms]))
                .map_err(from_sqlite)
        })
        .await
    }
}

fn expiry(now_ms: i64, ttl: HeartbeatTtl) -> i64 {
    now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}
