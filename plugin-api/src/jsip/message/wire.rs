//! The message's JSON in one pass: frames are read straight into typed slots and written
//! straight from the fields, with no intermediate `serde_json::Value` tree or sorted map.
//! Every message crosses this code twice per hop (socket, plugin boundary), so it is the
//! hot path of the whole daemon.

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use std::borrow::Cow;

use super::fields::LentFields;
use super::{Kind, Message};
use crate::jsip::cut_at_ascii;

/// The keys JSIP gives a meaning (JSIP.md §2). Any other key is kept in `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Type,
    Code,
    Desc,
    RequestUri,
    From,
    To,
    DialogueId,
    CSeq,
    Router,
    RelatedId,
    Expire,
    Body,
    ContentType,
    PAssertedIdentity,
    Event,
    Reason,
}

impl Key {
    const ALL: [(Key, &'static str); 16] = [
        (Key::Type, "Type"),
        (Key::Code, "Code"),
        (Key::Desc, "Desc"),
        (Key::RequestUri, "Request-URI"),
        (Key::From, "From"),
        (Key::To, "To"),
        (Key::DialogueId, "DialogueID"),
        (Key::CSeq, "CSeq"),
        (Key::Router, "Router"),
        (Key::RelatedId, "RelatedID"),
        (Key::Expire, "Expire"),
        (Key::Body, "Body"),
        (Key::ContentType, "Content-Type"),
        (Key::PAssertedIdentity, "P-Asserted-Identity"),
        (Key::Event, "Event"),
        (Key::Reason, "Reason"),
    ];

    pub(super) fn name(self) -> &'static str {
        Key::ALL[self as usize].1
    }

    pub(super) fn of(name: &str) -> Option<Key> {
        // A match, not a search of ALL: the compiler switches on the length first.
        Some(match name {
            "Type" => Key::Type,
            "Code" => Key::Code,
            "Desc" => Key::Desc,
            "Request-URI" => Key::RequestUri,
            "From" => Key::From,
            "To" => Key::To,
            "DialogueID" => Key::DialogueId,
            "CSeq" => Key::CSeq,
            "Router" => Key::Router,
            "RelatedID" => Key::RelatedId,
            "Expire" => Key::Expire,
            "Body" => Key::Body,
            "Content-Type" => Key::ContentType,
            "P-Asserted-Identity" => Key::PAssertedIdentity,
            "Event" => Key::Event,
            "Reason" => Key::Reason,
            _ => return None,
        })
    }
}

/// A frame's object, split into the known keys' values and the rest.
pub(super) struct Slots {
    known: [Option<Value>; 16],
    pub(super) extra: Map<String, Value>,
}

impl Slots {
    pub(super) fn empty() -> Slots {
        Slots {
            known: Default::default(),
            extra: Map::new(),
        }
    }

    pub(super) fn from_map(mut map: Map<String, Value>) -> Slots {
        let mut known: [Option<Value>; 16] = Default::default();
        for (key, name) in Key::ALL {
            known[key as usize] = map.remove(name);
        }
        Slots { known, extra: map }
    }

    pub(super) fn take(&mut self, key: Key) -> Option<Value> {
        self.known[key as usize].take()
    }

    pub(super) fn peek(&self, key: Key) -> Option<&Value> {
        self.known[key as usize].as_ref()
    }
}

/// A key as read: known (no allocation) or kept as is.
enum KeyOf {
    Known(Key),
    Other(String),
}

