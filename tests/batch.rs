//! Inference is real and the backends agree: a batch of N real frames gives the same detections as
//! N single runs (the ONNX export had batch size 1 baked into its reshapes; a naive trace would
//! fold the batch), and ONNX Runtime and the channels-last TorchScript give the detections of the
//! model as served before them (`yolox_nano.reference.pt`), frame by frame, within float tolerance.

mod common;

use std::path::Path;

use its_analytics::detector::config::Backend;
use its_analytics::detector::{Detector, Letterbox};
use its_analytics::objects::Detection;
use its_analytics::settings::{ModelSettings, Settings};

/// `n` frames of a clip from frame 300 on (several vehicles in view), scaled by the ffmpeg CLI to
/// the letterboxed size, laid out as model input by our letterbox code, overview included.
fn real_frames(n: usize) -> Vec<(Vec<u8>, Letterbox)> {
    let letterbox = Letterbox::new(320, 240, 416).with_overview();
    let (w, h) = letterbox.scaled_size();
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(common::clip("overpass_video03.avi"))
        .args(["-vf", &format!("select=gte(n\\,300)*not(mod(n\\,7)),scale={w}:{h}"), "-frames:v", &n.to_string()])
        .args(["-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
        .output()
        .expect("ffmpeg CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frame_len = (w * h * 3) as usize;
    assert_eq!(out.stdout.len(), frame_len * n);
    out.stdout
        .chunks_exact(frame_len)
        .map(|bgr| {
            let mut pixels = Vec::new();
            letterbox.write_interleaved(bgr, (w * 3) as usize, &mut pixels);
            letterbox.fill_overview(&mut pixels);
            (pixels, letterbox)
        })
        .collect()
}

fn model(file: &str) -> ModelSettings {
    let settings = Settings::load(None).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(file);
    ModelSettings { path, ..settings.model }
}

fn load(file: &str) -> Detector {
    Detector::load(&model(file), tch::Device::Cpu).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Detections of `frames` in batches of `batch`.
fn detect(detector: &Detector, frames: &[(Vec<u8>, Letterbox)], batch: usize) -> Vec<Vec<Detection>> {
    let inputs: Vec<_> = frames.iter().map(|(p, l)| (p.as_slice(), *l)).collect();
    inputs.chunks(batch).flat_map(|chunk| detector.detect(chunk).unwrap()).collect()
}

/// The same detections, in the same order, within float tolerance (score 1e-3, box 0.05 px).
fn assert_same(what: &str, got: &[Vec<Detection>], want: &[Vec<Detection>]) {
    assert_eq!(got.len(), want.len());
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(got.len(), want.len(), "{what}, frame {i}: {got:?} vs {want:?}");
        for (a, b) in got.iter().zip(want) {
            assert_eq!(a.class, b.class, "{what}, frame {i}");
            assert!((a.score - b.score).abs() < 1e-3, "{what}, frame {i}: {a:?} vs {b:?}");
            let corners =
                [(a.bbox.x1, b.bbox.x1), (a.bbox.y1, b.bbox.y1), (a.bbox.x2, b.bbox.x2), (a.bbox.y2, b.bbox.y2)];
            for (x, y) in corners {
                assert!((x - y).abs() < 0.05, "{what}, frame {i}: {a:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn every_backend_gives_the_reference_detections_in_batches_and_alone() {
    tch::set_num_threads(2);
    let frames = real_frames(8);
    let reference = load("yolox_nano.reference.pt");
    let want = detect(&reference, &frames, 1);
    let total: usize = want.iter().map(Vec::len).sum();
    assert!(total >= 16, "real traffic frames should hold vehicles, got {total} detections");
    assert_same("reference, batches of 4", &detect(&reference, &frames, 4), &want);

    let onnx = load("yolox_nano.onnx");
    assert_eq!(onnx.backend(), Backend::OnnxRuntime);
    let channels_last = load("yolox_nano.torchscript.pt");
    assert_eq!(channels_last.backend(), Backend::TorchScript);
    for (name, detector) in [("onnx", &onnx), ("torchscript", &channels_last)] {
        for batch in [1, 4, 8] {
            assert_same(&format!("{name}, batches of {batch}"), &detect(detector, &frames, batch), &want);
        }
    }
    // The raw output really has a batch dimension (not one image's rows folded), over the grid
    // of the 4:3 frame's 416x320 input.
    let pixels: Vec<_> = frames.iter().map(|(p, l)| (&p[..l.main_len()], l.input)).collect();
    let output = onnx.forward(&pixels).unwrap();
    assert_eq!(output.input, (416, 320));
    assert_eq!(output.values.len(), 8 * (52 * 40 + 26 * 20 + 13 * 10) * output.row_len);
}

#[test]
fn other_input_sizes_follow_the_grid() {
    // YOLOX is fully convolutional and the files keep H and W free: at 320 a 4:3 frame's input
    // is 320x256, its grid has 1680 cells, and the same vehicles are found, in source pixels.
    tch::set_num_threads(2);
    let small = Letterbox::new(320, 240, 320);
    assert_eq!((small.scaled_size(), small.input), ((320, 240), (320, 256)));
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(common::clip("overpass_video03.avi"))
        .args(["-vf", "select=gte(n\\,300)", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
        .output()
        .expect("ffmpeg CLI");
    let mut pixels = Vec::new();
    small.write_interleaved(&out.stdout, 320 * 3, &mut pixels);
    for file in ["yolox_nano.onnx", "yolox_nano.torchscript.pt"] {
        let settings = ModelSettings { input_size: 320, ..model(file) };
        let detector = Detector::load(&settings, tch::Device::Cpu).unwrap();
        let output = detector.forward(&[(pixels.as_slice(), small.input)]).unwrap();
        assert_eq!(output.values.len(), 1680 * output.row_len, "{file}");
        let found = detector.detect(&[(pixels.as_slice(), small)]).unwrap().remove(0);
        assert!(found.len() >= 2, "{file} at 320: {found:?}");
        assert!(found.iter().all(|d| d.bbox.x2 <= 321.0 && d.bbox.y2 <= 241.0), "{file}: {found:?}");
    }
}

#[test]
fn a_model_with_the_wrong_layout_or_no_file_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // A valid TorchScript module whose output is not a detection head: [N, W] means.
    let mut mean = |inputs: &[tch::Tensor]| vec![inputs[0].mean_dim([1i64, 3].as_slice(), false, tch::Kind::Float)];
    let example = tch::Tensor::zeros([1, 416, 416, 3], (tch::Kind::Uint8, tch::Device::Cpu));
    let wrong = tch::CModule::create_by_tracing("Wrong", "forward", &[example], &mut mean).unwrap();
    let mut settings = model("yolox_nano.onnx");
    settings.path = dir.path().join("wrong.pt");
    wrong.save(&settings.path).unwrap();
    let Err(err) = Detector::load(&settings, tch::Device::Cpu) else { panic!("wrong layout accepted") };
    assert!(err.to_string().contains("shape [1, 416]"), "{err}");

    // An ONNX file that is not a model: ONNX Runtime's own message, with the path.
    settings.path = dir.path().join("broken.onnx");
    std::fs::write(&settings.path, b"not a model").unwrap();
    let Err(err) = Detector::load(&settings, tch::Device::Cpu) else { panic!("broken ONNX accepted") };
    assert!(err.to_string().contains("broken.onnx"), "{err}");

    for missing in ["/nonexistent/model.pt", "/nonexistent/model.onnx"] {
        settings.path = missing.into();
        let Err(err) = Detector::load(&settings, tch::Device::Cpu) else { panic!("missing file accepted") };
        assert!(err.to_string().contains(missing), "{err}");
    }
}
