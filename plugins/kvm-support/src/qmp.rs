//! A blocking client for QMP, QEMU's machine protocol (JSON lines over a socket).
//!
//! QEMU serves one client per monitor socket, so each plugin owns its socket (config key
//! `qmp`) and this client owns its connection: commands are serialised by a mutex, and
//! events that arrive in between are kept until someone asks for them. The connection is
//! made on first use and made again after it broke, so a plugin loaded before QEMU
//! started, or kept across a QEMU restart, recovers by itself; until then each call
//! answers [`Error::Unreachable`], which the plugins turn into `503` with the reason.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsipd_plugin_api::serde_json::{self, json, Value};

/// How long a command may take before the connection is given up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum Error {
    /// The socket could not be reached or broke; QEMU is not running there.
    Unreachable { path: PathBuf, error: String },
    /// QEMU refused the command.
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// QEMU said something that is not QMP.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unreachable { path, error } => write!(
                f,
                "QEMU's QMP socket {} is unreachable ({error}); is QEMU running with -qmp unix:{},server=on,wait=off?",
                path.display(),
                path.display()
            ),
            Error::Command {
                command,
                class,
                desc,
            } => write!(f, "QEMU refused {command}: {desc} ({class})"),
            Error::Protocol(what) => write!(f, "QMP protocol error: {what}"),
        }
    }
}

impl std::error::Error for Error {}

pub struct Qmp {
    path: PathBuf,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<Value>,
}

impl Qmp {
    /// A client for the socket at `path`; nothing is connected yet.
    pub fn new(path: impl Into<PathBuf>) -> Qmp {
        Qmp {
            path: path.into(),
            conn: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unreachable(&self, error: impl std::fmt::Display) -> Error {
        Error::Unreachable {
            path: self.path.clone(),
            error: error.to_string(),
        }
    }

    fn connect(&self) -> Result<Conn, Error> {
        let stream = UnixStream::connect(&self.path).map_err(|e| self.unreachable(e))?;
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| self.unreachable(e))?;
        let writer = stream.try_clone().map_err(|e| self.unreachable(e))?;
        let mut conn = Conn {
            reader: BufReader::new(stream),
            writer,
            next_id: 0,
            events: Vec::new(),
        };
        let greeting = conn.read_line().map_err(|e| self.unreachable(e))?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol(format!(
                "{} greeted with {greeting}, not QMP",
                self.path.display()
            )));
        }
        conn.run("qmp_capabilities", json!({}), &self.path)?;
        Ok(conn)
    }

    /// Runs `command` with `arguments` and returns QEMU's `return` value.
    ///
    /// A broken connection is dropped and made again once, so one call survives a QEMU
    /// restart between calls.
    pub fn execute(&self, command: &str, arguments: Value) -> Result<Value, Error> {
        let mut guard = self.lock();
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.connect()?);
            }
            let conn = guard.as_mut().expect("connected above");
            match conn.run(command, arguments.clone(), &self.path) {
                Err(Error::Unreachable { .. }) if attempt == 0 => *guard = None,
                Err(e @ Error::Unreachable { .. }) => {
                    *guard = None;
                    return Err(e);
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Takes the events that arrived so far (`{"event": NAME, "data": …}` objects).
    pub fn take_events(&self) -> Vec<Value> {
        self.lock()
            .as_mut()
            .map(|c| std::mem::take(&mut c.events))
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an event named `name` whose data satisfies `matches`,
    /// consuming it (other events stay queued).
    pub fn wait_event(
        &self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Option<Value>, Error> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let conn = guard.as_mut().expect("connected above");
        loop {
            if let Some(i) = conn
                .events
                .iter()
                .position(|e| e["event"] == name && matches(&e["data"]))
            {
                return Ok(Some(conn.events.remove(i)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = conn.reader.get_ref().set_read_timeout(Some(left));
            let line = conn.read_line();
            let _ = conn
                .reader
                .get_ref()
                .set_read_timeout(Some(COMMAND_TIMEOUT));
            match line {
                Ok(v) if v.get("event").is_some() => conn.events.push(v),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // A timed-out read may have consumed half a line; start afresh.
                    *guard = None;
                    return Ok(None);
                }
                Err(e) => {
                    *guard = None;
                    return Err(self.unreachable(e));
                }
            }
        }
    }
}

impl Conn {
    fn read_line(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed the socket",
            ));
        }
        serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not JSON ({e}): {line:?}"),
            )
        })
    }

    fn run(&mut self, command: &str, arguments: Value, path: &Path) -> Result<Value, Error> {
        let unreachable = |e: std::io::Error| Error::Unreachable {
            path: path.to_owned(),
            error: e.to_string(),
        };
        self.next_id += 1;
        let id = self.next_id;
        let mut line = json!({"execute": command, "arguments": arguments, "id": id}).to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(unreachable)?;
        loop {
            let v = self.read_line().map_err(unreachable)?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if v["id"] != id {
                continue; // an answer to a command whose caller gave up
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(Error::Command {
                    command: command.into(),
                    class: e["class"].as_str().unwrap_or("?").into(),
                    desc: e["desc"].as_str().unwrap_or("?").into(),
                });
            }
            return Err(Error::Protocol(format!("{command}: unexpected answer {v}")));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a scripted QMP peer on a real Unix socket; the QEMU end-to-end tests live
    //! in `tests/` (the guest harness).
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    fn peer(dir: &Path, script: impl FnOnce(UnixStream) + Send + 'static) -> PathBuf {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            script(s);
        });
        path
    }

    fn read_command(r: &mut BufReader<UnixStream>) -> Value {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn greeting_capabilities_commands_errors_and_events() {
        let dir = std::env::temp_dir().join(format!("jsipd-qmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = peer(&dir, |s| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\":{\"version\":{}}}\n").unwrap();
            let c = read_command(&mut r);
            assert_eq!(c["execute"], "qmp_capabilities");
            w.write_all(format!("{{\"return\":{{}},\"id\":{}}}\n", c["id"]).as_bytes())
                .unwrap();
            let c = read_command(&mut r);
            assert_eq!(c["execute"], "query-status");
            w.write_all(b"{\"event\":\"STOP\",\"data\":{}}\n").unwrap();
            w.write_all(
                format!(
                    "{{\"return\":{{\"status\":\"paused\"}},\"id\":{}}}\n",
                    c["id"]
                )
                .as_bytes(),
            )
            .unwrap();
            let c = read_command(&mut r);
            w.write_all(format!("{{\"error\":{{\"class\":\"GenericError\",\"desc\":\"no such device\"}},\"id\":{}}}\n", c["id"]).as_bytes())
                .unwrap();
            w.write_all(b"{\"event\":\"DEVICE_DELETED\",\"data\":{\"device\":\"x\"}}\n")
                .unwrap();
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let q = Qmp::new(&path);
        let status = q.execute("query-status", json!({})).unwrap();
        assert_eq!(status["status"], "paused");
        let err = q.execute("eject", json!({"id": "cd9"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "QEMU refused eject: no such device (GenericError)"
        );
        let deleted = q
            .wait_event(
                "DEVICE_DELETED",
                |d| d["device"] == "x",
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(deleted.is_some());
        let events = q.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event"], "STOP");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_absent_socket_is_unreachable_with_a_hint() {
        let q = Qmp::new("/nonexistent/jsipd/qmp.sock");
        let e = q.execute("query-status", json!({})).unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }));
        assert!(e.to_string().contains("is QEMU running"), "{e}");
    }
}
