//! Broken camera streams: a stalled stream is restarted, and cut or corrupted real footage never
//! crashes anything; each problem is reported as the camera's error.

mod common;

use std::time::Duration;

use common::{Service, TestEnv};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP server that sends the first `prefix` bytes of `body` (announcing all of it) and then
/// keeps every connection open without sending anything more: a camera that froze.
async fn freezing_server(body: Vec<u8>, prefix: usize) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: video/x-msvideo\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body[..prefix]).await;
                // Frozen: hold the connection until the client gives up.
                let _ = socket.read(&mut request).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_stalled_stream_is_restarted_and_reported() {
    let clip = std::fs::read(common::clip("highway_video02.avi")).unwrap();
    let port = freezing_server(clip.clone(), clip.len() / 4).await;
    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[
            ("ITS__CAMERAS__READ_TIMEOUT_MS", "1500"),
            ("ITS__CAMERAS__RECONNECT_INITIAL_MS", "100"),
            ("ITS__CAMERAS__RECONNECT_MAX_MS", "200"),
        ],
    )
    .await;
    let client = common::client();
    let body = json!({"id": "frozen", "url": format!("http://127.0.0.1:{port}/cam.avi"), "fps": 5});
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let cam: Value = common::eventually("two restarts of the frozen stream", Duration::from_secs(60), || async {
        let c: Value = client.get(svc.url("/api/v1/cameras/frozen")).send().await.ok()?.json().await.ok()?;
        (c["status"]["reconnects"].as_u64()? >= 2).then_some(c)
    })
    .await;
    // Each connection decoded the quarter it got before freezing, so the count keeps growing.
    assert!(cam["status"]["frames_decoded"].as_u64().unwrap() > 100, "{cam}");
    assert!(cam["status"]["last_error"].as_str().is_some(), "{cam}");
    assert_ne!(cam["status"]["state"], "ended", "{cam}");
    let live = client.get(svc.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// Deterministic damage: flip one byte in every 997 past the headers.
fn corrupt(mut data: Vec<u8>) -> Vec<u8> {
    let mut i = 16 * 1024;
    while i < data.len() {
        data[i] ^= 0x5a;
        i += 997;
    }
    data
}

#[tokio::test]
async fn cut_and_corrupted_footage_never_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(common::clip("overpass_video03.avi")).unwrap();
    let mut zeroed_head = clip.clone();
    zeroed_head[..4096].fill(0);
    let variants = [
        ("cut", clip[..clip.len() * 2 / 5].to_vec()),
        ("corrupted", corrupt(clip.clone())),
        ("cut-corrupted", corrupt(clip[..clip.len() / 3].to_vec())),
        ("zeroed-head", zeroed_head),
        ("garbage", vec![0x5a; 64 * 1024]),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in &variants {
        let path = dir.path().join(format!("{name}.avi"));
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new(common::binary())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["analyze", path.to_str().unwrap(), "--line", "0,150,320,150", "--fps", "5", "--json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Success with a report, or a clean failure that names the file: never a signal or panic.
        assert!(out.status.code().is_some(), "{name}: killed by a signal\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        if out.status.success() {
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(report["frames"].as_u64().is_some(), "{name}: {report}");
        } else {
            assert!(stderr.contains(&format!("{name}.avi")), "{name}: {stderr}");
        }
    }

    // The same damage on a registered camera: reported in its status, the service stays up.
    let env = TestEnv::new().await;
    let media_dir = dir.path().to_str().unwrap();
    let svc = Service::start_with(&env, &[("ITS__CAMERAS__MEDIA_DIR", media_dir)]).await;
    let client = common::client();
    for name in ["corrupted", "garbage"] {
        let url = format!("file://{}", dir.path().join(format!("{name}.avi")).display());
        let body = json!({"id": name, "url": url, "fps": 5, "replay": {"realtime": false}});
        let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{name}");
    }
    let failed: Value = common::eventually("the unreadable file to be reported", Duration::from_secs(60), || async {
        let c: Value = client.get(svc.url("/api/v1/cameras/garbage")).send().await.ok()?.json().await.ok()?;
        c["status"]["last_error"].as_str().is_some().then_some(c)
    })
    .await;
    assert!(failed["status"]["last_error"].as_str().unwrap().contains("cannot open"), "{failed}");
    common::eventually("the corrupted file to be analysed to its end", Duration::from_secs(180), || async {
        let c: Value = client.get(svc.url("/api/v1/cameras/corrupted")).send().await.ok()?.json().await.ok()?;
        (c["status"]["state"] == "ended" && c["status"]["frames_processed"].as_u64()? > 0).then_some(())
    })
    .await;
    let ready = client.get(svc.url("/health/live")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// An HTTP "camera" that answers every request with an endless stream of random bytes.
async fn garbage_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n").await;
                let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
                let mut chunk = vec![0u8; 16 * 1024];
                loop {
                    for byte in chunk.iter_mut() {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        *byte = state as u8;
                    }
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    port
}

/// A camera URL nobody answers and one that streams garbage: each is retried with backoff, its
/// breaker opens after `breakers.failure_threshold` failures in a row, its error is reported, and
/// the service stays ready (a dead camera is not a dead service).
#[tokio::test]
async fn a_camera_that_never_connects_or_streams_garbage_opens_its_breaker_only() {
    let garbage = garbage_server().await;
    let nobody = common::free_port();
    let env = TestEnv::new().await;
    let settings = [
        ("ITS__CAMERAS__READ_TIMEOUT_MS", "1000"),
        ("ITS__CAMERAS__RECONNECT_INITIAL_MS", "100"),
        ("ITS__CAMERAS__RECONNECT_MAX_MS", "300"),
        ("ITS__BREAKERS__FAILURE_THRESHOLD", "3"),
        ("ITS__BREAKERS__OPEN_FOR_MS", "2000"),
    ];
    let svc = Service::start_with(&env, &settings).await;
    let client = common::client();
    for (id, url) in [
        ("nowhere", format!("rtsp://127.0.0.1:{nobody}/cam")),
        ("garbage", format!("http://127.0.0.1:{garbage}/cam.ts")),
    ] {
        let r = client
            .post(svc.url("/api/v1/cameras"))
            .json(&json!({"id": id, "url": url, "fps": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{id}");
    }
    for id in ["nowhere", "garbage"] {
        let path = format!("/api/v1/cameras/{id}");
        let cam: Value = common::eventually("the camera's breaker to open", Duration::from_secs(60), || async {
            let c: Value = client.get(svc.url(&path)).send().await.ok()?.json().await.ok()?;
            (c["status"]["breaker"] == "open").then_some(c)
        })
        .await;
        assert!(cam["status"]["reconnects"].as_u64().unwrap() >= 3, "{cam}");
        assert!(cam["status"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{cam}");
        assert_ne!(cam["status"]["state"], "streaming", "{cam}");
    }
    let nowhere: Value = client.get(svc.url("/api/v1/cameras/nowhere")).send().await.unwrap().json().await.unwrap();
    assert!(nowhere["status"]["last_error"].as_str().unwrap().contains("cannot open stream"), "{nowhere}");
    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        common::metric(&page, "its_breaker_opens_total{breaker=\"camera:nowhere\"}").is_some_and(|n| n >= 1.0),
        "{page}"
    );
    let ready = client.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "dead cameras do not make the service unready");
    let ready: Value = ready.json().await.unwrap();
    let listed = ready["checks"]["cameras"]["breakers_not_closed"].as_array().unwrap().len();
    assert_eq!(listed, 2, "{ready}");
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}
