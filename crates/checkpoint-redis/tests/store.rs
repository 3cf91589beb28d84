//! Redis-specific behaviour the conformance suite cannot see: the key layout and its hash tag,
//! server-clock deadlines, listing without `KEYS` or `SCAN`, redacted secrets, hand-edited
//! records reported as corrupt, and an incompatible existing layout reported as a mismatch.

mod common;

use std::time::Duration;

use checkpoint_core::conformance::random_app;
use checkpoint_core::{
    Checkpointer, Error, ErrorKind, HeartbeatTtl, LeaseDuration, LeaseKey, LeaseManager,
    Membership, Position, StreamName, WorkerId,
};
use checkpoint_redis::{RedisConfig, RedisStore};
use futures::StreamExt;

fn long() -> LeaseDuration {
    LeaseDuration::new(Duration::from_secs(120)).expect("duration")
}

async fn type_of(admin: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    redis::cmd("TYPE")
        .arg(key)
        .query_async(admin)
        .await
        .expect("TYPE")
}

/// Every key of an app carries `{<app>}` as its hash tag (so one Cluster slot), has the
/// documented type, and deadlines and heartbeat expiries are server-clock milliseconds.
async fn key_layout_shares_the_app_hash_tag_and_uses_the_server_clock() {
    let app = random_app("layout");
    let Some(store) = common::open(common::config(), app.clone()).await else {
        return;
    };
    let mut admin = common::admin().await;
    let keys = store.key_layout().clone();
    let tag = format!("{{{app}}}");
    assert_eq!(keys.hash_tag(), tag);
    let key = LeaseKey::parse("orders", "shard-7").unwrap();
    let w = WorkerId::new("w").unwrap();
    store
        .get_lease(&key, &w, LeaseDuration::from_millis(30_000).unwrap())
        .await
        .unwrap();
    store
        .register_worker(&w, HeartbeatTtl::from_millis(60_000).unwrap())
        .await
        .unwrap();
    let now = common::server_ms(&mut admin).await;

    let lease_key = keys.lease(&key);
    for (name, expected) in [
        (lease_key.clone(), "hash"),
        (keys.index(), "zset"),
        (keys.workers(), "zset"),
        (keys.meta(), "hash"),
    ] {
        assert!(
            name.starts_with(&format!("ckpt:{tag}:")),
            "{name} is outside the app's hash tag"
        );
        // The hash tag is the first {...} section: exactly the app.
        let open = name.find('{').unwrap();
        let close = name.find('}').unwrap();
        assert_eq!(&name[open..=close], tag, "{name}");
        assert_eq!(type_of(&mut admin, &name).await, expected, "{name}");
    }
    assert_eq!(lease_key, format!("ckpt:{tag}:lease:orders:shard-7"));
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.index())
        .arg(0)
        .arg(-1)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(members, vec!["orders:shard-7".to_owned()]);
    let layout: Option<String> = redis::cmd("HGET")
        .arg(keys.meta())
        .arg("layout")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        layout.as_deref(),
        Some(checkpoint_redis::scripts::LAYOUT_VERSION)
    );

    let deadline: u64 = redis::cmd("HGET")
        .arg(&lease_key)
        .arg("deadline")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        deadline > now + 25_000 && deadline <= now + 30_000,
        "deadline {deadline} is not server time {now} + 30 s"
    );
    let expiry: f64 = redis::cmd("ZSCORE")
        .arg(keys.workers())
        .arg("w")
        .query_async(&mut admin)
        .await
        .unwrap();
    let expiry = expiry as u64;
    assert!(
        expiry > now + 55_000 && expiry <= now + 60_000,
        "heartbeat expiry {expiry} is not server time {now} + 60 s"
    );

    // Another app's keys carry its own tag; the prefix is configurable.
    let other = store.for_app(random_app("layout"));
    other.init().await.unwrap();
    assert_ne!(other.key_layout().hash_tag(), tag);
    let prefixed = common::open(common::config().with_prefix("tenant-1:ckpt"), app.clone())
        .await
        .unwrap();
    assert_eq!(
        prefixed.key_layout().lease(&key),
        format!("tenant-1:ckpt:{tag}:lease:orders:shard-7")
    );
    assert!(
        prefixed.fetch_checkpoint(&key).await.unwrap().is_none(),
        "another prefix must be another namespace"
    );
}

