//! Pictures of a camera over real HTTP against the real binary, the real model and the overpass
//! clip: the snapshot (plain and with the overlay), the live view (parts, fps, viewer limit), the
//! tracked boxes, access, errors and metrics, and the camera's drift monitor (read, re-captured).
//! One service serves every case, to keep CI short.

mod common;

use std::time::Duration;

use common::{Service, TestEnv};
use serde_json::{json, Value};

/// Viewers of one camera the test service allows.
const MAX_VIEWERS: usize = 2;
/// The overlay colour of cars, RGB (`picture::overlay::class_colour`, BGR [0, 255, 0]).
const CAR_RGB: [u8; 3] = [0, 255, 0];

/// A decoded JPEG: packed RGB, width, height.
fn decode(jpeg: &[u8]) -> (Vec<u8>, u32, u32) {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    let pixels = decoder.decode().expect("a valid JPEG");
    let info = decoder.info().unwrap();
    assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24);
    (pixels, info.width as u32, info.height as u32)
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap().to_string()
}

/// The share of a box's left, right and bottom edges (drawn 2 pixels wide inwards, on a
/// `scale`-times larger picture) whose pixels are near `rgb`. The top edge is left out: a label
/// may sit on it.
fn outline_share(image: &(Vec<u8>, u32, u32), bbox: [f64; 4], scale: f64, rgb: [u8; 3]) -> f64 {
    let (pixels, w, h) = image;
    let [x1, y1, x2, y2] = bbox.map(|v| (v * scale).round() as i64);
    let near = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= *w as i64 || y >= *h as i64 {
            return None;
        }
        let i = 3 * (y as usize * *w as usize + x as usize);
        Some((0..3).all(|c| (pixels[i + c] as i32 - rgb[c] as i32).abs() < 80))
    };
    let mut samples = Vec::new();
    for y in y1 + 2..y2 - 1 {
        samples.push(near(x1, y));
        samples.push(near(x2, y));
    }
    for x in x1 + 2..x2 - 1 {
        samples.push(near(x, y2));
    }
    let inside: Vec<bool> = samples.into_iter().flatten().collect();
    inside.iter().filter(|&&ok| ok).count() as f64 / inside.len().max(1) as f64
}

/// Reads `n` parts of a live view: (X-Frame-Seq, JPEG) each.
async fn parts(response: &mut reqwest::Response, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("a part within 20 s")
            .unwrap()
            .expect("the stream goes on");
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            assert_eq!(lines.next(), Some("--frame"), "{head}");
            let mut length = None;
            let mut seq = None;
            let mut kind = None;
            for line in lines {
                let (name, value) = line.split_once(": ").unwrap();
                match name {
                    "Content-Type" => kind = Some(value.to_string()),
                    "Content-Length" => length = Some(value.parse::<usize>().unwrap()),
                    "X-Frame-Seq" => seq = Some(value.parse::<u64>().unwrap()),
                    other => panic!("unexpected part header {other}"),
                }
            }
            assert_eq!(kind.as_deref(), Some("image/jpeg"));
            let (length, seq) = (length.expect("Content-Length"), seq.expect("X-Frame-Seq"));
            let body = end + 4;
            if buffer.len() < body + length + 2 {
                break;
            }
            assert_eq!(&buffer[body + length..body + length + 2], b"\r\n", "a part ends with CRLF");
            out.push((seq, buffer[body..body + length].to_vec()));
            buffer.drain(..body + length + 2);
        }
    }
    out
}

