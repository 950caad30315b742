//! The JSIP message: one JSON object per WebSocket text frame (JSIP.md §2).
//!
//! Known keys become typed fields; every other key is kept in [`Message::extra`] and
//! written back unchanged, so a message forwarded through jsipd loses nothing.
//! Validation follows JSIP.md §2 "Bad input": a frame that names its transaction
//! (string `DialogueID`, numeric `CSeq`) but is otherwise wrong is answered with a 400
//! on that transaction; anything else gets a bare 400. Either way the reason names the
//! field, so a person at a WebSocket prompt can see what was wrong.

use std::fmt;

use serde_json::{Map, Value};

use super::reason_phrase;
use crate::api::Role;

/// JSIP request methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Message,
    Notify,
}

impl Method {
    pub const ALL: [Method; 12] = [
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Register,
        Method::Options,
        Method::Info,
        Method::Update,
        Method::Prack,
        Method::Subscribe,
        Method::Message,
        Method::Notify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        // A match, not a search of ALL: every message's Type is read here, and the
        // compiler switches on the length first (tested against `as_str`).
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "NOTIFY" => Method::Notify,
            _ => return None,
        })
    }

    /// INVITE, ACK, BYE, CANCEL, INFO, UPDATE, PRACK belong to the session layer
    /// (JSIP.md §4); the rest are transaction-only.
    pub fn is_session_layer(self) -> bool {
        matches!(
            self,
            Method::Invite
                | Method::Ack
                | Method::Bye
                | Method::Cancel
                | Method::Info
                | Method::Update
                | Method::Prack
        )
    }

    /// Methods that may start a dialog and so be dispatched to an SLP (JSIP.md §5).
    pub fn may_start_dialog(self) -> bool {
        matches!(
            self,
            Method::Invite
                | Method::Register
                | Method::Options
                | Method::Message
                | Method::Subscribe
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request(Method),
    /// Status code, 100–699.
    Response(u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// Required on requests; `None` on responses.
    pub request_uri: Option<String>,
    /// Reason phrase of a response.
    pub desc: Option<String>,
    pub from: String,
    pub to: String,
    pub dialogue_id: String,
    pub cseq: u64,
    /// Comma-separated URIs; the first one routes.
    pub router: Option<String>,
    /// CSeq of the INVITE an ACK or CANCEL refers to.
    pub related_id: Option<u64>,
    /// Refresh interval in seconds.
    pub expire: Option<u64>,
    pub body: Option<Value>,
    pub content_type: Option<String>,
    pub p_asserted_identity: Option<String>,
    pub event: Option<String>,
    pub reason: Option<String>,
    /// Every key not listed above, kept and re-emitted unchanged.
    pub extra: Extra,
}

/// A frame that is not a valid message, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The frame names its transaction: answer 400 on that DialogueID/CSeq.
    Invalid {
        dialogue_id: String,
        cseq: u64,
        from: Option<String>,
        to: Option<String>,
        reason: String,
    },
    /// Not JSON, not an object, or no usable DialogueID/CSeq: answer a bare 400.
    Unaddressable { reason: String },
}

impl ParseError {
    pub fn reason(&self) -> &str {
        match self {
            ParseError::Invalid { reason, .. } | ParseError::Unaddressable { reason } => reason,
        }
    }

    /// The `RESPONSE 400` to send back, as JSON text.
    pub fn answer(&self) -> String {
        let mut m = Map::new();
        m.insert("Type".into(), "RESPONSE".into());
        m.insert("Code".into(), 400.into());
        m.insert("Desc".into(), reason_phrase(400).into());
        if let ParseError::Invalid {
            dialogue_id,
            cseq,
            from,
            to,
            ..
        } = self
        {
            if let Some(f) = from {
                m.insert("From".into(), f.clone().into());
            }
            if let Some(t) = to {
                m.insert("To".into(), t.clone().into());
            }
            m.insert("DialogueID".into(), dialogue_id.clone().into());
            m.insert("CSeq".into(), (*cseq).into());
        }
        m.insert("Reason".into(), self.reason().into());
        Value::Object(m).to_string()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

/// The key the daemon puts on a signed-in person's requests: `{"user":…,"role":…}`.
pub const CALLER_KEY: &str = "Caller";

/// Where a message's fields are read from: a frame's slots, or the fields a plugin
/// passed across the boundary. Both go through the same checks
/// ([`Message::from_source`]), so the reasons read the same.
trait FieldSource {
    /// The string at `key`, taken; an error says what else it was.
    fn string(&mut self, key: Key) -> Result<Option<String>, String>;

    /// Whether `key` holds a non-empty string, leaving it in place.
    fn peek_string(&self, key: Key) -> Result<Option<&str>, String>;

    /// The whole number at `key`, taken.
    fn number(&mut self, key: Key) -> Result<Option<u64>, String>;

    fn take_body(&mut self) -> Option<Value>;

    fn take_extra(&mut self) -> Extra;

    fn required_string(&mut self, key: Key) -> Result<String, String> {
        required(self.string(key)?, key)
    }

    /// Checks what [`FieldSource::required_string`] would take, leaving it in place.
    fn peek_required_string(&self, key: Key) -> Result<(), String> {
        required(self.peek_string(key)?, key).map(drop)
    }
}

/// The text of a field every message has (`key`), or why there is none.
#[inline]
fn required<S: AsRef<str>>(text: Option<S>, key: Key) -> Result<S, String> {
    match text {
        Some(s) if !s.as_ref().is_empty() => Ok(s),
        Some(_) => Err(format!("{} is empty", key.name())),
        None => Err(format!("{} is missing", key.name())),
    }
}

/// A frame's slots as a [`FieldSource`]; the keys JSIP does not know are `extra`.
impl FieldSource for Slots {
    fn string(&mut self, key: Key) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "{} must be a string, not {}",
                key.name(),
                kind_of(&other)
            )),
        }
    }

    fn peek_string(&self, key: Key) -> Result<Option<&str>, String> {
        match self.peek(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "{} must be a string, not {}",
                key.name(),
                kind_of(other)
            )),
        }
    }

    fn number(&mut self, key: Key) -> Result<Option<u64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                format!(
                    "{} must be a whole number from 0 to 2^64-1, not {n}",
                    key.name()
                )
            }),
            Some(other) => Err(format!(
                "{} must be a number, not {}",
                key.name(),
                kind_of(&other)
            )),
        }
    }

    fn take_body(&mut self) -> Option<Value> {
        self.take(Key::Body)
    }

    fn take_extra(&mut self) -> Extra {
        std::mem::take(&mut self.extra).into()
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Message {
    /// Parses and validates one frame.
    pub fn parse(frame: &str) -> Result<Message, ParseError> {
        let mut fields = LentFields::frame();
        if wire::read_fields(frame, &mut fields).is_some() {
            return fields
                .into_valid_message()
                .or_else(|mut fields| Message::from_source(&mut fields));
        }
        Message::parse_slots(frame)
    }

    /// [`Message::parse`] into a box, for a message that travels on as one: the usual
    /// frame is built in the box, not built and then moved there (a `Message` is some
    /// 340 bytes; callgrind: two copies of it a frame).
    pub fn parse_boxed(frame: &str) -> Result<Box<Message>, ParseError> {
        let mut fields = LentFields::frame();
        if wire::read_fields(frame, &mut fields).is_some() {
            return match fields.into_valid_message_boxed() {
                Ok(m) => Ok(m),
                Err(mut fields) => Message::from_source(&mut fields).map(Box::new),
            };
        }
        Message::parse_slots(frame).map(Box::new)
    }

    /// A frame the typed reader gave up on: read into `Value` slots, to say what a
    /// field held instead, or what the frame was.
    fn parse_slots(frame: &str) -> Result<Message, ParseError> {
        let mut slots = Slots::empty();
        match wire::read(frame, &mut slots) {
            Ok(()) => Message::from_slots(&mut slots),
            // Rare: parse again as any JSON to say what the frame was.
            Err(_) => Err(ParseError::Unaddressable {
                reason: match serde_json::from_str::<Value>(frame) {
                    Err(e) => format!("not JSON: {e}"),
                    Ok(other) => {
                        format!("a JSIP message is a JSON object, not {}", kind_of(&other))
                    }
                },
            }),
        }
    }

    /// Validates an already-decoded JSON object.
    pub fn from_object(map: Map<String, Value>) -> Result<Message, ParseError> {
        Message::from_slots(&mut Slots::from_map(map))
    }

    fn from_slots(slots: &mut Slots) -> Result<Message, ParseError> {
        Message::from_source(slots)
    }

    /// The checks of JSIP.md §2 over any [`FieldSource`].
    fn from_source(f: &mut impl FieldSource) -> Result<Message, ParseError> {
        let unaddressable = |reason: String| ParseError::Unaddressable { reason };
        if let Err(e) = f.peek_required_string(Key::DialogueId) {
            return Err(unaddressable(e));
        }
        let cseq = match f.number(Key::CSeq) {
            Ok(Some(c)) => c,
            Ok(None) => return Err(unaddressable("CSeq is missing".into())),
            Err(e) => return Err(unaddressable(e)),
        };
        // From here on the frame names its transaction: errors answer on it, with the
        // From and To it had. Those and the DialogueID stay in their slots until every
        // check passed, so the usual case copies nothing for an error it never makes.
        match Message::fields(f, cseq) {
            Ok(m) => Ok(m),
            Err(reason) => {
                let text = |key| f.peek_string(key).ok().flatten().map(String::from);
                Err(ParseError::Invalid {
                    dialogue_id: text(Key::DialogueId).unwrap_or_default(),
                    cseq,
                    from: text(Key::From),
                    to: text(Key::To),
                    reason,
                })
            }
        }
    }

    fn fields(f: &mut impl FieldSource, cseq: u64) -> Result<Message, String> {
        // Type is only read: a lent message's would be copied just to be compared.
        f.peek_required_string(Key::Type)?;
        let method = match f.peek_string(Key::Type)?.unwrap_or_default() {
            "RESPONSE" => None,
            ty => Some(Method::parse(ty).ok_or_else(|| {
                let known: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown Type '{ty}' (known: {}, RESPONSE)", known.join(" "))
            })?),
        };
        let kind = match method {
            Some(m) => Kind::Request(m),
            None => {
                let code = f
                    .number(Key::Code)?
                    .ok_or("Code is missing (a response needs a status code)")?;
                if !(100..=699).contains(&code) {
                    return Err(format!("Code {code} is outside 100-699"));
                }
                Kind::Response(code as u16)
            }
        };
        let (request_uri, desc) = match kind {
            Kind::Request(_) => (Some(f.required_string(Key::RequestUri)?), None),
            Kind::Response(_) => (None, f.string(Key::Desc)?),
        };
        let related_id = f.number(Key::RelatedId)?;
        if let (Some(m @ (Method::Ack | Method::Cancel)), None) = (method, related_id) {
            return Err(format!(
                "RelatedID is missing (an {m} names the INVITE's CSeq)"
            ));
        }
        f.peek_required_string(Key::From)?;
        f.peek_required_string(Key::To)?;
        let router = f.string(Key::Router)?;
        let expire = f.number(Key::Expire)?;
        let content_type = f.string(Key::ContentType)?;
        let p_asserted_identity = f.string(Key::PAssertedIdentity)?;
        let event = f.string(Key::Event)?;
        let reason = f.string(Key::Reason)?;
        // Every check passed: now the slots kept for an error's answer are taken.
        Ok(Message {
            kind,
            request_uri,
            desc,
            from: f.required_string(Key::From)?,
            to: f.required_string(Key::To)?,
            dialogue_id: f.required_string(Key::DialogueId)?,
            cseq,
            router,
            related_id,
            expire,
            body: f.take_body(),
            content_type,
            p_asserted_identity,
            event,
            reason,
            extra: f.take_extra(),
        })
    }

    /// A message with the fields every message has, and nothing else.
    fn bare(kind: Kind, from: String, to: String, dialogue_id: String, cseq: u64) -> Message {
        Message {
            kind,
            request_uri: None,
            desc: None,
            from,
            to,
            dialogue_id,
            cseq,
            router: None,
            related_id: None,
            expire: None,
            body: None,
            content_type: None,
            p_asserted_identity: None,
            event: None,
            reason: None,
            extra: Extra::new(),
        }
    }

    /// A new request with the required fields.
    pub fn request(
        method: Method,
        request_uri: &str,
        from: &str,
        to: &str,
        dialogue_id: &str,
        cseq: u64,
    ) -> Message {
        let kind = Kind::Request(method);
        Message {
            request_uri: Some(request_uri.into()),
            ..Message::bare(kind, from.into(), to.into(), dialogue_id.into(), cseq)
        }
    }

    /// The response to this request: From, To, DialogueID and CSeq copied, `Desc` from
    /// the reason-phrase table.
    pub fn response(&self, code: u16) -> Message {
        Message {
            desc: Some(reason_phrase(code).into()),
            ..Message::bare(
                Kind::Response(code),
                self.from.clone(),
                self.to.clone(),
                self.dialogue_id.clone(),
                self.cseq,
            )
        }
    }

    /// This request turned into its response: the same message as
    /// [`Message::response`] makes, but From, To and DialogueID are moved out of the
    /// request rather than copied, and the rest of it is dropped. For an SLP that owns
    /// the request (an [`Event::Message`](crate::slp::Event::Message) it was given)
    /// and needs nothing more of it: take its Body or unknown keys first.
    pub fn into_response(self, code: u16) -> Message {
        // The Request-URI's buffer, dropped otherwise, takes the reason phrase when it
        // has the room (it nearly always has): an allocation and a free less for each
        // answer an SLP makes this way (callgrind: about 30 instructions).
        let phrase = reason_phrase(code);
        let desc = match self.request_uri {
            Some(mut buffer) if buffer.capacity() >= phrase.len() => {
                buffer.clear();
                buffer.push_str(phrase);
                buffer
            }
            _ => phrase.into(),
        };
        Message {
            desc: Some(desc),
            ..Message::bare(
                Kind::Response(code),
                self.from,
                self.to,
                self.dialogue_id,
                self.cseq,
            )
        }
    }

    /// A refusal of this request: [`Message::response`] with `reason` as the `Reason`
    /// that tells the peer what was wrong.
    pub fn refusal(&self, code: u16, reason: impl Into<String>) -> Message {
        let mut r = self.response(code);
        r.reason = Some(reason.into());
        r
    }

    pub fn method(&self) -> Option<Method> {
        match self.kind {
            Kind::Request(m) => Some(m),
            Kind::Response(_) => None,
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self.kind {
            Kind::Response(c) => Some(c),
            Kind::Request(_) => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request(_))
    }

    /// Who sent this request, as the daemon asserts it: a signed-in person on the
    /// people's port (`Some((user, role))`). `None` for a program (a token or
    /// `auth = none`), which an operator admitted and which is trusted like the
    /// management port, and for messages of other SLPs. The daemon sets the
    /// [`CALLER_KEY`] key itself and removes any a client sent, so it cannot be forged
    /// (as a SIP proxy does with P-Asserted-Identity, RFC 3325).
    pub fn caller(&self) -> Option<(&str, Role)> {
        let c = self.extra.get(CALLER_KEY)?;
        let user = c.get("user")?.as_str()?;
        let role = Role::parse(c.get("role")?.as_str()?)?;
        Some((user, role))
    }

    /// The 403 to send back when this request's sender has less than `role` (see
    /// [`Message::caller`]); `None` when it may go on.
    pub fn refused_below(&self, role: Role) -> Option<Message> {
        if self.method() == Some(Method::Ack) {
            return None; // an ACK is never answered
        }
        match self.caller() {
            Some((user, has)) if has < role => Some(self.refusal(
                403,
                format!("this needs the {role} role; {user} is a {has}"),
            )),
            _ => None,
        }
    }

    /// The JSON object: the known keys that are set, plus every kept extra key.
    /// (serde_json's `Map` sorts keys; JSIP does not depend on key order.)
    pub fn to_object(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        match self.kind {
            Kind::Request(method) => put("Type", method.as_str().into()),
            Kind::Response(code) => {
                put("Type", "RESPONSE".into());
                put("Code", code.into());
            }
        }
        let strings = [
            ("Request-URI", &self.request_uri),
            ("Desc", &self.desc),
            ("Router", &self.router),
            ("Content-Type", &self.content_type),
            ("P-Asserted-Identity", &self.p_asserted_identity),
            ("Event", &self.event),
            ("Reason", &self.reason),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                put(k, v.clone().into());
            }
        }
        put("From", self.from.clone().into());
        put("To", self.to.clone().into());
        put("DialogueID", self.dialogue_id.clone().into());
        put("CSeq", self.cseq.into());
        for (k, v) in [("RelatedID", self.related_id), ("Expire", self.expire)] {
            if let Some(v) = v {
                put(k, v.into());
            }
        }
        if let Some(b) = &self.body {
            put("Body", b.clone());
        }
        for (k, v) in &self.extra {
            if Key::of(k).is_none() {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }

    /// The frame text (see the `Serialize` impl for the key order).
    pub fn to_json(&self) -> String {
        self.write_json()
    }
}

mod extra;
mod fields;
mod wire;
pub use extra::{Entry as ExtraEntry, Extra, Iter as ExtraIter};
use fields::LentFields;
pub use fields::LentMessage;
use wire::{Key, Slots};

#[cfg(test)]
mod tests;
