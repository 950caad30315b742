//! The USB gadget backend: standard HID reports written to `/dev/hidg0..2`.
//!
//! The three functions and their report descriptors are created by `jsipd-gadget`, from
//! the descriptors in this file, so the two cannot disagree:
//! - `hidg0`: boot keyboard, 8-byte input reports (modifiers, reserved, six keys), with
//!   the LED output report a boot keyboard has;
//! - `hidg1`: relative mouse, 4 bytes (buttons, dx, dy, wheel), all signed 8-bit;
//! - `hidg2`: absolute mouse, 6 bytes (buttons, x, y as little-endian 0..=32767, wheel).
//!
//! A write waits (poll) at most `timeout` for the device to take the report. The kernel's
//! f_hid takes one report at a time and the host polls it every few milliseconds; a host
//! that is asleep or unplugged never does, and then the write times out and the plugin
//! releases everything (see [`crate::state`]). A device that fails is closed and opened
//! again on the next write, so a gadget re-created under us is picked up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::device::{Device, KeyboardState, Motion, MouseReport};

/// Boot keyboard (HID 1.11 appendix B.1) with key usages up to 0xe7, so the ISO,
/// Ro and Yen keys can be sent.
pub const KEYBOARD_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x06, // Usage (Keyboard)
    0xa1, 0x01, // Collection (Application)
    0x05, 0x07, //   Usage Page (Keyboard/Keypad)
    0x19, 0xe0, //   Usage Minimum (Left Control)
    0x29, 0xe7, //   Usage Maximum (Right GUI)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x01, //   Logical Maximum (1)
    0x75, 0x01, //   Report Size (1)
    0x95, 0x08, //   Report Count (8)
    0x81, 0x02, //   Input (Data, Variable, Absolute): modifiers
    0x95, 0x01, //   Report Count (1)
    0x75, 0x08, //   Report Size (8)
    0x81, 0x03, //   Input (Constant): reserved
    0x95, 0x05, //   Report Count (5)
    0x75, 0x01, //   Report Size (1)
    0x05, 0x08, //   Usage Page (LEDs)
    0x19, 0x01, //   Usage Minimum (Num Lock)
    0x29, 0x05, //   Usage Maximum (Kana)
    0x91, 0x02, //   Output (Data, Variable, Absolute): LEDs
    0x95, 0x01, //   Report Count (1)
    0x75, 0x03, //   Report Size (3)
    0x91, 0x03, //   Output (Constant): padding
    0x95, 0x06, //   Report Count (6)
    0x75, 0x08, //   Report Size (8)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xe7, 0x00, // Logical Maximum (231)
    0x05, 0x07, //   Usage Page (Keyboard/Keypad)
    0x19, 0x00, //   Usage Minimum (0)
    0x29, 0xe7, //   Usage Maximum (231)
    0x81, 0x00, //   Input (Data, Array): six key slots
    0xc0, // End Collection
];

/// Relative mouse: five buttons, x, y and wheel as signed bytes.
pub const MOUSE_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x02, // Usage (Mouse)
    0xa1, 0x01, // Collection (Application)
    0x09, 0x01, //   Usage (Pointer)
    0xa1, 0x00, //   Collection (Physical)
    0x05, 0x09, //     Usage Page (Buttons)
    0x19, 0x01, //     Usage Minimum (1)
    0x29, 0x05, //     Usage Maximum (5)
    0x15, 0x00, //     Logical Minimum (0)
    0x25, 0x01, //     Logical Maximum (1)
    0x95, 0x05, //     Report Count (5)
    0x75, 0x01, //     Report Size (1)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x95, 0x01, //     Report Count (1)
    0x75, 0x03, //     Report Size (3)
    0x81, 0x03, //     Input (Constant)
    0x05, 0x01, //     Usage Page (Generic Desktop)
    0x09, 0x30, //     Usage (X)
    0x09, 0x31, //     Usage (Y)
    0x09, 0x38, //     Usage (Wheel)
    0x15, 0x81, //     Logical Minimum (-127)
    0x25, 0x7f, //     Logical Maximum (127)
    0x75, 0x08, //     Report Size (8)
    0x95, 0x03, //     Report Count (3)
    0x81, 0x06, //     Input (Data, Variable, Relative)
    0xc0, //   End Collection
    0xc0, // End Collection
];

