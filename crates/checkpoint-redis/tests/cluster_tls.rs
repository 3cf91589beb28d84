//! `rediss+cluster://` against a private TLS-only Redis Cluster: three masters (no replicas)
//! started by the test on free loopback ports, each `redis-server --port 0 --tls-port P
//! --tls-cluster yes --cluster-enabled yes`, so clients and the cluster bus speak only TLS.
//!
//! The cluster is made without `redis-cli --cluster create`: `CLUSTER ADDSLOTSRANGE` gives
//! each node a third of the slots and `CLUSTER MEET`, sent over TLS, joins them; the test then
//! waits for `cluster_state:ok` on every node. The cluster bus authenticates both ends with
//! their certificates whatever `tls-auth-clients` says, so each node's certificate must be
//! valid for TLS clients as well as servers (extended key usage `serverAuth,clientAuth`). The
//! server certificate `scripts/test` makes is `serverAuth` only: with it the nodes reject each
//! other's bus connections (`unsupported certificate`) and a cluster never forms, which is
//! what makes `redis-cli --cluster create` wait forever. The test therefore issues a node
//! certificate of its own with `openssl`, signed by the private CA of `CHECKPOINT_REDIS_TLS_CA`
//! with that CA's key (`ca.key` in the same directory, where `scripts/test` keeps it).
//!
//! Clients reach each node by the address the cluster announces and check its certificate
//! against it, so the test runs twice: nodes announcing `127.0.0.1` (the default; certificate
//! for `localhost` and `127.0.0.1`) and nodes announcing the hostname `localhost` (certificate
//! for `localhost` only).
//!
//! Needs the `tls` feature, `redis-server` (7 or later: `CLUSTER ADDSLOTSRANGE`) and `openssl` on the `PATH`, and the
//! TLS setup of `tests/tls.rs` (`CHECKPOINT_REDIS_TLS_URL`, `CHECKPOINT_REDIS_TLS_CA`, set by
//! `scripts/test`): without it the test is reported ignored (failed in strict mode,
//! `CHECKPOINT_REQUIRE_ALL=1`).

#[cfg(feature = "tls")]
use std::path::{Path, PathBuf};
#[cfg(feature = "tls")]
use std::process::{Child, Command, Stdio};
#[cfg(feature = "tls")]
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use checkpoint_core::conformance::random_app;
#[cfg(feature = "tls")]
use checkpoint_core::{
    AppName, Checkpointer, Error, LeaseDuration, LeaseKey, LeaseManager, Position, WorkerId,
};
#[cfg(feature = "tls")]
use checkpoint_redis::redis;
#[cfg(feature = "tls")]
use checkpoint_redis::{RedisConfig, RedisStore};

/// The slot ranges of the three masters, in node order.
#[cfg(feature = "tls")]
const RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// Polls `check` every 50 ms until it holds, at most `limit`; panics naming `what` otherwise.
#[cfg(feature = "tls")]
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port whose cluster bus port (port + 10000) is free as well.
#[cfg(feature = "tls")]
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("address").port();
        if port <= 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `openssl` with `args` in `dir`; panics with its error output when it fails.
#[cfg(feature = "tls")]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on the PATH (the cluster TLS test issues its node certificate)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How the nodes name themselves to clients (in `CLUSTER SLOTS`, `MOVED`), and so which name
/// their certificate must carry: clients connect to, and check the certificate against, the
/// name the cluster announces, not the seed name of the URL.
#[cfg(feature = "tls")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Announce {
    /// The default: their IP address, `127.0.0.1`; the certificate names `localhost` and
    /// `127.0.0.1`.
    Ip,
    /// `cluster-announce-hostname localhost` with `cluster-preferred-endpoint-type hostname`
    /// (Redis 7): the certificate names only `localhost`.
    Hostname,
}

/// A private TLS-only cluster of three masters: the `redis-server` children are killed and
/// the directory (certificate, node configs, logs) removed when dropped, also on a panic.
#[cfg(feature = "tls")]
struct TlsCluster {
    dir: PathBuf,
    ca: Vec<u8>,
    announce: Announce,
    nodes: Vec<(u16, Child)>,
}

