//! A loopback TCP proxy that loses one reply on demand: the request reaches the server and is
//! executed, the reply never reaches the client, and that connection is closed. Shared by the
//! lost-reply tests of every network backend and by their conformance hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The wire protocol behind the proxy: how it finds the reply to drop. The client must not use
/// TLS (`sslmode=disable`, `ssl-mode=disabled`), so every message is readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// PostgreSQL: server messages (type byte, 4-byte big-endian length, body).
    Postgres,
    /// MySQL and MariaDB: client packets (3-byte little-endian length, sequence number, payload).
    MySql,
    /// A request-reply stream (Redis, HTTP/1.1): the reply to the next bytes the client sends.
    Stream,
}

/// Which reply an armed proxy drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DropRule {
    /// [`Protocol::Postgres`]: the idle `ReadyForQuery` after the next completed `INSERT`,
    /// `UPDATE` or `COMMIT` (the write has committed by then).
    PostgresWrite = 1,
    /// [`Protocol::MySql`]: the reply to the next `COMMIT`.
    MySqlCommit = 2,
    /// [`Protocol::MySql`]: the reply to the next prepared statement execution (an autocommit
    /// statement).
    MySqlExecute = 3,
    /// [`Protocol::MySql`]: the reply to the next `COMMIT` or prepared statement execution,
    /// whichever comes first.
    MySqlWrite = 4,
    /// Any protocol: the reply to the next bytes the client sends.
    NextRequest = 5,
}

const OFF: u8 = 0;
/// `COM_QUERY`: a text statement (sqlx sends `BEGIN`, `COMMIT` and `ROLLBACK` this way).
const COM_QUERY: u8 = 0x03;
/// `COM_STMT_EXECUTE`: the execution of a prepared statement.
const COM_STMT_EXECUTE: u8 = 0x17;

/// The proxy: listens on `127.0.0.1:`[`LossyProxy::port`] and forwards each connection to the
/// upstream server, until armed ([`LossyProxy::arm`]).
#[derive(Clone, Debug)]
pub struct LossyProxy {
    port: u16,
    armed: Arc<AtomicU8>,
    dropped: Arc<AtomicUsize>,
}

impl LossyProxy {
    /// Starts a proxy to `upstream` (`host:port`) speaking `protocol`, on a task of the
    /// current runtime. Panics when no loopback port can be bound (a test's setup failing).
    pub async fn start(upstream: String, protocol: Protocol) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let armed = Arc::new(AtomicU8::new(OFF));
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
                    // Set by the request side when the armed request passes: the server's
                    // next bytes are its reply.
                    let cut = Arc::new(AtomicBool::new(false));
                    let link = Link {
                        armed: armed.clone(),
                        cut,
                        dropped: dropped.clone(),
                    };
                    tokio::spawn(forward_requests(
                        client_read,
                        server_write,
                        protocol,
                        link.clone(),
                    ));
                    tokio::spawn(forward_replies(server_read, client_write, protocol, link));
                }
            }
        });
        Self {
            port,
            armed,
            dropped,
        }
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Arms the proxy: the reply chosen by `rule` is dropped once, then the proxy forwards
    /// everything again.
    pub fn arm(&self, rule: DropRule) {
        self.armed.store(rule as u8, Ordering::SeqCst);
    }

    /// How many replies were dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// The shared state of one proxied connection.
#[derive(Clone)]
struct Link {
    armed: Arc<AtomicU8>,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
}

impl Link {
    /// Disarms the proxy if it is armed with `rule`; whether it was.
    fn take(&self, rule: DropRule) -> bool {
        self.armed
            .compare_exchange(rule as u8, OFF, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// Copies client bytes to the server; sets `cut` before passing on the armed request.
async fn forward_requests(
    mut client: OwnedReadHalf,
    mut server: OwnedWriteHalf,
    protocol: Protocol,
    link: Link,
) {
    if protocol == Protocol::MySql {
        return forward_mysql_commands(client, server, link).await;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if link.take(DropRule::NextRequest) {
            link.cut.store(true, Ordering::SeqCst);
        }
        if server.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// MySQL client packets: a command is a packet with sequence number 0.
async fn forward_mysql_commands(mut client: OwnedReadHalf, mut server: OwnedWriteHalf, link: Link) {
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
            let commit =
                payload.first() == Some(&COM_QUERY) && payload[1..].eq_ignore_ascii_case(b"COMMIT");
            let execute = payload.first() == Some(&COM_STMT_EXECUTE);
            let hit = link.take(DropRule::NextRequest)
                || (commit
                    && (link.take(DropRule::MySqlCommit) || link.take(DropRule::MySqlWrite)))
                || (execute
                    && (link.take(DropRule::MySqlExecute) || link.take(DropRule::MySqlWrite)));
            if hit {
                link.cut.store(true, Ordering::SeqCst);
            }
        }
        if server.write_all(&header).await.is_err() || server.write_all(&payload).await.is_err() {
            return;
        }
    }
}

/// Copies server bytes to the client until the reply to drop: then closes the client's
/// connection instead of forwarding it.
async fn forward_replies(
    mut server: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    protocol: Protocol,
    link: Link,
) {
    if protocol == Protocol::Postgres {
        return forward_postgres_messages(server, client, link).await;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if link.cut.load(Ordering::SeqCst) {
            link.dropped.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown().await;
            return;
        }
        if client.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// PostgreSQL server messages: after a completed write, the idle `ReadyForQuery` that follows
/// is dropped when armed (inside a transaction, status `T`, nothing has committed yet).
async fn forward_postgres_messages(
    mut server: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    link: Link,
) {
    let mut write_completed = false;
    loop {
        let mut header = [0u8; 5];
        if server.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if server.read_exact(&mut body).await.is_err() {
            return;
        }
        let cut = link.cut.load(Ordering::SeqCst);
        match header[0] {
            _ if cut => {
                link.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown().await;
                return;
            }
            b'C' if body.starts_with(b"UPDATE")
                || body.starts_with(b"INSERT")
                || body.starts_with(b"COMMIT") =>
            {
                write_completed = true;
            }
            b'Z' if write_completed
                && body.first() == Some(&b'I')
                && link.take(DropRule::PostgresWrite) =>
            {
                link.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown().await;
                return;
            }
            b'Z' => write_completed = false,
            _ => {}
        }
        if client.write_all(&header).await.is_err() || client.write_all(&body).await.is_err() {
            return;
        }
    }
}
