//! The QEMU backend: QMP `input-send-event`.
//!
//! QEMU takes key and button *events*, so this backend remembers what it pressed and sends
//! the difference to each new state: releases first (keys, then modifiers), then presses
//! (modifiers, then keys), all in one command so QEMU queues them in that order. Key
//! events reach the guest's PS/2 keyboard (or whichever keyboard is active); absolute
//! motion needs an absolute pointer in the guest (`-device usb-tablet`), relative motion
//! goes to the PS/2 or USB mouse.
//!
//! When a command fails, QEMU may or may not have done it, so the keys of both states are
//! taken as possibly down: the release that follows a failure covers all of them.
//!
//! Keyboard commands are spaced at least `key_gap` apart, counted from QEMU's answer.
//! QMP answers at once, but the guest's PS/2 keyboard keeps only 16 bytes until the
//! guest reads them and drops the rest, and nothing tells us when it has: a key whose
//! press is dropped is lost, one whose release is dropped sticks. A report is about 2
//! bytes there, so 5 ms between them rides out a guest that does not run for 40 ms (a
//! busy host, a TCG guest). At full speed (a paste at 1 ms, or WebDriver typing into
//! the console page) a TCG guest on a busy 2-core host lost keys. A person's typing is
//! far slower and never waits; a burst waits, on the plugin's own thread. Mouse
//! commands are not spaced: QEMU's USB tablet merges motion when its queue is full, and
//! motion comes at the browser's frame rate.

use std::time::{Duration, Instant};

use jsipd_kvm_support::qmp::Qmp;
use jsipd_plugin_api::serde_json::{json, Value};

use crate::device::{button, Device, KeyboardState, Motion, MouseReport};
use crate::keys::{self, Key};

pub struct QemuHid {
    qmp: Qmp,
    /// Usages QEMU was told are down (modifiers as 0xe0..=0xe7).
    down: Vec<u8>,
    buttons: u8,
    key_gap: Duration,
    /// When QEMU answered the last keyboard command.
    last_keys: Option<Instant>,
}

impl QemuHid {
    pub fn new(qmp: Qmp, key_gap: Duration) -> QemuHid {
        QemuHid {
            qmp,
            down: Vec::new(),
            buttons: 0,
            key_gap,
            last_keys: None,
        }
    }

    /// Sends keyboard events once `key_gap` has passed since QEMU answered the last
    /// ones: QEMU queues a command's bytes just before it answers, so that is when the
    /// guest's time to read them starts, however long a busy QEMU took.
    fn send_keys(&mut self, events: Vec<Value>) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(last) = self.last_keys {
            let wait = self.key_gap.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let sent = self.send(events);
        self.last_keys = Some(Instant::now());
        sent
    }

    fn send(&self, events: Vec<Value>) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        self.qmp
            .execute("input-send-event", json!({ "events": events }))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn usages(state: &KeyboardState) -> Vec<u8> {
    let mut all: Vec<u8> = (0..8)
        .filter(|bit| state.mods & (1 << bit) != 0)
        .map(|bit| 0xe0 + bit)
        .collect();
    all.extend_from_slice(&state.keys);
    all
}

fn key_event(key: &Key, down: bool) -> Value {
    json!({"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": key.qcode}}})
}

fn button_event(name: &str, down: bool) -> Value {
    json!({"type": "btn", "data": {"down": down, "button": name}})
}

/// QEMU's names for the button bits.
const BUTTONS: [(u8, &str); 5] = [
    (button::LEFT, "left"),
    (button::RIGHT, "right"),
    (button::MIDDLE, "middle"),
    (button::BACK, "side"),
    (button::FORWARD, "extra"),
];

impl Device for QemuHid {
    fn keyboard(&mut self, state: &KeyboardState) -> Result<(), String> {
        let want = usages(state);
        let is_mod = |u: &u8| keys::modifier_bit(*u).is_some();
        let mut events = Vec::new();
        let ups: Vec<u8> = self
            .down
            .iter()
            .copied()
            .filter(|u| !want.contains(u))
            .collect();
        let downs: Vec<u8> = want
            .iter()
            .copied()
            .filter(|u| !self.down.contains(u))
            .collect();
        for (list, down) in [(&ups, false), (&downs, true)] {
            // Releases: keys before modifiers; presses: modifiers before keys.
            let (first, then): (Vec<u8>, Vec<u8>) = list.iter().partition(|u| is_mod(u) == down);
            for u in first.into_iter().chain(then) {
                let key = keys::by_usage(u).ok_or_else(|| format!("no key has usage {u:#04x}"))?;
                events.push(key_event(key, down));
            }
        }
        match self.send_keys(events) {
            Ok(()) => {
                self.down = want;
                Ok(())
            }
            Err(e) => {
                for u in want {
                    if !self.down.contains(&u) {
                        self.down.push(u);
                    }
                }
                Err(e)
            }
        }
    }

