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
//! absent when free), `checkpoint` ([`Position::encode`](checkpoint_core::Position::encode)) with `checkpoint_sub` (decimal u64),
//! `pending` with `pending_sub` (a prepared position), `parents` (comma-separated shard ids),
//! `claim` (worker id), `owner_switches` (decimal u64), and `created_by` (the random nonce of the
//! `create_lease_if_absent` call that created the record, so a retried create can recognise its
//! own write).
//!
//! # Arithmetic in Lua
//!
//! Lua numbers are doubles, so no u64 is ever computed as a number: tokens and counters are
//! incremented as decimal strings (saturating at `u64::MAX` like [`FencingToken::next`](checkpoint_core::FencingToken::next)),
//! sequence numbers and sub-sequences are compared as decimal text without leading zeros (the
//! shorter is smaller, equal lengths compare as text). Only milliseconds of server time (below
//! 2^53) are numbers.
//!
//! # Replies
//!
//! A lease script replies `[status, server_now_ms, detail]` when there is no record, and
//! otherwise the values of the stored fields in `FIELDS` order (nil for an absent field)
//! followed by the same three: the status (`OK`, `HELD`, `LOST`, `CHANGED`, `REGRESSION`,
//! `NOTFOUND`, `CORRUPT`), the server clock it judged by (milliseconds, an integer; empty from a
//! script that does not read the clock), and the offending field for `CORRUPT`. The record is
//! the one as it stands after the operation; the verdict is appended to the very table `HMGET`
//! returned, so a reply builds no second table and formats no number as text. Every script
//! reads the record with one `HMGET` of those fields and validates all of them before it writes
//! anything, so a hand-edited record is reported as corrupt and never written by an operation.
//!
//! # Functions and scripts
//!
//! The Lua text is in `src/lua/`: four helper pieces (`clock.lua`, `record.lua`, `grant.lua`,
//! `progress.lua`) and one body per operation. It is sent in one of two forms
//! ([`ScriptMode`]), the same bodies in both:
//!
//! - the function library [`LIBRARY`] (Redis 7.0 or later): every helper once, then one
//!   `redis.register_function` per operation whose callback takes `KEYS` and `ARGV` as
//!   parameters. The server runs the helper definitions once, at `FUNCTION LOAD`; an `FCALL`
//!   runs only the body. Its name carries a hash of its text ([`LIBRARY_NAME`]), so two
//!   versions of this crate on one server load two libraries and never call each other's
//!   functions.
//! - one script per operation: the helper pieces the body uses, then the
//!   body. The server compiles a script once but runs its whole text, helper definitions
//!   included, on every `EVALSHA`, so each carries only the pieces it uses.
//!
//! A function's library is loaded while no request is served, so its top level may not read
//! globals such as `string` (Redis refuses the load); the helpers use them only inside their
//! bodies, at call time.

use std::sync::LazyLock;

use checkpoint_core::{AppName, Error, LeaseKey, Result, ShardId, StreamName};
use redis::Script;

/// One operation's Lua: its name, its body, and the helper pieces it uses. Sent in one of two
/// ways ([`crate::ScriptMode`]): as a function of the [`LIBRARY`] (`FCALL` of
/// [`LuaScript::function`]; Redis 7.0 or later), or as a script of its own, the pieces it uses
/// followed by its body (`EVALSHA` of [`LuaScript::hash`], `EVAL` of [`LuaScript::code`]).
pub(crate) struct LuaScript {
    /// The function's name in the library, `<library name>_<operation>`.
    function: String,
    code: String,
    hash: String,
}

impl LuaScript {
    /// The source text of the script form: its pieces, then its body.
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    /// The SHA1 of [`Self::code`], in hex: the name `EVALSHA` calls it by.
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// The name `FCALL` calls it by: the library's name, `_`, the operation.
    pub(crate) fn function(&self) -> &str {
        &self.function
    }
}

