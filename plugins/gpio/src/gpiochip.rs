//! `backend = gpiochip`: a physical target wired to the KVM board's GPIO lines, as on
//! PiKVM and NanoKVM: two outputs drive the power and reset buttons (through an
//! optocoupler or a transistor), two inputs read the power and disk LEDs.
//!
//! The button logic ([`PinTarget`]) is written against [`Pins`], so the transitions a
//! press makes are tested here without a GPIO chip; [`Gpiochip`] is the real [`Pins`]
//! over the Linux GPIO character device (`gpiocdev`, uAPI v2).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gpiocdev::line::Value;
use gpiocdev::Request;

use crate::target::{Button, Leds, Target};

/// Line-level access: set a button line, read the LED lines. Values are logical
/// (`true` = active); active-low wiring is the implementation's business.
pub trait Pins: Send {
    fn set(&mut self, button: Button, pressed: bool) -> Result<(), String>;
    fn read(&mut self) -> Result<Leds, String>;
}

/// Where the lines are, from `[gpiochip]` in gpio.ini.
#[derive(Debug, Clone, PartialEq)]
pub struct Wiring {
    pub chip: PathBuf,
    pub power: u32,
    pub reset: u32,
    pub pwr_led: u32,
    pub hdd_led: u32,
    pub buttons_active_low: bool,
    pub leds_active_low: bool,
}

/// The Linux GPIO character device. The lines are requested on first use and again
/// after an error, so a board whose chip appears late (a module loaded after jsipd) or
/// a line taken by another program is retried, and each refusal names the cause.
pub struct Gpiochip {
    wiring: Wiring,
    request: Option<Request>,
}

impl Gpiochip {
    pub fn new(wiring: Wiring) -> Gpiochip {
        Gpiochip {
            wiring,
            request: None,
        }
    }

    fn request(&mut self) -> Result<&Request, String> {
        if self.request.is_none() {
            let w = &self.wiring;
            let mut b = Request::builder();
            b.on_chip(&w.chip).with_consumer("jsipd-gpio");
            b.with_lines(&[w.power, w.reset]).as_output(Value::Inactive);
            if w.buttons_active_low {
                b.as_active_low();
            }
            b.with_lines(&[w.pwr_led, w.hdd_led]).as_input();
            if w.leds_active_low {
                b.as_active_low();
            }
            let r = b.request().map_err(|e| {
                format!(
                    "GPIO chip {} (lines power {}, reset {}, pwr_led {}, hdd_led {}): {e}",
                    w.chip.display(),
                    w.power,
                    w.reset,
                    w.pwr_led,
                    w.hdd_led
                )
            })?;
            self.request = Some(r);
        }
        Ok(self.request.as_ref().expect("requested above"))
    }

    fn failed(&mut self, what: &str, e: impl std::fmt::Display) -> String {
        self.request = None;
        format!("GPIO chip {}: {what}: {e}", self.wiring.chip.display())
    }
}

impl Pins for Gpiochip {
    fn set(&mut self, button: Button, pressed: bool) -> Result<(), String> {
        let line = match button {
            Button::Power => self.wiring.power,
            Button::Reset => self.wiring.reset,
        };
        let value = if pressed {
            Value::Active
        } else {
            Value::Inactive
        };
        let r = self.request()?.set_value(line, value);
        r.map_err(|e| self.failed(&format!("set line {line}"), e))
    }

    fn read(&mut self) -> Result<Leds, String> {
        let (pwr_line, hdd_line) = (self.wiring.pwr_led, self.wiring.hdd_led);
        let r = self.request()?;
        let read = (|| Ok::<_, gpiocdev::Error>((r.value(pwr_line)?, r.value(hdd_line)?)))();
        match read {
            Ok((pwr, hdd)) => Ok(Leds {
                pwr: pwr == Value::Active,
                hdd: hdd == Value::Active,
            }),
            Err(e) => Err(self.failed("read the LED lines", e)),
        }
    }
}

/// A level that must hold for `window` before it counts: LED inputs bounce, and a
/// disk LED flickers faster than anyone should be notified of.
#[derive(Debug, Clone, Copy)]
pub struct Debounced {
    stable: bool,
    candidate: bool,
    since: Instant,
}

impl Debounced {
    pub fn new(level: bool, now: Instant) -> Debounced {
        Debounced {
            stable: level,
            candidate: level,
            since: now,
        }
    }

    /// Feeds one sample; returns the debounced level.
    pub fn sample(&mut self, raw: bool, now: Instant, window: Duration) -> bool {
        if raw != self.candidate {
            self.candidate = raw;
            self.since = now;
        }
        if self.candidate != self.stable && now.duration_since(self.since) >= window {
            self.stable = self.candidate;
        }
        self.stable
    }
}

