//! `nanokvm`: NanoKVM 2.x's `/api/*`, so that scripts written for a NanoKVM keep working
//! against jsipd's people's port unchanged.
//!
//! It holds no KVM logic of its own: every route is a call of `stream`, `gpio`, `hid` or
//! `storage` through the host (`jsipd_plugin_api::host::call_api`), in-process and as
//! the signed-in caller, so those plugins' role checks apply as on their own URLs. The
//! plugin asks to be served at `/api` on the people's port (`Plugin::PEOPLE_ROOT`) as
//! well as at `/nanokvm/v1/`.
//!
//! Sign-in is NanoKVM's: `POST /api/auth/login` with the password encrypted as its page
//! does (`password.rs`), checked by the host against jsipd's own accounts with the same
//! lock-out as the sign-in page. The token it answers is a jsipd session; scripts send
//! it back as the cookie `nano-kvm-token`. A jsipd session cookie works as well.
//!
//! Answers are NanoKVM's envelope, `{"code":0,"msg":"success","data":…}`; errors have a
//! negative code and NanoKVM's message where it has one (see `docs/nanokvm-api.md`).

pub mod info;
pub mod password;
pub mod ws;

use jsipd_plugin_api::api::{Api, Caller, Request, Response, Role};
use jsipd_plugin_api::host::{self, SignInError};
use jsipd_plugin_api::serde_json::{json, Map, Value};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

/// The cookie NanoKVM's page and its users' scripts carry the token in.
pub const TOKEN_COOKIE: &str = "nano-kvm-token";

/// Request bodies are small JSON objects.
const BODY_LIMIT: usize = 64 * 1024;

pub struct NanoKvm;

impl Plugin for NanoKvm {
    const PEOPLE_ROOT: &'static str = "/api";

    fn load(_context: &Context) -> Result<Self, String> {
        Ok(NanoKvm)
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(NanoKvmApi))
    }
}

export_plugin!(NanoKvm);

pub struct NanoKvmApi;

/// The signed-in person a request acts as.
pub struct Person {
    pub user: String,
    pub role: Role,
}

impl Person {
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            user: &self.user,
            role: self.role,
        }
    }
}

/// NanoKVM's success envelope.
pub fn success(response: &mut Response<'_>, data: Value) {
    let mut body = json!({"code": 0, "msg": "success"});
    if !data.is_null() {
        body["data"] = data;
    }
    response.json(200, &body);
}

/// NanoKVM's error envelope: NanoKVM answers its errors with HTTP 200 and a negative
/// code, except for a missing sign-in (401).
pub fn failure(response: &mut Response<'_>, http: u16, code: i32, msg: &str) {
    response.json(http, &json!({"code": code, "msg": msg}));
}

