//! The key layout, the stored hash fields, and the Lua scripts: one script per conditional
//! operation, each a transcription of the matching function of [`checkpoint_core::rules`].
//!
//! # Key layout
//!
//! Every key of one app carries the app as its Redis Cluster hash tag, so a script that touches
//! a lease and the app's index runs on one slot:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<prefix>:{<app>}:meta` | hash | `layout` = the layout version, written by `init` |
//! | `<prefix>:{<app>}:leases` | sorted set | one member `<stream>:<shard>` per lease (score 0, read by lexical range) |
//! | `<prefix>:{<app>}:lease:<stream>:<shard>` | hash | one lease record (fields below) |
//! | `<prefix>:{<app>}:workers` | sorted set | live workers scored by heartbeat expiry (server ms) |
//! | `<prefix>:{<app>}:worker_instances` | hash | worker id → nonce of the handle that registered it |
//!
//! Identifiers cannot contain `:`, `{` or `}` (the core types only admit letters, digits, `-`,
//! `_` and `.`), so no two apps, streams or shards can produce the same key.
//!
//! # Lease hash fields
//!
//! `owner` (absent when free), `token` (decimal u64), `deadline` (server ms since the epoch,
//! absent when free), `checkpoint` ([`Position::encode`]) with `checkpoint_sub` (decimal u64),
//! `pending` with `pending_sub` (a prepared position), `parents` (comma-separated shard ids),
//! `claim` (worker id), `owner_switches` (decimal u64), and `created_by` (the random nonce of the
//! `create_lease_if_absent` call that created the record, so a retried create can recognise its
//! own write).
//!
//! # Arithmetic in Lua
//!
//! Lua numbers are doubles, so no u64 is ever computed as a number: tokens and counters are
//! incremented as decimal strings (saturating at `u64::MAX` like [`FencingToken::next`]),
//! sequence numbers are compared as their 128-digit zero-padded form
//! ([`SequenceNumber::padded`](checkpoint_core::SequenceNumber::padded)) and sub-sequences as
//! 20-digit zero-padded strings. Only milliseconds of server time (below 2^53) are numbers.
//!
//! # Replies
//!
//! A lease script replies `[status, server_now_ms, detail]` (`server_now_ms` empty from a script
//! that does not read the clock), followed, when there is a record,
//! by the values of the stored fields in `FIELDS` order (nil for an absent field): the status (`OK`, `HELD`,
//! `LOST`, `CHANGED`, `REGRESSION`, `NOTFOUND`, `CORRUPT`), the server clock it judged by, the
//! offending field for `CORRUPT`, and the record as it stands after the operation. Every script
//! reads the record with one `HMGET` of those fields and validates all of them before it writes
//! anything, so a hand-edited record is reported as corrupt and never written by an operation.
//!
//! # Script size
//!
//! The server compiles a script once, but runs its whole body, helper definitions included, on
//! every call; each script therefore carries only the helper pieces it uses (`CLOCK`,
//! `RECORD`, `GRANT`, `PROGRESS`).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use checkpoint_core::{
    AppName, Error, FencingToken, Lease, LeaseKey, Position, RenewOutcome, Result, ShardId,
    StreamName, WorkerId,
};
use redis::{Script, Value};

/// One Lua script: its source, for `EVAL` and `SCRIPT LOAD`, and its SHA1, for `EVALSHA`.
pub(crate) struct LuaScript {
    code: String,
    hash: String,
}

impl LuaScript {
    fn new(code: String) -> Self {
        let hash = Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    /// The source text.
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    /// The SHA1 of the source, in hex: the name `EVALSHA` calls it by.
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }
}

/// The version of the key layout written under `layout` in the meta hash.
pub const LAYOUT_VERSION: &str = "1";

/// Stored field names (also the `field` of [`Error::Corrupt`]).
pub(crate) mod field {
    pub(crate) const OWNER: &str = "owner";
    pub(crate) const TOKEN: &str = "token";
    pub(crate) const DEADLINE: &str = "deadline";
    pub(crate) const CHECKPOINT: &str = "checkpoint";
    pub(crate) const CHECKPOINT_SUB: &str = "checkpoint_sub";
    pub(crate) const PENDING: &str = "pending";
    pub(crate) const PENDING_SUB: &str = "pending_sub";
    pub(crate) const PARENTS: &str = "parents";
    pub(crate) const CLAIM: &str = "claim";
    pub(crate) const OWNER_SWITCHES: &str = "owner_switches";
    /// A member of the lease index that is not `<stream>:<shard>`.
    pub(crate) const INDEX_MEMBER: &str = "index_member";
    /// A member of the workers set that is not a worker id.
    pub(crate) const WORKER: &str = "worker";
}

/// The stored fields of a lease in the order every script reads them (one `HMGET`) and replies
/// with them, and [`RedisStore::fetch`](crate::RedisStore) reads them.
pub(crate) const FIELDS: [&str; 10] = [
    field::OWNER,
    field::TOKEN,
    field::DEADLINE,
    field::CHECKPOINT,
    field::CHECKPOINT_SUB,
    field::PENDING,
    field::PENDING_SUB,
    field::PARENTS,
    field::CLAIM,
    field::OWNER_SWITCHES,
];

/// The keys of one app: every one carries the app as its Redis Cluster hash tag.
///
/// ```
/// use checkpoint_core::{AppName, LeaseKey};
/// use checkpoint_redis::KeyLayout;
///
/// let keys = KeyLayout::new("ckpt", &AppName::new("billing")?);
/// assert_eq!(keys.lease(&LeaseKey::parse("orders", "shard-0")?), "ckpt:{billing}:lease:orders:shard-0");
/// assert_eq!(keys.index(), "ckpt:{billing}:leases");
/// assert_eq!(keys.workers(), "ckpt:{billing}:workers");
/// assert_eq!(keys.worker_instances(), "ckpt:{billing}:worker_instances");
/// assert_eq!(keys.hash_tag(), "{billing}");
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    base: String,
    tag: String,
}

