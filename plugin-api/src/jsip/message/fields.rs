//! The message as [`FfiMessage`], the shape it crosses the `.so` boundary in.
//!
//! Lending a message copies nothing but its `Body` and unknown keys (as JSON text);
//! taking one in copies each field once. Taking one in goes through the same slots and
//! checks as a frame from a socket (`Message::from_slots`), so a plugin can no more pass
//! the host a malformed message than a peer can, and the reasons read the same.

use std::marker::PhantomData;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::wire::Key;
use super::{FieldSource, Kind, Message, Method, ParseError};
use crate::ffi::{FfiMessage, FfiNumber, FfiStr};

/// A message lent to the other side of the boundary for one call: the [`FfiMessage`]
/// and the JSON text it points to.
pub struct LentMessage<'a> {
    fields: FfiMessage,
    // Pointed to by `fields.body` and `fields.extra`; a `String`'s text does not move
    // when the `String` does.
    _body: Option<String>,
    _extra: Option<String>,
    _message: PhantomData<&'a Message>,
}

impl LentMessage<'_> {
    /// Valid while `self` is.
    pub fn as_ffi(&self) -> &FfiMessage {
        &self.fields
    }
}

fn lend_text(s: &Option<String>) -> FfiStr {
    s.as_deref().map_or(FfiStr::ABSENT, FfiStr::new)
}

fn lend_number(n: Option<u64>) -> FfiNumber {
    FfiNumber {
        present: n.is_some(),
        value: n.unwrap_or(0),
    }
}

/// The keys of `extra` that name no known field, as one JSON object.
struct UnknownKeys<'a>(&'a Map<String, Value>);

impl Serialize for UnknownKeys<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(k, _)| Key::of(k).is_none()))
    }
}

impl Message {
    /// This message as boundary fields, borrowing its strings.
    pub fn lend(&self) -> LentMessage<'_> {
        let body = self.body.as_ref().map(json_text);
        // A key in `extra` that names a known field is skipped, as in the frame text:
        // the typed field wins.
        let extra = self
            .extra
            .keys()
            .any(|k| Key::of(k).is_none())
            .then(|| serde_json::to_string(&UnknownKeys(&self.extra)).expect("JSON values"));
        let (type_, code) = match self.kind {
            Kind::Request(m) => (m.as_str(), 0),
            Kind::Response(c) => ("RESPONSE", c),
        };
        let fields = FfiMessage {
            type_: FfiStr::new(type_),
            code,
            cseq: self.cseq,
            related_id: lend_number(self.related_id),
            expire: lend_number(self.expire),
            request_uri: lend_text(&self.request_uri),
            desc: lend_text(&self.desc),
            from: FfiStr::new(&self.from),
            to: FfiStr::new(&self.to),
            dialogue_id: FfiStr::new(&self.dialogue_id),
            router: lend_text(&self.router),
            content_type: lend_text(&self.content_type),
            p_asserted_identity: lend_text(&self.p_asserted_identity),
            event: lend_text(&self.event),
            reason: lend_text(&self.reason),
            body: lend_text(&body),
            extra: lend_text(&extra),
        };
        LentMessage {
            fields,
            _body: body,
            _extra: extra,
            _message: PhantomData,
        }
    }

    /// The message the other side lent, validated as a frame would be.
    ///
    /// # Safety
    /// Every [`FfiStr`] in `m` is absent or valid for this call.
    pub unsafe fn from_ffi(m: &FfiMessage) -> Result<Message, ParseError> {
        // SAFETY: the caller's contract.
        let mut fields = unsafe { LentFields::read(m, Lender::Plugin) }
            .map_err(|reason| ParseError::Unaddressable { reason })?;
        Message::from_source(&mut fields)
    }
}