/// The value of cookie `name`.
fn cookie<'a>(request: &'a Request<'_>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Who sent the request: the host's caller when it is signed in (a jsipd session, or
/// the management port), else the session the `nano-kvm-token` cookie names.
pub fn person(request: &Request<'_>) -> Option<Person> {
    let caller = request.caller();
    if caller.role != Role::Nobody {
        return Some(Person {
            user: caller.user.to_string(),
            role: caller.role,
        });
    }
    let (user, role) = host::session(cookie(request, TOKEN_COOKIE)?)?;
    Some(Person { user, role })
}

/// `%XX` decoded (no `+` as space: the page uses `encodeURIComponent`); `None` when
/// it is not valid UTF-8 afterwards.
pub fn uri_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The body as a JSON object, or NanoKVM's "invalid arguments" answer.
fn body_object(
    request: &mut Request<'_>,
    response: &mut Response<'_>,
) -> Option<Map<String, Value>> {
    let parsed = request
        .read_body(BODY_LIMIT)
        .ok()
        .and_then(|b| jsipd_plugin_api::serde_json::from_slice::<Value>(&b).ok());
    match parsed {
        Some(Value::Object(o)) => Some(o),
        _ => {
            failure(response, 200, -1, "invalid arguments");
            None
        }
    }
}

/// What a jsipd plugin answered: its `data` on success, else its HTTP status and reason.
pub fn called(
    target: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    person: &Person,
) -> Result<Value, (u16, String)> {
    match host::call_json(target, method, path, body, person.caller()) {
        Ok((200, v)) => Ok(v.get("data").cloned().unwrap_or(Value::Null)),
        Ok((status, v)) => Err((
            status,
            v.get("msg")
                .and_then(Value::as_str)
                .unwrap_or("the plugin gave no reason")
                .to_string(),
        )),
        Err(e) => Err((e.status, e.to_string())),
    }
}

/// A jsipd plugin's refusal in NanoKVM's envelope: a role too low is 403, as a missing
/// sign-in is 401; anything else is NanoKVM's HTTP 200 with a negative code.
fn refused(response: &mut Response<'_>, (status, reason): (u16, String)) {
    match status {
        403 => failure(response, 403, -1, &format!("permission denied: {reason}")),
        _ => failure(response, 200, -2, &reason),
    }
}

impl Api for NanoKvmApi {
    /// Everything is reached by nobody too: the plugin checks the token itself, and the
    /// plugins it calls check the person's role.
    fn role_needed(&self, _method: &str, _path: &str) -> Role {
        Role::Nobody
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let path = request.path().trim_end_matches('/').to_string();
        let method = request.method().to_string();
        if (method.as_str(), path.as_str()) == ("POST", "/auth/login") {
            return login(request, response);
        }
        let Some(person) = person(request) else {
            return failure(response, 401, -1, "unauthorized");
        };
        match (method.as_str(), path.as_str()) {
            ("POST", "/auth/logout") => {
                if let Some(token) = cookie(request, TOKEN_COOKIE) {
                    host::sign_out(token);
                }
                success(response, Value::Null)
            }
            ("GET", "/auth/account") => success(response, json!({"username": person.user})),
            ("GET", "/vm/info") => success(response, info::vm_info()),
            ("GET", "/vm/gpio/led") => match called("gpio/v1", "GET", "/led", None, &person) {
                Ok(d) => success(response, json!({"pwr": d["pwr"], "hdd": d["hdd"]})),
                Err(e) => refused(response, e),
            },
            ("POST", "/vm/gpio") => gpio(request, response, &person),
            ("GET", "/stream/mjpeg") => {
                if let Err(e) = host::call_api("stream/v1", "/mjpeg", person.caller(), request, response) {
                    refused(response, (e.status, e.reason));
                }
            }
            ("GET", "/stream/mjpeg/detect") => {
                match called("stream/v1", "GET", "/settings", None, &person) {
                    Ok(d) => success(response, json!({"enabled": d["drop_same"]})),
                    Err(e) => refused(response, e),
                }
            }
            ("POST", "/stream/mjpeg/detect") => detect(response, &person, None),
            ("POST", "/stream/mjpeg/detect/stop") => detect(response, &person, Some(false)),
            ("POST", "/hid/paste") => {
                let Some(o) = body_object(request, response) else {
                    return;
                };
                let Some(content) = o.get("content").and_then(Value::as_str) else {
                    return failure(response, 200, -1, "invalid arguments");
                };
                let body = json!({"content": content, "queue": true});
                match called("hid/v1", "POST", "/paste", Some(&body), &person) {
                    Ok(_) => success(response, Value::Null),
                    Err(e) => refused(response, e),
                }
            }
            ("POST", "/hid/reset") => match called("hid/v1", "POST", "/reset", None, &person) {
                Ok(_) => success(response, Value::Null),
                Err(e) => refused(response, e),
            },
            ("GET", "/hid/leds") => match called("hid/v1", "GET", "/stats", None, &person) {
                Ok(d) if d["leds"].is_object() => success(
                    response,
                    json!({
                        "numLock": d["leds"]["num_lock"],
                        "capsLock": d["leds"]["caps_lock"],
                        "scrollLock": d["leds"]["scroll_lock"],
                    }),
                ),
                Ok(d) => failure(
                    response,
                    200,
                    -2,
                    &format!("the keyboard backend ({}) cannot read the LEDs", d["backend"].as_str().unwrap_or("?")),
                ),
                Err(e) => refused(response, e),
            },
            ("GET", "/storage/images" | "/storage/image") => match images(&person) {
                Ok((_, files)) => success(response, json!({"files": files})),
                Err(e) => refused(response, e),
            },
            ("POST", "/storage/image/mount") => mount(request, response, &person),
            ("GET", "/storage/images/mounted" | "/storage/image/mounted") => {
                match mounted(&person) {
                    Ok(file) => success(response, json!({"file": file})),
                    Err(e) => refused(response, e),
                }
            }
            ("GET", "/vm/device/virtual") => match mounted(&person) {
                // A backend that cannot switch the link has no virtual network device.
                Ok(file) => success(
                    response,
                    json!({"network": network_link(&person).unwrap_or(false), "disk": !file.is_empty()}),
                ),
                Err(e) => refused(response, e),
            },
            ("POST", "/vm/device/virtual") => virtual_device(request, response, &person),
            ("GET", "/ws") => ws::serve(request, response, &person),
            _ => failure(
                response,
                404,
                -1,
                &format!("{method} /api{path} is not a NanoKVM call jsipd offers (see docs/nanokvm-api.md)"),
            ),
        }
    }
}

fn login(request: &mut Request<'_>, response: &mut Response<'_>) {
    let Some(o) = body_object(request, response) else {
        return;
    };
    let field = |k: &str| o.get(k).and_then(Value::as_str).and_then(uri_decode);
    let (Some(user), Some(sealed)) = (field("username"), field("password")) else {
        return failure(response, 200, -1, "invalid arguments");
    };
    let password = match password::decrypt(&sealed, password::NANOKVM_KEY) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) | Err(_) => {
            tracing::warn!(
                "NanoKVM login for {user} from {}: the password is not NanoKVM's ciphertext",
                request.remote()
            );
            return failure(response, 200, -2, "invalid username or password");
        }
    };
    match host::sign_in(&user, &password, request.remote()) {
        Ok(session) => success(response, json!({"token": session.token})),
        Err(SignInError::Wrong) => failure(response, 200, -2, "invalid username or password"),
        Err(SignInError::Locked(s)) => failure(
            response,
            200,
            -4,
            &format!("too many failed logins for {user} from this address; try again in {s} s"),
        ),
        Err(SignInError::NeedsCode) => failure(
            response,
            200,
            -2,
            "this account has a one-time code; NanoKVM's login cannot take it (sign in on the jsipd page)",
        ),
        Err(SignInError::Failed) => failure(response, 200, -3, "generate token failed"),
    }
}