/// How the store sends its Lua to the server ([`crate::RedisConfig::with_script_mode`]).
///
/// Both forms run the same operation bodies with the same keys and arguments, atomically; they
/// differ in what the server runs per call. A script ([`ScriptMode::Scripts`]) is its helper
/// definitions followed by its body, all of which the server executes on every `EVALSHA`. A
/// function of the library ([`ScriptMode::Functions`]) runs only its body: the helpers are
/// defined once, when `FUNCTION LOAD` runs the library's text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScriptMode {
    /// Functions when the server has them (Redis 7.0 or later), scripts otherwise: decided at
    /// open by `FUNCTION LOAD`, which a server before 7.0 answers with `unknown command`, and a
    /// server where this user may not load functions with `NOPERM`; either makes the store send
    /// scripts. A server that later answers `unknown command` to `FCALL` (a downgrade, a
    /// failover to an older replica) switches the store to scripts for good. The default.
    #[default]
    Auto,
    /// Always the function library: `FUNCTION LOAD` at open (on every master of a cluster) and
    /// `FCALL`; loaded again and the call re-sent when a server answers `Function not found`
    /// (a restart without persistence, `FUNCTION FLUSH`, a master added to the cluster later).
    /// Opening fails with a non-retryable [`Error::Backend`] on a server without functions,
    /// and a server that loses them later makes each call fail instead of falling back.
    Functions,
    /// Always one script per operation: `SCRIPT LOAD` at open on the node owning the app's
    /// slot, `EVALSHA`, and `EVAL` with the source after `NOSCRIPT`. What servers before Redis
    /// 7.0 support.
    Scripts,
}

impl ScriptMode {
    /// Parses the URL form: `auto`, `functions` or `scripts`.
    ///
    /// Errors: [`Error::InvalidInput`] naming `script_mode` for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Self::Auto),
            "functions" => Ok(Self::Functions),
            "scripts" => Ok(Self::Scripts),
            other => Err(Error::invalid(
                "script_mode",
                format!("{other:?} is not one of auto, functions, scripts"),
            )),
        }
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
const CLOCK: &str = include_str!("lua/clock.lua");

/// The lease record, positionally: `v[1]` … `v[10]` are the values of [`FIELDS`] in order,
/// `false` for an absent field (as `HMGET` gives them to Lua): reading it (one `HMGET`),
/// validating it, and replying with it. Every script works on `v` by position and writes the
/// fields it changes with explicit `HSET` / `HDEL` calls: building tables keyed by field name
/// and helper loops cost the server more than the whole raw operation (counted with
/// callgrind, see BENCHMARKS.md). `FIELDS` is prepended from [`FIELDS`] by [`record_prelude`].
const RECORD: &str = include_str!("lua/record.lua");

/// Decimal-string arithmetic for tokens and counters (Lua numbers are doubles, so no u64 is ever
/// a number) and the grant of `rules::grant`.
const GRANT: &str = include_str!("lua/grant.lua");

/// `rules::check_progress`: sequence numbers and sub-sequences compared as decimal text without
/// leading zeros, by length and then as text, which is numeric order without building a padded
/// copy of either.
const PROGRESS: &str = include_str!("lua/progress.lua");

/// The `FIELDS` table of the Lua record helpers, from [`FIELDS`], then [`RECORD`].
fn record_prelude() -> String {
    let names: Vec<String> = FIELDS.iter().map(|f| format!("'{f}'")).collect();
    format!("local FIELDS = {{{}}}\n{RECORD}", names.join(", "))
}

/// The script of operation `name`: its pieces and body. Its script form carries only the helpers
/// it uses (a script's whole text, helper definitions included, runs on every `EVALSHA`); its
/// function form calls the helpers the library defined once, at `FUNCTION LOAD`.
fn script(name: &str, pieces: &[Piece], body: &str) -> LuaScript {
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
    let hash = Script::new(&code).get_hash().to_owned();
    LuaScript {
        function: format!("{}_{name}", LIBRARY_NAME.as_str()),
        code,
        hash,
    }
}

