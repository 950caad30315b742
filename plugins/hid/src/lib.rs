//! `hid`: the target machine's keyboard and mouse.
//!
//! - API (`/hid/v1`):
//!   - `POST /paste` `{"content":TEXT,"layout":"us","queue":false}` types TEXT with the
//!     layout's real keymap. Characters the layout cannot type get `400` naming each one
//!     (`data.unsupported`); a paste while another types gets `409` unless `queue` is set;
//!     more than `paste_max` characters get `413`. Answers when the text is typed.
//!   - `POST /keys` `{"keys":"ctrl+alt+delete"}` presses the keys in order and releases
//!     them in reverse.
//!   - `POST /mouse` `{"x","y"}` or `{"dx","dy"}`, `"buttons":["left"]` (held afterwards),
//!     `"click":"left"`, `"wheel":N`.
//!   - `POST /hold` `{"holder":NAME,"usages":[225,4]}` makes NAME hold exactly those
//!     keys (a USB keyboard report's state); `POST /mouse` takes a `"holder"` too;
//!     `POST /release` `{"holder":NAME}` lets go of all NAME holds (a socket dropped).
//!   - `POST /reset` releases every key and button of everyone and stops a paste.
//!   - `GET /layouts`, `GET /stats` (report counts, failures, input→report latency, and
//!     the target's keyboard LEDs when the backend sees them).
//!
//!   A paste onto a target whose Caps Lock is on (the gadget reads the LED reports the
//!   host sends) is typed with the layout's Caps Lock table, so the text comes out as
//!   given.
//! - SLP: a browser opens a session with `INVITE` (answered 200), then sends `INFO`s
//!   with `Content-Type: hid` and a [`wire`] Body. A `MESSAGE` with such a Body works
//!   too, as a self-contained batch: its dialog ends with its transaction, and so do its
//!   keys. Events are applied in arrival order. When a session's dialog ends (BYE, session
//!   timer) or its peer's socket drops, every key and button it holds is released.
//!
//! Backends (`conf/hid/hid.ini`): [`gadget`] (the default: `/dev/hidg0..2`) and [`qemu`],
//! both behind [`device::Device`]. [`state::Hid`] keeps who holds what and releases all
//! when a write fails or times out. Paste uses [`keymap`], compiled at load from the
//! machine's XKB data.

pub mod config;
pub mod device;
pub mod gadget;
pub mod keymap;
pub mod keys;
pub mod paste;
pub mod qemu;
pub mod state;
pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::jsip::{Message, Method};
use jsipd_plugin_api::serde_json::{self, json, Value};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};
use xkbcommon::xkb;

use config::Settings;
use keymap::Keymap;
use paste::{Stopped, Turns};
use state::{Hid, Input};

pub struct HidPlugin {
    shared: Shared,
}

#[derive(Clone)]
struct Shared {
    hid: Arc<Mutex<Hid>>,
    turns: Arc<Turns>,
    /// In the order of `layouts =`; the first is the default.
    keymaps: Arc<Vec<Keymap>>,
    settings: Arc<Settings>,
}

impl Shared {
    fn keymap(&self, name: Option<&str>) -> Option<&Keymap> {
        match name {
            None => self.keymaps.first(),
            Some(n) => self.keymaps.iter().find(|k| k.name == n),
        }
    }
}

impl Plugin for HidPlugin {
    fn load(context: &Context) -> Result<Self, String> {
        let settings = Settings::read(context.config_dir())?;
        let started = Instant::now();
        let xkb_context = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
        let compose = match keymap::compose_table(&xkb_context) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        let keymaps = settings
            .layouts
            .iter()
            .map(|name| Keymap::compile(&xkb_context, name, compose.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            "layouts {} compiled from XKB in {} ms",
            keymaps
                .iter()
                .map(|k| format!("{} ({} chars)", k.name, k.len()))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_millis()
        );
        let hid = Hid::new(settings.device());
        tracing::info!("backend {}", hid.describe());
        Ok(HidPlugin {
            shared: Shared {
                hid: Arc::new(Mutex::new(hid)),
                turns: Arc::default(),
                keymaps: Arc::new(keymaps),
                settings: Arc::new(settings),
            },
        })
    }

    fn slp(&self) -> Option<Box<dyn Slp>> {
        Some(Box::new(HidSlp(self.shared.clone())))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(HidApi(self.shared.clone())))
    }
}

