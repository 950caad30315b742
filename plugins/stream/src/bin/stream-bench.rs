//! `stream-bench`: the stream plugin's figures, each against a baseline in the same run
//! (bench/stream.sh drives it).
//!
//! - `encode [FRAMES]`: the plugin's JPEG encoder against libjpeg-turbo called directly
//!   with the same settings on the same test-pattern frames, at 720p and 1080p.
//! - `video [FRAMES]`: per frame at 720p and 1080p, VP8 and H.264: the plugin's whole
//!   WebRTC path (the capture's BGRX → I420 conversion, then the encoder as the shared
//!   encoder drives it) against the codec alone on the same, already converted frames
//!   (libvpx's and OpenH264's own speed: the limit).
//! - `mjpeg ADDR PATH VIEWERS SECS`: VIEWERS MJPEG clients at once: each one's frames/s
//!   and its first frame's delay after connecting.
//! - `vnc SOCKET SECS`: frames/s read from a VNC server with the plugin's RFB client.
//! - `v4l2 DEVICE FRAMES FORMAT`: FRAMES frames from a capture device through the
//!   plugin's V4L2 source, each encoded to JPEG and decoded again (the guest test runs
//!   it against the kernel's vivid driver).
//!
//! Each prints one JSON object.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use stream::jpeg::Encoder;
use stream::source::rfb::Rfb;
use stream::source::testsrc::TestSource;
use stream::source::{Frame, Grab, Source};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, what: &str| -> String {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| die(&format!("missing {what}; see the top of stream-bench.rs")))
    };
    match args.first().map(String::as_str) {
        Some("encode") => encode(args.get(1).map_or(60, |n| n.parse().unwrap_or(60))),
        Some("video") => video(args.get(1).map_or(60, |n| n.parse().unwrap_or(60))),
        Some("mjpeg") => mjpeg(
            &arg(1, "ADDR"),
            &arg(2, "PATH"),
            arg(3, "VIEWERS")
                .parse()
                .unwrap_or_else(|_| die("VIEWERS: a number")),
            arg(4, "SECS")
                .parse()
                .unwrap_or_else(|_| die("SECS: a number")),
        ),
        Some("vnc") => vnc(&arg(1, "SOCKET"), arg(2, "SECS").parse().unwrap_or(5.0)),
        Some("v4l2") => v4l2(
            &arg(1, "DEVICE"),
            arg(2, "FRAMES").parse().unwrap_or(10),
            &arg(3, "FORMAT"),
        ),
        _ => die(
            "usage: stream-bench encode [FRAMES] | video [FRAMES] | mjpeg ADDR PATH VIEWERS SECS | vnc SOCKET SECS | v4l2 DEVICE FRAMES FORMAT",
        ),
    }
}

