//! Character → keystrokes, for paste, computed from the real XKB layouts.
//!
//! Paste must type what the target's layout turns back into the same text. So the table
//! is not typed by hand: each layout is compiled with libxkbcommon from the machine's
//! `xkb-data` (rules `evdev`, model `pc105`, as a Linux desktop would), and inverted. For
//! each physical key in [`crate::keys::KEYS`] and each modifier combination a person can
//! hold for typing (none, Shift, AltGr, Shift+AltGr), the keymap says which keysym comes out;
//! its character is recorded with the first way found, so fewer modifiers win. The keypad
//! is never used (its keys depend on the target's NumLock).
//!
//! Characters that need a dead key (`ê` on French, `^` on German) come from the compose
//! table of the `en_US.UTF-8` locale (libX11's, which libxkbcommon reads): every dead key
//! the layout has is tried before every character the layout types directly, and what
//! composes to a single character becomes a two-stroke sequence.

use std::collections::HashMap;

use xkbcommon::xkb;

use crate::keys::{self, Key};

/// One keystroke: hold `mods` (boot report modifier bits), press and release `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    pub key: &'static Key,
    pub mods: u8,
}

/// Boot report modifier bits that paste uses.
pub const SHIFT: u8 = 0x02; // ShiftLeft
pub const ALTGR: u8 = 0x40; // AltRight

/// One layout's inversion.
pub struct Keymap {
    /// The name users give (`de`, `uk`).
    pub name: String,
    /// What XKB compiled (`de`, `gb`, `de(nodeadkeys)`).
    pub xkb: String,
    strokes: HashMap<char, Vec<Stroke>>,
    /// The same with Caps Lock on, as the layout defines it (letters swap case; on some
    /// layouts more than letters).
    caps_strokes: HashMap<char, Vec<Stroke>>,
}

/// Where the layout names users give differ from XKB's.
fn xkb_names(name: &str) -> (String, String) {
    let name = match name {
        "uk" => "gb",
        other => other,
    };
    match name.split_once('(') {
        Some((layout, variant)) => (
            layout.to_string(),
            variant.trim_end_matches(')').to_string(),
        ),
        None => (name.to_string(), String::new()),
    }
}

/// The character a keysym types, if paste can use it: printable, or Enter and Tab.
fn typed_char(sym: xkb::Keysym) -> Option<char> {
    let c = char::from_u32(xkb::keysym_to_utf32(sym))?;
    match c {
        '\r' => Some('\n'),
        '\t' => Some('\t'),
        c if c.is_control() => None,
        c => Some(c),
    }
}

fn is_dead(sym: xkb::Keysym) -> bool {
    // XKB_KEY_dead_grave ..= XKB_KEY_dead_longsolidusoverlay: the dead-key block.
    (0xfe50..=0xfe93).contains(&sym.raw())
}

fn xkb_keycode(key: &Key) -> xkb::Keycode {
    xkb::Keycode::new(u32::from(key.evdev) + 8)
}

/// A shared compose table, or `None` (with the reason logged by the caller) when the
/// locale's Compose file is missing.
pub fn compose_table(context: &xkb::Context) -> Result<xkb::compose::Table, String> {
    xkb::compose::Table::new_from_locale(
        context,
        std::ffi::OsStr::new("en_US.UTF-8"),
        xkb::compose::COMPILE_NO_FLAGS,
    )
    .map_err(|()| {
        "no compose table for en_US.UTF-8 (Debian libx11-data, /usr/share/X11/locale): \
         dead-key characters cannot be pasted"
            .to_string()
    })
}

