//! The Redis backend on a Redis Cluster under failover and resharding. Each test starts a
//! private cluster of its own (three masters, three replicas: `redis-server --cluster-enabled
//! yes` on six free loopback ports, `redis-cli --cluster create`), so that killing a master or
//! moving a slot never disturbs the shared cluster of `CHECKPOINT_REDIS_CLUSTER_URL`; the tests
//! are registered under that cluster's reachability (ignored when it is not configured, failed
//! in strict mode), and need `redis-server` and `redis-cli` on the `PATH`.
//!
//! - a checkpoint loop while the replica of the master owning the app's slot takes over with
//!   `CLUSTER FAILOVER` (coordinated: nothing acknowledged may be lost);
//! - a checkpoint loop while that master is killed with `SIGKILL`, with and without `WAIT`:
//!   every call returns, is retried or fails retryable; a stale fencing token never wins; with
//!   `WAIT 1` no acknowledged checkpoint is lost, without it the loss is measured and printed;
//!   the cost of `WAIT` per checkpoint is measured first;
//! - the app's slot migrated to another master (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`,
//!   `MIGRATE ... KEYS`, `CLUSTER SETSLOT ... NODE`) while workers take, checkpoint and release
//!   leases: nothing acknowledged is lost and no fencing token is granted twice.

#[path = "support/cluster.rs"]
mod private_cluster;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Backoff, Checkpointer, Error, FencingToken, LeaseDuration, LeaseKey, LeaseManager, Position,
    WorkerId,
};
use checkpoint_redis::{RedisConfig, RedisStore};
use private_cluster::{NodeLine, PrivateCluster, cluster_nodes, node, owner_of, until};

fn seq(n: u64) -> Position {
    Position::sequence(&n.to_string()).expect("a sequence number")
}

/// The sequence number of a position.
fn number(position: &Position) -> Option<u64> {
    match position {
        Position::Sequence { sequence, .. } => sequence.as_str().parse().ok(),
        _ => None,
    }
}

fn patient() -> Backoff {
    Backoff {
        max_attempts: 20,
        budget: Duration::from_secs(10),
        ..Backoff::default()
    }
}

/// A stale holder's checkpoint must never be accepted: `LeaseLost`, or a retryable error
/// while the cluster recovers.
async fn stale_is_refused(
    store: &RedisStore,
    key: &LeaseKey,
    stale: &WorkerId,
    token: FencingToken,
) {
    match store
        .checkpoint_sequence(key, stale, token, &seq(u64::MAX / 2))
        .await
    {
        Err(Error::LeaseLost { .. }) => {}
        Err(e) if e.is_retryable() => {}
        other => panic!("a stale fencing token was not refused: {other:?}"),
    }
}

/// A store whose lease on `key` was stolen from `stale` (token 1), so `stale` holds a token
/// that must stay fenced; returns the holder's id and token.
async fn held_after_steal(
    store: &RedisStore,
    key: &LeaseKey,
    stale: &WorkerId,
) -> (WorkerId, FencingToken) {
    let duration = LeaseDuration::new(Duration::from_secs(600)).expect("duration");
    let old = store
        .get_lease(key, stale, duration)
        .await
        .expect("first grant");
    let me = WorkerId::new("holder").expect("worker");
    let lease = store
        .steal(key, &me, stale, old.token, duration)
        .await
        .expect("steal");
    (me, lease.token)
}

