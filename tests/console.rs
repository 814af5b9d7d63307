//! The operator console in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (the system chromedriver) against the real service with the real model on the overpass clip.
//! One service and one browser session serve every scenario, in order: sign-in (a bad token shows
//! the API's message), a camera registered through the page (validation messages by their
//! fields), the live annotated view (the overlay's car colour where the API reports a car), a
//! counting line drawn with the mouse and saved (version 2 in the API, counts rising on the
//! page), a bad geometry (the API's message next to the drawing), the system page, and a viewer
//! (edit controls disabled, a forged save refused with 403). Screenshots of every page are kept
//! in `target/console-screenshots/` for a person to look at.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Service, TestEnv};
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Long enough for the service's first frames on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// Chromium under chromedriver, in a process group of its own (so that nothing outlives the
/// test), with a fresh profile.
struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let port = common::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({e}): scripts/setup.sh installs chromium-driver"));
        common::wait_listening("chromedriver", port).await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({ "goog:chromeOptions": { "binary": CHROMIUM, "args": args } });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self { driver, client, _profile: profile }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// A second screenshot of a long page, scrolled to its end.
async fn screenshot_end(client: &Client, name: &str) {
    client.execute("window.scrollTo(0, document.body.scrollHeight);", vec![]).await.unwrap();
    screenshot(client, name).await;
    client.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
}

