//! `v4l2`: a capture device (a USB HDMI grabber at `/dev/video0`), through the kernel's
//! V4L2 ioctls with memory-mapped buffers.
//!
//! Formats, in the order `format = auto` tries them: MJPEG (a grabber's JPEGs go to
//! MJPEG viewers untouched, no encode at all), YUYV, NV12. The ioctls and structs are
//! declared here (64-bit Linux layouts, checked by size in the tests) rather than
//! through a bindings crate, because those generate them with bindgen and libclang at
//! build time for the dozen definitions used.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use super::{now_ms, Frame, Grab, PixelFormat, Source};

const fn fourcc(code: &[u8; 4]) -> u32 {
    code[0] as u32 | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}
const PIX_MJPEG: u32 = fourcc(b"MJPG");
const PIX_YUYV: u32 = fourcc(b"YUYV");
const PIX_NV12: u32 = fourcc(b"NV12");

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const CAP_VIDEO_CAPTURE: u32 = 0x1;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const FIELD_NONE: u32 = 1;
const BUFFERS: u32 = 4;

#[repr(C)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    private: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

#[repr(C)]
struct Format {
    kind: u32,
    // The kernel's union holds pointers, so it starts 8-aligned.
    _pad: u32,
    pix: PixFormat,
    _rest: [u8; 200 - std::mem::size_of::<PixFormat>()],
}

#[repr(C)]
struct RequestBuffers {
    count: u32,
    kind: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Buffer {
    index: u32,
    kind: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: [u32; 4],
    sequence: u32,
    memory: u32,
    offset: u64, // union m: the mmap offset for MEMORY_MMAP
    length: u32,
    reserved2: u32,
    request_fd: u32,
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | (b'V' as u64) << 8 | nr
}
const W: u64 = 1;
const R: u64 = 2;
const QUERYCAP: u64 = ioc(R, 0, std::mem::size_of::<Capability>());
const S_FMT: u64 = ioc(R | W, 5, std::mem::size_of::<Format>());
const REQBUFS: u64 = ioc(R | W, 8, std::mem::size_of::<RequestBuffers>());
const QUERYBUF: u64 = ioc(R | W, 9, std::mem::size_of::<Buffer>());
const QBUF: u64 = ioc(R | W, 15, std::mem::size_of::<Buffer>());
const DQBUF: u64 = ioc(R | W, 17, std::mem::size_of::<Buffer>());
const STREAMON: u64 = ioc(W, 18, std::mem::size_of::<libc::c_int>());
const STREAMOFF: u64 = ioc(W, 19, std::mem::size_of::<libc::c_int>());

/// Which pixel formats to ask the device for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Auto,
    Mjpeg,
    Yuyv,
    Nv12,
}

impl Want {
    pub fn parse(s: &str) -> Option<Want> {
        Some(match s {
            "auto" => Want::Auto,
            "mjpeg" => Want::Mjpeg,
            "yuyv" => Want::Yuyv,
            "nv12" => Want::Nv12,
            _ => return None,
        })
    }

    fn candidates(self) -> &'static [u32] {
        match self {
            Want::Auto => &[PIX_MJPEG, PIX_YUYV, PIX_NV12],
            Want::Mjpeg => &[PIX_MJPEG],
            Want::Yuyv => &[PIX_YUYV],
            Want::Nv12 => &[PIX_NV12],
        }
    }
}

pub struct V4l2 {
    path: String,
    card: String,
    fd: OwnedFd,
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
    maps: Vec<(*mut libc::c_void, usize)>,
}

// SAFETY: the mappings belong to this value alone; it is used by one thread at a time.
unsafe impl Send for V4l2 {}

