//! Where the server is and how to talk to it: from a URL ([`RedisConfig::from_url`]) or the
//! builder ([`RedisConfig::new`] and the `with_*` setters).

use std::fmt;
use std::time::Duration;

use checkpoint_core::{Backoff, Error, Result};

use crate::scripts::ScriptMode;

/// Default host: `127.0.0.1`.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default port: 6379.
pub const DEFAULT_PORT: u16 = 6379;
/// Default [`RedisConfig::with_prefix`]: `ckpt`.
pub const DEFAULT_PREFIX: &str = "ckpt";
/// Longest accepted key prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 64;
/// Default [`RedisConfig::with_connection_timeout`]: 2 s.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`RedisConfig::with_response_timeout`]: 5 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`RedisConfig::with_list_page_size`]: 500.
pub const DEFAULT_LIST_PAGE_SIZE: usize = 500;
/// Default timeout of [`RedisConfig::with_wait_for_replicas`] when the URL gives
/// `wait_replicas` without `wait_timeout_ms`: 1 s.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// `WAIT`-based durability: after each write, wait until `replicas` replicas acknowledged it,
/// at most `timeout` ([`RedisConfig::with_wait_for_replicas`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitForReplicas {
    /// How many replicas must acknowledge each write (`WAIT numreplicas`), at least 1.
    pub replicas: u32,
    /// How long one write waits for them (`WAIT ... timeout`), 1 ms to 1 minute.
    pub timeout: Duration,
}

/// How to reach a Redis server and lay out keys in it.
///
/// ```
/// use std::time::Duration;
/// use checkpoint_redis::RedisConfig;
///
/// let config = RedisConfig::from_url("redis://:secret@127.0.0.1:6379/0?prefix=orders&response_timeout_ms=2000")?;
/// assert_eq!(config.prefix(), "orders");
/// assert_eq!(config.response_timeout(), Duration::from_secs(2));
/// assert!(!format!("{config:?}").contains("secret"));
///
/// let built = RedisConfig::new()
///     .with_host("cache.internal")
///     .with_db(2)
///     .with_password("secret")
///     .with_prefix("ckpt");
/// assert!(!format!("{built:?}").contains("secret"));
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
///
/// The password is never shown by `Debug`, never logged and never part of an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    host: String,
    port: u16,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    tls_root_certificate: Option<Vec<u8>>,
    prefix: String,
    connection_timeout: Duration,
    response_timeout: Duration,
    backoff: Backoff,
    list_page_size: usize,
    cluster_nodes: Option<Vec<(String, u16)>>,
    wait_for_replicas: Option<WaitForReplicas>,
    script_mode: ScriptMode,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field(
                "tls_root_certificate",
                &self
                    .tls_root_certificate
                    .as_ref()
                    .map(|pem| format!("{} bytes of PEM", pem.len())),
            )
            .field("prefix", &self.prefix)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("backoff", &self.backoff)
            .field("list_page_size", &self.list_page_size)
            .field("cluster_nodes", &self.cluster_nodes)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .field("script_mode", &self.script_mode)
            .finish()
    }
}

fn invalid_url(reason: impl Into<String>) -> Error {
    Error::invalid("url", reason)
}