/// Absolute mouse (a "tablet"): five buttons, x and y 0..=32767, wheel.
pub const TABLET_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x02, // Usage (Mouse)
    0xa1, 0x01, // Collection (Application)
    0x09, 0x01, //   Usage (Pointer)
    0xa1, 0x00, //   Collection (Physical)
    0x05, 0x09, //     Usage Page (Buttons)
    0x19, 0x01, //     Usage Minimum (1)
    0x29, 0x05, //     Usage Maximum (5)
    0x15, 0x00, //     Logical Minimum (0)
    0x25, 0x01, //     Logical Maximum (1)
    0x95, 0x05, //     Report Count (5)
    0x75, 0x01, //     Report Size (1)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x95, 0x01, //     Report Count (1)
    0x75, 0x03, //     Report Size (3)
    0x81, 0x03, //     Input (Constant)
    0x05, 0x01, //     Usage Page (Generic Desktop)
    0x09, 0x30, //     Usage (X)
    0x09, 0x31, //     Usage (Y)
    0x15, 0x00, //     Logical Minimum (0)
    0x26, 0xff, 0x7f, // Logical Maximum (32767)
    0x75, 0x10, //     Report Size (16)
    0x95, 0x02, //     Report Count (2)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x09, 0x38, //     Usage (Wheel)
    0x15, 0x81, //     Logical Minimum (-127)
    0x25, 0x7f, //     Logical Maximum (127)
    0x75, 0x08, //     Report Size (8)
    0x95, 0x01, //     Report Count (1)
    0x81, 0x06, //     Input (Data, Variable, Relative)
    0xc0, //   End Collection
    0xc0, // End Collection
];

/// Report lengths, as the descriptors above define them.
pub const KEYBOARD_REPORT: usize = 8;
pub const MOUSE_REPORT: usize = 4;
pub const TABLET_REPORT: usize = 6;

/// One `/dev/hidgN`, opened on first use.
struct Endpoint {
    path: PathBuf,
    file: Option<File>,
}

impl Endpoint {
    fn new(path: PathBuf) -> Endpoint {
        Endpoint { path, file: None }
    }

    /// Writes one whole report within `timeout`; a failure closes the file.
    fn write(&mut self, report: &[u8], timeout: Duration) -> Result<(), String> {
        let result = self.try_write(report, timeout);
        if result.is_err() {
            self.file = None;
        }
        result
    }

    fn try_write(&mut self, report: &[u8], timeout: Duration) -> Result<(), String> {
        let path = self.path.display();
        if self.file.is_none() {
            // Non-blocking, so that neither the open nor a write can hang the plugin.
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOENT) => {
                        format!("{path} does not exist: is the USB gadget up (jsipd-gadget up)?")
                    }
                    Some(libc::ENXIO) => format!("{path} has no reader"),
                    _ => format!("cannot open {path}: {e}"),
                })?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd, for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("cannot poll {path}: {e}"));
            }
            if n == 0 {
                return Err(format!(
                    "{path} did not take a report within {} ms (is the target host awake and reading it?)",
                    timeout.as_millis()
                ));
            }
            if pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                return Err(format!(
                    "{path} is gone (its reader closed or the gadget was unbound)"
                ));
            }
            match file.write(report) {
                Ok(n) if n == report.len() => return Ok(()),
                Ok(n) => return Err(format!("{path} took {n} of {} report bytes", report.len())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("cannot write to {path}: {e}")),
            }
        }
    }
}

/// The keyboard's output reports (its LEDs), read without waiting: the host sends one
/// whenever Num, Caps or Scroll Lock changes, and f_hid keeps them until read.
struct LedReader {
    path: PathBuf,
    file: Option<File>,
    last: Option<u8>,
}

impl LedReader {
    fn latest(&mut self) -> Option<u8> {
        if self.file.is_none() {
            self.file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
                .ok();
        }
        let Some(file) = self.file.as_mut() else {
            return self.last;
        };
        let mut buf = [0u8; 64];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.last = Some(buf[n - 1]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.file = None;
                    break;
                }
            }
        }
        self.last
    }
}

/// Which mouse function moved last: button changes go to the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pointer {
    Relative,
    Absolute,
}

pub struct Gadget {
    keyboard: Endpoint,
    leds: LedReader,
    mouse: Endpoint,
    tablet: Endpoint,
    timeout: Duration,
    pointer: Pointer,
    /// The tablet's last position: a button report must repeat it.
    at: (u16, u16),
    /// Buttons each mouse function was last told, to release them when the other one
    /// takes over.
    mouse_buttons: u8,
    tablet_buttons: u8,
}