/// The text of every operation, in the library's order: its function's suffix and its body.
const BODIES: [(&str, &str); 18] = [
    ("init", include_str!("lua/init.lua")),
    ("create", include_str!("lua/create.lua")),
    ("get_lease", include_str!("lua/get_lease.lua")),
    ("renew", include_str!("lua/renew.lua")),
    ("renew_many", include_str!("lua/renew_many.lua")),
    ("checkpoint", include_str!("lua/checkpoint.lua")),
    ("release", include_str!("lua/release.lua")),
    ("force_release", include_str!("lua/force_release.lua")),
    ("delete", include_str!("lua/delete.lua")),
    ("steal", include_str!("lua/steal.lua")),
    ("claim", include_str!("lua/claim.lua")),
    ("reset_checkpoint", include_str!("lua/reset_checkpoint.lua")),
    ("register", include_str!("lua/register.lua")),
    ("heartbeat", include_str!("lua/heartbeat.lua")),
    ("deregister", include_str!("lua/deregister.lua")),
    ("live_workers", include_str!("lua/live_workers.lua")),
    ("prune", include_str!("lua/prune.lua")),
    ("import", include_str!("lua/import.lua")),
];

/// The body of operation `name` (one of [`BODIES`]).
fn body(name: &str) -> &'static str {
    BODIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| *body)
        .unwrap_or_else(|| panic!("no Lua body named {name}"))
}

/// The library's text with `{name}` where its name goes: the shebang, every helper piece once,
/// then one `redis.register_function` per operation whose callback takes `KEYS` and `ARGV` as
/// parameters, so the bodies are the same text in both forms.
fn library_template() -> String {
    let mut code = String::from("#!lua name={name}\n");
    code.push_str(CLOCK);
    code.push_str(&record_prelude());
    code.push_str(GRANT);
    code.push_str(PROGRESS);
    for (name, body) in BODIES {
        code.push_str(&format!(
            "redis.register_function('{{name}}_{name}', function(KEYS, ARGV)\n{body}end)\n"
        ));
    }
    code
}

/// The library's name: `checkpoint_` and the first 16 hex digits of the SHA1 of its template.
/// Two builds with the same Lua load the same library; a build with other Lua loads one of its
/// own beside it, so processes of two versions sharing a server never call each other's code.
/// (Libraries of older versions stay loaded until removed with `FUNCTION DELETE`; each is a few
/// kilobytes.)
pub static LIBRARY_NAME: LazyLock<String> = LazyLock::new(|| {
    let hash = Script::new(&library_template()).get_hash().to_owned();
    format!("checkpoint_{}", &hash[..16])
});

/// The source of the function library, for `FUNCTION LOAD`: the helpers are defined once, when
/// the server loads the library, and every `FCALL` runs only its operation's body (the script
/// form runs its helper definitions on every call).
pub static LIBRARY: LazyLock<String> =
    LazyLock::new(|| library_template().replace("{name}", LIBRARY_NAME.as_str()));

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
pub(crate) static INIT: LazyLock<LuaScript> = LazyLock::new(|| script("init", &[], body("init")));

/// Operation 2. KEYS: lease, index. ARGV: member, parents, has_initial, text, sub, nonce.
/// Replies 1 when it created the record, 0 when one existed. The record keeps the nonce of the
/// call that created it (`created_by`), so a retry of a call whose reply was lost finds its own
/// nonce and still reports 1: re-read, never guessed.
pub(crate) static CREATE: LazyLock<LuaScript> =
    LazyLock::new(|| script("create", &[], body("create")));

/// Operation 3, `rules::get_lease`, claim reservation included. KEYS: lease, index. ARGV:
/// worker, duration_ms, member.
pub(crate) static GET_LEASE: LazyLock<LuaScript> =
    LazyLock::new(|| script("get_lease", &[Clock, Record, Grant], body("get_lease")));

