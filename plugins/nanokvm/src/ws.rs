//! `GET /api/ws`: NanoKVM's input WebSocket. Binary frames, applied through `hid` in
//! the order they arrive:
//! - `[0]`: a heartbeat;
//! - `[1, modifiers, 0, k1..k6]`: a USB boot keyboard report (the keys held now);
//! - `[2, buttons, dx, dy, wheel]`: a relative mouse report (signed bytes);
//! - `[2, buttons, x lo, x hi, y lo, y hi, wheel]`: an absolute one (0..=32767).
//!
//! The socket is one `hid` holder (`POST /hid/v1/hold`, `/mouse` with `holder`), so
//! when it drops, for whatever reason, `POST /hid/v1/release` lets go of what it held
//! and nothing else. The host hands the plugin the raw connection after its 101 answer.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use jsipd_plugin_api::api::{Request, Response, Role};
use jsipd_plugin_api::serde_json::{json, Value};
use jsipd_plugin_api::tracing;
use tungstenite::protocol::{Role as WsRole, WebSocket};
use tungstenite::Message;

use crate::{called, failure, Person};

/// One input, decoded from a frame.
#[derive(Debug, PartialEq)]
pub enum Report {
    Heartbeat,
    /// The HID usages held: modifiers as 0xe0..=0xe7, then the keys.
    Keyboard(Vec<u8>),
    /// `hid`'s `POST /mouse` body (without the holder).
    Mouse(Value),
}

const BUTTONS: [(u8, &str); 5] = [
    (1, "left"),
    (2, "right"),
    (4, "middle"),
    (8, "back"),
    (16, "forward"),
];

/// A frame's report, or why it is not one.
pub fn decode(frame: &[u8]) -> Result<Report, String> {
    match frame {
        [0] => Ok(Report::Heartbeat),
        [1, modifiers, _, keys @ ..] if keys.len() == 6 => {
            let mut usages: Vec<u8> = (0..8)
                .filter(|i| modifiers & (1 << i) != 0)
                .map(|i| 0xe0 + i)
                .collect();
            // 0 is no key, 1..=3 are the report's error codes (rollover).
            usages.extend(keys.iter().copied().filter(|&k| k > 3));
            Ok(Report::Keyboard(usages))
        }
        [2, buttons, rest @ ..] if rest.len() == 3 || rest.len() == 5 => {
            let names: Vec<&str> = BUTTONS
                .iter()
                .filter(|(bit, _)| buttons & bit != 0)
                .map(|(_, n)| *n)
                .collect();
            let mut body = json!({"buttons": names});
            let wheel = rest[rest.len() - 1] as i8;
            if rest.len() == 3 {
                let (dx, dy) = (rest[0] as i8, rest[1] as i8);
                if dx != 0 || dy != 0 {
                    body["dx"] = dx.into();
                    body["dy"] = dy.into();
                }
            } else {
                let x = u16::from_le_bytes([rest[0], rest[1]]).min(32767);
                let y = u16::from_le_bytes([rest[2], rest[3]]).min(32767);
                body["x"] = x.into();
                body["y"] = y.into();
            }
            if wheel != 0 && wheel != i8::MIN {
                body["wheel"] = wheel.into();
            }
            Ok(Report::Mouse(body))
        }
        [kind, ..] => Err(format!(
            "a frame of kind {kind} and {} bytes is none of NanoKVM's",
            frame.len()
        )),
        [] => Err("an empty frame".into()),
    }
}

/// The connection after the 101: reads are the request's body, writes the answer's.
struct Connection<'r, 'a> {
    body: &'r mut dyn Read,
    response: &'r mut Response<'a>,
}

impl Read for Connection<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf)
    }
}

impl Write for Connection<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.response.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

pub fn serve(request: &mut Request<'_>, response: &mut Response<'_>, person: &Person) {
    let is_upgrade = request
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = request.header("sec-websocket-key").filter(|_| is_upgrade) else {
        return failure(
            response,
            400,
            -1,
            "/api/ws is a WebSocket: send an upgrade request",
        );
    };
    if person.role < Role::Operator {
        return failure(
            response,
            403,
            -1,
            &format!(
                "permission denied: {} is a {}; the keyboard and mouse need an operator",
                person.user, person.role
            ),
        );
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    response
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", &accept);
    if response.flush().is_err() {
        return;
    }
    let holder = format!("nanokvm-ws-{}", SOCKETS.fetch_add(1, Ordering::Relaxed));
    tracing::info!("/api/ws: {} opened ({holder})", person.user);
    let connection = Connection {
        body: request.body(),
        response,
    };
    let mut socket = WebSocket::from_raw_socket(connection, WsRole::Server, None);
    let why = loop {
        let frame = match socket.read() {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) => break "closed by the client".to_string(),
            Ok(Message::Text(_)) => break "a text frame: NanoKVM's frames are binary".into(),
            Ok(_) => continue, // ping and pong: tungstenite answers pings itself
            Err(e) => break format!("the socket failed: {e}"),
        };
        let result = match decode(&frame) {
            Ok(Report::Heartbeat) => Ok(Value::Null),
            Ok(Report::Keyboard(usages)) => called(
                "hid/v1",
                "POST",
                "/hold",
                Some(&json!({"holder": holder, "usages": usages})),
                person,
            ),
            Ok(Report::Mouse(mut body)) => {
                body["holder"] = holder.clone().into();
                called("hid/v1", "POST", "/mouse", Some(&body), person)
            }
            Err(e) => Err((400, e)),
        };
        if let Err((status, reason)) = result {
            // A bad frame is skipped; a keyboard that cannot be driven ends the socket.
            tracing::warn!("/api/ws ({holder}): {reason} ({status})");
            if status != 400 {
                let _ = socket.close(None);
                break format!("hid refused: {reason}");
            }
        }
    };
    let released = called(
        "hid/v1",
        "POST",
        "/release",
        Some(&json!({"holder": holder})),
        person,
    );
    tracing::info!(
        "/api/ws: {} closed ({holder}: {why}); released {}",
        person.user,
        released.map_or_else(
            |(_, e)| format!("nothing ({e})"),
            |d| d["released"].to_string()
        )
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyboard_reports_become_usages_modifiers_first() {
        // Left Shift + Right Alt, keys a and 1, a rollover error ignored.
        let r = decode(&[1, 0x41, 0, 0x04, 0x1e, 0x01, 0, 0, 0]).unwrap();
        assert_eq!(r, Report::Keyboard(vec![0xe0, 0xe0 + 6, 0x04, 0x1e]));
        assert_eq!(
            decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            Report::Keyboard(vec![])
        );
    }

    #[test]
    fn mouse_reports_relative_and_absolute() {
        let r = decode(&[2, 1, 0xfb, 3, 0xff]).unwrap();
        assert_eq!(
            r,
            Report::Mouse(json!({"buttons": ["left"], "dx": -5, "dy": 3, "wheel": -1}))
        );
        let r = decode(&[2, 2 | 4, 0x00, 0x40, 0xff, 0xff, 0]).unwrap();
        assert_eq!(
            r,
            Report::Mouse(json!({"buttons": ["right", "middle"], "x": 16384, "y": 32767}))
        );
    }

    #[test]
    fn other_frames_are_named_errors() {
        assert_eq!(decode(&[0]).unwrap(), Report::Heartbeat);
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 0, 0])
            .unwrap_err()
            .contains("kind 1 and 3 bytes"));
        assert!(decode(&[2, 0, 0]).is_err());
        assert!(decode(&[9, 1]).is_err());
    }
}
