//! H.264 through Cisco's OpenH264, for browsers that prefer it (hardware decoding on
//! phones and small laptops).
//!
//! The `openh264` crate builds OpenH264 2.x from its own sources (a C++ compiler at
//! build time, nothing at run time); Debian 12's libopenh264 is an older ABI than any
//! maintained binding. Constrained Baseline, which every browser decodes; one slice
//! per frame, so a frame's NAL units leave together.

use openh264::encoder::{
    BitRate, Complexity, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};

use super::{threads, Encoder, Packet, Target};
use crate::yuv::I420;

pub struct H264 {
    target: Target,
    open: Option<(openh264::encoder::Encoder, usize, usize)>,
}

impl H264 {
    pub fn new(target: Target) -> H264 {
        H264 { target, open: None }
    }

    fn start(&mut self, w: usize, h: usize) -> Result<(), String> {
        self.open = None;
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(self.target.kbps * 1000))
            .max_frame_rate(FrameRate::from_hz(self.target.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::ScreenContentRealTime)
            .complexity(Complexity::Low)
            // OpenH264 controls its bitrate only by skipping frames; a skipped frame
            // is an empty packet, and a keyframe asked for is asked again (hub).
            .skip_frames(true)
            .adaptive_quantization(false)
            .background_detection(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .intra_frame_period(IntraFramePeriod::auto())
            .num_threads(threads(w) as u16);
        let encoder =
            openh264::encoder::Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| format!("OpenH264: {e}"))?;
        self.open = Some((encoder, w, h));
        Ok(())
    }
}

impl Encoder for H264 {
    fn encode(&mut self, picture: &I420, pts_ms: u64, keyframe: bool) -> Result<Packet, String> {
        let (w, h) = (picture.width, picture.height);
        let fresh = !matches!(&self.open, Some((_, ow, oh)) if (*ow, *oh) == (w, h));
        if fresh {
            self.start(w, h)?;
        }
        let (encoder, _, _) = self.open.as_mut().expect("started above");
        if keyframe && !fresh {
            encoder.force_intra_frame();
        }
        let slices = YUVSlices::new(
            (picture.y(), picture.u(), picture.v()),
            (w, h),
            (w, w / 2, w / 2),
        );
        let stream = encoder
            .encode_at(&slices, Timestamp::from_millis(pts_ms))
            .map_err(|e| format!("OpenH264: {e}"))?;
        Ok(Packet {
            keyframe: matches!(stream.frame_type(), FrameType::IDR | FrameType::I),
            data: stream.to_vec(),
        })
    }

    fn retarget(&mut self, target: Target) -> Result<(), String> {
        self.target = target;
        if let Some((encoder, _, _)) = self.open.as_mut() {
            let mut bitrate = openh264_sys2::SBitrateInfo {
                iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
                iBitrate: (target.kbps * 1000) as i32,
            };
            let mut fps = target.fps as f32;
            // SAFETY: both options take the pointed-to types, which live for the call.
            unsafe {
                let api = encoder.raw_api();
                let a = api.set_option(
                    openh264_sys2::ENCODER_OPTION_BITRATE,
                    std::ptr::addr_of_mut!(bitrate).cast(),
                );
                let b = api.set_option(
                    openh264_sys2::ENCODER_OPTION_FRAME_RATE,
                    std::ptr::addr_of_mut!(fps).cast(),
                );
                if a != 0 || b != 0 {
                    return Err(format!(
                        "OpenH264 refused bitrate {} kbps / {} fps",
                        target.kbps, target.fps
                    ));
                }
            }
        }
        Ok(())
    }
}
