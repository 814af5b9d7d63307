//! The model's input layout: letterboxed, BGR, interleaved (HWC) bytes, raw 0..255 — what swscale
//! writes, so a frame reaches the model with row copies and no planar shuffle.
//!
//! Frames are kept as `u8` until they reach the inference thread (a quarter of the memory of
//! `f32`); the model files take `u8` and widen it themselves (`scripts/convert_model.py`).
//!
//! **Overview** (`model.overview`, off by default). A landscape frame leaves the bottom of the
//! square as padding. Where that padding is at least a third of the picture's height (4:3 frames
//! and wider), it can carry the same picture at a third of the scale (each 3x3 block of it
//! averaged), bottom left: a second, coarser view at no extra inference. YOLOX-Nano misses
//! vehicles that fill much of the frame at the main scale (an articulated lorry close to the
//! camera scores at most 0.12 there, 0.15 to 0.5 in the overview); the overview's detections only
//! add what the main view does not see (`nms::suppress_views`).

/// Grey that YOLOX was trained to see in padding.
pub const PAD_VALUE: u8 = 114;

/// A rectangle of the source frame in whole pixels: the part of it the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    /// The whole of a `width` x `height` frame.
    pub fn full(width: u32, height: u32) -> Self {
        Self { x: 0, y: 0, width, height }
    }
}

/// How a source frame was placed into the square network input: its `region` (the whole frame
/// unless the camera crops) scaled by `ratio`, top-left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub ratio: f32,
    pub src_width: u32,
    pub src_height: u32,
    /// The part of the source frame in the input, in source pixels, inside the frame.
    pub region: Region,
    pub input_size: u32,
    /// The picture again, shrunk by `OVERVIEW_FACTOR`, in the padding below it (`with_overview`).
    pub overview: Option<Overview>,
}

/// The overview is the main picture shrunk by this factor: each of its pixels is the mean of a
/// `OVERVIEW_FACTOR` x `OVERVIEW_FACTOR` block (a last partial row or column of blocks is left out).
pub const OVERVIEW_FACTOR: u32 = 3;

/// Where the overview lies in the input square: `size` pixels at `(0, top)`, the region scaled by
/// `ratio`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overview {
    pub ratio: f32,
    pub top: u32,
    pub size: (u32, u32),
}

impl Letterbox {
    /// The whole frame in the input.
    pub fn new(src_width: u32, src_height: u32, input_size: u32) -> Self {
        Self::cropped(src_width, src_height, Region::full(src_width, src_height), input_size)
    }

    /// Only `region` of the frame (clamped into it; an empty one means the whole frame) in the
    /// input: its pixels are scaled by `ratio`, and boxes come back offset by its corner.
    pub fn cropped(src_width: u32, src_height: u32, region: Region, input_size: u32) -> Self {
        let x = region.x.min(src_width);
        let y = region.y.min(src_height);
        let width = region.width.min(src_width - x);
        let height = region.height.min(src_height - y);
        let region = if width == 0 || height == 0 {
            Region::full(src_width, src_height)
        } else {
            Region { x, y, width, height }
        };
        let ratio =
            (input_size as f32 / region.width.max(1) as f32).min(input_size as f32 / region.height.max(1) as f32);
        Self { ratio, src_width, src_height, region, input_size, overview: None }
    }

    /// The same placement with an overview in the padding, where the padding is tall enough for
    /// one (otherwise unchanged).
    pub fn with_overview(mut self) -> Self {
        let (w, h) = self.scaled_size();
        let size = (w / OVERVIEW_FACTOR, h / OVERVIEW_FACTOR);
        if size.0 > 0 && size.1 > 0 && h + size.1 <= self.input_size {
            let ratio = self.ratio / OVERVIEW_FACTOR as f32;
            self.overview = Some(Overview { ratio, top: self.input_size - size.1, size });
        }
        self
    }

    /// Whether the input holds only part of the frame.
    pub fn is_cropped(&self) -> bool {
        self.region != Region::full(self.src_width, self.src_height)
    }

    /// A point of the input square (model pixels) in source-frame pixels: a point of the main
    /// picture, or of `overview` when one is given.
    pub fn to_source(&self, overview: Option<&Overview>, x: f32, y: f32) -> (f32, f32) {
        let (ratio, top) = overview.map_or((self.ratio, 0.0), |o| (o.ratio, o.top as f32));
        (x / ratio + self.region.x as f32, (y - top) / ratio + self.region.y as f32)
    }

