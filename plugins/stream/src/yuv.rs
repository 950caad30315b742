//! Pictures for the video encoders: planar YUV 4:2:0 (I420), what libvpx and OpenH264
//! both take.
//!
//! The capture converts each new frame once, whatever the number of encoders and
//! viewers, so a second codec costs its encoder and nothing else. The conversion is
//! BT.601 with limited range (16–235), the colour space browsers assume for VP8 and
//! H.264 that carry no colour information, done by libyuv. Odd sizes are cut to even ones: 4:2:0 needs
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
            PixelFormat::Bgrx => packed(frame, 4, libyuv::ARGBToI420, (y, u, v)),
            PixelFormat::Yuyv => packed(frame, 2, libyuv::YUY2ToI420, (y, u, v)),
            PixelFormat::Nv12 => nv12(frame, y, u, v),
            PixelFormat::Jpeg => Err(
                "the grabber sends MJPEG, which WebRTC cannot pass on; set [v4l2] format = yuyv or nv12"
                    .into(),
            ),
        }
    }
}

/// libyuv, Chromium's and WebRTC's own pixel converter (Debian `libyuv0`): SIMD for
/// every x86 level at run time, a 1080p BGRX frame in about a millisecond where plain
/// Rust took 8. Three functions of its C API (`extern "C"` in its headers), so a
/// declaration here is the whole binding.
mod libyuv {
    use std::ffi::c_int;

    #[link(name = "yuv")]
    extern "C" {
        /// libyuv's "ARGB" is the word 0xAARRGGBB in little endian: bytes B, G, R, A,
        /// which is BGRX. BT.601, limited range.
        pub fn ARGBToI420(
            src: *const u8,
            src_stride: c_int,
            y: *mut u8,
            y_stride: c_int,
            u: *mut u8,
            u_stride: c_int,
            v: *mut u8,
            v_stride: c_int,
            width: c_int,
            height: c_int,
        ) -> c_int;
        pub fn YUY2ToI420(
            src: *const u8,
            src_stride: c_int,
            y: *mut u8,
            y_stride: c_int,
            u: *mut u8,
            u_stride: c_int,
            v: *mut u8,
            v_stride: c_int,
            width: c_int,
            height: c_int,
        ) -> c_int;
        pub fn NV12ToI420(
            src_y: *const u8,
            src_y_stride: c_int,
            src_uv: *const u8,
            src_uv_stride: c_int,
            y: *mut u8,
            y_stride: c_int,
            u: *mut u8,
            u_stride: c_int,
            v: *mut u8,
            v_stride: c_int,
            width: c_int,
            height: c_int,
        ) -> c_int;
    }
}

/// The sizes libyuv is told, checked against the buffers so that it never reads or
/// writes outside them: `bytes_per_pixel` of the source's first plane, `rows` of it.
fn checked(
    frame: &Frame,
    bytes_per_pixel: usize,
    rows: usize,
    y: &[u8],
) -> Result<(i32, i32, i32), String> {
    let (w, h) = (frame.width & !1, frame.height & !1);
    let fits = frame.stride >= w * bytes_per_pixel
        && frame.data.len() >= frame.stride * (rows - 1) + w * bytes_per_pixel
        && y.len() == w * h;
    let int = |n: usize| i32::try_from(n).ok();
    match (fits, int(w), int(h), int(frame.stride)) {
        (true, Some(w), Some(h), Some(s)) => Ok((w, h, s)),
        _ => Err(format!(
            "a {}x{} frame with stride {} and {} bytes does not hold its pixels",
            frame.width,
            frame.height,
            frame.stride,
            frame.data.len()
        )),
    }
}

/// libyuv's signature for a packed source (one plane) to I420.
type PackedToI420 = unsafe extern "C" fn(
    *const u8,
    std::ffi::c_int,
    *mut u8,
    std::ffi::c_int,
    *mut u8,
    std::ffi::c_int,
    *mut u8,
    std::ffi::c_int,
    std::ffi::c_int,
    std::ffi::c_int,
) -> std::ffi::c_int;

/// A packed frame (BGRX: 4 bytes per pixel, YUYV: 2) through libyuv's `convert`.
fn packed(
    frame: &Frame,
    bytes_per_pixel: usize,
    convert: PackedToI420,
    (y, u, v): (&mut [u8], &mut [u8], &mut [u8]),
) -> Result<(), String> {
    let (w, h, s) = checked(frame, bytes_per_pixel, frame.height & !1, y)?;
    // SAFETY: `checked` showed the source holds h rows of w pixels at its stride, and the
    // planes were sized w×h and (w/2)×(h/2) by the caller.
    unsafe {
        convert(
            frame.data.as_ptr(),
            s,
            y.as_mut_ptr(),
            w,
            u.as_mut_ptr(),
            w / 2,
            v.as_mut_ptr(),
            w / 2,
            w,
            h,
        );
    }
    Ok(())
}

fn nv12(frame: &Frame, y: &mut [u8], u: &mut [u8], v: &mut [u8]) -> Result<(), String> {
    // The Y plane's full height, then the interleaved chroma plane at the same stride.
    let rows = frame.height + (frame.height & !1) / 2;
    let (w, h, s) = checked(frame, 1, rows, y)?;
    let chroma = &frame.data[frame.stride * frame.height..];
    // SAFETY: `checked` covered the Y rows and the h/2 chroma rows after them, and the
    // planes were sized by the caller.
    unsafe {
        libyuv::NV12ToI420(
            frame.data.as_ptr(),
            s,
            chroma.as_ptr(),
            s,
            y.as_mut_ptr(),
            w,
            u.as_mut_ptr(),
            w / 2,
            v.as_mut_ptr(),
            w / 2,
            w,
            h,
        );
    }
    Ok(())
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
    fn a_frame_too_short_for_its_size_is_refused_not_read_past() {
        let mut f = solid_bgrx(64, 64, 0, 0, 0);
        f.data.truncate(64 * 4 * 63);
        let e = I420::default().convert(&f).unwrap_err();
        assert!(e.contains("does not hold its pixels"), "{e}");
    }

    #[test]
    fn an_mjpeg_grabber_is_refused_with_the_setting_to_change() {
        let mut f = Frame::empty();
        (f.width, f.height, f.format) = (2, 2, PixelFormat::Jpeg);
        let e = I420::default().convert(&f).unwrap_err();
        assert!(e.contains("format = yuyv"), "{e}");
    }
}
