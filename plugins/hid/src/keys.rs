//! Physical keys: one row per key position, naming it in each vocabulary that touches it.
//!
//! A key position is not a character. The browser names it by W3C `KeyboardEvent.code`,
//! the USB boot keyboard by its HID usage (page 0x07), XKB and the Linux kernel by the
//! evdev code, and QEMU's QMP by a `QKeyCode` name. Which character a position types is
//! the layout's business ([`crate::keymap`]), never this table's: `KeyZ` is the key that
//! says Z on a US keyboard, and it types `y` on a German one.
//!
//! Sources: the W3C "UI Events KeyboardEvent code Values", the USB HID Usage Tables
//! (section 10), `linux/input-event-codes.h` and QEMU's `qapi/ui.json`.

/// One key position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// W3C `KeyboardEvent.code`.
    pub code: &'static str,
    /// USB HID usage on the keyboard page.
    pub usage: u8,
    /// Linux evdev code; the XKB keycode is this plus 8.
    pub evdev: u16,
    /// QEMU `QKeyCode`.
    pub qcode: &'static str,
}

const fn k(code: &'static str, usage: u8, evdev: u16, qcode: &'static str) -> Key {
    Key {
        code,
        usage,
        evdev,
        qcode,
    }
}

/// Every key this plugin can press. The main block comes first, so that when two keys type
/// the same character (`1` and `Numpad1`), the keymap picks the main one.
pub static KEYS: &[Key] = &[
    k("KeyA", 0x04, 30, "a"),
    k("KeyB", 0x05, 48, "b"),
    k("KeyC", 0x06, 46, "c"),
    k("KeyD", 0x07, 32, "d"),
    k("KeyE", 0x08, 18, "e"),
    k("KeyF", 0x09, 33, "f"),
    k("KeyG", 0x0a, 34, "g"),
    k("KeyH", 0x0b, 35, "h"),
    k("KeyI", 0x0c, 23, "i"),
    k("KeyJ", 0x0d, 36, "j"),
    k("KeyK", 0x0e, 37, "k"),
    k("KeyL", 0x0f, 38, "l"),
    k("KeyM", 0x10, 50, "m"),
    k("KeyN", 0x11, 49, "n"),
    k("KeyO", 0x12, 24, "o"),
    k("KeyP", 0x13, 25, "p"),
    k("KeyQ", 0x14, 16, "q"),
    k("KeyR", 0x15, 19, "r"),
    k("KeyS", 0x16, 31, "s"),
    k("KeyT", 0x17, 20, "t"),
    k("KeyU", 0x18, 22, "u"),
    k("KeyV", 0x19, 47, "v"),
    k("KeyW", 0x1a, 17, "w"),
    k("KeyX", 0x1b, 45, "x"),
    k("KeyY", 0x1c, 21, "y"),
    k("KeyZ", 0x1d, 44, "z"),
    k("Digit1", 0x1e, 2, "1"),
    k("Digit2", 0x1f, 3, "2"),
    k("Digit3", 0x20, 4, "3"),
    k("Digit4", 0x21, 5, "4"),
    k("Digit5", 0x22, 6, "5"),
    k("Digit6", 0x23, 7, "6"),
    k("Digit7", 0x24, 8, "7"),
    k("Digit8", 0x25, 9, "8"),
    k("Digit9", 0x26, 10, "9"),
    k("Digit0", 0x27, 11, "0"),
    k("Enter", 0x28, 28, "ret"),
    k("Escape", 0x29, 1, "esc"),
    k("Backspace", 0x2a, 14, "backspace"),
    k("Tab", 0x2b, 15, "tab"),
    k("Space", 0x2c, 57, "spc"),
    k("Minus", 0x2d, 12, "minus"),
    k("Equal", 0x2e, 13, "equal"),
    k("BracketLeft", 0x2f, 26, "bracket_left"),
    k("BracketRight", 0x30, 27, "bracket_right"),
    k("Backslash", 0x31, 43, "backslash"),
    k("Semicolon", 0x33, 39, "semicolon"),
    k("Quote", 0x34, 40, "apostrophe"),
    k("Backquote", 0x35, 41, "grave_accent"),
    k("Comma", 0x36, 51, "comma"),
    k("Period", 0x37, 52, "dot"),
    k("Slash", 0x38, 53, "slash"),
    // The ISO key between left Shift and Z (`<>|` on German keyboards).
    k("IntlBackslash", 0x64, 86, "less"),
    k("IntlRo", 0x87, 89, "ro"),
    k("IntlYen", 0x89, 124, "yen"),
    k("CapsLock", 0x39, 58, "caps_lock"),
    k("F1", 0x3a, 59, "f1"),
    k("F2", 0x3b, 60, "f2"),
    k("F3", 0x3c, 61, "f3"),
    k("F4", 0x3d, 62, "f4"),
    k("F5", 0x3e, 63, "f5"),
    k("F6", 0x3f, 64, "f6"),
    k("F7", 0x40, 65, "f7"),
    k("F8", 0x41, 66, "f8"),
    k("F9", 0x42, 67, "f9"),
    k("F10", 0x43, 68, "f10"),
    k("F11", 0x44, 87, "f11"),
    k("F12", 0x45, 88, "f12"),
    k("PrintScreen", 0x46, 99, "sysrq"),
    k("ScrollLock", 0x47, 70, "scroll_lock"),
    k("Pause", 0x48, 119, "pause"),
    k("Insert", 0x49, 110, "insert"),
    k("Home", 0x4a, 102, "home"),
    k("PageUp", 0x4b, 104, "pgup"),
    k("Delete", 0x4c, 111, "delete"),
    k("End", 0x4d, 107, "end"),
    k("PageDown", 0x4e, 109, "pgdn"),
    k("ArrowRight", 0x4f, 106, "right"),
    k("ArrowLeft", 0x50, 105, "left"),
    k("ArrowDown", 0x51, 108, "down"),
    k("ArrowUp", 0x52, 103, "up"),
    k("NumLock", 0x53, 69, "num_lock"),
    k("NumpadDivide", 0x54, 98, "kp_divide"),
    k("NumpadMultiply", 0x55, 55, "kp_multiply"),
    k("NumpadSubtract", 0x56, 74, "kp_subtract"),
    k("NumpadAdd", 0x57, 78, "kp_add"),
    k("NumpadEnter", 0x58, 96, "kp_enter"),
    k("Numpad1", 0x59, 79, "kp_1"),
    k("Numpad2", 0x5a, 80, "kp_2"),
    k("Numpad3", 0x5b, 81, "kp_3"),
    k("Numpad4", 0x5c, 75, "kp_4"),
    k("Numpad5", 0x5d, 76, "kp_5"),
    k("Numpad6", 0x5e, 77, "kp_6"),
    k("Numpad7", 0x5f, 71, "kp_7"),
    k("Numpad8", 0x60, 72, "kp_8"),
    k("Numpad9", 0x61, 73, "kp_9"),
    k("Numpad0", 0x62, 82, "kp_0"),
    k("NumpadDecimal", 0x63, 83, "kp_decimal"),
    k("ContextMenu", 0x65, 127, "compose"),
    k("NumpadEqual", 0x67, 117, "kp_equals"),
    // Modifiers: usages 0xe0..=0xe7 are the boot report's modifier bits, in this order.
    k("ControlLeft", 0xe0, 29, "ctrl"),
    k("ShiftLeft", 0xe1, 42, "shift"),
    k("AltLeft", 0xe2, 56, "alt"),
    k("MetaLeft", 0xe3, 125, "meta_l"),
    k("ControlRight", 0xe4, 97, "ctrl_r"),
    k("ShiftRight", 0xe5, 54, "shift_r"),
    k("AltRight", 0xe6, 100, "alt_r"),
    k("MetaRight", 0xe7, 126, "meta_r"),
];

