//! What the stack keeps of a request while its transaction lasts: one it sent whole
//! (it is what went to the peer, shared), one it received as its [`Head`].

use std::sync::Arc;

use jsipd_plugin_api::jsip::{Message, Method};

/// What the stack keeps of a request it received: the fields its own answers and
/// requests are made from (Type, From, To, DialogueID, CSeq, RelatedID, Expire, and an
/// INVITE's Request-URI). The SLP gets the request itself, so its Body, unknown keys (a
/// signed-in person's `Caller` among them) and the rest are moved to it, not copied.
///
/// The text is one allocation, not a `Message` of three or four `String`s: every
/// received request has a head made and dropped, and the stack reads it only to answer
/// for the SLP (a 408, a 487, a 500) or to address a request of its own. A head is held
/// as it is, not shared behind an `Arc`: only a new dialog's filing copies it (its
/// transaction and the dialog each keep one), which is as many allocations as the `Arc`
/// and the text were, and a request answered at once, the usual one, makes one less
/// (callgrind: some 25 instructions a round trip, the allocation less the larger moves).
///
/// Only a session's first request lends its Request-URI to a request the stack makes
/// (the BYE it gives the SLP when the session expires). A received request's Router
/// is never used again: requests the stack sends route back to the socket the dialog
/// came in on.
#[derive(Clone)]
pub(super) struct Head {
    method: Method,
    cseq: u64,
    related_id: Option<u64>,
    expire: Option<u64>,
    /// From, To, DialogueID and (an INVITE's) Request-URI, one after the other.
    text: Box<str>,
    from_end: usize,
    to_end: usize,
    id_end: usize,
    has_uri: bool,
}

impl Head {
    /// The head of request `m`, whose method is `method`.
    fn of(method: Method, m: &Message) -> Head {
        let uri = match method {
            Method::Invite => m.request_uri.as_deref(),
            _ => None,
        };
        let mut text = String::with_capacity(
            m.from.len() + m.to.len() + m.dialogue_id.len() + uri.map_or(0, str::len),
        );
        text.push_str(&m.from);
        let from_end = text.len();
        text.push_str(&m.to);
        let to_end = text.len();
        text.push_str(&m.dialogue_id);
        let id_end = text.len();
        text.push_str(uri.unwrap_or_default());
        Head {
            method,
            cseq: m.cseq,
            related_id: m.related_id,
            expire: m.expire,
            text: text.into_boxed_str(),
            from_end,
            to_end,
            id_end,
            has_uri: uri.is_some(),
        }
    }

    fn from(&self) -> &str {
        &self.text[..self.from_end]
    }

    fn to(&self) -> &str {
        &self.text[self.from_end..self.to_end]
    }

    fn dialogue_id(&self) -> &str {
        &self.text[self.to_end..self.id_end]
    }

    fn request_uri(&self) -> Option<&str> {
        self.has_uri.then(|| &self.text[self.id_end..])
    }

    /// The message this head is of, less what it does not keep.
    fn to_message(&self) -> Message {
        let mut m = Message::request(
            self.method,
            "",
            self.from(),
            self.to(),
            self.dialogue_id(),
            self.cseq,
        );
        m.request_uri = self.request_uri().map(String::from);
        m.related_id = self.related_id;
        m.expire = self.expire;
        m
    }
}

/// A transaction's request, and a dialog's first one.
#[derive(Clone)]
pub(super) enum Kept {
    Sent(Arc<Message>),
    Received(Head),
}

impl Kept {
    /// Request `m`, received, of `method`.
    pub(super) fn received(method: Method, m: &Message) -> Kept {
        Kept::Received(Head::of(method, m))
    }

    pub(super) fn method(&self) -> Option<Method> {
        match self {
            Kept::Sent(m) => m.method(),
            Kept::Received(h) => Some(h.method),
        }
    }

    pub(super) fn cseq(&self) -> u64 {
        match self {
            Kept::Sent(m) => m.cseq,
            Kept::Received(h) => h.cseq,
        }
    }

    /// The request as a message: a sent one as it went, a received one as its head.
    pub(super) fn to_message(&self) -> Message {
        match self {
            Kept::Sent(m) => Message::clone(m),
            Kept::Received(h) => h.to_message(),
        }
    }

    /// The answer `code` to it, as [`Message::response`] makes it.
    pub(super) fn response(&self, code: u16) -> Message {
        match self {
            Kept::Sent(m) => m.response(code),
            Kept::Received(h) => h.to_message().response(code),
        }
    }

    pub(super) fn request_uri(&self) -> Option<&str> {
        match self {
            Kept::Sent(m) => m.request_uri.as_deref(),
            Kept::Received(h) => h.request_uri(),
        }
    }

    pub(super) fn from(&self) -> &str {
        match self {
            Kept::Sent(m) => &m.from,
            Kept::Received(h) => h.from(),
        }
    }

    pub(super) fn to(&self) -> &str {
        match self {
            Kept::Sent(m) => &m.to,
            Kept::Received(h) => h.to(),
        }
    }

    /// A received request's Router is not kept (see [`Head`]).
    pub(super) fn router(&self) -> Option<&str> {
        match self {
            Kept::Sent(m) => m.router.as_deref(),
            Kept::Received(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head gives back what the old one, a `Message` of the kept fields, held.
    #[test]
    fn a_head_keeps_what_answers_and_requests_are_made_from() {
        let mut invite = Message::request(Method::Invite, "svc@h", "alice", "svc@h", "d-1", 4);
        invite.related_id = Some(3);
        invite.expire = Some(90);
        invite.router = Some("r".into());
        invite.body = Some("b".into());
        let mut message = invite.clone();
        message.kind = jsipd_plugin_api::jsip::Kind::Request(Method::Message);
        for m in [invite, message] {
            let kept = Kept::received(m.method().unwrap(), &m);
            let mut want =
                Message::request(m.method().unwrap(), "", &m.from, &m.to, &m.dialogue_id, 4);
            want.request_uri = (m.method() == Some(Method::Invite)).then(|| "svc@h".into());
            want.related_id = Some(3);
            want.expire = Some(90);
            assert_eq!(kept.to_message(), want);
            assert_eq!(kept.response(487), m.response(487));
            assert_eq!((kept.method(), kept.cseq()), (m.method(), 4));
            assert_eq!(
                (kept.from(), kept.to(), kept.router()),
                ("alice", "svc@h", None)
            );
            assert_eq!(kept.request_uri(), want.request_uri.as_deref());
        }
        // Empty and non-ASCII fields keep their bounds.
        let m = Message::request(Method::Options, "u", "", "é", "", 1);
        let kept = Kept::received(Method::Options, &m);
        assert_eq!((kept.from(), kept.to()), ("", "é"));
        assert_eq!(kept.response(200), m.response(200));
    }
}