impl KeyLayout {
    /// The layout of `app` under `prefix`. The prefix is validated by
    /// [`RedisConfig::validate`](crate::RedisConfig::validate) (no `{` or `}`), and the app name
    /// admits neither, so the tag is exactly `{<app>}`.
    pub fn new(prefix: &str, app: &AppName) -> Self {
        let tag = format!("{{{app}}}");
        Self {
            base: format!("{prefix}:{tag}"),
            tag,
        }
    }

    /// The hash tag shared by every key of the app: `{<app>}`.
    pub fn hash_tag(&self) -> &str {
        &self.tag
    }

    /// The meta hash (`layout` = the layout version).
    pub fn meta(&self) -> String {
        format!("{}:meta", self.base)
    }

    /// The lease index: a sorted set of `<stream>:<shard>` members, all scored 0.
    pub fn index(&self) -> String {
        format!("{}:leases", self.base)
    }

    /// The `SCAN MATCH` pattern of every app's lease index under `prefix`:
    /// `<prefix>:{*}:leases`. The prefix admits no glob character (`*`, `?`, `[`, `\\`), so
    /// only `*` is a wildcard.
    pub(crate) fn index_pattern(prefix: &str) -> String {
        format!("{prefix}:{{*}}:leases")
    }

    /// The app whose lease index `key` is under `prefix`, `None` when `key` is no lease index
    /// (a lease hash whose names end in `:leases`, another prefix's key): the text between
    /// `<prefix>:{` and `}:leases`, holding no brace.
    pub(crate) fn app_of_index<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
        let app = key
            .strip_prefix(prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:leases")?;
        (!app.contains(['{', '}'])).then_some(app)
    }

    /// The live workers: a sorted set scored by heartbeat expiry (server milliseconds).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.base)
    }

    /// The instance of each registered worker: a hash from worker id to the
    /// [`checkpoint_core::InstanceId`] of the handle that registered it (absent for a worker
    /// registered before nonces were written: no handle's nonce).
    pub fn worker_instances(&self) -> String {
        format!("{}:worker_instances", self.base)
    }

    /// The hash holding one lease record.
    pub fn lease(&self, key: &LeaseKey) -> String {
        format!("{}:lease:{}:{}", self.base, key.stream, key.shard)
    }

    /// The index member of a lease: `<stream>:<shard>`.
    pub(crate) fn member(key: &LeaseKey) -> String {
        format!("{}:{}", key.stream, key.shard)
    }

    /// Parses an index member back into a key.
    pub(crate) fn parse_member(member: &str) -> Result<LeaseKey> {
        let corrupt = |reason: String| Error::corrupt(member, field::INDEX_MEMBER, reason);
        let (stream, shard) = member
            .split_once(':')
            .ok_or_else(|| corrupt("no ':' between stream and shard".into()))?;
        Ok(LeaseKey::new(
            StreamName::new(stream).map_err(|e| corrupt(e.to_string()))?,
            ShardId::new(shard).map_err(|e| corrupt(e.to_string()))?,
        ))
    }

    /// The lexical range of index members of one stream (`[<stream>:` to `(<stream>;`, `;`
    /// being the byte after `:`), or of all.
    pub(crate) fn member_range(stream: Option<&StreamName>) -> (String, String) {
        match stream {
            Some(s) => (format!("[{s}:"), format!("({s};")),
            None => ("-".to_owned(), "+".to_owned()),
        }
    }
}

/// The server clock: every script that judges or writes a deadline. Only milliseconds of server
/// time (below 2^53) are ever Lua numbers.
const CLOCK: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end
"#;

/// The lease record, positionally: `v[1]` … `v[10]` are the values of [`FIELDS`] in order,
/// `false` for an absent field (as `HMGET` gives them to Lua): reading it (one `HMGET`),
/// validating it, and replying with it. Every script works on `v` by position and writes the
/// fields it changes with explicit `HSET` / `HDEL` calls: building tables keyed by field name
/// and helper loops cost the server more than the whole raw operation (counted with
/// callgrind, see BENCHMARKS.md). `FIELDS` is prepended from [`FIELDS`] by [`record_prelude`].
const RECORD: &str = r#"
-- v[1] owner, v[2] token, v[3] deadline, v[4] checkpoint, v[5] checkpoint_sub, v[6] pending,
-- v[7] pending_sub, v[8] parents, v[9] claim, v[10] owner_switches; false: absent.
local U64_MAX = '18446744073709551615'
local find = string.find

