//! Who holds what down, and the one device state that follows from it.
//!
//! Several *holders* press keys at once: each browser session (a JSIP dialog), a paste,
//! a `POST /keys`. Each holder's keys and buttons are kept apart, and the device is given
//! their union. That is what makes releasing safe: when a session ends or its socket
//! drops, exactly its keys come up, and a key someone else still holds stays down.
//!
//! Nothing here knows JSIP or HTTP. Every change goes through [`Hid::show`], which writes
//! the union only when it changed, and turns any device failure into "release
//! everything": the holders are forgotten, the empty state is written (best effort), and
//! the caller gets the error. So a failed or timed-out write never leaves a key down in our
//! books, and the next successful write reflects that.

use std::collections::HashMap;
use std::time::Instant;

use crate::device::{Device, KeyboardState, Motion, MouseReport, ABS_MAX};
use crate::keys;

/// One input from a holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A key by HID usage; modifiers are keys too (0xe0..=0xe7).
    Key { usage: u8, down: bool },
    /// A mouse button bit ([`crate::device::button`]).
    Button { bit: u8, down: bool },
    /// Move the pointer to a point (0..=32767 on both axes).
    MoveTo { x: u16, y: u16 },
    /// Move the pointer by an offset.
    MoveBy { dx: i32, dy: i32 },
    /// Turn the wheel (up > 0).
    Wheel(i8),
}

#[derive(Debug, Default)]
struct Held {
    /// (press sequence number, usage), in press order.
    keys: Vec<(u64, u8)>,
    buttons: u8,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.buttons == 0
    }
}

/// The most recent report latencies kept for percentiles.
const LATENCY_SAMPLES: usize = 8192;

/// Counters and latencies for `GET /hid/v1/stats`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub inputs: u64,
    pub keyboard_reports: u64,
    pub mouse_reports: u64,
    pub failures: u64,
    pub last_failure: Option<String>,
    /// Microseconds from an input's arrival to its report being written.
    latencies: Vec<u32>,
    next_latency: usize,
}

impl Stats {
    fn record_latency(&mut self, since: Instant) {
        let us = since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        if self.latencies.len() < LATENCY_SAMPLES {
            self.latencies.push(us);
        } else {
            self.latencies[self.next_latency] = us;
        }
        self.next_latency = (self.next_latency + 1) % LATENCY_SAMPLES;
    }

    /// (p50, p99, max, samples) in microseconds over the last 8192 written inputs.
    pub fn latency(&self) -> Option<(u32, u32, u32, usize)> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99), *v.last().unwrap_or(&0), v.len()))
    }
}

/// The keyboard and mouse of the target, shared by all holders.
pub struct Hid {
    device: Box<dyn Device>,
    holders: HashMap<String, Held>,
    next_press: u64,
    /// What the device was last told (the empty state before anything was written).
    keyboard_shown: KeyboardState,
    buttons_shown: u8,
    stats: Stats,
}

