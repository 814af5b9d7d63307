//! `analyze` on the overpass clip against its hand count: 27 vehicles cross y=150, all towards
//! the camera. Two runs must agree exactly (offline mode never drops a frame).

mod common;

use serde_json::Value;

fn analyze(args: &[&str]) -> Value {
    let out = std::process::Command::new(common::binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("analyze")
        .args(args)
        .arg("--json")
        .output()
        .expect("run its-analytics analyze");
    assert!(out.status.success(), "analyze failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("analyze prints JSON")
}

#[test]
fn overpass_counts_match_ground_truth_and_repeat_exactly() {
    let clip = common::clip("overpass_video03.avi");
    let clip = clip.to_str().unwrap();
    let first = analyze(&[clip, "--line", "0,150,320,150", "--line", "0,200,320,200"]);
    for line in first["lines"].as_array().unwrap() {
        let (inn, out) = (line["in"].as_u64().unwrap(), line["out"].as_u64().unwrap());
        assert!((26..=28).contains(&inn), "{}: {inn} in, ground truth 27: {first}", line["id"]);
        assert_eq!(out, 0, "all traffic moves towards the camera: {first}");
    }
    assert_eq!(first["frames_dropped"], 0);
    let second = analyze(&[clip, "--line", "0,150,320,150", "--line", "0,200,320,200"]);
    assert_eq!(first["lines"], second["lines"], "runs differ");
    assert_eq!(first["frames"], second["frames"]);
}

#[test]
fn unreadable_input_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.avi");
    std::fs::write(&garbage, vec![0x5au8; 64 * 1024]).unwrap();
    let out = std::process::Command::new(common::binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["analyze", garbage.to_str().unwrap(), "--line", "0,1,10,1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("garbage.avi") && stderr.contains("cannot open stream"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = std::process::Command::new(common::binary())
        .args(["analyze", "/nonexistent.avi", "--line", "0,1,10,1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.avi"));

    let out = std::process::Command::new(common::binary())
        .args(["analyze", "/nonexistent.avi", "--line", "1,2,3"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected four numbers"));
}