impl Keymap {
    /// Compiles layout `name` and inverts it; `compose` adds the dead-key sequences.
    pub fn compile(
        context: &xkb::Context,
        name: &str,
        compose: Option<&xkb::compose::Table>,
    ) -> Result<Keymap, String> {
        let (layout, variant) = xkb_names(name);
        let keymap = xkb::Keymap::new_from_names(
            context,
            "evdev",
            "pc105",
            &layout,
            &variant,
            None,
            xkb::KEYMAP_COMPILE_NO_FLAGS,
        )
        .ok_or_else(|| {
            format!("XKB cannot compile layout {name:?} (layout {layout:?}, variant {variant:?}); is it in /usr/share/X11/xkb/symbols?")
        })?;
        let xkb_name = if variant.is_empty() {
            layout
        } else {
            format!("{layout}({variant})")
        };

        let shift = keys::by_code("ShiftLeft").expect("ShiftLeft is in KEYS");
        // AltGr is whichever key the layout makes ISO_Level3_Shift; `us` has none.
        let level3 = keys_with_syms(&keymap, &[], false)
            .into_iter()
            .find_map(|(key, sym)| {
                (sym.raw() == 0xfe03/* ISO_Level3_Shift */).then_some(key)
            });
        let mut combos: Vec<(u8, Vec<&'static Key>)> = vec![(0, vec![]), (SHIFT, vec![shift])];
        if let Some(altgr) = level3 {
            if keys::modifier_bit(altgr.usage) == Some(ALTGR) {
                combos.push((ALTGR, vec![altgr]));
                combos.push((SHIFT | ALTGR, vec![shift, altgr]));
            }
        }

        let strokes = invert(&keymap, &combos, compose, false);
        let caps_strokes = invert(&keymap, &combos, compose, true);
        Ok(Keymap {
            name: name.to_string(),
            xkb: xkb_name,
            strokes,
            caps_strokes,
        })
    }

    /// The strokes that type `c` with Caps Lock off, if this layout can.
    pub fn strokes(&self, c: char) -> Option<&[Stroke]> {
        self.strokes_with(c, false)
    }

    /// The strokes that type `c` with Caps Lock as given.
    pub fn strokes_with(&self, c: char, caps_lock: bool) -> Option<&[Stroke]> {
        let table = if caps_lock {
            &self.caps_strokes
        } else {
            &self.strokes
        };
        table.get(&c).map(Vec::as_slice)
    }

    /// How many characters this layout can type.
    pub fn len(&self) -> usize {
        self.strokes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strokes.is_empty()
    }

    /// The keystrokes for `text` on a target whose Caps Lock is as given, or every
    /// character it cannot type (each once, in order). `\r\n` and a lone `\r` are both
    /// typed as Enter.
    pub fn plan(&self, text: &str, caps_lock: bool) -> Result<Vec<Stroke>, Vec<char>> {
        let mut out = Vec::with_capacity(text.len() * 2);
        let mut missing: Vec<char> = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(mut c) = chars.next() {
            if c == '\r' {
                if chars.peek() == Some(&'\n') {
                    continue;
                }
                c = '\n';
            }
            match self.strokes_with(c, caps_lock) {
                Some(s) => out.extend_from_slice(s),
                None if !missing.contains(&c) => missing.push(c),
                None => {}
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(missing)
        }
    }
}

/// Character → strokes: every key under every modifier combination (fewer modifiers
/// first), then dead key + base through the compose table; with Caps Lock locked or not.
fn invert(
    keymap: &xkb::Keymap,
    combos: &[(u8, Vec<&'static Key>)],
    compose: Option<&xkb::compose::Table>,
    caps_lock: bool,
) -> HashMap<char, Vec<Stroke>> {
    let mut strokes: HashMap<char, Vec<Stroke>> = HashMap::new();
    let mut direct: Vec<(Stroke, xkb::Keysym)> = Vec::new();
    let mut dead: Vec<(Stroke, xkb::Keysym)> = Vec::new();
    for (mods, held) in combos {
        for (key, sym) in keys_with_syms(keymap, held, caps_lock) {
            // Never the keypad: what it types depends on the target's NumLock, and
            // some keypad keys (KP_Equal) are missing from console keymaps.
            if keys::modifier_bit(key.usage).is_some() || key.code.starts_with("Numpad") {
                continue;
            }
            let stroke = Stroke { key, mods: *mods };
            if is_dead(sym) {
                dead.push((stroke, sym));
            } else if let Some(c) = typed_char(sym) {
                if let std::collections::hash_map::Entry::Vacant(e) = strokes.entry(c) {
                    e.insert(vec![stroke]);
                    direct.push((stroke, sym));
                }
            }
        }
    }
    if let Some(table) = compose {
        let mut state = xkb::compose::State::new(table, xkb::compose::STATE_NO_FLAGS);
        for (dead_stroke, dead_sym) in &dead {
            for (base, base_sym) in &direct {
                state.reset();
                state.feed(*dead_sym);
                state.feed(*base_sym);
                if state.status() != xkb::compose::Status::Composed {
                    continue;
                }
                let Some(text) = state.utf8() else { continue };
                let mut chars = text.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    if !c.is_control() {
                        strokes
                            .entry(c)
                            .or_insert_with(|| vec![*dead_stroke, *base]);
                    }
                }
            }
        }
    }
    strokes
}

/// Each key of [`keys::KEYS`] with the keysym it gives while `held` modifiers are down
/// (and Caps Lock locked, if asked).
fn keys_with_syms(
    keymap: &xkb::Keymap,
    held: &[&Key],
    caps_lock: bool,
) -> Vec<(&'static Key, xkb::Keysym)> {
    let mut state = xkb::State::new(keymap);
    for m in held {
        state.update_key(xkb_keycode(m), xkb::KeyDirection::Down);
    }
    if caps_lock {
        let depressed = state.serialize_mods(xkb::STATE_MODS_DEPRESSED);
        let lock = 1 << keymap.mod_get_index("Lock");
        state.update_mask(depressed, 0, lock, 0, 0, 0);
    }
    keys::KEYS
        .iter()
        .map(|k| (k, state.key_get_one_sym(xkb_keycode(k))))
        .filter(|(_, sym)| sym.raw() != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(name: &str) -> Keymap {
        let ctx = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
        let compose = compose_table(&ctx).expect("libx11-data's compose table");
        Keymap::compile(&ctx, name, Some(&compose)).unwrap()
    }

    fn one(map: &Keymap, c: char) -> (&'static str, u8) {
        let s = map
            .strokes(c)
            .unwrap_or_else(|| panic!("{} cannot type {c:?}", map.name));
        assert_eq!(s.len(), 1, "{c:?} on {} is {s:?}", map.name);
        (s[0].key.code, s[0].mods)
    }

    #[test]
    fn us_types_all_printable_ascii_without_altgr() {
        let us = compile("us");
        for c in (0x20u8..0x7f).map(char::from).chain(['\n', '\t']) {
            let (_, mods) = one(&us, c);
            assert_eq!(mods & ALTGR, 0, "{c:?}");
        }
        assert_eq!(one(&us, 'a'), ("KeyA", 0));
        assert_eq!(one(&us, 'A'), ("KeyA", SHIFT));
        assert_eq!(one(&us, '@'), ("Digit2", SHIFT));
        assert_eq!(one(&us, '|'), ("Backslash", SHIFT));
        assert_eq!(one(&us, '\n'), ("Enter", 0));
        assert_eq!(
            one(&us, '1'),
            ("Digit1", 0),
            "the main block beats the keypad"
        );
        assert!(us.strokes('€').is_none());
    }

    #[test]
    fn german_has_altgr_the_iso_key_and_dead_keys() {
        let de = compile("de");
        assert_eq!(one(&de, 'z'), ("KeyY", 0));
        assert_eq!(one(&de, 'ä'), ("Quote", 0));
        assert_eq!(one(&de, 'Ü'), ("BracketLeft", SHIFT));
        assert_eq!(one(&de, 'ß'), ("Minus", 0));
        assert_eq!(one(&de, '@'), ("KeyQ", ALTGR));
        assert_eq!(one(&de, '€'), ("KeyE", ALTGR));
        assert_eq!(one(&de, '|'), ("IntlBackslash", ALTGR));
        assert_eq!(one(&de, '<'), ("IntlBackslash", 0));
        // Not KP_Equal, which needs no Shift but the console keymap may not have.
        assert_eq!(one(&de, '='), ("Digit0", SHIFT));
        // `^` is a dead key on German keyboards: dead_circumflex, then space.
        let caret = de.strokes('^').unwrap();
        assert_eq!(caret.len(), 2);
        assert_eq!(caret[0].key.code, "Backquote");
        assert_eq!(caret[1].key.code, "Space");
        let e_acute = de.strokes('é').unwrap();
        assert_eq!(
            (e_acute[0].key.code, e_acute[1].key.code),
            ("Equal", "KeyE")
        );
    }

    #[test]
    fn other_layouts() {
        let fr = compile("fr");
        assert_eq!(one(&fr, 'a'), ("KeyQ", 0));
        assert_eq!(one(&fr, '1'), ("Digit1", SHIFT));
        let e_circ = fr.strokes('ê').unwrap();
        assert_eq!(e_circ.len(), 2, "{e_circ:?}");
        let uk = compile("uk");
        assert_eq!(uk.xkb, "gb");
        assert_eq!(one(&uk, '£'), ("Digit3", SHIFT));
        assert_eq!(one(&uk, '"'), ("Digit2", SHIFT));
        assert_eq!(one(&uk, '#'), ("Backslash", 0));
        let es = compile("es");
        assert_eq!(one(&es, 'ñ'), ("Semicolon", 0));
        let it = compile("it");
        assert_eq!(one(&it, 'è'), ("BracketLeft", 0));
        let ru = compile("ru");
        assert_eq!(one(&ru, 'й'), ("KeyQ", 0));
        assert!(ru.strokes('q').is_none(), "ru has no Latin letters");
        let nodead = compile("de(nodeadkeys)");
        assert_eq!(one(&nodead, '^'), ("Backquote", 0));
    }

    #[test]
    fn plans_list_what_cannot_be_typed() {
        let us = compile("us");
        let plan = us.plan("Hi\r\n!", false).unwrap();
        let codes: Vec<_> = plan.iter().map(|s| (s.key.code, s.mods)).collect();
        assert_eq!(
            codes,
            [
                ("KeyH", SHIFT),
                ("KeyI", 0),
                ("Enter", 0),
                ("Digit1", SHIFT)
            ]
        );
        assert_eq!(us.plan("a€bäc€", false).unwrap_err(), vec!['€', 'ä']);
    }

    #[test]
    fn caps_lock_swaps_the_shift_of_letters_only() {
        let us = compile("us");
        let plan = us.plan("aA1!", true).unwrap();
        let got: Vec<_> = plan.iter().map(|s| (s.key.code, s.mods)).collect();
        assert_eq!(
            got,
            [
                ("KeyA", SHIFT),
                ("KeyA", 0),
                ("Digit1", 0),
                ("Digit1", SHIFT)
            ]
        );
        let de = compile("de");
        assert_eq!(de.strokes_with('ä', true).unwrap()[0].mods, SHIFT);
        assert_eq!(de.strokes_with('Ä', true).unwrap()[0].mods, 0);
        assert_eq!(de.strokes_with('@', true).unwrap()[0].mods, ALTGR);
    }

    #[test]
    fn an_unknown_layout_is_an_error() {
        let ctx = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
        let e = Keymap::compile(&ctx, "xx-no-such", None).err().unwrap();
        assert!(e.contains("xx-no-such"), "{e}");
    }
}
