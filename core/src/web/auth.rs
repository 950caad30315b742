//! Signing in and out: `POST /auth/login`, `POST /auth/logout`, `GET /auth/me`, and the
//! page at `/` (a sign-in form, or who is signed in).
//!
//! The form works without JavaScript: it posts form fields and gets a redirect (or the
//! form again with the reason). A script posts JSON and gets the JSON envelope.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use warp::http::{header, HeaderValue, Method, StatusCode};

use super::sessions::Gate;
use super::{console, escape, totp, users, People, SignedIn, COOKIE};
use crate::api::{Answer, Format};
use crate::app::App;
use crate::config::Config;
use crate::serve::{Peer, Request, Response};

/// Largest sign-in body read; a real one is under 200 bytes.
const LOGIN_BODY_MAX: usize = 8 * 1024;

const PAGE: &str = include_str!("signin.html");

pub async fn serve(
    app: &App,
    config: &Config,
    req: Request,
    peer: &Peer,
    format: Format,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/", &Method::GET | &Method::HEAD) => {
            if let Some(who) = app.people.signed_in(req.headers(), config) {
                return console::page(&who);
            }
            let notice = app.people.users().is_empty().then_some(
                "No account exists yet. On the server, run: jsipd user add NAME --role admin",
            );
            page(StatusCode::OK, notice, &next_of(&req), "")
        }
        ("/auth/login", &Method::POST) => login(app, config, req, peer, format).await,
        ("/auth/logout", &Method::POST) => logout(app, config, req, peer, format),
        ("/auth/me", &Method::GET) => match app.people.signed_in(req.headers(), config) {
            Some(who) => Answer::ok(
                json!({"user": &*who.user, "role": who.role.as_str(),
                       "idle_timeout_s": config.rtc.session_idle.as_secs()}),
                format!("{} ({})\n", who.user, who.role),
            )
            .render(format),
            None => unauthorized(format),
        },
        ("/auth/people", &Method::GET) => match app.people.signed_in(req.headers(), config) {
            Some(_) => people(app, format).await,
            None => unauthorized(format),
        },
        _ => Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} does not answer {method}"),
        )
        .render(format),
    }
}

/// `GET /auth/people`: who is signed in with a JSIP socket now (a console page open),
/// with the role their account has and how many tabs. Any signed-in person may ask: the
/// console shows it so that people sharing a machine know of each other.
async fn people(app: &App, format: Format) -> Response {
    let Some(list) = app.node.people().await else {
        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the JSIP node has stopped")
            .render(format);
    };
    let users = app.people.users();
    let rows: Vec<Value> = list
        .iter()
        .map(|(user, tabs)| {
            let role = users.get(user).map(|u| u.role.as_str());
            json!({"user": user, "role": role, "tabs": tabs})
        })
        .collect();
    let text: String = list
        .iter()
        .map(|(user, tabs)| format!("{user} ({tabs} tabs)\n"))
        .collect();
    Answer::ok(json!({ "people": rows }), text).render(format)
}

/// A plugin route without a session: a page gets the sign-in form (then comes back), a
/// program gets 401.
pub fn sign_in_first(req: &Request, format: Format) -> Response {
    let wants_page = req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if !wants_page {
        return unauthorized(format);
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let location = format!(
        "/?next={}",
        form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
    );
    redirect(&location)
}

fn unauthorized(format: Format) -> Response {
    Answer::error(
        StatusCode::UNAUTHORIZED,
        "sign in first: POST /auth/login {\"username\":…,\"password\":…}",
    )
    .render(format)
}

/// The sign-in fields, from JSON or a form.
#[derive(Default)]
struct Login {
    username: String,
    password: String,
    totp: String,
    next: String,
    from_form: bool,
}

async fn read_login(req: Request) -> Result<Login, String> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let body = http_body_util::Limited::new(req.into_body(), LOGIN_BODY_MAX)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let mut login = Login::default();
    if is_json {
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        login.username = field("username");
        login.password = field("password");
        login.totp = field("totp");
    } else {
        login.from_form = true;
        for (k, v) in form_urlencoded::parse(&body) {
            match &*k {
                "username" => login.username = v.into_owned(),
                "password" => login.password = v.into_owned(),
                "totp" => login.totp = v.into_owned(),
                "next" => login.next = v.into_owned(),
                _ => {}
            }
        }
    }
    if login.username.is_empty() || login.password.is_empty() {
        return Err("username and password are both needed".into());
    }
    Ok(login)
}

