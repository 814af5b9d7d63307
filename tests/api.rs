//! The control API over real HTTP against the real binary, PostgreSQL and Redis: validation at
//! the edge, the camera life cycle, persistence across restarts, credentials never returned.

mod common;

use common::{Service, TestEnv};
use serde_json::{json, Value};

fn camera(id: &str, url: &str) -> Value {
    json!({ "id": id, "url": url, "geometry": { "lines": [{ "id": "l1", "a": [0, 150], "b": [320, 150] }] } })
}

async fn post(client: &reqwest::Client, svc: &Service, body: reqwest::Body) -> (u16, Value) {
    let r = client
        .post(svc.url("/api/v1/cameras"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let client = common::client();
    let clip = common::clip("overpass_video03.avi");
    let file_url = format!("file://{}", clip.display());

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"id\": ".into(), 400, "EOF"),
        (
            "unknown field",
            json!({"id": "a", "url": "rtsp://h/x", "colour": 1}).to_string(),
            400,
            "unknown field `colour`",
        ),
        ("missing field", json!({"id": "a"}).to_string(), 400, "missing field `url`"),
        ("unsupported scheme", camera("a", "ftp://h/x").to_string(), 400, "scheme \\\"ftp\\\" is not supported"),
        ("protocol trick", camera("a", "concat:/etc/passwd|x").to_string(), 400, "not supported"),
        (
            "zero-length line",
            json!({"id": "a", "url": "rtsp://h/x", "geometry": {"lines": [{"id": "l", "a": [5, 5], "b": [5, 5]}]}})
                .to_string(),
            400,
            "zero-length",
        ),
        ("bad id", camera("no spaces allowed", "rtsp://h/x").to_string(), 400, "id must be"),
        (
            "missing file",
            camera("a", &format!("file://{}", clip.with_file_name("nope.avi").display())).to_string(),
            400,
            "file not found",
        ),
        (
            "file outside the media directory",
            camera("a", "file:///etc/hostname").to_string(),
            400,
            "only under cameras.media_dir",
        ),
        (
            "replay on a network camera",
            json!({"id": "a", "url": "rtsp://h/x", "replay": {"loop": true}}).to_string(),
            400,
            "replay applies",
        ),
        ("bad fps", json!({"id": "a", "url": &file_url, "fps": -3}).to_string(), 400, "fps must be"),
    ];
    for (what, body, status, needle) in cases {
        let (got, json) = post(&client, &svc, body.into()).await;
        assert_eq!(got, status, "{what}: {json}");
        let message = json["error"].as_str().unwrap_or_default().to_string();
        assert!(json.to_string().contains(needle), "{what}: {message:?} lacks {needle:?}");
    }

    // Several problems come back together.
    let (got, json) = post(&client, &svc, json!({"id": "bad id", "url": "ftp://h", "fps": 0}).to_string().into()).await;
    assert_eq!(got, 400);
    assert_eq!(json["error"].as_str().unwrap().matches(';').count(), 2, "{json}");

    // Unknown camera and unknown endpoint.
    for path in ["/api/v1/cameras/ghost", "/api/v1/cameras/ghost/counts", "/api/v1/nothing"] {
        let r = client.get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let r = client.delete(svc.url("/api/v1/cameras/ghost")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Nothing was stored by any of that.
    let rows = env.db().await.query_one("SELECT count(*) FROM cameras", &[]).await.unwrap();
    assert_eq!(rows.get::<_, i64>(0), 0);
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn cameras_persist_restart_and_never_show_their_password() {
    let env = TestEnv::new().await;
    let client = common::client();
    // Nothing listens on port 9: the camera keeps reconnecting, which is what a dead camera does.
    let secret_url = "rtsp://admin:s3cretPa55@127.0.0.1:9/stream";
    let svc = Service::start_with(
        &env,
        &[("ITS__CAMERAS__RECONNECT_INITIAL_MS", "100"), ("ITS__CAMERAS__RECONNECT_MAX_MS", "200")],
    )
    .await;

    let (status, created) = post(&client, &svc, camera("gate-1", secret_url).to_string().into()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["url"], "rtsp://admin:***@127.0.0.1:9/stream");
    let (status, dup) = post(&client, &svc, camera("gate-1", "rtsp://h/x").to_string().into()).await;
    assert_eq!(status, 409, "{dup}");

    // The stream fails and is retried, with the error reported and no password in it.
    let cam = common::eventually("reconnect attempts", std::time::Duration::from_secs(20), || async {
        let cam: Value = client.get(svc.url("/api/v1/cameras/gate-1")).send().await.ok()?.json().await.ok()?;
        (cam["status"]["reconnects"].as_u64()? >= 2).then_some(cam)
    })
    .await;
    assert!(cam["status"]["last_error"].as_str().is_some(), "{cam}");
    let list: Value = client.get(svc.url("/api/v1/cameras")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["cameras"].as_array().unwrap().len(), 1);
    let counts: Value =
        client.get(svc.url("/api/v1/cameras/gate-1/counts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["lines"][0]["id"], "l1");
    assert_eq!(counts["lines"][0]["in"], 0);
    let metrics = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("its_frames_decoded_total{camera=\"gate-1\"}"), "{metrics}");
    assert!(metrics.contains("analytics_latency_seconds"));

    // The password is stored (the camera must reconnect after a restart) ...
    let row = env.db().await.query_one("SELECT spec->>'url' FROM cameras WHERE id = 'gate-1'", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), secret_url);
    // ... but appears in no response and no log line.
    let log = svc.stop();
    for text in [created.to_string(), cam.to_string(), list.to_string(), counts.to_string(), metrics, log] {
        assert!(!text.contains("s3cretPa55"), "password leaked in: {text}");
    }

    // A restarted service runs the stored cameras again, each decode thread a supervised child.
    let svc = Service::start(&env).await;
    let cam: Value = client.get(svc.url("/api/v1/cameras/gate-1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cam["id"], "gate-1");
    let decode_children = || async {
        let system: Value = client.get(svc.url("/api/v1/system")).send().await.unwrap().json().await.unwrap();
        let children = system["supervisor"]["cameras"]["children"].as_array().unwrap().clone();
        children.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    common::eventually("the decode child", std::time::Duration::from_secs(10), || async {
        (decode_children().await == ["decode-gate-1"]).then_some(())
    })
    .await;
    let r = client.delete(svc.url("/api/v1/cameras/gate-1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    common::eventually("no decode child", std::time::Duration::from_secs(10), || async {
        decode_children().await.is_empty().then_some(())
    })
    .await;
    let r = client.get(svc.url("/api/v1/cameras/gate-1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let rows = env.db().await.query_one("SELECT count(*) FROM cameras", &[]).await.unwrap();
    assert_eq!(rows.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn geometry_is_validated_and_versioned() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let client = common::client();
    let (status, created) = post(&client, &svc, camera("gate-2", "rtsp://127.0.0.1:9/x").to_string().into()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"]["geometry_version"], 1);
    let put = |id: &str, body: Value| {
        let request = client.put(svc.url(&format!("/api/v1/cameras/{id}/geometry"))).json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Every problem at once: a bow-tie zone, a stop line on a plain zone, collinear calibration.
    let bad = json!({
        "zones": [{"id": "z", "polygon": [[0, 0], [10, 10], [10, 0], [0, 10]], "stop_line": [[0, 5], [10, 5]]}],
        "calibration": {"points": [
            {"image": [0, 0], "ground": [0, 0]}, {"image": [10, 10], "ground": [1, 1]},
            {"image": [20, 20], "ground": [2, 2]}, {"image": [30, 30], "ground": [3, 3]}
        ]}
    });
    let (status, error) = put("gate-2", bad).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"].as_str().unwrap();
    for needle in ["crosses itself", "stop_line", "collinear"] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    let (status, _) = put("gate-2", json!({"zones": [], "colour": 1})).await;
    assert_eq!(status, 400, "unknown keys are refused");
    let (status, _) = put("ghost", json!({})).await;
    assert_eq!(status, 404);

    let lane = json!({
        "lines": [{"id": "l1", "a": [0, 150], "b": [320, 150]}],
        "zones": [{
            "id": "lane-1",
            "polygon": [[0, 0], [160, 0], [160, 240], [0, 240]],
            "direction": [[80, 0], [80, 240]]
        }],
        "calibration": {"points": [
            {"image": [0, 0], "ground": [0, 60]}, {"image": [320, 0], "ground": [7, 60]},
            {"image": [0, 240], "ground": [0, 0]}, {"image": [320, 240], "ground": [7, 0]}
        ]}
    });
    let (status, stored) = put("gate-2", lane.clone()).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["version"], 2);
    let current: Value =
        client.get(svc.url("/api/v1/cameras/gate-2/geometry")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (current["version"].clone(), current["geometry"]["zones"][0]["id"].clone()),
        (json!(2), json!("lane-1"))
    );
    let first: Value =
        client.get(svc.url("/api/v1/cameras/gate-2/geometry?version=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["geometry"]["zones"], json!([]), "{first}");
    assert_eq!(first["geometry"]["lines"][0]["id"], "l1");
    let r = client.get(svc.url("/api/v1/cameras/gate-2/geometry?version=9")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let cam: Value = client.get(svc.url("/api/v1/cameras/gate-2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cam["status"]["geometry_version"], 2);
    assert_eq!(cam["geometry"]["zones"][0]["id"], "lane-1");
    let row = env.db().await.query_one("SELECT geometry_version, spec->'geometry' FROM cameras", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, Value>(1), current["geometry"], "the stored spec carries the current geometry");

    // The live state (from Redis) follows the geometry before any frame arrives.
    let state: Value = common::eventually("the state of version 2", std::time::Duration::from_secs(10), || async {
        let s: Value = client.get(svc.url("/api/v1/cameras/gate-2/state")).send().await.ok()?.json().await.ok()?;
        (s["geometry_version"] == 2).then_some(s)
    })
    .await;
    assert_eq!(state["lines"][0]["in"], 0, "{state}");
    assert_eq!(state["zones"][0], json!({"id": "lane-1", "kind": "lane", "present": 0}));
    assert_eq!(state["open_incidents"], json!([]));
    let r = client.get(svc.url("/api/v1/cameras/ghost/state")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // History endpoints check their parameters, all problems at once.
    for (path, needle) in [
        ("/api/v1/events?type=bogus", "type"),
        ("/api/v1/events?cursor=garbage", "cursor"),
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?camera_id=bad%20id&limit=5000", "limit must"),
        ("/api/v1/events?from=yesterday", "deserialize"),
        ("/api/v1/events/stream?type=bogus", "type"),
        ("/api/v1/cameras/gate-2/analytics?interval=5m", "interval"),
        ("/api/v1/cameras/gate-2/analytics?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "before"),
        (
            "/api/v1/cameras/gate-2/analytics?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=1h",
            "at most 31 days",
        ),
        (
            "/api/v1/cameras/gate-2/analytics?from=2025-01-01T00:00:00Z&to=2025-01-04T00:00:00Z&interval=1m",
            "at most 2 days",
        ),
    ] {
        let r = client.get(svc.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
    }
    let page: Value =
        client.get(svc.url("/api/v1/events?camera_id=gate-2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page, json!({"events": [], "next_cursor": null}));
    let history: Value = client
        .get(svc.url("/api/v1/cameras/gate-2/analytics?interval=15m"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["elements"], json!([]), "{history}");
    let r = client.get(svc.url("/api/v1/cameras/ghost/analytics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// A database written by the first release (lines at the top level of the stored camera) is
/// upgraded in place: the camera starts again with its lines as geometry version 1.
#[tokio::test]
async fn cameras_stored_before_geometry_existed_start_after_the_upgrade() {
    let env = TestEnv::new().await;
    let db = env.db().await;
    db.batch_execute(
        "CREATE TABLE schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO schema_migrations (version) VALUES (1);",
    )
    .await
    .unwrap();
    db.batch_execute(include_str!("../src/db/0001_init.sql")).await.unwrap();
    let old = json!({"id": "old-cam", "name": "", "url": "rtsp://127.0.0.1:9/x",
                     "lines": [{"id": "l1", "name": "", "a": [0.0, 150.0], "b": [320.0, 150.0]}]});
    db.execute("INSERT INTO cameras (id, spec) VALUES ('old-cam', $1)", &[&old]).await.unwrap();

    let svc = Service::start(&env).await;
    let client = common::client();
    let cam: Value = client.get(svc.url("/api/v1/cameras/old-cam")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cam["geometry"]["lines"][0]["id"], "l1", "{cam}");
    assert_eq!(cam["status"]["geometry_version"], 1);
    let v1: Value =
        client.get(svc.url("/api/v1/cameras/old-cam/geometry?version=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v1["geometry"]["lines"][0]["id"], "l1", "{v1}");
    let r = client.put(svc.url("/api/v1/cameras/old-cam/geometry")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2, "the next version follows the migrated one");
    let log = svc.stop();
    assert!(!log.contains("stored camera not started"), "{log}");
}

#[tokio::test]
async fn health_reports_dependencies() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let client = common::client();
    let live = client.get(svc.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let ready: Value = client.get(svc.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["postgres"]["ok"], true);
    assert_eq!(ready["checks"]["redis"]["ok"], true);
    assert_eq!(ready["checks"]["model"]["devices"][0]["name"], "cpu");
    assert_eq!(ready["checks"]["model"]["devices"][0]["alive"], true);
    let breakers = ready["checks"]["breakers"]["breakers"].as_array().unwrap();
    assert_eq!(
        breakers.iter().map(|b| (b["name"].as_str().unwrap(), b["state"].as_str().unwrap())).collect::<Vec<_>>(),
        [("redis", "closed"), ("postgres", "closed")]
    );

    let system: Value = client.get(svc.url("/api/v1/system")).send().await.unwrap().json().await.unwrap();
    let pools = system["pools"].as_array().unwrap();
    assert_eq!(pools.iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(), ["redis", "postgres"]);
    for pool in pools {
        assert_eq!(pool["max_size"], 8, "{system}");
        assert!(pool["gets_direct"].as_u64().unwrap() + pool["gets_waited"].as_u64().unwrap() >= 1, "{system}");
        assert_eq!(pool["gets_timed_out"], 0, "{system}");
    }
    assert_eq!(system["breakers"].as_array().unwrap().len(), 2);
    assert_eq!(system["events"]["outbox_backlog"], 0, "{system}");
    let children: Vec<_> = system["supervisor"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["state"].as_str().unwrap(), c["restarts"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        children,
        [("infer-cpu", "running", 0), ("shard-0", "running", 0), ("shard-1", "running", 0)],
        "{system}"
    );
    assert_eq!(system["supervisor"]["escalated"], Value::Null);
    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for series in [
        "its_pool_connections{pool=\"postgres\",kind=\"idle\"}",
        "its_pool_events_total{pool=\"redis\",kind=\"get_direct\"}",
        "its_breaker_state{breaker=\"postgres\"} 0",
    ] {
        assert!(page.contains(series), "{series} missing:\n{page}");
    }
}

#[test]
fn invalid_configuration_is_refused_with_every_error() {
    let out = std::process::Command::new(common::binary())
        .arg("serve")
        .env("ITS__HTTP__BIND", "not-an-address")
        .env("ITS__BATCHING__MAX_BATCH", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.bind") && stderr.contains("batching.max_batch"), "{stderr}");
}
