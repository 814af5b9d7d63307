//! Faults injected into the real dependencies while a real camera runs: every event still
//! reaches PostgreSQL and the Redis stream exactly once, and the circuit breakers show the
//! outage in readiness and metrics while it lasts.

mod common;

use std::time::Duration;

use bb8_postgres::tokio_postgres;
use bb8_redis::redis;
use common::{OwnPostgres, OwnRedis, Service, TestEnv};
use serde_json::Value;

/// After an outage of `breaker`'s dependency: the clip ends, every event it emitted is delivered
/// and the breaker closes again. Returns the events emitted.
async fn recovered(client: &reqwest::Client, svc: &Service, breaker: &str) -> u64 {
    let counts = common::counts_when_ended(client, svc, "overpass").await;
    let emitted = counts["status"]["events"].as_u64().unwrap();
    assert!((26..=28).contains(&emitted), "{counts}");
    let closed = format!("its_breaker_state{{breaker=\"{breaker}\"}} 0");
    common::eventually("every event delivered and the breaker closed", Duration::from_secs(60), || async {
        let page = client.get(svc.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let delivered = common::metric(&page, "its_events_published_total")? as u64 == emitted;
        (delivered && page.contains(&closed)).then_some(())
    })
    .await;
    emitted
}

/// Exactly once in PostgreSQL and in the Redis stream, the same ids in both.
async fn assert_delivered_once(
    db: &tokio_postgres::Client,
    redis: &mut redis::aio::MultiplexedConnection,
    key_prefix: &str,
    emitted: u64,
) {
    let mut rows: Vec<String> =
        db.query("SELECT event_id FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    rows.sort();
    assert_eq!(rows.len() as u64, emitted, "postgres rows");
    assert_eq!(common::stream_event_ids(redis, key_prefix).await, rows, "redis stream entries");
}

#[tokio::test]
async fn redis_stopped_for_thirty_seconds_mid_stream_loses_nothing() {
    let env = TestEnv::new().await;
    let mut own = OwnRedis::start().await;
    let url = own.url();
    let svc =
        Service::start_with(&env, &[("ITS__REDIS__URL", url.as_str()), ("ITS__BREAKERS__OPEN_FOR_MS", "1000")]).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;

    own.stop();
    let ready: Value = common::eventually("the redis breaker to open", Duration::from_secs(30), || async {
        let r = client.get(svc.url("/health/ready")).send().await.ok()?;
        let body: Value = r.json().await.ok()?;
        let redis = body["checks"]["breakers"]["breakers"].as_array()?.iter().find(|b| b["name"] == "redis")?.clone();
        (redis["state"] == "open").then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "not_ready", "{ready}");
    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("its_breaker_opens_total{breaker=\"redis\"} "), "{page}");
    assert!(!page.contains("its_breaker_state{breaker=\"redis\"} 0"), "{page}");
    // The camera goes on while Redis is away; what it emits waits, in order.
    tokio::time::sleep(Duration::from_secs(30)).await;
    own.restart().await;

    let emitted = recovered(&client, &svc, "redis").await;
    let ready = client.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let log = svc.stop();
    assert!(log.contains("circuit breaker opened"), "{log}");

    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_delivered_once(&env.db().await, &mut conn, env.key_prefix(), emitted).await;
}

#[tokio::test]
async fn postgres_stopped_for_thirty_seconds_mid_stream_loses_nothing() {
    let env = TestEnv::new().await;
    let mut own = OwnPostgres::start().await;
    let url = own.url("its");
    let svc =
        Service::start_with(&env, &[("ITS__POSTGRES__URL", url.as_str()), ("ITS__BREAKERS__OPEN_FOR_MS", "1000")])
            .await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;

    own.stop();
    common::eventually("the postgres breaker to open", Duration::from_secs(60), || async {
        let body: Value = client.get(svc.url("/api/v1/system")).send().await.ok()?.json().await.ok()?;
        let pg = body["breakers"].as_array()?.iter().find(|b| b["name"] == "postgres")?.clone();
        (pg["state"] == "open").then_some(())
    })
    .await;
    let ready = client.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_secs(30)).await;
    own.restart().await;

    let emitted = recovered(&client, &svc, "postgres").await;
    let log = svc.stop();
    assert!(log.contains("circuit breaker opened"), "{log}");

    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert_delivered_once(&db, &mut env.redis().await, env.key_prefix(), emitted).await;
}

/// The camera's counts across y=150 once its clip ended: every crossing of the clip (27, the
/// ground truth), and no frame dropped on the way.
async fn all_27_crossings_and_no_frame_dropped(client: &reqwest::Client, svc: &Service) -> u64 {
    let counts = common::counts_when_ended(client, svc, "overpass").await;
    assert_eq!(counts["lines"][0]["in"], 27, "{counts}");
    assert_eq!(counts["status"]["frames_dropped"], 0, "{counts}");
    counts["status"]["events"].as_u64().unwrap()
}

async fn system(client: &reqwest::Client, svc: &Service) -> Value {
    client.get(svc.url("/api/v1/system")).send().await.unwrap().json().await.unwrap()
}

/// The child of that name, or the restarted one of that prefix (`shard-`: whichever shard the
/// camera hashes to).
fn child<'a>(system: &'a Value, name: &str) -> &'a Value {
    let children = system["supervisor"]["children"].as_array().unwrap();
    let mut named = children.iter().filter(|c| c["name"].as_str().unwrap().starts_with(name));
    let all: Vec<&Value> = named.clone().collect();
    named.find(|c| c["restarts"].as_u64() > Some(0)).or(all.first().copied()).unwrap()
}