/// Listing pages through the app's index: `ZRANGEBYLEX` on the index and `HMGET` on lease
/// keys, never `KEYS` or `SCAN`; and no command of the store touches a key outside the app's
/// hash tag. Observed with `MONITOR`.
async fn listing_uses_the_index_never_keys_or_scan() {
    let app = random_app("nokeys");
    let config = common::config().with_list_page_size(7);
    let Some(store) = common::open(config, app.clone()).await else {
        return;
    };
    let tag = store.key_layout().hash_tag().to_owned();
    for i in 0..30 {
        let stream = if i % 3 == 0 { "b.x" } else { "b" };
        let key = LeaseKey::parse(stream, &format!("shard-{i:03}")).unwrap();
        store.create_lease_if_absent(&key, &[], None).await.unwrap();
    }
    let client = redis::Client::open(common::url()).unwrap();
    let monitor = client.get_async_monitor().await.expect("MONITOR");
    let sentinel = format!("end-of-{app}");
    let collector = {
        let sentinel = sentinel.clone();
        tokio::spawn(async move {
            let mut lines = Vec::new();
            let mut stream = Box::pin(monitor.into_on_message::<String>());
            while let Some(line) = stream.next().await {
                let done = line.contains(&sentinel);
                lines.push(line);
                if done {
                    break;
                }
            }
            lines
        })
    };

    let all = store.list_leases(None).await.unwrap();
    assert_eq!(all.len(), 30);
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "not sorted by key"
    );
    assert_eq!(all[0].key.stream.as_str(), "b", "'b' sorts before 'b.x'");
    let only_b = store
        .list_leases(Some(&StreamName::new("b").unwrap()))
        .await
        .unwrap();
    assert_eq!(only_b.len(), 20);
    let only_bx = store
        .list_leases(Some(&StreamName::new("b.x").unwrap()))
        .await
        .unwrap();
    assert_eq!(only_bx.len(), 10);

    let mut admin = common::admin().await;
    let _: String = redis::cmd("ECHO")
        .arg(&sentinel)
        .query_async(&mut admin)
        .await
        .unwrap();
    let lines = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("MONITOR saw the sentinel")
        .unwrap();

    let command = |line: &str| -> String {
        // `<time> [<db> <client>] "COMMAND" "arg" ...`
        line.split("] \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_ascii_uppercase()
    };
    for line in &lines {
        let cmd = command(line);
        assert!(
            cmd != "KEYS" && cmd != "SCAN",
            "a KEYS or SCAN was sent while listing: {line}"
        );
    }
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&tag)).collect();
    assert!(
        ours.iter()
            .any(|l| command(l) == "ZRANGEBYLEX" && l.contains(":leases")),
        "no ZRANGEBYLEX on the index: {ours:#?}"
    );
    // 3 pages of 7 for 'b' plus the last short page, 2 for 'b.x', 5 for all.
    let pages = ours.iter().filter(|l| command(l) == "ZRANGEBYLEX").count();
    assert_eq!(pages, 5 + 3 + 2, "pages read: {pages}");
    for line in &ours {
        let cmd = command(line);
        assert!(
            ["ZRANGEBYLEX", "HMGET"].contains(&cmd.as_str()),
            "listing sent {cmd}: {line}"
        );
        for arg in line.split('"').filter(|a| a.starts_with("ckpt:")) {
            assert!(
                arg.contains(&tag),
                "a key outside the app's hash tag: {arg}"
            );
        }
    }
}

/// Passwords never appear in `Debug`, in errors, or in the store's `Debug`.
async fn passwords_are_redacted() {
    let secret = "hunter2-s3cr3t";
    let config = common::config()
        .with_username("nobody-at-all")
        .with_password(secret);
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(secret) && shown.contains("<redacted>"),
        "{shown}"
    );
    let url = format!("redis://:{secret}@127.0.0.1:1/");
    let from_url = RedisConfig::from_url(&url).unwrap();
    assert!(!format!("{from_url:?}").contains(secret));

    // Wrong credentials: the error names no password.
    match RedisStore::open(config, random_app("auth")).await {
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(secret), "{text}");
        }
        Ok(store) => assert!(!format!("{store:?}").contains(secret)),
    }
    // A refused connection: retryable, and still no password.
    let refused = RedisStore::connect(&url, random_app("auth"))
        .await
        .unwrap_err();
    assert!(refused.is_retryable(), "{refused:?}");
    assert!(!format!("{refused} {refused:?}").contains(secret));

    let Some(store) = common::open(common::config(), random_app("dbg")).await else {
        return;
    };
    let shown = format!("{store:?}");
    assert!(
        shown.contains("RedisStore") && shown.contains("hash_tag"),
        "{shown}"
    );
}

