//! Redis: the store from `CHECKPOINT_REDIS_URL` (default `redis://127.0.0.1:6379/`), and the
//! raw baseline on a connection of its own built exactly as the store builds its one (a
//! multiplexed `ConnectionManager` with the same timeouts and reconnection settings), sending
//! minimal Lua scripts by `EVALSHA` over the store's own keys: replying with the record's fields
//! (one `HMGET` of them, as the library's scripts and fetch read them) or with nothing (bare).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use checkpoint_core::Store;
use checkpoint_core::conformance::random_app;
use checkpoint_redis::{RedisConfig, RedisStore};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::measure::{BoxError, Budget, Stats};
use crate::{Backend, Held, Op, Raw, Reply, Seqs, Settings, duration};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";

/// `get_lease` reduced to its condition: free, expired or ours; then owner and deadline.
static GET_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'owner', 'deadline')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if f[1] and f[1] ~= ARGV[1] and f[2] and tonumber(f[2]) > now then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'deadline', string.format('%.0f', now + tonumber(ARGV[2])))
return 1
",
    )
});

/// `renew` reduced to its condition: owner and token; then the deadline.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'owner', 'token')
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'deadline', string.format('%.0f', now + tonumber(ARGV[3])))
return 1
",
    )
});

/// `checkpoint` reduced to its fencing condition: owner and token; then the position.
static CHECKPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'owner', 'token')
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[3], 'checkpoint_sub', '0')
return 1
",
    )
});

/// The lease fields, as the library stores them.
const FIELDS: [&str; 10] = [
    "owner",
    "token",
    "deadline",
    "checkpoint",
    "checkpoint_sub",
    "pending",
    "pending_sub",
    "parents",
    "claim",
    "owner_switches",
];

/// A record-returning script: `HMGET` of every field into `v` (owner `v[1]`, token `v[2]`,
/// deadline `v[3]`, checkpoint `v[4]`, checkpoint_sub `v[5]`), `body`, then `v` as the reply.
fn record_script(body: &str) -> Script {
    let fields: Vec<String> = FIELDS.iter().map(|f| format!("'{f}'")).collect();
    Script::new(&format!(
        "local v = redis.call('HMGET', KEYS[1], {})\n{body}\nreturn v\n",
        fields.join(", ")
    ))
}

/// [`GET_LEASE`], replying with the record.
static GET_LEASE_RECORD: LazyLock<Script> = LazyLock::new(|| {
    record_script(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if v[1] and v[1] ~= ARGV[1] and v[3] and tonumber(v[3]) > now then return 0 end
v[1] = ARGV[1]
v[3] = string.format('%.0f', now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'owner', v[1], 'deadline', v[3])",
    )
});

/// [`RENEW`], replying with the record.
static RENEW_RECORD: LazyLock<Script> = LazyLock::new(|| {
    record_script(
        r"
if v[1] ~= ARGV[1] or v[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
v[3] = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'deadline', v[3])",
    )
});

/// [`CHECKPOINT`], replying with the record.
static CHECKPOINT_RECORD: LazyLock<Script> = LazyLock::new(|| {
    record_script(
        r"
if v[1] ~= ARGV[1] or v[2] ~= ARGV[2] then return 0 end
v[4] = ARGV[3]
v[5] = '0'
redis.call('HSET', KEYS[1], 'checkpoint', v[4], 'checkpoint_sub', v[5])",
    )
});

/// `renew_many` reduced to its condition per key; replies 1 or 0 per key.
static RENEW_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local d = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]))
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'owner', 'token')
  if f[1] == ARGV[1] and f[2] == ARGV[2 + i] then
    redis.call('HSET', key, 'deadline', d)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
",
    )
});

