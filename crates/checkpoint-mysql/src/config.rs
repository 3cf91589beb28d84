//! Connection and layout settings: from a `mysql://` or `mariadb://` URL, then adjusted with
//! `with_*` setters.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use checkpoint_core::{Backoff, Error, Result};
use sqlx::mysql::MySqlConnectOptions;

use crate::schema;

/// The URL tests and examples use when none is given.
pub const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Query parameters of the URL that this crate reads itself; every other parameter is passed to
/// sqlx (`ssl-mode`, `ssl-ca`, `charset`, `socket`, ...).
const OWN_PARAMS: &[&str] = &[
    "table",
    "table_prefix",
    "max_connections",
    "renew_chunk",
    "acquire_timeout_ms",
];

/// The default of [`MySqlConfig::with_renew_chunk`].
const DEFAULT_RENEW_CHUNK: usize = 2_500;

/// How to reach the server and what the tables are called.
///
/// The tables live in the database the URL names (MySQL's "schema"); several table sets can
/// share one database under different prefixes.
///
/// ```
/// use checkpoint_mysql::MySqlConfig;
///
/// let config = MySqlConfig::from_url("mariadb://app:secret@db.example/consumers?table=orders")?
///     .with_max_connections(4);
/// assert_eq!(config.database(), Some("consumers"));
/// assert_eq!(config.table_prefix(), "orders");
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MySqlConfig {
    pub(crate) connect: MySqlConnectOptions,
    has_password: bool,
    table_prefix: String,
    max_connections: u32,
    renew_chunk: usize,
    acquire_timeout: Duration,
    backoff: Backoff,
}

