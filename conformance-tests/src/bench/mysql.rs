//! MySQL/MariaDB: the store from `CHECKPOINT_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`), and the raw baseline on the store's own sqlx pool (the
//! same connections and settings) on the store's lease table. MySQL has no `RETURNING` on
//! `UPDATE`, so the raw write returning the record is what the library itself must do: the
//! conditional `UPDATE` and a `SELECT *` of the row in one transaction; the bare write is the
//! `UPDATE` alone, autocommitted.

use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseManager, Store};
use checkpoint_mysql::MySqlStore;
use sqlx::{AssertSqlSafe, MySqlPool, SqlStr};

use crate::measure::{BoxError, Budget, Stats};
use crate::{Backend, Held, Op, Raw, Reply, Seqs, Settings, duration};

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

pub(crate) async fn open(settings: &Settings) -> Result<Vec<Backend>, String> {
    let url = std::env::var("CHECKPOINT_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let store = MySqlStore::connect(&url, random_app("bench"))
        .await
        .map_err(|e| format!("unreachable ({e}); set CHECKPOINT_MYSQL_URL"))?;
    let raw = MySqlRaw::new(&store);
    let cleanup_store: Arc<dyn Store> = Arc::new(store.clone());
    Ok(vec![Backend {
        name: "mysql".to_owned(),
        store: Arc::new(store),
        raw: Some(Arc::new(raw)),
        ops: Op::ALL.to_vec(),
        renew_sizes: settings.renew_sizes(),
        requests: None,
        url: Some(url),
        consumer: true,
        cleanup: Some(Box::new(move || Box::pin(crate::delete_all(cleanup_store)))),
    }])
}

fn sql(text: String) -> SqlStr {
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(Arc::<str>::from(text)))
}

#[derive(Clone)]
struct MySqlRaw {
    pool: MySqlPool,
    app: String,
    get_lease: SqlStr,
    renew: SqlStr,
    checkpoint: SqlStr,
    /// `SELECT *` of one record.
    fetch: SqlStr,
    /// `SELECT checkpoint` of one record: the bare read.
    fetch_bare: SqlStr,
    renew_batch: SqlStr,
}

impl MySqlRaw {
    fn new(store: &MySqlStore) -> Self {
        let t = store.lease_table();
        let key = "app = ? AND stream = ? AND shard = ?";
        let until = "TIMESTAMPADD(MICROSECOND, ?, UTC_TIMESTAMP(6))";
        Self {
            pool: store.pool().clone(),
            app: store.app().to_string(),
            // key, worker, duration (us).
            get_lease: sql(format!(
                "UPDATE {t} SET deadline = TIMESTAMPADD(MICROSECOND, ?, UTC_TIMESTAMP(6)) \
                 WHERE {key} AND (owner IS NULL OR owner = ? OR deadline <= UTC_TIMESTAMP(6))"
            )),
            // duration (us), key, worker, token.
            renew: sql(format!(
                "UPDATE {t} SET deadline = {until} WHERE {key} AND owner = ? AND token = ?"
            )),
            // position, key, worker, token.
            checkpoint: sql(format!(
                "UPDATE {t} SET checkpoint = ?, checkpoint_sub = 0 \
                 WHERE {key} AND owner = ? AND token = ?"
            )),
            fetch: sql(format!("SELECT * FROM {t} WHERE {key}")),
            fetch_bare: sql(format!("SELECT checkpoint FROM {t} WHERE {key}")),
            // batch, duration (us), app, worker.
            renew_batch: sql(format!(
                "UPDATE {t} AS l JOIN JSON_TABLE(?, '$[*]' COLUMNS ( \
                     stream VARCHAR(256) CHARACTER SET utf8mb4 PATH '$[0]', \
                     shard VARCHAR(256) CHARACTER SET utf8mb4 PATH '$[1]', \
                     token BIGINT UNSIGNED PATH '$[2]')) AS b \
                   ON l.stream = b.stream COLLATE utf8mb4_bin \
                  AND l.shard = b.shard COLLATE utf8mb4_bin \
                 SET l.deadline = {until} \
                 WHERE l.app = ? AND l.owner = ? AND l.token = b.token"
            )),
        }
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// `q` with the key parameters app, stream, shard bound.
fn keyed<'q>(q: Query<'q>, app: &'q str, h: &'q Held) -> Query<'q> {
    q.bind(app)
        .bind(h.key.stream.as_str())
        .bind(h.key.shard.as_str())
}

