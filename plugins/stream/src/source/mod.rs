//! Where pictures come from. Every source sits behind [`Source`], so the capture loop,
//! the encoder and the viewers never know whether a frame came from a QEMU display, a
//! USB HDMI grabber or the test pattern.

pub mod rfb;
pub mod testsrc;
pub mod v4l2;

use std::time::Instant;

/// How a frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 4 bytes a pixel: blue, green, red, unused (QEMU's VNC and the test pattern).
    Bgrx,
    /// Packed 4:2:2, Y0 U Y1 V (most USB grabbers without MJPEG).
    Yuyv,
    /// A Y plane, then interleaved U and V at half resolution both ways.
    Nv12,
    /// Already a JPEG (a grabber's MJPEG mode): passed to MJPEG viewers as it is.
    Jpeg,
}

impl PixelFormat {
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Bgrx => "BGRX",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Jpeg => "MJPEG",
        }
    }
}

/// One picture. Sources fill a frame the capture loop owns, so a steady stream
/// allocates nothing per frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    /// Bytes per row (of the Y plane for NV12); unused for JPEG.
    pub stride: usize,
    pub format: PixelFormat,
    pub data: Vec<u8>,
    /// When the source had it, by the wall clock (ms since the Unix epoch).
    pub captured_ms: u64,
}

impl Frame {
    pub fn empty() -> Frame {
        Frame {
            width: 0,
            height: 0,
            stride: 0,
            format: PixelFormat::Bgrx,
            data: Vec::new(),
            captured_ms: 0,
        }
    }

    /// A black BGRX frame of this size (`data` reused when it is large enough).
    pub fn reset_bgrx(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.stride = width * 4;
        self.format = PixelFormat::Bgrx;
        self.data.clear();
        self.data.resize(width * height * 4, 0);
    }
}

/// What [`Source::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grab {
    /// `frame` holds a new picture.
    New,
    /// Nothing changed on the screen until the deadline (a VNC server sends nothing
    /// then); `frame` still holds the last picture.
    Unchanged,
}

/// A capture source, opened when the first viewer arrives and dropped when the last
/// leaves. Any error drops it; the capture loop shows "no signal" and opens a new one.
pub trait Source: Send {
    /// One line for status: what it reads and how.
    fn describe(&self) -> String;

    /// Waits for the next picture until `deadline` (at most about one frame interval),
    /// into `frame`.
    fn next(&mut self, frame: &mut Frame, deadline: Instant) -> Result<Grab, String>;

    /// Whether [`crate::settings`]'s width and height apply (only the test pattern
    /// can be any size; a screen or a grabber is as big as it is).
    fn sizable(&self) -> bool {
        false
    }
}

/// Milliseconds since the Unix epoch, the clock frame stamps use.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
