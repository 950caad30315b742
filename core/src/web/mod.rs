//! The people's port (the RTC port): what a person in a browser reaches.
//!
//! Every request passes through [`handler`], which is the port's one route guard:
//! - `/rtc` goes to `transport` with the session it carries (if any);
//! - a state-changing request from another origin is refused here, before any route,
//!   so no route can forget the CSRF check;
//! - `/auth/login`, `/auth/logout`, `/auth/me` and the sign-in page are `auth.rs`;
//! - `/` signed in is the console (`console.rs`), its files are `/console/…`;
//! - `/NAME/vN/…` reaches a plugin's API only with a good session, and the plugin is
//!   told the user and role (it states which role each of its routes needs);
//! - a plugin's people's root (`/api/…` for the NanoKVM facade) reaches it with or
//!   without a session: it takes its product's own sign-in through the host.
//!
//! The operators' port (`api/`) is untouched by any of this: loopback or API key.
//!
//! - `users.rs`: `conf/users`, argon2id; `totp.rs`: RFC 6238 codes;
//!   `sessions.rs`: sessions, lock-outs and used TOTP steps, sans-IO;
//!   `cli.rs`: `jsipd user …`.

mod auth;
pub mod cli;
pub mod console;
pub mod sessions;
pub mod totp;
pub mod users;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::api::{Answer, Format};
use crate::app::App;
use crate::config::Config;
use crate::plugins::Caller;
use crate::serve::{Handler, Peer, Request, Response};
use sessions::Sessions;
pub use sessions::SignedIn;
use users::Users;

/// The session cookie's name.
pub const COOKIE: &str = "jsipd_session";

/// The people's port's state: accounts and sessions.
pub struct People {
    users: RwLock<Arc<Users>>,
    sessions: Mutex<Sessions>,
    /// Argon2 runs at most this many at once (19 MiB each), so a flood of sign-ins
    /// queues instead of taking every core and gigabytes.
    hashing: tokio::sync::Semaphore,
}

impl People {
    pub fn new(users: Users) -> People {
        People {
            users: RwLock::new(Arc::new(users)),
            sessions: Mutex::new(Sessions::default()),
            hashing: tokio::sync::Semaphore::new(2),
        }
    }

    /// Reads `[RTCServer] users_file` (start-up and SIGHUP).
    pub fn load_users(config: &Config) -> anyhow::Result<Users> {
        Users::load(&config.rtc.users_file)
            .map_err(|e| anyhow::anyhow!("[RTCServer] users_file: {e}"))
    }

    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New accounts (SIGHUP). Sessions of changed or deleted users end at their next use.
    pub fn set_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn session_count(&self) -> usize {
        self.sessions().count()
    }

    /// The signed-in person of a request, from its session cookie.
    pub fn signed_in(&self, headers: &HeaderMap, config: &Config) -> Option<SignedIn> {
        let id = cookie(headers, COOKIE)?;
        let users = self.users();
        self.sessions()
            .check(id, &users, config.rtc.session_idle, Instant::now())
    }
}

/// What plugins reach through the host (`plugins::host`): other plugins' APIs and the
/// people's sessions. The daemon keeps it alive and registers it at start.
pub struct HostServices {
    pub app: Arc<App>,
    /// Plugin threads are not the runtime's; sign-in's hashing waits on it.
    pub runtime: tokio::runtime::Handle,
}

impl crate::plugins::host::Services for HostServices {
    unsafe fn call_api(
        &self,
        target: &str,
        request: &jsipd_plugin_api::ffi::FfiRequest,
        response: &jsipd_plugin_api::ffi::FfiResponse,
    ) -> u16 {
        // SAFETY: forwarded.
        unsafe { self.app.plugins.call_api(target, request, response) }
    }

    fn sign_in(&self, user: &str, password: &str, remote: &str) -> crate::plugins::host::SignIn {
        // A call that names no client counts its failures against an address no
        // client has, so it cannot lock anyone else out.
        let from = remote
            .parse()
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let config = self.app.config();
        self.runtime.block_on(auth::sign_in_for_plugin(
            &self.app.people,
            &config,
            user,
            password,
            from,
        ))
    }

    fn session(&self, token: &str) -> Option<(Arc<str>, jsipd_plugin_api::api::Role)> {
        let config = self.app.config();
        let users = self.app.people.users();
        let who = self.app.people.sessions().check(
            token,
            &users,
            config.rtc.session_idle,
            Instant::now(),
        )?;
        Some((who.user, who.role))
    }

