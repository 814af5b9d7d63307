//! One registered camera on the real overpass clip, end to end: FFmpeg decode, YOLOX-Nano on
//! libtorch, tracking, counting, then Redis (pub/sub and stream), PostgreSQL and the API must agree.

mod common;

use std::time::Duration;

use bb8_redis::redis;
use common::{Service, TestEnv};
use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::test]
async fn redis_stream_postgres_and_api_agree_for_one_camera() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let client = reqwest::Client::new();

    // Subscribe before the camera starts so no live message is missed.
    let mut pubsub = redis::Client::open(common::redis_url()).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{}:events:overpass", env.key_prefix())).await.unwrap();
    let mut messages = pubsub.into_on_message();

    let clip = common::clip("overpass_video03.avi");
    let body = json!({
        "id": "overpass",
        "name": "overpass, both lanes",
        "url": format!("file://{}", clip.display()),
        "fps": 30,
        "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }],
        // As fast as the device takes frames, none dropped: the counts are then deterministic.
        "replay": { "loop": false, "realtime": false }
    });
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());

    let counts: Value = common::eventually("the clip to end", Duration::from_secs(300), || async {
        let c: Value = client.get(svc.url("/api/v1/cameras/overpass/counts")).send().await.ok()?.json().await.ok()?;
        (c["status"]["state"] == "ended").then_some(c)
    })
    .await;
    let line = &counts["lines"][0];
    let api_total = line["in"].as_u64().unwrap() + line["out"].as_u64().unwrap();
    assert_eq!(counts["status"]["events"].as_u64().unwrap(), api_total);
    assert_eq!(counts["status"]["frames_dropped"], 0);
    assert!(counts["status"]["frames_processed"].as_u64().unwrap() >= 1690, "{counts}");
    assert!((26..=28).contains(&api_total), "ground truth is 27 crossings, counted {api_total}: {counts}");
    assert_eq!(line["out"], 0, "all traffic approaches the camera");

    // Delivery is asynchronous: wait until the publisher reports everything delivered.
    common::eventually("every event to be published", Duration::from_secs(30), || async {
        let page = client.get(svc.url("/metrics")).send().await.ok()?.text().await.ok()?;
        (common::metric(&page, "its_events_published_total")? as u64 >= api_total).then_some(())
    })
    .await;

    let mut redis = env.redis().await;
    let stream = format!("{}:events", env.key_prefix());
    // XRANGE: [[id, [field, value, ...]], ...]
    let entries: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut redis).await.unwrap();
    assert_eq!(entries.len() as u64, api_total, "redis stream entries");

    let db = env.db().await;
    let rows = db
        .query("SELECT event_id, type, camera_id, line_id, direction, class FROM events ORDER BY ts, event_id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, api_total, "postgres rows");

    // The same events, by id, in both stores.
    let mut stream_ids: Vec<String> = entries
        .iter()
        .map(|(_, fields)| fields.chunks(2).find(|kv| kv[0] == "event_id").unwrap()[1].clone())
        .collect();
    let mut row_ids: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    stream_ids.sort();
    row_ids.sort();
    assert_eq!(stream_ids, row_ids);
    for row in &rows {
        assert_eq!(row.get::<_, String>(1), "line_crossing");
        assert_eq!(row.get::<_, String>(2), "overpass");
        assert_eq!(row.get::<_, String>(3), "y150");
        assert_eq!(row.get::<_, String>(4), "in");
    }

    // Every event was also published live, with the documented fields.
    let mut live = Vec::new();
    while (live.len() as u64) < api_total {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.expect("live message").unwrap();
        live.push(serde_json::from_str::<Value>(&msg.get_payload::<String>().unwrap()).unwrap());
    }
    for event in &live {
        for field in ["event_id", "type", "camera_id", "ts", "frame_seq", "track_id", "class", "line_id", "direction"] {
            assert!(!event[field].is_null(), "{field} missing in {event}");
        }
        assert!(chrono::DateTime::parse_from_rfc3339(event["ts"].as_str().unwrap()).is_ok());
    }
    let by_class: u64 = line["by_class"].as_object().unwrap().values().map(|d| d["in"].as_u64().unwrap()).sum();
    assert_eq!(by_class, api_total);
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}
