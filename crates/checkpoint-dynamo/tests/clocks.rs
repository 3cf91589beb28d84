//! Expiry and liveness that trust no wall clock (`ClockSource::Observed`), against the server
//! named by `CHECKPOINT_DYNAMO_ENDPOINT` (a moto server; see `tests/moto_serial.py`): handles
//! whose clocks stand far apart, fresh handles, a worker re-taking its own lease, membership,
//! and stores of one table name in two regions. Clocks are injected
//! ([`checkpoint_core::ManualClock`]), so nothing here sleeps.
//!
//! ```text
//! CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000 cargo test -p checkpoint-dynamo --test clocks
//! ```

use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::conformance::{backend_unavailable, random_app};
use checkpoint_core::{
    Checkpointer, Clock, Error, ErrorKind, HeartbeatTtl, LeaseDuration, LeaseKey, LeaseManager,
    ManualClock, Membership, Position, WorkerId,
};
use checkpoint_dynamo::{DynamoConfig, DynamoStore};

const HOW: &str = "start a moto server (python tests/moto_serial.py 5000) and set \
                   CHECKPOINT_DYNAMO_ENDPOINT=http://127.0.0.1:5000";

/// The endpoint, or `None` (reported as unavailable) when unset.
fn endpoint() -> Option<String> {
    match std::env::var("CHECKPOINT_DYNAMO_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) => {
            backend_unavailable("dynamodb", HOW, &"CHECKPOINT_DYNAMO_ENDPOINT is not set");
            None
        }
    }
}

/// A config for a fresh table of this test.
fn config(endpoint: &str, prefix: &str) -> DynamoConfig {
    DynamoConfig::new(format!("{prefix}-{}", random_app("t")))
        .expect("valid table name")
        .with_endpoint(endpoint)
}

/// Opens a store, or reports the server unavailable.
async fn open(config: DynamoConfig, app: &str) -> Option<DynamoStore> {
    match DynamoStore::open(config, random_app(app)).await {
        Ok(store) => Some(store),
        Err(e) => {
            backend_unavailable("dynamodb", HOW, &e);
            None
        }
    }
}

fn key(stream: &str, shard: &str) -> LeaseKey {
    LeaseKey::parse(stream, shard).expect("valid key")
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).expect("valid worker")
}

fn secs(s: u64) -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(s)).expect("valid duration")
}

/// Opens a handle on the same table and app as `like`, with its own client and `clock`.
async fn peer(base: &DynamoConfig, like: &DynamoStore, clock: Arc<ManualClock>) -> DynamoStore {
    DynamoStore::open(base.clone().with_clock(clock), like.app().clone())
        .await
        .expect("open a peer")
}