#[cfg(feature = "tls")]
impl TlsCluster {
    /// Issues the node certificate with the CA at `ca_file` (its key `ca.key` beside it),
    /// starts three nodes, assigns the slots, joins them over TLS and waits for
    /// `cluster_state:ok` on every node.
    async fn start(ca_file: &Path, announce: Announce) -> Self {
        let ca = std::fs::read(ca_file).expect("read the CA file of CHECKPOINT_REDIS_TLS_CA");
        let ca_key = ca_file.with_file_name("ca.key");
        assert!(
            ca_key.exists(),
            "{} is missing: the test signs its node certificate with the CA's key, which \
             scripts/test keeps beside ca.pem",
            ca_key.display()
        );
        let dir =
            std::env::temp_dir().join(format!("checkpoint-redis-tls-cluster-{}", random_app("c")));
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        let mut cluster = Self {
            dir,
            ca,
            announce,
            nodes: Vec::new(),
        };
        cluster.issue_certificate(ca_file, &ca_key);
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        for port in ports {
            let child = cluster.spawn(ca_file, port);
            cluster.nodes.push((port, child));
        }
        for port in cluster.ports() {
            until(
                "redis-server answering PING over TLS",
                Duration::from_secs(10),
                || {
                    let cluster = &cluster;
                    async move {
                        cluster
                            .query::<String>(port, &redis::cmd("PING"))
                            .await
                            .is_some()
                    }
                },
            )
            .await;
        }
        let ports = cluster.ports();
        for (&port, (first, last)) in ports.iter().zip(RANGES) {
            let mut add = redis::cmd("CLUSTER");
            add.arg("ADDSLOTSRANGE").arg(first).arg(last);
            let reply: Option<String> = cluster.query(port, &add).await;
            assert_eq!(
                reply.as_deref(),
                Some("OK"),
                "CLUSTER ADDSLOTSRANGE on {port}"
            );
        }
        for &other in &ports[1..] {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(other);
            let reply: Option<String> = cluster.query(ports[0], &meet).await;
            assert_eq!(reply.as_deref(), Some("OK"), "CLUSTER MEET {other}");
        }
        for &port in &ports {
            until(
                "cluster_state:ok with three known nodes",
                Duration::from_secs(30),
                || {
                    let cluster = &cluster;
                    async move {
                        let mut info = redis::cmd("CLUSTER");
                        info.arg("INFO");
                        cluster
                            .query::<String>(port, &info)
                            .await
                            .is_some_and(|info| {
                                info.contains("cluster_state:ok")
                                    && info.contains("cluster_known_nodes:3")
                            })
                    }
                },
            )
            .await;
        }
        cluster
    }

    /// `node.key` and `node.pem` in the cluster's directory: a certificate for `localhost`
    /// (and `127.0.0.1` when the nodes announce their IP address), usable by servers and
    /// clients (the cluster bus needs both), signed by the CA.
    fn issue_certificate(&self, ca_file: &Path, ca_key: &Path) {
        let names = match self.announce {
            Announce::Ip => "DNS:localhost,IP:127.0.0.1",
            Announce::Hostname => "DNS:localhost",
        };
        std::fs::write(
            self.dir.join("node.ext"),
            format!(
                "subjectAltName={names}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .expect("write node.ext");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "node.key",
                "-out",
                "node.csr",
            ],
        );
        let (ca_file, ca_key) = (ca_file.to_string_lossy(), ca_key.to_string_lossy());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                "node.csr",
                "-CA",
                &ca_file,
                "-CAkey",
                &ca_key,
                "-CAserial",
                "ca.srl",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "node.ext",
                "-out",
                "node.pem",
            ],
        );
    }

    /// One TLS-only cluster node on `port` (no plain listener, TLS on the cluster bus).
    fn spawn(&self, ca_file: &Path, port: u16) -> Child {
        let node_dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node directory");
        let mut command = Command::new("redis-server");
        if self.announce == Announce::Hostname {
            command
                .args(["--cluster-announce-hostname", "localhost"])
                .args(["--cluster-preferred-endpoint-type", "hostname"]);
        }
        command
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(self.dir.join("node.pem"))
            .arg("--tls-key-file")
            .arg(self.dir.join("node.key"))
            .arg("--tls-ca-cert-file")
            .arg(ca_file)
            .args(["--tls-auth-clients", "no", "--tls-cluster", "yes"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .arg("--cluster-config-file")
            .arg(node_dir.join("nodes.conf"))
            .arg("--dir")
            .arg(&node_dir)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--logfile")
            .arg(node_dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH (the cluster TLS test starts its own cluster)")
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }

    /// `cmd` on the node at `port` over TLS (checked against the CA); `None` while the node
    /// does not answer.
    async fn query<T: redis::FromRedisValue>(&self, port: u16, cmd: &redis::Cmd) -> Option<T> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::TcpTls {
            host: "localhost".to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
        .into_connection_info()
        .ok()?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.ca.clone()),
        };
        let client = redis::Client::build_with_tls(info, certificates).ok()?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        cmd.query_async(&mut conn).await.ok()
    }

    /// The `rediss+cluster://` URL naming every node by `localhost`.
    fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|port| format!("localhost:{port}"))
            .collect();
        format!("rediss+cluster://{}/", nodes.join(","))
    }
}

