//! The control API locked down, over real HTTP against the real binary: bearer tokens and roles,
//! the rate limit, the body limit, the camera URL allowlist, and a camera password that appears
//! in no output of the service (responses, live stream, logs, metrics, Redis, history).

mod common;

use std::time::Duration;

use common::{Service, TestEnv};
use serde_json::{json, Value};

async fn status(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.headers().clone(), r.text().await.unwrap())
}

#[tokio::test]
async fn writes_need_a_token_and_the_right_role() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let anonymous = reqwest::Client::new();
    let viewer = common::client_with_token(common::VIEWER_TOKEN);
    let operator = common::client_with_token(common::OPERATOR_TOKEN);
    let admin = common::client();
    let wrong = common::client_with_token("not-a-token");
    let camera = json!({"id": "gate", "url": "rtsp://127.0.0.1:9/x"});

    // No token, or a wrong one: 401 with the scheme to use, and nothing stored.
    for (who, client) in [("anonymous", &anonymous), ("wrong token", &wrong)] {
        let (code, headers, body) = status(client.post(svc.url("/api/v1/cameras")).json(&camera)).await;
        assert_eq!(code, 401, "{who}: {body}");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{who}");
        let (code, _, _) = status(client.get(svc.url("/api/v1/cameras"))).await;
        assert_eq!(code, 401, "{who} reads");
        let (code, _, _) = status(client.delete(svc.url("/api/v1/cameras/gate"))).await;
        assert_eq!(code, 401, "{who} deletes");
    }
    // A viewer reads but may not write; an operator writes cameras but may not see the system.
    let (code, _, body) = status(viewer.post(svc.url("/api/v1/cameras")).json(&camera)).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("operator required"), "{body}");
    let (code, _, body) = status(viewer.get(svc.url("/api/v1/cameras"))).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = status(operator.post(svc.url("/api/v1/cameras")).json(&camera)).await;
    assert_eq!(code, 201, "{body}");
    let geometry = json!({"lines": [{"id": "l1", "a": [0, 150], "b": [320, 150]}]});
    let (code, _, _) = status(viewer.put(svc.url("/api/v1/cameras/gate/geometry")).json(&geometry)).await;
    assert_eq!(code, 403);
    let (code, _, body) = status(operator.put(svc.url("/api/v1/cameras/gate/geometry")).json(&geometry)).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = status(operator.get(svc.url("/api/v1/system"))).await;
    assert_eq!(code, 403);
    let (code, _, body) = status(admin.get(svc.url("/api/v1/system"))).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = status(viewer.delete(svc.url("/api/v1/cameras/gate"))).await;
    assert_eq!(code, 403);
    let (code, _, _) = status(operator.delete(svc.url("/api/v1/cameras/gate"))).await;
    assert_eq!(code, 204);
    // An unknown path tells an anonymous caller nothing: 401 before 404.
    let (code, _, _) = status(anonymous.get(svc.url("/api/v1/nothing-here"))).await;
    assert_eq!(code, 401);
    // Access is judged on the path the router serves: an encoded admin path is still admin.
    let (code, _, _) = status(viewer.get(svc.url("/api/v1/%73ystem"))).await;
    assert_eq!(code, 403);
    let (code, _, _) = status(admin.get(svc.url("/api/v1/%73ystem"))).await;
    assert_eq!(code, 200);

    // Probes, the scrape, the API document and the console's files are open by default.
    for path in ["/health/live", "/health/ready", "/metrics", "/api/v1/openapi.json", "/", "/console/app.js"] {
        let (code, _, _) = status(anonymous.get(svc.url(path))).await;
        assert_eq!(code, 200, "{path}");
    }
    // The caller learns its own name and role, and nothing without a token.
    for (client, name, role) in
        [(&viewer, "test-viewer", "viewer"), (&operator, "test-operator", "operator"), (&admin, "test-admin", "admin")]
    {
        let (code, _, body) = status(client.get(svc.url("/api/v1/me"))).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"name": name, "role": role}));
    }
    let (code, _, body) = status(anonymous.get(svc.url("/api/v1/me"))).await;
    assert_eq!((code, body.as_str()), (401, r#"{"error":"missing bearer token"}"#));
    let log = svc.stop();
    assert!(!log.contains(common::OPERATOR_TOKEN) && !log.contains(common::ADMIN_TOKEN), "a token was logged");

    // Metrics can be closed to anonymous scrapers.
    let svc = Service::start_with(&env, &[("ITS__AUTH__OPEN_METRICS", "false")]).await;
    let (code, _, _) = status(anonymous.get(svc.url("/metrics"))).await;
    assert_eq!(code, 401);
    let (code, _, _) = status(viewer.get(svc.url("/metrics"))).await;
    assert_eq!(code, 200);
    drop(svc);

    // With auth disabled every caller is the anonymous admin (the console then needs no token).
    let svc = Service::start_with(&env, &[("ITS__AUTH__ENABLED", "false")]).await;
    let (code, _, body) = status(anonymous.get(svc.url("/api/v1/me"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"name": "(anonymous)", "role": "admin"}));
}

#[tokio::test]
async fn a_service_without_tokens_refuses_to_start() {
    let out = std::process::Command::new(common::binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("serve")
        .env("ITS__HTTP__BIND", format!("127.0.0.1:{}", common::free_port()))
        .env_remove("ITS__AUTH__TOKENS_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no tokens are configured"), "{stderr}");

    // `token` makes one; the file it writes is accepted and keeps no plain token.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let out = std::process::Command::new(common::binary())
        .args(["token", "--name", "ops-desk", "--role", "operator", "--append", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(token.len() >= 40 && !written.contains(&token), "{written}");
    let env = TestEnv::new().await;
    let svc = Service::start_with(&env, &[("ITS__AUTH__TOKENS_FILE", file.to_str().unwrap())]).await;
    let (code, _, body) = status(common::client_with_token(&token).get(svc.url("/api/v1/cameras"))).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = status(common::client().get(svc.url("/api/v1/cameras"))).await;
    assert_eq!(code, 401, "only the tokens of the configured file count");
}

#[tokio::test]
async fn each_client_is_rate_limited_and_bodies_are_bounded_in_size_and_time() {
    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[
            ("ITS__RATE_LIMIT__PER_SECOND", "0.2"),
            ("ITS__RATE_LIMIT__BURST", "3"),
            ("ITS__HTTP__MAX_BODY_BYTES", "2048"),
            ("ITS__HTTP__REQUEST_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let viewer = common::client_with_token(common::VIEWER_TOKEN);
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(status(viewer.get(svc.url("/api/v1/cameras"))).await);
    }
    assert_eq!(codes.iter().map(|c| c.0).collect::<Vec<_>>(), vec![200, 200, 200, 429]);
    let retry_after: u64 = codes[3].1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    // Refused requests cost their address too: a token guesser is limited like anyone else.
    let guesser = common::client_with_token("guess-1");
    let mut refused = Vec::new();
    for _ in 0..4 {
        refused.push(status(guesser.get(svc.url("/api/v1/cameras"))).await.0);
    }
    assert_eq!(refused, vec![401, 401, 401, 429]);
    // Another caller has a bucket of its own; probes and scrapes are never limited.
    let (code, _, _) = status(common::client().get(svc.url("/api/v1/cameras"))).await;
    assert_eq!(code, 200);
    for _ in 0..10 {
        assert_eq!(status(viewer.get(svc.url("/health/ready"))).await.0, 200);
        assert_eq!(status(viewer.get(svc.url("/metrics"))).await.0, 200);
    }

    // A body that never arrives in full is answered 408 once the request time is up.
    let mut slow = tokio::net::TcpStream::connect(svc.base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /api/v1/cameras HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        common::ADMIN_TOKEN
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, head.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read(&mut slow, &mut reply))
        .await
        .expect("an answer before the client gives up")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );

    let big = json!({"id": "big", "url": "rtsp://127.0.0.1:9/x", "name": "x".repeat(4096)});
    let (code, _, body) = status(common::client().post(svc.url("/api/v1/cameras")).json(&big)).await;
    assert_eq!(code, 413, "{body}");
    let rows = env.db().await.query_one("SELECT count(*) FROM cameras", &[]).await.unwrap();
    assert_eq!(rows.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn only_network_cameras_and_files_of_the_media_directory_are_accepted() {
    let media = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(common::clip("highway_video02.avi"), media.path().join("clip.avi")).unwrap();
    std::fs::copy(common::clip("highway_video02.avi"), outside.path().join("private.avi")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("private.avi"), media.path().join("link.avi")).unwrap();
    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[("ITS__CAMERAS__MEDIA_DIR", media.path().to_str().unwrap()), ("ITS__CAMERAS__ALLOWED_SCHEMES", "rtsp,rtsps")],
    )
    .await;
    let client = common::client();
    let inside = media.path().join("clip.avi");
    let private = outside.path().join("private.avi");
    // Both folders are in the same temporary directory: `media/../<outside>/private.avi` is real.
    let sibling = std::path::Path::new(outside.path().file_name().unwrap()).join("private.avi");
    let refused = [
        (format!("file://{}", private.display()), "only under cameras.media_dir"),
        (format!("file://{}", media.path().join("link.avi").display()), "only under cameras.media_dir"),
        // Up and out of the media directory: written, percent-encoded, and by a relative hop.
        (format!("file://{}/../{}", media.path().display(), sibling.display()), "only under"),
        (format!("file://{}/%2e%2e/{}", media.path().display(), sibling.display()), "only under"),
        (format!("file://{}/%2E%2E%2F{}", media.path().display(), sibling.display()), "only under"),
        ("file:/etc/passwd".to_string(), "only under cameras.media_dir"),
        ("file://localhost/etc/passwd".to_string(), "only under cameras.media_dir"),
        ("FILE:///etc/passwd".to_string(), "lower case"),
        ("file:///etc/passwd".to_string(), "only under cameras.media_dir"),
        ("concat:/etc/passwd|/etc/hostname".to_string(), "not supported"),
        ("subfile,,start,0,end,100,,:/etc/passwd".to_string(), "not a valid URL"),
        ("pipe:0".to_string(), "not supported"),
        ("data:video/avi;base64,AAAA".to_string(), "not supported"),
        ("exec:/bin/sh".to_string(), "not supported"),
        ("tcp://127.0.0.1:554".to_string(), "not supported"),
        ("http://cam.example/live.m3u8".to_string(), "not allowed here"),
    ];
    for (url, needle) in &refused {
        let (code, _, body) =
            status(client.post(svc.url("/api/v1/cameras")).json(&json!({"id": "x", "url": url}))).await;
        assert_eq!(code, 400, "{url}: {body}");
        assert!(body.contains(needle), "{url}: {body} lacks {needle:?}");
        assert!(
            !body.contains("/etc/") && !body.contains(outside.path().to_str().unwrap()),
            "{url}: path echoed: {body}"
        );
    }
    let body = json!({"id": "ok", "url": format!("file://{}", inside.display()), "fps": 2});
    let (code, _, text) = status(client.post(svc.url("/api/v1/cameras")).json(&body)).await;
    assert_eq!(code, 201, "{text}");
    let (code, _, text) =
        status(client.post(svc.url("/api/v1/cameras")).json(&json!({"id": "cam", "url": "rtsp://127.0.0.1:9/x"})))
            .await;
    assert_eq!(code, 201, "{text}");
    let rows = env.db().await.query_one("SELECT count(*) FROM cameras", &[]).await.unwrap();
    assert_eq!(rows.get::<_, i64>(0), 2, "only the two acceptable cameras are stored");
}

#[tokio::test]
async fn a_camera_password_appears_in_no_output() {
    const PASSWORD: &str = "Leak-Me-Not-7731";
    const QUERY_SECRET: &str = "QueryToken-5519";
    // base64("admin:Leak-Me-Not-7731"), what FFmpeg presents by Basic auth.
    let basic = "YWRtaW46TGVhay1NZS1Ob3QtNzczMQ==".to_string();
    let clip = std::fs::read(common::clip("overpass_video03.avi")).unwrap();
    let (port, served) = common::camera_with_password(clip, basic).await;
    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[
            // The most specific directive wins in RUST_LOG: the driver's statements asked for by name.
            ("RUST_LOG", "debug,tokio_postgres::query=trace,tokio_postgres=trace"),
            ("ITS__CAMERAS__RECONNECT_INITIAL_MS", "100"),
            ("ITS__CAMERAS__RECONNECT_MAX_MS", "300"),
        ],
    )
    .await;
    let client = common::client();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, text: String| outputs.push((what.to_string(), text));

    // A live camera with the password in its URL, one with a secret query parameter whose server
    // is down, and registrations that fail validation with the password in them.
    let url = format!("http://admin:{PASSWORD}@127.0.0.1:{port}/cam.avi");
    let body = json!({"id": "secret-cam", "url": url, "fps": 10, "geometry": common::overpass_geometry()});
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    keep("register", r.text().await.unwrap());
    let down = json!({"id": "down-cam", "url": format!("rtsp://127.0.0.1:9/live?token={QUERY_SECRET}")});
    let r = client.post(svc.url("/api/v1/cameras")).json(&down).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    keep("register down", r.text().await.unwrap());
    for bad in [
        json!({"id": "bad one", "url": format!("ftp://admin:{PASSWORD}@h/x")}),
        json!({"id": "bad2", "url": format!("rtsp://admin:{PASSWORD}@h/x"), "fps": -1}),
        json!({"id": "bad3", "url": format!("rtsp://admin:{PASSWORD}@[::1/x")}),
        json!({"id": "secret-cam", "url": format!("rtsp://admin:{PASSWORD}@h/x")}),
    ] {
        let r = client.post(svc.url("/api/v1/cameras")).json(&bad).send().await.unwrap();
        assert!(r.status().is_client_error(), "{bad}");
        keep("rejected registration", r.text().await.unwrap());
    }

    // Live events while the stream runs, through SSE.
    let mut sse = client.get(svc.url("/api/v1/events/stream")).send().await.unwrap();
    common::until_a_few_events(&client, &svc, "secret-cam").await;
    let mut live = String::new();
    while live.len() < 4096 {
        match tokio::time::timeout(Duration::from_secs(2), sse.chunk()).await {
            Ok(Ok(Some(bytes))) => live.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    assert!(live.contains("secret-cam"), "the live stream carried the camera's events: {live}");
    drop(sse);
    keep("event stream", live);
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the camera was reached with its password");
    common::eventually("the down camera to report its error", Duration::from_secs(30), || async {
        let c: Value = client.get(svc.url("/api/v1/cameras/down-cam")).send().await.ok()?.json().await.ok()?;
        c["status"]["last_error"].as_str().map(|_| ())
    })
    .await;

    // Every read endpoint.
    for path in [
        "/api/v1/cameras",
        "/api/v1/cameras/secret-cam",
        "/api/v1/cameras/down-cam",
        "/api/v1/cameras/secret-cam/counts",
        "/api/v1/cameras/secret-cam/geometry",
        "/api/v1/cameras/secret-cam/state",
        "/api/v1/cameras/secret-cam/analytics?interval=1m",
        "/api/v1/events?limit=1000",
        "/api/v1/system",
        "/health/ready",
        "/metrics",
    ] {
        let r = client.get(svc.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        keep(path, r.text().await.unwrap());
    }
    // Everything the service wrote to Redis under its prefix, and every history table.
    let mut redis = env.redis().await;
    let keys: Vec<String> =
        bb8_redis::redis::cmd("KEYS").arg(format!("{}:*", env.key_prefix())).query_async(&mut redis).await.unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let kind: String = bb8_redis::redis::cmd("TYPE").arg(&key).query_async(&mut redis).await.unwrap();
        let dump: Vec<u8> = bb8_redis::redis::cmd("DUMP").arg(&key).query_async(&mut redis).await.unwrap();
        keep(&format!("redis {kind} {key}"), format!("{key} {}", String::from_utf8_lossy(&dump)));
    }
    let db = env.db().await;
    for table in ["events", "analytics_1m", "camera_geometries"] {
        let rows = db.query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[]).await.unwrap();
        keep(&format!("table {table}"), rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n"));
    }
    // The password is stored where it must be (the camera reconnects after a restart) ...
    let stored = db.query_one("SELECT spec->>'url' FROM cameras WHERE id = 'secret-cam'", &[]).await.unwrap();
    assert_eq!(stored.get::<_, String>(0), url);
    let log = svc.stop();
    assert!(log.contains("secret-cam") && log.contains("DEBUG"), "the log was captured at debug level");
    keep("log", log);

    // ... and nowhere else.
    let events = outputs.iter().find(|(what, _)| what == "table events").unwrap();
    assert!(events.1.contains("secret-cam"), "the camera produced events");
    for (what, text) in &outputs {
        for secret in [PASSWORD, QUERY_SECRET, "TGVhay1NZS1Ob3Qt"] {
            assert!(!text.contains(secret), "{secret} leaked in {what}:\n{text}");
        }
    }
}
