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
//! Rooms exist while they have members, as in gortc's chatroom demo: the first SUBSCRIBE
//! to a name opens its room, and the room is gone when its last member leaves or
//! expires. `conf/chatroom/chatroom.ini` (re-read on SIGHUP) may limit which names may
//! open (`rooms = 888, lobby`, an allow-list) and caps how many rooms exist at once
//! (`max_rooms`). Members are shared by the SLP and the API through the plugin object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::jsip::{Message, Method, Uri};
use jsipd_plugin_api::serde_json::json;
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

/// How often the on-load instance looks for expired subscriptions.
const SWEEP: Duration = Duration::from_millis(500);

/// Longest room name, in bytes: a name is a map key and is listed by the API, so a
/// client cannot make the plugin keep megabytes per room.
const MAX_ROOM_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    /// The names that may open a room; `None`: any name.
    allowed: Option<Vec<String>>,
    /// How many rooms may exist at once.
    max_rooms: usize,
    max_expire: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allowed: None,
            max_rooms: 1000,
            max_expire: 3600,
        }
    }
}

impl Settings {
    fn allows(&self, room: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == room))
    }

    fn read(dir: &Path) -> Settings {
        let mut s = Settings::default();
        let path = dir.join("chatroom.ini");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    "{}: {e}; using the defaults (any room name)",
                    path.display()
                );
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
                    s.allowed = Some(
                        v.split(',')
                            .map(|r| r.trim().to_string())
                            .filter(|r| !r.is_empty())
                            .collect(),
                    )
                }
                "max_rooms" => match v.trim().parse() {
                    Ok(n) => s.max_rooms = n,
                    Err(_) => tracing::warn!("{}: max_rooms = {v}: not a number", path.display()),
                },
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

impl Rooms {
    /// Whether a room of this name may open now: a refusal's code and reason if not.
    fn may_open(&self, room: &str, settings: &Settings) -> Result<(), (u16, String)> {
        if room.is_empty() || room.len() > MAX_ROOM_NAME {
            return Err((
                400,
                format!(
                    "a room name has 1 to {MAX_ROOM_NAME} bytes, not {}",
                    room.len()
                ),
            ));
        }
        if !settings.allows(room) {
            return Err((
                404,
                format!("there is no room {room}: chatroom.ini's rooms = does not list it"),
            ));
        }
        if self.rooms.len() >= settings.max_rooms {
            return Err((
                503,
                format!(
                    "{} rooms are open, the most max_rooms allows; {room} cannot open now",
                    self.rooms.len()
                ),
            ));
        }
        Ok(())
    }

    /// A room lives while it has members, as in gortc.
    fn close_if_empty(&mut self, room: &str) {
        if self.rooms.get(room).is_some_and(|m| m.is_empty()) {
            self.rooms.remove(room);
            tracing::info!("closed room {room}: its last member left");
        }
    }
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

    /// SIGHUP: new settings; a room whose name the new allow-list leaves out is closed.
    fn reload(&self) {
        let new = Settings::read(&self.config_dir);
        let mut rooms = self.rooms();
        rooms.rooms.retain(|name, _| {
            let keep = new.allows(name);
            if !keep {
                tracing::info!("closed room {name}: no longer in rooms =");
            }
            keep
        });
        drop(rooms);
        match &new.allowed {
            Some(names) => tracing::info!(
                "rooms {} open on demand, at most {} at once",
                names.join(", "),
                new.max_rooms
            ),
            None => tracing::info!(
                "any room opens on demand, at most {} at once",
                new.max_rooms
            ),
        }
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
            settings: Arc::default(),
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

/// The room a request is for: the user of its Request-URI, without `room:`.
fn room_of(request: &Message) -> Option<String> {
    let uri = Uri::parse(request.request_uri.as_deref()?).ok()?;
    let user = uri.user?;
    Some(user.strip_prefix("room:").unwrap_or(&user).to_string())
}

impl ChatInstance {
    fn subscribe(&mut self, m: &Message, host: &mut dyn Host) {
        let Some(identity) = m.p_asserted_identity.clone() else {
            return host.send(m.refusal(400, "SUBSCRIBE needs P-Asserted-Identity: who joins"));
        };
        let Some(expire) = m.expire else {
            return host
                .send(m.refusal(400, "SUBSCRIBE needs Expire: seconds to stay, 0 to leave"));
        };
        if m.event.as_deref() != Some("message-push") {
            return host.send(m.refusal(489, "Event must be message-push"));
        }
        let Some(room) = room_of(m) else {
            return host.send(m.refusal(404, "the Request-URI names no room (room:NAME@DOMAIN)"));
        };
        let settings = self.0.settings();
        let mut rooms = self.0.rooms();
        let mut ok = m.response(200);
        if expire == 0 {
            let left = rooms
                .rooms
                .get_mut(&room)
                .and_then(|members| members.remove(&identity));
            if left.is_none() {
                drop(rooms);
                return host.send(m.refusal(404, format!("{identity} is not in room {room}")));
            }
            tracing::info!("{identity} left room {room}");
            rooms.close_if_empty(&room);
            ok.expire = Some(0);
        } else {
            if !rooms.rooms.contains_key(&room) {
                if let Err(why) = rooms.may_open(&room, &settings) {
                    drop(rooms);
                    return host.send(m.refusal(why.0, why.1));
                }
                tracing::info!("opened room {room}");
            }
            let members = rooms.rooms.entry(room.clone()).or_default();
            let expire = expire.min(settings.max_expire);
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
            return host.send(m.refusal(404, "the Request-URI names no room (room:NAME@DOMAIN)"));
        };
        let others: Vec<String> = {
            let rooms = self.0.rooms();
            let Some(members) = rooms.rooms.get(&room) else {
                drop(rooms);
                return host.send(m.refusal(
                    404,
                    format!("there is no room {room}: nobody has joined it; SUBSCRIBE first"),
                ));
            };
            if !members.contains_key(&identity) {
                drop(rooms);
                return host.send(m.refusal(
                    404,
                    format!("{identity} is not in room {room}; SUBSCRIBE first"),
                ));
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
        rooms.rooms.retain(|room, members| {
            members.retain(|identity, m| {
                let live = m.expires > now;
                if !live {
                    tracing::info!("{identity}'s subscription to room {room} expired");
                }
                live
            });
            if members.is_empty() {
                tracing::info!("closed room {room}: its last member's subscription expired");
            }
            !members.is_empty()
        });
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
                Some(other) => host.send(m.refusal(
                    405,
                    format!("a chat room takes SUBSCRIBE and MESSAGE, not {other}"),
                )),
            },
            Event::DialogEnded { .. } | Event::PeerDisconnected { .. } | Event::Draining => {}
        }
    }
}

struct ChatApi(Shared);

impl Api for ChatApi {
    /// The room list shows to anyone signed in.
    fn role_needed(&self, _method: &str, _path: &str) -> Role {
        Role::Viewer
    }

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
        let settings = self.0.settings();
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
            &json!({"code": 0, "msg": "OK", "data": {
                "rooms": list,
                "allowed": settings.allowed,
                "max_rooms": settings.max_rooms,
            }}),
        );
    }
}

export_plugin!(Chatroom);