/// (a) `CLUSTER FAILOVER` on the replica of the master owning the app's slot, under a
/// checkpoint loop: no call fails other than retryably, nothing acknowledged is lost, the
/// stale token is refused throughout.
async fn checkpoints_survive_a_coordinated_failover() {
    let cluster = PrivateCluster::start().await;
    let config = RedisConfig::from_url(&cluster.url())
        .expect("url")
        .with_backoff(patient());
    let store = RedisStore::open(config, random_app("failover"))
        .await
        .expect("open");
    let key = LeaseKey::parse("s", "shard-0").expect("key");
    let stale = WorkerId::new("stale").expect("worker");
    let (me, token) = held_after_steal(&store, &key, &stale).await;
    let (_, master, replica) = owner_of(cluster.live_ports()[0], &store.key_layout().meta()).await;
    let replica = replica.expect("the master has a replica");

    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, key, me, done, acked) = (
            store.clone(),
            key.clone(),
            me.clone(),
            done.clone(),
            acked.clone(),
        );
        tokio::spawn(async move {
            let (mut n, mut retryable) = (1u64, 0u32);
            while !done.load(Ordering::SeqCst) {
                match store.checkpoint_sequence(&key, &me, token, &seq(n)).await {
                    Ok(_) => {
                        acked.store(n, Ordering::SeqCst);
                        n += 1;
                    }
                    Err(e) if e.is_retryable() => retryable += 1,
                    Err(e) => panic!("checkpoint {n} during a failover: {e:?}"),
                }
            }
            retryable
        })
    };
    until("100 checkpoints", Duration::from_secs(30), || async {
        acked.load(Ordering::SeqCst) >= 100
    })
    .await;
    let mut conn = node(replica.port).await.expect("replica");
    let _: String = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER FAILOVER");
    until(
        "the replica becomes master",
        Duration::from_secs(30),
        || async {
            cluster_nodes(replica.port)
                .await
                .iter()
                .any(|n| n.port == replica.port && n.master)
        },
    )
    .await;
    let at_failover = acked.load(Ordering::SeqCst);
    until(
        "100 checkpoints after the failover",
        Duration::from_secs(30),
        || async { acked.load(Ordering::SeqCst) >= at_failover + 100 },
    )
    .await;
    stale_is_refused(&store, &key, &stale, FencingToken(token.0 - 1)).await;
    done.store(true, Ordering::SeqCst);
    let retryable = writer.await.expect("writer");
    let last = acked.load(Ordering::SeqCst);
    let stored = store
        .fetch_checkpoint(&key)
        .await
        .expect("fetch")
        .expect("record");
    println!(
        "CLUSTER FAILOVER ({} -> {}): {last} checkpoints acknowledged, {retryable} retryable \
         errors surfaced, stored {:?}",
        master.port, replica.port, stored.checkpoint
    );
    assert_eq!(
        stored.checkpoint,
        Some(seq(last)),
        "an acknowledged checkpoint was lost"
    );
    assert_eq!(stored.token, token);
}

/// Mean time of `n` checkpoints by one task.
async fn time_checkpoints(
    store: &RedisStore,
    key: &LeaseKey,
    me: &WorkerId,
    token: FencingToken,
    from: u64,
    n: u64,
) -> Duration {
    let started = Instant::now();
    for i in from..from + n {
        store
            .checkpoint_sequence(key, me, token, &seq(i))
            .await
            .expect("checkpoint on a healthy cluster");
    }
    started.elapsed() / u32::try_from(n).expect("small n")
}

