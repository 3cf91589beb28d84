//! Where the database lives and how connections to it are set up: from a URL
//! ([`SqliteConfig::from_url`]) or a builder ([`SqliteConfig::file`], [`SqliteConfig::memory`]
//! and the `with_*` setters).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::{Backoff, Clock, Error, Result, SystemClock};
use rusqlite::{Connection, OpenFlags};

use crate::error::from_sqlite;

/// Default [`SqliteConfig::with_busy_timeout`]: 5 seconds.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`SqliteConfig::with_max_connections`]: 4.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;
/// Largest accepted [`SqliteConfig::with_max_connections`].
pub const MAX_CONNECTIONS: usize = 64;
/// Default [`SqliteConfig::with_table_prefix`]: `checkpoint_`, giving the tables
/// `checkpoint_leases`, `checkpoint_workers` and `checkpoint_schema_migrations`.
pub const DEFAULT_TABLE_PREFIX: &str = "checkpoint_";
/// Longest accepted table prefix, in bytes.
pub const MAX_TABLE_PREFIX_BYTES: usize = 48;
/// Default [`SqliteConfig::with_wal_checkpoint_pages`]: 1000 pages, SQLite's own default
/// `wal_autocheckpoint`.
pub const DEFAULT_WAL_CHECKPOINT_PAGES: u32 = 1000;
/// Largest accepted [`SqliteConfig::with_wal_checkpoint_pages`] (about 4 GB of log with 4 KiB
/// pages).
pub const MAX_WAL_CHECKPOINT_PAGES: u32 = 1_000_000;

/// Where the database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A database file, created when absent. Every handle and every process that opens the same
    /// file shares its leases.
    File(PathBuf),
    /// A private in-memory database, gone when the last handle of the store is dropped. All
    /// handles derived from one opened store (clones and [`crate::SqliteStore::for_app`]) share
    /// it through one connection; a second [`crate::SqliteStore::open`] gets a new, empty
    /// database.
    Memory,
}

/// SQLite's `synchronous` setting, in WAL mode: what a checkpoint that returned `Ok` survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous=NORMAL` (the default): a commit is written to the write-ahead log but not
    /// flushed to the disk. It survives the process being killed or crashing at any point; a
    /// power loss or operating-system crash may roll back the last commits (never corrupts the
    /// database).
    #[default]
    Normal,
    /// `synchronous=FULL`: the write-ahead log is flushed (`fsync`) on every commit, so a
    /// checkpoint that returned `Ok` also survives a power loss or operating-system crash.
    /// Slower: see the crate documentation for measured rates.
    Full,
    /// `synchronous=EXTRA`: as `FULL`, and the directory is synced too where that matters.
    Extra,
}

impl Synchronous {
    /// The pragma value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
            Self::Extra => "EXTRA",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value.to_ascii_lowercase().as_str() {
            "normal" | "1" => Ok(Self::Normal),
            "full" | "2" => Ok(Self::Full),
            "extra" | "3" => Ok(Self::Extra),
            _ => Err(Error::invalid(
                "synchronous",
                format!("{value:?} is not one of normal, full, extra"),
            )),
        }
    }
}

/// How to open a [`crate::SqliteStore`].
///
/// ```
/// use std::time::Duration;
/// use checkpoint_sqlite::{SqliteConfig, Synchronous};
///
/// let from_url = SqliteConfig::from_url("sqlite://data/leases.db?synchronous=full&busy_timeout_ms=2000")?;
/// let built = SqliteConfig::file("data/leases.db")
///     .with_synchronous(Synchronous::Full)
///     .with_busy_timeout(Duration::from_secs(2));
/// assert_eq!(from_url.location(), built.location());
/// assert_eq!(from_url.synchronous(), built.synchronous());
/// assert_eq!(from_url.busy_timeout(), built.busy_timeout());
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone)]
pub struct SqliteConfig {
    location: Location,
    synchronous: Synchronous,
    busy_timeout: Duration,
    max_connections: usize,
    table_prefix: String,
    wal_checkpoint_pages: u32,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    migrate: bool,
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nothing here is secret: a SQLite configuration holds no credentials.
        f.debug_struct("SqliteConfig")
            .field("location", &self.location)
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .field("max_connections", &self.max_connections)
            .field("table_prefix", &self.table_prefix)
            .field("wal_checkpoint_pages", &self.wal_checkpoint_pages)
            .field("backoff", &self.backoff)
            .field("clock", &self.clock)
            .field("migrate", &self.migrate)
            .finish()
    }
}

