//! `conf/gpio/gpio.ini`: which backend, and its settings.

use std::path::Path;
use std::time::Duration;

use jsipd_kvm_support::ini::Ini;
use jsipd_kvm_support::qmp::Qmp;

use crate::gpiochip::{Gpiochip, PinTarget, Wiring};
use crate::qemu::Qemu;
use crate::sim::Sim;
use crate::target::Target;

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Sim,
    /// `nic`: the qdev id of the target's network card, for its link.
    Qemu {
        qmp: String,
        nic: Option<String>,
    },
    Gpiochip {
        wiring: Wiring,
        debounce: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub backend: Backend,
    /// The longest subscription a SUBSCRIBE gets, in seconds.
    pub max_expire: u64,
}

const KNOWN: &[(&str, &[&str])] = &[
    ("", &["backend", "max_expire"]),
    ("qemu", &["qmp", "nic"]),
    (
        "gpiochip",
        &[
            "chip",
            "power",
            "reset",
            "pwr_led",
            "hdd_led",
            "buttons_active_low",
            "leds_active_low",
            "debounce_ms",
        ],
    ),
];

impl Settings {
    pub fn read(config_dir: &Path) -> Result<Settings, String> {
        let ini = Ini::read(&config_dir.join("gpio.ini"))?;
        ini.only(KNOWN)?;
        let file = ini.path().display().to_string();
        let backend = match ini.get("", "backend").unwrap_or("sim") {
            "sim" => Backend::Sim,
            "qemu" => Backend::Qemu {
                qmp: ini
                    .get("qemu", "qmp")
                    .ok_or_else(|| {
                        format!(
                            "{file}: backend = qemu needs [qemu] qmp = PATH of QEMU's QMP socket"
                        )
                    })?
                    .to_string(),
                nic: ini.get("qemu", "nic").map(str::to_string),
            },
            "gpiochip" => {
                let line = |key: &str| -> Result<u32, String> {
                    if ini.get("gpiochip", key).is_none() {
                        return Err(format!(
                            "{file}: backend = gpiochip needs [gpiochip] {key} = LINE (its offset on the chip)"
                        ));
                    }
                    ini.parse_or("gpiochip", key, 0, "a line offset")
                };
                Backend::Gpiochip {
                    wiring: Wiring {
                        chip: ini
                            .get("gpiochip", "chip")
                            .unwrap_or("/dev/gpiochip0")
                            .into(),
                        power: line("power")?,
                        reset: line("reset")?,
                        pwr_led: line("pwr_led")?,
                        hdd_led: line("hdd_led")?,
                        buttons_active_low: ini.flag("gpiochip", "buttons_active_low", false)?,
                        leds_active_low: ini.flag("gpiochip", "leds_active_low", false)?,
                    },
                    debounce: Duration::from_millis(ini.parse_or(
                        "gpiochip",
                        "debounce_ms",
                        20,
                        "milliseconds",
                    )?),
                }
            }
            other => {
                return Err(format!(
                    "{file}: backend = {other:?}: expected sim, qemu or gpiochip"
                ))
            }
        };
        Ok(Settings {
            backend,
            max_expire: ini.parse_or("", "max_expire", 3600, "seconds")?,
        })
    }

    pub fn target(&self) -> Box<dyn Target> {
        match &self.backend {
            Backend::Sim => Box::new(Sim::default()),
            Backend::Qemu { qmp, nic } => Box::new(Qemu::new(Qmp::new(qmp), nic.clone())),
            Backend::Gpiochip { wiring, debounce } => {
                let description = format!(
                    "gpiochip ({}: power {}, reset {}, pwr_led {}, hdd_led {})",
                    wiring.chip.display(),
                    wiring.power,
                    wiring.reset,
                    wiring.pwr_led,
                    wiring.hdd_led
                );
                Box::new(PinTarget::new(
                    Gpiochip::new(wiring.clone()),
                    *debounce,
                    description,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Settings, String> {
        jsipd_kvm_support::ini::with_config_file("gpio.ini", text, Settings::read)
    }

    #[test]
    fn the_default_is_the_simulator() {
        let s = Settings::read(Path::new("/nonexistent/jsipd/gpio")).unwrap();
        assert_eq!(s.backend, Backend::Sim);
    }

    #[test]
    fn backends_and_their_errors() {
        assert_eq!(
            read("backend = qemu\n[qemu]\nqmp = /run/q.sock\n")
                .unwrap()
                .backend,
            Backend::Qemu {
                qmp: "/run/q.sock".into(),
                nic: None,
            }
        );
        assert!(read("backend = qemu\n")
            .unwrap_err()
            .contains("needs [qemu] qmp"));
        assert!(read("backend = vga\n")
            .unwrap_err()
            .contains("expected sim, qemu or gpiochip"));
        let chip = read(
            "backend = gpiochip\n[gpiochip]\npower = 1\nreset = 2\npwr_led = 3\nhdd_led = 4\nleds_active_low = yes\n",
        )
        .unwrap();
        match chip.backend {
            Backend::Gpiochip { wiring, debounce } => {
                assert_eq!((wiring.power, wiring.hdd_led), (1, 4));
                assert!(wiring.leds_active_low && !wiring.buttons_active_low);
                assert_eq!(debounce, Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
        assert!(read("backend = gpiochip\n[gpiochip]\npower = 1\n")
            .unwrap_err()
            .contains("needs [gpiochip] reset"));
        assert!(read("[qemu]\nqmp_path = x\n")
            .unwrap_err()
            .contains("has no key \"qmp_path\""));
    }
}
