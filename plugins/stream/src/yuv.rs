//! Pictures for the video encoders: planar YUV 4:2:0 (I420), what libvpx and OpenH264
//! both take.
//!
//! The capture converts each new frame once, whatever the number of encoders and
//! viewers, so a second codec costs its encoder and nothing else. The conversion is
//! BT.601 with limited range (16–235), the colour space browsers assume for VP8 and
//! H.264 that carry no colour information. Odd sizes are cut to even ones: 4:2:0 needs
//! whole 2×2 blocks, and a screen is never odd in practice.

use crate::source::{Frame, PixelFormat};

/// One I420 picture, planes packed with no padding (strides `width` and `width / 2`).
#[derive(Debug, Clone, Default)]
pub struct I420 {
    pub width: usize,
    pub height: usize,
    /// Y (`width × height`), then U and V (`width/2 × height/2` each).
    pub data: Vec<u8>,
    /// When the source had it, ms since the Unix epoch.
    pub captured_ms: u64,
}

impl I420 {
    pub fn y(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }
    pub fn u(&self) -> &[u8] {
        let y = self.width * self.height;
        &self.data[y..y + y / 4]
    }
    pub fn v(&self) -> &[u8] {
        let y = self.width * self.height;
        &self.data[y + y / 4..]
    }

    /// Converts `frame`, reusing this picture's buffer.
    pub fn convert(&mut self, frame: &Frame) -> Result<(), String> {
        let (w, h) = (frame.width & !1, frame.height & !1);
        if w == 0 || h == 0 {
            return Err(format!(
                "a {}x{} picture is too small to encode",
                frame.width, frame.height
            ));
        }
        self.width = w;
        self.height = h;
        self.captured_ms = frame.captured_ms;
        self.data.resize(w * h * 3 / 2, 0);
        let (y, chroma) = self.data.split_at_mut(w * h);
        let (u, v) = chroma.split_at_mut(w * h / 4);
        match frame.format {
            PixelFormat::Bgrx => bgrx(frame, y, u, v),
            PixelFormat::Yuyv => yuyv(frame, y, u, v),
            PixelFormat::Nv12 => nv12(frame, y, u, v),
            PixelFormat::Jpeg => {
                return Err(
                    "the grabber sends MJPEG, which WebRTC cannot pass on; set [v4l2] format = yuyv or nv12"
                        .into(),
                )
            }
        }
        Ok(())
    }
}

#[inline]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

fn bgrx(frame: &Frame, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
    let (w, h) = (frame.width & !1, frame.height & !1);
    let s = frame.stride;
    let px = &frame.data;
    let (cw, ch) = (w / 2, h / 2);
    // Two rows at a time; plain indexed arithmetic on exact chunks, which the compiler
    // vectorises (a 1080p frame in a few milliseconds on one core).
    for ((row, (ys, (us, vs))), _) in y
        .chunks_exact_mut(2 * w)
        .zip(u.chunks_exact_mut(cw).zip(v.chunks_exact_mut(cw)))
        .enumerate()
        .zip(0..ch)
    {
        let (y0, y1) = ys.split_at_mut(w);
        let top = &px[2 * row * s..2 * row * s + w * 4];
        let bottom = &px[(2 * row + 1) * s..(2 * row + 1) * s + w * 4];
        for (x, (t, b)) in top.chunks_exact(8).zip(bottom.chunks_exact(8)).enumerate() {
            let p = |q: &[u8], i: usize| (q[i + 2] as i32, q[i + 1] as i32, q[i] as i32);
            let (r00, g00, b00) = p(t, 0);
            let (r01, g01, b01) = p(t, 4);
            let (r10, g10, b10) = p(b, 0);
            let (r11, g11, b11) = p(b, 4);
            y0[2 * x] = luma(r00, g00, b00);
            y0[2 * x + 1] = luma(r01, g01, b01);
            y1[2 * x] = luma(r10, g10, b10);
            y1[2 * x + 1] = luma(r11, g11, b11);
            let r = (r00 + r01 + r10 + r11 + 2) >> 2;
            let g = (g00 + g01 + g10 + g11 + 2) >> 2;
            let bl = (b00 + b01 + b10 + b11 + 2) >> 2;
            us[x] = (((-38 * r - 74 * g + 112 * bl + 128) >> 8) + 128) as u8;
            vs[x] = (((112 * r - 94 * g - 18 * bl + 128) >> 8) + 128) as u8;
        }
    }
}

