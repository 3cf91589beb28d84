//! Connection and layout settings: from a `postgres://` URL, then adjusted with `with_*` setters.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use checkpoint_core::{AppName, Backoff, Error, Result};
use sqlx::postgres::PgConnectOptions;

use crate::schema;

/// The URL tests and examples use when none is given.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Query parameters of the URL that this crate reads itself; every other parameter is passed to
/// sqlx (`sslmode`, `application_name`, `options`, ...).
const OWN_PARAMS: &[&str] = &[
    "schema",
    "table",
    "table_prefix",
    "max_connections",
    "renew_chunk",
    "acquire_timeout_ms",
    "migrate",
];

/// The default of [`PostgresConfig::with_renew_chunk`].
const DEFAULT_RENEW_CHUNK: usize = 2_500;

/// The default of [`PostgresConfig::with_list_page_size`]: 500 rows.
pub const DEFAULT_LIST_PAGE_SIZE: usize = 500;

/// How to reach the server and where the tables live.
///
/// ```
/// use checkpoint_postgres::PostgresConfig;
///
/// let config = PostgresConfig::from_url("postgres://app:secret@db.example/consumers?schema=streaming&table=orders")?
///     .with_max_connections(4);
/// assert_eq!(config.schema(), "streaming");
/// assert_eq!(config.table_prefix(), "orders");
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) connect: PgConnectOptions,
    has_password: bool,
    schema: String,
    table_prefix: String,
    max_connections: u32,
    renew_chunk: usize,
    list_page_size: usize,
    acquire_timeout: Duration,
    backoff: Backoff,
    application_name: Option<String>,
    migrate: bool,
}