#[tokio::test]
async fn snapshots_live_views_and_tracks() {
    let env = TestEnv::new().await;
    let max = MAX_VIEWERS.to_string();
    let settings = [
        ("ITS__PICTURES__MAX_VIEWERS_PER_CAMERA", max.as_str()),
        // A drift reference of 60 frames (2 s of the clip at 30 frames/s), compared every second.
        ("ITS__MODEL__DRIFT__REFERENCE_FRAMES", "60"),
        ("ITS__MODEL__DRIFT__WINDOW_FRAMES", "60"),
        ("ITS__MODEL__DRIFT__EVERY_FRAMES", "30"),
    ];
    let svc = Service::start_with(&env, &settings).await;
    let admin = common::client();
    let viewer = common::client_with_token(common::VIEWER_TOKEN);
    let anonymous = reqwest::Client::new();
    let snapshot = svc.url("/api/v1/cameras/overpass/snapshot.jpg");

    // Unknown camera, no token.
    for path in ["snapshot.jpg", "live.mjpeg", "tracks", "drift"] {
        let r = viewer.get(svc.url(&format!("/api/v1/cameras/nope/{path}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("nope"));
        let r = anonymous.get(svc.url(&format!("/api/v1/cameras/overpass/{path}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
    }

    let body = json!({
        "id": "overpass",
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "geometry": common::overpass_geometry(),
        "replay": { "loop": true }
    });
    let r = admin.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // The plain snapshot, as a viewer: 503 (JSON) until the first frame, then the picture.
    let r = common::eventually("a snapshot", Duration::from_secs(60), || async {
        let r = viewer.get(&snapshot).send().await.unwrap();
        if r.status().as_u16() == 503 {
            assert!(r.json::<Value>().await.unwrap()["error"].is_string());
            return None;
        }
        Some(r)
    })
    .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "content-type"), "image/jpeg");
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!((header(&r, "x-source-width"), header(&r, "x-source-height")), ("320".into(), "240".into()));
    header(&r, "x-frame-seq").parse::<u64>().unwrap();
    let (_, w, h) = decode(&r.bytes().await.unwrap());
    assert_eq!((w, h), (416, 312), "the letterboxed frame without its padding");

    // With the overlay: a car that /tracks reports has its box outlined in the car colour, on a
    // picture of the same tracked frame.
    let scale = 416.0 / 320.0;
    let best = common::eventually("a car outlined on the overlay", Duration::from_secs(90), || async {
        // The picture comes with the first decoded frame, the tracks with the first analysed one:
        // until then /tracks answers 503.
        let r = viewer.get(svc.url("/api/v1/cameras/overpass/tracks")).send().await.ok()?;
        if r.status().as_u16() == 503 {
            return None;
        }
        let tracks: Value = r.json().await.ok()?;
        assert_eq!(tracks["camera_id"], "overpass");
        assert_eq!((tracks["source_width"].as_u64(), tracks["source_height"].as_u64()), (Some(320), Some(240)));
        let r = viewer.get(format!("{snapshot}?overlay=1")).send().await.ok()?;
        assert_eq!(r.status().as_u16(), 200);
        if r.headers().get("x-tracks-seq")?.to_str().ok()?.parse::<u64>().ok()? != tracks["seq"].as_u64()? {
            return None;
        }
        let jpeg = r.bytes().await.ok()?;
        // Kept for a look: target/tmp/overlay.jpg.
        std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("overlay.jpg"), &jpeg).unwrap();
        let image = decode(&jpeg);
        let shares: Vec<f64> = tracks["tracks"]
            .as_array()?
            .iter()
            .filter(|t| t["class"] == "car")
            .map(|t| {
                let b: Vec<f64> = t["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                outline_share(&image, [b[0], b[1], b[2], b[3]], scale, CAR_RGB)
            })
            .collect();
        shares.into_iter().reduce(f64::max)
    })
    .await;
    assert!(best >= 0.6, "the best car outline is only {:.0} % car-coloured", best * 100.0);

    // Drift: the reference, then a comparison of the clip with itself, exported per feature.
    let drift_url = svc.url("/api/v1/cameras/overpass/drift");
    let compared = common::eventually("a drift comparison", Duration::from_secs(60), || async {
        let drift: Value = viewer.get(&drift_url).send().await.ok()?.json().await.ok()?;
        assert_eq!(
            (&drift["camera_id"], &drift["model"], &drift["enabled"]),
            (&json!("overpass"), &json!("yolox_nano"), &json!(true))
        );
        drift["kl"].is_object().then_some(drift)
    })
    .await;
    assert_eq!((&compared["state"], &compared["model_version"]), (&json!("comparing"), &json!(1)), "{compared}");
    assert_eq!((&compared["reference_frames"], &compared["window_frames"]), (&json!(60), &json!(60)), "{compared}");
    let page = anonymous.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for feature in ["class", "confidence", "box_size", "count"] {
        let series = format!("ml_model_drift_kl{{camera=\"overpass\",model=\"yolox_nano\",feature=\"{feature}\"}}");
        assert!(page.contains(&series), "{series} missing:\n{page}");
    }
    // Re-capturing the reference: operators only; it starts again at once.
    let reference = svc.url("/api/v1/cameras/overpass/drift/reference");
    let r = viewer.post(&reference).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let operator = common::client_with_token(common::OPERATOR_TOKEN);
    let r = operator.post(&reference).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let restarted: Value = r.json().await.unwrap();
    assert_eq!((&restarted["state"], &restarted["reference_frames"]), (&json!("capturing"), &json!(0)), "{restarted}");
    assert_eq!((&restarted["kl"], &restarted["comparisons"]), (&Value::Null, &json!(0)), "{restarted}");
    assert_eq!(restarted["captures"], compared["captures"].as_u64().unwrap() + 1, "{restarted}");
    let r = operator.post(svc.url("/api/v1/cameras/nope/drift/reference")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The live view: parts of new frames, in order.
    let live = svc.url("/api/v1/cameras/overpass/live.mjpeg");
    let mut first = viewer.get(format!("{live}?overlay=1")).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(header(&first, "content-type"), "multipart/x-mixed-replace; boundary=frame");
    let got = parts(&mut first, 3).await;
    assert!(got.windows(2).all(|p| p[1].0 > p[0].0), "X-Frame-Seq increases: {:?}", got.iter().map(|p| p.0));
    for (_, jpeg) in &got {
        assert_eq!(decode(jpeg).1, 416);
    }

    // Bad requests.
    for query in ["fps=0", "fps=31", "fps=6", "fps=two", "overlay=maybe", "colour=1"] {
        let r = viewer.get(format!("{live}?{query}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{query}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string(), "{query}");
    }
    let r = viewer.get(format!("{snapshot}?overlay=2")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The viewer limit: the (max + 1)th concurrent viewer is refused; a place frees on leaving.
    let mut second = viewer.get(format!("{live}?fps=2")).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 200);
    parts(&mut second, 1).await;
    let r = viewer.get(&live).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("live viewers"));
    drop(second);
    let mut third = common::eventually("a place after a viewer left", Duration::from_secs(20), || async {
        let r = viewer.get(&live).send().await.unwrap();
        (r.status().as_u16() == 200).then_some(r)
    })
    .await;
    parts(&mut third, 1).await;

    let page = anonymous.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let labelled = |name: &str| {
        page.lines()
            .find(|l| l.starts_with(&format!("{name}{{camera=\"overpass\"}}")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{page}"))
    };
    assert_eq!(labelled("its_picture_viewers"), MAX_VIEWERS as f64);
    assert!(labelled("its_picture_viewers_refused_total") >= 1.0);
    assert!(labelled("its_picture_parts_sent_total") >= 5.0);
    assert!(common::metric(&page, "its_pictures_encoded_total").unwrap() >= 3.0);
    assert!(common::metric(&page, "its_picture_encode_seconds_count").unwrap() >= 3.0);
    drop((first, third));
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}
