//! The harness of every server-backed test in the workspace (PostgreSQL, MySQL/MariaDB, Redis,
//! Redis Cluster, DynamoDB, Kinesis), and the lossy proxy of their lost-reply tests
//! ([`LossyProxy`]).
//!
//! One place decides whether a backend's server can be reached, the same way for every
//! backend ([`reach`]): only "nothing listens on that address" (the TCP connection is refused)
//! or an unset DynamoDB endpoint counts as unreachable. Any other failure (a bad URL, a name
//! that does not resolve, a timeout) is a failure of every test, never a skip.
//!
//! The tests of an unreachable server are registered as *ignored*, so the test runner's own
//! summary line counts them as ignored, never as passed; with `CHECKPOINT_REQUIRE_ALL=1`
//! (strict mode) they run and fail instead. A test file opts in with `harness = false` in its
//! crate's `Cargo.toml` and one [`server_tests!`] invocation listing its test functions.
//!
//! ```text
//! [[test]]
//! name = "postgres"
//! harness = false
//! ```
//!
//! ```ignore
//! checkpoint_test_support::server_tests! {
//!     backend: checkpoint_test_support::Backend::Postgres,
//!     tests: [conformance, model_on_a_shared_pool],
//!     offline: [config_redacts_password],
//!     measurements: [throughput],
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Duration;

pub use libtest_mimic;
pub use proxy::{DropRule, LossyProxy, Protocol};

mod proxy;
use libtest_mimic::{Arguments, Failed, Trial};

/// A backend whose tests need a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL at `CHECKPOINT_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    Postgres,
    /// MySQL or MariaDB at `CHECKPOINT_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).
    Mysql,
    /// A PostgreSQL that accepts only TLS, at `CHECKPOINT_POSTGRES_TLS_URL`; no default (its CA
    /// is `CHECKPOINT_POSTGRES_TLS_CA`).
    PostgresTls,
    /// Redis at `CHECKPOINT_REDIS_URL` (default `redis://127.0.0.1:6379/`).
    Redis,
    /// DynamoDB (a moto server) at `CHECKPOINT_DYNAMO_ENDPOINT`; no default.
    Dynamo,
    /// A Redis Cluster at `CHECKPOINT_REDIS_CLUSTER_URL`
    /// (`redis+cluster://host:port,host:port/`); no default. Reachable when its first node
    /// accepts connections.
    RedisCluster,
    /// A TLS-only Redis server at `CHECKPOINT_REDIS_TLS_URL` (`rediss://host:port/`, its CA's
    /// PEM file in `CHECKPOINT_REDIS_TLS_CA`); no default.
    RedisTls,
    /// Kinesis (a moto server) at `CHECKPOINT_KINESIS_ENDPOINT`, else
    /// `CHECKPOINT_DYNAMO_ENDPOINT` (one moto server serves both); no default.
    Kinesis,
}

