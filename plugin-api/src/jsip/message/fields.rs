//! The message as [`FfiMessage`], the shape it crosses the `.so` boundary in.
//!
//! It crosses in one of two ways. *Lent* ([`Message::lend`]): the fields point into the
//! sender's strings for the call, and the receiver copies each field once. *Handed
//! over* ([`Message::hand_over`], ABI 1.7, when both sides allocate with the host's
//! allocator): the fields are the sender's own `String` buffers, which the receiver
//! adopts, so nothing is copied or freed on the way, as when a compiled-in SLP moves a
//! message. Either way only a `Body` that is not a string and the unknown keys cross as
//! JSON text. What a plugin sends goes through the same slots and checks as a frame
//! from a socket (`Message::from_source`), so a plugin can no more pass the host a
//! malformed message than a peer can, and the reasons read the same.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::wire::{read_value, write_value, Key};
use super::{required, Extra, FieldSource, Kind, Message, Method, ParseError};
use crate::ffi::{FfiMessage, FfiNumber, FfiOwnedEntry, FfiOwnedMessage, FfiStr, TEXTS};

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

/// A message on its way to the other side with its text ([`FfiOwnedMessage`]). Dropped
/// without being sent, it frees its text itself.
pub struct HandedMessage {
    owned: FfiOwnedMessage,
    /// The one unknown key, lent in place (ABI 1.8; see `FfiOwnedMessage::entries`):
    /// `owned.entries` points here once `self` no longer moves.
    lent_entry: Option<FfiOwnedEntry>,
}

impl HandedMessage {
    /// Valid while `self` is and does not move; for looking, not for sending (that is
    /// [`HandedMessage::send`]).
    pub fn as_ffi(&mut self) -> *const FfiOwnedMessage {
        self.point_at_lent_entry();
        &self.owned
    }

    /// Calls `receive`, which owns the message's text from then on, whatever it does.
    pub fn send<R>(self, receive: impl FnOnce(*const FfiOwnedMessage) -> R) -> R {
        let mut this = ManuallyDrop::new(self);
        this.point_at_lent_entry();
        receive(&this.owned)
    }

    fn point_at_lent_entry(&mut self) {
        if let Some(entry) = &mut self.lent_entry {
            self.owned.entries = entry;
        }
    }
}

impl Drop for HandedMessage {
    fn drop(&mut self) {
        self.point_at_lent_entry();
        // SAFETY: never sent, so the buffers are still this side's own.
        unsafe { reclaim_all(&self.owned) };
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
struct UnknownKeys<'a>(&'a Extra);

impl Serialize for UnknownKeys<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(k, _)| Key::of(k).is_none()))
    }
}

/// The unknown keys' JSON text, if there are any. A key in `extra` that names a known
/// field is skipped, as in the frame text: the typed field wins.
fn unknown_keys_text(extra: &Extra) -> Option<String> {
    extra
        .keys()
        .any(|k| Key::of(k).is_none())
        .then(|| serde_json::to_string(&UnknownKeys(extra)).expect("JSON values"))
}

impl Message {
    fn type_and_code(&self) -> (&'static str, u16) {
        match self.kind {
            Kind::Request(m) => (m.as_str(), 0),
            Kind::Response(c) => ("RESPONSE", c),
        }
    }

    /// This message as boundary fields, borrowing its strings.
    pub fn lend(&self) -> LentMessage<'_> {
        let body = self.body.as_ref().map(json_text);
        let extra = unknown_keys_text(&self.extra);
        let (type_, code) = self.type_and_code();
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

    /// This message with its text, for a receiver that allocates with this side's
    /// allocator (see [`FfiOwnedMessage`]), of any ABI from 1.7 on. A string `Body`
    /// crosses as its value, and each unknown key as its name and value.
    #[inline]
    pub fn hand_over(self) -> HandedMessage {
        self.hand_over_to(7)
    }

