//! The conformance suite against SQLite: one temporary database file, a new store handle (with
//! its own connections) for every factory call, so every scenario also exercises independent
//! handles on one file.
#![cfg(feature = "sqlite")]

use std::path::PathBuf;
use std::sync::Arc;

use checkpoint_core::conformance::{self, random_app};
use checkpoint_core::{AppName, LeaseManager, Store};
use checkpoint_sqlite::{SqliteConfig, SqliteStore};
use conformance_tests::print_capability_table;

/// A fresh database file under the system temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let name = format!("checkpoint-conformance-{}.db", random_app("sqlite"));
        Self(std::env::temp_dir().join(name))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conforms() {
    let db = TempDb::new();
    let path = db.0.clone();
    let factory = move |app: AppName| {
        let path = path.clone();
        async move {
            let store: Arc<dyn Store> =
                Arc::new(SqliteStore::open(SqliteConfig::file(path), app).await?);
            Ok(store)
        }
    };
    let file = SqliteStore::open(SqliteConfig::file(&db.0), random_app("caps"))
        .await
        .expect("open the temporary database");
    let memory = SqliteStore::open(SqliteConfig::memory(), random_app("caps"))
        .await
        .expect("open an in-memory database");
    print_capability_table(&[file.capabilities(), memory.capabilities()]);
    conformance::run_all(&factory).await.assert_passed();
}
