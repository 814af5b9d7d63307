//! The model's input layout: letterboxed, BGR, interleaved (HWC) bytes, raw 0..255 — what swscale
//! writes, so a frame reaches the model with row copies and no planar shuffle.
//!
//! Frames are kept as `u8` until they reach the inference thread (a quarter of the memory of
//! `f32`); the model files take `u8` and widen it themselves (`scripts/convert_model.py`).

/// Grey that YOLOX was trained to see in padding.
pub const PAD_VALUE: u8 = 114;

/// How a source frame was placed into the square network input: scaled by `ratio`, top-left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub ratio: f32,
    pub src_width: u32,
    pub src_height: u32,
    pub input_size: u32,
}

impl Letterbox {
    pub fn new(src_width: u32, src_height: u32, input_size: u32) -> Self {
        let ratio = (input_size as f32 / src_width.max(1) as f32).min(input_size as f32 / src_height.max(1) as f32);
        Self { ratio, src_width, src_height, input_size }
    }

    /// Size of the scaled image inside the input square, never zero, never past the square.
    pub fn scaled_size(&self) -> (u32, u32) {
        let w = ((self.src_width as f32 * self.ratio).round() as u32).clamp(1, self.input_size);
        let h = ((self.src_height as f32 * self.ratio).round() as u32).clamp(1, self.input_size);
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
}