-- A canonical decimal u64: digits, no leading zero, at most u64::MAX.
local function is_u64(s)
  return s and #s >= 1 and #s <= 20 and find(s, '^%d+$') ~= nil
    and (#s == 1 or string.byte(s, 1) ~= 48) and (#s < 20 or s <= U64_MAX)
end

local function is_id(s)
  return #s >= 1 and #s <= 256 and find(s, '^[%w_%.%-]+$') ~= nil
end

-- A worker id (owner, claim): 1 to 256 bytes without control characters (C0 and DEL, or C1
-- encoded as UTF-8 \194\128 to \194\159), as WorkerId::new accepts.
local function is_worker(s)
  return #s >= 1 and #s <= 256 and find(s, '%c') == nil and find(s, '\194[\128-\159]') == nil
end

-- What Position::decode accepts, with the sub-sequence already known to be a u64.
local function is_position(p, sub)
  if p == 'TRIM_HORIZON' or p == 'LATEST' or p == 'SHARD_END' then return sub == '0' end
  local ts = string.match(p, '^AT_TIMESTAMP:%+?(%d+)$')
  if ts then
    ts = string.gsub(ts, '^0+', '')
    return sub == '0' and (#ts < 20 or (#ts == 20 and ts <= U64_MAX))
  end
  return #p >= 1 and #p <= 128 and find(p, '^%d+$') ~= nil
end

-- The first field of record v that the client could not decode, or nil.
local function invalid(v)
  if v[1] and not is_worker(v[1]) then return 'owner' end
  if not is_u64(v[2]) then return 'token' end
  if v[3] and not is_u64(v[3]) then return 'deadline' end
  if v[4] then
    if v[5] and not is_u64(v[5]) then return 'checkpoint_sub' end
    if not is_position(v[4], v[5] or '0') then return 'checkpoint' end
  end
  if v[6] then
    if v[7] and not is_u64(v[7]) then return 'pending_sub' end
    if not is_position(v[6], v[7] or '0') then return 'pending' end
  end
  if v[8] and v[8] ~= '' then
    for piece in string.gmatch(v[8] .. ',', '([^,]*),') do
      if not is_id(piece) then return 'parents' end
    end
  end
  if v[9] and not is_worker(v[9]) then return 'claim' end
  if not is_u64(v[10]) then return 'owner_switches' end
  return nil
end

-- The record of key, or nil when the key does not exist. A hash holding none of the known
-- fields (only possible by hand) is a record of absent fields, which fails validation.
local function read(key)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  for i = 1, 10 do
    if v[i] then return v end
  end
  if redis.call('EXISTS', key) == 1 then return v end
  return nil
end

local function held_by(v, worker, token)
  return v[1] == worker and v[2] == token
end

-- [status, now, detail] and, when there is a record, its ten values (false is sent as nil).
-- `now` is the server clock the script judged by, as text, or '' for a script that does not
-- read the clock.
local function reply(status, now, detail, v)
  if v == nil then return {status, now, detail} end
  return {status, now, detail, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]}
end
"#;

/// Decimal-string arithmetic for tokens and counters (Lua numbers are doubles, so no u64 is ever
/// a number) and the grant of `rules::grant`.
const GRANT: &str = r#"
-- Adds one to a canonical decimal u64, saturating at u64::MAX (FencingToken::next).
local function incr(s)
  if s == U64_MAX then return s end
  local n = #s
  while n > 0 and string.sub(s, n, n) == '9' do n = n - 1 end
  if n == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, n - 1) .. string.char(string.byte(s, n) + 1) .. string.rep('0', #s - n)
end

-- rules::grant on record v of key, written: a new owner, the next token, one more owner
-- switch, no claim.
local function grant(key, v, worker, deadline)
  v[1] = worker
  v[2] = incr(v[2])
  v[3] = deadline
  v[10] = incr(v[10])
  redis.call('HSET', key, 'owner', v[1], 'token', v[2], 'deadline', v[3], 'owner_switches', v[10])
  if v[9] then
    redis.call('HDEL', key, 'claim')
    v[9] = false
  end
end
"#;

/// `rules::check_progress`: sequence numbers compared as their 128-digit zero-padded form
/// ([`SequenceNumber::padded`](checkpoint_core::SequenceNumber::padded)) and sub-sequences as
/// 20-digit zero-padded strings, so text order is numeric order.
const PROGRESS: &str = r#"
-- 0: TRIM_HORIZON, LATEST, AT_TIMESTAMP; 1: a sequence number; 2: SHARD_END.
local function pos_rank(p)
  if p == 'SHARD_END' then return 2 end
  if string.find(p, '^%d+$') then return 1 end
  return 0
end

local function pad(s, width)
  return string.rep('0', width - #s) .. s
end

-- True when the attempted position is behind the stored one (false: none), or the shard
-- already ended and the attempt is anything else.
local function regresses(stored, stored_sub, att, att_padded, att_sub_padded)
  if not stored then return false end
  if stored == 'SHARD_END' then return att ~= 'SHARD_END' end
  local sr, ar = pos_rank(stored), pos_rank(att)
  if sr ~= ar then return ar < sr end
  if ar ~= 1 then return false end
  local s = pad(stored, 128)
  if att_padded ~= s then return att_padded < s end
  return att_sub_padded < pad(stored_sub or '0', 20)
end
"#;

/// The `FIELDS` table of the Lua record helpers, from [`FIELDS`], then [`RECORD`].
fn record_prelude() -> String {
    let names: Vec<String> = FIELDS.iter().map(|f| format!("'{f}'")).collect();
    format!("local FIELDS = {{{}}}\n{RECORD}", names.join(", "))
}

/// A script of the given helper pieces and body. Every script is compiled once by the server
/// and its body runs per call, so each carries only the helpers it uses: defining a Lua
/// function is work done on every call.
fn script(pieces: &[Piece], body: &str) -> LuaScript {
    let mut code = String::new();
    for piece in pieces {
        match piece {
            Piece::Clock => code.push_str(CLOCK),
            Piece::Record => code.push_str(&record_prelude()),
            Piece::Grant => code.push_str(GRANT),
            Piece::Progress => code.push_str(PROGRESS),
        }
    }
    code.push_str(body);
    LuaScript::new(code)
}

/// The helper pieces a script can include (in this order: later pieces use earlier ones).
#[derive(Clone, Copy)]
enum Piece {
    Clock,
    Record,
    Grant,
    Progress,
}

use Piece::{Clock, Grant, Progress, Record};

/// `init`: checks the types of the app's keys and writes the layout version.
/// KEYS: meta, index, workers. Replies `[OK|MISMATCH, detail]`.
pub(crate) static INIT: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[],
        r#"
local expected = {'hash', 'zset', 'zset'}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= expected[i] then
    return {'MISMATCH', key .. ' holds a ' .. t .. ', expected a ' .. expected[i]}
  end
end
redis.call('HSETNX', KEYS[1], 'layout', ARGV[1])
local layout = redis.call('HGET', KEYS[1], 'layout')
if layout ~= ARGV[1] then
  return {'MISMATCH', KEYS[1] .. ' says layout ' .. tostring(layout) .. ', this version writes layout ' .. ARGV[1]}
end
return {'OK', ''}
"#,
    )
});

/// Operation 2. KEYS: lease, index. ARGV: member, parents, has_initial, text, sub, nonce.
/// Replies 1 when it created the record, 0 when one existed. The record keeps the nonce of the
/// call that created it (`created_by`), so a retry of a call whose reply was lost finds its own
/// nonce and still reports 1: re-read, never guessed.
pub(crate) static CREATE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[],
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_by') == ARGV[6] then return 1 end
  return 0
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'token', '0', 'owner_switches', '0', 'parents', ARGV[2],
    'checkpoint', ARGV[4], 'checkpoint_sub', ARGV[5], 'created_by', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'token', '0', 'owner_switches', '0', 'parents', ARGV[2],
    'created_by', ARGV[6])
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"#,
    )
});

