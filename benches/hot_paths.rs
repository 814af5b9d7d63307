//! Criterion benches of the per-frame hot paths outside the model: output decode + NMS, tracking
//! and line counting, tracking and the full scene analytics, letterbox layout, batch forming.
//! `cargo bench --bench hot_paths`.
//! Whole-pipeline figures come from `its-analytics bench`.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use criterion::{criterion_group, criterion_main, Criterion};

use its_analytics::actors::gpu::batch::{Intake, Queued};
use its_analytics::actors::messages::Frame;
use its_analytics::analytics::config::AnalyticsConfig;
use its_analytics::analytics::geometry::Geometry;
use its_analytics::analytics::lines::{LineCounter, LineSpec};
use its_analytics::analytics::scene::{SceneAnalytics, StreamIdentity};
use its_analytics::analytics::tracker::{Tracker, TrackerConfig};
use its_analytics::detector::{nms, yolox, Letterbox};
use its_analytics::objects::{BBox, Detection, ObjectClass};
use its_analytics::overflow::WhenFull;

/// A YOLOX output with `n` confident cells (the rest background), like a busy road scene.
fn raw_output(n: usize) -> Vec<f32> {
    let rows = yolox::rows_for((416, 320));
    let mut out = vec![0.0f32; rows * 85];
    for i in 0..n {
        let r = (i * 97) % rows;
        let row = &mut out[r * 85..(r + 1) * 85];
        row[0] = 0.5;
        row[1] = 0.5;
        row[2] = 1.0;
        row[3] = 0.8;
        row[4] = 0.9;
        row[5 + 2] = 0.8;
    }
    out
}

fn detections(frame: usize) -> Vec<Detection> {
    (0..20)
        .map(|i| {
            let x = 15.0 * i as f32;
            let y = (frame as f32 * 2.0 + 7.0 * i as f32) % 240.0;
            Detection::new(BBox::new(x, y, x + 12.0, y + 10.0), 0.8, ObjectClass::Car)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let letterbox = Letterbox::new(320, 240, 416);
    let output = raw_output(60);
    c.bench_function("yolox_decode_and_nms_60_boxes", |b| {
        b.iter(|| nms::suppress(yolox::decode(black_box(&output), 85, letterbox.input, &letterbox, None, 0.1), 0.45))
    });

    let bgr = vec![128u8; 416 * 312 * 3];
    let mut pixels = Vec::new();
    c.bench_function("letterbox_320x240_to_416_interleaved", |b| {
        b.iter(|| letterbox.write_interleaved(black_box(&bgr), 416 * 3, &mut pixels))
    });

    let frames: Vec<Vec<Detection>> = (0..200).map(detections).collect();
    c.bench_function("track_and_count_200_frames_20_objects", |b| {
        b.iter(|| {
            let mut tracker = Tracker::new(TrackerConfig::default());
            let mut lines = LineCounter::new(vec![LineSpec {
                id: "l".into(),
                name: String::new(),
                a: [0.0, 150.0],
                b: [320.0, 150.0],
            }]);
            for dets in &frames {
                for t in tracker.update(dets) {
                    let (x, y) = t.bbox.ground_point();
                    lines.observe(t.track_id, (x as f64, y as f64), t.class);
                }
            }
            lines.counts()[0].in_
        })
    });

    // The same tracks through the whole per-camera analytics of a calibrated two-lane scene.
    let geometry: Geometry = serde_json::from_str(include_str!("../configs/geometry/overpass_video03.json")).unwrap();
    c.bench_function("track_and_analyse_200_frames_20_objects_calibrated", |b| {
        b.iter(|| {
            let mut tracker = Tracker::new(TrackerConfig::default());
            let identity = StreamIdentity { camera_id: "cam".into(), epoch_ms: 0, geometry_version: 1 };
            let mut scene = SceneAnalytics::new(identity, &geometry, AnalyticsConfig::default()).unwrap();
            let started = Instant::now();
            let mut events = 0;
            for (i, dets) in frames.iter().enumerate() {
                let tracked = tracker.update(dets);
                events += scene.observe(1_800_000_000_000 + 40 * i as i64, i as u64, started, &tracked).events.len();
            }
            events
        })
    });

    c.bench_function("batch_forming_100_cameras", |b| {
        let mut intake: Intake<()> = Intake::new();
        let ids: Vec<String> = (0..100).map(|i| format!("cam-{i}")).collect();
        for id in &ids {
            intake.attach(id.as_str().into(), 4, WhenFull::DropOldest, ());
        }
        b.iter(|| {
            for id in &ids {
                let frame = Frame {
                    camera_id: id.as_str().into(),
                    seq: 0,
                    captured_at: SystemTime::now(),
                    captured: Instant::now(),
                    pixels: Bytes::new(),
                    letterbox,
                    span: tracing::Span::none(),
                };
                intake.push(id, Queued::Frame(frame));
            }
            while intake.queued_frames() > 0 {
                black_box(intake.form_batch(32, None));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
