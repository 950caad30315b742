//! `relay`: forwards each request one hop along its `Router`, and the final answer back.
//!
//! It drops `Router[0]` (itself; the stack never pops Router entries) and sends the
//! request on in a new dialog, because each leg is a dialog of its own. One transaction
//! per relayed request: it does not bridge the ACK/BYE of an INVITE session, which is
//! enough for the node-to-node tests and benchmarks it exists for.

use std::collections::HashMap;

use jsipd_plugin_api::jsip::Message;
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};

pub struct Relay;

impl Slp for Relay {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(RelayInstance::default())
    }
}

#[derive(Default)]
struct RelayInstance {
    /// Outgoing DialogueID → the request it relays.
    legs: HashMap<String, Message>,
}

impl Instance for RelayInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        let Event::Message(msg) = event else { return };
        if msg.is_request() {
            if !msg.method().is_some_and(|m| m.may_start_dialog()) {
                return;
            }
            let rest = msg
                .router
                .as_deref()
                .and_then(|r| r.split_once(','))
                .map(|(_, rest)| rest.trim().to_string())
                .filter(|r| !r.is_empty());
            let Some(rest) = rest else {
                let mut r = msg.response(404);
                r.reason = Some("relay: no Router entry after this node".into());
                return host.send(r);
            };
            let mut out = msg.clone();
            out.dialogue_id = host.new_dialogue_id();
            out.cseq = 1;
            out.router = Some(rest);
            self.legs.insert(out.dialogue_id.clone(), msg);
            host.send(out);
        } else if let Some(code) = msg.code().filter(|c| *c >= 200) {
            if let Some(orig) = self.legs.remove(&msg.dialogue_id) {
                let mut r = orig.response(code);
                r.body = msg.body;
                r.reason = msg.reason;
                r.extra = msg.extra;
                host.send(r);
            }
        }
    }
}
