//! `testsrc`: a moving pattern of any size, with its frame number and capture time in
//! the pixels ([`crate::framecode`]), so latency and frame loss can be read off what a
//! viewer decodes. With `motion = off` every frame is the same picture (stamp
//! included), which is what an idle desktop looks like to the unchanged-frame check.

use std::time::Instant;

use super::{now_ms, Frame, Grab, Source};
use crate::framecode::{self, Stamp};

pub struct TestSource {
    width: usize,
    height: usize,
    motion: bool,
    frame: u32,
    /// One row of colour bars, twice as wide as the frame, so a scrolled row is one copy.
    bars: Vec<u8>,
}

impl TestSource {
    pub fn new(width: usize, height: usize, motion: bool) -> TestSource {
        const COLOURS: [[u8; 4]; 8] = [
            [192, 192, 192, 255],
            [0, 192, 192, 255],
            [192, 192, 0, 255],
            [0, 192, 0, 255],
            [192, 0, 192, 255],
            [0, 0, 192, 255],
            [192, 0, 0, 255],
            [40, 40, 40, 255],
        ];
        let bar = (width / COLOURS.len()).max(1);
        let bars = (0..width * 2)
            .flat_map(|x| COLOURS[(x / bar) % COLOURS.len()])
            .collect();
        TestSource {
            width,
            height,
            motion,
            frame: 0,
            bars,
        }
    }

    fn paint(&self, frame: &mut Frame, stamp: Stamp) {
        frame.reset_bgrx(self.width, self.height);
        let (w, h, stride) = (self.width, self.height, frame.stride);
        let shift = if self.motion {
            (stamp.frame as usize * 4) % w
        } else {
            0
        };
        for y in 0..h {
            frame.data[y * stride..y * stride + w * 4]
                .copy_from_slice(&self.bars[shift * 4..(shift + w) * 4]);
        }
        // A white square bouncing across the middle: motion a person can follow.
        let side = (w.min(h) / 6).max(1);
        let span = w.saturating_sub(side).max(1);
        let t = if self.motion {
            stamp.frame as usize * 8 % (2 * span)
        } else {
            0
        };
        let x0 = if t < span { t } else { 2 * span - t };
        let y0 = (h.saturating_sub(side)) / 2;
        for y in y0..(y0 + side).min(h) {
            for x in x0..(x0 + side).min(w) {
                frame.data[y * stride + x * 4..y * stride + x * 4 + 4]
                    .copy_from_slice(&[255, 255, 255, 255]);
            }
        }
        framecode::write_bgrx(&mut frame.data, w, h, stride, stamp);
    }
}

impl Source for TestSource {
    fn describe(&self) -> String {
        format!(
            "testsrc {}x{}{}",
            self.width,
            self.height,
            if self.motion { "" } else { " (still)" }
        )
    }

    fn next(&mut self, frame: &mut Frame, _deadline: Instant) -> Result<Grab, String> {
        if !self.motion && self.frame > 0 {
            return Ok(Grab::New); // the same picture again, as a still screen gives it
        }
        self.frame = self.frame.wrapping_add(1);
        let now = now_ms();
        self.paint(frame, Stamp::new(self.frame, now));
        frame.captured_ms = now;
        Ok(Grab::New)
    }

    fn sizable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_advancing_numbers_and_the_capture_time() {
        let mut src = TestSource::new(640, 360, true);
        let mut frame = Frame::empty();
        let before = now_ms();
        for n in 1..=3 {
            src.next(&mut frame, Instant::now()).unwrap();
            let stamp = framecode::read_rgbx(&frame.data, 640, frame.stride).unwrap();
            assert_eq!(stamp.frame, n);
            assert!(stamp.age_ms(now_ms()) >= 0 && stamp.age_ms(before) <= 0);
        }
        assert_eq!((frame.width, frame.height), (640, 360));
    }

    #[test]
    fn a_still_source_gives_the_same_bytes() {
        let mut src = TestSource::new(320, 240, false);
        let mut frame = Frame::empty();
        src.next(&mut frame, Instant::now()).unwrap();
        let first = frame.data.clone();
        src.next(&mut frame, Instant::now()).unwrap();
        assert_eq!(frame.data, first);
    }
}
