//! The model's input layout: letterboxed, BGR, interleaved (HWC) bytes, raw 0..255 — what swscale
//! writes, so a frame reaches the model with row copies and no planar shuffle.
//!
//! Frames are kept as `u8` until they reach the inference thread (a quarter of the memory of
//! `f32`); the model files take `u8` and widen it themselves (`scripts/convert_model.py`).
//!
//! **Only the cells the picture needs.** The picture is scaled to fit a square of
//! `model.input_size`, but the input is the scaled picture rounded up to whole cells of the
//! coarsest stride (`CELL`), not the square: a 4:3 frame is 416x320 at 416, a 16:9 one 416x256.
//! The model is fully convolutional, so the rows of padding a square would add are work that
//! finds nothing (about a quarter of a 4:3 frame's inference, two fifths of a 16:9 one's).
//!
//! **Overview** (`model.overview`). The same picture at a third of the scale (each 3x3 block of
//! it averaged), as a second, small input of its own after the main one in the frame's bytes.
//! YOLOX-Nano misses vehicles that fill much of the frame at the main scale (an articulated lorry
//! close to the camera scores at most 0.12 there, up to 0.5 in the overview); the overview's
//! detections only add what the main view does not see (`nms::suppress_views`).

/// Grey that YOLOX was trained to see in padding.
pub const PAD_VALUE: u8 = 114;

/// The coarsest stride of the model's grid: the input's sides are whole multiples of it.
pub const CELL: u32 = 32;

/// `pixels` rounded up to whole cells, at least one.
fn whole_cells(pixels: u32) -> u32 {
    pixels.div_ceil(CELL).max(1) * CELL
}

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

/// How a source frame was placed into the network input: its `region` (the whole frame unless
/// the camera crops) scaled by `ratio` to fit a square of `input_size`, top-left, in an input of
/// `input` (width, height) pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub ratio: f32,
    pub src_width: u32,
    pub src_height: u32,
    /// The part of the source frame in the input, in source pixels, inside the frame.
    pub region: Region,
    /// `model.input_size`: the longest side the picture is scaled to.
    pub input_size: u32,
    /// The network input, width and height: the scaled picture rounded up to whole cells.
    pub input: (u32, u32),
    /// The picture again, shrunk by `OVERVIEW_FACTOR`, as a second input (`with_overview`).
    pub overview: Option<Overview>,
}

/// The overview is the main picture shrunk by this factor: each of its pixels is the mean of a
/// `OVERVIEW_FACTOR` x `OVERVIEW_FACTOR` block (a last partial row or column of blocks is left out).
pub const OVERVIEW_FACTOR: u32 = 3;

