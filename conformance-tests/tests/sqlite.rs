//! The conformance suite against SQLite: a temporary database file with a new store handle
//! (its own connections) for every factory call, on the system clock and on a manual clock
//! (expiry checked to the millisecond), and the in-memory mode with handles from
//! [`SqliteStore::for_app`] (one private database, so every handle reaches the same data).
//! The file run passes SQLite's hooks ([`SqliteHooks`]) for the backend scenarios; the
//! in-memory run has none (no second connection reaches its data), which its capability row
//! prints.
#![cfg(feature = "sqlite")]

use std::path::PathBuf;
use std::sync::Arc;

use checkpoint_core::conformance::{self, Configured, random_app};
use checkpoint_core::{AppName, LeaseManager, ManualClock, Store};
use checkpoint_sqlite::{SqliteConfig, SqliteStore};
use conformance_tests::hooks::sqlite::SqliteHooks;
use conformance_tests::print_capability_rows;

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
    let hooks = SqliteHooks::new(&db.0, Some(env!("CARGO_BIN_EXE_checkpoint-loop").into()));
    let started = std::time::Instant::now();
    let report = conformance::run_all_with(&factory, &hooks).await;
    println!("sqlite (file) suite: {:?}", started.elapsed());
    print_capability_rows(&[(file.capabilities(), &report)]);
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conforms_on_a_manual_clock() {
    let db = TempDb::new();
    let path = db.0.clone();
    let clock = Arc::new(ManualClock::default());
    let store_clock = clock.clone();
    let factory = Configured::new(move |app: AppName| {
        let config = SqliteConfig::file(path.clone()).with_clock(store_clock.clone());
        async move {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config, app).await?);
            Ok(store)
        }
    })
    .with_manual_clock(clock);
    conformance::run_all(&factory).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_conforms() {
    let base = SqliteStore::open(SqliteConfig::memory(), random_app("base"))
        .await
        .expect("open an in-memory database");
    let caps = base.capabilities();
    let factory = move |app: AppName| {
        let store: Arc<dyn Store> = Arc::new(base.for_app(app));
        std::future::ready(Ok(store))
    };
    let report = conformance::run_all(&factory).await;
    print_capability_rows(&[(caps, &report)]);
    report.assert_passed();
}