    /// [`Message::hand_over`] for a receiver of ABI 1.`receiver_minor`: from 1.8 on, a
    /// single unknown key (a plugin's marker, a person's `Caller`) is lent in place
    /// instead of in a vector allocated here and freed there.
    // Inlined into its callers, so the message is not copied into its argument first.
    #[inline]
    pub fn hand_over_to(self, receiver_minor: u32) -> HandedMessage {
        let (type_, code) = self.type_and_code();
        let (body, body_is_string) = match self.body {
            Some(Value::String(s)) => (Some(s), true),
            Some(other) => (Some(json_text(&other)), false),
            None => (None, false),
        };
        let mut capacity = [0; TEXTS];
        // In the order of `FfiMessage::texts`; `type_` (0) is lent.
        let mut give = |i: usize, s: Option<String>| match s {
            None => FfiStr::ABSENT,
            Some(s) => {
                let (text, cap) = FfiStr::give(s);
                capacity[i] = cap;
                text
            }
        };
        let fields = FfiMessage {
            type_: FfiStr::new(type_),
            code,
            cseq: self.cseq,
            related_id: lend_number(self.related_id),
            expire: lend_number(self.expire),
            request_uri: give(1, self.request_uri),
            desc: give(2, self.desc),
            from: give(3, Some(self.from)),
            to: give(4, Some(self.to)),
            dialogue_id: give(5, Some(self.dialogue_id)),
            router: give(6, self.router),
            content_type: give(7, self.content_type),
            p_asserted_identity: give(8, self.p_asserted_identity),
            event: give(9, self.event),
            reason: give(10, self.reason),
            body: give(BODY, body),
            extra: FfiStr::ABSENT,
        };
        // A key that names a known field is left out, as in the frame text: the typed
        // field wins. Most messages have no unknown keys, and collecting from an empty
        // map still cost 128 instructions (dropping it costs 47).
        let give_entry = |(k, v): (String, Value)| {
            let (value, value_is_string) = match v {
                Value::String(s) => (s, true),
                other => (json_text(&other), false),
            };
            let (key, key_capacity) = FfiStr::give(k);
            let (value, value_capacity) = FfiStr::give(value);
            FfiOwnedEntry {
                key,
                key_capacity,
                value,
                value_capacity,
                value_is_string,
            }
        };
        let one_unknown = self.extra.len() == 1 && self.extra.keys().all(|k| Key::of(k).is_none());
        if receiver_minor >= 8 && one_unknown {
            let entry = self.extra.into_iter().map(give_entry).next();
            return HandedMessage {
                owned: FfiOwnedMessage {
                    fields,
                    capacity,
                    body_is_string,
                    // Pointed at `lent_entry` when it is sent.
                    entries: std::ptr::null_mut(),
                    entries_len: 1,
                    entries_capacity: 0,
                },
                lent_entry: entry,
            };
        }
        let entries: Vec<FfiOwnedEntry> = if self.extra.is_empty() {
            Vec::new()
        } else {
            // Sized for every key, as most are unknown ones: a `filter` alone would
            // not say how many, and the vector would start at four.
            let mut entries = Vec::with_capacity(self.extra.len());
            entries.extend(
                self.extra
                    .into_iter()
                    .filter(|(k, _)| Key::of(k).is_none())
                    .map(give_entry),
            );
            entries
        };
        let mut entries = ManuallyDrop::new(entries);
        HandedMessage {
            owned: FfiOwnedMessage {
                fields,
                capacity,
                body_is_string,
                entries: entries.as_mut_ptr(),
                entries_len: entries.len(),
                entries_capacity: entries.capacity(),
            },
            lent_entry: None,
        }
    }

    /// The message the other side lent, validated as a frame would be.
    ///
    /// # Safety
    /// Every [`FfiStr`] in `m` is absent or valid for this call.
    pub unsafe fn from_ffi(m: &FfiMessage) -> Result<Message, ParseError> {
        // SAFETY: the caller's contract.
        let fields = unsafe { LentFields::read(m, Lender::Plugin) }
            .map_err(|reason| ParseError::Unaddressable { reason })?;
        fields
            .into_valid_message()
            .or_else(|mut fields| Message::from_source(&mut fields))
    }

    /// The message the other side handed over, validated as a frame would be. Its text
    /// is this side's from the call on, whatever the outcome.
    ///
    /// Its fields are checked, not its bytes. Each text is a `String`'s buffer, whose
    /// pointer, length and capacity this side adopts as they are, which it must trust
    /// and cannot check; that the bytes are UTF-8 is the same `String`'s promise, and
    /// safe Rust on the other side cannot break it (`hand_over` is the only way such a
    /// message is made). The host takes a plugin's message as a plugin takes the host's
    /// ([`Message::from_host_owned`]). A lent message's text is checked for UTF-8
    /// ([`Message::from_ffi`]): it is only borrowed, from a sender of any make.
    ///
    /// # Safety
    /// `m` is as [`FfiOwnedMessage`] says, its text UTF-8 included, and this side
    /// allocates with the allocator its text came from; `m.fields.type_` is absent or
    /// valid for this call.
    pub unsafe fn from_ffi_owned(m: &FfiOwnedMessage) -> Result<Message, ParseError> {
        // SAFETY: the caller's contract.
        let type_ = unsafe { m.fields.type_.to_optional_str_unchecked() };
        let mut fields = LentFields::empty(&m.fields, type_);
        // SAFETY: the caller's contract.
        if let Err(reason) = unsafe { fields.take_text(m) } {
            return Err(ParseError::Unaddressable { reason });
        }
        fields
            .into_valid_message()
            .or_else(|mut fields| Message::from_source(&mut fields))
    }
}

