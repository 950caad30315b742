//! The console: the page a signed-in person gets at `/`, and its files under
//! `/console/`. Everything is compiled in (no CDN: a KVM is often on a network with no
//! way out), and the page's logic is in ES modules that node's test runner checks
//! (`console/test/`, run by `test.sh`).
//!
//! The server fills in only who is signed in and their role; the page hides what the
//! role may not do (the plugins refuse it anyway, by `Api::role_needed` and
//! `Message::refused_below`).

use warp::http::{header, HeaderValue, StatusCode};

use super::{escape, SignedIn};
use crate::serve::Response;

const PAGE: &str = include_str!("console/console.html");

/// The files the page loads: name, content type, text.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    ("app.js", JS, include_str!("console/app.js")),
    ("jsip.js", JS, include_str!("console/jsip.js")),
    ("keys.js", JS, include_str!("console/keys.js")),
    ("pointer.js", JS, include_str!("console/pointer.js")),
];
const JS: &str = "text/javascript; charset=utf-8";

/// What a browser may do on these pages: only this site, WebSockets to it included
/// (`'self'` covers ws: and wss: of the same host), video from WebRTC (a `MediaStream`
/// needs no source), never framed.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'";

/// The console page for `who`.
pub fn page(who: &SignedIn) -> Response {
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        html(who),
        "no-store",
    )
}

fn html(who: &SignedIn) -> String {
    PAGE.replace("{{user}}", &escape(&who.user))
        .replace("{{role}}", who.role.as_str())
}

/// `GET /console/NAME`: one of the page's files, or 404.
pub fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        // The files change only with the binary; a day's caching is safe, and the
        // version-less names are revalidated after an upgrade at most a day late.
        Some((_, content_type, text)) => respond(
            StatusCode::OK,
            content_type,
            text.to_string(),
            "private, max-age=86400",
        ),
        None => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no console file {name:?}\n"),
            "no-store",
        ),
    }
}

/// The page and its files, in bytes (the figure the console issue asks for).
pub fn total_size() -> usize {
    PAGE.len() + ASSETS.iter().map(|(_, _, t)| t.len()).sum::<usize>()
}

fn respond(status: StatusCode, content_type: &str, body: String, cache: &str) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let mut wanted = vec!["app.js".to_string(), "console.css".to_string()];
        for (_, _, text) in ASSETS {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("from \"./").next().unwrap();
                wanted.push(from.trim_end_matches("\";").to_string());
            }
        }
        for name in wanted {
            assert_eq!(asset(&name).status(), StatusCode::OK, "{name}");
        }
        assert_eq!(asset("../console.rs").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_names_the_user_escaped() {
        let who = SignedIn {
            user: "<b>".into(),
            role: jsipd_plugin_api::api::Role::Viewer,
        };
        let html = html(&who);
        assert!(html.contains(r#"data-user="&lt;b&gt;""#), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains(r#"data-role="viewer""#));
    }
}
