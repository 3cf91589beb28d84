//! A private Redis Cluster for `tests/cluster.rs`: six `redis-server` children on free loopback
//! ports made into three masters and three replicas with `redis-cli --cluster create`, and
//! what the tests read from its nodes (`CLUSTER NODES`, the owner of a slot).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use checkpoint_core::conformance::random_app;
use redis::aio::MultiplexedConnection;

/// Polls `check` every 50 ms until it holds, at most `limit`; panics naming `what` otherwise.
pub(crate) async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
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

/// A port whose cluster bus port (port + 10000) is free as well.
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("address").port();
        if port <= 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A private cluster: six `redis-server` children, killed (and their directory removed) when
/// dropped.
pub(crate) struct PrivateCluster {
    dir: PathBuf,
    nodes: Vec<(u16, Option<Child>)>,
}

impl PrivateCluster {
    pub(crate) async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("checkpoint-redis-cluster-{}", random_app("c")));
        let mut ports = Vec::new();
        while ports.len() < 6 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut nodes = Vec::new();
        for &port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node directory");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no"])
                // `DEBUG SLEEP` on a replica makes it lag behind its master on demand.
                .args(["--enable-debug-command", "yes"])
                .arg("--cluster-config-file")
                .arg(node_dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on the PATH (the cluster tests start their own cluster)");
            nodes.push((port, Some(child)));
        }
        let cluster = Self { dir, nodes };
        for &port in &ports {
            until(
                "redis-server answering PING",
                Duration::from_secs(10),
                || async move {
                    match node(port).await {
                        Some(mut conn) => redis::cmd("PING")
                            .query_async::<String>(&mut conn)
                            .await
                            .is_ok(),
                        None => false,
                    }
                },
            )
            .await;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli on the PATH");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_healthy().await;
        cluster
    }

    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/", nodes.join(","))
    }

    pub(crate) fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Every live node reports `cluster_state:ok` and every replica's link to its master is up.
    async fn wait_healthy(&self) {
        for port in self.live_ports() {
            until(
                "cluster_state:ok and replication up",
                Duration::from_secs(30),
                || async move {
                    let Some(mut conn) = node(port).await else {
                        return false;
                    };
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    let replication: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    info.contains("cluster_state:ok")
                        && (replication.contains("role:master")
                            || replication.contains("master_link_status:up"))
                },
            )
            .await;
        }
    }

    /// `SIGKILL` to the node on `port`.
    pub(crate) fn kill(&mut self, port: u16) {
        let (_, child) = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node of this cluster");
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain connection to one node, `None` while it does not accept connections.
pub(crate) async fn node(port: u16) -> Option<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub(crate) struct NodeLine {
    pub(crate) id: String,
    pub(crate) port: u16,
    pub(crate) master: bool,
    pub(crate) failed: bool,
    pub(crate) master_id: Option<String>,
    pub(crate) slots: Vec<(u16, u16)>,
}

pub(crate) async fn cluster_nodes(port: u16) -> Vec<NodeLine> {
    let mut conn = node(port).await.expect("a live node");
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER NODES");
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let address = f.get(1)?.split('@').next()?;
            let port = address.rsplit_once(':')?.1.parse().ok()?;
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(NodeLine {
                id: f[0].to_owned(),
                port,
                master: f[2].contains("master"),
                failed: f[2].contains("fail"),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// The slot of the app's keys, and the master owning it with its replica, as `asker` sees them.
pub(crate) async fn owner_of(asker: u16, key: &str) -> (u16, NodeLine, Option<NodeLine>) {
    let mut conn = node(asker).await.expect("a live node");
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER KEYSLOT");
    let nodes = cluster_nodes(asker).await;
    let master = nodes
        .iter()
        .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .cloned()
        .expect("a master owns the slot");
    let replica = nodes
        .iter()
        .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed)
        .cloned();
    (slot, master, replica)
}