async fn hset(admin: &mut redis::aio::MultiplexedConnection, key: &str, field: &str, value: &str) {
    let _: i64 = redis::cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(value)
        .query_async(admin)
        .await
        .unwrap();
}

fn assert_corrupt<T: std::fmt::Debug>(result: checkpoint_core::Result<T>, field: &str, what: &str) {
    match result {
        Err(Error::Corrupt { field: got, .. }) if got == field => {}
        other => panic!("{what}: expected Corrupt naming {field}, got {other:?}"),
    }
}

/// A hand-edited hash field is `Error::Corrupt` naming the field, from a fetch, from every
/// script, and from a renew-many batch, which then writes nothing at all.
async fn a_corrupt_field_is_reported_and_never_overwritten() {
    let Some(store) = common::open(common::config(), random_app("corrupt")).await else {
        return;
    };
    let mut admin = common::admin().await;
    let w = WorkerId::new("w").unwrap();
    let good = LeaseKey::parse("s", "good").unwrap();
    let bad = LeaseKey::parse("s", "bad").unwrap();
    let good_lease = store.get_lease(&good, &w, long()).await.unwrap();
    let bad_lease = store.get_lease(&bad, &w, long()).await.unwrap();
    let bad_key = store.key_layout().lease(&bad);

    let long_sequence = "1".repeat(129);
    let long_parent = "p".repeat(257);
    // Each kind of fault, and the values at the edge of the scripts' fast check of the usual
    // record shape (`usual` in src/lua/record.lua): a space inside a number, a leading zero, a
    // C1 control character in a worker id (byte 194 then 128 to 159), too many digits.
    for (field, value) in [
        ("token", "abc"),
        ("token", "-1"),
        ("token", "18446744073709551616"),
        ("token", "0123"),
        ("token", "1 2"),
        ("token", ""),
        ("owner", "a\nb"),
        ("owner", "w\u{85}"),
        ("owner", ""),
        ("deadline", "soon"),
        ("deadline", "1 2"),
        ("deadline", "00"),
        ("checkpoint", "NOPE"),
        ("checkpoint", "AT_TIMESTAMP:x"),
        ("checkpoint", ""),
        ("checkpoint", long_sequence.as_str()),
        ("checkpoint_sub", "1.5"),
        ("checkpoint_sub", "01"),
        ("parents", "a,,b"),
        ("parents", "a,"),
        ("parents", long_parent.as_str()),
        ("claim", "x\u{7f}"),
        ("claim", "x\u{9f}"),
        ("owner_switches", ""),
        ("owner_switches", "099"),
    ] {
        hset(&mut admin, &bad_key, "checkpoint", "5").await;
        hset(&mut admin, &bad_key, field, value).await;
        let what = format!("{field}={value:?}");
        assert_corrupt(
            store.fetch_checkpoint(&bad).await,
            field,
            &format!("fetch {what}"),
        );
        assert_corrupt(
            store.renew(&bad, &w, bad_lease.token, long()).await,
            field,
            &format!("renew {what}"),
        );
        assert_corrupt(
            store
                .checkpoint_sequence(&bad, &w, bad_lease.token, &Position::sequence("9").unwrap())
                .await,
            field,
            &format!("checkpoint {what}"),
        );
        assert_corrupt(
            store.get_lease(&bad, &w, long()).await,
            field,
            &format!("get_lease {what}"),
        );
        assert_corrupt(
            store.list_leases(None).await,
            field,
            &format!("list {what}"),
        );
        let before = store.fetch_checkpoint(&good).await.unwrap().unwrap();
        assert_corrupt(
            store
                .renew_many(
                    &w,
                    &[
                        (good.clone(), good_lease.token),
                        (bad.clone(), bad_lease.token),
                    ],
                    long(),
                )
                .await,
            field,
            &format!("renew_many {what}"),
        );
        assert_eq!(
            store.fetch_checkpoint(&good).await.unwrap().unwrap(),
            before,
            "a failed renew_many renewed part of the batch"
        );
        let stored: Option<String> = redis::cmd("HGET")
            .arg(&bad_key)
            .arg(field)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(value),
            "a script overwrote the corrupt {field}"
        );
        // Repair the record for the next case.
        let _: i64 = redis::cmd("HSET")
            .arg(&bad_key)
            .arg("token")
            .arg(bad_lease.token.0.to_string())
            .arg("owner")
            .arg("w")
            .arg("deadline")
            .arg("1")
            .arg("checkpoint")
            .arg("5")
            .arg("checkpoint_sub")
            .arg("0")
            .arg("parents")
            .arg("")
            .arg("owner_switches")
            .arg("0")
            .query_async(&mut admin)
            .await
            .unwrap();
        let _: i64 = redis::cmd("HDEL")
            .arg(&bad_key)
            .arg("claim")
            .query_async(&mut admin)
            .await
            .unwrap();
        store.fetch_checkpoint(&bad).await.expect("repaired");
    }

    // A worker id that is not valid UTF-8, of each kind Rust's decoder refuses: a stray byte,
    // an overlong form, a surrogate, a code point above U+10FFFF, a truncated sequence.
    let bad_owners: [&[u8]; 5] = [
        b"w\xff",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"w\xe2\x82",
    ];
    for bytes in bad_owners {
        let _: i64 = redis::cmd("HSET")
            .arg(&bad_key)
            .arg("owner")
            .arg(bytes)
            .query_async(&mut admin)
            .await
            .unwrap();
        let what = format!("owner={bytes:?}");
        assert_corrupt(
            store.fetch_checkpoint(&bad).await,
            "owner",
            &format!("fetch {what}"),
        );
        assert_corrupt(
            store.renew(&bad, &w, bad_lease.token, long()).await,
            "owner",
            &format!("renew {what}"),
        );
        let stored: Vec<u8> = redis::cmd("HGET")
            .arg(&bad_key)
            .arg("owner")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(stored, bytes, "a script overwrote the corrupt owner {what}");
        let deadline: String = redis::cmd("HGET")
            .arg(&bad_key)
            .arg("deadline")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(deadline, "1", "a script renewed a record with {what}");
    }
    hset(&mut admin, &bad_key, "owner", "w").await;
    store.fetch_checkpoint(&bad).await.expect("repaired");

    // A bad index member and a bad worker member.
    let _: i64 = redis::cmd("ZADD")
        .arg(store.key_layout().index())
        .arg(0)
        .arg("no-colon")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_corrupt(
        store.list_leases(None).await,
        "index_member",
        "index member",
    );
    let _: i64 = redis::cmd("ZADD")
        .arg(store.key_layout().workers())
        .arg("99999999999999")
        .arg("bad\nworker")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_corrupt(store.live_workers().await, "worker", "worker member");
}