/// Milliseconds between the first "child failed" and the next "child restarted" log lines of
/// `child` (for the report; the policy's first backoff is 100 ms).
fn restart_ms(log: &str, child: &str) -> Option<i64> {
    let at = |needle: &str| {
        log.lines().find(|l| l.contains(needle) && l.contains(&format!("child={child}"))).and_then(|l| {
            let stamp = l.split_whitespace().next()?;
            chrono::DateTime::parse_from_rfc3339(stamp).ok()
        })
    };
    Some((at("child restarted")? - at("child failed")?).num_milliseconds())
}

/// In one run of the clip: model calls of several frames run out of device memory three times
/// (each halves the batch and retries the same frames; after good batches it grows back to the
/// maximum), then the inference thread panics in a model call and a connector shard on a frame
/// (each rebuilt by the supervisor: the batch retried on a fresh model, the shard's cameras with
/// their counts). The clip's 27 crossings all arrive, once.
#[tokio::test]
async fn device_oom_and_shard_and_inference_panics_lose_no_event() {
    let env = TestEnv::new().await;
    let faults = [
        ("ITS__FAULTS__OOM_AT_BATCH", "20"),
        ("ITS__FAULTS__OOM_TIMES", "3"),
        ("ITS__BATCHING__GROW_AFTER_BATCHES", "10"),
        // Batches of up to 8, as on a GPU, so that there is room to halve.
        ("ITS__BATCHING__CPU_MAX_BATCH", "8"),
        ("ITS__FAULTS__INFERENCE_PANIC_AT_BATCH", "200"),
        ("ITS__FAULTS__SHARD_PANIC_AT_FRAME", "600"),
    ];
    let svc = Service::start_with(&env, &faults).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;
    let emitted = all_27_crossings_and_no_frame_dropped(&client, &svc).await;

    let system = system(&client, &svc).await;
    for name in ["shard-", "infer-cpu"] {
        let c = child(&system, name);
        let restarted = c["state"] == "running" && c["restarts"] == 1;
        assert!(restarted && c["last_error"].as_str().unwrap().contains("injected fault"), "{system}");
    }
    assert_eq!(system["devices"][0]["batch_limit"], 8, "grown back to batching.cpu_max_batch: {system}");
    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("its_supervisor_restarts_total{child=\"infer-cpu\"} 1"), "an OOM is not a crash: {page}");
    assert_eq!(common::metric(&page, "its_device_out_of_memory_total{device=\"cpu\"}"), Some(3.0), "{page}");
    let log = svc.stop();
    assert!(log.contains("retrying the batch of the failed instance"), "{log}");
    assert!(
        log.contains("retrying the same frames in smaller batches") && log.contains("batch limit grown back"),
        "{log}"
    );
    for name in ["infer-cpu", child(&system, "shard-")["name"].as_str().unwrap()] {
        eprintln!("{name} restarted {:?} ms after its failure", restart_ms(&log, name));
    }
    assert_delivered_once(&env.db().await, &mut env.redis().await, env.key_prefix(), emitted).await;
}

