//! Several real processes of the binary share one PostgreSQL and Redis: every camera has exactly
//! one owner, a killed node's cameras run again on the survivors within the target, a joining
//! node takes only what rendezvous hashing gives it, a drained node hands a file camera over with
//! each event stored once, and a node cut off from the stores stops its cameras before anyone
//! else starts them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Service, TestEnv};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The failover target of the issue, with the default heartbeat and TTL.
const FAILOVER_TARGET: Duration = Duration::from_secs(15);

/// A node of the test's cluster: its own id and outbox.
async fn node(env: &TestEnv, id: &str, extra: &[(&str, &str)]) -> Service {
    let outbox = std::env::temp_dir().join(format!("{}-{id}.outbox.redb", env.name));
    let outbox = outbox.display().to_string();
    let mut vars = vec![
        ("ITS__NODE__ID", id),
        ("ITS__OUTBOX__PATH", outbox.as_str()),
        // The test runs three models on two cores: keep each to one thread.
        ("ITS__DEVICE__CPU_THREADS", "1"),
    ];
    vars.extend_from_slice(extra);
    Service::start_with(env, &vars).await
}

/// A live camera on a looping clip, sampled at 1 frame/s so twelve fit on this machine.
fn live_camera(id: &str) -> Value {
    json!({
        "id": id,
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "fps": 1,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        "replay": { "loop": true, "realtime": true }
    })
}

/// The cameras each node analyses, from its own metrics: a camera counts once it has had a frame
/// through detection and tracking there.
async fn analysed_by(client: &reqwest::Client, nodes: &[(&str, &Service)]) -> BTreeMap<String, Vec<String>> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, svc) in nodes {
        let Ok(answer) = client.get(svc.url("/metrics")).send().await else { continue };
        let page = answer.text().await.unwrap_or_default();
        for line in page.lines().filter(|l| l.starts_with("its_frames_processed_total{camera=\"")) {
            let camera = line.split('"').nth(1).unwrap().to_string();
            let frames: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
            if frames > 0.0 {
                owners.entry(camera).or_default().push(name.to_string());
            }
        }
    }
    owners
}

/// The lease holder of every camera, from `/api/v1/cluster`.
async fn leases(client: &reqwest::Client, svc: &Service) -> BTreeMap<String, String> {
    let view: Value = client.get(svc.url("/api/v1/cluster")).send().await.unwrap().json().await.unwrap();
    let mut owners = BTreeMap::new();
    for node in view["nodes"].as_array().unwrap() {
        for camera in node["camera_ids"].as_array().unwrap() {
            owners.insert(camera.as_str().unwrap().to_string(), node["id"].as_str().unwrap().to_string());
        }
    }
    owners
}

