//! One JPEG per captured frame, with libjpeg-turbo, shared by every MJPEG viewer.

use turbojpeg::{Compressor, Image, PixelFormat as TjFormat, Subsamp, YuvPlanesImage};

use crate::source::{Frame, PixelFormat};

pub struct Encoder {
    compressor: Compressor,
    quality: i32,
    /// Planar copies of packed YUV input, kept between frames.
    planes: [Vec<u8>; 3],
}

impl Encoder {
    pub fn new(quality: u8) -> Result<Encoder, String> {
        let mut compressor = Compressor::new().map_err(|e| format!("libjpeg-turbo: {e}"))?;
        compressor
            .set_subsamp(Subsamp::Sub2x2)
            .map_err(|e| format!("libjpeg-turbo: {e}"))?;
        let mut e = Encoder {
            compressor,
            quality: 0,
            planes: Default::default(),
        };
        e.set_quality(quality)?;
        Ok(e)
    }

    pub fn set_quality(&mut self, quality: u8) -> Result<(), String> {
        if self.quality != quality as i32 {
            self.compressor
                .set_quality(quality as i32)
                .map_err(|e| format!("libjpeg-turbo: {e}"))?;
            self.quality = quality as i32;
        }
        Ok(())
    }

    /// The frame as a JPEG (a JPEG frame is returned as it is).
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, String> {
        let (w, h) = (frame.width, frame.height);
        let fail = |e: turbojpeg::Error| {
            format!(
                "JPEG encode of a {w}x{h} {} frame: {e}",
                frame.format.name()
            )
        };
        match frame.format {
            PixelFormat::Jpeg => Ok(frame.data.clone()),
            PixelFormat::Bgrx => {
                if frame.data.len() < frame.stride * h {
                    return Err(format!(
                        "a {w}x{h} BGRX frame of {} bytes",
                        frame.data.len()
                    ));
                }
                self.compressor
                    .compress_to_vec(Image {
                        pixels: &frame.data[..frame.stride * h],
                        width: w,
                        pitch: frame.stride,
                        height: h,
                        format: TjFormat::BGRX,
                    })
                    .map_err(fail)
            }
            PixelFormat::Yuyv => {
                let [y, u, v] = &mut self.planes;
                yuyv_to_planar(&frame.data, w, h, frame.stride, y, u, v)?;
                let subsamp = Subsamp::Sub2x1;
                let out = self
                    .compressor
                    .compress_yuv_planes_to_vec(&YuvPlanesImage {
                        y_plane: &y[..],
                        u_plane: &u[..],
                        v_plane: &v[..],
                        width: w,
                        height: h,
                        y_stride: w,
                        u_stride: w.div_ceil(2),
                        v_stride: w.div_ceil(2),
                        subsamp,
                    })
                    .map_err(fail);
                self.compressor.set_subsamp(Subsamp::Sub2x2).map_err(fail)?;
                out
            }
            PixelFormat::Nv12 => {
                let [_, u, v] = &mut self.planes;
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                let y_len = frame.stride * h;
                if frame.data.len() < y_len + frame.stride * ch {
                    return Err(format!(
                        "a {w}x{h} NV12 frame of {} bytes",
                        frame.data.len()
                    ));
                }
                u.resize(cw * ch, 0);
                v.resize(cw * ch, 0);
                for row in 0..ch {
                    let uv = &frame.data[y_len + row * frame.stride..][..cw * 2];
                    for x in 0..cw {
                        u[row * cw + x] = uv[2 * x];
                        v[row * cw + x] = uv[2 * x + 1];
                    }
                }
                self.compressor
                    .compress_yuv_planes_to_vec(&YuvPlanesImage {
                        y_plane: &frame.data[..y_len],
                        u_plane: &u[..],
                        v_plane: &v[..],
                        width: w,
                        height: h,
                        y_stride: frame.stride,
                        u_stride: cw,
                        v_stride: cw,
                        subsamp: Subsamp::Sub2x2,
                    })
                    .map_err(fail)
            }
        }
    }
}

/// Packed Y0 U Y1 V rows into Y, U and V planes (4:2:2).
fn yuyv_to_planar(
    data: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    y: &mut Vec<u8>,
    u: &mut Vec<u8>,
    v: &mut Vec<u8>,
) -> Result<(), String> {
    let cw = w.div_ceil(2);
    if data.len() < stride * h || stride < cw * 4 {
        return Err(format!(
            "a {w}x{h} YUYV frame of {} bytes, {stride} a row",
            data.len()
        ));
    }
    y.resize(w * h, 0);
    u.resize(cw * h, 0);
    v.resize(cw * h, 0);
    for row in 0..h {
        let src = &data[row * stride..][..cw * 4];
        for x in 0..cw {
            let p = &src[x * 4..x * 4 + 4];
            y[row * w + 2 * x] = p[0];
            if 2 * x + 1 < w {
                y[row * w + 2 * x + 1] = p[2];
            }
            u[row * cw + x] = p[1];
            v[row * cw + x] = p[3];
        }
    }
    Ok(())
}

/// Decodes a JPEG into BGRX (for tests and the benchmark's checks).
pub fn decode_bgrx(jpeg: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let image = turbojpeg::decompress(jpeg, TjFormat::BGRX).map_err(|e| e.to_string())?;
    Ok((image.width, image.height, image.pixels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framecode::{self, Stamp};

    #[test]
    fn every_input_format_encodes_to_a_jpeg_that_decodes_to_the_picture() {
        let (w, h) = (320, 240);
        let mut enc = Encoder::new(85).unwrap();
        // BGRX with a stamp: read back after the lossy round trip.
        let mut bgrx = Frame::empty();
        bgrx.reset_bgrx(w, h);
        framecode::write_bgrx(&mut bgrx.data, w, h, w * 4, Stamp::new(42, 123_456));
        let jpeg = enc.encode(&bgrx).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        let (dw, dh, px) = decode_bgrx(&jpeg).unwrap();
        assert_eq!((dw, dh), (w, h));
        assert_eq!(
            framecode::read_rgbx(&px, w, w * 4),
            Some(Stamp::new(42, 123_456))
        );

        // YUYV and NV12 of a mid-grey picture decode to grey.
        let yuyv = Frame {
            width: w,
            height: h,
            stride: w * 2,
            format: PixelFormat::Yuyv,
            data: [128u8, 128, 128, 128].repeat(w * h / 2),
            captured_ms: 0,
        };
        let nv12 = Frame {
            width: w,
            height: h,
            stride: w,
            format: PixelFormat::Nv12,
            data: vec![128u8; w * h * 3 / 2],
            captured_ms: 0,
        };
        for frame in [yuyv, nv12] {
            let (_, _, px) = decode_bgrx(&enc.encode(&frame).unwrap()).unwrap();
            let mid = &px[(h / 2 * w + w / 2) * 4..][..3];
            assert!(
                mid.iter().all(|c| (120..=136).contains(c)),
                "{:?}: {mid:?}",
                frame.format
            );
        }
        // A short buffer is refused, not read past.
        let short = Frame {
            data: vec![0; 10],
            ..bgrx
        };
        assert!(enc
            .encode(&short)
            .unwrap_err()
            .contains("320x240 BGRX frame of 10 bytes"));
    }
}