impl Message {
    /// A message a plugin moved across whole (ABI 1.9), taken as the same message
    /// handed over field by field would be ([`Message::from_ffi_owned`]): refused for
    /// the same reasons, in the same words, and what passes is the same message, a
    /// request's Desc, a response's Request-URI and unknown keys named like JSIP
    /// fields left out. Its text needs no check: the plugin built it as `String`s with
    /// this crate, the same build (`ffi::MESSAGE_LAYOUT`).
    ///
    /// A valid message is checked in place; one that is not takes the field-by-field
    /// way, so that its refusal is worded by the code that words every other.
    pub fn checked(mut self) -> Result<Message, ParseError> {
        let valid = well_formed(
            self.kind,
            [&self.from, &self.to, &self.dialogue_id].map(|s| Some(s.as_str())),
            self.request_uri.as_deref(),
            self.related_id,
        ) && self.extra.keys().all(|k| Key::of(k).is_none());
        if !valid {
            // SAFETY: handed over from this process's allocator, and taken once.
            return self
                .hand_over_to(crate::ffi::ABI_MINOR)
                .send(|m| unsafe { Message::from_ffi_owned(&*m) });
        }
        match self.kind {
            Kind::Request(_) => self.desc = None,
            Kind::Response(_) => self.request_uri = None,
        }
        Ok(self)
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
        Message::from_host_fields(m, unsafe { LentFields::read(m, Lender::Host) }?)
    }

    /// A message the host handed over (ABI 1.7), taken as [`Message::from_host`] takes
    /// a lent one. Its text is this side's from the call on, whatever the outcome.
    ///
    /// # Safety
    /// As [`Message::from_ffi_owned`].
    pub unsafe fn from_host_owned(m: &FfiOwnedMessage) -> Result<Message, String> {
        // SAFETY: the caller's contract: lent for the call, and UTF-8.
        let type_ = unsafe { m.fields.type_.to_optional_str_unchecked() };
        // Made here and filled in place (see `take_text`).
        let mut fields = LentFields::empty(&m.fields, type_);
        // SAFETY: the caller's contract.
        unsafe { fields.take_text(m) }?;
        Message::from_host_fields(&m.fields, fields)
    }

    /// Taken apart rather than read through [`FieldSource`]: every field moves
    /// straight into the message, and nothing is left to drop (200 instructions a
    /// message less than taking each field by its key). Inlined, so the fields are not
    /// moved into its argument first.
    #[inline(always)]
    fn from_host_fields<T: Text>(m: &FfiMessage, f: LentFields<T>) -> Result<Message, String> {
        let kind = match f.type_.ok_or("Type is missing")? {
            "RESPONSE" => Kind::Response(m.code),
            ty => Kind::Request(Method::parse(ty).ok_or_else(|| format!("unknown Type '{ty}'"))?),
        };
        for key in [Key::From, Key::To, Key::DialogueId] {
            required(f.text(key), key)?;
        }
        // The host's fields as they are: a Desc on a request too.
        Ok(f.into_message(kind, true))
    }
}

/// The checks of [`Message::from_source`] on a message's kind and fields, whichever
/// way it came (a frame's typed fields, a plugin's moved message): From, To and
/// DialogueID (`addressed`) there and not empty, a response's Code 100-699, a request's
/// Request-URI there and not empty, an ACK's or CANCEL's RelatedID. The fast paths ask
/// this; `from_source` still words each refusal.
fn well_formed(
    kind: Kind,
    addressed: [Option<&str>; 3],
    request_uri: Option<&str>,
    related_id: Option<u64>,
) -> bool {
    let given = |s: Option<&str>| s.is_some_and(|s| !s.is_empty());
    addressed.into_iter().all(given)
        && match kind {
            Kind::Response(code) => (100..=699).contains(&code),
            Kind::Request(method) => {
                given(request_uri)
                    && (related_id.is_some() || !matches!(method, Method::Ack | Method::Cancel))
            }
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

/// The keys of the text fields before `Body`, in the order of [`FfiMessage::texts`]
/// (`from_host_fields` takes [`LentFields::strings`] apart in this order).
const TEXT_KEYS: [Key; 11] = [
    Key::Type,
    Key::RequestUri,
    Key::Desc,
    Key::From,
    Key::To,
    Key::DialogueId,
    Key::Router,
    Key::ContentType,
    Key::PAssertedIdentity,
    Key::Event,
    Key::Reason,
];
/// Where [`LentFields`] keeps `key`'s text: its place in [`TEXT_KEYS`] less one (`Type`
/// is kept apart), `None` for a key that is not text.
#[inline]
fn slot(key: Key) -> Option<usize> {
    // A table, not a `match`: this runs for every field taken, on both sides.
    const NONE: u8 = u8::MAX;
    const SLOTS: [u8; 16] = {
        let mut slots = [NONE; 16];
        let mut i = 1;
        while i < TEXT_KEYS.len() {
            slots[TEXT_KEYS[i] as usize] = (i - 1) as u8;
            i += 1;
        }
        slots
    };
    let slot = SLOTS[key as usize];
    (slot != NONE).then_some(slot as usize)
}

/// Where `Body` and the unknown keys are in [`FfiMessage::texts`].
const BODY: usize = 11;
const EXTRA: usize = 12;

/// Why text field `i` (of [`FfiMessage::texts`]) was refused.
fn not_utf8(i: usize, e: std::str::Utf8Error) -> String {
    match i {
        BODY => format!("Body is not UTF-8: {e}"),
        EXTRA => format!("the unknown keys are not UTF-8: {e}"),
        i => format!("{} is not UTF-8: {e}", TEXT_KEYS[i].name()),
    }
}

/// The handed-over entries' buffer, as the `Vec` it was.
///
/// # Safety
/// As [`FfiStr::adopt`], for `m`'s entries.
unsafe fn adopt_entries(m: &FfiOwnedMessage) -> Entries<'_> {
    if m.entries.is_null() {
        return Entries::Owned(Vec::new().into_iter());
    }
    if m.entries_capacity == 0 {
        // Lent for the call (ABI 1.8), or an empty vector that owns nothing.
        // SAFETY: the caller's contract: `entries_len` entries, valid for the call.
        return Entries::Lent(
            unsafe { std::slice::from_raw_parts(m.entries, m.entries_len) }.iter(),
        );
    }
    // SAFETY: the caller's contract.
    Entries::Owned(
        unsafe { Vec::from_raw_parts(m.entries, m.entries_len, m.entries_capacity) }.into_iter(),
    )
}

/// A handed-over message's entries: a vector's buffer handed over with them, or lent
/// for the call. Either way each entry's strings are handed over.
enum Entries<'a> {
    Owned(std::vec::IntoIter<FfiOwnedEntry>),
    Lent(std::slice::Iter<'a, FfiOwnedEntry>),
}

impl Iterator for Entries<'_> {
    type Item = FfiOwnedEntry;
    fn next(&mut self) -> Option<FfiOwnedEntry> {
        match self {
            Entries::Owned(v) => v.next(),
            Entries::Lent(s) => s.next().copied(),
        }
    }
}

