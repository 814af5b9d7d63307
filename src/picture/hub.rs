//! The picture hub: every snapshot and live-view part of every camera is made here, on one
//! bounded pool (`pictures.encode_threads` encodes at once, on blocking threads, never on a
//! decode, inference or actor thread).
//!
//! Sharing: each camera keeps its last picture of each kind (plain, overlay) with the frame (and
//! tracked frame) it shows. A request for the frame already encoded gets that picture; the first
//! request for a new frame encodes it while the others wait for it, so N viewers of one camera
//! cost one encode per frame.
//!
//! When the pool is busy: a snapshot waits for a free encoder up to a bound (`Wait::UpTo`, then
//! `Busy`: 503); a live view does not wait (`Wait::Skip`): it skips that frame and tries the next.
//!
//! The overlay draws the latest tracked boxes on the latest decoded frame. Tracking runs after
//! inference, so the boxes may be those of a frame or two before the picture's
//! (`Picture::tracks_seq` against `frame_seq`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::canvas::Canvas;
use super::jpeg::{self, Picture};
use super::overlay::{self, Scene};
use super::slots::{CameraPictures, LatestFrame, LatestTracks};
use super::PictureSettings;
use crate::analytics::lines::LineCount;
use crate::metrics::Metrics;

/// How long a request may wait for a free encoder.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    UpTo(Duration),
    /// Not at all: a live view skips the frame.
    Skip,
}

#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    #[error("no frame decoded yet")]
    NoFrame,
    #[error("every picture encoder is busy; try again")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

/// The encoders shared by all cameras and viewers.
pub struct PictureHub {
    settings: PictureSettings,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl PictureHub {
    pub fn new(settings: PictureSettings, metrics: Arc<Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(settings.encode_threads.max(1)));
        Self { settings, permits, metrics }
    }

    pub fn settings(&self) -> &PictureSettings {
        &self.settings
    }

    /// The camera's latest frame as a JPEG, with the overlay when `counts` is given (the
    /// camera's line counts, read only when a new picture is drawn). Must run inside a Tokio
    /// runtime (the encode runs on its blocking threads).
    pub async fn picture(
        &self,
        camera: &CameraPictures,
        counts: Option<&(dyn Fn() -> Vec<LineCount> + Sync)>,
        wait: Wait,
    ) -> Result<Arc<Picture>, PictureError> {
        let overlay = counts.is_some();
        let mut cached = camera.cache[usize::from(overlay)].lock().await;
        let frame = camera.frame().ok_or(PictureError::NoFrame)?;
        let tracks = if overlay { camera.tracks() } else { None };
        let tracks_seq = tracks.as_ref().map(|t| t.seq);
        if let Some(picture) = cached.as_ref().filter(|p| p.frame_seq == frame.seq && p.tracks_seq == tracks_seq) {
            return Ok(picture.clone());
        }
        let permit = match wait {
            Wait::Skip => self.permits.clone().try_acquire_owned().map_err(|_| PictureError::Busy)?,
            Wait::UpTo(limit) => tokio::time::timeout(limit, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| PictureError::Busy)?
                .map_err(|_| PictureError::Busy)?,
        };
        let counts = counts.map(|read| read()).unwrap_or_default();
        let quality = self.settings.jpeg_quality;
        let started = Instant::now();
        let picture = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            render(&frame, overlay.then_some((tracks.as_deref(), counts.as_slice())), quality)
        })
        .await
        .map_err(|e| PictureError::Failed(format!("picture encoder stopped: {e}")))?
        .map_err(PictureError::Failed)?;
        self.metrics.pictures_encoded.inc();
        self.metrics.picture_encode_seconds.observe(started.elapsed().as_secs_f64());
        let picture = Arc::new(picture);
        *cached = Some(picture.clone());
        Ok(picture)
    }
}

