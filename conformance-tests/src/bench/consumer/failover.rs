//! Failover after `SIGKILL`: a child process and a worker here share 8 leases, the child is
//! killed, and the time until the worker here holds all 8 is split into what the store's clock
//! decides (the killed worker's leases expiring) and what the runtime adds after that (noticing
//! the expiry, listing, one grant per lease).

use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_consumer::{MemoryStream, Worker, WorkerConfig};
use checkpoint_core::{LeaseKey, Store, StreamName, WorkerId};

use super::child::{ChildArgs, ChildWorker};
use super::counting::{Calls, Counting};
use super::{Checkpointing, Progress, SHARDS, wait_for};
use crate::measure::BoxError;
use crate::{Backend, Settings};

/// What one trial saw, every time counted from the `SIGKILL`.
#[derive(Clone, Copy, Debug)]
struct Trial {
    /// Until the surviving worker held all 8 leases.
    total: Duration,
    /// Until the killed worker's last lease expired by the store's clock: the latest deadline
    /// of its leases in two listings, just after the kill and 250 ms later (a renewal the
    /// killed process had sent may still be executed by the server after the kill), as time
    /// left after the listing's store-clock instant, added to the local time the listing was
    /// sent (so it may be short by that request's transit).
    expiry: Duration,
    /// From the expiry until the survivor's first take pass (its `list_leases_timed`) at or
    /// after it; `None` if no pass started after the expiry.
    wake: Option<Duration>,
    /// Take passes started from the expiry until all 8 were held.
    passes: usize,
    /// `get_lease` calls the survivor sent after the kill.
    grants: usize,
}

/// The latest time left, after the kill, on a lease of `victim` in a listing of `stream`.
async fn expiry_after(
    store: &Arc<dyn Store>,
    stream: &StreamName,
    victim: &WorkerId,
    killed: Instant,
) -> Result<Duration, BoxError> {
    let sent = killed.elapsed();
    let listing = store.list_leases_timed(Some(stream)).await?;
    let left = listing
        .leases
        .iter()
        .filter(|l| l.owner.as_ref() == Some(victim))
        .map(|l| listing.remaining(l))
        .max()
        .unwrap_or_default();
    Ok(sent + left)
}

/// One failover: the child takes 8 leases, a worker here balances to 4, the child is killed.
async fn failover_once(
    url: &str,
    store: &Arc<dyn Store>,
    trial: usize,
    lease: Duration,
    renew: Duration,
) -> Result<Trial, BoxError> {
    let stream = format!("failover-{trial}");
    let args = ChildArgs {
        url: url.to_owned(),
        app: store.app().to_string(),
        worker: format!("victim-{trial}"),
        stream: stream.clone(),
        shards: SHARDS,
        lease_ms: lease.as_millis() as u64,
        renew_ms: renew.as_millis() as u64,
    };
    let victim = WorkerId::new(&args.worker)?;
    let stream = StreamName::new(&stream)?;
    let child = ChildWorker::spawn(&args)?;
    if let Err(e) = wait_for(Duration::from_secs(120), || child.state().0 >= SHARDS).await {
        child.kill()?;
        return Err(format!("the victim did not take {SHARDS} leases: {e}").into());
    }
    let calls = Arc::new(Calls::logged());
    let survivor = Worker::new(
        WorkerId::new(format!("survivor-{trial}"))?,
        Arc::new(Counting {
            inner: store.clone(),
            calls: calls.clone(),
        }),
        Arc::new(MemoryStream::new(stream.clone(), SHARDS)?),
        |_: &LeaseKey| Checkpointing(Arc::new(Progress::default())),
        WorkerConfig::builder()
            .with_lease_duration(lease)
            .with_renew_interval(renew)
            .with_max_leases_per_tick(SHARDS)
            .build()?,
    )
    .spawn();
    let balanced = wait_for(Duration::from_secs(120), || {
        survivor.held_leases().len() >= SHARDS / 2
    })
    .await;
    let killed = Instant::now();
    child.kill()?;
    let outcome = async {
        balanced.map_err(|e| format!("the survivor never held half the leases: {e}"))?;
        let first = expiry_after(store, &stream, &victim, killed).await?;
        tokio::time::sleep_until((killed + Duration::from_millis(250)).into()).await;
        let expiry = first.max(expiry_after(store, &stream, &victim, killed).await?);
        wait_for(Duration::from_secs(120), || {
            survivor.held_leases().len() >= SHARDS
        })
        .await?;
        let total = killed.elapsed();
        let expired = killed + expiry;
        let done = killed + total;
        let passes: Vec<Instant> = calls
            .times_of("list_leases_timed")
            .into_iter()
            .filter(|t| (expired..=done).contains(t))
            .collect();
        let grants = calls
            .times_of("get_lease")
            .into_iter()
            .filter(|t| *t >= killed)
            .count();
        if std::env::var_os("BENCH_FAILOVER_TRACE").is_some() {
            trace(trial, killed, expiry, total, &calls);
        }
        Ok::<_, BoxError>(Trial {
            total,
            expiry,
            wake: passes.first().map(|t| *t - expired),
            passes: passes.len(),
            grants,
        })
    }
    .await;
    survivor.abort().await;
    outcome
}

