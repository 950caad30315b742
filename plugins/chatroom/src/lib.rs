//! `chatroom`: JSIP.md §6's chat rooms.
//!
//! - SUBSCRIBE with `Event: message-push`, `P-Asserted-Identity` and `Expire > 0` to
//!   `room:NAME@DOMAIN` joins (or refreshes); `Expire: 0` leaves. A subscription that is
//!   not refreshed within its Expire ends.
//! - MESSAGE to the room from a member is answered 200 and relayed to every other member
//!   as a new MESSAGE whose Request-URI is the member's identity, keeping From, To,
//!   P-Asserted-Identity and Body.
//! - `GET /chatroom/v1/rooms` lists rooms and members.
//!
//! Rooms come from `conf/chatroom/chatroom.ini` (`rooms = 888, lobby`), re-read on
//! SIGHUP. Members are shared by the SLP and the API through the plugin object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsipd_plugin_api::api::{Api, Request, Response};
use jsipd_plugin_api::jsip::{Message, Method, Uri};
use jsipd_plugin_api::serde_json::json;
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

/// How often the on-load instance looks for expired subscriptions.
const SWEEP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    rooms: Vec<String>,
    max_expire: u64,
}

impl Settings {
    fn read(dir: &Path) -> Settings {
        let mut s = Settings {
            rooms: Vec::new(),
            max_expire: 3600,
        };
        let path = dir.join("chatroom.ini");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{}: {e}; no rooms are open", path.display());
                return s;
            }
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim() {
                "rooms" => {
                    s.rooms = v
                        .split(',')
                        .map(|r| r.trim().to_string())
                        .filter(|r| !r.is_empty())
                        .collect()
                }
                "max_expire" => match v.trim().parse() {
                    Ok(n) => s.max_expire = n,
                    Err(_) => tracing::warn!("{}: max_expire = {v}: not a number", path.display()),
                },
                other => tracing::warn!("{}: unknown key {other}", path.display()),
            }
        }
        s
    }
}

#[derive(Debug)]
struct Member {
    expires: Instant,
}

/// Rooms and their members; shared by the SLP and the API.
#[derive(Debug, Default)]
struct Rooms {
    /// room → identity → member
    rooms: BTreeMap<String, BTreeMap<String, Member>>,
}

#[derive(Clone)]
struct Shared {
    rooms: Arc<Mutex<Rooms>>,
    settings: Arc<Mutex<Settings>>,
    config_dir: PathBuf,
}

impl Shared {
    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload(&self) {
        let new = Settings::read(&self.config_dir);
        let mut rooms = self.rooms();
        rooms.rooms.retain(|name, _| new.rooms.contains(name));
        for r in &new.rooms {
            rooms.rooms.entry(r.clone()).or_default();
        }
        tracing::info!("rooms: {}", new.rooms.join(", "));
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = new;
    }
}

pub struct Chatroom {
    shared: Shared,
}

impl Plugin for Chatroom {
    // Relays are sent, not waited for; the rooms' lock is held only to copy a member
    // list. (A SIGHUP re-reads the small rooms file on the node task.)
    const SLP_NEVER_BLOCKS: bool = true;

    fn load(context: &Context) -> Result<Self, String> {
        let shared = Shared {
            rooms: Arc::default(),
            settings: Arc::new(Mutex::new(Settings::read(context.config_dir()))),
            config_dir: context.config_dir().to_owned(),
        };
        shared.reload();
        Ok(Chatroom { shared })
    }

    fn slp(&self) -> Option<Box<dyn Slp>> {
        Some(Box::new(ChatSlp(self.shared.clone())))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(ChatApi(self.shared.clone())))
    }
}

struct ChatSlp(Shared);

impl Slp for ChatSlp {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(ChatInstance(self.0.clone()))
    }

    fn on_reload(&mut self) {
        self.0.reload();
    }
}

struct ChatInstance(Shared);

fn refuse(host: &mut dyn Host, request: &Message, code: u16, reason: String) {
    let mut r = request.response(code);
    r.reason = Some(reason);
    host.send(r);
}

/// The room a request is for: the user of its Request-URI, without `room:`.
fn room_of(request: &Message) -> Option<String> {
    let uri = Uri::parse(request.request_uri.as_deref()?).ok()?;
    let user = uri.user?;
    Some(user.strip_prefix("room:").unwrap_or(&user).to_string())
}

