//! Video encoders for WebRTC: VP8 through libvpx and H.264 through OpenH264, behind one
//! trait so the shared encoder ([`crate::peer::hub`]) does not care which it drives.
//!
//! Both are set up the way a remote console wants them, as PiKVM and every
//! low-latency sender do: real-time speed, constant bitrate, no look-ahead (a frame
//! leaves the encoder as soon as it went in), and no periodic keyframes: the first
//! frame is one, and after that only when a viewer asks (a PLI or FIR, or a viewer
//! joining). A keyframe of a 1080p desktop is ten times a delta frame, and one every
//! few seconds is what makes other KVMs' pictures stutter.

pub mod h264;
pub mod vp8;

use crate::yuv::I420;

/// A codec a browser can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Vp8,
    H264,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::H264 => "H264",
        }
    }
}

/// What the encoder is asked for; changed at run time by `POST /stream/v1/settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub kbps: u32,
    pub fps: u32,
}

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct Packet {
    /// VP8: one frame; H.264: Annex B NAL units (start codes included).
    pub data: Vec<u8>,
    pub keyframe: bool,
}

pub trait Encoder: Send {
    /// Encodes one picture. `keyframe` forces an intra frame. A picture of another size
    /// than the last one restarts the encoder (and so makes a keyframe).
    fn encode(&mut self, picture: &I420, pts_ms: u64, keyframe: bool) -> Result<Packet, String>;
    /// A new bitrate or frame rate, from the next frame on.
    fn retarget(&mut self, target: Target) -> Result<(), String>;
}

/// A new encoder for `codec`, sized on its first picture.
pub fn open(codec: Codec, target: Target) -> Result<Box<dyn Encoder>, String> {
    Ok(match codec {
        Codec::Vp8 => Box::new(vp8::Vp8::new(target)),
        Codec::H264 => Box::new(h264::H264::new(target)),
    })
}

/// Threads an encoder may use: the capture, the network and the other viewers' codec
/// need the rest of a small box.
pub(crate) fn threads(width: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if width >= 1280 {
        cores.clamp(1, 4)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framecode::{self, Stamp};
    use crate::source::Frame;

    /// A testsrc-like picture: grey with the frame stamp bar.
    pub(crate) fn picture(w: usize, h: usize, n: u32) -> I420 {
        let mut f = Frame::empty();
        f.reset_bgrx(w, h);
        for (i, p) in f.data.chunks_mut(4).enumerate() {
            let v = ((i % w + n as usize * 8) % 256) as u8;
            p[0] = v;
            p[1] = 128;
            p[2] = 255 - v;
        }
        framecode::write_bgrx(&mut f.data, w, h, w * 4, Stamp::new(n, 1000 + n as u64));
        let mut p = I420::default();
        p.convert(&f).unwrap();
        p
    }

    /// Both codecs: the first frame is a keyframe, then deltas until one is asked for,
    /// whatever the picture does.
    #[test]
    fn keyframes_only_at_start_and_when_asked() {
        for codec in [Codec::Vp8, Codec::H264] {
            let mut e = open(
                codec,
                Target {
                    kbps: 2000,
                    fps: 30,
                },
            )
            .unwrap();
            let mut kinds = Vec::new();
            for n in 0..40u32 {
                let p = e
                    .encode(&picture(320, 240, n), n as u64 * 33, n == 30)
                    .unwrap();
                assert!(!p.data.is_empty(), "{codec:?} frame {n} is empty");
                kinds.push(p.keyframe);
            }
            let keys: Vec<usize> = (0..40).filter(|&i| kinds[i]).collect();
            assert_eq!(keys, vec![0, 30], "{codec:?}: keyframes at {keys:?}");
        }
    }

    #[test]
    fn a_new_size_restarts_with_a_keyframe() {
        for codec in [Codec::Vp8, Codec::H264] {
            let mut e = open(
                codec,
                Target {
                    kbps: 1000,
                    fps: 30,
                },
            )
            .unwrap();
            assert!(e.encode(&picture(320, 240, 0), 0, false).unwrap().keyframe);
            assert!(!e.encode(&picture(320, 240, 1), 33, false).unwrap().keyframe);
            assert!(
                e.encode(&picture(640, 480, 2), 66, false).unwrap().keyframe,
                "{codec:?}"
            );
            e.retarget(Target { kbps: 500, fps: 15 }).unwrap();
            assert!(!e
                .encode(&picture(640, 480, 3), 99, false)
                .unwrap()
                .data
                .is_empty());
        }
    }
}