/// The overview's picture: `size` pixels, the region scaled by `ratio`, top-left in an input of
/// its own of `input` pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overview {
    pub ratio: f32,
    pub size: (u32, u32),
    pub input: (u32, u32),
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
        let mut letterbox = Self { ratio, src_width, src_height, region, input_size, input: (0, 0), overview: None };
        let (w, h) = letterbox.scaled_size();
        letterbox.input = (whole_cells(w), whole_cells(h));
        letterbox
    }

    /// The same placement with an overview: the picture shrunk by `OVERVIEW_FACTOR`, where that
    /// leaves at least a pixel each way.
    pub fn with_overview(mut self) -> Self {
        let (w, h) = self.scaled_size();
        let size = (w / OVERVIEW_FACTOR, h / OVERVIEW_FACTOR);
        if size.0 > 0 && size.1 > 0 {
            let ratio = self.ratio / OVERVIEW_FACTOR as f32;
            self.overview = Some(Overview { ratio, size, input: (whole_cells(size.0), whole_cells(size.1)) });
        }
        self
    }

    /// Whether the input holds only part of the frame.
    pub fn is_cropped(&self) -> bool {
        self.region != Region::full(self.src_width, self.src_height)
    }

    /// A point of the input (model pixels) in source-frame pixels: a point of the main picture,
    /// or of `overview` when one is given.
    pub fn to_source(&self, overview: Option<&Overview>, x: f32, y: f32) -> (f32, f32) {
        let ratio = overview.map_or(self.ratio, |o| o.ratio);
        (x / ratio + self.region.x as f32, y / ratio + self.region.y as f32)
    }

    /// Size of the scaled image inside the input, never zero, never past `input_size`.
    pub fn scaled_size(&self) -> (u32, u32) {
        let w = ((self.region.width as f32 * self.ratio).round() as u32).clamp(1, self.input_size);
        let h = ((self.region.height as f32 * self.ratio).round() as u32).clamp(1, self.input_size);
        (w, h)
    }

    /// Bytes of one row of the main input.
    pub fn row_bytes(&self) -> usize {
        3 * self.input.0 as usize
    }

    /// Bytes of the main input: the first part of a frame's bytes.
    pub fn main_len(&self) -> usize {
        self.row_bytes() * self.input.1 as usize
    }

    /// Bytes of one frame in the model layout: the main input, then the overview's, if any.
    pub fn input_len(&self) -> usize {
        self.main_len() + self.overview.map_or(0, |o| 3 * (o.input.0 * o.input.1) as usize)
    }

    /// Copies a packed BGR24 image of `scaled_size()` (rows `stride` bytes apart) into the top
    /// left of the main input, row by row, padding the rest (and the overview's input).
    pub fn write_interleaved(&self, bgr: &[u8], stride: usize, out: &mut Vec<u8>) {
        let (w, h) = self.scaled_size();
        let row_bytes = 3 * w as usize;
        out.clear();
        out.resize(self.input_len(), PAD_VALUE);
        for (y, dst) in out[..self.main_len()].chunks_exact_mut(self.row_bytes()).take(h as usize).enumerate() {
            dst[..row_bytes].copy_from_slice(&bgr[y * stride..y * stride + row_bytes]);
        }
    }

    /// Draws the overview from the picture already in `pixels` (the model layout, as
    /// `write_interleaved` leaves it): each of its pixels the rounded mean of a 3x3 block, per
    /// channel. Does nothing without an overview.
    pub fn fill_overview(&self, pixels: &mut [u8]) {
        let Some(overview) = self.overview else { return };
        const F: usize = OVERVIEW_FACTOR as usize;
        let (picture, below) = pixels.split_at_mut(self.main_len());
        let (width, height) = (overview.size.0 as usize, overview.size.1 as usize);
        let mut sums = vec![0u16; 3 * width];
        for (y, dst) in below.chunks_exact_mut(3 * overview.input.0 as usize).take(height).enumerate() {
            sums.fill(0);
            for row in picture[y * F * self.row_bytes()..].chunks_exact(self.row_bytes()).take(F) {
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
    fn landscape_frames_fill_the_width_and_only_the_cells_they_need() {
        let lb = Letterbox::new(320, 240, 416);
        assert!((lb.ratio - 1.3).abs() < 1e-6);
        assert_eq!(lb.scaled_size(), (416, 312));
        assert_eq!(lb.input, (416, 320));
        assert_eq!(lb.input_len(), 3 * 416 * 320);
        let lb = Letterbox::new(1920, 1080, 416);
        assert_eq!((lb.scaled_size(), lb.input), ((416, 234), (416, 256)));
        assert!(!lb.is_cropped());
        assert_eq!(Letterbox::new(240, 320, 416).input, (320, 416), "portrait");
        assert_eq!(Letterbox::new(416, 416, 416).input, (416, 416), "square");
    }

    #[test]
    fn a_region_fills_the_input_and_maps_back_with_its_offset() {
        // The right half of a 1920x1080 frame: twice the pixels per vehicle of the whole frame.
        let half = Region { x: 960, y: 0, width: 960, height: 1080 };
        let lb = Letterbox::cropped(1920, 1080, half, 416);
        assert!(lb.is_cropped());
        assert!((lb.ratio - 416.0 / 1080.0).abs() < 1e-6);
        assert_eq!((lb.scaled_size(), lb.input), ((370, 416), (384, 416)));
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
        let lb = Letterbox::new(2, 1, 64); // scaled to 64x32, one cell high
        assert_eq!(lb.input, (64, 32));
        let stride = 64 * 3 + 4; // padded rows, as swscale may give
        let mut bgr = vec![0u8; stride * 32];
        bgr[0..3].copy_from_slice(&[1, 2, 3]); // (0,0)
        bgr[stride + 9..stride + 12].copy_from_slice(&[7, 8, 9]); // (3,1)
        bgr[stride + 64 * 3] = 99; // row padding, not a pixel
        let mut out = Vec::new();
        lb.write_interleaved(&bgr, stride, &mut out);
        assert_eq!(out.len(), 64 * 32 * 3);
        assert_eq!(&out[0..3], &[1, 2, 3]);
        assert_eq!(&out[lb.row_bytes() + 9..lb.row_bytes() + 12], &[7, 8, 9], "pixel (3,1)");
        assert_eq!(out[2 * lb.row_bytes()], 0, "row 2 is the picture's");
        let narrow = Letterbox::new(1, 2, 64); // scaled to 32x64: columns 32.. are padding
        narrow.write_interleaved(&vec![5u8; 32 * 3 * 64], 32 * 3, &mut out);
        assert_eq!(narrow.input, (32, 64));
        assert!(out.iter().all(|&b| b == 5), "the picture fills its whole cells");
    }

    #[test]
    fn the_overview_is_a_second_input_after_the_main_one() {
        let lb = Letterbox::new(320, 240, 416).with_overview();
        let overview = lb.overview.expect("a 4:3 frame has one");
        assert_eq!((overview.size, overview.input), ((138, 104), (160, 128)));
        assert_eq!(lb.input_len(), 3 * (416 * 320 + 160 * 128));
        let (x, y) = lb.to_source(Some(&overview), 138.0, 104.0);
        assert!((x - 318.46).abs() < 0.01 && (y - 240.0).abs() < 1e-3, "({x}, {y})"); // 414 of 416 columns
        let wide = Letterbox::new(1920, 1080, 416).with_overview().overview.expect("16:9");
        assert_eq!((wide.size, wide.input), ((138, 78), (160, 96)));
        let portrait = Letterbox::new(240, 320, 416).with_overview().overview.expect("portrait");
        assert_eq!((portrait.size, portrait.input), ((104, 138), (128, 160)));
        // A crop's region is what the overview shows.
        let half = Region { x: 0, y: 120, width: 320, height: 120 };
        let lb = Letterbox::cropped(320, 240, half, 416).with_overview();
        let (_, y) = lb.to_source(lb.overview.as_ref(), 0.0, 0.0);
        assert_eq!(y, 120.0);
    }

    #[test]
    fn the_overview_averages_blocks_of_the_picture() {
        let lb = Letterbox::new(64, 32, 64).with_overview(); // picture 64x32, overview 21x10
        let overview = lb.overview.unwrap();
        assert_eq!((overview.size, overview.input), ((21, 10), (32, 32)));
        // Pixel (x, y) of the picture is (x, y, 2 x + y) in B, G, R.
        let bgr: Vec<u8> = (0..32u8).flat_map(|y| (0..64u8).flat_map(move |x| [x, y, 2 * x + y])).collect();
        let mut out = Vec::new();
        lb.write_interleaved(&bgr, 64 * 3, &mut out);
        lb.fill_overview(&mut out);
        assert_eq!(&out[lb.row_bytes() * 5..][..3], &[0, 5, 5], "the picture is untouched");
        let (_, small) = out.split_at(lb.main_len());
        let row = |y: usize| &small[y * 96..(y + 1) * 96];
        // Overview pixel (1, 1) is the mean of the picture's block x 3..5, y 3..5: (4, 4, 12).
        assert_eq!(&row(1)[3..6], &[4, 4, 12]);
        assert_eq!(&row(0)[60..63], &[61, 1, 123], "block x 60..62, y 0..2");
        assert!(row(0)[63..].iter().all(|&b| b == PAD_VALUE), "beside the overview, padding");
        assert!((10..32).all(|y| row(y).iter().all(|&b| b == PAD_VALUE)), "below it, padding");
    }
}
