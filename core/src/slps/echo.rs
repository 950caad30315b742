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

use std::collections::HashMap;
use std::time::Duration;

use jsipd_plugin_api::jsip::{Message, Method, Uri};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};

pub struct Echo;

impl Slp for Echo {
    /// It answers at once or from a timer; it runs inline, under the node's lock.
    fn never_blocks(&self) -> bool {
        true
    }

    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(EchoInstance::default())
    }
}

#[derive(Default)]
struct EchoInstance {
    /// Requests waiting for a `delay-N` timer, by timer token.
    delayed: HashMap<u64, Message>,
    next_token: u64,
}

fn user(msg: &Message) -> String {
    msg.request_uri
        .as_deref()
        .and_then(|u| Uri::parse(u).ok())
        .and_then(|u| u.user)
        .unwrap_or_default()
}

/// The echo of `req`: its Body and Content-Type, and which instance answered.
fn echo(req: &Message, code: u16, host: &dyn Host) -> Message {
    let mut r = req.response(code);
    r.body = req.body.clone();
    r.content_type = req.content_type.clone();
    r.extra.insert("Instance".into(), host.instance_id().into());
    r
}

fn answer(req: &Message, code: u16, host: &mut dyn Host) {
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
                if let Some(req) = self.delayed.remove(&token) {
                    answer(&req, 200, host);
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
        let user = user(&msg);
        match user.as_str() {
            "silent" => {}
            "whoami" => {
                // The asserted sender (the people's port's `Caller`), for its tests.
                let mut r = echo(&msg, 200, host);
                r.body = msg.extra.get(jsipd_plugin_api::jsip::CALLER_KEY).cloned();
                host.send(r);
            }
            "panic" => panic!("echo: asked to panic by {}", msg.from),
            "relid" if method == Method::Invite => {
                let mut r = echo(&msg, 200, host);
                r.body = Some(serde_json::json!({ "relid": host.relid() }));
                host.send(r);
            }
            "callback" if method == Method::Message => {
                answer(&msg, 200, host);
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
                host.send(invite);
            }
            u => match u.strip_prefix("delay-").and_then(|n| n.parse::<u64>().ok()) {
                Some(ms) => {
                    self.next_token += 1;
                    self.delayed.insert(self.next_token, msg);
                    host.set_timer(Duration::from_millis(ms), self.next_token);
                }
                None => answer(&msg, 200, host),
            },
        }
    }
}