/// Frees every buffer of a handed-over message (one that is refused, or never sent).
///
/// # Safety
/// As [`FfiStr::adopt`], for all of `m` but `type_` (lent).
unsafe fn reclaim_all(m: &FfiOwnedMessage) {
    let texts = m.fields.texts();
    for (i, text) in texts.into_iter().enumerate().skip(1) {
        // SAFETY: the caller's contract; only dropped.
        drop(unsafe { text.adopt(m.capacity[i]) });
    }
    // SAFETY: as above.
    for e in unsafe { adopt_entries(m) } {
        // SAFETY: as above.
        unsafe { drop((e.key.adopt(e.key_capacity), e.value.adopt(e.value_capacity))) };
    }
}

/// Text taken from the other side: lent (`&str`, copied when taken) or handed over
/// (`String`, moved when taken).
pub(super) trait Text: AsRef<str> {
    fn into_string(self) -> String;
}

impl Text for &str {
    fn into_string(self) -> String {
        self.to_owned()
    }
}

impl Text for String {
    fn into_string(self) -> String {
        self
    }
}

/// A frame's text, borrowed from it unless it had escapes (`wire::read_fields`).
impl Text for Cow<'_, str> {
    fn into_string(self) -> String {
        self.into_owned()
    }
}

/// A message's fields from the other side, as a [`FieldSource`]: its text checked for
/// UTF-8 and its JSON parsed up front (so those errors are unaddressable, as a frame's
/// would be), its strings copied (lent) or moved (handed over) only when taken.
///
/// A frame's fields are read into the same shape (`wire::read_fields`), its text
/// borrowed from the frame: so a frame's strings are copied once, when taken, and the
/// `Type` never.
pub(super) struct LentFields<'a, T> {
    /// `Type`, always lent: it is only compared, never kept.
    type_: Option<&'a str>,
    /// By [`slot`].
    strings: [Option<T>; 10],
    code: Option<u64>,
    cseq: Option<u64>,
    related_id: Option<u64>,
    expire: Option<u64>,
    body: Option<Value>,
    extra: Extra,
}

impl<'a> LentFields<'a, &'a str> {
    /// # Safety
    /// As [`Message::from_ffi`], for `'a`; for [`Lender::Host`], as [`Message::from_host`].
    unsafe fn read(m: &'a FfiMessage, lender: Lender) -> Result<Self, String> {
        let texts = m.texts();
        let text = |i: usize| -> Result<Option<&'a str>, String> {
            match lender {
                // SAFETY: the caller's contract.
                Lender::Plugin => unsafe { texts[i].to_optional_str() }.map_err(|e| not_utf8(i, e)),
                // SAFETY: the caller's contract, UTF-8 included.
                Lender::Host => Ok(unsafe { texts[i].to_optional_str_unchecked() }),
            }
        };
        let mut f = LentFields::empty(m, text(0)?);
        for i in 1..BODY {
            f.strings[i - 1] = text(i)?;
        }
        f.set_json(text(BODY)?, text(EXTRA)?, false)?;
        Ok(f)
    }
}