/// A [`Target`] made of [`Pins`]: a press sets the button's line, holds it, and always
/// releases it, even when the hold was cut short by an error.
pub struct PinTarget<P> {
    pins: Mutex<P>,
    leds: Mutex<Option<(Debounced, Debounced)>>,
    debounce: Duration,
    description: String,
}

impl<P: Pins> PinTarget<P> {
    pub fn new(pins: P, debounce: Duration, description: String) -> PinTarget<P> {
        PinTarget {
            pins: Mutex::new(pins),
            leds: Mutex::new(None),
            debounce,
            description,
        }
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, P> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<P: Pins> Target for PinTarget<P> {
    fn press(&self, button: Button, hold: Duration) -> Result<(), String> {
        self.pins().set(button, true)?;
        std::thread::sleep(hold);
        // Let go; a line left active would hold the button down for good.
        let mut last = Err(String::new());
        for _ in 0..3 {
            last = self.pins().set(button, false);
            if last.is_ok() {
                break;
            }
        }
        last
    }

    fn leds(&self) -> Result<Leds, String> {
        let raw = self.pins().read()?;
        let now = Instant::now();
        let mut leds = self.leds.lock().unwrap_or_else(|p| p.into_inner());
        let (pwr, hdd) = leds
            .get_or_insert_with(|| (Debounced::new(raw.pwr, now), Debounced::new(raw.hdd, now)));
        Ok(Leds {
            pwr: pwr.sample(raw.pwr, now, self.debounce),
            hdd: hdd.sample(raw.hdd, now, self.debounce),
        })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Pins that record every transition with its time, and LED levels a test sets.
    #[derive(Clone, Default)]
    struct Recorder {
        transitions: Arc<Mutex<Vec<(Button, bool, Instant)>>>,
        leds: Arc<Mutex<Leds>>,
        fail_sets: Arc<Mutex<usize>>,
    }

    impl Pins for Recorder {
        fn set(&mut self, button: Button, pressed: bool) -> Result<(), String> {
            let mut fail = self.fail_sets.lock().unwrap();
            if *fail > 0 && !pressed {
                *fail -= 1;
                return Err("EIO".into());
            }
            self.transitions
                .lock()
                .unwrap()
                .push((button, pressed, Instant::now()));
            Ok(())
        }
        fn read(&mut self) -> Result<Leds, String> {
            Ok(*self.leds.lock().unwrap())
        }
    }

    #[test]
    fn a_press_drives_the_line_active_for_the_hold_then_inactive() {
        let pins = Recorder::default();
        let target = PinTarget::new(pins.clone(), Duration::ZERO, "test".into());
        target
            .press(Button::Power, Duration::from_millis(60))
            .unwrap();
        target
            .press(Button::Reset, Duration::from_millis(10))
            .unwrap();
        let t = pins.transitions.lock().unwrap().clone();
        let levels: Vec<(Button, bool)> = t.iter().map(|(b, v, _)| (*b, *v)).collect();
        assert_eq!(
            levels,
            [
                (Button::Power, true),
                (Button::Power, false),
                (Button::Reset, true),
                (Button::Reset, false)
            ]
        );
        assert!(t[1].2.duration_since(t[0].2) >= Duration::from_millis(60));
    }

    #[test]
    fn a_failed_release_is_retried_so_the_button_is_never_left_down() {
        let pins = Recorder::default();
        *pins.fail_sets.lock().unwrap() = 2;
        let target = PinTarget::new(pins.clone(), Duration::ZERO, "test".into());
        target
            .press(Button::Power, Duration::from_millis(1))
            .unwrap();
        let t = pins.transitions.lock().unwrap();
        assert_eq!(
            t.last().map(|(b, v, _)| (*b, *v)),
            Some((Button::Power, false))
        );
    }

    #[test]
    fn led_levels_count_only_after_the_debounce_window() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let window = Duration::from_millis(20);
        let mut d = Debounced::new(false, start);
        assert!(
            !d.sample(true, ms(1), window),
            "a fresh edge is not trusted"
        );
        assert!(!d.sample(false, ms(5), window), "a bounce resets the wait");
        assert!(!d.sample(true, ms(10), window));
        assert!(!d.sample(true, ms(29), window));
        assert!(d.sample(true, ms(30), window), "held for the window");
        assert!(
            d.sample(false, ms(31), window),
            "and held until the next change holds"
        );
    }

    #[test]
    fn the_real_chip_device_names_what_is_missing() {
        // This machine has no GPIO chip; the real backend must say which and why.
        let mut chip = Gpiochip::new(Wiring {
            chip: "/dev/gpiochip-jsipd-test".into(),
            power: 1,
            reset: 2,
            pwr_led: 3,
            hdd_led: 4,
            buttons_active_low: false,
            leds_active_low: true,
        });
        let e = chip.set(Button::Power, true).unwrap_err();
        assert!(e.contains("/dev/gpiochip-jsipd-test"), "{e}");
        assert!(e.contains("power 1"), "{e}");
    }
}
