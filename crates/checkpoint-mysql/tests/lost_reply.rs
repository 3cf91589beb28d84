//! A write whose reply is lost after it committed: a loopback TCP proxy in front of the server
//! drops the server's answer to one command and closes the connection. With retries the store
//! resolves every such write against the stored record (never a second token bump, never a
//! wrong answer); without retries the error is retryable and the write is there. The proxy is
//! the shared one of `checkpoint_test_support`.

mod common;

use checkpoint_core::{Backoff, Checkpointer, FencingToken, LeaseKey, LeaseManager};
use checkpoint_mysql::{MySqlConfig, MySqlStore};
use checkpoint_test_support::{DropRule, LossyProxy, Protocol};
use common::{config, key, long, open, seq, url, worker};

async fn a_lost_reply_is_resolved_by_rereading() {
    let direct = open(config()).await;
    let upstream = {
        let u = url::Url::parse(&url()).expect("url");
        format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(3306)
        )
    };
    let proxy = LossyProxy::start(upstream, Protocol::MySql).await;
    let mut proxied_url = url::Url::parse(&url()).expect("url");
    proxied_url.set_host(Some("127.0.0.1")).expect("host");
    proxied_url.set_port(Some(proxy.port())).expect("port");
    proxied_url
        .query_pairs_mut()
        .append_pair("ssl-mode", "disabled");
    let proxied = MySqlStore::open(
        MySqlConfig::from_url(proxied_url.as_str()).expect("proxied url"),
        direct.app().clone(),
    )
    .await
    .expect("open through the proxy");
    let no_retry = MySqlStore::open(
        MySqlConfig::from_url(proxied_url.as_str())
            .expect("proxied url")
            .with_backoff(Backoff::none()),
        direct.app().clone(),
    )
    .await
    .expect("open through the proxy");
    let (k, a, b) = (key(), worker("a"), worker("b"));

    // get_lease: the lost grant is found on retry as "already ours", with the same token.
    proxy.arm(DropRule::MySqlCommit);
    let lease = proxied.get_lease(&k, &a, long()).await.expect("get_lease");
    assert_eq!(proxy.dropped(), 1, "no reply was dropped");
    assert_eq!(
        lease.token,
        FencingToken(1),
        "a retried grant bumped the token twice"
    );

    // checkpoint: the retry finds the equal position and reports the same success.
    proxy.arm(DropRule::MySqlCommit);
    let l = proxied
        .checkpoint_sequence(&k, &a, lease.token, &seq(5))
        .await
        .expect("checkpoint");
    assert_eq!(proxy.dropped(), 2);
    assert_eq!(l.checkpoint, Some(seq(5)));

    // Without retries the lost reply is a retryable error, and the write did happen.
    proxy.arm(DropRule::MySqlCommit);
    let e = no_retry
        .checkpoint_sequence(&k, &a, lease.token, &seq(6))
        .await
        .unwrap_err();
    assert_eq!(proxy.dropped(), 3);
    assert!(e.is_retryable(), "{e:?}");
    let stored = direct
        .fetch_checkpoint(&k)
        .await
        .expect("fetch")
        .expect("record");
    assert_eq!(stored.checkpoint, Some(seq(6)));

    // steal: the retry matches no row (the owner changed), and the re-read finds the steal
    // already done by this thief with the next token.
    proxy.arm(DropRule::MySqlCommit);
    let stolen = proxied
        .steal(&k, &b, &a, lease.token, long())
        .await
        .expect("steal");
    assert_eq!(proxy.dropped(), 4);
    assert_eq!(
        (stolen.owner.as_ref(), stolen.token),
        (Some(&b), lease.token.next())
    );

    // release: the re-read finds the lease free with the same token: the release happened.
    proxy.arm(DropRule::MySqlCommit);
    let released = proxied
        .remove_lease_owner(&k, &b, stolen.token)
        .await
        .expect("release");
    assert_eq!(proxy.dropped(), 5);
    assert!(released.owner.is_none() && released.token == stolen.token);

    // renew_many: the repeat renews again.
    let again = proxied.get_lease(&k, &a, long()).await.expect("get_lease");
    proxy.arm(DropRule::MySqlCommit);
    let outcome = proxied
        .renew_many(&a, &[(k.clone(), again.token)], long())
        .await
        .expect("renew_many");
    assert_eq!(proxy.dropped(), 6);
    assert_eq!(outcome.renewed.len(), 1);
    assert!(outcome.lost.is_empty());

    // create_lease_if_absent: the autocommit INSERT's reply is lost; the retry meets the
    // duplicate key, finds its own nonce, and answers that this call created the record.
    let fresh = LeaseKey::parse("orders", "shardId-000000000002").expect("key");
    proxy.arm(DropRule::MySqlExecute);
    let created = proxied
        .create_lease_if_absent(&fresh, &[], None)
        .await
        .expect("create");
    assert_eq!(proxy.dropped(), 7);
    assert!(
        created,
        "the retry of a lost create answered that it did not create"
    );
    assert!(
        !proxied
            .create_lease_if_absent(&fresh, &[], None)
            .await
            .expect("create again"),
        "a second call created it again"
    );
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::Mysql,
    tests: [
        a_lost_reply_is_resolved_by_rereading,
    ],
}
