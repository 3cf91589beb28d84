//! A write whose reply is lost after it committed: a loopback TCP proxy in front of the server
//! drops the server's answer to one command and closes the connection. With retries the store
//! resolves every such write against the stored record (never a second token bump, never a
//! wrong answer); without retries the error is retryable and the write is there.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use checkpoint_core::{Backoff, Checkpointer, FencingToken, LeaseKey, LeaseManager};
use checkpoint_mysql::{MySqlConfig, MySqlStore};
use common::{config, key, long, open, seq, url, worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `COM_QUERY`: a text statement (sqlx sends `BEGIN`, `COMMIT` and `ROLLBACK` this way).
const COM_QUERY: u8 = 0x03;
/// `COM_STMT_EXECUTE`: the execution of a prepared statement.
const COM_STMT_EXECUTE: u8 = 0x17;

/// Which command's reply the armed proxy drops.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Drop {
    /// Nothing.
    Off = 0,
    /// The reply to the next `COMMIT`: the transaction is durable, its answer lost.
    Commit = 1,
    /// The reply to the next prepared statement execution (an autocommit write).
    Execute = 2,
}

/// The proxy. Needs `ssl-mode=disabled`, so every packet is readable.
struct LossyProxy {
    port: u16,
    armed: Arc<AtomicU8>,
    dropped: Arc<AtomicUsize>,
}

impl LossyProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicU8::new(Drop::Off as u8));
        let dropped = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let (armed, dropped) = (armed.clone(), dropped.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    // Set by the command forwarder before it passes the chosen command on: the
                    // next bytes from the server are its reply.
                    let cut = Arc::new(AtomicBool::new(false));
                    tokio::spawn(forward_commands(
                        client_read,
                        server_write,
                        armed.clone(),
                        cut.clone(),
                    ));
                    tokio::spawn(forward_replies(
                        server_read,
                        client_write,
                        cut,
                        dropped.clone(),
                    ));
                }
            }
        });
        Self {
            port,
            armed,
            dropped,
        }
    }

    fn arm(&self, mode: Drop) {
        self.armed.store(mode as u8, Ordering::SeqCst);
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// Copies client packets (3-byte little-endian length, sequence number, payload) to the server.
/// A command is a packet with sequence number 0; when it is the armed kind, `cut` is set before
/// it is passed on.
async fn forward_commands(
    mut client: tokio::net::tcp::OwnedReadHalf,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    armed: Arc<AtomicU8>,
    cut: Arc<AtomicBool>,
) {
    loop {
        let mut header = [0u8; 4];
        if client.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let mut payload = vec![0u8; len];
        if client.read_exact(&mut payload).await.is_err() {
            return;
        }
        if header[3] == 0 {
            let mode = armed.load(Ordering::SeqCst);
            let matches = match payload.first() {
                Some(&COM_QUERY) => {
                    mode == Drop::Commit as u8 && payload[1..].eq_ignore_ascii_case(b"COMMIT")
                }
                Some(&COM_STMT_EXECUTE) => mode == Drop::Execute as u8,
                _ => false,
            };
            if matches
                && armed
                    .compare_exchange(mode, Drop::Off as u8, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                cut.store(true, Ordering::SeqCst);
            }
        }
        if server.write_all(&header).await.is_err() || server.write_all(&payload).await.is_err() {
            return;
        }
    }
}

/// Copies server bytes to the client until `cut` is set: the bytes read after that (the
/// server has executed the command by then) are dropped and the client's connection closed.
async fn forward_replies(
    mut server: tokio::net::tcp::OwnedReadHalf,
    mut client: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            dropped.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown().await;
            return;
        }
        if client.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

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
    let proxy = LossyProxy::start(upstream).await;
    let mut proxied_url = url::Url::parse(&url()).expect("url");
    proxied_url.set_host(Some("127.0.0.1")).expect("host");
    proxied_url.set_port(Some(proxy.port)).expect("port");
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
    proxy.arm(Drop::Commit);
    let lease = proxied.get_lease(&k, &a, long()).await.expect("get_lease");
    assert_eq!(proxy.dropped(), 1, "no reply was dropped");
    assert_eq!(
        lease.token,
        FencingToken(1),
        "a retried grant bumped the token twice"
    );

    // checkpoint: the retry finds the equal position and reports the same success.
    proxy.arm(Drop::Commit);
    let l = proxied
        .checkpoint_sequence(&k, &a, lease.token, &seq(5))
        .await
        .expect("checkpoint");
    assert_eq!(proxy.dropped(), 2);
    assert_eq!(l.checkpoint, Some(seq(5)));

    // Without retries the lost reply is a retryable error, and the write did happen.
    proxy.arm(Drop::Commit);
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
    proxy.arm(Drop::Commit);
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
    proxy.arm(Drop::Commit);
    let released = proxied
        .remove_lease_owner(&k, &b, stolen.token)
        .await
        .expect("release");
    assert_eq!(proxy.dropped(), 5);
    assert!(released.owner.is_none() && released.token == stolen.token);

    // renew_many: the repeat renews again.
    let again = proxied.get_lease(&k, &a, long()).await.expect("get_lease");
    proxy.arm(Drop::Commit);
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
    proxy.arm(Drop::Execute);
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