/// (b) The master owning the app's slot killed with `SIGKILL` under eight checkpoint loops;
/// returns how many acknowledged checkpoints the promoted replica does not have (the sum over
/// the leases of the last acknowledged position minus the position read after the promotion).
async fn kill_master(wait: bool) -> u64 {
    const KEYS: u64 = 8;
    let mut cluster = PrivateCluster::start().await;
    let plain = RedisConfig::from_url(&cluster.url())
        .expect("url")
        .with_backoff(patient());
    let config = if wait {
        plain
            .clone()
            .with_wait_for_replicas(1, Duration::from_millis(500))
    } else {
        plain.clone()
    };
    let store = RedisStore::open(config, random_app("kill"))
        .await
        .expect("open");
    let stale = WorkerId::new("stale").expect("worker");
    let mut held = Vec::new();
    for i in 0..KEYS {
        let key = LeaseKey::parse("s", &format!("shard-{i}")).expect("key");
        let (me, token) = held_after_steal(&store, &key, &stale).await;
        held.push((key, me, token));
    }
    // The cost of WAIT: one task, 300 checkpoints, without WAIT and with this store's setting.
    let (key, me, token) = held[0].clone();
    let without = RedisStore::open(plain, store.app().clone())
        .await
        .expect("open");
    let no_wait = time_checkpoints(&without, &key, &me, token, 1, 300).await;
    let this = time_checkpoints(&store, &key, &me, token, 301, 300).await;
    println!(
        "checkpoint latency on the private cluster, one task, mean of 300: without WAIT \
         {no_wait:?}, {} {this:?}",
        if wait {
            "with WAIT 1"
        } else {
            "again without WAIT"
        }
    );
    let (_, master, replica) = owner_of(cluster.live_ports()[0], &store.key_layout().meta()).await;
    let replica = replica.expect("the master has a replica");

    // The writers go through a cluster client that never retries by itself and a store that
    // never retries either, so that no write is retried onto the promoted replica after the
    // kill: the promoted replica then holds exactly what replication delivered, and the loss
    // is not masked by a later write.
    let nodes: Vec<String> = cluster
        .live_ports()
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    let client = redis::cluster::ClusterClientBuilder::new(nodes)
        .retries(0)
        .build()
        .expect("cluster client");
    let mut writer_config = RedisConfig::new().with_backoff(Backoff::none());
    if wait {
        writer_config = writer_config.with_wait_for_replicas(1, Duration::from_millis(500));
    }
    let writer_store = RedisStore::from_cluster_connection(
        client
            .get_async_connection()
            .await
            .expect("cluster connection"),
        writer_config,
        store.app().clone(),
    )
    .await
    .expect("writer store");
    let done = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(600)).collect());
    let mut writers = Vec::new();
    for (i, (key, me, token)) in held.iter().cloned().enumerate() {
        let (store, done, acked) = (writer_store.clone(), done.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 601u64;
            let mut retryable = 0u32;
            while !done.load(Ordering::SeqCst) {
                match store.checkpoint_sequence(&key, &me, token, &seq(n)).await {
                    Ok(_) => {
                        acked[i].store(n, Ordering::SeqCst);
                        n += 1;
                    }
                    Err(e) if e.is_retryable() => retryable += 1,
                    Err(e) => panic!("checkpoint {n} of {key} around a master kill: {e:?}"),
                }
            }
            retryable
        }));
    }
    until("writes flowing", Duration::from_secs(30), || async {
        acked.iter().all(|a| a.load(Ordering::SeqCst) >= 700)
    })
    .await;
    // A replication link that is down, as in a network partition: the replica sleeps for
    // 800 ms (`DEBUG SLEEP`, less than the node timeout, so it stays a healthy replica) and
    // the master drops its link meanwhile (`CLIENT KILL TYPE replica`), so the replica cannot
    // reconnect before the kill. What the master acknowledges after the drop is exactly what
    // asynchronous replication can lose. The master is killed 400 ms into that window, or once
    // every writer had 20 acknowledgements in it (whichever comes first; with `WAIT` the
    // writers wait for the replica instead).
    let sleeper = tokio::spawn(async move {
        let mut conn = node(replica.port).await.expect("replica");
        let _: redis::RedisResult<String> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.8")
            .query_async(&mut conn)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut on_master = node(master.port).await.expect("master");
    let dropped: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut on_master)
        .await
        .expect("CLIENT KILL TYPE replica");
    assert_eq!(dropped, 1, "the master had one replication link");
    let window_start: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(400)
        && !acked
            .iter()
            .zip(&window_start)
            .all(|(a, s)| a.load(Ordering::SeqCst) >= s + 20)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked_in_window: u64 = acked
        .iter()
        .zip(&window_start)
        .map(|(a, s)| a.load(Ordering::SeqCst) - s)
        .sum();
    // The writers stop after the call in flight at the kill, which fails (its connection is
    // reset) or was acknowledged before the kill.
    done.store(true, Ordering::SeqCst);
    cluster.kill(master.port);
    sleeper.await.expect("DEBUG SLEEP");
    let mut surfaced = 0;
    for writer in writers {
        surfaced += writer.await.expect("writer");
    }
    until(
        "the replica is promoted",
        Duration::from_secs(30),
        || async {
            cluster_nodes(replica.port)
                .await
                .iter()
                .any(|n| n.port == replica.port && n.master && !n.slots.is_empty())
        },
    )
    .await;
    let mut lost = 0;
    for (i, (key, _, token)) in held.iter().enumerate() {
        let started = Instant::now();
        let stored = loop {
            match store.fetch_checkpoint(key).await {
                Ok(lease) => break lease,
                Err(e) if e.is_retryable() && started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("fetch after the failover: {e:?}"),
            }
        };
        let stored = stored.expect("the record survived the failover");
        assert_eq!(stored.token, *token, "a lease grant was lost on {key}");
        let position = stored
            .checkpoint
            .as_ref()
            .and_then(number)
            .expect("a sequence checkpoint");
        lost += acked[i].load(Ordering::SeqCst).saturating_sub(position);
        stale_is_refused(&store, key, &stale, FencingToken(token.0 - 1)).await;
    }
    println!(
        "SIGKILL of master {} ({}) while its replica lagged: {acked_in_window} checkpoints \
         acknowledged during the lag, {lost} acknowledged checkpoints lost over {KEYS} leases, \
         {surfaced} retryable errors surfaced to the writers",
        master.port,
        if wait { "WAIT 1" } else { "no WAIT" }
    );
    lost
}

