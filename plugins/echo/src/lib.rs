//! `echo`: the smallest useful plugin, and the fixture of the plugin system's tests.
//!
//! - SLP: INVITE, MESSAGE, OPTIONS and INFO are answered `200` with the request's Body.
//!   The Request-URI user picks a behaviour: `delay-N` answers after N ms (from a timer,
//!   so the instance keeps serving), `panic` panics (the host answers 500 and counts it).
//!   Every answer carries `Echo-Marker`, set at build time from `JSIPD_ECHO_MARKER`, so a
//!   test can tell two builds of the same file apart.
//! - API: any method on `/echo/v1/...` answers the method, path, query and body as JSON;
//!   `/echo/v1/panic` panics.

use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::jsip::{Message, Method, UriRef};
use jsipd_plugin_api::serde_json::{json, Value};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

/// Which build this is.
pub const MARKER: &str = match option_env!("JSIPD_ECHO_MARKER") {
    Some(m) => m,
    None => "default",
};

/// Largest body the API echoes.
const MAX_BODY: usize = 1 << 20;

pub struct Echo;

impl Plugin for Echo {
    // Answers at once or from a timer: nothing here waits.
    const SLP_NEVER_BLOCKS: bool = true;
    // It answers each request and keeps nothing per dialog.
    const SLP_WANTS_DIALOG_EVENTS: bool = false;

    fn load(context: &Context) -> Result<Self, String> {
        tracing::info!("echo plugin loaded (marker {MARKER}) as {}", context.name());
        Ok(Echo)
    }

    fn slp(&self) -> Option<Box<dyn Slp>> {
        Some(Box::new(EchoSlp))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(EchoApi))
    }
}

struct EchoSlp;

impl Slp for EchoSlp {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(EchoInstance::default())
    }
}

#[derive(Default)]
struct EchoInstance {
    /// Answers waiting for their `delay-N` timer, by token.
    // A list, not a map: an instance is made for every out-of-dialog request and nearly
    // never delays one, and a `HashMap` seeded its hasher for each (thread-local state,
    // dearer still from a `.so`).
    delayed: Vec<(u64, Message)>,
    next_token: u64,
}

impl EchoInstance {
    /// The request is the instance's own, so its strings become the answer's.
    fn answer(mut request: Message) -> Message {
        let body = request.body.take();
        let mut answer = request.into_response(200);
        answer.body = body;
        answer
            .extra
            .insert("Echo-Marker".into(), Value::from(MARKER));
        answer
    }
}

impl Instance for EchoInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            Event::Message(m) => {
                let echoed = matches!(
                    m.method(),
                    Some(Method::Invite | Method::Message | Method::Options | Method::Info)
                );
                if !echoed {
                    return;
                }
                // The Request-URI's user, read in place.
                let user = m
                    .request_uri
                    .as_deref()
                    .and_then(|u| UriRef::parse(u).ok())
                    .and_then(|u| u.user);
                let delay = match user {
                    Some("panic") => panic!("asked to panic by {}", m.from),
                    Some(u) => u.strip_prefix("delay-").map(|ms| ms.parse().unwrap_or(0)),
                    None => None,
                };
                match delay {
                    Some(ms) => {
                        self.next_token += 1;
                        self.delayed.push((self.next_token, Self::answer(m)));
                        host.set_timer(std::time::Duration::from_millis(ms), self.next_token);
                    }
                    None => host.send(Self::answer(m)),
                }
            }
            Event::Timer(token) => {
                if let Some(at) = self.delayed.iter().position(|(t, _)| *t == token) {
                    let (_, answer) = self.delayed.swap_remove(at);
                    host.send(answer);
                }
            }
            Event::Loaded
            | Event::DialogEnded { .. }
            | Event::PeerDisconnected { .. }
            | Event::Draining => {}
        }
    }
}

struct EchoApi;

impl Api for EchoApi {
    /// The example answers anyone signed in, and says who called.
    fn role_needed(&self, _method: &str, _path: &str) -> Role {
        Role::Viewer
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        if request.path() == "/panic" {
            panic!("asked to panic by the API request");
        }
        let body = match request.read_body(MAX_BODY) {
            Ok(b) => b,
            Err(e) => return response.error(413, &e.to_string()),
        };
        response.json(
            200,
            &json!({
                "method": request.method(),
                "path": request.path(),
                "query": request.query(),
                "body": String::from_utf8_lossy(&body),
                "marker": MARKER,
                "caller": {"user": request.caller().user, "role": request.caller().role.as_str()},
            }),
        );
    }
}

export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_plugin_api::api::RecordedResponse;

    #[test]
    fn api_echoes_the_request() {
        let mut body: &[u8] = b"hello";
        let mut req = Request::new("POST", "/a/b", "x=1", vec![], &mut body);
        let mut rec = RecordedResponse::default();
        EchoApi.handle(&mut req, &mut Response::new(&mut rec));
        assert_eq!(rec.status, Some(200));
        let v = rec.json();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["body"], "hello");
    }

    #[test]
    fn api_refuses_an_oversized_body() {
        let big = vec![b'x'; MAX_BODY + 1];
        let mut body: &[u8] = &big;
        let mut req = Request::new("POST", "/", "", vec![], &mut body);
        let mut rec = RecordedResponse::default();
        EchoApi.handle(&mut req, &mut Response::new(&mut rec));
        assert_eq!(rec.status, Some(413));
    }
}
