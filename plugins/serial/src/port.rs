//! Where the target's serial console is: behind [`open`], a tty device (a USB serial
//! adapter or a UART, with its baud rate and framing), QEMU's serial chardev on a Unix
//! socket, or a command run on a new pty. Each gives one descriptor, read and written
//! with [`Fd`]'s timeouts, so a gone backend never blocks the plugin.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// A tty device or pty path; `framing` like "8N1".
    Tty {
        path: String,
        baud: u32,
        framing: String,
    },
    /// QEMU's `-chardev socket,path=…,server=on,wait=off -serial chardev:…`.
    Qemu { socket: String },
    /// A command on a new pty (`sh -l`), started again when it exits.
    Command { argv: Vec<String> },
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Tty {
                path,
                baud,
                framing,
            } => format!("tty {path} {baud} {framing}"),
            Backend::Qemu { socket } => format!("qemu {socket}"),
            Backend::Command { argv } => format!("command {}", argv.join(" ")),
        }
    }
}

/// An open backend: its descriptor, and the command behind it if any.
pub struct Port {
    pub fd: Fd,
    child: Option<Child>,
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn open(backend: &Backend) -> Result<Port, String> {
    match backend {
        Backend::Qemu { socket } => {
            let s = UnixStream::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
            s.set_nonblocking(true)
                .map_err(|e| format!("{socket}: {e}"))?;
            Ok(Port {
                fd: Fd(OwnedFd::from(s)),
                child: None,
            })
        }
        Backend::Tty {
            path,
            baud,
            framing,
        } => {
            let fd = open_path(path)?;
            // SAFETY: a valid descriptor.
            if unsafe { libc::isatty(fd.as_raw_fd()) } == 1 {
                set_raw(&fd, *baud, framing).map_err(|e| format!("{path}: {e}"))?;
            }
            Ok(Port {
                fd: Fd(fd),
                child: None,
            })
        }
        Backend::Command { argv } => spawn_on_pty(argv),
    }
}

fn open_path(path: &str) -> Result<OwnedFd, String> {
    let c = CString::new(path).map_err(|_| format!("{path}: a NUL in the path"))?;
    // SAFETY: a NUL-terminated path.
    let raw = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(format!("{path}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        1500000 => libc::B1500000,
        _ => return None,
    })
}

/// Raw mode at `baud` with `framing` ("8N1", "7E1", "8O2"): bytes pass unchanged.
fn set_raw(fd: &OwnedFd, baud: u32, framing: &str) -> Result<(), String> {
    let f = framing.as_bytes();
    if f.len() != 3 {
        return Err(format!(
            "framing {framing:?}: like 8N1 (data bits, N/E/O, stop bits)"
        ));
    }
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } != 0 {
        return Err(format!("tcgetattr: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: on a termios we own.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cflag &= !(libc::CSIZE | libc::PARENB | libc::PARODD | libc::CSTOPB | libc::CRTSCTS);
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    t.c_cflag |= match f[0] {
        b'5' => libc::CS5,
        b'6' => libc::CS6,
        b'7' => libc::CS7,
        b'8' => libc::CS8,
        _ => return Err(format!("framing {framing:?}: 5 to 8 data bits")),
    };
    t.c_cflag |= match f[1].to_ascii_uppercase() {
        b'N' => 0,
        b'E' => libc::PARENB,
        b'O' => libc::PARENB | libc::PARODD,
        _ => return Err(format!("framing {framing:?}: parity N, E or O")),
    };
    t.c_cflag |= match f[2] {
        b'1' => 0,
        b'2' => libc::CSTOPB,
        _ => return Err(format!("framing {framing:?}: 1 or 2 stop bits")),
    };
    let s = speed(baud).ok_or_else(|| format!("baud {baud}: not a standard rate"))?;
    // SAFETY: on a termios we own, then applied to our descriptor.
    unsafe {
        libc::cfsetispeed(&mut t, s);
        libc::cfsetospeed(&mut t, s);
        if libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(format!("tcsetattr: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn spawn_on_pty(argv: &[String]) -> Result<Port, String> {
    let what = argv.join(" ");
    // SAFETY: plain libc pty calls; every descriptor is owned right after.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(format!("posix_openpt: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor just opened.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: a pty master, and a buffer of the length given.
    let ok = unsafe {
        libc::grantpt(master.as_raw_fd()) == 0
            && libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return Err(format!("pty: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let slave_path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let slave = open_path(&slave_path)?;
    // The command gets a blocking terminal (open_path opened it non-blocking, and the
    // flag belongs to the open file, which the child shares).
    // SAFETY: our descriptor.
    unsafe {
        let flags = libc::fcntl(slave.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(slave.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    // The pty stays a cooked terminal, as a shell expects: echo, line editing, ^C.
    let io = |fd: &OwnedFd| -> Result<Stdio, String> {
        Ok(Stdio::from(
            fd.try_clone().map_err(|e| format!("pty: {e}"))?,
        ))
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(io(&slave)?)
        .stdout(io(&slave)?)
        .stderr(io(&slave)?);
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty (fd 0), so the shell has job control.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    // SAFETY: set the master non-blocking; our descriptor.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok(Port {
        fd: Fd(master),
        child: Some(child),
    })
}

/// A non-blocking descriptor read and written with deadlines.
pub struct Fd(pub OwnedFd);

impl Fd {
    fn wait(&self, events: libc::c_short, timeout: Duration) -> std::io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(n > 0)
    }

    /// Reads what is there within `timeout`: `Ok(0)` when nothing came; an error
    /// (or end of file) when the backend is gone.
    pub fn read(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize> {
        if !self.wait(libc::POLLIN, timeout)? {
            return Ok(0);
        }
        // SAFETY: a buffer of the length given.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => Ok(n as usize),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted
                {
                    Ok(0)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Writes all of `data` by `deadline`, or fails.
    pub fn write_all(&self, mut data: &[u8], deadline: Instant) -> std::io::Result<()> {
        while !data.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the target does not take input (flow control?)",
                ));
            }
            if !self.wait(libc::POLLOUT, left)? {
                continue;
            }
            // SAFETY: a buffer of the length given.
            let n = unsafe { libc::write(self.0.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return Err(e);
            }
            data = &data[n as usize..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_on_a_pty_echoes_what_is_typed_as_a_terminal_does() {
        let port = open(&Backend::Command {
            argv: vec!["/bin/cat".into()],
        })
        .unwrap();
        port.fd
            .write_all(b"hi\n", Instant::now() + Duration::from_secs(2))
            .unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 8 && Instant::now() < deadline {
            let mut buf = [0u8; 256];
            match port.fd.read(&mut buf, Duration::from_millis(100)) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
            }
        }
        // The line discipline's echo, then cat's copy.
        assert_eq!(got, b"hi\r\nhi\r\n", "{:?}", String::from_utf8_lossy(&got));
    }

    #[test]
    fn backends_that_are_not_there_are_named() {
        let e = open(&Backend::Qemu {
            socket: "/nonexistent/serial.sock".into(),
        })
        .err()
        .unwrap();
        assert!(
            e.starts_with("/nonexistent/serial.sock: No such file"),
            "{e}"
        );
        let e = open(&Backend::Tty {
            path: "/nonexistent/ttyUSB0".into(),
            baud: 115200,
            framing: "8N1".into(),
        })
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent/ttyUSB0"), "{e}");
        let e = open(&Backend::Command {
            argv: vec!["/nonexistent/sh".into()],
        })
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent/sh"), "{e}");
    }
}