fn gpio(request: &mut Request<'_>, response: &mut Response<'_>, person: &Person) {
    let Some(o) = body_object(request, response) else {
        return;
    };
    let button = match o.get("type").and_then(Value::as_str) {
        Some("power") => "/power",
        Some("reset") => "/reset",
        _ => return failure(response, 200, -1, "invalid arguments"),
    };
    let mut body = json!({});
    if let Some(d) = o.get("duration") {
        match d.as_u64() {
            // NanoKVM treats 0 as its default press.
            Some(0) => {}
            Some(ms) => body["duration"] = ms.into(),
            None => return failure(response, 200, -1, "invalid arguments"),
        }
    }
    match called("gpio/v1", "POST", button, Some(&body), person) {
        Ok(_) => success(response, Value::Null),
        Err(e) => refused(response, e),
    }
}

/// `drop_same`: NanoKVM's "frame detect" skips frames that did not change. `None`
/// toggles it.
fn detect(response: &mut Response<'_>, person: &Person, to: Option<bool>) {
    let now = match called("stream/v1", "GET", "/settings", None, person) {
        Ok(d) => d["drop_same"].as_bool().unwrap_or(true),
        Err(e) => return refused(response, e),
    };
    let enabled = to.unwrap_or(!now);
    let body = json!({"drop_same": enabled});
    match called("stream/v1", "POST", "/settings", Some(&body), person) {
        Ok(_) => success(response, json!({"enabled": enabled})),
        Err(e) => refused(response, e),
    }
}

/// The images folder and the absolute path of each image, as NanoKVM lists them.
fn images(person: &Person) -> Result<(String, Vec<String>), (u16, String)> {
    let d = called("storage/v1", "GET", "/images", None, person)?;
    let folder = d["folder"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    let files = d["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["name"].as_str())
                .map(|n| format!("{folder}/{n}"))
                .collect()
        })
        .unwrap_or_default();
    Ok((folder, files))
}

/// The absolute path of the mounted image, "" when none.
fn mounted(person: &Person) -> Result<String, (u16, String)> {
    let d = called("storage/v1", "GET", "/mounted", None, person)?;
    let Some(name) = d["mounted"]["file"].as_str() else {
        return Ok(String::new());
    };
    let (folder, _) = images(person)?;
    Ok(format!("{folder}/{name}"))
}