/// One `host[:port]` (or `[v6]:port`) of a cluster URL's node list.
fn parse_node(node: &str) -> Result<(String, u16)> {
    let bad = || Error::invalid("cluster_nodes", "a node is not host[:port]");
    if node.is_empty() {
        return Err(Error::invalid("cluster_nodes", "an empty node in the list"));
    }
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        }
    };
    let port = match port {
        Some(port) => port.parse::<u16>().map_err(|_| bad())?,
        None => DEFAULT_PORT,
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Decodes `%XX` escapes (the user info of a URL); `+` stays `+`.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_ms(field: &'static str, value: &str) -> Result<Duration> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| Error::invalid(field, format!("{value:?} is not a number of milliseconds")))
}

impl RedisConfig {
    /// `redis://127.0.0.1:6379/0`, prefix `ckpt`, no user, no password, no TLS, every other
    /// setting at its default.
    pub fn new() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_root_certificate: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            backoff: Backoff::default(),
            list_page_size: DEFAULT_LIST_PAGE_SIZE,
            cluster_nodes: None,
            wait_for_replicas: None,
            script_mode: ScriptMode::Auto,
        }
    }

    /// Parses `redis://[user][:password@]host[:port][/db][?param=value&...]`, or `rediss://...`
    /// for TLS (needs the `tls` feature; the server certificate is checked against the
    /// platform's root certificates).
    ///
    /// Redis Cluster: `redis+cluster://[user][:password@]host1[:port][,host2[:port]...][/][?...]`,
    /// or `rediss+cluster://...` for TLS. The nodes are seeds: the client asks them for the
    /// slot map and then talks to every master it names ([`RedisConfig::with_cluster_nodes`]).
    /// A cluster has only database 0, so a path naming another one is an error naming `db`.
    /// (The redis crate itself takes one `redis://` URL per node; the `+cluster` scheme, in
    /// the style of its `redis+unix://`, keeps one URL per store.)
    ///
    /// User and password are percent-decoded. Query parameters: `prefix`,
    /// `connection_timeout_ms`, `response_timeout_ms`, `list_page_size`, `wait_replicas` and
    /// `wait_timeout_ms` ([`RedisConfig::with_wait_for_replicas`]; the timeout defaults to
    /// [`DEFAULT_WAIT_TIMEOUT`]), `script_mode` (`auto`, `functions` or `scripts`:
    /// [`RedisConfig::with_script_mode`]). An unknown parameter is an error, so a typo is never silently
    /// ignored. Errors never echo the URL (it may hold a password).
    pub fn from_url(url: &str) -> Result<Self> {
        if let Some((tls, rest)) = url
            .strip_prefix("redis+cluster://")
            .map(|rest| (false, rest))
            .or_else(|| {
                url.strip_prefix("rediss+cluster://")
                    .map(|rest| (true, rest))
            })
        {
            return Self::from_cluster_url(tls, rest);
        }
        Self::from_single_url(url)
    }

    /// The `+cluster` form: the node list is cut out of the authority, the rest parsed as a
    /// single-node URL on the first node.
    fn from_cluster_url(tls: bool, rest: &str) -> Result<Self> {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (user_info, hosts) = match authority.rsplit_once('@') {
            Some((user_info, hosts)) => (Some(user_info), hosts),
            None => (None, authority),
        };
        let nodes = hosts
            .split(',')
            .map(parse_node)
            .collect::<Result<Vec<_>>>()?;
        let first = hosts.split(',').next().unwrap_or_default();
        let scheme = if tls { "rediss" } else { "redis" };
        let single = match user_info {
            Some(user_info) => format!("{scheme}://{user_info}@{first}{tail}"),
            None => format!("{scheme}://{first}{tail}"),
        };
        let config = Self::from_single_url(&single)?.with_cluster_nodes(nodes);
        config.validate()?;
        Ok(config)
    }

    fn from_single_url(url: &str) -> Result<Self> {
        // The url crate's messages do not contain the input.
        let parsed =
            url::Url::parse(url).map_err(|e| invalid_url(format!("does not parse: {e}")))?;
        let mut config = Self::new();
        match parsed.scheme() {
            "redis" => {}
            "rediss" => config.tls = true,
            other => {
                return Err(invalid_url(format!(
                    "scheme {other:?} is not redis or rediss"
                )));
            }
        }
        if parsed.fragment().is_some() {
            return Err(invalid_url("a fragment (#...) is not allowed"));
        }
        config.host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid_url("names no host")),
        };
        config.port = parsed.port().unwrap_or(DEFAULT_PORT);
        config.db = match parsed.path().trim_matches('/') {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| Error::invalid("db", format!("{db:?} is not a database number")))?,
        };
        if !parsed.username().is_empty() {
            let user = percent_decode(parsed.username())
                .ok_or_else(|| invalid_url("the user name is not valid percent-encoded UTF-8"))?;
            config.username = Some(user);
        }
        if let Some(password) = parsed.password() {
            let password = percent_decode(password)
                .ok_or_else(|| invalid_url("the password is not valid percent-encoded UTF-8"))?;
            config.password = Some(password);
        }
        let (mut wait_replicas, mut wait_timeout) = (None, None);
        for (name, value) in parsed.query_pairs() {
            config = match name.as_ref() {
                "prefix" => config.with_prefix(value.as_ref()),
                "connection_timeout_ms" => {
                    config.with_connection_timeout(parse_ms("connection_timeout_ms", &value)?)
                }
                "response_timeout_ms" => {
                    config.with_response_timeout(parse_ms("response_timeout_ms", &value)?)
                }
                "list_page_size" => {
                    let n = value.parse::<usize>().map_err(|_| {
                        Error::invalid("list_page_size", format!("{value:?} is not a number"))
                    })?;
                    config.with_list_page_size(n)
                }
                "wait_replicas" => {
                    let n = value.parse::<u32>().map_err(|_| {
                        Error::invalid("wait_replicas", format!("{value:?} is not a number"))
                    })?;
                    wait_replicas = Some(n);
                    config
                }
                "script_mode" => config.with_script_mode(ScriptMode::parse(&value)?),
                "wait_timeout_ms" => {
                    wait_timeout = Some(parse_ms("wait_timeout_ms", &value)?);
                    config
                }
                other => {
                    return Err(invalid_url(format!(
                        "unknown parameter {other:?}; known: prefix, connection_timeout_ms, \
                         response_timeout_ms, list_page_size, wait_replicas, wait_timeout_ms, script_mode"
                    )));
                }
            };
        }
        match (wait_replicas, wait_timeout) {
            (Some(replicas), timeout) => {
                config = config
                    .with_wait_for_replicas(replicas, timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "wait_timeout_ms",
                    "given without wait_replicas",
                ));
            }
            (None, None) => {}
        }
        config.validate()?;
        Ok(config)
    }

    /// The server's host name or address. Default `127.0.0.1`.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The server's port. Default 6379.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The database number (`SELECT`). Default 0.
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// The ACL user name. Default none (the `default` user).
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password (`AUTH`). Default none. Never shown by `Debug` or logged.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// TLS (needs the `tls` feature, else opening the store is [`Error::InvalidInput`] naming
    /// `tls`). Default off.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// With TLS, trust only this root certificate (PEM), for a server whose certificate was
    /// issued by a private certificate authority. Default none: the platform's root
    /// certificates.
    pub fn with_tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// The first part of every key, before the app's hash tag: 1 to 64 bytes of ASCII letters,
    /// digits, `-`, `_`, `.` and `:` (no `{`, `}` or spaces, so it can never change the hash tag).
    /// Default `ckpt` ([`DEFAULT_PREFIX`]).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Time allowed to open a connection. Default 2 s ([`DEFAULT_CONNECTION_TIMEOUT`]).
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Time allowed for one reply. A reply that does not come in time is a retryable error and
    /// the operation is retried: the script may have run, and the retry re-evaluates its
    /// condition against the stored record. Default 5 s ([`DEFAULT_RESPONSE_TIMEOUT`]).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Retry policy for transient faults (dropped connection, timeout, `LOADING`, failover).
    /// Default [`Backoff::default`] (6 tries, 5 s budget); [`Backoff::none`] surfaces every
    /// fault to the caller as a retryable error.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many leases `list_leases` reads per round trip, 1 to 10,000. Default 500
    /// ([`DEFAULT_LIST_PAGE_SIZE`]).
    pub fn with_list_page_size(mut self, size: usize) -> Self {
        self.list_page_size = size;
        self
    }

    /// Redis Cluster mode, with these seed nodes (`(host, port)`; at least one): the store
    /// uses the redis crate's asynchronous cluster client, which reads the slot map from the
    /// seeds, sends each command to the master owning its key's slot and follows `MOVED` and
    /// `ASK` redirections. Host, port and database of the single-node settings are then not
    /// used (a cluster has only database 0); user, password, TLS and timeouts are, for every
    /// node. Default: single-node mode.
    pub fn with_cluster_nodes<H: Into<String>>(
        mut self,
        nodes: impl IntoIterator<Item = (H, u16)>,
    ) -> Self {
        self.cluster_nodes = Some(
            nodes
                .into_iter()
                .map(|(host, port)| (host.into(), port))
                .collect(),
        );
        self
    }

    /// `WAIT`-based durability: after each write (every script call), `WAIT replicas timeout`
    /// on the same connection, so the call returns `Ok` only once `replicas` replicas of the
    /// primary that ran the script have acknowledged it. When fewer acknowledge within
    /// `timeout`, the write stays applied on the primary and the call fails with a retryable
    /// [`Error::Backend`] whose source says how many replicas acknowledged; the store's backoff
    /// retries it (running the script again is safe, see the crate docs) and then returns that
    /// error. `replicas` is 1 or more, `timeout` 1 ms to 1 minute. Default: off (no `WAIT`;
    /// replication is asynchronous). URL: `wait_replicas=N&wait_timeout_ms=T`.
    pub fn with_wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_for_replicas = Some(WaitForReplicas { replicas, timeout });
        self
    }

    /// How the store sends its Lua: the function library (`FCALL`, Redis 7.0 or later), one
    /// script per operation (`EVALSHA`), or whichever the server supports, decided at open.
    /// Default [`ScriptMode::Auto`]. URL: `script_mode=auto|functions|scripts`.
    pub fn with_script_mode(mut self, mode: ScriptMode) -> Self {
        self.script_mode = mode;
        self
    }

    /// The script mode asked for ([`RedisConfig::with_script_mode`]); the store's
    /// [`RedisStore::script_mode`](crate::RedisStore::script_mode) says which one `Auto` chose.
    pub fn script_mode(&self) -> ScriptMode {
        self.script_mode
    }

    /// The cluster seed nodes, `None` in single-node mode.
    pub fn cluster_nodes(&self) -> Option<&[(String, u16)]> {
        self.cluster_nodes.as_deref()
    }

    /// Whether this is Redis Cluster mode.
    pub fn is_cluster(&self) -> bool {
        self.cluster_nodes.is_some()
    }

    /// The `WAIT` setting, `None` when off.
    pub fn wait_for_replicas(&self) -> Option<WaitForReplicas> {
        self.wait_for_replicas
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database number.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The ACL user name.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Whether a password is set (the password itself is not readable back).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether TLS is on.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The root certificate set with [`RedisConfig::with_tls_root_certificate`].
    pub fn tls_root_certificate(&self) -> Option<&[u8]> {
        self.tls_root_certificate.as_deref()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection timeout.
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The retry policy.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Leases read per `list_leases` round trip.
    pub fn list_page_size(&self) -> usize {
        self.list_page_size
    }

    /// Checks every setting; [`Error::InvalidInput`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.host.is_empty() {
            return Err(Error::invalid("host", "must not be empty"));
        }
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX_BYTES {
            return Err(Error::invalid(
                "prefix",
                format!("must be 1 to {MAX_PREFIX_BYTES} bytes long"),
            ));
        }
        if let Some(bad) = self
            .prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        {
            return Err(Error::invalid(
                "prefix",
                format!(
                    "contains {bad:?}; only ASCII letters, digits, '-', '_', '.' and ':' are allowed"
                ),
            ));
        }
        if !(0..=1_000_000).contains(&self.db) {
            return Err(Error::invalid(
                "db",
                format!("{} is not a database number", self.db),
            ));
        }
        for (field, value) in [
            ("connection_timeout_ms", self.connection_timeout),
            ("response_timeout_ms", self.response_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(600) {
                return Err(Error::invalid(field, "must be between 1 ms and 10 minutes"));
            }
        }
        if !(1..=10_000).contains(&self.list_page_size) {
            return Err(Error::invalid(
                "list_page_size",
                format!("{} is not between 1 and 10000", self.list_page_size),
            ));
        }
        if let Some(nodes) = &self.cluster_nodes {
            if nodes.is_empty() {
                return Err(Error::invalid(
                    "cluster_nodes",
                    "must name at least one node",
                ));
            }
            if nodes.iter().any(|(host, _)| host.is_empty()) {
                return Err(Error::invalid("cluster_nodes", "a node has an empty host"));
            }
            if self.db != 0 {
                return Err(Error::invalid("db", "Redis Cluster has only database 0"));
            }
        }
        if let Some(wait) = self.wait_for_replicas {
            if wait.replicas == 0 {
                return Err(Error::invalid("wait_replicas", "must be at least 1"));
            }
            if wait.timeout.is_zero() || wait.timeout > Duration::from_secs(60) {
                return Err(Error::invalid(
                    "wait_timeout_ms",
                    "must be between 1 ms and 1 minute",
                ));
            }
        }
        if self.tls && !cfg!(feature = "tls") {
            return Err(Error::invalid(
                "tls",
                "rediss:// (TLS) needs the `tls` feature of checkpoint-redis",
            ));
        }
        Ok(())
    }

    /// A `redis` client for these settings.
    pub(crate) fn client(&self) -> Result<redis::Client> {
        let info = self.connection_info()?;
        #[cfg(feature = "tls")]
        if let (true, Some(pem)) = (self.tls, &self.tls_root_certificate) {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            return redis::Client::build_with_tls(info, certificates)
                .map_err(|e| Error::invalid("tls_root_certificate", e.to_string()));
        }
        redis::Client::open(info).map_err(crate::error::from_redis)
    }

    /// A `redis` cluster client for these settings (cluster mode): every seed node with the
    /// same credentials and TLS, the connection and response timeouts per node.
    pub(crate) fn cluster_client(&self) -> Result<redis::cluster::ClusterClient> {
        let nodes = self.cluster_nodes.as_deref().unwrap_or_default();
        let infos = nodes
            .iter()
            .map(|(host, port)| self.node_info(host, *port))
            .collect::<Result<Vec<_>>>()?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
            .connection_timeout(self.connection_timeout)
            .response_timeout(self.response_timeout);
        if let Some(user) = &self.username {
            builder = builder.username(user);
        }
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        #[cfg(feature = "tls")]
        if self.tls {
            builder = builder.tls(redis::TlsMode::Secure);
            if let Some(pem) = &self.tls_root_certificate {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
        }
        builder.build().map_err(|e| {
            if self.tls_root_certificate.is_some() && self.tls {
                Error::invalid("tls_root_certificate", e.to_string())
            } else {
                crate::error::from_redis(e)
            }
        })
    }

    /// The `redis` crate's connection settings.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo> {
        self.node_info(&self.host, self.port)
    }

    /// The `redis` crate's connection settings for the node at `host:port`.
    fn node_info(&self, host: &str, port: u16) -> Result<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let mut settings = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let info = addr
            .into_connection_info()
            .map_err(crate::error::from_redis)?;
        Ok(info.set_redis_settings(settings))
    }
}

#[cfg(test)]
mod tests;