impl SqliteConfig {
    /// A database file at `path` (created when absent), with every other setting at its
    /// default.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::with_location(Location::File(path.into()))
    }

    /// A private in-memory database (see [`Location::Memory`]), with every other setting at its
    /// default. Useful for tests; nothing survives the process.
    pub fn memory() -> Self {
        Self::with_location(Location::Memory)
    }

    fn with_location(location: Location) -> Self {
        Self {
            location,
            synchronous: Synchronous::default(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            table_prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            wal_checkpoint_pages: DEFAULT_WAL_CHECKPOINT_PAGES,
            backoff: Backoff::default(),
            clock: Arc::new(SystemClock),
            migrate: true,
        }
    }

    /// Parses a URL:
    ///
    /// - `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `sqlite:path.db`: a file;
    /// - `sqlite::memory:` or `sqlite://:memory:`: an in-memory database;
    ///
    /// with optional query parameters `synchronous=normal|full|extra`, `busy_timeout_ms=<ms>`,
    /// `max_connections=<1..=64>`, `table_prefix=<prefix>`, `wal_checkpoint_pages=<pages>` and
    /// `migrate=true|false` ([`SqliteConfig::with_migrations`]). `%XX` escapes are decoded in the
    /// path and the values. An unknown parameter is an error, so a typo is never silently
    /// ignored.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| Error::invalid("url", "must start with sqlite:"))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let path = percent_decode("url", path)?;
        let mut config = match path.as_str() {
            "" => return Err(Error::invalid("url", "names no database file")),
            ":memory:" => Self::memory(),
            _ => Self::file(path),
        };
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode("url", value)?;
            config = match name {
                "synchronous" => config.with_synchronous(Synchronous::parse(&value)?),
                "busy_timeout_ms" => {
                    let ms = value.parse::<u64>().map_err(|_| {
                        Error::invalid(
                            "busy_timeout_ms",
                            format!("{value:?} is not a number of milliseconds"),
                        )
                    })?;
                    config.with_busy_timeout(Duration::from_millis(ms))
                }
                "max_connections" => {
                    let n = value.parse::<usize>().map_err(|_| {
                        Error::invalid("max_connections", format!("{value:?} is not a number"))
                    })?;
                    config.with_max_connections(n)
                }
                "table_prefix" => config.with_table_prefix(value),
                "migrate" => config.with_migrations(match value.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(Error::invalid(
                            "migrate",
                            format!("{value:?} is not true or false"),
                        ));
                    }
                }),
                "wal_checkpoint_pages" => {
                    let n = value.parse::<u32>().map_err(|_| {
                        Error::invalid(
                            "wal_checkpoint_pages",
                            format!("{value:?} is not a number of pages"),
                        )
                    })?;
                    config.with_wal_checkpoint_pages(n)
                }
                other => {
                    return Err(Error::invalid(
                        "url",
                        format!(
                            "unknown parameter {other:?}; known: synchronous, busy_timeout_ms, \
                             max_connections, table_prefix, wal_checkpoint_pages, migrate"
                        ),
                    ));
                }
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// How commits reach the disk. Default [`Synchronous::Normal`].
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a statement waits for another connection's (or process's) write lock before
    /// failing with a retryable error, which the store then retries with its backoff.
    /// Default 5 s ([`DEFAULT_BUSY_TIMEOUT`]).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Connections one store opens, each on a thread of its own, 1 to 64: one writer and the
    /// rest for reads (with 1, the writer also reads). Default 4 ([`DEFAULT_MAX_CONNECTIONS`]).
    /// An in-memory database always uses exactly one. A file database also has its WAL
    /// checkpointer's connection, not counted here (see
    /// [`SqliteConfig::with_wal_checkpoint_pages`]).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Prefix of the three table names: 1 to 48 ASCII letters, digits and `_`, starting with a
    /// letter or `_`. Default `checkpoint_` ([`DEFAULT_TABLE_PREFIX`]). Anything else is rejected
    /// with [`Error::InvalidInput`] when the store is opened; a valid prefix is still quoted in
    /// every statement.
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// How many pages the write-ahead log of a file database may gain before it is
    /// checkpointed (copied into the database file, so the log can start over and stay small),
    /// 1 to [`MAX_WAL_CHECKPOINT_PAGES`]. Default 1000 ([`DEFAULT_WAL_CHECKPOINT_PAGES`]).
    ///
    /// SQLite would run that checkpoint inside the commit that crosses the threshold, making
    /// that write wait for the copy and two `fsync`s. The store instead runs it on a
    /// checkpointer thread with a connection of its own, in `PASSIVE` mode, which never blocks
    /// the writer or any reader; the writer nudges it, and after each pass copies the few
    /// frames committed while it ran (inside its next commit, so that one commit's writes wait
    /// for the copy and its `fsync`s, once per pass), so the log starts over. A log that keeps
    /// growing anyway
    /// (the checkpointer cannot finish while writes keep arriving, or falls behind) is
    /// checkpointed by the writer itself once it holds ten times this many pages, as SQLite
    /// would have done (at the latest at twenty times, when it first lets a running background
    /// pass finish): that bounds the log. Zero is [`Error::InvalidInput`].
    pub fn with_wal_checkpoint_pages(mut self, pages: u32) -> Self {
        self.wal_checkpoint_pages = pages;
        self
    }

    /// Retry policy for busy/locked databases. Default [`Backoff::default`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The clock that judges expiry. Default [`SystemClock`], the host's clock; tests inject a
    /// [`checkpoint_core::ManualClock`]. Every handle and process sharing one file must use the
    /// same clock for expiry to mean anything.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where the database lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The `synchronous` setting.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// The busy timeout.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Most connections used at once (always 1 in memory).
    pub fn max_connections(&self) -> usize {
        match self.location {
            Location::Memory => 1,
            Location::File(_) => self.max_connections,
        }
    }

    /// Whether [`crate::SqliteStore::open`] (through [`checkpoint_core::LeaseManager::init`])
    /// creates and upgrades the tables. Default: `true` (URL parameter `migrate=true`).
    ///
    /// With `false` (`migrate=false`) no DDL is ever run: `init` only checks, with reads, that
    /// the tables exist at the schema version this crate knows with the expected columns
    /// ([`Error::SchemaMismatch`] naming what is missing otherwise), for a database whose
    /// schema is managed elsewhere from the statements of [`crate::ddl`].
    pub fn with_migrations(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether opening runs the migrations (see [`SqliteConfig::with_migrations`]).
    pub fn migrations(&self) -> bool {
        self.migrate
    }

    /// The table prefix.
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// The write-ahead log checkpoint threshold, in pages.
    pub fn wal_checkpoint_pages(&self) -> u32 {
        self.wal_checkpoint_pages
    }

    /// The retry policy.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Checks every setting; [`Error::InvalidInput`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_table_prefix(&self.table_prefix)?;
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(Error::invalid(
                "max_connections",
                format!(
                    "{} is not between 1 and {MAX_CONNECTIONS}",
                    self.max_connections
                ),
            ));
        }
        if !(1..=MAX_WAL_CHECKPOINT_PAGES).contains(&self.wal_checkpoint_pages) {
            return Err(Error::invalid(
                "wal_checkpoint_pages",
                format!(
                    "{} is not between 1 and {MAX_WAL_CHECKPOINT_PAGES}",
                    self.wal_checkpoint_pages
                ),
            ));
        }
        if self.busy_timeout > Duration::from_secs(24 * 60 * 60) {
            return Err(Error::invalid(
                "busy_timeout_ms",
                "must be at most 24 hours",
            ));
        }
        if let Location::File(path) = &self.location
            && path.as_os_str().is_empty()
        {
            return Err(Error::invalid("path", "must not be empty"));
        }
        Ok(())
    }

    /// Opens and sets up one connection: busy timeout, WAL journal (required for a file),
    /// `synchronous`, temporary tables in memory.
    pub(crate) fn connect(&self) -> Result<Connection> {
        let conn = match &self.location {
            Location::Memory => Connection::open_in_memory(),
            // No SQLITE_OPEN_URI: the path is taken literally, never as a `file:` URI with options.
            Location::File(path) => Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        }
        .map_err(from_sqlite)?;
        conn.busy_timeout(self.busy_timeout).map_err(from_sqlite)?;
        if let Location::File(path) = &self.location {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(from_sqlite)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::backend_message(
                    "sqlite",
                    false,
                    format!(
                        "{}: could not enable WAL journal mode (got {mode:?})",
                        path_display(path)
                    ),
                ));
            }
        }
        conn.pragma_update(None, "synchronous", self.synchronous.as_str())
            .map_err(from_sqlite)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(from_sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(from_sqlite)?;
        Ok(conn)
    }
}

