//! A Redis Cluster of the test's own: six `redis-server` processes in cluster mode on free
//! loopback ports (three primaries, one replica each), each in its own temporary directory, a
//! node timeout of one second so a failover takes seconds. Every process is killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bb8_redis::redis;

use super::{eventually, free_port};

pub struct OwnRedisCluster {
    pub nodes: Vec<ClusterNode>,
}

pub struct ClusterNode {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub flags: String,
    /// The primary's id for a replica, `-` for a primary.
    pub primary_id: String,
    /// Slot ranges served (primaries).
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn is_primary(&self) -> bool {
        self.flags.split(',').any(|f| f == "master")
    }

    pub fn failed(&self) -> bool {
        self.flags.split(',').any(|f| f == "fail" || f == "fail?")
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

impl ClusterNode {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "1000", "--appendonly", "no", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (cluster mode)");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.expect("connect to a node")
    }

    async fn answers(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        eventually("a cluster node to answer", Duration::from_secs(20), || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
    }

    /// The node's `INFO replication` field, if it answers.
    pub async fn replication(&self, field: &str) -> Option<String> {
        let mut conn = redis::Client::open(self.url()).ok()?.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.ok()?;
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
    }
}

impl OwnRedisCluster {
    /// Six nodes, `redis-cli --cluster create --cluster-replicas 1`, then waits until every node
    /// says `cluster_state:ok` and every primary has its replica connected.
    pub async fn start() -> Self {
        let mut nodes: Vec<ClusterNode> =
            (0..6).map(|_| ClusterNode { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None }).collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &nodes {
            node.answers().await;
        }
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.wait_healthy().await;
        cluster
    }

    /// Every running node says `cluster_state:ok` and every primary has a replica online.
    pub async fn wait_healthy(&self) {
        eventually("the cluster to be ok with a replica per primary", Duration::from_secs(60), || async {
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let mut conn = redis::Client::open(node.url()).ok()?.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.ok()?;
                if !info.contains("cluster_state:ok") {
                    return None;
                }
                if node.replication("role").await? == "master" && node.replication("connected_slaves").await? == "0" {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// The seeds as `ITS__REDIS__NODES` takes them.
    pub fn seeds(&self) -> String {
        self.nodes.iter().map(ClusterNode::url).collect::<Vec<_>>().join(",")
    }

    /// A cluster connection for the test's own reads.
    pub async fn client(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self.nodes.iter().map(ClusterNode::url).collect();
        redis::cluster::ClusterClient::new(seeds).unwrap().get_async_connection().await.expect("connect to the cluster")
    }

    /// `CLUSTER NODES` as seen by the first running node that answers.
    pub async fn topology(&self) -> Option<Vec<NodeLine>> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Ok(client) = redis::Client::open(node.url()) else { continue };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else { continue };
            let Ok(text) = redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut conn).await else { continue };
            return Some(text.lines().filter_map(parse_node_line).collect());
        }
        None
    }

    /// The key's slot (`CLUSTER KEYSLOT`).
    pub async fn slot(&self, key: &str) -> u16 {
        let mut conn = self.nodes[0].conn().await;
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await.unwrap()
    }

    pub fn node(&mut self, port: u16) -> &mut ClusterNode {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster")
    }

    /// SIGKILL: the node vanishes without a word.
    pub fn kill(&mut self, port: u16) {
        let node = self.node(port);
        let mut child = node.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts a killed node again from its directory (its `nodes.conf`): it rejoins the cluster.
    pub async fn restart(&mut self, port: u16) {
        let node = self.node(port);
        node.spawn();
        node.answers().await;
    }
}

fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = fields.get(1)?.split('@').next()?.rsplit_once(':')?.1.parse().ok()?;
    let slots = fields
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(NodeLine {
        id: fields[0].to_string(),
        port,
        flags: fields.get(2)?.to_string(),
        primary_id: fields.get(3)?.to_string(),
        slots,
    })
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