/// The lease holders once settled: every one of `cameras` held, `node` among the holders, and
/// the same two heartbeats later (old owners give cameras up one round after another).
async fn settled_leases(
    client: &reqwest::Client,
    svc: &Service,
    cameras: usize,
    node: &str,
) -> BTreeMap<String, String> {
    common::eventually(&format!("{node} to take its share"), Duration::from_secs(60), || async {
        let owners = leases(client, svc).await;
        if owners.len() != cameras || !owners.values().any(|o| o == node) {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        (leases(client, svc).await == owners).then_some(owners)
    })
    .await
}

/// Waits until `n` nodes are live and have been for the settle time (they take cameras).
async fn settled(client: &reqwest::Client, svc: &Service, n: usize) {
    common::eventually("the nodes to settle", Duration::from_secs(60), || async {
        let view: Value = client.get(svc.url("/api/v1/cluster")).send().await.ok()?.json().await.ok()?;
        let ready = view["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["state"] == "live" && n["live_for_ms"].as_i64() >= Some(5_500))
            .count();
        (ready == n).then_some(())
    })
    .await;
}

/// Waits until every one of `cameras` is analysed by exactly one of `nodes`; returns the owners.
async fn each_analysed_once(
    client: &reqwest::Client,
    nodes: &[(&str, &Service)],
    cameras: &[String],
    timeout: Duration,
) -> BTreeMap<String, String> {
    common::eventually("every camera analysed by exactly one node", timeout, || async {
        let owners = analysed_by(client, nodes).await;
        let complete = cameras.iter().all(|c| owners.get(c).is_some_and(|o| o.len() == 1));
        complete.then(|| owners.into_iter().map(|(c, mut o)| (c, o.remove(0))).collect())
    })
    .await
}

#[tokio::test]
async fn three_nodes_share_twelve_cameras_through_a_kill_and_a_join() {
    let env = TestEnv::new().await;
    let client = common::client();
    // A model directory with a second version to reload (each node has the same files).
    let models = common::model_dir_with_candidate();
    let configured = models.path().join("yolox_nano.onnx");
    let model = [("ITS__MODEL__PATH", configured.to_str().unwrap())];
    let (a, b, c) =
        tokio::join!(node(&env, "node-a", &model), node(&env, "node-b", &model), node(&env, "node-c", &model));
    settled(&client, &a, 3).await;

    // Control through any node: each node registers four of the cameras.
    let cameras: Vec<String> = (1..=12).map(|i| format!("cam-{i:02}")).collect();
    for (i, id) in cameras.iter().enumerate() {
        let through = [&a, &b, &c][i % 3];
        let r = client.post(through.url("/api/v1/cameras")).json(&live_camera(id)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }
    let all = [("node-a", &a), ("node-b", &b), ("node-c", &c)];
    let before = each_analysed_once(&client, &all, &cameras, Duration::from_secs(60)).await;
    assert_eq!(before, leases(&client, &b).await, "metrics and leases disagree");
    let per_node = |owners: &BTreeMap<String, String>, n: &str| owners.values().filter(|o| *o == n).count();
    for name in ["node-a", "node-b", "node-c"] {
        assert!(per_node(&before, name) > 0, "{name} got no camera: {before:?}");
    }
    // Status and counts answer from any node: a camera another node analyses is forwarded.
    let remote = before.iter().find(|(_, owner)| *owner != "node-a").unwrap().0;
    let view: Value =
        client.get(a.url(&format!("/api/v1/cameras/{remote}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["owner"], before[remote].as_str(), "{view}");
    assert!(view["status"]["frames_processed"].as_u64() > Some(0), "{view}");
    let counts = client.get(a.url(&format!("/api/v1/cameras/{remote}/counts"))).send().await.unwrap();
    assert_eq!(counts.status().as_u16(), 200);
    // So are its snapshot (with the owner's content type and X- headers) and tracks; its live
    // view is not proxied: 503 names the owner.
    let snapshot = client.get(a.url(&format!("/api/v1/cameras/{remote}/snapshot.jpg"))).send().await.unwrap();
    assert_eq!(snapshot.status().as_u16(), 200);
    assert_eq!(snapshot.headers()["content-type"], "image/jpeg");
    assert_eq!(snapshot.headers()["x-source-width"], "320");
    assert!(snapshot.headers().contains_key("x-frame-seq"));
    assert_eq!(&snapshot.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);
    let tracks: Value =
        client.get(a.url(&format!("/api/v1/cameras/{remote}/tracks"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(tracks["camera_id"], remote.as_str(), "{tracks}");
    let live = client.get(a.url(&format!("/api/v1/cameras/{remote}/live.mjpeg"))).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 503);
    let error = live.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_string();
    assert!(error.contains(&before[remote]), "{error}");

    // SIGKILL the node with the most cameras: its cameras run on the survivors within the target.
    let victim = ["node-a", "node-b", "node-c"].into_iter().max_by_key(|n| per_node(&before, n)).unwrap();
    let lost: Vec<String> = before.iter().filter(|(_, o)| *o == victim).map(|(c, _)| c.clone()).collect();
    let (mut survivors, killed) = (Vec::new(), Instant::now());
    for (name, svc) in [("node-a", a), ("node-b", b), ("node-c", c)] {
        if name == victim {
            svc.kill();
        } else {
            survivors.push((name, svc));
        }
    }
    let alive: Vec<(&str, &Service)> = survivors.iter().map(|(n, s)| (*n, s)).collect();
    let after_kill = each_analysed_once(&client, &alive, &cameras, Duration::from_secs(60)).await;
    let failover = killed.elapsed();
    eprintln!("failover of {} cameras after SIGKILL: {:.1} s", lost.len(), failover.as_secs_f64());
    assert!(failover < FAILOVER_TARGET, "failover took {failover:?}");
    for camera in cameras.iter().filter(|c| !lost.contains(c)) {
        assert_eq!(after_kill[camera], before[camera], "{camera} moved though its node lived");
    }
    let page = client.get(alive[0].1.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(common::metric(&page, "its_cluster_nodes"), Some(2.0));

    // A fourth node joins: only cameras that rendezvous gives it move, all of them to it.
    let d = node(&env, "node-d", &model).await;
    settled(&client, &d, 3).await;
    let mut all: Vec<(&str, &Service)> = alive.clone();
    all.push(("node-d", &d));
    let expected = settled_leases(&client, &d, cameras.len(), "node-d").await;
    let after_join = each_analysed_once(&client, &all, &cameras, Duration::from_secs(30)).await;
    assert_eq!(after_join, expected);
    let moved: Vec<&String> = cameras.iter().filter(|c| after_join[*c] != after_kill[*c]).collect();
    eprintln!("a join moved {} of {} cameras", moved.len(), cameras.len());
    assert!(moved.iter().all(|c| after_join[*c] == "node-d"), "a camera moved between old nodes: {after_join:?}");
    assert_eq!(moved.len(), per_node(&after_join, "node-d"));
    assert!(moved.len() < cameras.len() / 2, "{} moved", moved.len());

    // A geometry change through a node that does not analyse the camera: the owner applies it
    // within 2 s.
    let (camera, owner) = after_join.iter().find(|(_, o)| *o != "node-d").unwrap();
    let geometry = json!({ "lines": [{ "id": "y120", "a": [0, 120], "b": [320, 120] }] });
    let put = client.put(d.url(&format!("/api/v1/cameras/{camera}/geometry"))).json(&geometry).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let owner_svc = all.iter().find(|(n, _)| n == owner).unwrap().1;
    let changed = Instant::now();
    common::eventually("the owner to apply the new geometry", Duration::from_secs(2), || async {
        let c: Value =
            client.get(owner_svc.url(&format!("/api/v1/cameras/{camera}"))).send().await.ok()?.json().await.ok()?;
        (c["status"]["geometry_version"] == 2).then_some(())
    })
    .await;
    eprintln!("geometry applied by the owner {} ms after the change", changed.elapsed().as_millis());

    // A model reload through one node reaches every node: each installs version 2.
    let r = client.post(d.url("/api/v1/models/yolox_nano/reload")).json(&json!({ "file": "candidate.onnx" }));
    let r = r.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let reloaded = Instant::now();
    for (name, svc) in &alive {
        common::eventually("the reload on every node", Duration::from_secs(30), || async {
            let models: Value = client.get(svc.url("/api/v1/models")).send().await.ok()?.json().await.ok()?;
            let devices = models[0]["devices"].as_array()?;
            (models[0]["versions"].as_array()?.len() == 2 && devices.iter().all(|d| d["version"] == 2)).then_some(())
        })
        .await;
        eprintln!("{name} serves the reloaded model {} ms after the reload", reloaded.elapsed().as_millis());
    }

    // `its-analytics drain` (the preStop hook) empties node-d while it runs on.
    let out = std::process::Command::new(common::binary())
        .arg("drain")
        .env("ITS__NODE__ID", "node-d")
        .env("ITS__POSTGRES__URL", &env.postgres_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drained = each_analysed_once(&client, &alive, &cameras, Duration::from_secs(30)).await;
    assert_eq!(drained, after_kill, "node-d's cameras go back where rendezvous puts them without it");
    let page = client.get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(common::metric(&page, "its_node_cameras"), Some(0.0));
}

/// The model version each device of a node serves.
async fn serving(client: &reqwest::Client, svc: &Service) -> Option<Vec<u64>> {
    let models: Value = client.get(svc.url("/api/v1/models")).send().await.ok()?.json().await.ok()?;
    models[0]["devices"].as_array()?.iter().map(|d| d["version"].as_u64()).collect()
}

/// A device's automatic rollback on one node reaches every node, and a restart serves the
/// version rolled back to. The reloaded version takes one frame at a time (its input's batch
/// dimension fixed to 1, made here with the project's Python tooling): it passes the load and
/// smoke checks on every node, then fails the batches of two of the node analysing a camera.
#[tokio::test]
async fn a_rollback_on_one_node_reaches_every_node_and_outlives_a_restart() {
    let env = TestEnv::new().await;
    let client = common::client();
    let models = common::model_dir_with_candidate();
    let configured = models.path().join("yolox_nano.onnx");
    let script = format!(
        "import onnx; m = onnx.load({:?}); d = m.graph.input[0].type.tensor_type.shape.dim[0]; \
         d.ClearField('dim_param'); d.dim_value = 1; onnx.save(m, {:?})",
        configured,
        models.path().join("single.onnx")
    );
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(std::process::Command::new(python).args(["-c", &script]).status().unwrap().success());
    let vars = [
        ("ITS__MODEL__PATH", configured.to_str().unwrap()),
        ("ITS__BATCHING__CPU_MAX_BATCH", "2"),
        ("ITS__BATCHING__MAX_WAIT_MS", "100"),
    ];
    let (a, b) = tokio::join!(node(&env, "node-a", &vars), node(&env, "node-b", &vars));
    settled(&client, &a, 2).await;
    let r = client.post(a.url("/api/v1/models/yolox_nano/reload")).json(&json!({ "file": "single.onnx" }));
    let r = r.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    for svc in [&a, &b] {
        common::eventually("version 2 on every node", Duration::from_secs(30), || async {
            serving(&client, svc).await?.iter().all(|v| *v == 2).then_some(())
        })
        .await;
    }
    let body = json!({
        "id": "overpass",
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        "replay": { "loop": true, "realtime": false }
    });
    let r = client.post(a.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let registered = Instant::now();
    for svc in [&a, &b] {
        common::eventually("version 1 again on every node", Duration::from_secs(60), || async {
            serving(&client, svc).await?.iter().all(|v| *v == 1).then_some(())
        })
        .await;
    }
    eprintln!("rolled back on every node {} ms after the camera started", registered.elapsed().as_millis());
    let rows = env
        .db()
        .await
        .query("SELECT node, from_version, to_version FROM model_transitions WHERE transition = 'rolled_back'", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one device rolled back");
    let (by, from, to): (String, i32, i32) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!((from, to), (2, 1));
    // The node that did not roll back itself, restarted, serves the version rolled back to.
    let (other, id) = if by == "node-a" { (b, "node-b") } else { (a, "node-a") };
    let (status, _) = other.terminate();
    assert!(status.success());
    let restarted = node(&env, id, &vars).await;
    assert_eq!(serving(&client, &restarted).await, Some(vec![1]));
    let ready: Value = client.get(restarted.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert!(ready["checks"]["model"]["fallback"].is_null(), "{ready}");
}

#[tokio::test]
async fn a_drained_node_hands_a_file_camera_over_and_every_event_is_stored_once() {
    let env = TestEnv::new().await;
    let client = common::client();
    let (a, b) = tokio::join!(node(&env, "node-a", &[]), node(&env, "node-b", &[]));
    settled(&client, &a, 2).await;
    let body = json!({
        "id": "overpass",
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "fps": 30,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        "replay": { "loop": false, "realtime": false }
    });
    let r = client.post(a.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let owner = r.json::<Value>().await.unwrap()["owner"].as_str().unwrap().to_string();
    let (draining, successor) = if owner == "node-a" { (a, b) } else { (b, a) };
    common::until_a_few_events(&client, &draining, "overpass").await;

    // SIGTERM mid-clip: the node hands the camera over, delivers its outbox and exits.
    let (status, log) = draining.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("camera handed over: stopped"), "{log}");
    assert!(log.contains("drain: cameras handed over"), "{log}");
    // The hand-over gap: stopped on the draining node to started on its successor (one clock).
    let stopped = logged_at(&log, "overpass", "camera handed over: stopped").unwrap();
    let started = common::eventually("the successor's start in its log", Duration::from_secs(10), || async {
        logged_at(&successor.log_text(), "overpass", "camera lease acquired: started")
    })
    .await;
    let gap = (started - stopped).num_milliseconds();
    eprintln!("drain hand-over: stopped -> started on the next owner in {gap} ms");
    assert!((0..3_000).contains(&gap), "hand-over took {gap} ms");
    let counts = common::counts_when_ended(&client, &successor, "overpass").await;
    assert_eq!(counts["lines"][0]["in"], 27, "the single-node count of this clip is 27: {counts}");
    let total = 27;

    common::eventually("every event delivered", Duration::from_secs(30), || async {
        let page = client.get(successor.url("/metrics")).send().await.ok()?.text().await.ok()?;
        (common::metric(&page, "its_outbox_backlog")? == 0.0).then_some(())
    })
    .await;
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT event_id) FROM events
             WHERE camera_id = 'overpass' AND type = 'line_crossing'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (total, total), "postgres rows");
    let stream = common::stream_event_ids(&mut env.redis().await, env.key_prefix()).await;
    let crossings: Vec<&String> = stream.iter().filter(|id| id.contains("overpass")).collect();
    let distinct: BTreeSet<&&String> = crossings.iter().collect();
    assert_eq!(distinct.len(), crossings.len(), "an event entered the stream twice");
    let stored: Vec<String> = db
        .query("SELECT event_id FROM events WHERE camera_id = 'overpass'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &stored {
        assert!(stream.contains(id), "{id} is in PostgreSQL, not in the stream");
    }
}

/// A TCP relay to a store that the test can cut: once cut, every byte stalls both ways and new
/// connections hang, as behind a broken network link (not a refused connection).
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, flag.clone()));
                tokio::spawn(pump(ro, wi, flag.clone()));
            }
        });
        Self { port, cut }
    }
}

/// Copies until either side closes; while cut, holds every byte (the link is down).
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, cut: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// When a log line about `camera` containing `needle` was written (the log's RFC 3339 stamp).
fn logged_at(log: &str, camera: &str, needle: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    log.lines()
        .filter(|l| l.contains(needle) && l.contains(&format!("camera={camera}")))
        .filter_map(|l| chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next()?).ok())
        .next_back()
}

#[tokio::test]
async fn a_node_cut_off_from_the_stores_stops_before_its_cameras_move() {
    let env = TestEnv::new().await;
    let client = common::client();
    let postgres_port: u16 = env.postgres_url.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
    let redis_port: u16 = common::redis_url().rsplit_once(':').unwrap().1.trim_end_matches('/').parse().unwrap();
    let (pg, redis) = (Relay::start(postgres_port).await, Relay::start(redis_port).await);
    let cut_pg_url = format!("postgres://postgres@127.0.0.1:{}/{}", pg.port, env.name);
    let cut_redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let through_relays = [("ITS__POSTGRES__URL", cut_pg_url.as_str()), ("ITS__REDIS__URL", cut_redis_url.as_str())];
    let (p, q) = tokio::join!(node(&env, "node-p", &through_relays), node(&env, "node-q", &[]));
    settled(&client, &q, 2).await;
    let cameras: Vec<String> = (1..=6).map(|i| format!("part-{i}")).collect();
    for id in &cameras {
        let r = client.post(q.url("/api/v1/cameras")).json(&live_camera(id)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let both = [("node-p", &p), ("node-q", &q)];
    let mut owners = each_analysed_once(&client, &both, &cameras, Duration::from_secs(60)).await;

    // First only PostgreSQL: node-p still reaches Redis, where node-q's witness says it reaches
    // PostgreSQL, so node-p must stop. Then both stores: node-p cannot tell, and stops.
    for (links, cut) in [("PostgreSQL", vec![&pg]), ("PostgreSQL and Redis", vec![&pg, &redis])] {
        let on_p: Vec<String> = owners.iter().filter(|(_, o)| *o == "node-p").map(|(c, _)| c.clone()).collect();
        assert!(!on_p.is_empty(), "node-p got no camera: {owners:?}");
        for relay in &cut {
            relay.cut.store(true, Ordering::SeqCst);
        }
        let cut_at = Instant::now();
        let only_q = [("node-q", &q)];
        each_analysed_once(&client, &only_q, &cameras, Duration::from_secs(60)).await;
        eprintln!("{links} cut: node-p's cameras analysed again after {:.1} s", cut_at.elapsed().as_secs_f64());
        let (p_log, q_log) = (p.log_text(), q.log_text());
        let mut gaps = Vec::new();
        for camera in &on_p {
            let stopped = logged_at(&p_log, camera, "leases could not be renewed in time")
                .unwrap_or_else(|| panic!("node-p never stopped {camera}:\n{p_log}"));
            let started = logged_at(&q_log, camera, "camera lease acquired: started").unwrap();
            gaps.push((started - stopped).num_milliseconds());
        }
        eprintln!("{links} cut: stop on node-p -> start on node-q, ms: {gaps:?}");
        // The documented bound: no overlap at all (the node stops two heartbeats before its
        // leases can expire); measured on one machine's clock, so the logs compare.
        assert!(gaps.iter().all(|gap| *gap > 0), "a camera ran on two nodes at once: {gaps:?}");
        let page = client.get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("its_frames_processed_total{camera=\"part-"), "node-p still analyses:\n{page}");

        // The link heals: node-p comes back, settles, and takes its share again.
        for relay in &cut {
            relay.cut.store(false, Ordering::SeqCst);
        }
        let back = settled_leases(&client, &q, cameras.len(), "node-p").await;
        owners = each_analysed_once(&client, &both, &cameras, Duration::from_secs(30)).await;
        assert_eq!(owners, back);
    }
}

#[tokio::test]
async fn bad_cluster_input_is_refused_clearly() {
    // Every configuration mistake at once, exit 2.
    let out = std::process::Command::new(common::binary())
        .arg("serve")
        .env("ITS__NODE__CAPACITY_FPS", "0")
        .env("ITS__CLUSTER__HEARTBEAT_MS", "2000")
        .env("ITS__CLUSTER__TTL_MS", "1000")
        .env("ITS__NODE__ID", "no.dots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for key in ["node.capacity_fps", "cluster.ttl_ms", "node.id"] {
        assert!(stderr.contains(key), "{key} not reported: {stderr}");
    }

    // A node id a live node holds: refused at start, exit 2, with a message that says so.
    let env = TestEnv::new().await;
    let client = common::client();
    let first = node(&env, "twin", &[]).await;
    let outbox = std::env::temp_dir().join(format!("{}-twin2.outbox.redb", env.name));
    let out = std::process::Command::new(common::binary())
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ITS__NODE__ID", "twin")
        .env("ITS__HTTP__BIND", format!("127.0.0.1:{}", common::free_port()))
        .env("ITS__POSTGRES__URL", &env.postgres_url)
        .env("ITS__REDIS__URL", common::redis_url())
        .env("ITS__REDIS__KEY_PREFIX", env.key_prefix())
        .env("ITS__OUTBOX__PATH", &outbox)
        .env("ITS__AUTH__ENABLED", "false")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&outbox);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node id \"twin\" is in use by a live node"), "{stderr}");
    // The first one is untouched.
    let view: Value = client.get(first.url("/api/v1/cluster")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["nodes"][0]["id"], "twin");
    assert_eq!(view["nodes"][0]["state"], "live");

    // Unknown and malformed node ids in the API.
    for (path, status) in
        [("/api/v1/cluster/nodes/twin", 200), ("/api/v1/cluster/nodes/nobody", 404), ("/api/v1/cluster/nodes/a.b", 404)]
    {
        let r = client.get(first.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    let r = common::client_with_token(common::VIEWER_TOKEN).get(first.url("/api/v1/cluster")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "the cluster view is for admins");
}