/// Through the reload endpoint: a corrupt file and a model of the wrong shape are rejected while
/// the serving model goes on; a good file is swapped in mid-stream; no frame is lost.
#[tokio::test]
async fn a_corrupt_model_is_rejected_and_a_good_one_swapped_in_mid_stream() {
    let models = tempfile::tempdir().unwrap();
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/yolox_nano.torchscript.pt");
    let serving = models.path().join("yolox_nano.torchscript.pt");
    std::fs::copy(&real, &serving).unwrap();
    std::fs::copy(&real, models.path().join("good.pt")).unwrap();
    let mut corrupt = std::fs::read(&real).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    std::fs::write(models.path().join("corrupt.pt"), corrupt).unwrap();
    // A valid TorchScript module whose output is not YOLOX's: caught by the shape check.
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script =
        format!("import torch; torch.jit.script(torch.nn.Identity()).save({:?})", models.path().join("identity.pt"));
    assert!(std::process::Command::new(python).args(["-c", &script]).status().unwrap().success());

    let env = TestEnv::new().await;
    let svc = Service::start_with(&env, &[("ITS__MODEL__PATH", serving.to_str().unwrap())]).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;
    let reload = |file: &str, token: &str| {
        let request = common::client_with_token(token).post(svc.url("/api/v1/models/yolox_nano/reload"));
        request.json(&serde_json::json!({ "file": file })).send()
    };
    for (file, status, needle) in
        [("corrupt.pt", 422, "model rejected"), ("identity.pt", 422, "shape"), ("../good.pt", 400, "..")]
    {
        let r = reload(file, common::ADMIN_TOKEN).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{file}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(needle), "{file}: {body}");
    }
    assert_eq!(reload("good.pt", common::OPERATOR_TOKEN).await.unwrap().status().as_u16(), 403);
    // A body that is not a reload request is refused, not taken for "reload the configured file".
    for body in [r#"{"fiel": "good.pt"}"#, "good.pt"] {
        let r = client.post(svc.url("/api/v1/models/yolox_nano/reload")).body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
    }
    let r = client.post(svc.url("/api/v1/models/another/reload")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let listed: Value = client.get(svc.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["devices"][0]["version"], 1, "the running model keeps serving: {listed}");

    let r = reload("good.pt", common::ADMIN_TOKEN).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["activated"]["version"].as_u64(), body["activated"]["file"].as_str()),
        (Some(2), Some("good.pt")),
        "{body}"
    );
    assert_eq!(body["model"]["devices"][0]["version"], 2, "{body}");
    let transitions: Vec<_> =
        body["model"]["history"].as_array().unwrap().iter().map(|t| t["transition"].as_str().unwrap()).collect();
    // The first is the configured file's activation at the first start.
    assert_eq!(transitions, ["activated", "rejected", "rejected", "activated"], "{body}");
    let emitted = all_27_crossings_and_no_frame_dropped(&client, &svc).await;

    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (series, value) in [
        ("its_model_transitions_total{model=\"yolox_nano\",transition=\"rejected\"}", 2.0),
        ("its_model_transitions_total{model=\"yolox_nano\",transition=\"activated\"}", 2.0),
        ("its_model_version{model=\"yolox_nano\"}", 2.0),
    ] {
        assert_eq!(common::metric(&page, series), Some(value), "{series}\n{page}");
    }
    // Each transition is also an event on the system stream.
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("{}:system", env.key_prefix()))
        .arg("-")
        .arg("+")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    let published: Vec<Value> = entries.iter().map(|(_, fields)| serde_json::from_str(&fields[1]).unwrap()).collect();
    let kinds: Vec<_> =
        published.iter().map(|e| (e["type"].as_str().unwrap(), e["transition"].as_str().unwrap())).collect();
    let expected = ["activated", "rejected", "rejected", "activated"].map(|t| ("model_transition", t));
    assert_eq!(kinds, expected);
    let log = svc.stop();
    assert!(log.contains("model version activated") && log.contains("transition=\"rejected\""), "{log}");
    assert_delivered_once(&env.db().await, &mut env.redis().await, env.key_prefix(), emitted).await;
}