async fn a_killed_master_loses_nothing_acknowledged_with_wait() {
    let lost = kill_master(true).await;
    assert_eq!(
        lost, 0,
        "WAIT 1 acknowledged a checkpoint the promoted replica did not have"
    );
}

async fn a_killed_master_without_wait_is_measured() {
    let lost = kill_master(false).await;
    // The link was down for the whole window, so what was acknowledged in it is gone: the
    // loss the crate docs describe for asynchronous replication.
    assert!(
        lost > 0,
        "a master killed with its replication link down lost nothing"
    );
}

/// Moves `slot` from the master `from` to the master `to` the way `redis-cli --cluster
/// reshard` does, key batch by key batch.
async fn migrate_slot(slot: u16, from: &NodeLine, to: &NodeLine, masters: &[NodeLine]) {
    let mut source = node(from.port).await.expect("source");
    let mut target = node(to.port).await.expect("target");
    let setslot = |state: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .clone()
    };
    let _: () = setslot("IMPORTING", &from.id)
        .query_async(&mut target)
        .await
        .expect("SETSLOT IMPORTING");
    let _: () = setslot("MIGRATING", &to.id)
        .query_async(&mut source)
        .await
        .expect("SETSLOT MIGRATING");
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(2)
            .query_async(&mut source)
            .await
            .expect("GETKEYSINSLOT");
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut source)
            .await
            .expect("MIGRATE");
        // Let the workers hit the half-migrated slot (ASK, TRYAGAIN) between batches.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for master in std::iter::once(to)
        .chain(std::iter::once(from))
        .chain(masters)
    {
        let mut conn = node(master.port).await.expect("master");
        let _: () = setslot("NODE", &to.id)
            .query_async(&mut conn)
            .await
            .expect("SETSLOT NODE");
    }
}