impl Backend {
    /// The backend's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::PostgresTls => "postgres-tls",
            Self::Redis => "redis",
            Self::Dynamo => "dynamodb",
            Self::RedisCluster => "redis-cluster",
            Self::RedisTls => "redis-tls",
            Self::Kinesis => "kinesis",
        }
    }

    /// The environment variable naming the server.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Postgres => "CHECKPOINT_POSTGRES_URL",
            Self::Mysql => "CHECKPOINT_MYSQL_URL",
            Self::PostgresTls => "CHECKPOINT_POSTGRES_TLS_URL",
            Self::Redis => "CHECKPOINT_REDIS_URL",
            Self::Dynamo => "CHECKPOINT_DYNAMO_ENDPOINT",
            Self::RedisCluster => "CHECKPOINT_REDIS_CLUSTER_URL",
            Self::RedisTls => "CHECKPOINT_REDIS_TLS_URL",
            Self::Kinesis => "CHECKPOINT_KINESIS_ENDPOINT",
        }
    }

    /// The server's URL: the variable's value, or the default (`None` for DynamoDB, Redis
    /// Cluster and the TLS servers, which have none; Kinesis falls back to the DynamoDB
    /// endpoint).
    pub fn url(self) -> Option<String> {
        let set = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        set(self.variable()).or(match self {
            Self::Postgres => Some("postgres://postgres@127.0.0.1:5432/test".into()),
            Self::Mysql => Some("mysql://root@127.0.0.1:3306/test".into()),
            Self::Redis => Some("redis://127.0.0.1:6379/".into()),
            Self::Dynamo | Self::RedisCluster | Self::RedisTls | Self::PostgresTls => None,
            Self::Kinesis => set(Self::Dynamo.variable()),
        })
    }

    /// How to provide the server, for the skip message.
    pub fn how_to_provide(self) -> &'static str {
        match self {
            Self::Postgres => {
                "start PostgreSQL on 127.0.0.1:5432 or set CHECKPOINT_POSTGRES_URL=postgres://user@host:port/db"
            }
            Self::PostgresTls => {
                "run scripts/test (it starts a TLS-only PostgreSQL with a private CA), or set CHECKPOINT_POSTGRES_TLS_URL and CHECKPOINT_POSTGRES_TLS_CA"
            }
            Self::Mysql => {
                "start MariaDB or MySQL on 127.0.0.1:3306 or set CHECKPOINT_MYSQL_URL=mysql://user@host:port/db"
            }
            Self::Redis => "start `redis-server --port 6379` or set CHECKPOINT_REDIS_URL",
            Self::Dynamo => {
                "start a moto server (python crates/checkpoint-dynamo/tests/moto_serial.py 5000) and set CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000"
            }
            Self::RedisCluster => {
                "start a local cluster (`scripts/test-redis-cluster start` prints its URL) and set CHECKPOINT_REDIS_CLUSTER_URL=redis+cluster://host:port,host:port/"
            }
            Self::RedisTls => {
                "run scripts/test (it starts a TLS-only redis-server with a private CA), or set CHECKPOINT_REDIS_TLS_URL=rediss://host:port/ and CHECKPOINT_REDIS_TLS_CA=<CA file>"
            }
            Self::Kinesis => {
                "start a moto server (moto_server -p 5055) and set CHECKPOINT_KINESIS_ENDPOINT=http://127.0.0.1:5055"
            }
        }
    }

    fn default_port(self, scheme: &str) -> u16 {
        match (self, scheme) {
            (Self::Postgres | Self::PostgresTls, _) => 5432,
            (Self::Mysql, _) => 3306,
            (Self::Redis | Self::RedisCluster | Self::RedisTls, _) => 6379,
            (Self::Dynamo | Self::Kinesis, "https") => 443,
            (Self::Dynamo | Self::Kinesis, _) => 80,
        }
    }
}

/// Whether a backend's server can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Something accepts connections at the address: the tests run.
    Listening,
    /// Nothing listens there (connection refused), or no address is configured: the tests are
    /// ignored (failed in strict mode).
    Unreachable(String),
    /// Any other problem (bad URL, unresolvable name, timeout): every test fails with it.
    Broken(String),
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listening => f.write_str("listening"),
            Self::Unreachable(why) | Self::Broken(why) => f.write_str(why),
        }
    }
}

/// The `host:port` of a server URL (`scheme://[user[:password]@]host[:port][/path][?query]`;
/// for a node list `host:port,host:port`, the first node); `None` for a URL without a TCP
/// address (a Unix socket).
fn host_port(url: &str, backend: Backend) -> Result<Option<String>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{} is not a URL", backend.variable()))?;
    if scheme.contains("unix") {
        return Ok(None);
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = host_port.split(',').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(format!("{} names no host", backend.variable()));
    }
    let has_port = if host_port.starts_with('[') {
        host_port.contains("]:")
    } else {
        host_port.contains(':')
    };
    Ok(Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:{}", backend.default_port(scheme))
    }))
}

/// The `host:port` a server URL names (`scheme://[user[:password]@]host[:port][/path]`), with
/// the backend's default port when it names none; `None` for a Unix socket URL.
pub fn server_address(backend: Backend, url: &str) -> Result<Option<String>, String> {
    host_port(url, backend)
}

/// `url` with its `host[:port]` replaced by `address` (user, path and query kept), for example
/// to reach the server through a [`LossyProxy`].
pub fn replace_address(url: &str, address: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((user, _)) => format!("{scheme}://{user}@{address}{tail}"),
        None => format!("{scheme}://{address}{tail}"),
    }
}

/// `url` with `name=value` appended to its query.
pub fn with_query(url: &str, name: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{name}={value}")
}

/// Decides whether `backend`'s server can be reached: one TCP connection to the address of its
/// URL. Only a refused connection (or an unset URL of a backend without a default) is
/// [`Reach::Unreachable`].
pub fn reach(backend: Backend) -> Reach {
    match backend.url() {
        Some(url) => reach_url(backend, &url),
        None => Reach::Unreachable(format!("{} is not set", backend.variable())),
    }
}

/// [`reach`] for the server at `url`.
fn reach_url(backend: Backend, url: &str) -> Reach {
    let address = match host_port(url, backend) {
        Ok(Some(address)) => address,
        Ok(None) => return Reach::Listening,
        Err(why) => return Reach::Broken(why),
    };
    let addrs: Vec<_> = match address.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Reach::Broken(format!("{address} does not resolve: {e}")),
    };
    let mut refused = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
            Ok(_) => return Reach::Listening,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = Some(format!("nothing listens on {addr} ({e})"));
            }
            Err(e) => return Reach::Broken(format!("connecting to {addr}: {e}")),
        }
    }
    Reach::Unreachable(refused.unwrap_or_else(|| format!("{address} has no address")))
}