impl<'a> LentFields<'a, String> {
    /// The text of `m` into fields made by [`LentFields::empty`]: filled in place by
    /// their two takers (a plugin's message, the host's), not built here and moved (a
    /// ~380-byte memcpy per message, each way, and another out of a `Result`).
    ///
    /// # Safety
    /// As [`Message::from_ffi_owned`], for `'a`.
    #[inline(always)]
    unsafe fn take_text(&mut self, m: &'a FfiOwnedMessage) -> Result<(), String> {
        let f = self;
        let texts = m.fields.texts();
        for (i, slot) in f.strings.iter_mut().enumerate() {
            // SAFETY: the caller's contract, UTF-8 included (slot i is text i + 1).
            *slot = unsafe { texts[i + 1].adopt(m.capacity[i + 1]) };
        }
        // SAFETY: as above.
        let (body, extra) = unsafe {
            (
                texts[BODY].adopt(m.capacity[BODY]),
                texts[EXTRA].adopt(m.capacity[EXTRA]),
            )
        };
        // Every entry is adopted (so freed) even after one is refused.
        let mut refused = None;
        // SAFETY: as above.
        for e in unsafe { adopt_entries(m) } {
            // SAFETY: as above.
            let (key, value) =
                unsafe { (e.key.adopt(e.key_capacity), e.value.adopt(e.value_capacity)) };
            let (Some(key), Some(value)) = (key, value) else {
                refused.get_or_insert_with(|| "an unknown key or its value is missing".into());
                continue;
            };
            if refused.is_some() || Key::of(&key).is_some() {
                continue;
            }
            let value = if e.value_is_string {
                Value::String(value)
            } else {
                match json_value(&value) {
                    Ok(v) => v,
                    Err(e) => {
                        refused = Some(format!("unknown key {key:?} is not JSON: {e}"));
                        continue;
                    }
                }
            };
            f.extra.insert(key, value);
        }
        if let Some(why) = refused {
            return Err(why);
        }
        f.set_json(body, extra, m.body_is_string)
    }
}

impl<'a> LentFields<'a, Cow<'a, str>> {
    /// No field yet; a frame's are put in as they are read.
    pub(super) fn frame() -> Self {
        LentFields {
            type_: None,
            strings: Default::default(),
            code: None,
            cseq: None,
            related_id: None,
            expire: None,
            body: None,
            extra: Extra::new(),
        }
    }

    /// Where a text field's value goes (the `Type`'s apart), `None` for a key that is
    /// not text.
    pub(super) fn text_slot(&mut self, key: Key) -> Option<&mut Option<Cow<'a, str>>> {
        slot(key).map(|i| &mut self.strings[i])
    }

    pub(super) fn set_type(&mut self, type_: &'a str) {
        self.type_ = Some(type_);
    }

    /// Where a number field's value goes, `None` for a key that is not a number.
    pub(super) fn number_slot(&mut self, key: Key) -> Option<&mut Option<u64>> {
        match key {
            Key::Code => Some(&mut self.code),
            Key::CSeq => Some(&mut self.cseq),
            Key::RelatedId => Some(&mut self.related_id),
            Key::Expire => Some(&mut self.expire),
            _ => None,
        }
    }

    pub(super) fn set_body(&mut self, body: Value) {
        self.body = Some(body);
    }

    pub(super) fn insert_extra(&mut self, key: String, value: Value) {
        self.extra.insert(key, value);
    }
}

impl<'a, T: Text> LentFields<'a, T> {
    /// The message, when these fields pass every check of [`Message::from_source`]:
    /// taken apart straight into it, as [`Message::from_host_fields`] does, rather than
    /// taken key by key through [`FieldSource`] (some 400 instructions a message less,
    /// paid once for a frame and once more for a plugin's answer). The fields back when
    /// any check fails, for `from_source` to say why: it is the one that words the
    /// reasons, and what this accepts it builds the same (tested against it).
    // Inlined: the fields are some 380 bytes, moved into an argument otherwise. The
    // large `Err` is the fields themselves, given back on the rare refusal.
    #[inline(always)]
    #[allow(clippy::result_large_err)]
    pub(super) fn into_valid_message(self) -> Result<Message, Self> {
        match self.valid_kind() {
            Some(kind) => Ok(self.into_message(kind, false)),
            None => Err(self),
        }
    }

    /// [`LentFields::into_valid_message`], built in a box.
    #[inline(always)]
    #[allow(clippy::result_large_err)]
    pub(super) fn into_valid_message_boxed(self) -> Result<Box<Message>, Self> {
        match self.valid_kind() {
            Some(kind) => {
                let mut boxed = Box::<Message>::new_uninit();
                boxed.write(self.into_message(kind, false));
                // SAFETY: written just above.
                Ok(unsafe { boxed.assume_init() })
            }
            None => Err(self),
        }
    }

