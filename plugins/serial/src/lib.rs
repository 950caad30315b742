//! `serial`: the target's serial console, shared by every client, with history.
//!
//! SLP `serial`: an `INVITE` to `…@serial` joins (answered 200). The target's output
//! then comes as in-dialog `INFO`s with `Content-Type: serial`; a client types the same
//! way. Bodies are JSON objects, and bytes travel base64-encoded, which is lossless for
//! every byte 0x00–0xFF (JSON strings are not: they are Unicode text):
//!
//! ```text
//! {"data":"aGVsbG8NCg=="}          output (or input) bytes
//! {"text":"ls\r"}                  input as UTF-8 text (a convenience for people)
//! {"lost":1234}                    you fell behind by 1234 bytes; the history follows, reset your terminal
//! {"connected":"qemu /run/…"}      the backend is there (again)
//! {"disconnected":"… closed"}      the backend went away; it is retried every second
//! ```
//!
//! Each client may have [`WINDOW`] bytes of INFOs unanswered; more waits in its queue
//! (bounded, see [`hub`]). `BYE` or a dropped socket leaves.
//!
//! API `serial.v1`: `GET /history` (the ring, raw bytes), `GET /status`, `POST /send`
//! (the body's bytes to the target), and `GET /`, a small console page (a JSIP client
//! of this SLP) until the browser console has a terminal.

pub mod hub;
pub mod port;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use data_encoding::BASE64;
use jsipd_kvm_support::ini::Ini;
use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::jsip::{Message, Method};
use jsipd_plugin_api::serde_json::{json, Value};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

use hub::{Hub, Notice, Out};
use port::Backend;

/// Unanswered INFO bytes a client may have in flight.
pub const WINDOW: usize = 64 * 1024;
/// Output bytes in one INFO at most.
const CHUNK: usize = 16 * 1024;
/// After input, when to look for its echo (besides the poll).
const ECHO_LOOK: Duration = Duration::from_millis(1);
/// Largest `POST /send` or input INFO.
const INPUT_MAX: usize = 64 * 1024;

const KNOWN: &[(&str, &[&str])] = &[
    ("", &["backend", "history", "client_queue", "poll_ms"]),
    ("tty", &["path", "baud", "framing"]),
    ("qemu", &["socket"]),
    ("command", &["run"]),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub backend: Backend,
    pub history: usize,
    pub client_queue: usize,
    pub poll: Duration,
}

impl Config {
    fn hub_settings(&self) -> hub::Settings {
        hub::Settings {
            backend: self.backend.clone(),
            history: self.history,
            client_queue: self.client_queue,
        }
    }

    pub fn read(dir: &Path) -> Result<Config, String> {
        let ini = Ini::read(&dir.join("serial.ini"))?;
        ini.only(KNOWN)?;
        let file = ini.path().display().to_string();
        let need = |section: &str, key: &str, what: &str| -> Result<String, String> {
            ini.get(section, key).map(str::to_string).ok_or_else(|| {
                format!("{file}: backend = {section} needs [{section}] {key} = {what}")
            })
        };
        let backend = match ini.get("", "backend") {
            Some("tty") => Backend::Tty {
                path: need("tty", "path", "the device, like /dev/ttyUSB0")?,
                baud: ini.parse_or("tty", "baud", 115200, "a baud rate")?,
                framing: ini.get("tty", "framing").unwrap_or("8N1").to_string(),
            },
            Some("qemu") => Backend::Qemu {
                socket: need("qemu", "socket", "QEMU's serial chardev socket")?,
            },
            Some("command") => Backend::Command {
                argv: need("command", "run", "the command, like /bin/sh -l")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            },
            Some(other) => {
                return Err(format!(
                    "{file}: backend = {other}: use tty, qemu or command"
                ))
            }
            None => {
                return Err(format!(
                    "{file}: set backend = tty, qemu or command (there is no default target)"
                ))
            }
        };
        let history: usize = ini.parse_or("", "history", 64 * 1024, "bytes")?;
        let client_queue: usize = ini.parse_or("", "client_queue", 256 * 1024, "bytes")?;
        let poll_ms: u64 = ini.parse_or("", "poll_ms", 4, "milliseconds")?;
        if history == 0 || client_queue < history || poll_ms == 0 {
            return Err(format!(
                "{file}: history must be above 0, client_queue at least history ({history}), poll_ms above 0"
            ));
        }
        Ok(Config {
            backend,
            history,
            client_queue,
            poll: Duration::from_millis(poll_ms),
        })
    }
}

