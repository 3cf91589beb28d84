//! PostgreSQL's hooks: raw rows through the store's pool, an incompatible table in a fresh
//! schema, the caller's transaction, a child process, and a lossy proxy that drops the reply
//! after a write committed. PostgreSQL text cannot hold NUL: those hostile values are not
//! covered.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_core::conformance::{BackendHooks, Hooked, LossyStore, RawField, random_app};
use checkpoint_core::{
    AppName, Error, FencingToken, Lease, LeaseKey, Position, Result, Store, WorkerId,
};
use checkpoint_postgres::sqlx;
use checkpoint_postgres::{PostgresConfig, PostgresStore};
use checkpoint_test_support::{Backend, DropRule, LossyProxy, Protocol};

use super::ProxyLink;

/// Hooks over the server at `url`, with stores configured as the run's factory configures
/// them.
pub struct PostgresHooks {
    url: String,
    config: fn(&str) -> PostgresConfig,
    admin: PostgresStore,
    child: Option<PathBuf>,
}

impl PostgresHooks {
    /// Hooks for the server at `url`; `config` makes the run's store config from a URL;
    /// `child` is the `checkpoint-loop` binary for the kill -9 scenario.
    pub async fn open(
        url: &str,
        config: fn(&str) -> PostgresConfig,
        child: Option<PathBuf>,
    ) -> Result<Self> {
        let admin = PostgresStore::open(config(url), random_app("hooks")).await?;
        Ok(Self {
            url: url.to_owned(),
            config,
            admin,
            child,
        })
    }
}

fn failed(e: sqlx::Error) -> Error {
    Error::backend("postgres", false, e)
}

#[async_trait]
impl BackendHooks for PostgresHooks {
    async fn write_raw_field(
        &self,
        app: &AppName,
        key: &LeaseKey,
        field: RawField,
        raw: &str,
    ) -> Result<Hooked<&'static str>> {
        if raw.contains('\0') {
            return Ok(Hooked::Unsupported(
                "PostgreSQL text cannot hold NUL".into(),
            ));
        }
        let column = match field {
            RawField::Checkpoint => "checkpoint",
            RawField::Owner => "owner",
        };
        let changed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET {column} = $1 WHERE app = $2 AND stream = $3 AND shard = $4",
            self.admin.lease_table()
        )))
        .bind(raw)
        .bind(app.as_str())
        .bind(key.stream.as_str())
        .bind(key.shard.as_str())
        .execute(self.admin.pool())
        .await
        .map_err(failed)?
        .rows_affected();
        if changed != 1 {
            return Err(Error::lease_not_found(key));
        }
        Ok(Hooked::Done(column))
    }

    async fn open_on_incompatible_layout(&self) -> Result<Hooked<Result<Arc<dyn Store>>>> {
        let schema = random_app("layout").as_str().replace('-', "_");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".ck_leases \
             (app text, stream text, shard text, PRIMARY KEY (app, stream, shard))"
        )))
        .execute(self.admin.pool())
        .await
        .map_err(failed)?;
        let opened = PostgresStore::open(
            (self.config)(&self.url)
                .with_schema(schema.clone())
                .with_table_prefix("ck"),
            random_app("layout"),
        )
        .await
        .map(|s| Arc::new(s) as Arc<dyn Store>);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(self.admin.pool())
        .await
        .map_err(failed)?;
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
        let store = self.admin.for_app(app.clone());
        let mut tx = store.pool().begin().await.map_err(failed)?;
        let written = store
            .checkpoint_in_transaction(&mut tx, key, worker, token, position)
            .await;
        if commit && written.is_ok() {
            tx.commit().await.map_err(failed)?;
        } else {
            tx.rollback().await.map_err(failed)?;
        }
        Ok(Hooked::Done(written))
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
        super::checkpoint_until_killed(exe, "postgres", &self.url, app, key, worker, token).await
    }

    async fn open_lossy(&self, app: &AppName) -> Result<Hooked<LossyStore>> {
        let upstream = checkpoint_test_support::server_address(Backend::Postgres, &self.url)
            .map_err(|e| Error::invalid("url", e))?;
        let Some(upstream) = upstream else {
            return Ok(Hooked::Unsupported(
                "a Unix socket: no TCP link to proxy".into(),
            ));
        };
        let proxy = LossyProxy::start(upstream, Protocol::Postgres).await;
        let url = checkpoint_test_support::replace_address(
            &self.url,
            &format!("127.0.0.1:{}", proxy.port()),
        );
        let url = checkpoint_test_support::with_query(&url, "sslmode", "disable");
        let store = PostgresStore::open((self.config)(&url), app.clone()).await?;
        Ok(Hooked::Done(LossyStore {
            store: Arc::new(store),
            link: Arc::new(ProxyLink {
                proxy,
                rule: DropRule::PostgresWrite,
            }),
        }))
    }
}
