//! Batched inference is real: a batch of N real frames gives the same detections as N single runs
//! (the ONNX export had batch size 1 baked into its reshapes; a naive trace would fold the batch).

mod common;

use its_analytics::detector::{Detector, Letterbox};
use its_analytics::settings::Settings;

/// The first `n` frames of a clip, scaled by the ffmpeg CLI to the letterboxed size, laid out as
/// model input by our letterbox code.
fn real_frames(n: usize) -> Vec<(Vec<u8>, Letterbox)> {
    let letterbox = Letterbox::new(320, 240, 416);
    let (w, h) = letterbox.scaled_size();
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(common::clip("overpass_video03.avi"))
        // frames 300.. have several vehicles in view
        .args(["-vf", &format!("select=gte(n\\,300),scale={w}:{h}"), "-frames:v", &n.to_string()])
        .args(["-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
        .output()
        .expect("ffmpeg CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frame_len = (w * h * 3) as usize;
    assert_eq!(out.stdout.len(), frame_len * n);
    out.stdout
        .chunks_exact(frame_len)
        .map(|bgr| {
            let mut planar = Vec::new();
            letterbox.write_planar(bgr, (w * 3) as usize, &mut planar);
            (planar, letterbox)
        })
        .collect()
}

#[test]
fn a_batch_of_four_equals_four_single_runs() {
    tch::set_num_threads(2);
    let settings = Settings::load(None).unwrap();
    let mut model = settings.model.clone();
    model.path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&model.path);
    let detector = Detector::load(&model, tch::Device::Cpu).expect("model loads");
    let frames = real_frames(4);
    let inputs: Vec<_> = frames.iter().map(|(p, l)| (p.as_slice(), *l)).collect();

    let batched = detector.detect(&inputs).unwrap();
    assert_eq!(batched.len(), 4);
    let total: usize = batched.iter().map(Vec::len).sum();
    assert!(total >= 4, "real traffic frames should hold vehicles, got {total} detections");
    for (i, input) in inputs.iter().enumerate() {
        let single = detector.detect(std::slice::from_ref(input)).unwrap().remove(0);
        assert_eq!(single.len(), batched[i].len(), "frame {i}: {single:?} vs {:?}", batched[i]);
        for (a, b) in single.iter().zip(&batched[i]) {
            assert_eq!(a.class, b.class);
            assert!((a.score - b.score).abs() < 1e-3, "{a:?} vs {b:?}");
            for (x, y) in
                [(a.bbox.x1, b.bbox.x1), (a.bbox.y1, b.bbox.y1), (a.bbox.x2, b.bbox.x2), (a.bbox.y2, b.bbox.y2)]
            {
                assert!((x - y).abs() < 0.05, "{a:?} vs {b:?}");
            }
        }
    }
    // The raw output really has a batch dimension of 4 (not one image's rows folded).
    let pixels: Vec<&[u8]> = frames.iter().map(|(p, _)| p.as_slice()).collect();
    let (values, row_len) = detector.forward(&pixels).unwrap();
    assert_eq!(values.len(), 4 * 3549 * row_len);
}

#[test]
fn a_model_with_the_wrong_layout_is_refused_at_load() {
    let settings = Settings::load(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A valid TorchScript module whose output is not a detection head: [N, 3] channel means.
    let mut mean = |inputs: &[tch::Tensor]| vec![inputs[0].mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float)];
    let example = tch::Tensor::zeros([1, 3, 416, 416], (tch::Kind::Float, tch::Device::Cpu));
    let wrong = tch::CModule::create_by_tracing("Wrong", "forward", &[example], &mut mean).unwrap();
    let mut model = settings.model.clone();
    model.path = dir.path().join("wrong.pt");
    wrong.save(&model.path).unwrap();
    let Err(err) = Detector::load(&model, tch::Device::Cpu) else { panic!("wrong layout accepted") };
    assert!(err.to_string().contains("shape [1, 3]"), "{err}");

    model.path = "/nonexistent/model.pt".into();
    let Err(err) = Detector::load(&model, tch::Device::Cpu) else { panic!("missing file accepted") };
    assert!(err.to_string().contains("/nonexistent/model.pt"), "{err}");
}
