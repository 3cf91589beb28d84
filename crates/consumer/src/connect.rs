//! [`connect`]: open a store from a URL, choosing the backend by the URL's scheme.

use std::sync::Arc;

use checkpoint_core::{AppName, Error, MemoryStore, Result, Store};

/// The schemes [`connect`] knows, with the cargo feature that compiles each in.
const SCHEMES: &[(&str, &str)] = &[
    ("memory", "(always)"),
    ("sqlite", "sqlite"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
    ("mysql", "mysql"),
    ("mariadb", "mysql"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("redis+cluster", "redis"),
    ("rediss+cluster", "redis"),
    ("dynamodb", "dynamodb"),
];

/// Opens the store for `app` named by `url`; each backend's `connect` also runs
/// [`LeaseManager::init`](checkpoint_core::LeaseManager::init), so the store is ready to use:
///
/// | URL | backend | cargo feature |
/// | --- | --- | --- |
/// | `memory://` | [`MemoryStore`], this process only | always |
/// | `sqlite://path/to/file.db` | SQLite file | `sqlite` (default) |
/// | `postgres://user:pass@host/db` | PostgreSQL | `postgres` |
/// | `mysql://user:pass@host/db`, `mariadb://…` | MySQL 8 or MariaDB | `mysql` |
/// | `redis://host:6379/0` | Redis | `redis` |
/// | `redis+cluster://host1:7000,host2:7000/` | Redis Cluster | `redis` |
/// | `dynamodb://table?region=…` | DynamoDB | `dynamodb` |
///
/// A scheme whose feature is not compiled in is [`Error::InvalidInput`] on `url` naming the
/// feature to enable. A custom store needs no URL: pass any `Arc<dyn Store>` to
/// [`Worker::new`](crate::Worker::new).
///
/// ```
/// use checkpoint_core::{AppName, LeaseManager};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = checkpoint_consumer::connect("memory://", AppName::new("billing")?).await?;
/// assert_eq!(store.capabilities().backend, "memory");
/// let err = checkpoint_consumer::connect("ftp://db/x", AppName::new("billing")?).await.unwrap_err();
/// assert_eq!(err.field(), Some("url"));
/// # Ok::<(), checkpoint_core::Error>(()) }).unwrap();
/// ```
pub async fn connect(url: &str, app: AppName) -> Result<Arc<dyn Store>> {
    // A cluster URL's authority is a node list (`h1:p1,h2:p2`), which is not a URL authority.
    if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") {
        return redis(url, app).await;
    }
    let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", format!("{e}")))?;
    let scheme = parsed.scheme();
    let store: Arc<dyn Store> = match scheme {
        "memory" => Arc::new(MemoryStore::new(app)),
        "sqlite" => sqlite(url, app).await?,
        "postgres" | "postgresql" => postgres(url, app).await?,
        "mysql" | "mariadb" => mysql(url, app).await?,
        "redis" | "rediss" => redis(url, app).await?,
        "dynamodb" => dynamodb(url, app).await?,
        other => {
            let known: Vec<String> = SCHEMES.iter().map(|(s, _)| format!("{s}://")).collect();
            return Err(Error::invalid(
                "url",
                format!(
                    "unknown scheme {other:?}: expected one of {}",
                    known.join(", ")
                ),
            ));
        }
    };
    Ok(store)
}

#[cfg(not(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "dynamodb"
)))]
fn not_compiled(backend: &str, feature: &str) -> Error {
    Error::invalid(
        "url",
        format!(
            "backend {backend} is not available in this build: enable the `{feature}` cargo feature of the `consumer` crate"
        ),
    )
}

#[cfg(feature = "sqlite")]
async fn sqlite(url: &str, app: AppName) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        checkpoint_sqlite::SqliteStore::connect(url, app).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite(_url: &str, _app: AppName) -> Result<Arc<dyn Store>> {
    Err(not_compiled("sqlite", "sqlite"))
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str, app: AppName) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        checkpoint_postgres::PostgresStore::connect(url, app).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_url: &str, _app: AppName) -> Result<Arc<dyn Store>> {
    Err(not_compiled("postgres", "postgres"))
}

#[cfg(feature = "mysql")]
async fn mysql(url: &str, app: AppName) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        checkpoint_mysql::MySqlStore::connect(url, app).await?,
    ))
}

#[cfg(not(feature = "mysql"))]
async fn mysql(_url: &str, _app: AppName) -> Result<Arc<dyn Store>> {
    Err(not_compiled("mysql", "mysql"))
}

#[cfg(feature = "redis")]
async fn redis(url: &str, app: AppName) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        checkpoint_redis::RedisStore::connect(url, app).await?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn redis(_url: &str, _app: AppName) -> Result<Arc<dyn Store>> {
    Err(not_compiled("redis", "redis"))
}

#[cfg(feature = "dynamodb")]
async fn dynamodb(url: &str, app: AppName) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        checkpoint_dynamo::DynamoStore::connect(url, app).await?,
    ))
}

#[cfg(not(feature = "dynamodb"))]
async fn dynamodb(_url: &str, _app: AppName) -> Result<Arc<dyn Store>> {
    Err(not_compiled("dynamodb", "dynamodb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppName {
        checkpoint_core::conformance::random_app("connect")
    }

    #[tokio::test]
    async fn unknown_scheme_names_the_known_ones() {
        let err = connect("ftp://localhost/db", app()).await.unwrap_err();
        assert_eq!(err.field(), Some("url"));
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }

    #[tokio::test]
    async fn a_url_that_does_not_parse_is_invalid_input() {
        let err = connect("not a url", app()).await.unwrap_err();
        assert_eq!(err.field(), Some("url"));
    }

    #[tokio::test]
    async fn memory_url_opens_a_working_store() {
        let store = connect("memory://", app()).await.unwrap();
        assert_eq!(store.capabilities().backend, "memory");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_opens_a_file_store() {
        let dir = std::env::temp_dir().join(format!("consumer-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("connect.db").display());
        let store = connect(&url, app()).await.unwrap();
        assert_eq!(store.capabilities().backend, "sqlite");
        assert!(store.list_leases(None).await.unwrap().is_empty());
    }

    /// `mariadb://` selects the MySQL store (the same driver).
    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn a_mariadb_url_opens_the_mysql_store() {
        let url = std::env::var("CHECKPOINT_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
            .replacen("mysql://", "mariadb://", 1);
        match connect(&url, app()).await {
            Ok(store) => assert_eq!(store.capabilities().backend, "mysql"),
            Err(e) if e.is_retryable() => checkpoint_core::conformance::backend_unavailable(
                "mysql",
                "set CHECKPOINT_MYSQL_URL to a reachable MySQL or MariaDB server",
                &e,
            ),
            Err(e) => panic!("connect {url}: {e}"),
        }
    }

    #[cfg(not(feature = "mysql"))]
    #[tokio::test]
    async fn a_mariadb_url_without_the_feature_names_the_mysql_feature() {
        let err = connect("mariadb://localhost/db", app()).await.unwrap_err();
        assert_eq!(err.field(), Some("url"));
        assert!(err.to_string().contains("`mysql` cargo feature"), "{err}");
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn a_scheme_not_compiled_in_names_its_feature() {
        let err = connect("postgres://localhost/db", app()).await.unwrap_err();
        assert_eq!(err.field(), Some("url"));
        assert!(
            err.to_string().contains("`postgres` cargo feature"),
            "{err}"
        );
    }
}