impl Gadget {
    /// The keyboard's LEDs are read from `keyboard` too; see [`Gadget::with_leds`].
    pub fn new(keyboard: PathBuf, mouse: PathBuf, tablet: PathBuf, timeout: Duration) -> Gadget {
        Gadget::with_leds(keyboard.clone(), keyboard, mouse, tablet, timeout)
    }

    /// As [`Gadget::new`], with the LED reports read from `leds` (a real hidg device
    /// gives them on the keyboard's own node; tests use a separate FIFO).
    pub fn with_leds(
        leds: PathBuf,
        keyboard: PathBuf,
        mouse: PathBuf,
        tablet: PathBuf,
        timeout: Duration,
    ) -> Gadget {
        Gadget {
            leds: LedReader {
                path: leds,
                file: None,
                last: None,
            },
            keyboard: Endpoint::new(keyboard),
            mouse: Endpoint::new(mouse),
            tablet: Endpoint::new(tablet),
            timeout,
            pointer: Pointer::Absolute,
            at: (0, 0),
            mouse_buttons: 0,
            tablet_buttons: 0,
        }
    }

    fn tablet_report(&mut self, buttons: u8, wheel: i8) -> Result<(), String> {
        let [xl, xh] = self.at.0.to_le_bytes();
        let [yl, yh] = self.at.1.to_le_bytes();
        self.tablet
            .write(&[buttons, xl, xh, yl, yh, wheel as u8], self.timeout)?;
        self.tablet_buttons = buttons;
        Ok(())
    }

    fn mouse_report(&mut self, buttons: u8, dx: i8, dy: i8, wheel: i8) -> Result<(), String> {
        self.mouse
            .write(&[buttons, dx as u8, dy as u8, wheel as u8], self.timeout)?;
        self.mouse_buttons = buttons;
        Ok(())
    }
}

impl Device for Gadget {
    fn keyboard(&mut self, state: &KeyboardState) -> Result<(), String> {
        self.keyboard.write(&state.boot_report(), self.timeout)
    }

    fn mouse(&mut self, r: &MouseReport) -> Result<(), String> {
        let pointer = match r.motion {
            Motion::Absolute { .. } => Pointer::Absolute,
            Motion::Relative { .. } => Pointer::Relative,
            Motion::None => self.pointer,
        };
        // The other function lets go of its buttons first, so no button is down twice.
        if pointer != self.pointer {
            match self.pointer {
                Pointer::Absolute if self.tablet_buttons != 0 => self.tablet_report(0, 0)?,
                Pointer::Relative if self.mouse_buttons != 0 => self.mouse_report(0, 0, 0, 0)?,
                _ => {}
            }
        }
        match r.motion {
            Motion::Absolute { x, y } => {
                self.at = (x, y);
                self.tablet_report(r.buttons, r.wheel)?;
            }
            Motion::None if pointer == Pointer::Absolute => {
                self.tablet_report(r.buttons, r.wheel)?
            }
            Motion::None => self.mouse_report(r.buttons, 0, 0, r.wheel)?,
            Motion::Relative { mut dx, mut dy } => {
                // A report moves at most 127 each way: larger moves take several.
                let mut wheel = r.wheel;
                loop {
                    let sx = dx.clamp(-127, 127);
                    let sy = dy.clamp(-127, 127);
                    self.mouse_report(r.buttons, sx as i8, sy as i8, wheel)?;
                    wheel = 0;
                    dx -= sx;
                    dy -= sy;
                    if dx == 0 && dy == 0 {
                        break;
                    }
                }
            }
        }
        // Only a function that took a report takes the next button change.
        self.pointer = pointer;
        Ok(())
    }

    fn leds(&mut self) -> Option<u8> {
        self.leds.latest()
    }