async fn find(client: &Client, css: &str) -> Element {
    client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Waits until the text of `css` satisfies `check`; returns it.
async fn text_until(client: &Client, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if check(&text) {
                    return text;
                }
                last = text;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{css}: waited for {what}; last text {last:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the page replaced the element between finding and using it (a view rendered again):
/// finding it again is the answer.
fn is_stale(error: &fantoccini::error::CmdError) -> bool {
    use fantoccini::error::{CmdError, ErrorStatus};
    matches!(error, CmdError::Standard(e) if e.error == ErrorStatus::StaleElementReference)
}

/// Finds `css` and acts on it, finding it again while the page replaces it under the action.
async fn on_element<F, Fut>(client: &Client, css: &str, what: &str, act: F)
where
    F: Fn(Element) -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match act(find(client, css).await).await {
            Ok(()) => return,
            Err(e) if is_stale(&e) && std::time::Instant::now() < deadline => {}
            Err(e) => panic!("{what} {css}: {e}"),
        }
    }
}

async fn type_into(client: &Client, css: &str, text: &str) {
    on_element(client, css, "type into", |input| async move {
        input.clear().await?;
        input.send_keys(text).await
    })
    .await;
}

async fn click(client: &Client, css: &str) {
    on_element(client, css, "click", |element| async move { element.click().await }).await;
}

async fn go(client: &Client, svc: &Service, hash: &str) {
    client.goto(&svc.url(&format!("/{hash}"))).await.unwrap();
}

async fn sign_in(client: &Client, svc: &Service, token: &str) {
    go(client, svc, "#/signin").await;
    type_into(client, "#token", token).await;
    click(client, "#sign-in").await;
    text_until(client, "#who", "the signed-in caller", |t| !t.is_empty()).await;
}

async fn disabled(element: &Element) -> bool {
    !element.is_enabled().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    let env = TestEnv::new().await;
    // Live views at the camera's own rate (10 frames/s), so that the frame shown is often the one
    // whose tracks the API reports.
    let svc = Service::start_with(&env, &[("ITS__PICTURES__LIVE_FPS", "10")]).await;
    let browser = Browser::start().await;
    let client = &browser.client;
    let admin = common::client();

    signs_in_with_the_apis_message_for_a_bad_token(client, &svc).await;
    registers_a_camera_with_messages_by_field(client, &svc).await;
    shows_boxes_where_the_api_reports_vehicles(client, &svc, &admin).await;
    draws_a_line_whose_counts_rise(client, &svc, &admin).await;
    shows_the_apis_message_for_a_bad_geometry(client, &svc, &admin).await;
    shows_the_system(client, &svc).await;
    fits_a_tablet(client, &svc).await;
    lets_a_viewer_see_but_not_edit(client, &svc).await;

    browser.client.clone().close().await.unwrap();
    let log = svc.stop();
    assert!(!log.contains("panicked"), "{log}");
}

async fn signs_in_with_the_apis_message_for_a_bad_token(client: &Client, svc: &Service) {
    go(client, svc, "").await;
    find(client, "#token").await;
    screenshot(client, "01-sign-in").await;
    type_into(client, "#token", "not-a-valid-token").await;
    click(client, "#sign-in").await;
    text_until(client, "#signin-error", "the API's message", |t| t == "invalid bearer token").await;
    screenshot(client, "02-sign-in-bad-token").await;
    sign_in(client, svc, common::ADMIN_TOKEN).await;
    text_until(client, "#who", "the admin's name and role", |t| t == "test-admin (admin)").await;
    find(client, "table#cameras").await;
}

async fn registers_a_camera_with_messages_by_field(client: &Client, _svc: &Service) {
    // Signing in led to the cameras page.
    find(client, "#add-camera").await;
    // The API refuses both fields; each message appears by its field.
    type_into(client, "#cam-id", "overpass").await;
    type_into(client, "#cam-url", "ftp://example.invalid/x").await;
    type_into(client, "#cam-fps", "500").await;
    click(client, "#cam-add").await;
    text_until(client, "#cam-fps-error", "the fps message", |t| t.contains("fps must be in (0, 120]")).await;
    text_until(client, "#cam-url-error", "the url message", |t| t.contains("url scheme \"ftp\"")).await;
    text_until(client, "#cam-id-error", "no message for a good id", str::is_empty).await;
    screenshot(client, "03-cameras-validation").await;

    let clip = common::clip("overpass_video03.avi");
    type_into(client, "#cam-url", &format!("file://{}", clip.display())).await;
    type_into(client, "#cam-fps", "10").await;
    click(client, "#cam-loop").await;
    click(client, "#cam-add").await;
    find(client, "tr[data-camera=overpass]").await;
    text_until(client, "tr[data-camera=overpass] td[data-field=fps]", "frames/s analysed", |t| {
        t.parse::<f64>().is_ok_and(|fps| fps > 0.0)
    })
    .await;
    screenshot(client, "04-cameras").await;
}

/// The live view shows the overlay: the car colour (green) on the outline of a car that
/// `/tracks` reports for the frame shown. The page's pause button freezes the view on a frame
/// right after the tracks are read; when that frame is the one they describe, its screenshot is
/// checked.
async fn shows_boxes_where_the_api_reports_vehicles(client: &Client, svc: &Service, admin: &reqwest::Client) {
    go(client, svc, "#/cameras/overpass").await;
    let view = find(client, "#live-view").await;
    find(client, "#live-view:not([hidden])").await;
    let toggle = "document.getElementById('live-pause').click(); \
                  return document.getElementById('live-view').dataset.seq;";
    let deadline = std::time::Instant::now() + 2 * WAIT;
    let mut best = (0.0, String::new());
    loop {
        let tracks: Value =
            admin.get(svc.url("/api/v1/cameras/overpass/tracks")).send().await.unwrap().json().await.unwrap();
        // Pauses the view and reads which frame it stopped on, in one step.
        let shown = client.execute(toggle, vec![]).await.unwrap();
        let shown = shown.as_str().unwrap_or_default().to_string();
        if shown.parse::<u64>().ok() == tracks["seq"].as_u64() {
            let png = view.screenshot().await.unwrap();
            assert_eq!(view.attr("data-seq").await.unwrap().as_deref(), Some(shown.as_str()), "paused");
            let (width, _, _) = decode_png(&png);
            let scale = width as f64 / tracks["source_width"].as_f64().unwrap();
            for track in tracks["tracks"].as_array().unwrap().iter().filter(|t| t["class"] == "car") {
                let bbox: Vec<f64> = track["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let share = outline_share(&png, [bbox[0] * scale, bbox[1] * scale, bbox[2] * scale, bbox[3] * scale]);
                if share > best.0 {
                    best = (share, format!("track {} at {bbox:?} in frame {shown}", track["track_id"]));
                }
            }
            if best.0 >= 0.3 {
                std::fs::write(screenshots_dir().join("05-live-view.png"), &png).unwrap();
                break;
            }
        }
        let last = format!("paused on frame {shown:?}, tracks of frame {}", tracks["seq"]);
        assert!(std::time::Instant::now() < deadline, "no car box in the car colour; best {best:?}, last {last}");
        // Resumes.
        client.execute(toggle, vec![]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Resumes the live view for the page's screenshot.
    client.execute(toggle, vec![]).await.unwrap();
    screenshot(client, "06-camera").await;
}

/// Width, height and RGB pixels of a PNG screenshot.
fn decode_png(png: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    let pixels = buffer[..info.buffer_size()].chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
    (info.width as usize, info.height as usize, pixels)
}

/// The overlay's car colour (pure green, softened by JPEG).
fn is_car_colour([r, g, b]: [u8; 3]) -> bool {
    g >= 150 && g as i32 - r as i32 >= 70 && g as i32 - b as i32 >= 70
}

/// The share of the box's outline (each side, within 3 pixels) that is drawn in the car colour.
fn outline_share(png: &[u8], [x1, y1, x2, y2]: [f64; 4]) -> f64 {
    let (width, height, pixels) = decode_png(png);
    let at = |x: f64, y: f64| -> bool {
        let near = |dx: i64, dy: i64| {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            (0..width as i64).contains(&px)
                && (0..height as i64).contains(&py)
                && is_car_colour(pixels[py as usize * width + px as usize])
        };
        (-3..=3).any(|d| near(d, 0) || near(0, d))
    };
    let mut hits = 0;
    let mut total = 0;
    let steps = 40;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        for (x, y) in
            [(x1 + t * (x2 - x1), y1), (x1 + t * (x2 - x1), y2), (x1, y1 + t * (y2 - y1)), (x2, y1 + t * (y2 - y1))]
        {
            total += 1;
            hits += at(x, y) as usize;
        }
    }
    hits as f64 / total as f64
}

/// The viewport position of a point in camera pixels (320 x 240) on the canvas, scrolled into
/// the middle of the window first.
async fn on_canvas(client: &Client, canvas: &Element, [x, y]: [f64; 2]) -> (f64, f64) {
    let rect = client
        .execute(
            "arguments[0].scrollIntoView({block: 'center'}); const r = arguments[0].getBoundingClientRect(); \
             return [r.left, r.top, r.width, r.height];",
            vec![serde_json::to_value(canvas).unwrap()],
        )
        .await
        .unwrap();
    let [left, top, width, height] = [0, 1, 2, 3].map(|i| rect[i].as_f64().unwrap());
    ((left + x / 320.0 * width).round(), (top + y / 240.0 * height).round())
}

async fn drag_on(client: &Client, canvas: &Element, from: [f64; 2], to: [f64; 2]) {
    let (x0, y0) = on_canvas(client, canvas, from).await;
    let (x1, y1) = on_canvas(client, canvas, to).await;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x: x0, y: y0 })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::MoveTo { duration: Some(Duration::from_millis(300)), x: x1, y: y1 })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    client.perform_actions(mouse).await.unwrap();
}

