//! `conf/hid/hid.ini`: the backend, the layouts, and how paste is paced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsipd_kvm_support::ini::Ini;
use jsipd_kvm_support::qmp::Qmp;

use crate::device::Device;
use crate::gadget::Gadget;
use crate::qemu::QemuHid;

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Gadget {
        keyboard: PathBuf,
        mouse: PathBuf,
        tablet: PathBuf,
        /// Where the keyboard's LED reports are read (the keyboard's own node).
        leds: PathBuf,
    },
    Qemu {
        qmp: String,
    },
}

impl Backend {
    /// The pause after each report when `paste_interval_ms` is not set.
    ///
    /// A gadget paces us itself: a report waits in `f_hid` until the host has read the
    /// one before, so a short pause only spaces the reports out. QEMU does not: QMP
    /// `input-send-event` returns at once, the guest's PS/2 keyboard queues 16 bytes
    /// and drops the rest, and nothing tells us the guest has read them. A report is
    /// about 2 bytes there, so 5 ms rides out a guest that does not run for 40 ms (a
    /// busy host, a TCG guest). At 1 ms a guest on a loaded 2-core machine lost keys.
    pub fn default_paste_interval_ms(&self) -> u64 {
        match self {
            Backend::Gadget { .. } => 1,
            Backend::Qemu { .. } => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub backend: Backend,
    /// Layout names paste accepts, the first being the default.
    pub layouts: Vec<String>,
    /// The longest paste, in characters.
    pub paste_max: usize,
    /// The pause after each report while pasting.
    pub paste_interval: Duration,
    /// How long a report may wait for the device before everything is released.
    pub write_timeout: Duration,
}

const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "backend",
            "layouts",
            "paste_max",
            "paste_interval_ms",
            "write_timeout_ms",
        ],
    ),
    ("gadget", &["keyboard", "mouse", "tablet", "leds"]),
    ("qemu", &["qmp"]),
];

pub const DEFAULT_LAYOUTS: &str = "us uk de fr es it ru";

impl Settings {
    pub fn read(config_dir: &Path) -> Result<Settings, String> {
        let ini = Ini::read(&config_dir.join("hid.ini"))?;
        ini.only(KNOWN)?;
        let file = ini.path().display().to_string();
        let backend = match ini.get("", "backend").unwrap_or("gadget") {
            "gadget" => {
                let path = |key: &str, default: &str| {
                    PathBuf::from(ini.get("gadget", key).unwrap_or(default))
                };
                let keyboard = path("keyboard", "/dev/hidg0");
                Backend::Gadget {
                    leds: ini
                        .get("gadget", "leds")
                        .map_or_else(|| keyboard.clone(), PathBuf::from),
                    keyboard,
                    mouse: path("mouse", "/dev/hidg1"),
                    tablet: path("tablet", "/dev/hidg2"),
                }
            }
            "qemu" => Backend::Qemu {
                qmp: ini
                    .get("qemu", "qmp")
                    .ok_or_else(|| {
                        format!(
                            "{file}: backend = qemu needs [qemu] qmp = PATH of QEMU's QMP socket"
                        )
                    })?
                    .to_string(),
            },
            other => {
                return Err(format!(
                    "{file}: backend = {other} is not one of gadget, qemu"
                ))
            }
        };
        let layouts: Vec<String> = ini
            .get("", "layouts")
            .unwrap_or(DEFAULT_LAYOUTS)
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if layouts.is_empty() {
            return Err(format!(
                "{file}: layouts is empty; name at least one, such as us"
            ));
        }
        let paste_max = ini.parse_or("", "paste_max", 65_536usize, "a number of characters")?;
        let paste_interval_ms = ini.parse_or(
            "",
            "paste_interval_ms",
            backend.default_paste_interval_ms(),
            "milliseconds",
        )?;
        let paste_interval = Duration::from_millis(paste_interval_ms);
        let write_timeout_ms: u64 = ini.parse_or("", "write_timeout_ms", 500, "milliseconds")?;
        if write_timeout_ms == 0 {
            return Err(format!("{file}: write_timeout_ms must be above 0"));
        }
        Ok(Settings {
            backend,
            layouts,
            paste_max,
            paste_interval,
            write_timeout: Duration::from_millis(write_timeout_ms),
        })
    }

    pub fn device(&self) -> Box<dyn Device> {
        match &self.backend {
            Backend::Gadget {
                keyboard,
                mouse,
                tablet,
                leds,
            } => Box::new(Gadget::with_leds(
                leds.clone(),
                keyboard.clone(),
                mouse.clone(),
                tablet.clone(),
                self.write_timeout,
            )),
            Backend::Qemu { qmp } => Box::new(QemuHid::new(Qmp::new(qmp))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Settings, String> {
        jsipd_kvm_support::ini::with_config_file("hid.ini", text, Settings::read)
    }

    #[test]
    fn defaults_and_errors() {
        let s = read("").unwrap();
        assert_eq!(s.layouts, ["us", "uk", "de", "fr", "es", "it", "ru"]);
        assert_eq!(s.paste_interval, Duration::from_millis(1));
        assert!(matches!(s.backend, Backend::Gadget { .. }));
        let qemu = read("backend = qemu\n[qemu]\nqmp = /run/q.sock\n").unwrap();
        assert_eq!(qemu.paste_interval, Duration::from_millis(5));
        let set = read("backend = qemu\npaste_interval_ms = 2\n[qemu]\nqmp = /q\n").unwrap();
        assert_eq!(set.paste_interval, Duration::from_millis(2));
        let e = read("backend = qemu\n").unwrap_err();
        assert!(e.contains("[qemu] qmp"), "{e}");
        let e = read("backend = usb\n").unwrap_err();
        assert!(e.contains("not one of gadget, qemu"), "{e}");
        let e = read("paste_max = lots\n").unwrap_err();
        assert!(e.contains("paste_max"), "{e}");
        let e = read("colour = blue\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = read("write_timeout_ms = 0\n").unwrap_err();
        assert!(e.contains("above 0"), "{e}");
    }
}
