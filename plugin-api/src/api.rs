//! The HTTP contract: a plugin's API, mounted by the daemon at `/<name>/<vN>/…`.
//!
//! Handlers are plain blocking code: each request runs on its own host-owned thread,
//! the body is pulled with [`std::io::Read`] and the answer is pushed with
//! [`std::io::Write`], both with backpressure. So a multi-GiB upload or an endless MJPEG
//! stream needs no more memory than one chunk, and no async runtime is forced on
//! plugin authors.

use std::io::{self, Read, Write};

use serde_json::Value;

/// What a person may do, from least to most. A higher role may do everything a lower one
/// may, so a route states the lowest role it needs ([`Api::role_needed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Not signed in. Only a plugin mounted at a root of the people's port
    /// (`Plugin::PEOPLE_ROOT`) is ever called by nobody, so that it can offer its own
    /// sign-in; a route that states no role keeps nobody out like everyone else below it.
    Nobody,
    /// Watches: video and state that only shows.
    Viewer,
    /// Also drives the target: keyboard, mouse, power, paste, mounting media.
    Operator,
    /// Also changes what is stored or configured: uploads, deletes, plugin settings.
    Admin,
}

impl Role {
    /// The roles an account can have (not [`Role::Nobody`]).
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Nobody => "nobody",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The number that crosses the `.so` boundary (`ffi::FfiRequest::caller_role`):
    /// 1, 2, 3 for the account roles since ABI 1.3; 0 for nobody since ABI 1.5 (before
    /// it, 0 meant "not told", which no host a plugin runs on sends).
    pub fn to_ffi(self) -> u8 {
        self as u8
    }

    /// `None` for an unknown number.
    pub fn from_ffi(n: u8) -> Option<Role> {
        match n {
            0 => Some(Role::Nobody),
            n => Role::ALL.get(usize::from(n) - 1).copied(),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a request. On the people's port, the signed-in user and their role; on the
/// management port, the operator: `user` is empty and the role is [`Role::Admin`],
/// because whoever reaches that port is trusted with the whole daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub role: Role,
}

impl Caller<'_> {
    /// The management port's caller.
    pub const OPERATOR: Caller<'static> = Caller {
        user: "",
        role: Role::Admin,
    };
}

/// A plugin's HTTP API.
pub trait Api: Send + Sync {
    /// Answers one request. Several requests may run at once, each on its own thread.
    ///
    /// A panic answers `500` if nothing was sent yet (else the connection is cut), and is
    /// counted against the plugin.
    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>);

    /// The lowest role that may call `method` on `path` (the path below the mount
    /// point, as [`Request::path`]). Checked before [`Api::handle`] is called: a caller
    /// below it gets `403` and the handler never runs. The default, [`Role::Admin`],
    /// keeps a plugin that states nothing closed to everyone but admins on the people's
    /// port; the management port's caller is always an admin.
    fn role_needed(&self, method: &str, path: &str) -> Role {
        let _ = (method, path);
        Role::Admin
    }

    /// The daemon re-read its configuration (SIGHUP); re-read your own files.
    fn on_reload(&self) {}

    /// This generation gets no new requests any more: a newer one replaced it, or it is
    /// being deleted. Requests still running go on until they return (or until the
    /// host's `drain_timeout` cuts them), so end answers that never finish by
    /// themselves (an endless stream) now, cleanly. Called once, on a host thread,
    /// while requests may still be running.
    fn on_drain(&self) {}

    /// Called once, after the last request finished and before the API is dropped.
    fn on_unload(&self) {}
}

/// One HTTP request.
pub struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a mut dyn Read,
    caller: Caller<'a>,
    remote: &'a str,
}