async fn models(client: &reqwest::Client, svc: &Service) -> Value {
    client.get(svc.url("/api/v1/models")).send().await.unwrap().json::<Value>().await.unwrap()[0].clone()
}

fn transitions(model: &Value) -> Vec<(String, Option<u64>, Option<u64>)> {
    let history = model["history"].as_array().unwrap();
    history
        .iter()
        .map(|t| (t["transition"].as_str().unwrap().to_string(), t["from_version"].as_u64(), t["to_version"].as_u64()))
        .collect()
}

/// The registry lasts (issue 15, parts 4 and 5): a restart after a reload serves the reloaded
/// version; with that version's file corrupt, the last good version serves, readiness says so
/// and a `fallback` row is stored; when no version loads the process exits non-zero with every
/// reason on stderr. Bad reloads are refused (4xx) and change nothing.
#[tokio::test]
async fn a_restart_serves_the_reloaded_version_and_falls_back_from_a_corrupt_one() {
    let started = std::time::Instant::now();
    let dir = common::model_dir_with_candidate();
    let configured = dir.path().join("yolox_nano.onnx");
    std::fs::write(dir.path().join("corrupt.onnx"), b"not a model").unwrap();
    let env = TestEnv::new().await;
    let settings = [("ITS__MODEL__PATH", configured.to_str().unwrap())];
    let client = common::client();
    let svc = Service::start_with(&env, &settings).await;
    let model = models(&client, &svc).await;
    assert_eq!(model["versions"].as_array().unwrap().len(), 1, "{model}");
    let first = &model["versions"][0];
    assert_eq!((first["version"].as_u64(), first["file"].as_str()), (Some(1), Some("yolox_nano.onnx")), "{model}");
    assert_eq!((first["precision"].as_str(), first["input_size"].as_u64()), (Some("fp32"), Some(416)), "{model}");
    assert_eq!(transitions(&model), [("activated".into(), None, Some(1))], "the first start activates the file");

    let reload = |file: &str| {
        let request = client.post(svc.url("/api/v1/models/yolox_nano/reload"));
        request.json(&serde_json::json!({ "file": file })).send()
    };
    for (file, status) in [("missing.onnx", 400), ("../yolox_nano.onnx", 400), ("corrupt.onnx", 422)] {
        assert_eq!(reload(file).await.unwrap().status().as_u16(), status, "{file}");
    }
    let r = client.post(svc.url("/api/v1/models/another/reload")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let model = models(&client, &svc).await;
    assert_eq!(model["versions"].as_array().unwrap().len(), 1, "a refused file is no version: {model}");
    assert_eq!(model["devices"][0]["version"], 1, "{model}");

    let r = reload("candidate.onnx").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["activated"]["version"], 2, "{body}");
    assert_eq!(body["model"]["devices"][0]["version"], 2, "{body}");
    let (status, _) = svc.terminate();
    assert!(status.success());

    // Restarted: the reloaded version serves, not the configured file, and nothing is recorded.
    let svc = Service::start_with(&env, &settings).await;
    let model = models(&client, &svc).await;
    assert_eq!(model["devices"][0]["version"], 2, "{model}");
    let history = transitions(&model);
    assert_eq!(history.last(), Some(&("activated".to_string(), Some(1), Some(2))), "{model}");
    assert_eq!(history.len(), 3, "activated, rejected, activated: {model}");
    let ready: Value = client.get(svc.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert!(ready["checks"]["model"]["fallback"].is_null(), "{ready}");
    svc.terminate();

    // The serving version's file is corrupt: version 1 serves, ready, and says why.
    std::fs::write(dir.path().join("candidate.onnx"), b"garbage").unwrap();
    let svc = Service::start_with(&env, &settings).await;
    let ready: Value = client.get(svc.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let fallback = &ready["checks"]["model"]["fallback"];
    assert_eq!((fallback["version"].as_u64(), fallback["instead_of"].as_u64()), (Some(1), Some(2)), "{ready}");
    assert!(fallback["reason"].as_str().unwrap().contains("SHA-256"), "{ready}");
    assert_eq!(models(&client, &svc).await["devices"][0]["version"], 1);
    let db = env.db().await;
    let rows = db
        .query("SELECT from_version, to_version, node FROM model_transitions WHERE transition = 'fallback'", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].get::<_, Option<i32>>(0), rows[0].get::<_, Option<i32>>(1)), (Some(2), Some(1)));
    svc.terminate();

    // No version loads: the process says why for each and exits non-zero.
    std::fs::write(&configured, b"garbage too").unwrap();
    let svc = Service::spawn_with(&env, &settings);
    let (status, log) = tokio::task::spawn_blocking(move || svc.wait_exit(Duration::from_secs(60))).await.unwrap();
    assert!(!status.success(), "{log}");
    for needle in ["error: no model version loads", "version 2 (candidate.onnx, serving version)", "version 1 ("] {
        assert!(log.contains(needle), "{needle:?} not in\n{log}");
    }
    eprintln!("restart, fallback and failed start in {:.1} s", started.elapsed().as_secs_f64());
}

