//! `gpio`: the target machine's power and reset buttons and its power and disk LEDs.
//!
//! - API (`/gpio/v1`):
//!   - `POST /power` with `{"duration":MS}` (default 800; 5000 or more forces off);
//!   - `POST /reset` with `{"duration":MS}` (default 300);
//!   - `GET /led` → `{"pwr":bool,"hdd":bool,"busy":bool}`, busy while a button is held;
//!   - `GET /network` → `{"up":bool}` and `POST /network` with `{"up":bool}`: the
//!     target's network link, where the backend owns the card (QEMU's `set_link`).
//!
//!   Durations outside 50..=30000 ms get `400`, a press while another is held `409`, and a
//!   backend that cannot act (QEMU not running, no GPIO chip) `503` with the reason.
//! - SLP: `SUBSCRIBE` with `Event: led` (Expire in seconds, 0 ends it) is answered 200,
//!   then the subscriber (its P-Asserted-Identity, else From) gets a `NOTIFY` with
//!   `Event: led` and Body `{"pwr":…,"hdd":…}` now and on every LED change, each as a new
//!   dialog, like chatroom's relays. A subscription not refreshed within Expire ends, and
//!   so does one whose NOTIFY is refused.
//!
//! Backends (`conf/gpio/gpio.ini`): [`sim`] (the default), [`qemu`] and [`gpiochip`].
//! Every one sits behind [`target::Target`]; the [`board::Board`] adds one-press-at-a-time
//! and the numbered LED history, polled by a watcher thread this plugin owns.

pub mod board;
pub mod config;
pub mod gpiochip;
pub mod qemu;
pub mod sim;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::jsip::{Message, Method};
use jsipd_plugin_api::serde_json::{self, json, Value};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

use board::{Board, PressError, POLL};
use config::Settings;
use target::{Button, Leds};

/// Accepted press durations, in milliseconds.
const DURATIONS: std::ops::RangeInclusive<u64> = 50..=30_000;

/// A subscription without Expire lasts this long (seconds), capped by `max_expire`.
const DEFAULT_EXPIRE: u64 = 600;

pub struct Gpio {
    shared: Shared,
    stop: Option<mpsc::Sender<()>>,
    watcher: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Shared {
    board: Arc<Board>,
    settings: Arc<Settings>,
    subscribers: Arc<Mutex<BTreeMap<String, Subscriber>>>,
}

#[derive(Debug)]
struct Subscriber {
    expires: Instant,
    /// The LED change this subscriber was last told about.
    told: u64,
    /// Who the subscription was made with: the SUBSCRIBE's To, the NOTIFYs' From.
    notifier: String,
}

impl Shared {
    fn subscribers(&self) -> MutexGuard<'_, BTreeMap<String, Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Plugin for Gpio {
    fn load(context: &Context) -> Result<Self, String> {
        let settings = Settings::read(context.config_dir())?;
        let board = Arc::new(Board::new(settings.target()));
        tracing::info!("backend {}", board.describe());
        board.poll();
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = board.clone();
        let watcher = std::thread::Builder::new()
            .name("gpio-leds".into())
            .spawn(move || {
                // Ends when the plugin drops `stop` (the channel disconnects).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    watched.poll();
                }
            })
            .map_err(|e| format!("cannot start the LED watcher thread: {e}"))?;
        Ok(Gpio {
            shared: Shared {
                board,
                settings: Arc::new(settings),
                subscribers: Arc::default(),
            },
            stop: Some(stop),
            watcher: Some(watcher),
        })
    }

    fn slp(&self) -> Option<Box<dyn Slp>> {
        Some(Box::new(GpioSlp(self.shared.clone())))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(GpioApi(self.shared.clone())))
    }
}