    fn sign_out(&self, token: &str) {
        if let Some(user) = self.app.people.sessions().remove(token) {
            tracing::info!("sign-out: {user}, through a plugin");
        }
    }
}

/// Text made safe for HTML, attribute values included.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The request's `Origin` when it is not this port's own (`scheme://` + the `Host` it
/// was sent to), or when the browser says the request is cross-site. Browsers send
/// `Origin` with every cross-origin POST and every WebSocket; programs such as curl send
/// neither header and are not a browser an attacker can borrow.
pub fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host));
        return (!own).then(|| origin.to_string());
    }
    match text(header::HeaderName::from_static("sec-fetch-site")) {
        Some("cross-site") => Some("(a cross-site request)".into()),
        _ => None,
    }
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub fn handler(app: Arc<App>) -> Handler {
    Arc::new(move |req, peer| Box::pin(serve(app.clone(), req, peer)))
}

async fn serve(app: Arc<App>, req: Request, peer: Peer) -> Response {
    let config = app.config();
    let format = Format::from_accept(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    if req.uri().path() == config.rtc_location {
        let who = app.people.signed_in(req.headers(), &config);
        return crate::transport::accept(app, req, peer, who).await;
    }
    if changes_state(req.method()) {
        if let Some(origin) = foreign_origin(req.headers()) {
            tracing::warn!(
                "people's port: {} {} from {} refused: Origin {origin} is not this site",
                req.method(),
                req.uri().path(),
                peer.remote
            );
            return Answer::error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} from another site ({origin}) is refused (CSRF protection)",
                    req.method()
                ),
            )
            .render(format);
        }
    }
    match req.uri().path() {
        "/" | "/auth/login" | "/auth/logout" | "/auth/me" | "/auth/people" => {
            auth::serve(&app, &config, req, &peer, format).await
        }
        path if path.starts_with("/console/") && req.method() == Method::GET => {
            console::asset(&path["/console/".len()..])
        }
        path => {
            let who = app.people.signed_in(req.headers(), &config);
            if let Some((api, rest)) = app.plugins.route_people_root(path) {
                // A people's root takes its product's own sign-in, so it is reached
                // without a session too, as nobody (its routes say what nobody may do).
                let caller = match who {
                    Some(who) => Caller {
                        user: who.user,
                        role: who.role,
                        remote: Some(peer.remote.ip()),
                    },
                    None => Caller {
                        user: Arc::from(""),
                        role: jsipd_plugin_api::api::Role::Nobody,
                        remote: Some(peer.remote.ip()),
                    },
                };
                return app.plugins.serve(api, req, rest, caller).await;
            }
            match app.plugins.route(path) {
                Some((api, rest)) => match who {
                    Some(who) => {
                        let caller = Caller {
                            user: who.user,
                            role: who.role,
                            remote: Some(peer.remote.ip()),
                        };
                        app.plugins.serve(api, req, rest, caller).await
                    }
                    None => auth::sign_in_first(&req, format),
                },
                None => Answer::error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "nothing at {path}: JSIP is at {}, the sign-in page at /",
                        config.rtc_location
                    ),
                )
                .render(format),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_own_origin_passes_and_any_other_is_named() {
        let own = headers(&[("host", "kvm:8080"), ("origin", "http://kvm:8080")]);
        assert_eq!(foreign_origin(&own), None);
        let other = headers(&[("host", "kvm:8080"), ("origin", "http://evil.example")]);
        assert_eq!(
            foreign_origin(&other).as_deref(),
            Some("http://evil.example")
        );
        let port = headers(&[("host", "kvm:8080"), ("origin", "http://kvm:8081")]);
        assert!(foreign_origin(&port).is_some());
        let null = headers(&[("host", "kvm:8080"), ("origin", "null")]);
        assert!(foreign_origin(&null).is_some());
        let fetch = headers(&[("host", "kvm:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(foreign_origin(&fetch).is_some());
        let curl = headers(&[("host", "kvm:8080")]);
        assert_eq!(foreign_origin(&curl), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; jsipd_session=XYZ; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("XYZ"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "jsipd_session=Q")]);
        assert_eq!(cookie(&h, COOKIE), Some("Q"));
        assert_eq!(cookie(&headers(&[]), COOKIE), None);
    }
}