/// Operation 3, `rules::get_lease`, claim reservation included. KEYS: lease, index. ARGV:
/// worker, duration_ms, member.
pub(crate) static GET_LEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock, Record, Grant],
        r#"
local now = now_ms()
local v = read(KEYS[1])
local created = v == nil
if created then v = {false, '0', false, false, false, false, false, '', false, '0'} end
local bad = invalid(v)
if bad then return reply('CORRUPT', fmt(now), bad, nil) end
local deadline = fmt(now + tonumber(ARGV[2]))
if v[1] == ARGV[1] then
  v[3] = deadline
  redis.call('HSET', KEYS[1], 'deadline', deadline)
  return reply('OK', fmt(now), '', v)
end
if v[1] and v[3] and tonumber(v[3]) > now then return reply('HELD', fmt(now), '', v) end
-- A claim is honoured: a lease released while claimed is reserved for the claimant until the
-- deadline it was released with.
if not v[1] and v[9] and v[9] ~= ARGV[1] and v[3] and tonumber(v[3]) > now then
  return reply('HELD', fmt(now), '', v)
end
if created then
  redis.call('HSET', KEYS[1], 'parents', v[8])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
end
grant(KEYS[1], v, ARGV[1], deadline)
return reply('OK', fmt(now), '', v)
"#,
    )
});

/// Operation 4, `rules::renew`. KEYS: lease. ARGV: worker, token, duration_ms.
pub(crate) static RENEW: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock, Record],
        r#"
local now = now_ms()
local v = read(KEYS[1])
if v == nil then return reply('LOST', fmt(now), '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', fmt(now), bad, nil) end
if not held_by(v, ARGV[1], ARGV[2]) then return reply('LOST', fmt(now), '', v) end
v[3] = fmt(now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'deadline', v[3])
return reply('OK', fmt(now), '', v)
"#,
    )
});

/// Operation 4 batched: `rules::renew` over every key of one chunk in one script, so a chunk is
/// one atomic step. Every record of the chunk is read and validated first; a corrupt one aborts
/// the chunk before anything is written.
/// KEYS: leases. ARGV: worker, duration_ms, then the token of each key in order.
/// Replies `[OK, now, entry...]` with each entry one string, `OK` followed by the record's
/// [`FIELDS`] in order, each after a newline (an absent field is empty: no valid present value
/// is), or `LOST`; or `[CORRUPT, index (1-based), field]`.
pub(crate) static RENEW_MANY: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock, Record],
        r#"
local now = now_ms()
local deadline = fmt(now + tonumber(ARGV[2]))
local records = {}
for i, key in ipairs(KEYS) do
  local v = read(key)
  if v ~= nil then
    local bad = invalid(v)
    if bad then return {'CORRUPT', tostring(i), bad} end
  end
  records[i] = v or false
end
local out = {'OK', fmt(now)}
for i, key in ipairs(KEYS) do
  local v = records[i]
  if v and held_by(v, ARGV[1], ARGV[2 + i]) then
    redis.call('HSET', key, 'deadline', deadline)
    -- One bulk string per record (no validated value contains a newline): far cheaper to
    -- build and to send than a nested array.
    out[i + 2] = 'OK\n' .. v[1] .. '\n' .. v[2] .. '\n' .. deadline .. '\n' .. (v[4] or '')
      .. '\n' .. (v[5] or '') .. '\n' .. (v[6] or '') .. '\n' .. (v[7] or '') .. '\n'
      .. (v[8] or '') .. '\n' .. (v[9] or '') .. '\n' .. v[10]
  else
    out[i + 2] = 'LOST'
  end
end
return out
"#,
    )
});

/// Operations 5 and 14, `rules::checkpoint` / `rules::prepare_checkpoint`.
/// KEYS: lease. ARGV: worker, token, mode (`commit` | `prepare`), text, sub, padded sequence
/// (empty unless a sequence), padded sub.
pub(crate) static CHECKPOINT: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Record, Progress],
        r#"
local v = read(KEYS[1])
if v == nil then return reply('LOST', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if not held_by(v, ARGV[1], ARGV[2]) then return reply('LOST', '', '', v) end
if regresses(v[4], v[5], ARGV[4], ARGV[6], ARGV[7]) then return reply('REGRESSION', '', '', v) end
if ARGV[3] == 'commit' then
  v[4] = ARGV[4]
  v[5] = ARGV[5]
  v[10] = '0'
  redis.call('HSET', KEYS[1], 'checkpoint', v[4], 'checkpoint_sub', v[5], 'owner_switches', '0')
  if v[6] or v[7] then
    redis.call('HDEL', KEYS[1], 'pending', 'pending_sub')
    v[6] = false
    v[7] = false
  end
else
  v[6] = ARGV[4]
  v[7] = ARGV[5]
  redis.call('HSET', KEYS[1], 'pending', v[6], 'pending_sub', v[7])
end
return reply('OK', '', '', v)
"#,
    )
});

/// Operation 7, `rules::remove_lease_owner`: a claimed lease keeps its deadline (the claimant's
/// reservation). KEYS: lease. ARGV: worker, token.
pub(crate) static RELEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Record],
        r#"
local v = read(KEYS[1])
if v == nil then return reply('LOST', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if held_by(v, ARGV[1], ARGV[2]) then
  v[1] = false
  if v[9] then
    -- Claimed: the deadline stays as the claimant's reservation (rules::get_lease).
    redis.call('HDEL', KEYS[1], 'owner')
  else
    v[3] = false
    redis.call('HDEL', KEYS[1], 'owner', 'deadline')
  end
  return reply('OK', '', '', v)
end
if not v[1] and v[2] == ARGV[2] then return reply('OK', '', '', v) end
return reply('LOST', '', '', v)
"#,
    )
});