async fn click_on(client: &Client, canvas: &Element, at: [f64; 2]) {
    let (x, y) = on_canvas(client, canvas, at).await;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x, y })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    client.perform_actions(mouse).await.unwrap();
}

async fn geometry_of(admin: &reqwest::Client, svc: &Service) -> Value {
    admin.get(svc.url("/api/v1/cameras/overpass/geometry")).send().await.unwrap().json().await.unwrap()
}

async fn draws_a_line_whose_counts_rise(client: &Client, svc: &Service, admin: &reqwest::Client) {
    go(client, svc, "#/cameras/overpass/geometry").await;
    text_until(client, "#geometry-status", "the camera's picture", |t| t.starts_with("Picture: frame")).await;
    click(client, "#tool-line").await;
    let canvas = find(client, "#geometry-canvas").await;
    // Across both lanes, where the worked example counts (configs/geometry/overpass_video03.json).
    drag_on(client, &canvas, [2.0, 150.0], [318.0, 150.0]).await;
    let json = find(client, "#geometry-json").await.prop("value").await.unwrap().unwrap_or_default();
    let drawn: Value = serde_json::from_str(&json).unwrap();
    let line = &drawn["lines"][0];
    assert_eq!(line["id"], "line-1", "{drawn}");
    for (end, x) in [("a", 2.0), ("b", 318.0)] {
        assert!((line[end][0].as_f64().unwrap() - x).abs() <= 2.0, "{end}: {drawn}");
        assert!((line[end][1].as_f64().unwrap() - 150.0).abs() <= 2.0, "{end}: {drawn}");
    }
    screenshot(client, "07-editor-line").await;
    click(client, "#save-geometry").await;
    text_until(client, "#geometry-status", "the saved version", |t| t == "Saved as version 2.").await;
    let stored = geometry_of(admin, svc).await;
    assert_eq!(stored["version"], 2, "{stored}");
    let saved = &stored["geometry"]["lines"];
    assert_eq!(saved.as_array().unwrap().len(), 1, "{stored}");
    assert_eq!(saved[0]["id"], "line-1", "{stored}");
    for end in ["a", "b"] {
        assert_eq!(saved[0][end][0].as_f64(), line[end][0].as_f64(), "{stored}");
        assert_eq!(saved[0][end][1].as_f64(), line[end][1].as_f64(), "{stored}");
    }
    text_until(client, "#version-changes", "what version 2 changed", |t| t.contains("added: line line-1")).await;
    screenshot(client, "08-editor-saved").await;

    // The counts of the new line rise on the camera's page.
    go(client, svc, "#/cameras/overpass").await;
    let total = |t: &str| t.parse::<u64>().unwrap_or(0);
    let read = || async {
        let cells = ["in", "out"].map(|d| format!("tr[data-line=line-1] td[data-dir={d}]"));
        let mut sum = 0;
        for cell in cells {
            sum += client.find(Locator::Css(&cell)).await.ok()?.text().await.ok().map(|t| total(&t))?;
        }
        Some(sum)
    };
    let first = common::eventually("a first crossing of line-1 on the page", Duration::from_secs(120), || async {
        read().await.filter(|n| *n > 0)
    })
    .await;
    common::eventually("more crossings of line-1 on the page", Duration::from_secs(120), || async {
        read().await.filter(|n| *n > first)
    })
    .await;
    screenshot(client, "09-camera-counts").await;
    screenshot_end(client, "09-camera-charts").await;
}

