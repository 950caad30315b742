//! The picture viewers get while the source is unreachable: "NO SIGNAL" on dark grey,
//! as a monitor shows it, so a person sees at once that the target, not the page, is
//! the problem. Drawn from a 5x7 font of the few letters it needs.

use crate::jpeg::Encoder;
use crate::source::Frame;

const GLYPHS: [(char, [u8; 7]); 7] = [
    ('N', [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11]),
    ('O', [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e]),
    ('S', [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e]),
    ('I', [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e]),
    ('G', [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f]),
    ('A', [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11]),
    ('L', [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f]),
];
const TEXT: &str = "NO SIGNAL";

/// The picture as BGRX, `width`x`height` (at least 64x32).
pub fn frame(width: usize, height: usize) -> Frame {
    let (w, h) = (width.max(64), height.max(32));
    let mut f = Frame::empty();
    f.reset_bgrx(w, h);
    for px in f.data.chunks_exact_mut(4) {
        px.copy_from_slice(&[48, 40, 40, 255]);
    }
    // Each glyph cell is 6x7 units; the text spans about half the width.
    let unit = (w / 2 / (TEXT.len() * 6)).max(1);
    let (x0, y0) = ((w - TEXT.len() * 6 * unit) / 2, (h - 7 * unit) / 2);
    for (i, ch) in TEXT.chars().enumerate() {
        let Some((_, rows)) = GLYPHS.iter().find(|(c, _)| *c == ch) else {
            continue;
        };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits >> (4 - col) & 1 == 0 {
                    continue;
                }
                for dy in 0..unit {
                    let y = y0 + r * unit + dy;
                    let x = x0 + (i * 6 + col) * unit;
                    let row = &mut f.data[y * f.stride + x * 4..][..unit * 4];
                    for px in row.chunks_exact_mut(4) {
                        px.copy_from_slice(&[230, 230, 230, 255]);
                    }
                }
            }
        }
    }
    f
}

/// The picture as a JPEG.
pub fn jpeg(width: usize, height: usize) -> Result<Vec<u8>, String> {
    Encoder::new(70)?.encode(&frame(width, height))
}

#[cfg(test)]
mod tests {
    #[test]
    fn it_is_dark_with_light_letters_in_the_middle() {
        let f = super::frame(640, 360);
        let light = f.data.chunks_exact(4).filter(|p| p[0] > 200).count();
        let total = 640 * 360;
        assert!(
            light > total / 100 && light < total / 5,
            "{light} light pixels"
        );
        assert_eq!(&f.data[..4], &[48, 40, 40, 255], "the corner is background");
    }
}