fn mount(request: &mut Request<'_>, response: &mut Response<'_>, person: &Person) {
    let Some(o) = body_object(request, response) else {
        return;
    };
    let Some(file) = o.get("file").and_then(Value::as_str) else {
        return failure(response, 200, -1, "invalid arguments");
    };
    if file.is_empty() {
        return match called("storage/v1", "POST", "/unmount", None, person) {
            Ok(_) => success(response, Value::Null),
            Err(e) => refused(response, e),
        };
    }
    let folder = match images(person) {
        Ok((folder, _)) => folder,
        Err(e) => return refused(response, e),
    };
    // Only a plain name directly in the images folder; storage checks the name again.
    let name = file
        .strip_prefix(&folder)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..");
    let Some(name) = name else {
        return failure(
            response,
            200,
            -2,
            &format!("{file} is not an image in {folder}/"),
        );
    };
    let cdrom = o.get("cdrom").and_then(Value::as_bool).unwrap_or(true);
    let body = json!({"file": name, "cdrom": cdrom, "readonly": cdrom});
    match called("storage/v1", "POST", "/mount", Some(&body), person) {
        Ok(_) => success(response, Value::Null),
        Err(e) => refused(response, e),
    }
}

/// The target's network link, from `gpio` (QEMU's `set_link`).
fn network_link(person: &Person) -> Result<bool, (u16, String)> {
    let d = called("gpio/v1", "GET", "/network", None, person)?;
    d["up"]
        .as_bool()
        .ok_or_else(|| (500, format!("gpio's /network answered {d}")))
}

fn virtual_device(request: &mut Request<'_>, response: &mut Response<'_>, person: &Person) {
    let Some(o) = body_object(request, response) else {
        return;
    };
    match o.get("device").and_then(Value::as_str) {
        Some("disk") => match mounted(person) {
            Ok(file) if file.is_empty() => failure(
                response,
                200,
                -2,
                "no image is mounted; choose one with POST /api/storage/image/mount",
            ),
            Ok(_) => match called("storage/v1", "POST", "/unmount", None, person) {
                Ok(_) => success(response, json!({"on": false})),
                Err(e) => refused(response, e),
            },
            Err(e) => refused(response, e),
        },
        Some("network") => {
            let switched = network_link(person).and_then(|up| {
                let body = json!({"up": !up});
                called("gpio/v1", "POST", "/network", Some(&body), person)?;
                Ok(!up)
            });
            match switched {
                Ok(on) => success(response, json!({"on": on})),
                Err(e) => refused(response, e),
            }
        }
        _ => failure(response, 200, -1, "invalid arguments"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_plugin_api::api::RecordedResponse;

    fn answer(
        method: &str,
        path: &str,
        body: &str,
        headers: Vec<(&str, &str)>,
    ) -> RecordedResponse {
        let mut recorded = RecordedResponse::default();
        let mut body = body.as_bytes();
        let mut request = Request::new(method, path, "", headers, &mut body).with_caller(Caller {
            user: "",
            role: Role::Nobody,
        });
        NanoKvmApi.handle(&mut request, &mut Response::new(&mut recorded));
        recorded
    }

    #[test]
    fn uri_decoding_is_encode_uri_components_inverse() {
        assert_eq!(uri_decode("a%2Bb%3D%20c+d").as_deref(), Some("a+b= c+d"));
        assert_eq!(uri_decode("%C3%BC").as_deref(), Some("ü"));
        assert_eq!(uri_decode("100%").as_deref(), Some("100%"));
        assert_eq!(uri_decode("%FF"), None);
    }

    #[test]
    fn nobody_without_a_token_gets_401_and_nanokvms_envelope() {
        for path in ["/vm/info", "/storage/images", "/ws", "/stream/mjpeg"] {
            let r = answer("GET", path, "", vec![]);
            assert_eq!(r.status, Some(401), "{path}");
            assert_eq!(r.json(), json!({"code": -1, "msg": "unauthorized"}));
        }
    }

    #[test]
    fn a_malformed_login_is_invalid_arguments() {
        for body in [
            "",
            "{",
            "[1]",
            r#"{"username":"ada"}"#,
            r#"{"username":1,"password":"x"}"#,
        ] {
            let r = answer("POST", "/auth/login", body, vec![]);
            assert_eq!(
                r.json(),
                json!({"code": -1, "msg": "invalid arguments"}),
                "{body}"
            );
        }
    }

    #[test]
    fn a_password_that_is_no_ciphertext_is_refused_before_any_sign_in() {
        let r = answer(
            "POST",
            "/auth/login",
            r#"{"username":"ada","password":"plain"}"#,
            vec![],
        );
        assert_eq!(
            r.json(),
            json!({"code": -2, "msg": "invalid username or password"})
        );
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        let mut body: &[u8] = b"";
        let request = Request::new(
            "GET",
            "/",
            "",
            vec![("Cookie", "a=1; nano-kvm-token=T; b=2")],
            &mut body,
        );
        assert_eq!(cookie(&request, TOKEN_COOKIE), Some("T"));
    }
}