/// The registry's rules in PostgreSQL, which every node relies on: a file with its SHA-256 is one
/// version however many nodes register it at once; the serving version is the newest activation
/// or rollback (a `rejected` or `fallback` row does not change it); the good versions exclude
/// those rejected or rolled back from, the most recently serving first.
#[tokio::test]
async fn the_registry_numbers_versions_once_and_tells_the_good_ones() {
    use its_analytics::db::models::NewTransition;
    let env = TestEnv::new().await;
    let db = its_analytics::db::Db::connect(&env.postgres_url, 8, Duration::from_secs(5)).await.unwrap();
    let register = |file: &'static str, sha: &'static str| {
        let db = db.clone();
        async move { db.register_model_version("m", file, sha, 416, "fp32").await.unwrap() }
    };
    assert_eq!((register("a.onnx", "s1").await.0.version, register("a.onnx", "s1").await.1), (1, false));
    assert_eq!(register("a.onnx", "s2").await.0.version, 2, "new content, new version");
    assert_eq!(register("b.onnx", "s1").await.0.version, 3, "another file, another version");
    let at_once: Vec<_> = futures::future::join_all((0..6).map(|_| register("c.onnx", "s3"))).await;
    assert!(at_once.iter().all(|(row, _)| row.version == 4), "{at_once:?}");
    assert_eq!(at_once.iter().filter(|(_, new)| *new).count(), 1);
    let other = db.register_model_version("other", "a.onnx", "s1", 640, "bf16").await.unwrap().0;
    assert_eq!((other.version, other.input_size, other.precision.as_str()), (1, 640, "bf16"), "numbered per model");

    assert_eq!(db.model_serving("m").await.unwrap().version, None, "nothing activated yet");
    let record = |transition: &str, from: Option<u32>, to: Option<u32>| {
        let t = NewTransition {
            model: "m".into(),
            transition: transition.into(),
            from_version: from,
            to_version: to,
            detail: String::new(),
            node: "node-a".into(),
        };
        let db = db.clone();
        async move { db.record_model_transition(&t).await.unwrap() }
    };
    record("activated", None, Some(1)).await;
    record("activated", Some(1), Some(2)).await;
    record("rolled_back", Some(2), Some(1)).await;
    record("activated", Some(1), Some(3)).await;
    record("rejected", Some(3), Some(4)).await;
    let fallback = record("fallback", Some(3), Some(1)).await;
    let serving = db.model_serving("m").await.unwrap();
    assert_eq!((serving.version.map(|v| v.version), serving.last_seq), (Some(3), fallback));
    let good: Vec<u32> = db.good_model_versions("m").await.unwrap().iter().map(|v| v.version).collect();
    assert_eq!(good, [3, 1], "2 was rolled back from, 4 rejected");
    record("rejected", None, Some(3)).await;
    let good: Vec<u32> = db.good_model_versions("m").await.unwrap().iter().map(|v| v.version).collect();
    assert_eq!(good, [1], "a version a node refused is no longer good");
    let after: Vec<String> =
        db.model_transitions_after("m", fallback - 1).await.unwrap().into_iter().map(|t| t.transition).collect();
    assert_eq!(after, ["fallback", "rejected"]);
    let history = db.model_history("m", 3).await.unwrap();
    assert_eq!(history.iter().map(|t| t.transition.as_str()).collect::<Vec<_>>(), ["rejected", "fallback", "rejected"]);
}

