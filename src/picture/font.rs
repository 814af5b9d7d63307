//! The text of overlays: the public-domain 8x8 bitmap font of `font8x8` (compiled in, no font
//! file), ASCII only; any other character is drawn as `?`.

/// Pixels between the starts of two characters, and the height of a line.
pub const ADVANCE: u32 = 8;
pub const HEIGHT: u32 = 8;

/// The rows of `c`, top first; bit 0 of a row is its leftmost pixel.
pub fn glyph(c: char) -> [u8; 8] {
    let index = if c.is_ascii() && !c.is_ascii_control() { c as usize } else { '?' as usize };
    font8x8::legacy::BASIC_LEGACY[index]
}

/// Width in pixels of `text` in this font.
pub fn width(text: &str) -> u32 {
    text.chars().count() as u32 * ADVANCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_have_pixels_and_space_has_none() {
        for c in ['#', '0', '9', 'a', 'z', 'A', 'Z', '_', '-'] {
            assert!(glyph(c).iter().any(|row| *row != 0), "{c}");
        }
        assert!(glyph(' ').iter().all(|row| *row == 0));
        assert_eq!(glyph('é'), glyph('?'));
        assert_eq!(width("#12 car"), 56);
    }
}
