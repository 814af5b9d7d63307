//! The service on a Redis Cluster of six real nodes (`redis.mode = "cluster"`), fed by simulated
//! cameras: the primary that holds the events stream's slot is killed (SIGKILL) mid-stream; its
//! replica takes over, the service goes on publishing, and the stream read from the cluster holds
//! every event of PostgreSQL exactly once. Also: the live event stream (SSE, pub/sub on a seed)
//! and the cameras' cached state work in cluster mode.

mod common;

use std::time::{Duration, Instant};

use bb8_redis::redis;
use common::redis_cluster::OwnRedisCluster;
use common::{Service, TestEnv};
use serde_json::json;

const CAMERAS: usize = 4;

async fn event_rows(db: &bb8_postgres::tokio_postgres::Client) -> Vec<String> {
    let mut ids: Vec<String> =
        db.query("SELECT event_id FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_killed_primary_fails_over_and_every_event_lands_once() {
    let env = TestEnv::new().await;
    let mut cluster = OwnRedisCluster::start().await;
    let seeds = cluster.seeds();
    let svc = Service::start_with(
        &env,
        &[
            ("ITS__REDIS__MODE", "cluster"),
            ("ITS__REDIS__NODES", seeds.as_str()),
            ("ITS__SIMULATOR__ENABLED", "true"),
            ("ITS__MODEL__PATH", "models/no-such-model.pt"),
            ("ITS__BREAKERS__OPEN_FOR_MS", "1000"),
        ],
    )
    .await;
    let client = common::client();

    // The live stream subscribes on a seed; PUBLISH in a cluster reaches every node.
    let mut sse = client.get(svc.url("/api/v1/events/stream")).send().await.unwrap();
    assert_eq!(sse.status().as_u16(), 200);

    let geometry = json!({ "lines": [{ "id": "l1", "a": [0, 180], "b": [640, 180] }] });
    for i in 0..CAMERAS {
        let id = format!("sim-{i}");
        let body = json!({
            "id": id, "url": format!("sim://{id}?crossings_per_min=120"), "fps": 5.0, "geometry": geometry,
        });
        let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }

    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("event: line_crossing") {
        assert!(Instant::now() < deadline, "no live event in 60 s: {seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(30), sse.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(sse);

    let db = env.db().await;
    common::eventually("20 events in PostgreSQL", Duration::from_secs(60), || async {
        (event_rows(&db).await.len() >= 20).then_some(())
    })
    .await;

    // Each camera's state is cached in the cluster and served by the API.
    let mut conn = cluster.client().await;
    let state_key = format!("{}:state:sim-0", env.key_prefix());
    let cached: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(&state_key).query_async(&mut conn).await.unwrap();
    assert!(cached.contains_key("state"), "{cached:?}");
    let r = client.get(svc.url("/api/v1/cameras/sim-0/state")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // The primary of the stream's slot, and its replica.
    let stream_key = format!("{}:events", env.key_prefix());
    let slot = cluster.slot(&stream_key).await;
    let nodes = cluster.topology().await.unwrap();
    let primary = nodes.iter().find(|n| n.is_primary() && n.serves(slot)).unwrap().clone();
    let replica = nodes.iter().find(|n| n.primary_id == primary.id).unwrap().clone();
    let before_kill = event_rows(&db).await.len();

    let killed = Instant::now();
    cluster.kill(primary.port);
    let promoted = common::eventually("the replica to take over the slot", Duration::from_secs(30), || async {
        let nodes = cluster.topology().await?;
        let now = nodes.iter().find(|n| n.id == replica.id)?;
        (now.is_primary() && now.serves(slot)).then(|| killed.elapsed())
    })
    .await;
    eprintln!("failover: replica promoted {:.2} s after the primary was killed", promoted.as_secs_f64());
    let new_primary = cluster.node(replica.port).replication("role").await;
    assert_eq!(new_primary.as_deref(), Some("master"), "INFO replication of the promoted replica");

    // The promoted primary has no replica of its own: WAIT (redis.wait_replicas = 1 in cluster
    // mode) refuses the batches, which wait in the outbox, until one is back.
    common::eventually("a publish refused for want of a replica", Duration::from_secs(30), || async {
        svc.log_text().contains("Redis replicas acknowledged").then_some(())
    })
    .await;
    // The orchestrator brings the killed node back: it rejoins as the new primary's replica.
    cluster.restart(primary.port).await;
    cluster.wait_healthy().await;
    let nodes = cluster.topology().await.unwrap();
    let back = nodes.iter().find(|n| n.port == primary.port).unwrap();
    assert_eq!(back.primary_id, replica.id, "the old primary came back as a replica: {back:?}");

    let resumed = common::eventually("the stream to grow past the kill", Duration::from_secs(60), || {
        let (mut conn, key) = (conn.clone(), stream_key.clone());
        async move {
            let n: usize = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await.ok()?;
            (n >= before_kill + 10).then(|| killed.elapsed())
        }
    })
    .await;
    eprintln!(
        "failover: stream writable again (with a replica's WAIT ack) {:.2} s after the kill, the killed node \
         restarted in between",
        resumed.as_secs_f64()
    );

    // A graceful stop delivers what the connectors emitted; then both stores hold the same ids.
    let (status, log) = svc.terminate();
    assert!(status.success(), "{log}");
    let rows = event_rows(&db).await;
    assert!(rows.len() >= before_kill + 10, "{} events", rows.len());
    assert_eq!(
        common::stream_event_ids(&mut conn, env.key_prefix()).await,
        rows,
        "every event once in the cluster's stream"
    );
}