pub struct Serial {
    config_dir: std::path::PathBuf,
    hub: Hub,
    reader: Mutex<Option<JoinHandle<()>>>,
    poll: Duration,
}

impl Plugin for Serial {
    fn load(context: &Context) -> Result<Self, String> {
        let c = Config::read(context.config_dir())?;
        tracing::info!(
            "backend {}, history {} bytes, client queues {} bytes",
            c.backend.describe(),
            c.history,
            c.client_queue
        );
        let (hub, reader) = Hub::start(c.hub_settings());
        Ok(Serial {
            hub,
            reader: Mutex::new(Some(reader)),
            poll: c.poll,
            config_dir: context.config_dir().to_owned(),
        })
    }

    fn slp(&self) -> Option<Box<dyn Slp>> {
        Some(Box::new(SerialSlp {
            hub: self.hub.clone(),
            poll: self.poll,
            config_dir: self.config_dir.clone(),
        }))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(SerialApi(
            self.hub.clone(),
            self.config_dir.clone(),
        )))
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        self.hub.stop();
        if let Some(r) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = r.join();
        }
    }
}

struct SerialSlp {
    hub: Hub,
    poll: Duration,
    config_dir: std::path::PathBuf,
}

/// SIGHUP: the hub takes a changed backend or size; a broken file keeps the running one.
fn reload(hub: &Hub, dir: &Path) {
    match Config::read(dir) {
        Ok(c) => hub.reconfigure(c.hub_settings()),
        Err(e) => tracing::warn!("serial.ini rejected, keeping the running config: {e}"),
    }
}

impl Slp for SerialSlp {
    fn on_reload(&mut self) {
        reload(&self.hub, &self.config_dir);
    }

    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(Client {
            hub: self.hub.clone(),
            poll: self.poll,
            dialog: None,
            cseq: 0,
            in_flight: BTreeMap::new(),
        })
    }
}

/// One client's dialog.
struct Client {
    hub: Hub,
    poll: Duration,
    /// (client's name, our URI, DialogueID), from its INVITE.
    dialog: Option<(String, String, String)>,
    cseq: u64,
    /// Our INFOs not yet answered: CSeq → bytes.
    in_flight: BTreeMap<u64, usize>,
}

/// The bytes of an input Body: `{"data": base64}` or `{"text": "…"}`.
pub fn input_bytes(body: Option<&Value>) -> Result<Vec<u8>, String> {
    let body = body.ok_or("the Body is missing: {\"data\":\"<base64>\"} or {\"text\":\"…\"}")?;
    if let Some(d) = body.get("data").and_then(Value::as_str) {
        return BASE64
            .decode(d.as_bytes())
            .map_err(|e| format!("data is not base64: {e}"));
    }
    if let Some(t) = body.get("text").and_then(Value::as_str) {
        return Ok(t.as_bytes().to_vec());
    }
    Err(format!("the Body needs data (base64) or text, not {body}"))
}

impl Client {
    fn id(host: &dyn Host) -> u64 {
        host.instance_id()
    }

    /// Sends the client what waits for it, within its window.
    fn flush(&mut self, host: &mut dyn Host) {
        let Some((peer, us, dialogue)) = self.dialog.clone() else {
            return;
        };
        let id = Self::id(host);
        loop {
            let unanswered: usize = self.in_flight.values().sum();
            if unanswered >= WINDOW {
                return;
            }
            let Some(out) = self.hub.take(id, CHUNK.min(WINDOW - unanswered)) else {
                return;
            };
            let (body, bytes) = match out {
                Out::Data(d) => (json!({"data": BASE64.encode(&d)}), d.len()),
                Out::Notice(Notice::Lost(n)) => {
                    self.hub.lost_told(id);
                    (json!({"lost": n}), 0)
                }
                Out::Notice(Notice::Connected(b)) => (json!({"connected": b}), 0),
                Out::Notice(Notice::Disconnected(why)) => (json!({"disconnected": why}), 0),
            };
            self.cseq += 1;
            let mut info = Message::request(Method::Info, &peer, &us, &peer, &dialogue, self.cseq);
            info.content_type = Some("serial".into());
            info.body = Some(body);
            self.in_flight.insert(self.cseq, bytes.max(1));
            host.send(info);
        }
    }

