//! A raw-frame camera (`raw://`, what the GPU bundle benchmarks with, no FFmpeg in the service)
//! through the whole pipeline in-process: real frames of the overpass clip as BGR24 (made by the
//! ffmpeg CLI), YOLOX-Nano on the CPU, tracking and line counting, events to a memory sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use its_analytics::camera_spec::CameraSpec;
use its_analytics::events::EventDetail;
use its_analytics::metrics::Metrics;
use its_analytics::settings::Settings;
use its_analytics::sinks::MemorySink;
use its_analytics::topology::{CameraMode, Pipeline};

/// Frames of the clip written as raw BGR24, from its start (27 vehicles in 1,700 frames).
const FRAMES: usize = 360;

#[test]
fn a_raw_camera_is_detected_tracked_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().canonicalize().unwrap();
    let frames = media.join("overpass.bgr");
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/video/overpass_video03.avi");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", clip, "-frames:v", &FRAMES.to_string(), "-f", "rawvideo", "-pix_fmt", "bgr24"])
        .arg(&frames)
        .status()
        .expect("ffmpeg CLI");
    assert!(status.success());
    assert_eq!(std::fs::metadata(&frames).unwrap().len(), (FRAMES * 320 * 240 * 3) as u64);

    let mut settings = Settings::load(None).unwrap();
    settings.device.kind = its_analytics::settings::DeviceKind::Cpu;
    settings.cameras.media_dir = media.display().to_string();
    // The source plays at 6 frames/s (a slow replay of the 30 frames/s clip), so a loaded CPU
    // keeps up and every frame is tracked.
    let spec: CameraSpec = serde_json::from_value(serde_json::json!({
        "id": "raw-overpass",
        "url": format!("raw://{}?width=320&height=240&fps=6", frames.display()),
        "fps": 6,
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
    }))
    .unwrap();
    let problems = spec.validate(&settings.cameras.source_policy().unwrap());
    assert!(problems.is_empty(), "{problems:?}");

    actix::System::new().block_on(async move {
        let sink = Arc::new(MemorySink::default());
        let pipeline =
            Pipeline::start(settings, Arc::new(Metrics::new()), sink.clone(), Box::new(|_: &str, _: &str| {}))
                .expect("pipeline starts");
        let status = pipeline.start_camera(spec, CameraMode::Live, 0, 1).await.expect("camera starts");
        // The camera starts at a frame of its own and loops (60 s a loop at 6 frames/s): at most a
        // loop and a half until a vehicle has crossed.
        let deadline = Instant::now() + Duration::from_secs(150);
        let mut crossings = Vec::new();
        while crossings.is_empty() {
            assert!(Instant::now() < deadline, "no crossing: {:?} {:?}", status.view(), status.last_error());
            tokio::time::sleep(Duration::from_millis(500)).await;
            crossings.extend(sink.take().into_iter().filter(|(e, _)| matches!(e.detail, EventDetail::LineCrossing(_))));
        }
        let view = status.view();
        assert!(view.frames_processed >= 2, "{view:?}");
        let (event, at) = &crossings[0];
        assert_eq!(&*event.camera_id, "raw-overpass");
        let latency = at.duration_since(event.captured.expect("a live frame's capture instant"));
        assert!(latency < Duration::from_secs(10), "capture to event {latency:?}");
        pipeline.shutdown().await;
    });
}