/// SIGKILL twice. First while Redis is away, so events wait in the outbox; the camera is then
/// removed behind the service's back, so only the outbox can deliver them after the restart.
/// Then mid-stream: the restarted service resumes the camera, and every crossing of the clip is
/// in PostgreSQL and the stream once.
#[tokio::test]
async fn sigkill_loses_nothing_the_outbox_acknowledged_and_the_camera_resumes() {
    let env = TestEnv::new().await;
    let mut own = OwnRedis::start().await;
    let redis_url = own.url();
    let settings = [("ITS__REDIS__URL", redis_url.as_str()), ("ITS__BREAKERS__OPEN_FOR_MS", "1000")];
    let client = common::client();
    let svc = Service::start_with(&env, &settings).await;
    common::overpass_until_a_few_events(&client, &svc).await;
    own.stop();
    let backlog = common::eventually("events waiting in the outbox", Duration::from_secs(120), || async {
        let s: Value = client.get(svc.url("/api/v1/system")).send().await.ok()?.json().await.ok()?;
        let backlog = s["events"]["outbox_backlog"].as_u64()?;
        (backlog >= 5).then_some(backlog)
    })
    .await;
    svc.kill();
    let db = env.db().await;
    let before: i64 = db.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    db.execute("DELETE FROM cameras WHERE id = 'overpass'", &[]).await.unwrap();
    own.restart().await;

    let svc = Service::start_with(&env, &settings).await;
    let system = common::eventually("the outbox delivered", Duration::from_secs(60), || async {
        let s: Value = client.get(svc.url("/api/v1/system")).send().await.ok()?.json().await.ok()?;
        (s["events"]["outbox_backlog"] == 0).then_some(s)
    })
    .await;
    let replayed = system["events"]["replayed_from_outbox"].as_u64().unwrap();
    assert!(replayed >= backlog, "{backlog} were waiting at the kill: {system}");
    let after: i64 = db.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert!(
        after - before >= backlog as i64,
        "the outbox delivered what waited: {before} -> {after}, {backlog} waiting"
    );
    let mut conn = redis::Client::open(redis_url.clone()).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_delivered_once(&db, &mut conn, env.key_prefix(), after as u64).await;

    // Registered again (geometry version 2, new event ids), killed mid-stream, resumed.
    common::overpass_until_a_few_events(&client, &svc).await;
    svc.kill();
    let svc = Service::start_with(&env, &settings).await;
    let emitted = all_27_crossings_and_no_frame_dropped(&client, &svc).await;
    common::eventually("every event delivered", Duration::from_secs(60), || async {
        let s: Value = client.get(svc.url("/api/v1/system")).send().await.ok()?.json().await.ok()?;
        (s["events"]["outbox_backlog"] == 0).then_some(())
    })
    .await;
    let log = svc.stop();
    assert!(log.contains("camera lease acquired: started"), "{log}");
    let resumed: i64 =
        db.query_one("SELECT count(*) FROM events WHERE geometry_version = 2", &[]).await.unwrap().get(0);
    assert_eq!(resumed as u64, emitted, "the resumed camera's crossings, each once");
    assert_delivered_once(&db, &mut conn, env.key_prefix(), after as u64 + emitted).await;
}

/// An inference thread that panics at every model call is restarted `max_restarts` times, then
/// the supervisor escalates: the process stops with a non-zero status instead of spinning.
#[tokio::test]
async fn a_crash_loop_escalates_and_the_process_exits_non_zero() {
    let env = TestEnv::new().await;
    let settings = [
        ("ITS__FAULTS__INFERENCE_PANIC_AT_BATCH", "1"),
        ("ITS__FAULTS__INFERENCE_PANIC_REPEATS", "true"),
        ("ITS__SUPERVISOR__MAX_RESTARTS", "3"),
    ];
    let svc = Service::start_with(&env, &settings).await;
    let client = common::client();
    let body = serde_json::json!({
        "id": "overpass",
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "replay": { "realtime": false }
    });
    assert_eq!(client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap().status().as_u16(), 201);
    let (status, log) = tokio::task::spawn_blocking(move || svc.wait_exit(Duration::from_secs(120))).await.unwrap();
    assert!(!status.success(), "{log}");
    assert_eq!(log.matches("child restarted").count(), 3, "{log}");
    assert!(
        log.contains("child is crash-looping; escalating") && log.contains("a supervised child crash-looped"),
        "{log}"
    );
}
