//! Drawing on a packed BGR image: lines, arrows, rectangles, polygons, markers and text. Anything
//! outside the image is clipped; coordinates are image pixels (x right, y down).

use super::font;

/// A colour as the frame stores it: blue, green, red.
pub type Bgr = [u8; 3];

/// A packed BGR image (rows of `3 * width` bytes) to draw on.
pub struct Canvas<'a> {
    pixels: &'a mut [u8],
    width: u32,
    height: u32,
}

impl<'a> Canvas<'a> {
    /// `pixels` must hold `3 * width * height` bytes.
    pub fn new(pixels: &'a mut [u8], width: u32, height: u32) -> Self {
        assert_eq!(pixels.len(), 3 * width as usize * height as usize, "a packed BGR image of {width}x{height}");
        Self { pixels, width, height }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The colour at (x, y), if it is inside the image.
    pub fn pixel(&self, x: i64, y: i64) -> Option<Bgr> {
        self.offset(x, y).map(|i| [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    fn offset(&self, x: i64, y: i64) -> Option<usize> {
        ((0..self.width as i64).contains(&x) && (0..self.height as i64).contains(&y))
            .then(|| 3 * (y as usize * self.width as usize + x as usize))
    }

    /// Sets one pixel; nothing outside the image.
    pub fn put(&mut self, x: i64, y: i64, colour: Bgr) {
        if let Some(i) = self.offset(x, y) {
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    /// Fills the rectangle of pixels [x1, x2] x [y1, y2], clipped.
    pub fn fill(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, colour: Bgr) {
        let (x1, x2) = (x1.max(0), x2.min(self.width as i64 - 1));
        let (y1, y2) = (y1.max(0), y2.min(self.height as i64 - 1));
        for y in y1..=y2 {
            for x in x1..=x2 {
                self.put(x, y, colour);
            }
        }
    }

    /// The outline of the box [x1, x2] x [y1, y2], `thickness` pixels drawn inwards from its
    /// edges; the inside is untouched.
    pub fn rect(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, thickness: u32, colour: Bgr) {
        let (x1, x2) = (x1.min(x2), x1.max(x2));
        let (y1, y2) = (y1.min(y2), y1.max(y2));
        let t = thickness.max(1) as i64 - 1;
        self.fill(x1, y1, x2, (y1 + t).min(y2), colour);
        self.fill(x1, (y2 - t).max(y1), x2, y2, colour);
        self.fill(x1, y1, (x1 + t).min(x2), y2, colour);
        self.fill((x2 - t).max(x1), y1, x2, y2, colour);
    }

    /// A straight line `thickness` pixels wide, clipped to the image first (the geometry may
    /// reach far outside it).
    pub fn line(&mut self, from: (f32, f32), to: (f32, f32), thickness: u32, colour: Bgr) {
        let margin = thickness as f32 + 1.0;
        let bounds = (-margin, -margin, self.width as f32 + margin, self.height as f32 + margin);
        let Some((from, to)) = clip(from, to, bounds) else { return };
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        let steps = dx.abs().max(dy.abs()).ceil().max(1.0) as u32;
        let (lo, hi) = (-((thickness.max(1) as i64 - 1) / 2), thickness.max(1) as i64 / 2);
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let (x, y) = ((from.0 + dx * t).round() as i64, (from.1 + dy * t).round() as i64);
            for oy in lo..=hi {
                for ox in lo..=hi {
                    self.put(x + ox, y + oy, colour);
                }
            }
        }
    }

    /// A line with a head at `to`.
    pub fn arrow(&mut self, from: (f32, f32), to: (f32, f32), thickness: u32, colour: Bgr) {
        self.line(from, to, thickness, colour);
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        let length = dx.hypot(dy);
        if length < 1.0 {
            return;
        }
        let head = (length * 0.4).clamp(4.0, 10.0);
        let (ux, uy) = (dx / length, dy / length);
        for side in [-1.0f32, 1.0] {
            // 30 degrees either side of the shaft, pointing back.
            let (c, s) = (0.866_f32, 0.5 * side);
            let back = (-(ux * c - uy * s), -(ux * s + uy * c));
            self.line(to, (to.0 + back.0 * head, to.1 + back.1 * head), thickness, colour);
        }
    }

    /// A closed polygon's outline.
    pub fn polygon(&mut self, points: &[(f32, f32)], thickness: u32, colour: Bgr) {
        for (i, &p) in points.iter().enumerate() {
            self.line(p, points[(i + 1) % points.len()], thickness, colour);
        }
    }

    /// A cross of `size` pixels each way around (x, y).
    pub fn marker(&mut self, (x, y): (f32, f32), size: f32, colour: Bgr) {
        self.line((x - size, y - size), (x + size, y + size), 2, colour);
        self.line((x - size, y + size), (x + size, y - size), 2, colour);
    }

    /// `text` with its top-left corner at (x, y).
    pub fn text(&mut self, x: i64, y: i64, text: &str, colour: Bgr) {
        for (i, c) in text.chars().enumerate() {
            let left = x + (i as u32 * font::ADVANCE) as i64;
            for (row, bits) in font::glyph(c).iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.put(left + col, y + row as i64, colour);
                    }
                }
            }
        }
    }

    /// `text` on a filled background one pixel wider all round, kept inside the image where it
    /// fits; returns the label's box.
    pub fn label(&mut self, x: i64, y: i64, text: &str, fg: Bgr, bg: Bgr) -> (i64, i64, i64, i64) {
        let (x1, y1, x2, y2) = self.label_box(x, y, text);
        self.fill(x1, y1, x2, y2, bg);
        self.text(x1 + 1, y1 + 1, text, fg);
        (x1, y1, x2, y2)
    }

    /// Where `label` would draw `text` asked at (x, y): its box, inclusive.
    pub fn label_box(&self, x: i64, y: i64, text: &str) -> (i64, i64, i64, i64) {
        let (w, h) = (font::width(text) as i64 + 2, font::HEIGHT as i64 + 2);
        let x = x.min(self.width as i64 - w).max(0);
        let y = y.min(self.height as i64 - h).max(0);
        (x, y, x + w - 1, y + h - 1)
    }
}

/// Liang-Barsky: the part of the segment inside `(x_min, y_min, x_max, y_max)`, if any. In f64:
/// the ends of a far segment in f32 would be off by pixels.
fn clip(from: (f32, f32), to: (f32, f32), (x0, y0, x1, y1): (f32, f32, f32, f32)) -> Option<((f32, f32), (f32, f32))> {
    if ![from.0, from.1, to.0, to.1].iter().all(|v| v.is_finite()) {
        return None;
    }
    let (fx, fy, tx, ty) = (from.0 as f64, from.1 as f64, to.0 as f64, to.1 as f64);
    let (dx, dy) = (tx - fx, ty - fy);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, fx - x0 as f64), (dx, x1 as f64 - fx), (-dy, fy - y0 as f64), (dy, y1 as f64 - fy)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    let at = |t: f64| ((fx + t * dx) as f32, (fy + t * dy) as f32);
    (t0 <= t1).then(|| (at(t0), at(t1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: Bgr = [114, 114, 114];
    const RED: Bgr = [0, 0, 255];

    fn image(w: u32, h: u32) -> Vec<u8> {
        GREY.repeat((w * h) as usize)
    }

    #[test]
    fn a_box_outline_has_its_colour_and_its_inside_is_untouched() {
        let mut pixels = image(40, 40);
        let mut canvas = Canvas::new(&mut pixels, 40, 40);
        canvas.rect(10, 10, 30, 25, 2, RED);
        for i in 10..=30 {
            assert_eq!(canvas.pixel(i, 10), Some(RED), "top {i}");
            assert_eq!(canvas.pixel(i, 11), Some(RED), "top, second row {i}");
            assert_eq!(canvas.pixel(i, 25), Some(RED), "bottom {i}");
        }
        for j in 10..=25 {
            assert_eq!(canvas.pixel(10, j), Some(RED), "left {j}");
            assert_eq!(canvas.pixel(30, j), Some(RED), "right {j}");
        }
        for (x, y) in [(12, 12), (20, 18), (28, 23), (9, 9), (31, 26)] {
            assert_eq!(canvas.pixel(x, y), Some(GREY), "({x}, {y}) is not on the outline");
        }
    }

    #[test]
    fn text_draws_glyph_pixels_in_its_cell_only() {
        let mut pixels = image(40, 12);
        let mut canvas = Canvas::new(&mut pixels, 40, 12);
        canvas.text(2, 2, "#1", RED);
        let painted: Vec<(i64, i64)> = (0..12)
            .flat_map(|y| (0..40).map(move |x| (x, y)))
            .filter(|&(x, y)| canvas.pixel(x, y) == Some(RED))
            .collect();
        assert!(painted.len() > 10, "{painted:?}");
        assert!(painted.iter().all(|&(x, y)| (2..18).contains(&x) && (2..10).contains(&y)), "{painted:?}");
    }

    #[test]
    fn a_label_has_its_background_and_stays_inside() {
        let mut pixels = image(30, 20);
        let mut canvas = Canvas::new(&mut pixels, 30, 20);
        let (x1, y1, x2, y2) = canvas.label(25, -5, "ab", [0, 0, 0], RED);
        assert_eq!((x1, y1, x2, y2), (12, 0, 29, 9));
        assert_eq!(canvas.pixel(12, 0), Some(RED));
    }

    #[test]
    fn an_arrow_has_a_shaft_and_a_head() {
        let mut pixels = image(60, 60);
        let mut canvas = Canvas::new(&mut pixels, 60, 60);
        canvas.arrow((30.0, 10.0), (30.0, 40.0), 1, RED);
        for y in 10..=40 {
            assert_eq!(canvas.pixel(30, y), Some(RED), "shaft {y}");
        }
        // The head's barbs go back up on both sides of the tip.
        assert!((25..30).any(|x| (30..40).any(|y| canvas.pixel(x, y) == Some(RED))), "left barb");
        assert!((31..36).any(|x| (30..40).any(|y| canvas.pixel(x, y) == Some(RED))), "right barb");
        assert_eq!(canvas.pixel(30, 45), Some(GREY), "nothing past the tip");
    }

    #[test]
    fn lines_far_outside_are_clipped_not_walked() {
        let mut pixels = image(10, 10);
        let mut canvas = Canvas::new(&mut pixels, 10, 10);
        canvas.line((-1e9, 5.0), (1e9, 5.0), 1, RED);
        canvas.line((f32::NAN, 0.0), (3.0, 3.0), 1, RED);
        canvas.line((20.0, 20.0), (30.0, 30.0), 1, RED);
        assert!((0..10).all(|x| canvas.pixel(x, 5) == Some(RED)));
        assert_eq!(canvas.pixel(3, 3), Some(GREY));
    }
}
