//! A frame's number and capture time, written into its pixels.
//!
//! `testsrc` paints a bar of [`BLOCKS`] black or white squares across the top of each
//! frame. A viewer that decodes the picture (a browser's canvas, a test, the benchmark)
//! reads them back and knows which frame it shows and when it was captured, so latency
//! is measured on what a person sees, after lossy coding, not on a side channel.
//! Squares of 1/80 of the width (16 px at 1280) survive JPEG and VP8 at any sane
//! quality; each is read at its centre and thresholded at mid-grey.
//!
//! Layout, most significant bit first: 4 sync squares (white, black, white, black), the
//! frame number (32 bits), the capture time in ms since the Unix epoch modulo 2^40
//! (40 bits, 34 years before it wraps), and a 4-bit check (the count of set bits in the
//! two fields, modulo 16). The page's decoder in `watch.html` does the same in JS.

/// Squares in the bar.
pub const BLOCKS: usize = 80;
const SYNC: [bool; 4] = [true, false, true, false];
const TIME_BITS: u32 = 40;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub frame: u32,
    /// Milliseconds since the Unix epoch, modulo 2^40.
    pub time_ms: u64,
}

impl Stamp {
    pub fn new(frame: u32, time_ms: u64) -> Stamp {
        Stamp {
            frame,
            time_ms: time_ms & ((1 << TIME_BITS) - 1),
        }
    }

    /// Milliseconds from this stamp's time to `now_ms` (ms since the epoch), across the
    /// 2^40 wrap.
    pub fn age_ms(&self, now_ms: u64) -> i64 {
        let modulus = 1i64 << TIME_BITS;
        let d = ((now_ms as i64 - self.time_ms as i64) % modulus + modulus) % modulus;
        if d > modulus / 2 {
            d - modulus
        } else {
            d
        }
    }

    fn bits(&self) -> [bool; BLOCKS] {
        let mut bits = [false; BLOCKS];
        bits[..4].copy_from_slice(&SYNC);
        for i in 0..32 {
            bits[4 + i] = self.frame >> (31 - i) & 1 == 1;
        }
        for i in 0..TIME_BITS as usize {
            bits[36 + i] = self.time_ms >> (TIME_BITS as usize - 1 - i) & 1 == 1;
        }
        let check = self.check();
        for i in 0..4 {
            bits[76 + i] = check >> (3 - i) & 1 == 1;
        }
        bits
    }

    fn check(&self) -> u32 {
        (self.frame.count_ones() + self.time_ms.count_ones()) % 16
    }
}

/// Side of one square, in pixels, for a frame `width` wide.
pub fn block_size(width: usize) -> usize {
    (width / BLOCKS).max(1)
}

/// Paints `stamp` into the top rows of a BGRX frame.
pub fn write_bgrx(pixels: &mut [u8], width: usize, height: usize, stride: usize, stamp: Stamp) {
    let side = block_size(width);
    for (i, bit) in stamp.bits().iter().enumerate() {
        let value = if *bit { 255 } else { 0 };
        for y in 0..side.min(height) {
            let row = &mut pixels[y * stride..];
            for x in i * side..((i + 1) * side).min(width) {
                row[x * 4..x * 4 + 4].copy_from_slice(&[value, value, value, 255]);
            }
        }
    }
}

/// Reads a stamp back through `luma(x, y)` (0..=255) of a decoded frame `width` wide;
/// `None` when the sync squares or the check do not match (a frame without a stamp,
/// or one too damaged to trust).
pub fn read(width: usize, luma: impl Fn(usize, usize) -> u8) -> Option<Stamp> {
    let side = block_size(width);
    let bit = |i: usize| luma(i * side + side / 2, side / 2) >= 128;
    if (0..4).any(|i| bit(i) != SYNC[i]) {
        return None;
    }
    let field =
        |from: usize, len: usize| (from..from + len).fold(0u64, |v, i| v << 1 | bit(i) as u64);
    let stamp = Stamp {
        frame: field(4, 32) as u32,
        time_ms: field(36, TIME_BITS as usize),
    };
    (field(76, 4) as u32 == stamp.check()).then_some(stamp)
}

/// [`read`] on BGRX (or RGBX: the grey squares are the same in both orders) pixels.
pub fn read_rgbx(pixels: &[u8], width: usize, stride: usize) -> Option<Stamp> {
    read(width, |x, y| {
        let p = &pixels[y * stride + x * 4..];
        ((p[0] as u32 + p[1] as u32 + p[2] as u32) / 3) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip_at_every_width() {
        for (width, height) in [(1280, 720), (640, 480), (1920, 1080), (81, 2)] {
            let stride = width * 4;
            let mut pixels = vec![77u8; stride * height];
            let stamp = Stamp::new(0xdead_beef, 1_764_600_000_123);
            write_bgrx(&mut pixels, width, height, stride, stamp);
            assert_eq!(
                read_rgbx(&pixels, width, stride),
                Some(stamp),
                "{width}x{height}"
            );
        }
    }

    #[test]
    fn a_frame_without_a_stamp_or_with_a_flipped_square_reads_as_none() {
        let (width, height) = (1280, 720);
        let stride = width * 4;
        let mut pixels = vec![0u8; stride * height];
        assert_eq!(read_rgbx(&pixels, width, stride), None);
        write_bgrx(&mut pixels, width, height, stride, Stamp::new(1, 2));
        // Flip square 40 (a time bit): the check no longer matches.
        let side = block_size(width);
        let x = 40 * side + side / 2;
        let v = 255 - pixels[(side / 2) * stride + x * 4];
        for y in 0..side {
            for c in 0..3 {
                for dx in 0..side {
                    pixels[y * stride + (40 * side + dx) * 4 + c] = v;
                }
            }
        }
        assert_eq!(read_rgbx(&pixels, width, stride), None);
    }

    #[test]
    fn age_crosses_the_wrap() {
        let s = Stamp::new(0, (1 << 40) - 5);
        assert_eq!(s.age_ms(1 << 40), 5);
        assert_eq!(s.age_ms((1 << 40) + 20), 25);
        assert_eq!(Stamp::new(0, 100).age_ms(90), -10);
    }
}