impl Drop for HidPlugin {
    /// Unloading or replacing the plugin must not leave a key down on the target.
    fn drop(&mut self) {
        self.shared.turns.reset();
        let mut hid = paste::lock(&self.shared.hid);
        if hid.holders() > 0 {
            if let Err(e) = hid.reset() {
                tracing::warn!("releasing the keys held at unload failed: {e}");
            }
        }
    }
}

fn ok(response: &mut Response<'_>, data: Value) {
    response.json(200, &json!({"code": 0, "msg": "OK", "data": data}));
}

struct HidApi(Shared);

/// A request body as a JSON object (an empty body is `{}`).
fn body_object(
    request: &mut Request<'_>,
    limit: usize,
) -> Result<serde_json::Map<String, Value>, (u16, String)> {
    let body = request.read_body(limit).map_err(|e| (413, e.to_string()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err((400, format!("the body must be a JSON object, not {other}"))),
        Err(e) => Err((400, format!("the body is not JSON: {e}"))),
    }
}

impl HidApi {
    fn paste(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let settings = &self.0.settings;
        let body = match body_object(request, settings.paste_max * 4 + 4096) {
            Ok(b) => b,
            Err((code, e)) => return response.error(code, &e),
        };
        let Some(content) = body.get("content").and_then(Value::as_str) else {
            return response.error(400, "content must be the text to type, as a string");
        };
        let layout = match body.get("layout") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return response.error(400, &format!("layout must be a string, not {other}"))
            }
        };
        let queue = match body.get("queue") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return response.error(400, &format!("queue must be true or false, not {other}"))
            }
        };
        let chars = content.chars().count();
        if chars > settings.paste_max {
            return response.error(
                413,
                &format!(
                    "the content has {chars} characters; the limit is {} (paste_max in hid.ini)",
                    settings.paste_max
                ),
            );
        }
        let Some(keymap) = self.0.keymap(layout) else {
            return response.error(
                400,
                &format!(
                    "no layout {:?} here; the layouts are {}",
                    layout.unwrap_or_default(),
                    self.0
                        .keymaps
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        };
        let strokes = match keymap.plan(content, false) {
            Ok(s) => s,
            Err(missing) => {
                let listed: Vec<String> = missing
                    .iter()
                    .map(|c| format!("{c:?} (U+{:04X})", u32::from(*c)))
                    .collect();
                return response.json(
                    400,
                    &json!({
                        "code": 400,
                        "msg": format!(
                            "layout {} cannot type {} of these characters: {}",
                            keymap.name,
                            missing.len(),
                            listed.join(", ")
                        ),
                        "data": {"layout": keymap.name, "unsupported": missing.iter().map(|c| c.to_string()).collect::<Vec<_>>()},
                    }),
                );
            }
        };
        let Some(turn) = self.0.turns.enter(queue) else {
            return response.error(
                409,
                "a paste is being typed; send \"queue\":true to type after it",
            );
        };
        // With Caps Lock on (when the backend can see the LEDs), letters are typed with
        // the other Shift, as the layout's Caps Lock defines it.
        let caps_lock = paste::lock(&self.0.hid)
            .leds()
            .is_some_and(|l| l & device::led::CAPS_LOCK != 0);
        let strokes = match caps_lock {
            true => keymap.plan(content, true).unwrap_or(strokes),
            false => strokes,
        };
        match paste::type_strokes(&self.0.hid, &turn, &strokes, settings.paste_interval) {
            Ok(took) => ok(
                response,
                json!({
                    "layout": keymap.name,
                    "chars": chars,
                    "strokes": strokes.len(),
                    "caps_lock": caps_lock,
                    "ms": took.as_millis() as u64,
                }),
            ),
            Err(Stopped::Reset(done)) => response.error(
                409,
                &format!(
                    "the paste was stopped by POST /hid/v1/reset after {done} of {} keystrokes",
                    strokes.len()
                ),
            ),
            Err(Stopped::Device(e)) => response.error(503, &e),
        }
    }

    fn keys(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let body = match body_object(request, 4096) {
            Ok(b) => b,
            Err((code, e)) => return response.error(code, &e),
        };
        let Some(spec) = body.get("keys").and_then(Value::as_str) else {
            return response.error(400, "keys must be a string such as \"ctrl+alt+delete\"");
        };
        let usages = match keys::parse_combination(spec) {
            Ok(u) => u,
            Err(e) => return response.error(400, &e),
        };
        let turn = self.0.turns.wait();
        match paste::chord(&self.0.hid, &turn, &usages, self.0.settings.paste_interval) {
            Ok(()) => ok(response, json!({"keys": spec})),
            Err(Stopped::Reset(_)) => response.error(409, "stopped by POST /hid/v1/reset"),
            Err(Stopped::Device(e)) => response.error(503, &e),
        }
    }

    fn mouse(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let body = match body_object(request, 4096) {
            Ok(b) => b,
            Err((code, e)) => return response.error(code, &e),
        };
        let holder = match api_holder(&body, API_MOUSE) {
            Ok(h) => h,
            Err(e) => return response.error(400, &e),
        };
        match mouse_inputs(&body) {
            Ok(inputs) if inputs.is_empty() => response.error(
                400,
                "nothing to do: give x and y, dx and dy, buttons, click or wheel",
            ),
            Ok(inputs) => {
                let now = Instant::now();
                let mut hid = paste::lock(&self.0.hid);
                for input in inputs {
                    if let Err(e) = hid.apply(&holder, input, now) {
                        return response.error(503, &e);
                    }
                }
                ok(response, Value::Object(body))
            }
            Err(e) => response.error(400, &e),
        }
    }

    /// `POST /hold`: a holder's whole keyboard state at once, as a USB keyboard report
    /// gives it (another product's input socket, such as NanoKVM's `/api/ws`).
    fn hold(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let Some((body, holder)) = named_holder(request, response) else {
            return;
        };
        let usages: Option<Vec<u8>> = body.get("usages").and_then(Value::as_array).and_then(|a| {
            a.iter()
                .map(|u| u.as_u64().and_then(|u| u8::try_from(u).ok()))
                .collect()
        });
        let Some(usages) = usages.filter(|u| u.len() <= 16) else {
            return response.error(
                400,
                "usages must be a list of at most 16 HID keyboard usages (0..=255), such as [225, 4] for Shift+A",
            );
        };
        match paste::lock(&self.0.hid).hold(&holder, &usages) {
            Ok(()) => ok(
                response,
                json!({"holder": body.get("holder"), "usages": usages}),
            ),
            Err(e) => response.error(503, &e),
        }
    }

    /// `POST /release`: lets go of everything one holder of `/hold` or `/mouse` holds.
    fn release(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let Some((_, holder)) = named_holder(request, response) else {
            return;
        };
        match paste::lock(&self.0.hid).release(&holder) {
            Ok(n) => ok(response, json!({"released": n})),
            Err(e) => response.error(503, &e),
        }
    }
}