impl Message {
    /// A message the host lent a plugin: built field by field, without the frame's
    /// checks, because the host's own parser already made them (the same code, this
    /// crate). What it still refuses is what a plugin cannot take: a `Type` it does not
    /// know (a newer host), a `Body` or unknown keys that are not JSON, and a message
    /// without the fields every message has. Its text is not checked for UTF-8: the host
    /// lends only Rust strings, and a plugin trusts the host's pointers and lengths
    /// already, which a bad host could break far worse.
    ///
    /// # Safety
    /// As [`Message::from_ffi`], and every text in `m` is UTF-8 (the host's side of
    /// the ABI).
    pub unsafe fn from_host(m: &FfiMessage) -> Result<Message, String> {
        // SAFETY: the caller's contract.
        let mut f = unsafe { LentFields::read(m, Lender::Host) }?;
        let kind = match f.peek_string(Key::Type)?.ok_or("Type is missing")? {
            "RESPONSE" => Kind::Response(m.code),
            ty => Kind::Request(Method::parse(ty).ok_or_else(|| format!("unknown Type '{ty}'"))?),
        };
        Ok(Message {
            kind,
            request_uri: f.string(Key::RequestUri)?,
            desc: f.string(Key::Desc)?,
            from: f.required_string(Key::From)?,
            to: f.required_string(Key::To)?,
            dialogue_id: f.required_string(Key::DialogueId)?,
            cseq: m.cseq,
            router: f.string(Key::Router)?,
            related_id: f.number(Key::RelatedId)?,
            expire: f.number(Key::Expire)?,
            body: f.take_body(),
            content_type: f.string(Key::ContentType)?,
            p_asserted_identity: f.string(Key::PAssertedIdentity)?,
            event: f.string(Key::Event)?,
            reason: f.string(Key::Reason)?,
            extra: f.take_extra(),
        })
    }
}

/// Who lent a message, which decides whether its text is checked for UTF-8.
#[derive(Clone, Copy)]
enum Lender {
    /// A plugin, which may be buggy: its text is checked, as a frame's would be.
    Plugin,
    /// The host: its text comes from Rust strings (see [`Message::from_host`]).
    Host,
}

/// A lent message's fields, as a [`FieldSource`]: its text checked for UTF-8 and its
/// JSON parsed up front (so those errors are unaddressable, as a frame's would be), its
/// strings copied only when taken.
struct LentFields<'a> {
    strings: [Option<&'a str>; 16],
    code: Option<u64>,
    cseq: Option<u64>,
    related_id: Option<u64>,
    expire: Option<u64>,
    body: Option<Value>,
    extra: Map<String, Value>,
}

impl<'a> LentFields<'a> {
    /// # Safety
    /// As [`Message::from_ffi`], for `'a`; for [`Lender::Host`], as [`Message::from_host`].
    unsafe fn read(m: &'a FfiMessage, lender: Lender) -> Result<LentFields<'a>, String> {
        let text = |s: FfiStr| -> Result<Option<&'a str>, std::str::Utf8Error> {
            match lender {
                // SAFETY: the caller's contract.
                Lender::Plugin => unsafe { s.to_optional_str() },
                // SAFETY: the caller's contract, UTF-8 included.
                Lender::Host => Ok(unsafe { s.to_optional_str_unchecked() }),
            }
        };
        let mut f = LentFields {
            strings: [None; 16],
            code: None,
            cseq: Some(m.cseq),
            related_id: m.related_id.present.then_some(m.related_id.value),
            expire: m.expire.present.then_some(m.expire.value),
            body: None,
            extra: Map::new(),
        };
        let strings = [
            (Key::Type, m.type_),
            (Key::RequestUri, m.request_uri),
            (Key::Desc, m.desc),
            (Key::From, m.from),
            (Key::To, m.to),
            (Key::DialogueId, m.dialogue_id),
            (Key::Router, m.router),
            (Key::ContentType, m.content_type),
            (Key::PAssertedIdentity, m.p_asserted_identity),
            (Key::Event, m.event),
            (Key::Reason, m.reason),
        ];
        for (key, s) in strings {
            f.strings[key as usize] =
                text(s).map_err(|e| format!("{} is not UTF-8: {e}", key.name()))?;
        }
        if f.strings[Key::Type as usize] == Some("RESPONSE") {
            f.code = Some(m.code.into());
        }
        let body = text(m.body).map_err(|e| format!("Body is not UTF-8: {e}"))?;
        if let Some(body) = body {
            f.body = Some(json_value(body).map_err(|e| format!("Body is not JSON: {e}"))?);
        }
        let extra = text(m.extra).map_err(|e| format!("the unknown keys are not UTF-8: {e}"))?;
        if let Some(extra) = extra {
            let mut extra = json_object(extra)
                .map_err(|e| format!("the unknown keys are not one JSON object: {e}"))?;
            extra.retain(|k, _| Key::of(k).is_none());
            f.extra = extra;
        }
        Ok(f)
    }
}

