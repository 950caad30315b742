//! `backend = sim`: an in-memory target, for demos without hardware.
//!
//! It behaves like a PC seen from its front panel: a short power press turns it on (the
//! disk LED then flickers for a second, as a boot reads the disk) or off, a long press
//! forces it off, and reset flickers the disk LED again while it is on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::target::{Button, Leds, Target, FORCE_OFF};

/// How long the simulated disk is busy after power-on or reset.
const BOOT_DISK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Sim {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    on: bool,
    disk_busy_until: Option<Instant>,
}

impl Target for Sim {
    fn press(&self, button: Button, hold: Duration) -> Result<(), String> {
        if button == Button::Power && hold >= FORCE_OFF {
            std::thread::sleep(hold);
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.on = false;
            s.disk_busy_until = None;
            return Ok(());
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match button {
                Button::Power if s.on => {
                    s.on = false;
                    s.disk_busy_until = None;
                }
                Button::Power | Button::Reset => {
                    if button == Button::Power || s.on {
                        s.on = true;
                        s.disk_busy_until = Some(Instant::now() + BOOT_DISK);
                    }
                }
            }
        }
        std::thread::sleep(hold);
        Ok(())
    }

    fn leds(&self) -> Result<Leds, String> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Leds {
            pwr: s.on,
            hdd: s.on && s.disk_busy_until.is_some_and(|t| Instant::now() < t),
        })
    }

    fn describe(&self) -> String {
        "sim (an in-memory target, no hardware)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_press_toggles_long_press_forces_off_reset_needs_power() {
        let sim = Sim::default();
        let short = Duration::from_millis(1);
        sim.press(Button::Reset, short).unwrap();
        assert_eq!(
            sim.leds().unwrap(),
            Leds::default(),
            "reset does not power on"
        );
        sim.press(Button::Power, short).unwrap();
        assert_eq!(
            sim.leds().unwrap(),
            Leds {
                pwr: true,
                hdd: true
            }
        );
        sim.press(Button::Power, short).unwrap();
        assert!(!sim.leds().unwrap().pwr);
        sim.press(Button::Power, short).unwrap();
        sim.state.lock().unwrap().disk_busy_until = None;
        sim.press(Button::Reset, short).unwrap();
        assert!(sim.leds().unwrap().hdd, "reset reboots: the disk is read");
    }
}