impl Drop for Gpio {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

fn leds_json(leds: Leds) -> Value {
    json!({"pwr": leds.pwr, "hdd": leds.hdd})
}

struct GpioApi(Shared);

impl GpioApi {
    fn press(
        &self,
        button: Button,
        default_ms: u64,
        request: &mut Request<'_>,
        response: &mut Response<'_>,
    ) {
        let body = match request.read_body(4096) {
            Ok(b) => b,
            Err(e) => return response.error(400, &e.to_string()),
        };
        let duration = if body.iter().all(u8::is_ascii_whitespace) {
            default_ms
        } else {
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return response.error(400, &format!("the body is not JSON: {e}"));
                }
            };
            match v.get("duration") {
                None | Some(Value::Null) => default_ms,
                Some(d) => match d.as_u64() {
                    Some(ms) => ms,
                    None => {
                        return response.error(
                            400,
                            &format!("duration must be a whole number of milliseconds, not {d}"),
                        )
                    }
                },
            }
        };
        if !DURATIONS.contains(&duration) {
            return response.error(
                400,
                &format!(
                    "duration {duration} ms is outside {}..={} ms",
                    DURATIONS.start(),
                    DURATIONS.end()
                ),
            );
        }
        match self.0.board.press(button, Duration::from_millis(duration)) {
            Ok(()) => response.json(
                200,
                &json!({"code": 0, "msg": "OK", "data": {"button": button.name(), "duration": duration}}),
            ),
            Err(PressError::Busy) => response.error(
                409,
                "a button is being pressed; try again when it is released",
            ),
            Err(PressError::Backend(reason)) => response.error(503, &reason),
        }
    }
}

impl GpioApi {
    fn set_network(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let body = match request.read_body(4096) {
            Ok(b) => b,
            Err(e) => return response.error(400, &e.to_string()),
        };
        let up = match serde_json::from_slice::<Value>(&body) {
            Ok(v) => match v.get("up").and_then(Value::as_bool) {
                Some(up) => up,
                None => return response.error(400, "the body needs \"up\": true or false"),
            },
            Err(e) => return response.error(400, &format!("the body is not JSON: {e}")),
        };
        match self.0.board.target().set_network_link(up) {
            Ok(()) => {
                tracing::info!(
                    "the target's network link is {}",
                    if up { "up" } else { "down" }
                );
                response.json(200, &json!({"code": 0, "msg": "OK", "data": {"up": up}}))
            }
            Err(reason) => response.error(503, &reason),
        }
    }
}

impl Api for GpioApi {
    /// Anyone signed in sees the LEDs; pressing a button or pulling the cable takes an
    /// operator.
    fn role_needed(&self, method: &str, path: &str) -> Role {
        match (method, path) {
            ("POST", "/power" | "/reset" | "/network") => Role::Operator,
            _ => Role::Viewer,
        }
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        match (request.method(), request.path()) {
            ("POST", "/power") => self.press(Button::Power, 800, request, response),
            ("POST", "/reset") => self.press(Button::Reset, 300, request, response),
            ("GET", "/led") => match self.0.board.leds() {
                Ok((_, leds)) => {
                    let mut data = leds_json(leds);
                    data["busy"] = self.0.board.busy().into();
                    response.json(200, &json!({"code": 0, "msg": "OK", "data": data}))
                }
                Err(reason) => response.error(503, &reason),
            },
            ("GET", "/network") => match self.0.board.target().network_link() {
                Ok(up) => response.json(200, &json!({"code": 0, "msg": "OK", "data": {"up": up}})),
                Err(reason) => response.error(503, &reason),
            },
            ("POST", "/network") => self.set_network(request, response),
            (_, "/power" | "/reset") => response.error(405, "press with POST"),
            (_, "/led") => response.error(405, "/led answers GET"),
            (_, "/network") => response.error(405, "/network answers GET and POST"),
            (_, path) => response.error(
                404,
                &format!("no {path} here; try POST /gpio/v1/power, POST /gpio/v1/reset, GET /gpio/v1/led or GET /gpio/v1/network"),
            ),
        }
    }
}

struct GpioSlp(Shared);

impl Slp for GpioSlp {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(GpioInstance {
            shared: self.0.clone(),
            notifying: HashMap::new(),
        })
    }
}

struct GpioInstance {
    shared: Shared,
    /// NOTIFY dialogs in flight → the subscriber they went to.
    notifying: HashMap<String, String>,
}