impl MySqlConfig {
    /// Settings from a URL such as
    /// `mysql://user:password@host:3306/database?table=checkpoint` (`mariadb://` is the same
    /// driver and accepted alike).
    ///
    /// This crate's own query parameters are removed before the rest of the URL goes to sqlx:
    /// `table` or `table_prefix` ([`MySqlConfig::with_table_prefix`]), `max_connections`
    /// ([`MySqlConfig::with_max_connections`]), `renew_chunk`
    /// ([`MySqlConfig::with_renew_chunk`]) and `acquire_timeout_ms`
    /// ([`MySqlConfig::with_acquire_timeout`]). sqlx reads the others, for example `ssl-mode`,
    /// `ssl-ca` and `socket`. The URL must name a database (the path).
    ///
    /// Errors are [`Error::InvalidInput`] naming `url` or the offending parameter; the password
    /// never appears in them.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed =
            url::Url::parse(url).map_err(|e| Error::invalid("url", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "mysql" | "mariadb") {
            return Err(Error::invalid(
                "url",
                format!("scheme {:?} is not mysql:// or mariadb://", parsed.scheme()),
            ));
        }
        if parsed.scheme() == "mariadb" {
            // MariaDB speaks the MySQL protocol: the same driver serves it.
            parsed
                .set_scheme("mysql")
                .map_err(|()| Error::invalid("url", "cannot use the mysql driver for this URL"))?;
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
        let connect = MySqlConnectOptions::from_str(parsed.as_str())
            .map_err(|e| Error::invalid("url", format!("rejected by the MySQL driver: {e}")))?;
        let mut config = Self::new(connect);
        config.has_password = has_password;
        for (key, value) in own {
            config = match key.as_str() {
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
                _ => config,
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Settings around sqlx connect options built by hand, with every other setting at its
    /// default.
    pub fn new(connect: MySqlConnectOptions) -> Self {
        Self {
            connect,
            has_password: false,
            table_prefix: "checkpoint".to_owned(),
            max_connections: 10,
            renew_chunk: DEFAULT_RENEW_CHUNK,
            acquire_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
        }
    }

    /// The password to log in with. Default: the URL's, or none. Never shown by `Debug`.
    pub fn with_password(mut self, password: &str) -> Self {
        self.connect = self.connect.password(password);
        self.has_password = true;
        self
    }

    /// The prefix of the table names: the tables are `<prefix>_leases`, `<prefix>_workers` and
    /// `<prefix>_migrations` in the URL's database. ASCII letters, digits and `_`, not starting
    /// with a digit, at most 48 bytes. Default: `checkpoint`.
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
    /// separate pooled connections (never more than [`MySqlConfig::max_connections`]). Each
    /// chunk travels as one JSON parameter of about 60 bytes a lease, so a chunk must fit the
    /// server's `max_allowed_packet`. Default: 2,500. `usize::MAX` renews every batch in one
    /// statement.
    pub fn with_renew_chunk(mut self, leases: usize) -> Self {
        self.renew_chunk = leases.max(1);
        self
    }

    /// How long an operation waits for a free pooled connection before failing with a
    /// retryable error. Default: 5 s.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The retry policy for transient faults (dropped or killed connections, pool timeouts,
    /// deadlocks, lock wait timeouts, server shutdown). Default: [`Backoff::default`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The database holding the tables (the URL's path).
    pub fn database(&self) -> Option<&str> {
        self.connect.get_database()
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

    /// How long an operation waits for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// The retry policy for transient faults.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Checks the table prefix ([`Error::InvalidInput`] naming `table_prefix`) and that a
    /// database is named ([`Error::InvalidInput`] naming `url`).
    pub fn validate(&self) -> Result<()> {
        schema::validate_identifier("table_prefix", &self.table_prefix, schema::MAX_PREFIX_BYTES)?;
        if self.database().is_none_or(str::is_empty) {
            return Err(Error::invalid(
                "url",
                "names no database: add it as the path, mysql://host:3306/<database>",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
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
            .field("table_prefix", &self.table_prefix)
            .field("max_connections", &self.max_connections)
            .field("renew_chunk", &self.renew_chunk)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("backoff", &self.backoff)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_read_and_removed() {
        let config = MySqlConfig::from_url(
            "mysql://u:hunter2@db.example:3307/consumers?table=t1&ssl-mode=disabled&max_connections=3&renew_chunk=250&acquire_timeout_ms=700",
        )
        .unwrap();
        assert_eq!(config.table_prefix(), "t1");
        assert_eq!(config.max_connections(), 3);
        assert_eq!(config.renew_chunk(), 250);
        assert_eq!(config.acquire_timeout(), Duration::from_millis(700));
        assert_eq!(config.connect.get_host(), "db.example");
        assert_eq!(config.connect.get_port(), 3307);
        assert_eq!(config.database(), Some("consumers"));
        assert!(matches!(
            config.connect.get_ssl_mode(),
            sqlx::mysql::MySqlSslMode::Disabled
        ));
    }

    #[test]
    fn mariadb_urls_use_the_mysql_driver() {
        let config = MySqlConfig::from_url("mariadb://u@db.example/consumers").unwrap();
        assert_eq!(config.connect.get_host(), "db.example");
        assert_eq!(config.connect.get_port(), 3306);
        assert_eq!(config.database(), Some("consumers"));
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let config = MySqlConfig::from_url("mysql://u:hunter2@db.example/consumers").unwrap();
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let config = MySqlConfig::from_url(DEFAULT_URL)
            .unwrap()
            .with_password("s3cr3t-pw");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    }

    #[test]
    fn bad_urls_and_identifiers_are_rejected_without_echoing_the_password() {
        let err = MySqlConfig::from_url("postgres://u:hunter2@h/db").unwrap_err();
        assert_eq!(err.field(), Some("url"));
        assert!(!err.to_string().contains("hunter2"));
        let err = MySqlConfig::from_url("mysql://u:hunter2@h").unwrap_err();
        assert_eq!(err.field(), Some("url"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        for bad in ["a`b", "x;drop", "", "1abc", "tab-le", "été", "a b"] {
            let url = format!("mysql://u:hunter2@h/db?table={}", url_encode(bad));
            let err = MySqlConfig::from_url(&url).unwrap_err();
            assert_eq!(err.field(), Some("table_prefix"), "{bad:?}: {err}");
            assert!(!err.to_string().contains("hunter2"));
        }
        let err =
            MySqlConfig::from_url(&format!("mysql://h/db?table={}", "p".repeat(49))).unwrap_err();
        assert_eq!(err.field(), Some("table_prefix"));
        let err = MySqlConfig::from_url("mysql://h/db?max_connections=many").unwrap_err();
        assert_eq!(err.field(), Some("max_connections"));
    }

    fn url_encode(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }
}