impl<'a> Request<'a> {
    /// A request from parts; the daemon builds these, and so can a plugin's unit tests.
    pub fn new(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        body: &'a mut dyn Read,
    ) -> Request<'a> {
        Request {
            method,
            path,
            query,
            headers,
            body,
            caller: Caller::OPERATOR,
            remote: "",
        }
    }

    /// The same request from the client address `remote` (an IP address as text).
    pub fn with_remote(mut self, remote: &'a str) -> Request<'a> {
        self.remote = remote;
        self
    }

    /// The client's IP address as text; empty when the host did not say (a host
    /// before ABI 1.5, or a unit test).
    pub fn remote(&self) -> &'a str {
        self.remote
    }

    /// The same request from `caller` (without it, the management port's operator).
    pub fn with_caller(mut self, caller: Caller<'a>) -> Request<'a> {
        self.caller = caller;
        self
    }

    /// Who sent it.
    pub fn caller(&self) -> Caller<'a> {
        self.caller
    }

    /// `GET`, `POST`, …
    pub fn method(&self) -> &str {
        self.method
    }

    /// The path below the mount point: `/rooms` for `GET /chatroom/v1/rooms`, `/` for the
    /// mount point itself. Still percent-encoded.
    pub fn path(&self) -> &str {
        self.path
    }

    /// The raw query string, without `?` (empty when there is none).
    pub fn query(&self) -> &str {
        self.query
    }

    /// The value of a query parameter, undecoded (`None` when absent).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    pub fn headers(&self) -> &[(&'a str, &'a str)] {
        &self.headers
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The body, to read as it arrives.
    pub fn body(&mut self) -> &mut dyn Read {
        self.body
    }

    /// The headers and the body at once, for passing the request on
    /// ([`crate::host::call_api`]).
    pub(crate) fn headers_and_body(&mut self) -> (&[(&'a str, &'a str)], &mut dyn Read) {
        (&self.headers, &mut *self.body)
    }

    /// The whole body, refused with `InvalidData` when it is longer than `limit` bytes.
    pub fn read_body(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = (&mut self.body)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)?;
        if n > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the body is longer than {limit} bytes"),
            ));
        }
        Ok(buf)
    }
}

/// Where the answer goes; implemented by the daemon (and by tests).
pub trait ResponseSink {
    fn set_status(&mut self, status: u16);
    fn add_header(&mut self, name: &str, value: &str);
    /// `false` once the client went away. Empty `data` is a flush.
    fn write(&mut self, data: &[u8]) -> bool;
}

/// The answer to one request: status and headers first, then the body, written as it
/// is produced. Without a status the answer is `200`.
pub struct Response<'a> {
    sink: &'a mut dyn ResponseSink,
}

impl<'a> Response<'a> {
    pub fn new(sink: &'a mut dyn ResponseSink) -> Response<'a> {
        Response { sink }
    }

    /// Sets the status; only before the first body write.
    pub fn status(&mut self, status: u16) -> &mut Self {
        self.sink.set_status(status);
        self
    }

    /// Adds a header; only before the first body write.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.sink.add_header(name, value);
        self
    }

    /// Where the answer goes, for handing it on whole ([`crate::host::call_api`]).
    pub fn sink(&mut self) -> &mut dyn ResponseSink {
        self.sink
    }

    /// A complete JSON answer.
    pub fn json(&mut self, status: u16, value: &Value) {
        let mut text = value.to_string();
        text.push('\n');
        self.status(status)
            .header("content-type", "application/json");
        let _ = self.write_all(text.as_bytes());
    }

    /// A JSON error in the daemon's own shape, `{"code":STATUS,"msg":REASON,"data":null}`.
    pub fn error(&mut self, status: u16, reason: &str) {
        self.json(
            status,
            &serde_json::json!({"code": status, "msg": reason, "data": null}),
        );
    }
}

impl Write for Response<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.sink.write(buf) {
            Ok(buf.len())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            ))
        }
    }

    /// Sends what was written so far now. Answers are otherwise collected up to 64 KiB
    /// and sent whole; a stream (MJPEG, server-sent events) flushes after each part.
    fn flush(&mut self) -> io::Result<()> {
        if self.sink.write(&[]) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            ))
        }
    }
}

/// A [`ResponseSink`] that keeps everything, for unit tests of API handlers.
#[derive(Debug, Default)]
pub struct RecordedResponse {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedResponse {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl ResponseSink for RecordedResponse {
    fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }

    fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.into(), value.into()));
    }

    fn write(&mut self, data: &[u8]) -> bool {
        self.body.extend_from_slice(data);
        true
    }
}