/// Whether JSON escapes byte `b` in a string (serde_json escapes only these: `"`, `\`
/// and control characters).
fn escaped(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// `value`'s JSON text, as serde_json writes it. A string with nothing to escape, the
/// usual `Body`, is put between quotes directly (see [`json_value`]).
fn json_text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.bytes().any(escaped) => {
            let mut text = String::with_capacity(s.len() + 2);
            text.push('"');
            text.push_str(s);
            text.push('"');
            text
        }
        // serde_json's own writer, not `Display`: no formatter between it and the buffer.
        other => serde_json::to_string(other).expect("JSON values"),
    }
}

/// `text` as a JSON value. A string with nothing escaped in it (a word, a name, a
/// key's code; not an SDP offer, whose line ends are escaped) is taken as it is: the
/// value serde_json would make, without setting its parser up for a few bytes.
fn json_value(text: &str) -> Result<Value, serde_json::Error> {
    match plain_string(text) {
        Some((s, "")) => Ok(Value::String(s.to_owned())),
        _ => serde_json::from_str(text),
    }
}

/// `text` as a JSON object. The usual unknown keys, a few plain strings and whole
/// numbers written as [`Message::lend`] writes them (`{"Echo-Marker":"default"}`), are
/// read directly, as serde_json would read them; anything else goes to serde_json.
fn json_object(text: &str) -> Result<Map<String, Value>, serde_json::Error> {
    match flat_object(text) {
        Some(map) => Ok(map),
        None => serde_json::from_str(text),
    }
}

/// The object in `text` if it is compact and flat: plain-string keys, plain-string or
/// whole-number values. `None` for anything else, valid or not.
fn flat_object(text: &str) -> Option<Map<String, Value>> {
    let mut map = Map::new();
    let mut rest = text.strip_prefix('{')?;
    if rest == "}" {
        return Some(map);
    }
    loop {
        let (key, after) = plain_string(rest)?;
        let after = after.strip_prefix(':')?;
        let (value, after) = match plain_string(after) {
            Some((s, after)) => (Value::String(s.to_owned()), after),
            None => {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                let number = &after[..digits];
                // JSON has no leading zeros; a number past u64 is serde_json's (a float).
                if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
                    return None;
                }
                (Value::from(number.parse::<u64>().ok()?), &after[digits..])
            }
        };
        map.insert(key.to_owned(), value);
        match after.as_bytes() {
            [b',', ..] => rest = &after[1..],
            [b'}'] => return Some(map),
            _ => return None,
        }
    }
}

/// The JSON string at the start of `text`, if nothing in it is escaped (no `"`, `\` or
/// control character between its quotes), and what follows it.
fn plain_string(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('"')?;
    let end = inner.bytes().position(escaped)?;
    (inner.as_bytes()[end] == b'"').then(|| (&inner[..end], &inner[end + 1..]))
}