    /// Size of the scaled image inside the input square, never zero, never past the square.
    pub fn scaled_size(&self) -> (u32, u32) {
        let w = ((self.region.width as f32 * self.ratio).round() as u32).clamp(1, self.input_size);
        let h = ((self.region.height as f32 * self.ratio).round() as u32).clamp(1, self.input_size);
        (w, h)
    }

    /// Bytes of one frame in the model layout.
    pub fn input_len(&self) -> usize {
        3 * (self.input_size as usize).pow(2)
    }

    /// Copies a packed BGR24 image of `scaled_size()` (rows `stride` bytes apart) into the top
    /// left of the input square, row by row, padding the rest.
    pub fn write_interleaved(&self, bgr: &[u8], stride: usize, out: &mut Vec<u8>) {
        let (w, h) = self.scaled_size();
        let (row_bytes, side_bytes) = (3 * w as usize, 3 * self.input_size as usize);
        out.clear();
        out.resize(side_bytes * self.input_size as usize, PAD_VALUE);
        for (y, dst) in out.chunks_exact_mut(side_bytes).take(h as usize).enumerate() {
            dst[..row_bytes].copy_from_slice(&bgr[y * stride..y * stride + row_bytes]);
        }
    }

    /// Draws the overview from the picture already in `pixels` (the model layout, as
    /// `write_interleaved` leaves it): each of its pixels the rounded mean of a 3x3 block, per
    /// channel. Does nothing without an overview.
    pub fn fill_overview(&self, pixels: &mut [u8]) {
        let Some(overview) = self.overview else { return };
        const F: usize = OVERVIEW_FACTOR as usize;
        let side_bytes = 3 * self.input_size as usize;
        let (width, height) = (overview.size.0 as usize, overview.size.1 as usize);
        let (picture, below) = pixels.split_at_mut(side_bytes * F * height);
        let first = (overview.top as usize) * side_bytes - picture.len();
        let mut sums = vec![0u16; 3 * width];
        for (y, dst) in below[first..].chunks_exact_mut(side_bytes).take(height).enumerate() {
            sums.fill(0);
            for row in picture[y * F * side_bytes..].chunks_exact(side_bytes).take(F) {
                for (x, sum) in sums.chunks_exact_mut(3).enumerate() {
                    for px in row[3 * F * x..3 * F * (x + 1)].chunks_exact(3) {
                        for (s, &v) in sum.iter_mut().zip(px) {
                            *s += u16::from(v);
                        }
                    }
                }
            }
            let block = (F * F) as u16;
            for (d, &s) in dst[..3 * width].iter_mut().zip(&sums) {
                *d = ((s + block / 2) / block) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landscape_frames_fill_the_width() {
        let lb = Letterbox::new(320, 240, 416);
        assert!((lb.ratio - 1.3).abs() < 1e-6);
        assert_eq!(lb.scaled_size(), (416, 312));
        let lb = Letterbox::new(1920, 1080, 416);
        assert_eq!(lb.scaled_size(), (416, 234));
        assert!(!lb.is_cropped());
    }

    #[test]
    fn a_region_fills_the_input_and_maps_back_with_its_offset() {
        // The right half of a 1920x1080 frame: twice the pixels per vehicle of the whole frame.
        let half = Region { x: 960, y: 0, width: 960, height: 1080 };
        let lb = Letterbox::cropped(1920, 1080, half, 416);
        assert!(lb.is_cropped());
        assert!((lb.ratio - 416.0 / 1080.0).abs() < 1e-6);
        assert_eq!(lb.scaled_size(), (370, 416));
        let whole = Letterbox::new(1920, 1080, 416);
        assert!(lb.ratio > 1.7 * whole.ratio);
        let (x, y) = lb.to_source(None, 0.0, 208.0);
        assert!((x - 960.0).abs() < 1e-3 && (y - 540.0).abs() < 1e-3, "({x}, {y})");
        let (x, y) = whole.to_source(None, 208.0, 0.0);
        assert!((x - 960.0).abs() < 1e-2 && y == 0.0, "({x}, {y})");
    }

    #[test]
    fn a_region_outside_the_frame_is_clamped_or_dropped() {
        let lb = Letterbox::cropped(640, 480, Region { x: 600, y: 400, width: 200, height: 200 }, 416);
        assert_eq!(lb.region, Region { x: 600, y: 400, width: 40, height: 80 });
        for outside in [Region { x: 640, y: 0, width: 10, height: 10 }, Region { x: 0, y: 0, width: 0, height: 5 }] {
            let lb = Letterbox::cropped(640, 480, outside, 416);
            assert_eq!(lb.region, Region::full(640, 480), "{outside:?}");
            assert!(!lb.is_cropped());
        }
    }

    #[test]
    fn interleaved_copy_places_pixels_top_left_and_pads() {
        let lb = Letterbox::new(2, 1, 4); // scaled to 4x2
        let stride = 4 * 3 + 4; // padded rows, as swscale may give
        let mut bgr = vec![0u8; stride * 2];
        bgr[0..3].copy_from_slice(&[1, 2, 3]); // (0,0)
        bgr[stride + 9..stride + 12].copy_from_slice(&[7, 8, 9]); // (3,1)
        bgr[stride + 12] = 99; // row padding, not a pixel
        let mut out = Vec::new();
        lb.write_interleaved(&bgr, stride, &mut out);
        assert_eq!(out.len(), 48);
        assert_eq!(&out[0..3], &[1, 2, 3]);
        assert_eq!(&out[12 + 9..12 + 12], &[7, 8, 9], "pixel (3,1)");
        assert!(out[24..].iter().all(|&b| b == PAD_VALUE), "rows 2 and 3 are padding");
    }

    #[test]
    fn a_landscape_frame_has_an_overview_in_its_padding() {
        let lb = Letterbox::new(320, 240, 416).with_overview();
        let overview = lb.overview.expect("4:3 leaves a third of the picture's height");
        assert_eq!(overview.size, (138, 104));
        assert_eq!(overview.top, 312);
        let (x, y) = lb.to_source(Some(&overview), 138.0, 416.0);
        assert!((x - 318.46).abs() < 0.01 && (y - 240.0).abs() < 1e-3, "({x}, {y})"); // 414 of 416 columns
        let wide = Letterbox::new(1920, 1080, 416).with_overview().overview.expect("16:9");
        assert_eq!((wide.size, wide.top), ((138, 78), 338));
        // Square, 5:4 and portrait frames have no room for one.
        for (w, h) in [(416, 416), (720, 576), (240, 320)] {
            assert_eq!(Letterbox::new(w, h, 416).with_overview().overview, None, "{w}x{h}");
        }
        // A crop's region is what the overview shows.
        let half = Region { x: 0, y: 120, width: 320, height: 120 };
        let lb = Letterbox::cropped(320, 240, half, 416).with_overview();
        let overview = lb.overview.expect("8:3 region");
        let (_, y) = lb.to_source(Some(&overview), 0.0, overview.top as f32);
        assert_eq!(y, 120.0);
    }

    #[test]
    fn the_overview_averages_blocks_of_the_picture_below_it() {
        let lb = Letterbox::new(12, 6, 12).with_overview(); // picture 12x6, overview 4x2 at row 10
        let overview = lb.overview.unwrap();
        assert_eq!((overview.size, overview.top), ((4, 2), 10));
        // Pixel (x, y) of the picture is (x, y, 10 x + y) in B, G, R.
        let bgr: Vec<u8> = (0..6u8).flat_map(|y| (0..12u8).flat_map(move |x| [x, y, 10 * x + y])).collect();
        let mut out = Vec::new();
        lb.write_interleaved(&bgr, 36, &mut out);
        lb.fill_overview(&mut out);
        let row = |y: usize| &out[y * 36..(y + 1) * 36];
        assert_eq!(&row(5)[..3], &[0, 5, 5], "the picture is untouched");
        assert!((6..10).all(|y| row(y).iter().all(|&b| b == PAD_VALUE)));
        // Overview pixel (1, 1) is the mean of the picture's block x 3..5, y 3..5: (4, 4, 44).
        assert_eq!(&row(11)[3..6], &[4, 4, 44]);
        assert_eq!(&row(10)[9..12], &[10, 1, 101], "block x 9..11, y 0..2");
        assert!(row(10)[12..].iter().all(|&b| b == PAD_VALUE), "beside the overview, padding");
    }
}
