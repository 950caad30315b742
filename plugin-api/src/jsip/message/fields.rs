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
        // serde_json's own writer, not `Display`: no formatter between it and the buffer.
        let body = self
            .body
            .as_ref()
            .map(|b| serde_json::to_string(b).expect("JSON values"));
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
        let mut fields = unsafe { LentFields::read(m) }
            .map_err(|reason| ParseError::Unaddressable { reason })?;
        Message::from_source(&mut fields)
    }
}

impl Message {
    /// A message the host lent a plugin: built field by field, without the frame's
    /// checks, because the host's own parser already made them (the same code, this
    /// crate). What it still refuses is what a plugin cannot take: a `Type` it does not
    /// know (a newer host), text that is not UTF-8, a `Body` or unknown keys that are not
    /// JSON, and a message without the fields every message has.
    ///
    /// # Safety
    /// As [`Message::from_ffi`].
    pub unsafe fn from_host(m: &FfiMessage) -> Result<Message, String> {
        // SAFETY: the caller's contract.
        let mut f = unsafe { LentFields::read(m) }?;
        let type_ = f.required_string(Key::Type)?;
        let kind = if type_ == "RESPONSE" {
            Kind::Response(m.code)
        } else {
            Kind::Request(Method::parse(&type_).ok_or_else(|| format!("unknown Type '{type_}'"))?)
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

/// A lent message's fields, as a [`FieldSource`]: its text checked for UTF-8 and its
/// JSON parsed up front (so those errors are unaddressable, as a frame's would be), its
/// strings copied only when taken.
struct LentFields<'a> {
    strings: [Option<&'a str>; 16],
    numbers: [Option<u64>; 16],
    body: Option<Value>,
    extra: Map<String, Value>,
}

impl<'a> LentFields<'a> {
    /// # Safety
    /// As [`Message::from_ffi`], for `'a`.
    unsafe fn read(m: &'a FfiMessage) -> Result<LentFields<'a>, String> {
        let mut f = LentFields {
            strings: [None; 16],
            numbers: [None; 16],
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
            // SAFETY: the caller's contract.
            f.strings[key as usize] = unsafe { s.to_optional_str() }
                .map_err(|e| format!("{} is not UTF-8: {e}", key.name()))?;
        }
        if f.strings[Key::Type as usize] == Some("RESPONSE") {
            f.numbers[Key::Code as usize] = Some(m.code.into());
        }
        f.numbers[Key::CSeq as usize] = Some(m.cseq);
        for (key, n) in [(Key::RelatedId, m.related_id), (Key::Expire, m.expire)] {
            f.numbers[key as usize] = n.present.then_some(n.value);
        }
        // SAFETY: the caller's contract.
        let body =
            unsafe { m.body.to_optional_str() }.map_err(|e| format!("Body is not UTF-8: {e}"))?;
        if let Some(body) = body {
            f.body =
                Some(serde_json::from_str(body).map_err(|e| format!("Body is not JSON: {e}"))?);
        }
        // SAFETY: the caller's contract.
        let extra = unsafe { m.extra.to_optional_str() }
            .map_err(|e| format!("the unknown keys are not UTF-8: {e}"))?;
        if let Some(extra) = extra {
            let mut extra: Map<String, Value> = serde_json::from_str(extra)
                .map_err(|e| format!("the unknown keys are not one JSON object: {e}"))?;
            extra.retain(|k, _| Key::of(k).is_none());
            f.extra = extra;
        }
        Ok(f)
    }
}

impl FieldSource for LentFields<'_> {
    fn string(&mut self, key: Key) -> Result<Option<String>, String> {
        Ok(self.strings[key as usize].take().map(str::to_owned))
    }

    fn peek_string(&self, key: Key) -> Result<Option<&str>, String> {
        Ok(self.strings[key as usize])
    }

    fn number(&mut self, key: Key) -> Result<Option<u64>, String> {
        Ok(self.numbers[key as usize].take())
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
        let bad_utf8 = [0xffu8];
        let mut f = copy(lent.as_ffi());
        f.from = FfiStr::bytes(&bad_utf8);
        // SAFETY: as above.
        assert!(unsafe { Message::from_host(&f) }
            .unwrap_err()
            .starts_with("From is not UTF-8"));
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
