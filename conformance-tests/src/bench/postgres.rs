//! PostgreSQL: the store from `CHECKPOINT_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), and the raw baseline on the store's own sqlx
//! pool (the same connections and settings), one statement per operation on the store's lease
//! table: with `RETURNING *` (`SELECT *` for a read) for the record, without for the bare write.

use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_core::conformance::random_app;
use checkpoint_core::{LeaseManager, Store};
use checkpoint_postgres::PostgresStore;
use sqlx::{AssertSqlSafe, PgPool, SqlStr};

use crate::measure::{BoxError, Budget, Stats};
use crate::{Backend, Held, Op, Raw, Reply, Seqs, Settings, duration};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub(crate) async fn open(settings: &Settings) -> Result<Vec<Backend>, String> {
    let url = std::env::var("CHECKPOINT_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let store = PostgresStore::connect(&url, random_app("bench"))
        .await
        .map_err(|e| format!("unreachable ({e}); set CHECKPOINT_POSTGRES_URL"))?;
    let raw = PostgresRaw::new(&store);
    let cleanup_store: Arc<dyn Store> = Arc::new(store.clone());
    Ok(vec![Backend {
        name: "postgres".to_owned(),
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
struct PostgresRaw {
    pool: PgPool,
    app: String,
    /// Bare statements.
    bare: Statements,
    /// The same statements returning the record (`RETURNING *`, `SELECT *`).
    record: Statements,
    renew_batch: SqlStr,
}

#[derive(Clone)]
struct Statements {
    get_lease: SqlStr,
    renew: SqlStr,
    checkpoint: SqlStr,
    fetch: SqlStr,
}

impl PostgresRaw {
    fn new(store: &PostgresStore) -> Self {
        let t = store.lease_table();
        let key = "app = $1 AND stream = $2 AND shard = $3";
        let ms = "* interval '1 millisecond'";
        let statements = |returning: &str, fetched: &str| Statements {
            get_lease: sql(format!(
                "UPDATE {t} SET deadline = clock_timestamp() + $5::bigint {ms} WHERE {key} \
                 AND (owner IS NULL OR owner = $4 OR deadline <= clock_timestamp()){returning}"
            )),
            renew: sql(format!(
                "UPDATE {t} SET deadline = clock_timestamp() + $6::bigint {ms} \
                 WHERE {key} AND owner = $4 AND token = $5{returning}"
            )),
            checkpoint: sql(format!(
                "UPDATE {t} SET checkpoint = $6, checkpoint_sub = 0 \
                 WHERE {key} AND owner = $4 AND token = $5{returning}"
            )),
            fetch: sql(format!("SELECT {fetched} FROM {t} WHERE {key}")),
        };
        Self {
            pool: store.pool().clone(),
            app: store.app().to_string(),
            bare: statements("", "checkpoint"),
            record: statements(" RETURNING *", "*"),
            renew_batch: sql(format!(
                "UPDATE {t} AS l SET deadline = clock_timestamp() + $6::bigint {ms} \
                 FROM unnest($3::text[], $4::text[], $5::bigint[]) AS b(stream, shard, token) \
                 WHERE l.app = $1 AND l.owner = $2 AND l.stream = b.stream \
                 AND l.shard = b.shard AND l.token = b.token"
            )),
        }
    }
}

impl crate::OneRequest for PostgresRaw {
    async fn op(&self, op: Op, reply: Reply, h: &Held, seq: u64) -> Result<(), BoxError> {
        let sql = match reply {
            Reply::Record => &self.record,
            Reply::Bare => &self.bare,
        };
        let statement = match op {
            Op::GetLease => &sql.get_lease,
            Op::Renew => &sql.renew,
            Op::Checkpoint => &sql.checkpoint,
            Op::Fetch => &sql.fetch,
        };
        let mut query = sqlx::query(statement.clone())
            .bind(self.app.as_str())
            .bind(h.key.stream.as_str())
            .bind(h.key.shard.as_str());
        let ms = duration().as_millis() as i64;
        let token = h.token.0 as i64;
        query = match op {
            Op::GetLease => query.bind(h.worker.as_str()).bind(ms),
            Op::Renew => query.bind(h.worker.as_str()).bind(token).bind(ms),
            Op::Checkpoint => query
                .bind(h.worker.as_str())
                .bind(token)
                .bind(seq.to_string()),
            Op::Fetch => query,
        };
        let rows = match (op, reply) {
            (Op::Fetch, _) | (_, Reply::Record) => {
                u64::from(query.fetch_optional(&self.pool).await?.is_some())
            }
            (_, Reply::Bare) => query.execute(&self.pool).await?.rows_affected(),
        };
        if rows != 1 {
            return Err(format!("raw {} matched {rows} rows", op.name()).into());
        }
        Ok(())
    }
}

#[async_trait]
impl Raw for PostgresRaw {
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
        let streams: Vec<&str> = leases.iter().map(|h| h.key.stream.as_str()).collect();
        let shards: Vec<&str> = leases.iter().map(|h| h.key.shard.as_str()).collect();
        let tokens: Vec<i64> = leases.iter().map(|h| h.token.0 as i64).collect();
        let done = sqlx::query(self.renew_batch.clone())
            .bind(self.app.as_str())
            .bind(first.worker.as_str())
            .bind(&streams)
            .bind(&shards)
            .bind(&tokens)
            .bind(duration().as_millis() as i64)
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