fn yuyv(frame: &Frame, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
    let (w, h) = (frame.width & !1, frame.height & !1);
    let s = frame.stride;
    let px = &frame.data;
    for row in 0..h {
        let line = &px[row * s..row * s + w * 2];
        for col in 0..w {
            y[row * w + col] = line[col * 2];
        }
        if row % 2 == 0 {
            let next = &px[(row + 1) * s..(row + 1) * s + w * 2];
            let crow = row / 2 * (w / 2);
            for col in 0..w / 2 {
                let i = col * 4;
                u[crow + col] = (line[i + 1] as u16 + next[i + 1] as u16).div_ceil(2) as u8;
                v[crow + col] = (line[i + 3] as u16 + next[i + 3] as u16).div_ceil(2) as u8;
            }
        }
    }
}

fn nv12(frame: &Frame, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
    let (w, h) = (frame.width & !1, frame.height & !1);
    let s = frame.stride;
    let px = &frame.data;
    for row in 0..h {
        y[row * w..(row + 1) * w].copy_from_slice(&px[row * s..row * s + w]);
    }
    let chroma = &px[s * frame.height..];
    for row in 0..h / 2 {
        let line = &chroma[row * s..row * s + w];
        for col in 0..w / 2 {
            u[row * (w / 2) + col] = line[col * 2];
            v[row * (w / 2) + col] = line[col * 2 + 1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid_bgrx(w: usize, h: usize, b: u8, g: u8, r: u8) -> Frame {
        let mut f = Frame::empty();
        f.reset_bgrx(w, h);
        for p in f.data.chunks_mut(4) {
            p[0] = b;
            p[1] = g;
            p[2] = r;
        }
        f
    }

    #[test]
    fn primaries_land_on_their_bt601_values() {
        // (B, G, R) → (Y, U, V), limited range, as in BT.601's tables (±1 for rounding).
        for ((b, g, r), want) in [
            ((0, 0, 0), (16, 128, 128)),
            ((255, 255, 255), (235, 128, 128)),
            ((0, 0, 255), (82, 90, 240)),
            ((0, 255, 0), (145, 54, 34)),
            ((255, 0, 0), (41, 240, 110)),
        ] {
            let mut p = I420::default();
            p.convert(&solid_bgrx(4, 2, b, g, r)).unwrap();
            let got = (p.y()[0], p.u()[0], p.v()[0]);
            assert!(
                (got.0 as i32 - want.0).abs() <= 1
                    && (got.1 as i32 - want.1).abs() <= 1
                    && (got.2 as i32 - want.2).abs() <= 1,
                "BGR {:?}: got {got:?}, want {want:?}",
                (b, g, r)
            );
        }
    }

    #[test]
    fn planes_have_the_sizes_encoders_expect_and_odd_sizes_are_cut() {
        let mut p = I420::default();
        p.convert(&solid_bgrx(641, 361, 0, 0, 0)).unwrap();
        assert_eq!((p.width, p.height), (640, 360));
        assert_eq!(p.y().len(), 640 * 360);
        assert_eq!(p.u().len(), 320 * 180);
        assert_eq!(p.v().len(), 320 * 180);
    }

    #[test]
    fn yuyv_and_nv12_keep_their_samples() {
        let mut f = Frame::empty();
        (f.width, f.height, f.stride, f.format) = (2, 2, 4, PixelFormat::Yuyv);
        f.data = vec![10, 100, 20, 200, 30, 110, 40, 210];
        let mut p = I420::default();
        p.convert(&f).unwrap();
        assert_eq!(p.y(), &[10, 20, 30, 40]);
        assert_eq!((p.u()[0], p.v()[0]), (105, 205));

        (f.stride, f.format) = (2, PixelFormat::Nv12);
        f.data = vec![1, 2, 3, 4, 50, 60];
        p.convert(&f).unwrap();
        assert_eq!(p.y(), &[1, 2, 3, 4]);
        assert_eq!((p.u()[0], p.v()[0]), (50, 60));
    }

    #[test]
    fn an_mjpeg_grabber_is_refused_with_the_setting_to_change() {
        let mut f = Frame::empty();
        (f.width, f.height, f.format) = (2, 2, PixelFormat::Jpeg);
        let e = I420::default().convert(&f).unwrap_err();
        assert!(e.contains("format = yuyv"), "{e}");
    }
}
