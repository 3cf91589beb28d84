//! The child process of the suite's kill -9 scenario
//! (`checkpoint_core::conformance::kill_9_keeps_acknowledged_positions`): opens a store and
//! checkpoints one lease as sequence 1, 2, 3, … until it is killed, printing each position on
//! its own line once the store acknowledged it.
//!
//! ```text
//! checkpoint-loop <sqlite|postgres|mysql|redis|dynamo> <path, URL or endpoint|table> <app> <stream> <shard> <worker> <token>
//! ```
//!
//! Exits with status 2 on bad arguments and 1 when a checkpoint fails.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use checkpoint_core::{AppName, Error, FencingToken, LeaseKey, Position, Result, Store, WorkerId};

async fn open(backend: &str, location: &str, app: AppName) -> Result<Arc<dyn Store>> {
    let _ = (location, &app);
    match backend {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            use checkpoint_sqlite::{SqliteConfig, SqliteStore};
            Ok(Arc::new(
                SqliteStore::open(SqliteConfig::file(location), app).await?,
            ))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            use checkpoint_postgres::{PostgresConfig, PostgresStore};
            let config = PostgresConfig::from_url(location)?.with_max_connections(1);
            Ok(Arc::new(PostgresStore::open(config, app).await?))
        }
        #[cfg(feature = "mysql")]
        "mysql" => {
            use checkpoint_mysql::{MySqlConfig, MySqlStore};
            let config = MySqlConfig::from_url(location)?.with_max_connections(1);
            Ok(Arc::new(MySqlStore::open(config, app).await?))
        }
        #[cfg(feature = "redis")]
        "redis" => {
            use checkpoint_redis::{RedisConfig, RedisStore};
            Ok(Arc::new(
                RedisStore::open(RedisConfig::from_url(location)?, app).await?,
            ))
        }
        #[cfg(feature = "dynamo")]
        "dynamo" => {
            use checkpoint_dynamo::{DynamoConfig, DynamoStore};
            let (endpoint, table) = location
                .split_once('|')
                .ok_or_else(|| Error::invalid("location", "expected <endpoint>|<table>"))?;
            let config = DynamoConfig::new(table)?.with_endpoint(endpoint);
            Ok(Arc::new(DynamoStore::open(config, app).await?))
        }
        other => Err(Error::invalid(
            "backend",
            format!("{other:?} is not a backend this binary was built with"),
        )),
    }
}

async fn run(args: &[String]) -> Result<()> {
    let [backend, location, app, stream, shard, worker, token] = args else {
        return Err(Error::invalid(
            "arguments",
            "expected <backend> <location> <app> <stream> <shard> <worker> <token>",
        ));
    };
    let key = LeaseKey::parse(stream, shard)?;
    let worker = WorkerId::new(worker.as_str())?;
    let token = FencingToken(
        token
            .parse()
            .map_err(|_| Error::invalid("token", format!("{token:?} is not a number")))?,
    );
    let store = open(backend, location, AppName::new(app.as_str())?).await?;
    let mut out = std::io::stdout().lock();
    for n in 1u64.. {
        let position = Position::sequence(&n.to_string())?;
        store
            .checkpoint_sequence(&key, &worker, token, &position)
            .await?;
        writeln!(out, "{n}")
            .and_then(|()| out.flush())
            .map_err(|e| Error::backend("stdout", false, e))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("checkpoint-loop: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == checkpoint_core::ErrorKind::InvalidInput => {
            eprintln!("checkpoint-loop: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("checkpoint-loop: {e}");
            ExitCode::FAILURE
        }
    }
}
