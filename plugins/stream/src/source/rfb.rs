//! `qemu`: the VM's display through QEMU's VNC server (RFB 3.8, RFC 6143) on a Unix
//! socket (`-vnc unix:PATH`) or TCP.
//!
//! Only what a local, password-less QEMU needs: security type None, 32-bit BGRX pixels
//! (so frames go to the JPEG encoder without conversion), the Raw and CopyRect
//! encodings (on a local socket raw is cheaper than any compression), and the
//! DesktopSize pseudo-encoding, so a guest's mode change resizes the picture. Updates
//! are incremental: QEMU answers a request only when something on the screen changed,
//! so an idle screen costs nothing and is reported as [`Grab::Unchanged`].

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{now_ms, Frame, Grab, PixelFormat, Source};

const RAW: i32 = 0;
const COPY_RECT: i32 = 1;
const DESKTOP_SIZE: i32 = -223;
/// Once a message has started, the rest must come within this (QEMU writes whole
/// messages; a stall this long is a dead server).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

trait Stream: Read + Write + Send {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}
impl Stream for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}
impl Stream for TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

pub struct Rfb {
    address: String,
    stream: Box<dyn Stream>,
    name: String,
    width: usize,
    height: usize,
    /// The screen as the server last described it, BGRX.
    screen: Vec<u8>,
    /// An update request is out and not yet answered.
    requested: bool,
    /// The whole screen arrived once (later requests are incremental).
    complete: bool,
    /// The last message resized the screen: the next request asks for all of it.
    resized: bool,
}

fn err(address: &str, e: impl std::fmt::Display) -> String {
    format!("VNC {address}: {e}")
}

impl Rfb {
    /// Connects and negotiates; `address` is a Unix socket path or `HOST:PORT`.
    pub fn connect(address: &str) -> Result<Rfb, String> {
        let stream: Box<dyn Stream> = if address.starts_with('/') || address.starts_with('.') {
            Box::new(UnixStream::connect(address).map_err(|e| err(address, e))?)
        } else {
            Box::new(TcpStream::connect(address).map_err(|e| err(address, e))?)
        };
        stream
            .set_timeout(Some(MESSAGE_TIMEOUT))
            .map_err(|e| err(address, e))?;
        let mut rfb = Rfb {
            address: address.to_string(),
            stream,
            name: String::new(),
            width: 0,
            height: 0,
            screen: Vec::new(),
            requested: false,
            complete: false,
            resized: false,
        };
        rfb.handshake().map_err(|e| err(address, e))?;
        Ok(rfb)
    }