/// Whether strict mode is on (`CHECKPOINT_REQUIRE_ALL=1` or `true`): an unreachable server
/// fails its tests instead of leaving them ignored.
pub fn strict_mode() -> bool {
    std::env::var("CHECKPOINT_REQUIRE_ALL")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Runs `body` on a multi-threaded runtime of its own (four workers), as `#[tokio::test]` would,
/// turning a panic into a failure.
pub fn run_async<F: Future<Output = ()>>(body: F) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("could not start a runtime: {e}")))?;
    run_sync(move || runtime.block_on(body))
}

/// Runs `body`, turning a panic into a failure carrying its message.
pub fn run_sync(body: impl FnOnce()) -> Result<(), Failed> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the test panicked".to_owned());
        Failed::from(message)
    })
}

/// What a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// The backend's server.
    Server,
    /// Nothing: runs whether or not a server is reachable.
    Nothing,
    /// The server, and it is a measurement: ignored unless asked for (`--ignored`).
    Measurement,
}

/// One registered test.
pub struct Test {
    name: &'static str,
    needs: Needs,
    body: Box<dyn FnOnce() -> Result<(), Failed> + Send>,
}

impl Test {
    /// A test named `name` needing `needs`, run by `body`.
    pub fn new(
        name: &'static str,
        needs: Needs,
        body: impl FnOnce() -> Result<(), Failed> + Send + 'static,
    ) -> Self {
        Self {
            name,
            needs,
            body: Box::new(body),
        }
    }
}

/// Registers `tests` with the runner, the server's tests ignored when it is unreachable (or,
/// in strict mode, failing with why), and runs them. The process exit code is the runner's.
pub fn run(backend: Backend, tests: Vec<Test>) -> ExitCode {
    run_servers(&[backend], tests)
}

