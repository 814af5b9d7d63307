//! `/api/v1/cameras/{id}/snapshot.jpg`, `live.mjpeg` and `tracks`: what a camera sees, as the
//! model sees it (the letterboxed frame without its padding), optionally with an overlay of the
//! tracked boxes and the camera's geometry, and the tracked boxes themselves.
//!
//! Pictures come from the service's `PictureHub` (`crate::picture`): encoded on request on its
//! bounded pool, one encode per frame however many watch. A snapshot waits for a free encoder at
//! most `SNAPSHOT_WAIT` (then 503); a live view skips frames while the encoders are busy or the
//! client reads slowly, and never queues them.
//!
//! A camera analysed by another node: the snapshot and the tracks are forwarded to that node
//! (like `counts`); its live view is not proxied: 503 names the node to ask.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::cameras::{find, forward};
use super::error::ApiError;
use crate::actors::status::CameraStatus;
use crate::analytics::lines::LineCount;
use crate::objects::ObjectClass;
use crate::picture::jpeg::Picture;
use crate::picture::{PictureError, ViewerPass, Wait};
use crate::service::{CameraRuntime, Service};

/// How long a snapshot waits for a free encoder before it is answered 503.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);
/// The boundary between the parts of a live view.
pub const BOUNDARY: &str = "frame";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cameras/{id}/snapshot.jpg", web::get().to(snapshot))
        .route("/cameras/{id}/live.mjpeg", web::get().to(live))
        .route("/cameras/{id}/tracks", web::get().to(tracks));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    overlay: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveQuery {
    overlay: Option<String>,
    fps: Option<u32>,
}

/// `overlay=1|0|true|false`; absent: no overlay.
fn overlay_flag(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(ApiError::BadRequest("overlay must be 1 or 0 (true or false)".into())),
    }
}

impl From<PictureError> for ApiError {
    fn from(e: PictureError) -> Self {
        match e {
            PictureError::NoFrame | PictureError::Busy => ApiError::Unavailable(e.to_string()),
            PictureError::Failed(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Where the camera is analysed: here (its status), or the owner's answer to this request.
enum Located {
    Here(Arc<CameraStatus>),
    Answered(HttpResponse),
}

/// The camera's status when this node analyses it; else the owner's answer (`forwarded`), or
/// 503 naming the owner. 404 for a camera that is not registered.
async fn locate(service: &Service, id: &str, req: &HttpRequest, forwarded: bool) -> Result<Located, ApiError> {
    let (_, runtime) = find(service, id).await?;
    match runtime {
        CameraRuntime::Local(status) => Ok(Located::Here(status)),
        CameraRuntime::Remote { owner: Some(owner) } if forwarded => match forward(service, req, &owner).await {
            Some(answer) => Ok(Located::Answered(answer)),
            None => Err(ApiError::Unavailable(format!("camera {id} runs on node {owner}, which did not answer"))),
        },
        CameraRuntime::Remote { owner: Some(owner) } => Err(ApiError::Unavailable(format!(
            "camera {id} is analysed by node {owner}: open its live view on that node"
        ))),
        CameraRuntime::Remote { owner: None } => {
            Err(ApiError::Unavailable(format!("camera {id} is moving between nodes; ask again in a few seconds")))
        }
    }
}

/// The camera's line counts, read when an overlay is drawn.
fn counts_of(status: &CameraStatus) -> impl Fn() -> Vec<LineCount> + Sync + '_ {
    move || status.counts()
}

async fn snapshot(
    service: web::Data<Service>,
    id: web::Path<String>,
    query: web::Query<SnapshotQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let overlay = overlay_flag(query.overlay.as_deref())?;
    let status = match locate(&service, &id, &req, true).await? {
        Located::Here(status) => status,
        Located::Answered(answer) => return Ok(answer),
    };
    let counts = counts_of(&status);
    let counts: Option<&(dyn Fn() -> Vec<LineCount> + Sync)> = if overlay { Some(&counts) } else { None };
    let picture = service.pictures.picture(&status.pictures, counts, Wait::UpTo(SNAPSHOT_WAIT)).await?;
    let mut response = HttpResponse::Ok();
    response.content_type("image/jpeg");
    for (name, value) in picture_headers(&picture) {
        response.insert_header((name, value));
    }
    Ok(response.body(picture.jpeg.clone()))
}

/// The headers of a picture, in a snapshot's response and in each part of a live view.
fn picture_headers(picture: &Picture) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("X-Frame-Seq", picture.frame_seq.to_string()),
        ("X-Source-Width", picture.source_width.to_string()),
        ("X-Source-Height", picture.source_height.to_string()),
        ("X-Source-Region", picture.source_region.map(|v| v.to_string()).join(",")),
        ("Cache-Control", "no-store".to_string()),
    ];
    if let Some(seq) = picture.tracks_seq {
        headers.push(("X-Tracks-Seq", seq.to_string()));
    }
    headers
}

/// One part of a live view.
fn part(picture: &Picture) -> Bytes {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Seq: {}\r\n\r\n",
        picture.jpeg.len(),
        picture.frame_seq
    );
    let mut out = Vec::with_capacity(head.len() + picture.jpeg.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&picture.jpeg);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// A live view's state between parts.
struct Viewer {
    service: web::Data<Service>,
    id: String,
    status: Arc<CameraStatus>,
    overlay: bool,
    ticker: tokio::time::Interval,
    last_seq: Option<u64>,
    /// Frees the viewer's place when the client goes away (actix drops the stream).
    _pass: ViewerPass,
}

impl Viewer {
    /// The next new picture, at most one per tick; `None` ends the view (the camera stopped
    /// here or encoding failed).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            // A client that reads slowly is polled late: the missed ticks are skipped, and it
            // gets the latest frame then, not the ones it missed.
            self.ticker.tick().await;
            let running = self.service.pipeline.camera(&self.id).is_some_and(|(_, s)| Arc::ptr_eq(&s, &self.status));
            if !running {
                return None;
            }
            let counts = counts_of(&self.status);
            let counts: Option<&(dyn Fn() -> Vec<LineCount> + Sync)> = if self.overlay { Some(&counts) } else { None };
            match self.service.pictures.picture(&self.status.pictures, counts, Wait::Skip).await {
                Ok(picture) if Some(picture.frame_seq) != self.last_seq => {
                    self.last_seq = Some(picture.frame_seq);
                    self.status.pictures.parts_sent.inc();
                    return Some(part(&picture));
                }
                // The same frame, no frame yet, or every encoder busy: skip this tick.
                Ok(_) | Err(PictureError::NoFrame | PictureError::Busy) => {}
                Err(e) => {
                    tracing::warn!(camera = %self.id, error = %e, "live view ended");
                    return None;
                }
            }
        }
    }
}

