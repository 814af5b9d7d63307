//! JPEG encoding of a packed BGR image (the pure-Rust `jpeg-encoder`), without chroma
//! subsampling so that thin coloured overlay lines keep their colour.

use bytes::Bytes;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// An encoded picture of a camera and what it shows.
#[derive(Debug)]
pub struct Picture {
    pub jpeg: Bytes,
    /// The frame it shows.
    pub frame_seq: u64,
    /// The tracked frame whose boxes it shows (with the overlay only).
    pub tracks_seq: Option<u64>,
    /// The image's size in pixels (the letterboxed frame without padding).
    pub width: u32,
    pub height: u32,
    /// The camera's own pixel size: the space of boxes and geometry.
    pub source_width: u32,
    pub source_height: u32,
    /// The part of the camera's frame the image shows (`[x, y, width, height]`, camera pixels):
    /// the whole frame unless the camera crops (`crop` in its geometry).
    pub source_region: [u32; 4],
    pub overlay: bool,
}

/// Encodes `bgr` (`3 * width * height` bytes) at `quality` (1..=100).
pub fn encode(bgr: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = (
        u16::try_from(width).map_err(|_| format!("picture too wide for JPEG: {width}"))?,
        u16::try_from(height).map_err(|_| format!("picture too tall for JPEG: {height}"))?,
    );
    let mut out = Vec::with_capacity(bgr.len() / 8);
    let mut encoder = Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(SamplingFactor::R_4_4_4);
    encoder.encode(bgr, w, h, ColorType::Bgr).map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes to packed RGB (`jpeg-decoder`'s output for colour pictures) and its size.
    fn decode(jpeg: &[u8]) -> (Vec<u8>, u16, u16) {
        let mut decoder = jpeg_decoder::Decoder::new(jpeg);
        let pixels = decoder.decode().expect("a valid JPEG");
        let info = decoder.info().unwrap();
        assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24);
        (pixels, info.width, info.height)
    }

    #[test]
    fn round_trip_keeps_size_and_colour() {
        let (w, h) = (64u32, 48u32);
        // Left half blue, right half orange (BGR).
        let mut bgr = Vec::new();
        for _y in 0..h {
            for x in 0..w {
                bgr.extend_from_slice(if x < w / 2 { &[200, 40, 20] } else { &[20, 140, 240] });
            }
        }
        let jpeg = encode(&bgr, w, h, 80).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start of image");
        let (rgb, dw, dh) = decode(&jpeg);
        assert_eq!((dw as u32, dh as u32), (w, h));
        let mean = |x0: u32, x1: u32| {
            let mut sum = [0f64; 3];
            let mut n = 0.0;
            for y in 0..h {
                for x in x0..x1 {
                    let i = 3 * (y * w + x) as usize;
                    for c in 0..3 {
                        sum[c] += rgb[i + c] as f64;
                    }
                    n += 1.0;
                }
            }
            sum.map(|s| s / n)
        };
        let (left, right) = (mean(0, w / 2 - 2), mean(w / 2 + 2, w));
        for (got, want) in left.iter().zip([20.0, 40.0, 200.0]).chain(right.iter().zip([240.0, 140.0, 20.0])) {
            assert!((got - want).abs() < 6.0, "mean colour {left:?} / {right:?}");
        }
    }

    #[test]
    fn sizes_beyond_jpeg_are_refused() {
        assert!(encode(&[], 70_000, 1, 80).unwrap_err().contains("too wide"));
    }
}