async fn shows_the_apis_message_for_a_bad_geometry(client: &Client, svc: &Service, admin: &reqwest::Client) {
    go(client, svc, "#/cameras/overpass/geometry").await;
    text_until(client, "#elements", "the saved line", |t| t.contains("line line-1")).await;
    // By keyboard: select the line in the list, then move it down 3 px with the arrow key.
    let before: Value =
        serde_json::from_str(&find(client, "#geometry-json").await.prop("value").await.unwrap().unwrap()).unwrap();
    click(client, "#elements li:first-child button").await;
    let arrow_down = "\u{E015}";
    find(client, "#geometry-canvas").await.send_keys(&arrow_down.repeat(3)).await.unwrap();
    let after: Value =
        serde_json::from_str(&find(client, "#geometry-json").await.prop("value").await.unwrap().unwrap()).unwrap();
    for end in ["a", "b"] {
        let y = |g: &Value| g["lines"][0][end][1].as_f64().unwrap();
        assert_eq!(y(&after), y(&before) + 3.0, "{end}: {after}");
    }
    click(client, "#tool-zone").await;
    let canvas = find(client, "#geometry-canvas").await;
    click_on(client, &canvas, [100.0, 60.0]).await;
    click_on(client, &canvas, [200.0, 60.0]).await;
    click(client, "#close-shape").await;
    click(client, "#save-geometry").await;
    let message = text_until(client, "#geometry-error", "the API's message", |t| !t.is_empty()).await;
    assert_eq!(message, "zone \"zone-1\": polygon needs 3 to 64 vertices (got 2)");
    assert_eq!(find(client, "#geometry-error").await.attr("role").await.unwrap().as_deref(), Some("alert"));
    screenshot(client, "10-editor-bad-geometry").await;
    assert_eq!(geometry_of(admin, svc).await["version"], 2, "nothing saved");
}