impl Hid {
    pub fn new(device: Box<dyn Device>) -> Hid {
        Hid {
            device,
            holders: HashMap::new(),
            next_press: 0,
            keyboard_shown: KeyboardState::default(),
            buttons_shown: 0,
            stats: Stats::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.device.describe()
    }

    /// The target's keyboard LEDs, when the backend knows them.
    pub fn leds(&mut self) -> Option<u8> {
        self.device.leds()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Applies one input of `holder`, which arrived at `arrived`.
    pub fn apply(&mut self, holder: &str, input: Input, arrived: Instant) -> Result<(), String> {
        self.stats.inputs += 1;
        let held = self.holders.entry(holder.to_string()).or_default();
        let mut motion = Motion::None;
        let mut wheel = 0;
        let keyboard = match input {
            Input::Key { usage, down } => {
                let at = held.keys.iter().position(|(_, u)| *u == usage);
                match (down, at) {
                    // A repeat (the browser's auto-repeat): the key is already down.
                    (true, Some(_)) | (false, None) => {}
                    (true, None) => {
                        held.keys.push((self.next_press, usage));
                        self.next_press += 1;
                    }
                    (false, Some(i)) => {
                        held.keys.remove(i);
                    }
                }
                true
            }
            Input::Button { bit, down } => {
                if down {
                    held.buttons |= bit;
                } else {
                    held.buttons &= !bit;
                }
                false
            }
            Input::MoveTo { x, y } => {
                motion = Motion::Absolute {
                    x: x.min(ABS_MAX),
                    y: y.min(ABS_MAX),
                };
                false
            }
            Input::MoveBy { dx, dy } => {
                motion = Motion::Relative { dx, dy };
                false
            }
            Input::Wheel(n) => {
                wheel = n;
                false
            }
        };
        if held.is_empty() {
            self.holders.remove(holder);
        }
        if keyboard {
            self.show_keyboard(Some(arrived))
        } else {
            self.show_mouse(motion, wheel, Some(arrived))
        }
    }

    /// Makes `holder` hold exactly `usages` (paste and `POST /keys` work in whole states).
    pub fn hold(&mut self, holder: &str, usages: &[u8]) -> Result<(), String> {
        let held = self.holders.entry(holder.to_string()).or_default();
        held.keys.retain(|(_, u)| usages.contains(u));
        for &u in usages {
            if !held.keys.iter().any(|(_, k)| *k == u) {
                held.keys.push((self.next_press, u));
                self.next_press += 1;
            }
        }
        if held.is_empty() {
            self.holders.remove(holder);
        }
        self.show_keyboard(None)
    }

    /// Lets go of everything `holder` holds: its session ended or its socket dropped.
    /// Returns how many keys and buttons came up.
    pub fn release(&mut self, holder: &str) -> Result<usize, String> {
        let Some(held) = self.holders.remove(holder) else {
            return Ok(0);
        };
        let count = held.keys.len() + held.buttons.count_ones() as usize;
        self.show_keyboard(None)?;
        self.show_mouse(Motion::None, 0, None)?;
        Ok(count)
    }

    /// Lets go of everything, whoever holds it, and writes the empty state even if the
    /// device already shows it (`POST /reset`: the device may know better than our books).
    pub fn reset(&mut self) -> Result<(), String> {
        self.holders.clear();
        let keyboard = self.device.keyboard(&KeyboardState::default());
        let mouse = self.device.mouse(&MouseReport {
            buttons: 0,
            motion: Motion::None,
            wheel: 0,
        });
        self.keyboard_shown = KeyboardState::default();
        self.buttons_shown = 0;
        keyboard.and(mouse)
    }

    /// How many holders hold something.
    pub fn holders(&self) -> usize {
        self.holders.len()
    }

    /// The union of every holder's keys, oldest press first.
    fn keyboard_union(&self) -> KeyboardState {
        let mut all: Vec<(u64, u8)> = self
            .holders
            .values()
            .flat_map(|h| h.keys.iter().copied())
            .collect();
        all.sort_unstable();
        let mut state = KeyboardState::default();
        for (_, usage) in all {
            match keys::modifier_bit(usage) {
                Some(bit) => state.mods |= bit,
                None if !state.keys.contains(&usage) => state.keys.push(usage),
                None => {}
            }
        }
        state
    }

    fn show_keyboard(&mut self, arrived: Option<Instant>) -> Result<(), String> {
        let want = self.keyboard_union();
        if want == self.keyboard_shown {
            return Ok(());
        }
        match self.device.keyboard(&want) {
            Ok(()) => {
                self.stats.keyboard_reports += 1;
                if let Some(t) = arrived {
                    self.stats.record_latency(t);
                }
                self.keyboard_shown = want;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn show_mouse(
        &mut self,
        motion: Motion,
        wheel: i8,
        arrived: Option<Instant>,
    ) -> Result<(), String> {
        let buttons = self.holders.values().fold(0, |b, h| b | h.buttons);
        if buttons == self.buttons_shown && motion == Motion::None && wheel == 0 {
            return Ok(());
        }
        let report = MouseReport {
            buttons,
            motion,
            wheel,
        };
        match self.device.mouse(&report) {
            Ok(()) => {
                self.stats.mouse_reports += 1;
                if let Some(t) = arrived {
                    self.stats.record_latency(t);
                }
                self.buttons_shown = buttons;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// A write failed or timed out: nobody holds anything any more, and the device is
    /// told so as well as it can be.
    fn fail(&mut self, error: String) -> String {
        self.stats.failures += 1;
        self.stats.last_failure = Some(error.clone());
        let released = self.holders.len();
        self.holders.clear();
        let again = self.reset();
        jsipd_plugin_api::tracing::warn!(
            "{error}; released every key and button of {released} holder(s){}",
            match again {
                Ok(()) => String::new(),
                Err(e) => format!(" (the release failed too: {e})"),
            }
        );
        error
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A device that records what it is told, and fails on demand.
    #[derive(Clone, Default)]
    pub struct Recorder {
        pub log: Arc<Mutex<Vec<String>>>,
        pub fail_next: Arc<Mutex<bool>>,
    }

    impl Device for Recorder {
        fn keyboard(&mut self, s: &KeyboardState) -> Result<(), String> {
            if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
                return Err("the test device failed".into());
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("kbd {:02x} {:02x?}", s.mods, s.keys));
            Ok(())
        }
        fn mouse(&mut self, r: &MouseReport) -> Result<(), String> {
            self.log.lock().unwrap().push(format!(
                "mouse {:02x} {:?} {}",
                r.buttons, r.motion, r.wheel
            ));
            Ok(())
        }
        fn describe(&self) -> String {
            "recorder".into()
        }
    }

    fn key(usage: u8, down: bool) -> Input {
        Input::Key { usage, down }
    }

    fn take(r: &Recorder) -> Vec<String> {
        std::mem::take(&mut *r.log.lock().unwrap())
    }

    #[test]
    fn holders_are_released_separately() {
        let r = Recorder::default();
        let mut hid = Hid::new(Box::new(r.clone()));
        let now = Instant::now();
        hid.apply("a", key(0xe1, true), now).unwrap(); // shift
        hid.apply("a", key(0x04, true), now).unwrap(); // a
        hid.apply("a", key(0x04, true), now).unwrap(); // a repeat: nothing new
        hid.apply("b", key(0x05, true), now).unwrap(); // b
        hid.apply("b", key(0x04, true), now).unwrap(); // a, also held by "a"
        assert_eq!(
            take(&r),
            ["kbd 02 []", "kbd 02 [04]", "kbd 02 [04, 05]"],
            "a repeat and a key someone else holds write nothing"
        );
        assert_eq!(hid.release("a").unwrap(), 2);
        assert_eq!(
            take(&r),
            ["kbd 00 [05, 04]"],
            "b still holds b and a (in its press order)"
        );
        hid.apply("b", Input::Button { bit: 1, down: true }, now)
            .unwrap();
        assert_eq!(hid.release("b").unwrap(), 3);
        assert_eq!(
            take(&r),
            ["mouse 01 None 0", "kbd 00 []", "mouse 00 None 0"]
        );
        assert_eq!(hid.holders(), 0);
        assert_eq!(hid.release("nobody").unwrap(), 0);
        assert!(take(&r).is_empty());
    }

    #[test]
    fn a_failed_write_releases_everything() {
        let r = Recorder::default();
        let mut hid = Hid::new(Box::new(r.clone()));
        let now = Instant::now();
        hid.apply("a", key(0xe0, true), now).unwrap();
        hid.apply("b", Input::Button { bit: 2, down: true }, now)
            .unwrap();
        take(&r);
        *r.fail_next.lock().unwrap() = true;
        let e = hid.apply("a", key(0x06, true), now).unwrap_err();
        assert!(e.contains("failed"));
        assert_eq!(take(&r), ["kbd 00 []", "mouse 00 None 0"]);
        assert_eq!(hid.holders(), 0);
        assert_eq!(hid.stats().failures, 1);
        // The next press starts from nothing.
        hid.apply("a", key(0x06, true), now).unwrap();
        assert_eq!(take(&r), ["kbd 00 [06]"]);
    }

    #[test]
    fn hold_sets_a_whole_state_and_latency_is_recorded() {
        let r = Recorder::default();
        let mut hid = Hid::new(Box::new(r.clone()));
        hid.hold("paste", &[0xe6, 0x14]).unwrap();
        hid.hold("paste", &[]).unwrap();
        assert_eq!(take(&r), ["kbd 40 [14]", "kbd 00 []"]);
        assert!(hid.stats().latency().is_none(), "paste is not timed");
        hid.apply("a", Input::MoveTo { x: 40000, y: 5 }, Instant::now())
            .unwrap();
        assert_eq!(
            take(&r),
            ["mouse 00 Absolute { x: 32767, y: 5 } 0"],
            "coordinates are clamped"
        );
        assert_eq!(hid.stats().latency().unwrap().3, 1);
    }
}