/// Prints (to stderr) the survivor's calls from the kill to the end, in ms after the kill
/// (`BENCH_FAILOVER_TRACE` set): where a slow trial's time went.
fn trace(trial: usize, killed: Instant, expiry: Duration, total: Duration, calls: &Calls) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "trial {trial}: expiry {:.1} ms, all held {:.1} ms after the kill",
        ms(expiry),
        ms(total)
    );
    for c in calls.log().iter().filter(|c| c.start + c.took >= killed) {
        let at = c.start.saturating_duration_since(killed);
        eprintln!(
            "  {:8.1} ms  {:24} {:7.1} ms",
            ms(at),
            c.operation,
            ms(c.took)
        );
    }
}

/// The median and the largest of `values` (zero for none).
fn median_worst(mut values: Vec<Duration>) -> (Duration, Duration) {
    values.sort();
    let median = values.get(values.len() / 2).copied().unwrap_or_default();
    (median, values.last().copied().unwrap_or_default())
}

/// Measures and prints the failover table.
pub(crate) async fn table(backends: &[Backend], settings: &Settings) -> Result<(), BoxError> {
    let (trials, lease, renew) = if settings.quick {
        (2, Duration::from_millis(1_000), Duration::from_millis(250))
    } else {
        (10, Duration::from_millis(2_000), Duration::from_millis(500))
    };
    println!(
        "\nFailover after SIGKILL of a worker process holding 4 of 8 leases (lease {lease:?}, renew interval {renew:?}), {trials} trials: time until the surviving worker holds all 8 (median, worst), split into the expiry of the killed worker's last lease by the store's clock and what follows it (the survivor noticing the expiry, listing, one grant per lease); take passes: the survivor's listings from the expiry to the end (most in one trial), grants: its get_lease calls after the kill (most).\n"
    );
    println!(
        "| backend | median ms | worst ms | expiry after kill, median ms | worst ms | expiry to first take pass, worst ms | expiry to all held, median ms | worst ms | take passes | grants | bound ms | within bound |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for b in backends.iter().filter(|b| b.consumer) {
        let Some(url) = &b.url else { continue };
        // The bound, counted from the kill. The killed worker's last renewal was sent before
        // the kill, so its leases expire by the store's clock at most one lease duration after
        // the kill (plus the skew allowance of a store on client clocks; on DynamoDB the
        // survivor's handle observes a lease unchanged for one lease duration from a listing,
        // one per renew interval: one renew interval more). The survivor wakes at that expiry
        // (5 ms after it) and takes all 8 in one pass (`max_leases_per_tick` is 8 here, and the
        // pass sends its grants together), or at worst at its next tick, within one renew
        // interval, if that pass failed: lease duration + renew interval, as
        // `WorkerConfig::failover_bound` promises, provided the store answers well within the
        // renew interval. What the store's own latency adds shows in the columns "expiry to all
        // held" (listing and grants) and "expiry to first take pass" (a stalled call before the
        // wake).
        let caps = b.store.capabilities();
        let mut bound = lease + renew + caps.clock.skew_allowance();
        if caps.backend == "dynamodb" {
            bound += renew;
        }
        let mut seen = Vec::new();
        for trial in 0..trials {
            seen.push(
                failover_once(url, &b.store, trial, lease, renew)
                    .await
                    .map_err(|e| format!("{} failover {trial}: {e}", b.name))?,
            );
        }
        let (med, worst) = median_worst(seen.iter().map(|t| t.total).collect());
        let (exp_med, exp_worst) = median_worst(seen.iter().map(|t| t.expiry).collect());
        let (_, wake_worst) = median_worst(seen.iter().filter_map(|t| t.wake).collect());
        let (after_med, after_worst) = median_worst(
            seen.iter()
                .map(|t| t.total.saturating_sub(t.expiry))
                .collect(),
        );
        let passes = seen.iter().map(|t| t.passes).max().unwrap_or_default();
        let grants = seen.iter().map(|t| t.grants).max().unwrap_or_default();
        let ms = |d: Duration| d.as_millis();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {passes} | {grants} | {} | {} |",
            b.name,
            ms(med),
            ms(worst),
            ms(exp_med),
            ms(exp_worst),
            ms(wake_worst),
            ms(after_med),
            ms(after_worst),
            ms(bound),
            if worst <= bound { "yes" } else { "no" }
        );
    }
    Ok(())
}