/// The holder `POST /mouse` presses buttons as when the body names none.
const API_MOUSE: &str = "api-mouse";

/// The holder a request names (`"holder"`), kept apart from the SLP's dialog holders by
/// its `api:` prefix; `default` when it names none.
/// The body of `/hold` and `/release` and the holder it must name, or the 400 answered.
fn named_holder(
    request: &mut Request<'_>,
    response: &mut Response<'_>,
) -> Option<(serde_json::Map<String, Value>, String)> {
    let body = match body_object(request, 4096) {
        Ok(b) => b,
        Err((code, e)) => {
            response.error(code, &e);
            return None;
        }
    };
    match api_holder(&body, "") {
        Ok(h) if h != "api:" => Some((body, h)),
        Ok(_) => {
            response.error(400, "holder is missing: name who holds the keys");
            None
        }
        Err(e) => {
            response.error(400, &e);
            None
        }
    }
}

fn api_holder(o: &serde_json::Map<String, Value>, default: &str) -> Result<String, String> {
    match o.get("holder") {
        None => Ok(if default.is_empty() {
            "api:".into()
        } else {
            default.into()
        }),
        Some(Value::String(h)) if !h.is_empty() && h.len() <= 64 => Ok(format!("api:{h}")),
        Some(h) => Err(format!(
            "holder must be a name of 1 to 64 characters, not {h}"
        )),
    }
}