/// Expiry trusts no wall clock (`ClockSource::Observed`): handles whose clocks stand 30 s and
/// 1 h ahead of the holder's, and 1 h behind it, never take a live lease, however far the
/// deadline the holder wrote lies in their past or future; each takes only after it has itself
/// seen `leaseCounter` unchanged for the lease duration, so after the holder stops renewing,
/// one of them takes it within the duration plus one observation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_far_apart_never_take_a_live_lease() {
    let Some(endpoint) = endpoint() else { return };
    let base = config(&endpoint, "clocks");
    let start = ManualClock::default().now();
    let on_time = Arc::new(ManualClock::new(start));
    let Some(holder) = open(base.clone().with_clock(on_time.clone()), "clocks").await else {
        return;
    };
    let mut clocks = vec![on_time];
    let mut others = Vec::new();
    for offset in [
        start + Duration::from_secs(30),
        start + Duration::from_secs(3600),
        start - Duration::from_secs(3600),
    ] {
        let clock = Arc::new(ManualClock::new(offset));
        others.push(peer(&base, &holder, clock.clone()).await);
        clocks.push(clock);
    }
    let advance = |by: Duration| {
        for clock in &clocks {
            clock.advance(by);
        }
    };
    let names = ["ahead-30s", "ahead-1h", "behind-1h"].map(worker);
    let (k, d) = (key("s", "contested"), secs(10));
    let h = worker("holder");
    let lease = holder.get_lease(&k, &h, d).await.expect("holder takes");

    let all_held = |left: Duration| {
        let (others, names, k) = (&others, &names, &k);
        async move {
            for (store, name) in others.iter().zip(names) {
                match store.get_lease(k, name, d).await {
                    Err(Error::LeaseHeld {
                        holder, remaining, ..
                    }) => {
                        assert_eq!(holder, worker("holder"), "{name}");
                        assert_eq!(remaining, left, "{name}: time left by observation");
                    }
                    other => panic!("{name}: expected LeaseHeld, got {other:?}"),
                }
            }
        }
    };
    // First sighting: a whole duration left, whatever each clock says.
    all_held(Duration::from_secs(10)).await;
    // The holder renews every 6 s for a minute: the counter moves, nobody takes it.
    for _ in 0..10 {
        advance(Duration::from_secs(6));
        holder.renew(&k, &h, lease.token, d).await.expect("renew");
        all_held(Duration::from_secs(10)).await;
    }
    // The holder stops. 9 s later it is still held...
    advance(Duration::from_secs(9));
    all_held(Duration::from_secs(1)).await;
    // ...and 1 s after that each handle has seen the counter stand still for 10 s.
    advance(Duration::from_secs(1));
    let taken = others[0]
        .get_lease(&k, &names[0], d)
        .await
        .expect("taken after the duration, as observed");
    assert_eq!(taken.token, lease.token.next());
    assert_eq!(
        holder
            .checkpoint_sequence(&k, &h, lease.token, &Position::Latest)
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::LeaseLost),
        "the old holder is fenced"
    );
    for (store, name) in others.iter().zip(&names).skip(1) {
        match store.get_lease(&k, name, d).await {
            Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, names[0]),
            other => panic!("{name}: expected LeaseHeld by the new owner, got {other:?}"),
        }
    }
}

/// A fresh handle must watch a lease for one duration before it may take it, even when the
/// holder's last renewal (by any wall clock) is long past: only what it observed counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_handle_watches_for_one_duration() {
    let Some(endpoint) = endpoint() else { return };
    let base = config(&endpoint, "fresh");
    let clock = Arc::new(ManualClock::default());
    let Some(holder) = open(base.clone().with_clock(clock.clone()), "fresh").await else {
        return;
    };
    let (k, d) = (key("s", "k"), secs(10));
    holder
        .get_lease(&k, &worker("dead"), d)
        .await
        .expect("take");
    clock.advance(Duration::from_secs(3600));
    let fresh = peer(&base, &holder, clock.clone()).await;
    let me = worker("fresh");
    assert_eq!(
        fresh
            .get_lease(&k, &me, d)
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::LeaseHeld),
        "an hour after the holder's deadline, but first seen now"
    );
    clock.advance(Duration::from_secs(10));
    fresh
        .get_lease(&k, &me, d)
        .await
        .expect("taken one duration later");
}

/// A worker re-taking its own lease keeps its token (the reference rule), live or expired,
/// from the handle that took it or from a fresh one; only a different worker bumps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_lease_is_retaken_with_its_token() {
    let Some(endpoint) = endpoint() else { return };
    let base = config(&endpoint, "own");
    let clock = Arc::new(ManualClock::default());
    let Some(first) = open(base.clone().with_clock(clock.clone()), "own").await else {
        return;
    };
    let (k, d, me) = (key("s", "k"), secs(10), worker("me"));
    let lease = first.get_lease(&k, &me, d).await.expect("take");
    clock.advance(Duration::from_secs(3));
    let again = first
        .get_lease(&k, &me, d)
        .await
        .expect("live, same handle");
    assert_eq!(again.token, lease.token);
    let restarted = peer(&base, &first, clock.clone()).await;
    let again = restarted
        .get_lease(&k, &me, d)
        .await
        .expect("live, fresh handle");
    assert_eq!(again.token, lease.token);
    clock.advance(Duration::from_secs(60));
    let again = first
        .get_lease(&k, &me, d)
        .await
        .expect("expired, same handle");
    assert_eq!(again.token, lease.token);
    clock.advance(Duration::from_secs(60));
    let another = peer(&base, &first, clock.clone()).await;
    let again = another
        .get_lease(&k, &me, d)
        .await
        .expect("expired, fresh handle");
    assert_eq!(again.token, lease.token);
    clock.advance(Duration::from_secs(60));
    let other = peer(&base, &first, clock.clone()).await;
    other
        .get_lease(&k, &worker("other"), d)
        .await
        .expect_err("first sighting");
    clock.advance(Duration::from_secs(10));
    let taken = other
        .get_lease(&k, &worker("other"), d)
        .await
        .expect("another worker after expiry");
    assert_eq!(taken.token, lease.token.next());
}