/// [`run`] for tests that need every one of `backends` (a migration from one server to
/// another): they run when all are reachable; one broken server fails them, and otherwise one
/// unreachable server leaves them ignored (failed in strict mode), naming it.
pub fn run_servers(backends: &[Backend], tests: Vec<Test>) -> ExitCode {
    let mut args = Arguments::from_args();
    // The DynamoDB emulator serves one request at a time: tests run at once only queue behind
    // each other, and the waits would count as the store's latency. One test at a time.
    if backends.contains(&Backend::Dynamo) {
        args.test_threads = Some(1);
    }
    let needs_server = tests.iter().any(|t| t.needs != Needs::Nothing);
    let reaches: Vec<(Backend, Reach)> = if needs_server {
        backends.iter().map(|&b| (b, reach(b))).collect()
    } else {
        Vec::new()
    };
    let broken = reaches.iter().find(|(_, r)| matches!(r, Reach::Broken(_)));
    let unreachable = reaches
        .iter()
        .find(|(_, r)| matches!(r, Reach::Unreachable(_)));
    let (culprit, reach) = match broken.or(unreachable) {
        Some((backend, reach)) => (*backend, reach.clone()),
        None => (
            backends.first().copied().unwrap_or(Backend::Postgres),
            Reach::Listening,
        ),
    };
    let strict = strict_mode();
    if let Reach::Unreachable(why) = &reach {
        if strict {
            eprintln!(
                "{} unreachable (CHECKPOINT_REQUIRE_ALL=1): {why}. {}",
                culprit.name(),
                culprit.how_to_provide()
            );
        } else {
            eprintln!(
                "IGNORED {} tests: {why}. {}",
                culprit.name(),
                culprit.how_to_provide()
            );
        }
    }
    let kind: &'static str = match backends {
        [] => "local",
        [one] => one.name(),
        _ => "servers",
    };
    let trials = tests
        .into_iter()
        .map(|test| {
            let name = test.name;
            let trial = match (&reach, test.needs) {
                (_, Needs::Nothing) | (Reach::Listening, Needs::Server) => {
                    Trial::test(name, test.body)
                }
                (Reach::Listening, Needs::Measurement) => {
                    Trial::test(name, test.body).with_ignored_flag(true)
                }
                (Reach::Unreachable(why), _) if strict => {
                    let message = format!(
                        "{} could not be tested (CHECKPOINT_REQUIRE_ALL=1): {why}. {}",
                        culprit.name(),
                        culprit.how_to_provide()
                    );
                    Trial::test(name, move || Err(message.into()))
                }
                (Reach::Unreachable(_), _) => Trial::test(name, test.body).with_ignored_flag(true),
                (Reach::Broken(why), _) => {
                    let message = format!("{} server: {why}", culprit.name());
                    Trial::test(name, move || Err(message.into()))
                }
            };
            trial.with_kind(kind)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Defines `main` for a test file with `harness = false`: registers its test functions by
/// name with [`run`] (`backend: B`), or with [`run_servers`] (`backends: [A, B, …]`, tests
/// needing every one of them; `backends: []` for a file whose tests need no server). `tests` are async functions needing the server, `offline` synchronous
/// functions and `offline_async` async functions needing nothing, `measurements` async
/// functions ignored unless asked for. An entry may carry `#[cfg(...)]` attributes.
#[macro_export]
macro_rules! server_tests {
    (backend: $backend:expr, $($rest:tt)*) => {
        $crate::server_tests!(backends: [$backend], $($rest)*);
    };
    (
        backends: [$($backend:expr),* $(,)?],
        tests: [$($(#[$tm:meta])* $test:ident),* $(,)?]
        $(, offline: [$($(#[$om:meta])* $offline:ident),* $(,)?])?
        $(, offline_async: [$($(#[$am:meta])* $offline_async:ident),* $(,)?])?
        $(, measurements: [$($(#[$mm:meta])* $measure:ident),* $(,)?])?
        $(,)?
    ) => {
        fn main() -> ::std::process::ExitCode {
            let mut tests = ::std::vec::Vec::new();
            $(
                $(#[$tm])*
                tests.push($crate::Test::new(stringify!($test), $crate::Needs::Server, || {
                    $crate::run_async($test())
                }));
            )*
            $($(
                $(#[$om])*
                tests.push($crate::Test::new(stringify!($offline), $crate::Needs::Nothing, || {
                    $crate::run_sync($offline)
                }));
            )*)?
            $($(
                $(#[$am])*
                tests.push($crate::Test::new(
                    stringify!($offline_async),
                    $crate::Needs::Nothing,
                    || $crate::run_async($offline_async()),
                ));
            )*)?
            $($(
                $(#[$mm])*
                tests.push($crate::Test::new(
                    stringify!($measure),
                    $crate::Needs::Measurement,
                    || $crate::run_async($measure()),
                ));
            )*)?
            $crate::run_servers(&[$($backend),*], tests)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_each_url_shape() {
        let pg = Backend::Postgres;
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:5432/test", pg).unwrap(),
            Some("127.0.0.1:5432".into())
        );
        assert_eq!(
            host_port("postgres://u:p@ss@db.example/test?x=1", pg).unwrap(),
            Some("db.example:5432".into())
        );
        assert_eq!(
            host_port("redis://127.0.0.1/", Backend::Redis).unwrap(),
            Some("127.0.0.1:6379".into())
        );
        assert_eq!(
            host_port("https://dynamodb.eu-west-1.amazonaws.com", Backend::Dynamo).unwrap(),
            Some("dynamodb.eu-west-1.amazonaws.com:443".into())
        );
        assert_eq!(
            host_port("http://[::1]:5000", Backend::Dynamo).unwrap(),
            Some("[::1]:5000".into())
        );
        assert_eq!(
            host_port("http://[::1]", Backend::Dynamo).unwrap(),
            Some("[::1]:80".into())
        );
        assert_eq!(
            host_port("redis+unix:///tmp/redis.sock", Backend::Redis).unwrap(),
            None
        );
        assert!(host_port("127.0.0.1:5432", pg).is_err());
        assert_eq!(
            host_port(
                "redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001/",
                Backend::RedisCluster
            )
            .unwrap(),
            Some("127.0.0.1:7000".into())
        );
    }

    #[test]
    fn addresses_are_replaced_keeping_user_path_and_query() {
        assert_eq!(
            replace_address("postgres://u:p@db:5432/test?x=1", "127.0.0.1:9"),
            "postgres://u:p@127.0.0.1:9/test?x=1"
        );
        assert_eq!(
            replace_address("redis://127.0.0.1:6379/", "127.0.0.1:9"),
            "redis://127.0.0.1:9/"
        );
        assert_eq!(with_query("mysql://r@h/db", "a", "b"), "mysql://r@h/db?a=b");
        assert_eq!(
            with_query("mysql://r@h/db?c=d", "a", "b"),
            "mysql://r@h/db?c=d&a=b"
        );
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_nothing_else_is() {
        // A port just released: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}");
        assert!(matches!(
            reach_url(Backend::Dynamo, &url),
            Reach::Unreachable(_)
        ));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        assert_eq!(reach_url(Backend::Dynamo, &url), Reach::Listening);
        assert!(matches!(
            reach_url(Backend::Dynamo, "http://name.invalid:5000"),
            Reach::Broken(_)
        ));
        assert!(matches!(
            reach_url(Backend::Dynamo, "not a url"),
            Reach::Broken(_)
        ));
    }
}