/// Operation 7, admin form, `rules::evict_lease`. KEYS: lease.
pub(crate) static FORCE_RELEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Record],
        r#"
local v = read(KEYS[1])
if v == nil then return reply('NOTFOUND', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if v[1] or v[3] then redis.call('HDEL', KEYS[1], 'owner', 'deadline') end
v[1] = false
v[3] = false
return reply('OK', '', '', v)
"#,
    )
});

/// Operation 8. KEYS: lease, index. ARGV: member.
pub(crate) static DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[],
        r#"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#,
    )
});

/// Operation 10, `rules::steal`. KEYS: lease.
/// ARGV: thief, expected owner, expected token, expected token + 1, duration_ms.
pub(crate) static STEAL: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock, Record, Grant],
        r#"
local now = now_ms()
local v = read(KEYS[1])
if v == nil then return reply('CHANGED', fmt(now), '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', fmt(now), bad, nil) end
if held_by(v, ARGV[2], ARGV[3]) then
  grant(KEYS[1], v, ARGV[1], fmt(now + tonumber(ARGV[5])))
  return reply('OK', fmt(now), '', v)
end
if held_by(v, ARGV[1], ARGV[4]) then return reply('OK', fmt(now), '', v) end
return reply('CHANGED', fmt(now), '', v)
"#,
    )
});

/// Operation 11, `rules::claim`. KEYS: lease. ARGV: claimant.
pub(crate) static CLAIM: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Record],
        r#"
local v = read(KEYS[1])
if v == nil then return reply('NOTFOUND', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if v[1] == ARGV[1] or v[9] == ARGV[1] then return reply('OK', '', '', v) end
v[9] = ARGV[1]
redis.call('HSET', KEYS[1], 'claim', v[9])
return reply('OK', '', '', v)
"#,
    )
});

/// Admin reset, `rules::reset_checkpoint`. KEYS: lease. ARGV: has_position, text, sub.
pub(crate) static RESET_CHECKPOINT: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Record],
        r#"
local v = read(KEYS[1])
if v == nil then return reply('NOTFOUND', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if ARGV[1] == '1' then
  v[4] = ARGV[2]
  v[5] = ARGV[3]
  redis.call('HSET', KEYS[1], 'checkpoint', v[4], 'checkpoint_sub', v[5], 'owner_switches', '0')
else
  v[4] = false
  v[5] = false
  redis.call('HSET', KEYS[1], 'owner_switches', '0')
  redis.call('HDEL', KEYS[1], 'checkpoint', 'checkpoint_sub')
end
v[10] = '0'
if v[6] or v[7] then
  redis.call('HDEL', KEYS[1], 'pending', 'pending_sub')
  v[6] = false
  v[7] = false
end
return reply('OK', '', '', v)
"#,
    )
});

/// Operation 12, `rules::register_worker`. KEYS: workers, worker_instances. ARGV: worker,
/// ttl_ms, instance. Registers when the worker has no entry, when its entry is this instance's,
/// or when its expiry is at or before server now (a takeover); replies 1 then, 0 (nothing
/// written) while another instance's entry is live.
pub(crate) static REGISTER: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock],
        r#"
local now = now_ms()
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then
  return 0
end
redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"#,
    )
});

/// Operation 12, `rules::heartbeat`: only for a worker this instance registered. KEYS: workers,
/// worker_instances. ARGV: worker, ttl_ms, instance. Replies 1, 0 when the worker is not
/// registered, 2 when another instance's entry stands there (nothing written then).
pub(crate) static HEARTBEAT: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock],
        r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then return 2 end
redis.call('ZADD', KEYS[1], fmt(now_ms() + tonumber(ARGV[2])), ARGV[1])
return 1
"#,
    )
});

/// Operation 12, deregister: removes the worker and its instance entry. KEYS: workers,
/// worker_instances. ARGV: worker.
pub(crate) static DEREGISTER: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[],
        r#"
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"#,
    )
});

/// Operation 12, live workers: expiry strictly after server now. KEYS: workers.
pub(crate) static LIVE_WORKERS: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock],
        r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(now_ms()), '+inf')
"#,
    )
});

/// Operation 12, prune: removes workers whose expiry is at or before server now, with their
/// instance entries. KEYS: workers, worker_instances. Replies the count removed.
pub(crate) static PRUNE: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Clock],
        r#"
local now = fmt(now_ms())
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('HDEL', KEYS[2], w)
end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"#,
    )
});

/// Every script, for `SCRIPT LOAD` at init.
pub(crate) fn all() -> [&'static LuaScript; 17] {
    [
        &INIT,
        &CREATE,
        &GET_LEASE,
        &RENEW,
        &RENEW_MANY,
        &CHECKPOINT,
        &RELEASE,
        &FORCE_RELEASE,
        &DELETE,
        &STEAL,
        &CLAIM,
        &RESET_CHECKPOINT,
        &REGISTER,
        &HEARTBEAT,
        &DEREGISTER,
        &LIVE_WORKERS,
        &PRUNE,
    ]
}

/// The verdict of a lease script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Held,
    Lost,
    Changed,
    Regression,
    NotFound,
    Corrupt,
}

/// A decoded lease-script reply.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: Status,
    /// The server clock the script judged by; `None` from a script that does not read it.
    pub(crate) now: Option<SystemTime>,
    /// The corrupt field's name, for [`Status::Corrupt`].
    pub(crate) detail: String,
    /// The record after the operation, or `None` when absent.
    pub(crate) lease: Option<Lease>,
}

pub(crate) fn protocol_error(what: impl Into<String>) -> Error {
    Error::backend_message(
        "redis",
        false,
        format!("unexpected script reply: {}", what.into()),
    )
}

pub(crate) fn text(value: &Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map_err(|_| protocol_error("a reply string is not UTF-8")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        other => Err(protocol_error(format!("expected a string, got {other:?}"))),
    }
}

pub(crate) fn items(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(protocol_error(format!("expected an array, got {other:?}"))),
    }
}