fn path_display(path: &Path) -> String {
    path.display().to_string()
}

/// A table prefix is pasted into statements (quoted), so only a small safe alphabet is allowed.
pub(crate) fn validate_table_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > MAX_TABLE_PREFIX_BYTES {
        return Err(Error::invalid(
            "table_prefix",
            format!("must be 1 to {MAX_TABLE_PREFIX_BYTES} bytes long"),
        ));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(Error::invalid(
            "table_prefix",
            format!("contains {bad:?}; only ASCII letters, digits and '_' are allowed"),
        ));
    }
    if prefix.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::invalid(
            "table_prefix",
            "must not start with a digit",
        ));
    }
    if prefix.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(Error::invalid(
            "table_prefix",
            "names starting with sqlite_ are reserved",
        ));
    }
    Ok(())
}

fn percent_decode(field: &'static str, text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::invalid(field, format!("bad %-escape in {text:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid(field, format!("{text:?} is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = SqliteConfig::from_url("sqlite:///tmp/a%20b.db?synchronous=FULL&busy_timeout_ms=250&max_connections=2&table_prefix=app1_&wal_checkpoint_pages=50")
            .unwrap();
        assert_eq!(c.wal_checkpoint_pages(), 50);
        assert_eq!(c.location(), &Location::File(PathBuf::from("/tmp/a b.db")));
        assert_eq!(c.synchronous(), Synchronous::Full);
        assert_eq!(c.busy_timeout(), Duration::from_millis(250));
        assert_eq!(c.max_connections(), 2);
        assert_eq!(c.table_prefix(), "app1_");

        let c = SqliteConfig::from_url("sqlite://data/x.db").unwrap();
        assert_eq!(c.location(), &Location::File(PathBuf::from("data/x.db")));
        assert_eq!(c.synchronous(), Synchronous::Normal);
        assert_eq!(c.busy_timeout(), DEFAULT_BUSY_TIMEOUT);
        assert_eq!(c.max_connections(), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.table_prefix(), DEFAULT_TABLE_PREFIX);
        assert_eq!(c.wal_checkpoint_pages(), DEFAULT_WAL_CHECKPOINT_PAGES);

        assert_eq!(
            SqliteConfig::from_url("sqlite::memory:")
                .unwrap()
                .location(),
            &Location::Memory
        );
        assert_eq!(
            SqliteConfig::from_url("sqlite://:memory:")
                .unwrap()
                .location(),
            &Location::Memory
        );
        assert_eq!(
            SqliteConfig::from_url("sqlite::memory:")
                .unwrap()
                .max_connections(),
            1
        );
    }

    #[test]
    fn bad_urls_name_the_field() {
        let field = |url: &str| SqliteConfig::from_url(url).unwrap_err().field();
        assert_eq!(field("postgres://x"), Some("url"));
        assert_eq!(field("sqlite://"), Some("url"));
        assert_eq!(field("sqlite://x.db?synchronous=off"), Some("synchronous"));
        assert_eq!(
            field("sqlite://x.db?busy_timeout_ms=soon"),
            Some("busy_timeout_ms")
        );
        assert_eq!(
            field("sqlite://x.db?max_connections=0"),
            Some("max_connections")
        );
        assert_eq!(
            field("sqlite://x.db?wal_checkpoint_pages=0"),
            Some("wal_checkpoint_pages")
        );
        assert_eq!(
            field("sqlite://x.db?wal_checkpoint_pages=lots"),
            Some("wal_checkpoint_pages")
        );
        assert_eq!(
            SqliteConfig::file("x.db")
                .with_wal_checkpoint_pages(0)
                .validate()
                .unwrap_err()
                .field(),
            Some("wal_checkpoint_pages")
        );
        assert_eq!(field("sqlite://x.db?journal_mode=delete"), Some("url"));
        assert_eq!(
            field("sqlite://x.db?table_prefix=a%22%3B%20DROP%20TABLE%20x%3B--"),
            Some("table_prefix")
        );
        assert_eq!(field("sqlite://x%zz.db"), Some("url"));
    }

    #[test]
    fn table_prefixes() {
        for ok in ["a", "_x", "checkpoint_", "App_2"] {
            assert!(validate_table_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a\"b",
            "a b",
            "x;drop",
            "sqlite_x",
            "é",
            &"a".repeat(49),
        ] {
            assert_eq!(
                validate_table_prefix(bad).unwrap_err().field(),
                Some("table_prefix"),
                "{bad}"
            );
        }
    }
}