async fn shows_the_system(client: &Client, svc: &Service) {
    go(client, svc, "#/system").await;
    find(client, "#sys-breakers").await;
    text_until(client, "#system", "the cluster's node", |t| t.contains("Cluster nodes")).await;
    screenshot(client, "11-system").await;
    screenshot_end(client, "11-system-end").await;
}

/// A tablet held upright (820 x 1180 CSS pixels): the camera page and the editor stack their
/// panels and nothing is wider than the screen.
async fn fits_a_tablet(client: &Client, svc: &Service) {
    client.set_window_size(820, 1180).await.unwrap();
    for (hash, ready, name) in [
        ("#/cameras/overpass", "#counts", "15-tablet-camera"),
        ("#/cameras/overpass/geometry", "#elements", "16-tablet-editor"),
    ] {
        go(client, svc, hash).await;
        find(client, ready).await;
        let widths =
            client.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.unwrap();
        let (page, screen) = (widths[0].as_f64().unwrap(), widths[1].as_f64().unwrap());
        assert!(page <= screen, "{hash}: the page is {page} px wide on a {screen} px screen");
        screenshot(client, name).await;
    }
    client.set_window_size(1280, 900).await.unwrap();
}

async fn lets_a_viewer_see_but_not_edit(client: &Client, svc: &Service) {
    click(client, "#sign-out").await;
    find(client, "#token").await;
    sign_in(client, svc, common::VIEWER_TOKEN).await;
    go(client, svc, "#/cameras").await;
    find(client, "tr[data-camera=overpass]").await;
    assert!(disabled(&find(client, "#cam-add").await).await, "a viewer cannot add a camera");
    assert!(disabled(&find(client, "tr[data-camera=overpass] button.danger").await).await, "nor remove one");
    screenshot(client, "12-viewer-cameras").await;

    go(client, svc, "#/cameras/overpass/geometry").await;
    text_until(client, "#elements", "the saved line", |t| t.contains("line line-1")).await;
    for control in ["#save-geometry", "#tool-line", "#tool-zone", "#close-shape", "#apply-json"] {
        let element = find(client, control).await;
        assert!(disabled(&element).await, "{control} is enabled for a viewer");
        let reason = element.attr("title").await.unwrap().unwrap_or_default();
        assert_eq!(reason, "needs the operator role", "{control}");
    }
    text_until(client, "main", "the reason shown", |t| t.contains("needs the operator role")).await;
    screenshot(client, "13-viewer-editor").await;

    // The API itself refuses the viewer's token, whatever the page allows.
    let forged = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/cameras/overpass/geometry', { method: 'PUT',
               headers: { 'Authorization': 'Bearer ' + sessionStorage.getItem('its-console-token'),
                          'Content-Type': 'application/json' },
               body: JSON.stringify({ lines: [] }) })
               .then(async (r) => done([r.status, await r.text()]));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged[0], 403, "{forged}");
    assert!(forged[1].as_str().unwrap().contains("operator required"), "{forged}");
    let viewer = common::client_with_token(common::VIEWER_TOKEN);
    let r = viewer.put(svc.url("/api/v1/cameras/overpass/geometry")).json(&json!({"lines": []})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);

    go(client, svc, "#/system").await;
    text_until(client, "main", "the admin-only notice", |t| t.contains("needs the admin role")).await;
    screenshot(client, "14-viewer-system").await;
}