fn status(s: &str) -> Result<Status> {
    Ok(match s {
        "OK" => Status::Ok,
        "HELD" => Status::Held,
        "LOST" => Status::Lost,
        "CHANGED" => Status::Changed,
        "REGRESSION" => Status::Regression,
        "NOTFOUND" => Status::NotFound,
        "CORRUPT" => Status::Corrupt,
        other => return Err(protocol_error(format!("unknown status {other:?}"))),
    })
}

fn millis(ms: &str) -> Result<SystemTime> {
    let ms: u64 = ms
        .parse()
        .map_err(|_| protocol_error(format!("bad server time {ms:?}")))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// Decodes `[status, now, detail]` or `[status, now, detail, value × FIELDS]`.
pub(crate) fn decode_reply(key: &LeaseKey, value: Value) -> Result<Reply> {
    let items = items(value)?;
    if items.len() != 3 && items.len() != 3 + FIELDS.len() {
        return Err(protocol_error(format!(
            "{} items, expected 3 or {}",
            items.len(),
            3 + FIELDS.len()
        )));
    }
    let status = status(&text(&items[0])?)?;
    let now = match text(&items[1])?.as_str() {
        "" => None,
        ms => Some(millis(ms)?),
    };
    let detail = text(&items[2])?;
    let lease = if items.len() > 3 {
        Some(decode_values(key, &items[3..])?)
    } else {
        None
    };
    Ok(Reply {
        status,
        now,
        detail,
        lease,
    })
}

/// Decodes the reply of an `HMGET` of [`FIELDS`]: `None` when no field exists (no record).
pub(crate) fn decode_hmget(key: &LeaseKey, value: Value) -> Result<Option<Lease>> {
    let values = items(value)?;
    if values.iter().all(|v| matches!(v, Value::Nil)) {
        return Ok(None);
    }
    decode_values(key, &values).map(Some)
}

/// A reply value that is a string or nil, borrowed.
fn optional_str(value: &Value) -> Result<Option<&str>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| protocol_error("a reply string is not UTF-8")),
        Value::SimpleString(s) => Ok(Some(s)),
        other => Err(protocol_error(format!(
            "expected a string or nil, got {other:?}"
        ))),
    }
}

/// Decodes a record given as the values of [`FIELDS`] in order (nil: absent).
fn decode_values(key: &LeaseKey, values: &[Value]) -> Result<Lease> {
    if values.len() != FIELDS.len() {
        return Err(protocol_error(format!(
            "{} record values, expected {}",
            values.len(),
            FIELDS.len()
        )));
    }
    let mut fields = [None; FIELDS.len()];
    for (slot, value) in fields.iter_mut().zip(values) {
        *slot = optional_str(value)?;
    }
    decode_fields(key, &fields)
}

/// Decodes renew-many's reply for one chunk of `keys` (in the order they were sent) into
/// `outcome` (unsorted): `[OK, now, entry...]` with each entry one string, `OK` then the values
/// of [`FIELDS`] each after a newline (empty: absent), or `LOST`; or `[CORRUPT, index, field]`.
pub(crate) fn decode_renew_many(
    keys: &[(LeaseKey, FencingToken)],
    value: Value,
    outcome: &mut RenewOutcome,
) -> Result<()> {
    let mut items = items(value)?.into_iter();
    let head = items
        .next()
        .ok_or_else(|| protocol_error("empty renew-many reply"))?;
    match text(&head)?.as_str() {
        "OK" => {}
        "CORRUPT" => {
            let index = items
                .next()
                .map(|v| text(&v))
                .transpose()?
                .unwrap_or_default();
            let name = items
                .next()
                .map(|v| text(&v))
                .transpose()?
                .unwrap_or_default();
            let key = index
                .parse::<usize>()
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| keys.get(i))
                .ok_or_else(|| protocol_error(format!("bad corrupt index {index:?}")))?;
            return Err(corrupt_field(&key.0, &name));
        }
        other => return Err(protocol_error(format!("renew-many status {other:?}"))),
    }
    let _now = items
        .next()
        .ok_or_else(|| protocol_error("renew-many reply without server time"))?;
    if items.len() != keys.len() {
        return Err(protocol_error(format!(
            "{} renew-many entries for {} keys",
            items.len(),
            keys.len()
        )));
    }
    for ((key, _), entry) in keys.iter().zip(items) {
        let entry =
            optional_str(&entry)?.ok_or_else(|| protocol_error("a nil renew-many entry"))?;
        let mut parts = entry.split('\n');
        match status(parts.next().unwrap_or_default())? {
            Status::Ok => {
                let mut fields = [None; FIELDS.len()];
                for slot in &mut fields {
                    let part = parts
                        .next()
                        .ok_or_else(|| protocol_error("a renew-many entry is short"))?;
                    *slot = (!part.is_empty()).then_some(part);
                }
                if parts.next().is_some() {
                    return Err(protocol_error("a renew-many entry is long"));
                }
                outcome.renewed.push(decode_fields(key, &fields)?);
            }
            Status::Lost => outcome.lost.push(key.clone()),
            other => return Err(protocol_error(format!("renew-many entry status {other:?}"))),
        }
    }
    Ok(())
}

/// The [`Error::Corrupt`] for a field a script found bad.
pub(crate) fn corrupt_field(key: &LeaseKey, name: &str) -> Error {
    let field = FIELDS.into_iter().find(|f| *f == name).unwrap_or("record");
    Error::corrupt(key, field, "the stored value does not decode")
}

/// A canonical decimal u64 (no sign, no leading zero), as the scripts write and check it.
fn parse_u64(key: &LeaseKey, name: &'static str, value: &str) -> Result<u64> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    let parsed = if canonical {
        value.parse::<u64>().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| Error::corrupt(key, name, format!("{value:?} is not a decimal u64")))
}

fn parse_id(key: &LeaseKey, name: &'static str, value: &str) -> Result<WorkerId> {
    WorkerId::new(value).map_err(|e| Error::corrupt(key, name, e.to_string()))
}

