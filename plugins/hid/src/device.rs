//! What every hid backend is: a keyboard and a mouse that take whole states.
//!
//! The plugin hands a backend the complete keyboard state (the modifiers and every key
//! down) rather than "press" and "release" events. A USB boot keyboard report *is* that
//! state, and QEMU's event interface is fed the difference from the last state it got.
//! So a backend never has to remember which presses it owes a release: writing the empty
//! state releases everything, whatever happened before.

/// The keyboard as the target should see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyboardState {
    /// Boot report modifier bits (bit 0 ControlLeft … bit 7 MetaRight).
    pub mods: u8,
    /// HID usages of the other keys down, oldest first.
    pub keys: Vec<u8>,
}

/// A boot keyboard reports at most six keys; more is "phantom" (ErrorRollOver in every slot).
pub const BOOT_KEYS: usize = 6;
const ERROR_ROLL_OVER: u8 = 0x01;

impl KeyboardState {
    pub fn is_empty(&self) -> bool {
        self.mods == 0 && self.keys.is_empty()
    }

    /// The 8-byte boot keyboard input report: modifiers, reserved, six key slots.
    pub fn boot_report(&self) -> [u8; 8] {
        let mut r = [0u8; 8];
        r[0] = self.mods;
        if self.keys.len() > BOOT_KEYS {
            r[2..].fill(ERROR_ROLL_OVER);
        } else {
            r[2..2 + self.keys.len()].copy_from_slice(&self.keys);
        }
        r
    }
}

/// Mouse buttons, as bits of the report's first byte.
pub mod button {
    pub const LEFT: u8 = 0x01;
    pub const RIGHT: u8 = 0x02;
    pub const MIDDLE: u8 = 0x04;
    pub const BACK: u8 = 0x08;
    pub const FORWARD: u8 = 0x10;

    /// A button by the names the API and the SLP take.
    pub fn by_name(name: &str) -> Option<u8> {
        Some(match name {
            "left" => LEFT,
            "right" => RIGHT,
            "middle" => MIDDLE,
            "back" => BACK,
            "forward" => FORWARD,
            _ => return None,
        })
    }
}

/// The largest absolute coordinate: both axes run 0..=32767, whatever the screen size.
pub const ABS_MAX: u16 = 32767;

/// How the pointer moves in one mouse report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// To a point: both axes 0..=[`ABS_MAX`].
    Absolute { x: u16, y: u16 },
    /// By an offset, in mickeys.
    Relative { dx: i32, dy: i32 },
    /// Not at all: a button or wheel change only.
    None,
}

/// One mouse report: the buttons held after it, a motion, and wheel notches (up > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MouseReport {
    pub buttons: u8,
    pub motion: Motion,
    pub wheel: i8,
}

/// A keyboard and mouse on the target. Calls block until the target took the report or
/// the backend's timeout passed; an `Err` is the reason, for a log line and a `503`.
pub trait Device: Send {
    /// Makes the target's keyboard show `state`.
    fn keyboard(&mut self, state: &KeyboardState) -> Result<(), String>;

    /// Sends one mouse report.
    fn mouse(&mut self, report: &MouseReport) -> Result<(), String>;

    /// The keyboard LEDs the target last set (bit 0 Num Lock, bit 1 Caps Lock, bit 2
    /// Scroll Lock), when the backend can know them.
    fn leds(&mut self) -> Option<u8> {
        None
    }

    /// One line for the log: the backend and what it drives.
    fn describe(&self) -> String;
}

/// Keyboard LED bits, as the boot keyboard's output report has them.
pub mod led {
    pub const NUM_LOCK: u8 = 0x01;
    pub const CAPS_LOCK: u8 = 0x02;
    pub const SCROLL_LOCK: u8 = 0x04;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_reports() {
        let s = KeyboardState {
            mods: 0x02,
            keys: vec![0x04, 0x05],
        };
        assert_eq!(s.boot_report(), [0x02, 0, 0x04, 0x05, 0, 0, 0, 0]);
        let seven = KeyboardState {
            mods: 0,
            keys: (4..11).collect(),
        };
        assert_eq!(seven.boot_report(), [0, 0, 1, 1, 1, 1, 1, 1]);
        assert!(KeyboardState::default().is_empty());
        assert_eq!(KeyboardState::default().boot_report(), [0; 8]);
    }
}
