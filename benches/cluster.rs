//! The cluster on one machine, with the simulator: N real processes of the binary share M
//! `sim://` cameras through the real PostgreSQL and Redis. Measures registration and assignment
//! time, failover after SIGKILL (repeated), events/s end to end, CPU and memory per node and per
//! 1,000 cameras, Redis memory and PostgreSQL rows per camera per day.
//!
//! ```sh
//! cargo bench --bench cluster -- --nodes 20 --cameras 10000 --kills 10 --fps 1 --rate 6
//! ```
//! Needs the release binary (`cargo build --release`), PostgreSQL and Redis as for the tests
//! (`ITS_TEST_POSTGRES_URL`, `ITS_TEST_REDIS_URL`, defaults on 127.0.0.1). Each node holds three
//! PostgreSQL connections (a pool of three and its `LISTEN`): 20 nodes fit PostgreSQL's
//! default `max_connections` of 100.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bb8_postgres::tokio_postgres::{self, NoTls};
use bb8_redis::redis;
use futures::StreamExt;
use serde_json::{json, Value};

struct Options {
    nodes: usize,
    cameras: usize,
    kills: usize,
    fps: f64,
    rate: f64,
    measure_s: u64,
}

fn options() -> Options {
    let mut o = Options { nodes: 5, cameras: 1_000, kills: 10, fps: 1.0, rate: 6.0, measure_s: 60 };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--nodes" => o.nodes = value.parse().expect("--nodes N"),
            "--cameras" => o.cameras = value.parse().expect("--cameras M"),
            "--kills" => o.kills = value.parse().expect("--kills K"),
            "--fps" => o.fps = value.parse().expect("--fps F"),
            "--rate" => o.rate = value.parse().expect("--rate crossings per minute"),
            "--measure-s" => o.measure_s = value.parse().expect("--measure-s S"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
    outbox: PathBuf,
    log: PathBuf,
}

struct Cluster {
    binary: PathBuf,
    database_url: String,
    prefix: String,
    nodes: Vec<Node>,
    client: reqwest::Client,
}

impl Cluster {
    fn spawn(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let child = Command::new(&self.binary)
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("ITS__SIMULATOR__ENABLED", "true")
            .env("ITS__MODEL__PATH", "models/none.pt")
            .env("ITS__NODE__ID", &node.id)
            .env("ITS__NODE__CAPACITY_FPS", "100000")
            .env("ITS__HTTP__BIND", format!("127.0.0.1:{}", node.port))
            .env("ITS__POSTGRES__URL", &self.database_url)
            .env("ITS__POSTGRES__POOL_SIZE", "3")
            .env("ITS__REDIS__URL", redis_url())
            .env("ITS__REDIS__POOL_SIZE", "4")
            .env("ITS__REDIS__KEY_PREFIX", &self.prefix)
            .env("ITS__OUTBOX__PATH", &node.outbox)
            .env("ITS__AUTH__ENABLED", "false")
            .env("ITS__RATE_LIMIT__PER_SECOND", "100000")
            .env("ITS__RATE_LIMIT__BURST", "100000")
            .env("ITS__CONNECTOR__SHARDS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&node.log).unwrap())
            .spawn()
            .expect("start its-analytics (cargo build --release first)");
        node.child = Some(child);
    }

    fn url(&self, index: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nodes[index].port)
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].child.is_some()).collect()
    }

    async fn ready(&self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(self.url(index, "/health/live")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node {} not ready; log {}", self.nodes[index].id, self.nodes[index].log.display());
    }

    async fn view(&self) -> Option<Value> {
        let at = *self.live().first()?;
        self.client.get(self.url(at, "/api/v1/cluster")).send().await.ok()?.json().await.ok()
    }

    /// Cameras held by live nodes other than `except`, and whether every such node has settled.
    async fn owned(&self, except: Option<&str>) -> Option<(usize, bool, HashMap<String, usize>)> {
        let view = self.view().await?;
        let mut owned = 0;
        let mut settled = true;
        let mut per_node = HashMap::new();
        for node in view["nodes"].as_array()? {
            if node["state"] == "live" && node["id"].as_str() != except {
                let n = node["camera_ids"].as_array()?.len();
                owned += n;
                per_node.insert(node["id"].as_str()?.to_string(), n);
                settled &= node["live_for_ms"].as_i64()? >= 5_000;
            }
        }
        Some((owned, settled, per_node))
    }

    async fn until_owned(&self, cameras: usize, settled: bool, except: Option<&str>, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some((owned, all_settled, _)) = self.owned(except).await {
                if owned >= cameras && (!settled || all_settled) {
                    return started.elapsed();
                }
            }
            assert!(started.elapsed() < limit, "cameras not all owned within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_file(&node.outbox);
        }
    }
}