fn parse_position(
    key: &LeaseKey,
    name: &'static str,
    sub_name: &'static str,
    text: &str,
    sub: Option<&str>,
) -> Result<Position> {
    let sub = match sub {
        Some(s) => parse_u64(key, sub_name, s)?,
        None => 0,
    };
    Position::decode(name, text, sub).map_err(|e| Error::corrupt(key, name, e.to_string()))
}

/// Decodes the values of [`FIELDS`], in order (`None`: absent); a field that does not decode
/// is [`Error::Corrupt`] naming it.
fn decode_fields(key: &LeaseKey, fields: &[Option<&str>; FIELDS.len()]) -> Result<Lease> {
    let [
        owner,
        token,
        deadline,
        checkpoint,
        checkpoint_sub,
        pending,
        pending_sub,
        parents,
        claim,
        owner_switches,
    ] = *fields;
    let owner = owner.map(|v| parse_id(key, field::OWNER, v)).transpose()?;
    let token = match token {
        Some(v) => FencingToken(parse_u64(key, field::TOKEN, v)?),
        None => return Err(Error::corrupt(key, field::TOKEN, "missing")),
    };
    let deadline = deadline
        .map(|v| {
            parse_u64(key, field::DEADLINE, v)
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        })
        .transpose()?;
    let checkpoint = checkpoint
        .map(|v| {
            parse_position(
                key,
                field::CHECKPOINT,
                field::CHECKPOINT_SUB,
                v,
                checkpoint_sub,
            )
        })
        .transpose()?;
    let pending_checkpoint = pending
        .map(|v| parse_position(key, field::PENDING, field::PENDING_SUB, v, pending_sub))
        .transpose()?;
    let parents = match parents {
        None | Some("") => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|p| {
                ShardId::new(p).map_err(|e| Error::corrupt(key, field::PARENTS, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let claim = claim.map(|v| parse_id(key, field::CLAIM, v)).transpose()?;
    let owner_switches_since_checkpoint = match owner_switches {
        Some(v) => parse_u64(key, field::OWNER_SWITCHES, v)?,
        None => return Err(Error::corrupt(key, field::OWNER_SWITCHES, "missing")),
    };
    Ok(Lease {
        key: key.clone(),
        owner,
        token,
        deadline,
        checkpoint,
        pending_checkpoint,
        parents,
        claim,
        owner_switches_since_checkpoint,
    })
}

/// The script arguments of a position: text, sub, padded sequence (empty unless a sequence),
/// padded sub.
pub(crate) fn position_args(position: &Position) -> [String; 4] {
    let padded = match position {
        Position::Sequence { sequence, .. } => sequence.padded(),
        _ => String::new(),
    };
    let sub = position.sub_sequence();
    [
        position.encode(),
        sub.to_string(),
        padded,
        format!("{sub:020}"),
    ]
}

/// Admin import, `rules::import_lease`: writes a whole record only where no key exists.
/// KEYS: lease, index. ARGV: member, nonce, then the ten values of [`FIELDS`] in order (`''`
/// for an absent field; `parents` is written even when empty, as `CREATE` writes it). Replies 1
/// when it wrote, 0 when a record existed. Like [`CREATE`], the record keeps the call's nonce
/// (`created_by`), so a retry of a call whose reply was lost still reports 1.
pub(crate) static IMPORT: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        &[Record],
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_by') == ARGV[2] then return 1 end
  return 0
end
for i = 1, 10 do
  local value = ARGV[i + 2]
  if value ~= '' or i == 8 then redis.call('HSET', KEYS[1], FIELDS[i], value) end
end
redis.call('HSET', KEYS[1], 'created_by', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"#,
    )
});

/// The [`IMPORT`] values of `lease`, in [`FIELDS`] order (`''` for an absent field).
pub(crate) fn import_values(lease: &Lease) -> [String; 10] {
    let id = |w: &Option<WorkerId>| w.as_ref().map_or(String::new(), |w| w.to_string());
    let position = |p: &Option<Position>| match p {
        Some(p) => (p.encode(), p.sub_sequence().to_string()),
        None => (String::new(), String::new()),
    };
    let (checkpoint, checkpoint_sub) = position(&lease.checkpoint);
    let (pending, pending_sub) = position(&lease.pending_checkpoint);
    let deadline = lease.deadline.map_or(String::new(), |d| {
        d.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string()
    });
    let parents: Vec<&str> = lease.parents.iter().map(ShardId::as_str).collect();
    [
        id(&lease.owner),
        lease.token.0.to_string(),
        deadline,
        checkpoint,
        checkpoint_sub,
        pending,
        pending_sub,
        parents.join(","),
        id(&lease.claim),
        lease.owner_switches_since_checkpoint.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LeaseKey {
        LeaseKey::parse("s", "x").unwrap()
    }

    /// The record values in [`FIELDS`] order, as a script or `HMGET` replies with them.
    fn values(pairs: &[(&str, &str)]) -> Vec<Value> {
        FIELDS
            .iter()
            .map(|f| match pairs.iter().rev().find(|(name, _)| name == f) {
                Some((_, v)) => Value::BulkString(v.as_bytes().to_vec()),
                None => Value::Nil,
            })
            .collect()
    }

    #[test]
    fn an_index_key_names_its_app_and_nothing_else_does() {
        let app = AppName::new("billing").unwrap();
        let keys = KeyLayout::new("ckpt:x", &app);
        let pattern = KeyLayout::index_pattern("ckpt:x");
        assert_eq!(pattern, "ckpt:x:{*}:leases");
        assert_eq!(
            KeyLayout::app_of_index("ckpt:x", &keys.index()),
            Some("billing")
        );
        let lease = keys.lease(&LeaseKey::parse("leases", "leases").unwrap());
        for other in [
            lease.as_str(),
            "ckpt:x:{billing}:workers",
            "ckpt:{billing}:leases",
            "ckpt:x:{a}:lease:s:{b}:leases",
        ] {
            assert_eq!(KeyLayout::app_of_index("ckpt:x", other), None, "{other}");
        }
    }

    #[test]
    fn keys_share_the_app_hash_tag() {
        let keys = KeyLayout::new("ckpt", &AppName::new("billing").unwrap());
        assert_eq!(keys.lease(&key()), "ckpt:{billing}:lease:s:x");
        assert_eq!(keys.index(), "ckpt:{billing}:leases");
        assert_eq!(keys.workers(), "ckpt:{billing}:workers");
        assert_eq!(KeyLayout::parse_member("s:x").unwrap(), key());
        assert_eq!(
            KeyLayout::parse_member("s").unwrap_err().field(),
            Some(field::INDEX_MEMBER)
        );
    }

    #[test]
    fn decodes_a_full_record() {
        let lease = decode_values(
            &key(),
            &values(&[
                ("owner", "w"),
                ("token", "18446744073709551615"),
                ("deadline", "1700000000123"),
                ("checkpoint", "12345678901234567890123"),
                ("checkpoint_sub", "7"),
                ("pending", "SHARD_END"),
                ("pending_sub", "0"),
                ("parents", "a,b"),
                ("claim", "c"),
                ("owner_switches", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(lease.token, FencingToken(u64::MAX));
        assert_eq!(
            lease.checkpoint,
            Some(Position::sequence_with_sub("12345678901234567890123", 7).unwrap())
        );
        assert_eq!(lease.pending_checkpoint, Some(Position::ShardEnd));
        assert_eq!(lease.parents.len(), 2);
    }

    #[test]
    fn a_corrupt_field_is_named() {
        let base = [("token", "1"), ("owner_switches", "0")];
        let cases: &[(&str, &str, &str)] = &[
            ("token", "abc", "token"),
            ("token", "01", "token"),
            ("token", "18446744073709551616", "token"),
            ("owner", "a\tb", "owner"),
            ("deadline", "-5", "deadline"),
            ("checkpoint", "NOPE", "checkpoint"),
            ("checkpoint_sub", "x", "checkpoint_sub"),
            ("parents", "a,,b", "parents"),
            ("claim", "", "claim"),
            ("owner_switches", "1.5", "owner_switches"),
        ];
        for (name, value, expected) in cases {
            let mut pairs: Vec<(&str, &str)> =
                base.iter().filter(|(f, _)| f != name).copied().collect();
            pairs.push((name, value));
            if *name == "checkpoint_sub" {
                pairs.push(("checkpoint", "5"));
            }
            let err = decode_values(&key(), &values(&pairs)).unwrap_err();
            assert_eq!(err.field(), Some(*expected), "{name}={value}: {err}");
        }
        let err = decode_values(&key(), &values(&[("owner_switches", "0")])).unwrap_err();
        assert_eq!(err.field(), Some("token"));
    }

    #[test]
    fn replies_carry_the_record_positionally() {
        let head = |status: &str| {
            vec![
                Value::SimpleString(status.to_owned()),
                Value::BulkString(b"1700000000000".to_vec()),
                Value::BulkString(Vec::new()),
            ]
        };
        let reply = decode_reply(&key(), Value::Array(head("LOST"))).unwrap();
        assert_eq!((reply.status, reply.lease), (Status::Lost, None));
        let mut full = head("OK");
        full.extend(values(&[
            ("owner", "w"),
            ("token", "3"),
            ("owner_switches", "1"),
        ]));
        let lease = decode_reply(&key(), Value::Array(full))
            .unwrap()
            .lease
            .unwrap();
        assert_eq!(lease.token, FencingToken(3));
        assert_eq!(lease.owner, Some(WorkerId::new("w").unwrap()));
        assert_eq!((lease.checkpoint, lease.deadline), (None, None));
        let mut short = head("OK");
        short.push(Value::Nil);
        assert!(decode_reply(&key(), Value::Array(short)).is_err());

        assert_eq!(
            decode_hmget(&key(), Value::Array(vec![Value::Nil; FIELDS.len()])).unwrap(),
            None
        );
        let err = decode_hmget(&key(), Value::Array(values(&[("owner", "w")]))).unwrap_err();
        assert_eq!(err.field(), Some("token"));
    }

    #[test]
    fn renew_many_entries_decode_in_field_order() {
        let keys = [
            (LeaseKey::parse("s", "a").unwrap(), FencingToken(1)),
            (LeaseKey::parse("s", "b").unwrap(), FencingToken(2)),
        ];
        let entry = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let ok = "OK\nw\n1\n1700000000000\n42\n0\n\n\na,b\n\n0";
        let reply = Value::Array(vec![entry("OK"), entry("1"), entry(ok), entry("LOST")]);
        let mut outcome = RenewOutcome::default();
        decode_renew_many(&keys, reply, &mut outcome).unwrap();
        assert_eq!(outcome.lost, vec![keys[1].0.clone()]);
        let lease = &outcome.renewed[0];
        assert_eq!(lease.checkpoint, Some(Position::sequence("42").unwrap()));
        assert_eq!(lease.parents.len(), 2);
        assert_eq!(
            (lease.pending_checkpoint.as_ref(), lease.claim.as_ref()),
            (None, None)
        );

        for bad in ["OK\nw\n1", &format!("{ok}\nextra")] {
            let reply = Value::Array(vec![entry("OK"), entry("1"), entry(bad), entry("LOST")]);
            assert!(decode_renew_many(&keys, reply, &mut RenewOutcome::default()).is_err());
        }
        let corrupt = Value::Array(vec![entry("CORRUPT"), entry("2"), entry("claim")]);
        let err = decode_renew_many(&keys, corrupt, &mut RenewOutcome::default()).unwrap_err();
        assert_eq!(err.field(), Some("claim"));
        assert!(err.to_string().contains("s/b"), "{err}");
    }

    #[test]
    fn position_args_pad_for_text_comparison() {
        let [text, sub, padded, sub_padded] =
            position_args(&Position::sequence_with_sub("0042", 9).unwrap());
        assert_eq!((text.as_str(), sub.as_str()), ("42", "9"));
        assert_eq!(padded.len(), 128);
        assert_eq!(sub_padded, "00000000000000000009");
        let [text, _, padded, _] = position_args(&Position::AtTimestamp(5));
        assert_eq!((text.as_str(), padded.as_str()), ("AT_TIMESTAMP:5", ""));
    }
}