fn xioctl<T>(fd: &OwnedFd, request: u64, arg: &mut T) -> std::io::Result<()> {
    loop {
        // SAFETY: `arg` is the struct this request's size was computed from.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl V4l2 {
    /// Opens `path`, sets the first of `want`'s formats the device takes (at
    /// `width`x`height`, or the nearest it offers), and starts streaming.
    pub fn open(path: &str, width: u32, height: u32, want: Want) -> Result<V4l2, String> {
        let c = CString::new(path).map_err(|_| format!("{path}: a NUL in the path"))?;
        // SAFETY: a NUL-terminated path.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(format!("{path}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain data; zero is a valid bit pattern.
        let mut cap: Capability = unsafe { std::mem::zeroed() };
        xioctl(&fd, QUERYCAP, &mut cap)
            .map_err(|e| format!("{path}: not a V4L2 device (VIDIOC_QUERYCAP: {e})"))?;
        let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        let card = text(&cap.card);
        if caps & CAP_VIDEO_CAPTURE == 0 || caps & CAP_STREAMING == 0 {
            return Err(format!(
                "{path} ({card}) is not a streaming video capture device (capabilities {caps:#x})"
            ));
        }
        let mut chosen = None;
        let mut refused = Vec::new();
        for &pixelformat in want.candidates() {
            // SAFETY: as above.
            let mut f: Format = unsafe { std::mem::zeroed() };
            f.kind = BUF_TYPE_VIDEO_CAPTURE;
            f.pix.width = width;
            f.pix.height = height;
            f.pix.pixelformat = pixelformat;
            f.pix.field = FIELD_NONE;
            match xioctl(&fd, S_FMT, &mut f) {
                Ok(()) if f.pix.pixelformat == pixelformat => {
                    chosen = Some(f.pix);
                    break;
                }
                Ok(()) => {
                    refused.push(String::from_utf8_lossy(&pixelformat.to_le_bytes()).into_owned())
                }
                Err(e) => return Err(format!("{path} ({card}): VIDIOC_S_FMT: {e}")),
            }
        }
        let pix = chosen.ok_or_else(|| {
            format!(
                "{path} ({card}) offers none of {} (set [v4l2] format)",
                refused.join(", ")
            )
        })?;
        let format = match pix.pixelformat {
            PIX_MJPEG => PixelFormat::Jpeg,
            PIX_YUYV => PixelFormat::Yuyv,
            _ => PixelFormat::Nv12,
        };
        let mut req = RequestBuffers {
            count: BUFFERS,
            kind: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            capabilities: 0,
            flags: 0,
            reserved: [0; 3],
        };
        xioctl(&fd, REQBUFS, &mut req).map_err(|e| format!("{path}: VIDIOC_REQBUFS: {e}"))?;
        let mut dev = V4l2 {
            path: path.to_string(),
            card,
            fd,
            format,
            width: pix.width as usize,
            height: pix.height as usize,
            stride: pix.bytesperline as usize,
            maps: Vec::new(),
        };
        for index in 0..req.count {
            let mut buf = dev.buffer(index);
            xioctl(&dev.fd, QUERYBUF, &mut buf)
                .map_err(|e| format!("{path}: VIDIOC_QUERYBUF: {e}"))?;
            // SAFETY: the kernel's offset and length for this buffer, shared and read-only.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    buf.length as usize,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    dev.fd.as_raw_fd(),
                    buf.offset as libc::off_t,
                )
            };
            if map == libc::MAP_FAILED {
                return Err(format!("{path}: mmap: {}", std::io::Error::last_os_error()));
            }
            dev.maps.push((map, buf.length as usize));
            xioctl(&dev.fd, QBUF, &mut buf).map_err(|e| format!("{path}: VIDIOC_QBUF: {e}"))?;
        }
        let mut kind = BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        xioctl(&dev.fd, STREAMON, &mut kind)
            .map_err(|e| format!("{path}: VIDIOC_STREAMON: {e}"))?;
        Ok(dev)
    }

    fn buffer(&self, index: u32) -> Buffer {
        // SAFETY: plain data; zero is a valid bit pattern.
        let mut b: Buffer = unsafe { std::mem::zeroed() };
        b.index = index;
        b.kind = BUF_TYPE_VIDEO_CAPTURE;
        b.memory = MEMORY_MMAP;
        b
    }
}

impl Source for V4l2 {
    fn describe(&self) -> String {
        format!(
            "v4l2 {} ({}, {} {}x{})",
            self.path,
            self.card,
            self.format.name(),
            self.width,
            self.height
        )
    }

    fn next(&mut self, frame: &mut Frame, deadline: Instant) -> Result<Grab, String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, wait.as_millis().min(i32::MAX as u128) as i32) };
        if n == 0 {
            return Ok(Grab::Unchanged);
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(Grab::Unchanged)
            } else {
                Err(format!("{}: poll: {e}", self.path))
            };
        }
        if poll.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return Err(format!("{}: the device went away (unplugged?)", self.path));
        }
        let mut buf = self.buffer(0);
        xioctl(&self.fd, DQBUF, &mut buf)
            .map_err(|e| format!("{}: VIDIOC_DQBUF: {e}", self.path))?;
        let (map, len) = self.maps[buf.index as usize];
        // SAFETY: the kernel filled `bytesused` bytes of this mapping and gave it to us
        // until we queue it again.
        let bytes = unsafe {
            std::slice::from_raw_parts(map as *const u8, (buf.bytesused as usize).min(len))
        };
        frame.width = self.width;
        frame.height = self.height;
        frame.stride = self.stride;
        frame.format = self.format;
        frame.data.clear();
        frame.data.extend_from_slice(bytes);
        frame.captured_ms = now_ms();
        xioctl(&self.fd, QBUF, &mut buf).map_err(|e| format!("{}: VIDIOC_QBUF: {e}", self.path))?;
        Ok(Grab::New)
    }
}

impl Drop for V4l2 {
    fn drop(&mut self) {
        let mut kind = BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        let _ = xioctl(&self.fd, STREAMOFF, &mut kind);
        for (map, len) in self.maps.drain(..) {
            // SAFETY: our own mappings, unmapped once.
            unsafe { libc::munmap(map, len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<Capability>(), 104);
        assert_eq!(std::mem::size_of::<Format>(), 208);
        assert_eq!(std::mem::size_of::<RequestBuffers>(), 20);
        assert_eq!(std::mem::size_of::<Buffer>(), 88);
        // The numbers videodev2.h gives on x86_64.
        assert_eq!(QUERYCAP, 0x8068_5600);
        assert_eq!(S_FMT, 0xc0d0_5605);
        assert_eq!(DQBUF, 0xc058_5611);
        assert_eq!(STREAMON, 0x4004_5612);
    }

    #[test]
    fn errors_name_the_device_and_what_is_wrong() {
        let e = V4l2::open("/nonexistent/video0", 1920, 1080, Want::Auto)
            .err()
            .unwrap();
        assert!(e.starts_with("/nonexistent/video0: No such file"), "{e}");
        let e = V4l2::open("/dev/null", 1920, 1080, Want::Auto)
            .err()
            .unwrap();
        assert!(
            e.contains("/dev/null: not a V4L2 device (VIDIOC_QUERYCAP"),
            "{e}"
        );
    }
}