    fn leave(&mut self, host: &dyn Host, why: &str) {
        if self.hub.detach(Self::id(host)) {
            tracing::info!(
                "serial client {} left: {why}",
                self.dialog.as_ref().map_or("?", |d| d.0.as_str())
            );
        }
        self.dialog = None;
    }
}

impl Instance for Client {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            Event::Message(m) if !m.is_request() => {
                // An answer to one of our INFOs (200, or 408 from the stack): its bytes
                // leave the window either way. Output otherwise goes out on the poll
                // timer, which gathers it into fewer, larger INFOs; only a client whose
                // window was full is served again at once.
                let was_full = self.in_flight.values().sum::<usize>() >= WINDOW;
                self.in_flight.remove(&m.cseq);
                if was_full {
                    self.flush(host);
                }
            }
            Event::Message(m) => {
                // The console reads and types into the target: an operator's.
                if let Some(refusal) = m.refused_below(Role::Operator) {
                    return host.send(refusal);
                }
                match m.method() {
                    Some(Method::Invite) if self.dialog.is_none() => {
                        let peer = m.from.clone();
                        self.hub.attach(Self::id(host), &peer);
                        tracing::info!("serial client {peer} joined");
                        self.dialog = Some((peer, m.to.clone(), m.dialogue_id.clone()));
                        let mut ok = m.response(200);
                        ok.body = Some(json!({"encoding": "base64", "window": WINDOW}));
                        host.send(ok);
                        self.flush(host);
                        host.set_timer(self.poll, 0);
                    }
                    Some(Method::Invite) => host.send(m.response(200)), // a re-INVITE
                    Some(Method::Info) => {
                        let serial = m
                            .content_type
                            .as_deref()
                            .is_some_and(|t| t.eq_ignore_ascii_case("serial"));
                        if !serial {
                            return host.send(m.refusal(
                                415,
                                format!(
                                    "Content-Type must be serial, not {}",
                                    m.content_type.as_deref().unwrap_or("(none)")
                                ),
                            ));
                        }
                        match input_bytes(m.body.as_ref()) {
                            Err(e) => host.send(m.refusal(400, e)),
                            Ok(b) if b.len() > INPUT_MAX => host.send(m.refusal(
                                413,
                                format!("{} bytes of input; at most {INPUT_MAX} at once", b.len()),
                            )),
                            Ok(b) => match self.hub.send(&b) {
                                Ok(()) => {
                                    host.send(m.response(200));
                                    // The echo comes within a millisecond or so: look once
                                    // then, besides the poll.
                                    host.set_timer(ECHO_LOOK, 1);
                                }
                                Err(e) => host.send(m.refusal(503, e)),
                            },
                        }
                    }
                    // The stack answered the BYE; the dialog's end detaches the client.
                    Some(Method::Ack | Method::Bye) | None => {}
                    Some(other) => host.send(m.refusal(
                        405,
                        format!(
                            "serial takes INVITE, then INFO with Content-Type serial; not {other}"
                        ),
                    )),
                }
            }
            Event::Timer(token) => {
                if self.dialog.is_some() {
                    self.flush(host);
                    if token == 0 {
                        host.set_timer(self.poll, 0);
                    }
                }
            }
            Event::DialogEnded { .. } => self.leave(host, "its dialog ended"),
            Event::PeerDisconnected { .. } => self.leave(host, "its socket closed"),
            // A console client keeps its old generation until it leaves.
            Event::Loaded | Event::Draining => {}
        }
    }
}

struct SerialApi(Hub, std::path::PathBuf);

impl Api for SerialApi {
    /// The console reads and types into the target: operators only.
    fn role_needed(&self, _method: &str, _path: &str) -> Role {
        Role::Operator
    }