/// The key with W3C code `code`.
pub fn by_code(code: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.code == code)
}

/// The key with HID usage `usage`.
pub fn by_usage(usage: u8) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.usage == usage)
}

/// The boot report's modifier bit for a modifier usage (0xe0..=0xe7), else `None`.
pub fn modifier_bit(usage: u8) -> Option<u8> {
    (0xe0..=0xe7).contains(&usage).then(|| 1 << (usage - 0xe0))
}

/// A key by the names people type in `POST /keys`: W3C codes in any case (`KeyA`,
/// `ControlLeft`, `capslock`) and short aliases (`ctrl`, `alt`, `shift`, `meta`, `altgr`,
/// `del`, `esc`, `a`, `1`, `f4`).
pub fn by_name(name: &str) -> Option<&'static Key> {
    // W3C codes in any case: KeyA, capslock, pageup, f4, numpad1.
    if let Some(k) = KEYS.iter().find(|k| k.code.eq_ignore_ascii_case(name)) {
        return Some(k);
    }
    let lower = name.to_ascii_lowercase();
    let code = match lower.as_str() {
        "ctrl" | "control" => "ControlLeft",
        "shift" => "ShiftLeft",
        "alt" => "AltLeft",
        "altgr" => "AltRight",
        "meta" | "super" | "win" | "cmd" => "MetaLeft",
        "del" => "Delete",
        "esc" => "Escape",
        "return" => "Enter",
        "ins" => "Insert",
        "up" => "ArrowUp",
        "down" => "ArrowDown",
        "left" => "ArrowLeft",
        "right" => "ArrowRight",
        "sysrq" => "PrintScreen",
        "menu" => "ContextMenu",
        other => match other.as_bytes() {
            [c @ b'a'..=b'z'] => return by_code(&format!("Key{}", c.to_ascii_uppercase() as char)),
            [c @ b'0'..=b'9'] => return by_code(&format!("Digit{}", *c as char)),
            _ => return None,
        },
    };
    by_code(code)
}

