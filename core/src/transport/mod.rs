//! The RTC port: JSIP over WebSocket at `[RTCServer] location` (JSIP.md §1).
//!
//! - `mod.rs` (here): the HTTP side, before any WebSocket exists: the JSIP name (a
//!   signed-in person's `USER~TAB`, or a program's `userid`, 400 with a one-line
//!   reason), its proof (session and Origin, token, or none: 401/403), then the 101
//!   upgrade. The people's port (`web`) hands upgrades here with their session.
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
use crate::serve::{Peer, Request, Response};
use crate::stats::JsipStats;
use crate::web::SignedIn;

/// An upgrade request for `[RTCServer] location`, with the session it carries (the
/// people's port found it; see `web`).
pub async fn accept(app: Arc<App>, req: Request, peer: Peer, who: Option<SignedIn>) -> Response {
    match handshake(&app, &req, who.as_ref()) {
        Ok((name, caller, accept)) => upgrade(app, req, peer, name, caller, accept).await,
        Err((status, reason)) => {
            if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
                tracing::info!("WebSocket from {} refused: {reason}", peer.remote);
            }
            plain(status, reason)
        }
    }
}

/// Checks an upgrade request: `Ok` carries the JSIP name and the Sec-WebSocket-Accept
/// value, `Err` the refusal.
///
/// The name: a signed-in person's is `USER~TAB` (`?tab=` from the page, random when
/// absent), so two tabs never replace each other's socket and nobody signed in takes a
/// name of another user; a program's is its `?userid=`, which may not contain `~`.
fn handshake(
    app: &App,
    req: &Request,
    who: Option<&SignedIn>,
) -> Result<(String, Caller, String), (StatusCode, String)> {
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
    let (name, caller) = name(app, req, who)?;
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
    Ok((name, caller, derive_accept_key(key.as_bytes())))
}

/// What the socket's requests say of their sender (`CALLER_KEY`): set for a signed-in
/// person, `None` for a program.
type Caller = Option<Arc<serde_json::Value>>;

/// The JSIP name the request may take, and its proof (see [`handshake`]).
fn name(
    app: &App,
    req: &Request,
    who: Option<&SignedIn>,
) -> Result<(String, Caller), (StatusCode, String)> {
    let config = app.config();
    let query = req.uri().query().unwrap_or("");
    let auth = config.rtc.auth;
    let foreign = crate::web::foreign_origin(req.headers());
    let userid = query_param(query, "userid").filter(|u| !u.is_empty());

    if let (true, Some(who)) = (auth.session, who) {
        if let Some(origin) = foreign {
            return Err((
                StatusCode::FORBIDDEN,
                format!("a signed-in WebSocket must come from this site's own pages, not {origin}"),
            ));
        }
        let own = format!("{}~", who.user);
        let tab = match (query_param(query, "tab"), &userid) {
            (Some(t), _) if !t.is_empty() => t,
            (_, Some(u)) if u.starts_with(&own) => u[own.len()..].to_string(),
            (_, Some(u)) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "signed in as {}, this socket's name is {}~TAB (?tab=TAB), not {u}",
                        who.user, who.user
                    ),
                ))
            }
            (_, None) => random_tab(),
        };
        if tab.len() > 64 || tab.contains(|c: char| c.is_control() || c == '~') {
            return Err((
                StatusCode::BAD_REQUEST,
                "tab: at most 64 characters, no '~' or control characters".into(),
            ));
        }
        let caller = serde_json::json!({"user": &*who.user, "role": who.role.as_str()});
        return Ok((format!("{own}{tab}"), Some(Arc::new(caller))));
    }

    let Some(userid) = userid else {
        let how = if auth.session {
            "sign in first, or connect to ?userid=YOUR_ID"
        } else {
            "connect to ?userid=YOUR_ID"
        };
        return Err((StatusCode::BAD_REQUEST, format!("missing userid: {how}")));
    };
    if userid.starts_with("local:") || userid.contains(char::is_control) {
        return Err((
            StatusCode::BAD_REQUEST,
            "userid may not start with 'local:' (reserved) or contain control characters".into(),
        ));
    }
    if userid.contains('~') {
        return Err((
            StatusCode::BAD_REQUEST,
            "names with '~' belong to signed-in people (USER~TAB): sign in, or choose a userid without '~'".into(),
        ));
    }
    if auth.token {
        let presented = query_param(query, "token").or_else(|| {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        });
        if let Some(t) = presented {
            let ok = app
                .rtc_secret()
                .is_some_and(|secret| token::verify(&secret, &userid, &t));
            if ok {
                return Ok((userid, None));
            }
            JsipStats::count(&app.stats.jsip.auth_failed);
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("the token is not valid for userid {userid}"),
            ));
        }
    }
    if auth.none {
        if let Some(origin) = foreign {
            // Without proof, a page of another site could drive this port from a
            // visitor's browser.
            return Err((
                StatusCode::FORBIDDEN,
                format!("a WebSocket from another site ({origin}) needs a token"),
            ));
        }
        return Ok((userid, None));
    }
    JsipStats::count(&app.stats.jsip.auth_failed);
    let mut ways = Vec::new();
    if auth.session {
        ways.push("sign in (POST /auth/login)");
    }
    if auth.token {
        ways.push("a valid token for this userid (?token= or Authorization: Bearer)");
    }
    Err((
        StatusCode::UNAUTHORIZED,
        format!("{userid}: {} is required", ways.join(", or ")),
    ))
}

/// A tab name for a page that did not choose one.
fn random_tab() -> String {
    let mut raw = [0u8; 6];
    let _ = getrandom::fill(&mut raw);
    data_encoding::BASE64URL_NOPAD.encode(&raw)
}

/// Registers the socket under its name, answers 101, and serves the socket once hyper
/// hands it over. Registered first, so that a client whose handshake completed later
/// replaces one whose handshake completed earlier ([`ws::Registration`]).
async fn upgrade(
    app: Arc<App>,
    req: Request,
    peer: Peer,
    name: String,
    caller: Caller,
    accept: String,
) -> Response {
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
    let Some(registration) =
        ws::Registration::take(&node, name.into(), remote.clone(), &shutdown).await
    else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping".into(),
        );
    };
    let task = async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("WebSocket upgrade from {remote} failed: {e}");
                registration.give_up(&node).await;
                return;
            }
        };
        let config = Some(ws::ws_config(params.max_frame));
        // A plain TCP connection is served as the TCP stream itself, not through the
        // upgrade's layers (hyper's `Upgraded`, its rewind buffer and two adapters),
        // which every read and write went through (callgrind: about 200 instructions a
        // round trip); a TLS one keeps them.
        match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => {
                let tcp = parts.io.into_inner();
                // What the peer sent after its handshake, before hyper let go, copied:
                // `read_buf` is a view of hyper's whole read buffer (8 KiB), which an
                // idle socket must not keep.
                let early = parts.read_buf.to_vec();
                drop(parts.read_buf);
                let socket = if early.is_empty() {
                    WebSocketStream::from_raw_socket(tcp, Role::Server, config).await
                } else {
                    WebSocketStream::from_partially_read(tcp, early, Role::Server, config).await
                };
                ws::serve(socket, registration, caller, node, params, shutdown, stats).await;
            }
            Err(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, config)
                        .await;
                ws::serve(socket, registration, caller, node, params, shutdown, stats).await;
            }
        }
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