    fn on_reload(&self) {
        reload(&self.0, &self.1);
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let path = request.path().to_string();
        match (path.as_str(), request.method()) {
            ("/", "GET") => {
                response
                    .status(200)
                    .header("content-type", "text/html; charset=utf-8");
                let _ = response.write_all(include_str!("console.html").as_bytes());
            }
            ("/history", "GET") => {
                response
                    .status(200)
                    .header("content-type", "application/octet-stream");
                let _ = response.write_all(&self.0.history());
            }
            ("/status", "GET") => {
                let s = self.0.status();
                let clients: Vec<Value> = s
                    .clients
                    .iter()
                    .map(|(id, peer, queued, drops)| json!({"id": id, "peer": peer, "queued": queued, "drops": drops}))
                    .collect();
                let data = json!({
                    "backend": s.backend, "connected": s.connected, "error": s.error,
                    "clients": clients, "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                    "drops": s.drops, "history": s.history,
                });
                if request
                    .header("accept")
                    .is_some_and(|a| a.contains("text/plain"))
                {
                    let mut t = String::new();
                    for (k, v) in data.as_object().unwrap() {
                        if k != "clients" {
                            t.push_str(&format!(
                                "{k:10} {}\n",
                                v.as_str().map_or(v.to_string(), str::to_string)
                            ));
                        }
                    }
                    for c in &clients {
                        t.push_str(&format!(
                            "client     {} {} queued {} drops {}\n",
                            c["id"],
                            c["peer"].as_str().unwrap_or(""),
                            c["queued"],
                            c["drops"]
                        ));
                    }
                    response
                        .status(200)
                        .header("content-type", "text/plain; charset=utf-8");
                    let _ = response.write_all(t.as_bytes());
                } else {
                    response.json(200, &json!({"code": 0, "msg": "OK", "data": data}));
                }
            }
            ("/send", "POST") => match request.read_body(INPUT_MAX) {
                Err(e) => response.error(413, &format!("send: {e}")),
                Ok(b) => match self.0.send(&b) {
                    Ok(()) => response.json(
                        200,
                        &json!({"code": 0, "msg": "OK", "data": {"sent": b.len()}}),
                    ),
                    Err(e) => response.error(503, &e),
                },
            },
            ("/history" | "/status", _) => response.error(405, &format!("{path} answers GET")),
            ("/send", _) => response.error(405, "/send answers POST"),
            _ => response.error(
                404,
                &format!("no {path} here; try /serial/v1/history, status or send"),
            ),
        }
    }
}

export_plugin!(Serial);

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_kvm_support::ini::with_config_file;

    #[test]
    fn config_names_what_is_missing() {
        let read = |t: &str| with_config_file("serial.ini", t, Config::read);
        assert!(read("").unwrap_err().contains("set backend"));
        assert!(read("backend = qemu\n")
            .unwrap_err()
            .contains("[qemu] socket"));
        let c = read("backend = tty\n[tty]\npath = /dev/ttyUSB0\nbaud = 9600\n").unwrap();
        assert_eq!(
            c.backend,
            Backend::Tty {
                path: "/dev/ttyUSB0".into(),
                baud: 9600,
                framing: "8N1".into()
            }
        );
        assert_eq!(c.history, 64 * 1024);
        assert!(
            read("backend = command\n[command]\nrun = /bin/sh -l\nhistory = 10\n")
                .unwrap_err()
                .contains("no key")
        );
        assert!(
            read("backend = qemu\nclient_queue = 10\n[qemu]\nsocket = /x\n")
                .unwrap_err()
                .contains("client_queue")
        );
    }

    #[test]
    fn input_bodies_are_base64_or_text_and_every_byte_survives() {
        let all: Vec<u8> = (0..=255).collect();
        let body = json!({"data": BASE64.encode(&all)});
        assert_eq!(input_bytes(Some(&body)).unwrap(), all);
        assert_eq!(
            input_bytes(Some(&json!({"text": "ls\r"}))).unwrap(),
            b"ls\r"
        );
        assert!(input_bytes(Some(&json!({"data": "!!"})))
            .unwrap_err()
            .contains("base64"));
        assert!(input_bytes(None).unwrap_err().contains("missing"));
    }
}
