//! One registered camera on the real overpass clip, end to end: FFmpeg decode, YOLOX-Nano on
//! libtorch, tracking, counting, then Redis (pub/sub, stream, state), PostgreSQL and the API
//! (counts, SSE, event history, measures) must agree; and a geometry change mid-stream.

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
    let client = common::client();

    // Subscribe before the camera starts so no live message is missed.
    let mut pubsub = redis::Client::open(common::redis_url()).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{}:events:overpass", env.key_prefix())).await.unwrap();
    let mut messages = pubsub.into_on_message();
    // And to the API's live stream (Server-Sent Events).
    let mut sse = client.get(svc.url("/api/v1/events/stream?type=line_crossing")).send().await.unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");

    let clip = common::clip("overpass_video03.avi");
    let body = json!({
        "id": "overpass",
        "name": "overpass, both lanes",
        "url": format!("file://{}", clip.display()),
        "fps": 30,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        // As fast as the device takes frames, none dropped: the counts are then deterministic.
        "replay": { "loop": false, "realtime": false }
    });
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());

    let counts = common::counts_when_ended(&client, &svc, "overpass").await;
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

    let stream_ids = common::stream_event_ids(&mut env.redis().await, env.key_prefix()).await;
    assert_eq!(stream_ids.len() as u64, api_total, "redis stream entries");

    let db = env.db().await;
    let rows = db
        .query("SELECT event_id, type, camera_id, line_id, direction, class FROM events ORDER BY ts, event_id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, api_total, "postgres rows");

    // The same events, by id, in both stores.
    let mut row_ids: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
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
        for field in [
            "event_id",
            "type",
            "camera_id",
            "ts",
            "frame_seq",
            "geometry_version",
            "track_id",
            "class",
            "line_id",
            "direction",
        ] {
            assert!(!event[field].is_null(), "{field} missing in {event}");
        }
        assert!(chrono::DateTime::parse_from_rfc3339(event["ts"].as_str().unwrap()).is_ok());
    }
    let by_class: u64 = line["by_class"].as_object().unwrap().values().map(|d| d["in"].as_u64().unwrap()).sum();
    assert_eq!(by_class, api_total);
    assert!(live.iter().all(|e| e["speed_kmh"].is_null()), "no calibration, no speed");

    // The SSE stream carried the same events.
    let mut sse_ids = Vec::new();
    let mut buffer = String::new();
    while (sse_ids.len() as u64) < api_total {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), sse.chunk()).await.expect("SSE event").unwrap().unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ")) {
                assert!(frame.contains("event: line_crossing\ndata: {"), "{frame}");
                sse_ids.push(id.to_string());
            }
        }
    }
    sse_ids.sort();
    assert_eq!(sse_ids, row_ids, "SSE events");

    // History with cursor paging: pages of 10 hold every event once, in order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = svc.url("/api/v1/events?camera_id=overpass&type=line_crossing&limit=10");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 10);
        paged.extend(events.iter().map(|e| e["event_id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged.len() as u64, api_total);
    paged.sort();
    assert_eq!(paged, row_ids, "paged events");
    let none: Value =
        client.get(svc.url("/api/v1/events?type=incident_opened")).send().await.unwrap().json().await.unwrap();
    assert_eq!(none["events"], json!([]));

    // Per-minute measures were stored at the end of the stream; a 15-minute roll-up holds them all.
    let history: Value = common::eventually("the measures to be stored", Duration::from_secs(60), || async {
        let h: Value = client
            .get(svc.url("/api/v1/cameras/overpass/analytics?interval=15m"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let total: u64 = h["elements"].as_array()?.first()?["intervals"]
            .as_array()?
            .iter()
            .map(|i| {
                i["measures"]["volume"]["in"].as_object().map_or(0, |c| c.values().filter_map(Value::as_u64).sum())
            })
            .sum();
        (total == api_total).then_some(h)
    })
    .await;
    assert_eq!(history["elements"][0]["id"], "y150");
    assert_eq!(history["elements"][0]["geometry_version"], 1);

    // The live state, served from Redis, ends with the final counts.
    let state: Value = common::eventually("the final state", Duration::from_secs(30), || async {
        let s: Value = client.get(svc.url("/api/v1/cameras/overpass/state")).send().await.ok()?.json().await.ok()?;
        (s["lines"][0]["in"].as_u64()? == api_total).then_some(s)
    })
    .await;
    assert_eq!(state["geometry_version"], 1, "{state}");
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// A calibrated geometry put while the clip runs: later events carry version 2 and speeds,
/// earlier ones version 1 and none, and no crossing is lost or counted twice in the switch.
#[tokio::test]
async fn a_geometry_change_mid_stream_is_a_new_version() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;
    let shipped = common::overpass_geometry();
    let r = client.put(svc.url("/api/v1/cameras/overpass/geometry")).json(&shipped).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    common::counts_when_ended(&client, &svc, "overpass").await;
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");

    let db = env.db().await;
    let rows = db
        .query("SELECT geometry_version, payload FROM events WHERE type = 'line_crossing' AND line_id = 'y150'", &[])
        .await
        .unwrap();
    let (v1, v2): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.get::<_, i32>(0) == 1);
    assert!(v1.len() >= 3 && !v2.is_empty(), "{} then {}", v1.len(), v2.len());
    // One vehicle may sit on the line at the switch: the hand count is 27 +-1.
    assert!((26..=28).contains(&rows.len()), "{} crossings", rows.len());
    for row in &v1 {
        assert!(row.get::<_, Value>(1)["speed_kmh"].is_null());
    }
    for row in &v2 {
        let payload = row.get::<_, Value>(1);
        assert_eq!(payload["geometry_version"], 2);
        let speed = payload["speed_kmh"].as_f64().unwrap_or_else(|| panic!("no speed: {payload}"));
        assert!((5.0..=200.0).contains(&speed), "{payload}");
        assert!(payload["speed_uncertainty_kmh"].as_f64().is_some(), "{payload}");
    }
    // Minute rows name their version too; the lanes exist only in version 2.
    let lanes: i64 = db
        .query_one("SELECT count(*) FROM analytics_1m WHERE element_kind = 'lane' AND geometry_version = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert!(lanes >= 2, "{lanes} lane rows");
    // Their rows carry the shipped lanes' 2 m loops and what their occupancy is made of.
    let looped: i64 = db
        .query_one(
            "SELECT count(*) FROM analytics_1m WHERE element_kind = 'lane' AND geometry_version = 2 \
             AND (measures->>'loop_length_m')::float8 = 2 AND measures ? 'loop_occupied_frames'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(looped, lanes);
    let stray: i64 = db
        .query_one("SELECT count(*) FROM analytics_1m WHERE element_kind = 'lane' AND geometry_version = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stray, 0);
}

/// `bench --cameras 2 --fps 5 --duration-s 4` through the library: two live cameras on the real
/// clip (each from its own start frame) and the real model in one pipeline.
#[test]
fn a_cameras_trial_measures_two_live_cameras() {
    ffmpeg_next::init().unwrap();
    let settings = its_analytics::settings::Settings::load(None).unwrap();
    let line = its_analytics::analyze::parse_line(1, "0,150,320,150").unwrap();
    let options = its_analytics::analyze::cameras::TrialOptions {
        cameras: 2,
        fps: 5.0,
        duration: Duration::from_secs(4),
        warm_up: Duration::from_secs(2),
        source: common::clip("overpass_video03.avi").display().to_string(),
        geometry: its_analytics::analytics::geometry::Geometry { lines: vec![line], ..Default::default() },
    };
    let report = actix::System::new()
        .block_on(its_analytics::analyze::cameras::trial(&settings, &options))
        .expect("the trial runs");
    assert_eq!(report.cameras, 2);
    assert!(report.camera_errors.is_empty(), "{:?}", report.camera_errors);
    assert_eq!(report.frames_dropped, 0, "{report:?}");
    // 2 cameras x 5 frames/s x 4 s = 40 frames, give or take the window's edges.
    assert!((30..=50).contains(&report.frames), "{report:?}");
    assert!(report.latency.frame_ms_p99 > 0.0 && report.latency.frame_ms_p50 <= report.latency.frame_ms_p99);
    assert!(report.cpu_per_camera > 0.0 && report.rss_mib_per_camera > 0.0, "{report:?}");
    assert!(report.rss_mib_after >= report.rss_mib_before);
}