    fn describe(&self) -> String {
        format!(
            "USB gadget: keyboard {}, mouse {}, tablet {} (write timeout {} ms)",
            self.keyboard.path.display(),
            self.mouse.path.display(),
            self.tablet.path.display(),
            self.timeout.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A FIFO standing in for a hidg device, read by the test.
    fn fifo(dir: &std::path::Path, name: &str) -> (PathBuf, File) {
        let path = dir.join(name);
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        (path, reader)
    }

    fn read_all(f: &mut File) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = f.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    #[test]
    fn reports_on_the_right_function() {
        let dir = tempdir();
        let (k, mut kr) = fifo(&dir, "hidg0");
        let (m, mut mr) = fifo(&dir, "hidg1");
        let (t, mut tr) = fifo(&dir, "hidg2");
        let mut g = Gadget::new(k, m, t, Duration::from_millis(200));
        g.keyboard(&KeyboardState {
            mods: 0x02,
            keys: vec![0x04],
        })
        .unwrap();
        assert_eq!(read_all(&mut kr), [0x02, 0, 0x04, 0, 0, 0, 0, 0]);
        let r = |buttons, motion, wheel| MouseReport {
            buttons,
            motion,
            wheel,
        };
        g.mouse(&r(
            0,
            Motion::Absolute {
                x: 0x1234,
                y: 32767,
            },
            0,
        ))
        .unwrap();
        g.mouse(&r(1, Motion::None, 0)).unwrap();
        assert_eq!(
            read_all(&mut tr),
            [0, 0x34, 0x12, 0xff, 0x7f, 0, 1, 0x34, 0x12, 0xff, 0x7f, 0]
        );
        // A relative move while the tablet holds the left button: the tablet lets go,
        // the mouse takes the button, and 300 is split into 127 + 127 + 46.
        g.mouse(&r(1, Motion::Relative { dx: 300, dy: -1 }, -1))
            .unwrap();
        assert_eq!(read_all(&mut tr), [0, 0x34, 0x12, 0xff, 0x7f, 0]);
        assert_eq!(
            read_all(&mut mr),
            [1, 127, 0xff, 0xff, 1, 127, 0, 0, 1, 46, 0, 0]
        );
    }

    #[test]
    fn a_device_nobody_reads_times_out() {
        let dir = tempdir();
        let (k, reader) = fifo(&dir, "hidg0");
        let mut g = Gadget::new(
            k.clone(),
            dir.join("m"),
            dir.join("t"),
            Duration::from_millis(50),
        );
        // Fill the pipe: the reader never reads.
        let started = Instant::now();
        let mut written = 0;
        let err = loop {
            match g.keyboard(&KeyboardState::default()) {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
        };
        assert!(written > 100, "a pipe holds many reports first ({written})");
        assert!(err.contains("did not take a report within 50 ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(reader);
        let err = g.keyboard(&KeyboardState::default()).unwrap_err();
        assert!(err.contains("has no reader"), "{err}");
        let err = Gadget::new(
            dir.join("nope"),
            dir.join("m"),
            dir.join("t"),
            Duration::from_millis(50),
        )
        .keyboard(&KeyboardState::default())
        .unwrap_err();
        assert!(err.contains("jsipd-gadget up"), "{err}");
    }

    #[test]
    fn the_newest_led_report_is_kept() {
        let dir = tempdir();
        let (leds, _reader) = fifo(&dir, "leds");
        let mut g = Gadget::with_leds(
            leds.clone(),
            dir.join("k"),
            dir.join("m"),
            dir.join("t"),
            Duration::from_millis(50),
        );
        assert_eq!(g.leds(), None, "no report yet");
        let mut host = OpenOptions::new().write(true).open(&leds).unwrap();
        host.write_all(&[0x00, 0x02]).unwrap();
        assert_eq!(g.leds(), Some(0x02));
        assert_eq!(g.leds(), Some(0x02), "kept until the next report");
        host.write_all(&[0x03]).unwrap();
        assert_eq!(g.leds(), Some(0x03));
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "jsipd-hid-gadget-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

#[cfg(test)]
mod descriptor_tests {
    use super::*;

    /// The input report length a descriptor defines: the sum of Report Size × Report
    /// Count over its Input items (short items only, which is all these use).
    fn input_bytes(desc: &[u8]) -> usize {
        let (mut size, mut count, mut bits, mut i) = (0usize, 0usize, 0usize, 0);
        while i < desc.len() {
            let prefix = desc[i];
            let len = match prefix & 3 {
                3 => 4,
                n => n as usize,
            };
            let data = desc[i + 1..i + 1 + len]
                .iter()
                .rev()
                .fold(0usize, |v, b| (v << 8) | *b as usize);
            match prefix & 0xfc {
                0x74 => size = data,
                0x94 => count = data,
                0x80 => bits += size * count,
                _ => {}
            }
            i += 1 + len;
        }
        assert_eq!(bits % 8, 0);
        bits / 8
    }

    #[test]
    fn descriptors_define_the_reports_we_write() {
        assert_eq!(input_bytes(KEYBOARD_DESCRIPTOR), KEYBOARD_REPORT);
        assert_eq!(input_bytes(MOUSE_DESCRIPTOR), MOUSE_REPORT);
        assert_eq!(input_bytes(TABLET_DESCRIPTOR), TABLET_REPORT);
    }
}
