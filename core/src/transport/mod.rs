//! The RTC port: JSIP over WebSocket at `[RTCServer] location`.
//!
//! This module holds the HTTP side of the port, which JSIP.md §1 fixes before any
//! WebSocket exists: the path must be `location`, `userid` must be present (400 with a
//! one-line reason otherwise), and the request must be a WebSocket upgrade.
//! The WebSocket session and the JSIP stack behind it are not built yet (issue 3);
//! until then a well-formed upgrade is refused with 501 and says so.

use std::sync::Arc;

use warp::http::{header, HeaderValue, StatusCode};

use crate::app::App;
use crate::serve::{Handler, Request, Response};

pub fn handler(app: Arc<App>) -> Handler {
    Arc::new(move |req, _peer| {
        let location = app.config().rtc_location.clone();
        Box::pin(async move {
            handshake(&req, &location).unwrap_or_else(|(status, reason)| plain(status, reason))
        })
    })
}

/// Checks an upgrade request; `Err` carries the refusal.
fn handshake(req: &Request, location: &str) -> Result<Response, (StatusCode, String)> {
    if req.uri().path() != location {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no JSIP endpoint at {}; it is at {location}",
                req.uri().path()
            ),
        ));
    }
    let userid = query_param(req.uri().query().unwrap_or(""), "userid");
    if userid.is_none_or(str::is_empty) {
        return Err((
            StatusCode::BAD_REQUEST,
            "missing userid: connect to ?userid=YOUR_ID".into(),
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
    Err((
        StatusCode::NOT_IMPLEMENTED,
        "the JSIP stack is not part of this build yet".into(),
    ))
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
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
