//! Scenes the bundled clips do not show as they are, made from them with the FFmpeg CLI in a
//! temporary directory: the highway clip upscaled to 1080p (analysed with a crop to its counting
//! segment) and darkened (analysed with levels normalisation). Truth of the segment
//! `78,37,240,185`: 21 in (towards the camera), 22 out; docs/PERFORMANCE.md has the figures.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The highway clip's decoded frames (ffprobe counts 748 of the 750 the container announces).
const HIGHWAY_FRAMES: i64 = 748;
const TRUTH_IN: i64 = 21;
const TRUTH_OUT: i64 = 22;

/// `ffmpeg -i highway_video02.avi -vf FILTER ... OUT`, frame for frame (`-fps_mode passthrough`).
fn variant(dir: &Path, name: &str, filter: &str, codec: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(common::clip("highway_video02.avi"))
        .args(["-vf", filter, "-fps_mode", "passthrough", "-an"])
        .args(codec)
        .arg(&out)
        .status()
        .expect("run the ffmpeg CLI");
    assert!(status.success(), "ffmpeg {filter} failed");
    out
}

/// `analyze CLIP --line LINE --json EXTRA...`: (in, out, frames).
fn counts(clip: &Path, line: &str, extra: &[&str]) -> (i64, i64, i64) {
    let out = std::process::Command::new(common::binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("analyze")
        .arg(clip)
        .args(["--line", line, "--json"])
        .args(extra)
        .output()
        .expect("run its-analytics analyze");
    assert!(out.status.success(), "analyze failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("analyze prints JSON");
    let line = &report["lines"][0];
    (line["in"].as_i64().unwrap(), line["out"].as_i64().unwrap(), report["frames"].as_i64().unwrap())
}

/// Misses and extras together, both directions.
fn error((counted_in, counted_out, _): (i64, i64, i64)) -> i64 {
    (counted_in - TRUTH_IN).abs() + (counted_out - TRUTH_OUT).abs()
}

/// 1440x1080 (x4.5) with `crop: "auto"`: the model sees the segment's region, 1162 of the 1440
/// columns, at 416, and the counts stay within 1 of the truth each way, in full-frame pixels.
#[test]
fn an_upscaled_camera_cropped_to_its_segment_counts_within_one() {
    let dir = tempfile::tempdir().unwrap();
    let clip = variant(
        dir.path(),
        "highway_1080p.mkv",
        "scale=1440:1080:flags=bicubic",
        &["-c:v", "libx264", "-crf", "16", "-preset", "veryfast"],
    );
    let counted = counts(&clip, "351,166.5,1080,832.5", &["--crop", "auto"]);
    assert_eq!(counted.2, HIGHWAY_FRAMES, "every frame analysed: {counted:?}");
    assert!((counted.0 - TRUTH_IN).abs() <= 1 && (counted.1 - TRUTH_OUT).abs() <= 1, "{counted:?}");
}

/// At 35 % of the luma (`lutyuv=y=val*0.35`, the evaluation manifest's "dark" variant, whose plain
/// run `tests/ground_truth.rs` scores: 17 in, 21 out at the defaults) normalisation brings the
/// counts back to within 1 of the truth each way (20 in, 21 out when measured). The variant file is
/// the one `evaluate` makes and caches.
#[test]
fn normalising_a_darkened_camera_brings_its_counts_back() {
    let clip = its_analytics::evaluate::variant_file(
        &common::clip("highway_video02.avi"),
        "lutyuv=y=val*0.35",
        &its_analytics::evaluate::variant_cache(),
    )
    .expect("make the dark variant with ffmpeg");
    let normalised = counts(&clip, "78,37,240,185", &["--normalise"]);
    assert_eq!(normalised.2, HIGHWAY_FRAMES, "{normalised:?}");
    assert!(error(normalised) <= 2, "normalised: {normalised:?}");
}