    /// A text field's value, `Type` aside.
    fn text(&self, key: Key) -> Option<&str> {
        slot(key).and_then(|i| self.strings[i].as_ref().map(AsRef::as_ref))
    }

    /// Every field moved into a message of `kind`, whose From, To and DialogueID the
    /// caller found there. A request's Desc and a response's Request-URI are dropped,
    /// as the frame's checks drop them, unless `as_given`.
    #[inline(always)]
    fn into_message(self, kind: Kind, as_given: bool) -> Message {
        let LentFields {
            strings:
                [request_uri, desc, from, to, dialogue_id, router, content_type, p_asserted_identity, event, reason],
            cseq,
            related_id,
            expire,
            body,
            extra,
            ..
        } = self;
        let text = |s: Option<T>| s.map(Text::into_string);
        let given = |s: Option<T>| s.map(Text::into_string).unwrap_or_default();
        let (request_uri, desc) = match kind {
            _ if as_given => (text(request_uri), text(desc)),
            Kind::Request(_) => (text(request_uri), None),
            Kind::Response(_) => (None, text(desc)),
        };
        Message {
            kind,
            request_uri,
            desc,
            from: given(from),
            to: given(to),
            dialogue_id: given(dialogue_id),
            cseq: cseq.unwrap_or_default(),
            router: text(router),
            related_id,
            expire,
            body,
            content_type: text(content_type),
            p_asserted_identity: text(p_asserted_identity),
            event: text(event),
            reason: text(reason),
            extra,
        }
    }

    /// The message's kind if the fields pass every check of [`Message::from_source`]:
    /// the fields every message has are there and not empty, the Type is known, a
    /// response's Code is 100-699, a request has its Request-URI, an ACK or CANCEL its
    /// RelatedID. (Each field is typed already, so none can hold the wrong kind.)
    fn valid_kind(&self) -> Option<Kind> {
        self.cseq?;
        let kind = match self.type_? {
            "RESPONSE" => Kind::Response(
                self.code
                    .filter(|c| (100..=699).contains(c))
                    .map(|c| c as u16)?,
            ),
            ty => Kind::Request(Method::parse(ty)?),
        };
        well_formed(
            kind,
            [Key::From, Key::To, Key::DialogueId].map(|k| self.text(k)),
            self.text(Key::RequestUri),
            self.related_id,
        )
        .then_some(kind)
    }

    /// `m`'s numbers and `Type`, and no text yet.
    fn empty(m: &FfiMessage, type_: Option<&'a str>) -> Self {
        LentFields {
            type_,
            strings: Default::default(),
            code: (type_ == Some("RESPONSE")).then_some(m.code.into()),
            cseq: Some(m.cseq),
            related_id: m.related_id.present.then_some(m.related_id.value),
            expire: m.expire.present.then_some(m.expire.value),
            body: None,
            extra: Extra::new(),
        }
    }

    /// Reads the `Body` (JSON text, or with `body_is_string` the string it is) and the
    /// unknown keys' JSON text.
    fn set_json(
        &mut self,
        body: Option<T>,
        extra: Option<T>,
        body_is_string: bool,
    ) -> Result<(), String> {
        if let Some(body) = body {
            self.body = Some(if body_is_string {
                Value::String(body.into_string())
            } else {
                json_value(body.as_ref()).map_err(|e| format!("Body is not JSON: {e}"))?
            });
        }
        if let Some(extra) = extra {
            let mut extra = json_object(extra.as_ref())
                .map_err(|e| format!("the unknown keys are not one JSON object: {e}"))?;
            extra.retain(|k, _| Key::of(k).is_none());
            if self.extra.is_empty() {
                self.extra = extra.into();
            } else {
                self.extra.extend(extra);
            }
        }
        Ok(())
    }
}

/// `value`'s JSON text, as serde_json writes it (`wire::write_value`: a string with
/// nothing to escape, the usual `Body`, is put between quotes directly).
fn json_text(value: &Value) -> String {
    let mut text = String::with_capacity(match value {
        Value::String(s) => s.len() + 2,
        _ => 0,
    });
    write_value(&mut text, value);
    text
}

/// `text` as a JSON value: read by the frame's own reader (`wire::read_value`) when it
/// can, which is the usual `Body` or unknown key's value, without setting serde_json's
/// parser up for a few bytes; by serde_json otherwise, and for its errors.
fn json_value(text: &str) -> Result<Value, serde_json::Error> {
    read_value(text).map_or_else(|| serde_json::from_str(text), Ok)
}

/// `text` as a JSON object, read as [`json_value`] reads a value.
fn json_object(text: &str) -> Result<Map<String, Value>, serde_json::Error> {
    match read_value(text) {
        Some(Value::Object(map)) => Ok(map),
        _ => serde_json::from_str(text),
    }
}