fn redis_url() -> String {
    std::env::var("ITS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// (user + system seconds, RSS bytes) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
    let ticks = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let rss_pages = fields.get(21).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    (ticks / 100.0, rss_pages * 4096)
}

/// Cameras registered in the cluster's database.
async fn count_cameras(database_url: &str) -> usize {
    let (db, connection) = tokio_postgres::connect(database_url, NoTls).await.unwrap();
    tokio::spawn(connection);
    db.query_one("SELECT count(*) FROM cameras", &[]).await.unwrap().get::<_, i64>(0) as usize
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn redis_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let o = options();
    let admin_url =
        std::env::var("ITS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("its_bench_{}", std::process::id());
    let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls).await.expect("postgres");
    tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let database_url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/its-analytics");
    let tmp = std::env::temp_dir();
    let nodes = (0..o.nodes)
        .map(|i| Node {
            id: format!("sim-node-{i:02}"),
            port: free_port(),
            child: None,
            outbox: tmp.join(format!("{name}-{i}.redb")),
            log: tmp.join(format!("{name}-{i}.log")),
        })
        .collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let mut cluster = Cluster { binary, database_url: database_url.clone(), prefix: name.clone(), nodes, client };
    let mut redis = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let redis_before = redis_memory(&mut redis).await;

    println!("{} nodes, {} sim cameras at {} fps, {} crossings/min each", o.nodes, o.cameras, o.fps, o.rate);
    let started = Instant::now();
    for i in 0..o.nodes {
        cluster.spawn(i);
    }
    for i in 0..o.nodes {
        cluster.ready(i).await;
    }
    cluster.until_owned(0, true, None, Duration::from_secs(120)).await;
    println!("nodes up and settled            {:.1} s", started.elapsed().as_secs_f64());

    // Register through every node, 64 requests in flight.
    let registering = Instant::now();
    let bodies: Vec<(String, Value)> = (0..o.cameras)
        .map(|i| {
            let id = format!("sim-{i:05}");
            let body = json!({
                "id": id, "url": format!("sim://{id}?crossings_per_min={}", o.rate), "fps": o.fps,
                "geometry": { "lines": [{ "id": "l1", "a": [0, 180], "b": [640, 180] }] }
            });
            (cluster.url(i % o.nodes, "/api/v1/cameras"), body)
        })
        .collect();
    let client = cluster.client.clone();
    let results = futures::stream::iter(bodies)
        .map(|(url, body)| {
            let client = client.clone();
            async move {
                // 503 (a pool busy past its timeout under this load) and 408 (no answer within
                // http.request_timeout_ms) are worth a retry, as for any client; 409 then means an
                // earlier attempt went through.
                for attempt in 0..20 {
                    let status = client.post(&url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                    match status {
                        201 => return 201,
                        409 if attempt > 0 => return 201,
                        0 | 408 | 503 => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
                        other => return other,
                    }
                }
                0
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<u16>>()
        .await;
    let mut refused: HashMap<u16, usize> = HashMap::new();
    for status in results.iter().filter(|s| **s != 201) {
        *refused.entry(*status).or_default() += 1;
    }
    println!("registrations not accepted after retries, by status: {refused:?}");
    let registered = registering.elapsed();
    let cameras = count_cameras(&database_url).await;
    let assigned = cluster.until_owned(cameras, false, None, Duration::from_secs(600)).await + registered;
    println!(
        "registered {} cameras            {:.1} s ({:.0}/s); all owned and started {:.1} s after the first",
        cameras,
        registered.as_secs_f64(),
        cameras as f64 / registered.as_secs_f64(),
        assigned.as_secs_f64()
    );

    // Steady state.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let db = {
        let (db, connection) = tokio_postgres::connect(&database_url, NoTls).await.unwrap();
        tokio::spawn(connection);
        db
    };
    let count = |table: &'static str| {
        let db = &db;
        async move { db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get::<_, i64>(0) }
    };
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.child.as_ref().unwrap().id()).collect();
    let before: Vec<(f64, u64)> = pids.iter().map(|p| usage(*p)).collect();
    let (events_before, minutes_before) = (count("events").await, count("analytics_1m").await);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.measure_s)).await;
    let seconds = window.elapsed().as_secs_f64();
    let (events_after, minutes_after) = (count("events").await, count("analytics_1m").await);
    let after: Vec<(f64, u64)> = pids.iter().map(|p| usage(*p)).collect();
    let redis_after = redis_memory(&mut redis).await;
    let events_per_s = (events_after - events_before) as f64 / seconds;
    let cpu: Vec<f64> = before.iter().zip(&after).map(|(b, a)| (a.0 - b.0) / seconds).collect();
    let rss_mib: Vec<f64> = after.iter().map(|a| a.1 as f64 / 1_048_576.0).collect();
    let per_node = cameras as f64 / o.nodes as f64;
    let total_cpu: f64 = cpu.iter().sum();
    println!("events stored in PostgreSQL      {events_per_s:.0}/s (expected {:.0}/s)", cameras as f64 * o.rate / 60.0);
    println!(
        "CPU per node                     min {:.3} / mean {:.3} / max {:.3} cores ({:.0} cameras each); \
         all nodes {:.2} \
         cores = {:.3} cores per 1,000 cameras",
        cpu.iter().cloned().fold(f64::MAX, f64::min),
        total_cpu / cpu.len() as f64,
        cpu.iter().cloned().fold(0.0, f64::max),
        per_node,
        total_cpu,
        total_cpu / (cameras as f64 / 1000.0)
    );
    println!(
        "RSS per node                     min {:.0} / max {:.0} MiB",
        rss_mib.iter().cloned().fold(f64::MAX, f64::min),
        rss_mib.iter().cloned().fold(0.0, f64::max)
    );
    let day = 86_400.0 / seconds;
    println!(
        "PostgreSQL rows per camera a day events {:.0}, minute rows {:.0}",
        (events_after - events_before) as f64 * day / cameras as f64,
        (minutes_after - minutes_before) as f64 * day / cameras as f64
    );
    println!(
        "Redis memory                     {:.1} MiB in all after {:.0} s ({:.1} KiB a camera; the stream is capped at \
         redis.stream_max_len and seen: keys expire after redis.dedup_ttl_s)",
        (redis_after.saturating_sub(redis_before)) as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64(),
        (redis_after.saturating_sub(redis_before)) as f64 / 1024.0 / cameras as f64
    );

    // Failover: SIGKILL one node, time until every camera is held by a live node again, then
    // bring it back (same id) and let the cluster settle.
    let mut failovers = Vec::new();
    for k in 0..o.kills {
        let victim = k % o.nodes;
        let victim_id = cluster.nodes[victim].id.clone();
        let held = cluster.owned(None).await.and_then(|(_, _, per)| per.get(&victim_id).copied());
        let mut child = cluster.nodes[victim].child.take().unwrap();
        let killed = Instant::now();
        child.kill().unwrap();
        let _ = child.wait();
        cluster.until_owned(cameras, false, Some(&victim_id), Duration::from_secs(120)).await;
        let took = killed.elapsed().as_secs_f64();
        println!(
            "kill {:>2}: {victim_id} ({} cameras) -> all cameras held again in {took:.2} s",
            k + 1,
            held.unwrap_or(0)
        );
        failovers.push(took);
        cluster.spawn(victim);
        cluster.ready(victim).await;
        cluster.until_owned(cameras, true, None, Duration::from_secs(120)).await;
        // Let the returning node take its share back before the next kill.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if !failovers.is_empty() {
        failovers.sort_by(f64::total_cmp);
        println!(
            "failover over {} kills           p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            failovers.len(),
            percentile(&failovers, 50.0),
            percentile(&failovers, 99.0),
            failovers.last().unwrap()
        );
    }
    let moves: i64 =
        db.query_one("SELECT count(*) FROM camera_lease_log WHERE reason = 'node_lost'", &[]).await.unwrap().get(0);
    println!("leases taken over from lost nodes {moves}");
    drop(cluster);
    drop(db);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{name}:*")).query_async(&mut redis).await.unwrap_or_default();
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await.unwrap();
    }
}