/// Valid records outside the usual shape the scripts check fastest (`usual` in
/// src/lua/record.lua) are still accepted by every script, field by field: keyword and
/// timestamp checkpoints, a stored sequence number with leading zeros (compared by its value),
/// two parents, a 20-digit token, and worker ids with characters U+00A0 to U+00BF (byte 194, as the C1 controls U+0080 to U+009F
/// that the field-by-field check refuses).
async fn valid_records_outside_the_usual_shape_are_accepted() {
    let Some(store) = common::open(common::config(), random_app("unusual")).await else {
        return;
    };
    let mut admin = common::admin().await;
    let w = WorkerId::new("w\u{a9}").unwrap();
    let key = LeaseKey::parse("s", "x").unwrap();
    let lease = store.get_lease(&key, &w, long()).await.unwrap();
    let redis_key = store.key_layout().lease(&key);
    let seq = |s: &str| Position::sequence(s).unwrap();
    for (field, value) in [
        ("checkpoint", "TRIM_HORIZON"),
        ("checkpoint", "AT_TIMESTAMP:1700000000000"),
        ("parents", "a,b.c"),
        ("claim", "c\u{bf}"),
        ("claim", "c\u{20ac}\u{1d11e}"),
        ("checkpoint", "0000042"),
    ] {
        hset(&mut admin, &redis_key, field, value).await;
        let what = format!("{field}={value:?}");
        let stored = store.fetch_checkpoint(&key).await.unwrap().unwrap();
        let renewed = store.renew(&key, &w, lease.token, long()).await;
        assert!(renewed.is_ok(), "renew with {what}: {renewed:?}");
        let taken = store.get_lease(&key, &w, long()).await;
        assert_eq!(taken.map(|l| l.token).ok(), Some(lease.token), "{what}");
        assert_eq!(stored.owner.as_ref(), Some(&w), "{what}");
    }
    // The stored 0000042 is 42: 41 is behind it, 42 repeats it, 43 moves on.
    let behind = store
        .checkpoint_sequence(&key, &w, lease.token, &seq("41"))
        .await;
    assert!(
        matches!(behind, Err(Error::CheckpointRegression { .. })),
        "41 after a stored 0000042: {behind:?}"
    );
    store
        .checkpoint_sequence(&key, &w, lease.token, &seq("42"))
        .await
        .expect("42 repeats the stored 0000042");
    let moved = store
        .checkpoint_sequence(&key, &w, lease.token, &seq("43"))
        .await
        .expect("43 after 42");
    assert_eq!(moved.checkpoint, Some(seq("43")));
    // A 20-digit token (at most u64::MAX) decodes and fences like any other.
    hset(&mut admin, &redis_key, "token", "18446744073709551615").await;
    let stored = store.fetch_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(stored.token.0, u64::MAX);
    let renewed = store.renew(&key, &w, stored.token, long()).await;
    assert!(renewed.is_ok(), "renew with a 20-digit token: {renewed:?}");
    let stale = store.renew(&key, &w, lease.token, long()).await;
    assert!(
        matches!(stale, Err(Error::LeaseLost { .. })),
        "the old token is fenced: {stale:?}"
    );
}

