//! Model drift on real video through the in-process pipeline (`analyze::analyze`, the live code
//! path with the real model): the overpass clip followed by itself reads as no drift, followed by a
//! darkened and blurred copy of itself as drift. Both clips are made with FFmpeg and cached like
//! `evaluate`'s variants. The values are printed (`--no-capture`): docs/OPERATIONS.md
//! (ModelDriftHigh) and deploy/prometheus/alerts_test.yml use them.

mod common;

use its_analytics::analytics::geometry::Geometry;
use its_analytics::detector::drift::{DriftState, DriftView, Feature};
use its_analytics::settings::Settings;
use its_analytics::topology::CameraMode;

/// Every second frame of the overpass clip (1,699 frames, 60 frames/s): 850 frames at 30/s, to
/// keep the test short; each clip below is twice that.
const SAMPLED: &str = "select='not(mod(n,2))'";
const FRAMES: u32 = 850;
/// What the second copy goes through: 35 % of the luma (`evaluate`'s "dark" variant) and a blur.
const DARK_BLURRED: &str = "lutyuv=y=val*0.35,gblur=sigma=2";

/// The sampled overpass clip, then the same frames through `second` (`null`: unchanged).
fn clip_then(second: &str) -> std::path::PathBuf {
    let filter = format!("{SAMPLED},split[a][b];[b]{second}[c];[a][c]concat=n=2:v=1:a=0");
    its_analytics::evaluate::variant_file(
        &common::clip("overpass_video03.avi"),
        &filter,
        &its_analytics::evaluate::variant_cache(),
    )
    .expect("make the clip with ffmpeg")
}

/// The drift monitor after the whole clip: a reference of its first half, one comparison of the
/// second half with it.
fn drift_of(settings: &Settings, clip: &std::path::Path) -> DriftView {
    let run = actix::System::new()
        .block_on(its_analytics::analyze::analyze(settings, clip, Geometry::default(), None, CameraMode::Offline))
        .expect("analyze the clip");
    assert_eq!(run.report.frames, 2 * FRAMES as u64, "every frame analysed: {:?}", run.report);
    let view = run.drift.expect("drift detection is on");
    assert_eq!((view.state, view.comparisons, view.model_version), (DriftState::Comparing, 1, Some(1)), "{view:?}");
    assert_eq!((view.reference_frames, view.window_frames), (FRAMES as u64, FRAMES as u64));
    view
}

fn line(name: &str, view: &DriftView) -> String {
    let kl = view.kl.expect("a comparison");
    let values: Vec<String> = Feature::ALL.iter().map(|&f| format!("{}={:.4}", f.as_str(), kl.get(f))).collect();
    format!("{name}: {}", values.join(" "))
}

#[test]
fn the_overpass_clip_does_not_drift_from_itself_and_drifts_darkened_and_blurred() {
    let mut settings = Settings::load(None).expect("the default settings");
    settings.model.drift.reference_frames = FRAMES;
    settings.model.drift.window_frames = FRAMES;
    settings.model.drift.every_frames = FRAMES;

    let same = drift_of(&settings, &clip_then("null"));
    eprintln!("{}", line("same", &same));
    let kl = same.kl.unwrap();
    for feature in Feature::ALL {
        assert!(kl.get(feature) < 0.02, "{}: {kl:?}", feature.as_str());
    }

    let dark = drift_of(&settings, &clip_then(DARK_BLURRED));
    eprintln!("{}", line("dark+blurred", &dark));
    let kl = dark.kl.unwrap();
    assert!(kl.max() > 0.1, "{kl:?}");
}