/// Membership by observation: a worker is live until this handle has seen its
/// `heartbeatCounter` unchanged for its TTL, whatever the two clocks say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_judged_by_observation() {
    let Some(endpoint) = endpoint() else { return };
    let base = config(&endpoint, "members");
    let start = ManualClock::default().now();
    let behind = Arc::new(ManualClock::new(start - Duration::from_secs(3600)));
    let ahead = Arc::new(ManualClock::new(start + Duration::from_secs(3600)));
    let Some(member) = open(base.clone().with_clock(behind.clone()), "members").await else {
        return;
    };
    let observer = peer(&base, &member, ahead.clone()).await;
    let advance = |by: Duration| {
        behind.advance(by);
        ahead.advance(by);
    };
    let (w, ttl) = (
        worker("w"),
        HeartbeatTtl::new(Duration::from_secs(10)).expect("valid"),
    );
    member.register_worker(&w, ttl).await.expect("register");
    assert_eq!(
        observer.live_workers().await.expect("live"),
        vec![w.clone()]
    );
    for _ in 0..5 {
        advance(Duration::from_secs(8));
        member.heartbeat(&w, ttl).await.expect("heartbeat");
        assert_eq!(
            observer.live_workers().await.expect("live"),
            vec![w.clone()]
        );
    }
    assert_eq!(observer.prune_dead_workers().await.expect("prune"), 0);
    advance(Duration::from_secs(9));
    assert_eq!(
        observer.live_workers().await.expect("live"),
        vec![w.clone()]
    );
    advance(Duration::from_secs(1));
    assert_eq!(
        observer.live_workers().await.expect("live"),
        Vec::<WorkerId>::new()
    );
    assert_eq!(observer.prune_dead_workers().await.expect("prune"), 1);
    assert_eq!(
        member.heartbeat(&w, ttl).await.map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
}

/// Two stores for one table name in two regions of one endpoint (two tables) share no gate
/// and no observation: many handles polling a lease held in one region never make a free
/// lease of the same name in the other region look held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_table_name_elsewhere_shares_nothing() {
    let Some(endpoint) = endpoint() else { return };
    let east = config(&endpoint, "regions").with_region("us-east-1");
    let west = DynamoConfig::new(east.table())
        .expect("valid")
        .with_endpoint(&endpoint)
        .with_region("eu-west-1");
    let Some(holder) = open(east.clone(), "regions").await else {
        return;
    };
    let app = holder.app().clone();
    let (k, d) = (key("s", "k"), secs(60));
    holder
        .get_lease(&k, &worker("east"), d)
        .await
        .expect("east takes");
    for round in 0..5 {
        let mut pollers = Vec::new();
        for i in 0..4 {
            let store = DynamoStore::open(east.clone(), app.clone())
                .await
                .expect("open east");
            let k = k.clone();
            pollers.push(tokio::spawn(async move {
                store
                    .get_lease(&k, &worker(&format!("poller-{i}")), d)
                    .await
            }));
        }
        let other = DynamoStore::open(west.clone(), app.clone())
            .await
            .expect("open west");
        let k2 = key("s", &format!("k{round}"));
        // The same key in the west table, created fresh each round.
        let west_k = if round == 0 { k.clone() } else { k2 };
        let taken = other
            .get_lease(&west_k, &worker("west"), d)
            .await
            .expect("the west table's lease is free");
        assert_eq!(taken.owner, Some(worker("west")));
        for p in pollers {
            assert_eq!(
                p.await.expect("joined").map_err(|e| e.kind()).err(),
                Some(ErrorKind::LeaseHeld)
            );
        }
    }
}