pub(crate) async fn open(settings: &Settings) -> Result<Vec<Backend>, String> {
    let url = std::env::var("CHECKPOINT_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let store = RedisStore::connect(&url, random_app("bench"))
        .await
        .map_err(|e| format!("unreachable ({e}); set CHECKPOINT_REDIS_URL"))?;
    let raw = RedisRaw::connect(&url, &store)
        .await
        .map_err(|e| format!("raw connection failed: {e}"))?;
    let cleanup_store: Arc<dyn Store> = Arc::new(store.clone());
    Ok(vec![Backend {
        name: "redis".to_owned(),
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

#[derive(Clone)]
struct RedisRaw {
    conn: ConnectionManager,
    store: RedisStore,
}

impl RedisRaw {
    async fn connect(url: &str, store: &RedisStore) -> Result<Self, BoxError> {
        let config = RedisConfig::from_url(url)?;
        let client = redis::Client::open(url)?;
        // The store's own settings (checkpoint-redis `RedisStore::open`).
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout()))
            .set_response_timeout(Some(config.response_timeout()))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_with_config(client, manager).await?;
        Ok(Self {
            conn,
            store: store.clone(),
        })
    }
}

impl crate::OneRequest for RedisRaw {
    async fn op(&self, op: Op, reply: Reply, h: &Held, seq: u64) -> Result<(), BoxError> {
        let mut conn = self.conn.clone();
        let key = self.store.key_layout().lease(&h.key);
        let token = h.token.0.to_string();
        let record = reply == Reply::Record;
        let script = |bare: &'static LazyLock<Script>, with: &'static LazyLock<Script>| {
            if record { &**with } else { &**bare }
        };
        let invocation = match op {
            Op::GetLease => {
                let mut i = script(&GET_LEASE, &GET_LEASE_RECORD).prepare_invoke();
                i.key(&key)
                    .arg(h.worker.as_str())
                    .arg(duration().as_millis());
                i
            }
            Op::Renew => {
                let mut i = script(&RENEW, &RENEW_RECORD).prepare_invoke();
                i.key(&key)
                    .arg(h.worker.as_str())
                    .arg(&token)
                    .arg(duration().as_millis());
                i
            }
            Op::Checkpoint => {
                let mut i = script(&CHECKPOINT, &CHECKPOINT_RECORD).prepare_invoke();
                i.key(&key)
                    .arg(h.worker.as_str())
                    .arg(&token)
                    .arg(seq.to_string());
                i
            }
            Op::Fetch => {
                let done = if record {
                    let v: redis::Value = redis::cmd("HMGET")
                        .arg(&key)
                        .arg(&FIELDS[..])
                        .query_async(&mut conn)
                        .await?;
                    matches!(&v, redis::Value::Array(items) if items.len() == FIELDS.len())
                } else {
                    let found: Option<String> = redis::cmd("HGET")
                        .arg(&key)
                        .arg("checkpoint")
                        .query_async(&mut conn)
                        .await?;
                    found.is_some()
                };
                return if done {
                    Ok(())
                } else {
                    Err("raw fetch found no checkpoint".into())
                };
            }
        };
        let done = match invocation.invoke_async::<redis::Value>(&mut conn).await? {
            redis::Value::Int(n) => n == 1,
            redis::Value::Array(items) => items.len() == FIELDS.len(),
            _ => false,
        };
        if !done {
            return Err(format!("raw {} did not match the record", op.name()).into());
        }
        Ok(())
    }
}

#[async_trait]
impl Raw for RedisRaw {
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
        let mut invocation = RENEW_BATCH.prepare_invoke();
        invocation
            .arg(first.worker.as_str())
            .arg(duration().as_millis());
        for h in leases.iter() {
            invocation.key(self.store.key_layout().lease(&h.key));
            invocation.arg(h.token.0.to_string());
        }
        let mut conn = self.conn.clone();
        let done: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        if done.iter().any(|d| *d != 1) || done.len() != leases.len() {
            return Err("raw batch renewal missed a lease".into());
        }
        Ok(true)
    }

    async fn renew_each(&self, leases: Arc<Vec<Held>>, concurrency: usize) -> Result<(), BoxError> {
        crate::renew_each_with(self, leases, concurrency).await
    }
}