/// Operation 4, `rules::renew`. KEYS: lease. ARGV: worker, token, duration_ms.
pub(crate) static RENEW: LazyLock<LuaScript> =
    LazyLock::new(|| script("renew", &[Clock, Record], body("renew")));

/// Operation 4 batched: `rules::renew` over every key of one chunk in one script, so a chunk is
/// one atomic step. Every record of the chunk is read and validated first; a corrupt one aborts
/// the chunk before anything is written.
/// KEYS: leases. ARGV: worker, duration_ms, then the token of each key in order.
/// Replies `[OK, now, entry...]` with each entry one string, `OK` followed by the record's
/// [`FIELDS`] in order, each after a newline (an absent field is empty: no valid present value
/// is), or `LOST`; or `[CORRUPT, index (1-based), field]`.
pub(crate) static RENEW_MANY: LazyLock<LuaScript> =
    LazyLock::new(|| script("renew_many", &[Clock, Record], body("renew_many")));

/// Operations 5 and 14, `rules::checkpoint` / `rules::prepare_checkpoint`.
/// KEYS: lease. ARGV: worker, token, mode (`commit` | `prepare`), text, sub (as
/// `reply::position_args` gives them).
pub(crate) static CHECKPOINT: LazyLock<LuaScript> =
    LazyLock::new(|| script("checkpoint", &[Record, Progress], body("checkpoint")));

/// Operation 7, `rules::remove_lease_owner`: a claimed lease keeps its deadline (the claimant's
/// reservation). KEYS: lease. ARGV: worker, token.
pub(crate) static RELEASE: LazyLock<LuaScript> =
    LazyLock::new(|| script("release", &[Record], body("release")));

/// Operation 7, admin form, `rules::evict_lease`. KEYS: lease.
pub(crate) static FORCE_RELEASE: LazyLock<LuaScript> =
    LazyLock::new(|| script("force_release", &[Record], body("force_release")));

/// Operation 8. KEYS: lease, index. ARGV: member.
pub(crate) static DELETE: LazyLock<LuaScript> =
    LazyLock::new(|| script("delete", &[], body("delete")));

/// Operation 10, `rules::steal`. KEYS: lease.
/// ARGV: thief, expected owner, expected token, expected token + 1, duration_ms.
pub(crate) static STEAL: LazyLock<LuaScript> =
    LazyLock::new(|| script("steal", &[Clock, Record, Grant], body("steal")));

/// Operation 11, `rules::claim`. KEYS: lease. ARGV: claimant.
pub(crate) static CLAIM: LazyLock<LuaScript> =
    LazyLock::new(|| script("claim", &[Record], body("claim")));

/// Admin reset, `rules::reset_checkpoint`. KEYS: lease. ARGV: has_position, text, sub.
pub(crate) static RESET_CHECKPOINT: LazyLock<LuaScript> =
    LazyLock::new(|| script("reset_checkpoint", &[Record], body("reset_checkpoint")));

/// Operation 12, `rules::register_worker`. KEYS: workers, worker_instances. ARGV: worker,
/// ttl_ms, instance. Registers when the worker has no entry, when its entry is this instance's,
/// or when its expiry is at or before server now (a takeover); replies 1 then, 0 (nothing
/// written) while another instance's entry is live.
pub(crate) static REGISTER: LazyLock<LuaScript> =
    LazyLock::new(|| script("register", &[Clock], body("register")));

/// Operation 12, `rules::heartbeat`: only for a worker this instance registered. KEYS: workers,
/// worker_instances. ARGV: worker, ttl_ms, instance. Replies 1, 0 when the worker is not
/// registered, 2 when another instance's entry stands there (nothing written then).
pub(crate) static HEARTBEAT: LazyLock<LuaScript> =
    LazyLock::new(|| script("heartbeat", &[Clock], body("heartbeat")));