impl<'de> Deserialize<'de> for KeyOf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyOf, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyOf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyOf, E> {
                Ok(match Key::of(s) {
                    Some(k) => KeyOf::Known(k),
                    None => KeyOf::Other(s.to_owned()),
                })
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<KeyOf, E> {
                Ok(match Key::of(&s) {
                    Some(k) => KeyOf::Known(k),
                    None => KeyOf::Other(s),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Reads a JSON object into [`Slots`]; anything but an object is an error (the caller
/// then finds out what it was, for the 400's reason).
pub(super) struct SlotsSeed;

impl<'de> DeserializeSeed<'de> for SlotsSeed {
    type Value = Slots;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slots, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SlotsSeed {
    type Value = Slots;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slots, A::Error> {
        let mut slots = Slots::empty();
        // A repeated key keeps its last value, as serde_json's own map does.
        while let Some(key) = map.next_key::<KeyOf>()? {
            let value: Value = map.next_value()?;
            match key {
                KeyOf::Known(k) => slots.known[k as usize] = Some(value),
                KeyOf::Other(name) => {
                    slots.extra.insert(name, value);
                }
            }
        }
        Ok(slots)
    }
}

/// Parses `frame` as one JSON object into `slots` (empty), or gives serde_json's error.
/// The slots are filled in place: they are some 550 bytes, and returning them by value
/// cost a copy at each of the two returns.
pub(super) fn read(frame: &str, slots: &mut Slots) -> Result<(), serde_json::Error> {
    if Reader::new(frame).frame(slots).is_some() {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(frame);
    *slots = SlotsSeed.deserialize(&mut de)?;
    de.end()
}

/// `frame`'s fields, typed and borrowed from it, when [`Reader`] reads it and each
/// known key holds what JSIP says (text, a whole number, any `Body`); `None` for any
/// other frame, which [`read`] then reads into [`Slots`] (to say what a field held
/// instead, or what the frame was). Taking the text from the frame when a field is
/// taken, not into a `Value` as it is read, leaves out a `String` per field (the
/// `Type`'s is never made) and the slots' own cost, some 1,000 instructions a MESSAGE.
///
/// The fields are filled in place (from [`LentFields::frame`]); on `None` they hold a
/// part of the frame, for the caller to drop. Returned by value, they cost a copy of
/// their 380 bytes a frame.
pub(super) fn read_fields<'a>(
    frame: &'a str,
    fields: &mut LentFields<'a, Cow<'a, str>>,
) -> Option<()> {
    let mut r = Reader::new(frame);
    r.expect(b'{')?;
    if !r.empty_close(b'}')? {
        loop {
            r.expect(b'"')?;
            // A known key, or the name of another (or of a known one, escaped).
            let key = match r.known_key() {
                Some(key) => Ok(key),
                None => {
                    let name = r.string_raw()?;
                    Key::of(&name).ok_or(name)
                }
            };
            r.expect(b':')?;
            match key {
                Ok(Key::Type) => {
                    r.expect(b'"')?;
                    // Only compared, so only a borrowed one (escapes are left to `read`).
                    match r.string_raw()? {
                        Cow::Borrowed(t) => fields.set_type(t),
                        Cow::Owned(_) => return None,
                    }
                }
                Ok(Key::Body) => fields.set_body(r.value(1)?),
                Ok(key) => {
                    if let Some(slot) = fields.text_slot(key) {
                        r.expect(b'"')?;
                        *slot = Some(r.string_raw()?);
                    } else {
                        let slot = fields.number_slot(key).expect("every key is one of them");
                        match r.next()? {
                            b @ b'0'..=b'9' => *slot = Some(r.whole_number(b)?),
                            _ => return None,
                        }
                    }
                }
                Err(name) => {
                    let value = r.value(1)?;
                    fields.insert_extra(name.into_owned(), value);
                }
            }
            if !r.next_or_close(b'}')? {
                break;
            }
        }
    }
    r.end()
}

/// `text` as one JSON value if [`Reader`] reads it, `None` where it gives up (then ask
/// serde_json, for the value or for its error).
pub(super) fn read_value(text: &str) -> Option<Value> {
    Reader::new(text).whole_value()
}

/// The usual frame read in one pass over its bytes: an object whose strings have at
/// most the short escapes, whose numbers are whole and not negative, nested objects and
/// arrays of the same. Anything else (`\u` escapes, other numbers, and every invalid
/// frame) makes it give up with `None`, and serde_json reads the frame instead, so
/// what this accepts it reads exactly as serde_json does (tested against it) and every
/// error is still serde_json's. serde_json's reader, through the `Deserializer` and
/// `Visitor` calls and a `Value` per key, cost about 4,000 instructions for a 200-byte
/// MESSAGE; this reader a third of that.
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

/// Where the first byte from `from` that ends a plain run of JSON string text is (a
/// quote, a backslash or a control character), or the length. Eight bytes at a time:
/// strings are most of a frame's bytes, in the reader and the writer both.
fn plain_run(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` below `n` (`w` under 0x80): a borrow can only
    // mark bytes above a true one, so the lowest mark is right.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let stops = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b < 0x20 || b == b'"' || b == b'\\' {
            break;
        }
        i += 1;
    }
    i
}

/// serde_json refuses deeper nesting (its recursion limit); left to it.
const MAX_DEPTH: usize = 100;

impl<'a> Reader<'a> {
    fn new(frame: &'a str) -> Reader<'a> {
        Reader {
            text: frame,
            bytes: frame.as_bytes(),
            at: 0,
        }
    }

    /// Fills `slots` (empty); on `None` they hold a part of the frame, for the caller to
    /// drop.
    fn frame(mut self, slots: &mut Slots) -> Option<()> {
        self.expect(b'{')?;
        self.object(1, |key, value| match Key::of(&key) {
            Some(k) => slots.known[k as usize] = Some(value),
            None => {
                slots.extra.insert(key.into_owned(), value);
            }
        })?;
        self.end()
    }

    /// One whole JSON value, for text that is nothing else (a `Body` or the unknown
    /// keys crossing the `.so` boundary as text).
    fn whole_value(mut self) -> Option<Value> {
        let value = self.value(1)?;
        self.end()?;
        Some(value)
    }

    /// Only white space is left.
    fn end(&mut self) -> Option<()> {
        self.skip_ws();
        (self.at == self.bytes.len()).then_some(())
    }

    /// An object's members after its `{`, each given to `member` in order (a repeated
    /// key is given twice: the caller keeps the last, as serde_json's map does).
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(std::borrow::Cow<'a, str>, Value),
    ) -> Option<()> {
        if self.empty_close(b'}')? {
            return Some(());
        }
        loop {
            self.expect(b'"')?;
            let key = self.string_raw()?;
            self.expect(b':')?;
            member(key, self.value(depth)?);
            if !self.next_or_close(b'}')? {
                return Some(());
            }
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after white space, taken.
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let mut b = *self.bytes.get(self.at)?;
        // Most frames have no white space between tokens: asked once, not looped for.
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            self.skip_ws();
            b = *self.bytes.get(self.at)?;
        }
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// After an opening bracket: true if `close` follows at once (an empty one).
    fn empty_close(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        let empty = *self.bytes.get(self.at)? == close;
        if empty {
            self.at += 1;
        }
        Some(empty)
    }

    /// After an element: true if a comma follows (more to come), false at `close`.
    fn next_or_close(&mut self, close: u8) -> Option<bool> {
        match self.next()? {
            b',' => Some(true),
            b if b == close => Some(false),
            _ => None,
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match self.next()? {
            b'"' => Value::String(self.string_raw()?.into_owned()),
            b'{' => {
                let mut map = Map::new();
                self.object(depth + 1, |key, value| {
                    map.insert(key.into_owned(), value);
                })?;
                Value::Object(map)
            }
            b'[' => {
                let mut items = Vec::new();
                if !self.empty_close(b']')? {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if !self.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                Value::Array(items)
            }
            b @ b'0'..=b'9' => Value::from(self.whole_number(b)?),
            b't' => self.word(b"rue", Value::Bool(true))?,
            b'f' => self.word(b"alse", Value::Bool(false))?,
            b'n' => self.word(b"ull", Value::Null)?,
            _ => return None,
        })
    }

    fn word(&mut self, rest: &[u8], value: Value) -> Option<Value> {
        let end = self.at + rest.len();
        (self.bytes.get(self.at..end)? == rest).then(|| {
            self.at = end;
            value
        })
    }

    /// A number that is a whole u64 (serde_json reads that as a u64 too); a fraction,
    /// an exponent, a leading zero or an overflow gives up.
    fn whole_number(&mut self, first: u8) -> Option<u64> {
        let mut n = u64::from(first - b'0');
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b'0'..=b'9' if first != b'0' => {
                    n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                    self.at += 1;
                }
                b'0'..=b'9' | b'.' | b'e' | b'E' => return None,
                _ => break,
            }
        }
        Some(n)
    }

    /// After a key's opening quote: the known key whose name and closing quote follow,
    /// taken; `None` (nothing taken) for any other text. Each name is compared whole, a
    /// few bytes at once, where scanning the name for its end and then matching it cost
    /// some 60 instructions a key, seven or eight times a frame.
    #[inline(always)]
    fn known_key(&mut self) -> Option<Key> {
        let rest = &self.bytes[self.at..];
        let is = |name: &[u8]| {
            rest.len() > name.len() && rest[name.len()] == b'"' && rest.starts_with(name)
        };
        let key = match *rest.first()? {
            b'T' if is(b"Type") => Key::Type,
            b'T' if is(b"To") => Key::To,
            b'F' if is(b"From") => Key::From,
            b'D' if is(b"DialogueID") => Key::DialogueId,
            b'D' if is(b"Desc") => Key::Desc,
            b'C' if is(b"CSeq") => Key::CSeq,
            b'C' if is(b"Code") => Key::Code,
            b'C' if is(b"Content-Type") => Key::ContentType,
            b'B' if is(b"Body") => Key::Body,
            b'R' if is(b"Request-URI") => Key::RequestUri,
            b'R' if is(b"Router") => Key::Router,
            b'R' if is(b"RelatedID") => Key::RelatedId,
            b'R' if is(b"Reason") => Key::Reason,
            b'E' if is(b"Expire") => Key::Expire,
            b'E' if is(b"Event") => Key::Event,
            b'P' if is(b"P-Asserted-Identity") => Key::PAssertedIdentity,
            _ => return None,
        };
        self.at += key.name().len() + 1;
        Some(key)
    }

    /// A string's text, after its opening quote: borrowed when it has no escapes.
    /// Inlined into its callers: it runs twice per field (key and value), and its call
    /// (saving and restoring registers) cost as much as scanning a short string.
    #[inline(always)]
    fn string_raw(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        let start = self.at;
        self.at = plain_run(self.bytes, start);
        match *self.bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                // After the opening quote, at the closing one.
                Some(std::borrow::Cow::Borrowed(cut_at_ascii(
                    self.text,
                    start,
                    self.at - 1,
                )))
            }
            b'\\' => self.string_escaped(start).map(std::borrow::Cow::Owned),
            _ => None,
        }
    }

    /// The rest of a string with escapes, from its start; `\u` gives up.
    fn string_escaped(&mut self, start: usize) -> Option<String> {
        let bytes = self.bytes;
        let mut out = Vec::with_capacity(self.at - start + 16);
        out.extend_from_slice(&bytes[start..self.at]);
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(match *bytes.get(self.at + 1)? {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        _ => return None,
                    });
                    self.at += 2;
                }
                0..=0x1f => return None,
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }
}

impl Message {
    /// The frame text, written by hand: the same bytes as the [`Serialize`] impl below
    /// through serde_json (tested against it), in one buffer sized up front, with
    /// strings that need no escape copied as they are. Every message a socket sends is
    /// written here; serde_json's writer cost about twice as much. Each field's key,
    /// comma and quotes are one constant (`,"From":"`), so a string field is three
    /// copies, not six.
    pub(super) fn write_json(&self) -> String {
        let strings = [
            &self.desc,
            &self.request_uri,
            &self.router,
            &self.content_type,
            &self.p_asserted_identity,
            &self.event,
            &self.reason,
        ];
        let guess = 160
            + self.from.len()
            + self.to.len()
            + self.dialogue_id.len()
            + strings
                .iter()
                .map(|s| s.as_ref().map_or(0, String::len))
                .sum::<usize>()
            + match &self.body {
                Some(Value::String(b)) => b.len(),
                Some(_) => 64,
                None => 0,
            }
            + self.extra.len() * 32;
        let mut out = String::with_capacity(guess);
        match self.kind {
            Kind::Request(method) => {
                out.push_str("{\"Type\":\"");
                out.push_str(method.as_str());
                out.push('"');
            }
            Kind::Response(code) => {
                out.push_str("{\"Type\":\"RESPONSE\",\"Code\":");
                number(&mut out, code.into());
            }
        }
        optional_string(&mut out, ",\"Desc\":\"", &self.desc);
        optional_string(&mut out, ",\"Request-URI\":\"", &self.request_uri);
        string_field(&mut out, ",\"From\":\"", &self.from);
        string_field(&mut out, ",\"To\":\"", &self.to);
        string_field(&mut out, ",\"DialogueID\":\"", &self.dialogue_id);
        out.push_str(",\"CSeq\":");
        number(&mut out, self.cseq);
        if let Some(n) = self.related_id {
            out.push_str(",\"RelatedID\":");
            number(&mut out, n);
        }
        if let Some(n) = self.expire {
            out.push_str(",\"Expire\":");
            number(&mut out, n);
        }
        optional_string(&mut out, ",\"Router\":\"", &self.router);
        optional_string(&mut out, ",\"Content-Type\":\"", &self.content_type);
        optional_string(
            &mut out,
            ",\"P-Asserted-Identity\":\"",
            &self.p_asserted_identity,
        );
        optional_string(&mut out, ",\"Event\":\"", &self.event);
        optional_string(&mut out, ",\"Reason\":\"", &self.reason);
        if let Some(b) = &self.body {
            out.push_str(",\"Body\":");
            write_value(&mut out, b);
        }
        for (k, v) in &self.extra {
            if Key::of(k).is_none() {
                out.push(',');
                string(&mut out, k);
                out.push(':');
                write_value(&mut out, v);
            }
        }
        out.push('}');
        out
    }
}

/// A string field: `prefix` is its comma, key, colon and opening quote (no known key's
/// name needs an escape); the closing quote follows the text. Inlined, so that each
/// prefix is copied as the constant it is, not by a call to `memcpy`.
#[inline(always)]
fn string_field(out: &mut String, prefix: &str, v: &str) {
    if plain_run(v.as_bytes(), 0) == v.len() {
        out.push_str(prefix);
        out.push_str(v);
        out.push('"');
    } else {
        // The prefix less its quote, then serde_json's escaped string.
        out.push_str(&prefix[..prefix.len() - 1]);
        out.push_str(&serde_json::to_string(v).expect("a string is valid JSON"));
    }
}

#[inline(always)]
fn optional_string(out: &mut String, prefix: &str, v: &Option<String>) {
    if let Some(v) = v {
        string_field(out, prefix, v);
    }
}

fn number(out: &mut String, n: u64) {
    // Not `write!`: the formatting machinery cost 200 instructions a number.
    out.push_str(itoa::Buffer::new().format(n));
}

/// A JSON string: as it is when nothing in it needs an escape, else serde_json's.
fn string(out: &mut String, s: &str) {
    if plain_run(s.as_bytes(), 0) == s.len() {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string is valid JSON"));
    }
}

/// `v` as serde_json writes it, appended to `out`.
/// A string, a whole number and the three words are written here (serde_json writes
/// whole numbers with itoa too); through serde_json, a number cost an allocation and
/// some 250 instructions, and SLPs put numbers in their answers (the compiled-in echo's
/// `Instance`).
pub(super) fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => string(out, s),
        Value::Number(n) if n.is_u64() => number(out, n.as_u64().expect("is_u64")),
        Value::Number(n) if n.is_i64() => {
            out.push_str(itoa::Buffer::new().format(n.as_i64().expect("is_i64")))
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
        other => out.push_str(&serde_json::to_string(other).expect("JSON values")),
    }
}

/// The frame text: type first, then the transaction, then the rest. A key in `extra`
/// that names a known field is skipped, so each key appears once and the typed field
/// wins.
impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self.kind {
            Kind::Request(method) => m.serialize_entry("Type", method.as_str())?,
            Kind::Response(code) => {
                m.serialize_entry("Type", "RESPONSE")?;
                m.serialize_entry("Code", &code)?;
            }
        }
        let strings = [
            (Key::Desc, &self.desc),
            (Key::RequestUri, &self.request_uri),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                m.serialize_entry(k.name(), v)?;
            }
        }
        m.serialize_entry("From", &self.from)?;
        m.serialize_entry("To", &self.to)?;
        m.serialize_entry("DialogueID", &self.dialogue_id)?;
        m.serialize_entry("CSeq", &self.cseq)?;
        for (k, v) in [
            (Key::RelatedId, self.related_id),
            (Key::Expire, self.expire),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k.name(), &v)?;
            }
        }
        let strings = [
            (Key::Router, &self.router),
            (Key::ContentType, &self.content_type),
            (Key::PAssertedIdentity, &self.p_asserted_identity),
            (Key::Event, &self.event),
            (Key::Reason, &self.reason),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                m.serialize_entry(k.name(), v)?;
            }
        }
        if let Some(b) = &self.body {
            m.serialize_entry("Body", b)?;
        }
        for (k, v) in &self.extra {
            if Key::of(k).is_none() {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's reading of a frame, as `read` did before the hand-written reader.
    fn by_serde(frame: &str) -> Result<Slots, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(frame);
        let slots = SlotsSeed.deserialize(&mut de)?;
        de.end()?;
        Ok(slots)
    }

    fn same(a: &Slots, b: &Slots) -> bool {
        a.known == b.known && a.extra == b.extra
    }

    /// Whatever the reader accepts, serde_json reads the same; it gives up on what it
    /// does not read itself (the frame then goes to serde_json).
    fn check(frame: &str) -> bool {
        let mut slots = Slots::empty();
        let fast = Reader::new(frame).frame(&mut slots).map(|()| slots);
        match (&fast, by_serde(frame)) {
            (Some(f), Ok(s)) => assert!(same(f, &s), "{frame:?} read differently"),
            (Some(_), Err(e)) => panic!("{frame:?} accepted, but serde_json says {e}"),
            (None, _) => {}
        }
        fast.is_some()
    }

    /// Whatever `read_fields` takes, the checks make the same message of it, or refuse
    /// it for the same reason, as of serde_json's reading. True if it took it.
    fn check_typed(frame: &str) -> bool {
        // Boxed or not, the same message or the same refusal, for every frame.
        assert_eq!(
            Message::parse_boxed(frame).map(|m| *m),
            Message::parse(frame),
            "{frame:?}"
        );
        let mut typed = LentFields::frame();
        if read_fields(frame, &mut typed).is_none() {
            return false;
        }
        let mut slots = by_serde(frame).expect("read_fields took what serde_json refuses");
        assert_eq!(
            Message::from_source(&mut typed),
            Message::from_source(&mut slots),
            "{frame:?}"
        );
        true
    }

    #[test]
    fn typed_fields_make_the_same_message_as_the_slots() {
        let taken = [
            r#"{"Type":"MESSAGE","Request-URI":"bench@echo","From":"a","To":"bench@echo","DialogueID":"d","CSeq":1,"Body":"ping"}"#,
            r#"{"Type":"RESPONSE","Code":486,"Desc":"Busy\nHere","From":"a","To":"b","DialogueID":"d","CSeq":1,"RelatedID":7,"Expire":0,"Router":"r;type=x","P-Asserted-Identity":"p","Event":"e","Reason":"why","Content-Type":"t","Body":{"k":null},"k\"ey":"v","Zeta":[1]}"#,
            r#"{"Type":"ACK","Request-URI":"u","From":"a","To":"b","DialogueID":"d","CSeq":2}"#,
            r#"{"Type":"RESPONSE","Code":99,"From":"a","To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"Type":"NOPE","From":"a","To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"Type":"MESSAGE","From":"","To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"Type":"MESSAGE","To":"b","DialogueID":"d","CSeq":1,"From":"x","From":"y","Request-URI":"u"}"#,
            r#"{"DialogueID":"d"}"#,
            r#"{"CSeq":3}"#,
            r#"{}"#,
        ];
        for frame in taken {
            assert!(check_typed(frame), "{frame:?} should be read typed");
        }
        let left = [
            r#"{"Type":"MESS\u0041GE","From":"a","To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"Type":"ME\tSSAGE","From":"a","To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"Type":1,"From":"a","To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"From":null,"To":"b","DialogueID":"d","CSeq":1}"#,
            r#"{"CSeq":"1","DialogueID":"d"}"#,
            r#"{"CSeq":-1,"DialogueID":"d"}"#,
            r#"{"Code":true}"#,
            r#"{"Router":["a"]}"#,
            r#"["a"]"#,
            r#"{"a":1,}"#,
        ];
        for frame in left {
            assert!(!check_typed(frame), "{frame:?} should be left to the slots");
        }
    }

    #[test]
    fn the_reader_agrees_with_serde_json_on_edge_cases() {
        let read = [
            r#"{"Type":"MESSAGE","From":"a","To":"b","DialogueID":"d","CSeq":1,"Body":"ping"}"#,
            " \t\r\n{ \"Type\" : \"BYE\" , \"CSeq\" : 0 }\n ",
            r#"{}"#,
            r#"{"Body":{"a":[1,{"b":null},true,false,[]],"c":{}},"X":[]}"#,
            r#"{"Body":"q\"b\\s\/n\nr\rt\tb\bf\f","k\"ey":"é✓"}"#,
            r#"{"CSeq":18446744073709551615,"Expire":0}"#,
            r#"{"a":1,"a":2,"Body":"x","Body":"y"}"#,
        ];
        for frame in read {
            assert!(check(frame), "{frame:?} should take the fast path");
        }
        let left_to_serde = [
            r#"{"CSeq":18446744073709551616}"#,
            r#"{"CSeq":-1}"#,
            r#"{"CSeq":-0}"#,
            r#"{"CSeq":01}"#,
            r#"{"CSeq":1.5}"#,
            r#"{"CSeq":1e3}"#,
            r#"{"Body":"\u00e9"}"#,
            r#"{"Body":"\x"}"#,
            "{\"Body\":\"a\u{1}b\"}",
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul"#,
            r#"{"a":[1,]}"#,
            r#"{"a":"#,
            r#"["a"]"#,
            r#""a""#,
            "",
            &format!("{{\"a\":{}1{}}}", "[".repeat(120), "]".repeat(120)),
        ];
        for frame in left_to_serde {
            assert!(!check(frame), "{frame:?} should be left to serde_json");
        }
    }

    /// Random frames from a fixed seed: values of every JSON kind, strings with escapes,
    /// numbers at the edges; the reader and serde_json agree on each one they both read.
    #[test]
    fn the_reader_agrees_with_serde_json_on_random_frames() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let atoms = [
            "0",
            "7",
            "42",
            "18446744073709551615",
            "-3",
            "1.25",
            "2e5",
            "true",
            "false",
            "null",
            r#""""#,
            r#""ping""#,
            r#""a\"b""#,
            r#""\\\/\n""#,
            r#""\u0041""#,
            r#""é ✓""#,
            "[]",
            "{}",
            "[1,\"x\",null]",
            r#"{"k":{"l":[true]}}"#,
        ];
        let keys = [
            "Type",
            "Code",
            "From",
            "To",
            "DialogueID",
            "CSeq",
            "Body",
            "Expire",
            "X",
            "k\\\"",
            "Typ",
            "Type2",
            "T",
            "Fro",
            "C\\u0053eq",
        ];
        let (mut fast, mut typed, mut total) = (0, 0, 0);
        for _ in 0..5000 {
            let mut frame = String::from("{");
            for i in 0..rnd(8) {
                if i > 0 {
                    frame.push(',');
                }
                let ws = [" ", "", "\n"][rnd(3) as usize];
                frame.push_str(&format!(
                    "{ws}\"{}\"{ws}:{ws}{}",
                    keys[rnd(keys.len() as u64) as usize],
                    atoms[rnd(atoms.len() as u64) as usize]
                ));
            }
            frame.push('}');
            total += 1;
            fast += usize::from(check(&frame));
            typed += usize::from(check_typed(&frame));
        }
        // Most random frames avoid the few things it leaves to serde_json.
        assert!(
            fast > total / 10,
            "only {fast} of {total} took the fast path"
        );
        assert!(
            typed > total / 20,
            "only {typed} of {total} were read typed"
        );
    }

    /// A known key's name is taken only whole and closed, from after its opening
    /// quote; anything else is left for the string reader, untouched.
    #[test]
    fn known_keys_are_read_whole() {
        for (key, name) in Key::ALL {
            let text = format!("{name}\":1");
            let mut r = Reader::new(&text);
            assert_eq!(r.known_key(), Some(key), "{text}");
            assert_eq!(r.at, name.len() + 1, "{text}: past the closing quote");
            for near in [
                format!("{name}x\""),
                format!("{}\"", &name[..name.len() - 1]),
                name.to_string(),
                format!("{name}\\\""),
                name.to_lowercase() + "\"",
            ] {
                let mut r = Reader::new(&near);
                assert_eq!(r.known_key(), None, "{near}");
                assert_eq!(r.at, 0, "{near}: nothing taken");
            }
        }
        assert_eq!(Reader::new("").known_key(), None);
        // Escaped, a known key is still that key (serde_json reads those).
        let escaped = r#"{"Type":"MESSAGE","Request-URI":"u","Fr\u006fm":"a","T\u006f":"b","DialogueID":"d","CSeq":1}"#;
        let plain =
            r#"{"Type":"MESSAGE","Request-URI":"u","From":"a","To":"b","DialogueID":"d","CSeq":1}"#;
        assert_eq!(
            Message::parse(escaped).unwrap(),
            Message::parse(plain).unwrap()
        );
        assert!(check(r#"{"Typ":1,"Type2":2,"To":"x","Toa":3,"T":4}"#));
    }

    /// `Key::of` (a match) and `Key::name` (the table) agree on every key.
    #[test]
    fn every_key_is_found_by_its_name() {
        for (key, name) in Key::ALL {
            assert_eq!(Key::of(name), Some(key));
            assert_eq!(key.name(), name);
        }
        assert_eq!(Key::of("type"), None, "keys are case-sensitive");
    }

    /// Eight bytes at a time finds what one at a time finds: each stop byte at each
    /// place in a word, after bytes that are just above or below the stops.
    #[test]
    fn plain_run_finds_the_first_stop() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
                .unwrap_or(b.len())
        };
        let fillers = [
            b'a', 0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0x9f, 0xa0, 0xff,
        ];
        for stop in [b'"', b'\\', 0x00, 0x01, 0x1f] {
            for filler in fillers {
                for len in 0..20 {
                    for at in 0..=len {
                        let mut b = vec![filler; len];
                        if at < len {
                            b[at] = stop;
                        }
                        // A later stop must not hide the first one.
                        b.extend([stop, filler, stop]);
                        assert_eq!(plain_run(&b, 0), naive(&b), "{b:?}");
                        assert_eq!(
                            plain_run(&b, 1.min(len)),
                            1.min(len) + naive(&b[1.min(len)..])
                        );
                        // And with nothing after it: a stop in the last few bytes, or
                        // none at all (`at == len`), looked for from anywhere.
                        b.truncate(len);
                        for from in 0..=len {
                            assert_eq!(
                                plain_run(&b, from),
                                from + naive(&b[from..]),
                                "{b:?} {from}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The hand-written writer gives serde_json's bytes, escapes and all.
    #[test]
    fn the_writer_agrees_with_serde_json() {
        let frames = [
            r#"{"Type":"MESSAGE","Request-URI":"a@b","From":"x\"y","To":"b\u0001","DialogueID":"d\\","CSeq":3,"Body":"p\ni\tng é","Zeta":[1,2.5,{"q":"\""}],"Alpha":-4,"Content-Type":"text"}"#,
            r#"{"Type":"RESPONSE","Code":486,"Desc":"Busy Here","From":"a","To":"b","DialogueID":"d","CSeq":1,"RelatedID":7,"Expire":0,"Router":"r;type=x","P-Asserted-Identity":"p","Event":"e","Reason":"why","Body":{"k":null},"k\"ey":"v"}"#,
            r#"{"Type":"RESPONSE","Code":200,"Desc":"O\"K","From":"a","To":"b","DialogueID":"d","CSeq":18446744073709551615,"Router":"r\\","Content-Type":"t\n","P-Asserted-Identity":"p\t","Event":"\u0002","Reason":"why \"not\""}"#,
            r#"{"Type":"INVITE","Request-URI":"u\"","From":"a","To":"b","DialogueID":"d","CSeq":0,"RelatedID":0,"Expire":18446744073709551615,"Body":"x"}"#,
            r#"{"Type":"RESPONSE","Code":200,"From":"a","To":"b","DialogueID":"d","CSeq":1,"Body":-9223372036854775808,"I":18446744073709551615,"J":-1,"K":0,"L":1.5,"M":-0.0,"N":1e300,"T":true,"F":false,"Z":null,"A":[1,-2,true,null]}"#,
            r#"{"Type":"RESPONSE","Code":200,"From":"a","To":"b","DialogueID":"d","CSeq":1,"Body":true}"#,
            r#"{"Type":"RESPONSE","Code":200,"From":"a","To":"b","DialogueID":"d","CSeq":1,"Body":null}"#,
        ];
        for frame in frames {
            let m = Message::parse(frame).unwrap();
            assert_eq!(m.to_json(), serde_json::to_string(&m).unwrap());
        }
    }
}
