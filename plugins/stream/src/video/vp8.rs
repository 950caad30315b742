//! VP8 through libvpx (Debian `libvpx-dev`), the codec every browser decodes.
//!
//! Bound with `env-libvpx-sys`, which carries bindgen output for each libvpx release
//! (Debian 12's 1.12 among them), so the build needs no libclang; the safe part is
//! this file.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_ulong};
use std::ptr;

use vpx_sys as vpx;

use super::{threads, Encoder, Packet, Target};
use crate::yuv::I420;

pub struct Vp8 {
    target: Target,
    /// The encoder and the size it was made for; made on the first picture.
    open: Option<(
        Box<vpx::vpx_codec_ctx_t>,
        vpx::vpx_codec_enc_cfg_t,
        usize,
        usize,
    )>,
}

// SAFETY: the libvpx context is used by one thread at a time (the encoder's owner).
unsafe impl Send for Vp8 {}

fn check(what: &str, err: vpx::vpx_codec_err_t) -> Result<(), String> {
    if err == vpx::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: vpx_codec_err_to_string returns a static C string for every code.
    let text = unsafe { std::ffi::CStr::from_ptr(vpx::vpx_codec_err_to_string(err)) };
    Err(format!("libvpx {what}: {}", text.to_string_lossy()))
}

impl Vp8 {
    pub fn new(target: Target) -> Vp8 {
        Vp8 { target, open: None }
    }

    fn configure(cfg: &mut vpx::vpx_codec_enc_cfg_t, target: Target) {
        cfg.g_timebase = vpx::vpx_rational { num: 1, den: 1000 };
        cfg.rc_target_bitrate = target.kbps;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        // Real-time CBR as WebRTC's own VP8 sender sets it: a short buffer, so a burst
        // of screen changes costs quality for a moment rather than latency.
        cfg.rc_buf_sz = 1000;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_dropframe_thresh = 0;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_DISABLED;
        cfg.kf_max_dist = u32::MAX >> 1;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
    }

    fn start(&mut self, w: usize, h: usize) -> Result<(), String> {
        self.open = None;
        let mut cfg = MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::zeroed();
        // SAFETY: the VP8 interface is static; the config is written whole by libvpx.
        let mut cfg = unsafe {
            check(
                "default config",
                vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0),
            )?;
            cfg.assume_init()
        };
        cfg.g_w = w as u32;
        cfg.g_h = h as u32;
        cfg.g_threads = threads(w);
        Self::configure(&mut cfg, self.target);
        let mut ctx: Box<vpx::vpx_codec_ctx_t> =
            // SAFETY: an all-zero context is what vpx_codec_enc_init_ver expects to fill.
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        // SAFETY: ctx and cfg outlive the call; the ABI version is the headers' own.
        unsafe {
            check(
                "init",
                vpx::vpx_codec_enc_init_ver(
                    &mut *ctx,
                    vpx::vpx_codec_vp8_cx(),
                    &cfg,
                    0,
                    vpx::VPX_ENCODER_ABI_VERSION as c_int,
                ),
            )?;
            // Speed -8 .. -16 is libvpx's real-time range; screens are easy to predict,
            // so a fast setting keeps 1080p inside a frame interval on 2 cores.
            let ctl = |id: vpx::vp8e_enc_control_id, v: c_int| {
                vpx::vpx_codec_control_(&mut *(ptr::addr_of!(*ctx) as *mut _), id as c_int, v)
            };
            let _ = ctl(vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED, -10);
            let _ = ctl(vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1);
            let _ = ctl(vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0);
            let _ = ctl(vpx::vp8e_enc_control_id::VP8E_SET_SCREEN_CONTENT_MODE, 1);
            let _ = ctl(vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 2);
            let _ = ctl(
                vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT,
                900,
            );
        }
        self.open = Some((ctx, cfg, w, h));
        Ok(())
    }
}

impl Encoder for Vp8 {
    fn encode(&mut self, picture: &I420, pts_ms: u64, keyframe: bool) -> Result<Packet, String> {
        let (w, h) = (picture.width, picture.height);
        let fresh = !matches!(&self.open, Some((_, _, ow, oh)) if (*ow, *oh) == (w, h));
        if fresh {
            self.start(w, h)?;
        }
        let (ctx, _, _, _) = self.open.as_mut().expect("started above");
        let mut img = MaybeUninit::<vpx::vpx_image_t>::zeroed();
        let flags: c_long = if keyframe {
            vpx::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        let duration = 1000 / self.target.fps.max(1) as c_ulong;
        let mut out = Packet {
            data: Vec::new(),
            keyframe: false,
        };
        // SAFETY: vpx_img_wrap only points the image at the picture's planes, which
        // outlive the encode call; libvpx reads them and never writes.
        unsafe {
            let img = vpx::vpx_img_wrap(
                img.as_mut_ptr(),
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                w as u32,
                h as u32,
                1,
                picture.data.as_ptr() as *mut u8,
            );
            if img.is_null() {
                return Err("libvpx refused to wrap the picture".into());
            }
            // The planes are packed: Y, then U, then V (vpx_img_wrap assumes that too,
            // set explicitly so a change in libvpx's arithmetic cannot move them).
            let y = picture.data.as_ptr() as *mut u8;
            (*img).planes[0] = y;
            (*img).planes[1] = y.add(w * h);
            (*img).planes[2] = y.add(w * h + w * h / 4);
            (*img).stride = [w as c_int, (w / 2) as c_int, (w / 2) as c_int, 0];
            check(
                "encode",
                vpx::vpx_codec_encode(
                    &mut **ctx,
                    img,
                    pts_ms as i64,
                    duration,
                    flags,
                    vpx::VPX_DL_REALTIME as c_ulong,
                ),
            )?;
            let mut iter: vpx::vpx_codec_iter_t = ptr::null();
            loop {
                let pkt = vpx::vpx_codec_get_cx_data(&mut **ctx, &mut iter);
                if pkt.is_null() {
                    break;
                }
                if (*pkt).kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    continue;
                }
                let frame = (*pkt).data.frame;
                out.data.extend_from_slice(std::slice::from_raw_parts(
                    frame.buf as *const u8,
                    frame.sz as usize,
                ));
                out.keyframe |= frame.flags & vpx::VPX_FRAME_IS_KEY != 0;
            }
        }
        Ok(out)
    }

    fn retarget(&mut self, target: Target) -> Result<(), String> {
        self.target = target;
        if let Some((ctx, cfg, _, _)) = self.open.as_mut() {
            Self::configure(cfg, target);
            // SAFETY: the context is open and cfg is the one it was opened with.
            unsafe {
                check(
                    "new bitrate",
                    vpx::vpx_codec_enc_config_set(&mut **ctx, &*cfg),
                )?
            };
        }
        Ok(())
    }
}

impl Drop for Vp8 {
    fn drop(&mut self) {
        if let Some((mut ctx, _, _, _)) = self.open.take() {
            // SAFETY: opened by vpx_codec_enc_init_ver and destroyed once.
            unsafe { vpx::vpx_codec_destroy(&mut *ctx) };
        }
    }
}
