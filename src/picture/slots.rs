//! What one camera keeps for its pictures: the latest decoded frame (a reference to the frame's
//! shared bytes, left by the decode thread), the latest tracked boxes (left by the connector),
//! the last JPEG of each kind, and its live viewers. Bounded: one of each per camera.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::jpeg::Picture;
use crate::analytics::geometry::Geometry;
use crate::analytics::tracker::TrackedObject;
use crate::detector::Letterbox;
use crate::metrics::Metrics;

/// A camera's latest decoded frame, in the model's layout (letterboxed, padded, BGR HWC).
#[derive(Debug, Clone)]
pub struct LatestFrame {
    pub seq: u64,
    pub captured_at: SystemTime,
    /// The frame's own bytes, shared with the device (no copy).
    pub pixels: Bytes,
    pub letterbox: Letterbox,
}

impl LatestFrame {
    /// The picture without its padding: a packed BGR image of `letterbox.scaled_size()`.
    pub fn image(&self) -> (Vec<u8>, u32, u32) {
        let (w, h) = self.letterbox.scaled_size();
        let (row, side) = (3 * w as usize, self.letterbox.row_bytes());
        let mut out = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            match self.pixels.get(y * side..y * side + row) {
                Some(src) => out.extend_from_slice(src),
                // A frame shorter than its letterbox says (never made so) is padded grey.
                None => out.resize(out.len() + row, crate::detector::input::PAD_VALUE),
            }
        }
        (out, w, h)
    }
}

/// A camera's latest tracked frame: its boxes and the geometry it was analysed with.
#[derive(Debug, Clone)]
pub struct LatestTracks {
    pub seq: u64,
    pub objects: Vec<TrackedObject>,
    pub geometry: Arc<Geometry>,
}

/// The last JPEG of one kind (plain or with overlay) and what it was made from.
pub(super) type Cached = tokio::sync::Mutex<Option<Arc<Picture>>>;

/// One camera's picture slots, held by its status and shared by its decode thread, its
/// connector, the API and the bench.
pub struct CameraPictures {
    frame: Mutex<Option<LatestFrame>>,
    tracks: Mutex<Option<Arc<LatestTracks>>>,
    /// The last picture without and with the overlay; the lock is held while one is encoded, so
    /// viewers asking for the same frame wait for that encode instead of starting their own.
    pub(super) cache: [Cached; 2],
    viewers: AtomicUsize,
    viewers_gauge: Gauge,
    refused: Counter,
    /// Parts of live views sent, all viewers together.
    pub parts_sent: Counter,
}

impl CameraPictures {
    pub fn new(camera: &str, metrics: &Metrics) -> Self {
        let labels = metrics.camera(camera);
        Self {
            frame: Mutex::new(None),
            tracks: Mutex::new(None),
            cache: Default::default(),
            viewers: AtomicUsize::new(0),
            viewers_gauge: metrics.picture_viewers.get_or_create(&labels).clone(),
            refused: metrics.picture_viewers_refused.get_or_create(&labels).clone(),
            parts_sent: metrics.picture_parts_sent.get_or_create(&labels).clone(),
        }
    }

    /// Called by the decode thread for every frame it hands on: replaces the previous one.
    pub fn set_frame(&self, frame: LatestFrame) {
        *self.frame.lock() = Some(frame);
    }

    pub fn frame(&self) -> Option<LatestFrame> {
        self.frame.lock().clone()
    }

    /// Called by the connector after tracking a frame.
    pub fn set_tracks(&self, tracks: LatestTracks) {
        *self.tracks.lock() = Some(Arc::new(tracks));
    }

    pub fn tracks(&self) -> Option<Arc<LatestTracks>> {
        self.tracks.lock().clone()
    }

    /// A place among the live viewers, or `None` (counted as refused) when `max` are watching.
    pub fn join_viewers(self: &Arc<Self>, max: usize) -> Option<ViewerPass> {
        let joined = self.viewers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1));
        match joined {
            Ok(_) => {
                self.viewers_gauge.inc();
                Some(ViewerPass { camera: self.clone() })
            }
            Err(_) => {
                self.refused.inc();
                None
            }
        }
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::SeqCst)
    }
}

/// A live viewer's place; leaving (dropping it) frees it.
pub struct ViewerPass {
    camera: Arc<CameraPictures>,
}

impl Drop for ViewerPass {
    fn drop(&mut self) {
        self.camera.viewers.fetch_sub(1, Ordering::SeqCst);
        self.camera.viewers_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_beyond_the_limit_are_refused_until_one_leaves() {
        let metrics = Metrics::new();
        let pictures = Arc::new(CameraPictures::new("cam", &metrics));
        let passes: Vec<_> = (0..3).map(|_| pictures.join_viewers(3).expect("room")).collect();
        assert!(pictures.join_viewers(3).is_none(), "the fourth viewer is refused");
        assert_eq!(pictures.viewers(), 3);
        let labels = metrics.camera("cam");
        assert_eq!(metrics.picture_viewers.get_or_create(&labels).get(), 3);
        assert_eq!(metrics.picture_viewers_refused.get_or_create(&labels).get(), 1);
        drop(passes);
        assert_eq!(pictures.viewers(), 0);
        assert_eq!(metrics.picture_viewers.get_or_create(&labels).get(), 0);
        assert!(pictures.join_viewers(3).is_some(), "room again once they left");
    }

    #[test]
    fn the_image_is_the_letterboxed_frame_without_its_padding() {
        let letterbox = Letterbox::new(4, 2, 8).with_overview(); // 8x4 in a 32x32 input, then the overview's
        let mut pixels = vec![114u8; letterbox.input_len()];
        pixels[0..3].copy_from_slice(&[1, 2, 3]);
        let last_row = 3 * 32 * 3 + 3 * 7;
        pixels[last_row..last_row + 3].copy_from_slice(&[7, 8, 9]);
        let frame = LatestFrame { seq: 1, captured_at: SystemTime::UNIX_EPOCH, pixels: Bytes::from(pixels), letterbox };
        let (image, w, h) = frame.image();
        assert_eq!((w, h, image.len()), (8, 4, 8 * 4 * 3));
        assert_eq!(&image[0..3], &[1, 2, 3]);
        assert_eq!(&image[image.len() - 3..], &[7, 8, 9], "pixel (7, 3)");
    }
}