/// Why a sign-in failed, as the person is told it. A wrong name and a wrong password
/// read the same, so the answer does not tell which names exist.
enum Refusal {
    Wrong,
    WrongCode,
    Locked(Duration),
}

async fn login(app: &App, config: &Config, req: Request, peer: &Peer, format: Format) -> Response {
    let from = peer.remote.ip();
    let login = match read_login(req).await {
        Ok(l) => l,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, e).render(format),
    };
    match check(&app.people, config, &login, from).await {
        Ok(account) => {
            let people = &app.people;
            let created = {
                let mut sessions = people.sessions();
                sessions.succeeded(&login.username, from);
                sessions.sweep(config.rtc.session_idle, Instant::now());
                sessions.create(account.clone(), Instant::now())
            };
            let id = match created {
                Ok(id) => id,
                Err(e) => {
                    return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e).render(format)
                }
            };
            tracing::info!("sign-in: {} ({}) from {from}", account.name, account.role);
            let cookie = format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
                if peer.tls { "; Secure" } else { "" }
            );
            let mut resp = if login.from_form {
                redirect(safe_next(&login.next))
            } else {
                Answer::ok(
                    json!({"user": account.name, "role": account.role.as_str()}),
                    format!("signed in as {} ({})\n", account.name, account.role),
                )
                .render(format)
            };
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(refusal) => {
            let (status, reason) = match refusal {
                Refusal::Wrong => (
                    StatusCode::UNAUTHORIZED,
                    "wrong user name or password".to_string(),
                ),
                Refusal::WrongCode => (
                    StatusCode::UNAUTHORIZED,
                    "wrong, expired or already used one-time code".to_string(),
                ),
                Refusal::Locked(left) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many failed sign-ins for {} from this address; try again in {} s",
                        login.username,
                        left.as_secs().max(1)
                    ),
                ),
            };
            if login.from_form {
                let mut resp = page(status, Some(&reason), &login.next, &login.username);
                *resp.status_mut() = status;
                resp
            } else {
                Answer::error(status, reason).render(format)
            }
        }
    }
}

/// A sign-in a plugin makes for its client (`LoadArgs::sign_in`): the same checks,
/// lock-out and log lines as the sign-in page, without a one-time code field.
pub async fn sign_in_for_plugin(
    people: &People,
    config: &Config,
    username: &str,
    password: &str,
    from: IpAddr,
) -> crate::plugins::host::SignIn {
    use crate::plugins::host::SignIn;
    let login = Login {
        username: username.to_string(),
        password: password.to_string(),
        ..Login::default()
    };
    if login.username.is_empty() || login.password.is_empty() {
        return SignIn::Wrong;
    }
    match check(people, config, &login, from).await {
        Ok(account) => {
            let created = {
                let mut sessions = people.sessions();
                sessions.succeeded(&login.username, from);
                sessions.sweep(config.rtc.session_idle, Instant::now());
                sessions.create(account.clone(), Instant::now())
            };
            match created {
                Ok(token) => {
                    tracing::info!(
                        "sign-in: {} ({}) from {from}, through a plugin",
                        account.name,
                        account.role
                    );
                    SignIn::SignedIn {
                        token,
                        role: account.role,
                    }
                }
                Err(e) => SignIn::Failed(e),
            }
        }
        Err(Refusal::Wrong) => SignIn::Wrong,
        Err(Refusal::WrongCode) => SignIn::NeedsCode,
        Err(Refusal::Locked(left)) => SignIn::Locked(left),
    }
}