impl GpioInstance {
    fn notify(&mut self, host: &mut dyn Host, identity: &str, notifier: &str, leds: Leds) {
        let dialogue_id = host.new_dialogue_id();
        let mut n = Message::request(
            Method::Notify,
            identity,
            notifier,
            identity,
            &dialogue_id,
            1,
        );
        n.event = Some("led".into());
        n.content_type = Some("application/json".into());
        n.body = Some(leds_json(leds));
        self.notifying.insert(dialogue_id, identity.to_string());
        host.send(n);
    }

    fn subscribe(&mut self, m: &Message, host: &mut dyn Host) {
        if m.event.as_deref() != Some("led") {
            return host.send(m.refusal(489, "Event must be led"));
        }
        let identity = m
            .p_asserted_identity
            .clone()
            .unwrap_or_else(|| m.from.clone());
        let expire = m
            .expire
            .unwrap_or(DEFAULT_EXPIRE)
            .min(self.shared.settings.max_expire);
        let mut ok = m.response(200);
        ok.expire = Some(expire);
        if expire == 0 {
            let gone = self.shared.subscribers().remove(&identity).is_some();
            if !gone {
                return host.send(m.refusal(481, format!("{identity} has no led subscription")));
            }
            tracing::info!("{identity} unsubscribed from the LEDs");
            return host.send(ok);
        }
        // Tell the current state at once; later changes come from the on-load instance.
        let current = self.shared.board.leds();
        let told = current.as_ref().map_or(0, |(seq, _)| *seq);
        let fresh = self
            .shared
            .subscribers()
            .insert(
                identity.clone(),
                Subscriber {
                    expires: Instant::now() + Duration::from_secs(expire),
                    told,
                    notifier: m.to.clone(),
                },
            )
            .is_none();
        if fresh {
            tracing::info!("{identity} subscribed to the LEDs for {expire}s");
        }
        host.send(ok);
        if let Ok((_, leds)) = current {
            if fresh {
                self.notify(host, &identity, &m.to, leds);
            }
        }
    }

    /// The on-load instance's tick: NOTIFY every change each subscriber has not heard,
    /// in order, and end expired subscriptions.
    fn tick(&mut self, host: &mut dyn Host) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut subs = self.shared.subscribers();
            subs.retain(|identity, s| {
                let live = s.expires > now;
                if !live {
                    tracing::info!("{identity}'s led subscription expired");
                }
                live
            });
            for (identity, s) in subs.iter_mut() {
                for (seq, leds) in self.shared.board.changes_since(s.told) {
                    due.push((identity.clone(), s.notifier.clone(), leds));
                    s.told = seq;
                }
            }
        }
        for (identity, notifier, leds) in due {
            self.notify(host, &identity, &notifier, leds);
        }
        host.set_timer(POLL, 0);
    }

    fn answered(&mut self, m: &Message) {
        let Some(identity) = self.notifying.remove(&m.dialogue_id) else {
            return;
        };
        let code = m.code().unwrap_or(0);
        if code >= 300 {
            // The subscriber is gone (its socket closed) or refuses: end the subscription.
            if self.shared.subscribers().remove(&identity).is_some() {
                tracing::info!(
                    "{identity}'s led subscription ended: its NOTIFY got {code} {}",
                    m.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
}

impl Instance for GpioInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            Event::Loaded => host.set_timer(POLL, 0),
            Event::Timer(_) => self.tick(host),
            Event::Message(m) if !m.is_request() => self.answered(&m),
            Event::Message(m) => match m.method() {
                Some(Method::Subscribe) => self.subscribe(&m, host),
                Some(Method::Ack) | None => {}
                Some(other) => host.send(m.refusal(405, format!("gpio takes SUBSCRIBE (Event: led), not {other}; buttons are pressed over its API"))),
            },
            Event::DialogEnded { dialogue_id } => {
                // A NOTIFY that timed out ends its dialog without an answer we could see.
                self.notifying.remove(&dialogue_id);
            }
            // A subscriber that went away ends with its NOTIFY's 480 (or a reconnect).
            Event::PeerDisconnected { .. } | Event::Draining => {}
        }
    }
}

export_plugin!(Gpio);