impl PostgresConfig {
    /// Settings from a URL such as
    /// `postgres://user:password@host:5432/database?schema=public&table=checkpoint`.
    ///
    /// This crate's own query parameters are removed before the rest of the URL goes to sqlx:
    /// `schema` (see [`PostgresConfig::with_schema`]), `table` or `table_prefix`
    /// ([`PostgresConfig::with_table_prefix`]), `max_connections`
    /// ([`PostgresConfig::with_max_connections`]), `renew_chunk`
    /// ([`PostgresConfig::with_renew_chunk`]) and `acquire_timeout_ms`
    /// ([`PostgresConfig::with_acquire_timeout`]) and `migrate=true|false`
    /// ([`PostgresConfig::with_migrations`]). sqlx reads the others, for example `sslmode`
    /// and `application_name`.
    ///
    /// Errors are [`Error::InvalidInput`] naming `url` or the offending parameter; the password
    /// never appears in them.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed =
            url::Url::parse(url).map_err(|e| Error::invalid("url", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(Error::invalid(
                "url",
                format!(
                    "scheme {:?} is not postgres:// or postgresql://",
                    parsed.scheme()
                ),
            ));
        }
        let mut own = Vec::new();
        let mut rest = Vec::new();
        for (k, v) in parsed.query_pairs() {
            if OWN_PARAMS.contains(&k.as_ref()) {
                own.push((k.into_owned(), v.into_owned()));
            } else {
                rest.push((k.into_owned(), v.into_owned()));
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let has_password = parsed.password().is_some();
        let connect = PgConnectOptions::from_str(parsed.as_str()).map_err(|e| {
            Error::invalid("url", format!("rejected by the PostgreSQL driver: {e}"))
        })?;
        let mut config = Self::new(connect);
        config.has_password = has_password;
        for (key, value) in own {
            config = match key.as_str() {
                "schema" => config.with_schema(value),
                "table" | "table_prefix" => config.with_table_prefix(value),
                "max_connections" => config.with_max_connections(
                    value
                        .parse()
                        .map_err(|_| Error::invalid("max_connections", "not a number"))?,
                ),
                "renew_chunk" => config.with_renew_chunk(
                    value
                        .parse()
                        .map_err(|_| Error::invalid("renew_chunk", "not a number"))?,
                ),
                "acquire_timeout_ms" => config.with_acquire_timeout(Duration::from_millis(
                    value
                        .parse()
                        .map_err(|_| Error::invalid("acquire_timeout_ms", "not a number"))?,
                )),
                "migrate" => config.with_migrations(match value.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(Error::invalid("migrate", "not true or false")),
                }),
                _ => config,
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Settings around sqlx connect options built by hand, with every other setting at its
    /// default.
    pub fn new(connect: PgConnectOptions) -> Self {
        Self {
            connect,
            has_password: false,
            schema: "public".to_owned(),
            table_prefix: "checkpoint".to_owned(),
            max_connections: 10,
            renew_chunk: DEFAULT_RENEW_CHUNK,
            list_page_size: DEFAULT_LIST_PAGE_SIZE,
            acquire_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            application_name: None,
            migrate: true,
        }
    }

    /// The password to log in with. Default: the URL's, or none. Never shown by `Debug`.
    pub fn with_password(mut self, password: &str) -> Self {
        self.connect = self.connect.password(password);
        self.has_password = true;
        self
    }

    /// The schema holding the tables; created by [`checkpoint_core::LeaseManager::init`] when
    /// absent. ASCII letters, digits and `_`, not starting with a digit, at most 63 bytes.
    /// Default: `public`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The prefix of the table names: the tables are `<prefix>_leases`, `<prefix>_workers` and
    /// `<prefix>_migrations`. ASCII letters, digits and `_`, not starting with a digit, at most
    /// 48 bytes. Default: `checkpoint`.
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// The most connections the store's pool opens. Default: 10.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The most leases one statement of [`checkpoint_core::LeaseManager::renew_many`] renews:
    /// a larger batch is split into chunks of this size, up to four of which run at once on
    /// separate pooled connections (never more than [`PostgresConfig::max_connections`]).
    /// Default: 2,500. `usize::MAX` renews every batch in one statement.
    pub fn with_renew_chunk(mut self, leases: usize) -> Self {
        self.renew_chunk = leases.max(1);
        self
    }

    /// Rows fetched per page by [`checkpoint_core::LeaseManager::list_leases`] (keyset
    /// pagination over the primary key; each page is one statement). Default: 500
    /// ([`DEFAULT_LIST_PAGE_SIZE`]); at least 1. The conformance suite sets it small so its
    /// listing crosses page boundaries.
    pub fn with_list_page_size(mut self, rows: usize) -> Self {
        self.list_page_size = rows.max(1);
        self
    }

    /// How long an operation waits for a free pooled connection before failing with a
    /// retryable error. Default: 5 s.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The retry policy for transient faults (dropped connections, pool timeouts,
    /// serialization failures, server shutdown). Default: [`Backoff::default`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The `application_name` the store's connections show in `pg_stat_activity`. Default: the
    /// URL's `application_name`, else `checkpoint:<app>` for the app the store is opened for.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Whether opening the store ([`crate::PostgresStore::open`],
    /// [`crate::PostgresStore::from_pool`]) and [`checkpoint_core::LeaseManager::init`] create
    /// and upgrade the tables. Default: `true` (URL parameter `migrate=true`).
    ///
    /// With `false` (`migrate=false`) no DDL is ever sent: `init` only checks, without writing,
    /// that the tables exist at the schema version this crate knows with the expected columns
    /// ([`Error::SchemaMismatch`] naming what is missing otherwise). For a role without the
    /// `CREATE` privilege, once a DBA ran the statements of [`crate::ddl`]; the role then
    /// needs only `USAGE` on the schema and `SELECT, INSERT, UPDATE, DELETE` on the tables.
    pub fn with_migrations(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether opening the store runs the migrations (see [`PostgresConfig::with_migrations`]).
    pub fn migrations(&self) -> bool {
        self.migrate
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The prefix of the table names.
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The most leases one renew-many statement renews.
    pub fn renew_chunk(&self) -> usize {
        self.renew_chunk
    }

    /// Rows per page of a listing.
    pub fn list_page_size(&self) -> usize {
        self.list_page_size
    }

    /// How long an operation waits for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// The retry policy for transient faults.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The application name set with [`PostgresConfig::with_application_name`] or in the URL.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name
            .as_deref()
            .or_else(|| self.connect.get_application_name())
    }

    /// The sqlx connect options for a store of `app`: the configured ones, with the application
    /// name set (see [`PostgresConfig::with_application_name`]).
    pub(crate) fn connect_options(&self, app: &AppName) -> PgConnectOptions {
        let name = match self.application_name() {
            Some(name) => name.to_owned(),
            None => format!("checkpoint:{app}"),
        };
        self.connect.clone().application_name(&name)
    }

    /// Checks the schema and table prefix ([`Error::InvalidInput`] naming `schema` or
    /// `table_prefix`).
    pub fn validate(&self) -> Result<()> {
        schema::validate_identifier("schema", &self.schema, schema::MAX_IDENTIFIER_BYTES)?;
        schema::validate_identifier("table_prefix", &self.table_prefix, schema::MAX_PREFIX_BYTES)?;
        Ok(())
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.connect.get_host())
            .field("port", &self.connect.get_port())
            .field("database", &self.connect.get_database())
            .field("username", &self.connect.get_username())
            .field(
                "password",
                &if self.has_password {
                    Some("<redacted>")
                } else {
                    None
                },
            )
            .field("ssl_mode", &self.connect.get_ssl_mode())
            .field("schema", &self.schema)
            .field("table_prefix", &self.table_prefix)
            .field("max_connections", &self.max_connections)
            .field("renew_chunk", &self.renew_chunk)
            .field("list_page_size", &self.list_page_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("backoff", &self.backoff)
            .field("application_name", &self.application_name())
            .field("migrate", &self.migrate)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_read_and_removed() {
        let config = PostgresConfig::from_url(
            "postgres://u:hunter2@db.example:6543/consumers?schema=s1&table=t1&sslmode=disable&max_connections=3&renew_chunk=250&application_name=billing",
        )
        .unwrap();
        assert_eq!(config.schema(), "s1");
        assert_eq!(config.table_prefix(), "t1");
        assert_eq!(config.max_connections(), 3);
        assert_eq!(config.renew_chunk(), 250);
        assert_eq!(config.connect.get_host(), "db.example");
        assert_eq!(config.connect.get_port(), 6543);
        assert_eq!(config.connect.get_database(), Some("consumers"));
        assert_eq!(config.application_name(), Some("billing"));
        assert_eq!(config.connect.get_options(), None);
        assert!(config.migrations(), "migrations run by default");
        let config = PostgresConfig::from_url("postgres://h/db?migrate=false").unwrap();
        assert!(!config.migrations());
        assert_eq!(
            config.connect.get_options(),
            None,
            "migrate is not passed to sqlx"
        );
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let config = PostgresConfig::from_url("postgres://u:hunter2@db.example/consumers").unwrap();
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let config = PostgresConfig::from_url(DEFAULT_URL)
            .unwrap()
            .with_password("s3cr3t-pw");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    }

    #[test]
    fn bad_urls_and_identifiers_are_rejected_without_echoing_the_password() {
        let err = PostgresConfig::from_url("mysql://u:hunter2@h/db").unwrap_err();
        assert_eq!(err.field(), Some("url"));
        assert!(!err.to_string().contains("hunter2"));
        for bad in ["a\"b", "x;drop", "", "1abc", "sch-ema", "été"] {
            let url = format!("postgres://u:hunter2@h/db?schema={}", url_encode(bad));
            let err = PostgresConfig::from_url(&url).unwrap_err();
            assert_eq!(err.field(), Some("schema"), "{bad:?}: {err}");
            assert!(!err.to_string().contains("hunter2"));
        }
        let err = PostgresConfig::from_url(&format!("postgres://h/db?table={}", "p".repeat(49)))
            .unwrap_err();
        assert_eq!(err.field(), Some("table_prefix"));
        let err = PostgresConfig::from_url("postgres://h/db?max_connections=many").unwrap_err();
        assert_eq!(err.field(), Some("max_connections"));
        let err = PostgresConfig::from_url("postgres://h/db?migrate=maybe").unwrap_err();
        assert_eq!(err.field(), Some("migrate"));
    }

    fn url_encode(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }
}