/// The inputs of a `POST /mouse` body, in the order a hand would do them: move, set the
/// held buttons, click, turn the wheel.
fn mouse_inputs(o: &serde_json::Map<String, Value>) -> Result<Vec<Input>, String> {
    let known = ["x", "y", "dx", "dy", "buttons", "click", "wheel", "holder"];
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {k}; the fields are {}",
            known.join(", ")
        ));
    }
    let mut out = Vec::new();
    if o.contains_key("x") || o.contains_key("y") {
        out.push(Input::MoveTo {
            x: wire::coordinate(o, "x")?,
            y: wire::coordinate(o, "y")?,
        });
    }
    if o.contains_key("dx") || o.contains_key("dy") {
        out.push(Input::MoveBy {
            dx: wire::offset(o, "dx")?,
            dy: wire::offset(o, "dy")?,
        });
    }
    if let Some(b) = o.get("buttons") {
        let list = b
            .as_array()
            .ok_or_else(|| format!("buttons must be a list such as [\"left\"], not {b}"))?;
        let mut held = 0u8;
        for name in list {
            held |= wire::button_bit(name)?;
        }
        for bit in [1u8, 2, 4, 8, 16] {
            out.push(Input::Button {
                bit,
                down: held & bit != 0,
            });
        }
    }
    if let Some(name) = o.get("click") {
        let bit = wire::button_bit(name)?;
        out.push(Input::Button { bit, down: true });
        out.push(Input::Button { bit, down: false });
    }
    if o.contains_key("wheel") {
        out.push(Input::Wheel(wire::wheel(o)?));
    }
    Ok(out)
}

impl Api for HidApi {
    /// Keyboard, mouse and paste drive the target: operators only, reads included.
    fn role_needed(&self, _method: &str, _path: &str) -> Role {
        Role::Operator
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        match (request.method(), request.path()) {
            ("POST", "/paste") => self.paste(request, response),
            ("POST", "/keys") => self.keys(request, response),
            ("POST", "/mouse") => self.mouse(request, response),
            ("POST", "/hold") => self.hold(request, response),
            ("POST", "/release") => self.release(request, response),
            ("POST", "/reset") => {
                self.0.turns.reset();
                match paste::lock(&self.0.hid).reset() {
                    Ok(()) => ok(response, json!({"released": true})),
                    Err(e) => response.error(503, &e),
                }
            }
            ("GET", "/layouts") => ok(
                response,
                json!({
                    "default": self.0.keymaps.first().map(|k| k.name.clone()),
                    "layouts": self.0.keymaps.iter().map(|k| json!({
                        "name": k.name, "xkb": k.xkb, "chars": k.len(),
                    })).collect::<Vec<_>>(),
                }),
            ),
            ("GET", "/stats") => {
                let mut hid = paste::lock(&self.0.hid);
                let leds = hid.leds().map(|l| {
                    json!({
                        "num_lock": l & device::led::NUM_LOCK != 0,
                        "caps_lock": l & device::led::CAPS_LOCK != 0,
                        "scroll_lock": l & device::led::SCROLL_LOCK != 0,
                    })
                });
                let s = hid.stats();
                let latency = s.latency().map(|(p50, p99, max, n)| {
                    json!({"p50": p50, "p99": p99, "max": max, "samples": n})
                });
                ok(
                    response,
                    json!({
                        "backend": hid.describe(),
                        "inputs": s.inputs,
                        "keyboard_reports": s.keyboard_reports,
                        "mouse_reports": s.mouse_reports,
                        "failures": s.failures,
                        "last_failure": s.last_failure,
                        "holders": hid.holders(),
                        "typing": self.0.turns.busy(),
                        "latency_us": latency,
                        "leds": leds,
                    }),
                )
            }
            (_, "/paste" | "/keys" | "/mouse" | "/reset" | "/hold" | "/release") => {
                response.error(405, "use POST")
            }
            (_, "/layouts" | "/stats") => response.error(405, "use GET"),
            (_, path) => response.error(
                404,
                &format!("no {path} here; try POST /hid/v1/paste, /keys, /mouse, /reset or GET /hid/v1/layouts, /stats"),
            ),
        }
    }
}