/// Operation 12, deregister: removes the worker and its instance entry. KEYS: workers,
/// worker_instances. ARGV: worker.
pub(crate) static DEREGISTER: LazyLock<LuaScript> =
    LazyLock::new(|| script("deregister", &[], body("deregister")));

/// Operation 12, live workers: expiry strictly after server now. KEYS: workers.
pub(crate) static LIVE_WORKERS: LazyLock<LuaScript> =
    LazyLock::new(|| script("live_workers", &[Clock], body("live_workers")));

/// Operation 12, prune: removes workers whose expiry is at or before server now, with their
/// instance entries. KEYS: workers, worker_instances. Replies the count removed.
pub(crate) static PRUNE: LazyLock<LuaScript> =
    LazyLock::new(|| script("prune", &[Clock], body("prune")));

/// Every script but [`IMPORT`] (an admin operation, loaded on its first use through
/// `NOSCRIPT`), for `SCRIPT LOAD` at init.
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

/// Admin import, `rules::import_lease`: writes a whole record only where no key exists.
/// KEYS: lease, index. ARGV: member, nonce, then the ten values of [`FIELDS`] in order (`''`
/// for an absent field; `parents` is written even when empty, as `CREATE` writes it). Replies 1
/// when it wrote, 0 when a record existed. Like [`CREATE`], the record keeps the call's nonce
/// (`created_by`), so a retry of a call whose reply was lost still reports 1.
pub(crate) static IMPORT: LazyLock<LuaScript> =
    LazyLock::new(|| script("import", &[Record], body("import")));

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LeaseKey {
        LeaseKey::parse("s", "x").unwrap()
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
    fn the_library_registers_every_operation_under_its_versioned_name() {
        let name = LIBRARY_NAME.as_str();
        assert!(name.starts_with("checkpoint_") && name.len() == "checkpoint_".len() + 16);
        assert!(LIBRARY.starts_with(&format!("#!lua name={name}\n")));
        assert!(!LIBRARY.contains("{name}"));
        for (operation, body) in BODIES {
            let register = format!(
                "redis.register_function('{name}_{operation}', function(KEYS, ARGV)\n{body}end)"
            );
            assert!(
                LIBRARY.contains(&register),
                "{operation} is registered with its body"
            );
        }
        assert_eq!(
            LIBRARY.matches("redis.register_function(").count(),
            BODIES.len()
        );
        // Each helper is defined once, before the first function.
        let first = LIBRARY.find("redis.register_function(").unwrap();
        for helper in [
            "local function now_ms",
            "local function invalid",
            "local function grant",
            "local function regresses",
        ] {
            assert_eq!(LIBRARY.matches(helper).count(), 1, "{helper}");
            assert!(LIBRARY.find(helper).unwrap() < first, "{helper}");
        }
    }

    #[test]
    fn every_script_calls_its_function_and_carries_only_its_pieces() {
        let mut functions: Vec<&str> = all().iter().map(|s| s.function()).collect();
        functions.push(IMPORT.function());
        for (operation, _) in BODIES {
            let function = format!("{}_{operation}", LIBRARY_NAME.as_str());
            assert!(functions.contains(&function.as_str()), "{operation}");
        }
        assert!(RENEW.code().contains("local function now_ms"));
        assert!(!RENEW.code().contains("local function regresses"));
        assert!(!DELETE.code().contains("local function"));
        assert_eq!(RENEW.hash(), Script::new(RENEW.code()).get_hash());
    }

    #[test]
    fn script_modes_parse_from_their_url_names() {
        for (text, mode) in [
            ("auto", ScriptMode::Auto),
            ("functions", ScriptMode::Functions),
            ("scripts", ScriptMode::Scripts),
        ] {
            assert_eq!(ScriptMode::parse(text).unwrap(), mode);
        }
        for bad in ["", "eval", "Functions", "auto\0"] {
            assert_eq!(
                ScriptMode::parse(bad).unwrap_err().field(),
                Some("script_mode")
            );
        }
    }
}
