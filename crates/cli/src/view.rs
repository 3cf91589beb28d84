//! Read-only commands: `leases list`, `leases show`, `workers list`.
//!
//! Time left is judged by the store's clock, never by this host's: every listing is read with
//! [`LeaseManager::list_leases_timed`](checkpoint_core::LeaseManager::list_leases_timed), which
//! returns the store-clock instant the records were judged at (the database server's clock on
//! PostgreSQL, MySQL and Redis, the one host's on SQLite and memory, the handle's own
//! observations on DynamoDB), and deadlines are compared with that instant.

use std::collections::BTreeMap;
use std::time::SystemTime;

use checkpoint_core::{Lease, LeaseKey, Position, Store, StreamName, WorkerId, rules};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::Outcome;
use crate::record::{Record, deadline_text};

/// How a listing judges time: the store-clock instant its records were judged at.
pub(crate) struct Clock(SystemTime);

impl Clock {
    /// The records of `stream` (or of the app) and the store-clock instant they were judged at.
    pub(crate) async fn listing(
        store: &dyn Store,
        stream: Option<&StreamName>,
    ) -> checkpoint_core::Result<(Self, Vec<Lease>)> {
        let listing = store.list_leases_timed(stream).await?;
        Ok((Self(listing.store_now), listing.leases))
    }

    /// Whether `lease` is held and live by the store's clock.
    pub(crate) fn live(&self, lease: &Lease) -> bool {
        lease.is_live_at(self.0)
    }

    /// Time left by the store's clock, zero when free or expired.
    fn left(&self, lease: &Lease) -> std::time::Duration {
        if self.live(lease) {
            rules::remaining(lease.deadline, self.0)
        } else {
            std::time::Duration::ZERO
        }
    }

    fn cell(&self, lease: &Lease) -> String {
        match (lease.owner.as_ref(), lease.deadline) {
            (None, _) => "-".to_owned(),
            (Some(_), None) => "no deadline".to_owned(),
            (Some(_), Some(_)) if self.live(lease) => {
                humantime::format_duration(std::time::Duration::from_millis(
                    u64::try_from(self.left(lease).as_millis()).unwrap_or(u64::MAX),
                ))
                .to_string()
            }
            (Some(_), Some(_)) => "expired".to_owned(),
        }
    }
}

fn position(p: Option<&Position>) -> String {
    p.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// `leases list`.
pub(crate) async fn list(
    store: &dyn Store,
    stream: Option<String>,
    owner: Option<String>,
    json: bool,
) -> Outcome {
    let stream = stream.map(StreamName::new).transpose()?;
    let owner = owner.map(WorkerId::new).transpose()?;
    let (clock, leases) = Clock::listing(store, stream.as_ref()).await?;
    let leases: Vec<Lease> = leases
        .into_iter()
        .filter(|l| owner.is_none() || l.owner == owner)
        .collect();
    if json {
        for lease in &leases {
            let mut value = serde_json::to_value(Record::from_lease(lease))
                .expect("a record always serialises");
            value["time_left_ms"] =
                serde_json::json!(u64::try_from(clock.left(lease).as_millis()).unwrap_or(u64::MAX));
            println!("{value}");
        }
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec![
            "stream",
            "shard",
            "owner",
            "token",
            "time left",
            "checkpoint",
            "pending",
            "parents",
            "claim",
            "switches",
        ]);
        for l in &leases {
            table.add_row(vec![
                l.key.stream.to_string(),
                l.key.shard.to_string(),
                l.owner.as_ref().map_or("-".to_owned(), ToString::to_string),
                l.token.to_string(),
                clock.cell(l),
                position(l.checkpoint.as_ref()),
                position(l.pending_checkpoint.as_ref()),
                if l.parents.is_empty() {
                    "-".to_owned()
                } else {
                    l.parents
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
                l.claim.as_ref().map_or("-".to_owned(), ToString::to_string),
                l.owner_switches_since_checkpoint.to_string(),
            ]);
        }
        println!("{table}");
    }
    let summary = summary(&leases, &clock);
    if json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// The summary line: leases, held, free, expired, finished, per worker.
pub(crate) fn summary(leases: &[Lease], clock: &Clock) -> String {
    let held = leases.iter().filter(|l| l.owner.is_some()).count();
    let finished = leases
        .iter()
        .filter(|l| l.checkpoint == Some(Position::ShardEnd))
        .count();
    let expired = leases
        .iter()
        .filter(|l| l.owner.is_some() && !clock.live(l))
        .count();
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for l in leases {
        if let Some(o) = &l.owner {
            *per_worker.entry(o.as_str()).or_default() += 1;
        }
    }
    let workers = if per_worker.is_empty() {
        "none".to_owned()
    } else {
        per_worker
            .iter()
            .map(|(w, n)| format!("{w}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{} leases: {held} held, {} free, expired: {expired}, {finished} finished; per worker: {workers}",
        leases.len(),
        leases.len() - held,
    )
}

/// `leases show`: every field of one record.
pub(crate) async fn show(store: &dyn Store, stream: &str, shard: &str) -> Outcome {
    let key = LeaseKey::parse(stream, shard)?;
    let (clock, leases) = Clock::listing(store, Some(&key.stream)).await?;
    let lease = leases
        .into_iter()
        .find(|l| l.key == key)
        .ok_or_else(|| checkpoint_core::Error::lease_not_found(&key))?;
    let opt = |w: &Option<WorkerId>| w.as_ref().map_or("-".to_owned(), ToString::to_string);
    println!("lease        {}", lease.key);
    println!("owner        {}", opt(&lease.owner));
    println!("token        {}", lease.token);
    println!(
        "deadline     {} (store clock)",
        lease.deadline.map_or("-".to_owned(), deadline_text)
    );
    println!("time left    {}", clock.cell(&lease));
    println!("checkpoint   {}", position(lease.checkpoint.as_ref()));
    println!(
        "pending      {}",
        position(lease.pending_checkpoint.as_ref())
    );
    println!(
        "parents      {}",
        if lease.parents.is_empty() {
            "-".to_owned()
        } else {
            lease
                .parents
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("claim        {}", opt(&lease.claim));
    println!("switches     {}", lease.owner_switches_since_checkpoint);
    Ok(())
}

/// `workers list`: one live worker per line, then a count.
pub(crate) async fn workers(store: &dyn Store) -> Outcome {
    let workers = store.live_workers().await?;
    for w in &workers {
        println!("{w}");
    }
    println!("{} live worker(s)", workers.len());
    Ok(())
}
