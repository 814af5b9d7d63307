//! Candidate models on the real model and the real clip: a shadow of the same weights agrees fully
//! and counts alike and is promoted; a candidate with perturbed weights is refused, and a forced
//! canary of it rolls back by itself with every event delivered once; bad requests change nothing;
//! a restart serves the promoted version.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bb8_redis::redis;
use common::{Service, TestEnv};
use serde_json::{json, Value};

/// Writes a variant of the project's model with `scripts/model_variant.py`.
fn variant(dir: &Path, name: &str, noise: f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/model_variant.py"))
        .arg(root.join("models/yolox_nano.onnx"))
        .arg(dir.join(name))
        .args(["--noise", &noise.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "model_variant.py {name}");
}

/// The model's system events on the Redis stream: (transition, to_version).
async fn transitions(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<(String, u64)> {
    let entries: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg(format!("{prefix}:system")).arg("-").arg("+").query_async(conn).await.unwrap();
    entries
        .iter()
        .map(|(_, fields)| serde_json::from_str::<Value>(&fields[1]).unwrap())
        .filter(|e| e["type"] == "model_transition")
        .map(|e| (e["transition"].as_str().unwrap().to_string(), e["to_version"].as_u64().unwrap_or(0)))
        .collect()
}

/// Registers the overpass clip as camera `id`, analysed at 15 frames/s.
async fn camera(client: &reqwest::Client, svc: &Service, id: &str, realtime: bool) {
    let body = json!({
        "id": id,
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "fps": 15,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        "replay": { "realtime": realtime }
    });
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

/// A camera id whose stable position puts it in a canary of half the cameras.
fn canary_camera() -> String {
    use its_analytics::actors::gpu::shadow::camera_position;
    (0..).map(|i| format!("canary-{i}")).find(|id| camera_position(id) < 0.5).unwrap()
}

#[tokio::test]
async fn candidates_are_judged_in_shadow_promoted_or_rolled_back() {
    let models = tempfile::tempdir().unwrap();
    let serving = models.path().join("yolox_nano.onnx");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/yolox_nano.onnx"), &serving).unwrap();
    variant(models.path(), "same.onnx", 0.0);
    variant(models.path(), "perturbed.onnx", 0.1);

    let env = TestEnv::new().await;
    let lifecycle = [
        ("ITS__MODEL__PATH", serving.to_str().unwrap()),
        ("ITS__MODEL__LIFECYCLE__MIN_FRAMES", "60"),
        ("ITS__MODEL__LIFECYCLE__SHADOW_QUEUE", "1024"),
        ("ITS__MODEL__LIFECYCLE__CHECK_INTERVAL_MS", "200"),
    ];
    let svc = Service::start_with(&env, &lifecycle).await;
    let client = common::client();
    let base = "/api/v1/models/yolox_nano/candidates";
    let get = |version: u64| {
        let client = client.clone();
        let url = svc.url(&format!("{base}/{version}"));
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let promote = |version: u64, body: Value| client.post(svc.url(&format!("{base}/{version}/promote"))).json(&body);

    // The same weights in shadow on every frame.
    let r = client.post(svc.url(base)).json(&json!({ "file": "same.onnx", "share": 1.0 })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let same: Value = r.json().await.unwrap();
    let v_same = same["version"]["version"].as_u64().unwrap();
    assert_eq!((same["stage"].as_str(), same["reference_version"].as_u64()), (Some("shadow"), Some(1)), "{same}");

    // Bad requests: clear 4xx, nothing changes.
    let r = promote(v_same, json!({ "share": 0.5 })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "promoting a candidate that never ran");
    assert!(r.text().await.unwrap().contains("not run on a single frame"));
    for share in [1.5, 0.0, -0.1] {
        let r = promote(v_same, json!({ "share": share })).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "share {share}");
    }
    for (path, status) in
        [(format!("{base}/99"), 404), (format!("{base}/x"), 400), ("/api/v1/models/other/candidates/2".into(), 404)]
    {
        assert_eq!(client.get(svc.url(&path)).send().await.unwrap().status().as_u16(), status, "{path}");
    }
    let r = promote(99, json!({ "share": 0.5 })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client.post(svc.url(base)).json(&json!({ "file": "perturbed.onnx" })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "one candidate at a time");
    for body in [
        json!({ "file": "same.onnx", "shar": 1 }),
        json!({ "file": "../x.onnx" }),
        json!({ "file": "same.onnx", "share": 2 }),
    ] {
        let r = client.post(svc.url(base)).json(&body).send().await.unwrap();
        assert!([400, 409].contains(&r.status().as_u16()), "{body}: {}", r.status());
    }
    assert_eq!(get(v_same).await["stage"], "shadow");

    // The clip through the serving model, every analysed frame also through the candidate.
    camera(&client, &svc, "overpass", false).await;
    let counts = common::counts_when_ended(&client, &svc, "overpass").await;
    let processed = counts["status"]["frames_processed"].as_u64().unwrap();
    let view = common::eventually("the shadow to catch up", Duration::from_secs(120), || async {
        let view = get(v_same).await;
        (view["comparison"]["frames"].as_u64()? >= processed).then_some(view)
    })
    .await;
    let comparison = &view["comparison"];
    let f1 = comparison["overall"]["f1"].as_f64().unwrap();
    eprintln!("same weights: {} frames compared, F1 {f1}, dropped {}", comparison["frames"], comparison["dropped"]);
    assert_eq!(comparison["dropped"], 0, "{view}");
    assert!(f1 >= 0.999, "the same weights agree: {view}");
    let shadow_counts = &comparison["counts"][0];
    assert_eq!(shadow_counts["reference"], shadow_counts["candidate"], "{view}");
    let served = counts["lines"][0]["in"].as_u64().unwrap() + counts["lines"][0]["out"].as_u64().unwrap();
    let shadowed =
        shadow_counts["candidate"][0]["in"].as_u64().unwrap() + shadow_counts["candidate"][0]["out"].as_u64().unwrap();
    eprintln!("line y150: {served} counted by the service, {shadowed} by each shadow tracker");
    assert_eq!(view["shortfalls"], json!([]), "{view}");

    // Two promotions at once: one serves the candidate everywhere, the other is refused.
    let (a, b) =
        tokio::join!(promote(v_same, json!({ "share": 1.0 })).send(), promote(v_same, json!({ "share": 1.0 })).send());
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(get(v_same).await["stage"], "promoted");
    let listed: Value = client.get(svc.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["devices"][0]["version"].as_u64(), Some(v_same), "{listed}");

    // Perturbed weights: judged in shadow, refused, then a forced canary rolls back by itself.
    let r = client.post(svc.url(base)).json(&json!({ "file": "perturbed.onnx", "share": 1.0 })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v_bad = r.json::<Value>().await.unwrap()["version"]["version"].as_u64().unwrap();
    let id = canary_camera();
    camera(&client, &svc, &id, true).await;
    let judged = common::eventually("the perturbed candidate judged", Duration::from_secs(120), || async {
        let view = get(v_bad).await;
        (view["comparison"]["frames"].as_u64()? >= 60).then_some(view)
    })
    .await;
    let bad_f1 = judged["comparison"]["overall"]["f1"].as_f64().unwrap();
    eprintln!(
        "perturbed weights: F1 {bad_f1} over {} frames; {}",
        judged["comparison"]["frames"], judged["shortfalls"]
    );
    assert!(bad_f1 < 0.9, "{judged}");
    let r = promote(v_bad, json!({ "share": 0.5 })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert!(r.text().await.unwrap().contains("agreement F1"));
    let r = promote(v_bad, json!({ "share": 1.0, "force": true })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "serving everywhere is never forced");
    assert_eq!(get(v_bad).await["stage"], "shadow");
    let started = Instant::now();
    let r = promote(v_bad, json!({ "share": 0.5, "force": true })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["stage"], "canary");
    let rolled_back = common::eventually("the canary to roll back", Duration::from_secs(120), || async {
        let view = get(v_bad).await;
        (view["stage"] == "rolled_back").then_some(view)
    })
    .await;
    eprintln!(
        "canary rolled back {:.1} s after it started: {}",
        started.elapsed().as_secs_f64(),
        rolled_back["ended_because"]
    );
    assert!(rolled_back["ended_because"].as_str().unwrap().contains("agreement F1"), "{rolled_back}");
    let r = client.post(svc.url(base)).json(&json!({ "file": "same.onnx" })).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "the serving version is no candidate");
    assert!(r.text().await.unwrap().contains("the one serving"));
    let listed: Value = client.get(svc.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["devices"][0]["version"].as_u64(), Some(v_same), "the promoted version serves on: {listed}");

    // Every transition published once, in order; every event of both cameras delivered once.
    common::counts_when_ended(&client, &svc, &id).await;
    common::eventually("every event delivered", Duration::from_secs(60), || async {
        let s: Value = client.get(svc.url("/api/v1/system")).send().await.ok()?.json().await.ok()?;
        (s["events"]["outbox_backlog"] == 0).then_some(())
    })
    .await;
    let mut redis = env.redis().await;
    let published = transitions(&mut redis, env.key_prefix()).await;
    let expected = [
        // The configured file's activation at the first start (the registry in PostgreSQL).
        ("activated", 1),
        ("shadow_started", v_same),
        ("activated", v_same),
        ("promoted", v_same),
        ("shadow_started", v_bad),
        ("canary_started", v_bad),
        ("canary_rolled_back", v_same),
    ];
    let expected: Vec<(String, u64)> = expected.iter().map(|(t, v)| (t.to_string(), *v)).collect();
    assert_eq!(published, expected);
    let mut emitted = 0;
    for camera in ["overpass", id.as_str()] {
        let c: Value =
            client.get(svc.url(&format!("/api/v1/cameras/{camera}"))).send().await.unwrap().json().await.unwrap();
        emitted += c["status"]["events"].as_u64().unwrap();
    }
    let db = env.db().await;
    let mut rows: Vec<String> =
        db.query("SELECT event_id FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    rows.sort();
    assert_eq!(rows.len() as u64, emitted, "postgres rows");
    assert_eq!(common::stream_event_ids(&mut redis, env.key_prefix()).await, rows, "redis stream entries");
    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = "its_model_transitions_total{model=\"yolox_nano\",transition=\"canary_rolled_back\"}";
    assert_eq!(common::metric(&page, series), Some(1.0), "{page}");
    svc.stop();

    // A restart serves the promoted version, from the registry in PostgreSQL; now with automatic
    // promotion, bars held for a second.
    let auto = [
        ("ITS__MODEL__LIFECYCLE__AUTO_PROMOTE", "true"),
        ("ITS__MODEL__LIFECYCLE__HOLD_S", "1"),
        ("ITS__MODEL__LIFECYCLE__CANARY_SHARE", "0.5"),
    ];
    let svc = Service::start_with(&env, &[&lifecycle[..], &auto[..]].concat()).await;
    let listed: Value = client.get(svc.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["devices"][0]["version"].as_u64(), Some(v_same), "after the restart: {listed}");
    let ready: Value = client.get(svc.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["model"]["fallback"], Value::Null, "{ready}");

    // Another copy of the same weights on the canary camera (resumed after the restart) moves on
    // by itself: shadow, a canary of half the cameras judged against the reference, then all.
    variant(models.path(), "same2.onnx", 0.0);
    let body = json!({ "file": "same2.onnx", "share": 1.0, "cameras": [id] });
    let r = client.post(svc.url(base)).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v_auto = r.json::<Value>().await.unwrap()["version"]["version"].as_u64().unwrap();
    let get = |version: u64| {
        let client = client.clone();
        let url = svc.url(&format!("{base}/{version}"));
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let reference_accuracy = std::cell::Cell::new(None);
    let promoted = common::eventually("the automatic promotion", Duration::from_secs(180), || async {
        let page = client.get(svc.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let series = "ml_model_accuracy{model=\"yolox_nano\",evidence=\"reference\"}";
        reference_accuracy.set(reference_accuracy.get().or(common::metric(&page, series)));
        let view = get(v_auto).await;
        (view["stage"] == "promoted").then_some(view)
    })
    .await;
    let reference_accuracy = reference_accuracy.get();
    eprintln!(
        "promoted by itself: {}; accuracy against the reference during the canary: {reference_accuracy:?}",
        promoted["ended_because"]
    );
    assert_eq!(reference_accuracy, Some(1.0), "the canary's accuracy on real evidence was published");
    let listed: Value = client.get(svc.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["devices"][0]["version"].as_u64(), Some(v_auto), "{listed}");
    let published = transitions(&mut redis, env.key_prefix()).await;
    let auto_steps: Vec<&str> = published.iter().filter(|(_, v)| *v == v_auto).map(|(t, _)| t.as_str()).collect();
    assert_eq!(auto_steps, ["shadow_started", "canary_started", "activated", "promoted"], "{published:?}");
    svc.stop();
}