#[cfg(feature = "tls")]
impl Drop for TlsCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One app per master: random app names until the slot of each (its keys' hash tag), as
/// `CLUSTER KEYSLOT` reports it, falls in every master's range once.
#[cfg(feature = "tls")]
async fn one_app_per_master(cluster: &TlsCluster) -> Vec<(AppName, u16)> {
    let port = cluster.ports()[0];
    let mut apps: Vec<Option<(AppName, u16)>> = vec![None, None, None];
    for _ in 0..1_000 {
        if apps.iter().all(Option::is_some) {
            break;
        }
        let app = random_app("ctls");
        let mut keyslot = redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(app.as_str());
        let slot: u16 = cluster
            .query(port, &keyslot)
            .await
            .expect("CLUSTER KEYSLOT over TLS");
        let master = RANGES
            .iter()
            .position(|&(first, last)| (first..=last).contains(&slot))
            .expect("every slot is in a range");
        apps[master].get_or_insert((app, slot));
    }
    apps.into_iter()
        .map(|app| app.expect("an app for every master within 1000 random names"))
        .collect()
}

/// A lease, a checkpoint and a fetch for one app on each of the three masters through one
/// `rediss+cluster://` store, each record found on the master owning its slot; `list_apps`
/// names all three apps; a plain connection and one without the CA are refused.
#[cfg(feature = "tls")]
async fn exercise(announce: Announce) {
    let ca_file = std::env::var("CHECKPOINT_REDIS_TLS_CA")
        .expect("CHECKPOINT_REDIS_TLS_CA names the CA of the TLS tests");
    let cluster = TlsCluster::start(Path::new(&ca_file), announce).await;
    let url = cluster.url();
    let config = RedisConfig::from_url(&url)
        .expect("a rediss+cluster URL")
        .with_tls_root_certificate(cluster.ca.clone());
    assert!(config.tls() && config.is_cluster());
    let apps = one_app_per_master(&cluster).await;
    let store = RedisStore::open(config, apps[0].0.clone())
        .await
        .expect("connect to the cluster over TLS");
    let me = WorkerId::new("w").expect("worker id");
    let key = LeaseKey::parse("s", "shard-0").expect("lease key");
    let duration = LeaseDuration::new(Duration::from_secs(30)).expect("duration");
    let ports = cluster.ports();
    for (n, (app, slot)) in apps.iter().enumerate() {
        let store = store.for_app(app.clone());
        store.init().await.expect("init over TLS");
        let lease = store
            .get_lease(&key, &me, duration)
            .await
            .expect("get_lease over TLS");
        let position = Position::sequence(&(100 + n).to_string()).expect("position");
        store
            .checkpoint_sequence(&key, &me, lease.token, &position)
            .await
            .expect("checkpoint over TLS");
        let fetched = store
            .fetch_checkpoint(&key)
            .await
            .expect("fetch over TLS")
            .expect("the record just written");
        assert_eq!(fetched.checkpoint, Some(position));
        assert_eq!(fetched.owner.as_ref(), Some(&me));
        // The record is on the master owning the app's slot, and only there.
        for (m, &port) in ports.iter().enumerate() {
            let mut count = redis::cmd("CLUSTER");
            count.arg("COUNTKEYSINSLOT").arg(*slot);
            let keys: i64 = cluster
                .query(port, &count)
                .await
                .expect("CLUSTER COUNTKEYSINSLOT over TLS");
            if m == n {
                assert!(keys > 0, "app {app} has no keys on its master {port}");
            } else {
                assert_eq!(keys, 0, "app {app} has keys on {port}, not its master");
            }
        }
    }
    let listed = store.list_apps().await.expect("list_apps over TLS");
    for (app, _) in &apps {
        assert!(listed.contains(app), "list_apps misses {app}: {listed:?}");
    }

    // The nodes have no plain listener: a redis+cluster:// store on the same ports fails.
    let plain = url.replacen("rediss+cluster://", "redis+cluster://", 1);
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        RedisStore::connect(&plain, random_app("ctls")),
    )
    .await
    .expect("a plain connection attempt returns");
    match refused {
        Err(Error::Backend { .. }) => {}
        other => panic!("a plain connection to a TLS-only cluster was not refused: {other:?}"),
    }

    // Without the CA the nodes' certificate is not trusted: a connection error.
    let untrusted = tokio::time::timeout(
        Duration::from_secs(30),
        RedisStore::connect(&url, random_app("ctls")),
    )
    .await
    .expect("a connection attempt without the CA returns");
    match untrusted {
        Err(e @ Error::Backend { .. }) if e.to_string().contains("certificate") => {}
        other => panic!("a certificate from an unknown CA was not refused as such: {other:?}"),
    }
    drop(cluster);
}

/// [`exercise`] with nodes announcing `127.0.0.1` (the default), their certificate naming
/// `localhost` and `127.0.0.1`.
#[cfg(feature = "tls")]
async fn cluster_over_tls_with_a_private_ca() {
    exercise(Announce::Ip).await;
}

/// [`exercise`] with nodes announcing the hostname `localhost`, their certificate naming only
/// `localhost`: what a certificate without IP addresses needs (with it and announced IP
/// addresses, the client's connections to the nodes fail certificate verification and opening
/// the store fails with `ClusterConnectionNotFound`).
#[cfg(feature = "tls")]
async fn cluster_over_tls_with_announced_hostnames() {
    exercise(Announce::Hostname).await;
}

checkpoint_test_support::server_tests! {
    backend: checkpoint_test_support::Backend::RedisTls,
    tests: [
        #[cfg(feature = "tls")]
        cluster_over_tls_with_a_private_ca,
        #[cfg(feature = "tls")]
        cluster_over_tls_with_announced_hostnames,
    ],
}