    fn mouse(&mut self, r: &MouseReport) -> Result<(), String> {
        let mut events = Vec::new();
        match r.motion {
            Motion::Absolute { x, y } => {
                events.push(json!({"type": "abs", "data": {"axis": "x", "value": x}}));
                events.push(json!({"type": "abs", "data": {"axis": "y", "value": y}}));
            }
            Motion::Relative { dx, dy } => {
                events.push(json!({"type": "rel", "data": {"axis": "x", "value": dx}}));
                events.push(json!({"type": "rel", "data": {"axis": "y", "value": dy}}));
            }
            Motion::None => {}
        }
        for (bit, name) in BUTTONS {
            if (self.buttons ^ r.buttons) & bit != 0 {
                events.push(button_event(name, r.buttons & bit != 0));
            }
        }
        // A wheel notch is a press and release of QEMU's wheel "button".
        let notch = if r.wheel > 0 {
            "wheel-up"
        } else {
            "wheel-down"
        };
        for _ in 0..r.wheel.unsigned_abs() {
            events.push(button_event(notch, true));
            events.push(button_event(notch, false));
        }
        match self.send(events) {
            Ok(()) => {
                self.buttons = r.buttons;
                Ok(())
            }
            Err(e) => {
                self.buttons |= r.buttons;
                Err(e)
            }
        }
    }

    fn describe(&self) -> String {
        format!("QEMU input events over QMP {}", self.qmp.path().display())
    }
}

#[cfg(test)]
mod tests {
    //! Against a scripted QMP peer on a real Unix socket; the QEMU guest test is in
    //! `tests/hid.rs`.
    use super::*;
    use jsipd_plugin_api::serde_json;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    /// A QMP peer that answers every command, but fails the `fail_at`th input command;
    /// it reports each input command's events as "down qcode" / "up qcode" lines.
    fn peer(fail_at: usize) -> (std::path::PathBuf, mpsc::Receiver<Vec<String>>) {
        let dir =
            std::env::temp_dir().join(format!("jsipd-hid-qmp-{}-{fail_at}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\":{\"version\":{}}}\n").unwrap();
            let mut inputs = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let c: Value = serde_json::from_str(&line).unwrap();
                if c["execute"] == "input-send-event" {
                    inputs += 1;
                    let events = c["arguments"]["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| {
                            let d = &e["data"];
                            let name = d["key"]["data"]
                                .as_str()
                                .or(d["button"].as_str())
                                .map(str::to_string)
                                .unwrap_or_else(|| format!("{}={}", d["axis"], d["value"]));
                            match d["down"].as_bool() {
                                Some(true) => format!("down {name}"),
                                Some(false) => format!("up {name}"),
                                None => format!("{} {name}", e["type"].as_str().unwrap()),
                            }
                        })
                        .collect();
                    tx.send(events).unwrap();
                    if inputs == fail_at {
                        let e = format!("{{\"error\":{{\"class\":\"GenericError\",\"desc\":\"no\"}},\"id\":{}}}\n", c["id"]);
                        w.write_all(e.as_bytes()).unwrap();
                        continue;
                    }
                }
                w.write_all(format!("{{\"return\":{{}},\"id\":{}}}\n", c["id"]).as_bytes())
                    .unwrap();
            }
        });
        (path, rx)
    }

    fn state(mods: u8, keys: &[u8]) -> KeyboardState {
        KeyboardState {
            mods,
            keys: keys.to_vec(),
        }
    }

    #[test]
    fn keyboard_commands_are_spaced_by_the_gap() {
        let (path, events) = peer(0);
        let gap = Duration::from_millis(40);
        let mut q = QemuHid::new(Qmp::new(&path), gap);
        let started = Instant::now();
        for keys in [&[0x04][..], &[], &[0x05], &[]] {
            q.keyboard(&state(0, keys)).unwrap();
        }
        // The first goes at once; each of the next three waits out the gap.
        assert!(started.elapsed() >= 3 * gap, "{:?}", started.elapsed());
        let sent: Vec<Vec<String>> = (0..4).map(|_| events.recv().unwrap()).collect();
        assert_eq!(sent, [["down a"], ["up a"], ["down b"], ["up b"]]);
        // A state the guest already has sends nothing, so it does not wait either.
        let before = q.last_keys;
        q.keyboard(&state(0, &[])).unwrap();
        assert_eq!(q.last_keys, before);
    }

    #[test]
    fn differences_are_sent_releases_first_and_a_failure_releases_everything_after() {
        let (path, events) = peer(4);
        let mut q = QemuHid::new(Qmp::new(&path), Duration::ZERO);
        q.keyboard(&state(0x02, &[0x04])).unwrap();
        assert_eq!(events.recv().unwrap(), ["down shift", "down a"]);
        q.keyboard(&state(0, &[0x05])).unwrap();
        assert_eq!(events.recv().unwrap(), ["up a", "up shift", "down b"]);
        q.mouse(&MouseReport {
            buttons: button::LEFT,
            motion: Motion::Absolute { x: 100, y: 200 },
            wheel: -2,
        })
        .unwrap();
        assert_eq!(
            events.recv().unwrap(),
            [
                "abs \"x\"=100",
                "abs \"y\"=200",
                "down left",
                "down wheel-down",
                "up wheel-down",
                "down wheel-down",
                "up wheel-down"
            ]
        );
        // The 4th command fails: QEMU may have pressed Ctrl or not, and b is still down.
        assert!(q.keyboard(&state(0x01, &[0x05])).is_err());
        assert_eq!(events.recv().unwrap(), ["down ctrl"]);
        q.keyboard(&KeyboardState::default()).unwrap();
        assert_eq!(events.recv().unwrap(), ["up b", "up ctrl"]);
    }
}