/// Draws (with `overlay`) and encodes one picture; runs on an encoder thread.
pub fn render(
    frame: &LatestFrame,
    overlay: Option<(Option<&LatestTracks>, &[LineCount])>,
    quality: u8,
) -> Result<Picture, String> {
    let (mut image, width, height) = frame.image();
    let mut tracks_seq = None;
    if let Some((Some(tracks), counts)) = overlay {
        let mut canvas = Canvas::new(&mut image, width, height);
        let region = frame.letterbox.region;
        let scene = Scene {
            objects: &tracks.objects,
            geometry: &tracks.geometry,
            counts,
            scale: frame.letterbox.ratio,
            origin: [region.x as f32, region.y as f32],
        };
        overlay::draw(&mut canvas, &scene);
        tracks_seq = Some(tracks.seq);
    }
    let jpeg = jpeg::encode(&image, width, height, quality)?;
    Ok(Picture {
        jpeg: jpeg.into(),
        frame_seq: frame.seq,
        tracks_seq,
        width,
        height,
        source_width: frame.letterbox.src_width,
        source_height: frame.letterbox.src_height,
        source_region: {
            let r = frame.letterbox.region;
            [r.x, r.y, r.width, r.height]
        },
        overlay: overlay.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::analytics::geometry::Geometry;
    use crate::analytics::tracker::TrackedObject;
    use crate::detector::Letterbox;
    use crate::objects::{BBox, ObjectClass};

    fn frame(seq: u64) -> LatestFrame {
        let letterbox = Letterbox::new(320, 240, 416);
        let pixels = Bytes::from(vec![90u8; letterbox.input_len()]);
        LatestFrame { seq, captured_at: SystemTime::UNIX_EPOCH, pixels, letterbox }
    }

    fn hub(metrics: &Arc<Metrics>) -> PictureHub {
        PictureHub::new(PictureSettings::default(), metrics.clone())
    }

    #[tokio::test]
    async fn viewers_of_one_frame_share_one_encode() {
        let metrics = Arc::new(Metrics::new());
        let (hub, camera) = (hub(&metrics), CameraPictures::new("cam", &metrics));
        assert!(matches!(hub.picture(&camera, None, Wait::Skip).await, Err(PictureError::NoFrame)));
        camera.set_frame(frame(1));
        let counts = || Vec::new();
        let viewers = (0..5).map(|_| hub.picture(&camera, Some(&counts), Wait::Skip));
        let pictures: Vec<_> = futures::future::join_all(viewers).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(metrics.pictures_encoded.get(), 1, "one encode for five viewers");
        assert!(pictures.iter().all(|p| Arc::ptr_eq(p, &pictures[0])));
        assert_eq!((pictures[0].width, pictures[0].height), (416, 312));
        assert_eq!((pictures[0].source_width, pictures[0].source_height), (320, 240));

        // The plain picture is another kind; a new frame, or new tracks, is another picture.
        hub.picture(&camera, None, Wait::Skip).await.unwrap();
        assert_eq!(metrics.pictures_encoded.get(), 2);
        let objects = vec![TrackedObject {
            track_id: 3,
            bbox: BBox::new(10.0, 10.0, 50.0, 40.0),
            class: ObjectClass::Bus,
            score: 0.8,
            vehicle: Default::default(),
        }];
        camera.set_tracks(LatestTracks { seq: 1, objects, geometry: Arc::new(Geometry::default()) });
        let drawn = hub.picture(&camera, Some(&counts), Wait::Skip).await.unwrap();
        assert_eq!((drawn.frame_seq, drawn.tracks_seq), (1, Some(1)));
        camera.set_frame(frame(2));
        let next = hub.picture(&camera, Some(&counts), Wait::Skip).await.unwrap();
        assert_eq!((next.frame_seq, next.tracks_seq), (2, Some(1)));
        assert_eq!(metrics.pictures_encoded.get(), 4);
    }

    #[tokio::test]
    async fn a_live_view_skips_when_every_encoder_is_busy_and_a_snapshot_waits_bounded() {
        let metrics = Arc::new(Metrics::new());
        let (hub, camera) = (hub(&metrics), CameraPictures::new("cam", &metrics));
        camera.set_frame(frame(1));
        let held = hub.permits.clone().try_acquire_owned().unwrap();
        assert!(matches!(hub.picture(&camera, None, Wait::Skip).await, Err(PictureError::Busy)));
        let waited = hub.picture(&camera, None, Wait::UpTo(Duration::from_millis(1))).await;
        assert!(matches!(waited, Err(PictureError::Busy)));
        drop(held);
        assert!(hub.picture(&camera, None, Wait::Skip).await.is_ok());
    }

    #[test]
    fn an_overlay_without_tracks_yet_is_the_plain_frame() {
        let picture = render(&frame(5), Some((None, &[])), 80).unwrap();
        assert_eq!((picture.frame_seq, picture.tracks_seq, picture.overlay), (5, None, true));
    }
}
