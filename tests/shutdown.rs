//! SIGTERM stops the service in order: cameras first, then every event already emitted is
//! delivered to Redis and PostgreSQL before the process exits.

mod common;

use std::time::Duration;

use bb8_redis::redis;
use common::{Service, TestEnv};
use serde_json::{json, Value};

#[tokio::test]
async fn sigterm_delivers_every_emitted_event_before_exit() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let http = reqwest::Client::new();
    let clip = common::clip("overpass_video03.avi");
    let body = json!({
        "id": "overpass",
        "url": format!("file://{}", clip.display()),
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        "replay": { "realtime": false }
    });
    let r = http.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Stop mid-clip, while events are still being emitted.
    common::eventually("a few events", Duration::from_secs(120), || async {
        let c: Value = http.get(svc.url("/api/v1/cameras/overpass")).send().await.ok()?.json().await.ok()?;
        (c["status"]["events"].as_u64()? >= 3).then_some(())
    })
    .await;

    let (status, log) = tokio::task::spawn_blocking(move || svc.terminate()).await.unwrap();
    assert!(status.success(), "exit {status:?}:\n{log}");
    let line = log.lines().find(|l| l.contains("shutdown: every event delivered")).unwrap_or_else(|| panic!("{log}"));
    let field = |name: &str| -> u64 {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let accepted = field("accepted");
    assert_eq!(accepted, field("delivered"));
    assert!(accepted >= 3);

    let rows: i64 = env.db().await.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(rows as u64, accepted, "postgres rows");
    let mut redis = env.redis().await;
    let stream_len: u64 = redis::cmd("XLEN").arg(format!("{}:events", env.key_prefix())).query_async(&mut redis).await.unwrap();
    assert_eq!(stream_len, accepted, "redis stream entries");
}
