//! A blocking WebSocket client for the tests (tungstenite over std's TcpStream).
//!
//! Every read waits on the real socket with a deadline; nothing sleeps.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocket;
use tungstenite::Message as Frame;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Ws {
    sock: WebSocket<TcpStream>,
}

/// How a connection attempt went wrong: the HTTP status and body, or another error.
#[derive(Debug)]
pub enum Refused {
    Http(u16, String),
    Other(String),
}

impl Ws {
    pub fn connect(rtc: SocketAddr, userid: &str) -> Ws {
        Ws::try_connect(rtc, &format!("/rtc?userid={userid}"), None)
            .unwrap_or_else(|e| panic!("connect as {userid}: {e:?}"))
    }

    pub fn try_connect(
        rtc: SocketAddr,
        path_query: &str,
        bearer: Option<&str>,
    ) -> Result<Ws, Refused> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        Ws::try_connect_with(rtc, path_query, &headers)
    }

    /// Connects with extra handshake headers (`cookie`, `origin`, …).
    pub fn try_connect_with(
        rtc: SocketAddr,
        path_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, Refused> {
        let mut req = format!("ws://{rtc}{path_query}")
            .into_client_request()
            .map_err(|e| Refused::Other(e.to_string()))?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let stream = TcpStream::connect(rtc).map_err(|e| Refused::Other(e.to_string()))?;
        // As browsers do: no Nagle delay on small frames.
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        match tungstenite::client(req, stream) {
            Ok((sock, _)) => Ok(Ws { sock }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(Refused::Http(status, body))
            }
            Err(e) => Err(Refused::Other(e.to_string())),
        }
    }

    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.sock.send(Frame::text(text)).expect("send frame");
    }

    pub fn send_frame(&mut self, frame: Frame) {
        self.sock.send(frame).expect("send frame");
    }

    /// The next JSIP message; panics after [`WAIT`] or on close.
    pub fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
            .unwrap_or_else(|| panic!("no JSIP message within {WAIT:?}"))
    }

    /// The next JSIP message, or `None` if none came within `limit`.
    pub fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            match self.read_until(deadline)? {
                Frame::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server frames are JSON"))
                }
                Frame::Close(c) => panic!("socket closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Reads for `limit` (answering pings, as tungstenite does while reading) and
    /// counts the pings that came; panics on a JSIP message or a close.
    pub fn pings_within(&mut self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut pings = 0;
        while let Some(frame) = self.read_until(deadline) {
            match frame {
                Frame::Ping(_) => pings += 1,
                Frame::Pong(_) => {}
                other => panic!("only pings expected, got {other:?}"),
            }
        }
        pings
    }

    /// The next frame, or `None` once `deadline` passed; panics on a read error.
    fn read_until(&mut self, deadline: Instant) -> Option<Frame> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.sock.get_mut().set_read_timeout(Some(left)).unwrap();
        match self.sock.read() {
            Ok(frame) => Some(frame),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Reads until the server closes; returns the close code (skipping other frames).
    pub fn recv_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no close within {WAIT:?}");
            match self.sock.read() {
                Ok(Frame::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read while waiting for close: {e}"),
            }
        }
    }

    /// Closes cleanly and waits for the server's side of the close.
    pub fn close(mut self) {
        let _ = self.sock.close(None);
        while self.sock.read().is_ok() {}
    }
}
