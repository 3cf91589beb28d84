//! Quickstart: a SQLite lease store in a local file. Creates a lease, takes it, checkpoints,
//! and shows the record; a second worker is refused while the lease is held, and a stale token
//! is fenced off.
//!
//! `cargo run -p checkpoint-sqlite --example quickstart [-- path/to/file.db]`

use std::time::Duration;

use checkpoint_core::{
    AppName, Checkpointer, LeaseDuration, LeaseKey, LeaseManager, Position, Result, WorkerId,
};
use checkpoint_sqlite::{SqliteConfig, SqliteStore};

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/quickstart.db".to_owned());
    let store = SqliteStore::open(SqliteConfig::file(&path), AppName::new("quickstart")?).await?;
    let key = LeaseKey::parse("orders", "shardId-000000000000")?;
    let (me, other) = (WorkerId::new("worker-1")?, WorkerId::new("worker-2")?);
    let ten_seconds = LeaseDuration::new(Duration::from_secs(10))?;

    store
        .create_lease_if_absent(&key, &[], Some(&Position::TrimHorizon))
        .await?;
    let lease = store.get_lease(&key, &me, ten_seconds).await?;
    println!("{me} holds {key} with fencing token {}", lease.token);

    let before = store
        .fetch_checkpoint(&key)
        .await?
        .and_then(|l| l.checkpoint);
    let next = match before {
        Some(Position::Sequence { sequence, .. }) => {
            let n: u128 = sequence.as_str().parse().unwrap_or(0);
            Position::sequence(&(n + 100).to_string())?
        }
        _ => Position::sequence("100")?,
    };
    let written = store
        .checkpoint_sequence(&key, &me, lease.token, &next)
        .await?;
    println!("checkpointed {next}");

    match store.get_lease(&key, &other, ten_seconds).await {
        Err(e) => println!("{other} is refused: {e}"),
        Ok(_) => println!("unexpected: {other} took a held lease"),
    }
    match store
        .checkpoint_sequence(&key, &me, lease.token.next(), &next)
        .await
    {
        Err(e) => println!("a write under a token this worker does not hold is fenced: {e}"),
        Ok(_) => println!("unexpected: a token that is not the lease's was accepted"),
    }

    let released = store.remove_lease_owner(&key, &me, lease.token).await?;
    println!("\nthe record in {path}, before and after release:");
    for (label, record) in [("held", &written), ("released", &released)] {
        let owner = record
            .owner
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string);
        let checkpoint = record
            .checkpoint
            .as_ref()
            .map_or("-".to_owned(), ToString::to_string);
        println!(
            "  {label:<9} key={} owner={owner} token={} checkpoint={checkpoint} deadline={}",
            record.key,
            record.token,
            if record.deadline.is_some() {
                "set"
            } else {
                "none"
            },
        );
    }
    Ok(())
}
