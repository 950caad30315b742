//! The RTC port: JSIP over WebSocket at `[RTCServer] location` (JSIP.md §1).
//!
//! - `mod.rs` (here): the HTTP side, before any WebSocket exists: path, `userid`
//!   (400 with a one-line reason), token auth (401), then the 101 upgrade.
//! - `ws`: one socket's life: frames in to the node, the name's queue out, pings,
//!   close codes (4000 replaced, 1009 too big, 1001 stopping).
//! - `registry`: names to sockets and their queues, owned by the node task.
//! - `dial`: outbound sockets to other nodes.
//! - `token`: the HMAC tokens of `auth = token`.

pub mod dial;
pub mod registry;
pub mod token;
pub mod ws;

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, HeaderValue, StatusCode};

use crate::app::App;
use crate::config::RtcAuth;
use crate::serve::{Handler, Peer, Request, Response};
use crate::stats::JsipStats;

pub fn handler(app: Arc<App>) -> Handler {
    Arc::new(move |req, peer| {
        let app = app.clone();
        Box::pin(async move {
            match handshake(&app, &req) {
                Ok((userid, accept)) => upgrade(app, req, peer, userid, accept),
                Err((status, reason)) => plain(status, reason),
            }
        })
    })
}

/// Checks an upgrade request: `Ok` carries the userid and the Sec-WebSocket-Accept
/// value, `Err` the refusal.
fn handshake(app: &App, req: &Request) -> Result<(String, String), (StatusCode, String)> {
    let config = app.config();
    let location = &config.rtc_location;
    if req.uri().path() != location {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no JSIP endpoint at {}; it is at {location}",
                req.uri().path()
            ),
        ));
    }
    let query = req.uri().query().unwrap_or("");
    let userid = match query_param(query, "userid") {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                "missing userid: connect to ?userid=YOUR_ID".into(),
            ))
        }
    };
    if userid.starts_with("local:") || userid.contains(char::is_control) {
        return Err((
            StatusCode::BAD_REQUEST,
            "userid may not start with 'local:' (reserved) or contain control characters".into(),
        ));
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks JSIP over WebSocket only".into(),
        ));
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).ok_or((
        StatusCode::BAD_REQUEST,
        "Sec-WebSocket-Key is missing".to_string(),
    ))?;
    if config.rtc.auth == RtcAuth::Token {
        let presented = query_param(query, "token").or_else(|| {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        });
        let ok = match (presented, app.rtc_secret()) {
            (Some(t), Some(secret)) => token::verify(&secret, &userid, &t),
            _ => false,
        };
        if !ok {
            JsipStats::count(&app.stats.jsip.auth_failed);
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("a valid token for userid {userid} is required (?token= or Authorization: Bearer)"),
            ));
        }
    }
    Ok((userid, derive_accept_key(key.as_bytes())))
}

/// Answers 101 and serves the socket once hyper hands it over.
fn upgrade(app: Arc<App>, req: Request, peer: Peer, userid: String, accept: String) -> Response {
    let config = app.config();
    let params = ws::SocketParams {
        ping_interval: config.rtc.ping_interval,
        max_frame: config.rtc.max_frame,
    };
    let node = app.node.clone();
    let stats = app.stats.jsip.clone();
    let shutdown = peer.shutdown.clone();
    let remote = peer.remote.to_string();
    // Only what the socket needs is moved into its task (not the request): the task's
    // state is part of what every idle connection costs.
    let on_upgrade = hyper::upgrade::on(req);
    let task = async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("WebSocket upgrade from {remote} failed: {e}");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws::ws_config(params.max_frame)),
        )
        .await;
        ws::serve(socket, userid.into(), remote, node, params, shutdown, stats).await;
    };
    peer.tasks.spawn(task);
    let mut resp = Response::new(Default::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// A decoded query parameter (`%XX` and `+`), via warp's own `form_urlencoded`.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn plain(status: StatusCode, reason: String) -> Response {
    let mut resp = Response::new(format!("{reason}\n").into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