/// An existing key of the wrong type, or a meta hash from another layout version, is a schema
/// mismatch naming the key, at init and during operations; nothing is overwritten.
async fn an_incompatible_layout_is_a_schema_mismatch() {
    let app = random_app("mismatch");
    let Some(store) = common::open(common::config(), app.clone()).await else {
        return;
    };
    let mut admin = common::admin().await;
    let keys = store.key_layout().clone();

    let _: () = redis::cmd("HSET")
        .arg(keys.meta())
        .arg("layout")
        .arg("99")
        .query_async(&mut admin)
        .await
        .unwrap();
    let err = RedisStore::open(common::config(), app.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err:?}");
    assert!(err.to_string().contains(":meta"), "{err}");

    let other = random_app("mismatch");
    let other_keys = store.for_app(other.clone()).key_layout().clone();
    let _: () = redis::cmd("SET")
        .arg(other_keys.index())
        .arg("not a sorted set")
        .query_async(&mut admin)
        .await
        .unwrap();
    let err = RedisStore::open(common::config(), other.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err:?}");
    assert!(err.to_string().contains(":leases"), "{err}");
    let kept: String = redis::cmd("GET")
        .arg(other_keys.index())
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(kept, "not a sorted set");

    // A lease key of the wrong type met during an operation (WRONGTYPE inside the script).
    let fine = common::open(common::config(), random_app("mismatch"))
        .await
        .unwrap();
    let key = LeaseKey::parse("s", "x").unwrap();
    let _: () = redis::cmd("SET")
        .arg(fine.key_layout().lease(&key))
        .arg("a string")
        .query_async(&mut admin)
        .await
        .unwrap();
    let err = fine
        .get_lease(&key, &WorkerId::new("w").unwrap(), long())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err:?}");
    assert!(!err.is_retryable());
    let err = fine.fetch_checkpoint(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err:?}");
}

