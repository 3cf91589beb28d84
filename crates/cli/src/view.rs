//! Read-only commands: `leases list`, `leases show`, `workers list`.
//!
//! Time left is judged by the store's clock, never by this host's: for a store on the host
//! clock (SQLite, memory: the one host that runs the store) the deadline is compared with
//! it; for a server clock (PostgreSQL, Redis) or a client clock with skew (DynamoDB) the
//! contract gives no store-clock reading, so the deadline is shown as stored, labelled so,
//! and expiry is not judged.

use std::collections::BTreeMap;
use std::time::SystemTime;

use checkpoint_core::{ClockSource, Lease, LeaseKey, Position, Store, StreamName, WorkerId, rules};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::Outcome;
use crate::record::{Record, deadline_text};

/// How a listing judges time.
pub(crate) enum Clock {
    /// The store runs on this host's clock: time left is computed against it at this instant.
    Host(SystemTime),
    /// The store's clock is not readable through the contract: deadlines as stored.
    NotExposed,
}

impl Clock {
    pub(crate) fn of(store: &dyn Store) -> Self {
        match store.capabilities().clock {
            ClockSource::Host => Self::Host(SystemTime::now()),
            ClockSource::Server | ClockSource::Client { .. } | ClockSource::Observed => {
                Self::NotExposed
            }
        }
    }

    /// Whether `lease` is held and live; `None` when it is held and this cannot be judged.
    pub(crate) fn live(&self, lease: &Lease) -> Option<bool> {
        match (self, &lease.owner) {
            (_, None) => Some(false),
            (Self::Host(now), Some(_)) => Some(lease.is_live_at(*now)),
            (Self::NotExposed, Some(_)) => None,
        }
    }

    fn header(&self) -> &'static str {
        match self {
            Self::Host(_) => "time left",
            Self::NotExposed => "deadline (as stored)",
        }
    }

    fn cell(&self, lease: &Lease) -> String {
        match (self, lease.owner.as_ref(), lease.deadline) {
            (_, None, _) => "-".to_owned(),
            (_, Some(_), None) => "no deadline".to_owned(),
            (Self::Host(now), Some(_), Some(d)) if lease.is_live_at(*now) => {
                let left = rules::remaining(Some(d), *now);
                humantime::format_duration(std::time::Duration::from_millis(
                    u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                ))
                .to_string()
            }
            (Self::Host(_), Some(_), Some(_)) => "expired".to_owned(),
            (Self::NotExposed, Some(_), Some(d)) => deadline_text(d),
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
    let clock = Clock::of(store);
    let leases: Vec<Lease> = store
        .list_leases(stream.as_ref())
        .await?
        .into_iter()
        .filter(|l| owner.is_none() || l.owner == owner)
        .collect();
    if json {
        for lease in &leases {
            let mut value = serde_json::to_value(Record::from_lease(lease))
                .expect("a record always serialises");
            let left = match &clock {
                Clock::Host(now) if clock.live(lease) == Some(true) => {
                    serde_json::json!(rules::remaining(lease.deadline, *now).as_millis() as u64)
                }
                Clock::Host(_) => serde_json::json!(0),
                Clock::NotExposed => serde_json::Value::Null,
            };
            value["time_left_ms"] = left;
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
            clock.header(),
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
    let expired = match clock {
        Clock::Host(_) => leases
            .iter()
            .filter(|l| clock.live(l) == Some(false) && l.owner.is_some())
            .count()
            .to_string(),
        Clock::NotExposed => "not judged (store clock not exposed)".to_owned(),
    };
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
    let lease = store
        .fetch_checkpoint(&key)
        .await?
        .ok_or_else(|| checkpoint_core::Error::lease_not_found(&key))?;
    let clock = Clock::of(store);
    let opt = |w: &Option<WorkerId>| w.as_ref().map_or("-".to_owned(), ToString::to_string);
    println!("lease        {}", lease.key);
    println!("owner        {}", opt(&lease.owner));
    println!("token        {}", lease.token);
    println!(
        "deadline     {} (as stored)",
        lease.deadline.map_or("-".to_owned(), deadline_text)
    );
    if let Clock::Host(_) = clock {
        println!("time left    {}", clock.cell(&lease));
    }
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
