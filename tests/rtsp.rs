//! The overpass clip served by a real RTSP server (rtsp-server-perl, fed by the ffmpeg CLI at a
//! steady 20 frames/s, RTP over UDP) and counted live must agree with the file result within 1.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Service, TestEnv};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn file_count(clip: &str) -> u64 {
    let out = std::process::Command::new(common::binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["analyze", clip, "--line", "0,150,320,150", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["lines"][0]["in"].as_u64().unwrap() + report["lines"][0]["out"].as_u64().unwrap()
}

#[tokio::test]
async fn rtsp_counts_match_the_file_within_one() {
    let clip = common::clip("overpass_video03.avi");
    let clip = clip.to_str().unwrap().to_string();
    let from_file = file_count(&clip);

    let (client_port, source_port) = (common::free_port(), common::free_port());
    let _server = Killed(
        Command::new("rtsp-server-perl")
            .args(["-c", &client_port.to_string(), "-s", &source_port.to_string()])
            .args(["--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rtsp-server-perl (Debian package rtsp-server-perl)"),
    );
    common::wait_listening("the RTSP server to listen", client_port).await;

    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[
            ("ITS__CAMERAS__RECONNECT_INITIAL_MS", "100"),
            ("ITS__CAMERAS__RECONNECT_MAX_MS", "300"),
            ("ITS__CAMERAS__READ_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    let http = common::client();
    // Registered before the stream exists: the camera retries until the publisher announces it.
    let body = json!({
        "id": "overpass-rtsp",
        "url": format!("rtsp://127.0.0.1:{client_port}/cam"),
        "rtsp_transport": "udp",
        "fps": 30,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] }
    });
    let r = http.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // setpts + realtime: a steady 20 frames/s whatever the clip's broken timestamps say.
    let mut publisher = Killed(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i", &clip, "-vf", "setpts=N/(20*TB),realtime", "-r", "20"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "10"])
            .args(["-f", "rtsp", &format!("rtsp://127.0.0.1:{source_port}/cam")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg CLI"),
    );
    let status =
        tokio::time::timeout(Duration::from_secs(200), publisher.0.wait()).await.expect("publisher ends").unwrap();
    assert!(status.success(), "publisher failed");

    // The stream ends: the camera times out, and everything decoded has gone through.
    let counts: Value = common::eventually("the camera to finish the stream", Duration::from_secs(60), || async {
        let c: Value =
            http.get(svc.url("/api/v1/cameras/overpass-rtsp/counts")).send().await.ok()?.json().await.ok()?;
        let s = &c["status"];
        let settled = s["state"] != "streaming"
            && s["frames_processed"].as_u64()? + s["frames_dropped"].as_u64()? == s["frames_decoded"].as_u64()?;
        settled.then_some(c)
    })
    .await;
    let status = &counts["status"];
    let decoded = status["frames_decoded"].as_u64().unwrap();
    assert!(decoded >= 1600, "most of the 1700 frames arrive over RTP: {counts}");
    let live = counts["lines"][0]["in"].as_u64().unwrap() + counts["lines"][0]["out"].as_u64().unwrap();
    eprintln!(
        "file: {from_file} crossings; rtsp: {live} crossings, {decoded} frames decoded, {} dropped",
        status["frames_dropped"]
    );
    assert!(live.abs_diff(from_file) <= 1, "rtsp {live} vs file {from_file}: {counts}");
}

/// An HTTP source: the highway clip served by a plain HTTP server. A network stream that ends is
/// a dropped camera, so it is reconnected (not marked ended).
#[tokio::test]
async fn http_sources_stream_and_reconnect_when_they_end() {
    let port = common::free_port();
    let dir = common::clip("highway_video02.avi").parent().unwrap().to_path_buf();
    let _server = Killed(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_listening("the HTTP server to listen", port).await;
    let env = TestEnv::new().await;
    let svc = Service::start_with(&env, &[("ITS__CAMERAS__RECONNECT_INITIAL_MS", "200")]).await;
    let http = common::client();
    let body = json!({
        "id": "highway-http",
        "url": format!("http://127.0.0.1:{port}/highway_video02.avi"),
        "fps": 5,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] }
    });
    let r = http.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let cam: Value =
        common::eventually("the whole clip, a reconnect and analysed frames", Duration::from_secs(120), || async {
            let c: Value = http.get(svc.url("/api/v1/cameras/highway-http")).send().await.ok()?.json().await.ok()?;
            let s = &c["status"];
            let done = s["frames_decoded"].as_u64()? >= 750
                && s["reconnects"].as_u64()? >= 1
                && s["frames_processed"].as_u64()? > 0;
            done.then_some(c)
        })
        .await;
    assert_eq!(cam["status"]["last_error"], "stream ended", "{cam}");
    assert_ne!(cam["status"]["state"], "ended", "a network stream is never final: {cam}");
}
