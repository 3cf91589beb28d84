//! Redis's hooks: raw hash fields with `HSET`, a meta hash from another layout version for a
//! fresh app, a child process, and a lossy proxy that drops the reply to the next command.
//! Redis has no transaction a caller's own writes can share with a checkpoint: not covered.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_core::conformance::{BackendHooks, Hooked, LossyStore, RawField, random_app};
use checkpoint_core::{AppName, Error, FencingToken, LeaseKey, Position, Result, Store, WorkerId};
use checkpoint_redis::redis;
use checkpoint_redis::{RedisConfig, RedisStore};
use checkpoint_test_support::{Backend, DropRule, LossyProxy, Protocol};

use super::ProxyLink;

/// Hooks over the server at `url`, with stores configured as the run's factory configures
/// them.
pub struct RedisHooks {
    url: String,
    config: fn(&str) -> RedisConfig,
    admin: RedisStore,
    child: Option<PathBuf>,
}

impl RedisHooks {
    /// Hooks for the server at `url`; `config` makes the run's store config from a URL;
    /// `child` is the `checkpoint-loop` binary for the kill -9 scenario.
    pub async fn open(
        url: &str,
        config: fn(&str) -> RedisConfig,
        child: Option<PathBuf>,
    ) -> Result<Self> {
        let admin = RedisStore::open(config(url), random_app("hooks")).await?;
        Ok(Self {
            url: url.to_owned(),
            config,
            admin,
            child,
        })
    }

    async fn command(&self, cmd: &redis::Cmd) -> Result<()> {
        let client = redis::Client::open(self.url.as_str()).map_err(failed)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(failed)?;
        cmd.query_async::<()>(&mut conn).await.map_err(failed)
    }
}

fn failed(e: redis::RedisError) -> Error {
    Error::backend("redis", false, e)
}

#[async_trait]
impl BackendHooks for RedisHooks {
    async fn write_raw_field(
        &self,
        app: &AppName,
        key: &LeaseKey,
        field: RawField,
        raw: &str,
    ) -> Result<Hooked<&'static str>> {
        let name = match field {
            RawField::Checkpoint => "checkpoint",
            RawField::Owner => "owner",
        };
        let layout = self.admin.for_app(app.clone()).key_layout().clone();
        self.command(redis::cmd("HSET").arg(layout.lease(key)).arg(name).arg(raw))
            .await?;
        Ok(Hooked::Done(name))
    }

    async fn open_on_incompatible_layout(&self) -> Result<Hooked<Result<Arc<dyn Store>>>> {
        let app = random_app("layout");
        let meta = self.admin.for_app(app.clone()).key_layout().meta();
        self.command(redis::cmd("HSET").arg(&meta).arg("layout").arg("99"))
            .await?;
        let opened = RedisStore::open((self.config)(&self.url), app)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>);
        self.command(redis::cmd("DEL").arg(&meta)).await?;
        Ok(Hooked::Done(opened))
    }

    async fn checkpoint_in_transaction(
        &self,
        _app: &AppName,
        _key: &LeaseKey,
        _worker: &WorkerId,
        _token: FencingToken,
        _position: &Position,
        _commit: bool,
    ) -> Result<Hooked<Result<checkpoint_core::Lease>>> {
        Ok(Hooked::Unsupported(
            "Redis has no transaction a caller's own writes can share with a checkpoint".into(),
        ))
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
        super::checkpoint_until_killed(exe, "redis", &self.url, app, key, worker, token).await
    }

    async fn open_lossy(&self, app: &AppName) -> Result<Hooked<LossyStore>> {
        let upstream = checkpoint_test_support::server_address(Backend::Redis, &self.url)
            .map_err(|e| Error::invalid("url", e))?;
        let Some(upstream) = upstream else {
            return Ok(Hooked::Unsupported(
                "a Unix socket: no TCP link to proxy".into(),
            ));
        };
        if self.url.starts_with("rediss") {
            return Ok(Hooked::Unsupported(
                "TLS: the proxy cannot read the link".into(),
            ));
        }
        let proxy = LossyProxy::start(upstream, Protocol::Stream).await;
        let url = checkpoint_test_support::replace_address(
            &self.url,
            &format!("127.0.0.1:{}", proxy.port()),
        );
        let store = RedisStore::open((self.config)(&url), app.clone()).await?;
        Ok(Hooked::Done(LossyStore {
            store: Arc::new(store),
            link: Arc::new(ProxyLink {
                proxy,
                rule: DropRule::NextRequest,
            }),
        }))
    }
}
