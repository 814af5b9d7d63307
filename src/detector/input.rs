//! The model's input layout: letterboxed, BGR, channel-planar (CHW) bytes, raw 0..255.
//!
//! Frames are kept as `u8` until they reach the inference thread (a quarter of the memory of
//! `f32`); the conversion to float happens on the device in one tensor operation.

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

    /// Copies a packed BGR24 image of `scaled_size()` (rows `stride` bytes apart) into CHW
    /// planes of the input square, padding the rest.
    pub fn write_planar(&self, bgr: &[u8], stride: usize, out: &mut Vec<u8>) {
        let (w, h) = self.scaled_size();
        let (w, h, side) = (w as usize, h as usize, self.input_size as usize);
        let plane = side * side;
        out.clear();
        out.resize(3 * plane, PAD_VALUE);
        let (b_plane, rest) = out.split_at_mut(plane);
        let (g_plane, r_plane) = rest.split_at_mut(plane);
        for y in 0..h {
            let row = &bgr[y * stride..y * stride + 3 * w];
            let dst = y * side;
            for (x, px) in row.chunks_exact(3).enumerate() {
                b_plane[dst + x] = px[0];
                g_plane[dst + x] = px[1];
                r_plane[dst + x] = px[2];
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
    }

    #[test]
    fn planar_copy_places_pixels_top_left_and_pads() {
        let lb = Letterbox::new(2, 1, 4); // scaled to 4x2
        let stride = 4 * 3 + 4; // padded rows, as swscale may give
        let mut bgr = vec![0u8; stride * 2];
        bgr[0..3].copy_from_slice(&[1, 2, 3]); // (0,0)
        bgr[stride + 9..stride + 12].copy_from_slice(&[7, 8, 9]); // (3,1)
        let mut out = Vec::new();
        lb.write_planar(&bgr, stride, &mut out);
        assert_eq!(out.len(), 48);
        assert_eq!((out[0], out[16], out[32]), (1, 2, 3));
        assert_eq!((out[4 + 3], out[16 + 4 + 3], out[32 + 4 + 3]), (7, 8, 9));
        assert_eq!(out[2 * 4], PAD_VALUE, "row 2 is padding");
        assert_eq!(out[15], PAD_VALUE);
    }
}