struct HidSlp(Shared);

impl Slp for HidSlp {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(HidInstance(self.0.clone()))
    }
}

struct HidInstance(Shared);

/// Holders are per dialog; DialogueIDs are only unique per peer, instances are unique.
fn holder(host: &dyn Host, dialogue_id: &str) -> String {
    format!("{}/{dialogue_id}", host.instance_id())
}

impl HidInstance {
    fn input(&self, m: &Message, host: &mut dyn Host, arrived: Instant) {
        let hid_type = m
            .content_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("hid"));
        if !hid_type {
            return host.send(m.refusal(
                415,
                format!(
                    "Content-Type must be hid, not {}",
                    m.content_type.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        let Some(body) = &m.body else {
            return host.send(m.refusal(400, "the Body (HID events) is missing"));
        };
        let inputs = match wire::events(body) {
            Ok(i) => i,
            Err(e) => return host.send(m.refusal(400, e)),
        };
        let holder = holder(host, &m.dialogue_id);
        let result = {
            let mut hid = paste::lock(&self.0.hid);
            inputs
                .into_iter()
                .try_for_each(|input| hid.apply(&holder, input, arrived))
        };
        match result {
            Ok(()) => host.send(m.response(200)),
            Err(e) => host.send(m.refusal(503, e)),
        }
    }

    fn release(&self, host: &dyn Host, dialogue_id: &str, why: &str) {
        match paste::lock(&self.0.hid).release(&holder(host, dialogue_id)) {
            Ok(0) => {}
            Ok(n) => tracing::info!("released {n} keys and buttons of dialog {dialogue_id}: {why}"),
            Err(e) => tracing::warn!("releasing dialog {dialogue_id}'s keys ({why}) failed: {e}"),
        }
    }
}

impl Instance for HidInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        let arrived = Instant::now();
        match event {
            Event::Message(m) if !m.is_request() => {}
            Event::Message(m) => {
                // Typing is an operator's: a signed-in viewer's requests are refused.
                if let Some(refusal) = m.refused_below(Role::Operator) {
                    return host.send(refusal);
                }
                match m.method() {
                    Some(Method::Invite) => host.send(m.response(200)),
                    Some(Method::Info | Method::Message) => self.input(&m, host, arrived),
                    // The stack answered the BYE; the dialog's end releases its keys.
                    Some(Method::Ack | Method::Bye) | None => {}
                    Some(other) => host.send(m.refusal(405, format!("hid takes INVITE, then INFO (or MESSAGE) with Content-Type hid; not {other}"))),
                }
            }
            Event::DialogEnded { dialogue_id } => {
                self.release(host, &dialogue_id, "its dialog ended")
            }
            Event::PeerDisconnected { dialogue_id } => {
                self.release(host, &dialogue_id, "its peer's socket closed")
            }
            // A draining generation keeps its keyboards until their dialogs end.
            Event::Loaded | Event::Timer(_) | Event::Draining => {}
        }
    }
}

export_plugin!(HidPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mouse_bodies() {
        let o = |v: Value| v.as_object().unwrap().clone();
        let inputs =
            mouse_inputs(&o(json!({"x": 10, "y": 20, "click": "left", "wheel": 1}))).unwrap();
        assert_eq!(
            inputs,
            [
                Input::MoveTo { x: 10, y: 20 },
                Input::Button { bit: 1, down: true },
                Input::Button {
                    bit: 1,
                    down: false
                },
                Input::Wheel(1)
            ]
        );
        let held = mouse_inputs(&o(json!({"buttons": ["right"]}))).unwrap();
        assert!(held.contains(&Input::Button { bit: 2, down: true }));
        assert!(held.contains(&Input::Button {
            bit: 1,
            down: false
        }));
        assert!(mouse_inputs(&o(json!({"z": 1})))
            .unwrap_err()
            .contains("unknown field z"));
        assert!(mouse_inputs(&o(json!({"dx": 1})))
            .unwrap_err()
            .contains("dy"));
        assert!(mouse_inputs(&o(json!({"buttons": "left"})))
            .unwrap_err()
            .contains("list"));
    }
}
