//! SQLite's hooks: raw rows through a connection of their own, an incompatible table in a
//! fresh file, the caller's `BEGIN IMMEDIATE` transaction, and a child process on the same
//! file. SQLite is in-process: there is no network to lose a reply on.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_core::conformance::{BackendHooks, Hooked, RawField, random_app};
use checkpoint_core::{
    AppName, Error, FencingToken, Lease, LeaseKey, Position, Result, Store, WorkerId,
};
use checkpoint_sqlite::rusqlite::{self, TransactionBehavior, params};
use checkpoint_sqlite::{SqliteConfig, SqliteStore};

/// Hooks over the database file every store of the run opens.
pub struct SqliteHooks {
    path: PathBuf,
    child: Option<PathBuf>,
}

impl SqliteHooks {
    /// Hooks over the database at `path`; `child` is the `checkpoint-loop` binary for the
    /// kill -9 scenario (`None`: not covered).
    pub fn new(path: impl Into<PathBuf>, child: Option<PathBuf>) -> Self {
        Self {
            path: path.into(),
            child,
        }
    }

    fn raw(&self) -> Result<rusqlite::Connection> {
        rusqlite::Connection::open(&self.path).map_err(|e| Error::backend("sqlite", false, e))
    }
}

fn failed(e: rusqlite::Error) -> Error {
    Error::backend("sqlite", false, e)
}

#[async_trait]
impl BackendHooks for SqliteHooks {
    async fn write_raw_field(
        &self,
        app: &AppName,
        key: &LeaseKey,
        field: RawField,
        raw: &str,
    ) -> Result<Hooked<&'static str>> {
        let column = match field {
            RawField::Checkpoint => "checkpoint",
            RawField::Owner => "owner",
        };
        let conn = self.raw()?;
        let changed = conn
            .execute(
                &format!(
                    "UPDATE checkpoint_leases SET {column} = ?1 \
                     WHERE app = ?2 AND stream = ?3 AND shard = ?4"
                ),
                params![raw, app.as_str(), key.stream.as_str(), key.shard.as_str()],
            )
            .map_err(failed)?;
        if changed != 1 {
            return Err(Error::lease_not_found(key));
        }
        Ok(Hooked::Done(column))
    }

    async fn open_on_incompatible_layout(&self) -> Result<Hooked<Result<Arc<dyn Store>>>> {
        let path = std::env::temp_dir().join(format!("checkpoint-layout-{}.db", random_app("l")));
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.execute_batch(
                    "CREATE TABLE checkpoint_leases (id INTEGER PRIMARY KEY, blob BLOB)",
                )
            })
            .map_err(failed)?;
        let opened = SqliteStore::open(SqliteConfig::file(&path), random_app("layout"))
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        Ok(Hooked::Done(opened))
    }

    async fn checkpoint_in_transaction(
        &self,
        app: &AppName,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
        position: &Position,
        commit: bool,
    ) -> Result<Hooked<Result<Lease>>> {
        let store = SqliteStore::open(SqliteConfig::file(&self.path), app.clone()).await?;
        let (key, worker, position) = (key.clone(), worker.clone(), position.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<Result<Lease>> {
            let mut conn = store.open_connection()?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(failed)?;
            let written = store.checkpoint_in_transaction(&tx, &key, &worker, token, &position);
            if commit && written.is_ok() {
                tx.commit().map_err(failed)?;
            } else {
                tx.rollback().map_err(failed)?;
            }
            Ok(written)
        })
        .await
        .map_err(|e| Error::backend_message("sqlite", false, e.to_string()))??;
        Ok(Hooked::Done(result))
    }

    async fn checkpoint_until_killed(
        &self,
        app: &AppName,
        key: &LeaseKey,
        worker: &WorkerId,
        token: FencingToken,
    ) -> Result<Hooked<Vec<Position>>> {
        let Some(exe) = &self.child else {
            return Ok(Hooked::Unsupported("no child binary given".into()));
        };
        let location = self.path.display().to_string();
        super::checkpoint_until_killed(exe, "sqlite", &location, app, key, worker, token).await
    }

    async fn open_lossy(
        &self,
        _app: &AppName,
    ) -> Result<Hooked<checkpoint_core::conformance::LossyStore>> {
        Ok(Hooked::Unsupported(
            "SQLite runs in-process: no network reply to lose".into(),
        ))
    }
}