/// The account `login` proves, or why not. Counts failures and locks out.
async fn check(
    people: &People,
    config: &Config,
    login: &Login,
    from: IpAddr,
) -> Result<std::sync::Arc<users::User>, Refusal> {
    if let Gate::Locked(left) = people
        .sessions()
        .gate(&login.username, from, Instant::now())
    {
        tracing::warn!(
            "sign-in refused: {} from {from} is locked out for {} s more",
            login.username,
            left.as_secs()
        );
        return Err(Refusal::Locked(left));
    }
    let account = people.users().get(&login.username).cloned();
    let hash = account
        .as_ref()
        .map_or_else(|| users::decoy_hash().to_string(), |a| a.hash.clone());
    let password = login.password.clone();
    let matched = {
        let _permit = people.hashing.acquire().await;
        tokio::task::spawn_blocking(move || users::verify_password(&password, &hash))
            .await
            .unwrap_or(false)
    };
    let mut result = match (&account, matched) {
        (Some(a), true) => Ok(a.clone()),
        _ => Err(Refusal::Wrong),
    };
    if let Ok(a) = &result {
        if let Some(secret) = &a.totp {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let fresh = totp::matching_step(secret, &login.totp, now)
                .is_some_and(|step| people.sessions().use_totp_step(&a.name, step));
            if !fresh {
                result = Err(Refusal::WrongCode);
            }
        }
    }
    if result.is_err() {
        let locked =
            people
                .sessions()
                .failed(&login.username, from, config.rtc.lockout, Instant::now());
        if locked {
            tracing::warn!(
                "locked out: {} from {from} for {} s after {} failed sign-ins",
                login.username,
                config.rtc.lockout.as_secs(),
                super::sessions::FAILURES_TO_LOCK
            );
        } else {
            tracing::warn!("sign-in failed: {} from {from}", login.username);
        }
    }
    result
}

fn logout(app: &App, config: &Config, req: Request, peer: &Peer, format: Format) -> Response {
    let who: Option<SignedIn> = app.people.signed_in(req.headers(), config);
    if let Some(id) = super::cookie(req.headers(), COOKIE) {
        app.people.sessions().remove(id);
    }
    if let Some(who) = &who {
        tracing::info!("sign-out: {} from {}", who.user, peer.remote.ip());
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let mut resp = if form {
        redirect("/")
    } else {
        Answer::ok(json!({"signed_out": who.is_some()}), "signed out\n".into()).render(format)
    };
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("jsipd_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    resp
}

/// Only a path on this site: never `//elsewhere` or `https://…` (an open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// The page's `?next=`, decoded (the form carries it decoded, as `Login::next`).
fn next_of(req: &Request) -> String {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn redirect(to: &str) -> Response {
    let mut resp = Response::new(Default::default());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The sign-in form (signed in, `/` is the console instead).
fn page(status: StatusCode, message: Option<&str>, next: &str, username: &str) -> Response {
    let body = format!(
            "<form id=\"signin\" method=\"post\" action=\"/auth/login\">\n\
             <label>User name <input name=\"username\" id=\"username\" value=\"{}\" autocomplete=\"username\" required autofocus></label>\n\
             <label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
             <label>One-time code, if you set one up <input name=\"totp\" id=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" maxlength=\"6\"></label>\n\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\n\
             <button id=\"submit\">Sign in</button>\n</form>",
        escape(username),
        escape(safe_next(next))
    );
    let message = message
        .map(|m| {
            format!(
                "<p class=\"message\" id=\"message\" role=\"alert\">{}</p>",
                escape(m)
            )
        })
        .unwrap_or_default();
    let html = PAGE
        .replace("{{message}}", &message)
        .replace("{{body}}", &body);
    let mut resp = Response::new(html.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page is never framed (clickjacking) and loads nothing from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/stream/v1/"), "/stream/v1/");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "",
            "x",
            "/\\evil",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }
}