async fn live(
    service: web::Data<Service>,
    id: web::Path<String>,
    query: web::Query<LiveQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let overlay = overlay_flag(query.overlay.as_deref())?;
    let max_fps = service.pictures.settings().live_fps;
    let fps = query.fps.unwrap_or(max_fps);
    if !(1..=max_fps).contains(&fps) {
        return Err(ApiError::BadRequest(format!("fps must be in 1..={max_fps} (pictures.live_fps)")));
    }
    let status = match locate(&service, &id, &req, false).await? {
        Located::Here(status) => status,
        Located::Answered(answer) => return Ok(answer),
    };
    let max_viewers = service.pictures.settings().max_viewers_per_camera;
    let pass = status.pictures.join_viewers(max_viewers).ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "camera {id} has {max_viewers} live viewers already (pictures.max_viewers_per_camera)"
        ))
    })?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / fps as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let viewer =
        Viewer { service: service.clone(), id: id.into_inner(), status, overlay, ticker, last_seq: None, _pass: pass };
    let body = futures::stream::unfold(viewer, |mut viewer| async move {
        viewer.next().await.map(|part| (Ok::<_, actix_web::Error>(part), viewer))
    });
    Ok(HttpResponse::Ok()
        .content_type(format!("multipart/x-mixed-replace; boundary={BOUNDARY}"))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

#[derive(Serialize)]
struct TracksView {
    camera_id: String,
    /// The tracked frame's number.
    seq: u64,
    source_width: u32,
    source_height: u32,
    tracks: Vec<TrackView>,
}

#[derive(Serialize)]
struct TrackView {
    track_id: u64,
    class: ObjectClass,
    /// `[x1, y1, x2, y2]`, camera pixels.
    bbox: [f32; 4],
    score: f32,
}

async fn tracks(
    service: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let status = match locate(&service, &id, &req, true).await? {
        Located::Here(status) => status,
        Located::Answered(answer) => return Ok(answer),
    };
    let (Some(tracks), Some(frame)) = (status.pictures.tracks(), status.pictures.frame()) else {
        return Err(ApiError::Unavailable(format!("camera {id} has no analysed frame yet")));
    };
    let view = TracksView {
        camera_id: id.into_inner(),
        seq: tracks.seq,
        source_width: frame.letterbox.src_width,
        source_height: frame.letterbox.src_height,
        tracks: tracks
            .objects
            .iter()
            .map(|o| TrackView {
                track_id: o.track_id,
                class: o.class,
                bbox: [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2],
                score: o.score,
            })
            .collect(),
    };
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_takes_one_or_zero() {
        assert!(!overlay_flag(None).unwrap());
        assert!(overlay_flag(Some("1")).unwrap() && overlay_flag(Some("true")).unwrap());
        assert!(!overlay_flag(Some("0")).unwrap());
        assert!(overlay_flag(Some("yes")).is_err());
    }

    #[test]
    fn a_part_is_framed_as_multipart() {
        let picture = Picture {
            jpeg: Bytes::from_static(b"JPEG"),
            frame_seq: 42,
            tracks_seq: None,
            width: 4,
            height: 3,
            source_width: 3,
            source_height: 2,
            source_region: [0, 0, 3, 2],
            overlay: false,
        };
        let text = String::from_utf8(part(&picture).to_vec()).unwrap();
        assert_eq!(text, "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\nX-Frame-Seq: 42\r\n\r\nJPEG\r\n");
    }
}
