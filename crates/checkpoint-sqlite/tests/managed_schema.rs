//! A schema managed outside the application: the script of `checkpoint_sqlite::ddl` run with
//! the SQLite library directly, then a store opened with `migrate=false`, which runs no DDL.

use std::path::PathBuf;
use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, Error, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
use checkpoint_sqlite::{SqliteConfig, SqliteStore, rusqlite};

/// A fresh database file under the system temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("checkpoint-sqlite-{}.db", random_app("m"))))
    }

    fn url(&self, params: &str) -> String {
        format!("sqlite://{}?{params}", self.0.display())
    }

    fn tables(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(&self.0).expect("open");
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_false_runs_no_ddl_and_uses_tables_made_from_the_script() {
    let db = TempDb::new();
    let config = SqliteConfig::from_url(&db.url("migrate=false&table_prefix=ext_")).expect("url");
    assert!(!config.migrations());

    // Nothing there yet: a schema mismatch, and still no table afterwards.
    let err = SqliteStore::open(config.clone(), random_app("m"))
        .await
        .expect_err("no tables");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert_eq!(db.tables(), Vec::<String>::new(), "opening ran DDL");

    // The script, run outside the store with the SQLite library.
    let script = checkpoint_sqlite::ddl(&config).expect("ddl");
    let conn = rusqlite::Connection::open(&db.0).expect("open");
    conn.execute_batch(&script).expect("run the script");
    drop(conn);
    assert_eq!(
        db.tables(),
        ["ext_leases", "ext_schema_migrations", "ext_workers"]
    );

    let store = SqliteStore::open(config, random_app("m"))
        .await
        .expect("open without DDL");
    let key = LeaseKey::parse("orders", "shard-0").expect("key");
    let me = WorkerId::new("w").expect("worker");
    let duration = LeaseDuration::new(Duration::from_secs(30)).expect("duration");
    let lease = store.get_lease(&key, &me, duration).await.expect("acquire");
    let position = Position::sequence("42").expect("position");
    store
        .checkpoint_sequence(&key, &me, lease.token, &position)
        .await
        .expect("checkpoint");
    let fetched = store.fetch_checkpoint(&key).await.expect("fetch");
    assert_eq!(fetched.and_then(|l| l.checkpoint), Some(position));

    // The script's tables are exactly what a migrating store expects: it opens them as its own.
    let migrating = SqliteConfig::from_url(&db.url("table_prefix=ext_")).expect("url");
    SqliteStore::open(migrating, random_app("m"))
        .await
        .expect("the migrating store accepts the script's schema");
}

#[test]
fn a_bad_migrate_value_names_the_parameter() {
    let err = SqliteConfig::from_url("sqlite://x.db?migrate=maybe").unwrap_err();
    assert_eq!(err.field(), Some("migrate"));
}
