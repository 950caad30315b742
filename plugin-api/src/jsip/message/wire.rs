//! The message's JSON in one pass: frames are read straight into typed slots and written
//! straight from the fields, with no intermediate `serde_json::Value` tree or sorted map.
//! Every message crosses this code twice per hop (socket, plugin boundary), so it is the
//! hot path of the whole daemon.

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{Kind, Message};

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
        Key::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
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

/// Parses `frame` as one JSON object into slots, or gives serde_json's error.
pub(super) fn read(frame: &str) -> Result<Slots, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(frame);
    let slots = SlotsSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(slots)
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