impl<T: Text> FieldSource for LentFields<'_, T> {
    fn string(&mut self, key: Key) -> Result<Option<String>, String> {
        if key == Key::Type {
            return Ok(self.type_.map(str::to_owned));
        }
        Ok(slot(key)
            .and_then(|i| self.strings[i].take())
            .map(Text::into_string))
    }

    fn peek_string(&self, key: Key) -> Result<Option<&str>, String> {
        if key == Key::Type {
            return Ok(self.type_);
        }
        Ok(slot(key)
            .and_then(|i| self.strings[i].as_ref())
            .map(AsRef::as_ref))
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

    fn take_extra(&mut self) -> Extra {
        std::mem::take(&mut self.extra)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jsip::Method;

    /// Over random fields (each text absent, empty or set; Types, Codes, RelatedIDs and
    /// CSeqs at and past the edges): whatever `into_valid_message` builds, the frame's
    /// checks build the same, and whatever it gives back they refuse.
    #[test]
    fn the_direct_build_agrees_with_the_checks() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let types = [
            "MESSAGE", "ACK", "CANCEL", "INVITE", "RESPONSE", "", "NOPE", "message",
        ];
        let codes = [None, Some(99), Some(100), Some(200), Some(699), Some(700)];
        let (mut built, mut total) = (0, 0);
        for _ in 0..20_000 {
            let mut f: LentFields<'_, String> = LentFields {
                type_: [None, Some(types[rnd(types.len() as u64) as usize])]
                    [rnd(4).min(1) as usize],
                strings: Default::default(),
                code: codes[rnd(codes.len() as u64) as usize],
                cseq: [None, Some(0), Some(7)][rnd(6).min(2) as usize],
                related_id: [None, Some(3)][rnd(2) as usize],
                expire: [None, Some(30)][rnd(2) as usize],
                body: (rnd(2) == 0).then(|| Value::from("b")),
                extra: Extra::new(),
            };
            for (i, slot) in f.strings.iter_mut().enumerate() {
                // The fields every message has are there more often than not.
                let odds = if matches!(i, 0 | 2 | 3 | 4) { 12 } else { 3 };
                *slot = match rnd(odds) {
                    0 => None,
                    1 => Some(String::new()),
                    _ => Some(format!("t{i}")),
                };
            }
            let copy = LentFields {
                type_: f.type_,
                strings: f.strings.clone(),
                code: f.code,
                cseq: f.cseq,
                related_id: f.related_id,
                expire: f.expire,
                body: f.body.clone(),
                extra: f.extra.clone(),
            };
            let checked = Message::from_source(&mut f);
            total += 1;
            match copy.into_valid_message() {
                Ok(m) => {
                    built += 1;
                    assert_eq!(Ok(m), checked);
                }
                Err(_) => assert!(
                    checked.is_err(),
                    "refused what the checks take: {checked:?}"
                ),
            }
        }
        assert!(built > total / 20, "only {built} of {total} built directly");
    }

    fn through_the_boundary(m: &Message) -> Result<Message, ParseError> {
        let lent = m.lend();
        // SAFETY: `lent` lives across the call.
        let lent = unsafe { Message::from_ffi(lent.as_ffi()) };
        // Handed over, the same message must arrive, or the same refusal.
        // SAFETY: handed over within this process (one allocator), taken once.
        let handed = m
            .clone()
            .hand_over()
            .send(|h| unsafe { Message::from_ffi_owned(&*h) });
        assert_eq!(
            lent.as_ref().map_err(ParseError::reason),
            handed.as_ref().map_err(ParseError::reason)
        );
        // And to a receiver of this ABI, which may get a single unknown key lent.
        // SAFETY: as above.
        let handed = m
            .clone()
            .hand_over_to(crate::ffi::ABI_MINOR)
            .send(|h| unsafe { Message::from_ffi_owned(&*h) });
        assert_eq!(
            lent.as_ref().map_err(ParseError::reason),
            handed.as_ref().map_err(ParseError::reason)
        );
        lent
    }

    #[test]
    fn a_single_unknown_key_is_lent_in_place_to_a_receiver_of_abi_1_8() {
        let mut m = Message::request(Method::Message, "a@b", "c@d", "a@b", "d1", 1);
        m.extra.insert("X-Marker".into(), json!("x"));
        let mut h = m.clone().hand_over_to(8);
        // SAFETY: `h` lives and stays put while this is read.
        let (capacity, len) =
            unsafe { ((*h.as_ffi()).entries_capacity, (*h.as_ffi()).entries_len) };
        assert_eq!((capacity, len), (0, 1), "lent: no vector");
        // SAFETY: handed over within this process, taken once.
        assert_eq!(
            h.send(|h| unsafe { Message::from_ffi_owned(&*h) }),
            Ok(m.clone())
        );
        // SAFETY: as above.
        assert_eq!(
            m.clone()
                .hand_over_to(8)
                .send(|h| unsafe { Message::from_host_owned(&*h) }),
            Ok(m.clone())
        );
        // Dropped unsent, a lent entry's strings are freed like the rest.
        drop(m.clone().hand_over_to(8));
        // An older receiver gets a vector; two keys always do.
        let mut h = m.clone().hand_over_to(7);
        // SAFETY: as above.
        assert!(unsafe { (*h.as_ffi()).entries_capacity } >= 1);
        drop(h);
        m.extra.insert("X-Other".into(), json!(2));
        let mut h = m.clone().hand_over_to(8);
        // SAFETY: as above.
        assert!(unsafe { (*h.as_ffi()).entries_capacity } >= 2);
        drop(h);
    }

    /// A copy of `m`, handed over.
    fn handed_over(m: &Message) -> HandedMessage {
        m.clone().hand_over()
    }

    #[test]
    fn each_text_key_has_its_own_slot_in_the_order_of_the_texts() {
        for (i, key) in TEXT_KEYS.into_iter().enumerate().skip(1) {
            assert_eq!(slot(key), Some(i - 1), "{}", key.name());
        }
        assert_eq!(slot(Key::Type), None);
        assert_eq!(slot(Key::Body), None);
    }

    #[test]
    fn a_handed_over_message_arrives_whole_and_moves_its_strings() {
        let mut m = Message::request(Method::Invite, "sip:a@b", "c@d", "a@b", "d1", 7);
        m.body = Some(json!("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"));
        m.extra.insert("X-Trace".into(), json!({"hop": 1}));
        let mut h = handed_over(&m);
        // SAFETY: `h` is alive.
        let (from_ptr, body_ptr, body_is_string) = unsafe {
            let f = &(*h.as_ffi()).fields;
            (f.from.ptr, f.body.ptr, (*h.as_ffi()).body_is_string)
        };
        // A string Body crosses as its value: no quotes, no escapes, no parse.
        assert!(body_is_string);
        // SAFETY: as in `through_the_boundary`.
        let back = h
            .send(|h| unsafe { Message::from_host_owned(&*h) })
            .unwrap();
        assert_eq!(back, m);
        // The receiver's strings are the sender's buffers, not copies.
        assert_eq!(back.from.as_ptr(), from_ptr);
        assert_eq!(
            back.body.as_ref().unwrap().as_str().unwrap().as_ptr(),
            body_ptr
        );

        // Dropped unsent, a handed-over message frees its own text (a double free
        // would abort the test binary).
        drop(handed_over(&m));
    }

    #[test]
    fn a_handed_over_message_from_a_buggy_plugin_is_refused_and_its_text_freed() {
        let good = Message::request(Method::Message, "u@h", "f@h", "t@h", "d", 1);
        // An unknown key whose value is not JSON: refused, every buffer freed (a leak
        // shows under the allocator's checks, a double free aborts the test binary).
        let mut m = good.clone();
        m.extra.insert("x-note".into(), json!({"fine": 1}));
        let h = m.hand_over();
        // SAFETY: the one entry's value buffer, swapped for another of ours.
        unsafe {
            let e = &mut *h.owned.entries;
            assert!(!e.value_is_string);
            drop(String::from_raw_parts(
                e.value.ptr.cast_mut(),
                e.value.len,
                e.value_capacity,
            ));
            let (value, capacity) = FfiStr::give("{not json".to_string());
            e.value = value;
            e.value_capacity = capacity;
        }
        // SAFETY: as in `through_the_boundary`.
        let e = h
            .send(|h| unsafe { Message::from_ffi_owned(&*h) })
            .unwrap_err();
        assert!(
            e.reason().starts_with("unknown key \"x-note\" is not JSON"),
            "{e}"
        );

        // Refused for what the frame refuses, with the same reason.
        let mut m = good.clone();
        m.from.clear();
        let e = m
            .hand_over()
            .send(|h| unsafe { Message::from_ffi_owned(&*h) });
        assert_eq!(e.unwrap_err().reason(), "From is empty");
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
    fn every_text_field_from_the_host_arrives_in_its_own_field() {
        // Each text field distinct, so that fields taken apart in the wrong order
        // (`from_host_fields` against `TEXT_KEYS`) cannot arrive equal.
        let mut m = Message::request(Method::Message, "uri@h", "from@h", "to@h", "id-1", 3);
        m.desc = Some("desc".into());
        m.router = Some("router".into());
        m.content_type = Some("type".into());
        m.p_asserted_identity = Some("pai".into());
        m.event = Some("event".into());
        m.reason = Some("reason".into());
        m.related_id = Some(2);
        m.expire = Some(60);
        let lent = m.lend();
        // SAFETY: `lent` lives across the call.
        assert_eq!(unsafe { Message::from_host(lent.as_ffi()) }.unwrap(), m);
        // SAFETY: handed over within this process (one allocator), taken once.
        let owned = m
            .clone()
            .hand_over()
            .send(|h| unsafe { Message::from_host_owned(&*h) });
        assert_eq!(owned.unwrap(), m);
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
            fast += usize::from(matches!(read_value(text), Some(Value::Object(_))));
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
