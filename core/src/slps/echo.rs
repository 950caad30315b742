//! `echo`: answers what it is sent, with behaviours chosen by the Request-URI's user
//! so that tests can provoke every path of the stack:
//!
//! | user        | behaviour |
//! |-------------|-----------|
//! | `silent`    | never answers (the stack answers 408) |
//! | `panic`     | panics (the stack answers 500) |
//! | `delay-N`   | answers after N ms |
//! | `relid`     | answers an INVITE with `{"relid": ID}` in the Body; requests with `relid=ID` join it |
//! | `callback`  | answers a MESSAGE, then calls the sender back with an INVITE (Body `{"expire": S}` sets Expire) |
//! | anything else | 200 with the request's Body |
//!
//! Every answer carries `"Instance": N`, so a test can tell which instance answered.

use std::time::Duration;

use jsipd_plugin_api::jsip::{Message, Method, UriRef};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};

pub struct Echo;

impl Slp for Echo {
    /// It answers at once or from a timer; it runs inline, under the node's lock.
    fn never_blocks(&self) -> bool {
        true
    }

    /// It answers each request and keeps nothing per dialog.
    fn wants_dialog_events(&self) -> bool {
        false
    }

    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(EchoInstance::default())
    }
}

#[derive(Default)]
struct EchoInstance {
    /// Requests waiting for a `delay-N` timer, by timer token.
    // A list, not a map: an instance is made for every out-of-dialog request and nearly
    // never delays one, and a `HashMap` seeded its hasher for each (thread-local state,
    // dearer still from a `.so`).
    delayed: Vec<(u64, Message)>,
    next_token: u64,
}

/// What the Request-URI's user asks of the echo (the table above).
enum Behaviour {
    Silent,
    Whoami,
    Panic,
    Relid,
    Callback,
    Delay(u64),
    Echo,
}

/// The request's behaviour, read in place: the Request-URI is not copied.
fn behaviour(msg: &Message) -> Behaviour {
    let user = msg
        .request_uri
        .as_deref()
        .and_then(|u| UriRef::parse(u).ok())
        .and_then(|u| u.user)
        .unwrap_or_default();
    match user {
        "silent" => Behaviour::Silent,
        "whoami" => Behaviour::Whoami,
        "panic" => Behaviour::Panic,
        "relid" => Behaviour::Relid,
        "callback" => Behaviour::Callback,
        u => match u.strip_prefix("delay-").and_then(|n| n.parse::<u64>().ok()) {
            Some(ms) => Behaviour::Delay(ms),
            None => Behaviour::Echo,
        },
    }
}

/// The echo of `req`: its Body and Content-Type, and which instance answered. The
/// request is the SLP's own, so its strings become the answer's.
fn echo(mut req: Message, code: u16, host: &dyn Host) -> Message {
    let body = req.body.take();
    let content_type = req.content_type.take();
    let mut r = req.into_response(code);
    r.body = body;
    r.content_type = content_type;
    r.extra.insert("Instance".into(), host.instance_id().into());
    r
}

fn answer(req: Message, code: u16, host: &mut dyn Host) {
    let r = echo(req, code, host);
    host.send(r);
}

impl Instance for EchoInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            Event::Message(msg) => match msg.method() {
                // The stack already answered these; an ACK or BYE needs nothing more.
                Some(Method::Ack | Method::Bye | Method::Cancel) => {}
                None => {
                    if msg.code() == Some(200) && msg.dialogue_id.starts_with("cb-") {
                        // Our call-back INVITE was answered: acknowledge it.
                        let mut ack = Message::request(
                            Method::Ack,
                            &msg.to,
                            &msg.from,
                            &msg.to,
                            &msg.dialogue_id,
                            msg.cseq + 1,
                        );
                        ack.related_id = Some(msg.cseq);
                        host.send(ack);
                    }
                }
                Some(method) => self.request(method, msg, host),
            },
            Event::Timer(token) => {
                if let Some(at) = self.delayed.iter().position(|(t, _)| *t == token) {
                    let (_, req) = self.delayed.swap_remove(at);
                    answer(req, 200, host);
                }
            }
            Event::Loaded
            | Event::DialogEnded { .. }
            | Event::PeerDisconnected { .. }
            | Event::Draining => {}
        }
    }
}

impl EchoInstance {
    fn request(&mut self, method: Method, msg: Message, host: &mut dyn Host) {
        match (behaviour(&msg), method) {
            (Behaviour::Silent, _) => {}
            (Behaviour::Whoami, _) => {
                // The asserted sender (the people's port's `Caller`), for its tests.
                let caller = msg.extra.get(jsipd_plugin_api::jsip::CALLER_KEY).cloned();
                let mut r = echo(msg, 200, host);
                r.body = caller;
                host.send(r);
            }
            (Behaviour::Panic, _) => panic!("echo: asked to panic by {}", msg.from),
            (Behaviour::Relid, Method::Invite) => {
                let mut r = echo(msg, 200, host);
                r.body = Some(serde_json::json!({ "relid": host.relid() }));
                host.send(r);
            }
            (Behaviour::Callback, Method::Message) => {
                let mut invite = Message::request(
                    Method::Invite,
                    &msg.from,
                    &msg.to,
                    &msg.from,
                    &format!("cb-{}", host.new_dialogue_id()),
                    1,
                );
                invite.expire = msg
                    .body
                    .as_ref()
                    .and_then(|b| b.get("expire"))
                    .and_then(|e| e.as_u64());
                answer(msg, 200, host);
                host.send(invite);
            }
            (Behaviour::Delay(ms), _) => {
                self.next_token += 1;
                self.delayed.push((self.next_token, msg));
                host.set_timer(Duration::from_millis(ms), self.next_token);
            }
            _ => answer(msg, 200, host),
        }
    }
}