/// The usages of a combination such as `ctrl+alt+delete`, in the order given (each once).
pub fn parse_combination(spec: &str) -> Result<Vec<u8>, String> {
    let mut usages = Vec::new();
    for name in spec.split('+').map(str::trim) {
        match by_name(name) {
            Some(k) if !usages.contains(&k.usage) => usages.push(k.usage),
            Some(_) => {}
            None => {
                return Err(format!(
                    "{name:?} in {spec:?} is not a key; use W3C codes (KeyA, ControlLeft, CapsLock, any case) or ctrl, alt, shift, meta, altgr, del, esc, enter, a-z, 0-9"
                ))
            }
        }
    }
    if usages.is_empty() {
        return Err("no keys given".into());
    }
    Ok(usages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_vocabulary_names_each_key_once() {
        let mut codes = HashSet::new();
        let mut usages = HashSet::new();
        let mut evdevs = HashSet::new();
        let mut qcodes = HashSet::new();
        for k in KEYS {
            assert!(codes.insert(k.code), "code {} twice", k.code);
            assert!(usages.insert(k.usage), "usage {:#x} twice", k.usage);
            assert!(evdevs.insert(k.evdev), "evdev {} twice", k.evdev);
            assert!(qcodes.insert(k.qcode), "qcode {} twice", k.qcode);
        }
    }

    #[test]
    fn names_and_aliases() {
        assert_eq!(by_name("ctrl").unwrap().usage, 0xe0);
        assert_eq!(by_name("AltRight").unwrap().qcode, "alt_r");
        assert_eq!(by_name("delete").unwrap().usage, 0x4c);
        assert_eq!(by_name("c").unwrap().code, "KeyC");
        assert_eq!(by_name("7").unwrap().code, "Digit7");
        assert_eq!(by_name("F4").unwrap().usage, 0x3d);
        assert_eq!(by_name("f12").unwrap().usage, 0x45);
        assert!(by_name("f13").is_none());
        assert_eq!(by_name("capslock").unwrap().usage, 0x39);
        assert_eq!(by_name("NUMPAD1").unwrap().usage, 0x59);
        assert!(by_name("nosuchkey").is_none());
        assert_eq!(modifier_bit(0xe6), Some(0x40));
        assert_eq!(modifier_bit(0x04), None);
        assert_eq!(
            parse_combination("ctrl+alt+del").unwrap(),
            [0xe0, 0xe2, 0x4c]
        );
        assert_eq!(parse_combination("a+a").unwrap(), [0x04]);
        assert!(parse_combination("ctrl+banana")
            .unwrap_err()
            .contains("banana"));
    }
}
