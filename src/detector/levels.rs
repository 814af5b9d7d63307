//! Levels normalisation of a letterboxed frame for dark cameras (`"normalise": true` in a
//! geometry): the frame's luma range (its 0.5th to 99.5th percentile) is stretched to 0..255, at
//! most `MAX_GAIN` times, and a frame still dark after that (median under `TARGET_MEDIAN`) is
//! brightened by a gamma curve. One lookup table for the three channels keeps the hue.
//!
//! In the decode thread, on the model-sized frame (not the camera's): one pass to sample the
//! luma histogram (every other pixel of every other row), one pass through the table; the
//! histogram and the table live on the stack, so nothing is allocated per frame.

use super::Letterbox;

/// Noise is amplified as much as the picture: a low-contrast frame is not stretched past this.
pub const MAX_GAIN: f32 = 4.0;
/// The median luma (0..1) a stretched frame is brightened to, at most (`MIN_GAMMA`).
pub const TARGET_MEDIAN: f32 = 0.4;
/// The strongest brightening curve (`out = in ^ gamma`).
pub const MIN_GAMMA: f32 = 0.5;
/// A frame whose luma range is narrower than this (a lens cap, a blank picture) is left alone.
pub const MIN_RANGE: f32 = 16.0;
/// Share of the sampled pixels clipped at each end.
const CLIP: f32 = 0.005;

/// Stretches the levels of the picture part of `pixels` (the letterboxed BGR frame; the padding
/// keeps its grey) in place.
pub fn normalise(letterbox: &Letterbox, pixels: &mut [u8]) {
    let (w, h) = letterbox.scaled_size();
    let (row_bytes, side_bytes) = (3 * w as usize, letterbox.row_bytes());
    let mut histogram = [0u32; 256];
    let mut samples = 0u32;
    for row in pixels.chunks_exact(side_bytes).take(h as usize).step_by(2) {
        for px in row[..row_bytes].chunks_exact(3).step_by(2) {
            // BT.601 luma of B, G, R in 8-bit fixed point.
            let luma = (29 * px[0] as u32 + 150 * px[1] as u32 + 77 * px[2] as u32) >> 8;
            histogram[luma as usize] += 1;
            samples += 1;
        }
    }
    let Some(table) = table(&histogram, samples) else { return };
    for row in pixels.chunks_exact_mut(side_bytes).take(h as usize) {
        for value in &mut row[..row_bytes] {
            *value = table[*value as usize];
        }
    }
}

/// The lookup table for a luma histogram of `samples` pixels; `None` when it would change nothing.
fn table(histogram: &[u32; 256], samples: u32) -> Option<[u8; 256]> {
    if samples == 0 {
        return None;
    }
    let percentile = |share: f32| {
        let rank = (share * samples as f32) as u32;
        let mut seen = 0;
        histogram.iter().position(|&n| {
            seen += n;
            seen > rank
        })
    };
    let (lo, hi, median) = (percentile(CLIP)? as f32, percentile(1.0 - CLIP)? as f32, percentile(0.5)? as f32);
    if hi - lo < MIN_RANGE {
        return None;
    }
    let gain = (255.0 / (hi - lo)).min(MAX_GAIN);
    let stretched = |v: f32| ((v - lo) * gain / 255.0).clamp(0.0, 1.0);
    let median = stretched(median);
    let gamma = if median > 0.0 && median < TARGET_MEDIAN {
        (TARGET_MEDIAN.ln() / median.ln()).clamp(MIN_GAMMA, 1.0)
    } else if median <= 0.0 {
        MIN_GAMMA
    } else {
        1.0
    };
    if gain <= 1.0 && lo == 0.0 && gamma == 1.0 {
        return None;
    }
    let mut table = [0u8; 256];
    for (i, out) in table.iter_mut().enumerate() {
        *out = (stretched(i as f32).powf(gamma) * 255.0).round() as u8;
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::input::PAD_VALUE;

    /// A letterboxed 8x4 picture in a 32x32 input (one cell) whose pixels are grey levels `levels`.
    fn frame(levels: &[u8; 8]) -> (Letterbox, Vec<u8>) {
        let letterbox = Letterbox::new(8, 4, 8); // scaled to 8x4
        let bgr: Vec<u8> = (0..4).flat_map(|_| levels.iter().flat_map(|&v| [v, v, v])).collect();
        let mut pixels = Vec::new();
        letterbox.write_interleaved(&bgr, 24, &mut pixels);
        (letterbox, pixels)
    }

    #[test]
    fn a_dark_frame_is_stretched_to_the_full_range_and_the_padding_kept() {
        let (letterbox, mut pixels) = frame(&[10, 20, 40, 50, 70, 80, 100, 110]);
        normalise(&letterbox, &mut pixels);
        let first_row = &pixels[..24];
        assert_eq!(first_row[0], 0, "the darkest level goes to black");
        // The brightest sampled level (100: every other pixel is sampled) reaches white.
        assert_eq!(first_row[18], 255);
        assert!(first_row.windows(3).step_by(3).all(|w| w[0] == w[1] && w[1] == w[2]), "grey stays grey");
        let values: Vec<u8> = first_row.chunks(3).map(|p| p[0]).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "order is kept: {values:?}");
        for (y, row) in pixels.chunks_exact(letterbox.row_bytes()).enumerate() {
            let picture = if y < 4 { 24 } else { 0 };
            assert!(row[picture..].iter().all(|&b| b == PAD_VALUE), "padding is untouched, row {y}");
        }
    }

    #[test]
    fn a_well_exposed_frame_is_left_alone() {
        let levels = [0, 0, 80, 80, 160, 160, 255, 255];
        let (letterbox, mut pixels) = frame(&levels);
        let before = pixels.clone();
        normalise(&letterbox, &mut pixels);
        assert_eq!(pixels, before);
    }

    #[test]
    fn a_flat_frame_is_not_blown_up() {
        let (letterbox, mut pixels) = frame(&[20, 21, 22, 23, 24, 25, 26, 27]);
        let before = pixels.clone();
        normalise(&letterbox, &mut pixels);
        assert_eq!(pixels, before);
    }

    #[test]
    fn a_dark_but_full_range_frame_is_brightened_by_gamma() {
        // Mostly dark with a few bright pixels: the range is full, the median low.
        let (letterbox, mut pixels) = frame(&[0, 5, 10, 15, 20, 25, 255, 255]);
        let before = pixels[3 * 3];
        normalise(&letterbox, &mut pixels);
        assert!(pixels[3 * 3] > before, "{} -> {}", before, pixels[3 * 3]);
        assert_eq!(pixels[7 * 3], 255);
    }
}