/// (c) The app's slot migrated to another master while four workers per lease take, checkpoint
/// and release six leases: every acknowledged checkpoint is stored at the end, and no fencing
/// token of a lease is ever granted to two workers.
async fn a_slot_migrates_while_workers_run() {
    const LEASES: usize = 6;
    const WORKERS: usize = 4;
    let cluster = PrivateCluster::start().await;
    let config = RedisConfig::from_url(&cluster.url())
        .expect("url")
        .with_backoff(patient());
    let store = RedisStore::open(config, random_app("reshard"))
        .await
        .expect("open");
    let keys: Vec<LeaseKey> = (0..LEASES)
        .map(|i| LeaseKey::parse("s", &format!("shard-{i}")).expect("key"))
        .collect();
    for key in &keys {
        store
            .create_lease_if_absent(key, &[], None)
            .await
            .expect("create");
    }
    let done = Arc::new(AtomicBool::new(false));
    let next: Arc<Vec<AtomicU64>> = Arc::new((0..LEASES).map(|_| AtomicU64::new(1)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..LEASES).map(|_| AtomicU64::new(0)).collect());
    let grants = Arc::new(std::sync::Mutex::new(HashMap::<(usize, u64), String>::new()));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (store, keys, done, next, acked, grants) = (
            store.clone(),
            keys.clone(),
            done.clone(),
            next.clone(),
            acked.clone(),
            grants.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let me = WorkerId::new(format!("worker-{w}")).expect("worker");
            let duration = LeaseDuration::new(Duration::from_secs(30)).expect("duration");
            let (mut checkpoints, mut retryable) = (0u64, 0u64);
            let mut round = 0usize;
            while !done.load(Ordering::SeqCst) {
                let i = (w + round) % LEASES;
                round += 1;
                let lease = match store.get_lease(&keys[i], &me, duration).await {
                    Ok(lease) => lease,
                    Err(Error::LeaseHeld { .. }) => continue,
                    Err(e) if e.is_retryable() => {
                        retryable += 1;
                        continue;
                    }
                    Err(e) => panic!("get_lease during a migration: {e:?}"),
                };
                if let Some(other) = grants
                    .lock()
                    .expect("grants")
                    .insert((i, lease.token.0), me.to_string())
                    .filter(|other| *other != me.to_string())
                {
                    panic!(
                        "token {} of lease {i} granted to {other} and {me}",
                        lease.token.0
                    );
                }
                for _ in 0..5 {
                    // Positions of one lease rise across its holders: a shared counter, taken
                    // under the lease.
                    let n = next[i].fetch_add(1, Ordering::SeqCst);
                    match store
                        .checkpoint_sequence(&keys[i], &me, lease.token, &seq(n))
                        .await
                    {
                        Ok(_) => {
                            acked[i].fetch_max(n, Ordering::SeqCst);
                            checkpoints += 1;
                        }
                        Err(e) if e.is_retryable() => retryable += 1,
                        Err(e) => panic!("checkpoint {n} of lease {i} during a migration: {e:?}"),
                    }
                }
                match store.remove_lease_owner(&keys[i], &me, lease.token).await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => retryable += 1,
                    Err(e) => panic!("release during a migration: {e:?}"),
                }
            }
            (checkpoints, retryable)
        }));
    }
    until(
        "work before the migration",
        Duration::from_secs(30),
        || async { acked.iter().all(|a| a.load(Ordering::SeqCst) > 10) },
    )
    .await;
    let asker = cluster.live_ports()[0];
    let (slot, from, _) = owner_of(asker, &store.key_layout().meta()).await;
    let masters: Vec<NodeLine> = cluster_nodes(asker)
        .await
        .into_iter()
        .filter(|n| n.master)
        .collect();
    let to = masters
        .iter()
        .find(|n| n.id != from.id)
        .cloned()
        .expect("another master");
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    migrate_slot(slot, &from, &to, &masters).await;
    until(
        "work after the migration",
        Duration::from_secs(30),
        || async {
            acked
                .iter()
                .zip(&before)
                .all(|(a, b)| a.load(Ordering::SeqCst) > b + 10)
        },
    )
    .await;
    done.store(true, Ordering::SeqCst);
    let (mut total, mut surfaced) = (0, 0);
    for task in tasks {
        let (checkpoints, retryable) = task.await.expect("worker");
        total += checkpoints;
        surfaced += retryable;
    }
    let (_, owner, _) = owner_of(asker, &store.key_layout().meta()).await;
    assert_eq!(owner.id, to.id, "the slot moved to the target");
    let mut stored_positions = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let lease = store
            .fetch_checkpoint(key)
            .await
            .expect("fetch")
            .expect("record");
        let stored = lease.checkpoint.as_ref().and_then(number).unwrap_or(0);
        // A checkpoint that failed retryably may still have been applied, so the stored
        // position may pass the last acknowledged one, never fall short of it.
        assert!(
            stored >= acked[i].load(Ordering::SeqCst),
            "lease {i}: stored {stored}, acknowledged {}",
            acked[i].load(Ordering::SeqCst)
        );
        stored_positions.insert(i, stored);
    }
    println!(
        "slot {slot} moved {} -> {} under {WORKERS} workers: {total} checkpoints acknowledged, \
         {} grants, {surfaced} retryable errors surfaced, stored positions {stored_positions:?}",
        from.port,
        to.port,
        grants.lock().expect("grants").len()
    );
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::RedisCluster,
    tests: [
        checkpoints_survive_a_coordinated_failover,
        a_killed_master_loses_nothing_acknowledged_with_wait,
        a_killed_master_without_wait_is_measured,
        a_slot_migrates_while_workers_run,
    ],
}