impl ChatInstance {
    fn subscribe(&mut self, m: &Message, host: &mut dyn Host) {
        let Some(identity) = m.p_asserted_identity.clone() else {
            return refuse(
                host,
                m,
                400,
                "SUBSCRIBE needs P-Asserted-Identity: who joins".into(),
            );
        };
        let Some(expire) = m.expire else {
            return refuse(
                host,
                m,
                400,
                "SUBSCRIBE needs Expire: seconds to stay, 0 to leave".into(),
            );
        };
        if m.event.as_deref() != Some("message-push") {
            return refuse(host, m, 489, "Event must be message-push".into());
        }
        let Some(room) = room_of(m) else {
            return refuse(
                host,
                m,
                404,
                "the Request-URI names no room (room:NAME@DOMAIN)".into(),
            );
        };
        let max = self.0.settings().max_expire;
        let mut rooms = self.0.rooms();
        let Some(members) = rooms.rooms.get_mut(&room) else {
            return refuse(host, m, 404, format!("there is no room {room}"));
        };
        let mut ok = m.response(200);
        if expire == 0 {
            if members.remove(&identity).is_none() {
                drop(rooms);
                return refuse(host, m, 404, format!("{identity} is not in room {room}"));
            }
            tracing::info!("{identity} left room {room}");
            ok.expire = Some(0);
        } else {
            let expire = expire.min(max);
            let joined = members
                .insert(
                    identity.clone(),
                    Member {
                        expires: Instant::now() + Duration::from_secs(expire),
                    },
                )
                .is_none();
            if joined {
                tracing::info!("{identity} joined room {room} for {expire}s");
            }
            ok.expire = Some(expire);
        }
        drop(rooms);
        host.send(ok);
    }

    fn message(&mut self, m: &Message, host: &mut dyn Host) {
        let identity = m
            .p_asserted_identity
            .clone()
            .unwrap_or_else(|| m.from.clone());
        let Some(room) = room_of(m) else {
            return refuse(
                host,
                m,
                404,
                "the Request-URI names no room (room:NAME@DOMAIN)".into(),
            );
        };
        let others: Vec<String> = {
            let rooms = self.0.rooms();
            let Some(members) = rooms.rooms.get(&room) else {
                drop(rooms);
                return refuse(host, m, 404, format!("there is no room {room}"));
            };
            if !members.contains_key(&identity) {
                drop(rooms);
                return refuse(
                    host,
                    m,
                    404,
                    format!("{identity} is not in room {room}; SUBSCRIBE first"),
                );
            }
            members
                .keys()
                .filter(|k| **k != identity)
                .cloned()
                .collect()
        };
        host.send(m.response(200));
        for member in others {
            let dialogue_id = host.new_dialogue_id();
            let mut relay =
                Message::request(Method::Message, &member, &m.from, &m.to, &dialogue_id, 1);
            relay.p_asserted_identity = m.p_asserted_identity.clone();
            relay.body = m.body.clone();
            relay.content_type = m.content_type.clone();
            host.send(relay);
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut rooms = self.0.rooms();
        for (room, members) in rooms.rooms.iter_mut() {
            members.retain(|identity, m| {
                let live = m.expires > now;
                if !live {
                    tracing::info!("{identity}'s subscription to room {room} expired");
                }
                live
            });
        }
    }
}

impl Instance for ChatInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            // The on-load instance keeps the subscriptions' clock.
            Event::Loaded => host.set_timer(SWEEP, 0),
            Event::Timer(_) => {
                self.sweep();
                host.set_timer(SWEEP, 0);
            }
            Event::Message(m) => match m.method() {
                Some(Method::Subscribe) => self.subscribe(&m, host),
                Some(Method::Message) => self.message(&m, host),
                Some(Method::Ack) | None => {}
                Some(other) => refuse(
                    host,
                    &m,
                    405,
                    format!("a chat room takes SUBSCRIBE and MESSAGE, not {other}"),
                ),
            },
            Event::DialogEnded { .. } | Event::PeerDisconnected { .. } => {}
        }
    }
}

struct ChatApi(Shared);

impl Api for ChatApi {
    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        if request.path() != "/rooms" {
            return response.error(
                404,
                &format!("no {} here; try GET /chatroom/v1/rooms", request.path()),
            );
        }
        if request.method() != "GET" {
            return response.error(405, "/rooms answers GET");
        }
        let now = Instant::now();
        let rooms = self.0.rooms();
        let list: Vec<_> = rooms
            .rooms
            .iter()
            .map(|(name, members)| {
                json!({
                    "name": name,
                    "members": members.iter().map(|(identity, m)| json!({
                        "identity": identity,
                        "expires_in_s": m.expires.saturating_duration_since(now).as_secs(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        drop(rooms);
        response.json(
            200,
            &json!({"code": 0, "msg": "OK", "data": {"rooms": list}}),
        );
    }
}

export_plugin!(Chatroom);
