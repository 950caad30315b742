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
        /// The least time between two keyboard commands (see [`QemuHid`]).
        key_gap: Duration,
    },
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
    ("qemu", &["qmp", "key_gap_ms"]),
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
                key_gap: Duration::from_millis(ini.parse_or(
                    "qemu",
                    "key_gap_ms",
                    5u64,
                    "milliseconds",
                )?),
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
        let paste_interval =
            Duration::from_millis(ini.parse_or("", "paste_interval_ms", 1u64, "milliseconds")?);
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
            Backend::Qemu { qmp, key_gap } => Box::new(QemuHid::new(Qmp::new(qmp), *key_gap)),
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
        assert_eq!(
            qemu.backend,
            Backend::Qemu {
                qmp: "/run/q.sock".into(),
                key_gap: Duration::from_millis(5)
            }
        );
        let e = read("backend = qemu\n[qemu]\nqmp = /q\nkey_gap_ms = -1\n").unwrap_err();
        assert!(e.contains("key_gap_ms"), "{e}");
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