/// A batch larger than one chunk is several scripts in one pipeline: every lease is renewed or
/// reported lost exactly as in one script, whichever chunk it falls in, and a corrupt record
/// fails the call while its own chunk stays unwritten.
async fn renew_many_across_chunks() {
    let Some(store) = common::open(common::config(), random_app("chunks")).await else {
        return;
    };
    let w = WorkerId::new("w").unwrap();
    let thief = WorkerId::new("thief").unwrap();
    let n = checkpoint_redis::RENEW_MANY_CHUNK * 2 + 500;
    let held: Vec<(LeaseKey, checkpoint_core::FencingToken)> = futures::stream::iter(0..n)
        .map(|i| {
            let (store, w) = (store.clone(), w.clone());
            async move {
                let key = LeaseKey::parse("s", &format!("shard-{i:05}")).unwrap();
                let lease = store.get_lease(&key, &w, long()).await.unwrap();
                (key, lease.token)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut held = held;
    held.sort();
    // One lease lost in each chunk (released, stolen, deleted), none in the last.
    let chunk = checkpoint_redis::RENEW_MANY_CHUNK;
    let released = held[3].clone();
    let stolen = held[chunk + 7].clone();
    let deleted = held[2 * chunk + 11].clone();
    store
        .remove_lease_owner(&released.0, &w, released.1)
        .await
        .unwrap();
    store
        .steal(&stolen.0, &thief, &w, stolen.1, long())
        .await
        .unwrap();
    store.remove_lease_info(&deleted.0).await.unwrap();

    let outcome = store.renew_many(&w, &held, long()).await.unwrap();
    let mut lost = vec![released.0.clone(), stolen.0.clone(), deleted.0.clone()];
    lost.sort();
    assert_eq!(outcome.lost, lost);
    assert_eq!(outcome.renewed.len(), n - 3);
    assert!(outcome.renewed.windows(2).all(|p| p[0].key < p[1].key));
    assert!(
        outcome
            .renewed
            .iter()
            .all(|l| l.owner.as_ref() == Some(&w) && !lost.contains(&l.key))
    );
    // The thief's lease was not touched.
    let after = store.fetch_checkpoint(&stolen.0).await.unwrap().unwrap();
    assert_eq!(after.owner, Some(thief));

    // A corrupt record in the second chunk: the call fails naming it, and nothing of its chunk
    // was written (a lease of that chunk keeps its deadline; other chunks may be renewed).
    let mut admin = common::admin().await;
    let bad = &held[chunk + 20];
    let _: i64 = redis::cmd("HSET")
        .arg(store.key_layout().lease(&bad.0))
        .arg("claim")
        .arg("not\tan id")
        .query_async(&mut admin)
        .await
        .unwrap();
    let neighbour = &held[chunk + 21];
    let before = store.fetch_checkpoint(&neighbour.0).await.unwrap().unwrap();
    // A longer duration than before, so a renewal of the chunk would move every deadline.
    let longer = LeaseDuration::new(Duration::from_secs(600)).unwrap();
    let err = store.renew_many(&w, &held, longer).await.unwrap_err();
    assert_eq!(err.field(), Some("claim"), "{err}");
    assert_eq!(
        store.fetch_checkpoint(&neighbour.0).await.unwrap().unwrap(),
        before
    );
}

// The tests of this file, registered with the shared harness (`harness = false`): a
// `#[test]` attribute would not run here. An unreachable server leaves them ignored.
/// `WAIT`-based durability against a server with fewer replicas than asked: every write (the
/// init script already) fails with a retryable error whose source is the
/// [`checkpoint_redis::ReplicationShortfall`], never `Ok`.
async fn wait_for_missing_replicas_is_a_retryable_shortfall() {
    let mut admin = common::admin().await;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut admin)
        .await
        .expect("INFO replication");
    let replicas: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_slaves in INFO replication");
    let config = common::config()
        .with_backoff(checkpoint_core::Backoff::none())
        .with_wait_for_replicas(replicas + 1, Duration::from_millis(50));
    let err = RedisStore::open(config, random_app("wait"))
        .await
        .expect_err("a write acknowledged by too few replicas must not succeed");
    assert!(err.is_retryable(), "{err:?}");
    let shortfall = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<checkpoint_redis::ReplicationShortfall>())
        .unwrap_or_else(|| panic!("not a ReplicationShortfall: {err:?}"));
    assert_eq!(shortfall.wanted, replicas + 1);
    assert!(
        shortfall.acknowledged <= i64::from(replicas),
        "{shortfall:?}"
    );
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Redis,
    tests: [key_layout_shares_the_app_hash_tag_and_uses_the_server_clock, listing_uses_the_index_never_keys_or_scan, passwords_are_redacted, a_corrupt_field_is_reported_and_never_overwritten, valid_records_outside_the_usual_shape_are_accepted, an_incompatible_layout_is_a_schema_mismatch, renew_many_across_chunks, wait_for_missing_replicas_is_a_retryable_shortfall],
}