impl crate::OneRequest for MySqlRaw {
    async fn op(&self, op: Op, reply: Reply, h: &Held, seq: u64) -> Result<(), BoxError> {
        let us = duration().get().as_micros() as i64;
        let app = self.app.as_str();
        let write = match op {
            Op::GetLease => Some(
                keyed(sqlx::query(self.get_lease.clone()).bind(us), app, h).bind(h.worker.as_str()),
            ),
            Op::Renew => Some(
                keyed(sqlx::query(self.renew.clone()).bind(us), app, h)
                    .bind(h.worker.as_str())
                    .bind(h.token.0),
            ),
            Op::Checkpoint => Some(
                keyed(
                    sqlx::query(self.checkpoint.clone()).bind(seq.to_string()),
                    app,
                    h,
                )
                .bind(h.worker.as_str())
                .bind(h.token.0),
            ),
            Op::Fetch => None,
        };
        let rows = match (write, reply) {
            (None, Reply::Record) => u64::from(
                keyed(sqlx::query(self.fetch.clone()), app, h)
                    .fetch_optional(&self.pool)
                    .await?
                    .is_some(),
            ),
            (None, Reply::Bare) => u64::from(
                keyed(sqlx::query(self.fetch_bare.clone()), app, h)
                    .fetch_optional(&self.pool)
                    .await?
                    .is_some(),
            ),
            (Some(write), Reply::Bare) => write.execute(&self.pool).await?.rows_affected(),
            (Some(write), Reply::Record) => {
                let mut tx = self.pool.begin().await?;
                let matched = write.execute(&mut *tx).await?.rows_affected();
                let found = keyed(sqlx::query(self.fetch.clone()), app, h)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                tx.commit().await?;
                if found { matched } else { 0 }
            }
        };
        if rows != 1 {
            return Err(format!("raw {} matched {rows} rows", op.name()).into());
        }
        Ok(())
    }
}

#[async_trait]
impl Raw for MySqlRaw {
    async fn checkpoint(&self, _t: usize, h: &Held, seq: u64) -> Result<(), BoxError> {
        crate::OneRequest::op(self, Op::Checkpoint, Reply::Record, h, seq).await
    }

    async fn measure(
        &self,
        op: Op,
        reply: Reply,
        leases: Arc<Vec<Held>>,
        seqs: Arc<Seqs>,
        budget: Budget,
    ) -> Result<Stats, BoxError> {
        crate::measure_each(self, op, reply, leases, seqs, budget).await
    }

    async fn renew_batch(&self, leases: Arc<Vec<Held>>) -> Result<bool, BoxError> {
        let Some(first) = leases.first() else {
            return Ok(true);
        };
        let batch = format!(
            "[{}]",
            leases
                .iter()
                .map(|h| format!(
                    "[\"{}\",\"{}\",{}]",
                    h.key.stream.as_str(),
                    h.key.shard.as_str(),
                    h.token.0
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let done = sqlx::query(self.renew_batch.clone())
            .bind(batch)
            .bind(duration().get().as_micros() as i64)
            .bind(self.app.as_str())
            .bind(first.worker.as_str())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() != leases.len() as u64 {
            return Err(format!(
                "raw batch renewed {} of {}",
                done.rows_affected(),
                leases.len()
            )
            .into());
        }
        Ok(true)
    }

    async fn renew_each(&self, leases: Arc<Vec<Held>>, concurrency: usize) -> Result<(), BoxError> {
        crate::renew_each_with(self, leases, concurrency).await
    }
}