    fn handshake(&mut self) -> io::Result<()> {
        let mut version = [0u8; 12];
        self.stream.read_exact(&mut version)?;
        if !version.starts_with(b"RFB ") {
            return Err(invalid(format!(
                "not a VNC server (it greeted with {:?})",
                String::from_utf8_lossy(&version)
            )));
        }
        self.stream.write_all(b"RFB 003.008\n")?;
        let count = self.u8()?;
        if count == 0 {
            let reason = self.string()?;
            return Err(invalid(format!("the server refused: {reason}")));
        }
        let mut types = vec![0u8; count as usize];
        self.stream.read_exact(&mut types)?;
        if !types.contains(&1) {
            return Err(invalid(format!(
                "the server wants authentication (security types {types:?}); give QEMU -vnc unix:PATH without a password (the socket's file mode is the access control)"
            )));
        }
        self.stream.write_all(&[1])?;
        if self.u32()? != 0 {
            let reason = self.string().unwrap_or_default();
            return Err(invalid(format!("security handshake failed: {reason}")));
        }
        self.stream.write_all(&[1])?; // ClientInit: share the desktop with other clients
        let (w, h) = (self.u16()?, self.u16()?);
        let mut server_format = [0u8; 16];
        self.stream.read_exact(&mut server_format)?;
        self.name = self.string()?;
        self.resize(w as usize, h as usize);
        self.resized = false; // the first request is a full one anyway
                              // SetPixelFormat: 32 bpp, depth 24, little-endian true colour, red at bit 16,
                              // green at 8, blue at 0: in memory B, G, R, X.
        let mut set = vec![0u8, 0, 0, 0, 32, 24, 0, 1];
        set.extend_from_slice(&255u16.to_be_bytes());
        set.extend_from_slice(&255u16.to_be_bytes());
        set.extend_from_slice(&255u16.to_be_bytes());
        set.extend_from_slice(&[16, 8, 0, 0, 0, 0]);
        self.stream.write_all(&set)?;
        let encodings = [RAW, COPY_RECT, DESKTOP_SIZE];
        let mut set = vec![2u8, 0];
        set.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            set.extend_from_slice(&e.to_be_bytes());
        }
        self.stream.write_all(&set)
    }

    fn resize(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.screen = vec![0; width * height * 4];
        self.resized = true;
    }

    fn request(&mut self) -> io::Result<()> {
        let mut m = vec![3u8, self.complete as u8];
        for v in [0u16, 0, self.width as u16, self.height as u16] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        self.stream.write_all(&m)?;
        self.requested = true;
        Ok(())
    }

    /// Reads one server message; `true` when it was a framebuffer update.
    fn message(&mut self, kind: u8) -> io::Result<bool> {
        match kind {
            0 => {
                let _pad = self.u8()?;
                let rects = self.u16()?;
                for _ in 0..rects {
                    self.rect()?;
                }
                Ok(true)
            }
            1 => {
                // SetColourMapEntries (never sent for true colour, but skip it whole).
                let mut head = [0u8; 5];
                self.stream.read_exact(&mut head)?;
                let n = u16::from_be_bytes([head[3], head[4]]) as usize;
                self.skip(n * 6)?;
                Ok(false)
            }
            2 => Ok(false), // Bell
            3 => {
                let mut pad = [0u8; 3];
                self.stream.read_exact(&mut pad)?;
                let n = self.u32()? as usize;
                self.skip(n)?;
                Ok(false)
            }
            other => Err(invalid(format!("unknown server message type {other}"))),
        }
    }

    fn rect(&mut self) -> io::Result<()> {
        let (x, y, w, h) = (
            self.u16()? as usize,
            self.u16()? as usize,
            self.u16()? as usize,
            self.u16()? as usize,
        );
        let encoding = self.u32()? as i32;
        match encoding {
            DESKTOP_SIZE => {
                self.resize(w, h);
                Ok(())
            }
            RAW => {
                if x + w > self.width || y + h > self.height {
                    return Err(invalid(format!(
                        "a {w}x{h} rectangle at {x},{y} lies outside the {}x{} screen",
                        self.width, self.height
                    )));
                }
                let stride = self.width * 4;
                for row in y..y + h {
                    let at = row * stride + x * 4;
                    self.stream.read_exact(&mut self.screen[at..at + w * 4])?;
                }
                Ok(())
            }
            COPY_RECT => {
                let (sx, sy) = (self.u16()? as usize, self.u16()? as usize);
                if x + w > self.width
                    || y + h > self.height
                    || sx + w > self.width
                    || sy + h > self.height
                {
                    return Err(invalid("a CopyRect outside the screen".into()));
                }
                let stride = self.width * 4;
                let rows: Vec<usize> = if sy < y {
                    (0..h).rev().collect()
                } else {
                    (0..h).collect()
                };
                for r in rows {
                    let from = (sy + r) * stride + sx * 4;
                    let to = (y + r) * stride + x * 4;
                    self.screen.copy_within(from..from + w * 4, to);
                }
                Ok(())
            }
            other => Err(invalid(format!(
                "the server used encoding {other}, which was not asked for"
            ))),
        }
    }

    fn skip(&mut self, n: usize) -> io::Result<()> {
        io::copy(&mut (&mut self.stream).take(n as u64), &mut io::sink()).map(|_| ())
    }

    fn u8(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.stream.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.stream.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.stream.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn string(&mut self) -> io::Result<String> {
        let n = self.u32()? as usize;
        if n > 64 * 1024 {
            return Err(invalid(format!("a {n}-byte string")));
        }
        let mut s = vec![0u8; n];
        self.stream.read_exact(&mut s)?;
        Ok(String::from_utf8_lossy(&s).into_owned())
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Source for Rfb {
    fn describe(&self) -> String {
        format!(
            "qemu VNC {} ({:?}, {}x{})",
            self.address, self.name, self.width, self.height
        )
    }

    fn next(&mut self, frame: &mut Frame, deadline: Instant) -> Result<Grab, String> {
        let address = self.address.clone();
        let e = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                err(&address, "the server closed the connection (QEMU stopped?)")
            } else {
                err(&address, e)
            }
        };
        loop {
            if !self.requested {
                self.request().map_err(e)?;
            }
            // Wait for the first byte of a message only until the deadline: an idle
            // screen sends nothing.
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Ok(Grab::Unchanged);
            }
            self.stream.set_timeout(Some(wait)).map_err(e)?;
            let mut kind = [0u8; 1];
            match self.stream.read(&mut kind) {
                Ok(0) => return Err(e(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(x)
                    if matches!(
                        x.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Grab::Unchanged)
                }
                Err(x) if x.kind() == io::ErrorKind::Interrupted => continue,
                Err(x) => return Err(e(x)),
            }
            self.stream.set_timeout(Some(MESSAGE_TIMEOUT)).map_err(e)?;
            if self.message(kind[0]).map_err(e)? {
                self.requested = false;
                self.complete = !std::mem::take(&mut self.resized);
                // Ask for the next change now, so QEMU collects it while we encode.
                self.request().map_err(e)?;
                frame.width = self.width;
                frame.height = self.height;
                frame.stride = self.width * 4;
                frame.format = PixelFormat::Bgrx;
                frame.data.clear();
                frame.data.extend_from_slice(&self.screen);
                frame.captured_ms = now_ms();
                return Ok(Grab::New);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted server: the handshake, a 4x2 screen, one raw update, then a resize.
    #[test]
    fn negotiates_reads_raw_and_copyrect_updates_and_follows_a_resize() {
        let dir = std::env::temp_dir().join(format!("jsipd-rfb-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixListener::bind(&dir).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"RFB 003.008\n").unwrap();
            let mut v = [0u8; 12];
            s.read_exact(&mut v).unwrap();
            assert_eq!(&v, b"RFB 003.008\n");
            s.write_all(&[1, 1]).unwrap(); // one security type: None
            let mut t = [0u8; 1];
            s.read_exact(&mut t).unwrap();
            assert_eq!(t[0], 1);
            s.write_all(&0u32.to_be_bytes()).unwrap();
            s.read_exact(&mut t).unwrap(); // ClientInit
            let mut init = vec![0, 4, 0, 2];
            init.extend_from_slice(&[0; 16]);
            init.extend_from_slice(&4u32.to_be_bytes());
            init.extend_from_slice(b"test");
            s.write_all(&init).unwrap();
            let mut fmt = [0u8; 20];
            s.read_exact(&mut fmt).unwrap();
            assert_eq!(fmt[0], 0);
            assert_eq!(&fmt[4..8], &[32, 24, 0, 1]);
            let mut enc = [0u8; 4 + 12];
            s.read_exact(&mut enc).unwrap();
            assert_eq!(enc[0], 2);
            let mut req = [0u8; 10];
            s.read_exact(&mut req).unwrap();
            assert_eq!(
                (req[0], req[1]),
                (3, 0),
                "the first request is not incremental"
            );
            // One raw rectangle: the top row, pixels 1..=4.
            let mut m = vec![0u8, 0, 0, 1];
            for v in [0u16, 0, 4, 1] {
                m.extend_from_slice(&v.to_be_bytes());
            }
            m.extend_from_slice(&RAW.to_be_bytes());
            for p in 1..=4u8 {
                m.extend_from_slice(&[p, p, p, 0]);
            }
            s.write_all(&m).unwrap();
            s.read_exact(&mut req).unwrap();
            assert_eq!((req[0], req[1]), (3, 1), "then incremental");
            // A CopyRect of the top row to the bottom row.
            let mut m = vec![0u8, 0, 0, 1];
            for v in [0u16, 1, 4, 1] {
                m.extend_from_slice(&v.to_be_bytes());
            }
            m.extend_from_slice(&COPY_RECT.to_be_bytes());
            m.extend_from_slice(&0u16.to_be_bytes());
            m.extend_from_slice(&0u16.to_be_bytes());
            s.write_all(&m).unwrap();
            s.read_exact(&mut req).unwrap();
            // The guest changes mode: 8x4.
            let mut m = vec![0u8, 0, 0, 1];
            for v in [0u16, 0, 8, 4] {
                m.extend_from_slice(&v.to_be_bytes());
            }
            m.extend_from_slice(&DESKTOP_SIZE.to_be_bytes());
            s.write_all(&m).unwrap();
            s.read_exact(&mut req).unwrap();
            assert_eq!(
                u16::from_be_bytes([req[6], req[7]]),
                8,
                "the request covers the new size"
            );
            assert_eq!(req[1], 0, "after a resize, the whole screen again");
            // Then silence: the client reports Unchanged at its deadline.
            s.read_exact(&mut req).unwrap_err();
        });
        let mut rfb = Rfb::connect(dir.to_str().unwrap()).unwrap();
        let mut frame = Frame::empty();
        let soon = || Instant::now() + Duration::from_secs(5);
        assert_eq!(rfb.next(&mut frame, soon()).unwrap(), Grab::New);
        assert_eq!(
            (frame.width, frame.height, frame.format),
            (4, 2, PixelFormat::Bgrx)
        );
        assert_eq!(
            &frame.data[..16],
            &[1, 1, 1, 0, 2, 2, 2, 0, 3, 3, 3, 0, 4, 4, 4, 0]
        );
        assert_eq!(rfb.next(&mut frame, soon()).unwrap(), Grab::New);
        assert_eq!(&frame.data[16..32], &frame.data[..16].to_vec()[..]);
        assert_eq!(rfb.next(&mut frame, soon()).unwrap(), Grab::New);
        assert_eq!((frame.width, frame.height), (8, 4));
        let quiet = Instant::now() + Duration::from_millis(100);
        assert_eq!(rfb.next(&mut frame, quiet).unwrap(), Grab::Unchanged);
        assert!(rfb.describe().contains("\"test\""));
        drop(rfb);
        server.join().unwrap();
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_missing_socket_and_a_non_vnc_peer_are_named() {
        let e = Rfb::connect("/nonexistent/vnc.sock").err().unwrap();
        assert!(
            e.contains("/nonexistent/vnc.sock") && e.contains("No such file"),
            "{e}"
        );
        let path = std::env::temp_dir().join(format!("jsipd-notvnc-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"HTTP/1.1 400").unwrap();
        });
        let e = Rfb::connect(path.to_str().unwrap()).err().unwrap();
        assert!(e.contains("not a VNC server"), "{e}");
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