fn die(why: &str) -> ! {
    eprintln!("stream-bench: {why}");
    std::process::exit(2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` moving test-pattern frames, as the capture gets them from testsrc.
fn test_frames(w: usize, h: usize, n: usize) -> Vec<Frame> {
    let mut src = TestSource::new(w, h, true);
    (0..n)
        .map(|_| {
            let mut f = Frame::empty();
            src.next(&mut f, Instant::now()).unwrap();
            f
        })
        .collect()
}

fn encode(frames: usize) {
    let mut rows = Vec::new();
    for (w, h) in [(1280, 720), (1920, 1080)] {
        let pictures = test_frames(w, h, frames);
        let mut ours = Encoder::new(80).unwrap();
        let mut limit = turbojpeg::Compressor::new().unwrap();
        limit.set_quality(80).unwrap();
        limit.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
        let (mut ours_us, mut limit_us, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        // Rounds alternate, so a noisy neighbour hits both sides alike.
        for _ in 0..5 {
            let t = Instant::now();
            for f in &pictures {
                let image = turbojpeg::Image {
                    pixels: &f.data[..],
                    width: f.width,
                    pitch: f.stride,
                    height: f.height,
                    format: turbojpeg::PixelFormat::BGRX,
                };
                bytes = limit.compress_to_vec(image).unwrap().len();
            }
            limit_us.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
            let t = Instant::now();
            for f in &pictures {
                ours.encode(f).unwrap();
            }
            ours_us.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
        }
        let (o, l) = (median(ours_us), median(limit_us));
        rows.push(format!(
            r#"{{"size":"{w}x{h}","plugin_us":{o:.0},"turbojpeg_us":{l:.0},"ratio":{:.3},"jpeg_bytes":{bytes}}}"#,
            o / l
        ));
    }
    println!("[{}]", rows.join(","));
}

fn video(frames: usize) {
    use stream::video::{self, Codec, Target};
    use stream::yuv::I420;
    let mut rows = Vec::new();
    for (w, h) in [(1280, 720), (1920, 1080)] {
        let pictures = test_frames(w, h, frames);
        let converted: Vec<I420> = pictures
            .iter()
            .map(|f| {
                let mut p = I420::default();
                p.convert(f).unwrap();
                p
            })
            .collect();
        for codec in [Codec::Vp8, Codec::H264] {
            let target = Target {
                kbps: 4000,
                fps: 30,
            };
            let mut ours = video::open(codec, target).unwrap();
            let mut limit = video::open(codec, target).unwrap();
            let (mut ours_us, mut limit_us, mut convert_us, mut bytes) =
                (Vec::new(), Vec::new(), Vec::new(), 0usize);
            let mut pts = 0u64;
            for round in 0..5 {
                let t = Instant::now();
                for p in &converted {
                    pts += 33;
                    bytes += limit
                        .encode(p, pts, round == 0 && pts == 33)
                        .unwrap()
                        .data
                        .len();
                }
                limit_us.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
                let t = Instant::now();
                let mut conv = 0.0;
                for f in &pictures {
                    let c = Instant::now();
                    let mut p = I420::default();
                    p.convert(f).unwrap();
                    conv += c.elapsed().as_secs_f64();
                    ours.encode(&p, pts, false).unwrap();
                }
                ours_us.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
                convert_us.push(conv * 1e6 / frames as f64);
            }
            let (o, l) = (median(ours_us), median(limit_us));
            rows.push(format!(
                r#"{{"codec":"{}","size":"{w}x{h}","plugin_us":{o:.0},"codec_alone_us":{l:.0},"convert_us":{:.0},"ratio":{:.3},"kbps_at_30fps":{:.0}}}"#,
                codec.name(),
                median(convert_us),
                o / l,
                bytes as f64 * 8.0 / 1000.0 / (5.0 * frames as f64 / 30.0)
            ));
        }
    }
    println!("[{}]", rows.join(","));
}

/// One MJPEG viewer: (first frame delay ms, frames/s after it).
fn viewer(addr: &str, path: &str, secs: f64) -> (f64, f64) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("{addr}: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
    }
    // Count JPEG ends (FF D9) in the decoded chunked body: one a frame.
    let mut frames = 0u32;
    let mut first_ms = 0.0;
    let mut counting_since = started;
    let mut prev = 0u8;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).unwrap_or(0) == 0 {
            break;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut left = n + 2;
        while left > 0 {
            let take = left.min(buf.len());
            r.read_exact(&mut buf[..take]).unwrap();
            let data = &buf[..take.min(left.saturating_sub(2).min(take))];
            for &b in data {
                if prev == 0xff && b == 0xd9 {
                    if frames == 0 && first_ms == 0.0 {
                        first_ms = started.elapsed().as_secs_f64() * 1e3;
                        counting_since = Instant::now();
                    } else {
                        frames += 1;
                    }
                }
                prev = b;
            }
            left -= take;
        }
        if counting_since.elapsed().as_secs_f64() >= secs && first_ms > 0.0 {
            break;
        }
    }
    (
        first_ms,
        frames as f64 / counting_since.elapsed().as_secs_f64(),
    )
}

fn mjpeg(addr: &str, path: &str, viewers: usize, secs: f64) {
    let handles: Vec<_> = (0..viewers)
        .map(|_| {
            let (addr, path) = (addr.to_string(), path.to_string());
            std::thread::spawn(move || viewer(&addr, &path, secs))
        })
        .collect();
    let results: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let fps: Vec<f64> = results.iter().map(|r| r.1).collect();
    let first: Vec<f64> = results.iter().map(|r| r.0).collect();
    let min = fps.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        r#"{{"viewers":{viewers},"fps_min":{min:.1},"fps_mean":{:.1},"first_frame_ms_median":{:.1}}}"#,
        fps.iter().sum::<f64>() / fps.len() as f64,
        median(first)
    );
}

fn vnc(socket: &str, secs: f64) {
    let mut rfb = Rfb::connect(socket).unwrap_or_else(|e| die(&e));
    let mut frame = Frame::empty();
    let started = Instant::now();
    let (mut new, mut unchanged) = (0u32, 0u32);
    while started.elapsed().as_secs_f64() < secs {
        match rfb.next(&mut frame, Instant::now() + Duration::from_millis(100)) {
            Ok(Grab::New) => new += 1,
            Ok(Grab::Unchanged) => unchanged += 1,
            Err(e) => die(&e),
        }
    }
    println!(
        r#"{{"vnc_fps":{:.1},"size":"{}x{}","idle_waits":{unchanged}}}"#,
        new as f64 / started.elapsed().as_secs_f64(),
        frame.width,
        frame.height
    );
}

fn v4l2(device: &str, frames: usize, format: &str) {
    use stream::source::v4l2::{V4l2, Want};
    let want = Want::parse(format).unwrap_or_else(|| die("FORMAT: auto, mjpeg, yuyv or nv12"));
    let mut dev = V4l2::open(device, 640, 480, want).unwrap_or_else(|e| die(&e));
    let mut encoder = Encoder::new(80).unwrap();
    let mut frame = Frame::empty();
    let (mut got, mut distinct, mut last) = (0, 0, Vec::new());
    let mut size = (0, 0);
    let started = Instant::now();
    while got < frames {
        if started.elapsed() > Duration::from_secs(30) {
            die(&format!("{got} frames in 30 s from {}", dev.describe()));
        }
        match dev.next(&mut frame, Instant::now() + Duration::from_secs(1)) {
            Ok(Grab::New) => {}
            Ok(Grab::Unchanged) => continue,
            Err(e) => die(&e),
        }
        got += 1;
        if frame.data != last {
            distinct += 1;
            last = frame.data.clone();
        }
        let jpeg = encoder.encode(&frame).unwrap_or_else(|e| die(&e));
        let (w, h, _) = stream::jpeg::decode_bgrx(&jpeg).unwrap_or_else(|e| die(&e));
        size = (w, h);
    }
    println!(
        r#"{{"v4l2":"{}","format":"{}","frames":{got},"distinct":{distinct},"decoded":"{}x{}"}}"#,
        dev.describe(),
        frame.format.name(),
        size.0,
        size.1
    );
}
