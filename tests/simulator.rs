//! The simulator end to end: the real binary with `simulator.enabled`, no model file, 40
//! `sim://` cameras; their synthetic crossings go through the real device batching, connector
//! shards, tracker, line counting, outbox, Redis and PostgreSQL, at the configured rate.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Service, TestEnv};
use serde_json::json;

const CAMERAS: usize = 40;
const FPS: f64 = 2.0;
const CROSSINGS_PER_MIN: f64 = 60.0;
/// Events each camera must have before the service is stopped (about 20 s of frames).
const EVENTS_PER_CAMERA: i64 = 20;

#[tokio::test]
async fn simulated_cameras_cross_their_line_at_their_rate_into_postgres_and_redis() {
    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[
            ("ITS__SIMULATOR__ENABLED", "true"),
            // Nothing reads the model file while the simulator runs.
            ("ITS__MODEL__PATH", "models/no-such-model.pt"),
            ("ITS__RATE_LIMIT__PER_SECOND", "1000"),
            ("ITS__RATE_LIMIT__BURST", "1000"),
        ],
    )
    .await;
    let client = common::client();

    let models: serde_json::Value = client.get(svc.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models[0]["name"], "simulated", "{models}");
    let reload = client.post(svc.url("/api/v1/models/simulated/reload")).json(&json!({})).send().await.unwrap();
    assert_eq!(reload.status().as_u16(), 400, "the synthetic detector has no file to reload");

    let real = json!({ "id": "real", "url": "rtsp://cam.example/live" });
    let r = client.post(svc.url("/api/v1/cameras")).json(&real).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("only sim://"));

    let geometry = json!({ "lines": [{ "id": "l1", "a": [0, 180], "b": [640, 180] }] });
    for i in 0..CAMERAS {
        let id = format!("sim-{i:02}");
        let body = json!({
            "id": id,
            "url": format!("sim://{id}?crossings_per_min={CROSSINGS_PER_MIN}"),
            "fps": FPS,
            "geometry": geometry,
        });
        let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }

    let db = env.db().await;
    common::eventually("every camera to have its first events", Duration::from_secs(90), || async {
        let rows = db
            .query("SELECT camera_id FROM events GROUP BY camera_id HAVING count(*) >= $1", &[&EVENTS_PER_CAMERA])
            .await
            .ok()?;
        (rows.len() == CAMERAS).then_some(())
    })
    .await;
    // A graceful stop delivers every event the connectors emitted to both stores.
    let (status, log) = svc.terminate();
    assert!(status.success(), "{log}");

    let rows = db
        .query("SELECT event_id, camera_id, type, line_id, direction, ts FROM events ORDER BY camera_id, ts", &[])
        .await
        .unwrap();
    let mut per_camera: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in &rows {
        assert_eq!(
            (row.get::<_, String>(2), row.get::<_, String>(3), row.get::<_, String>(4)),
            ("line_crossing".into(), "l1".into(), "in".into())
        );
        let ts: std::time::SystemTime = row.get(5);
        let seconds = ts.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        per_camera.entry(row.get(1)).or_default().push(seconds);
    }
    assert_eq!(per_camera.len(), CAMERAS, "every camera counted");
    let period = 60.0 / CROSSINGS_PER_MIN;
    for (camera, times) in &per_camera {
        // One vehicle crosses every `period` seconds of frame time, each counted on the first
        // frame after it crossed: from the first event to the last, the media time says how many.
        let span = times.last().unwrap() - times[0];
        let expected = (span / period).round() as usize + 1;
        let missed_allowed = 2.max(expected / 20);
        assert!(
            times.len() <= expected && times.len() + missed_allowed >= expected,
            "{camera}: {} events over {span:.1} s of frame time, expected {expected}",
            times.len()
        );
        assert!(times.windows(2).all(|w| w[1] - w[0] > period / 2.0), "{camera}: a crossing counted twice");
    }

    let mut row_ids: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    row_ids.sort();
    let stream_ids = common::stream_event_ids(&mut env.redis().await, env.key_prefix()).await;
    assert_eq!(stream_ids, row_ids, "the Redis stream and PostgreSQL hold the same events");
}