impl FieldSource for LentFields<'_> {
    fn string(&mut self, key: Key) -> Result<Option<String>, String> {
        Ok(self.strings[key as usize].take().map(str::to_owned))
    }

    fn peek_string(&self, key: Key) -> Result<Option<&str>, String> {
        Ok(self.strings[key as usize])
    }

    fn number(&mut self, key: Key) -> Result<Option<u64>, String> {
        let slot = match key {
            Key::Code => &mut self.code,
            Key::CSeq => &mut self.cseq,
            Key::RelatedId => &mut self.related_id,
            Key::Expire => &mut self.expire,
            _ => return Ok(None),
        };
        Ok(slot.take())
    }

    fn take_body(&mut self) -> Option<Value> {
        self.body.take()
    }

    fn take_extra(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.extra)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jsip::Method;

    fn through_the_boundary(m: &Message) -> Result<Message, ParseError> {
        let lent = m.lend();
        // SAFETY: `lent` lives across the call.
        unsafe { Message::from_ffi(lent.as_ffi()) }
    }

    #[test]
    fn every_field_crosses_unchanged() {
        let mut m = Message::request(Method::Invite, "sip:a@b", "c@d", "a@b", "d1", 7);
        m.router = Some("echo, other".into());
        m.expire = Some(90);
        m.body = Some(json!({"sdp": "v=0\r\n", "n": [1, 2.5, null]}));
        m.content_type = Some("application/sdp".into());
        m.p_asserted_identity = Some("alice".into());
        m.event = Some("kvm".into());
        m.reason = Some("".into());
        m.extra.insert("X-Trace".into(), json!({"hop": 1}));
        assert_eq!(through_the_boundary(&m).unwrap(), m);

        let mut ack = Message::request(Method::Ack, "sip:a@b", "c@d", "a@b", "d1", 8);
        ack.related_id = Some(7);
        assert_eq!(through_the_boundary(&ack).unwrap(), ack);

        let mut r = m.response(486);
        r.desc = None;
        assert_eq!(through_the_boundary(&r).unwrap(), r);
        let r = m.response(200);
        assert_eq!(through_the_boundary(&r).unwrap(), r);
    }

    #[test]
    fn what_the_host_lends_a_plugin_arrives_whole_without_the_frame_checks() {
        let mut m = Message::request(Method::Invite, "sip:a@b", "c@d", "a@b", "d1", 7);
        m.router = Some("echo, other".into());
        m.expire = Some(90);
        m.body = Some(json!({"sdp": "v=0\r\n", "n": [1, 2.5, null]}));
        m.p_asserted_identity = Some("alice".into());
        m.extra.insert("X-Trace".into(), json!({"hop": 1}));
        let lent = m.lend();
        // SAFETY: `lent` lives across the call.
        assert_eq!(unsafe { Message::from_host(lent.as_ffi()) }.unwrap(), m);
        let r = m.response(486);
        let lent = r.lend();
        // SAFETY: as above.
        assert_eq!(unsafe { Message::from_host(lent.as_ffi()) }.unwrap(), r);
        // A Type this plugin-api does not know (a newer host) is refused, not guessed.
        let mut f = copy(lent.as_ffi());
        f.type_ = FfiStr::new("FROB");
        // SAFETY: as above.
        let e = unsafe { Message::from_host(&f) }.unwrap_err();
        assert!(e.starts_with("unknown Type 'FROB'"), "{e}");
        // A Body that is not JSON (a buggy host) is refused too.
        let mut f = copy(lent.as_ffi());
        f.body = FfiStr::new("{not json");
        // SAFETY: as above.
        let e = unsafe { Message::from_host(&f) }.unwrap_err();
        assert!(e.starts_with("Body is not JSON"), "{e}");
    }

    #[test]
    fn unknown_keys_are_the_object_serde_json_would_make() {
        let keys = [
            r#""a""#,
            r#""Echo-Marker""#,
            r#""é""#,
            r#""""#,
            r#""q\"x""#,
            "\"t\tb\"",
        ];
        let values = [
            r#""v""#,
            r#""""#,
            r#""say \"hi\"""#,
            "\"raw\ttab\"",
            "0",
            "01",
            "42",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "2.5",
            "1e3",
            "true",
            "null",
            "{}",
            r#"{"in":1}"#,
            "[1]",
            "",
        ];
        let mut texts = vec![
            "{}".to_string(),
            "{ }".into(),
            "{".into(),
            "}".into(),
            "[]".into(),
            "".into(),
            r#"{"a":"b"} "#.into(),
            r#"{"a":"b"}}"#.into(),
            r#"{"a":"b",}"#.into(),
        ];
        for k in keys {
            for v in values {
                texts.push(format!("{{{k}:{v}}}"));
                texts.push(format!("{{{k}: {v}}}"));
                texts.push(format!("{{{k}:{v},\"z\":7}}"));
                texts.push(format!("{{\"z\":7,{k}:{v}}}"));
                texts.push(format!("{{{k}:{v},{k}:\"again\"}}"));
            }
        }
        let mut fast = 0;
        for text in &texts {
            fast += usize::from(flat_object(text).is_some());
            let ours = json_object(text).map_err(|e| e.to_string());
            let theirs =
                serde_json::from_str::<Map<String, Value>>(text).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{text:?}");
        }
        // The fast path did read the plain ones (else this shows nothing about it).
        assert!(fast > 50, "only {fast} of {} read directly", texts.len());
    }

    #[test]
    fn a_body_is_lent_as_the_text_serde_json_would_write() {
        for value in [
            json!("ping"),
            json!(""),
            json!("é ☃ \u{7f}"),
            json!("line\nend"),
            json!("say \"hi\" \\ back"),
            json!("\u{1}"),
            json!({"k": [1, "v", null]}),
            json!(2.5),
        ] {
            assert_eq!(json_text(&value), serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn a_plain_string_body_is_the_value_serde_json_would_make() {
        for text in [
            r#""ping""#,
            r#""""#,
            r#""é ☃ with spaces""#,
            r#""line\nend""#,
            r#""say \"hi\"""#,
            r#""\u00e9""#,
            "\"raw\ttab\"",
            "\"raw\u{1}control\"",
            r#""a"b""#,
            r#""unclosed"#,
            r#"x""#,
            r#"""#,
            r#"{"k": [1, "v"]}"#,
            "42",
        ] {
            let ours = json_value(text).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{text:?}: {ours:?} / {theirs:?}"
            );
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                assert_eq!(a, b, "{text:?}");
            }
        }
    }

    #[test]
    fn a_known_key_in_extra_loses_to_the_field_as_in_the_frame() {
        let mut m = Message::request(Method::Message, "u@h", "f@h", "t@h", "d", 1);
        m.extra.insert("From".into(), json!("someone-else@h"));
        let back = through_the_boundary(&m).unwrap();
        assert_eq!(back.from, "f@h");
        assert!(back.extra.is_empty());
        assert_eq!(back, Message::parse(&m.to_json()).unwrap());
    }

    #[test]
    fn what_the_frame_refuses_is_refused_with_the_same_reason() {
        let good = Message::request(Method::Message, "u@h", "f@h", "t@h", "d", 1);
        type Breakage = fn(&mut Message);
        let cases: [(Breakage, &str); 4] = [
            (|m| m.from.clear(), "From is empty"),
            (|m| m.dialogue_id.clear(), "DialogueID is empty"),
            (
                |m| m.kind = Kind::Response(700),
                "Code 700 is outside 100-699",
            ),
            (
                |m| m.kind = Kind::Request(Method::Cancel),
                "RelatedID is missing (an CANCEL names the INVITE's CSeq)",
            ),
        ];
        for (break_it, reason) in cases {
            let mut m = good.clone();
            break_it(&mut m);
            let crossed = through_the_boundary(&m).unwrap_err();
            assert_eq!(crossed.reason(), reason);
            assert_eq!(Message::parse(&m.to_json()).unwrap_err().reason(), reason);
        }
    }

    #[test]
    fn bad_fields_from_a_buggy_plugin_are_refused_not_trusted() {
        let good = Message::request(Method::Message, "u@h", "f@h", "t@h", "d", 1);
        let bad_utf8 = [0xffu8, 0xfe];
        let unknown_type = {
            let lent = good.lend();
            let mut f = copy(lent.as_ffi());
            f.type_ = FfiStr::new("FROB");
            // SAFETY: every string outlives the call.
            unsafe { Message::from_ffi(&f) }.unwrap_err()
        };
        assert!(unknown_type.reason().starts_with("unknown Type 'FROB'"));
        let lent = good.lend();
        let mut f = copy(lent.as_ffi());
        f.to = FfiStr::bytes(&bad_utf8);
        // SAFETY: as above.
        let e = unsafe { Message::from_ffi(&f) }.unwrap_err();
        assert!(e.reason().starts_with("To is not UTF-8"), "{e}");
        let mut f = copy(lent.as_ffi());
        f.body = FfiStr::new("{not json");
        // SAFETY: as above.
        let e = unsafe { Message::from_ffi(&f) }.unwrap_err();
        assert!(e.reason().starts_with("Body is not JSON"), "{e}");
        let mut f = copy(lent.as_ffi());
        f.extra = FfiStr::new("[1]");
        // SAFETY: as above.
        let e = unsafe { Message::from_ffi(&f) }.unwrap_err();
        assert!(
            e.reason()
                .starts_with("the unknown keys are not one JSON object"),
            "{e}"
        );
        let mut f = copy(lent.as_ffi());
        f.from = FfiStr::ABSENT;
        // SAFETY: as above.
        let e = unsafe { Message::from_ffi(&f) }.unwrap_err();
        assert_eq!(e.reason(), "From is missing");
    }

    fn copy(f: &FfiMessage) -> FfiMessage {
        *f
    }
}
